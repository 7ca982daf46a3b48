"""Relaying an engine response to the client: event by event, with backpressure.

- Server-sent events are cut at each blank line and every complete event goes out as one ASGI
  body message (one flush; the OHTTP gateway seals one chunk per message), byte for byte as
  the engine wrote it. Nothing more is read from the engine until the client's transport has
  taken the previous event (ASGI ``send`` waits while the transport is paused).
- A client that disconnects cancels the relay and closes the upstream response: the engine
  sees its connection drop and aborts the request.
- An engine failure mid-stream (connection error, timeout, or the stream ending without
  ``data: [DONE]``) becomes an error event ``data: {"error": {...}}`` then ``data: [DONE]``,
  as vLLM itself reports in-stream errors. The model being unloaded ends open streams the
  same way with the code ``model_unloaded``.
- Other (non-SSE) bodies are relayed as they arrive; a failure mid-body leaves the response
  incomplete (the connection is closed without the final chunk, or short of its
  Content-Length), so a client can never mistake it for a complete body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from enclave.metrics import ServiceMetrics
from enclave.routes._errors import sse_error_event

__all__ = ["DONE_EVENT", "MAX_EVENT_BYTES", "Relay", "RelayContext", "split_events"]

logger = logging.getLogger(__name__)

DONE_EVENT = b"data: [DONE]\n\n"
#: An event larger than this is relayed in pieces rather than buffered further.
MAX_EVENT_BYTES = 4 * 1024 * 1024
_TERMINATORS = (b"\n\n", b"\r\n\r\n")
_ERROR_PREFIX = b'data: {"error"'


def _next_boundary(buffer: bytes | bytearray, start: int) -> int:
    """The end (exclusive) of the first complete event at or after ``start``, or -1."""
    best = -1
    for terminator in _TERMINATORS:
        index = buffer.find(terminator, start)
        if index >= 0 and (best < 0 or index + len(terminator) < best):
            best = index + len(terminator)
    return best


async def split_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Re-cut a byte stream into whole SSE events (the bytes are unchanged). A trailing
    partial event is yielded at the end; one over ``MAX_EVENT_BYTES`` goes out in pieces."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        start = 0
        while (end := _next_boundary(buffer, start)) >= 0:
            yield bytes(buffer[start:end])
            start = end
        del buffer[:start]
        if len(buffer) > MAX_EVENT_BYTES:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


@dataclass(frozen=True, slots=True)
class RelayContext:
    """What a relay reports to: the route template, the metrics and the request's clock."""

    route: str
    request_id: str
    metrics: ServiceMetrics
    started: float
    model_gone: asyncio.Event
    on_end: Callable[[], None]


class Relay(Response):
    """An ASGI response relaying ``upstream`` (already open, status 200) to the client."""

    def __init__(self, upstream: httpx.Response, context: RelayContext) -> None:
        super().__init__(status_code=200)
        self._upstream = upstream
        self._ctx = context
        content_type = upstream.headers.get("content-type", "application/json")
        self._sse = content_type.split(";")[0].strip().lower() == "text/event-stream"
        headers = [
            (b"content-type", content_type.encode("latin-1")),
            (b"cache-control", b"no-store"),
            (b"x-request-id", context.request_id.encode("ascii")),
        ]
        length = upstream.headers.get("content-length")
        if self._sse:
            headers.append((b"x-accel-buffering", b"no"))
        elif length is not None and length.isdigit():
            headers.append((b"content-length", length.encode("ascii")))
        self._start_headers = headers
        self._events = 0
        self._error_seen = False
        self._done_seen = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = "engine_failed"
        try:
            await send(
                {"type": "http.response.start", "status": 200, "headers": self._start_headers}
            )
            outcome = await self._race(receive, send)
        finally:
            await self._close_upstream()
            self._ctx.metrics.stream_outcome(self._ctx.route, outcome)
            self._ctx.on_end()
            logger.info(
                "request %s on %s ended: %s after %d events in %.3f s",
                self._ctx.request_id,
                self._ctx.route,
                outcome,
                self._events,
                time.monotonic() - self._ctx.started,
            )

    async def _race(self, receive: Receive, send: Send) -> str:
        pump = asyncio.create_task(self._pump(send))
        disconnect = asyncio.create_task(_wait_disconnect(receive))
        gone = asyncio.create_task(self._ctx.model_gone.wait())
        try:
            await asyncio.wait({pump, disconnect, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, disconnect, gone):
                task.cancel()
            await asyncio.wait({pump, disconnect, gone})
        if pump.done() and not pump.cancelled():
            return pump.result()
        if disconnect.done() and not disconnect.cancelled():
            return "client_disconnected"
        # The model was unloaded (or replaced) while the response was open.
        if self._sse:
            await self._end_with_error(send, "model_unloaded")
        return "model_unloaded"

    async def _pump(self, send: Send) -> str:
        chunks = self._upstream.aiter_raw()
        source = split_events(chunks) if self._sse else chunks
        try:
            async for piece in source:
                await self._forward(send, piece)
        except httpx.HTTPError as exc:
            logger.warning(
                "request %s: engine failed mid-response (%s)",
                self._ctx.request_id,
                type(exc).__name__,
            )
            if not self._sse:
                return "engine_failed"  # leave the body incomplete: the client sees it cut
            await self._end_with_error(send, "engine_stream_failed")
            return "engine_failed"
        if self._sse and not self._done_seen:
            logger.warning("request %s: engine stream ended without [DONE]", self._ctx.request_id)
            await self._end_with_error(send, "engine_stream_failed")
            return "engine_failed"
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return "engine_failed" if self._error_seen else "completed"

    async def _forward(self, send: Send, piece: bytes) -> None:
        if self._sse:
            if self._events == 0:
                elapsed = time.monotonic() - self._ctx.started
                self._ctx.metrics.observe_time_to_first_token(self._ctx.route, elapsed)
            self._events += 1
            self._ctx.metrics.chunk_streamed(self._ctx.route)
            if piece.startswith(_ERROR_PREFIX):
                self._error_seen = True
            elif piece.rstrip(b"\r\n") == DONE_EVENT.rstrip(b"\n"):
                self._done_seen = True
        await send({"type": "http.response.body", "body": piece, "more_body": True})

    async def _end_with_error(self, send: Send, code: str) -> None:
        # Two events, two messages: the gateway seals each one as its own chunk.
        await send({"type": "http.response.body", "body": sse_error_event(code), "more_body": True})
        await send({"type": "http.response.body", "body": DONE_EVENT, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _close_upstream(self) -> None:
        # Shielded: a cancelled request must still drop its engine connection.
        with contextlib.suppress(httpx.HTTPError, OSError):
            await asyncio.shield(self._upstream.aclose())


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        continue
