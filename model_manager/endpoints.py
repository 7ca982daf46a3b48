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
- Errors use the service's one error vocabulary (``enclave.protocol.api``; this package may
  not import it): the routes hand a stable code, a fixed message and the offending ``param`` to
  the :class:`ErrorRenderer` they are given, which picks the status and the body's shape.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, Router

from model_manager._errorcodes import describe
from model_manager.errors import (
    CatalogError,
    InvalidModelNameError,
    ModelManagerError,
    UnknownModelError,
)
from model_manager.lifecycle import ModelManager, TransitionOutcome
from model_manager.settings import ModelManagerSettings

__all__ = [
    "LOAD_PATH",
    "STATUS_PATH",
    "UNLOAD_PATH",
    "ErrorRenderer",
    "build_router",
    "model_routes",
]

logger = logging.getLogger(__name__)

STATUS_PATH = "/v1/models/status"
LOAD_PATH = "/v1/models/load"
UNLOAD_PATH = "/v1/models/unload"

_WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="model-lifecycle"'}


class ErrorRenderer(Protocol):
    """Renders a refusal: ``code`` fixes the status; ``message`` is fixed text, never input."""

    def __call__(
        self,
        code: str,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        message: str | None = None,
    ) -> Response: ...


class _RefusedError(Exception):
    def __init__(
        self, code: str, message: str, *, param: str | None = None, unauthorized: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.headers = _WWW_AUTHENTICATE if unauthorized else {}


def model_routes(
    manager: ModelManager, settings: ModelManagerSettings, render_error: ErrorRenderer
) -> list[BaseRoute]:
    """The three lifecycle routes, for the service to include in its app; refusals go through
    ``render_error`` (the service passes ``enclave.routes.error_response``)."""

    async def status(request: Request) -> Response:
        document = manager.status().to_document()
        document["replica_id"] = settings.effective_replica_id  # which replica answered
        return JSONResponse(document, headers={"Cache-Control": "no-store"})

    def control(action: Literal["load", "unload"]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                _authorize(request, settings, action)
                name = await _read_model_name(request, settings.control_body_limit_bytes)
            except _RefusedError as exc:
                logger.info("model %s refused: %s", action, exc.code)
                return render_error(
                    exc.code, param=exc.param, headers=exc.headers, message=exc.message
                )
            try:
                outcome = manager.load(name) if action == "load" else manager.unload(name)
            except ModelManagerError as exc:
                code, message = describe(exc)
                shown = "(invalid name)" if isinstance(exc, InvalidModelNameError) else name
                if isinstance(exc, CatalogError):
                    # Which entry and what is wrong: the operator's configuration, shown only
                    # to a token holder (this route is authorized above) and in the log.
                    message = f"{message}: {exc}"
                    logger.warning("model %s of %s refused: %s: %s", action, shown, code, exc)
                else:
                    logger.info("model %s of %s refused: %s", action, shown, code)
                return render_error(code, param=_param(exc), message=message)
            logger.info("model %s of %s: %s", action, name, _verb(outcome))
            return _outcome_response(outcome)

        return endpoint

    return [
        Route(STATUS_PATH, status, methods=["GET"]),
        Route(LOAD_PATH, control("load"), methods=["POST"]),
        Route(UNLOAD_PATH, control("unload"), methods=["POST"]),
    ]


def build_router(
    manager: ModelManager, settings: ModelManagerSettings, render_error: ErrorRenderer
) -> Router:
    """A Router holding :func:`model_routes` (mount it at the application root)."""
    return Router(routes=model_routes(manager, settings, render_error))


def _authorize(request: Request, settings: ModelManagerSettings, action: str) -> None:
    token = settings.load_token
    if token is None:
        if settings.insecure_dev_mode:
            logger.warning("INSECURE: model %s accepted without a load token (dev mode)", action)
            return
        raise _RefusedError("load_token_not_configured", "no load token is configured")
    header = request.headers.get("authorization")
    if header is None:
        raise _RefusedError("missing_token", "a bearer token is required", unauthorized=True)
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise _RefusedError("invalid_token", "the bearer token is invalid", unauthorized=True)
    expected = token.get_secret_value().encode()
    if not hmac.compare_digest(presented.strip().encode(), expected):
        raise _RefusedError("invalid_token", "the bearer token is invalid", unauthorized=True)


async def _read_model_name(request: Request, limit: int) -> str:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise _RefusedError("unsupported_media_type", "the body must be application/json")
    # Content-Length was parsed (1*DIGIT, enclave.protocol.bodies) and held to the body by the
    # body guard or the gateway in front; this package may not import enclave, so it only
    # counts what arrives.
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _RefusedError("body_too_large", f"the body may hold at most {limit} bytes")
    try:
        document = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # too deep: bad input too
        raise _RefusedError("invalid_json", "the body is not valid JSON") from exc
    if not isinstance(document, dict):
        raise _RefusedError("invalid_body", 'the body must be an object {"model": NAME}')
    extra = sorted(set(document) - {"model"})
    if extra:
        raise _RefusedError("invalid_body", "unknown field in the body")
    name = document.get("model")
    if name is None:
        raise _RefusedError("invalid_body", 'the body needs a "model" field', param="model")
    if not isinstance(name, str):
        raise _RefusedError("invalid_body", '"model" must be a string', param="model")
    return name


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate key")
        result[key] = value
    return result


def _param(exc: ModelManagerError) -> str | None:
    """The request field a refusal is about: the model name, for name and model errors."""
    return "model" if isinstance(exc, InvalidModelNameError | UnknownModelError) else None


def _verb(outcome: TransitionOutcome) -> str:
    return "accepted" if outcome.accepted else "nothing to do"


def _outcome_response(outcome: TransitionOutcome) -> Response:
    headers = {"Cache-Control": "no-store"}
    if outcome.accepted:
        headers["Location"] = STATUS_PATH
    return JSONResponse(
        outcome.status.to_document(), status_code=202 if outcome.accepted else 200, headers=headers
    )
