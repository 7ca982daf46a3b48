"""Fixtures for the route tests: a real Service and ModelManager whose engine process is
replaced by a no-op, and whose engine client is a scripted fake engine (handlers answer
``httpx.Request`` with ``httpx.Response``, stream, stall and fail on command; httpx errors
become the engine hop's errors, as the real client raises them). The real client is tested
against real sockets in tests/unit/enclave/engine and end to end in tests/integration."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from enclave.app import build_app
from enclave.engine import EngineError, EngineTimeoutError
from enclave.service import Service
from enclave.settings import EnclaveSettings, ServiceSettings
from model_manager import EngineEndpoint, ModelManager, ModelManagerSettings, ModelSpec

MODEL = "tiny"
METRICS_TOKEN = "unit-metrics-token-3f9a0c7e1d5b82"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}
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

    async def wait_down(self) -> str:
        return f"exit code {await self.wait_exit()}"

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

    def client(self, endpoint: EngineEndpoint) -> FakeEngineClient:
        return FakeEngineClient(self, endpoint.base_url)


class FakeEngineClient:
    """The engine hop's client interface over :class:`FakeEngine`."""

    def __init__(self, engine: FakeEngine, base_url: str) -> None:
        self._engine = engine
        self._base_url = base_url

    async def post(
        self, path: str, body: bytes, headers: Iterable[tuple[str, str]]
    ) -> FakeEngineResponse:
        request = httpx.Request("POST", self._base_url + path, headers=list(headers), content=body)
        with _engine_errors():
            return FakeEngineResponse(await self._engine.handle(request))

    async def aclose(self) -> None:
        return None


class FakeEngineResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks = response.aiter_raw()
        self.status = response.status_code

    def header(self, name: str) -> str | None:
        return self._response.headers.get(name)

    async def read(self, timeout: float | None = None) -> bytes:
        with _engine_errors():
            try:
                async with asyncio.timeout(timeout):
                    return await anext(self._chunks)
            except StopAsyncIteration:
                return b""
            except TimeoutError as exc:
                raise EngineTimeoutError("the engine sent nothing in time") from exc

    async def aclose(self) -> None:
        await self._response.aclose()


@contextlib.contextmanager
def _engine_errors() -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        raise EngineTimeoutError("timeout") from exc
    except httpx.HTTPError as exc:
        raise EngineError("failed") from exc


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
