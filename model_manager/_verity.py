"""Finding the dm-verity device a directory is mounted from and reading its live root hash.

1. ``/proc/self/mountinfo``: the mount whose mount point is the longest prefix of the path
   gives the device number ``major:minor``;
2. ``/sys/dev/block/<major>:<minor>/dm/name``: the device-mapper name (none: not dm);
3. ``dmsetup table <name>``: the ``verity`` target line's ``<digest>`` field is the root hash;
   if dmsetup cannot run, ``veritysetup status <name>`` and its ``root hash:`` line.

Commands run through a :class:`CommandRunner` (argv list, never a shell), so tests feed
real-format outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from model_manager.errors import DigestError

__all__ = [
    "CommandResult",
    "CommandRunner",
    "MountEntry",
    "SubprocessRunner",
    "VerityDevice",
    "VerityProbe",
    "find_mount",
    "parse_dmsetup_table",
    "parse_mountinfo",
    "parse_veritysetup_status",
]

logger = logging.getLogger(__name__)

#: Largest command output read, in bytes.
MAX_COMMAND_OUTPUT = 1 << 16

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")
_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    stdout: str


class CommandRunner(Protocol):
    """Runs an argv list (no shell) and returns its exit code and standard output."""

    async def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult: ...


class SubprocessRunner:
    """The production :class:`CommandRunner`: a child process with a minimal environment."""

    async def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
            )
        except OSError as exc:
            raise DigestError(f"cannot run {argv[0]}") from exc
        try:
            async with asyncio.timeout(timeout):
                out, _ = await proc.communicate()
        except TimeoutError as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise DigestError(f"{argv[0]} timed out") from exc
        code = proc.returncode if proc.returncode is not None else -1
        return CommandResult(code, out[:MAX_COMMAND_OUTPUT].decode("utf-8", "replace"))


@dataclass(frozen=True, slots=True)
class MountEntry:
    device: tuple[int, int]
    mount_point: str
    fs_type: str
    source: str


@dataclass(frozen=True, slots=True)
class VerityDevice:
    """A live dm-verity mapping: its device-mapper name and the root hash the kernel enforces."""

    name: str
    root_hash: bytes


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse /proc/self/mountinfo (proc(5)); malformed lines are skipped."""
    entries: list[MountEntry] = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(" "), tail.split(" ")
        if not sep or len(fields) < 6 or len(rest) < 2:
            continue
        major, _, minor = fields[2].partition(":")
        if not (major.isdigit() and minor.isdigit()):
            continue
        entries.append(
            MountEntry(
                device=(int(major), int(minor)),
                mount_point=_unescape(fields[4]),
                fs_type=rest[0],
                source=_unescape(rest[1]),
            )
        )
    return entries


def find_mount(entries: Sequence[MountEntry], path: Path) -> MountEntry | None:
    """The mount holding ``path`` (absolute, resolved): longest mount point, later wins ties."""
    best: MountEntry | None = None
    for entry in entries:
        point = Path(entry.mount_point)
        if (path == point or path.is_relative_to(point)) and (
            best is None or len(point.parts) >= len(Path(best.mount_point).parts)
        ):
            best = entry
    return best


def parse_dmsetup_table(text: str) -> bytes | None:
    """The root hash of the ``verity`` target in ``dmsetup table`` output; None if none.

    Line: ``<start> <length> verity <version> <dev> <hash_dev> <data_block_size>
    <hash_block_size> <num_data_blocks> <hash_start_block> <algorithm> <digest> <salt> ...``
    """
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "verity":
            if len(fields) < 13:
                raise DigestError("verity table line is truncated")
            return _hex_digest(fields[11])
    return None


def parse_veritysetup_status(text: str) -> bytes | None:
    """The ``root hash:`` of ``veritysetup status`` output; None if the mapping is not VERITY."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            values[key.strip().lower()] = value.strip()
    if values.get("type", "").upper() != "VERITY":
        return None
    if "root hash" not in values:
        raise DigestError("veritysetup status has no root hash")
    return _hex_digest(values["root hash"])


class VerityProbe:
    """Finds the live dm-verity device under a path, if any."""

    def __init__(
        self,
        runner: CommandRunner,
        *,
        dmsetup: str = "dmsetup",
        veritysetup: str = "veritysetup",
        timeout: float = 10.0,
        mountinfo: Path = Path("/proc/self/mountinfo"),
        sys_dev_block: Path = Path("/sys/dev/block"),
    ) -> None:
        self._runner = runner
        self._dmsetup = dmsetup
        self._veritysetup = veritysetup
        self._timeout = timeout
        self._mountinfo = mountinfo
        self._sys_dev_block = sys_dev_block

    async def probe(self, path: Path) -> VerityDevice | None:
        """The verity device ``path`` is mounted from, or None when it is not on one."""
        try:
            text = await asyncio.to_thread(self._mountinfo.read_text, "utf-8", "replace")
        except OSError as exc:
            raise DigestError("cannot read the mount table") from exc
        mount = find_mount(parse_mountinfo(text), path)
        if mount is None:
            return None
        name = self._dm_name(mount)
        if name is None:
            return None
        root = await self._live_root_hash(name)
        return None if root is None else VerityDevice(name, root)

    def _dm_name(self, mount: MountEntry) -> str | None:
        major, minor = mount.device
        dm_dir = self._sys_dev_block / f"{major}:{minor}" / "dm"
        try:
            name = (dm_dir / "name").read_text("utf-8").strip()
        except FileNotFoundError:
            name = ""
            if not self._sys_dev_block.is_dir() and mount.source.startswith("/dev/mapper/"):
                name = mount.source.removeprefix("/dev/mapper/")
        except OSError as exc:
            raise DigestError("cannot read the device-mapper name") from exc
        if not name:
            return None
        if not re.fullmatch(r"[A-Za-z0-9._+:=-]{1,127}", name):
            raise DigestError("device-mapper name has unexpected characters")
        return name

    async def _live_root_hash(self, name: str) -> bytes | None:
        try:
            result = await self._runner([self._dmsetup, "table", name], self._timeout)
        except DigestError:
            result = CommandResult(-1, "")
        if result.returncode == 0:
            return parse_dmsetup_table(result.stdout)
        logger.warning("dmsetup table failed for device %s; trying veritysetup status", name)
        result = await self._runner([self._veritysetup, "status", name], self._timeout)
        if result.returncode != 0:
            raise DigestError("cannot read the live device-mapper table")
        return parse_veritysetup_status(result.stdout)


def _hex_digest(text: str) -> bytes:
    if len(text) % 2 or not _HEX.fullmatch(text) or len(text) not in (40, 64, 96, 128):
        raise DigestError("verity root hash is not a hex digest")
    return bytes.fromhex(text)


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)
