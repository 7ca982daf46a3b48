"""`enclave attest verify-gpu` on the real H100 evidence, run as a user runs it (subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vectors import vector_path

NONCE = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"


def _run(*extra: str, chain: str = "hopper_cert_chain_case1.txt", nonce: str = NONCE):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "enclave",
            "attest",
            "verify-gpu",
            "--report",
            str(vector_path("gpu/hopperAttestationReport.txt")),
            "--cert-chain",
            str(vector_path(f"gpu/{chain}")),
            "--nonce",
            nonce,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_verify_gpu_real_report_passes() -> None:
    result = _run()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "verified: True" in out
    assert "architecture: hopper" in out
    assert "fwid: f5c384aebb579217a2c66b17ed0f28e6a9b8d639" in out
    assert "driver_version: 550.90.07" in out
    assert "vbios_version: 96.00.9f.00.01" in out
    assert "measurements: 64" in out
    assert "7. report signature: pass" in out
    assert "9. CC mode on, no DEVTOOLS, ready: not run" in out
    assert "Traceback" not in result.stderr


def test_verify_gpu_json_with_cc_state_runs_every_step() -> None:
    result = _run("--cc-mode", "on", "--ready", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["verified"] is True
    assert [step["result"] for step in document["steps"]] == ["pass"] * 11


@pytest.mark.parametrize(
    ("args", "chain", "nonce", "reason", "failed_step"),
    [
        ((), "hopper_cert_chain_case2.txt", NONCE, "gpu_chain_incomplete", 3),
        ((), "hopper_cert_chain_case3.txt", NONCE, "gpu_chain_invalid", 4),
        ((), "hopper_cert_chain_case4.txt", NONCE, "gpu_fwid_missing", 5),
        ((), "hopper_cert_chain_case1.txt", "00" * 32, "gpu_nonce_mismatch", 8),
        (
            ("--cc-mode", "devtools", "--ready"),
            "hopper_cert_chain_case1.txt",
            NONCE,
            "gpu_devtools",
            9,
        ),
        (("--min-driver", "560.0"), "hopper_cert_chain_case1.txt", NONCE, "gpu_driver_too_old", 10),
    ],
)
def test_verify_gpu_failures_exit_1_with_their_step(
    args: tuple[str, ...], chain: str, nonce: str, reason: str, failed_step: int
) -> None:
    result = _run(*args, "--json", chain=chain, nonce=nonce)
    assert result.returncode == 1, result.stdout
    document = json.loads(result.stdout)
    assert document["verified"] is False
    assert document["reason"] == reason
    failed = [s["step"] for s in document["steps"] if s["result"].startswith("FAIL")]
    assert failed == [failed_step]
    before = document["steps"][: failed_step - 1]
    assert all(s["result"] == "pass" for s in before if s["step"] != 9)  # 9 needs --cc-mode


def test_verify_gpu_bad_input_is_an_input_error(tmp_path: Path) -> None:
    result = _run("--json", nonce="abc")
    assert result.returncode == 1
    assert json.loads(result.stdout)["reason"] == "input_error"
    assert "Traceback" not in result.stderr


def test_verify_gpu_with_ocsp_dir_checks_revocation(tmp_path: Path) -> None:
    empty = tmp_path / "none"
    empty.mkdir()
    result = _run("--json", "--ocsp-dir", str(empty))
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["reason"] == "gpu_revocation_unavailable"
    assert [s["step"] for s in document["steps"] if s["result"].startswith("FAIL")] == [4]


def test_verify_gpu_simulated_with_good_and_revoked_ocsp(tmp_path: Path) -> None:
    from cryptography.x509 import ocsp

    from enclave_dev.gpu import GpuSimulator

    simulator = GpuSimulator()
    (tmp_path / "report.txt").write_text(simulator.report(0, bytes.fromhex(NONCE)).hex())
    (tmp_path / "chain.pem").write_bytes(simulator.chain_pem(0))
    (tmp_path / "root.pem").write_bytes(simulator.root_pem)
    for name, status in (("good", ocsp.OCSPCertStatus.GOOD), ("bad", ocsp.OCSPCertStatus.REVOKED)):
        folder = tmp_path / name
        folder.mkdir()
        for key, data in simulator.ocsp_responses(0, status=status).items():
            (folder / f"{key}.ocsp").write_bytes(data)
    base = [
        sys.executable, "-m", "enclave", "attest", "verify-gpu",
        "--report", str(tmp_path / "report.txt"), "--cert-chain", str(tmp_path / "chain.pem"),
        "--nonce", NONCE, "--root-ca", str(tmp_path / "root.pem"), "--json", "--ocsp-dir",
    ]  # fmt: skip
    good = subprocess.run(
        [*base, str(tmp_path / "good")], capture_output=True, text=True, timeout=60
    )
    assert good.returncode == 0, good.stdout + good.stderr
    bad = subprocess.run([*base, str(tmp_path / "bad")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["reason"] == "gpu_cert_revoked"
