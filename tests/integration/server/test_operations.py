"""What an operator runs on, met through ``enclave serve`` (a process): the metrics
(build_info, certificate and OHTTP key ages, loads, restarts, reports refused by the rate
limit, the engine's own metrics) and the JSON log (structured fields, refusals with their
codes, zoned timestamps, the ready line), which never carries a prompt."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from enclave_dev.engine._loading import ENGINE_VERSION
from tests.integration.server._process import METRICS_AUTH, Serve, wait_until
from tests.integration.server.test_serve_process import descendants

pytestmark = pytest.mark.slow

CANARY = "canary-3c1e9d5a-ops-never-logged"


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_json_log_lines_are_structured_and_never_carry_content(tmp_path: Path) -> None:
    serve = Serve(tmp_path, None, "--log-format", "json")
    try:
        status = serve.load("tiny")
        chat = {"model": "tiny", "messages": [{"role": "user", "content": CANARY}]}
        with serve.client.stream(
            "POST", "/v1/chat/completions", json={**chat, "stream": True}
        ) as response:
            assert response.status_code == 200
            assert "[DONE]" in response.read().decode()
        assert serve.client.post("/v1/chat/completions", json=chat).status_code == 200
        refused = [
            # A model name a client made up is not logged either.
            serve.client.post("/v1/chat/completions", json={**chat, "model": CANARY}),
            serve.client.post(
                "/v1/completions", content=CANARY, headers={"content-type": "text/plain"}
            ),
            serve.client.get(f"/v1/{CANARY}?{CANARY}=1"),
            serve.client.request(CANARY.upper()[:20], "/v1/models"),
            serve.client.request("PROPFIND", "/v1/models"),
        ]
        assert [r.status_code for r in refused][:3] == [404, 415, 404]
        output = serve.output()
    finally:
        serve.close()
    assert CANARY not in output
    assert CANARY.upper()[:20] not in output
    lines = json_lines(output)
    assert lines, output
    for line in lines:
        assert line["time"].endswith("+00:00"), line  # a zoned RFC 3339 time
    access = [line for line in lines if line["logger"] == "enclave.access"]
    served = [a for a in access if a["route"] == "/v1/chat/completions" and a["status"] == 200]
    assert len(served) == 2
    for line in served:
        assert len(line["request_id"]) == 24
        assert line["model"] == "tiny"
        assert line["generation"] == status["generation"]
        assert line["bytes_in"] > 0
        assert line["bytes_out"] > 0
        assert line["duration_ms"] >= 0
        assert line["method"] == "POST"
    by_reason = {a.get("reason"): a for a in access if a["status"] >= 400}
    assert by_reason["model_not_found"]["status"] == 404
    assert "model" not in by_reason["model_not_found"]
    assert by_reason["unsupported_media_type"]["route"] == "/v1/completions"
    assert by_reason["unsupported_media_type"]["status"] == 415
    assert by_reason["not_found"]["route"] == "unmatched"
    assert any(a["method"] == "other" and a["reason"] == "method_not_allowed" for a in access)
    ready = [line for line in lines if line.get("load_seconds") is not None]
    assert len(ready) == 1
    assert ready[0]["digest"] == status["loaded_model_digest"]
    assert ready[0]["digest_kind"] == status["digest_kind"]
    assert ready[0]["generation"] == status["generation"]
    assert ready[0]["message"].startswith("model tiny ready in ")


def test_the_metrics_an_operator_needs(tmp_path: Path) -> None:
    serve = Serve(
        tmp_path,
        None,
        env={"ENCLAVE_RESTART_BACKOFF_INITIAL_SECONDS": "0.1"},
    )
    try:
        before = time.time()
        assert serve.metric("enclave_certificate_age_seconds") >= 0
        assert serve.metric("enclave_certificate_expiry_timestamp_seconds") > before + 3600
        assert serve.metric("enclave_ohttp_key_age_seconds") >= 0
        status = serve.load("tiny")
        assert serve.metric("enclave_model_load_seconds_count") == 1
        assert serve.metric('enclave_model_loads_total{outcome="ready"}') == 1
        # build_info: the service, the engine's own version (asked at ready), the TEE kind.
        wait_until(
            lambda: ENGINE_VERSION in serve.client.get("/metrics", headers=METRICS_AUTH).text,
            "vllm ver",
        )
        info = [
            line
            for line in serve.client.get("/metrics", headers=METRICS_AUTH).text.splitlines()
            if line.startswith("enclave_build_info{")
        ]
        assert len(info) == 1
        assert 'tee="simulated"' in info[0]
        assert f'vllm_version="{ENGINE_VERSION}"' in info[0]
        assert info[0].endswith(" 1.0")

        # The engine's own metrics, filtered to vLLM's load families (no per-request ones).
        engine = serve.client.get("/metrics/engine", headers=METRICS_AUTH)
        assert engine.status_code == 200
        assert "vllm:num_requests_running" in engine.text
        for line in engine.text.splitlines():
            assert line.startswith(("vllm:", "# HELP vllm:", "# TYPE vllm:")), line
            assert "prompt_tokens" not in line
            assert "generation_tokens" not in line
            assert "finished_reason" not in line

        # Reports refused by the rate limit (10 per client per minute by default).
        nonce = "ab" * 32
        codes = [
            serve.client.get(f"/v1/attestation/report?nonce={nonce}").status_code for _ in range(12)
        ]
        assert 429 in codes
        assert serve.metric(
            'enclave_attestation_reports_total{outcome="rate_limited"}'
        ) == codes.count(429)
        assert serve.metric('enclave_attestation_reports_total{outcome="served"}') == codes.count(
            200
        )

        # An engine killed under the service is restarted, and counted.
        assert serve.metric("enclave_engine_restarts_total") == 0
        engines = descendants(serve.process.pid)
        assert engines
        for pid in engines:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: serve.metric("enclave_engine_restarts_total") == 1, "a restart")
        wait_until(
            lambda: serve.client.get("/v1/models/status").json()["proxy_status"] == "ready",
            "ready again",
        )
        assert serve.metric("enclave_model_load_seconds_count") == 2
        assert serve.client.get("/v1/models/status").json()["generation"] > status["generation"]
        output = serve.output()
    finally:
        serve.close()
    assert "Traceback" not in output, output
