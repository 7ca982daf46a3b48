"""Relaying an engine response to the client: as soon as it arrives, with backpressure.

- Server-sent events are relayed whole, byte for byte as the engine wrote them (each after the
  padding comment line, below, which every parser ignores): every engine
  read is cut after its last complete event and those events go out as one ASGI body message
  (one flush; the OHTTP gateway seals one chunk per message); the partial event after them
  waits for its end. So an event is never delayed: what has arrived goes out at once, and
  events that arrived together (or while the client side was busy taking the previous
  message) go out together instead of one message each.
- Backpressure: nothing more is read from the engine until the client's transport has taken
  the previous message (ASGI ``send`` waits while the transport is paused), and the engine
  connection stops reading once its buffer is full, so a slow client slows the engine.
- A stalled engine stream is ended: no event for ``stall_timeout`` seconds while the stream is
  open (``first_token_timeout`` before the first event, so prefill of a long prompt is not a
  stall) ends it with the error event ``engine_stalled`` and ``data: [DONE]``.
- A client that disconnects cancels the relay and closes the engine connection: the engine
  sees it drop and aborts the request.
- An engine failure mid-stream (connection error, or the stream ending without
  ``data: [DONE]``) becomes an error event ``data: {"error": {...}}`` then ``data: [DONE]``,
  as vLLM itself reports in-stream errors. The model being unloaded ends open streams the
  same way with the code ``model_unloaded``.
- Sizes (issue 19, :mod:`enclave.protocol.padding`): with ``padding`` (a bucket, in bytes)
  every message of events is prefixed with an SSE comment line that makes its length a
  multiple of the bucket (the error event and ``[DONE]`` too), and a JSON body gets trailing
  spaces to its bucket (its ``content-length`` says the padded size). Only the continuation
  of an event over ``MAX_EVENT_BYTES``, which does not start at an event boundary, cannot be.
- Timing (``cadence``, seconds, off when None): events are sent only at that fixed cadence,
  what arrived since the last tick coalesced into one message, a comment-only keep-alive
  piece of one bucket when nothing did; so arrival times carry no token boundaries.
- Other (non-SSE) bodies are relayed as they arrive; a failure mid-body leaves the response
  incomplete (the connection is closed without the final chunk, or short of its
  Content-Length), so a client can never mistake it for a complete body.
- Receipts (``RelayContext.receipt``, :mod:`enclave._receipts`): a streamed answer gets its
  signed receipt in one event just before ``data: [DONE]``, in the same body message as
  ``[DONE]`` (the final OHTTP chunk), also after an error event; the hash covers the events
  as the engine wrote them, before padding (padding comment lines are not covered anyway). A
  non-streamed answer is read whole first (the receipt covers it), then sent with the
  ``enclave-receipt`` header and, when it is a JSON object, the ``enclave_receipt`` member
  (then its padding). An engine failure before such a body was sent is answered ``502
  engine_error`` instead of an incomplete body.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from attestation.receipt import CERTIFICATE_HEADER, SseDataDigest, attach_member, json_member_base
from attestation.receipt import HEADER as RECEIPT_HEADER
from enclave._receipts import RequestReceipt, receipt_event
from enclave.engine import EngineError, EngineResponseProtocol, EngineTimeoutError
from enclave.metrics import ServiceMetrics
from enclave.protocol.api import error_body
from enclave.protocol.padding import json_padding, keep_alive, pad_events, padded_length
from enclave.routes._errors import sse_error_event

__all__ = ["DONE_EVENT", "MAX_EVENT_BYTES", "Relay", "RelayContext", "complete_events_end"]

logger = logging.getLogger(__name__)

DONE_EVENT = b"data: [DONE]\n\n"
#: An event larger than this is relayed in pieces rather than buffered further.
MAX_EVENT_BYTES = 4 * 1024 * 1024
_ERROR_PREFIX = b'data: {"error"'
#: At a fixed cadence, what may wait for the next tick before the engine is read no further.
_OUTBOX_BYTES = 1024 * 1024
_DONE_PREFIX = b"data: [DONE]"


def complete_events_end(buffer: bytes) -> int:
    """The end (exclusive) of the last complete event in ``buffer``, or -1 if none is."""
    lf = buffer.rfind(b"\n\n")
    crlf = buffer.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else -1, crlf + 4 if crlf >= 0 else -1)


def _starts_an_event(piece: bytes, prefix: bytes) -> bool:
    """Whether an event of ``piece`` (whole events) begins with ``prefix``. A raw newline is
    never inside an event's JSON, so ``\\n`` + prefix can only be an event's start."""
    return piece.startswith(prefix) or (b"\n" + prefix) in piece


@dataclass(frozen=True, slots=True)
class RelayContext:
    """What a relay reports to: the route template, the metrics and the request's clock."""

    route: str
    request_id: str
    metrics: ServiceMetrics
    started: float
    model_gone: asyncio.Event
    on_end: Callable[[], None]
    #: Seconds without an event before the stream counts as stalled, and before the first.
    stall_timeout: float = 60.0
    first_token_timeout: float = 300.0
    #: The size bucket every piece is padded to (0: none), and the fixed cadence (None: none).
    padding: int = 0
    cadence: float | None = None
    #: The answer's receipt in the making; None: no receipt (a service without a receipt key).
    receipt: RequestReceipt | None = None


class Relay(Response):
    """An ASGI response relaying ``upstream`` (already open, status 200) to the client."""

    def __init__(self, upstream: EngineResponseProtocol, context: RelayContext) -> None:
        super().__init__(status_code=200)
        self._upstream = upstream
        self._ctx = context
        content_type = upstream.header("content-type") or "application/json"
        self._sse = content_type.split(";")[0].strip().lower() == "text/event-stream"
        headers = [
            (b"content-type", content_type.encode("latin-1")),
            (b"cache-control", b"no-store"),
            (b"x-request-id", context.request_id.encode("ascii")),
        ]
        length = upstream.header("content-length")
        media_type = content_type.split(";")[0].strip().lower()
        #: Trailing spaces fill a JSON body's bucket (JSON allows whitespace after the value).
        self._pad_json = context.padding if media_type == "application/json" else 0
        self._body_bytes = 0
        self._at_boundary = True  # the next SSE message starts at an event boundary
        if self._sse:
            headers.append((b"x-accel-buffering", b"no"))
        elif length is not None and length.isdigit():
            declared = padded_length(int(length), self._pad_json)
            headers.append((b"content-length", str(declared).encode("ascii")))
        self._start_headers = headers
        self._events = 0
        self._last_event = 0.0
        self._stats = context.metrics.stream_stats(context.route)
        self._error_seen = False
        self._done_seen = False
        self._receipt = context.receipt
        self._digest = SseDataDigest() if self._receipt is not None and self._sse else None
        self._first_event: dict[str, object] | None = None
        #: Non-streamed answers with a receipt are read whole, then sent with it.
        self._whole = self._receipt is not None and not self._sse
        self._started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = "engine_failed"
        try:
            if not self._whole:
                await self._start(send, self._start_headers)
            outcome = await self._race(receive, send)
            if not self._started:  # a whole body never came: say so instead of nothing
                await self._start(send, _ERROR_HEADERS, status=502)
                await send({"type": "http.response.body", "body": error_body("engine_error")})
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

    async def _start(
        self, send: Send, headers: list[tuple[bytes, bytes]], status: int = 200
    ) -> None:
        self._started = True
        await send({"type": "http.response.start", "status": status, "headers": headers})

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
        try:
            if self._sse and self._ctx.cadence is not None:
                return await self._pump_at_cadence(send, self._ctx.cadence)
            if self._sse:
                return await self._pump_events(send)
            if self._whole:
                return await self._pump_whole(send)
            while data := await self._upstream.read():
                self._body_bytes += len(data)
                await send({"type": "http.response.body", "body": data, "more_body": True})
            if self._pad_json:
                padding = json_padding(self._body_bytes, self._pad_json)
                await send({"type": "http.response.body", "body": padding, "more_body": True})
        except EngineError as exc:
            logger.warning(
                "request %s: engine failed mid-response (%s)",
                self._ctx.request_id,
                type(exc).__name__,
            )
            if not self._sse:
                return "engine_failed"  # leave the body incomplete: the client sees it cut
            await self._end_with_error(send, "engine_stream_failed")
            return "engine_failed"
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return "completed"

    async def _pump_whole(self, send: Send) -> str:
        """A non-streamed answer: read whole, signed, sent with its receipt (then padded)."""
        pieces = []
        while data := await self._upstream.read():
            pieces.append(data)
        body = b"".join(pieces)
        headers = [h for h in self._start_headers if h[0] != b"content-length"]
        assert self._receipt is not None
        stripped = json_member_base(body)
        if stripped.startswith(b"{") and stripped.endswith(b"}"):
            receipt = self._receipt.sign(hashlib.sha256(stripped).digest(), "json-member")
        else:  # not a JSON object: the receipt covers the exact body, sent as it came
            receipt = self._receipt.sign(hashlib.sha256(body).digest(), "body")
        attached = body if receipt is None else attach_member(body, receipt) or body
        if receipt is not None:
            headers.append((RECEIPT_HEADER.encode(), receipt.header_value.encode("ascii")))
            if self._receipt.certificate is not None:
                value = base64.urlsafe_b64encode(self._receipt.certificate).rstrip(b"=")
                headers.append((CERTIFICATE_HEADER.encode(), value))
        if self._pad_json:
            attached += json_padding(len(attached), self._pad_json)
        headers.append((b"content-length", str(len(attached)).encode("ascii")))
        await self._start(send, headers)
        await send({"type": "http.response.body", "body": attached, "more_body": False})
        return "completed"

    async def _pump_at_cadence(self, send: Send, cadence: float) -> str:
        """:meth:`_pump_events` into an outbox that a ticker empties every ``cadence`` seconds
        (one message: what arrived since the last tick, else a keep-alive piece), so no
        message leaves at a time an event arrived. The reader waits while the outbox holds
        more than ``_OUTBOX_BYTES``: a slow client still slows the engine."""
        outbox: list[bytes] = []
        waiting, ended = 0, False
        drained = asyncio.Event()
        keep = keep_alive(self._ctx.padding)

        async def enqueue(message: Message) -> None:
            nonlocal waiting, ended
            if not message.get("more_body", False):
                ended = True
                return
            body = message.get("body", b"")
            if body:
                outbox.append(body)
                waiting += len(body)
            while waiting > _OUTBOX_BYTES:
                drained.clear()
                await drained.wait()

        async def tick() -> None:
            nonlocal waiting
            loop = asyncio.get_running_loop()
            due = loop.time()
            while True:
                due += cadence
                await asyncio.sleep(max(0.0, due - loop.time()))
                due = max(due, loop.time() - cadence)  # a slow client: no burst to catch up
                if outbox:
                    body = b"".join(outbox)
                    outbox.clear()
                    waiting = 0
                    drained.set()
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                elif ended:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                else:
                    await send({"type": "http.response.body", "body": keep, "more_body": True})

        ticker = asyncio.create_task(tick())
        try:
            outcome = await self._pump_events(enqueue)
            ended = True
            await ticker
            return outcome
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def _pump_events(self, send: Send) -> str:
        read, ctx = self._upstream.read, self._ctx
        pending = b""
        timeout = ctx.first_token_timeout
        while True:
            try:
                data = await read(timeout)
            except EngineTimeoutError:
                logger.warning(
                    "request %s: engine stream stalled (no event for %.0f s after %d events)",
                    ctx.request_id,
                    timeout,
                    self._events,
                )
                await self._end_with_error(send, "engine_stalled")
                return "engine_stalled"
            if not data:
                break
            pending = pending + data if pending else data
            end = complete_events_end(pending)
            if end < 0:
                if len(pending) > MAX_EVENT_BYTES:
                    await self._forward(send, pending, 0)
                    pending = b""
                continue
            if end == len(pending):
                piece, pending = pending, b""
            else:
                piece, pending = pending[:end], pending[end:]
            await self._forward(send, piece, piece.count(b"\n\n") + piece.count(b"\r\n\r\n"))
            timeout = ctx.stall_timeout
        if pending:
            await self._forward(send, pending, 1)
        if not self._done_seen:
            logger.warning("request %s: engine stream ended without [DONE]", ctx.request_id)
            await self._end_with_error(send, "engine_stream_failed")
            return "engine_failed"
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return "engine_failed" if self._error_seen else "completed"

    async def _forward(self, send: Send, piece: bytes, events: int) -> None:
        """Send whole events (``events`` of them) in one message."""
        if events:
            now = time.monotonic()
            done = _starts_an_event(piece, _DONE_PREFIX)
            if self._events == 0:
                self._ctx.metrics.observe_time_to_first_token(
                    self._ctx.route, now - self._ctx.started
                )
                self._stats.relayed(events, events - done, None, now)
            else:
                self._stats.relayed(events, events - done, now - self._last_event, now)
            self._events += events
            self._last_event = now
            self._done_seen = self._done_seen or done
            if _starts_an_event(piece, _ERROR_PREFIX):
                self._error_seen = True
            if self._digest is not None:
                if self._first_event is None:
                    self._first_event = _first_event(piece)
                if done:
                    piece = self._with_receipt(piece)
        if self._digest is not None and not (events and done):
            self._digest.update(piece)
        await self._send_events(send, piece, whole=events > 0)

    def _with_receipt(self, piece: bytes) -> bytes:
        """``piece`` (ending with ``[DONE]``) with the receipt event inserted before it."""
        at = 0 if piece.startswith(_DONE_PREFIX) else piece.find(b"\n" + _DONE_PREFIX) + 1
        head, tail = piece[:at], piece[at:]
        return head + self._receipt_event(head) + tail

    def _receipt_event(self, head: bytes = b"") -> bytes:
        """The receipt event over everything relayed so far and ``head`` (once per answer)."""
        if self._digest is None or self._receipt is None:
            return b""
        self._digest.update(head)
        receipt = self._receipt.sign(self._digest.digest(), "sse-lines")
        self._digest = None
        if receipt is None:
            return b""
        return receipt_event(receipt, self._first_event, self._receipt.certificate)

    async def _send_events(self, send: Send, piece: bytes, *, whole: bool = True) -> None:
        """One message of events, padded to the bucket when it starts at an event boundary
        (``whole``: it also ends at one, so the next message starts at one)."""
        body = pad_events(piece, self._ctx.padding) if self._at_boundary else piece
        self._at_boundary = whole
        await send({"type": "http.response.body", "body": body, "more_body": True})

    async def _end_with_error(self, send: Send, code: str) -> None:
        # Two events, two messages: the gateway seals each one as its own chunk.
        error = sse_error_event(code)
        await self._send_events(send, error)
        await self._send_events(send, self._receipt_event(error) + DONE_EVENT)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _close_upstream(self) -> None:
        # Shielded: a cancelled request must still drop its engine connection.
        with contextlib.suppress(EngineError, OSError):
            await asyncio.shield(self._upstream.aclose())


_ERROR_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


def _first_event(piece: bytes) -> dict[str, object] | None:
    """The first event's JSON object (for the receipt event to copy its id, model...)."""
    line = piece.split(b"\n", 1)[0]
    if not line.startswith(b"data: {"):
        return None
    try:
        document = json.loads(line[6:])
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        continue
