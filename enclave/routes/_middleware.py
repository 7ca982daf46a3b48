"""The outermost layer of the app: request metrics and the last error boundary.

- Every HTTP request is counted and timed by its route template (``scope["route"]``, set by
  Starlette's router) and status; the time runs to the end of the response body.
- An exception no handler took becomes a 500 ``internal_error`` in the OpenAI shape when the
  response has not started, and is logged by type name only (a foreign exception's text may
  quote request content, so it is neither logged nor sent). After the response has started
  the body is left incomplete, so the client sees it cut.
- When the response ends, one access line is logged (``enclave.access``; fields in
  :mod:`enclave.routes._access`): INFO, or DEBUG for the probe and scrape routes.
"""

from __future__ import annotations

import logging
import time

from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enclave.gateway import through_gateway
from enclave.metrics import OHTTP_INNER_ROUTE, ServiceMetrics
from enclave.protocol.api import error_body
from enclave.routes._access import access_record

__all__ = ["ObservedApp"]

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("enclave.access")

#: Routes polled by probes and scrapers: their access lines are DEBUG.
QUIET_ROUTES = frozenset({"/health", "/ready", "/metrics", "/metrics/engine"})

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
        bytes_in = bytes_out = 0
        record = access_record(scope)

        async def observed_receive() -> Message:
            nonlocal bytes_in
            message = await receive()
            if message["type"] == "http.request":
                bytes_in += len(message.get("body", b""))
            return message

        async def observed_send(message: Message) -> None:
            nonlocal status, bytes_out
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                bytes_out += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, observed_receive, observed_send)
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
                bytes_out += len(_INTERNAL)
                record.setdefault("reason", "internal_error")
        finally:
            seconds = time.monotonic() - started
            self.metrics.observe_request(_template(scope), status, seconds)
            route = self.metrics.route_label(_template(scope))
            record.update(
                route=route,
                status=status,
                duration_ms=round(seconds * 1000, 1),
                bytes_in=bytes_in,
                bytes_out=bytes_out,
            )
            access_logger.log(
                logging.DEBUG if route in QUIET_ROUTES else logging.INFO,
                "%s %s %s %d%s %.1f ms in=%d out=%d",
                record["request_id"],
                record["method"],
                route,
                status,
                f" {record['reason']}" if "reason" in record else "",
                seconds * 1000,
                bytes_in,
                bytes_out,
                extra=dict(record),
            )


def _template(scope: Scope) -> str | None:
    if through_gateway(scope):
        return OHTTP_INNER_ROUTE
    route = scope.get("route")
    return route.path if isinstance(route, Route) else None
