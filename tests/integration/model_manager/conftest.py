"""Fixtures for the model manager with the development engine as a real child process."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from enclave.routes import error_response
from model_manager._proctree import become_subreaper, session_members
from model_manager.catalog import ModelSpec
from model_manager.endpoints import model_routes
from model_manager.lifecycle import ModelManager
from model_manager.settings import ModelManagerSettings
from model_manager.status import ModelStatus
from model_manager.supervisor import EngineProcess

TOKEN = "integration-load-token-5e1d-0c8a7f2b"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Generous deadlines for a loaded 2-core machine; tests wait on polls, never on sleeps.
WAIT = 60.0
DEV_ENGINE = (sys.executable, "-P", "-m", "enclave_dev.engine")


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
    (model / "config.json").write_text(
        '{"architectures": ["TinyForCausalLM"], "max_position_embeddings": 4096}'
    )
    for index in (1, 2, 3):
        (model / f"model-0000{index}-of-00003.safetensors").write_bytes(bytes([index]) * 2048)
    return root


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Short: a Unix socket path holds at most 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="mm-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def live(pid: int) -> list[int]:
    """Every process of the engine's session or group still in the process table."""
    return [info.pid for info in session_members(pid)]


class Harness:
    """A manager whose engines are recorded, and the lifecycle routes over ASGI."""

    def __init__(self, settings: ModelManagerSettings) -> None:
        self.settings = settings
        self.engines: list[EngineProcess] = []
        self.seen: list[ModelStatus] = []
        self.manager = ModelManager(settings, engine_factory=self._make)
        self.manager.add_hook(self._record)
        app = Starlette(routes=model_routes(self.manager, settings, error_response))
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://service"
        )

    def _make(self, spec: ModelSpec, on_progress: Callable[[float], None]) -> EngineProcess:
        engine = EngineProcess(self.settings, spec, on_progress=on_progress)
        self.engines.append(engine)
        return engine

    async def _record(self, status: ModelStatus) -> None:
        self.seen.append(status)

    @property
    def states(self) -> list[str]:
        return [status.proxy_status for status in self.seen]

    async def post(self, path: str, model: str) -> httpx.Response:
        return await self.http.post(path, json={"model": model}, headers=AUTH)

    async def status(self) -> dict[str, Any]:
        document: dict[str, Any] = (await self.http.get("/v1/models/status")).json()
        return document

    def pids(self) -> list[int]:
        return [engine.pid for engine in self.engines if engine.pid is not None]

    def orphans(self) -> list[int]:
        return [pid for root in self.pids() for pid in live(root)]


HarnessFactory = Callable[..., Any]


@pytest.fixture
async def harness(
    models_dir: Path, run_dir: Path, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    made: list[Harness] = []

    async def factory(*engine_flags: str, **overrides: Any) -> Harness:
        values: dict[str, Any] = {
            "models_dir": models_dir,
            "roothash_dir": tmp_path / "roothash",
            "state_dir": tmp_path / "state",
            "run_dir": run_dir,
            "engine_command": (*DEV_ENGINE, "--dev-load-seconds", "0.4", *engine_flags),
            "insecure_dev_engine": True,
            "load_token": TOKEN,
            "load_timeout_seconds": WAIT,
            "stop_grace_seconds": 5.0,
            "kill_wait_seconds": 10.0,
            "health_poll_initial_seconds": 0.02,
            "health_poll_max_seconds": 0.2,
            "restart_backoff_initial_seconds": 0.05,
            "restart_backoff_max_seconds": 0.2,
        }
        values.update(overrides)
        made_one = Harness(ModelManagerSettings(**values))
        await made_one.manager.start()
        made.append(made_one)
        return made_one

    yield factory
    for one in made:
        await one.manager.aclose()
        await one.http.aclose()
        assert one.orphans() == [], "engine processes left behind"
