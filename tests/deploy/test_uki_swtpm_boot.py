"""The UKI path of ``enclave measure`` against a real boot: QEMU (TCG) with Debian's OVMF and a
software TPM (swtpm) boots a UKI built by ukify from a Debian kernel, Debian's systemd-stub and
a busybox initrd that prints the TPM event log on the console. The firmware's and
systemd-stub's events in PCRs 4, 9 and 11 (SHA-256 bank) are what ``uki_events`` computes
from the UKI file: the same events TDX firmware extends into RTMR1 and RTMR2 (the EFI CC
mapping), here seen by a TPM because no TDX machine is at hand.

Needs qemu-system-x86_64, swtpm, OVMF (4M), busybox-static, ukify with python3-pefile, and a
kernel: ``ENCLAVE_TEST_KERNEL=/path/vmlinuz`` or /boot/vmlinuz-* (``apt-get download
linux-image-amd64`` and ``dpkg-deb -x`` give one). About a minute under TCG."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import signal
import struct
import subprocess
from pathlib import Path

import pytest

from attestation.measure import authenticode_digest, parse_pe, uki_events

pytestmark = pytest.mark.slow

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
UKIFY = Path("/usr/lib/systemd/ukify")
SHA256 = 0x000B
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t securityfs securityfs /sys/kernel/security
echo EVENTLOG-BEGIN
/bin/busybox base64 /sys/kernel/security/tpm0/binary_bios_measurements
echo EVENTLOG-END
/bin/busybox poweroff -f
"""


def _kernel() -> Path | None:
    given = os.environ.get("ENCLAVE_TEST_KERNEL")
    if given:
        return Path(given)
    found = sorted(Path("/boot").glob("vmlinuz-*"))
    return found[-1] if found else None


def parse_tcg2_log(data: bytes) -> list[tuple[int, int, dict[int, bytes], bytes]]:
    """(PCR, event type, {algorithm: digest}, event data) of a TCG2 crypto-agile log."""
    header_size = struct.unpack_from("<I", data, 28)[0]
    header = data[32 : 32 + header_size]
    count = struct.unpack_from("<I", header, 24)[0]
    sizes = dict(struct.unpack_from("<HH", header, 28 + 4 * i) for i in range(count))
    offset, events = 32 + header_size, []
    while offset + 12 <= len(data):
        pcr, event_type, digests_count = struct.unpack_from("<III", data, offset)
        offset += 12
        digests = {}
        for _ in range(digests_count):
            algorithm = struct.unpack_from("<H", data, offset)[0]
            digests[algorithm] = data[offset + 2 : offset + 2 + sizes[algorithm]]
            offset += 2 + sizes[algorithm]
        size = struct.unpack_from("<I", data, offset)[0]
        events.append((pcr, event_type, digests, data[offset + 4 : offset + 4 + size]))
        offset += 4 + size
    return events


def _build(tmp: Path, kernel: Path) -> Path:
    root = tmp / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy(shutil.which("busybox") or "", root / "bin" / "busybox")
    (root / "init").write_text(INIT)
    (root / "init").chmod(0o755)
    listing = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    archive = subprocess.run(
        ["cpio", "-o", "-H", "newc"], cwd=root, input=listing, capture_output=True, check=True
    ).stdout
    (tmp / "initrd").write_bytes(archive)
    (tmp / "osrel").write_text("ID=debian\nVERSION_ID=12\n")
    (tmp / "cmdline").write_text("console=ttyS0 panic=-1 rdinit=/init")
    uki = tmp / "esp" / "EFI" / "BOOT" / "BOOTX64.EFI"
    uki.parent.mkdir(parents=True)
    subprocess.run(
        [
            "/usr/bin/python3",
            str(UKIFY),
            "build",
            f"--linux={kernel}",
            f"--initrd={tmp / 'initrd'}",
            f"--cmdline=@{tmp / 'cmdline'}",
            f"--os-release=@{tmp / 'osrel'}",
            f"--stub={STUB}",
            f"--output={uki}",
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )
    return uki


def _boot(tmp: Path) -> bytes:
    state = tmp / "tpm"
    state.mkdir()
    shutil.copy(OVMF_VARS, tmp / "vars.fd")
    swtpm = ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}", "--daemon"]
    swtpm += ["--ctrl", f"type=unixio,path={state / 'sock'}", "--pid", f"file={state / 'pid'}"]
    subprocess.run(swtpm, check=True, timeout=30)
    qemu = ["qemu-system-x86_64", "-machine", "q35,accel=tcg", "-cpu", "max", "-m", "1024"]
    qemu += ["-nographic", "-no-reboot", "-display", "none", "-serial", "mon:stdio"]
    qemu += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}"]
    qemu += ["-drive", f"if=pflash,format=raw,file={tmp / 'vars.fd'}"]
    qemu += ["-drive", f"file=fat:rw:{tmp / 'esp'},format=raw,if=virtio"]
    qemu += ["-chardev", f"socket,id=chrtpm,path={state / 'sock'}"]
    qemu += ["-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0"]
    try:
        console = subprocess.run(
            qemu,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=600,
            check=False,
        ).stdout
    finally:
        pid = state / "pid"
        if pid.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid.read_text().strip()), signal.SIGTERM)
    assert "EVENTLOG-END" in console, console[-2000:]
    text = console.split("EVENTLOG-BEGIN")[1].split("EVENTLOG-END")[0]
    return base64.b64decode("".join(line.strip() for line in text.splitlines()))


def test_the_uki_events_are_what_the_tpm_saw(tmp_path: Path) -> None:
    tools = ["qemu-system-x86_64", "swtpm", "busybox", "cpio"]
    missing = [t for t in tools if shutil.which(t) is None]
    missing += [str(p) for p in (OVMF_CODE, OVMF_VARS, STUB, UKIFY) if not p.exists()]
    kernel = _kernel()
    if kernel is None:
        missing.append("a kernel (ENCLAVE_TEST_KERNEL or /boot/vmlinuz-*)")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI installs these (.ci/run): {missing}")
        pytest.skip(f"needs {missing}")
    assert kernel is not None
    uki = _build(tmp_path, kernel)
    log = parse_tcg2_log(_boot(tmp_path))
    data = uki.read_bytes()
    ours = uki_events(data, kernel_measures_initrd=True, algorithm="sha256")

    applications = [
        d[SHA256] for pcr, t, d, _ in log if pcr == 4 and t == EV_EFI_BOOT_SERVICES_APPLICATION
    ]
    linux = parse_pe(data).section(".linux")
    assert linux is not None
    assert applications == [
        authenticode_digest(data, "sha256"),
        authenticode_digest(linux, "sha256"),
    ]
    assert applications == [
        e.digest for e in ours if "EV_EFI_BOOT_SERVICES_APPLICATION" in e.description
    ]
    for pcr in (9, 11):
        seen = [d[SHA256] for p, _, d, _ in log if p == pcr]
        assert seen == [e.digest for e in ours if e.pcr == pcr], pcr
    # PCR 4 in order, without the boot option OVMF tried (and left) before the disk's: the
    # "Returning from EFI Application from Boot Option" and the "Calling ..." after it.
    returning = hashlib.sha256(b"Returning from EFI Application from Boot Option").digest()
    pcr4 = [d[SHA256] for p, _, d, _ in log if p == 4]
    while returning in pcr4:
        at = pcr4.index(returning)
        del pcr4[at : at + 2]
    assert pcr4 == [e.digest for e in ours if e.pcr == 4]
    # PCR 5: the TPM also gets a separator there (TDX firmware extends one per RTMR).
    separator = hashlib.sha256(bytes(4)).digest()
    pcr5 = [d[SHA256] for p, _, d, _ in log if p == 5 and d[SHA256] != separator]
    assert pcr5 == [e.digest for e in ours if e.pcr == 5]
    assert {e.register for e in ours if e.pcr in (9, 11)} == {"rtmr2"}
    assert {e.register for e in ours if e.pcr in (4, 5)} == {"rtmr1"}
