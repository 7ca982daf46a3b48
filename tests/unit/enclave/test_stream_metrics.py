"""The streaming path's metrics: counts, inter-token latency, token rate, sealed chunks."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from enclave._stream_metrics import RATE_WINDOW_SECONDS, StreamStats
from enclave.metrics import ServiceMetrics

ROUTE = "/v1/chat/completions"


def samples(metrics: ServiceMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_events_tokens_and_inter_token_latency() -> None:
    metrics = ServiceMetrics()
    metrics.register_routes([ROUTE])
    stats = metrics.stream_stats(ROUTE)
    stats.relayed(2, 2, None, 100.0)  # role + first token, the stream's first piece
    stats.relayed(1, 1, 0.03, 100.03)  # one event 30 ms later
    stats.relayed(3, 2, 0.2, 100.23)  # three together (the last is [DONE]) 200 ms later
    got = samples(metrics)
    route = (("route", ROUTE),)
    assert got[("enclave_streamed_chunks_total", route)] == 6
    assert got[("enclave_streamed_tokens_total", route)] == 5
    # Gaps: 0 (inside the first piece), 0.03, 0.2, 0, 0 (inside the last piece).
    assert got[("enclave_inter_token_latency_seconds_count", route)] == 5
    assert abs(got[("enclave_inter_token_latency_seconds_sum", route)] - 0.23) < 1e-9
    bucket = "enclave_inter_token_latency_seconds_bucket"
    assert got[(bucket, (("le", "0.001"), *route))] == 3
    assert got[(bucket, (("le", "0.04"), *route))] == 4
    assert got[(bucket, (("le", "0.25"), *route))] == 5
    assert got[(bucket, (("le", "+Inf"), *route))] == 5


def test_the_token_rate_covers_the_last_complete_seconds() -> None:
    now = [1000.2]
    stream = StreamStats(clock=lambda: now[0])
    stats = stream.route(ROUTE)
    for second in range(RATE_WINDOW_SECONDS):
        stats.relayed(40, 40, 0.025, 1000.5 + second)
    now[0] = 1000.5 + RATE_WINDOW_SECONDS  # every counted second is complete
    rate = next(
        family for family in stream.collect() if family.name == "enclave_streamed_tokens_per_second"
    )
    assert rate.samples[0].value == 40.0
    now[0] += 3 * RATE_WINDOW_SECONDS  # silence: the window forgets
    rate = next(
        family for family in stream.collect() if family.name == "enclave_streamed_tokens_per_second"
    )
    assert rate.samples[0].value == 0.0


def test_sealed_chunks_are_their_own_counter() -> None:
    metrics = ServiceMetrics()
    metrics.ohttp_chunk_sealed()
    metrics.ohttp_chunk_sealed()
    got = samples(metrics)
    assert got[("enclave_ohttp_chunks_sealed_total", ())] == 2
    assert not any(name == "enclave_streamed_chunks_total" for name, _ in got)
