"""``enclave receipt verify RECEIPT``: verify an answer's signed receipt offline.

Checks, in order (docs/attestation.md section 9; each failure its own reason code): the receipt
is a canonical version-1 envelope; its signature; the RA-TLS certificate and its evidence
against the policy, with the collateral kept with it (or ``--collateral``), at the receipt's
time; that the receipt names that certificate's quote, that its key is the evidence's
``receipt-key`` claim and its model the evidence's model claim; and, given ``--request`` and
``--response``, that they hash to what was signed. Nothing is fetched: it works without the
service.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from attestation.collateral import Collateral
from attestation.errors import AttestationError
from attestation.receipt import (
    MAX_EVIDENCE_FILE,
    MAX_RECEIPT_BYTES,
    Receipt,
    ReceiptError,
    VerifiedReceipt,
    decode_receipt,
    load_evidence,
    verify_receipt,
)
from enclave.cli._verify import SERVICE_INSECURE_SETTINGS, InputError, _root_ca, policy_from_args

__all__ = ["register"]

_HELP = """\
Verify a receipt offline: the receipt's signature, that its key is the receipt-key claim of the
RA-TLS certificate in EVIDENCE, that evidence against the policy (with the collateral kept in
the evidence file, or --collateral) at the receipt's time, that the receipt names that
certificate's quote and model, and, given them, that --request and --response hash to what was
signed. Exits 0 when it verifies; 1 with the failed step's reason code; 2 for unusable input.

`enclave proxy --receipts DIR` keeps DIR/receipts/<id>.json and DIR/evidence/<quote>.json;
without --evidence, the evidence next to the receipt in such a folder is used.
"""

#: The largest request or response file read (the service's own body limit is 32 MiB).
MAX_BODY_FILE = 64 << 20

STEPS = (
    ("1", "receipt", "a canonical (JCS) version-1 receipt envelope"),
    ("2", "signature", "Ed25519 over the document with the receipt's key"),
    ("3", "evidence", "the certificate's evidence against the policy at the receipt's time"),
    ("4", "quote", "the receipt names the certificate's quote (SHA-256)"),
    ("5", "receipt key", "the key's SHA-256 is the evidence's receipt-key claim"),
    ("6", "model", "the receipt's model, digest kind and digest are the evidence's model claim"),
    ("7", "request", "SHA-256 of the request file is the receipt's request_sha256"),
    ("8", "response", "the response file hashes to the receipt's response_sha256"),
)
_STEP_OF = {
    "receipt_malformed": "1",
    "receipt_version_unsupported": "1",
    "receipt_signature_invalid": "2",
    "receipt_quote_mismatch": "4",
    "receipt_key_mismatch": "5",
    "receipt_model_mismatch": "6",
    "request_mismatch": "7",
    "response_mismatch": "8",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "receipt",
        help="verify an answer's signed receipt offline",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="receipt_command", metavar="COMMAND", required=True)
    verify = actions.add_parser(
        "verify",
        help="verify a receipt against the evidence it names",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("receipt", type=Path, metavar="RECEIPT", help="the receipt file (JCS)")
    verify.add_argument(
        "--evidence",
        type=Path,
        metavar="EVIDENCE",
        help="the evidence file (a proxy's bundle, or an RA-TLS certificate in PEM or DER); "
        "default: ../evidence/<quote_sha256>.json next to a receipt kept by the proxy",
    )
    verify.add_argument(
        "--policy", type=Path, metavar="FILE", required=True, help="measurement policy file"
    )
    verify.add_argument("--request", type=Path, metavar="FILE", help="the exact request body")
    verify.add_argument("--response", type=Path, metavar="FILE", help="the response body")
    verify.add_argument(
        "--collateral",
        type=Path,
        metavar="FILE",
        help="collateral JSON to use instead of the one kept in the evidence file",
    )
    verify.add_argument(
        "--root-ca",
        type=Path,
        metavar="FILE",
        help="trust this root CA instead of Intel's (needs --insecure-simulated-root)",
    )
    verify.add_argument(
        "--insecure-simulated-root",
        action="store_true",
        help="allow --root-ca, e.g. the simulated TEE's root: INSECURE, for tests and demos",
    )
    verify.add_argument(
        "--insecure-any-measurement",
        action="store_true",
        help="trust any measurements: INSECURE, for development only",
    )
    verify.add_argument(
        "--insecure-accept-service",
        action="append",
        choices=SERVICE_INSECURE_SETTINGS,
        metavar="SETTING",
        help="accept a service that declared this insecure_* setting (repeatable)",
    )
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(handler=_verify)


def _read(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > limit:
        raise InputError(f"{path} is larger than {limit} bytes")
    return data


def _default_evidence(receipt_path: Path, receipt: Receipt) -> Path:
    return receipt_path.resolve().parent.parent / "evidence" / f"{receipt.quote_sha256.hex()}.json"


def _verify(args: argparse.Namespace) -> int:
    try:
        policy = policy_from_args(args, sending=False)
        root = None
        if args.root_ca is not None:
            if not args.insecure_simulated_root:
                raise InputError("--root-ca replaces Intel's root; add --insecure-simulated-root")
            root = _root_ca(args.root_ca)
        raw = _read(args.receipt, MAX_RECEIPT_BYTES)
        request = None if args.request is None else _read(args.request, MAX_BODY_FILE)
        response = None if args.response is None else _read(args.response, MAX_BODY_FILE)
        collateral = None
        if args.collateral is not None:
            try:
                collateral = Collateral.load(args.collateral)
            except AttestationError as exc:
                raise InputError(str(exc)) from exc
    except InputError as exc:
        return _emit(args, None, "input_error", str(exc), exit_code=2)
    try:
        receipt = decode_receipt(raw)
        evidence_path = args.evidence or _default_evidence(args.receipt, receipt)
        try:
            evidence_bytes = _read(evidence_path, MAX_EVIDENCE_FILE)
        except InputError as exc:
            return _emit(args, None, "input_error", str(exc), exit_code=2)
        verified = verify_receipt(
            receipt,
            load_evidence(evidence_bytes),
            policy=policy,
            collateral=collateral,
            insecure_root_ca_der=root,
            request=request,
            response=response,
        )
    except ReceiptError as exc:
        return _emit(args, None, exc.reason, exc.detail, exit_code=1)
    return _emit(args, verified, None, "", exit_code=0)


def _step_results(reason: str | None, verified: VerifiedReceipt | None) -> list[dict[str, str]]:
    failed = None if reason is None else _STEP_OF.get(reason, "3")
    results = []
    seen = False
    for number, title, checked in STEPS:
        if seen:
            result = "not run"
        elif number == failed:
            result, seen = f"FAIL ({reason})", True
        elif verified is not None and (
            (number == "7" and not verified.request_checked)
            or (number == "8" and not verified.response_checked)
        ):
            result = "skipped (no file given)"
        else:
            result = "ok"
        results.append({"step": number, "title": title, "checked": checked, "result": result})
    return results


def _emit(
    args: argparse.Namespace,
    verified: VerifiedReceipt | None,
    reason: str | None,
    detail: str,
    *,
    exit_code: int,
) -> int:
    steps = [] if reason == "input_error" else _step_results(reason, verified)
    document: dict[str, object] = {
        "verified": verified is not None,
        "reason": reason,
        "detail": detail or None,
        "steps": steps,
    }
    if verified is not None:
        receipt = verified.receipt
        document["receipt"] = receipt.document
        document["tcb_status"] = verified.evidence.status
        document["measurements_pinned"] = verified.evidence.measurements_pinned
        document["insecure"] = list(verified.evidence.insecure)
    if args.json:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return exit_code
    lines = [f"verified: {'yes' if verified is not None else 'no'}"]
    if reason is not None:
        lines += [f"reason: {reason}", f"detail: {detail or '-'}"]
    lines += [f"{s['step']}. {s['title']}: {s['result']} ({s['checked']})" for s in steps]
    if verified is not None:
        doc = verified.receipt.document
        model = verified.receipt.model
        lines += [
            f"receipt: {doc['id']} ({doc['route']}, {doc['time']})",
            f"model: {model.name} {model.digest_kind}:{model.digest.hex()}, generation "
            f"{doc['generation']}",
            f"tcb_status: {verified.evidence.status}",
            f"measurements_pinned: {'yes' if verified.evidence.measurements_pinned else 'NO'}",
        ]
        if verified.evidence.insecure:
            lines.append("insecure: " + ", ".join(verified.evidence.insecure))
    sys.stdout.write("\n".join(lines) + "\n")
    return exit_code
