"""``enclave serve`` serves its metrics only to an authorised scraper (issue 20 #6): on the main
RA-TLS listener with ``ENCLAVE_METRICS_TOKEN`` only, and on the metrics listener
(``ENCLAVE_METRICS_PORT``, loopback by default) as configured."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.server._process import METRICS_AUTH, METRICS_TOKEN, Serve
from tests.integration.server.test_serve_process import free_port

pytestmark = pytest.mark.slow


def test_with_a_token_only_its_bearer_scrapes_either_listener(tmp_path: Path) -> None:
    port = free_port()
    serve = Serve(tmp_path, None, env={"ENCLAVE_METRICS_PORT": str(port)})
    try:
        serve.load("tiny")
        for path in ("/metrics", "/metrics/engine"):
            assert serve.client.get(path).status_code == 401
            wrong = {"Authorization": "Bearer " + "0" * len(METRICS_TOKEN)}
            assert serve.client.get(path, headers=wrong).status_code == 401
            assert serve.client.get(path, headers=METRICS_AUTH).status_code == 200
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as listener:
            refused = listener.get("/metrics")
            assert refused.status_code == 401
            assert "enclave_" not in refused.text
            scraped = listener.get("/metrics", headers=METRICS_AUTH)
            assert scraped.status_code == 200
            assert "enclave_http_requests_total" in scraped.text
            engine = listener.get("/metrics/engine", headers=METRICS_AUTH)
            assert engine.status_code == 200
            assert "vllm:num_requests_running" in engine.text
            assert listener.get("/v1/models").status_code == 404
        output = serve.output()
    finally:
        serve.close()
    assert METRICS_TOKEN not in output
    assert f"metrics listener on 127.0.0.1:{port} (bearer token required)" in output


def test_without_a_token_metrics_are_closed_except_on_the_loopback_listener(
    tmp_path: Path,
) -> None:
    port = free_port()
    serve = Serve(
        tmp_path, None, env={"ENCLAVE_METRICS_TOKEN": "", "ENCLAVE_METRICS_PORT": str(port)}
    )
    try:
        for path in ("/metrics", "/metrics/engine"):
            assert serve.client.get(path).status_code == 404
            assert serve.client.get(path, headers=METRICS_AUTH).status_code == 404
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as listener:
            assert listener.get("/metrics").status_code == 200
    finally:
        serve.close()
