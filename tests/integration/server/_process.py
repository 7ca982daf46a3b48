"""Helpers for tests that run ``enclave serve`` as a process (and a push receiver)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.server.test_serve_process import descendants, free_port, serve_command

RECEIVER = Path(__file__).with_name("push_receiver.py")
LOAD_TOKEN = "push-test-load-token-8d1e4b7a0c93f2"
PUSH_TOKEN = "push-test-push-token"
METRICS_TOKEN = "serve-test-metrics-token-4e7a1c9d0b26f3"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}
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
        self, tmp: Path, push_url: str | None, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        (tmp / "models" / "tiny").mkdir(parents=True, exist_ok=True)
        (tmp / "models" / "tiny" / "config.json").write_text("{}")
        self.port = free_port()
        env = {
            **os.environ,
            "LOAD_TOKEN": LOAD_TOKEN,
            "ENCLAVE_PUSH_TOKEN": PUSH_TOKEN,
            "ENCLAVE_METRICS_TOKEN": METRICS_TOKEN,
            "ENCLAVE_INSTANCE_ID": "slot-7",
            "ENCLAVE_PUSH_TIMEOUT_SECONDS": "2",
            "ENCLAVE_PUSH_BACKOFF_INITIAL_SECONDS": "0.1",
            "ENCLAVE_PUSH_BACKOFF_MAX_SECONDS": "0.2",
            **(env or {}),
        }
        env = {name: value for name, value in env.items() if value != ""}  # "": unset it
        command = serve_command(
            tmp, self.port, "--tee", "simulated", "--insecure-allow-simulated-tee",
            *(() if push_url is None else ("--push-url", push_url)), *extra,
        )  # fmt: skip
        self.log = tmp / "serve.log"
        self._log_file = self.log.open("w")
        self.process = subprocess.Popen(
            command, env=env, stdout=self._log_file, stderr=subprocess.STDOUT, text=True
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
            assert self.process.poll() is None, self.log.read_text()
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
        for line in self.client.get("/metrics", headers=METRICS_AUTH).text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no metric {name}")

    def output(self) -> str:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)
        return self.log.read_text()

    def close(self) -> None:
        """Stop the service the way an operator would (SIGTERM: it stops its engine); only if
        that fails, kill it and every process it had started, so a failed test leaks none."""
        self.client.close()
        if self.process.poll() is None:
            started = descendants(self.process.pid)
            self.process.terminate()
            try:
                self.process.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            for pid in started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._log_file.close()


def wait_until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)
