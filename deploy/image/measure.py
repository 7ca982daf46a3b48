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

The computation lives in ``attestation.measure`` (``enclave measure`` in the installed CLI
computes RTMR0-2 from source too: docs/attestation.md); this script keeps its two commands.
Needs: Python 3.11+ and this repository's ``attestation`` package.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Sequence
from pathlib import Path

if __name__ == "__main__":  # run as a script from the checkout: the package is next to it
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from attestation.measure import (
    PAGE_ORDERS,
    MeasureError,
    PageOrder,
    TdvfSection,
    compute_mrtd,
    parse_tdvf,
)

__all__ = [
    "MeasureError",
    "PageOrder",
    "TdvfSection",
    "compute_mrtd",
    "main",
    "parse_tdvf",
    "policy_toml",
]


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
        orders = [o for o in PAGE_ORDERS if compute_mrtd(firmware, o) == report.mr_td]
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
    """Errors reported as one line."""
    from attestation.errors import AttestationError

    return (MeasureError, OSError, ValueError, KeyError, AttestationError)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except _expected_errors() as exc:
        print(f"measure.py: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
