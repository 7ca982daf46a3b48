"""What hostile clients cost the service, with the front door's BodyGuard and without it.
Prints figures; asserts nothing.

1. Slow bodies: ``--attackers`` TLS connections send request headers, then one body byte every
   0.5 s, two thirds to the chat route and one third to the OHTTP gateway; meanwhile
   ``--normal`` plain chat requests and as many OHTTP chat requests are made, one at a time.
   Printed: the statuses the normal requests got.
2. Large bodies: ``--big`` concurrent 31 MiB bodies to the chat route; printed: statuses and
   the service process's RSS growth (before, peak while they run, and after).

The service runs as its own process (``enclave serve``, simulated TEE, development engine,
``--max-concurrent-streams`` ``--streams``), twice: as shipped, then with ``BodyGuard``
replaced by the bare app (as before issue 12). The connection caps stay on (defaults).

Run: python3 bench/bench_hostile.py [--attackers 60] [--streams 32] [--normal 8] [--big 16]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from enclave.protocol import bhttp  # noqa: E402
from enclave.protocol.ohttp import decode_key_configs  # noqa: E402
from tests.integration.server._raw import RawClient  # noqa: E402
from tests.integration.server.conftest import TOKEN, chat_request, encapsulate, post_ohttp  # noqa: E402
from tests.integration.server.test_serve_process import free_port, serve_command  # noqa: E402

_BARE = (
    "import sys, enclave.server as s; s.BodyGuard = lambda app, limits: app; "
    "from enclave.cli import main; sys.exit(main(sys.argv[1:]))"
)


async def slow_body(port: int, path: str, media: str, stop: asyncio.Event) -> None:
    with contextlib.suppress(Exception):
        client = await RawClient.open(port)
        try:
            await client.head(path, media, 100_000)
            while not stop.is_set():
                await client.send(b" ")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
        finally:
            await client.aclose()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def ready(client: httpx.AsyncClient) -> None:
    async with asyncio.timeout(90):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/health")).status_code == 200:
                    break
            await asyncio.sleep(0.2)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        await client.post("/v1/models/load", json={"model": "tiny"}, headers=auth)
        while (await client.get("/v1/models/status")).json()["proxy_status"] != "ready":
            await asyncio.sleep(0.1)


async def run(guarded: bool, args: argparse.Namespace) -> None:
    label = "with BodyGuard" if guarded else "without BodyGuard"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "models" / "tiny").mkdir(parents=True)
        (root / "models" / "tiny" / "config.json").write_text("{}")
        port = free_port()
        command = serve_command(
            root,
            port,
            "--tee",
            "simulated",
            "--insecure-allow-simulated-tee",
            "--max-concurrent-streams",
            str(args.streams),
        )
        if not guarded:
            command[1:3] = ["-c", _BARE]  # python -c CODE serve ...
        env = {**os.environ, "LOAD_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
        service = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            async with httpx.AsyncClient(
                base_url=f"https://127.0.0.1:{port}", verify=False, timeout=120
            ) as client:
                await ready(client)
                await slow_bodies(client, port, label, args)
                await large_bodies(client, service.pid, label, args)
        finally:
            service.terminate()
            service.wait(60)


async def slow_bodies(
    client: httpx.AsyncClient, port: int, label: str, args: argparse.Namespace
) -> None:
    stop = asyncio.Event()
    targets = [
        ("/.well-known/ohttp-gateway", "message/ohttp-req")
        if index % 3 == 0
        else ("/v1/chat/completions", "application/json")
        for index in range(args.attackers)
    ]
    attackers = [asyncio.create_task(slow_body(port, *target, stop)) for target in targets]
    await asyncio.sleep(3)
    plain: collections.Counter[int] = collections.Counter()
    sealed: collections.Counter[str] = collections.Counter()
    config = decode_key_configs((await client.get("/.well-known/ohttp-keys")).content)[0]
    body = json.loads(chat_request("normal").content)
    for _ in range(args.normal):
        plain[(await client.post("/v1/chat/completions", json=body)).status_code] += 1
        message, decoder = encapsulate(config, chat_request("normal"))
        result = await post_ohttp(client, message, decoder)
        inner = bhttp.decode_response(result.plaintext).status if result.complete else "-"
        sealed[f"{result.status}/{inner}"] += 1
    stop.set()
    await asyncio.gather(*attackers)
    print(f"slow bodies ({args.attackers} attackers, {args.streams} slots), {label}:")
    print(f"  plain chat statuses: {dict(plain)}")
    print(f"  OHTTP outer/inner statuses: {dict(sealed)}")


async def large_bodies(
    client: httpx.AsyncClient, pid: int, label: str, args: argparse.Namespace
) -> None:
    big = b'{"model": "tiny", "pad": "' + b"x" * (31 * 1024 * 1024) + b'"}'
    before = peak = rss_mib(pid)

    async def one() -> int:
        with contextlib.suppress(httpx.HTTPError):
            response = await client.post(
                "/v1/chat/completions", content=big, headers={"content-type": "application/json"}
            )
            return response.status_code
        return 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_mib(pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    statuses = collections.Counter(await asyncio.gather(*(one() for _ in range(args.big))))
    sampler.cancel()
    await asyncio.sleep(1)
    after = rss_mib(pid)
    print(f"large bodies ({args.big} x 31 MiB at once), {label}:")
    print(f"  statuses: {dict(statuses)}")
    print(
        f"  service RSS: {before:.0f} MiB before, peak {peak:.0f} (+{peak - before:.0f}), "
        f"{after:.0f} after"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--attackers", type=int, default=60)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--normal", type=int, default=8)
    parser.add_argument("--big", type=int, default=16)
    args = parser.parse_args()
    for guarded in (False, True):
        asyncio.run(run(guarded, args))


if __name__ == "__main__":
    main()
