#!/usr/bin/env python3
"""Expected TDX measurements (MRTD, RTMR0-3) of the CVM image, for client policy files.

Two sources, used together:

``mrtd --firmware OVMF.fd``
    Computes MRTD offline from the TD firmware (TDVF) the host will launch. MRTD is what the TDX
    module hashes while the VMM adds the firmware's pages: for each TDVF metadata section, one
    128-byte ``MEM.PAGE.ADD`` record (ASCII at 0, guest-physical address little-endian at 16)
    per 4 KiB page, unless the section is PAGE.AUG, and, for sections with the MR.EXTEND
    attribute, one ``MR.EXTEND`` record plus the 256 data bytes per 256-byte chunk. VMMs differ
    in order: "single-pass" (add and extend page by page; upstream QEMU with KVM TDX) or
    "two-pass" (add every page of a section, then extend them).

``policy --report report.json`` (or ``--quote quote.bin [--event-log LOG]``)
    Takes the evidence of a reference boot of the image (the service's
    ``/v1/attestation/report``, fetched once on a trusted launch), replays its event log against
    the quote's RTMRs, cross-checks MRTD with ``--firmware`` in both page orders when given, and
    prints the client policy (``mrtd``, ``rtmr0``..``rtmr2``, ``rtmr3`` with ``--rtmr3``,
    ``mrconfigid`` with ``--mrconfigid``, and a ``note``) in the TOML format of
    ``attestation.policy``, written by the same code as ``enclave verify --save-policy``
    (``--out FILE`` writes it to a file instead of standard output). RTMR0 depends on the
    VM's shape (firmware configuration, ACPI tables, memory and CPU count), RTMR1/RTMR2 on the
    UKI (kernel, initrd, command line with the dm-verity root hash), so the reference boot
    must use the production VM shape. The output is only as trustworthy as that reference
    launch: do it on hardware you control and keep the quote with the release.

Needs: Python 3.11+ and this repository's ``attestation`` package (for ``policy``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import struct
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "MeasureError",
    "PageOrder",
    "TdvfSection",
    "compute_mrtd",
    "main",
    "parse_tdvf",
    "policy_toml",
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
_ORDERS: tuple[PageOrder, ...] = ("single-pass", "two-pass")


class MeasureError(Exception):
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


def policy_toml(registers: dict[str, bytes], source: str) -> str:
    """The client policy file (``attestation.policy``'s TOML, the same writer ``enclave verify
    --save-policy`` uses) allowing exactly these register values, with a note naming the
    source."""
    from attestation.policy import pinned_policy, policy_to_toml

    note = f"expected measurements from {source} (deploy/image/measure.py)"
    header = (
        f"Measurement policy written by deploy/image/measure.py from {source}.\n"
        "Pass it to the client: enclave proxy start URL --policy FILE (docs/client.md)."
    )
    return policy_to_toml(pinned_policy(registers, note=note), header=header)


def _read_quote_and_log(args: argparse.Namespace) -> tuple[bytes, object | None, str]:
    from attestation.eventlog import parse_ccel, parse_dstack_event_log
    from attestation.evidence import decode_evidence

    if args.report is not None:
        report = json.loads(Path(args.report).read_text(encoding="utf-8"))
        quote = decode_evidence(bytes.fromhex(report["evidence"])).quote
        log_doc = report.get("event_log")
        log = None
        if log_doc:
            raw = base64.b64decode(log_doc["raw"], validate=True)
            log = parse_ccel(raw) if log_doc["format"] == "ccel" else parse_dstack_event_log(raw)
        return quote, log, f"the attestation report {args.report}"
    data = Path(args.quote).read_bytes()
    try:
        quote = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        quote = data
    log = None
    if args.event_log is not None:
        raw_log = Path(args.event_log).read_bytes()
        if args.event_log_format == "ccel":
            log = parse_ccel(raw_log)
        else:
            log = parse_dstack_event_log(raw_log)
    return quote, log, f"the quote {args.quote}"


def _policy(args: argparse.Namespace) -> int:
    from attestation.eventlog import EventLog, verify_event_log
    from attestation.quote import parse_quote

    quote_bytes, log, source = _read_quote_and_log(args)
    report = parse_quote(quote_bytes).td_report
    if report.debug:
        raise MeasureError("the reference quote is from a DEBUG TD: its measurements prove nothing")
    if isinstance(log, EventLog):
        verify_event_log(log, report.rtmrs)
        print("event log replays to the quote's RTMR0..3", file=sys.stderr)
    if args.firmware is not None:
        firmware = Path(args.firmware).read_bytes()
        orders = [o for o in _ORDERS if compute_mrtd(firmware, o) == report.mr_td]
        if not orders:
            raise MeasureError("MRTD of --firmware (either page order) differs from the quote's")
        print(f"MRTD matches --firmware ({orders[0]})", file=sys.stderr)
    registers = {"mrtd": report.mr_td, "rtmr0": report.rtmr0, "rtmr1": report.rtmr1}
    registers["rtmr2"] = report.rtmr2
    if args.rtmr3:
        registers["rtmr3"] = report.rtmr3
    if args.mrconfigid:
        registers["mrconfigid"] = report.mr_config_id
    text = policy_toml(registers, source)
    if args.out is None:
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"policy written to {args.out}", file=sys.stderr)
    return 0


def _mrtd(args: argparse.Namespace) -> int:
    firmware = Path(args.firmware).read_bytes()
    print(compute_mrtd(firmware, args.page_order).hex())
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="measure.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    mrtd = commands.add_parser("mrtd", help="MRTD of a TDVF firmware image")
    mrtd.add_argument("--firmware", required=True, help="the OVMF.fd the host launches")
    mrtd.add_argument("--page-order", choices=["single-pass", "two-pass"], default="single-pass")
    mrtd.set_defaults(handler=_mrtd)
    policy = commands.add_parser("policy", help="policy fragment from a reference boot")
    source = policy.add_mutually_exclusive_group(required=True)
    source.add_argument("--report", help="JSON from GET /v1/attestation/report")
    source.add_argument("--quote", help="a TDX quote, binary or hex")
    policy.add_argument("--event-log", help="with --quote: the event log to replay")
    policy.add_argument("--event-log-format", choices=["ccel", "dstack"], default="ccel")
    policy.add_argument("--firmware", help="cross-check MRTD against this OVMF.fd")
    policy.add_argument("--rtmr3", action="store_true", help="also pin RTMR3 (runtime events)")
    policy.add_argument("--mrconfigid", action="store_true", help="also pin MRCONFIGID")
    policy.add_argument("--out", help="write the policy to this file (default: stdout)")
    policy.set_defaults(handler=_policy)
    return parser


def _expected_errors() -> tuple[type[Exception], ...]:
    """Errors reported as one line; ``mrtd`` works without the attestation package."""
    expected: tuple[type[Exception], ...] = (MeasureError, OSError, ValueError, KeyError)
    try:
        from attestation.errors import AttestationError
    except ImportError:
        return expected
    return (*expected, AttestationError)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except _expected_errors() as exc:
        print(f"measure.py: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main())
