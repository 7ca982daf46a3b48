"""``GET /health`` (the process answers) and ``GET /ready`` (it can serve inference).

``/ready`` is 200 ``{"ready": true}`` only when a model is ready and every readiness check
the service holds passes (the certificate manager adds one: a certificate has been issued);
otherwise 503 ``{"ready": false, "reason": <code>}`` with the first failing reason:
``model_not_ready`` or a check's own code.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from enclave.service import Service

__all__ = ["HEALTH_PATH", "READY_PATH", "health_routes", "readiness_reason"]

HEALTH_PATH = "/health"
READY_PATH = "/ready"
_NO_STORE = {"Cache-Control": "no-store"}


def readiness_reason(service: Service) -> str | None:
    """``None`` when ready, else the first reason code."""
    if service.ready_model() is None:
        return "model_not_ready"
    for check in service.readiness_checks:
        reason = check()
        if reason is not None:
            return reason
    return None


def health_routes(service: Service) -> list[BaseRoute]:
    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers=_NO_STORE)

    async def ready(_: Request) -> Response:
        reason = readiness_reason(service)
        if reason is None:
            return JSONResponse({"ready": True}, headers=_NO_STORE)
        return JSONResponse({"ready": False, "reason": reason}, status_code=503, headers=_NO_STORE)

    return [
        Route(HEALTH_PATH, health, methods=["GET"]),
        Route(READY_PATH, ready, methods=["GET"]),
    ]
