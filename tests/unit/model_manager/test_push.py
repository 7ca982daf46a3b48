"""Status push to a local fake management server on 127.0.0.1 (a real HTTP server)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from model_manager.lifecycle import ModelManager
from model_manager.push import StatusPusher

from ._fakes import FakeEngines
from .conftest import SettingsFactory

PUSH_TOKEN = "push-tok-81b2e4"
WAIT = 10.0


@dataclass
class Management:
    url: str
    received: list[dict[str, object]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    fail_next: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, status: str) -> dict[str, object]:
        async with asyncio.timeout(WAIT):
            while True:
                for document in self.received:
                    if document["proxy_status"] == status:
                        return document
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def management() -> AsyncIterator[Management]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    state = Management(url=f"http://127.0.0.1:{port}/fleet/status")

    async def receive(request: Request) -> Response:
        state.auth.append(request.headers.get("authorization"))
        if state.fail_next > 0:
            state.fail_next -= 1
            state.changed.set()
            return Response(status_code=503)
        state.received.append(await request.json())
        state.changed.set()
        return Response(status_code=204)

    app = Starlette(routes=[Route("/fleet/status", receive, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield state
    finally:
        server.should_exit = True
        await task
        sock.close()


async def test_push_on_start_and_on_every_transition(
    make_settings: SettingsFactory, management: Management
) -> None:
    settings = make_settings(
        push_url=management.url, push_token=PUSH_TOKEN, push_interval_seconds=60
    )
    manager = ModelManager(settings, engine_factory=FakeEngines())
    pusher = StatusPusher(settings, manager.status)
    manager.add_hook(pusher.on_transition)
    await manager.start()
    await pusher.start()
    try:
        idle = await management.wait_for("idle")
        assert idle["loaded_model"] is None
        manager.load("tiny")
        ready = await management.wait_for("ready")
        assert ready["loaded_model"] == "tiny"
        assert ready["digest_kind"] == "manifest-sha256"
        assert ready.items() >= manager.status().to_document().items()
        assert ready["push_reason"] == "transition"
        assert idle["push_reason"] == "start"
        assert ready["instance_id"]
        assert ready["boot_id"] == idle["boot_id"]
        # The replica id: the default (host name and a per-process suffix) is the same in
        # every push and in GET /v1/models/status.
        assert ready["replica_id"] == idle["replica_id"] == settings.effective_replica_id
        assert set(management.auth) == {f"Bearer {PUSH_TOKEN}"}
    finally:
        await pusher.aclose()
        await manager.aclose()


async def test_push_failures_back_off_and_the_newest_document_is_sent(
    make_settings: SettingsFactory, management: Management
) -> None:
    settings = make_settings(
        push_url=management.url,
        push_interval_seconds=60,
        push_backoff_initial_seconds=0.05,
        push_backoff_max_seconds=0.1,
    )
    management.fail_next = 2
    manager = ModelManager(settings, engine_factory=FakeEngines())
    pusher = StatusPusher(settings, manager.status)
    manager.add_hook(pusher.on_transition)
    await manager.start()
    await pusher.start()
    try:
        manager.load("tiny")  # never blocked by the failing pushes
        await manager.wait_status("ready", timeout=WAIT)
        await management.wait_for("ready")
        assert pusher.failures == 2
        assert management.auth[0] is None  # no push token configured
    finally:
        await pusher.aclose()
        await manager.aclose()


async def test_periodic_push_with_jitter(
    make_settings: SettingsFactory, management: Management
) -> None:
    settings = make_settings(
        push_url=management.url, push_interval_seconds=0.05, push_jitter_fraction=0.5
    )
    manager = ModelManager(settings, engine_factory=FakeEngines())
    pusher = StatusPusher(settings, manager.status, rng=lambda: 1.0)
    assert pusher._interval() == pytest.approx(0.075)
    await pusher.start()
    try:
        async with asyncio.timeout(WAIT):
            while len(management.received) < 3:
                management.changed.clear()
                await management.changed.wait()
        assert all(document["proxy_status"] == "idle" for document in management.received)
    finally:
        await pusher.aclose()


async def test_unreachable_management_never_blocks_the_lifecycle(
    make_settings: SettingsFactory,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    settings = make_settings(
        push_url=f"http://127.0.0.1:{port}/x",
        push_backoff_initial_seconds=0.05,
        push_backoff_max_seconds=0.1,
    )
    manager = ModelManager(settings, engine_factory=FakeEngines())
    pusher = StatusPusher(settings, manager.status)
    manager.add_hook(pusher.on_transition)
    await manager.start()
    await pusher.start()
    try:
        manager.load("tiny")
        await manager.wait_status("ready", timeout=WAIT)
        async with asyncio.timeout(WAIT):
            while pusher.failures < 2:
                await asyncio.sleep(0.02)
        assert pusher.sent == 0
    finally:
        await pusher.aclose()
        await manager.aclose()


async def test_disabled_without_a_url(make_settings: SettingsFactory) -> None:
    pusher = StatusPusher(make_settings(), ModelManager(make_settings()).status)
    assert not pusher.enabled
    await pusher.start()
    await pusher.aclose()


async def test_the_queue_is_bounded_and_drops_the_oldest(make_settings: SettingsFactory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    settings = make_settings(
        push_url=f"http://127.0.0.1:{port}/x",
        push_queue_size=3,
        push_backoff_initial_seconds=60,
        push_backoff_max_seconds=60,
    )
    manager = ModelManager(settings)
    outcomes: list[str] = []
    pusher = StatusPusher(settings, manager.status, observer=outcomes.append)
    await pusher.start()
    try:
        for _ in range(10):
            await pusher.on_transition(manager.status())  # never waits on the network
        assert pusher.queued == 3
        assert pusher.dropped == outcomes.count("dropped") == 8  # the start push and 7 more
        async with asyncio.timeout(WAIT):
            while "failed" not in outcomes:
                await asyncio.sleep(0.01)
    finally:
        await pusher.aclose()


async def test_push_carries_the_replica_id_setting(
    make_settings: SettingsFactory, management: Management
) -> None:
    settings = make_settings(push_url=management.url, replica_id="replica-b.eu-1")
    manager = ModelManager(settings, engine_factory=FakeEngines())
    pusher = StatusPusher(settings, manager.status)
    await manager.start()
    await pusher.start()
    try:
        idle = await management.wait_for("idle")
        assert idle["replica_id"] == "replica-b.eu-1"
    finally:
        await pusher.aclose()
        await manager.aclose()


def test_a_replica_id_is_a_plain_name(make_settings: SettingsFactory) -> None:
    from pydantic import ValidationError

    for bad in ("", "has space", "x" * 65, "a/b"):
        with pytest.raises(ValidationError):
            make_settings(replica_id=bad)
