"""Where the service's CPU goes on the paced streaming path. Prints shares; asserts nothing.

Starts the service (one process, simulated TEE, the development engine paced at 40 tokens/s
per stream), drives N streams of T tokens through it with ``relay_loadgen.py`` (plaintext
RA-TLS, or chunked OHTTP) and prints the own time by component and the functions with the most
own time, from one of two profilers:

- ``--py-spy PATH`` (preferred): py-spy samples the running service during the measured window
  only (``--native``: C frames too, e.g. OpenSSL); idle samples (the loop waiting) are left out,
  so the shares are of the CPU the service used;
- otherwise cProfile (``python -m cProfile`` around ``enclave serve``; statistics written when
  SIGTERM stops it): the whole run, start and stop included. Under uvloop, cProfile charges the
  time C code spends (TLS writes, the loop) to whichever Python frame is active, so read it as
  where the Python-level calls are, not as costs.

Run: python3 bench/profile_relay.py [--hop plain|ohttp] [--streams 64] [--tokens 256]
         [--py-spy /path/to/py-spy [--native]]
"""

from __future__ import annotations

import argparse
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_relay

GROUPS = (
    ("starlette", "starlette/"),
    ("uvicorn (httptools protocol)", "uvicorn/"),
    ("the relay (enclave/routes/_relay.py)", "enclave/routes/_relay"),
    ("the inference routes", "enclave/routes/inference"),
    ("other enclave/routes", "enclave/routes/"),
    ("the gateway (enclave/gateway)", "enclave/gateway/"),
    ("OHTTP framing and HPKE (enclave/protocol)", "enclave/protocol/"),
    ("the engine client (enclave/engine)", "enclave/engine/"),
    ("connections and bodies (enclave/net)", "enclave/net/"),
    ("stream metrics", "enclave/_stream_metrics"),
    ("other enclave", "enclave/"),
    ("asyncio", "asyncio/"),
    ("ssl", "ssl.py"),
)


def group_of(filename: str, function: str) -> str:
    for name, part in GROUPS:
        if part in filename:
            return name
    if filename == "~":
        if "ssl" in function.lower() or "_ssl" in function:
            return "ssl (C)"
        if "uvloop" in function or "loop" in function:
            return "event loop (C)"
        return "builtins (C)"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hop", choices=["plain", "ohttp"], default="plain")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--pace", type=float, default=40.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--py-spy", default=None, help="sample with this py-spy binary")
    parser.add_argument("--native", action="store_true", help="py-spy: C frames too")
    args = parser.parse_args()
    if args.py_spy is not None:
        sample_with_py_spy(args)
        return
    tmp = Path(tempfile.mkdtemp(prefix="profile-relay-"))
    (tmp / "models" / "tiny").mkdir(parents=True)
    (tmp / "models" / "tiny" / "config.json").write_text("{}")
    stats_file = tmp / "serve.prof"
    service = bench_relay.start_service(
        "profiled",
        bench_relay.ROOT,
        tmp,
        tmp / "models",
        launcher=(sys.executable, "-m", "cProfile", "-o", str(stats_file)),
    )
    gen = None
    try:
        bench_relay.wait_ready(service)
        bench_relay.set_pace(service, args.pace)
        spec = {
            args.hop: {
                "kind": "tls",
                "address": ["127.0.0.1", service.port],
                "ohttp": args.hop == "ohttp",
            }
        }
        gen = bench_relay.LoadGenerator(spec)
        gen.ask({"cmd": "warm", "hop": args.hop, "streams": args.streams})
        answer = gen.ask(
            {"cmd": "run", "hop": args.hop, "streams": args.streams, "tokens": args.tokens}
        )
        tokens = answer["tokens"]
    finally:
        if gen is not None:
            gen.close()
        service.process.terminate()
        service.process.wait(timeout=120)
    stats = pstats.Stats(str(stats_file))
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    by_group: dict[str, float] = defaultdict(float)
    for (filename, _, function), entry in raw.items():
        by_group[group_of(filename, function)] += entry[2]
    print(
        f"profile_relay: {args.hop}, {args.streams} streams x {args.tokens} tokens, paced "
        f"{args.pace:g}/s; {tokens} tokens received; profiled own time {total:.2f} s for the "
        f"whole run (start, load, stop)"
    )
    print("\nown time by component (share of the profiled process):")
    for name, seconds in sorted(by_group.items(), key=lambda item: -item[1]):
        print(f"   {seconds / total * 100:5.1f}%  {seconds:7.2f} s  {name}")
    print(f"\nthe {args.top} functions with the most own time:")
    stats.sort_stats("tottime").print_stats(args.top)
    shutil.rmtree(tmp, ignore_errors=True)


def sample_with_py_spy(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="profile-relay-"))
    (tmp / "models" / "tiny").mkdir(parents=True)
    (tmp / "models" / "tiny" / "config.json").write_text("{}")
    out = tmp / "samples.txt"
    service = bench_relay.start_service("sampled", bench_relay.ROOT, tmp, tmp / "models")
    gen = None
    try:
        bench_relay.wait_ready(service)
        bench_relay.set_pace(service, args.pace)
        spec = {
            args.hop: {
                "kind": "tls",
                "address": ["127.0.0.1", service.port],
                "ohttp": args.hop == "ohttp",
            }
        }
        gen = bench_relay.LoadGenerator(spec)
        gen.ask({"cmd": "warm", "hop": args.hop, "streams": args.streams})
        command = [
            args.py_spy, "record", "--pid", str(service.process.pid), "--rate", "250",
            "--format", "raw", "--output", str(out), "--nonblocking",
            *(["--native"] if args.native else []),
        ]  # fmt: skip
        sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attached
        answer = gen.ask(
            {"cmd": "run", "hop": args.hop, "streams": args.streams, "tokens": args.tokens}
        )
        sampler.send_signal(signal.SIGINT)
        sampler.wait(timeout=60)
    finally:
        if gen is not None:
            gen.close()
        service.process.terminate()
        service.process.wait(timeout=120)
    own: dict[str, int] = defaultdict(int)
    by_group: dict[str, int] = defaultdict(int)
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        leaf = stack.split(";")[-1]
        function, _, where = leaf.partition(" (")
        own[leaf] += count
        by_group[group_of(where, function) if where else "other"] += count
        total += count
    print(
        f"profile_relay (py-spy{', native' if args.native else ''}): {args.hop}, "
        f"{args.streams} streams x {args.tokens} tokens, paced {args.pace:g}/s; "
        f"{answer['tokens']} tokens; {total} busy samples at 250 Hz"
    )
    print("\nbusy samples by component (leaf frame):")
    for name, count in sorted(by_group.items(), key=lambda item: -item[1]):
        print(f"   {count / total * 100:5.1f}%  {name}")
    print(f"\nthe {args.top} leaf frames with the most samples:")
    for leaf, count in sorted(own.items(), key=lambda item: -item[1])[: args.top]:
        print(f"   {count / total * 100:5.1f}%  {leaf}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
