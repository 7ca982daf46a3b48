"""deploy/verity: build a real dm-verity model image with cryptsetup and squashfs-tools.

What needs device-mapper and root (``veritysetup open`` and the read-only mount) is skipped
with the precise reason where this machine lacks it; everything else really runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from model_manager.digests import read_roothash
from model_manager.errors import DigestError

SCRIPTS = Path(__file__).resolve().parents[3] / "deploy" / "verity"
BUILD = SCRIPTS / "build-model-image.sh"
OPEN = SCRIPTS / "open-model-image.sh"
CLOSE = SCRIPTS / "close-model-image.sh"

needs_tools = pytest.mark.skipif(
    shutil.which("veritysetup") is None or shutil.which("mksquashfs") is None,
    reason="veritysetup (cryptsetup-bin) and mksquashfs (squashfs-tools) are not installed",
)


def make_model(root: Path) -> Path:
    model = root / "model-src"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"architectures": ["TinyForCausalLM"]}')
    # Incompressible content spanning many 4 KiB blocks, so the hash tree has levels.
    (model / "model.safetensors").write_bytes(os.urandom(256 * 1024))
    (model / "sub" / "tokenizer.json").write_text('{"vocab": {}}')
    return model


def build(model: Path, name: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(BUILD), *extra, str(model), name, str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def printed_root_hash(stdout: str) -> str:
    found = re.findall(r"^Root hash:\s*([0-9a-f]{64})\s*$", stdout, flags=re.M)
    assert len(found) == 1, stdout
    return str(found[0])


def verify(image: Path, tree: Path, root_hash: str) -> int:
    done = subprocess.run(
        ["veritysetup", "verify", str(image), str(tree), root_hash],
        capture_output=True,
        check=False,
        timeout=120,
    )
    return done.returncode


@needs_tools
def test_build_verify_tamper_and_the_manager_reads_the_same_root_hash(tmp_path: Path) -> None:
    out = tmp_path / "images"
    done = build(make_model(tmp_path), "tiny", out)
    assert done.returncode == 0, done.stderr
    image, tree = out / "tiny.img", out / "tiny.verity"
    printed = printed_root_hash(done.stdout)
    # The manager reads the same root hash from the file the script wrote.
    assert read_roothash(out, "tiny") == bytes.fromhex(printed)
    assert (out / "tiny.roothash").read_text() == printed + "\n"
    assert sorted(p.name for p in out.iterdir()) == ["tiny.img", "tiny.roothash", "tiny.verity"]
    assert verify(image, tree, printed) == 0
    assert verify(image, tree, "00" * 32) != 0  # another root hash does not verify

    # Flip one byte in the middle of the data image: verification must fail.
    tampered = tmp_path / "tampered.img"
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    assert verify(tampered, tree, printed) != 0


@needs_tools
def test_same_salt_same_directory_same_root_hash(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    salt = "5a" * 32
    first = build(model, "tiny", tmp_path / "a", "--salt", salt)
    second = build(model, "tiny", tmp_path / "b", "--salt", salt)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert printed_root_hash(first.stdout) == printed_root_hash(second.stdout)
    (model / "config.json").write_text('{"architectures": ["OtherForCausalLM"]}')
    third = build(model, "tiny", tmp_path / "c", "--salt", salt)
    assert printed_root_hash(third.stdout) != printed_root_hash(first.stdout)


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "a..b", "x.", "", "-x", "tïny"])
def test_scripts_refuse_bad_names(tmp_path: Path, name: str) -> None:
    model = make_model(tmp_path)
    out = tmp_path / "out"
    done = build(model, name, out)
    assert done.returncode == 2
    assert not out.exists() or list(out.iterdir()) == []
    for script in (OPEN, CLOSE):
        refused = subprocess.run(
            ["bash", str(script), name], capture_output=True, check=False, timeout=30
        )
        assert refused.returncode == 2


def test_bad_roothash_files_are_refused_by_the_manager(tmp_path: Path) -> None:
    (tmp_path / "tiny.roothash").write_text("zz" * 32 + "\n")
    with pytest.raises(DigestError):
        read_roothash(tmp_path, "tiny")


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_scripts_are_shellcheck_clean() -> None:
    scripts = sorted(str(path) for path in SCRIPTS.glob("*.sh"))
    assert len(scripts) == 3
    done = subprocess.run(
        ["shellcheck", "-s", "bash", *scripts], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout


def _cannot_open_reason() -> str | None:
    if shutil.which("veritysetup") is None or shutil.which("mksquashfs") is None:
        return "veritysetup or mksquashfs is not installed"
    if os.geteuid() != 0:
        return "veritysetup open and mount need root"
    if not Path("/dev/mapper/control").exists():
        return "no device-mapper here (/dev/mapper/control is missing)"
    return None


@pytest.mark.skipif(_cannot_open_reason() is not None, reason=str(_cannot_open_reason()))
def test_open_mounts_read_only_and_the_live_table_matches(tmp_path: Path) -> None:
    import asyncio

    from model_manager._verity import SubprocessRunner, VerityProbe

    images, roothash, models = tmp_path / "images", tmp_path / "roothash", tmp_path / "models"
    name = f"mmtest-{os.getpid()}"
    assert build(make_model(tmp_path), name, images).returncode == 0
    roothash.mkdir()
    shutil.copy(images / f"{name}.roothash", roothash / f"{name}.roothash")
    env = os.environ | {
        "MODEL_IMAGE_DIR": str(images),
        "ROOTHASH_DIR": str(roothash),
        "MODELS_DIR": str(models),
    }
    opened = subprocess.run(
        ["bash", str(OPEN), name], env=env, capture_output=True, text=True, check=False
    )
    if opened.returncode != 0 and "Cannot initialize device-mapper" in opened.stderr:
        pytest.skip(f"veritysetup open failed here: {opened.stderr.strip()[:200]}")
    try:
        assert opened.returncode == 0, opened.stderr
        assert (models / name / "config.json").is_file()
        with pytest.raises(OSError, match=r"[Rr]ead-only"):
            (models / name / "new").write_text("x")
        live = asyncio.run(VerityProbe(SubprocessRunner()).probe(models / name))
        assert live is not None
        assert live.root_hash == read_roothash(roothash, name)
    finally:
        subprocess.run(["bash", str(CLOSE), name], env=env, check=False)
