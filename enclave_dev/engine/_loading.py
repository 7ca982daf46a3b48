"""The simulated model load: vLLM's start-up log lines paced over ``--dev-load-seconds``.

Shard count = number of ``*.safetensors`` files in the model directory (at least 1); the
reported model size is their total size. ``config.json``, when present, supplies
``max_position_embeddings`` (the default max model length) and ``architectures``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from enclave_dev.engine._config import NOT_A_LANGUAGE_MODEL, EngineConfig
from enclave_dev.engine._logs import (
    ENGINE_CORE,
    LOGGER_NAME,
    RAW_LOGGER_NAME,
    WORKER,
    progress_line,
    vlog,
)
from model_manager.errors import ModelManagerError

__all__ = [
    "ENGINE_VERSION",
    "EngineStartError",
    "ModelInfo",
    "inspect_model",
    "log_routes",
    "log_version",
    "simulate_loading",
]

#: The version announced in the log and by ``/version`` (a vLLM release + a local label).
ENGINE_VERSION = "0.32.0+devengine"
DEFAULT_MAX_MODEL_LEN = 8192
SHARD_DESC = "Loading safetensors checkpoint shards"
#: Share of the load time spent "reading shards"; the rest is engine initialisation.
_WEIGHTS_SHARE = 0.8
_GIB = 1024**3

logger = logging.getLogger(LOGGER_NAME)
raw = logging.getLogger(RAW_LOGGER_NAME)


class EngineStartError(ModelManagerError):
    """The engine cannot start (bad model directory, or the start-failure switch)."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the engine learns from the model directory."""

    shards: int
    weight_bytes: int
    max_model_len: int
    architecture: str | None


def _read_config(model_dir: Path) -> Mapping[str, object]:
    path = model_dir / "config.json"
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EngineStartError(f"cannot read {path}: invalid JSON") from exc
    if not isinstance(document, dict):
        raise EngineStartError(f"cannot read {path}: not a JSON object")
    return document


def inspect_model(model_dir: Path, max_model_len: int | None) -> ModelInfo:
    """Read the shard files and ``config.json`` of ``model_dir``."""
    if not model_dir.is_dir():
        raise EngineStartError(f"{model_dir} is not a local folder")
    shards = sorted(p for p in model_dir.glob("*.safetensors") if p.is_file())
    config = _read_config(model_dir)
    declared = config.get("max_position_embeddings")
    if max_model_len is None:
        valid = isinstance(declared, int) and not isinstance(declared, bool) and declared > 0
        max_model_len = declared if valid and isinstance(declared, int) else DEFAULT_MAX_MODEL_LEN
    architectures = config.get("architectures")
    architecture = None
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        architecture = architectures[0]
    return ModelInfo(
        shards=max(1, len(shards)),
        weight_bytes=sum(p.stat().st_size for p in shards),
        max_model_len=int(max_model_len),
        architecture=architecture,
    )


def log_version(config: EngineConfig, info: ModelInfo, args: Mapping[str, object]) -> None:
    vlog(logger, logging.INFO, "api_utils.py:347", "version %s", ENGINE_VERSION)
    vlog(logger, logging.INFO, "api_utils.py:286", "non-default args: %s", dict(args))
    vlog(logger, logging.WARNING, "api_utils.py:290", "This is the %s.", NOT_A_LANGUAGE_MODEL)
    if info.architecture is not None:
        vlog(logger, logging.INFO, "model.py:733", "Resolved architecture: %s", info.architecture)
    vlog(logger, logging.INFO, "model.py:2152", "Using max model len %d", info.max_model_len)


async def simulate_loading(config: EngineConfig, info: ModelInfo, core_pid: int | None) -> float:
    """Print the engine's loading lines (vLLM 0.32's GPU runner) over the configured time;
    return seconds taken.

    With the start-failure switch, fail at once (before the first shard) with vLLM's messages,
    so a supervisor's fail-fast path is exercised rather than its timeout.
    """

    def core(level: int, source: str, message: str, *args: object) -> None:
        vlog(logger, level, source, message, *args, proc=ENGINE_CORE, pid=core_pid)

    def worker(level: int, source: str, message: str, *args: object) -> None:
        vlog(logger, level, source, message, *args, proc=WORKER, pid=core_pid)

    started = time.monotonic()
    core(
        logging.INFO,
        "core.py:133",
        "Initializing a V1 LLM engine (v%s) with config: model=%r, served_model_name=%s, "
        "tensor_parallel_size=%d, dtype=%s, quantization=%s, max_seq_len=%d",
        ENGINE_VERSION,
        str(config.model_dir),
        config.served_names[0],
        config.tensor_parallel_size,
        config.dtype,
        config.quantization,
        info.max_model_len,
    )
    worker(
        logging.INFO, "gpu_model_runner.py:5040", "Starting to load model %s...", config.model_dir
    )
    per_shard = config.load_seconds * _WEIGHTS_SHARE / info.shards
    weights_started = time.monotonic()
    raw.info(progress_line(SHARD_DESC, 0, info.shards, 0.0))
    if config.fail_at_start:
        _fail(worker, core)
    for done in range(1, info.shards + 1):
        await asyncio.sleep(per_shard)
        raw.info(progress_line(SHARD_DESC, done, info.shards, time.monotonic() - weights_started))
    weights = time.monotonic() - weights_started
    worker(logging.INFO, "default_loader.py:502", "Loading weights took %.2f seconds", weights)
    worker(
        logging.INFO,
        "gpu_model_runner.py:5150",
        "Model loading took %.2f GiB memory and %.6f seconds",
        info.weight_bytes / _GIB,
        time.monotonic() - started,
    )
    rest = config.load_seconds * (1 - _WEIGHTS_SHARE)
    await asyncio.sleep(rest / 2)
    kv_gib = max(0.0, 80.0 * config.gpu_memory_utilization - info.weight_bytes / _GIB)
    worker(logging.INFO, "gpu_worker.py:760", "Available KV cache memory: %.2f GiB", kv_gib)
    core(
        logging.INFO,
        "kv_cache_utils.py:2328",
        "GPU KV cache size: %s tokens, Maximum concurrency for %s tokens per request: %.2fx",
        f"{int(kv_gib * 8192):,}",
        f"{info.max_model_len:,}",
        kv_gib * 8192 / info.max_model_len,
    )
    await asyncio.sleep(rest / 2)
    took = time.monotonic() - started
    core(
        logging.INFO,
        "core.py:403",
        "init engine (profile, create kv cache, warmup model) took %.2f s",
        took,
    )
    return took


def _fail(worker: Callable[..., None], core: Callable[..., None]) -> NoReturn:
    """vLLM 0.32's lines for a worker that fails while loading (load-refused-bad-weights.log):
    the worker's traceback, EngineCore's, then the API server's generic one."""
    reason = "RuntimeError: development engine: start failure requested by --dev-fail-at-start"
    worker(logging.ERROR, "multiproc_executor.py:953", "WorkerProc failed to start.")
    worker(logging.ERROR, "multiproc_executor.py:953", "Traceback (most recent call last):")
    worker(logging.ERROR, "multiproc_executor.py:953", "%s", reason)
    core(logging.ERROR, "core.py:1510", "EngineCore failed to start.")
    core(
        logging.ERROR,
        "core.py:1510",
        "Exception: WorkerProc initialization failed due to an exception in a background "
        "process. See stack trace for root cause.",
    )
    raw.error("Traceback (most recent call last):")
    raw.error(
        "RuntimeError: Engine core initialization failed. See root cause above. "
        "Failed core proc(s): {}"
    )
    raise EngineStartError("start failure requested by --dev-fail-at-start")


def log_routes(config: EngineConfig, routes: Sequence[tuple[str, str]]) -> None:
    """``Supported tasks``, ``Starting vLLM server on ...`` and the route list."""
    vlog(logger, logging.INFO, "entry.py:136", "Supported tasks: %s", ["generate", "embed"])
    vlog(logger, logging.INFO, "entry.py:140", "Starting vLLM server on %s", config.listen_address)
    vlog(logger, logging.INFO, "launcher.py:186", "Available routes are:")
    for path, methods in routes:
        vlog(logger, logging.INFO, "launcher.py:195", "Route: %s, Methods: %s", path, methods)
