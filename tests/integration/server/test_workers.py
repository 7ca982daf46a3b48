"""``enclave serve --data-plane-workers 2`` as a process: one owner, two workers on one port.

Requests spread over both workers (the per-worker request counts of the one metrics
exposition); the lifecycle API and the metrics are the owner's, reached through either worker;
an OHTTP request accepted by one worker is refused as a replay by the other; a certificate
reissued while a stream is open reaches new connections of every worker and the stream ends
whole; a worker killed with SIGKILL is restarted, its stream is cut (the chunked OHTTP client
sees no final chunk: truncated), and new requests are served."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from enclave.protocol import bhttp
from enclave.protocol._keyconfig import decode_key_configs
from tests.integration.server._process import METRICS_AUTH, Serve, wait_until
from tests.integration.server.conftest import chat_request, encapsulate

pytestmark = pytest.mark.slow

WORKERS = 2


def worker_pids(serve: Serve) -> set[int]:
    """The owner's children that are data-plane workers."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == serve.process.pid and b"enclave.workers" in command:
            found.add(int(entry.name))
    return found


def per_worker(serve: Serve, name: str) -> dict[str, float]:
    text = serve.client.get("/metrics", headers=METRICS_AUTH).text
    pattern = re.compile(rf'^{name}\{{worker="(\d+)"\}} ([0-9.e+]+)$', re.MULTILINE)
    return {worker: float(value) for worker, value in pattern.findall(text)}


def fresh_get(port: int, path: str, **kwargs: object) -> httpx.Response:
    """One request on a connection of its own (a new source port: the kernel picks a worker)."""
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=False) as client:
        return client.get(path, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    tmp = tmp_path_factory.mktemp("workers")
    running = Serve(
        tmp,
        None,
        "--data-plane-workers", str(WORKERS),
        "--certificate-lifetime", "60",
        env={"ENCLAVE_ENGINE_STALL_TIMEOUT_SECONDS": "30"},
    )  # fmt: skip
    try:
        wait_until(lambda: len(worker_pids(running)) == WORKERS, "both workers up")
        running.load("tiny")
        yield running
    finally:
        running.close()


def test_requests_spread_over_both_workers(serve: Serve) -> None:
    before = per_worker(serve, "enclave_data_plane_worker_requests_total")
    for _ in range(40):
        assert fresh_get(serve.port, "/v1/models").status_code == 200
    after = per_worker(serve, "enclave_data_plane_worker_requests_total")
    assert set(after) == {"0", "1"}
    served = {worker: after[worker] - before.get(worker, 0.0) for worker in after}
    assert all(count > 0 for count in served.values()), served
    assert per_worker(serve, "enclave_data_plane_worker_up") == {"0": 1.0, "1": 1.0}
    # The lifecycle API is the owner's, through any worker.
    status = fresh_get(serve.port, "/v1/models/status").json()
    assert status["proxy_status"] == "ready"
    assert status["loaded_model"] == "tiny"
