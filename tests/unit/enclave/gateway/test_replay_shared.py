"""The gateway over a shared replay store (replicas): a replay sent to another gateway holding
the same keys is refused; the store sees only a keyed hash of ``enc``; a store that cannot
answer refuses the request (503, typed) and the inner app is never reached; a gateway with no
key refuses with ``ohttp_key_unavailable``."""

from __future__ import annotations

import hashlib
import json

from starlette.applications import Starlette

from enclave.gateway import (
    GatewayLimits,
    OhttpGateway,
    ReplayStoreUnavailableError,
    gateway_routes,
)
from enclave.protocol.chunked import ChunkedRequestDecoder
from enclave.protocol.ohttp import KeyStore, generate_default_key_configs
from tests.unit.enclave.gateway.conftest import (
    InnerState,
    Recorder,
    build_inner_app,
    call,
    chunked_body,
    inner_request,
    now,
    whole_body,
)


class DictStore:
    """An in-process stand-in for Redis: SET NX semantics, the TTLs asked recorded."""

    def __init__(self) -> None:
        self.held: dict[bytes, float] = {}
        self.down = False

    async def seen_or_add(self, key: bytes, ttl_seconds: float) -> bool:
        if self.down:
            raise ReplayStoreUnavailableError
        if key in self.held:
            return False
        self.held[key] = ttl_seconds
        return True

    async def aclose(self) -> None:
        return None


def replica(store: KeyStore, shared: DictStore, **limits: float) -> tuple[Starlette, InnerState]:
    gateway = OhttpGateway(
        store, limits=GatewayLimits(**limits), observer=Recorder(), replay_store=shared
    )
    state = InnerState()
    app = Starlette(routes=[*gateway_routes(gateway), *build_inner_app(state).routes])
    gateway.set_app(app)
    return app, state


def same_keys() -> tuple[KeyStore, KeyStore]:
    keys = generate_default_key_configs()
    return KeyStore(keys), KeyStore(keys)


async def test_a_replay_to_another_replica_is_refused() -> None:
    shared = DictStore()
    first_keys, second_keys = same_keys()
    first, _ = replica(first_keys, shared)
    second, second_state = replica(second_keys, shared)
    for make in (chunked_body, whole_body):
        body, _ = make(
            first_keys.active_configs[0], inner_request(payload={"events": 1}, date=now())
        )
        content_type = (
            b"message/ohttp-chunked-req" if make is chunked_body else b"message/ohttp-req"
        )
        assert (await call(first, body, content_type=content_type)).status == 200
        replayed = await call(second, body, content_type=content_type)
        assert (replayed.status, replayed.body) == (400, b"bad request\n")
    assert second_state.produced == 0
    assert len(shared.held) == 2


async def test_the_store_sees_a_keyed_hash_only_with_the_window_ttl() -> None:
    shared = DictStore()
    keys, _ = same_keys()
    app, _ = replica(keys, shared, replay_window_seconds=30.0)
    body, _ = chunked_body(keys.active_configs[0], inner_request(payload={"events": 1}, date=now()))
    assert (await call(app, body)).status == 200
    decoder = ChunkedRequestDecoder(keys)
    decoder.feed(body)
    enc = decoder.enc
    assert enc is not None
    ((key, ttl),) = shared.held.items()
    assert len(key) == 16
    assert enc[:16] not in key
    assert key not in enc
    assert key not in (
        hashlib.sha256(enc).digest()[:16],
        hashlib.blake2b(enc, digest_size=16).digest(),
    )
    assert 30.0 < ttl <= 61.0  # the window, plus at most how far ahead the Date is, plus 1 s
    # Another key holder with *other* keys computes another hash for the same bytes: the hash
    # depends on the private key, so only replicas holding it can compute or test one.
    other_shared = DictStore()
    other, _ = replica(KeyStore(generate_default_key_configs()), other_shared)
    await call(other, body)  # unknown key: never reaches the store
    assert other_shared.held == {}


async def test_a_future_date_keeps_the_entry_longer() -> None:
    shared = DictStore()
    keys, _ = same_keys()
    app, _ = replica(keys, shared, replay_window_seconds=30.0)
    body, _ = chunked_body(
        keys.active_configs[0], inner_request(payload={"events": 1}, date=now() + 20)
    )
    assert (await call(app, body)).status == 200
    (ttl,) = shared.held.values()
    assert 49.0 < ttl <= 51.5


async def test_an_unreachable_store_refuses_and_never_reaches_the_app() -> None:
    shared = DictStore()
    shared.down = True
    keys, _ = same_keys()
    app, state = replica(keys, shared)
    body, _ = chunked_body(keys.active_configs[0], inner_request(payload={"events": 1}, date=now()))
    out = await call(app, body)
    assert out.status == 503
    assert out.headers[b"retry-after"] == b"1"
    assert json.loads(out.body)["error"]["code"] == "replay_store_unavailable"
    assert state.produced == 0
    shared.down = False  # back: the same request is accepted once, then refused as a replay
    assert (await call(app, body)).status == 200
    assert (await call(app, body)).status == 400


async def test_no_key_refuses_with_ohttp_key_unavailable() -> None:
    keys, _ = same_keys()
    body, _ = chunked_body(keys.active_configs[0], inner_request(payload={"events": 1}, date=now()))
    app, state = replica(KeyStore(), DictStore())
    out = await call(app, body)
    assert out.status == 503
    assert json.loads(out.body)["error"]["code"] == "ohttp_key_unavailable"
    listed = await call(app, b"", method="GET", path="/.well-known/ohttp-keys")
    assert listed.status == 503
    assert json.loads(listed.body)["error"]["code"] == "ohttp_key_unavailable"
    assert state.produced == 0
