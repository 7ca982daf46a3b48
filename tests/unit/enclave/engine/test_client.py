"""The engine hop's client against a scripted HTTP/1.1 server on a real Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from enclave.engine import (
    EngineClient,
    EngineError,
    EngineProtocolError,
    EngineTimeoutError,
    EngineTimeouts,
)

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


class Server:
    def __init__(self, path: Path, script: Script) -> None:
        self.path = path
        self.script = script
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.closed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.closed.set()


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[[Script], Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> Server:
        server = Server(tmp_path / f"engine{len(servers)}.sock", script)
        servers.append(await asyncio.start_unix_server(server.handle, str(server.path)))
        return server

    yield start
    for server in servers:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)


def client_for(server: Server, **kwargs: object) -> EngineClient:
    return EngineClient(uds=server.path, **kwargs)  # type: ignore[arg-type]


async def test_request_bytes_and_a_streamed_body(serve) -> None:
    release = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.requests.append(await read_request(reader))
        writer.write(SSE_HEAD + chunk(b"data: 1\n\n"))
        await release.wait()
        writer.write(chunk(b"data: 2\n\n") + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await reader.read()

    server = await serve(script)
    client = client_for(server)
    response = await client.post("/v1/chat/completions", b'{"x":1}', [("accept", "*/*")])
    assert response.status == 200
    assert response.header("content-type") == "text/event-stream"
    assert await response.read() == b"data: 1\n\n"
    release.set()
    await asyncio.sleep(0.05)
    # Everything that arrived while nobody read comes in one piece.
    assert await response.read() == b"data: 2\n\ndata: [DONE]\n\n"
    assert await response.read() == b""
    await response.aclose()
    head, body = server.requests[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\naccept: */*\r\n" in head
    assert b"\r\ncontent-length: 7\r\n" in head
    assert body == b'{"x":1}'
    await client.aclose()


async def test_a_complete_response_leaves_its_connection_for_the_next(serve) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    server = await serve(script)
    client = client_for(server)
    for _ in range(3):
        response = await client.post("/v1/embeddings", b"{}", [])
        assert await response.read() == b"ok"
        assert await response.read() == b""
        await response.aclose()
    assert server.connections == 1
    await client.aclose()


async def test_an_abandoned_response_closes_its_connection(serve) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(b"data: 1\n\n"))
        await reader.read()  # until the client closes

    server = await serve(script)
    client = client_for(server)
    response = await client.post("/v1/chat/completions", b"{}", [])
    assert await response.read() == b"data: 1\n\n"
    await response.aclose()
    await asyncio.wait_for(server.closed.wait(), 5)  # the engine sees its client go
    await client.aclose()


async def test_a_connection_cut_mid_body_is_an_engine_error(serve) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(b"data: 1\n\n"))
        await writer.drain()

    server = await serve(script)
    client = client_for(server)
    response = await client.post("/v1/chat/completions", b"{}", [])
    assert await response.read() == b"data: 1\n\n"
    with pytest.raises(EngineError):
        await response.read()
    await response.aclose()
    await client.aclose()


async def test_silence_past_the_timeout_is_a_timeout(serve) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD)
        await reader.read()

    server = await serve(script)
    client = client_for(server)
    response = await client.post("/v1/chat/completions", b"{}", [])
    with pytest.raises(EngineTimeoutError):
        await response.read(timeout=0.05)
    await response.aclose()
    await client.aclose()


async def test_no_head_in_time_is_a_timeout(serve) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()

    server = await serve(script)
    client = client_for(server, timeouts=EngineTimeouts(read=0.05))
    with pytest.raises(EngineTimeoutError):
        await client.post("/v1/chat/completions", b"{}", [])
    await client.aclose()


async def test_garbage_is_a_protocol_error(serve) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await reader.read()

    server = await serve(script)
    client = client_for(server)
    with pytest.raises(EngineProtocolError):
        await client.post("/v1/chat/completions", b"{}", [])
    await client.aclose()


async def test_no_engine_is_an_engine_error(tmp_path: Path) -> None:
    client = EngineClient(uds=tmp_path / "absent.sock")
    with pytest.raises(EngineError):
        await client.post("/v1/chat/completions", b"{}", [])
    await client.aclose()


@pytest.mark.parametrize(
    "header", [("accept", "a\r\nx-injected: 1"), ("accept", "a\nb"), ("x\r\ny", "1")]
)
async def test_a_header_that_could_split_the_request_is_refused(
    tmp_path: Path, header: tuple[str, str]
) -> None:
    client = EngineClient(uds=tmp_path / "absent.sock")
    with pytest.raises(ValueError, match="forbidden"):
        await client.post("/v1/chat/completions", b"{}", [header])
    await client.aclose()


async def test_the_connection_limit_waits_then_times_out(serve) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD)
        await reader.read()

    server = await serve(script)
    client = client_for(server, max_connections=1, timeouts=EngineTimeouts(pool=0.05))
    first = await client.post("/v1/chat/completions", b"{}", [])
    with pytest.raises(EngineTimeoutError):
        await client.post("/v1/chat/completions", b"{}", [])
    await first.aclose()
    second = await client.post("/v1/chat/completions", b"{}", [])  # the slot came back
    await second.aclose()
    await client.aclose()


async def test_an_unread_body_stops_the_engine_writing(serve) -> None:
    """Backpressure: while nobody reads, the client stops reading the socket, so the engine's
    writes block after a bounded amount instead of the whole body landing in memory."""
    total = 16 * 1024 * 1024
    written = 0
    blocked = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        piece = b"x" * 65536
        while written < total:
            writer.write(piece)
            written += len(piece)
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except TimeoutError:
                blocked.set()
                await writer.drain()

    server = await serve(script)
    client = client_for(server)
    response = await client.post("/v1/embeddings", b"{}", [])
    await asyncio.wait_for(blocked.wait(), 10)
    assert written < total // 2
    received = 0
    while data := await response.read():
        received += len(data)
    assert received == total
    await response.aclose()
    await client.aclose()


async def test_a_kept_alive_connection_the_engine_closed_is_retried_once(serve) -> None:
    """The engine answered one request with keep-alive, then closed the idle connection (as
    uvicorn does after its keep-alive timeout) just as it was reused: the request goes again
    on a new connection instead of failing."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        if server.connections == 1:
            await reader.read(1)  # the next request's first byte: close without answering

    server = await serve(script)
    client = client_for(server)
    for _ in range(2):
        response = await client.post("/v1/embeddings", b"{}", [])
        assert await response.read() == b"ok"
        await response.aclose()
    assert server.connections == 2
    await client.aclose()


async def test_a_connection_that_failed_after_answering_is_not_retried(serve) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")  # half a head, then the connection goes
        await writer.drain()

    server = await serve(script)
    client = client_for(server)
    response = await client.post("/v1/embeddings", b"{}", [])
    assert await response.read() == b"ok"
    await response.aclose()
    with pytest.raises(EngineError):
        await client.post("/v1/embeddings", b"{}", [])
    assert server.connections == 1
    await client.aclose()


async def test_an_unasked_interim_response_is_a_protocol_error(serve) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await reader.read()

    server = await serve(script)
    client = client_for(server)
    with pytest.raises(EngineProtocolError):
        await client.post("/v1/chat/completions", b"{}", [])
    await client.aclose()
