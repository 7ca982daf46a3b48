"""The engine's process: parse argv, simulate loading, then bind and serve.

Exit status: 0 after SIGTERM/SIGINT, 1 when the start fails (bad model directory,
``--dev-fail-at-start``, address in use) or a worker process dies, 2 for usage errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from enclave_dev.engine._access import AccessLog
from enclave_dev.engine._app import EngineState, build_app, route_table
from enclave_dev.engine._config import EngineConfig, parse_config
from enclave_dev.engine._faults import FaultSwitch
from enclave_dev.engine._loading import (
    EngineStartError,
    ModelInfo,
    inspect_model,
    log_routes,
    log_version,
    simulate_loading,
)
from enclave_dev.engine._logs import LOGGER_NAME, configure_logging, vlog
from enclave_dev.engine._metrics import EngineMetrics
from enclave_dev.engine._server import bind_socket, make_server, remove_socket_file
from enclave_dev.engine._workers import WorkerGroup

__all__ = ["main"]

_WORKER_POLL_SECONDS = 0.5

logger = logging.getLogger(LOGGER_NAME)


def _fatal(message: str, *args: object) -> int:
    vlog(logger, logging.ERROR, "api_server.py:1921", message, *args)
    return 1


def _check_chat_template(config: EngineConfig) -> None:
    template = config.chat_template
    if template is None or not ("/" in template or template.endswith(".jinja")):
        return
    if not Path(template).is_file():
        raise EngineStartError(
            f"The supplied chat template ({template}) looks like a file path, "
            "but it failed to be opened."
        )


async def _first_dead(workers: WorkerGroup) -> tuple[int, int]:
    while True:
        dead = workers.first_dead()
        if dead is not None:
            return dead
        await asyncio.sleep(_WORKER_POLL_SECONDS)


def _report_dead(dead: tuple[int, int]) -> int:
    rank, code = dead
    return _fatal(
        "Engine core proc %s died unexpectedly (exit status %d), shutting down client.",
        f"Worker {rank}",
        code,
    )


async def _cancel(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _load(config: EngineConfig, info: ModelInfo, workers: WorkerGroup) -> int | None:
    """Run the simulated load; an exit status if the process must stop, else None."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    core_pid = workers.pids[0] if workers.pids else None
    loading = asyncio.create_task(simulate_loading(config, info, core_pid))
    stopped = asyncio.create_task(stop.wait())
    watcher = asyncio.create_task(_first_dead(workers))
    done, _ = await asyncio.wait({loading, stopped, watcher}, return_when=asyncio.FIRST_COMPLETED)
    if stopped in done:
        await _cancel(loading, watcher)
        vlog(logger, logging.INFO, "launcher.py:80", "Shutting down during model loading.")
        return 0
    if watcher in done:
        await _cancel(loading, stopped)
        return _report_dead(watcher.result())
    await _cancel(stopped, watcher)
    try:
        loading.result()
    except EngineStartError:
        return 1
    return None


async def _serve(config: EngineConfig, info: ModelInfo, workers: WorkerGroup) -> int:
    state = EngineState(
        config=config,
        info=info,
        faults=FaultSwitch(config.faults),
        metrics=EngineMetrics(config.served_names[0]),
    )
    app = build_app(state)
    log_routes(config, route_table(app))
    sock = bind_socket(config)
    server = make_server(AccessLog(app) if config.access_log else app)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    watcher = asyncio.create_task(_first_dead(workers))
    try:
        await asyncio.wait({serving, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if watcher.done():
            state.engine_dead = True
            server.should_exit = True
            await serving
            return _report_dead(watcher.result())
        await _cancel(watcher)
        serving.result()
        return 0
    finally:
        sock.close()
        remove_socket_file(config)


async def _run(config: EngineConfig, info: ModelInfo) -> int:
    workers = WorkerGroup.spawn(config.workers)
    try:
        status = await _load(config, info, workers)
        if status is not None:
            return status
        return await _serve(config, info, workers)
    except EngineStartError as exc:
        return _fatal("%s", exc)
    finally:
        workers.terminate()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _run_sync(coro: Coroutine[Any, Any, int]) -> int:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the development engine; returns the process exit status."""
    config = parse_config(argv)
    configure_logging()
    try:
        _check_chat_template(config)
        info = inspect_model(config.model_dir, config.max_model_len)
    except EngineStartError as exc:
        return _fatal("%s", exc)
    log_version(config, info, dict(config.non_default_args))
    if config.ignored_args:
        vlog(
            logger,
            logging.WARNING,
            "devengine:args",
            "Development engine ignores these vLLM arguments: %s",
            " ".join(config.ignored_args),
        )
    try:
        return _run_sync(_run(config, info))
    except KeyboardInterrupt:
        return 0
