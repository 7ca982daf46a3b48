"""Collateral for DCAP verification: from a file, a folder keyed by FMSPC, or a PCCS.

Collateral is kept in dcap-qvl's ``QuoteCollateralV3`` JSON layout (the layout of the
``*_collateral.json`` samples: PEM issuer chains, hex CRLs and signatures, TCB info and QE
identity as JSON text). Offline folders hold one file per platform family, named
``<FMSPC>.json`` with the FMSPC as 12 upper-case hex digits (``B0C06F000000.json``).

The PCCS source fetches with :mod:`attestation._pccs` (paths under
``<url>/{sgx,tdx}/certification/v4/``: ``pckcrl``, ``tcb``, ``qe/identity``, ``rootcacrl``; not
``dcap_qvl.get_collateral``, whose runtime threads crashed the process at exit after a failed
fetch) and caches each answer on disk as ``<tee>-<ca>-<FMSPC>.json`` until the earliest
``nextUpdate`` of its TCB info, QE identity and CRLs. The per-platform PCK chain is not
cached: the quote carries its own.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509

from attestation._dcap import collateral_from_json, quote_ids
from attestation._pccs import PccsFetchError, fetch_collateral
from attestation.errors import CollateralError

__all__ = [
    "Collateral",
    "CollateralSource",
    "OfflineCollateral",
    "PccsCollateral",
]

logger = logging.getLogger(__name__)

_FMSPC = re.compile(r"^[0-9A-F]{12}$")
MAX_COLLATERAL_FILE = 4 << 20


@dataclass(frozen=True, slots=True)
class Collateral:
    """Verified-parseable collateral, with the FMSPC it is for and when it stops being valid."""

    json_text: str
    fmspc: str | None
    next_update: int  # Unix seconds: the earliest nextUpdate of TCB info, QE identity, CRLs

    @classmethod
    def from_json(cls, text: str) -> Collateral:
        collateral_from_json(text)  # dcap-qvl must accept it
        try:
            data = json.loads(text)
            tcb_info = json.loads(data["tcb_info"])
            qe_identity = json.loads(data["qe_identity"])
            updates = [_iso(tcb_info["nextUpdate"]), _iso(qe_identity["nextUpdate"])]
            for key in ("pck_crl", "root_ca_crl"):
                crl = x509.load_der_x509_crl(_crl_bytes(data[key]))
                if crl.next_update_utc is not None:
                    updates.append(int(crl.next_update_utc.timestamp()))
            fmspc = tcb_info.get("fmspc")
        except (ValueError, KeyError, TypeError) as exc:
            raise CollateralError(f"collateral is malformed: {exc}") from exc
        return cls(
            json_text=text,
            fmspc=str(fmspc).upper() if fmspc is not None else None,
            next_update=min(updates),
        )

    @classmethod
    def load(cls, path: Path) -> Collateral:
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_COLLATERAL_FILE + 1)
        except OSError as exc:
            raise CollateralError(f"cannot read collateral {path}: {exc.strerror}") from exc
        if len(raw) > MAX_COLLATERAL_FILE:
            raise CollateralError(f"collateral file {path} is larger than {MAX_COLLATERAL_FILE}")
        try:
            return cls.from_json(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise CollateralError(f"collateral {path} is not UTF-8 JSON") from exc


def _iso(value: object) -> int:
    if not isinstance(value, str):
        raise ValueError("nextUpdate must be a string")
    return int(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())


def _crl_bytes(value: object) -> bytes:
    if isinstance(value, str):
        return bytes.fromhex(value)
    if isinstance(value, list) and all(isinstance(b, int) for b in value):
        return bytes(value)
    raise ValueError("a CRL must be hex or a byte list")


class CollateralSource(Protocol):
    """Where a verifier gets the collateral for a quote."""

    async def get_collateral(self, quote: bytes) -> Collateral: ...


class OfflineCollateral:
    """Collateral from one JSON file, or from a folder of ``<FMSPC>.json`` files."""

    def __init__(self, path: Path) -> None:
        self._path = path

    async def get_collateral(self, quote: bytes) -> Collateral:
        if self._path.is_dir():
            fmspc = quote_ids(quote).fmspc.upper()
            if not _FMSPC.match(fmspc):
                raise CollateralError(f"quote has a malformed FMSPC {fmspc!r}")
            collateral = Collateral.load(self._path / f"{fmspc}.json")
        else:
            collateral = Collateral.load(self._path)
            fmspc = quote_ids(quote).fmspc.upper()
        if collateral.fmspc is not None and collateral.fmspc != fmspc:
            raise CollateralError(
                f"collateral is for FMSPC {collateral.fmspc}, the quote is from {fmspc}"
            )
        return collateral


class PccsCollateral:
    """Collateral fetched from a PCCS (or Intel PCS) URL, cached on disk until nextUpdate."""

    def __init__(
        self,
        url: str,
        cache_dir: Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise CollateralError(f"PCCS URL must be http(s): {url!r}")
        self._url = url
        self._cache_dir = cache_dir
        self._clock = clock
        self.fetches = 0  # how many times the PCCS was asked (for tests and metrics)

    async def get_collateral(self, quote: bytes) -> Collateral:
        ids = quote_ids(quote)
        if not _FMSPC.match(ids.fmspc.upper()) or ids.ca not in ("platform", "processor"):
            raise CollateralError("quote has a malformed FMSPC or PCK CA")
        cache_file = (
            None
            if self._cache_dir is None
            else self._cache_dir / f"{ids.tee}-{ids.ca}-{ids.fmspc.upper()}.json"
        )
        cached = self._read_cache(cache_file)
        if cached is not None:
            return cached
        try:
            text = await fetch_collateral(self._url, ids)
        except PccsFetchError as exc:
            raise CollateralError(f"PCCS fetch from {self._url} failed: {exc}") from exc
        finally:
            self.fetches += 1
        collateral = Collateral.from_json(text)
        logger.info(
            "fetched collateral for FMSPC %s, valid until %d", ids.fmspc, collateral.next_update
        )
        if cache_file is not None:
            _write_atomic(cache_file, text)
        return collateral

    def _read_cache(self, cache_file: Path | None) -> Collateral | None:
        if cache_file is None or not cache_file.is_file():
            return None
        try:
            collateral = Collateral.load(cache_file)
        except CollateralError:
            logger.warning("ignoring unreadable collateral cache file %s", cache_file)
            return None
        if collateral.next_update <= self._clock():
            logger.info("cached collateral %s passed its nextUpdate", cache_file.name)
            return None
        return collateral


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".collateral-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CollateralError(f"cannot write collateral cache {path}: {exc.strerror}") from exc
