"""What a verifier accepts of the GPUs: count, architectures, versions, measurements.

In a policy file this is the ``[gpu]`` table (``"gpu"`` object in JSON); every key is
optional and unknown keys are an error::

    [gpu]
    required_count = 8                      # at least this many verified GPUs; default 0
    architectures = ["hopper", "blackwell"] # omitted = any supported architecture
    min_driver_version = "550.90.07"        # dotted decimal, compared numerically
    min_vbios_version = "96.00.9f.00.01"    # dotted hex, compared numerically
    insecure_allow_devtools = false         # accept GPUs in CC DEVTOOLS mode: NEVER in production

    [gpu.measurements]                      # SPDM measurement index (1-based) -> allow-list
    2 = ["8048dfd1...", ...]                # 48-byte SHA-384 values, hex
    # an index that is not listed may hold any value

The defaults require no GPU, but GPU evidence that is present is always verified in full.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from attestation.errors import PolicyError
from attestation.gpu._certs import ARCHITECTURES
from attestation.gpu.evidence import MAX_GPUS

__all__ = [
    "DEFAULT_GPU_POLICY",
    "GpuPolicy",
    "driver_version_key",
    "gpu_policy_from_mapping",
    "gpu_policy_to_mapping",
    "vbios_version_key",
]

logger = logging.getLogger(__name__)

GPU_MEASUREMENT_SIZE: Final = 48
_KEYS: Final = frozenset(
    {
        "required_count",
        "architectures",
        "min_driver_version",
        "min_vbios_version",
        "measurements",
        "insecure_allow_devtools",
    }
)
_DRIVER = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6}){1,3}")
_VBIOS = re.compile(r"[0-9a-fA-F]{2}(\.[0-9a-fA-F]{2}){4}")
_HEX = re.compile(r"(?:0x)?((?:[0-9a-fA-F]{2})+)")


def driver_version_key(text: str) -> tuple[int, ...]:
    """``"550.90.07"`` -> ``(550, 90, 7)``; raises ValueError when not dotted decimal."""
    if not _DRIVER.fullmatch(text):
        raise ValueError(f"not a driver version: {text[:32]!r}")
    return tuple(int(part) for part in text.split("."))


def vbios_version_key(text: str) -> tuple[int, ...]:
    """``"96.00.9f.00.01"`` -> ``(0x96, 0, 0x9f, 0, 1)``; raises ValueError otherwise."""
    if not _VBIOS.fullmatch(text):
        raise ValueError(f"not a VBIOS version: {text[:32]!r}")
    return tuple(int(part, 16) for part in text.split("."))


@dataclass(frozen=True, slots=True)
class GpuPolicy:
    required_count: int = 0
    architectures: frozenset[str] | None = None
    min_driver_version: str | None = None
    min_vbios_version: str | None = None
    measurements: Mapping[int, frozenset[bytes]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    insecure_allow_devtools: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.required_count <= MAX_GPUS:
            raise PolicyError(f"gpu.required_count must be 0..{MAX_GPUS}")
        if self.architectures is not None and (
            not self.architectures or not self.architectures <= ARCHITECTURES
        ):
            raise PolicyError(f"gpu.architectures: a non-empty subset of {sorted(ARCHITECTURES)}")
        try:
            if self.min_driver_version is not None:
                driver_version_key(self.min_driver_version)
            if self.min_vbios_version is not None:
                vbios_version_key(self.min_vbios_version)
        except ValueError as exc:
            raise PolicyError(f"gpu: {exc}") from exc
        for index, values in self.measurements.items():
            if not 1 <= index <= 255:
                raise PolicyError(f"gpu.measurements: index {index} is not 1..255")
            if not values or any(len(v) != GPU_MEASUREMENT_SIZE for v in values):
                raise PolicyError(
                    f"gpu.measurements.{index}: a non-empty list of {GPU_MEASUREMENT_SIZE}-byte "
                    "values (omit the index to allow any value)"
                )
        object.__setattr__(self, "measurements", MappingProxyType(dict(self.measurements)))
        if self.insecure_allow_devtools:
            logger.warning("INSECURE: this policy accepts GPUs in CC DEVTOOLS mode")


DEFAULT_GPU_POLICY: Final = GpuPolicy()


def gpu_policy_from_mapping(data: Mapping[str, object]) -> GpuPolicy:
    """Build a :class:`GpuPolicy` from a policy file's ``gpu`` table."""
    unknown = set(data) - _KEYS
    if unknown:
        raise PolicyError(f"gpu: unknown key(s) {sorted(unknown)}; known: {sorted(_KEYS)}")
    kwargs: dict[str, object] = {}
    if "required_count" in data:
        count = data["required_count"]
        if type(count) is not int:
            raise PolicyError("gpu.required_count must be an integer")
        kwargs["required_count"] = count
    if "architectures" in data:
        kwargs["architectures"] = frozenset(_strings(data["architectures"], "architectures"))
    for key in ("min_driver_version", "min_vbios_version"):
        if key in data:
            value = data[key]
            if not isinstance(value, str):
                raise PolicyError(f"gpu.{key} must be a string")
            kwargs[key] = value
    if "insecure_allow_devtools" in data:
        flag = data["insecure_allow_devtools"]
        if not isinstance(flag, bool):
            raise PolicyError("gpu.insecure_allow_devtools must be true or false")
        kwargs["insecure_allow_devtools"] = flag
    if "measurements" in data:
        kwargs["measurements"] = _measurements(data["measurements"])
    return GpuPolicy(**kwargs)  # type: ignore[arg-type]


def gpu_policy_to_mapping(policy: GpuPolicy) -> dict[str, object]:
    """The file form of ``policy``; keys at their default are left out (round-trips)."""
    out: dict[str, object] = {}
    if policy.required_count:
        out["required_count"] = policy.required_count
    if policy.architectures is not None:
        out["architectures"] = sorted(policy.architectures)
    if policy.min_driver_version is not None:
        out["min_driver_version"] = policy.min_driver_version
    if policy.min_vbios_version is not None:
        out["min_vbios_version"] = policy.min_vbios_version
    if policy.insecure_allow_devtools:
        out["insecure_allow_devtools"] = True
    if policy.measurements:
        out["measurements"] = {
            str(index): sorted(value.hex() for value in values)
            for index, values in sorted(policy.measurements.items())
        }
    return out


def _strings(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"gpu.{key} must be a list of strings")
    return list(value)


def _measurements(value: object) -> dict[int, frozenset[bytes]]:
    if not isinstance(value, Mapping):
        raise PolicyError("gpu.measurements must be a table of index = [hex, ...]")
    result: dict[int, frozenset[bytes]] = {}
    for key, items in value.items():
        if not isinstance(key, str | int) or not str(key).isdigit():
            raise PolicyError(f"gpu.measurements: {str(key)[:16]!r} is not an index")
        allowed = set()
        for item in _strings(items, f"measurements.{key}"):
            match = _HEX.fullmatch(item)
            if match is None:
                raise PolicyError(f"gpu.measurements.{key}: {item[:24]!r} is not hex")
            allowed.add(bytes.fromhex(match.group(1)))
        result[int(key)] = frozenset(allowed)
    return result
