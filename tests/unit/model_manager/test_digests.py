import asyncio
import hashlib
import os
import struct
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from model_manager import _manifest
from model_manager._manifest import DigestCache
from model_manager._verity import CommandResult, VerityProbe
from model_manager.catalog import Catalog
from model_manager.digests import (
    MANIFEST_HEADER,
    DigestCancelledError,
    Digester,
    manifest_digest,
    parse_roothash,
    read_roothash,
)
from model_manager.errors import DigestError, DigestMismatchError, InvalidModelNameError
from model_manager.settings import ModelManagerSettings

from .conftest import SettingsFactory

# Real values from `veritysetup format` of a 64-block image.
ROOT = "3836ade58f15e9f1761cbdc500a621c3b56ce6f2b1ed1c774ae57856ce5a9f3b"
SALT = "0c8bc63e5690c4848040134c872755eb414454fba8f7384b5d8669b3f49ed5f4"
OTHER = "aa" * 32

DMSETUP_TABLE = f"0 512 verity 1 7:0 7:1 4096 4096 64 1 sha256 {ROOT} {SALT}\n"
DMSETUP_TABLE_OPTS = (
    f"0 512 verity 1 7:0 7:1 4096 4096 64 1 sha256 {ROOT} - 2 ignore_zero_blocks "
    "panic_on_corruption\n"
)
VERITYSETUP_STATUS = f"""/dev/mapper/tiny is active and is in use.
  type:        VERITY
  status:      verified
  hash type:   1
  data block:  4096
  hash block:  4096
  hash name:   sha256
  salt:        {SALT}
  data device: /dev/loop0
  data loop:   /images/tiny.img
  size:        512 sectors
  mode:        readonly
  hash device: /dev/loop1
  hash loop:   /images/tiny.hash
  hash offset: 8 sectors
  root hash:   {ROOT}
"""


# -- root-hash files -------------------------------------------------------------------------


def test_read_roothash(tmp_path: Path) -> None:
    (tmp_path / "tiny.roothash").write_text(ROOT + "\n")
    assert read_roothash(tmp_path, "tiny") == bytes.fromhex(ROOT)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n",
        ROOT[:-2].encode() + b"\n",
        ROOT.encode() + b"00\n",
        b"zz" + ROOT[2:].encode(),
        b" " + ROOT.encode(),
        ROOT.encode() + b"\n\n",
        ROOT.encode() + b" \n",
        b"\xff" * 64,
        ROOT.encode() * 40,
    ],
)
def test_bad_roothash_files_raise_digest_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "tiny.roothash").write_bytes(content)
    with pytest.raises(DigestError):
        read_roothash(tmp_path, "tiny")


def test_missing_roothash_file(tmp_path: Path) -> None:
    with pytest.raises(DigestError):
        read_roothash(tmp_path, "tiny")


def test_roothash_name_is_validated(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelNameError):
        read_roothash(tmp_path, "../tiny")


def test_parse_roothash_accepts_uppercase() -> None:
    assert parse_roothash(ROOT.upper()) == bytes.fromhex(ROOT)


# -- manifest digest -------------------------------------------------------------------------


def reference_manifest(model_dir: Path) -> bytes:
    """The encoding exactly as docs/model-lifecycle.md states it, written independently."""
    files = []
    for dirpath, _, names in os.walk(model_dir, followlinks=True):
        for name in names:
            full = Path(dirpath) / name
            files.append((full.relative_to(model_dir).as_posix().encode(), full.read_bytes()))
    out = hashlib.sha256(b"enclave-model-manifest-v1\n")
    for path, data in sorted(files):
        out.update(struct.pack(">I", len(path)) + path)
        out.update(struct.pack(">Q", len(data)) + hashlib.sha256(data).digest())
    return out.digest()


def make_tree(root: Path) -> Path:
    model = root / "m"
    (model / "sub" / "deeper").mkdir(parents=True)
    (model / "b.bin").write_bytes(b"bbb")
    (model / "a.json").write_bytes(b"{}")
    (model / "sub" / "x").write_bytes(b"x" * 5000)
    (model / "sub" / "deeper" / "\u00e9t\u00e9").write_bytes(b"")
    (model / "empty-dir").mkdir()
    return model


def test_manifest_matches_the_documented_encoding(tmp_path: Path) -> None:
    model = make_tree(tmp_path)
    assert manifest_digest(model) == reference_manifest(model)


def test_manifest_known_answer(tmp_path: Path) -> None:
    # Computed outside Python: printf/xxd/sha256sum over the same tree, per the documented bytes.
    model = make_tree(tmp_path)
    assert MANIFEST_HEADER == b"enclave-model-manifest-v1\n"
    assert (
        manifest_digest(model).hex()
        == "546eaefd2c7a574627bd4f371d76134758c27abe86c17b6484d3b62ea2adbcbe"
    )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: (m / "b.bin").write_bytes(b"bbc"),
        lambda m: (m / "b.bin").write_bytes(b"bbbb"),
        lambda m: (m / "b.bin").rename(m / "c.bin"),
        lambda m: (m / "new").write_bytes(b""),
        lambda m: (m / "a.json").unlink(),
        lambda m: (m / "sub" / "x").rename(m / "x"),
    ],
)
def test_any_change_changes_the_manifest(tmp_path: Path, mutate: Callable[[Path], object]) -> None:
    model = make_tree(tmp_path)
    before = manifest_digest(model)
    mutate(model)
    assert manifest_digest(model) != before


def test_manifest_follows_links_inside_and_refuses_links_outside(tmp_path: Path) -> None:
    models = tmp_path / "models"
    model = make_tree(models)
    blobs = models / "blobs"
    blobs.mkdir()
    (blobs / "w").write_bytes(b"weights")
    os.symlink(blobs / "w", model / "weights.bin")
    assert manifest_digest(model, models) == reference_manifest(model)
    os.symlink(tmp_path, model / "escape")
    with pytest.raises(DigestError):
        manifest_digest(model, models)


def test_manifest_refuses_link_loops(tmp_path: Path) -> None:
    model = make_tree(tmp_path)
    os.symlink(model, model / "sub" / "loop")
    with pytest.raises(DigestError):
        manifest_digest(model, tmp_path)


def test_manifest_refuses_special_files(tmp_path: Path) -> None:
    model = make_tree(tmp_path)
    os.mkfifo(model / "fifo")
    with pytest.raises(DigestError):
        manifest_digest(model)


def test_manifest_progress_rises_to_the_total(tmp_path: Path) -> None:
    model = make_tree(tmp_path)
    seen: list[tuple[int, int]] = []
    manifest_digest(model, progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 5005)
    assert seen[-1] == (5005, 5005)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_cache_avoids_rehashing_and_notices_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_tree(tmp_path)
    calls: list[Path] = []
    real = _manifest._hash_file

    def counting(entry: _manifest.FileEntry, *args: Any) -> bytes:
        calls.append(entry.real_path)
        return real(entry, *args)

    monkeypatch.setattr(_manifest, "_hash_file", counting)
    cache = DigestCache(tmp_path / "state" / "cache.json")
    first = manifest_digest(model, cache=cache)
    assert len(calls) == 4
    cache.save()
    reloaded = DigestCache(tmp_path / "state" / "cache.json")
    assert manifest_digest(model, cache=reloaded) == first
    assert len(calls) == 4
    (model / "b.bin").write_bytes(b"BBB")
    os.utime(model / "b.bin", ns=(1, 1))
    assert manifest_digest(model, cache=reloaded) != first
    assert calls[4:] == [(model / "b.bin").resolve()]


def test_corrupt_cache_file_is_ignored(tmp_path: Path) -> None:
    model = make_tree(tmp_path)
    file = tmp_path / "cache.json"
    file.write_text('{"files": [["x", "y"]]}')
    assert manifest_digest(model, cache=DigestCache(file)) == reference_manifest(model)


def test_cancel_stops_hashing(tmp_path: Path) -> None:
    model = make_tree(tmp_path)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DigestCancelledError):
        manifest_digest(model, cancel=cancel)


# -- dm-verity -------------------------------------------------------------------------------


class FakeRunner:
    def __init__(self, answers: dict[str, CommandResult]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    async def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        self.calls.append(list(argv))
        if argv[0] not in self.answers:
            raise DigestError(f"cannot run {argv[0]}")
        return self.answers[argv[0]]


def verity_env(tmp_path: Path, models_dir: Path, dm_name: str | None = "tiny") -> dict[str, Path]:
    sys_block = tmp_path / "sys" / "dev" / "block"
    (sys_block / "253:3").mkdir(parents=True)
    if dm_name is not None:
        (sys_block / "253:3" / "dm").mkdir()
        (sys_block / "253:3" / "dm" / "name").write_text(dm_name + "\n")
    mount_point = str((models_dir / "tiny").resolve()).replace(" ", "\\040")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        f"412 27 253:3 / {mount_point} ro,relatime shared:220 - squashfs /dev/mapper/tiny ro\n"
    )
    return {"mountinfo": mountinfo, "sys_dev_block": sys_block}


def digester(settings: ModelManagerSettings, runner: FakeRunner, env: dict[str, Path]) -> Digester:
    probe = VerityProbe(
        runner, timeout=1.0, mountinfo=env["mountinfo"], sys_dev_block=env["sys_dev_block"]
    )
    return Digester(settings, probe=probe)


def write_roothash(settings: ModelManagerSettings, value: str) -> None:
    settings.roothash_dir.mkdir(parents=True, exist_ok=True)
    (settings.roothash_dir / "tiny.roothash").write_text(value + "\n")


@pytest.mark.parametrize("table", [DMSETUP_TABLE, DMSETUP_TABLE_OPTS])
async def test_verity_digest_when_live_table_matches(
    tmp_path: Path, models_dir: Path, make_settings: SettingsFactory, table: str
) -> None:
    settings = make_settings()
    write_roothash(settings, ROOT)
    runner = FakeRunner({"dmsetup": CommandResult(0, table)})
    spec = Catalog(models_dir).resolve("tiny")
    digest = await digester(settings, runner, verity_env(tmp_path, models_dir)).digest(spec)
    assert (digest.kind, digest.hex, digest.device) == ("dm-verity", ROOT, "tiny")
    assert runner.calls == [["dmsetup", "table", "tiny"]]


async def test_verity_mismatch_refuses(
    tmp_path: Path, models_dir: Path, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    write_roothash(settings, OTHER)
    runner = FakeRunner({"dmsetup": CommandResult(0, DMSETUP_TABLE)})
    spec = Catalog(models_dir).resolve("tiny")
    with pytest.raises(DigestMismatchError):
        await digester(settings, runner, verity_env(tmp_path, models_dir)).digest(spec)


async def test_veritysetup_is_the_fallback(
    tmp_path: Path, models_dir: Path, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    write_roothash(settings, ROOT)
    runner = FakeRunner(
        {"dmsetup": CommandResult(1, ""), "veritysetup": CommandResult(0, VERITYSETUP_STATUS)}
    )
    spec = Catalog(models_dir).resolve("tiny")
    digest = await digester(settings, runner, verity_env(tmp_path, models_dir)).digest(spec)
    assert digest.hex == ROOT
    assert runner.calls[-1] == ["veritysetup", "status", "tiny"]
    write_roothash(settings, OTHER)
    with pytest.raises(DigestMismatchError):
        await digester(settings, runner, verity_env(tmp_path / "b", models_dir)).digest(spec)


async def test_unreadable_live_table_is_an_error(
    tmp_path: Path, models_dir: Path, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    runner = FakeRunner({})
    spec = Catalog(models_dir).resolve("tiny")
    with pytest.raises(DigestError):
        await digester(settings, runner, verity_env(tmp_path, models_dir)).digest(spec)


@pytest.mark.parametrize(
    "table",
    [
        "0 512 verity 1 7:0 7:1 4096 4096 64 1 sha256\n",
        f"0 512 verity 1 7:0 7:1 4096 4096 64 1 sha256 {ROOT[:-1]} -\n",
        "0 512 verity 1 7:0 7:1 4096 4096 64 1 sha256 nothex -\n",
    ],
)
async def test_malformed_verity_table(
    tmp_path: Path, models_dir: Path, make_settings: SettingsFactory, table: str
) -> None:
    settings = make_settings()
    runner = FakeRunner({"dmsetup": CommandResult(0, table)})
    spec = Catalog(models_dir).resolve("tiny")
    with pytest.raises(DigestError):
        await digester(settings, runner, verity_env(tmp_path, models_dir)).digest(spec)


async def test_dm_device_without_verity_target_gets_a_manifest(
    tmp_path: Path, models_dir: Path, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    runner = FakeRunner({"dmsetup": CommandResult(0, "0 512 linear 7:0 0\n")})
    spec = Catalog(models_dir).resolve("tiny")
    digest = await digester(settings, runner, verity_env(tmp_path, models_dir)).digest(spec)
    assert digest.kind == "manifest-sha256"
    assert digest.value == reference_manifest(spec.path)


async def test_no_verity_gives_manifest_even_with_a_roothash_file(
    tmp_path: Path, models_dir: Path, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    write_roothash(settings, ROOT)
    runner = FakeRunner({})
    spec = Catalog(models_dir).resolve("tiny")
    env = verity_env(tmp_path, models_dir, dm_name=None)
    seen: list[float] = []
    digest = await digester(settings, runner, env).digest(spec, seen.append)
    assert (digest.kind, digest.value) == ("manifest-sha256", reference_manifest(spec.path))
    assert runner.calls == []
    assert seen[-1] == 1.0
    assert seen == sorted(seen)
    assert (settings.state_dir / "digest-cache.json").is_file()


async def test_require_verity_refuses_a_plain_directory(
    tmp_path: Path, models_dir: Path, make_settings: SettingsFactory
) -> None:
    settings = make_settings(require_verity=True)
    spec = Catalog(models_dir).resolve("tiny")
    env = verity_env(tmp_path, models_dir, dm_name=None)
    with pytest.raises(DigestError):
        await digester(settings, FakeRunner({}), env).digest(spec)


async def test_verity_without_roothash_file_reports_the_live_hash(
    tmp_path: Path, models_dir: Path, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    runner = FakeRunner({"dmsetup": CommandResult(0, DMSETUP_TABLE)})
    spec = Catalog(models_dir).resolve("tiny")
    digest = await digester(settings, runner, verity_env(tmp_path, models_dir)).digest(spec)
    assert (digest.kind, digest.hex) == ("dm-verity", ROOT)


async def test_manifest_runs_off_the_event_loop(
    models_dir: Path, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    spec = Catalog(models_dir).resolve("tiny")
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def progress(_: float) -> None:
        threads.append(threading.get_ident())

    env = {"mountinfo": models_dir / "no-mountinfo-here", "sys_dev_block": models_dir}
    (models_dir / "no-mountinfo-here").write_text("")
    await asyncio.wait_for(
        digester(settings, FakeRunner({}), env).digest(spec, progress), timeout=10
    )
    assert threads
    assert loop_thread not in threads
