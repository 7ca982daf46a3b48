"""TDVF firmware: its metadata sections, MRTD, and the firmware's own RTMR0 inputs.

MRTD is what the TDX module hashes while the VMM adds the firmware's pages: for each TDVF
metadata section, one 128-byte ``MEM.PAGE.ADD`` record (ASCII at 0, guest-physical address
little-endian at 16) per 4 KiB page, unless the section is PAGE.AUG, and, for sections with the
MR.EXTEND attribute, one ``MR.EXTEND`` record plus the 256 data bytes per 256-byte chunk. VMMs
differ in order: "single-pass" (add and extend page by page; upstream QEMU with KVM TDX) or
"two-pass" (add every page of a section, then extend them).

The firmware also measures into RTMR0 (TDX Virtual Firmware Design Guide, section 4.3): the TD
HOB the VMM built (:func:`td_hob`: the memory map: the TD_HOB and TEMP_MEM sections accepted,
the rest of the guest's memory unaccepted) and the configuration firmware volume (CFV, the
section of type 1: :func:`cfv_digest`).
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass
from typing import Literal

from attestation.errors import AttestationError

__all__ = [
    "PAGE_ORDERS",
    "MeasureError",
    "PageOrder",
    "TdvfSection",
    "cfv_digest",
    "compute_mrtd",
    "parse_tdvf",
    "td_hob",
]

PageOrder = Literal["single-pass", "two-pass"]

PAGE_SIZE = 0x1000
MR_EXTEND_CHUNK = 0x100
ATTRIBUTE_MR_EXTEND = 0x1
ATTRIBUTE_PAGE_AUG = 0x2
#: The OVMF GUIDed table ends 32 bytes before the end of the image (the reset vector follows).
FOOTER_DISTANCE = 32
FOOTER_GUID = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
TDX_METADATA_OFFSET_GUID = uuid.UUID("e47a6535-984a-4798-865e-4685a7bf8ec2").bytes_le
_ENTRY_HEADER = 18  # u16 length + 16-byte GUID, after the entry's data
_SECTION = struct.Struct("<IIQQII")
_DESCRIPTOR = struct.Struct("<4sIII")
MAX_SECTIONS = 64
PAGE_ORDERS: tuple[PageOrder, ...] = ("single-pass", "two-pass")
SECTION_BFV = 0
SECTION_CFV = 1
SECTION_TD_HOB = 2
SECTION_TEMP_MEM = 3


class MeasureError(AttestationError):
    """The input is not what the computation needs (no TDVF metadata, a malformed quote...)."""


@dataclass(frozen=True, slots=True)
class TdvfSection:
    data_offset: int
    raw_data_size: int
    memory_address: int
    memory_data_size: int
    section_type: int
    attributes: int


def _metadata_offset(firmware: bytes) -> int:
    """Walk the OVMF GUIDed table backwards to the TDX metadata offset entry."""
    end = len(firmware) - FOOTER_DISTANCE
    if end < _ENTRY_HEADER or firmware[end - 16 : end] != FOOTER_GUID:
        raise MeasureError("no OVMF GUIDed table footer: not an OVMF/TDVF image")
    (table_length,) = struct.unpack_from("<H", firmware, end - _ENTRY_HEADER)
    start = end - table_length
    if table_length < _ENTRY_HEADER or start < 0:
        raise MeasureError("OVMF GUIDed table length out of range")
    position = end - _ENTRY_HEADER  # the footer entry itself is skipped
    while position - _ENTRY_HEADER >= start:
        guid = firmware[position - 16 : position]
        (length,) = struct.unpack_from("<H", firmware, position - _ENTRY_HEADER)
        if length < _ENTRY_HEADER or position - length < start:
            raise MeasureError("OVMF GUIDed table entry length out of range")
        if guid == TDX_METADATA_OFFSET_GUID:
            if length < _ENTRY_HEADER + 4:
                raise MeasureError("TDX metadata offset entry too short")
            distance: int = struct.unpack_from("<I", firmware, position - _ENTRY_HEADER - 4)[0]
            if not 0 < distance <= len(firmware):
                raise MeasureError("TDX metadata offset out of range")
            return len(firmware) - distance
        position -= length
    raise MeasureError("no TDX metadata in the OVMF GUIDed table (firmware built without TDX)")


def parse_tdvf(firmware: bytes) -> tuple[TdvfSection, ...]:
    """The TDVF metadata sections of a firmware image (TDX Virtual Firmware Design Guide)."""
    offset = _metadata_offset(firmware)
    if offset + _DESCRIPTOR.size > len(firmware):
        raise MeasureError("TDVF descriptor out of range")
    signature, _length, version, count = _DESCRIPTOR.unpack_from(firmware, offset)
    if signature != b"TDVF":
        raise MeasureError("TDVF descriptor signature missing")
    if version != 1:
        raise MeasureError(f"unsupported TDVF metadata version {version}")
    if not 0 < count <= MAX_SECTIONS:
        raise MeasureError(f"TDVF section count {count} out of range")
    first = offset + _DESCRIPTOR.size
    if first + count * _SECTION.size > len(firmware):
        raise MeasureError("TDVF sections out of range")
    sections = []
    for index in range(count):
        section = TdvfSection(*_SECTION.unpack_from(firmware, first + index * _SECTION.size))
        _check_section(index, section, len(firmware))
        sections.append(section)
    return tuple(sections)


def _check_section(index: int, section: TdvfSection, firmware_size: int) -> None:
    if section.memory_address % PAGE_SIZE or section.memory_data_size % PAGE_SIZE:
        raise MeasureError(f"TDVF section {index} is not page-aligned")
    if section.raw_data_size > section.memory_data_size:
        raise MeasureError(f"TDVF section {index} holds more data than memory")
    if section.attributes & ATTRIBUTE_MR_EXTEND and (
        section.data_offset + section.memory_data_size > firmware_size
    ):
        raise MeasureError(f"TDVF section {index} is measured but extends past the image")


def _page_add(digest: hashlib._Hash, gpa: int) -> None:
    record = bytearray(128)
    record[0:12] = b"MEM.PAGE.ADD"
    record[16:24] = gpa.to_bytes(8, "little")
    digest.update(record)


def _extend(digest: hashlib._Hash, firmware: bytes, section: TdvfSection, page: int) -> None:
    for chunk in range(PAGE_SIZE // MR_EXTEND_CHUNK):
        within = page * PAGE_SIZE + chunk * MR_EXTEND_CHUNK
        record = bytearray(128)
        record[0:9] = b"MR.EXTEND"
        record[16:24] = (section.memory_address + within).to_bytes(8, "little")
        digest.update(record)
        start = section.data_offset + within
        digest.update(firmware[start : start + MR_EXTEND_CHUNK])


def compute_mrtd(firmware: bytes, order: PageOrder = "single-pass") -> bytes:
    """MRTD (48 bytes) of a TD launched with ``firmware``."""
    digest = hashlib.sha384()
    for section in parse_tdvf(firmware):
        pages = range(section.memory_data_size // PAGE_SIZE)
        added = not section.attributes & ATTRIBUTE_PAGE_AUG
        extended = bool(section.attributes & ATTRIBUTE_MR_EXTEND)
        if order == "two-pass":
            for page in pages if added else ():
                _page_add(digest, section.memory_address + page * PAGE_SIZE)
            for page in pages if extended else ():
                _extend(digest, firmware, section, page)
            continue
        for page in pages:
            if added:
                _page_add(digest, section.memory_address + page * PAGE_SIZE)
            if extended:
                _extend(digest, firmware, section, page)
    return digest.digest()


#: QEMU keeps guest memory below 4 GiB when it is smaller than this, else it splits it at 2 GiB
#: (the rest continues at 4 GiB).
LOW_MEMORY_SPLIT = 0xB0000000
_TWO_GIB = 0x80000000
_FOUR_GIB = 0x100000000
_ACCEPTED, _UNACCEPTED = 0x0, 0x7  # EFI_RESOURCE_SYSTEM_MEMORY, EFI_RESOURCE_MEMORY_UNACCEPTED


def _memory_ranges(
    accepted: list[tuple[int, int]], memory_size: int
) -> list[tuple[bool, int, int]]:
    """Guest memory [0, memory_size) as (accepted, start, end) ranges in address order."""
    ranges = [(False, 0, memory_size)]
    for start, size in accepted:
        end = start + size
        if size <= 0:
            continue
        split: list[tuple[bool, int, int]] = []
        for is_accepted, low, high in ranges:
            if is_accepted or high <= start or low >= end:
                split.append((is_accepted, low, high))
                continue
            if low < start:
                split.append((False, low, start))
            if high > end:
                split.append((False, end, high))
        split.append((True, start, end))
        ranges = sorted(split, key=lambda item: item[1])
    return ranges


def _resource_hob(resource_type: int, start: int, length: int) -> bytes:
    header = struct.pack("<HHI", 3, 48, 0)  # EFI_HOB_TYPE_RESOURCE_DESCRIPTOR, length 48
    return header + bytes(16) + struct.pack("<IIQQ", resource_type, 7, start, length)


def td_hob(accepted: list[tuple[int, int]], memory_size: int, hob_address: int) -> bytes:
    """The TD HOB a VMM (QEMU) hands TDVF for a guest of ``memory_size`` bytes: a PHIT HOB and
    one resource HOB per memory range, the firmware's ``accepted`` (start, size) ranges (its
    TD_HOB and TEMP_MEM sections) as system memory, everything else unaccepted. TDVF measures
    these bytes (SHA-384) as the first RTMR0 event."""
    if memory_size <= 0 or memory_size % PAGE_SIZE:
        raise MeasureError("memory size must be a positive multiple of 4 KiB")
    ranges = _memory_ranges(accepted, memory_size)
    hob = bytearray(struct.pack("<HHIII", 1, 56, 0, 9, 0) + bytes(40))  # PHIT, version 9
    _, last_start, last_end = ranges.pop()
    for is_accepted, start, end in ranges:
        hob += _resource_hob(_ACCEPTED if is_accepted else _UNACCEPTED, start, end - start)
    if memory_size >= LOW_MEMORY_SPLIT:
        if last_start < _TWO_GIB:
            hob += _resource_hob(_UNACCEPTED, last_start, _TWO_GIB - last_start)
        if last_end > _TWO_GIB:
            hob += _resource_hob(_UNACCEPTED, _FOUR_GIB, last_end - _TWO_GIB)
    else:
        hob += _resource_hob(_UNACCEPTED, last_start, last_end - last_start)
    end_of_list = hob_address + len(hob) + 8  # the end-of-list HOB follows
    hob[48:56] = end_of_list.to_bytes(8, "little")
    return bytes(hob)


def accepted_sections(sections: tuple[TdvfSection, ...]) -> tuple[list[tuple[int, int]], int]:
    """The (start, size) ranges TDVF accepts before it runs (TD_HOB, TEMP_MEM) and the TD HOB's
    address, from its metadata."""
    accepted = [
        (s.memory_address, s.memory_data_size)
        for s in sections
        if s.section_type in (SECTION_TD_HOB, SECTION_TEMP_MEM)
    ]
    hobs = [s.memory_address for s in sections if s.section_type == SECTION_TD_HOB]
    if len(hobs) != 1:
        raise MeasureError("the TDVF metadata has no single TD_HOB section")
    return accepted, hobs[0]


def cfv_digest(firmware: bytes) -> bytes:
    """SHA-384 of the configuration firmware volume (the TDVF section of type CFV), which TDVF
    measures into RTMR0 (EV_EFI_PLATFORM_FIRMWARE_BLOB2)."""
    cfvs = [s for s in parse_tdvf(firmware) if s.section_type == SECTION_CFV]
    if len(cfvs) != 1:
        raise MeasureError("the TDVF metadata has no single CFV section")
    cfv = cfvs[0]
    return hashlib.sha384(firmware[cfv.data_offset : cfv.data_offset + cfv.raw_data_size]).digest()
