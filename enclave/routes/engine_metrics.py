"""``GET /metrics/engine``: the engine's own Prometheus metrics (vLLM's ``vllm:*``), filtered.

The service fetches the engine's ``/metrics`` at scrape time (at most
:data:`MAX_ENGINE_METRICS_BYTES`, within :data:`ENGINE_METRICS_TIMEOUT_SECONDS`) and passes on
only the families of :data:`ENGINE_METRICS_KEPT` (their ``# HELP``/``# TYPE`` lines and
samples): the engine's load (requests running and waiting, KV-cache use, preemptions, sleep
state, its cache configuration). Everything else is dropped: vLLM's per-request histograms
(prompt and generation token counts, time to first token, inter-token latency, queue, prefill,
decode and end-to-end times, ``max_tokens`` and ``n``), its token counters, its finish-reason
counter (``request_success{finished_reason}``), its prefix-cache hits and queries (whether a
prompt shared a prefix with another), and its process and Python collectors: an authorised
scraper reading between two requests would otherwise learn one request's exact prompt length,
answer length and how it ended, which padding hides from the wire. 503 ``model_not_ready``
while no model is ready; 502 ``engine_unavailable`` / ``engine_error`` and 504
``engine_timeout`` when the engine cannot answer. Served only to an authorised scraper
(:mod:`enclave.routes.metrics`).
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
    "ENGINE_METRICS_KEPT",
    "ENGINE_METRICS_PATH",
    "ENGINE_METRICS_TIMEOUT_SECONDS",
    "MAX_ENGINE_METRICS_BYTES",
    "engine_metrics_routes",
    "filter_engine_metrics",
]

logger = logging.getLogger(__name__)

ENGINE_METRICS_PATH = "/metrics/engine"
#: The vLLM families passed on: the engine's load, nothing per request (module docstring).
ENGINE_METRICS_KEPT: frozenset[str] = frozenset(
    {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:num_requests_waiting_by_reason",
        "vllm:kv_cache_usage_perc",
        "vllm:num_preemptions",
        "vllm:engine_sleep_state",
        "vllm:cache_config_info",
    }
)
#: What a sample's name may add to its family's (counters, histograms, summaries, info).
_SAMPLE_SUFFIXES = ("_total", "_created", "_bucket", "_count", "_sum", "_info")
#: The largest engine exposition read; a larger one is refused as an engine error.
MAX_ENGINE_METRICS_BYTES = 4 * 1024 * 1024
ENGINE_METRICS_TIMEOUT_SECONDS = 5.0
_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def filter_engine_metrics(text: str, kept: frozenset[str] = ENGINE_METRICS_KEPT) -> str:
    """Only the families named in ``kept``: their HELP, TYPE and samples."""
    lines = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE") and _family(parts[2], kept):
                lines.append(line)
        elif _family(line.split("{", 1)[0].split(" ", 1)[0], kept):
            lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")


def _family(name: str, kept: frozenset[str]) -> bool:
    if name in kept:
        return True
    return any(
        name.endswith(suffix) and name[: -len(suffix)] in kept for suffix in _SAMPLE_SUFFIXES
    )


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
