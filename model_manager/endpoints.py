"""The lifecycle API as Starlette routes: ``GET /v1/models/status``, ``POST /v1/models/load``,
``POST /v1/models/unload``.

- Status is open (it holds no secret: names, digests, states, stable error codes).
- Load and unload need ``Authorization: Bearer <load_token>``, compared in constant time.
  Without a configured token they answer only in ``insecure_dev_mode`` (a warning is logged on
  every use); otherwise 503 ``load_token_not_configured``.
- Bodies: ``{"model": "<name>"}``, ``Content-Type: application/json``, at most
  ``control_body_limit_bytes``; unknown or duplicate keys are refused.
- 202: a transition started (the body is the status; poll it for progress); 200: nothing to do;
  400 bad body or name; 401 token; 404 unknown model; 409 conflicting transition; 413; 415.
- Errors use the OpenAI shape ``{"error": {"message", "type", "code"}}`` with stable codes.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, Router

from model_manager._errorcodes import describe
from model_manager.errors import (
    InvalidModelNameError,
    ModelManagerError,
    TransitionConflictError,
    UnknownModelError,
)
from model_manager.lifecycle import ModelManager, TransitionOutcome
from model_manager.settings import ModelManagerSettings

__all__ = ["LOAD_PATH", "STATUS_PATH", "UNLOAD_PATH", "build_router", "model_routes"]

logger = logging.getLogger(__name__)

STATUS_PATH = "/v1/models/status"
LOAD_PATH = "/v1/models/load"
UNLOAD_PATH = "/v1/models/unload"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    500: "server_error",
    503: "service_unavailable_error",
}


class _RefusedError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    """An OpenAI-shaped error body."""
    body = {"error": {"message": message, "type": _ERROR_TYPES.get(status, "error"), "code": code}}
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="model-lifecycle"'
    return JSONResponse(body, status_code=status, headers=headers)


def model_routes(manager: ModelManager, settings: ModelManagerSettings) -> list[BaseRoute]:
    """The three lifecycle routes, for the service to include in its app."""

    async def status(request: Request) -> Response:
        return JSONResponse(manager.status().to_document(), headers={"Cache-Control": "no-store"})

    def control(action: Literal["load", "unload"]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                _authorize(request, settings, action)
                name = await _read_model_name(request, settings.control_body_limit_bytes)
            except _RefusedError as exc:
                logger.info("model %s refused: %s", action, exc.code)
                return error_response(exc.status, exc.code, exc.message)
            try:
                outcome = manager.load(name) if action == "load" else manager.unload(name)
            except ModelManagerError as exc:
                code, message = describe(exc)
                shown = "(invalid name)" if isinstance(exc, InvalidModelNameError) else name
                logger.info("model %s of %s refused: %s", action, shown, code)
                return error_response(_http_status(exc), code, message)
            logger.info("model %s of %s: %s", action, name, _verb(outcome))
            return _outcome_response(outcome)

        return endpoint

    return [
        Route(STATUS_PATH, status, methods=["GET"]),
        Route(LOAD_PATH, control("load"), methods=["POST"]),
        Route(UNLOAD_PATH, control("unload"), methods=["POST"]),
    ]


def build_router(manager: ModelManager, settings: ModelManagerSettings) -> Router:
    """A Router holding :func:`model_routes` (mount it at the application root)."""
    return Router(routes=model_routes(manager, settings))


def _authorize(request: Request, settings: ModelManagerSettings, action: str) -> None:
    token = settings.load_token
    if token is None:
        if settings.insecure_dev_mode:
            logger.warning("INSECURE: model %s accepted without a load token (dev mode)", action)
            return
        raise _RefusedError(503, "load_token_not_configured", "no load token is configured")
    header = request.headers.get("authorization")
    if header is None:
        raise _RefusedError(401, "missing_token", "a bearer token is required")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise _RefusedError(401, "invalid_token", "the bearer token is invalid")
    expected = token.get_secret_value().encode()
    if not hmac.compare_digest(presented.strip().encode(), expected):
        raise _RefusedError(401, "invalid_token", "the bearer token is invalid")


async def _read_model_name(request: Request, limit: int) -> str:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise _RefusedError(415, "unsupported_media_type", "the body must be application/json")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _RefusedError(413, "body_too_large", f"the body may hold at most {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _RefusedError(413, "body_too_large", f"the body may hold at most {limit} bytes")
    try:
        document = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # too deep: bad input too
        raise _RefusedError(400, "invalid_json", "the body is not valid JSON") from exc
    if not isinstance(document, dict):
        raise _RefusedError(400, "invalid_body", 'the body must be an object {"model": NAME}')
    extra = sorted(set(document) - {"model"})
    if extra:
        raise _RefusedError(400, "invalid_body", "unknown field in the body")
    name = document.get("model")
    if name is None:
        raise _RefusedError(400, "invalid_body", 'the body needs a "model" field')
    if not isinstance(name, str):
        raise _RefusedError(400, "invalid_body", '"model" must be a string')
    return name


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate key")
        result[key] = value
    return result


def _http_status(exc: ModelManagerError) -> int:
    if isinstance(exc, InvalidModelNameError):
        return 400
    if isinstance(exc, UnknownModelError):
        return 404
    if isinstance(exc, TransitionConflictError):
        return 409
    return 500


def _verb(outcome: TransitionOutcome) -> str:
    return "accepted" if outcome.accepted else "nothing to do"


def _outcome_response(outcome: TransitionOutcome) -> Response:
    headers = {"Cache-Control": "no-store"}
    if outcome.accepted:
        headers["Location"] = STATUS_PATH
    return JSONResponse(
        outcome.status.to_document(), status_code=202 if outcome.accepted else 200, headers=headers
    )
