"""The Starlette application: vLLM's OpenAI routes plus ``/dev/faults``.

Routes: ``GET /health``, ``GET /version``, ``GET /v1/models``, ``POST /v1/chat/completions``,
``POST /v1/completions``, ``POST /v1/embeddings``, ``GET /metrics``, ``GET|POST /dev/faults``.
Errors use vLLM's ``{"error": {...}}`` shape; unknown routes FastAPI's ``{"detail": ...}``.
Logs carry request ids, sizes and error types only, never request or response content.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from enclave_dev.engine import _endpoints
from enclave_dev.engine._config import NOT_A_LANGUAGE_MODEL, EngineConfig
from enclave_dev.engine._faults import FaultSwitch, FaultUpdateError
from enclave_dev.engine._loading import ENGINE_VERSION, ModelInfo
from enclave_dev.engine._logs import LOGGER_NAME, vlog
from enclave_dev.engine._metrics import EngineMetrics
from enclave_dev.engine._requests import RequestError
from enclave_dev.engine._shapes import error_body

__all__ = ["LOG_STATS_INTERVAL_SECONDS", "EngineState", "build_app", "route_table"]

LOG_STATS_INTERVAL_SECONDS = 10.0
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

logger = logging.getLogger(LOGGER_NAME)


@dataclass(slots=True)
class EngineState:
    """The live state of one engine process."""

    config: EngineConfig
    info: ModelInfo
    faults: FaultSwitch
    metrics: EngineMetrics
    engine_dead: bool = False
    created: int = field(default_factory=lambda: int(time.time()))

    def resolve_model(self, requested: str | None) -> str:
        """The served name answering ``requested`` (the first one when omitted), or 404."""
        if requested is None or requested in self.config.served_names:
            return self.config.served_names[0] if requested is None else requested
        raise RequestError(
            f"The model `{requested}` does not exist. "
            f"Valid aliases: {', '.join(self.config.served_names)}.",
            status=404,
            err_type="NotFoundError",
            param="model",
        )

    def request_id(self, request: Request, prefix: str) -> str:
        """``prefix`` + the caller's ``X-Request-Id`` when it is plain, else random hex."""
        given = request.headers.get("x-request-id", "")
        return prefix + (given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(16))


def _error(exc: RequestError) -> JSONResponse:
    body = error_body(exc.message, exc.err_type, exc.status, exc.param)
    return JSONResponse(body, status_code=exc.status)


async def _json_body(request: Request) -> object:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError("The request body is not valid JSON.") from exc


Endpoint = Callable[["EngineState", Request, object], Awaitable[Response]]


def _handler(state: EngineState, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        try:
            return await endpoint(state, request, await _json_body(request))
        except RequestError as exc:
            vlog(
                logger, logging.INFO, "serving.py:412", "Rejected: %s %d", exc.err_type, exc.status
            )
            return _error(exc)

    return handle


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        continue


def _routes(state: EngineState) -> list[Route]:
    async def health(request: Request) -> Response:
        if state.faults.current.hang_health:
            await _wait_for_disconnect(request)
        if state.engine_dead:
            return Response(status_code=503)
        return Response(status_code=200)

    async def version(_: Request) -> Response:
        return JSONResponse({"version": ENGINE_VERSION})

    async def models(_: Request) -> Response:
        return JSONResponse(_model_list(state))

    async def metrics(_: Request) -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = await _json_body(request)
                if not isinstance(changes, dict):
                    raise FaultUpdateError("the body must be a JSON object")
                current = state.faults.apply(changes)
            except (FaultUpdateError, RequestError) as exc:
                return JSONResponse(error_body(str(exc), "BadRequestError", 400), status_code=400)
            vlog(logger, logging.WARNING, "devengine:faults", "Development faults now %s", current)
        return JSONResponse(state.faults.current.as_json())

    return [
        Route("/health", health, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", _handler(state, _endpoints.chat), methods=["POST"]),
        Route("/v1/completions", _handler(state, _endpoints.completion), methods=["POST"]),
        Route("/v1/embeddings", _handler(state, _endpoints.embedding), methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/dev/faults", faults, methods=["GET", "POST"]),
    ]


def _model_list(state: EngineState) -> dict[str, object]:
    now = int(time.time())
    cards = [
        {
            "id": name,
            "object": "model",
            "created": now,
            "owned_by": "vllm",
            "root": str(state.config.model_dir),
            "parent": None,
            "max_model_len": state.info.max_model_len,
            "permission": [_permission(now)],
            "description": NOT_A_LANGUAGE_MODEL,
        }
        for name in state.config.served_names
    ]
    return {"object": "list", "data": cards}


def _permission(now: int) -> dict[str, object]:
    return {
        "id": f"modelperm-{secrets.token_hex(16)}",
        "object": "model_permission",
        "created": now,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }


def route_table(app: Starlette) -> list[tuple[str, str]]:
    """``(path, "GET, POST")`` for the start-up route listing."""
    return [
        (route.path, ", ".join(sorted(route.methods or ())))
        for route in app.routes
        if isinstance(route, Route)
    ]


async def _not_found(_: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return JSONResponse({"detail": exc.detail if isinstance(exc, HTTPException) else ""}, status)


async def _internal(_: Request, exc: Exception) -> Response:
    vlog(logger, logging.ERROR, "api_server.py:1200", "Internal error: %s", type(exc).__name__)
    return JSONResponse(error_body("Internal server error", "InternalServerError", 500), 500)


async def _log_stats(state: EngineState) -> None:
    while True:
        await asyncio.sleep(LOG_STATS_INTERVAL_SECONDS)
        prompt, generated, requests = state.metrics.window.take()
        if not requests and not generated and not state.metrics.running:
            continue
        vlog(
            logger,
            logging.INFO,
            "loggers.py:123",
            "Engine 000: Avg prompt throughput: %.1f tokens/s, Avg generation throughput: "
            "%.1f tokens/s, Running: %d reqs, Waiting: 0 reqs, GPU KV cache usage: 0.0%%, "
            "Prefix cache hit rate: 0.0%%",
            prompt / LOG_STATS_INTERVAL_SECONDS,
            generated / LOG_STATS_INTERVAL_SECONDS,
            state.metrics.running,
        )


def build_app(state: EngineState) -> Starlette:
    """The Starlette app serving ``state``."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        task = None if state.config.disable_log_stats else asyncio.create_task(_log_stats(state))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()

    return Starlette(
        routes=_routes(state),
        exception_handlers={HTTPException: _not_found, Exception: _internal},
        lifespan=lifespan,
    )
