"""Fixtures for the model manager's unit tests: a models directory, settings with short
limits, and the tiny fake engine of ``_fake_engine.py``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from model_manager._proctree import become_subreaper, session_members
from model_manager.settings import ModelManagerSettings

FAKE_ENGINE = Path(__file__).resolve().parent / "_fake_engine.py"

SettingsFactory = Callable[..., ModelManagerSettings]


@pytest.fixture(scope="package", autouse=True)
def _subreaper() -> Iterator[None]:
    # Orphaned fake workers must come back to this process to be reaped (PID 1 may not reap).
    # Only for this package: a session-wide subreaper adopted other suites' daemons, which
    # then stayed zombies (nothing here reaps them) and made `enclave proxy stop` wait.
    become_subreaper()
    yield
    become_subreaper(enable=False)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    model = root / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"architectures": ["TinyForCausalLM"]}')
    (model / "model-00001-of-00002.safetensors").write_bytes(b"\x01" * 1000)
    (model / "model-00002-of-00002.safetensors").write_bytes(b"\x02" * 3000)
    (root / "other").mkdir()
    (root / "other" / "weights.bin").write_bytes(b"other")
    return root


@pytest.fixture
def make_settings(tmp_path: Path, models_dir: Path) -> SettingsFactory:
    def factory(*engine_args: str, **overrides: Any) -> ModelManagerSettings:
        values: dict[str, Any] = {
            "models_dir": models_dir,
            "roothash_dir": tmp_path / "roothash",
            "state_dir": tmp_path / "state",
            "run_dir": tmp_path / "run",
            "engine_command": (sys.executable, str(FAKE_ENGINE), *engine_args),
            "load_timeout_seconds": 10.0,
            "stop_grace_seconds": 2.0,
            "kill_wait_seconds": 5.0,
            "health_poll_initial_seconds": 0.02,
            "health_poll_max_seconds": 0.1,
            "restart_backoff_initial_seconds": 0.05,
            "restart_backoff_max_seconds": 0.2,
        }
        values.update(overrides)
        return ModelManagerSettings(**values)

    return factory


def live_members(sid: int) -> list[int]:
    """PIDs of the session ``sid`` that still exist, zombies included."""
    return [info.pid for info in session_members(sid)]
