"""The manifest digest of a model directory (digest kind ``manifest-sha256``).

Encoding, version 1 (docs/model-lifecycle.md has the same text for clients)::

    manifest = b"enclave-model-manifest-v1\\n"
               || for each regular file, in ascending byte order of its path:
                    u32be(len(path)) || path || u64be(size) || SHA-256(content)
    digest   = SHA-256(manifest)

``path`` is the file's path relative to the model directory, components joined by ``/``,
encoded as UTF-8. Symbolic links are followed when their target stays inside the models
directory (they are listed under the link's own path); a link escaping it, a link loop, a
non-UTF-8 name or a special file (socket, FIFO, device) is a DigestError. Empty directories
contribute nothing.

Per-file SHA-256 values are cached by (real path, size, mtime_ns). The work is synchronous:
callers run it in a thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from model_manager._files import atomic_write
from model_manager.errors import DigestError

__all__ = ["MANIFEST_HEADER", "DigestCache", "FileEntry", "compute_manifest", "list_files"]

logger = logging.getLogger(__name__)

MANIFEST_HEADER = b"enclave-model-manifest-v1\n"
#: Read size while hashing, in bytes.
HASH_CHUNK = 1 << 20
#: Most per-file entries the cache keeps (the oldest go first).
MAX_CACHE_ENTRIES = 100_000

Progress = Callable[[int, int], None]
CacheKey = tuple[str, int, int]


class DigestCancelledError(DigestError):
    """The computation was cancelled (a newer transition superseded it)."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    relative: bytes
    real_path: Path
    size: int
    mtime_ns: int


class DigestCache:
    """Per-file SHA-256 values keyed by (real path, size, mtime_ns); optionally on disk."""

    def __init__(self, file: Path | None = None) -> None:
        self._file = file
        self._lock = threading.Lock()
        self._entries: dict[CacheKey, bytes] = {}
        self._loaded = file is None

    def get(self, key: CacheKey) -> bytes | None:
        with self._lock:
            self._load()
            return self._entries.get(key)

    def put(self, key: CacheKey, value: bytes) -> None:
        with self._lock:
            self._load()
            self._entries.pop(key, None)
            self._entries[key] = value
            while len(self._entries) > MAX_CACHE_ENTRIES:
                del self._entries[next(iter(self._entries))]

    def save(self) -> None:
        """Write the cache file atomically (no-op without one); failures are only logged."""
        if self._file is None:
            return
        with self._lock:
            rows = [[p, s, m, v.hex()] for (p, s, m), v in self._entries.items()]
        try:
            atomic_write(self._file, json.dumps({"version": 1, "files": rows}).encode())
        except OSError as exc:
            logger.warning("digest cache not saved: %s", type(exc).__name__)

    def _load(self) -> None:
        if self._loaded or self._file is None:
            return
        self._loaded = True
        try:
            data = json.loads(self._file.read_bytes())
            for path, size, mtime, value in data["files"]:
                digest = bytes.fromhex(value)
                if len(digest) == 32:
                    self._entries[(str(path), int(size), int(mtime))] = digest
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning("digest cache unreadable; starting empty")
            self._entries.clear()


def list_files(model_dir: Path, boundary: Path) -> list[FileEntry]:
    """Every regular file under ``model_dir`` (links followed inside ``boundary``), sorted."""
    found: list[FileEntry] = []
    _walk(model_dir, b"", boundary, frozenset(), found)
    found.sort(key=lambda entry: entry.relative)
    return found


def compute_manifest(
    files: list[FileEntry],
    cache: DigestCache,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> bytes:
    """The version-1 manifest digest of ``files`` (as :func:`list_files` returns them)."""
    total = sum(entry.size for entry in files)
    done = 0
    outer = hashlib.sha256(MANIFEST_HEADER)
    if progress is not None:
        progress(0, total)
    for entry in files:
        key = (str(entry.real_path), entry.size, entry.mtime_ns)
        file_hash = cache.get(key)
        if file_hash is None:
            file_hash = _hash_file(entry, done, total, progress, cancel)
            cache.put(key, file_hash)
        done += entry.size
        if progress is not None:
            progress(done, total)
        outer.update(struct.pack(">I", len(entry.relative)) + entry.relative)
        outer.update(struct.pack(">Q", entry.size) + file_hash)
    return outer.digest()


def _walk(
    directory: Path,
    prefix: bytes,
    boundary: Path,
    ancestors: frozenset[tuple[int, int]],
    found: list[FileEntry],
) -> None:
    try:
        info = directory.stat()
        children = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        raise DigestError("cannot list the model directory") from exc
    here = (info.st_dev, info.st_ino)
    if here in ancestors:
        raise DigestError("symbolic link loop in the model directory")
    ancestors = ancestors | {here}
    for child in children:
        try:
            name = child.name.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DigestError("model directory holds a name that is not UTF-8") from exc
        relative = prefix + name
        path = Path(child.path)
        if child.is_symlink():
            path = path.resolve()
            if path == boundary or not path.is_relative_to(boundary):
                raise DigestError("symbolic link in the model directory escapes models-dir")
        try:
            st = path.stat()
        except OSError as exc:
            raise DigestError("cannot stat a file of the model directory") from exc
        if stat.S_ISDIR(st.st_mode):
            _walk(path, relative + b"/", boundary, ancestors, found)
        elif stat.S_ISREG(st.st_mode):
            found.append(FileEntry(relative, path, st.st_size, st.st_mtime_ns))
        else:
            raise DigestError("model directory holds a special file")


def _hash_file(
    entry: FileEntry,
    base: int,
    total: int,
    progress: Progress | None,
    cancel: threading.Event | None,
) -> bytes:
    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    read = 0
    try:
        with entry.real_path.open("rb", buffering=0) as handle:
            while n := handle.readinto(buffer):
                if cancel is not None and cancel.is_set():
                    raise DigestCancelledError("digest computation cancelled")
                digest.update(view[:n])
                read += n
                if progress is not None:
                    progress(base + min(read, entry.size), total)
            st = os.fstat(handle.fileno())
    except OSError as exc:
        raise DigestError("cannot read a file of the model directory") from exc
    if read != entry.size or st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns:
        raise DigestError("a model file changed while it was hashed")
    return digest.digest()
