"""enclave.metrics: fixed label sets, own registry, no user data in labels."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from enclave.metrics import (
    OHTTP_FAILURE_REASONS,
    REISSUE_REASONS,
    STREAM_OUTCOMES,
    UNMATCHED_ROUTE,
    ServiceMetrics,
)

CANARY = "canary-label-0b5e55ed"


def test_label_values_outside_their_sets_are_refused() -> None:
    metrics = ServiceMetrics()
    with pytest.raises(ValueError, match="fixed label values"):
        metrics.ohttp_failure(CANARY)
    with pytest.raises(ValueError, match="fixed label values"):
        metrics.certificate_reissued(CANARY)
    with pytest.raises(ValueError, match="fixed label values"):
        metrics.stream_outcome("/v1/completions", CANARY)
    with pytest.raises(ValueError, match="fixed label values"):
        metrics.set_model_state(CANARY)
    assert CANARY not in metrics.render().decode()


def test_unregistered_routes_and_odd_statuses_collapse() -> None:
    metrics = ServiceMetrics()
    metrics.register_routes(["/v1/models"])
    metrics.observe_request(f"/{CANARY}", 999, 0.1)
    metrics.observe_request("/v1/models", 200, 0.1)
    metrics.observe_time_to_first_token(CANARY, 0.1)
    metrics.stream_stats(CANARY).relayed(3, 2, 0.01, 0.0)
    text = metrics.render().decode()
    assert f'route="{UNMATCHED_ROUTE}",status="other"' in text
    assert 'route="/v1/models",status="200"' in text
    assert CANARY not in text


def test_every_fixed_value_is_accepted_and_exposed() -> None:
    metrics = ServiceMetrics()
    for reason in OHTTP_FAILURE_REASONS:
        metrics.ohttp_failure(reason)
    for reason in REISSUE_REASONS:
        metrics.certificate_reissued(reason)
    for outcome in STREAM_OUTCOMES:
        metrics.stream_outcome("/v1/completions", outcome)
    metrics.replay_refused()
    metrics.observe_quote_generation(0.2)
    metrics.set_model_state("ready")
    text = metrics.render().decode()
    assert 'enclave_ohttp_failures_total{reason="replay"} 1.0' in text
    assert 'enclave_certificate_reissues_total{reason="lifetime"} 1.0' in text
    assert "enclave_ohttp_replays_refused_total 1.0" in text
    assert "enclave_quote_generation_seconds_count 1.0" in text
    assert 'enclave_model_state{state="ready"} 1.0' in text
    assert 'enclave_model_state{state="idle"} 0.0' in text


def test_the_global_registry_is_untouched() -> None:
    ServiceMetrics()
    assert REGISTRY.get_sample_value("enclave_active_streams") is None
