"""One engine child process: spawn, follow its log, wait until healthy, stop it and its tree.

- spawned from an argv list (never a shell) in its own session and process group, with a clean
  environment (:func:`model_manager.engine.engine_environment`);
- stdout and stderr are read as lines (``\\n`` or ``\\r``); progress is parsed from them and a
  bounded tail is kept in memory for diagnostics. Lines are never logged as such: they may echo
  input. Only the engine's own failure reason, picked from the lines printed before it first
  answered ``/health`` under the rule of :mod:`model_manager._reason`, is shown;
- ``/health`` is polled with exponential backoff until it answers 200; an exit while loading
  fails fast (EngineExitedError with the exit code and the engine's reason); the whole start is
  bounded by the load timeout;
- stop: SIGTERM to the process group and every session member, the grace period, SIGKILL, then
  wait until no live process of the session remains and reap the zombies that are ours.

The service calls :func:`become_subreaper` once at start, so that engine workers orphaned by a
crashed engine are re-parented to it (not to PID 1) and reaped by :meth:`EngineProcess.stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
from collections import deque
from collections.abc import Callable, Mapping

import httpx

from model_manager._proctree import (
    PROC,
    become_subreaper,
    read_proc,
    reap_zombie_children,
    session_members,
    signal_session,
)
from model_manager._progress import ProgressParser
from model_manager._reason import failure_reason
from model_manager.catalog import ModelSpec
from model_manager.engine import engine_argv, engine_endpoint, engine_environment
from model_manager.errors import EngineError
from model_manager.settings import ModelManagerSettings

__all__ = [
    "MAX_UDS_PATH_BYTES",
    "EngineExitedError",
    "EngineProcess",
    "EngineTimeoutError",
    "become_subreaper",
    "describe_exit",
]

logger = logging.getLogger(__name__)

#: sun_path holds 108 bytes including the terminating NUL.
MAX_UDS_PATH_BYTES = 107
#: How often the process table is re-read while waiting for the tree to exit, in seconds.
_POLL_SECONDS = 0.05
_READ_CHUNK = 1 << 16
#: How long a failed start waits for the engine's last output before reporting, in seconds.
_DRAIN_SECONDS = 2.0


class EngineExitedError(EngineError):
    """The engine process exited while it was loading; ``reason``: what it said, if anything
    (see :mod:`model_manager._reason`)."""

    code = "engine_exited"

    def __init__(self, returncode: int, reason: str | None = None) -> None:
        detail = f": {reason}" if reason else ""
        super().__init__(f"engine exited with code {returncode} while loading{detail}")
        self.returncode = returncode
        self.reason = reason


class EngineTimeoutError(EngineError):
    """The engine did not become healthy within the load timeout."""

    code = "engine_load_timeout"


class EngineProcess:
    """A single engine process for one model. Not restartable: make a new one."""

    def __init__(
        self,
        settings: ModelManagerSettings,
        spec: ModelSpec,
        *,
        on_progress: Callable[[float], None] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._settings = settings
        self._spec = spec
        self._on_progress = on_progress
        self._environ = os.environ if environ is None else environ
        self._endpoint = engine_endpoint(settings)
        self._progress = ProgressParser()
        self._tail: deque[str] = deque(maxlen=settings.log_tail_lines)
        #: Lines printed before the first healthy /health: the only ones a reason may come from.
        self._startup: deque[str] = deque(maxlen=settings.log_tail_lines)
        self._healthy = False
        #: The engine's other processes when it became healthy: pid -> name.
        self._members: dict[int, str] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._exit: asyncio.Task[int] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    @property
    def progress(self) -> float:
        return self._progress.value

    def log_tail(self) -> list[str]:
        """The last engine output lines (diagnostics only; may contain user input)."""
        return list(self._tail)

    def failure_reason(self) -> str | None:
        """The engine's own reason for failing to start, if it gave one: only from output
        printed before it was first healthy (the rule of :mod:`model_manager._reason`)."""
        return failure_reason(self._startup)

    async def start(self) -> None:
        """Spawn the engine and return once ``/health`` answers 200; EngineError otherwise.

        On any failure or cancellation the process tree is stopped before this returns.
        """
        await self._spawn()
        try:
            async with asyncio.timeout(self._settings.load_timeout_seconds):
                await self._wait_healthy()
        except TimeoutError as exc:
            await asyncio.shield(self.stop())
            raise EngineTimeoutError(
                f"engine not healthy within {self._settings.load_timeout_seconds:g} s"
            ) from exc
        except BaseException:
            await asyncio.shield(self.stop())
            raise
        self._healthy = True
        self._startup.clear()
        self._members = self._snapshot_members()
        self._progress.complete()
        self._report()

    async def wait_exit(self) -> int:
        """Wait for the engine's main process to exit and return its exit code."""
        if self._exit is None:
            raise EngineError("engine was never started")
        return await asyncio.shield(self._exit)

    async def wait_down(self) -> str:
        """Wait until the engine is no longer whole and say how: its main process exited
        (``exit code 0``, ``killed by SIGKILL``), or a process that was part of it when it
        became healthy died (vLLM's API server outlives its EngineCore by seconds, answering
        every request with an error meanwhile). Only the few PIDs of that snapshot are read."""
        if self._exit is None:
            raise EngineError("engine was never started")
        while True:
            if self._exit.done():
                return describe_exit(self._exit.result())
            for pid, name in self._members.items():
                info = read_proc(pid)
                if info is None or info.state in ("Z", "X"):
                    return f"its process {name} (pid {pid}) died"
            await asyncio.wait({self._exit}, timeout=_POLL_SECONDS)

    def _snapshot_members(self) -> dict[int, str]:
        if self._proc is None:
            return {}
        sid = self._proc.pid
        return {
            info.pid: _process_name(info.pid)
            for info in session_members(sid)
            if info.pid != sid and info.state not in ("Z", "X")
        }

    async def stop(self) -> None:
        """Terminate the whole tree (idempotent); waits for every session member to go.

        The work runs in its own task: cancelling a caller never leaves the tree half-stopped.
        """
        if self._proc is None:
            return
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._stop_tree(self._proc))
        await asyncio.shield(self._stop_task)

    async def _stop_tree(self, proc: asyncio.subprocess.Process) -> None:
        sid = proc.pid
        settings = self._settings
        if not await self._signal_and_wait(sid, signal.SIGTERM, settings.stop_grace_seconds):
            logger.warning("engine pid %d ignored SIGTERM; sending SIGKILL", sid)
            if not await self._signal_and_wait(sid, signal.SIGKILL, settings.kill_wait_seconds):
                logger.error("engine session %d still has processes after SIGKILL", sid)
        if self._exit is not None:
            await asyncio.wait({self._exit})
        reap_zombie_children(sid)
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=1.0)
            self._reader.cancel()
        self._remove_socket()
        logger.info("engine pid %d stopped (exit code %s)", sid, proc.returncode)

    async def _spawn(self) -> None:
        if self._proc is not None:
            raise EngineError("engine process already started")
        self._prepare_socket()
        argv = engine_argv(self._settings, self._spec)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=engine_environment(self._settings, self._environ),
                cwd="/",
                start_new_session=True,
            )
        except OSError as exc:
            raise EngineError(f"cannot start the engine program ({type(exc).__name__})") from exc
        logger.info("engine started for model %s: pid %d", self._spec.name, self._proc.pid)
        self._exit = asyncio.create_task(
            _returncode(self._proc), name=f"engine-exit-{self._proc.pid}"
        )
        if self._proc.stdout is not None:
            self._reader = asyncio.create_task(self._read_output(self._proc.stdout))

    async def _wait_healthy(self) -> None:
        if self._exit is None:
            raise EngineError("engine was never started")
        settings = self._settings
        delay = settings.health_poll_initial_seconds
        async with self._endpoint.client(timeout=settings.health_request_timeout_seconds) as http:
            while True:
                if self._exit.done():
                    await self._drain_output()
                    raise EngineExitedError(self._exit.result(), self.failure_reason())
                if await _healthy(http):
                    return
                await asyncio.wait({self._exit}, timeout=delay)
                delay = min(delay * 2, settings.health_poll_max_seconds)

    async def _drain_output(self) -> None:
        """Let the reader take what the exited engine printed last (bounded in time: a
        surviving child may hold the pipe open)."""
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=_DRAIN_SECONDS)

    async def _read_output(self, stream: asyncio.StreamReader) -> None:
        pending = ""
        limit = self._settings.log_line_max_chars
        while chunk := await stream.read(_READ_CHUNK):
            pending += chunk.decode("utf-8", "replace").replace("\r", "\n")
            *lines, pending = pending.split("\n")
            if len(pending) > limit:
                lines.append(pending)
                pending = ""
            for line in lines:
                self._take_line(line[:limit])
        if pending:
            self._take_line(pending[:limit])

    def _take_line(self, line: str) -> None:
        if not line.strip():
            return
        self._tail.append(line)
        if not self._healthy:
            self._startup.append(line)
        before = self._progress.value
        if self._progress.feed(line) != before:
            self._report()

    def _report(self) -> None:
        if self._on_progress is not None:
            try:
                self._on_progress(self._progress.value)
            except Exception:
                logger.exception("progress callback failed")

    async def _signal_and_wait(self, sid: int, signum: int, timeout: float) -> bool:
        """Signal the session, then wait up to ``timeout`` for it to be empty."""
        signal_session(sid, signum)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            reap_zombie_children(sid)
            main_done = self._exit is None or self._exit.done()
            live = [p for p in session_members(sid) if p.state != "Z"]
            if main_done and not live:
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL_SECONDS)

    def _prepare_socket(self) -> None:
        uds = self._endpoint.uds
        if uds is None:
            return
        if len(os.fsencode(uds)) > MAX_UDS_PATH_BYTES:
            raise EngineError("engine socket path is too long for a Unix socket")
        try:
            uds.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise EngineError("cannot create the engine socket directory") from exc
        self._remove_socket()

    def _remove_socket(self) -> None:
        uds = self._endpoint.uds
        if uds is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(uds.lstat().st_mode):
                uds.unlink()


def describe_exit(code: int) -> str:
    """``exit code 0`` / ``killed by SIGKILL`` (asyncio reports a signal as ``-signum``)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _process_name(pid: int) -> str:
    """The process title (vLLM sets ``VLLM::EngineCore``), else its comm; for messages."""
    try:
        argv0 = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0", 1)[0]
        name = argv0.decode("utf-8", "replace").rsplit("/", 1)[-1]
        if not name:
            name = (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"
    return "".join(ch for ch in name if ch.isprintable())[:40] or "?"


async def _returncode(proc: asyncio.subprocess.Process) -> int:
    """The main process's exit code, as soon as it is reaped.

    ``Process.wait()`` returns only once every pipe is closed, and an engine's surviving
    children keep its stdout open: waiting on it would miss a crash while they live.
    """
    while proc.returncode is None:
        await asyncio.sleep(_POLL_SECONDS)
    return proc.returncode


async def _healthy(http: httpx.AsyncClient) -> bool:
    try:
        response = await http.get("/health")
    except httpx.HTTPError:
        return False
    return response.status_code == 200
