"""``enclave serve`` as a process with real vLLM as its engine: load, a streamed answer, then
SIGTERM: the service exits 0 and no process of the engine is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from enclave_dev.tinymodel import TINY_MODEL_NAME
from tests.integration.server.test_serve_process import descendants, free_port

from .conftest import ENGINE_ENV, START_WAIT, TOKEN, VLLM, models_dir

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_sigterm_of_the_service_leaves_no_engine_process(tmp_path: Path, tiny_model: Path):
    models_dir(tmp_path, tiny_model)
    port = free_port()
    command = [
        sys.executable, "-m", "enclave", "serve",
        "--host", "127.0.0.1", "--port", str(port),
        "--models-dir", str(tmp_path / "models"), "--roothash-dir", str(tmp_path / "roothash"),
        "--state-dir", str(tmp_path / "state"), "--run-dir", str(tmp_path / "run"),
        "--engine-command", str(VLLM), "--load-timeout", str(START_WAIT),
        "--shutdown-grace", "10", "--tee", "simulated", "--insecure-allow-simulated-tee",
    ]  # fmt: skip
    env = {
        **os.environ,
        **ENGINE_ENV,
        "LOAD_TOKEN": TOKEN,
        "ENCLAVE_ENGINE_ENV_ALLOWLIST": " ".join(ENGINE_ENV),
    }
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    engines: set[int] = set()
    try:
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=False, timeout=30) as client:
            deadline = time.monotonic() + START_WAIT
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline
                assert process.poll() is None
                time.sleep(0.2)
            client.post(
                "/v1/models/load",
                json={"model": TINY_MODEL_NAME},
                headers={"Authorization": f"Bearer {TOKEN}"},
            ).raise_for_status()
            while (status := client.get("/v1/models/status").json())["proxy_status"] != "ready":
                assert status["proxy_status"] == "loading", status
                assert time.monotonic() < deadline
                time.sleep(0.2)
            engines = descendants(process.pid)
            assert len(engines) >= 3  # API server, EngineCore, worker
            body = {
                "model": TINY_MODEL_NAME,
                "messages": [{"role": "user", "content": "hello"}],
                "max_tokens": 5,
                "stream": True,
            }
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                lines = [line for line in response.iter_lines() if line.startswith("data: ")]
            assert lines[-1] == "data: [DONE]"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
        assert not [pid for pid in engines if Path(f"/proc/{pid}").exists()]
        assert not (tmp_path / "run" / "engine.sock").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output = process.stdout.read().decode() if process.stdout is not None else ""
        if process.stdout is not None:
            process.stdout.close()
    assert "Traceback" not in output, output[-3000:]
