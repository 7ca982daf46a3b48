"""The Oblivious HTTP gateway of the service: ``/.well-known/ohttp-keys`` and
``/.well-known/ohttp-gateway`` (RFC 9458 and chunked OHTTP), dispatching decapsulated requests
in-process into the service's own app. docs/protocol.md is the wire specification."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from enclave.gateway._dispatch import SCOPE_EXTENSION, through_gateway
from enclave.gateway._gateway import OhttpGateway
from enclave.gateway._replay import (
    ReplayCache,
    ReplayCacheFullError,
    ReplayStore,
    ReplayStoreUnavailableError,
)
from enclave.gateway._replay_redis import (
    DEFAULT_REDIS_PREFIX,
    RedisReplayStore,
    check_redis_url,
    redacted_redis_url,
)
from enclave.gateway._types import (
    DEFAULT_ALLOWED_ROUTES,
    FAILURE_REASONS,
    FailureReason,
    GatewayLimits,
    GatewayObserver,
    NullObserver,
)
from enclave.protocol.api import GATEWAY_PATH, KEYS_PATH

__all__ = [
    "DEFAULT_ALLOWED_ROUTES",
    "DEFAULT_REDIS_PREFIX",
    "FAILURE_REASONS",
    "SCOPE_EXTENSION",
    "FailureReason",
    "GatewayLimits",
    "GatewayObserver",
    "NullObserver",
    "OhttpGateway",
    "RedisReplayStore",
    "ReplayCache",
    "ReplayCacheFullError",
    "ReplayStore",
    "ReplayStoreUnavailableError",
    "check_redis_url",
    "gateway_routes",
    "redacted_redis_url",
    "through_gateway",
]


_Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


class _AsgiEndpoint:
    """Starlette treats a class instance as a raw ASGI endpoint, not a request handler."""

    def __init__(self, handler: _Handler) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handler(scope, receive, send)


def gateway_routes(gateway: OhttpGateway) -> list[BaseRoute]:
    return [
        Route(KEYS_PATH, _AsgiEndpoint(gateway.keys), methods=["GET"]),
        Route(GATEWAY_PATH, _AsgiEndpoint(gateway.handle)),
    ]
