"""What the streaming metrics cost per relayed piece, next to prometheus_client's own types.

The relay calls ``RouteStreamStats.relayed`` once per piece it sends (one or more events): it
counts events and tokens, adds the inter-token gap to a histogram and the tokens to the rate
window. The same work with prometheus_client's Counter and Histogram (two counters, one
histogram observation) is timed for comparison. Prints ns per call; asserts nothing.

Run: python3 bench/bench_stream_metrics.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry, Counter, Histogram

from enclave._stream_metrics import ITL_BUCKETS
from enclave.metrics import ServiceMetrics

CALLS = 200_000


def per_call(function: object, *args: object) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(CALLS):
            function(*args)  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return best / CALLS * 1e9


def main() -> None:
    metrics = ServiceMetrics()
    metrics.register_routes(["/v1/chat/completions"])
    stats = metrics.stream_stats("/v1/chat/completions")
    ours = per_call(stats.relayed, 1, 1, 0.025, time.monotonic())

    registry = CollectorRegistry()
    chunks = Counter("c", "c", ("route",), registry=registry).labels(route="r")
    tokens = Counter("t", "t", ("route",), registry=registry).labels(route="r")
    itl = Histogram("h", "h", ("route",), buckets=ITL_BUCKETS, registry=registry).labels(route="r")

    def with_prometheus(events: int, count: int, gap: float) -> None:
        chunks.inc(events)
        tokens.inc(count)
        itl.observe(gap)

    theirs = per_call(with_prometheus, 1, 1, 0.025)
    print(f"streaming metrics per relayed piece: {ours:6.0f} ns (enclave._stream_metrics)")
    print(f"same with prometheus_client types:   {theirs:6.0f} ns ({theirs / ours:.1f}x)")


if __name__ == "__main__":
    main()
