"""Fixtures for the route tests: a real Service and ModelManager whose engine process is
replaced by a no-op, and whose engine HTTP client talks to a scripted fake engine
(``httpx.MockTransport``) that can stream, stall and fail on command."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from enclave.app import build_app
from enclave.service import Service
from enclave.settings import EnclaveSettings, ServiceSettings
from model_manager import EngineEndpoint, ModelManager, ModelManagerSettings, ModelSpec

MODEL = "tiny"
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class NoEngine:
    """Stands in for the engine process: starts at once, exits when stopped or crashed."""

    def __init__(self) -> None:
        self.exited = asyncio.Event()
        self.code = 0

    @property
    def pid(self) -> int | None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.exited.set()

    async def wait_exit(self) -> int:
        await self.exited.wait()
        return self.code

    def log_tail(self) -> list[str]:
        return []


class FakeEngine:
    """The scripted engine: ``handler`` answers each request; every request is recorded."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []
        self.handler: Handler = self._default
        self.closed = asyncio.Event()

    async def _default(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"ok": True})

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(await request.aread())
        response = await self.handler(request)
        if isinstance(response.stream, httpx.ByteStream):
            # Like a real transport: the body arrives as a stream, not preloaded.
            return httpx.Response(
                response.status_code, headers=response.headers, content=_once(response.content)
            )
        return response

    def client(self, endpoint: EngineEndpoint) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.MockTransport(self.handle), base_url=endpoint.base_url
        )


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def sse_response(
    events: AsyncIterator[bytes], headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(
        200,
        headers={"content-type": "text/event-stream; charset=utf-8", **(headers or {})},
        content=events,
    )


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    model = tmp_path / "models" / MODEL
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\x00" * 64)
    return tmp_path / "models"


@pytest.fixture
def make_settings(tmp_path: Path, models_dir: Path) -> Callable[..., EnclaveSettings]:
    def factory(**service: Any) -> EnclaveSettings:
        manager = ModelManagerSettings(
            models_dir=models_dir,
            roothash_dir=tmp_path / "roothash",
            state_dir=tmp_path / "state",
            run_dir=tmp_path / "run",
            insecure_dev_mode=True,
        )
        return EnclaveSettings(service=ServiceSettings(**service), model_manager=manager)

    return factory


class Harness:
    """A started service with its app, fake engine and an ASGI client."""

    def __init__(self, service: Service, app: Starlette, engine: FakeEngine) -> None:
        self.service = service
        self.app = app
        self.engine = engine
        self.engines: list[NoEngine] = []
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://enclave.test"
        )

    async def load(self) -> None:
        self.service.manager.load(MODEL)
        await self.service.manager.wait_status("ready", timeout=5)

    async def unload(self) -> None:
        self.service.manager.unload(MODEL)
        await self.service.manager.wait_status("idle", timeout=5)


@pytest.fixture
async def make_harness(
    make_settings: Callable[..., EnclaveSettings],
) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    made: list[Harness] = []

    async def factory(**service_settings: Any) -> Harness:
        settings = make_settings(**service_settings)
        engine = FakeEngine()
        engines: list[NoEngine] = []

        def engine_factory(spec: ModelSpec, on_progress: Callable[[float], None]) -> NoEngine:
            process = NoEngine()
            engines.append(process)
            return process

        manager = ModelManager(settings.model_manager, engine_factory=engine_factory)
        service = Service(settings, manager=manager, engine_client_factory=engine.client)
        harness = Harness(service, build_app(service), engine)
        harness.engines = engines
        await service.start()
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        await harness.client.aclose()
        await harness.service.aclose()
