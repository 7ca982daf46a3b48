"""Real ``vllm serve`` (the CPU build of scripts/install-vllm-cpu) driven by the service.

The engine is the real one; the model is the tiny random-weight Llama of enclave_dev/tinymodel.py,
built once into the venv. Engine starts are expensive (30-60 s here), so one service with one
engine is shared by a whole module (``loop_scope="module"``), its tests run in file order.

Without the venv these tests skip locally, with the reason; under CI (``CI`` set) they fail.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from enclave.settings import EnclaveSettings
from enclave_dev.local import local_settings, serve_locally
from enclave_dev.tee import Simulator
from enclave_dev.tinymodel import TINY_MODEL_NAME, build_command, is_built
from model_manager._proctree import read_proc, session_members
from tests.integration.client.conftest import Running

ROOT = Path(__file__).resolve().parents[3]
VENV = Path(os.environ.get("ENCLAVE_VLLM_VENV", ROOT / ".venv-vllm"))
VLLM = VENV / "bin" / "vllm"
TOKEN = "vllm-integration-token-8c21-5e0a9f3b7d14"
#: A start is 30-60 s on 2 cores; leave room for a loaded machine.
START_WAIT = 240.0
#: What the engine needs besides the service's own allow-list.
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
REFUSED = "tiny-refused"
#: The tiny model's context as served (its config allows 2048): long enough that a kill test's
#: stream is still being made when the signal lands.
MAX_MODEL_LEN = 2048


def _vllm_missing() -> str | None:
    python = VENV / "bin" / "python"
    if not python.exists() or not VLLM.exists():
        return f"no real-vLLM environment at {VENV} (run scripts/install-vllm-cpu)"
    probe = subprocess.run(
        [str(python), "-c", "import vllm"], capture_output=True, text=True, timeout=120
    )
    if probe.returncode != 0:
        return f"vllm does not import in {VENV}: {probe.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny model, built once (deterministic; kept in the venv between runs)."""
    missing = _vllm_missing()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"real-vLLM tests cannot run in CI: {missing}")
        pytest.skip(missing)
    out = VENV / "enclave-tiny-model"
    if not is_built(out):
        subprocess.run(
            build_command(VENV / "bin" / "python", out),
            check=True,
            capture_output=True,
            timeout=300,
        )
    return out


@pytest.fixture(scope="session")
def engine_env() -> Iterator[None]:
    """The engine's environment variables, in this process (the service passes them on)."""
    saved = {name: os.environ.get(name) for name in ENGINE_ENV}
    os.environ.update(ENGINE_ENV)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def models_dir(root: Path, tiny_model: Path) -> Path:
    """A models directory with the tiny model and a catalog: ``tiny-llama`` as it should run
    here, and ``tiny-refused`` with a max_model_len vLLM refuses."""
    models = root / "models"
    target = models / TINY_MODEL_NAME
    target.mkdir(parents=True)
    for item in tiny_model.iterdir():
        if item.is_file():
            (target / item.name).write_bytes(item.read_bytes())
    (models / "models.toml").write_text(
        f"[models.{TINY_MODEL_NAME}]\n"
        f'max_model_len = {MAX_MODEL_LEN}\ndtype = "float32"\nextra_args = ["--enforce-eager"]\n\n'
        f'[models.{REFUSED}]\npath = "{TINY_MODEL_NAME}"\n'
        'max_model_len = 999999\ndtype = "float32"\nextra_args = ["--enforce-eager"]\n'
    )
    return models


def vllm_settings(root: Path, **overrides: Any) -> EnclaveSettings:
    values: dict[str, Any] = {
        "engine_command": (str(VLLM),),
        "insecure_dev_engine": False,
        "engine_env_allowlist": tuple(ENGINE_ENV),
        "load_timeout_seconds": START_WAIT,
        "stop_grace_seconds": 10.0,
        "restart_backoff_initial_seconds": 1.0,
        "restart_backoff_max_seconds": 4.0,
        "shutdown_grace_seconds": 10,
        **overrides,
    }
    return local_settings(root, load_token=TOKEN, **values)


@dataclass
class VllmService(Running):
    """The service with real vLLM as its engine."""

    @property
    def manager(self) -> Any:
        return self.server.service.manager

    async def post_model(self, path: str, name: str) -> httpx.Response:
        async with self.plain_client() as client:
            return await client.post(
                path, json={"model": name}, headers={"Authorization": f"Bearer {TOKEN}"}
            )

    async def status(self) -> dict[str, Any]:
        async with self.plain_client() as client:
            document: dict[str, Any] = (await client.get("/v1/models/status")).json()
            return document

    async def wait_for(self, *states: str, timeout: float = START_WAIT) -> list[dict[str, Any]]:
        """Poll the status route until one of ``states``; every document seen, in order."""
        seen: list[dict[str, Any]] = []
        async with self.plain_client() as client, asyncio.timeout(timeout):
            while True:
                document: dict[str, Any] = (await client.get("/v1/models/status")).json()
                seen.append(document)
                if document["proxy_status"] in states:
                    return seen
                await asyncio.sleep(0.1)

    def engine_processes(self) -> list[tuple[int, str]]:
        """(pid, comm) of every live process of the current engine's session."""
        pid = self.manager.engine_pid()
        if pid is None:
            return []
        return [(info.pid, comm(info.pid)) for info in session_members(pid) if info.state != "Z"]


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if (info := read_proc(pid)) is not None and info.state != "Z"]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def vllm_service(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, engine_env: None
) -> AsyncIterator[VllmService]:
    tmp = tmp_path_factory.mktemp("vllm")
    models_dir(tmp, tiny_model)
    simulator = Simulator.create()
    async with serve_locally(vllm_settings(tmp), simulator=simulator) as server:
        assert server.bound_port is not None
        yield VllmService(server, simulator, server.bound_port, tmp)
