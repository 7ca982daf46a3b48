"""The operator's metrics and the JSON log formatter, unit by unit."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from enclave._logging import STRUCTURED_FIELDS, _JsonFormatter, log_time
from enclave._operations_metrics import OperationsMetrics
from enclave.routes._access import ACCESS_FIELDS
from enclave.routes.engine_metrics import filter_engine_metrics


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_certificate_and_key_gauges_are_read_at_scrape_time() -> None:
    registry = CollectorRegistry()
    now = [1000.0]
    metrics = OperationsMetrics(registry, clock=lambda: now[0])
    assert "enclave_certificate_age_seconds NaN" in exposition(registry)
    metrics.track_certificate(lambda: (900.0, 5000.0))
    metrics.track_ohttp_keys(lambda: 400.0)
    text = exposition(registry)
    assert "enclave_certificate_age_seconds 100.0" in text
    assert "enclave_certificate_expiry_timestamp_seconds 5000.0" in text
    assert "enclave_ohttp_key_age_seconds 600.0" in text
    now[0] = 1100.0
    assert "enclave_certificate_age_seconds 200.0" in exposition(registry)


def test_build_info_keeps_one_series() -> None:
    registry = CollectorRegistry()
    metrics = OperationsMetrics(registry)
    metrics.set_build_info(version="1.2.3", tee="simulated")
    metrics.set_build_info(vllm_version="0.11.0")
    lines = [line for line in exposition(registry).splitlines() if line.startswith("enclave_build")]
    assert lines == [
        'enclave_build_info{tee="simulated",version="1.2.3",vllm_version="0.11.0"} 1.0'
    ]


def test_outcomes_outside_the_fixed_sets_are_refused() -> None:
    metrics = OperationsMetrics(CollectorRegistry())
    with pytest.raises(ValueError, match="fixed label values"):
        metrics.report("served-to-someone")
    with pytest.raises(ValueError, match="fixed label values"):
        metrics.model_load_ended("maybe", None)


def test_engine_metrics_keep_only_vllm_families() -> None:
    text = (
        "# HELP python_gc_objects_collected_total Objects collected\n"
        "# TYPE python_gc_objects_collected_total counter\n"
        'python_gc_objects_collected_total{generation="0"} 12.0\n'
        "# HELP vllm:num_requests_running Running requests\n"
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="tiny"} 2.0\n'
        "process_resident_memory_bytes 1e9\n"
    )
    assert filter_engine_metrics(text) == (
        "# HELP vllm:num_requests_running Running requests\n"
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="tiny"} 2.0\n'
    )
    assert filter_engine_metrics("process_cpu_seconds_total 1\n") == ""


#: vLLM 0.32 families that tie sizes, timings or outcomes to single requests (issue 20 #6).
PER_REQUEST = (
    ("vllm:prompt_tokens", "counter", 'vllm:prompt_tokens_total{engine="0"} 396.0'),
    ("vllm:generation_tokens", "counter", 'vllm:generation_tokens_total{engine="0"} 5.0'),
    (
        "vllm:request_success",
        "counter",
        'vllm:request_success_total{engine="0",finished_reason="length"} 1.0',
    ),
    ("vllm:request_prompt_tokens", "histogram", 'vllm:request_prompt_tokens_bucket{le="500"} 1'),
    ("vllm:time_to_first_token_seconds", "histogram", "vllm:time_to_first_token_seconds_sum 0.2"),
    ("vllm:prefix_cache_hits", "counter", 'vllm:prefix_cache_hits_total{engine="0"} 384.0'),
    ("vllm:request_params_max_tokens", "histogram", "vllm:request_params_max_tokens_count 1"),
)


def test_engine_metrics_drop_every_per_request_family() -> None:
    """Regression (issue 20 #6): /metrics/engine gave each request's exact prompt and output
    token counts and its finish reason."""
    text = "".join(
        f"# HELP {name} x\n# TYPE {name} {kind}\n{sample}\n" for name, kind, sample in PER_REQUEST
    )
    kept = (
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{engine="0"} 0.1\n'
        "# TYPE vllm:num_preemptions counter\n"
        'vllm:num_preemptions_total{engine="0"} 0.0\n'
    )
    assert filter_engine_metrics(text + kept) == kept


def test_json_lines_carry_only_the_structured_fields() -> None:
    assert set(ACCESS_FIELDS) <= set(STRUCTURED_FIELDS)
    record = logging.LogRecord("enclave.access", logging.INFO, __file__, 1, "%s", ("x",), None)
    record.__dict__.update(request_id="ab", status=404, reason="not_found", body="secret")
    entry = json.loads(_JsonFormatter().format(record))
    assert entry["request_id"] == "ab"
    assert entry["status"] == 404
    assert entry["reason"] == "not_found"
    assert "body" not in entry
    assert entry["time"].endswith("+00:00")


def test_log_time_is_rfc3339_utc_with_the_zone() -> None:
    assert log_time(0.5) == "1970-01-01T00:00:00.500+00:00"
