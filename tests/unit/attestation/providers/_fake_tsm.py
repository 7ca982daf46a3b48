"""A fake configfs-tsm: real files in a temp dir, driven by a helper thread like the kernel.

It is also the provider's ``TsmFileOps``: ``make_entry`` populates the attributes the way
configfs does on ``mkdir``, ``remove_entry`` removes them with the directory, and a write to
``inblob`` is handed to the "kernel" thread, which writes ``outblob`` and then bumps
``generation``. Knobs make it misbehave: a concurrent writer (generation jumps by two, or
moves while outblob is read), EBUSY on outblob reads, a kernel that never answers, a
different provider name.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

ATTRIBUTES = ("inblob", "outblob", "generation", "provider", "auxblob")


def fake_quote(inblob: bytes) -> bytes:
    return b"FAKE-TDX-QUOTE:" + inblob


class FakeTsmKernel:
    def __init__(
        self,
        root: Path,
        *,
        provider: str = "tdx_guest",
        quote: Callable[[bytes], bytes] = fake_quote,
        respond: bool = True,
        racing_writes: int = 0,
        racing_reads: int = 0,
        busy_reads: int = 0,
    ) -> None:
        self.root = root
        self.provider = provider
        self.quote = quote
        self.respond = respond
        self.racing_writes = racing_writes
        self.racing_reads = racing_reads
        self.busy_reads = busy_reads
        self.entries_made: list[str] = []
        self.inblobs: list[bytes] = []
        self._lock = threading.Lock()
        self._requests: queue.Queue[Path | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="fake-tsm-kernel", daemon=True)
        root.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> FakeTsmKernel:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._requests.put(None)
        self._thread.join(timeout=10)

    # --- TsmFileOps --------------------------------------------------------------------

    def make_entry(self, path: Path) -> None:
        os.mkdir(path, 0o700)
        (path / "inblob").write_bytes(b"")
        (path / "outblob").write_bytes(b"")
        (path / "auxblob").write_bytes(b"")
        (path / "generation").write_bytes(b"0\n")
        (path / "provider").write_bytes(self.provider.encode() + b"\n")
        self.entries_made.append(path.name)

    def remove_entry(self, path: Path) -> None:
        with self._lock:
            for name in ATTRIBUTES:
                (path / name).unlink(missing_ok=True)
            for leftover in path.glob(".*"):
                leftover.unlink()
            os.rmdir(path)

    def read(self, path: Path) -> bytes:
        if path.name == "outblob":
            with self._lock:
                if self.busy_reads > 0:
                    self.busy_reads -= 1
                    raise OSError(errno.EBUSY, "Device or resource busy")
                if self.racing_reads > 0:
                    self.racing_reads -= 1
                    self._bump(path.parent, 1)  # another writer slipped in during our read
        return path.read_bytes()

    def write(self, path: Path, data: bytes) -> None:
        if path.name != "inblob":
            raise PermissionError(errno.EACCES, "read-only attribute")
        if len(data) > 64:
            raise OSError(errno.EINVAL, "inblob too large")
        path.write_bytes(data)
        self._requests.put(path.parent)

    # --- the "kernel" --------------------------------------------------------------------

    def _run(self) -> None:
        while (entry := self._requests.get()) is not None:
            if not self.respond:
                continue
            with self._lock:
                try:
                    inblob = (entry / "inblob").read_bytes()
                    self.inblobs.append(inblob)
                    _atomic_write(entry / "outblob", self.quote(inblob))
                    step = 1
                    if self.racing_writes > 0:
                        self.racing_writes -= 1
                        step = 2  # a concurrent writer's inblob write counted too
                    self._bump(entry, step)
                except FileNotFoundError:
                    continue  # the entry was removed before the kernel got to it

    def _bump(self, entry: Path, step: int) -> None:
        current = int((entry / "generation").read_bytes())
        _atomic_write(entry / "generation", f"{current + step}\n".encode())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
