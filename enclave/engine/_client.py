"""The pooled HTTP/1.1 client of the engine hop (a Unix socket or loopback TCP).

Chosen by measurement (docs/service.md, "Performance"): per streamed event it costs one
parser callback and one future, where httpx's stack (httpcore, h11, anyio) cost several
times the whole relay. It does only what the hop needs: ``POST`` with a complete body,
keep-alive connections reused LIFO, a bounded number of connections, and the deadlines of
:class:`EngineTimeouts`. A connection whose response did not end cleanly is closed, never
reused, so the engine sees an abandoned request's connection drop and aborts it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from enclave.engine._connection import EngineConnection
from enclave.engine.errors import EngineError, EngineTimeoutError
from enclave.settings import ServiceSettings

__all__ = ["EngineClient", "EngineResponse", "EngineTimeouts"]

_FORBIDDEN_IN_FIELDS = (b"\r", b"\n", b"\x00")


def _default(name: str) -> float:
    """The default of setting ``name``: one source (issue 23 point 7), the settings model."""
    value = ServiceSettings.model_fields[name].default
    if not isinstance(value, float):
        raise TypeError(f"setting {name} has no float default")
    return value


@dataclass(frozen=True, slots=True)
class EngineTimeouts:
    """Seconds: to connect, to get a pooled connection, to write the request, and to wait
    for the response head or any further body bytes."""

    connect: float = _default("engine_connect_timeout_seconds")
    pool: float = _default("engine_pool_timeout_seconds")
    write: float = _default("engine_write_timeout_seconds")
    read: float = _default("engine_read_timeout_seconds")


class EngineResponse:
    """An engine response whose head has arrived; read its body, then :meth:`aclose`."""

    def __init__(self, client: EngineClient, connection: EngineConnection) -> None:
        self._client = client
        self._connection: EngineConnection | None = connection
        self.status = connection.status
        self._headers = connection.headers

    def header(self, name: str) -> str | None:
        """A response header (``name`` in lower case), decoded as Latin-1."""
        value = self._headers.get(name.encode("latin-1"))
        return None if value is None else value.decode("latin-1")

    async def read(self, timeout: float | None = None) -> bytes:
        """The body bytes received so far, at least one (``b""`` at the end of the body);
        waits up to ``timeout`` (default: the client's read timeout) for them."""
        if self._connection is None:
            raise EngineError("the response is closed")
        return await self._connection.read(
            self._client.timeouts.read if timeout is None else timeout
        )

    async def aclose(self) -> None:
        """Give the connection back for reuse if the body was read to its end, else close it."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._client._release(connection)


class EngineClient:
    """Connections to one engine endpoint: ``uds`` (a Unix socket) or ``host``/``port``."""

    def __init__(
        self,
        *,
        uds: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 8000,
        timeouts: EngineTimeouts | None = None,
        max_connections: int = 256,
        max_idle: int = 64,
    ) -> None:
        if max_connections < 1 or max_idle < 0:
            raise ValueError("max_connections must be >= 1 and max_idle >= 0")
        self._uds, self._host, self._port = uds, host, port
        self.timeouts = timeouts or EngineTimeouts()
        self._authority = b"localhost" if uds is not None else f"{host}:{port}".encode()
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_idle
        self._idle: list[EngineConnection] = []
        self._open: set[EngineConnection] = set()
        self._closed = False

    async def post(
        self, path: str, body: bytes, headers: Iterable[tuple[str, str]]
    ) -> EngineResponse:
        """Send ``POST path`` and return once the response head has arrived.

        Raises :class:`EngineTimeoutError` or :class:`EngineError`; ``ValueError`` for a
        header that could split the request (CR, LF or NUL in a name or value)."""
        request = self._request_bytes(path, body, headers)
        if self._closed:
            raise EngineError("the engine client is closed")
        try:
            async with asyncio.timeout(self.timeouts.pool):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise EngineTimeoutError("no engine connection became free in time") from exc
        retries = 1
        while True:
            connection: EngineConnection | None = None
            reused = False
            try:
                connection, reused = await self._connection()
                await connection.send(request, self.timeouts.write)
                await connection.head(self.timeouts.read)
            except BaseException as exc:
                if connection is not None:
                    self._discard(connection)
                # A kept-alive connection the engine closed while it sat idle fails before a
                # byte of answer; the request never ran, so it goes once more on a new one.
                if retries and reused and _unanswered_failure(exc, connection):
                    retries -= 1
                    continue
                self._slots.release()
                raise
            return EngineResponse(self, connection)

    def _request_bytes(self, path: str, body: bytes, headers: Iterable[tuple[str, str]]) -> bytes:
        lines = [b"POST ", path.encode("ascii"), b" HTTP/1.1\r\nhost: ", self._authority, b"\r\n"]
        for name, value in headers:
            raw_name, raw_value = name.encode("latin-1"), value.encode("latin-1")
            if any(bad in raw_name + raw_value for bad in _FORBIDDEN_IN_FIELDS) or b":" in raw_name:
                raise ValueError("a request header contains a forbidden character")
            lines += (raw_name, b": ", raw_value, b"\r\n")
        lines += (b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body)
        return b"".join(lines)

    async def _connection(self) -> tuple[EngineConnection, bool]:
        """A connection for one request, and whether it was reused from the idle ones."""
        while self._idle:
            connection = self._idle.pop()
            if connection.alive:
                connection.reset()
                return connection, True
            self._open.discard(connection)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeouts.connect):
                if self._uds is not None:
                    _, protocol = await loop.create_unix_connection(
                        lambda: EngineConnection(loop), str(self._uds)
                    )
                else:
                    _, protocol = await loop.create_connection(
                        lambda: EngineConnection(loop), self._host, self._port
                    )
        except TimeoutError as exc:
            raise EngineTimeoutError("the engine did not accept a connection in time") from exc
        except OSError as exc:
            raise EngineError("the engine could not be reached") from exc
        self._open.add(protocol)
        return protocol, False

    def _release(self, connection: EngineConnection) -> None:
        self._slots.release()
        if connection.reusable and not self._closed and len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            self._discard(connection)

    def _discard(self, connection: EngineConnection) -> None:
        connection.close()
        self._open.discard(connection)

    async def aclose(self) -> None:
        """Close every connection, idle or in use (responses still open then fail)."""
        self._closed = True
        self._idle.clear()
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)


def _unanswered_failure(exc: BaseException, connection: EngineConnection | None) -> bool:
    return (
        isinstance(exc, EngineError)
        and not isinstance(exc, EngineTimeoutError)
        and connection is not None
        and not connection.answered
    )
