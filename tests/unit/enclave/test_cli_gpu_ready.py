"""The boot gate: `enclave attest gpu-ready` verifies every GPU through NVML with the service's
own verifier and sets the ready state only when all pass; the shell script of
enclave-gpu-ready.service runs it and fails closed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from attestation.errors import GpuNotInCcModeError, VerificationError
from attestation.gpu import DEFAULT_GPU_POLICY, GpuPolicy, GpuReason
from attestation.gpu.providers import NvmlGpuProvider
from enclave.cli._attest_gpu import gpu_gate
from enclave_dev.gpu import GpuSimulator
from tests.deploy._repo import ROOT
from tests.unit.attestation.gpu.test_providers import _FakeLibrary

SCRIPT = ROOT / "deploy" / "systemd" / "enclave-gpu-ready.sh"


def gate(library: _FakeLibrary, policy: GpuPolicy = DEFAULT_GPU_POLICY):  # type: ignore[no-untyped-def]
    provider = NvmlGpuProvider(nvml=library.module())
    return gpu_gate(provider, policy, insecure_root_der=library.simulator.root_der)


async def test_gate_verifies_every_gpu_then_sets_ready() -> None:
    library = _FakeLibrary(GpuSimulator(count=2))
    verified = await gate(library, GpuPolicy(required_count=2))
    assert len(verified) == 2
    assert library.ready_set == [1]


@pytest.mark.parametrize(
    ("library", "policy", "reason"),
    [
        (_FakeLibrary(GpuSimulator(), devtools=1), GpuPolicy(), GpuReason.DEVTOOLS),
        (_FakeLibrary(GpuSimulator()), GpuPolicy(required_count=2), "gpu_evidence_missing"),
        (
            _FakeLibrary(GpuSimulator()),
            GpuPolicy(measurements={2: frozenset({bytes(48)})}),
            GpuReason.MEASUREMENT_NOT_ALLOWED,
        ),
        (
            _FakeLibrary(GpuSimulator()),
            GpuPolicy(min_vbios_version="97.00.00.00.00"),
            "gpu_vbios_too_old",
        ),
    ],
)
async def test_gate_refuses_and_leaves_the_gpus_not_ready(
    library: _FakeLibrary, policy: GpuPolicy, reason: str
) -> None:
    with pytest.raises(VerificationError) as info:
        await gate(library, policy)
    assert info.value.reason == reason
    assert library.ready_set == []


async def test_gate_refuses_gpus_outside_cc_mode() -> None:
    library = _FakeLibrary(GpuSimulator(), cc_feature=0)
    with pytest.raises(GpuNotInCcModeError, match="not in confidential-computing mode"):
        await gate(library)
    assert library.ready_set == []


async def test_gate_uses_the_pinned_nvidia_root() -> None:
    library = _FakeLibrary(GpuSimulator())
    with pytest.raises(VerificationError) as info:
        await gpu_gate(NvmlGpuProvider(nvml=library.module()), GpuPolicy())
    assert info.value.reason == GpuReason.ROOT_UNTRUSTED
    assert library.ready_set == []


def test_gpu_ready_command_without_nvidia_driver_fails_closed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "enclave", "attest", "gpu-ready"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "NVML could not start" in result.stderr
    assert "Traceback" not in result.stderr


def _fake_enclave(tmp_path: Path, code: int) -> Path:
    program = tmp_path / "enclave"
    program.write_text(f'#!/bin/sh\necho "args: $*" >> "{tmp_path}/calls"\nexit {code}\n')
    program.chmod(0o755)
    return program


def _script(tmp_path: Path, code: int, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": os.environ["PATH"], "ENCLAVE_BIN": str(_fake_enclave(tmp_path, code))}
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_script_runs_the_verifier_with_the_policy(tmp_path: Path) -> None:
    result = _script(tmp_path, 0, ENCLAVE_GPU_POLICY="/etc/enclave/policy.toml")
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls").read_text()
    assert calls == "args: attest gpu-ready --policy /etc/enclave/policy.toml\n"


def test_script_passes_the_ocsp_responder(tmp_path: Path) -> None:
    result = _script(tmp_path, 0, ENCLAVE_GPU_OCSP_URL="https://ocsp.ndis.nvidia.com/")
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls").read_text()
    assert calls == "args: attest gpu-ready --ocsp-url https://ocsp.ndis.nvidia.com/\n"


async def test_gate_checks_revocation_when_given_responses(tmp_path: Path) -> None:
    from cryptography.x509 import ocsp

    from attestation.gpu.revocation import OfflineOcsp

    simulator = GpuSimulator()
    for name, status in (("good", ocsp.OCSPCertStatus.GOOD), ("bad", ocsp.OCSPCertStatus.REVOKED)):
        (tmp_path / name).mkdir()
        for key, data in simulator.ocsp_responses(0, status=status).items():
            (tmp_path / name / f"{key}.ocsp").write_bytes(data)
    library = _FakeLibrary(simulator)
    provider = NvmlGpuProvider(nvml=library.module())
    root = simulator.root_der
    with pytest.raises(VerificationError) as info:
        await gpu_gate(
            provider, DEFAULT_GPU_POLICY, insecure_root_der=root, ocsp=OfflineOcsp(tmp_path / "bad")
        )
    assert info.value.reason == GpuReason.CERT_REVOKED
    assert library.ready_set == []
    await gpu_gate(
        provider, DEFAULT_GPU_POLICY, insecure_root_der=root, ocsp=OfflineOcsp(tmp_path / "good")
    )
    assert library.ready_set == [1]


def test_script_fails_closed_when_the_verifier_refuses(tmp_path: Path) -> None:
    result = _script(tmp_path, 1)
    assert result.returncode == 1
    assert "GPU attestation failed" in result.stderr


def test_script_only_warns_in_development_mode(tmp_path: Path) -> None:
    result = _script(tmp_path, 1, ENCLAVE_GPU_CC_REQUIRED="0")
    assert result.returncode == 0
    assert "WARNING (ENCLAVE_GPU_CC_REQUIRED=0)" in result.stderr
