"""deploy/image without building it (the builds and boots are tests/image, CI's image step):
the two flavours share mkosi.conf and differ only in their drop-ins; the insecure test flavour
differs only by declared insecure_* settings; build-image.sh refuses what it cannot build;
build-reproducible's comparison reads UKI sections, cpio members and the root hash right."""

from __future__ import annotations

import configparser
import shutil
import struct
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy._repo import DEPLOY, load_script

IMAGE = DEPLOY / "image"


def sections(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def packages(parser: configparser.ConfigParser) -> set[str]:
    raw = parser.get("Content", "Packages", fallback="")
    return {word for line in raw.splitlines() for word in line.split("#")[0].split()}


def test_each_flavour_drop_in_matches_its_distribution_only() -> None:
    for flavour in ("ubuntu", "debian"):
        drop_in = sections(IMAGE / "mkosi.conf.d" / f"10-{flavour}.conf")
        assert drop_in.get("Match", "Distribution") == flavour
        assert drop_in.get("Distribution", "Release")
    nvidia = sections(IMAGE / "mkosi.conf.d" / "20-nvidia.conf")
    assert nvidia.get("Match", "Distribution") == "ubuntu"


def test_shared_configuration_names_no_distribution_specific_package() -> None:
    shared = sections(IMAGE / "mkosi.conf")
    assert not shared.has_option("Distribution", "Release")
    names = packages(shared)
    kernels = {"linux-image-generic", "linux-image-amd64"}
    assert not names & kernels
    assert {"linux-image-generic"} <= packages(sections(IMAGE / "mkosi.conf.d/10-ubuntu.conf"))
    assert {"linux-image-amd64"} <= packages(sections(IMAGE / "mkosi.conf.d/10-debian.conf"))
    # what records the build's time is removed (two builds must agree)
    removed = shared.get("Content", "RemoveFiles").split()
    assert "/var/log/alternatives.log" in removed
    assert "/var/cache/ldconfig/aux-cache" in removed


def test_insecure_test_flavour_sets_only_declared_insecure_settings() -> None:
    env = IMAGE / "insecure-test/mkosi.extra/etc/enclave/insecure-test.env"
    settings = dict(
        line.split("=", 1)
        for line in env.read_text().splitlines()
        if line and not line.startswith("#")
    )
    insecure = {k for k in settings if k.startswith("ENCLAVE_INSECURE_")}
    assert insecure == {"ENCLAVE_INSECURE_ALLOW_SIMULATED_TEE", "ENCLAVE_INSECURE_DEV_ENGINE"}
    # the rest is what those two settings need, nothing else
    assert set(settings) - insecure == {"ENCLAVE_TEE", "ENCLAVE_GPU", "ENCLAVE_ENGINE_COMMAND"}
    assert settings["ENCLAVE_TEE"] == "simulated"
    # production trees never carry it
    assert not (IMAGE / "mkosi.extra/etc/enclave/insecure-test.env").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--flavour", "fedora"], "--flavour wants ubuntu or debian"),
        (["--without-vllm", "--vllm-lock", "x"], "exclude each other"),
    ],
)
def test_build_image_refuses_bad_arguments(args: list[str], message: str) -> None:
    result = subprocess.run(
        ["bash", str(IMAGE / "build-image.sh"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.skipif(shutil.which("mkosi") is None, reason="mkosi is not installed")
def test_mkosi_parses_the_debian_flavour() -> None:
    result = subprocess.run(
        ["mkosi", "--directory", str(IMAGE), "--distribution", "debian", "summary"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "linux-image-amd64" in result.stdout
    assert "linux-modules-nvidia" not in result.stdout


@pytest.fixture(scope="module")
def reproducible() -> ModuleType:
    return load_script(IMAGE / "build-reproducible", "build_reproducible")


def pe(sections: dict[str, bytes]) -> bytes:
    """A minimal PE image with these sections (enough for pe_sections)."""
    header = bytearray(0x80)
    struct.pack_into("<I", header, 0x3C, 0x40)
    header[0x40:0x44] = b"PE\0\0"
    struct.pack_into("<H", header, 0x46, len(sections))
    struct.pack_into("<H", header, 0x54, 0)  # no optional header
    table = bytearray()
    body = bytearray()
    offset = 0x58 + 40 * len(sections)
    for name, data in sections.items():
        entry = name.encode().ljust(8, b"\0") + struct.pack(
            "<IIII", len(data), 0, len(data), offset + len(body)
        )
        table += entry.ljust(40, b"\0")
        body += data
    return bytes(header[:0x58]) + bytes(table) + bytes(body)


def test_roothash_comes_from_the_uki_command_line(reproducible: ModuleType, tmp_path: Path) -> None:
    uki = tmp_path / "x.efi"
    uki.write_bytes(pe({".linux": b"kernel", ".cmdline": b"roothash=" + b"ab" * 32 + b" quiet"}))
    assert reproducible.roothash_of(uki) == "ab" * 32
    assert reproducible.pe_sections(uki.read_bytes())[".linux"] == b"kernel"


def newc(name: str, data: bytes) -> bytes:
    fields = [0, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    head = b"070701" + b"".join(b"%08x" % f for f in fields) + name.encode() + b"\0"
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)


def test_cpio_members_are_listed_with_their_content(reproducible: ModuleType) -> None:
    archive = newc("etc/a", b"one") + newc("etc/b", b"two") + newc("TRAILER!!!", b"")
    members = reproducible.cpio_members(archive)
    assert set(members) == {"etc/a", "etc/b"}
    assert members["etc/b"].endswith(b"two")
    changed = reproducible.cpio_members(newc("etc/a", b"one") + newc("etc/b", b"TWO"))
    assert [n for n in members if members[n] != changed.get(n)] == ["etc/b"]
