"""``enclave measure``: the TDX measurements of an image, computed from source.

``enclave measure direct`` (QEMU direct kernel boot) and ``enclave measure uki`` (a UKI booted
from disk by the firmware) print every event extended into each register (its PCR under the
EFI CC mapping, what it is, its SHA-384) and the register's value, then write the client
policy (``--policy-out``) pinning MRTD and RTMR0-2. ``enclave measure mrtd`` is MRTD alone.
The computation is :mod:`attestation.measure`; docs/attestation.md explains each register.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from attestation.errors import AttestationError
from attestation.measure import (
    PAGE_ORDERS,
    MeasuredEvent,
    VmShape,
    compute_mrtd,
    direct_kernel_events,
    load_shape,
    replay,
    rtmr0_events,
    uki_events,
)
from attestation.policy import pinned_policy, policy_to_toml

__all__ = ["register"]

_HELP = """\
Compute MRTD and RTMR0-2 of a TDX VM from its inputs: the firmware (MRTD; the TD HOB and CFV of
RTMR0), the VM shape file (CPUs, memory, the ACPI and boot-option digests captured for that
shape: RTMR0) and the image (RTMR1, RTMR2): a kernel, initrd and command line for a direct
kernel boot (`direct`), or the UKI for a boot from disk (`uki`). Prints every event's digest per
register, so a mismatch with a quote's event log can be read line by line, and with
--policy-out FILE writes the client policy pinning them (sign it for a release:
deploy/release/sign-policy.py; docs/attestation.md, "From source to pinned policy").
"""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AttestationError(f"cannot read {what} {path}: {exc.strerror}") from exc


def _mrtd(args: argparse.Namespace, shape: VmShape, firmware: bytes | None) -> tuple[bytes, str]:
    if firmware is not None:
        return compute_mrtd(
            firmware, shape.page_order
        ), f"firmware {args.firmware}, {shape.page_order}"
    if len(shape.mrtd) != 1:
        raise AttestationError("MRTD needs --firmware, or exactly one mrtd in the shape file")
    return shape.mrtd[0], "shape file"


def _document(
    mrtd: tuple[bytes, str], events: tuple[MeasuredEvent, ...], shape: VmShape
) -> dict[str, object]:
    values = replay(events)
    registers: dict[str, object] = {}
    for name in ("rtmr0", "rtmr1", "rtmr2"):
        registers[name] = {
            "value": values[name].hex(),
            "events": [
                {"pcr": e.pcr, "description": e.description, "digest": e.digest.hex()}
                for e in events
                if e.register == name
            ],
        }
    return {
        "shape": shape.name,
        "mrtd": {"value": mrtd[0].hex(), "source": mrtd[1]},
        "registers": registers,
    }


def _render(mrtd: tuple[bytes, str], events: tuple[MeasuredEvent, ...], shape: VmShape) -> str:
    values = replay(events)
    lines = [f"shape: {shape.name}", f"MRTD   {mrtd[0].hex()}  ({mrtd[1]})"]
    for name in ("rtmr0", "rtmr1", "rtmr2"):
        lines.append(name.upper())
        chosen = [e for e in events if e.register == name]
        for index, event in enumerate(chosen):
            lines.append(
                f"  [{index:2}] PCR{event.pcr:<2} {event.digest.hex()}  {event.description}"
            )
        lines.append(f"  = {values[name].hex()}")
    return "\n".join(lines) + "\n"


def _run(args: argparse.Namespace) -> int:
    try:
        shape = load_shape(_read(args.shape, "shape file").decode("utf-8", "replace"))
        firmware = None if args.firmware is None else _read(args.firmware, "firmware")
        image: tuple[MeasuredEvent, ...]
        if args.boot == "direct":
            cmdline = args.cmdline
            if args.cmdline_file is not None:
                cmdline = _read(args.cmdline_file, "command line").decode("utf-8").rstrip("\n")
            image = direct_kernel_events(
                _read(args.kernel, "kernel"), _read(args.initrd, "initrd"), cmdline, shape.memory
            )
            source = f"direct kernel boot of {args.kernel.name}"
        else:
            image = uki_events(
                _read(args.uki, "UKI"), kernel_measures_initrd=args.kernel_measures_initrd
            )
            source = f"UKI {args.uki.name} booted from disk"
        events = (*rtmr0_events(shape, firmware), *image)
        mrtd = _mrtd(args, shape, firmware)
        if args.policy_out is not None:
            _write_policy(args.policy_out, mrtd[0], events, f"{source}, shape {shape.name!r}")
    except (AttestationError, UnicodeDecodeError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    if args.json:
        sys.stdout.write(json.dumps(_document(mrtd, events, shape), indent=2) + "\n")
    else:
        sys.stdout.write(_render(mrtd, events, shape))
    return 0


def _write_policy(path: Path, mrtd: bytes, events: tuple[MeasuredEvent, ...], source: str) -> None:
    values = {name: value for name, value in replay(events).items() if name != "rtmr3"}
    values["mrtd"] = mrtd
    note = f"computed by enclave measure from {source}"
    header = f"Measurement policy computed by `enclave measure` from {source}."
    text = policy_to_toml(pinned_policy(values, note=note), header=header)
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError as exc:
        raise AttestationError(f"{path} exists; not overwriting a policy") from exc
    except OSError as exc:
        raise AttestationError(f"cannot write {path}: {exc.strerror}") from exc


def _run_mrtd(args: argparse.Namespace) -> int:
    try:
        print(compute_mrtd(_read(args.firmware, "firmware"), args.page_order).hex())
    except AttestationError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", type=Path, required=True, metavar="FILE", help="VM shape (TOML)")
    parser.add_argument(
        "--firmware",
        type=Path,
        metavar="FILE",
        help="the TDVF firmware (OVMF.fd) the host launches: MRTD, the TD HOB and the CFV",
    )
    parser.add_argument(
        "--policy-out", type=Path, metavar="FILE", help="write the client policy (never overwrites)"
    )
    parser.add_argument("--json", action="store_true", help="print the events as JSON")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "measure",
        help="compute MRTD and RTMR0-2 of an image from source, and its policy",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    boots = parser.add_subparsers(dest="boot", metavar="BOOT", required=True)
    direct = boots.add_parser("direct", help="QEMU direct kernel boot (-kernel/-initrd/-append)")
    _common(direct)
    direct.add_argument("--kernel", type=Path, required=True, metavar="FILE", help="bzImage")
    direct.add_argument("--initrd", type=Path, required=True, metavar="FILE", help="initrd")
    line = direct.add_mutually_exclusive_group(required=True)
    line.add_argument("--cmdline", metavar="TEXT", help="the kernel command line (-append)")
    line.add_argument("--cmdline-file", type=Path, metavar="FILE", help="read it from a file")
    direct.set_defaults(handler=_run)
    uki = boots.add_parser("uki", help="a UKI booted from disk by the firmware (systemd-stub)")
    _common(uki)
    uki.add_argument("--uki", type=Path, required=True, metavar="FILE", help="the UKI (.efi)")
    uki.add_argument(
        "--kernel-measures-initrd",
        action="store_true",
        help="the kernel's EFI stub measures its command line and the initrd into PCR 9 "
        "(RTMR2) through the CC protocol (kernels newer than Debian 12's 6.1)",
    )
    uki.set_defaults(handler=_run)
    mrtd = boots.add_parser("mrtd", help="MRTD of a TDVF firmware image")
    mrtd.add_argument("--firmware", type=Path, required=True, metavar="FILE", help="OVMF.fd")
    mrtd.add_argument("--page-order", choices=PAGE_ORDERS, default="single-pass")
    mrtd.set_defaults(handler=_run_mrtd)
