"""The Redis replay store against a real redis-server: SET NX EX semantics, the TTL, the
password, and failing closed when the server is gone."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest
import redis.asyncio

from enclave.gateway import RedisReplayStore, ReplayStoreUnavailableError
from tests.integration.replicas._redis import redis_server


async def test_first_time_true_then_false_with_the_ttl(tmp_path: Path) -> None:
    with redis_server(tmp_path) as server:
        store = RedisReplayStore(server.url, prefix="t:")
        key = secrets.token_bytes(16)
        assert await store.seen_or_add(key, 61.2) is True
        assert await store.seen_or_add(key, 61.2) is False
        assert await store.seen_or_add(secrets.token_bytes(16), 61.2) is True
        raw = redis.asyncio.Redis.from_url(server.url)
        ttl = await raw.ttl(b"t:" + key.hex().encode())
        assert 60 <= ttl <= 62  # rounded up, never shorter than asked
        assert await raw.dbsize() == 2
        await raw.aclose()
        await store.aclose()


async def test_password_from_settings_and_refusal_without_it(tmp_path: Path) -> None:
    password = secrets.token_hex(16)
    with redis_server(tmp_path, password=password) as server:
        good = RedisReplayStore(server.url, password=password)
        assert await good.seen_or_add(b"k" * 16, 5) is True
        bad = RedisReplayStore(server.url, password="wrong-" + password)
        with pytest.raises(ReplayStoreUnavailableError):
            await bad.seen_or_add(b"j" * 16, 5)
        none = RedisReplayStore(server.url)
        with pytest.raises(ReplayStoreUnavailableError):
            await none.seen_or_add(b"j" * 16, 5)
        for store in (good, bad, none):
            await store.aclose()


async def test_unreachable_server_fails_closed(tmp_path: Path) -> None:
    with redis_server(tmp_path) as server:
        store = RedisReplayStore(server.url, timeout_seconds=0.5)
        assert await store.seen_or_add(b"a" * 16, 5) is True
        server.stop()
        with pytest.raises(ReplayStoreUnavailableError):
            await store.seen_or_add(b"b" * 16, 5)
        with pytest.raises(ReplayStoreUnavailableError):
            await store.ping()
        await store.aclose()


def test_urls_with_credentials_or_other_schemes_are_refused() -> None:
    for url in ("redis://user:pw@127.0.0.1:6379", "redis://:pw@127.0.0.1", "http://x", "redis://"):
        with pytest.raises(ValueError, match="replay_store") as caught:
            RedisReplayStore(url)
        assert "pw" not in str(caught.value)


async def test_a_burst_above_the_pool_size_waits_for_a_connection(tmp_path: Path) -> None:
    """More requests at once than connections (the gateway admits max_concurrent_streams, 256
    by default): each waits for a free connection; none is refused. redis-py's plain pool
    raised MaxConnectionsError past 100, which refused them (503)."""
    with redis_server(tmp_path) as server:
        store = RedisReplayStore(server.url, max_connections=16, timeout_seconds=5)
        keys = [secrets.token_bytes(16) for _ in range(300)]
        results = await asyncio.gather(*(store.seen_or_add(key, 30) for key in keys))
        assert all(results)
        assert not any(await asyncio.gather(*(store.seen_or_add(key, 30) for key in keys)))
        await store.aclose()
