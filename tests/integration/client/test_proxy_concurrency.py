"""Issue 20 point 7: the proxy does not serialise streams. Each streamed OHTTP answer holds one
outer RA-TLS connection while it streams, so a pool of 10 made 30 streams through the proxy
arrive in waves of 10. Deterministic check, real proxy and service, the development engine
pacing each answer over seconds: every stream gets its first token before any stream ends
(with the old pool of 10 the 11th cannot start before the 1st ends, shown below too)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from enclave.client import AsyncOhttpTransport, AsyncRaTlsTransport
from enclave.client._proxy import build_proxy_app
from enclave.client._ratls import DEFAULT_MAX_CONNECTIONS
from tests.integration.client.conftest import Running, serve

pytestmark = pytest.mark.asyncio(loop_scope="module")

STREAMS = 30
#: At the development engine's 50 tokens/s, each answer streams for about 4 s.
BODY = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "stream with the others"}],
    "stream": True,
    "max_tokens": 200,
    "ignore_eos": True,
}


async def _stream(client: httpx.AsyncClient, url: str) -> tuple[float, float]:
    """(when the first content event came, when the answer ended), monotonic seconds."""
    first = None
    async with client.stream("POST", url + "/v1/chat/completions", json=BODY) as response:
        assert response.status_code == 200
        async for piece in response.aiter_raw():
            if first is None and b'"content"' in piece:
                first = time.monotonic()
    assert first is not None
    return first, time.monotonic()


async def _through_the_proxy(transport: AsyncOhttpTransport) -> list[tuple[float, float]]:
    limits = httpx.Limits(max_connections=STREAMS, max_keepalive_connections=STREAMS)
    async with (
        serve(build_proxy_app(transport)) as url,
        httpx.AsyncClient(timeout=120, limits=limits) as client,
    ):
        await _stream(client, url)  # verified, keys fetched
        return await asyncio.gather(*(_stream(client, url) for _ in range(STREAMS)))


async def test_thirty_streams_all_start_before_any_ends(running: Running) -> None:
    assert running.server.settings.service.max_concurrent_streams <= DEFAULT_MAX_CONNECTIONS
    times = await _through_the_proxy(AsyncOhttpTransport(running.url, running.verifier()))
    last_first = max(first for first, _ in times)
    first_end = min(end for _, end in times)
    assert last_first < first_end, f"the last stream started {last_first - first_end:.2f}s late"


async def test_a_pool_of_ten_makes_waves(running: Running) -> None:
    """The check above can fail: with the old pool of 10 the 11th stream waits for an end."""
    outer = AsyncRaTlsTransport(running.verifier(), max_connections=10)
    transport = AsyncOhttpTransport(running.url, running.verifier(), outer_transport=outer)
    times = await _through_the_proxy(transport)
    firsts = sorted(first for first, _ in times)
    first_end = min(end for _, end in times)
    assert firsts[10] > first_end  # waves of 10
