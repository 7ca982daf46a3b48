"""Many concurrent OHTTP streams through the client library (issue 20 point 7). Prints figures
and ratios; asserts nothing.

Every streamed OHTTP response holds one outer RA-TLS connection for as long as it streams, so
the client's connection pool bounds how many streams run at once: with a pool of 10, 200
streams arrive in waves of 10 and the last ones wait for all the waves before them. This runs
the same N streams side by side in one run, (a) with a pool of ``--before`` connections (the old
default, 10) and (b) with the transport's default pool, against one in-process service
(simulated TEE, the development engine paced at ``--tokens-per-second``), and prints time to
first token p50/p99 and the ratio. Client and service share this process's CPU: read ratios.

Run: python3 bench/bench_client_pool.py [--streams 200] [--tokens 16] [--tokens-per-second 16]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enclave.client import AsyncOhttpTransport, AsyncRaTlsTransport
from enclave_dev.local import local_settings, serve_locally
from enclave_dev.tee import Simulator
from tests.integration.client.conftest import TOKEN, Running


def _settings(tmp: Path, tokens_per_second: float, streams: int) -> object:
    (tmp / "models" / "tiny").mkdir(parents=True)
    (tmp / "models" / "tiny" / "config.json").write_text("{}")
    return local_settings(
        tmp,
        load_token=TOKEN,
        engine_flags=(
            "--dev-load-seconds",
            "0.1",
            "--dev-tokens-per-second",
            str(tokens_per_second),
        ),
        max_concurrent_streams=max(256, streams),
        max_connections_per_address=max(256, 2 * streams),
    )


async def _stream(client: httpx.AsyncClient, tokens: int) -> tuple[float, float]:
    """(seconds to the first content event, seconds to the end)."""
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "many streams at once"}],
        "stream": True,
        "max_tokens": tokens,
        "ignore_eos": True,  # exactly max_tokens tokens, paced
    }
    start = time.perf_counter()
    first = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200, response.status_code
        async for piece in response.aiter_raw():
            if first is None and b'"content"' in piece:
                first = time.perf_counter() - start
    end = time.perf_counter() - start
    return (end if first is None else first), end


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _level(
    transport: AsyncOhttpTransport, url: str, streams: int, tokens: int
) -> list[float]:
    async with httpx.AsyncClient(transport=transport, base_url=url, timeout=300) as client:
        await _stream(client, tokens)  # verification, keys
        results = await asyncio.gather(*(_stream(client, tokens) for _ in range(streams)))
    return [first for first, _ in results]


async def bench(streams: int, tokens: int, tokens_per_second: float, before: int) -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        simulator = Simulator.create()
        settings = _settings(tmp, tokens_per_second, streams)
        async with serve_locally(settings, simulator=simulator) as server:  # type: ignore[arg-type]
            running = Running(server, simulator, server.bound_port or 0, tmp)
            await running.load_model()
            paths: dict[str, Callable[[], AsyncOhttpTransport]] = {
                f"(a) pool of {before}": lambda: AsyncOhttpTransport(
                    running.url,
                    running.verifier(),
                    outer_transport=AsyncRaTlsTransport(running.verifier(), max_connections=before),
                ),
                "(b) default pool": lambda: AsyncOhttpTransport(running.url, running.verifier()),
            }
            print(
                f"{streams} concurrent OHTTP streams, {tokens} tokens each at "
                f"{tokens_per_second:g} tokens/s "
                f"(one stream alone: {tokens / tokens_per_second:.1f} s)"
            )
            figures: dict[str, float] = {}
            for label, make in paths.items():
                firsts = await _level(make(), running.url, streams, tokens)
                p50, p99 = statistics.median(firsts), _percentile(firsts, 0.99)
                figures[label] = p50
                print(f"   {label:<16} TTFT p50 {p50:7.2f} s   p99 {p99:7.2f} s")
            (_, slow), (_, fast) = figures.items()
            print(f"   p50 ratio (a)/(b): {slow / fast:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--tokens-per-second", type=float, default=16.0)
    parser.add_argument("--before", type=int, default=10, help="the old pool size")
    args = parser.parse_args()
    asyncio.run(bench(args.streams, args.tokens, args.tokens_per_second, args.before))


if __name__ == "__main__":
    main()
