"""`enclave measure` through the CLI: every event per register, the values, the policy file
(synthetic images built here; the real-binary and real-evidence checks are in
tests/unit/attestation/test_measure*.py)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import struct
from pathlib import Path

import pytest

from attestation.measure import direct_kernel_events, load_shape, replay, rtmr0_events, uki_events
from attestation.policy import load_policy
from enclave.cli import main
from tests.deploy.test_measure import firmware

HEX = "ab" * 48
SHAPE = f"""
name = "test shape"
cpus = 2
memory = {2 << 30}
firmware_version = "synthetic"
page_order = "two-pass"
mrtd = ["{"cd" * 48}"]

[rtmr0]
td_hob = "{"01" * 48}"
cfv = "{"02" * 48}"
acpi_loader = "{HEX}"
acpi_rsdp = "{"ac" * 48}"
acpi_tables = "{"ad" * 48}"
boot_order = "0000"
boot_options = ["{"ae" * 48}"]
"""


def pe(sections: list[tuple[str, bytes]], setup: bool = False) -> bytes:
    """A minimal PE32+ image with these sections (and a bzImage setup header, ``setup``)."""
    count, optional_size = len(sections), 240
    table = 0x40 + 24 + optional_size
    headers = 0x400
    image = bytearray(headers)
    image[0:2] = b"MZ"
    image[0x3C:0x40] = struct.pack("<I", 0x40)
    image[0x40:0x44] = b"PE\0\0"
    struct.pack_into("<HHIIIHH", image, 0x44, 0x8664, count, 0, 0, 0, optional_size, 0x22)
    struct.pack_into("<H", image, 0x58, 0x20B)
    struct.pack_into("<I", image, 0x58 + 60, headers)
    struct.pack_into("<I", image, 0x58 + 108, 16)  # NumberOfRvaAndSizes
    body = b""
    for index, (name, data) in enumerate(sections):
        raw = data + bytes(-len(data) % 0x200)
        at = table + 40 * index
        image[at : at + 8] = name.encode().ljust(8, b"\0")
        struct.pack_into(
            "<IIII", image, at + 8, len(data), 0x1000 * (index + 1), len(raw), headers + len(body)
        )
        body += raw
    if setup:
        image[0x202:0x206] = b"HdrS"
        struct.pack_into("<H", image, 0x206, 0x20F)
        image[0x211] = 0x01
        struct.pack_into("<H", image, 0x236, 0x40)
    return bytes(image) + body


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "shape": tmp_path / "shape.toml",
        "kernel": tmp_path / "bzImage",
        "initrd": tmp_path / "initrd",
        "uki": tmp_path / "uki.efi",
    }
    paths["shape"].write_text(SHAPE)
    kernel = pe([(".text", b"kernel code" * 500)], setup=True)
    paths["kernel"].write_bytes(kernel)
    paths["initrd"].write_bytes(b"initrd" * 1000)
    sections = [(".osrel", b"ID=debian\n"), (".cmdline", b"console=ttyS0"), (".linux", kernel)]
    paths["uki"].write_bytes(pe([*sections, (".initrd", b"initrd" * 1000)]))
    return paths


def test_direct_prints_every_event_and_writes_the_policy(
    files: dict[str, Path], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    code, out, err = run(
        "measure", "direct", "--shape", str(files["shape"]), "--kernel", str(files["kernel"]),
        "--initrd", str(files["initrd"]), "--cmdline", "console=ttyS0 root=/dev/vda",
        "--policy-out", str(policy),
    )  # fmt: skip
    assert code == 0, err
    shape = load_shape(SHAPE)
    events = rtmr0_events(shape) + direct_kernel_events(
        files["kernel"].read_bytes(),
        files["initrd"].read_bytes(),
        "console=ttyS0 root=/dev/vda",
        shape.memory,
    )
    values = replay(events)
    for name in ("rtmr0", "rtmr1", "rtmr2"):
        assert f"  = {values[name].hex()}" in out
    for event in events:
        assert f"PCR{event.pcr:<2} {event.digest.hex()}  {event.description}" in out
    assert "MRTD   " + "cd" * 48 + "  (shape file)" in out
    assert "acpi-tables (captured)" in out
    pinned = load_policy(policy)
    assert pinned.pins_measurements
    assert pinned.rtmr1 == frozenset({values["rtmr1"]})
    assert pinned.mrtd == frozenset({bytes.fromhex("cd" * 48)})
    code, _, err = run(
        "measure", "direct", "--shape", str(files["shape"]), "--kernel", str(files["kernel"]),
        "--initrd", str(files["initrd"]), "--cmdline", "x", "--policy-out", str(policy),
    )  # fmt: skip
    assert code == 1
    assert "not overwriting" in err


def test_uki_as_json(files: dict[str, Path]) -> None:
    code, out, err = run(
        "measure", "uki", "--shape", str(files["shape"]), "--uki", str(files["uki"]), "--json"
    )
    assert code == 0, err
    document = json.loads(out)
    events = uki_events(files["uki"].read_bytes())
    assert document["registers"]["rtmr2"]["value"] == replay(events)["rtmr2"].hex()
    described = [e["description"] for e in document["registers"]["rtmr2"]["events"]]
    assert described[0::2] == [
        f"EV_IPL section name {n}" for n in (".linux", ".osrel", ".cmdline", ".initrd")
    ]
    assert document["registers"]["rtmr1"]["events"][0]["digest"] == events[0].digest.hex()


def test_rtmr0_from_the_firmware(files: dict[str, Path], tmp_path: Path) -> None:
    sections = (
        (0x2000, 0x2000, 0xFFFF0000, 0x2000, 0, 1),  # BFV
        (0x1000, 0x1000, 0xFFFE0000, 0x1000, 1, 0),  # CFV
        (0, 0, 0x809000, 0x2000, 2, 0),  # TD HOB
        (0, 0, 0x800000, 0x6000, 3, 0),  # temporary memory
    )
    image = tmp_path / "OVMF.fd"
    image.write_bytes(firmware(sections))
    shape = tmp_path / "shape.toml"
    shape.write_text(
        SHAPE.replace(f'td_hob = "{"01" * 48}"\n', "").replace(f'cfv = "{"02" * 48}"\n', "")
    )
    code, out, err = run(
        "measure",
        "uki",
        "--shape",
        str(shape),
        "--uki",
        str(files["uki"]),
        "--firmware",
        str(image),
    )
    assert code == 0, err
    cfv = hashlib.sha384(image.read_bytes()[0x1000:0x2000]).hexdigest()
    assert f"{cfv}  EV_EFI_PLATFORM_FIRMWARE_BLOB2 CFV (firmware)" in out
    assert "(firmware " + str(image) + ", two-pass)" in out
    shape.write_text(SHAPE)  # a shape whose CFV is not this firmware's
    code, _, err = run(
        "measure",
        "uki",
        "--shape",
        str(shape),
        "--uki",
        str(files["uki"]),
        "--firmware",
        str(image),
    )
    assert code == 1
    assert "differs from the one computed from the firmware" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.replace("cpus = 2", "cpus = 0"), "cpus"),
        (lambda s: s + "gpus = 1\n", "unknown keys"),
        (lambda s: s.replace("acpi_loader", "acpi_loadr"), "unknown keys"),
        (lambda s: s.replace(f'"{HEX}"', '"abcd"'), "SHA-384"),
        (lambda s: s.replace('mrtd = ["' + "cd" * 48 + '"]', "mrtd = []"), "MRTD needs --firmware"),
    ],
)
def test_a_bad_shape_is_an_error(files: dict[str, Path], change: object, message: str) -> None:
    assert callable(change)
    files["shape"].write_text(change(SHAPE))
    code, _, err = run("measure", "uki", "--shape", str(files["shape"]), "--uki", str(files["uki"]))
    assert code == 1
    assert message in err


def test_not_a_uki(files: dict[str, Path]) -> None:
    files["uki"].write_bytes(pe([(".text", b"x")]))
    code, _, err = run("measure", "uki", "--shape", str(files["shape"]), "--uki", str(files["uki"]))
    assert (code, "no .linux section" in err) == (1, True)
