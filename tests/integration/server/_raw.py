"""A client speaking HTTP/1.1 by hand over one TLS connection, for the hostile-client tests."""

from __future__ import annotations

import asyncio
import contextlib

from tests.integration.server.conftest import tls_client_context


class RawClient:
    """One TLS connection speaking HTTP/1.1 by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1", *, tls: bool = True) -> RawClient:
        """A connection from ``source`` (any 127/8 address works on Linux loopback); with
        ``tls``, through its handshake."""
        async with asyncio.timeout(30):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                port,
                ssl=tls_client_context() if tls else None,
                local_addr=(source, 0),
            )
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self, path: str, content_type: str, length: int | None) -> None:
        lines = [f"POST {path} HTTP/1.1", "host: enclave", f"content-type: {content_type}"]
        lines.append(
            "transfer-encoding: chunked" if length is None else f"content-length: {length}"
        )
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def response(self, timeout: float) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body of a Content-Length response."""
        async with asyncio.timeout(timeout):
            status_line = await self.reader.readuntil(b"\r\n")
            headers: dict[str, str] = {}
            while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def closed_by_server(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                with contextlib.suppress(ConnectionError, OSError):
                    while await self.reader.read(65536):
                        pass
                return True
        return False

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
