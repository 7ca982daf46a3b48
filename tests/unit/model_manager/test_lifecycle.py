"""The lifecycle state machine with an in-process engine (real processes: tests/integration)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from model_manager._verity import CommandResult, VerityProbe
from model_manager.digests import Digester
from model_manager.errors import (
    InvalidModelNameError,
    TransitionConflictError,
    UnknownModelError,
)
from model_manager.lifecycle import ModelManager, ModelNotLoadedError
from model_manager.settings import ModelManagerSettings
from model_manager.status import ModelStatus
from model_manager.supervisor import EngineExitedError

from ._fakes import FakeEngines
from .conftest import SettingsFactory

WAIT = 10.0  # generous: these only wait on events


async def run_ready_tasks(rounds: int = 50) -> None:
    """Let every task that can run without waiting on something outside run (no wall clock)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[ModelStatus] = []

    async def __call__(self, status: ModelStatus) -> None:
        self.seen.append(status)

    @property
    def states(self) -> list[str]:
        return [status.proxy_status for status in self.seen]


@pytest.fixture
def engines() -> FakeEngines:
    return FakeEngines()


@pytest.fixture
def settings(make_settings: SettingsFactory) -> ModelManagerSettings:
    return make_settings()


@pytest.fixture
async def manager(
    settings: ModelManagerSettings, engines: FakeEngines
) -> AsyncIterator[ModelManager]:
    mm = ModelManager(settings, engine_factory=engines)
    await mm.start()
    yield mm
    await mm.aclose()


async def drain_hooks(manager: ModelManager) -> None:
    await manager.settled(WAIT)


async def test_load_ready_unload_fires_hooks_and_persists(
    manager: ModelManager, engines: FakeEngines, settings: ModelManagerSettings
) -> None:
    hooks = Recorder()
    manager.add_hook(hooks)
    outcome = manager.load("tiny")
    assert outcome.accepted
    assert outcome.status.proxy_status == "loading"
    ready = await manager.wait_status("ready", "error", timeout=WAIT)
    assert ready.proxy_status == "ready"
    assert ready.proxy_progress == 1.0
    assert ready.digest is not None
    assert ready.digest_kind == "manifest-sha256"
    saved = json.loads((settings.state_dir / "model-state.json").read_text())
    assert saved["model"] == "tiny"
    assert saved["digest"] == ready.digest.hex
    assert manager.unload("tiny").accepted
    idle = await manager.wait_status("idle", timeout=WAIT)
    assert idle.loaded_model is None
    assert idle.generation == 2
    assert engines.made[0].stopped
    await drain_hooks(manager)
    assert hooks.states == ["loading", "ready", "unloading", "idle"]
    assert json.loads((settings.state_dir / "model-state.json").read_text())["model"] is None


async def test_load_of_the_ready_model_is_a_no_op(manager: ModelManager) -> None:
    manager.load("tiny")
    await manager.wait_status("ready", timeout=WAIT)
    outcome = manager.load("tiny")
    assert not outcome.accepted
    assert outcome.status.proxy_status == "ready"


async def test_transitions_in_progress_conflict(
    manager: ModelManager, engines: FakeEngines
) -> None:
    engines.gate = asyncio.Event()
    manager.load("tiny")
    with pytest.raises(TransitionConflictError):
        manager.load("tiny")
    with pytest.raises(TransitionConflictError):
        manager.load("other")
    with pytest.raises(ModelNotLoadedError):
        manager.unload("other")
    engines.gate.set()
    await manager.wait_status("ready", timeout=WAIT)


async def test_unload_names_are_checked(manager: ModelManager) -> None:
    with pytest.raises(InvalidModelNameError):
        manager.unload("../tiny")
    with pytest.raises(UnknownModelError):
        manager.unload("nope")
    assert not manager.unload("tiny").accepted  # idle: nothing to do
    manager.load("tiny")
    await manager.wait_status("ready", timeout=WAIT)
    with pytest.raises(ModelNotLoadedError):
        manager.unload("other")
    with pytest.raises(UnknownModelError):
        manager.unload("nope")


async def test_unload_while_loading_supersedes_the_load(
    manager: ModelManager, engines: FakeEngines
) -> None:
    engines.gate = asyncio.Event()
    manager.load("tiny")
    await asyncio.wait_for(engines.waiting.wait(), WAIT)  # the load is inside engine.start()
    assert manager.unload("tiny").accepted
    idle = await manager.wait_status("idle", timeout=WAIT)
    engines.gate.set()  # the superseded load must not come back
    assert (await manager.settled(WAIT)).proxy_status == "idle"
    assert idle.loaded_model is None
    assert all(engine.stopped for engine in engines.made)


async def test_load_failure_is_an_error_without_restart(
    manager: ModelManager, engines: FakeEngines
) -> None:
    engines.fail = EngineExitedError(1)
    manager.load("tiny")
    failed = await manager.wait_status("error", timeout=WAIT)
    assert failed.error is not None
    assert failed.error.code == "engine_exited"
    assert "exit code 1" in failed.error.message
    assert failed.restarts == 0
    assert len(engines.made) == 1
    # A new load is accepted after an error.
    engines.fail = None
    assert manager.load("tiny").accepted
    await manager.wait_status("ready", timeout=WAIT)


async def test_crash_while_ready_restarts_with_backoff_then_gives_up(
    make_settings: SettingsFactory, engines: FakeEngines
) -> None:
    manager = ModelManager(make_settings(restart_limit=2), engine_factory=engines)
    hooks = Recorder()
    manager.add_hook(hooks)
    await manager.start()
    try:
        manager.load("tiny")
        await manager.wait_status("ready", timeout=WAIT)
        for attempt in (1, 2):
            engines.made[-1].crash(1)
            await manager.wait_status("error", timeout=WAIT)
            restarted = await manager.wait_status("ready", timeout=WAIT)
            assert restarted.restarts == attempt
        engines.made[-1].crash(1)
        failed = await manager.wait_status("error", timeout=WAIT)
        assert failed.error is not None
        final = await manager.settled(WAIT)  # no restart was scheduled
        assert final.proxy_status == "error"
        assert final.error is not None
        assert final.error.code == "restart_limit_reached"
        assert len(engines.made) == 3
        await drain_hooks(manager)
        assert hooks.states == [
            "loading",
            "ready",
            *["error", "loading", "ready"] * 2,
            "error",
        ]
    finally:
        await manager.aclose()


async def test_restore_at_boot(make_settings: SettingsFactory, engines: FakeEngines) -> None:
    first = ModelManager(make_settings(), engine_factory=engines)
    await first.start()
    first.load("other")
    await first.wait_status("ready", timeout=WAIT)
    await first.aclose()  # a service stop, not an unload: the model stays recorded
    second = ModelManager(make_settings(restore_on_boot=True), engine_factory=engines)
    await second.start()
    try:
        restored = await second.wait_status("ready", "error", timeout=WAIT)
        assert (restored.proxy_status, restored.loaded_model) == ("ready", "other")
    finally:
        await second.aclose()
    third = ModelManager(make_settings(), engine_factory=engines)  # restore not asked
    await third.start()
    assert third.status().proxy_status == "idle"
    await third.aclose()


async def test_restore_of_a_vanished_model_is_an_error(
    make_settings: SettingsFactory, engines: FakeEngines, models_dir: Path
) -> None:
    settings = make_settings(restore_on_boot=True)
    settings.state_dir.mkdir(parents=True)
    (settings.state_dir / "model-state.json").write_text('{"version": 1, "model": "gone"}')
    manager = ModelManager(settings, engine_factory=engines)
    await manager.start()
    try:
        status = manager.status()
        assert status.proxy_status == "error"
        assert status.error is not None
        assert status.error.code == "model_not_found"
    finally:
        await manager.aclose()


async def test_digest_mismatch_refuses_the_load(
    make_settings: SettingsFactory, engines: FakeEngines, models_dir: Path, tmp_path: Path
) -> None:
    settings = make_settings()
    settings.roothash_dir.mkdir(parents=True)
    (settings.roothash_dir / "tiny.roothash").write_text("aa" * 32 + "\n")
    sys_block = tmp_path / "sys"
    (sys_block / "253:3" / "dm").mkdir(parents=True)
    (sys_block / "253:3" / "dm" / "name").write_text("tiny\n")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"412 27 253:3 / {(models_dir / 'tiny').resolve()} ro - squashfs /dev/mapper/tiny ro\n"
    )
    table = f"0 512 verity 1 7:0 7:1 4096 4096 64 1 sha256 {'bb' * 32} {'cc' * 32}\n"

    async def runner(argv: object, timeout: float) -> CommandResult:
        return CommandResult(0, table)

    probe = VerityProbe(runner, mountinfo=mountinfo, sys_dev_block=sys_block)
    manager = ModelManager(
        settings, digester=Digester(settings, probe=probe), engine_factory=engines
    )
    await manager.start()
    try:
        manager.load("tiny")
        failed = await manager.wait_status("error", "ready", timeout=WAIT)
        assert failed.proxy_status == "error"
        assert failed.error is not None
        assert failed.error.code == "digest_mismatch"
        assert engines.made == []  # no engine was ever started
    finally:
        await manager.aclose()


async def test_a_failing_hook_does_not_break_the_lifecycle(
    manager: ModelManager, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(status: ModelStatus) -> None:
        raise RuntimeError("hook bug")

    later = Recorder()
    manager.add_hook(broken)
    manager.add_hook(later)
    with caplog.at_level(logging.WARNING, logger="model_manager.lifecycle"):
        manager.load("tiny")
        await manager.wait_status("ready", timeout=WAIT)
        await drain_hooks(manager)
    assert later.states == ["loading", "ready"]
    assert "RuntimeError" in caplog.text


async def test_progress_never_decreases_within_a_load(
    manager: ModelManager, engines: FakeEngines
) -> None:
    engines.gate = asyncio.Event()
    engines.on_progress = lambda: values.append(manager.status().proxy_progress)
    manager.load("tiny")
    values = [manager.status().proxy_progress]
    await asyncio.wait_for(engines.waiting.wait(), WAIT)  # 0.25, 0.5, 0.75 reported
    assert len(values) == 4
    engines.gate.set()
    values.append((await manager.wait_status("ready", timeout=WAIT)).proxy_progress)
    assert values == sorted(values)
    assert values[-1] == 1.0
    assert any(0.0 < value < 1.0 for value in values)


async def test_aclose_during_an_unload_waits_for_the_engine_to_stop(
    make_settings: SettingsFactory,
) -> None:
    """Regression: aclose() cancelled the unload inside engine.stop(), whose ``finally`` forgot
    the engine, so aclose() returned while the engine was still stopping (its transport leaked)."""
    from ._fakes import FakeEngine

    class SlowStop(FakeEngine):
        """Stops in a shielded task, like EngineProcess, once ``release`` is set."""

        release: asyncio.Event
        stopping: asyncio.Event
        finished = False
        _stopping: asyncio.Task[None] | None = None

        async def stop(self) -> None:
            if self._stopping is None:
                self._stopping = asyncio.create_task(self._stop_slowly())
            await asyncio.shield(self._stopping)

        async def _stop_slowly(self) -> None:
            self.stopping.set()
            await self.release.wait()
            await FakeEngine.stop(self)
            self.finished = True

    made: list[SlowStop] = []

    def factory(spec, on_progress):  # type: ignore[no-untyped-def]
        engine = SlowStop(spec, on_progress, None, None)
        engine.release = asyncio.Event()
        engine.stopping = asyncio.Event()
        made.append(engine)
        return engine

    manager = ModelManager(make_settings(), engine_factory=factory)
    await manager.start()
    manager.load("tiny")
    await manager.wait_status("ready", timeout=WAIT)
    manager.unload("tiny")
    await manager.wait_status("unloading", timeout=WAIT)
    await asyncio.wait_for(made[0].stopping.wait(), WAIT)  # the unload is inside engine.stop()
    closing = asyncio.create_task(manager.aclose())
    await run_ready_tasks()
    assert not closing.done()  # it waits for the stop instead of forgetting the engine
    made[0].release.set()
    await asyncio.wait_for(closing, WAIT)
    assert made[0].finished


async def test_hooks_and_status_carry_the_new_generation(manager: ModelManager) -> None:
    """Regression: the state was entered (and hooks queued) before the generation moved, so
    hooks and the log said generation 0 while the 202 body said 1."""
    hooks = Recorder()
    manager.add_hook(hooks)
    outcome = manager.load("tiny")
    assert outcome.status.generation == 1
    await manager.wait_status("ready", timeout=WAIT)
    unloading = manager.unload("tiny")
    await manager.settled(WAIT)
    assert [(s.proxy_status, s.generation) for s in hooks.seen] == [
        ("loading", 1),
        ("ready", 1),
        ("unloading", 2),
        ("idle", 2),
    ]
    assert unloading.status.generation == 2


@pytest.mark.parametrize(("code", "said"), [(0, "exit code 0"), (-9, "killed by SIGKILL")])
async def test_any_unrequested_exit_is_a_crash(
    manager: ModelManager, engines: FakeEngines, code: int, said: str
) -> None:
    """vLLM's API server exits with 0 when its EngineCore dies: still a crash."""
    manager.load("tiny")
    await manager.wait_status("ready", timeout=WAIT)
    engines.made[-1].crash(code)
    crashed = await manager.wait_status("error", timeout=WAIT)
    assert crashed.error is not None
    assert crashed.error.code == "engine_crashed"
    assert crashed.error.message == f"the engine stopped unexpectedly ({said})"
    assert (await manager.wait_status("ready", timeout=WAIT)).restarts == 1


async def test_a_crash_leaves_ready_before_the_tree_is_stopped(
    make_settings: SettingsFactory,
) -> None:
    """Regression: the state left `ready` only after the whole process tree was stopped (6-9 s
    of `ready` and 502s with real vLLM)."""
    from ._fakes import FakeEngine

    class SlowStop(FakeEngine):
        release: asyncio.Event

        async def stop(self) -> None:
            await self.release.wait()
            await FakeEngine.stop(self)

    made: list[SlowStop] = []

    def factory(spec, on_progress):  # type: ignore[no-untyped-def]
        engine = SlowStop(spec, on_progress, None, None)
        engine.release = asyncio.Event()
        made.append(engine)
        return engine

    manager = ModelManager(make_settings(), engine_factory=factory)
    await manager.start()
    try:
        manager.load("tiny")
        await manager.wait_status("ready", timeout=WAIT)
        made[0].crash(0)
        # while stop() still blocks
        crashed = await manager.wait_status("error", timeout=WAIT / 5)
        assert not made[0].stopped
        assert crashed.error is not None
        assert crashed.error.code == "engine_crashed"
        made[0].release.set()
        await manager.wait_status("ready", timeout=WAIT)
        assert len(made) == 2
    finally:
        for engine in made:
            engine.release.set()
        await manager.aclose()


async def test_a_failed_start_shows_the_engines_reason(
    manager: ModelManager, engines: FakeEngines
) -> None:
    engines.fail = EngineExitedError(1, "ValueError: max_model_len too large")
    manager.load("tiny")
    failed = await manager.wait_status("error", timeout=WAIT)
    assert failed.error is not None
    assert failed.error.message == (
        "the engine exited while loading (exit code 1): ValueError: max_model_len too large"
    )
