"""Model digests: the dm-verity root hash where the model is on a verity device, else a
manifest digest, reported honestly as ``digest_kind`` ``dm-verity`` or ``manifest-sha256``.

Order of checks for a model:

1. read ``<roothash-dir>/<name>.roothash`` if it exists (lowercase hex, 32 bytes);
2. find the device the model directory is mounted from; if it is a live dm-verity mapping,
   its root hash must equal the file's (DigestMismatchError otherwise) and is the digest;
3. otherwise (``require_verity`` off) compute the manifest digest in a worker thread.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from attestation.evidence import DigestKind
from model_manager._manifest import (
    MANIFEST_HEADER,
    DigestCache,
    DigestCancelledError,
    compute_manifest,
    list_files,
)
from model_manager._verity import CommandRunner, SubprocessRunner, VerityDevice, VerityProbe
from model_manager.catalog import ModelSpec, validate_model_name
from model_manager.errors import DigestError, DigestMismatchError
from model_manager.settings import ModelManagerSettings

__all__ = [
    "MANIFEST_HEADER",
    "ROOTHASH_SUFFIX",
    "DigestCancelledError",
    "DigestKind",
    "Digester",
    "ModelDigest",
    "manifest_digest",
    "parse_roothash",
    "read_roothash",
]

logger = logging.getLogger(__name__)

ROOTHASH_SUFFIX = ".roothash"
#: Root-hash size for sha256, the hash deploy/verity uses.
ROOTHASH_BYTES = 32
#: Largest root-hash file read.
MAX_ROOTHASH_FILE = 1024

DigestProgress = Callable[[float], None]


@dataclass(frozen=True, slots=True)
class ModelDigest:
    """A model's digest and how it was obtained."""

    kind: DigestKind
    value: bytes
    device: str | None = None

    @property
    def hex(self) -> str:
        return self.value.hex()


def parse_roothash(text: str) -> bytes:
    """Parse root-hash file content: 64 hex digits and an optional trailing newline."""
    body = text.removesuffix("\n").removesuffix("\r")
    if len(body) != 2 * ROOTHASH_BYTES or not all(c in "0123456789abcdefABCDEF" for c in body):
        raise DigestError(f"root hash must be {2 * ROOTHASH_BYTES} hex digits")
    return bytes.fromhex(body)


def read_roothash(roothash_dir: Path, name: str) -> bytes:
    """Read and validate ``<roothash_dir>/<name>.roothash``: 32 bytes, or DigestError."""
    validate_model_name(name)
    path = roothash_dir / f"{name}{ROOTHASH_SUFFIX}"
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_ROOTHASH_FILE + 1)
    except FileNotFoundError as exc:
        raise DigestError(f"no root-hash file for {name!r}") from exc
    except OSError as exc:
        raise DigestError(f"cannot read the root-hash file for {name!r}") from exc
    if len(raw) > MAX_ROOTHASH_FILE:
        raise DigestError("root-hash file is too large")
    try:
        return parse_roothash(raw.decode("ascii"))
    except UnicodeDecodeError as exc:
        raise DigestError("root-hash file is not ASCII hex") from exc


def manifest_digest(
    model_dir: Path,
    boundary: Path | None = None,
    *,
    cache: DigestCache | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> bytes:
    """The manifest digest of ``model_dir`` (synchronous; run it in a thread)."""
    root = model_dir.resolve(strict=True)
    files = list_files(root, (boundary or root).resolve(strict=True))
    return compute_manifest(files, cache or DigestCache(), progress, cancel)


class Digester:
    """Computes a model's digest per the module docstring."""

    def __init__(
        self,
        settings: ModelManagerSettings,
        *,
        runner: CommandRunner | None = None,
        probe: VerityProbe | None = None,
        cache: DigestCache | None = None,
    ) -> None:
        self._settings = settings
        self._probe = probe or VerityProbe(
            runner or SubprocessRunner(),
            dmsetup=settings.dmsetup_command,
            veritysetup=settings.veritysetup_command,
            timeout=settings.digest_command_timeout_seconds,
        )
        cache_file = settings.state_dir / "digest-cache.json"
        self._cache = cache or DigestCache(cache_file if settings.digest_cache_on_disk else None)

    async def digest(
        self,
        spec: ModelSpec,
        progress: DigestProgress | None = None,
        *,
        on_bytes: Callable[[int, int], None] | None = None,
    ) -> ModelDigest:
        """The digest of ``spec``; ``progress`` gets 0.0..1.0 and ``on_bytes`` (bytes hashed,
        bytes in all) while a manifest is hashed."""
        expected = self._expected_root_hash(spec.name)
        live = await self._probe.probe(spec.path)
        if live is not None:
            return self._check_verity(spec.name, live, expected)
        if self._settings.require_verity:
            raise DigestError("model is not mounted from a dm-verity device")
        if expected is not None:
            logger.warning(
                "model %s has a root-hash file but is not on a dm-verity device; "
                "reporting a manifest digest",
                spec.name,
            )
        value = await self._manifest(spec, progress, on_bytes)
        return ModelDigest("manifest-sha256", value)

    def _expected_root_hash(self, name: str) -> bytes | None:
        path = self._settings.roothash_dir / f"{name}{ROOTHASH_SUFFIX}"
        if not path.exists():
            return None
        return read_roothash(self._settings.roothash_dir, name)

    def _check_verity(self, name: str, live: VerityDevice, expected: bytes | None) -> ModelDigest:
        if expected is None:
            logger.warning(
                "model %s is on dm-verity device %s but has no root-hash file; "
                "reporting the live root hash",
                name,
                live.name,
            )
        elif not hmac.compare_digest(live.root_hash, expected):
            raise DigestMismatchError(
                f"live dm-verity root hash of {name!r} differs from its root-hash file"
            )
        return ModelDigest("dm-verity", live.root_hash, device=live.name)

    async def _manifest(
        self,
        spec: ModelSpec,
        progress: DigestProgress | None,
        on_bytes: Callable[[int, int], None] | None = None,
    ) -> bytes:
        cancel = threading.Event()

        def report(done: int, total: int) -> None:
            if on_bytes is not None:
                on_bytes(done, total)
            if progress is not None:
                progress(1.0 if total == 0 else done / total)

        boundary = self._settings.models_dir
        try:
            return await asyncio.to_thread(
                manifest_digest,
                spec.path,
                boundary,
                cache=self._cache,
                progress=report,
                cancel=cancel,
            )
        except asyncio.CancelledError:
            cancel.set()
            raise
        except OSError as exc:
            raise DigestError("cannot read the model directory") from exc
        finally:
            await asyncio.to_thread(self._cache.save)
