"""The Oblivious HTTP gateway resource (RFC 9458, chunked OHTTP draft-08) as ASGI apps.

``POST /.well-known/ohttp-gateway``, step by step:

1. outer checks: POST, a request media type (415), the body limit (413), the in-flight limit;
2. read and decrypt the whole request body (chunked: incrementally, chunk by chunk); an unknown
   key or suite is the 422 ``ohttp-key`` problem, anything else that fails is one generic 400;
3. decode the inner Binary HTTP request; refuse a replayed ``enc`` (generic 400);
4. inner checks, answered *encapsulated*: ``Date`` inside the window of a reference time that
   never goes back (RFC 9458 section 6.5; :mod:`enclave.gateway._replay`: the ``enc`` is
   remembered until that Date can no longer be accepted, whatever the clocks do), no ``Expect:
   100-continue`` (section 5.1: 417), the route on the allow-list;
5. dispatch into the service's own app in-process and encapsulate its response: whole for
   ``message/ohttp-req``; for ``message/ohttp-chunked-req`` as an indeterminate-length Binary
   HTTP response sealed piece by piece, each piece the app sends becoming one chunk, flushed
   at once (pieces that waited while the client side was busy share one), ending with the
   ``final`` chunk. A failure after the head: an SSE body gets an
   encrypted error event and then the final chunk; any other body ends without the final
   chunk, which the client reports as truncation. Never a silent, complete-looking cut.

What failed is reported to the observer as a fixed reason code, never in a response.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from enclave.gateway._dispatch import InnerExchange, inner_scope
from enclave.gateway._httpdate import parse_http_date
from enclave.gateway._replay import (
    Admission,
    ReplayCache,
    ReplayCacheFullError,
    ReplayStore,
    ReplayStoreUnavailableError,
)
from enclave.gateway._responses import (
    OHTTP_KEY_PROBLEM,
    inner_date_problem,
    inner_json_error,
    send_json_error,
    send_plain,
    send_problem,
)
from enclave.gateway._types import (
    FailureReason,
    GatewayLimits,
    GatewayObserver,
    NullObserver,
)
from enclave.protocol import bhttp
from enclave.protocol.api import sse_error_event
from enclave.protocol.bodies import (
    BodyIncompleteError,
    BodyTooLargeError,
    InvalidContentLengthError,
    content_length,
    stream_body,
)
from enclave.protocol.chunked import (
    MEDIA_TYPE_CHUNKED_REQUEST,
    MEDIA_TYPE_CHUNKED_RESPONSE,
    ChunkedRequestDecoder,
    ChunkedResponseEncoder,
)
from enclave.protocol.errors import ProtocolError, UnknownKeyIdError, UnsupportedSuiteError
from enclave.protocol.ohttp import (
    MEDIA_TYPE_REQUEST,
    MEDIA_TYPE_RESPONSE,
    GatewayKey,
    KeyStore,
    decapsulate_request,
)
from enclave.protocol.padding import bhttp_padding, pad_events

__all__ = ["OhttpGateway"]

logger = logging.getLogger(__name__)

#: A failure of the inner app after its response head went out (the routes end an engine
#: failure with their own event first; this is the last resort, a bug).
_SSE_ERROR = sse_error_event("internal_error")
#: Kept in a shared replay store this much longer than the window arithmetic says (as the
#: in-memory cache does): a request at the exact edge of the window is never forgotten early.
_SHARED_EDGE_SECONDS = 1.0
#: The label under which a replay-hash key is derived from an OHTTP private key.
_REPLAY_KEY_LABEL = b"enclave/ohttp-replay-hash/v1"


class _RefusedError(Exception):
    """An outer refusal: a status, a fixed body, and the reason code for the metric."""

    def __init__(
        self, status: int, reason: FailureReason, body: bytes = b"", code: str | None = None
    ) -> None:
        self.status, self.reason, self.body, self.code = status, reason, body, code


class _ClientGoneError(Exception):
    pass


def _content_type(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"content-type":
            media_type: bytes = value.split(b";", 1)[0].strip().lower()
            return media_type.decode("latin-1")
    return ""


class OhttpGateway:
    """The gateway over a key store; ``app`` is where decapsulated requests go (set it with
    :meth:`set_app` once the service's app exists)."""

    def __init__(
        self,
        key_store: KeyStore,
        *,
        limits: GatewayLimits | None = None,
        observer: GatewayObserver | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        replay_store: ReplayStore | None = None,
    ) -> None:
        self.key_store = key_store
        self.limits = limits or GatewayLimits()
        self._observer = observer or NullObserver()
        self._clock = clock
        self._replay = ReplayCache(
            self.limits.replay_window_seconds, self.limits.replay_cache_size, clock, monotonic
        )
        #: The replay set shared by replicas (Redis); None: the in-memory cache above.
        self._shared_replay = replay_store
        self._replay_keys: dict[int, tuple[GatewayKey, bytes]] = {}
        self._in_flight = 0
        self._app: ASGIApp | None = None

    @property
    def replay_cache(self) -> ReplayCache:
        """The reference time of this gateway (and, without a shared store, its replay set)."""
        return self._replay

    def set_app(self, app: ASGIApp) -> None:
        self._app = app

    async def keys(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /.well-known/ohttp-keys``: the exact bytes the attestation claim hashes."""
        body = self.key_store.ohttp_keys()
        if not body:  # a replica the key broker refused holds no key: say so, serve nothing
            self._observer.failure(FailureReason.OHTTP_KEY_UNAVAILABLE)
            await send_json_error(send, "ohttp_key_unavailable", ((b"retry-after", b"30"),))
            return
        headers = [
            (b"content-type", b"application/ohttp-keys"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-cache"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /.well-known/ohttp-gateway``."""
        try:
            declared = self._check_outer(scope)
            if not self.key_store.key_ids:
                raise _RefusedError(
                    503, FailureReason.OHTTP_KEY_UNAVAILABLE, code="ohttp_key_unavailable"
                )
            if self._in_flight >= self.limits.max_concurrent_requests:
                raise _RefusedError(503, FailureReason.OVERLOADED, b"too many requests in flight\n")
            self._in_flight += 1
            try:
                if _content_type(scope) == MEDIA_TYPE_CHUNKED_REQUEST:
                    await self._chunked(scope, receive, send, declared)
                else:
                    await self._whole(scope, receive, send, declared)
            finally:
                self._in_flight -= 1
        except _RefusedError as refused:
            self._observer.failure(refused.reason)
            if refused.status == 422:
                await send_problem(send, 422, OHTTP_KEY_PROBLEM)
            elif refused.code is not None:
                extra = ((b"retry-after", b"1"),) if refused.status == 503 else ()
                await send_json_error(send, refused.code, extra)
            else:
                extra = ((b"retry-after", b"1"),) if refused.status == 503 else ()
                await send_plain(send, refused.status, refused.body, extra)
        except _ClientGoneError:
            self._observer.failure(FailureReason.CLIENT_DISCONNECTED)

    def _check_outer(self, scope: Scope) -> int | None:
        """The declared body length, after the checks that need no byte of the body."""
        if scope["method"] != "POST":
            raise _RefusedError(405, FailureReason.METHOD, b"POST only\n")
        if _content_type(scope) not in (MEDIA_TYPE_REQUEST, MEDIA_TYPE_CHUNKED_REQUEST):
            raise _RefusedError(415, FailureReason.CONTENT_TYPE, b"unsupported media type\n")
        try:
            length = content_length(scope["headers"])
        except InvalidContentLengthError as exc:
            raise _RefusedError(
                400, FailureReason.CONTENT_LENGTH, code="invalid_content_length"
            ) from exc
        if length is not None and length > self.limits.body_limit_bytes:
            raise _RefusedError(413, FailureReason.BODY_TOO_LARGE, b"request body too large\n")
        return length

    async def _read(
        self, declared: int | None, receive: Receive, sink: Callable[[bytes], None]
    ) -> None:
        try:
            await stream_body(receive, self.limits.body_limit_bytes, sink, declared=declared)
        except BodyIncompleteError as exc:
            raise _ClientGoneError from exc
        except BodyTooLargeError as exc:
            raise _RefusedError(
                413, FailureReason.BODY_TOO_LARGE, b"request body too large\n"
            ) from exc
        except InvalidContentLengthError as exc:
            raise _RefusedError(
                400, FailureReason.CONTENT_LENGTH, code="invalid_content_length"
            ) from exc

    async def _whole(
        self, scope: Scope, receive: Receive, send: Send, declared: int | None
    ) -> None:
        body = bytearray()
        await self._read(declared, receive, body.extend)
        with _decryption_errors():
            plaintext, context = decapsulate_request(self.key_store, bytes(body))
        request, admission = await self._accept(plaintext, context.enc, context.key_id)
        response = self._inner_refusal(request, admission)
        if response is None:
            response = await self._collect(request, scope)
        # Zero padding after the message (RFC 9292 section 3.8) to the size bucket, inside
        # the encryption: the relay sees the bucket, not the answer's length.
        encoded = bhttp.encode_response(response)
        padding = bhttp_padding(len(encoded), self.limits.padding)
        sealed = context.encapsulate_response(
            bhttp.encode_response(response, padding=padding) if padding else encoded
        )
        headers = [
            (b"content-type", MEDIA_TYPE_RESPONSE.encode()),
            (b"content-length", str(len(sealed)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": sealed})
        self._observer.request_served(chunked=False)

    async def _chunked(
        self, scope: Scope, receive: Receive, send: Send, declared: int | None
    ) -> None:
        decoder = ChunkedRequestDecoder(self.key_store, max_chunk_size=self.limits.max_chunk_size)
        pieces: list[bytes] = []

        def feed(data: bytes) -> None:
            with _decryption_errors():
                pieces.extend(decoder.feed(data))

        await self._read(declared, receive, feed)
        with _decryption_errors():
            pieces.append(decoder.finish())
        if decoder.enc is None or decoder.key_id is None:  # finish() raised otherwise
            raise _RefusedError(400, FailureReason.DECRYPT, b"bad request\n")
        request, admission = await self._accept(b"".join(pieces), decoder.enc, decoder.key_id)
        encoder = decoder.response_encoder(max_chunk_size=self.limits.max_chunk_size)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", MEDIA_TYPE_CHUNKED_RESPONSE.encode()),
                    (b"incremental", b"?1"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        refusal = self._inner_refusal(request, admission)
        if refusal is not None:
            stream = bhttp.StreamingResponseEncoder()
            head = stream.head(refusal.status, refusal.headers)
            body = self._padded_tail(stream.body(refusal.content) + stream.end())
            sealed = (
                encoder.header + encoder.seal_chunk(head) + encoder.seal_chunk(body, final=True)
            )
            await send({"type": "http.response.body", "body": sealed, "more_body": False})
            return
        await self._stream(request, scope, receive, send, encoder)

    def _padded_tail(self, tail: bytes) -> bytes:
        """A whole refusal's content and end, with zero padding (RFC 9292 section 3.8) to
        the size bucket: the refusal's size is the bucket, not its reason."""
        return tail + bytes(bhttp_padding(len(tail), self.limits.padding))

    async def _accept(
        self, plaintext: bytes, enc: bytes, key_id: int
    ) -> tuple[bhttp.Request, Admission]:
        """Decode the inner request and admit its ``enc`` under one reading of the reference
        time (only requests that decrypted and decoded reach the replay cache, so garbage
        cannot fill it; one refused for its Date is not remembered: it never ran)."""
        try:
            request = bhttp.decode_request(plaintext)
        except ProtocolError as exc:
            raise _RefusedError(400, FailureReason.BAD_INNER_REQUEST, b"bad request\n") from exc
        try:
            if self._shared_replay is None:
                admission = self._replay.admit(enc, self._inner_date(request))
            else:
                admission = await self._admit_shared(enc, key_id, self._inner_date(request))
        except ReplayCacheFullError as exc:
            raise _RefusedError(
                503, FailureReason.OVERLOADED, b"too many requests in flight\n"
            ) from exc
        except ReplayStoreUnavailableError as exc:  # fail closed: never accepted unchecked
            raise _RefusedError(
                503, FailureReason.REPLAY_STORE_UNAVAILABLE, code="replay_store_unavailable"
            ) from exc
        if admission is Admission.REPLAY:
            raise _RefusedError(400, FailureReason.REPLAY, b"bad request\n")
        return request, admission

    async def _admit_shared(self, enc: bytes, key_id: int, date: float | None) -> Admission:
        """:meth:`ReplayCache.admit` with the set in the shared store: the Date checked
        against this gateway's reference time, a fresh ``enc`` kept (``SET NX EX``) until the
        reference passes ``Date + window`` plus the edge second; a stale one not stored."""
        if self._shared_replay is None:
            raise RuntimeError("_admit_shared without a shared replay store")
        now = self._replay.reference()
        window = self.limits.replay_window_seconds
        if date is None or abs(now - date) > window:
            return Admission.STALE
        ttl = date + window + _SHARED_EDGE_SECONDS - now
        fresh = await self._shared_replay.seen_or_add(self._replay_hash(key_id, enc), ttl)
        return Admission.FRESH if fresh else Admission.REPLAY

    def _replay_hash(self, key_id: int, enc: bytes) -> bytes:
        """HMAC-SHA256(k, key_id || enc), 16 bytes, with k derived from the private key that
        decrypted the request: every replica holding that key computes the same value, and no
        one without it (the host, whoever reads the store) can compute or test one."""
        key = self.key_store.lookup(key_id)
        cached = self._replay_keys.get(key_id)
        if cached is None or cached[0] is not key:
            secret = key.private_key.private_bytes()
            derived = hmac.new(secret, _REPLAY_KEY_LABEL, hashlib.sha256).digest()
            self._replay_keys[key_id] = cached = (key, derived)
        mac = hmac.new(cached[1], bytes([key_id]) + enc, hashlib.sha256)
        return mac.digest()[:16]

    def _inner_refusal(self, request: bhttp.Request, admission: Admission) -> bhttp.Response | None:
        if admission is Admission.STALE:
            self._observer.failure(FailureReason.DATE)
            return inner_date_problem(self._replay.reference())
        if _expects_continue(request):  # RFC 9458 section 5.1: the gateway MUST refuse it
            self._observer.failure(FailureReason.EXPECT_CONTINUE)
            return inner_json_error("expectation_failed")
        method, path = request.method.decode("ascii"), request.path.split(b"?", 1)[0]
        if (method, path.decode("latin-1")) not in self.limits.allowed_routes:
            self._observer.failure(FailureReason.ROUTE_NOT_ALLOWED)
            return inner_json_error("route_not_allowed")
        if not _inner_length_agrees(request):  # Binary HTTP frames the content, not this field
            self._observer.failure(FailureReason.CONTENT_LENGTH)
            return inner_json_error("invalid_content_length")
        return None

    def _inner_date(self, request: bhttp.Request) -> float | None:
        """The inner request's one ``Date`` (RFC 9110 HTTP-date, UTC), or None."""
        values = [value for name, value in request.headers if name.lower() == b"date"]
        if len(values) != 1:
            return None
        try:
            return parse_http_date(values[0].decode("ascii"), self._clock())
        except (ValueError, UnicodeDecodeError, OverflowError):
            return None

    def _exchange(self, request: bhttp.Request, scope: Scope) -> InnerExchange:
        if self._app is None:
            raise RuntimeError("the gateway has no app to dispatch into (call set_app)")
        exchange = InnerExchange(
            self._app,
            inner_scope(request, scope),
            request.content,
            self.limits.inner_queue_messages,
        )
        exchange.start()
        return exchange

    async def _collect(self, request: bhttp.Request, scope: Scope) -> bhttp.Response:
        """The whole inner response (RFC 9458 form), bounded by the body limit."""
        exchange = self._exchange(request, scope)
        try:
            start = await exchange.response_start()
            body = bytearray()
            while (piece := await exchange.body()) is not None:
                body += piece
                if len(body) > self.limits.body_limit_bytes:
                    raise RuntimeError("inner response over the body limit")
            return bhttp.Response(start.status, _inner_headers(start.headers), bytes(body))
        except Exception as exc:
            self._observer.failure(FailureReason.INNER_ERROR)
            _log_failure("inner request failed before its response was complete", exc)
            return inner_json_error("internal_error")
        finally:
            await exchange.aclose()

    async def _stream(
        self,
        request: bhttp.Request,
        scope: Scope,
        receive: Receive,
        send: Send,
        encoder: ChunkedResponseEncoder,
    ) -> None:
        exchange = self._exchange(request, scope)
        pump = asyncio.create_task(self._pump(exchange, send, encoder))
        watcher = asyncio.create_task(_disconnected(receive))
        try:
            done, _ = await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if pump not in done:
                self._observer.failure(FailureReason.CLIENT_DISCONNECTED)
                pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        finally:
            watcher.cancel()
            await exchange.aclose()

    async def _pump(
        self, exchange: InnerExchange, send: Send, encoder: ChunkedResponseEncoder
    ) -> None:
        stream = bhttp.StreamingResponseEncoder()
        seal, observer = encoder.seal_chunk, self._observer

        async def emit(sealed: bytes, more: bool = True) -> None:
            if sealed:  # an empty send (the truncating end) carries no chunk
                observer.chunk_sealed()
            await send({"type": "http.response.body", "body": sealed, "more_body": more})

        try:
            start = await exchange.response_start()
        except Exception as exc:
            self._observer.failure(FailureReason.INNER_ERROR)
            _log_failure("inner request failed before its response started", exc)
            failed = inner_json_error("internal_error")
            head = stream.head(failed.status, failed.headers)
            tail = self._padded_tail(stream.body(failed.content) + stream.end())
            await emit(encoder.header + seal(head) + seal(tail, final=True), more=False)
            return
        headers = _inner_headers(start.headers)
        await emit(encoder.header + seal(stream.head(start.status, headers)))

        async def sink(piece: bytes) -> None:
            await emit(seal(stream.body(piece)))

        try:
            await exchange.stream_body(sink)
        except Exception as exc:
            self._observer.failure(FailureReason.INNER_ERROR)
            _log_failure("inner response failed mid-stream", exc)
            if (start.header(b"content-type") or b"").startswith(b"text/event-stream"):
                await emit(seal(stream.body(pad_events(_SSE_ERROR, self.limits.padding))))
                await emit(seal(stream.end(), final=True), more=False)
            else:  # no in-band error is possible: end without the final chunk (truncation)
                await emit(b"", more=False)
            return
        await emit(seal(stream.end(), final=True), more=False)
        self._observer.request_served(chunked=True)


_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"upgrade"}
)


def _expects_continue(request: bhttp.Request) -> bool:
    return any(
        name.lower() == b"expect" and b"100-continue" in value.lower()
        for name, value in request.headers
    )


def _inner_length_agrees(request: bhttp.Request) -> bool:
    """Whether the inner ``Content-Length``, if any, is valid and the content's length: the
    inner app reads the header (one parser: :mod:`enclave.protocol.bodies`), so a request
    whose field disagrees with its framing never reaches it."""
    try:
        declared = content_length(request.headers)
    except InvalidContentLengthError:
        return False
    return declared is None or declared == len(request.content)


def _inner_headers(headers: tuple[tuple[bytes, bytes], ...]) -> tuple[tuple[bytes, bytes], ...]:
    """The inner response's fields minus connection-level ones (Binary HTTP frames the content)."""
    return tuple(
        (name.lower(), value) for name, value in headers if name.lower() not in _HOP_BY_HOP
    )


def _log_failure(what: str, exc: Exception) -> None:
    """The exception's type only: its message or traceback may quote the request."""
    logger.warning("%s: %s", what, type(exc).__name__)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _decryption_errors(contextlib.AbstractContextManager[None]):  # noqa: N801
    """Map the core's errors at one boundary: key problems to 422, the rest to one 400."""

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, UnknownKeyIdError):
            raise _RefusedError(422, FailureReason.UNKNOWN_KEY) from exc
        if isinstance(exc, UnsupportedSuiteError):
            raise _RefusedError(422, FailureReason.UNSUPPORTED_SUITE) from exc
        if isinstance(exc, ProtocolError):
            raise _RefusedError(400, FailureReason.DECRYPT, b"bad request\n") from exc
