"""The cost of the service on the streaming path. Prints figures and ratios; asserts nothing.

Drives the development engine at full speed (no pacing) and compares, side by side in one run:
(a) clients straight to the engine (its Unix socket), (b) through the service over RA-TLS,
(c) through the service with chunked OHTTP (X-Wing, AES-256-GCM; client crypto included), at
1, 16 and 64 concurrent streams: tokens per second, median time to first token, and the ratios
(b)/(a) and (c)/(b). Targets: encryption costs at most 10% of the plaintext path's throughput
((c)/(b) >= 0.9), and the service adds at most 1 ms at the median to time to first token.

The three paths are run in turn, round by round, so a load that comes and goes falls on all.
The service runs as its own process (``enclave serve``, simulated TEE); this process is the
load generator. On a 2-core machine the two compete for CPU: read ratios, not absolutes.

Run: python3 bench/bench_service.py [--rounds 3] [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enclave.protocol import bhttp
from enclave.protocol.chunked import ChunkedRequestEncoder
from enclave.protocol.ohttp import KeyConfig, decode_key_configs

TOKEN = "bench-token-3c8e1f0a9d7b2e5c4a6f"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def chat_body(tokens: int) -> dict[str, object]:
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": "benchmark the streaming path"}],
        "stream": True,
        "max_tokens": tokens,
        "ignore_eos": True,  # vLLM's extension: exactly max_tokens tokens, as a long answer has
    }


def count_tokens(buffer: bytearray) -> int:
    """Consume complete SSE events from ``buffer``; return how many carried content."""
    count = 0
    while (end := buffer.find(b"\n\n")) >= 0:
        event = bytes(buffer[:end])
        del buffer[: end + 2]
        if event.startswith(b"data: {") and b'"content"' in event:
            count += 1
    return count


async def plain_stream(client: httpx.AsyncClient, body: dict[str, object]) -> tuple[int, float]:
    start = time.perf_counter()
    first = 0.0
    tokens = 0
    pending = bytearray()
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for piece in response.aiter_raw():
            pending += piece
            got = count_tokens(pending)
            if got and not tokens:
                first = time.perf_counter() - start
            tokens += got
    return tokens, first


async def ohttp_stream(
    client: httpx.AsyncClient, config: KeyConfig, body: dict[str, object]
) -> tuple[int, float]:
    start = time.perf_counter()
    request = bhttp.Request(
        b"POST",
        b"https",
        b"enclave",
        b"/v1/chat/completions",
        headers=(
            (b"content-type", b"application/json"),
            (b"date", formatdate(time.time(), usegmt=True).encode()),
        ),
        content=json.dumps(body).encode(),
    )
    encoder = ChunkedRequestEncoder(config)
    wire = encoder.header + encoder.seal_chunk(
        bhttp.encode_request(request, indeterminate=True), final=True
    )
    decoder = encoder.response_decoder()
    inner = bhttp.ResponseDecoder()
    first = 0.0
    tokens = 0
    pending = bytearray()
    async with client.stream(
        "POST",
        "/.well-known/ohttp-gateway",
        content=wire,
        headers={"content-type": "message/ohttp-chunked-req"},
    ) as response:
        async for piece in response.aiter_raw():
            for plaintext in decoder.feed(piece):
                for event in inner.feed(plaintext):
                    if isinstance(event, bhttp.BodyChunk):
                        pending += event.data
            got = count_tokens(pending)
            if got and not tokens:
                first = time.perf_counter() - start
            tokens += got
    decoder.finish()
    return tokens, first


async def run_level(
    one: Callable[[], Awaitable[tuple[int, float]]], streams: int
) -> tuple[float, float]:
    """(tokens per second overall, median time to first token in ms)."""
    start = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(streams)))
    elapsed = time.perf_counter() - start
    tokens = sum(count for count, _ in results)
    return tokens / elapsed, statistics.median(first for _, first in results) * 1e3


async def bench(port: int, engine_socket: Path, rounds: int, tokens: int) -> None:
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    timeout = httpx.Timeout(120.0)
    engine = httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(engine_socket), limits=limits),
        base_url="http://localhost",
        timeout=timeout,
    )
    service = httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{port}", verify=False, limits=limits, timeout=timeout
    )
    body = chat_body(tokens)
    async with engine, service:
        configs = decode_key_configs((await service.get("/.well-known/ohttp-keys")).content)
        xwing = configs[0]
        paths: dict[str, Callable[[], Awaitable[tuple[int, float]]]] = {
            "a engine": lambda: plain_stream(engine, body),
            "b RA-TLS": lambda: plain_stream(service, body),
            "c OHTTP": lambda: ohttp_stream(service, xwing, body),
        }
        for warm in paths.values():  # connections, caches
            await run_level(warm, 4)
        print(f"{tokens} tokens per stream, best of {rounds} rounds")
        print("TTFT = median time to first token; the engine runs unpaced")
        for streams in (1, 16, 64):
            best: dict[str, tuple[float, float]] = {}
            for _ in range(rounds):
                for name, one in paths.items():
                    rate, ttft = await run_level(one, streams)
                    old = best.get(name)
                    best[name] = (max(rate, old[0]), min(ttft, old[1])) if old else (rate, ttft)
            print(f"-- {streams} concurrent streams")
            for name, (rate, ttft) in best.items():
                print(f"   {name:<9} {rate:9.0f} tokens/s   TTFT {ttft:7.2f} ms")
            (ra, ta), (rb, tb), (rc, tc) = best["a engine"], best["b RA-TLS"], best["c OHTTP"]
            print(
                f"   (b)/(a) throughput {rb / ra:.2f}x, TTFT +{tb - ta:.2f} ms;"
                f"   (c)/(b) throughput {rc / rb:.2f}x (target >= 0.90), TTFT +{tc - tb:.2f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "models" / "tiny").mkdir(parents=True)
        (tmp / "models" / "tiny" / "config.json").write_text("{}")
        port = free_port()
        engine = (
            f"{sys.executable} -m enclave_dev.engine --dev-load-seconds 0.2"
            " --dev-tokens-per-second 0"
        )
        command = [
            sys.executable, "-m", "enclave", "serve", "--tee", "simulated",
            "--insecure-allow-simulated-tee", "--host", "127.0.0.1", "--port", str(port),
            "--models-dir", str(tmp / "models"), "--state-dir", str(tmp / "state"),
            "--run-dir", str(tmp / "run"), "--roothash-dir", str(tmp / "rh"),
            "--engine-command", engine, "--service-log-level", "WARNING", "--insecure-dev-engine",
        ]  # fmt: skip
        env = {**os.environ, "LOAD_TOKEN": TOKEN, "ENCLAVE_INSECURE_DEV_ENGINE": "1"}
        server = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        try:
            with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=False) as client:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        client.get("/health")
                        break
                    except httpx.TransportError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
                client.post(
                    "/v1/models/load",
                    json={"model": "tiny"},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ).raise_for_status()
                while client.get("/v1/models/status").json()["proxy_status"] != "ready":
                    time.sleep(0.1)
            asyncio.run(bench(port, tmp / "run" / "engine.sock", args.rounds, args.tokens))
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
