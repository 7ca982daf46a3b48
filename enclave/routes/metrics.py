"""``GET /metrics`` and ``GET /metrics/engine``, served only to an authorised scraper.

Where they are served (settings ``metrics_token``, ``metrics_host``, ``metrics_port``):

- on the main listener (RA-TLS; never through the OHTTP gateway, whose allow-list leaves them
  out) only with
  ``Authorization: Bearer <metrics_token>`` (401 ``missing_token`` / ``invalid_token``,
  compared with ``hmac.compare_digest``); without a ``metrics_token`` they are not served there
  at all (404 ``not_found``, as for any other unknown path);
- on the metrics listener (plain HTTP on ``metrics_host:metrics_port``, off unless
  ``metrics_port`` is set; loopback unless a ``metrics_token`` is set) to any scraper that
  reaches it, or with the bearer token when one is set.

What they hold is in docs/service.md ("Metrics"): nothing finer than what an observer of the
padded wire already sees (counts of requests and streamed pieces, timings), never a prompt's
length, an answer's token count from the engine, a finish reason, request parameters or
prefix-cache hits.
"""

from __future__ import annotations

import hmac
import logging

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from enclave.metrics import CONTENT_TYPE
from enclave.routes._errors import error_response
from enclave.routes.engine_metrics import engine_metrics_routes
from enclave.service import Service

__all__ = ["METRICS_PATH", "MetricsAuthorization", "metrics_routes"]

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="metrics"'}


class MetricsAuthorization:
    """ASGI wrapper: the request must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: SecretStr) -> None:
        self._app = app
        self._expected = token.get_secret_value().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        code = self._refusal(scope)
        if code is not None:
            logger.info("metrics scrape refused: %s", code)
            await error_response(code, headers=_CHALLENGE)(scope, receive, send)
            return
        await self._app(scope, receive, send)

    def _refusal(self, scope: Scope) -> str | None:
        header = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value
                break
        if header is None:
            return "missing_token"
        scheme, _, presented = header.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(
            presented.strip(), self._expected
        ):
            return "invalid_token"
        return None


def metrics_routes(service: Service, *, listener: str) -> list[BaseRoute]:
    """The two metrics routes for ``listener`` (``"main"`` or ``"metrics"``): none on the main
    listener without a ``metrics_token``; wrapped in :class:`MetricsAuthorization` when one is
    set."""
    token = service.settings.service.metrics_token
    if listener not in ("main", "metrics"):
        raise ValueError("listener is 'main' or 'metrics'")
    if listener == "main" and token is None:
        return []

    async def metrics(_: Request) -> Response:
        service.metrics.set_model_state(service.manager.status().proxy_status)
        exposition = service.exposition
        return Response(
            service.metrics.render() if exposition is None else await exposition(),
            media_type=CONTENT_TYPE,
            headers={"Cache-Control": "no-store"},
        )

    routes: list[BaseRoute] = [
        Route(METRICS_PATH, metrics, methods=["GET"]),
        *engine_metrics_routes(service),
    ]
    if token is None:
        return routes
    return [
        Route(route.path, MetricsAuthorization(route.app, token), methods=["GET"])
        if isinstance(route, Route)
        else route
        for route in routes
    ]
