"""In-process dispatch of a decapsulated Binary HTTP request into the service's own ASGI app.

The inner app runs as a task whose ``send`` feeds a small bounded queue until the gateway has
the response head out: it can run at most ``queue_size`` messages ahead of the outer client,
so a slow client slows the engine down instead of filling memory. :meth:`InnerExchange.body`
hands over the next piece together with every piece already waiting behind it (sealed as one
chunk instead of one each); it never waits for a piece that has not arrived. A streamed body
then goes through :meth:`InnerExchange.stream_body`: the queued pieces first, then straight
from the app's ``send`` to the sealing, which the app waits for (no buffer, no task switch
per piece). Closing the exchange cancels the task, which closes its upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message

from enclave._prefix import address_prefix
from enclave.protocol.bhttp import Request as BhttpRequest

__all__ = [
    "SCOPE_EXTENSION",
    "InnerExchange",
    "InnerResponseStart",
    "inner_scope",
    "outer_pseudonym",
    "through_gateway",
]

#: Marks the inner request's scope; routes may read it (for example, to count encrypted traffic).
SCOPE_EXTENSION = "enclave.ohttp"
_FINISH_GRACE_SECONDS = 5.0
_PSEUDONYM_KEY = secrets.token_bytes(32)


def through_gateway(scope: Mapping[str, Any]) -> bool:
    """Whether this request arrived encrypted, dispatched by the gateway."""
    return SCOPE_EXTENSION in (scope.get("extensions") or {})


@dataclass(frozen=True, slots=True)
class InnerResponseStart:
    status: int
    headers: tuple[tuple[bytes, bytes], ...] = field(default=())

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


def pseudonym_key() -> bytes:
    """This process's pseudonym key (the owner of data-plane workers sends it to each)."""
    return _PSEUDONYM_KEY


def set_pseudonym_key(key: bytes) -> None:
    """Use the owner's pseudonym key: one relay is one rate-limit key across all workers."""
    global _PSEUDONYM_KEY
    if len(key) != 32:
        raise ValueError("a pseudonym key is 32 bytes")
    _PSEUDONYM_KEY = key


def outer_pseudonym(outer_scope: Mapping[str, Any]) -> str:
    """A keyed hash (per process) of the outer peer's address: rate limits can keep one bucket
    per relay (or per client talking to the gateway directly) without the inner request
    learning the address. An IPv6 peer is hashed by its /64, like a direct one."""
    client = outer_scope.get("client")
    address = address_prefix(str(client[0])) if client else ""
    return hmac.new(_PSEUDONYM_KEY, str(address).encode(), hashlib.sha256).hexdigest()[:24]


def inner_scope(request: BhttpRequest, outer_scope: Mapping[str, Any]) -> dict[str, Any]:
    """The ASGI HTTP scope of the inner request. The client address is never the outer peer's:
    the relay hides it, and the inner request must not learn it here either (the extension
    carries :func:`outer_pseudonym` instead, under ``origin``)."""
    target = request.path or b"/"
    raw_path, _, query = target.partition(b"?")
    headers = [(name.lower(), value) for name, value in request.headers]
    if request.authority and not any(name == b"host" for name, _ in headers):
        headers.insert(0, (b"host", request.authority))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method.decode("ascii"),
        "scheme": request.scheme.decode("ascii") or "https",
        "path": unquote_to_bytes(raw_path).decode("utf-8", "replace"),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": None,
        "server": outer_scope.get("server"),
        "state": dict(outer_scope.get("state") or {}),
        "extensions": {SCOPE_EXTENSION: {"origin": outer_pseudonym(outer_scope)}},
        **({"app": outer_scope["app"]} if "app" in outer_scope else {}),
    }


class InnerExchange:
    """One inner request/response. ``start()`` the app, then ``response_start()`` and
    ``body()`` pieces until it returns ``None`` (the end); ``aclose()`` always."""

    def __init__(
        self, app: ASGIApp, scope: dict[str, Any], content: bytes, queue_size: int
    ) -> None:
        self._app = app
        self._scope = scope
        self._content: bytes | None = content
        self._queue: asyncio.Queue[Message | BaseException | None] = asyncio.Queue(queue_size)
        self._disconnected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ended = False
        self._draining = False
        self._deferred: BaseException | None = None
        self._sink: Callable[[bytes], Awaitable[None]] | None = None
        self._returned = asyncio.Event()
        self._failure: BaseException | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _receive(self) -> Message:
        if self._content is not None:
            content, self._content = self._content, None
            return {"type": "http.request", "body": content, "more_body": False}
        await self._disconnected.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        if self._draining:
            return
        sink = self._sink
        if sink is None:
            await self._queue.put(message)
            return
        await self._flush_queued(sink)
        if message["type"] == "http.response.body":
            if not message.get("more_body", False):
                self._ended = True
            if data := message.get("body", b""):
                await sink(bytes(data))  # the app waits while the client side is busy

    async def _flush_queued(self, sink: Callable[[bytes], Awaitable[None]]) -> None:
        """Pieces that reached the queue after the switch to the sink (a ``put`` that was
        waiting for room completes late): they go first, in order."""
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, BaseException):
                self._failure = item
            elif item is None:
                self._ended = True
            elif data := self._take(item):
                await sink(data)

    async def _run(self) -> None:
        try:
            await self._app(self._scope, self._receive, self._send)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # surfaced to the gateway, which knows what was sent already
            self._failure = exc
            if not self._draining and self._sink is None:
                await self._queue.put(exc)
        else:
            if not self._draining and self._sink is None:
                await self._queue.put(None)
        finally:
            self._returned.set()

    async def _next(self) -> Message | None:
        if self._deferred is not None:
            error, self._deferred = self._deferred, None
            raise error
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def response_start(self) -> InnerResponseStart:
        """The status and headers; raises what the app raised before it sent them."""
        while True:
            message = await self._next()
            if message is None:
                raise RuntimeError("the inner app returned without a response")
            if message["type"] == "http.response.start":
                headers = tuple((bytes(k), bytes(v)) for k, v in message.get("headers", ()))
                return InnerResponseStart(int(message["status"]), headers)

    async def body(self) -> bytes | None:
        """The next non-empty body piece joined with the pieces already waiting behind it, or
        ``None`` once the body has ended. A failure behind waiting pieces is raised on the
        next call, after those pieces have been handed over."""
        first = await self._next_piece()
        if first is None:
            return None
        pieces = [first]
        while not self._ended and not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, BaseException):
                self._deferred = item
                break
            if item is None:
                self._ended = True
                break
            if data := self._take(item):
                pieces.append(data)
        return first if len(pieces) == 1 else b"".join(pieces)

    async def stream_body(self, sink: Callable[[bytes], Awaitable[None]]) -> None:
        """Hand every body piece to ``sink`` in order until the app returns: first the pieces
        already queued, then straight from the app's ``send``, which waits while ``sink`` is
        busy (backpressure with no buffer between them, and no task switch per piece).
        Raises what the app raised."""
        while not self._queue.empty() or self._deferred is not None:
            piece = await self.body()
            if piece is None:
                return
            await sink(piece)
        if self._ended:
            return
        # The queue is empty, so the app is not blocked in put(): from here its sends go to
        # the sink directly (nothing runs between the check above and this switch).
        self._sink = sink
        await self._returned.wait()
        await self._flush_queued(sink)
        if self._failure is not None:
            raise self._failure

    async def _next_piece(self) -> bytes | None:
        while not self._ended:
            message = await self._next()
            if message is None:  # the app returned
                self._ended = True
                return None
            if data := self._take(message):
                return data
        return None

    def _take(self, message: Message) -> bytes:
        """A body message's bytes (marking the end of the body); other messages give b""."""
        if message["type"] != "http.response.body":
            return b""
        if not message.get("more_body", False):
            self._ended = True
        return bytes(message.get("body", b""))

    async def aclose(self) -> None:
        """After a complete response, let the app finish (briefly, dropping anything it still
        sends); otherwise tell it its client went away and cancel it, which closes its
        upstream request."""
        task = self._task
        if task is None or task.done():
            return
        if self._ended:
            self._draining = True
            while not self._queue.empty():
                self._queue.get_nowait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), _FINISH_GRACE_SECONDS)
        self._disconnected.set()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
