"""The outermost layer of the app: request metrics and the last error boundary.

- Every HTTP request is counted and timed by its route template (``scope["route"]``, set by
  Starlette's router) and status; the time runs to the end of the response body.
- An exception no handler took becomes a 500 ``internal_error`` in the OpenAI shape when the
  response has not started, and is logged by type name only (a foreign exception's text may
  quote request content, so it is neither logged nor sent). After the response has started
  the body is left incomplete, so the client sees it cut.
"""

from __future__ import annotations

import logging
import time

from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enclave.gateway import through_gateway
from enclave.metrics import OHTTP_INNER_ROUTE, ServiceMetrics
from enclave.protocol.api import error_body

__all__ = ["ObservedApp"]

logger = logging.getLogger(__name__)

_INTERNAL = error_body("internal_error")


class ObservedApp:
    """ASGI middleware: metrics per route template and status; the error boundary."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except Exception as exc:
            logger.error(
                "unhandled %s on %s", type(exc).__name__, _template(scope) or "unmatched route"
            )
            if status == 0:
                status = 500
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(_INTERNAL)).encode()),
                            (b"cache-control", b"no-store"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": _INTERNAL})
        finally:
            self.metrics.observe_request(_template(scope), status, time.monotonic() - started)


def _template(scope: Scope) -> str | None:
    if through_gateway(scope):
        return OHTTP_INNER_ROUTE
    route = scope.get("route")
    return route.path if isinstance(route, Route) else None
