"""`enclave serve --gpu simulated` as a user starts it (a subprocess), then `enclave verify`
against it: the GPU evidence travels from the simulated GPUs through the service's report and
RA-TLS certificate to the client, which shows the GPUs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

TOKEN = "serve-gpu-token-6b1e0c2a9d7f4e53"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_enclave_serve_with_simulated_gpus_and_enclave_verify(tmp_path: Path) -> None:
    port = _free_port()
    (tmp_path / "models").mkdir()
    env = {
        **os.environ,
        "LOAD_TOKEN": TOKEN,
        "ENCLAVE_RUN_DIR": str(tmp_path / "run"),
        "ENCLAVE_STATE_DIR": str(tmp_path / "state"),
        "ENCLAVE_MODELS_DIR": str(tmp_path / "models"),
        "ENCLAVE_ROOTHASH_DIR": str(tmp_path / "roothash"),
        "ENCLAVE_SIMULATED_GPU_COUNT": "2",
        "ENCLAVE_GPUS_RATE_PER_CLIENT_PER_MINUTE": "4",
    }
    command = [
        sys.executable, "-m", "enclave", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--tee", "simulated", "--insecure-allow-simulated-tee",
        "--gpu", "simulated", "--insecure-allow-simulated-gpu",
        "--insecure-dev-engine",
        "--engine-command", f"{sys.executable} -m enclave_dev.engine",
    ]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[1].decode()[-2000:]
            try:
                if httpx.get(f"https://127.0.0.1:{port}/ready", verify=False).status_code:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.2)
        gpus = httpx.get(f"https://127.0.0.1:{port}/v1/attestation/gpus", verify=False).json()
        assert len(gpus["gpu_evidence"]) == 2
        bundle = tmp_path / "run" / "simulated-tee"
        verify = subprocess.run(
            [
                sys.executable,
                "-m",
                "enclave",
                "verify",
                f"https://127.0.0.1:{port}",
                "--collateral",
                str(bundle / "collateral.json"),
                "--root-ca",
                str(bundle / "root_ca.pem"),
                "--gpu-root-ca",
                str(tmp_path / "run" / "simulated-gpu" / "root_ca.pem"),
                "--insecure-simulated-root",
                # the service declares its insecure settings in its claims; accept them by name
                "--insecure-accept-service",
                "insecure_allow_simulated_gpu",
                "--insecure-accept-service",
                "insecure_dev_engine",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
        document = json.loads(verify.stdout)
        assert [gpu["architecture"] for gpu in document["facts"]["gpus"]] == ["hopper", "hopper"]
        # The GPU evidence route has its budget (4 a minute here, gpus_rate_per_client_per_
        # minute); revalidating with its ETag is free.
        url = f"https://127.0.0.1:{port}/v1/attestation/gpus"
        with httpx.Client(verify=False) as client:
            tag = client.get(url).headers["etag"]
            codes = [client.get(url).status_code for _ in range(4)]
            assert 429 in codes, codes
            assert client.get(url, headers={"If-None-Match": tag}).status_code == 304
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=60)
    assert b"SIMULATED GPU" in stderr
    assert b"Traceback" not in stderr
