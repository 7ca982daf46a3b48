"""The supervisor against a real child process (tests/unit/model_manager/_fake_engine.py)."""

import asyncio
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from model_manager.catalog import Catalog
from model_manager.errors import EngineError
from model_manager.supervisor import EngineExitedError, EngineProcess, EngineTimeoutError

from .conftest import SettingsFactory, live_members


def engine(
    make_settings: SettingsFactory,
    models_dir: Path,
    *args: str,
    seen: list[float] | None = None,
    **overrides: Any,
) -> EngineProcess:
    settings = make_settings(*args, **overrides)
    spec = Catalog(models_dir).resolve("tiny")
    return EngineProcess(settings, spec, on_progress=None if seen is None else seen.append)


async def test_start_reports_progress_then_stop_leaves_nothing(
    make_settings: SettingsFactory, models_dir: Path
) -> None:
    seen: list[float] = []
    proc = engine(make_settings, models_dir, "--dev-workers", "2", seen=seen)
    await proc.start()
    assert proc.pid is not None
    assert len(live_members(proc.pid)) == 3  # the engine and its two workers
    assert seen == sorted(seen)
    assert seen[-1] == 1.0
    assert len(seen) >= 6
    assert any("Application startup complete" in line for line in proc.log_tail())
    await proc.stop()
    assert live_members(proc.pid) == []
    assert proc.returncode == -15
    assert not (make_settings().run_dir / "engine.sock").exists()
    await proc.stop()  # idempotent


async def test_exit_while_loading_fails_fast_with_the_exit_code(
    make_settings: SettingsFactory, models_dir: Path
) -> None:
    proc = engine(make_settings, models_dir, "--dev-fail-at-start", "--dev-load-seconds", "30")
    with pytest.raises(EngineExitedError) as info:
        await proc.start()
    assert info.value.returncode == 2
    assert proc.pid is not None
    assert live_members(proc.pid) == []


async def test_hung_health_times_out_and_the_tree_is_killed(
    make_settings: SettingsFactory, models_dir: Path
) -> None:
    proc = engine(
        make_settings,
        models_dir,
        "--dev-hang-health",
        "--dev-workers",
        "2",
        load_timeout_seconds=1.0,
        health_request_timeout_seconds=0.2,
    )
    with pytest.raises(EngineTimeoutError):
        await proc.start()
    assert proc.pid is not None
    assert live_members(proc.pid) == []


async def test_sigterm_ignored_escalates_to_sigkill(
    make_settings: SettingsFactory, models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proc = engine(
        make_settings,
        models_dir,
        "--fake-ignore-sigterm",
        "--dev-workers",
        "2",
        stop_grace_seconds=0.3,
    )
    await proc.start()
    with caplog.at_level(logging.WARNING, logger="model_manager.supervisor"):
        await proc.stop()
    assert proc.returncode == -9
    assert proc.pid is not None
    assert live_members(proc.pid) == []
    assert "sending SIGKILL" in caplog.text


async def test_crash_after_ready_is_seen_and_orphaned_workers_are_reaped(
    make_settings: SettingsFactory, models_dir: Path
) -> None:
    proc = engine(make_settings, models_dir, "--fake-exit-after", "0.2", "--dev-workers", "2")
    await proc.start()
    assert await proc.wait_exit() == 3
    assert proc.pid is not None
    assert len([p for p in live_members(proc.pid) if p != proc.pid]) == 2  # orphaned workers
    await proc.stop()
    assert live_members(proc.pid) == []


async def test_the_failure_reason_comes_only_from_output_before_healthy(
    make_settings: SettingsFactory, models_dir: Path
) -> None:
    """After the first healthy /health requests may reach the engine: nothing it prints from
    then on may become a shown reason."""
    proc = engine(make_settings, models_dir)
    proc._take_line("ValueError: printed while loading")
    assert proc.failure_reason() == "ValueError: printed while loading"
    await proc.start()
    try:
        assert proc.failure_reason() is None  # the startup lines are dropped once healthy
        proc._take_line("ValueError: could echo a prompt")
        assert proc.failure_reason() is None
        assert "ValueError: could echo a prompt" in proc.log_tail()  # kept for debugging only
    finally:
        await proc.stop()


async def test_wait_down_sees_a_member_process_die_while_the_main_one_lives(
    make_settings: SettingsFactory, models_dir: Path
) -> None:
    """vLLM's API server outlives a killed EngineCore by seconds: the death of any process
    that was part of the engine when it became healthy is the engine going down."""
    proc = engine(make_settings, models_dir, "--dev-workers", "2")
    await proc.start()
    try:
        assert proc.pid is not None
        worker = next(pid for pid in live_members(proc.pid) if pid != proc.pid)
        os.kill(worker, signal.SIGKILL)
        what = await asyncio.wait_for(proc.wait_down(), 10)
        assert what.startswith("its process ")
        assert what.endswith(f"(pid {worker}) died")
        assert proc.returncode is None  # the main process is still there
    finally:
        await proc.stop()
    assert await proc.wait_down() == "killed by SIGTERM"


async def test_engine_gets_a_clean_environment_and_the_right_argv(
    make_settings: SettingsFactory,
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dump = tmp_path / "env.json"
    proc = engine(make_settings, models_dir, "--fake-dump-env", str(dump))
    monkeypatch.setenv("LOAD_TOKEN", "must-not-leak")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    await proc.start()
    await proc.stop()
    seen = json.loads(dump.read_text())
    assert "LOAD_TOKEN" not in seen["env"]
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == "3"
    assert set(seen["env"]) <= {
        "PATH",
        "HOME",
        "LANG",
        "CUDA_VISIBLE_DEVICES",
        "PYTHONUNBUFFERED",
        "LC_CTYPE",
    } | {k for k in os.environ if k.startswith(("VLLM_", "NCCL_", "HF_", "TMPDIR", "TZ"))}
    assert "--no-enable-log-requests" in seen["argv"]


async def test_engine_output_is_never_logged(
    make_settings: SettingsFactory, models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    canary = "CANARY-prompt-7f3a9c"
    proc = engine(make_settings, models_dir, "--fake-echo", canary)
    with caplog.at_level(logging.DEBUG):
        await proc.start()
        await proc.stop()
    assert any(canary in line for line in proc.log_tail())
    assert canary not in caplog.text


async def test_missing_program_is_an_engine_error(
    make_settings: SettingsFactory, models_dir: Path
) -> None:
    proc = engine(make_settings, models_dir, engine_command="/nonexistent/vllm")
    with pytest.raises(EngineError):
        await proc.start()


async def test_log_tail_is_bounded(make_settings: SettingsFactory, models_dir: Path) -> None:
    proc = engine(make_settings, models_dir, "--fake-shards", "50", log_tail_lines=5)
    await proc.start()
    await proc.stop()
    assert len(proc.log_tail()) == 5


async def test_too_long_socket_path_is_refused(
    make_settings: SettingsFactory, models_dir: Path
) -> None:
    proc = engine(make_settings, models_dir, engine_socket=Path("/tmp/" + "s" * 120))
    with pytest.raises(EngineError):
        await proc.start()
