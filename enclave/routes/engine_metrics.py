"""``GET /metrics/engine``: the engine's own Prometheus metrics (vLLM's ``vllm:*``), filtered.

vLLM's metrics hold counts, latencies and cache usage labelled with the served model name and
engine index, never request content. The service fetches the engine's ``/metrics`` at scrape
time (at most :data:`MAX_ENGINE_METRICS_BYTES`, within :data:`ENGINE_METRICS_TIMEOUT_SECONDS`)
and passes on only the ``vllm:`` families (their ``# HELP``/``# TYPE`` lines and samples): the
engine's process and Python collectors, and anything else, are dropped. 503
``model_not_ready`` while no model is ready; 502 ``engine_unavailable`` / ``engine_error`` and
504 ``engine_timeout`` when the engine cannot answer.
"""

from __future__ import annotations

import logging

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from enclave.routes._errors import ApiError
from enclave.service import Service

__all__ = [
    "ENGINE_METRICS_PATH",
    "ENGINE_METRICS_PREFIX",
    "ENGINE_METRICS_TIMEOUT_SECONDS",
    "MAX_ENGINE_METRICS_BYTES",
    "engine_metrics_routes",
    "filter_engine_metrics",
]

logger = logging.getLogger(__name__)

ENGINE_METRICS_PATH = "/metrics/engine"
ENGINE_METRICS_PREFIX = "vllm:"
#: The largest engine exposition read; a larger one is refused as an engine error.
MAX_ENGINE_METRICS_BYTES = 4 * 1024 * 1024
ENGINE_METRICS_TIMEOUT_SECONDS = 5.0
_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def filter_engine_metrics(text: str, prefix: str = ENGINE_METRICS_PREFIX) -> str:
    """Only the families whose name starts with ``prefix``: their HELP, TYPE and samples."""
    kept = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE") and parts[2].startswith(prefix):
                kept.append(line)
        elif line.startswith(prefix):
            kept.append(line)
    return "\n".join(kept) + ("\n" if kept else "")


def engine_metrics_routes(service: Service) -> list[BaseRoute]:
    async def engine_metrics(_: Request) -> Response:
        if service.ready_model() is None:
            raise ApiError("model_not_ready", headers={"Retry-After": "5"})
        body = await _fetch(service)
        return Response(
            filter_engine_metrics(body),
            media_type=_CONTENT_TYPE,
            headers={"Cache-Control": "no-store"},
        )

    return [Route(ENGINE_METRICS_PATH, engine_metrics, methods=["GET"])]


async def _fetch(service: Service) -> str:
    try:
        async with (
            service.manager.engine_client(ENGINE_METRICS_TIMEOUT_SECONDS) as client,
            client.stream("GET", "/metrics") as response,
        ):
            if not response.is_success:
                logger.warning("engine metrics: HTTP %d", response.status_code)
                raise ApiError("engine_error")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_ENGINE_METRICS_BYTES:
                    logger.warning("engine metrics: over %d bytes", MAX_ENGINE_METRICS_BYTES)
                    raise ApiError("engine_error")
    except httpx.TimeoutException as exc:
        raise ApiError("engine_timeout") from exc
    except httpx.HTTPError as exc:
        logger.warning("engine metrics: %s", type(exc).__name__)
        raise ApiError("engine_unavailable") from exc
    return body.decode("utf-8", errors="replace")
