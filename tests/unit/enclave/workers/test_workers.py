"""The parts of the data-plane workers that run without processes: the channel, the owner's
replay set, a worker's replay store over the channel, the metrics merge, the state sent."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest

from enclave.gateway._replay import ReplayStoreUnavailableError
from enclave.protocol.ohttp import KeyStore, generate_default_key_configs
from enclave.settings import load_settings
from enclave.workers._channel import Channel, ChannelClosedError
from enclave.workers._metrics import merge_expositions
from enclave.workers._owner import OwnerReplaySet
from enclave.workers._state import (
    dump_keys,
    dump_settings,
    dump_status,
    load_keys,
    load_settings_values,
    load_status,
)
from enclave.workers._worker import OwnerReplayStore, share
from model_manager import ModelStatus
from model_manager.digests import ModelDigest
from model_manager.status import StatusError


async def channel_pair(left: Any = None, right: Any = None) -> tuple[Channel, Channel]:
    async def nothing(_: dict[str, Any]) -> dict[str, Any] | None:
        return None

    a, b = socket.socketpair()
    first, second = Channel(a, left or nothing), Channel(b, right or nothing)
    await first.start()
    await second.start()
    return first, second


async def test_requests_are_answered_and_notifications_keep_their_order() -> None:
    seen: list[int] = []

    async def answer(message: dict[str, Any]) -> dict[str, Any] | None:
        if message["op"] == "add":
            return {"sum": message["a"] + message["b"]}
        seen.append(message["n"])
        return None

    owner, worker = await channel_pair(right=answer)
    for n in range(50):
        owner.notify("note", n=n)
    assert (await owner.call("add", 5, a=2, b=1))["sum"] == 3
    assert seen == list(range(50))
    await owner.aclose()
    await asyncio.wait_for(worker.closed.wait(), 5)
    await worker.aclose()


async def test_a_call_to_a_closed_peer_fails_and_never_hangs() -> None:
    async def slow(_: dict[str, Any]) -> dict[str, Any] | None:
        await asyncio.sleep(60)
        return None

    owner, worker = await channel_pair(right=slow)
    pending = asyncio.ensure_future(owner.call("replay", 30))
    await asyncio.sleep(0.05)
    await worker.aclose()
    with pytest.raises(ChannelClosedError):
        await pending
    with pytest.raises(ChannelClosedError):
        await owner.call("replay", 30)
    await owner.aclose()


async def test_a_frame_over_the_limit_closes_the_channel() -> None:
    async def nothing(_: dict[str, Any]) -> dict[str, Any] | None:
        return None

    raw, far = socket.socketpair()
    victim = Channel(far, nothing)
    await victim.start()
    raw.sendall(struct.pack(">I", 2**31))
    await asyncio.wait_for(victim.closed.wait(), 5)
    raw.close()
    await victim.aclose()


def test_the_owner_replay_set_admits_once_forgets_late_and_fails_closed_when_full() -> None:
    now = [0.0]
    replay = OwnerReplaySet(2, monotonic=lambda: now[0])
    assert replay.seen_or_add(b"a" * 16, 10.0) is True
    assert replay.seen_or_add(b"a" * 16, 10.0) is False
    assert replay.seen_or_add(b"b" * 16, 10.0) is True
    assert replay.seen_or_add(b"c" * 16, 10.0) is None  # full of live entries: refused
    now[0] = 9.9
    assert replay.seen_or_add(b"a" * 16, 10.0) is False  # still live
    now[0] = 10.0
    assert replay.seen_or_add(b"c" * 16, 10.0) is True  # the old ones expired
    assert replay.seen_or_add(b"a" * 16, 10.0) is True
    assert len(replay) == 2


async def test_a_worker_replay_store_fails_closed() -> None:
    async def owner_side(message: dict[str, Any]) -> dict[str, Any] | None:
        if message["key"] == b"full":
            return {"error": "full"}
        return {"fresh": message["key"] == b"new"}

    worker, owner = await channel_pair(right=owner_side)
    store = OwnerReplayStore(worker)
    assert await store.seen_or_add(b"new", 61.0) is True
    assert await store.seen_or_add(b"old", 61.0) is False
    with pytest.raises(ReplayStoreUnavailableError):
        await store.seen_or_add(b"full", 61.0)
    await owner.aclose()
    await asyncio.wait_for(worker.closed.wait(), 5)
    with pytest.raises(ReplayStoreUnavailableError):  # the owner gone: refused, not accepted
        await store.seen_or_add(b"new", 61.0)
    await worker.aclose()


OWNER = b"""# HELP enclave_http_requests HTTP requests.
# TYPE enclave_http_requests counter
enclave_http_requests_total{route="/v1/models",status="200"} 1.0
# HELP enclave_active_streams Inference requests in flight.
# TYPE enclave_active_streams gauge
enclave_active_streams 0.0
# HELP enclave_model_state 1 for the current state.
# TYPE enclave_model_state gauge
enclave_model_state{state="ready"} 1.0
"""
WORKER = b"""# HELP enclave_model_state 1 for the current state.
# TYPE enclave_model_state gauge
enclave_model_state{state="idle"} 1.0
# HELP enclave_http_requests HTTP requests.
# TYPE enclave_http_requests counter
enclave_http_requests_total{route="/v1/models",status="200"} 5.0
enclave_http_requests_total{route="/v1/chat/completions",status="200"} 2.0
# HELP enclave_active_streams Inference requests in flight.
# TYPE enclave_active_streams gauge
enclave_active_streams 3.0
"""


def test_one_exposition_sums_counters_and_held_gauges_and_names_each_worker() -> None:
    text = merge_expositions(OWNER, [WORKER, WORKER, None], [0, 2, 1]).decode()
    lines = set(text.splitlines())
    assert 'enclave_http_requests_total{route="/v1/models",status="200"} 11.0' in lines
    assert 'enclave_http_requests_total{route="/v1/chat/completions",status="200"} 4.0' in lines
    assert "enclave_active_streams 6.0" in lines  # what each worker holds: summed
    assert 'enclave_model_state{state="ready"} 1.0' in lines  # the owner's
    assert 'enclave_model_state{state="idle"} 1.0' not in lines  # never a worker's copy
    assert 'enclave_data_plane_worker_up{worker="2"} 0.0' in lines
    assert 'enclave_data_plane_worker_restarts_total{worker="1"} 2.0' in lines
    assert 'enclave_data_plane_worker_requests_total{worker="0"} 7.0' in lines
    assert "enclave_data_plane_workers 3.0" in lines
    from prometheus_client.parser import text_string_to_metric_families

    assert {family.name for family in text_string_to_metric_families(text)} >= {
        "enclave_http_requests",
        "enclave_data_plane_worker_requests",
    }


def test_the_state_sent_to_a_worker_round_trips() -> None:
    status = ModelStatus(
        "error",
        "tiny",
        ModelDigest("dm-verity", bytes(range(32)), "/dev/vdb"),
        "failed",
        0.5,
        12.5,
        7,
        restarts=2,
        error=StatusError("engine_exited", "the engine exited"),
        insecure=("insecure_dev_engine",),
        hashing=(1, 2),
    )
    assert load_status(dump_status(status)) == status
    owner = KeyStore(generate_default_key_configs())
    owner.rotate_defaults()  # two active, two retired (accepted, not advertised)
    worker = KeyStore()
    active, accepted = load_keys(dump_keys(owner))
    worker.replace(active, accepted)
    assert worker.ohttp_keys() == owner.ohttp_keys()
    assert sorted(worker.key_ids) == sorted(owner.key_ids)
    for key_id in owner.key_ids:
        assert (
            worker.lookup(key_id).private_key.private_bytes()
            == owner.lookup(key_id).private_key.private_bytes()
        )
    settings = load_settings({"port": 9443, "load_token": "a-load-token-of-enough-chars-123"})
    again = load_settings_values(dump_settings(settings))
    assert again == settings
    assert again.model_manager.load_token is not None


def test_a_worker_share_rounds_up() -> None:
    assert share(256, 2) == 128
    assert share(255, 2) == 128
    assert share(1, 4) == 1
    assert share(100, 3, minimum=50) == 50


def test_a_worker_starts_from_the_owners_reference_time() -> None:
    """A worker restarted after the wall clock was stepped back reads the owner's reference
    time, so a request dated in the owner's past stays stale (the owner may have forgotten it)."""
    from enclave.gateway._replay import Admission, ReplayCache

    owner_reference = 10_000.0
    stepped_back = [owner_reference - 230.0]  # the host set the clock back
    fresh_worker = ReplayCache(60.0, 16, lambda: stepped_back[0], lambda: 0.0)
    old_date = owner_reference - 200.0  # within the window of the stepped-back clock
    assert fresh_worker.admit(b"probe", old_date) is Admission.FRESH  # what it would accept
    worker = ReplayCache(60.0, 16, lambda: stepped_back[0], lambda: 0.0)
    worker.hold_at_least(owner_reference)
    assert worker.reference() >= owner_reference
    assert worker.admit(b"captured", old_date) is Admission.STALE
