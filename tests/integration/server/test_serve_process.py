"""``enclave serve`` as a process: refuses the simulated TEE unless asked by name; on SIGTERM it
drains an open stream, stops the engine (no process left behind) and exits 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from enclave_dev.local import DEV_ENGINE

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_command(tmp: Path, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "enclave", "serve",
        "--host", "127.0.0.1", "--port", str(port),
        "--models-dir", str(tmp / "models"), "--roothash-dir", str(tmp / "roothash"),
        "--state-dir", str(tmp / "state"), "--run-dir", str(tmp / "run"),
        "--engine-command", " ".join([*DEV_ENGINE, "--dev-load-seconds", "0.2"]),
        "--insecure-dev-engine",
        "--shutdown-grace", "20",
        *extra,
    ]  # fmt: skip


def test_simulated_tee_is_refused_unless_asked_by_name(tmp_path: Path):
    result = subprocess.run(
        serve_command(tmp_path, free_port(), "--tee", "simulated"),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "insecure_allow_simulated_tee" in result.stderr
    assert "simulated" in result.stderr


def descendants(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid:
            child = int(entry.name)
            found |= {child, *descendants(child)}
    return found


def test_sigterm_drains_the_open_stream_stops_the_engine_and_exits_zero(tmp_path: Path):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "config.json").write_text("{}")
    port = free_port()
    env = {**os.environ, "LOAD_TOKEN": "process-token-5f0c9a7e31d2b48c6e90"}
    process = subprocess.Popen(
        serve_command(tmp_path, port, "--tee", "simulated", "--insecure-allow-simulated-tee"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = f"https://127.0.0.1:{port}"
        with httpx.Client(base_url=url, verify=False, timeout=30) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline
                assert process.poll() is None
                time.sleep(0.1)
            client.post(
                "/v1/models/load",
                json={"model": "tiny"},
                headers={"Authorization": "Bearer process-token-5f0c9a7e31d2b48c6e90"},
            ).raise_for_status()
            while client.get("/v1/models/status").json()["proxy_status"] != "ready":
                assert time.monotonic() < deadline + 30
                time.sleep(0.1)
            engines = descendants(process.pid)
            assert engines
            body = {
                "model": "tiny",
                "messages": [{"role": "user", "content": "drain me"}],
                "stream": True,
                "max_tokens": 40,
            }
            events = []
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        events.append(line)
                        if len(events) == 1:
                            process.send_signal(signal.SIGTERM)  # mid-stream
        assert events[-1] == "data: [DONE]"  # the stream was drained, not cut
        assert process.wait(timeout=60) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in engines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output = ""
        if process.stdout is not None:
            output = process.stdout.read()
            process.stdout.close()
    assert "Traceback" not in output, output
    assert json.dumps("drain me") not in output


def _with_descriptor_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


def test_max_connections_above_the_descriptor_limit_is_lowered_with_a_warning(tmp_path: Path):
    """Issue 20 point 5: with max_connections past RLIMIT_NOFILE, accept failed with EMFILE.
    Now the service lowers it at start and says so (soft = hard = 700: 2048 -> 444)."""
    port = free_port()
    process = subprocess.Popen(
        serve_command(tmp_path, port, "--tee", "simulated", "--insecure-allow-simulated-tee"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=_with_descriptor_limit(700),
    )  # fmt: skip
    try:
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=False, timeout=30) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline
                assert process.poll() is None
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert "max_connections 2048 lowered to 444" in output, output
    assert "RLIMIT_NOFILE" in output


def test_too_few_descriptors_to_serve_is_refused_at_start(tmp_path: Path):
    command = serve_command(
        tmp_path, free_port(), "--tee", "simulated", "--insecure-allow-simulated-tee"
    )
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False,
        preexec_fn=_with_descriptor_limit(200),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "cannot start" in result.stderr
    assert "RLIMIT_NOFILE" in result.stderr
    assert "Traceback" not in result.stderr
