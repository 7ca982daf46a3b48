"""Failed load-token attempts are limited, so the token cannot be guessed at network speed.

Every ``POST /v1/models/load|unload`` first takes a token from two buckets: one for where the
request came from (:func:`enclave._ratelimit.request_origin`: the peer address, or through the
OHTTP gateway the outer peer's pseudonym) at ``load_token_failures_per_peer_per_minute``, and
one shared by everyone at ``load_token_failures_global_per_minute``. An attempt that does not
end in ``401`` (a missing or wrong token) gives its token back, so only failures count. With
either bucket empty the request is refused with ``429 too_many_token_failures`` and a
``Retry-After`` before the token is even compared: the limit holds however many requests run
at once. The shared bucket means a distributed guesser can also delay the fleet manager's
next load until its Retry-After; that is the price of bounding the guessing rate overall.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enclave._ratelimit import TokenBuckets, request_origin
from enclave.routes._errors import error_response
from model_manager.endpoints import LOAD_PATH, UNLOAD_PATH

__all__ = ["TokenFailureGuard", "guard_lifecycle_routes"]

logger = logging.getLogger(__name__)


class TokenFailureGuard:
    """ASGI wrapper of one authenticated endpoint (see the module docstring)."""

    def __init__(self, app: ASGIApp, buckets: TokenBuckets, per_peer: int, global_: int) -> None:
        self._app = app
        self._buckets = buckets
        self._per_peer = per_peer
        self._global = global_

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        charged = (
            (f"token-failures:{request_origin(scope)}", self._per_peer),
            ("token-failures:*", self._global),
        )
        wait = self._buckets.take(*charged)
        if wait:
            logger.warning("lifecycle request refused: too_many_token_failures")
            response = error_response(
                "too_many_token_failures", headers={"Retry-After": str(int(wait))}
            )
            await response(scope, receive, send)
            return
        status = 0

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, watched)
        finally:
            if status != 401:
                self._buckets.give_back(*charged)


def guard_lifecycle_routes(
    routes: Sequence[BaseRoute], *, per_peer: int, global_: int, buckets: TokenBuckets
) -> list[BaseRoute]:
    """``routes`` with the load and unload endpoints wrapped in a :class:`TokenFailureGuard`."""
    guarded: list[BaseRoute] = []
    for route in routes:
        if isinstance(route, Route) and route.path in (LOAD_PATH, UNLOAD_PATH):
            guard = TokenFailureGuard(route.app, buckets, per_peer, global_)
            route = Route(route.path, guard, methods=sorted(route.methods or ()), name=route.name)
        guarded.append(route)
    return guarded
