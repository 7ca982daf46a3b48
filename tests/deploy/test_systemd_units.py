"""The systemd units: `systemd-analyze verify` and `security` on the tree the image build
stages, and the hardening and ordering the deployment relies on.

`systemd-analyze verify` checks that every ExecStart program exists, so the units are
verified inside a temporary root: the distribution's own units (for the targets they refer
to), the tree `deploy/image/build-image.sh --stage` assembles (units, helper scripts,
settings), and a stand-in for the service's entry point, which the image build installs
with pip.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy._repo import DEPLOY, ROOT

UNITS = ("enclave.service", "enclave-gpu-ready.service", "model-verity@test-model.service")
_SYSTEM_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
_HAS_ANALYZE = shutil.which("systemd-analyze") is not None
_NO_ANALYZE = "systemd-analyze is not installed (Debian package: systemd)"


def _unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path, encoding="utf-8")
    return parser


def _values(path: Path, section: str, key: str) -> list[str]:
    """Every value of a (repeatable) key: configparser keeps the last, so read the lines."""
    values, current = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1]
        elif current == section and stripped.startswith(f"{key}="):
            values.append(stripped.split("=", 1)[1])
    return values


@pytest.fixture(scope="module")
def staged_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    wheel = root.parent / "enclave_inference-0.0.0-py3-none-any.whl"
    wheel.write_bytes(b"stand-in")
    roothash = root.parent / "test-model.roothash"
    roothash.write_text("ab" * 32 + "\n", encoding="ascii")
    subprocess.run(
        [
            "bash",
            str(DEPLOY / "image" / "build-image.sh"),
            "--stage",
            str(root),
            "--wheel",
            str(wheel),
            "--model",
            f"test-model={roothash}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    system = next((d for d in _SYSTEM_UNIT_DIRS if d.is_dir()), None)
    if system is not None:
        shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True)
    entry = root / "opt/enclave/bin/enclave"
    entry.parent.mkdir(parents=True)
    entry.write_text("#!/bin/sh\nexit 0\n", encoding="ascii")
    entry.chmod(0o755)
    return root


def test_stage_assembles_everything_the_units_run(staged_root: Path) -> None:
    for unit in ("enclave.service", "enclave-gpu-ready.service", "model-verity@.service"):
        path = staged_root / "etc/systemd/system" / unit
        assert path.is_file(), unit
        for key in ("ExecStart", "ExecStartPre", "ExecStop"):
            for value in _values(path, "Service", key):
                program = value.lstrip("+-!@:").split()[0]
                if program.startswith("/opt/enclave/"):
                    continue  # installed by pip in the image build
                assert (staged_root / program.lstrip("/")).is_file(), (unit, program)
    assert (staged_root / "etc/enclave/enclave.env").is_file()
    roothash = staged_root / "etc/enclave/roothash/test-model.roothash"
    assert roothash.read_text(encoding="ascii") == "ab" * 32 + "\n"
    assert (staged_root / "usr/share/doc/enclave/operations.md").is_file()


@pytest.mark.skipif(not _HAS_ANALYZE, reason=_NO_ANALYZE)
def test_systemd_analyze_verify_is_clean(staged_root: Path) -> None:
    if not (staged_root / "usr/lib/systemd/system/multi-user.target").exists():
        pytest.skip("no distribution units to verify against (/usr/lib/systemd/system)")
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={staged_root}", *UNITS],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    # Unknown keys and bad values are only warnings (exit 0): any output is a failure.
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@pytest.mark.skipif(not _HAS_ANALYZE, reason=_NO_ANALYZE)
def test_service_exposure_stays_low(staged_root: Path) -> None:
    result = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=yes",
            f"--root={staged_root}",
            "--threshold=30",
            "--no-pager",
            "enclave.service",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_enclave_service_hardening() -> None:
    path = DEPLOY / "systemd" / "enclave.service"
    service = _unit(path)["Service"]
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["PrivateTmp"] == "yes"
    assert service["CapabilityBoundingSet"] == "CAP_SYS_ADMIN"
    assert service["AmbientCapabilities"] == "CAP_SYS_ADMIN"
    assert service["User"] == "enclave"
    assert service["Restart"] == "on-failure"
    assert service["DevicePolicy"] == "closed"
    assert "/etc/enclave/enclave.env" in _values(path, "Service", "EnvironmentFile")
    assert "-/sys/kernel/config/tsm/report" in _values(path, "Service", "ReadWritePaths")
    devices = _values(path, "Service", "DeviceAllow")
    assert "char-nvidia-frontend rw" in devices
    assert "char-nvidia-uvm rw" in devices
    assert service["ExecStart"] == "/opt/enclave/bin/enclave serve"


def test_the_engine_runs_without_capabilities() -> None:
    env = (DEPLOY / "systemd" / "enclave.env").read_text(encoding="utf-8")
    line = next(x for x in env.splitlines() if x.startswith("ENCLAVE_ENGINE_COMMAND="))
    assert "--inh-caps=-all" in line
    assert "--ambient-caps=-all" in line


def test_models_are_mounted_before_the_service() -> None:
    verity = _unit(DEPLOY / "verity" / "model-verity@.service")["Unit"]
    assert "enclave.service" in verity["Before"].split()
    gpu = _unit(DEPLOY / "systemd" / "enclave-gpu-ready.service")
    assert "enclave.service" in gpu["Unit"]["Before"].split()
    assert "enclave.service" in gpu["Install"]["RequiredBy"].split()
    after = " ".join(_values(DEPLOY / "systemd" / "enclave.service", "Unit", "After"))
    assert "enclave-gpu-ready.service" in after.split()


def test_units_refer_to_docs_the_image_installs() -> None:
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        for doc in _values(unit, "Unit", "Documentation"):
            name = doc.rsplit("/", 1)[-1]
            assert (ROOT / "docs" / name).is_file(), (unit.name, doc)
