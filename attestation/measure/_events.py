"""Measurement events: what lands in which register, and the digests firmware computes.

TDX has RTMR0-3 where a TPM has PCRs 0-23; UEFI's EFI_CC_MEASUREMENT_PROTOCOL maps them
(UEFI 2.10 section 38.4.1; TDVF's ``MapPcrToMrIndex``): PCR 0 -> MRTD (never extended by
events), PCR 1 and 7 -> RTMR0, PCR 2-6 -> RTMR1, PCR 8-15 -> RTMR2, PCR 16 and up (and the
OS's runtime events) -> RTMR3. :func:`register_of_pcr` is that mapping; each
:class:`MeasuredEvent` names the PCR a TPM-based tool would expect it in, so a mismatch can be
compared against a TPM event log too.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from attestation.measure._tdvf import MeasureError

__all__ = [
    "EFI_GLOBAL_VARIABLE",
    "EFI_IMAGE_SECURITY_DATABASE",
    "MeasuredEvent",
    "action",
    "efi_variable",
    "register_of_pcr",
    "replay",
    "separator",
    "sha384",
    "utf16_cmdline",
]

EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
REGISTERS = ("rtmr0", "rtmr1", "rtmr2", "rtmr3")


def register_of_pcr(pcr: int) -> str:
    """The TDX register a measurement for TPM ``pcr`` lands in (the EFI CC mapping)."""
    if pcr in (1, 7):
        return "rtmr0"
    if 2 <= pcr <= 6:
        return "rtmr1"
    if 8 <= pcr <= 15:
        return "rtmr2"
    if 16 <= pcr <= 23:
        return "rtmr3"
    raise MeasureError(f"PCR {pcr} has no RTMR (PCR 0 is MRTD; 0..23 exist)")


@dataclass(frozen=True, slots=True)
class MeasuredEvent:
    """One extend: ``digest`` (SHA-384) into ``register``, as TPM ``pcr`` would see it."""

    pcr: int
    description: str
    digest: bytes

    @property
    def register(self) -> str:
        return register_of_pcr(self.pcr)


def sha384(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def separator() -> bytes:
    """EV_SEPARATOR: four zero bytes."""
    return sha384(bytes(4))


def action(text: str) -> bytes:
    """EV_EFI_ACTION: the ASCII text, without a terminator."""
    return sha384(text.encode("ascii"))


def efi_variable(vendor: uuid.UUID, name: str, data: bytes = b"") -> bytes:
    """EV_EFI_VARIABLE_*: UEFI_VARIABLE_DATA (GUID, name length in characters, data length,
    the UTF-16LE name without terminator, the data)."""
    encoded = name.encode("utf-16-le")
    header = struct.pack("<QQ", len(encoded) // 2, len(data))
    return sha384(vendor.bytes_le + header + encoded + data)


def utf16_cmdline(cmdline: str) -> bytes:
    """The kernel command line as TDVF measures it for direct kernel boot: UTF-16LE with a
    terminating NUL character."""
    return sha384(cmdline.encode("utf-16-le") + b"\0\0")


def replay(events: Iterable[MeasuredEvent]) -> dict[str, bytes]:
    """The RTMR values ``events`` extend to, from zero; registers with no events are zero."""
    values = dict.fromkeys(REGISTERS, bytes(48))
    for event in events:
        values[event.register] = sha384(values[event.register] + event.digest)
    return values
