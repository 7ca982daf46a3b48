"""What a verifier accepts: TCB statuses, advisories, measurements, models, nonce.

A policy file is TOML (``.toml``) or JSON (anything else), one table; every key is optional
and unknown keys are an error::

    note = "prod image 2026-12-01, both rollout halves"   # free text for humans
    allowed_tcb_statuses = ["UpToDate"]          # default: only UpToDate
    allowed_advisory_ids = []                    # default: none (any advisory is refused)
    mrtd = ["<96 hex digits>", ...]              # allow-lists; omitted = any value
    rtmr0 = [...]  rtmr1 = [...]  rtmr2 = [...]  rtmr3 = [...]
    mrconfigid = [...]
    allowed_model_digests = ["<hex>", ...]       # omitted = any model (or none)
    require_model = false
    require_nonce = false
    require_enclave_claims = true                # our ohttp-keys and service claims
    insecure_any_measurement = false             # accept ANY measurements: development only
    insecure_allow_debug = false                 # accept debug TDs: NEVER in production
    insecure_accept_service = []                 # accept a service declaring these insecure_*
                                                 # settings (its "insecure" claim), e.g.
                                                 # "insecure_dev_engine": development only

    [gpu]                                        # GPU expectations (attestation.gpu.policy)
    required_count = 8
    ...

Hex may carry a ``0x`` prefix. An allow-list that is present must not be empty (omit the key
to allow any value), so a typo cannot silently mean "allow nothing" or "allow everything".
Each allow-list may hold several values (a rolling upgrade lists the old and the new image).

A policy *pins the measurements* when it has allow-lists for every register in
:data:`PINNED_MEASUREMENTS` (MRTD: the firmware; RTMR0: its configuration; RTMR1: the kernel
(UKI); RTMR2: the command line and initrd, which carry the dm-verity root hash of the service
image). The client sends nothing (no prompt, no load token) under a policy that does not pin
them unless it says ``insecure_any_measurement``, which warns on every verification.

Extending the format: a new key is a field of :class:`Policy` plus one entry in ``_PARSERS``
(file value -> field value) and one in ``_WRITERS`` (field value -> file value); a nested
table (``[gpu]``) is a field whose parser takes a mapping and whose writer returns one.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Final

from attestation.errors import PolicyError
from attestation.gpu.policy import (
    DEFAULT_GPU_POLICY,
    GpuPolicy,
    gpu_policy_from_mapping,
    gpu_policy_to_mapping,
)

__all__ = [
    "DEFAULT_POLICY",
    "INSECURE_ANY_MEASUREMENT",
    "MEASUREMENT_KEYS",
    "PINNED_MEASUREMENTS",
    "TCB_STATUSES",
    "Policy",
    "load_policy",
    "pinned_policy",
    "policy_from_bytes",
    "policy_from_mapping",
    "policy_to_mapping",
    "policy_to_toml",
    "unpinned_message",
]

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
MAX_NOTE: Final = 4096

MEASUREMENT_KEYS: Final = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid")
#: The registers a policy must pin before the client sends anything (see the module doc).
PINNED_MEASUREMENTS: Final = ("mrtd", "rtmr0", "rtmr1", "rtmr2")
INSECURE_ANY_MEASUREMENT: Final = "insecure_any_measurement"


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
    insecure_allow_debug: bool = False
    insecure_any_measurement: bool = False
    #: The service ``insecure_*`` settings (its ``insecure`` claim) this policy accepts; by
    #: default none, so a service running the development engine or the simulated TEE fails
    #: verification with ``service_insecure``.
    insecure_accept_service: frozenset[str] = frozenset()
    note: str = ""
    gpu: GpuPolicy = DEFAULT_GPU_POLICY

    def __post_init__(self) -> None:
        unknown = self.allowed_tcb_statuses - TCB_STATUSES
        if unknown:
            raise PolicyError(f"unknown or forbidden TCB status(es): {sorted(unknown)}")
        if not self.allowed_tcb_statuses:
            raise PolicyError("allowed_tcb_statuses must name at least one status")
        for name in MEASUREMENT_KEYS:
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
        if self.insecure_any_measurement and any(
            getattr(self, name) is not None for name in MEASUREMENT_KEYS
        ):
            raise PolicyError(
                "insecure_any_measurement contradicts the measurement allow-lists: drop one"
            )
        if len(self.note) > MAX_NOTE:
            raise PolicyError(f"note: at most {MAX_NOTE} characters")

    @property
    def rtmrs(self) -> tuple[frozenset[bytes] | None, ...]:
        return (self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3)

    @property
    def unpinned(self) -> tuple[str, ...]:
        """The registers of :data:`PINNED_MEASUREMENTS` this policy has no allow-list for."""
        return tuple(name for name in PINNED_MEASUREMENTS if getattr(self, name) is None)

    @property
    def pins_measurements(self) -> bool:
        return not self.unpinned

    @property
    def insecure_options(self) -> tuple[str, ...]:
        """The ``insecure_*`` options this policy turns on (named in every result)."""
        names = ("insecure_allow_debug", INSECURE_ANY_MEASUREMENT, "insecure_accept_service")
        found = tuple(name for name in names if getattr(self, name))
        return (
            (*found, "gpu.insecure_allow_devtools") if self.gpu.insecure_allow_devtools else found
        )


DEFAULT_POLICY: Final = Policy()


def unpinned_message(policy: Policy) -> str:
    """Why a policy is not enough to send anything, and how to get one that is."""
    return (
        "the measurement policy does not pin "
        + ", ".join(policy.unpinned)
        + ": any TDX VM on a genuine platform would be trusted. Get a policy: "
        "`enclave verify URL --save-policy policy.toml` (trust on first use: check the "
        "printed measurements first), a release's signed policy (--policy-bundle), or "
        "`enclave measure` for an image you built; then pass --policy policy.toml "
        "(library: Verifier(policy=load_policy(path))). For development only: "
        "--insecure-any-measurement (Policy(insecure_any_measurement=True))"
    )


def pinned_policy(measurements: Mapping[str, bytes], *, note: str = "") -> Policy:
    """A policy allowing exactly these measurement values (keys from MEASUREMENT_KEYS)."""
    unknown = set(measurements) - set(MEASUREMENT_KEYS)
    if unknown:
        raise PolicyError(f"not measurement registers: {sorted(unknown)}")
    kwargs: dict[str, object] = {name: frozenset({v}) for name, v in measurements.items()}
    return Policy(note=note, **kwargs)  # type: ignore[arg-type]


def load_policy(path: Path) -> Policy:
    """Load a policy from a TOML (``.toml``) or JSON file; raise PolicyError if invalid."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_POLICY_FILE + 1)
    except OSError as exc:
        raise PolicyError(f"cannot read policy {path}: {exc.strerror}") from exc
    if len(raw) > MAX_POLICY_FILE:
        raise PolicyError(f"policy {path} is larger than {MAX_POLICY_FILE} bytes")
    return policy_from_bytes(raw, path)


def policy_from_bytes(raw: bytes, path: Path) -> Policy:
    """Parse the bytes of the policy file ``path`` (TOML if it ends in ``.toml``, else JSON)."""
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
    unknown = set(data) - set(_PARSERS)
    if unknown:
        raise PolicyError(f"unknown key(s) {sorted(unknown)}; known: {sorted(_PARSERS)}")
    kwargs = {key: _PARSERS[key](value, key) for key, value in data.items()}
    return Policy(**kwargs)  # type: ignore[arg-type]


def policy_to_mapping(policy: Policy) -> dict[str, object]:
    """The file form of ``policy`` (JSON-ready); keys at their default are left out, so
    ``policy_from_mapping(policy_to_mapping(p)) == p``."""
    out: dict[str, object] = {}
    defaults = DEFAULT_POLICY
    for item in sorted(fields(Policy), key=lambda item: item.name != "note"):  # note first
        value = getattr(policy, item.name)
        if value != getattr(defaults, item.name):
            out[item.name] = _WRITERS[item.name](value)
    return out


def policy_to_toml(policy: Policy, *, header: str = "") -> str:
    """The TOML file form of ``policy`` (what ``load_policy`` reads), ``header`` as comments."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    tables: list[tuple[str, Mapping[str, object]]] = []
    for key, value in policy_to_mapping(policy).items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        lines += ["", f"[{name}]"]
        lines += [
            f"{key} = {_toml_value(value)}"
            for key, value in table.items()
            if not isinstance(value, Mapping)
        ]
        for key, value in table.items():  # one level of sub-tables: [gpu.measurements]
            if isinstance(value, Mapping):
                lines += ["", f"[{name}.{key}]"]
                lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"


def _toml_key(key: object) -> str:
    text = str(key)
    return text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else json.dumps(text)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        if len(value) <= 1:
            return "[" + ", ".join(_toml_value(v) for v in value) + "]"
        return "[\n" + "".join(f"    {_toml_value(v)},\n" for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to a policy file")


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


def _string_set(value: object, key: str) -> frozenset[str]:
    return frozenset(_strings(value, key))


def _hex_set(value: object, key: str) -> frozenset[bytes]:
    return frozenset(_hex(item, key) for item in _strings(value, key))


def _bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(f"{key} must be true or false")
    return value


def _gpu(value: object, key: str) -> GpuPolicy:
    if not isinstance(value, Mapping):
        raise PolicyError(f"{key} must be a table")
    return gpu_policy_from_mapping(value)


def _write_gpu(value: object) -> object:
    return gpu_policy_to_mapping(value) if isinstance(value, GpuPolicy) else value


def _note(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise PolicyError(f"{key} must be a string")
    return value


_Parser = Callable[[object, str], object]
_Writer = Callable[[object], object]


def _write_strings(value: object) -> object:
    return sorted(value) if isinstance(value, frozenset) else value


def _write_hex(value: object) -> object:
    return sorted(v.hex() for v in value) if isinstance(value, frozenset) else value


def _write_plain(value: object) -> object:
    return value


_PARSERS: Final[dict[str, _Parser]] = {
    "note": _note,
    "allowed_tcb_statuses": _string_set,
    "allowed_advisory_ids": _string_set,
    "insecure_accept_service": _string_set,
    **dict.fromkeys(MEASUREMENT_KEYS, _hex_set),
    "allowed_model_digests": _hex_set,
    **dict.fromkeys(
        (
            "require_model",
            "require_nonce",
            "require_enclave_claims",
            "insecure_allow_debug",
            INSECURE_ANY_MEASUREMENT,
        ),
        _bool,
    ),
}
_PARSERS["gpu"] = _gpu
_WRITERS: Final[dict[str, _Writer]] = {
    key: _write_hex
    if parser is _hex_set
    else _write_strings
    if parser is _string_set
    else _write_gpu
    if parser is _gpu
    else _write_plain
    for key, parser in _PARSERS.items()
}
