"""The real app under uvicorn on loopback (plain HTTP for now) with the development engine
as a real child process started by the ModelManager."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from enclave.app import build_app
from enclave.service import Service
from enclave.settings import EnclaveSettings, ServiceSettings
from model_manager import ModelManagerSettings

MODEL = "tiny"
#: How long any single wait in these tests may take before it counts as a failure.
WAIT_SECONDS = 20.0


class Running:
    """A served app: its base URL, the service, and a client to the engine's own socket."""

    def __init__(self, base_url: str, service: Service, engine_socket: Path) -> None:
        self.base_url = base_url
        self.service = service
        self.engine_socket = engine_socket

    def client(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=WAIT_SECONDS, **kwargs)  # type: ignore[arg-type]

    def engine(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.engine_socket))
        return httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=5)

    async def load(self) -> None:
        async with self.client() as client:
            response = await client.post("/v1/models/load", json={"model": MODEL})
            assert response.status_code == 202, response.text
        await self.service.manager.wait_status("ready", timeout=WAIT_SECONDS)

    async def faults(self, **changes: object) -> None:
        async with self.engine() as engine:
            response = await engine.post("/dev/faults", json=changes)
            assert response.status_code == 200, response.text

    async def engine_metric(self, name: str) -> float:
        async with self.engine() as engine:
            text = (await engine.get("/metrics")).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A Unix socket path must fit in 107 bytes; pytest's tmp_path may not.
    path = Path(tempfile.mkdtemp(prefix="encl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def running(tmp_path: Path, short_dir: Path) -> AsyncIterator[Running]:
    model = tmp_path / "models" / MODEL
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"max_position_embeddings": 4096}')
    (model / "model.safetensors").write_bytes(b"\x00" * 256)
    manager = ModelManagerSettings(
        models_dir=tmp_path / "models",
        roothash_dir=tmp_path / "roothash",
        state_dir=tmp_path / "state",
        run_dir=short_dir,
        engine_command=(
            sys.executable,
            "-m",
            "enclave_dev.engine",
            "--dev-load-seconds",
            "0.1",
            "--dev-tokens-per-second",
            "0",
            "--dev-workers",
            "0",
            "--disable-log-stats",
            "--disable-uvicorn-access-log",
        ),
        insecure_dev_engine=True,
        insecure_dev_mode=True,
        load_timeout_seconds=WAIT_SECONDS,
        stop_grace_seconds=2.0,
        health_poll_initial_seconds=0.02,
        health_poll_max_seconds=0.1,
        restart_backoff_initial_seconds=0.1,
    )
    settings = EnclaveSettings(
        service=ServiceSettings(host="127.0.0.1", port=0), model_manager=manager
    )
    service = Service(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        build_app(service), log_level="warning", lifespan="on", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(WAIT_SECONDS):
        while not server.started:
            await asyncio.sleep(0.01)
    try:
        yield Running(f"http://127.0.0.1:{port}", service, manager.engine_socket_path())
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=WAIT_SECONDS)
        sock.close()
