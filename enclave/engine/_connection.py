"""One HTTP/1.1 connection to the engine: an asyncio protocol over httptools' C parser.

Bytes the engine sends are parsed as they arrive (chunked transfer coding, Content-Length or
a close-delimited body) and the body is kept in one buffer that :meth:`EngineConnection.read`
hands over whole: everything already received, in one piece, so a caller that was busy gets
every byte that waited meanwhile at once. Backpressure: above ``_HIGH_WATER`` buffered bytes
the socket stops being read until the caller takes them, so a slow client slows the engine.
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools

from enclave.engine.errors import EngineError, EngineProtocolError, EngineTimeoutError

__all__ = ["EngineConnection"]

#: Body bytes buffered at most before reading from the engine pauses.
_HIGH_WATER = 256 * 1024
_MAX_HEAD_BYTES = 64 * 1024


class EngineConnection(asyncio.Protocol):
    """A connection carries one request at a time; ``reset()`` prepares it for the next."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._lost = False
        self._write_ready: asyncio.Future[None] | None = None
        self._busy = False
        self.reset()

    # -- per request ---------------------------------------------------------------------------

    def reset(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self._head_bytes = 0
        self._head_done = False
        self._complete = False
        self._answered = False
        self._keep_alive = False
        self._buffer = bytearray()
        self._error: EngineError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timed_out = False
        self._paused = False

    @property
    def reusable(self) -> bool:
        """Whether the last response ended cleanly on a connection the engine keeps open."""
        return (
            self._complete
            and not self._lost
            and self._error is None
            and self._transport is not None
            and not self._transport.is_closing()
            and self._keep_alive
        )

    @property
    def answered(self) -> bool:
        """Whether any byte of the current request's answer has arrived."""
        return self._answered

    @property
    def alive(self) -> bool:
        return not self._lost and self._transport is not None and not self._transport.is_closing()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def send(self, request: bytes, write_timeout: float) -> None:
        """Write the request; wait (at most ``write_timeout``) while the engine is not reading."""
        if self._transport is None or not self.alive:
            raise EngineError("the engine connection is closed")
        self._busy = True
        self._transport.write(request)
        if self._write_ready is not None:
            try:
                async with asyncio.timeout(write_timeout):
                    await self._write_ready
            except TimeoutError as exc:
                raise EngineTimeoutError("the engine did not take the request in time") from exc

    async def head(self, timeout: float) -> None:
        """Wait for the status line and headers."""
        while not self._head_done:
            if await self._wait(timeout) and not self._head_done:
                raise EngineTimeoutError("the engine did not answer in time")

    async def read(self, timeout: float) -> bytes:
        """Every body byte received so far (waiting up to ``timeout`` for the first), or
        ``b""`` once the body is complete. Raises :class:`EngineError` when the response failed
        and :class:`EngineTimeoutError` when nothing came in time."""
        while not self._buffer:
            if self._complete:
                return b""
            if await self._wait(timeout) and not self._buffer and not self._complete:
                raise EngineTimeoutError("the engine sent nothing in time")
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return data

    async def _wait(self, timeout: float) -> bool:
        """Wait for the parser to make progress; ``True`` when ``timeout`` passed first."""
        if self._error is not None:
            raise self._error
        self._timed_out = False
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(timeout, self._expire)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self._error is not None:
            raise self._error
        return self._timed_out

    def _expire(self) -> None:
        self._timed_out = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: EngineError) -> None:
        if self._error is None and not self._complete:
            self._error = error
        self._wake()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; both have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._busy:  # bytes on an idle connection: nothing may be sent now
            self._lost = True
            self.close()
            return
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(EngineProtocolError("the engine's response is not valid HTTP"))
            self.close()
            return
        if len(self._buffer) > _HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._head_done and not self._complete and not _has_length(self.headers):
            self._complete = True  # a close-delimited body ends with the connection
            self._wake()
        else:
            self._fail(EngineError("the engine closed the connection"))
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)

    def pause_writing(self) -> None:
        self._write_ready = self._loop.create_future()

    def resume_writing(self) -> None:
        ready, self._write_ready = self._write_ready, None
        if ready is not None and not ready.done():
            ready.set_result(None)

    # -- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > _MAX_HEAD_BYTES:
            raise httptools.HttpParserError("response head too large")
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if self.status < 200:  # interim answers only follow Expect, which is never sent
            raise httptools.HttpParserError("unexpected interim response")
        self._head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._buffer += body
        self._wake()

    def on_message_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()  # valid only inside the callback
        self._complete = True
        self._busy = False
        self._wake()


def _has_length(headers: dict[bytes, bytes]) -> bool:
    return b"content-length" in headers or b"chunked" in headers.get(b"transfer-encoding", b"")
