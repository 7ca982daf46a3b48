"""A tiny stand-in for ``vllm serve`` used by the unit tests (stdlib only, starts fast).

Same CLI shape as vLLM: ``serve <dir> --served-model-name N (--uds P | --host H --port N)``;
unknown options are ignored. Test switches: ``--dev-load-seconds S``, ``--dev-fail-at-start``,
``--dev-hang-health``, ``--dev-workers N``, ``--fake-shards N``, ``--fake-ignore-sigterm``,
``--fake-exit-after S`` (exit with code 3 S seconds after becoming healthy, leaving the
workers running),
``--fake-dump-env PATH``, ``--fake-echo TEXT`` (printed to stdout before loading).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time

WORKERS: list[subprocess.Popen[bytes]] = []


def log(message: str) -> None:
    stamp = time.strftime("%m-%d %H:%M:%S")
    print(f"(APIServer pid={os.getpid()}) INFO {stamp} [fake.py:1] {message}", flush=True)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("model")
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--uds")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--dev-load-seconds", type=float, default=0.2)
    parser.add_argument("--dev-fail-at-start", action="store_true")
    parser.add_argument("--dev-hang-health", action="store_true")
    parser.add_argument("--dev-workers", type=int, default=1)
    parser.add_argument("--fake-shards", type=int, default=4)
    parser.add_argument("--fake-ignore-sigterm", action="store_true")
    parser.add_argument("--fake-exit-after", type=float)
    parser.add_argument("--fake-dump-env")
    parser.add_argument("--fake-echo")
    args, _ = parser.parse_known_args()
    return args


def spawn_workers(count: int, ignore_term: bool) -> list[subprocess.Popen[bytes]]:
    code = "import signal,time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "time.sleep(3600)\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hang: bool) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        writer.close()
        return
    path = head.split(b" ")[1].decode()
    if path == "/health" and hang:
        await asyncio.sleep(3600)
    if path == "/v1/stream":
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
        for i in range(100_000):
            writer.write(f'data: {{"n": {i}}}\n\n'.encode())
            await writer.drain()
            await asyncio.sleep(0.02)
    body = b"{}" if path != "/health" else b""
    status = b"200 OK" if path in ("/health", "/v1/models") else b"404 Not Found"
    writer.write(
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: close\r\n\r\n"
        + body
    )
    await writer.drain()
    writer.close()


async def main() -> int:
    args = parse()
    if args.fake_ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.fake_dump_env:
        with open(args.fake_dump_env, "w") as out:
            json.dump({"env": dict(os.environ), "argv": sys.argv[1:]}, out)
    if args.fake_echo:
        log(args.fake_echo)
    WORKERS.extend(spawn_workers(args.dev_workers, args.fake_ignore_sigterm))
    log(f"Starting to load model {args.model}...")
    if args.dev_fail_at_start:
        log("ERROR: simulated start failure")
        return 2
    step = args.dev_load_seconds / (args.fake_shards + 1)
    for n in range(args.fake_shards + 1):
        pct = 100 * n // args.fake_shards
        sys.stderr.write(
            f"\rLoading safetensors checkpoint shards: {pct:3d}% Completed | "
            f"{n}/{args.fake_shards} [00:00<00:00,  1.00it/s]\n"
        )
        sys.stderr.flush()
        await asyncio.sleep(step)
    log("Loading weights took 0.10 seconds")
    log("Model loading took 0.01 GiB and 0.11 seconds")

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await handle(r, w, args.dev_hang_health)

    if args.uds:
        server = await asyncio.start_unix_server(serve, path=args.uds)
        where = f"unix:{args.uds}"
    else:
        server = await asyncio.start_server(serve, host=args.host, port=args.port)
        where = f"http://{args.host}:{args.port}"
    log(f"Starting vLLM API server 0 on {where}")
    log("Application startup complete.")
    async with server:
        if args.fake_exit_after is not None:
            await asyncio.sleep(args.fake_exit_after)
            return 3  # the workers stay behind, as a crashed vLLM's EngineCore may
        await asyncio.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
