"""Failed load-token attempts are limited, so the token cannot be guessed at network speed, and
guessers cannot lock the operator out.

``POST /v1/models/load|unload`` is guarded by two buckets of *failures* (a missing or wrong
token): one for where the request came from (:func:`enclave._ratelimit.request_origin`: the
peer address, an IPv6 peer by its /64, or through the OHTTP gateway the outer peer's
pseudonym) at ``load_token_failures_per_peer_per_minute``, and one shared by everyone at
``load_token_failures_global_per_minute``. In order:

1. an origin whose own bucket is empty is refused (``429 too_many_token_failures``, with
   ``Retry-After``) whatever token it presents, so the answer tells it nothing about the token:
   one origin tests at most its rate;
2. the right token (compared in constant time) goes to the manager, charged to nothing: the
   shared bucket never stands between the operator and the manager;
3. a wrong or missing token is charged to both buckets, all or none; if either was empty it is
   refused with 429, otherwise the manager answers it (401).

The shared bucket therefore bounds the failures the manager sees, not how fast many origins can
test tokens: that is bounded by the token's strength (at least 32 characters, checked at start).
A guesser that shares the operator's origin (its IPv4 address, its /64, or its OHTTP relay)
can still hold it back until the ``Retry-After``.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Sequence

from pydantic import SecretStr
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enclave._ratelimit import Bucket, TokenBuckets, request_origin
from enclave.routes._errors import error_response
from model_manager.endpoints import LOAD_PATH, UNLOAD_PATH

__all__ = ["TokenFailureGuard", "guard_lifecycle_routes"]

logger = logging.getLogger(__name__)

_SHARED = "token-failures:*"
_LOG_PERIOD_SECONDS = 10.0


class TokenFailureGuard:
    """ASGI wrapper of one authenticated endpoint (see the module docstring). ``token`` is the
    load token; without one the manager refuses (or, in dev mode, allows) every request and
    nothing is limited here."""

    def __init__(
        self,
        app: ASGIApp,
        buckets: TokenBuckets,
        per_peer: int,
        global_: int,
        token: SecretStr | None,
    ) -> None:
        self._app = app
        self._buckets = buckets
        self._per_peer = per_peer
        self._global = global_
        self._token = None if token is None else token.get_secret_value().encode()
        self._refused = 0
        self._last_logged: float | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._token is None:
            await self._app(scope, receive, send)
            return
        origin: Bucket = (f"token-failures:{request_origin(scope)}", self._per_peer)
        shared: Bucket = (_SHARED, self._global)
        wait = self._buckets.wait(origin)
        if not wait:
            if _presents(scope, self._token):
                await self._watched(scope, receive, send, origin, shared)
                return
            wait = self._buckets.take(origin, shared)
        if wait:
            self._log_refusal()
            response = error_response(
                "too_many_token_failures", headers={"Retry-After": str(int(wait))}
            )
            await response(scope, receive, send)
            return
        await self._app(scope, receive, send)

    def _log_refusal(self) -> None:
        """At most one line per period, with the count since the last: a flood of guesses
        cannot flood the log."""
        self._refused += 1
        now = time.monotonic()
        if self._last_logged is None or now - self._last_logged >= _LOG_PERIOD_SECONDS:
            logger.warning(
                "lifecycle request refused: too_many_token_failures (%d since the last report)",
                self._refused,
            )
            self._last_logged, self._refused = now, 0

    async def _watched(self, scope: Scope, receive: Receive, send: Send, *charged: Bucket) -> None:
        """Run the right token's request; should the manager still answer 401 (it parses the
        header its own way), charge the failure after all."""
        status = 0

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, watched)
        finally:
            if status == 401:
                self._buckets.take(*charged)


def _presents(scope: Scope, expected: bytes) -> bool:
    """Whether the request's (first) ``Authorization`` header is ``Bearer <expected>``."""
    for name, value in scope.get("headers") or ():
        if name.lower() == b"authorization":
            scheme, _, presented = bytes(value).partition(b" ")
            return scheme.lower() == b"bearer" and hmac.compare_digest(presented.strip(), expected)
    return False


def guard_lifecycle_routes(
    routes: Sequence[BaseRoute],
    *,
    per_peer: int,
    global_: int,
    buckets: TokenBuckets,
    token: SecretStr | None,
) -> list[BaseRoute]:
    """``routes`` with the load and unload endpoints wrapped in a :class:`TokenFailureGuard`."""
    guarded: list[BaseRoute] = []
    for route in routes:
        if isinstance(route, Route) and route.path in (LOAD_PATH, UNLOAD_PATH):
            guard = TokenFailureGuard(route.app, buckets, per_peer, global_, token)
            route = Route(route.path, guard, methods=sorted(route.methods or ()), name=route.name)
        guarded.append(route)
    return guarded
