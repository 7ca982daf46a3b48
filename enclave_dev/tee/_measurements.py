"""The TD measurements a simulated quote reports."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

__all__ = [
    "DEBUG_BIT",
    "DEFAULT_TD_ATTRIBUTES",
    "DEFAULT_XFAM",
    "MEASUREMENT_LEN",
    "SimulatedMeasurements",
    "default_measurement",
]

MEASUREMENT_LEN = 48

#: TD attributes: SEPT_VE_DISABLE (bit 28) set, as real TDs have it and dcap-qvl requires;
#: DEBUG (bit 0 of byte 0) clear. Little-endian 64-bit field.
DEFAULT_TD_ATTRIBUTES = bytes.fromhex("0000001000000000")
#: XFAM of a common TDX guest (x87, SSE, AVX, AVX-512 state, PKRU, ...), little-endian.
DEFAULT_XFAM = bytes.fromhex("e702060000000000")
#: The debug bit of TD attributes: bit 0 of byte 0.
DEBUG_BIT = 0x01


def default_measurement(label: str) -> bytes:
    """SHA-384 of ``enclave-simulator/<label>``: a fixed, recognisable, non-zero test value."""
    return hashlib.sha384(f"enclave-simulator/{label}".encode()).digest()


def _default_rtmrs() -> tuple[bytes, bytes, bytes, bytes]:
    return (
        default_measurement("rtmr0"),
        default_measurement("rtmr1"),
        default_measurement("rtmr2"),
        default_measurement("rtmr3"),
    )


@dataclass(frozen=True)
class SimulatedMeasurements:
    """Measurements of a simulated TD. Every default is ``default_measurement(<field name>)``
    (SHA-384 of ``enclave-simulator/mrtd``, ``.../rtmr0`` ... ``.../rtmr3``,
    ``.../mrconfigid``, ``.../mrowner``, ``.../mrownerconfig``), except ``td_attributes``
    (``DEFAULT_TD_ATTRIBUTES``: debug off, SEPT_VE_DISABLE on) and ``xfam``
    (``DEFAULT_XFAM``)."""

    mrtd: bytes = field(default_factory=lambda: default_measurement("mrtd"))
    rtmrs: tuple[bytes, bytes, bytes, bytes] = field(default_factory=_default_rtmrs)
    mrconfigid: bytes = field(default_factory=lambda: default_measurement("mrconfigid"))
    mrowner: bytes = field(default_factory=lambda: default_measurement("mrowner"))
    mrownerconfig: bytes = field(default_factory=lambda: default_measurement("mrownerconfig"))
    td_attributes: bytes = DEFAULT_TD_ATTRIBUTES
    xfam: bytes = DEFAULT_XFAM

    def __post_init__(self) -> None:
        for name in ("mrtd", "mrconfigid", "mrowner", "mrownerconfig"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != MEASUREMENT_LEN:
                raise ValueError(f"{name} must be {MEASUREMENT_LEN} bytes")
        if len(self.rtmrs) != 4:
            raise ValueError("rtmrs must hold exactly four registers")
        for index, rtmr in enumerate(self.rtmrs):
            if not isinstance(rtmr, bytes) or len(rtmr) != MEASUREMENT_LEN:
                raise ValueError(f"rtmrs[{index}] must be {MEASUREMENT_LEN} bytes")
        for name in ("td_attributes", "xfam"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 8:
                raise ValueError(f"{name} must be 8 bytes")

    def registers(self) -> dict[str, bytes]:
        """MRTD, RTMR0-3 and MRCONFIGID by their policy names (``attestation.policy``), e.g.
        for ``pinned_policy(sim.measurements.registers())``."""
        rtmrs = {f"rtmr{index}": value for index, value in enumerate(self.rtmrs)}
        return {"mrtd": self.mrtd, **rtmrs, "mrconfigid": self.mrconfigid}

    @property
    def debug(self) -> bool:
        """Whether the TD runs in debug mode (its memory is readable by the host)."""
        return bool(self.td_attributes[0] & DEBUG_BIT)
