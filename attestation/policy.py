"""What a verifier accepts: TCB statuses, advisories, measurements, models, nonce.

A policy file is TOML (``.toml``) or JSON (anything else), one flat table; every key is
optional and unknown keys are an error::

    allowed_tcb_statuses = ["UpToDate"]          # default: only UpToDate
    allowed_advisory_ids = []                    # default: none (any advisory is refused)
    mrtd = ["<96 hex digits>", ...]              # allow-lists; omitted = any value
    rtmr0 = [...]  rtmr1 = [...]  rtmr2 = [...]  rtmr3 = [...]
    mrconfigid = [...]
    allowed_model_digests = ["<hex>", ...]       # omitted = any model (or none)
    require_model = false
    require_nonce = false
    require_enclave_claims = true                # our ohttp-keys and service claims
    insecure_allow_debug = false                 # accept debug TDs: NEVER in production

Hex may carry a ``0x`` prefix. An allow-list that is present must not be empty (omit the key
to allow any value), so a typo cannot silently mean "allow nothing" or "allow everything".
"""

from __future__ import annotations

import json
import logging
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from attestation.errors import PolicyError

__all__ = ["DEFAULT_POLICY", "TCB_STATUSES", "Policy", "load_policy", "policy_from_mapping"]

logger = logging.getLogger(__name__)

# The TCB statuses dcap-qvl reports. "Revoked" can never be allowed.
TCB_STATUSES: Final = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
    }
)
MEASUREMENT_SIZE: Final = 48
MAX_DIGEST_SIZE: Final = 64
MAX_POLICY_FILE: Final = 1 << 20

_MEASUREMENT_KEYS: Final = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid")
_BOOL_KEYS: Final = (
    "require_model",
    "require_nonce",
    "require_enclave_claims",
    "insecure_allow_debug",
)
_KEYS: Final = frozenset(
    {"allowed_tcb_statuses", "allowed_advisory_ids", "allowed_model_digests"}
    | set(_MEASUREMENT_KEYS)
    | set(_BOOL_KEYS)
)


@dataclass(frozen=True, slots=True)
class Policy:
    allowed_tcb_statuses: frozenset[str] = frozenset({"UpToDate"})
    allowed_advisory_ids: frozenset[str] = frozenset()
    mrtd: frozenset[bytes] | None = None
    rtmr0: frozenset[bytes] | None = None
    rtmr1: frozenset[bytes] | None = None
    rtmr2: frozenset[bytes] | None = None
    rtmr3: frozenset[bytes] | None = None
    mrconfigid: frozenset[bytes] | None = None
    allowed_model_digests: frozenset[bytes] | None = None
    require_model: bool = False
    require_nonce: bool = False
    require_enclave_claims: bool = True
    insecure_allow_debug: bool = field(default=False)

    def __post_init__(self) -> None:
        unknown = self.allowed_tcb_statuses - TCB_STATUSES
        if unknown:
            raise PolicyError(f"unknown or forbidden TCB status(es): {sorted(unknown)}")
        if not self.allowed_tcb_statuses:
            raise PolicyError("allowed_tcb_statuses must name at least one status")
        for name in _MEASUREMENT_KEYS:
            values: frozenset[bytes] | None = getattr(self, name)
            if values is None:
                continue
            if not values:
                raise PolicyError(f"{name}: an allow-list must not be empty (omit it instead)")
            if any(len(v) != MEASUREMENT_SIZE for v in values):
                raise PolicyError(f"{name}: every value must be {MEASUREMENT_SIZE} bytes")
        digests = self.allowed_model_digests
        if digests is not None and (
            not digests or any(not 0 < len(d) <= MAX_DIGEST_SIZE for d in digests)
        ):
            raise PolicyError("allowed_model_digests: non-empty list of 1..64-byte digests")
        if self.insecure_allow_debug:
            logger.warning("INSECURE: this policy accepts TDs in debug mode")

    @property
    def rtmrs(self) -> tuple[frozenset[bytes] | None, ...]:
        return (self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3)


DEFAULT_POLICY: Final = Policy()


def load_policy(path: Path) -> Policy:
    """Load a policy from a TOML (``.toml``) or JSON file; raise PolicyError if invalid."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_POLICY_FILE + 1)
    except OSError as exc:
        raise PolicyError(f"cannot read policy {path}: {exc.strerror}") from exc
    if len(raw) > MAX_POLICY_FILE:
        raise PolicyError(f"policy {path} is larger than {MAX_POLICY_FILE} bytes")
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise PolicyError(f"policy {path} is not valid {path.suffix or 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"policy {path} must be a table / object at the top level")
    try:
        return policy_from_mapping(data)
    except PolicyError as exc:
        raise PolicyError(f"policy {path}: {exc}") from exc


def policy_from_mapping(data: Mapping[str, object]) -> Policy:
    unknown = set(data) - _KEYS
    if unknown:
        raise PolicyError(f"unknown key(s) {sorted(unknown)}; known: {sorted(_KEYS)}")
    kwargs: dict[str, object] = {}
    for key in ("allowed_tcb_statuses", "allowed_advisory_ids"):
        if key in data:
            kwargs[key] = frozenset(_strings(data[key], key))
    for key in (*_MEASUREMENT_KEYS, "allowed_model_digests"):
        if key in data:
            kwargs[key] = frozenset(_hex(item, key) for item in _strings(data[key], key))
    for key in _BOOL_KEYS:
        if key in data:
            value = data[key]
            if not isinstance(value, bool):
                raise PolicyError(f"{key} must be true or false")
            kwargs[key] = value
    return Policy(**kwargs)  # type: ignore[arg-type]


def _strings(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{key} must be a list of strings")
    return list(value)


_HEX = re.compile(r"(?:0x)?((?:[0-9a-fA-F]{2})+)")


def _hex(text: str, key: str) -> bytes:
    match = _HEX.fullmatch(text)
    if match is None:
        raise PolicyError(f"{key}: {text[:24]!r} is not an even number of hex digits")
    return bytes.fromhex(match.group(1))
