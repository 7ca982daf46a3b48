"""``enclave verify URL``: verify a service endpoint (RA-TLS certificate and a nonce-fresh
attestation report) and print what was proved, or the failed step's reason code.

Also the verifier options every client command shares (``add_verifier_arguments``,
``verifier_from_args``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attestation.collateral import CollateralSource, OfflineCollateral, PccsCollateral
from attestation.errors import AttestationError
from attestation.policy import DEFAULT_POLICY, load_policy
from enclave.client import AttestationFailed, VerifiedEndpoint, Verifier, attest_endpoint
from enclave.client._verifier import run_sync

__all__ = ["add_verifier_arguments", "register", "verifier_from_args"]

logger = logging.getLogger(__name__)

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
MAX_ROOT_CA_FILE = 64 << 10

_HELP = """\
Verify a service endpoint: open a TLS 1.3 connection, verify the evidence in its RA-TLS
certificate, fetch a nonce-fresh /v1/attestation/report over that same connection, verify it
too, and check the served OHTTP key configurations against the attested hash. Prints the
verified facts (TCB status, advisories, measurements, model and digest, pinned key hash) and
exits 0, or prints the failed step's reason code and exits 1 (see docs/client.md).
"""


class InputError(Exception):
    """A command-line input that cannot be used."""


def add_verifier_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", type=Path, metavar="FILE", help="policy, TOML or JSON")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--collateral", type=Path, metavar="FILE", help="collateral JSON or dir")
    source.add_argument(
        "--pccs", metavar="URL", help=f"PCCS to fetch collateral from (default {INTEL_PCS_URL})"
    )
    parser.add_argument(
        "--root-ca",
        type=Path,
        metavar="FILE",
        help="trust this root CA instead of Intel's (needs --insecure-simulated-root)",
    )
    parser.add_argument(
        "--insecure-simulated-root",
        action="store_true",
        help="allow --root-ca, e.g. the simulated TEE's root: INSECURE, for tests and demos",
    )


def _root_ca(path: Path) -> bytes:
    try:
        raw = path.read_bytes()[: MAX_ROOT_CA_FILE + 1]
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    if raw.lstrip().startswith(b"-----BEGIN"):
        try:
            cert = x509.load_pem_x509_certificate(raw)
        except ValueError as exc:
            raise InputError(f"{path} is not a PEM certificate") from exc
        return cert.public_bytes(serialization.Encoding.DER)
    return raw


def verifier_from_args(args: argparse.Namespace) -> Verifier:
    """Build the verifier from the shared options; ``InputError`` for unusable input."""
    try:
        policy = DEFAULT_POLICY if args.policy is None else load_policy(args.policy)
    except AttestationError as exc:
        raise InputError(str(exc)) from exc
    root_ca_der = None
    if args.root_ca is not None:
        if not args.insecure_simulated_root:
            raise InputError("--root-ca replaces Intel's root; add --insecure-simulated-root")
        logger.warning("INSECURE: trusting the root CA in %s instead of Intel's", args.root_ca)
        root_ca_der = _root_ca(args.root_ca)
    source: CollateralSource
    if args.collateral is not None:
        source = OfflineCollateral(args.collateral)
    else:
        try:
            source = PccsCollateral(args.pccs or INTEL_PCS_URL)
        except AttestationError as exc:
            raise InputError(str(exc)) from exc
    return Verifier(source, policy=policy, root_ca_der=root_ca_der)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="verify a service endpoint's attestation",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", metavar="URL", help="the service's https:// base URL")
    add_verifier_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=_verify)


def _print_facts(endpoint: VerifiedEndpoint) -> None:
    facts = endpoint.to_json_dict()
    model = endpoint.model
    lines = [
        "verified: yes",
        f"url: {endpoint.url}",
        f"tcb_status: {endpoint.tcb_status}",
        f"advisory_ids: {', '.join(endpoint.advisory_ids) or '-'}",
        *(f"{name}: {facts[name]}" for name in ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3")),
        f"mrconfigid: {facts['mrconfigid']}",
        f"model: {'-' if model is None else model.name}",
        f"model_digest: {'-' if model is None else model.digest_kind + ':' + model.digest.hex()}",
        f"service_version: {endpoint.service_version or '-'}",
        f"spki_sha256: {endpoint.spki_sha256.hex()}",
        "ohttp_key_ids: " + ", ".join(str(c.key_id) for c in endpoint.key_configs),
        f"quote_provider: {endpoint.quote_provider}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


def _verify(args: argparse.Namespace) -> int:
    try:
        if not args.url.startswith("https://"):
            raise InputError("URL must be https://")
        verifier = verifier_from_args(args)
        endpoint = run_sync(attest_endpoint(verifier, args.url))
    except InputError as exc:
        return _fail(args, "input_error", str(exc))
    except AttestationFailed as exc:
        return _fail(args, exc.reason, exc.detail)
    if args.json:
        sys.stdout.write(json.dumps(endpoint.to_json_dict(), indent=2) + "\n")
    else:
        _print_facts(endpoint)
    return 0


def _fail(args: argparse.Namespace, reason: str, detail: str) -> int:
    if args.json:
        document = {"verified": False, "reason": reason, "detail": detail}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        sys.stdout.write(
            f"verified: no\nreason: {reason}\n" + (f"detail: {detail}\n" if detail else "")
        )
    return 1
