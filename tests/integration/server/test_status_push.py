"""Status push from ``enclave serve`` (a process) to a real HTTP receiver (another process):
the start push, each transition with its own generation, interval pushes, the instance and the
certificate it comes from; a receiver that hangs or fails never holds up a load."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.server.test_serve_process import free_port, serve_command

pytestmark = pytest.mark.slow

RECEIVER = Path(__file__).with_name("push_receiver.py")
LOAD_TOKEN = "push-test-load-token-8d1e4b7a0c93f2"
PUSH_TOKEN = "push-test-push-token"
WAIT = 60.0


class Receiver:
    def __init__(self, mode: str, log: Path) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, str(RECEIVER), mode, str(log)], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/push"

    def entries(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def documents(self) -> list[dict[str, Any]]:
        return [entry["document"] for entry in self.entries()]

    def wait_for(self, predicate: Any, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for document in self.documents():
                if predicate(document):
                    return document
            time.sleep(0.05)
        raise AssertionError(f"no push {what}: {self.documents()}")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


class Serve:
    def __init__(
        self, tmp: Path, push_url: str, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        (tmp / "models" / "tiny").mkdir(parents=True, exist_ok=True)
        (tmp / "models" / "tiny" / "config.json").write_text("{}")
        self.port = free_port()
        env = {
            **os.environ,
            "LOAD_TOKEN": LOAD_TOKEN,
            "ENCLAVE_PUSH_TOKEN": PUSH_TOKEN,
            "ENCLAVE_INSTANCE_ID": "slot-7",
            "ENCLAVE_PUSH_TIMEOUT_SECONDS": "2",
            "ENCLAVE_PUSH_BACKOFF_INITIAL_SECONDS": "0.1",
            "ENCLAVE_PUSH_BACKOFF_MAX_SECONDS": "0.2",
            **(env or {}),
        }
        command = serve_command(
            tmp, self.port, "--tee", "simulated", "--insecure-allow-simulated-tee",
            "--push-url", push_url, *extra,
        )  # fmt: skip
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.client = httpx.Client(base_url=f"https://127.0.0.1:{self.port}", verify=False)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                if self.client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not start"
            assert self.process.poll() is None, self.output()
            time.sleep(0.1)

    def load(self, name: str) -> dict[str, Any]:
        response = self.client.post(
            "/v1/models/load",
            json={"model": name},
            headers={"Authorization": f"Bearer {LOAD_TOKEN}"},
        )
        assert response.status_code == 202, response.text
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            status: dict[str, Any] = self.client.get("/v1/models/status").json()
            if status["proxy_status"] == "ready":
                return status
            assert status["proxy_status"] != "error", status
            time.sleep(0.05)
        raise AssertionError("the model never became ready")

    def unload(self, name: str) -> None:
        response = self.client.post(
            "/v1/models/unload",
            json={"model": name},
            headers={"Authorization": f"Bearer {LOAD_TOKEN}"},
        )
        assert response.status_code == 202, response.text
        wait_until(
            lambda: self.client.get("/v1/models/status").json()["proxy_status"] == "idle", "idle"
        )

    def certificate_sha256(self) -> str:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw,
            context.wrap_socket(raw) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return hashlib.sha256(der).hexdigest()

    def metric(self, name: str) -> float:
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no metric {name}")

    def output(self) -> str:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)
        assert self.process.stdout is not None
        return self.process.stdout.read()

    def close(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[Any]:
    started: list[Receiver] = []

    def start(mode: str) -> Receiver:
        receiver = Receiver(mode, tmp_path / f"received-{mode}.jsonl")
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.close()


def test_start_transitions_and_interval_pushes_reach_a_real_receiver(
    tmp_path: Path, receivers: Any
) -> None:
    receiver = receivers("ok")
    serve = Serve(tmp_path, receiver.url, "--push-interval", "0.5")
    try:
        start = receiver.wait_for(lambda d: d["push_reason"] == "start", "at start")
        assert start["proxy_status"] == "idle"
        assert start["instance_id"] == "slot-7"
        assert start["certificate_sha256"] == serve.certificate_sha256()
        boot_id = start["boot_id"]

        status = serve.load("tiny")
        loading = receiver.wait_for(
            lambda d: d["push_reason"] == "transition" and d["proxy_status"] == "loading",
            "for loading",
        )
        ready = receiver.wait_for(
            lambda d: d["push_reason"] == "transition" and d["proxy_status"] == "ready",
            "for ready",
        )
        # Each transition carries the generation of the load it belongs to.
        assert ready["generation"] == status["generation"]
        assert loading["loaded_model"] == "tiny"
        assert ready["loaded_model"] == "tiny"
        assert ready["loaded_model_digest"] == status["loaded_model_digest"]
        # The ready document names the certificate reissued with the model claim.
        assert ready["certificate_sha256"] == serve.certificate_sha256()
        assert ready["certificate_sha256"] != start["certificate_sha256"]

        interval = receiver.wait_for(
            lambda d: d["push_reason"] == "interval" and d["proxy_status"] == "ready",
            "at the interval",
        )
        assert interval["generation"] == status["generation"]
        assert {d["boot_id"] for d in receiver.documents()} == {boot_id}
        assert {e["auth"] for e in receiver.entries()} == {f"Bearer {PUSH_TOKEN}"}
        assert serve.metric('enclave_status_pushes_total{outcome="sent"}') >= 4
        assert serve.metric('enclave_status_pushes_total{outcome="failed"}') == 0
        output = serve.output()
    finally:
        serve.close()
    assert PUSH_TOKEN not in output
    assert "Traceback" not in output, output


def test_a_hanging_receiver_holds_up_neither_loads_nor_the_certificate(
    tmp_path: Path, receivers: Any
) -> None:
    receiver = receivers("hang")
    # A push waits up to 10 minutes for this receiver: a pusher that held up the lifecycle's
    # hooks would keep the ready certificate (reissued by the hook before it) from the next load.
    serve = Serve(tmp_path, receiver.url, env={"ENCLAVE_PUSH_TIMEOUT_SECONDS": "600"})
    try:
        idle_certificate = serve.certificate_sha256()
        assert serve.load("tiny")["loaded_model"] == "tiny"
        wait_until(lambda: serve.certificate_sha256() != idle_certificate, "a ready certificate")
        ready_certificate = serve.certificate_sha256()
        serve.unload("tiny")
        wait_until(lambda: serve.certificate_sha256() != ready_certificate, "an idle certificate")
        assert serve.load("tiny")["loaded_model"] == "tiny"
        assert serve.metric('enclave_status_pushes_total{outcome="sent"}') == 0
        output = serve.output()
    finally:
        serve.close()
    assert "Traceback" not in output, output


def test_a_failing_receiver_is_retried_counted_and_does_not_hold_up_loads(
    tmp_path: Path, receivers: Any
) -> None:
    receiver = receivers("error")
    serve = Serve(tmp_path, receiver.url, "--push-interval", "0.2")
    try:
        assert serve.load("tiny")["loaded_model"] == "tiny"
        wait_until(
            lambda: serve.metric('enclave_status_pushes_total{outcome="failed"}') >= 3,
            "failed pushes counted",
        )
        assert serve.metric('enclave_status_pushes_total{outcome="sent"}') == 0
        output = serve.output()
    finally:
        serve.close()
    assert "status push refused: HTTP 500" in output
    assert "Traceback" not in output, output


def wait_until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)
