"""The Starlette application of the service.

Routes: ``/health``, ``/ready``, ``/metrics`` and ``/metrics/engine`` (the engine's own
metrics, filtered; only with a ``metrics_token``, see :mod:`enclave.routes.metrics`),
``/v1/models``, the lifecycle routes of the
model manager (``/v1/models/status|load|unload``), the inference routes, and any
``extra_routes`` (the OHTTP gateway and the attestation report). Errors leave in OpenAI's
shape ``{"error": {"message", "type", "param", "code"}}`` with stable codes; a foreign
exception's text or a traceback never reaches a client. The lifespan starts and closes the
:class:`~enclave.service.Service`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from enclave._ratelimit import TokenBuckets
from enclave.routes import (
    ApiError,
    error_response,
    health_routes,
    inference_routes,
    model_list_routes,
)
from enclave.routes._access import annotate
from enclave.routes._middleware import ObservedApp
from enclave.routes._token_guard import guard_lifecycle_routes
from enclave.routes.metrics import METRICS_PATH, metrics_routes
from enclave.service import Service
from model_manager import model_routes

__all__ = ["METRICS_PATH", "build_app", "build_metrics_app"]

logger = logging.getLogger(__name__)


def build_app(
    service: Service,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    forward: ASGIApp | None = None,
    observe: bool = True,
) -> Starlette:
    """The app serving ``service``; ``extra_routes`` are added after the built-in ones.

    ``forward`` (a data-plane worker, :mod:`enclave.workers`): the lifecycle and metrics routes
    are served by the owner, and this app sends them there. ``observe=False`` (the owner of
    workers): no request metrics or access lines, the worker that took the request keeps them.
    """

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.aclose()

    owner_routes: list[BaseRoute] = [
        *metrics_routes(service, listener="main"),
        *guard_lifecycle_routes(
            model_routes(service.manager, service.settings.model_manager, error_response),
            per_peer=service.settings.service.load_token_failures_per_peer_per_minute,
            global_=service.settings.service.load_token_failures_global_per_minute,
            buckets=TokenBuckets(),
            token=service.settings.model_manager.load_token,
        ),
    ]
    if forward is not None:
        owner_routes = [
            Route(route.path, forward, methods=sorted(route.methods or ("GET",)))
            for route in owner_routes
            if isinstance(route, Route)
        ]
    routes: list[BaseRoute] = [
        *health_routes(service),
        *model_list_routes(service),
        *owner_routes,
        *inference_routes(service),
        *extra_routes,
    ]
    service.metrics.register_routes(route.path for route in routes if isinstance(route, Route))
    return Starlette(
        routes=routes,
        middleware=[Middleware(ObservedApp, metrics=service.metrics)] if observe else [],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
        lifespan=lifespan,
    )


def build_metrics_app(service: Service) -> Starlette:
    """The metrics listener's app: ``/metrics`` and ``/metrics/engine`` only (no lifespan:
    the main app starts and closes the service)."""
    return Starlette(
        routes=metrics_routes(service, listener="metrics"),
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ApiError):  # pragma: no cover - registered for ApiError only
        return error_response("internal_error")
    annotate(request.scope, reason=exc.code)
    return error_response(exc.code, param=exc.param, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        annotate(request.scope, reason="not_found")
        return error_response("not_found")
    if status == 405:
        annotate(request.scope, reason="method_not_allowed")
        headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
        return error_response("method_not_allowed", headers=headers)
    logger.info("HTTP error %d", status)
    return error_response("internal_error", status=status)
