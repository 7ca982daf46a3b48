"""The load generator of ``bench_relay.py``, run as its own process (its CPU is not the hop's).

It reads one JSON command per line on stdin and answers one JSON line on stdout:

- ``{"cmd": "warm", "hop": H, "streams": N}``: make sure N keep-alive connections to hop H
  are open and have each carried one short request (TLS handshakes, pools and caches happen
  here, outside the measured window);
- ``{"cmd": "run", "hop": H, "streams": N, "tokens": T}``: N concurrent streamed chat
  completions of T tokens each, one per connection, all started at once; answers the tokens
  received, the wall time, every stream's time to first token, and how many streams failed;
- ``{"cmd": "quit"}``.

Hops are given once at start (``--hops`` JSON): ``{"name": {"kind": "unix"|"tls", "address":
..., "ohttp": bool}}``. The HTTP/1.1 client is a minimal one over asyncio streams (chunked
transfer coding, keep-alive), so that the generator's own cost stays small and predictable.
OHTTP streams are encapsulated to the X-Wing key (chunked OHTTP) and decrypted here, chunk by
chunk, as a client would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enclave.protocol import bhttp
from enclave.protocol.chunked import ChunkedRequestEncoder
from enclave.protocol.ohttp import KeyConfig, decode_key_configs

CHAT_PATH = b"/v1/chat/completions"
GATEWAY_PATH = b"/.well-known/ohttp-gateway"


def chat_body(tokens: int) -> bytes:
    return json.dumps(
        {
            "model": "tiny",
            "messages": [{"role": "user", "content": "benchmark the streaming path"}],
            "stream": True,
            "max_tokens": tokens,
            "ignore_eos": True,  # exactly max_tokens tokens, as a long answer has
        }
    ).encode()


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, path: bytes, content_type: bytes, body: bytes, sink: Any) -> int:
        """POST ``body``; feed each piece of the response body to ``sink`` as it arrives."""
        head = b"".join(
            (
                b"POST ",
                path,
                b" HTTP/1.1\r\nhost: bench\r\naccept: text/event-stream\r\ncontent-type: ",
                content_type,
                b"\r\ncontent-length: ",
                str(len(body)).encode(),
                b"\r\n\r\n",
            )
        )
        self.writer.write(head + body)
        raw_head = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw_head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if b":" in line:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readline()
                    break
                sink(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
        elif b"content-length" in headers:
            sink(await self.reader.readexactly(int(headers[b"content-length"])))
        else:
            sink(await self.reader.read())
        return status


@dataclass
class StreamResult:
    tokens: int = 0
    first: float = 0.0
    ok: bool = False


@dataclass
class Counter:
    """Counts SSE events; the role chunk and ``[DONE]`` are not tokens."""

    started: float
    events: int = 0
    first: float = 0.0
    tail: bytes = b""
    done: bool = False

    def feed(self, data: bytes) -> None:
        data = self.tail + data
        found = data.count(b"\n\n")
        if found:
            self.events += found
            if not self.first and self.events >= 2:
                self.first = time.perf_counter() - self.started
            self.tail = data[data.rfind(b"\n\n") + 2 :]
            if data.endswith(b"data: [DONE]\n\n"):
                self.done = True
        else:
            self.tail = data


@dataclass
class Hop:
    name: str
    kind: str
    address: Any
    ohttp: bool
    connections: list[Connection] = field(default_factory=list)
    key: KeyConfig | None = None


_CONTEXT = ssl.create_default_context()
_CONTEXT.check_hostname = False
_CONTEXT.verify_mode = ssl.CERT_NONE


async def connect(hop: Hop) -> Connection:
    if hop.kind == "unix":
        reader, writer = await asyncio.open_unix_connection(hop.address, limit=1 << 20)
    else:
        host, port = hop.address
        reader, writer = await asyncio.open_connection(host, port, ssl=_CONTEXT, limit=1 << 20)
    return Connection(reader, writer)


async def fetch_key(hop: Hop) -> KeyConfig:
    conn = await connect(hop)
    conn.writer.write(b"GET /.well-known/ohttp-keys HTTP/1.1\r\nhost: bench\r\n\r\n")
    head = await conn.reader.readuntil(b"\r\n\r\n")
    lengths = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = int(lengths[0].split(b":")[1])
    keys = await conn.reader.readexactly(length)
    conn.writer.close()
    return decode_key_configs(keys)[0]  # X-Wing, the default


async def one_stream(hop: Hop, conn: Connection, tokens: int) -> StreamResult:
    started = time.perf_counter()
    counter = Counter(started)
    body = chat_body(tokens)
    if not hop.ohttp:
        status = await conn.request(CHAT_PATH, b"application/json", body, counter.feed)
    else:
        assert hop.key is not None
        request = bhttp.Request(
            b"POST",
            b"https",
            b"enclave",
            CHAT_PATH,
            headers=(
                (b"content-type", b"application/json"),
                (b"date", formatdate(time.time(), usegmt=True).encode()),
            ),
            content=body,
        )
        encoder = ChunkedRequestEncoder(hop.key)
        wire = encoder.header + encoder.seal_chunk(
            bhttp.encode_request(request, indeterminate=True), final=True
        )
        decoder = encoder.response_decoder()
        inner = bhttp.ResponseDecoder()

        def sink(piece: bytes) -> None:
            for plaintext in decoder.feed(piece):
                for event in inner.feed(plaintext):
                    if isinstance(event, bhttp.BodyChunk):
                        counter.feed(event.data)

        status = await conn.request(GATEWAY_PATH, b"message/ohttp-chunked-req", wire, sink)
        decoder.finish()  # raises on truncation (no final chunk)
    ok = status == 200 and counter.done
    return StreamResult(max(counter.events - 2, 0), counter.first, ok)


async def warm(hop: Hop, streams: int) -> None:
    if hop.ohttp and hop.key is None:
        hop.key = await fetch_key(hop)
    while len(hop.connections) < streams:
        hop.connections.append(await connect(hop))

    async def check(index: int) -> None:
        # An idle keep-alive connection may have been closed by the server: replace it.
        try:
            if (await one_stream(hop, hop.connections[index], 2)).ok:
                return
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        hop.connections[index].writer.close()
        hop.connections[index] = await connect(hop)
        try:
            if (await one_stream(hop, hop.connections[index], 2)).ok:
                return
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        # Say so and go on: the measured run counts what fails (an overloaded hop is a result).
        print(f"{hop.name}: a warm-up request failed twice", file=sys.stderr)

    await asyncio.gather(*(check(index) for index in range(streams)))


async def run(hop: Hop, streams: int, tokens: int) -> dict[str, Any]:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(one_stream(hop, c, tokens) for c in hop.connections[:streams]), return_exceptions=True
    )
    wall = time.perf_counter() - started
    good = [r for r in results if isinstance(r, StreamResult) and r.ok]
    failed = len(results) - len(good)
    if failed:  # say why on stderr (the bench's own output stays a table)
        reasons: dict[str, int] = {}
        for r in results:
            if not (isinstance(r, StreamResult) and r.ok):
                name = type(r).__name__ if isinstance(r, BaseException) else "incomplete"
                reasons[name] = reasons.get(name, 0) + 1
        print(f"{hop.name}: {failed} streams failed: {reasons}", file=sys.stderr)
    if failed:  # a broken connection is not reused
        kept = [
            conn
            for conn, result in zip(hop.connections, results, strict=False)
            if isinstance(result, StreamResult) and result.ok
        ]
        hop.connections = kept + hop.connections[streams:]
    return {
        "tokens": sum(r.tokens for r in good),
        "wall": wall,
        "ttft": [r.first for r in good],
        "failed": failed,
    }


async def main_async(hops: dict[str, Hop]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        hop = hops[command["hop"]]
        if command["cmd"] == "warm":
            await warm(hop, command["streams"])
            answer: dict[str, Any] = {"ok": True}
        else:
            answer = await run(hop, command["streams"], command["tokens"])
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hops", required=True, help="JSON: name -> {kind, address, ohttp}")
    args = parser.parse_args()
    spec = json.loads(args.hops)
    hops = {
        name: Hop(
            name,
            value["kind"],
            value["address"] if value["kind"] == "unix" else tuple(value["address"]),
            value["ohttp"],
        )
        for name, value in spec.items()
    }
    try:
        import uvloop  # the generator's own overhead, lower; the same for every hop
    except ImportError:
        asyncio.run(main_async(hops))
    else:
        uvloop.run(main_async(hops))


if __name__ == "__main__":
    main()
