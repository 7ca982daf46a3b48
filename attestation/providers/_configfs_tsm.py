"""Quotes from the Linux configfs-tsm report interface (``/sys/kernel/config/tsm/report``).

The ABI (``Documentation/ABI/testing/configfs-tsm``): ``mkdir`` an entry under the report
root; the kernel populates ``inblob`` (write-only, up to 64 bytes), ``outblob`` (the report,
read-only), ``provider`` (e.g. ``tdx_guest``) and ``generation``, which counts writes to the
entry. Conflicts with another writer are detected by reading ``generation`` before the
write and checking, after reading ``outblob``, that exactly one write happened.

One attempt here: create a private entry, check ``provider``, read ``generation`` (g0), write
``inblob``, wait until ``generation`` moves (on a real kernel it already has), require it to
be g0 + 1, read ``outblob``, require ``generation`` unchanged, remove the entry. A race
(another writer) retries up to ``max_race_retries`` times; ``EBUSY``/``EAGAIN`` back off
exponentially; everything is bounded by ``timeout``. File I/O runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
import time
from pathlib import Path
from typing import NoReturn, Protocol

from attestation.errors import QuoteProviderError, QuoteProviderUnavailableError
from attestation.providers._types import ProviderName, QuoteResult, check_report_data

__all__ = [
    "DEFAULT_TSM_REPORT_ROOT",
    "TDX_TSM_PROVIDER",
    "ConfigfsTsmProvider",
    "OsTsmFileOps",
    "TsmFileOps",
    "tsm_report_root_usable",
]

logger = logging.getLogger(__name__)

DEFAULT_TSM_REPORT_ROOT = Path("/sys/kernel/config/tsm/report")
TDX_TSM_PROVIDER = "tdx_guest"

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_RACE_RETRIES = 3
DEFAULT_BUSY_BACKOFF_S = 0.05
MAX_BUSY_BACKOFF_S = 1.0
_FIRST_POLL_S = 0.001
_MAX_POLL_S = 0.05
_THREAD_GRACE_S = 5.0  # beyond the deadline, for a syscall the kernel never returns from
_RETRYABLE_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN, errno.EINTR})


class TsmFileOps(Protocol):
    """The four file operations the provider needs; a seam so tests can inject EBUSY."""

    def make_entry(self, path: Path) -> None: ...

    def remove_entry(self, path: Path) -> None: ...

    def read(self, path: Path) -> bytes: ...

    def write(self, path: Path, data: bytes) -> None: ...


class OsTsmFileOps:
    """The real operations: configfs attributes are read and written with plain syscalls."""

    def make_entry(self, path: Path) -> None:
        os.mkdir(path, 0o700)

    def remove_entry(self, path: Path) -> None:
        os.rmdir(path)  # configfs removes the attributes with the directory

    def read(self, path: Path) -> bytes:
        with open(path, "rb", buffering=0) as f:
            return f.read()

    def write(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)  # configfs commits a binary attribute on release
        if written != len(data):
            raise OSError(errno.EIO, f"short write to {path.name}")


def tsm_report_root_usable(root: Path) -> bool:
    """True when ``root`` is a directory this process may create report entries in."""
    return root.is_dir() and os.access(root, os.W_OK | os.X_OK)


class _BusyError(Exception):
    """The TSM answered EBUSY/EAGAIN: back off and try again."""


class _RaceError(Exception):
    """``generation`` showed another writer: start a fresh attempt."""


class ConfigfsTsmProvider:
    """TDX quotes through configfs-tsm, generation-checked."""

    name: ProviderName = "configfs-tsm"

    def __init__(
        self,
        root: Path = DEFAULT_TSM_REPORT_ROOT,
        *,
        file_ops: TsmFileOps | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_race_retries: int = DEFAULT_MAX_RACE_RETRIES,
        busy_backoff: float = DEFAULT_BUSY_BACKOFF_S,
        expected_provider: str = TDX_TSM_PROVIDER,
    ) -> None:
        if timeout <= 0 or busy_backoff <= 0 or max_race_retries < 0:
            raise ValueError("timeout and busy_backoff must be positive, retries non-negative")
        self._root = Path(root)
        self._ops: TsmFileOps = file_ops if file_ops is not None else OsTsmFileOps()
        self._timeout = timeout
        self._max_race_retries = max_race_retries
        self._busy_backoff = busy_backoff
        self._expected_provider = expected_provider

    def __repr__(self) -> str:
        return f"ConfigfsTsmProvider(root={str(self._root)!r})"

    async def get_quote(self, report_data: bytes) -> QuoteResult:
        data = check_report_data(report_data)
        deadline = time.monotonic() + self._timeout
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout + _THREAD_GRACE_S):
                quote = await asyncio.to_thread(self._quote_blocking, data, deadline)
        except TimeoutError as exc:
            raise QuoteProviderError("configfs-tsm: the kernel did not answer in time") from exc
        logger.info(
            "configfs-tsm quote: %d bytes in %.3f s", len(quote), time.monotonic() - started
        )
        return QuoteResult(quote=quote, provider=self.name)

    # --- blocking part (worker thread) ----------------------------------------------------

    def _quote_blocking(self, data: bytes, deadline: float) -> bytes:
        races = 0
        backoff = self._busy_backoff
        while True:
            try:
                return self._attempt(data, deadline)
            except _BusyError as exc:
                if time.monotonic() + backoff > deadline:
                    raise QuoteProviderError("configfs-tsm: busy until the timeout") from exc
                logger.info("configfs-tsm busy; retrying in %.3f s", backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BUSY_BACKOFF_S)
            except _RaceError as exc:
                races += 1
                if races > self._max_race_retries:
                    raise QuoteProviderError(
                        f"configfs-tsm: another writer raced {races} attempts"
                    ) from exc
                logger.warning("configfs-tsm generation race (attempt %d); retrying", races)

    def _attempt(self, data: bytes, deadline: float) -> bytes:
        entry = self._root / f"enclave-{os.getpid()}-{secrets.token_hex(8)}"
        try:
            self._ops.make_entry(entry)
        except FileNotFoundError as exc:
            raise QuoteProviderUnavailableError(
                f"configfs-tsm: no report directory at {self._root}"
            ) from exc
        except OSError as exc:
            self._raise_os(exc, "create a report entry")
        try:
            return self._generate(entry, data, deadline)
        finally:
            try:
                self._ops.remove_entry(entry)
            except OSError as exc:
                logger.warning("configfs-tsm: could not remove %s (errno %s)", entry, exc.errno)

    def _generate(self, entry: Path, data: bytes, deadline: float) -> bytes:
        provider = self._read(entry / "provider").decode("ascii", "replace").strip()
        if provider != self._expected_provider:
            raise QuoteProviderError(
                f"configfs-tsm: provider is {provider!r}, expected {self._expected_provider!r}"
            )
        before = self._generation(entry)
        self._write(entry / "inblob", data)
        written = self._await_generation_change(entry, before, deadline)
        if written != before + 1:
            raise _RaceError
        outblob = self._read(entry / "outblob")
        if self._generation(entry) != written:
            raise _RaceError
        if not outblob:
            raise QuoteProviderError("configfs-tsm: empty outblob")
        return outblob

    def _await_generation_change(self, entry: Path, before: int, deadline: float) -> int:
        """Poll ``generation`` until it moves; a real kernel has moved it before write returns."""
        delay = _FIRST_POLL_S
        while True:
            current = self._generation(entry)
            if current != before:
                return current
            if time.monotonic() >= deadline:
                raise QuoteProviderError("configfs-tsm: timed out waiting for the report")
            time.sleep(delay)
            delay = min(delay * 2, _MAX_POLL_S)

    def _generation(self, entry: Path) -> int:
        text = self._read(entry / "generation").strip()
        if not text.isdigit():
            raise QuoteProviderError("configfs-tsm: generation is not a number")
        return int(text)

    def _read(self, path: Path) -> bytes:
        try:
            return self._ops.read(path)
        except OSError as exc:
            self._raise_os(exc, f"read {path.name}")

    def _write(self, path: Path, data: bytes) -> None:
        try:
            self._ops.write(path, data)
        except OSError as exc:
            self._raise_os(exc, f"write {path.name}")

    @staticmethod
    def _raise_os(exc: OSError, action: str) -> NoReturn:
        if exc.errno in _RETRYABLE_ERRNOS:
            raise _BusyError from exc
        raise QuoteProviderError(
            f"configfs-tsm: could not {action}: {errno.errorcode.get(exc.errno or 0, exc.errno)}"
        ) from exc
