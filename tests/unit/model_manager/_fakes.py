"""In-process stand-ins for the lifecycle's seams: an engine factory and a verity probe."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from model_manager.catalog import ModelSpec
from model_manager.errors import ModelManagerError
from model_manager.supervisor import describe_exit


class FakeEngine:
    """An engine that 'loads' in three progress steps, optionally waits on a gate or fails."""

    def __init__(
        self,
        spec: ModelSpec,
        on_progress: Callable[[float], None],
        gate: asyncio.Event | None,
        fail: ModelManagerError | None,
        waiting: asyncio.Event | None = None,
        progress_seen: Callable[[], None] | None = None,
    ) -> None:
        self.spec = spec
        self.pid: int | None = None
        self.stopped = False
        self._on_progress = on_progress
        self._gate = gate
        self._fail = fail
        self._waiting = waiting
        self._progress_seen = progress_seen
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        for value in (0.25, 0.5, 0.75):
            self._on_progress(value)
            if self._progress_seen is not None:
                self._progress_seen()
            await asyncio.sleep(0)
        if self._waiting is not None:
            self._waiting.set()
        if self._gate is not None:
            await self._gate.wait()
        if self._fail is not None:
            raise self._fail
        self._on_progress(1.0)

    async def stop(self) -> None:
        self.stopped = True
        if not self._exit.done():
            self._exit.set_result(-15)

    async def wait_exit(self) -> int:
        return await asyncio.shield(self._exit)

    async def wait_down(self) -> str:
        return describe_exit(await self.wait_exit())

    def crash(self, code: int = 1) -> None:
        self._exit.set_result(code)

    def log_tail(self) -> list[str]:
        return []


class FakeEngines:
    """An EngineFactory that records every engine it makes."""

    def __init__(self) -> None:
        self.made: list[FakeEngine] = []
        self.gate: asyncio.Event | None = None
        self.fail: ModelManagerError | None = None
        #: Set once an engine has reported its progress and waits on the gate (or goes on).
        self.waiting = asyncio.Event()
        #: Called after each progress report of an engine.
        self.on_progress: Callable[[], None] | None = None

    def __call__(self, spec: ModelSpec, on_progress: Callable[[float], None]) -> FakeEngine:
        engine = FakeEngine(spec, on_progress, self.gate, self.fail, self.waiting, self.on_progress)
        self.made.append(engine)
        return engine
