"""The streaming path's metrics, kept as plain numbers and exposed at scrape time.

Per relayed piece (not per token) the relay calls :meth:`RouteStreamStats.relayed`: a few
integer additions and one bisection, no lock (the data plane runs in one event loop), so the
metrics cost the hot path almost nothing (bench/bench_stream_metrics.py measures it). The
collector turns the numbers into Prometheus families when ``/metrics`` is read:

- ``enclave_streamed_chunks_total{route}``: server-sent events relayed from the engine;
- ``enclave_streamed_tokens_total{route}``: events carrying output (every event but
  ``[DONE]``; vLLM sends one per decoding step, so about one per token);
- ``enclave_inter_token_latency_seconds{route}``: histogram of the time between consecutive
  events as relayed (events relayed together count as 0);
- ``enclave_streamed_tokens_per_second``: tokens relayed per second over the last
  ``RATE_WINDOW_SECONDS`` (all routes);
- ``enclave_ohttp_chunks_sealed_total``: chunks the OHTTP gateway sealed (empty sends are not
  chunks and are not counted).
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["ITL_BUCKETS", "RATE_WINDOW_SECONDS", "RouteStreamStats", "StreamStats"]

#: Upper bounds (seconds) of the inter-token latency histogram's buckets.
ITL_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
RATE_WINDOW_SECONDS = 10


class RouteStreamStats:
    """The numbers of one route label."""

    __slots__ = ("_rate", "chunks", "itl_counts", "itl_sum", "tokens")

    def __init__(self, rate: _RateWindow) -> None:
        self.chunks = 0
        self.tokens = 0
        self.itl_counts = [0] * (len(ITL_BUCKETS) + 1)
        self.itl_sum = 0.0
        self._rate = rate

    def relayed(self, events: int, tokens: int, gap: float | None, now: float) -> None:
        """``events`` relayed together (``tokens`` of them carrying output), ``gap`` seconds
        after the stream's previous event (``None`` for a stream's first piece)."""
        self.chunks += events
        self.tokens += tokens
        if gap is not None:
            self.itl_counts[bisect.bisect_left(ITL_BUCKETS, gap)] += 1
            self.itl_sum += gap
            self.itl_counts[0] += events - 1
        elif events > 1:
            self.itl_counts[0] += events - 1
        if tokens:
            self._rate.add(now, tokens)


class _RateWindow:
    """Counts per whole second over the last ``RATE_WINDOW_SECONDS`` seconds."""

    def __init__(self) -> None:
        self._counts = [0] * (RATE_WINDOW_SECONDS + 1)
        self._second = 0

    def add(self, now: float, count: int) -> None:
        second = int(now)
        if second != self._second:
            self._advance(second)
        self._counts[second % len(self._counts)] += count

    def _advance(self, second: int) -> None:
        stale = min(second - self._second, len(self._counts))
        for step in range(1, stale + 1):
            self._counts[(self._second + step) % len(self._counts)] = 0
        self._second = second

    def per_second(self, now: float) -> float:
        """The rate over the last complete seconds (the current one is still filling)."""
        second = int(now)
        if second != self._second:
            self._advance(second)
        total = sum(self._counts) - self._counts[second % len(self._counts)]
        return total / RATE_WINDOW_SECONDS


class StreamStats(Collector):
    """Every route's numbers and the gateway's sealed chunks; register it in a registry."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rate = _RateWindow()
        self._routes: dict[str, RouteStreamStats] = {}
        self.sealed_chunks = 0

    def route(self, label: str) -> RouteStreamStats:
        """The numbers of ``label`` (a route label already checked against its fixed set)."""
        stats = self._routes.get(label)
        if stats is None:
            stats = self._routes[label] = RouteStreamStats(self._rate)
        return stats

    def collect(self) -> Iterator[Metric]:
        chunks = CounterMetricFamily(
            "enclave_streamed_chunks", "Server-sent events relayed from the engine, by route.",
            labels=("route",),
        )  # fmt: skip
        tokens = CounterMetricFamily(
            "enclave_streamed_tokens",
            "Relayed events carrying output (all but [DONE]; about one per token), by route.",
            labels=("route",),
        )
        itl = HistogramMetricFamily(
            "enclave_inter_token_latency_seconds",
            "Time between consecutive relayed events of a stream, by route.",
            labels=("route",),
        )
        for label, stats in sorted(self._routes.items()):
            chunks.add_metric((label,), stats.chunks)
            tokens.add_metric((label,), stats.tokens)
            cumulative, buckets = 0, []
            for bound, count in zip((*ITL_BUCKETS, math.inf), stats.itl_counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
            itl.add_metric((label,), buckets, stats.itl_sum)
        yield chunks
        yield tokens
        yield itl
        yield GaugeMetricFamily(
            "enclave_streamed_tokens_per_second",
            f"Tokens relayed per second over the last {RATE_WINDOW_SECONDS} s, all routes.",
            value=self._rate.per_second(self._clock()),
        )
        yield CounterMetricFamily(
            "enclave_ohttp_chunks_sealed",
            "Chunks sealed by the OHTTP gateway (chunked responses).",
            value=self.sealed_chunks,
        )
