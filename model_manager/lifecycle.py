"""The model lifecycle: one state machine, one transition at a time, hooks on every transition.

States and edges (docs/model-lifecycle.md has the diagram)::

    idle ──load──▶ loading ──healthy──▶ ready ──unload──▶ unloading ──▶ idle
                      │  ▲                 │ load (other model): stop it, then load
                      │  └─────restart─────┤ crash
                      └──failure──▶ error ◀┘
    error ──load──▶ loading;  loading/error ──unload──▶ unloading

Every accepted request increments ``generation``; a transition task whose generation is no
longer current never writes its result. The last model to reach ``ready`` is persisted and, with
``restore_on_boot``, loaded again at start. Hooks are awaited in order by one dispatcher task;
a failing or slow hook is logged and skipped, never breaking the lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from model_manager._errorcodes import describe
from model_manager._statefile import StateFile
from model_manager.catalog import Catalog, ModelSpec, validate_model_name
from model_manager.digests import Digester, ModelDigest
from model_manager.engine import EngineEndpoint, engine_endpoint
from model_manager.errors import ModelManagerError, TransitionConflictError
from model_manager.settings import ModelManagerSettings
from model_manager.status import ModelStatus, ProxyStatus, StatusError
from model_manager.supervisor import EngineProcess

__all__ = [
    "Engine",
    "EngineFactory",
    "ModelManager",
    "ModelNotLoadedError",
    "TransitionHook",
    "TransitionOutcome",
]

logger = logging.getLogger(__name__)

#: Share of the load progress given to hashing a manifest (dm-verity needs no hashing).
MANIFEST_PROGRESS_SHARE = 0.2


class Engine(Protocol):
    """What the lifecycle needs of an engine (:class:`EngineProcess` in production)."""

    @property
    def pid(self) -> int | None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def wait_down(self) -> str: ...
    def log_tail(self) -> list[str]: ...


EngineFactory = Callable[[ModelSpec, Callable[[float], None]], Engine]
TransitionHook = Callable[[ModelStatus], Awaitable[None]]
_Work = Callable[[int], Coroutine[Any, Any, None]]


class ModelNotLoadedError(TransitionConflictError):
    """An unload names a model other than the one the lifecycle is about."""

    code = "model_not_loaded"


@dataclass(frozen=True, slots=True)
class TransitionOutcome:
    """``accepted``: a transition is under way (HTTP 202); else nothing to do (HTTP 200)."""

    accepted: bool
    status: ModelStatus


class ModelManager:
    """Owns the engine and the lifecycle state. Use inside one event loop."""

    def __init__(
        self,
        settings: ModelManagerSettings,
        *,
        catalog: Catalog | None = None,
        digester: Digester | None = None,
        engine_factory: EngineFactory | None = None,
        clock: Callable[[], float] = time.time,
        insecure: tuple[str, ...] | None = None,
    ) -> None:
        """``insecure``: the service's ``insecure_*`` settings in effect, for the status
        document (default: this package's own)."""
        self._settings = settings
        self._insecure = settings.insecure_names() if insecure is None else insecure
        self._catalog = catalog or Catalog(settings.models_dir)
        self._digester = digester or Digester(settings)
        self._engine_factory = engine_factory or self._default_engine
        self._clock = clock
        self._statefile = StateFile(settings.state_dir)
        self._hooks: list[TransitionHook] = []
        self._hook_queue: asyncio.Queue[ModelStatus] = asyncio.Queue()
        self._dispatcher: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._state: ProxyStatus = "idle"
        self._model: str | None = None
        self._digest: ModelDigest | None = None
        self._message = "no model loaded"
        self._progress = 0.0
        self._since = clock()
        self._error: StatusError | None = None
        self._hashing: tuple[int, int] | None = None
        self._generation = 0
        self._restarts = 0
        self._crash_times: deque[float] = deque()
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._engine: Engine | None = None
        self._last_tail: list[str] = []

    # -- public surface ------------------------------------------------------------------------

    def status(self) -> ModelStatus:
        return ModelStatus(
            proxy_status=self._state,
            loaded_model=self._model,
            digest=self._digest,
            proxy_message=self._message,
            proxy_progress=self._progress,
            since=self._since,
            generation=self._generation,
            restarts=self._restarts,
            insecure=self._insecure,
            error=self._error,
            hashing=self._hashing,
        )

    def add_hook(self, hook: TransitionHook) -> None:
        """Call ``hook`` with the new status after every transition."""
        self._hooks.append(hook)

    def engine_endpoint(self) -> EngineEndpoint:
        return engine_endpoint(self._settings)

    def engine_client(self, timeout: httpx.Timeout | float | None = None) -> httpx.AsyncClient:
        """A new client for the engine (Unix socket or loopback); the caller closes it."""
        return self.engine_endpoint().client(timeout)

    def engine_pid(self) -> int | None:
        """The PID (and process-group ID) of the current engine, if one is running."""
        return self._engine.pid if self._engine is not None else None

    def engine_log_tail(self) -> list[str]:
        """The current (or last) engine's output tail. Diagnostics only: may hold user input."""
        return self._engine.log_tail() if self._engine is not None else list(self._last_tail)

    async def start(self) -> None:
        """Start the hook dispatcher and, with ``restore_on_boot``, reload the saved model."""
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch_hooks(), name="model-hooks")
        if not self._settings.restore_on_boot:
            return
        name = self._statefile.load_model()
        if name is None:
            return
        logger.info("restoring model %s at boot", name)
        try:
            self.load(name)
        except ModelManagerError as exc:
            self._set("error", model=name, error=_status_error(exc), message="restore failed")

    async def aclose(self) -> None:
        """Stop the engine and every task; pending hooks get a last chance to run."""
        self._generation += 1
        for task in (self._task, self._watch):
            if task is not None:
                task.cancel()
                await asyncio.wait({task})
        await self._stop_engine()
        if self._dispatcher is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.hook_timeout_seconds):
                    await self._hook_queue.join()
            self._dispatcher.cancel()
            await asyncio.wait({self._dispatcher})
            self._dispatcher = None

    def load(self, name: str) -> TransitionOutcome:
        """Start loading ``name``. Raises InvalidModelNameError, UnknownModelError,
        CatalogError, or TransitionConflictError while loading or unloading."""
        validate_model_name(name)
        self._catalog.resolve(name)
        if self._state in ("loading", "unloading"):
            raise TransitionConflictError(f"a transition is in progress ({self._state})")
        if self._state == "ready" and self._model == name:
            return TransitionOutcome(False, self.status())
        self._crash_times.clear()
        self._restarts = 0
        self._generation += 1
        self._set("loading", model=name, digest=None, progress=0.0, message="load accepted")
        self._begin(lambda gen: self._run_load(gen, name, restart_delay=None))
        return TransitionOutcome(True, self.status())

    def unload(self, name: str) -> TransitionOutcome:
        """Start unloading ``name``. Raises InvalidModelNameError, UnknownModelError for a name
        that is neither the current model nor in the catalog, or ModelNotLoadedError when
        another model is loading, ready or failed. Idle: nothing to do."""
        validate_model_name(name)
        if self._state == "idle" or self._model != name:
            self._catalog.resolve(name)  # UnknownModelError (404) for a name that is no model
            if self._state == "idle":
                return TransitionOutcome(False, self.status())
            raise ModelNotLoadedError(f"model {name!r} is not the loaded model")
        if self._state == "unloading":
            return TransitionOutcome(True, self.status())
        self._generation += 1
        self._set("unloading", message="stopping the engine")
        self._begin(self._run_unload)
        return TransitionOutcome(True, self.status())

    async def wait_status(self, *states: ProxyStatus, timeout: float) -> ModelStatus:
        """Wait until the state is one of ``states`` (TimeoutError after ``timeout``)."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                if self._state in states:
                    return self.status()
                await changed.wait()

    async def settled(self, timeout: float) -> ModelStatus:
        """Wait until no transition is running and every hook call queued so far has returned
        (TimeoutError after ``timeout``); then the status. Needs :meth:`start` (the hook
        dispatcher). For tests and tools that must observe a finished transition."""
        async with asyncio.timeout(timeout):
            while True:
                task = self._task
                if task is not None and not task.done():
                    await asyncio.wait({task})
                    continue
                await self._hook_queue.join()
                if self._task is task:
                    return self.status()

    # -- transitions ---------------------------------------------------------------------------

    def _begin(self, work: _Work) -> None:
        """Run ``work`` as the transition of the current generation (the caller has already
        incremented it, before entering the new state, so that hooks and the status document
        of that state carry the new generation)."""
        previous, self._task = self._task, None
        if previous is not None:
            previous.cancel()
        self._task = asyncio.create_task(
            self._transition(self._generation, previous, work), name="model-transition"
        )

    async def _transition(self, gen: int, previous: asyncio.Task[None] | None, work: _Work) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        try:
            await work(gen)
        except ModelManagerError as exc:
            logger.warning("transition of generation %d failed: %s", gen, exc)
            await self._failed(gen, _status_error(exc))
        except Exception:
            logger.exception("lifecycle transition failed unexpectedly")
            await self._failed(gen, StatusError("internal_error", "internal error"))

    async def _run_load(self, gen: int, name: str, restart_delay: float | None) -> None:
        await self._stop_engine()
        if restart_delay is not None:
            await asyncio.sleep(restart_delay)
            self._set("loading", model=name, digest=None, progress=0.0, message="restarting")
        spec = self._catalog.resolve(name)
        self._update(gen, message="verifying the model digest")
        try:
            digest = await self._digester.digest(
                spec,
                lambda f: self._raise_progress(gen, f * MANIFEST_PROGRESS_SHARE),
                on_bytes=lambda done, total: self._hashed(gen, done, total),
            )
        finally:
            self._hashing = None
        if gen != self._generation:
            return
        share = MANIFEST_PROGRESS_SHARE if digest.kind == "manifest-sha256" else 0.0
        self._digest = digest
        self._update(gen, message="starting the engine", progress=share)
        engine = self._engine_factory(
            spec, lambda f: self._raise_progress(gen, share + (1.0 - share) * f)
        )
        self._engine = engine
        await engine.start()
        if gen != self._generation:
            return
        self._set("ready", progress=1.0, message="model ready", error=None)
        self._statefile.save(name, digest)
        self._watch = asyncio.create_task(self._watch_engine(gen, engine, name))

    async def _run_stop(self, gen: int) -> None:
        """Stop what is left of a failed engine; the state stays ``error``."""
        await self._stop_engine()

    async def _run_unload(self, gen: int) -> None:
        await self._stop_engine()
        if gen != self._generation:
            return
        self._restarts = 0
        self._crash_times.clear()
        self._set("idle", model=None, digest=None, progress=0.0, message="no model loaded")
        self._statefile.save(None, None)

    async def _watch_engine(self, gen: int, engine: Engine, name: str) -> None:
        what = await engine.wait_down()
        if gen != self._generation:
            return
        # Nobody asked it to stop: a crash, whatever the exit code (vLLM's API server exits
        # with 0 seconds after its EngineCore dies; wait_down sees the EngineCore go). The
        # state leaves `ready` now; the restart transition stops what is left of the process
        # tree before it waits out the backoff.
        crash = StatusError("engine_crashed", f"the engine stopped unexpectedly ({what})")
        logger.warning("engine for model %s crashed: %s", name, what)
        self._schedule_restart(name, crash)

    async def _failed(self, gen: int, error: StatusError) -> None:
        await self._stop_engine()
        if gen != self._generation:
            return
        logger.warning("model %s: %s (%s)", self._model, error.code, error.message)
        if self._restarts > 0 and self._model is not None and error.code.startswith("engine"):
            self._schedule_restart(self._model, error)
        else:
            self._set("error", progress=0.0, message="load failed", error=error)

    def _schedule_restart(self, name: str, error: StatusError) -> None:
        now = self._clock()
        self._crash_times.append(now)
        while (
            self._crash_times and self._crash_times[0] < now - self._settings.restart_window_seconds
        ):
            self._crash_times.popleft()
        attempts = len(self._crash_times)
        if attempts > self._settings.restart_limit:
            limit = StatusError("restart_limit_reached", f"{error.message}; restart limit reached")
            self._generation += 1
            self._set("error", model=name, progress=0.0, message="engine failed", error=limit)
            self._begin(self._run_stop)
            return
        settings = self._settings
        delay = min(
            settings.restart_backoff_initial_seconds * 2 ** (attempts - 1),
            settings.restart_backoff_max_seconds,
        )
        self._restarts += 1
        message = f"restart {attempts} of {settings.restart_limit} in {delay:g} s"
        self._generation += 1
        self._set("error", model=name, progress=0.0, message=message, error=error)
        self._begin(lambda gen: self._run_load(gen, name, restart_delay=delay))

    async def _stop_engine(self) -> None:
        engine = self._engine
        if engine is None:
            return
        # stop() is idempotent; a caller cancelled while waiting (a superseded transition)
        # leaves the engine here, so the next _stop_engine (aclose) waits for the same stop.
        await engine.stop()
        self._last_tail = engine.log_tail()
        if self._engine is engine:
            self._engine = None

    # -- state ---------------------------------------------------------------------------------

    def _set(self, state: ProxyStatus, **fields: Any) -> None:
        """Enter ``state`` (a transition: hooks fire). ``fields``: model, digest, progress,
        message, error."""
        self._state = state
        self._apply(fields)
        self._since = self._clock()
        snapshot = self.status()
        logger.info(
            "model state %s (model %s, generation %d)", state, self._model, self._generation
        )
        self._hook_queue.put_nowait(snapshot)
        self._changed.set()
        self._changed = asyncio.Event()

    def _update(self, gen: int, **fields: Any) -> None:
        """Change message or progress within the current state (no hooks)."""
        if gen == self._generation:
            self._apply(fields)

    def _apply(self, fields: dict[str, Any]) -> None:
        if "model" in fields:
            self._model = fields["model"]
        if "digest" in fields:
            self._digest = fields["digest"]
        if "progress" in fields:
            self._progress = float(fields["progress"])
        if "message" in fields:
            self._message = str(fields["message"])
        if "error" in fields:
            self._error = fields["error"]

    def _hashed(self, gen: int, done: int, total: int) -> None:
        """Bytes callback of a manifest digest (a worker thread): one tuple, replaced whole."""
        if gen == self._generation and self._state == "loading":
            self._hashing = (done, total)

    def _raise_progress(self, gen: int, value: float) -> None:
        """Progress callback (may run in a worker thread): only ever raises the value."""
        if gen == self._generation and self._state == "loading":
            self._progress = max(self._progress, min(value, 1.0))

    async def _dispatch_hooks(self) -> None:
        while True:
            status = await self._hook_queue.get()
            try:
                for hook in list(self._hooks):
                    await self._run_hook(hook, status)
            finally:
                self._hook_queue.task_done()

    async def _run_hook(self, hook: TransitionHook, status: ModelStatus) -> None:
        try:
            async with asyncio.timeout(self._settings.hook_timeout_seconds):
                await hook(status)
        except Exception as exc:
            logger.warning(
                "transition hook %s failed: %s",
                getattr(hook, "__qualname__", type(hook).__name__),
                type(exc).__name__,
            )

    def _default_engine(self, spec: ModelSpec, on_progress: Callable[[float], None]) -> Engine:
        return EngineProcess(self._settings, spec, on_progress=on_progress)


def _status_error(exc: ModelManagerError) -> StatusError:
    return StatusError(*describe(exc))
