"""The engine hop's HTTP client alone: CPU per streamed event of candidate clients.

Starts the development engine (unpaced) on a Unix socket and, for each client in turn (each in
a fresh process, so imports and caches do not mix), reads N concurrent streams of T tokens,
taking every piece as it arrives (as the relay does), and reports the client process's own
CPU time (getrusage) per event. Clients: httpx (as the service configured it before),
aiohttp (if installed), and enclave.engine (httptools' parser under an asyncio protocol); each
under asyncio's default loop and under uvloop.

Run: python3 bench/bench_engine_client.py [--streams 64] [--tokens 256] [--reps 3] [--pace 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BODY = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "benchmark the engine hop"}],
    "stream": True,
    "ignore_eos": True,
}


async def with_httpx(sock: str, streams: int, tokens: int) -> int:
    import httpx

    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=64)
    transport = httpx.AsyncHTTPTransport(uds=sock, limits=limits)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:

        async def one() -> int:
            body = json.dumps({**BODY, "max_tokens": tokens}).encode()
            events = 0
            async with client.stream("POST", "/v1/chat/completions", content=body) as response:
                async for piece in response.aiter_raw():
                    events += piece.count(b"\n\n")
            return events

        return await measure(one, streams)


async def with_aiohttp(sock: str, streams: int, tokens: int) -> int:
    import aiohttp

    connector = aiohttp.UnixConnector(path=sock, limit=streams)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            body = json.dumps({**BODY, "max_tokens": tokens}).encode()
            events = 0
            async with session.post("http://localhost/v1/chat/completions", data=body) as resp:
                while piece := await resp.content.readany():
                    events += piece.count(b"\n\n")
            return events

        return await measure(one, streams)


async def with_enclave(sock: str, streams: int, tokens: int) -> int:
    from enclave.engine import EngineClient

    client = EngineClient(uds=Path(sock), max_connections=streams)

    async def one() -> int:
        body = json.dumps({**BODY, "max_tokens": tokens}).encode()
        events = 0
        response = await client.post(
            "/v1/chat/completions", body, [("content-type", "application/json")]
        )
        try:
            while piece := await response.read():
                events += piece.count(b"\n\n")
        finally:
            await response.aclose()
        return events

    try:
        return await measure(one, streams)
    finally:
        await client.aclose()


async def measure(one, streams: int) -> int:  # type: ignore[no-untyped-def]
    await asyncio.gather(*(one() for _ in range(streams)))  # warm: connections, imports
    global CPU_BEFORE
    CPU_BEFORE = cpu()
    results = await asyncio.gather(*(one() for _ in range(streams)))
    return sum(results)


CPU_BEFORE = 0.0


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(kind: str, loop: str, sock: str, streams: int, tokens: int) -> None:
    run = {"httpx": with_httpx, "aiohttp": with_aiohttp, "enclave": with_enclave}[kind]
    if loop == "uvloop":
        import uvloop

        events = uvloop.run(run(sock, streams, tokens))
    else:
        events = asyncio.run(run(sock, streams, tokens))
    print(json.dumps({"cpu": cpu() - CPU_BEFORE, "events": events}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--pace", type=float, default=0.0, help="engine tokens/s per stream")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "LOOP", "SOCKET"))
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.streams, args.tokens)
        return
    kinds = ["httpx", "enclave"]
    try:
        import aiohttp  # noqa: F401

        kinds.insert(1, "aiohttp")
    except ImportError:
        print("aiohttp is not installed: skipped")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "m").mkdir()
        (Path(tmp) / "m" / "config.json").write_text("{}")
        sock = str(Path(tmp) / "engine.sock")
        engine = subprocess.Popen(
            [
                sys.executable, "-m", "enclave_dev.engine", "serve", str(Path(tmp) / "m"),
                "--served-model-name", "tiny", "--uds", sock, "--dev-load-seconds", "0",
                "--dev-tokens-per-second", str(args.pace), "--disable-uvicorn-access-log",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(sock):
                if time.monotonic() > deadline or engine.poll() is not None:
                    raise RuntimeError("the development engine did not start")
                time.sleep(0.1)
            results: dict[str, list[float]] = {}
            for _ in range(args.reps):
                for kind in kinds:
                    for loop in ("asyncio", "uvloop"):
                        out = subprocess.run(
                            [
                                sys.executable, __file__, "--streams", str(args.streams),
                                "--tokens", str(args.tokens), "--child", kind, loop, sock,
                            ],
                            check=True,
                            capture_output=True,
                            cwd=ROOT,
                        )  # fmt: skip
                        got = json.loads(out.stdout)
                        per_event = got["cpu"] / max(got["events"], 1) * 1e6
                        results.setdefault(f"{kind} ({loop})", []).append(per_event)
            pace = f"paced {args.pace:g} tokens/s" if args.pace else "unpaced"
            print(f"{args.streams} streams x {args.tokens} tokens, engine {pace}; client CPU/event")
            base = statistics.median(results["httpx (asyncio)"])
            for name, values in results.items():
                value = statistics.median(values)
                print(f"   {name:<20} {value:7.1f} us/event   {value / base:5.2f}x httpx")
        finally:
            engine.terminate()
            engine.wait(timeout=30)


if __name__ == "__main__":
    main()
