"""``enclave attest``: verify quotes, inspect RA-TLS certificates, write a simulated bundle."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from attestation import _dcap
from attestation.checks import check_pubkey_hash, check_report_data
from attestation.collateral import Collateral
from attestation.errors import AttestationError, VerificationError
from attestation.policy import DEFAULT_POLICY, Policy, load_policy
from attestation.quote import TEE_TYPE_TDX, Quote, TdReport, parse_quote
from attestation.ratls import parse_certificate
from attestation.verify import VerifiedEvidence, verify_quote
from enclave import development

__all__ = ["register"]

_HEX = re.compile(rb"^(?:0x)?([0-9a-fA-F]+)$")
MAX_INPUT_FILE = 4 << 20

_VERIFY_HELP = """\
Verify an Intel DCAP quote against collateral and a policy, and print the verdict: TCB
status, advisory IDs, TEE type, quote version, MRTD, RTMR0-3, MRCONFIGID, report_data, and
on failure the stable reason code (see docs/attestation.md). Exit status 0 when the quote
verified and the policy allows it, 1 otherwise.

FILE arguments may hold raw bytes or hex (with or without 0x). The trust anchor is Intel's
SGX root CA unless --root-ca names another (e.g. the simulator's; never trust that one for
real evidence).
"""

_INSPECT_HELP = """\
Show what an RA-TLS certificate (PEM or DER) carries: the evidence format, the TEE type, the
claims, and whether the pubkey-hash (claims vs. the certificate's key) and report_data
(quote vs. claims) bindings hold. With --collateral, also the DCAP verdict at --now.
Certificates that are not strict DER (e.g. Gramine's) are read with a minimal DER reader,
and the output says so. Exit status 0 when the bindings hold (and DCAP verified, when asked).
"""

_SIMULATE_HELP = """\
Write a SIMULATED TDX quote, its collateral and the simulated root CA into DIR, for demos
and for trying `enclave attest verify-quote` (the README written there shows the command).
The simulated root is not Intel's: never trust it for real evidence.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    attest = subparsers.add_parser(
        "attest",
        help="verify TDX quotes, inspect RA-TLS certificates, simulate attestation",
        description="Attestation tools: DCAP quote verification, RA-TLS certificate "
        "inspection, and a simulated TDX platform for demos.",
    )
    commands = attest.add_subparsers(dest="attest_command", metavar="ACTION")
    attest.set_defaults(handler=lambda _args: _usage(attest))

    verify = commands.add_parser(
        "verify-quote",
        help="verify a quote against collateral and a policy",
        description=_VERIFY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("--quote", required=True, type=Path, metavar="FILE", help="the quote")
    verify.add_argument(
        "--collateral", required=True, type=Path, metavar="FILE", help="collateral JSON"
    )
    verify.add_argument("--now", type=int, metavar="UNIX", help="verification time (default: now)")
    verify.add_argument("--policy", type=Path, metavar="FILE", help="policy, TOML or JSON")
    verify.add_argument("--root-ca", type=Path, metavar="FILE", help="root CA (DER or PEM)")
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(handler=_verify_quote)

    inspect = commands.add_parser(
        "inspect-cert",
        help="show the evidence in an RA-TLS certificate",
        description=_INSPECT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect.add_argument("cert", type=Path, metavar="CERT", help="certificate, PEM or DER")
    inspect.add_argument("--collateral", type=Path, metavar="FILE", help="collateral JSON")
    inspect.add_argument("--now", type=int, metavar="UNIX", help="verification time")
    inspect.add_argument("--root-ca", type=Path, metavar="FILE", help="root CA (DER or PEM)")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(handler=_inspect_cert)

    simulate = commands.add_parser(
        "simulate",
        help="write a simulated quote, collateral and root CA",
        description=_SIMULATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    simulate.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    simulate.add_argument("--mrtd", metavar="HEX", help="MRTD (48 bytes, hex)")
    simulate.add_argument(
        "--rtmr",
        action="append",
        metavar="HEX",
        help="RTMR value (48 bytes, hex); give it four times for RTMR0..3",
    )
    simulate.add_argument("--now", type=int, metavar="UNIX", help="collateral issue time")
    simulate.set_defaults(handler=_simulate)

    from enclave.cli._attest_gpu import register_gpu  # here: it imports this module's helpers

    register_gpu(commands)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


class _InputError(Exception):
    pass


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_INPUT_FILE + 1)
    except OSError as exc:
        raise _InputError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if len(data) > MAX_INPUT_FILE:
        raise _InputError(f"{what} {path} is larger than {MAX_INPUT_FILE} bytes")
    return data


def _read_binary(path: Path, what: str) -> bytes:
    """Raw bytes, or hex (with or without 0x) when the whole file is hex."""
    data = _read(path, what)
    match = _HEX.match(data.strip())
    if match and len(match.group(1)) % 2 == 0:
        return bytes.fromhex(match.group(1).decode())
    return data


def _read_root(path: Path | None) -> bytes | None:
    if path is None:
        return None
    data = _read(path, "root CA")
    if b"-----BEGIN CERTIFICATE-----" in data:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        try:
            return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        except ValueError as exc:
            raise _InputError(f"root CA {path} is not a PEM certificate") from exc
    return _read_binary(path, "root CA")


def _hex_arg(value: str, what: str) -> bytes:
    match = _HEX.match(value.strip().encode())
    if not match or len(match.group(1)) != 96:
        raise _InputError(f"{what} must be 48 bytes of hex")
    return bytes.fromhex(match.group(1).decode())


def _quote_fields(quote: Quote) -> dict[str, object]:
    fields: dict[str, object] = {
        "tee_type": f"{quote.tee_type:#04x}",
        "tee": "TDX" if quote.tee_type == TEE_TYPE_TDX else "SGX",
        "quote_version": quote.version,
    }
    if isinstance(quote.body, TdReport):
        report = quote.body
        fields.update(
            mrtd=report.mr_td.hex(),
            rtmr0=report.rtmr0.hex(),
            rtmr1=report.rtmr1.hex(),
            rtmr2=report.rtmr2.hex(),
            rtmr3=report.rtmr3.hex(),
            mrconfigid=report.mr_config_id.hex(),
            debug=report.debug,
        )
    fields["report_data"] = quote.report_data.hex()
    return fields


def _verdict_fields(verified: VerifiedEvidence) -> dict[str, object]:
    return {"status": verified.status, "advisory_ids": list(verified.advisory_ids)}


def _emit(result: dict[str, object], as_json: bool, out: TextIO | None = None) -> None:
    out = sys.stdout if out is None else out
    if as_json:
        out.write(json.dumps(result, indent=2) + "\n")
        return
    for key, value in result.items():
        if isinstance(value, dict):
            out.write(f"{key}:\n")
            for inner, inner_value in value.items():
                out.write(f"  {inner}: {_text(inner_value)}\n")
        else:
            out.write(f"{key}: {_text(value)}\n")


def _text(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) if value else "(none)"
    if value is None:
        return "(none)"
    return str(value)


def _verify_quote(args: argparse.Namespace) -> int:
    result: dict[str, object] = {}
    try:
        quote_bytes = _read_binary(args.quote, "quote")
        collateral = Collateral.from_json(_read(args.collateral, "collateral").decode("utf-8"))
        policy: Policy = DEFAULT_POLICY if args.policy is None else load_policy(args.policy)
        root = _read_root(args.root_ca)
        with contextlib.suppress(AttestationError):
            result.update(_quote_fields(parse_quote(quote_bytes)))
        now = int(time.time()) if args.now is None else args.now
        verified = verify_quote(
            quote_bytes, collateral=collateral, policy=policy, now=now, insecure_root_ca_der=root
        )
    except VerificationError as exc:
        _emit({"verified": False, "reason": exc.reason, "detail": exc.detail, **result}, args.json)
        return 1
    except (AttestationError, _InputError, UnicodeDecodeError) as exc:
        _emit({"verified": False, "reason": "input_error", "detail": str(exc)}, args.json)
        return 1
    _emit({"verified": True, **_verdict_fields(verified), **result}, args.json)
    return 0


def _inspect_cert(args: argparse.Namespace) -> int:
    try:
        found = parse_certificate(_read(args.cert, "certificate"), lenient_der=True)
        quote = parse_quote(found.evidence.quote)
    except (AttestationError, _InputError) as exc:
        _emit({"error": str(exc)}, args.json)
        return 1
    result: dict[str, object] = {
        "parser": found.parser,
        "evidence_format": "CBOR tag 60000 [quote, claims-buffer] in extension 2.23.133.5.4.9",
        **_quote_fields(quote),
        "claims": found.claims.to_json_dict(),
        "model_digest_extension": None if found.model_digest is None else found.model_digest.hex(),
    }
    ok = True
    checks: tuple[tuple[str, Callable[[], None]], ...] = (
        ("pubkey_hash_binding", lambda: check_pubkey_hash(found.claims, found.spki_der)),
        (
            "report_data_binding",
            lambda: check_report_data(quote.report_data, found.evidence.claims_buffer),
        ),
    )
    for name, check in checks:
        try:
            check()
            result[name] = "holds"
        except VerificationError as exc:
            result[name] = f"FAILS ({exc.reason})"
            ok = False
    if args.collateral is not None:
        try:
            collateral = Collateral.from_json(_read(args.collateral, "collateral").decode())
            now = int(time.time()) if args.now is None else args.now
            verdict = _dcap.verify_quote_dcap(
                found.evidence.quote, collateral.json_text, now, _read_root(args.root_ca)
            )
            result["dcap"] = {"status": verdict.status, "advisory_ids": list(verdict.advisory_ids)}
        except VerificationError as exc:
            result["dcap"] = {"reason": exc.reason, "detail": exc.detail}
            ok = False
        except (AttestationError, _InputError, UnicodeDecodeError) as exc:
            result["dcap"] = {"reason": "input_error", "detail": str(exc)}
            ok = False
    _emit(result, args.json)
    return 0 if ok else 1


def _simulate(args: argparse.Namespace) -> int:
    try:
        write_bundle = development.load("insecure_allow_simulated_tee").write_bundle
    except development.DevelopmentMissingError as exc:
        sys.stderr.write(f"enclave attest simulate: {exc}\n")
        return 2
    try:
        mrtd = None if args.mrtd is None else _hex_arg(args.mrtd, "--mrtd")
        rtmrs = None
        if args.rtmr is not None:
            if len(args.rtmr) != 4:
                raise _InputError("give --rtmr exactly four times (RTMR0..3) or not at all")
            rtmrs = [_hex_arg(value, "--rtmr") for value in args.rtmr]
        bundle = write_bundle(args.out, mrtd=mrtd, rtmrs=rtmrs, now=args.now)
    except (AttestationError, _InputError, ValueError) as exc:
        sys.stderr.write(f"enclave attest simulate: {exc}\n")
        return 1
    sys.stdout.write(
        "wrote a SIMULATED attestation bundle (never trust its root for real evidence):\n"
        f"  quote:      {bundle.quote}\n  collateral: {bundle.collateral}\n"
        f"  root CA:    {bundle.root_ca_der} (DER), {bundle.root_ca_pem} (PEM)\n"
        f"  README:     {bundle.readme}\n"
    )
    return 0
