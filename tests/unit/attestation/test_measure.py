"""attestation.measure against independent tools on real binaries: the Authenticode digest
against pesign (Debian's systemd-boot and systemd-stub EFI binaries, and an sbsign-signed
copy), the UKI's PCR 11 against systemd-measure on a UKI built by ukify, and the QEMU kernel
patch and the EFI CC mapping by construction. Without the tools the tests skip (and fail
under CI, which installs them: .ci/run)."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.measure import (
    MeasureError,
    authenticode_digest,
    parse_pe,
    qemu_patched_kernel,
    register_of_pcr,
    uki_events,
)
from attestation.measure._events import sha384

EFI = Path("/usr/lib/systemd/boot/efi")
STUB = EFI / "linuxx64.efi.stub"
BOOT = EFI / "systemd-bootx64.efi"
UKIFY = Path("/usr/lib/systemd/ukify")
SYSTEMD_MEASURE = Path("/usr/lib/systemd/systemd-measure")
SYSTEM_PYTHON = Path("/usr/bin/python3")


def need(*paths: Path | str, in_ci: bool = True) -> None:
    """Skip without these; under CI fail unless ``in_ci`` is False (ukify and systemd-measure
    come with systemd >= 253, which not every Debian has)."""
    missing = [str(p) for p in paths if not (Path(p).exists() or shutil.which(str(p)))]
    if missing:
        if os.environ.get("CI") and in_ci:
            pytest.fail(f"CI installs these (.ci/run): {missing}")
        pytest.skip(f"needs {missing} (apt-get install systemd-boot-efi pesign sbsigntool)")


def pesign_sha256(path: Path) -> str:
    out = subprocess.run(
        ["pesign", "-i", str(path), "-h"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    found = re.search(r"hash: ([0-9a-f]{64})", out)
    assert found, out
    return found.group(1)


@pytest.mark.parametrize("path", [STUB, BOOT], ids=["systemd-stub", "systemd-boot"])
def test_authenticode_matches_pesign(path: Path) -> None:
    need(path, "pesign")
    data = path.read_bytes()
    assert authenticode_digest(data, "sha256").hex() == pesign_sha256(path)
    assert len(authenticode_digest(data)) == 48  # SHA-384, what TDX firmware measures


def test_a_signature_does_not_change_the_authenticode_digest(tmp_path: Path) -> None:
    need(BOOT, "pesign", "sbsign")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    signed = tmp_path / "signed.efi"
    subprocess.run(
        [
            "sbsign",
            "--key",
            str(key_path),
            "--cert",
            str(cert_path),
            "--output",
            str(signed),
            str(BOOT),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    data = signed.read_bytes()
    assert parse_pe(data).certificate_table[1] > 0  # it carries a signature now
    assert authenticode_digest(data, "sha256").hex() == pesign_sha256(signed)
    assert authenticode_digest(data, "sha256") == authenticode_digest(BOOT.read_bytes(), "sha256")
    tampered = bytearray(data)
    tampered[parse_pe(data).sections[0].raw_offset + 100] ^= 1
    assert authenticode_digest(bytes(tampered), "sha256") != authenticode_digest(data, "sha256")


def test_uki_pcr11_matches_systemd_measure(tmp_path: Path) -> None:
    """A UKI built by ukify (Debian's systemd-stub, systemd-boot's binary standing in for the
    kernel): PCR 11 from our section events, then systemd-pcrphase's "enter-initrd", is what
    systemd-measure computes for it."""
    need(STUB, BOOT)
    need(UKIFY, SYSTEMD_MEASURE, SYSTEM_PYTHON, in_ci=False)
    (tmp_path / "osrel").write_text("ID=debian\nVERSION_ID=12\n")
    (tmp_path / "cmdline").write_text("console=ttyS0 root=/dev/vda")
    (tmp_path / "initrd").write_bytes(b"initrd " * 100)
    built = subprocess.run(
        [
            str(SYSTEM_PYTHON),
            str(UKIFY),
            "build",
            f"--linux={BOOT}",
            f"--initrd={tmp_path / 'initrd'}",
            f"--cmdline=@{tmp_path / 'cmdline'}",
            f"--os-release=@{tmp_path / 'osrel'}",
            f"--stub={STUB}",
            f"--output={tmp_path / 'uki.efi'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if built.returncode and "pefile" in built.stderr:
        need("/usr/lib/python3/dist-packages/pefile.py", in_ci=False)  # python3-pefile
    assert built.returncode == 0, built.stderr
    uki = (tmp_path / "uki.efi").read_bytes()
    sbat = tmp_path / "sbat"
    sbat.write_bytes(parse_pe(uki).section(".sbat") or b"")  # ukify's merged SBAT
    measured = subprocess.run(
        [
            str(SYSTEMD_MEASURE),
            "calculate",
            f"--linux={BOOT}",
            f"--osrel={tmp_path / 'osrel'}",
            f"--cmdline={tmp_path / 'cmdline'}",
            f"--initrd={tmp_path / 'initrd'}",
            f"--sbat={sbat}",
            "--bank=sha384",
            "--phase=enter-initrd",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    expected = re.fullmatch(r"11:sha384=([0-9a-f]{96})\n", measured.stdout)
    assert expected, measured.stdout
    events = uki_events(uki)
    pcr11 = bytes(48)
    for event in events:
        if event.pcr == 11:
            pcr11 = sha384(pcr11 + event.digest)
    assert sha384(pcr11 + sha384(b"enter-initrd")).hex() == expected.group(1)
    assert {event.register for event in events if event.pcr == 11} == {"rtmr2"}
    names = [e.description.split()[-1] for e in events if "section name" in e.description]
    assert names == [".linux", ".osrel", ".cmdline", ".initrd", ".sbat"]  # no .uname: not a kernel


def _bzimage(protocol: int, xloadflags: int = 0, initrd_max: int = 0) -> bytes:
    image = bytearray(0x2000)
    image[0x206:0x208] = protocol.to_bytes(2, "little")
    image[0x211] = 0x01  # LOADED_HIGH
    image[0x22C:0x230] = initrd_max.to_bytes(4, "little")
    image[0x236:0x238] = xloadflags.to_bytes(2, "little")
    return bytes(image)


def _initrd_address(kernel: bytes) -> int:
    return int.from_bytes(kernel[0x218:0x21C], "little")


@pytest.mark.parametrize(
    ("memory", "address"),
    [
        (2 << 30, 0x80000000 - 0x28000 - 1 - 0x100000 & ~0xFFF),  # all memory below 4 GiB
        (0xA0000000, 0xA0000000 - 0x28000 - 1 - 0x100000 & ~0xFFF),
        (0xB0000000, 0x80000000 - 0x28000 - 1 - 0x100000 & ~0xFFF),  # split at 2 GiB
        (16 << 30, 0x80000000 - 0x28000 - 1 - 0x100000 & ~0xFFF),
    ],
)
def test_qemu_places_the_initrd_at_the_top_of_low_memory(memory: int, address: int) -> None:
    patched = qemu_patched_kernel(_bzimage(0x20F, xloadflags=0x40), 0x100000, memory)
    assert _initrd_address(patched) == address
    assert int.from_bytes(patched[0x21C:0x220], "little") == 0x100000
    assert patched[0x210] == 0xB0  # QEMU's loader type
    assert patched[0x211] & 0x80  # CAN_USE_HEAP
    assert int.from_bytes(patched[0x228:0x22C], "little") == 0x20000  # cmd_line_ptr


def test_the_kernels_initrd_limit_applies() -> None:
    patched = qemu_patched_kernel(_bzimage(0x20B, initrd_max=0x37FFFFFF), 0x1000, 16 << 30)
    assert _initrd_address(patched) == (0x37FFFFFF - 0x1000) & ~0xFFF
    with pytest.raises(MeasureError, match="too short"):
        qemu_patched_kernel(b"MZ", 0, 1 << 30)
    with pytest.raises(MeasureError, match="does not fit"):
        qemu_patched_kernel(_bzimage(0x20F, xloadflags=0x40), 0x7FFE0000, 2 << 30)


@pytest.mark.parametrize(
    ("pcr", "register"),
    [
        *[(1, "rtmr0"), (7, "rtmr0"), (2, "rtmr1"), (4, "rtmr1"), (6, "rtmr1"), (8, "rtmr2")],
        *[(11, "rtmr2"), (12, "rtmr2"), (15, "rtmr2"), (16, "rtmr3"), (23, "rtmr3")],
    ],
)
def test_the_efi_cc_mapping(pcr: int, register: str) -> None:
    assert register_of_pcr(pcr) == register


@pytest.mark.parametrize("pcr", [0, 24, -1])
def test_pcrs_without_an_rtmr(pcr: int) -> None:
    with pytest.raises(MeasureError):
        register_of_pcr(pcr)


@pytest.mark.parametrize("data", [b"", b"MZ" + bytes(100), b"\x7fELF" + bytes(100)])
def test_not_a_pe_image(data: bytes) -> None:
    with pytest.raises(MeasureError):
        authenticode_digest(data)
