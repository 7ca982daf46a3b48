"""One real EnclaveServer per module (RA-TLS on loopback, simulated TEE verified through the
real dcap-qvl against the simulator's root, the development engine as a child process), and
verifiers for the client under test."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn

from attestation.collateral import Collateral
from attestation.policy import Policy, pinned_policy
from enclave.client import Verifier
from enclave.server import EnclaveServer
from enclave.settings import EnclaveSettings
from enclave_dev.local import local_settings, serve_locally
from enclave_dev.tee import Simulator

TOKEN = "client-integration-token-6b0e3d9f"
CANARY = "canary-client-3f1d7a9c"


class StaticCollateral:
    """The simulator's collateral, as a CollateralSource."""

    def __init__(self, simulator: Simulator) -> None:
        self._collateral = Collateral.from_json(simulator.collateral_json())

    async def get_collateral(self, quote: bytes) -> Collateral:
        return self._collateral


@dataclass
class Running:
    server: EnclaveServer
    simulator: Simulator
    port: int
    tmp: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def policy(self, **changes: Any) -> Policy:
        """The policy pinning this simulated TD's measurements, with ``changes`` applied."""
        pinned = pinned_policy(self.simulator.measurements.registers())
        # The service under test runs the development engine and the simulated TEE, and says
        # so in its claims: the policy accepts exactly what it declares.
        accepted = frozenset(self.server.service.insecure)
        return dataclasses.replace(pinned, **{"insecure_accept_service": accepted, **changes})

    def verifier(self, policy: Policy | None = None, **kwargs: Any) -> Verifier:
        return Verifier(
            StaticCollateral(self.simulator),
            policy=policy or self.policy(),
            insecure_root_ca_der=self.simulator.root_ca_der,
            **kwargs,
        )

    def plain_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, verify=False, timeout=30.0)

    async def load_model(self, name: str = "tiny") -> dict[str, Any]:
        async with self.plain_client() as client:
            response = await client.post(
                "/v1/models/load",
                json={"model": name},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert response.status_code in (200, 202), response.text
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status: dict[str, Any] = (await client.get("/v1/models/status")).json()
                if status["proxy_status"] == "ready" and status["loaded_model"] == name:
                    return status
                assert status["proxy_status"] != "error", status
                await asyncio.sleep(0.05)
        raise AssertionError(f"{name} never became ready")


def server_settings(tmp: Path) -> EnclaveSettings:
    (tmp / "models" / "tiny").mkdir(parents=True)
    (tmp / "models" / "tiny" / "config.json").write_text('{"architectures": ["Fake"]}')
    (tmp / "models" / "models.toml").write_text('[models.other]\npath = "tiny"\n')
    return local_settings(
        tmp, load_token=TOKEN, engine_flags=("--dev-load-seconds", "0.1"), shutdown_grace_seconds=5
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    tmp = tmp_path_factory.mktemp("client-server")
    simulator = Simulator.create()
    async with serve_locally(server_settings(tmp), simulator=simulator) as server:
        assert server.bound_port is not None
        running = Running(server, simulator, server.bound_port, tmp)
        await running.load_model()
        yield running


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in this loop; yield its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()
