"""``enclave verify URL``: verify a service endpoint (RA-TLS certificate and a nonce-fresh
attestation report) and print the verification document: every numbered step, what it checked
against what, and the result (or the failed step's reason code). ``--save-policy FILE`` writes a
policy pinning exactly the measurements just verified (trust on first use, made explicit).

Also the verifier options every client command shares (``add_verifier_arguments``,
``verifier_from_args``): the commands that send something (``enclave proxy``, ``enclave
models``) refuse a policy that does not pin the measurements unless
``--insecure-any-measurement`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attestation.collateral import CollateralSource, OfflineCollateral, PccsCollateral
from attestation.errors import AttestationError, VerificationError
from attestation.gpu import GpuPolicy
from attestation.policy import (
    DEFAULT_POLICY,
    MEASUREMENT_KEYS,
    Policy,
    load_policy,
    pinned_policy,
    policy_to_toml,
    unpinned_message,
)
from attestation.policy_bundle import ReleaseIdentity
from attestation.policy_bundle_files import load_signed_policy
from enclave.client import AttestationFailed, VerifiedEndpoint, Verifier, attest_endpoint
from enclave.client._document import verification_document
from enclave.client._verifier import run_sync
from enclave.errors import EnclaveError

__all__ = ["add_verifier_arguments", "register", "verifier_from_args"]

logger = logging.getLogger(__name__)

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
#: The service settings a service may declare in its ``insecure`` claim.
SERVICE_INSECURE_SETTINGS = (
    "insecure_dev_engine",
    "insecure_allow_simulated_tee",
    "insecure_allow_simulated_gpu",
    "insecure_dev_mode",
)
MAX_ROOT_CA_FILE = 64 << 10

_HELP = """\
Verify a service endpoint: open a TLS 1.3 connection, verify the evidence in its RA-TLS
certificate, fetch a nonce-fresh /v1/attestation/report over that same connection, verify it
too, and check the served OHTTP key configurations against the attested hash. Prints the
verification document (each numbered step, what was checked against what, the result) and
exits 0, or marks the failed step with its reason code and exits 1 (see docs/client.md).

Without --policy the measurements are verified as genuine but NOT PINNED: any TDX VM would
pass. Check the printed MRTD and RTMRs against the image you expect, then keep them with
--save-policy FILE and pass --policy FILE to `enclave proxy` and `enclave models`.
"""


class InputError(EnclaveError):
    """A command-line input that cannot be used (``reason``: a stable code for the output)."""

    reason = "input_error"


class PolicyBundleRefusedError(InputError):
    """``--policy-bundle`` did not verify; ``reason`` is its ``policy_bundle_*`` code."""

    def __init__(self, error: VerificationError) -> None:
        super().__init__(str(error))
        self.reason = error.reason


def add_verifier_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="measurement policy, TOML or JSON (from `enclave verify --save-policy` or "
        "deploy/image/measure.py)",
    )
    bundle = parser.add_argument_group(
        "signed policy (a release's policy file with its Sigstore bundle; docs/attestation.md)"
    )
    bundle.add_argument(
        "--policy-bundle",
        type=Path,
        metavar="FILE",
        help="the Sigstore bundle of the --policy file (in-toto statement signed by the "
        "release workflow); verified offline before the policy is used, and its version must "
        "not be below the highest seen (kept in <policy>.version.json)",
    )
    bundle.add_argument(
        "--policy-trusted-root",
        type=Path,
        metavar="FILE",
        help="the Sigstore trusted root (trusted_root.json) the bundle is checked against",
    )
    bundle.add_argument(
        "--policy-signer",
        metavar="OWNER/NAME",
        help="the GitHub repository whose release workflow signs the policy (a tag refs/tags/v*, "
        "a GitHub-hosted runner)",
    )
    bundle.add_argument(
        "--policy-workflow",
        default=".github/workflows/release.yml",
        metavar="PATH",
        help="that repository's signing workflow (default %(default)s)",
    )
    parser.add_argument(
        "--insecure-any-measurement",
        action="store_true",
        help="trust any measurements (any TDX VM): INSECURE, for development only; warns on "
        "every verification",
    )
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
        "--gpu-root-ca",
        type=Path,
        metavar="FILE",
        help="trust this root instead of NVIDIA's device identity root for GPU evidence "
        "(needs --insecure-simulated-root), e.g. <run_dir>/simulated-gpu/root_ca.pem",
    )
    parser.add_argument(
        "--insecure-simulated-root",
        action="store_true",
        help="allow --root-ca, e.g. the simulated TEE's root: INSECURE, for tests and demos "
        "(also accepts a service that declares insecure_allow_simulated_tee)",
    )
    parser.add_argument(
        "--insecure-accept-service",
        action="append",
        choices=SERVICE_INSECURE_SETTINGS,
        metavar="SETTING",
        help="accept a service that declares this insecure_* setting in its attestation "
        "claims (repeatable; refused by default): " + ", ".join(SERVICE_INSECURE_SETTINGS),
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


def policy_from_args(args: argparse.Namespace, *, sending: bool) -> Policy:
    """The policy the options name. ``sending``: the command sends requests, so the policy
    must pin the measurements (or --insecure-any-measurement must be given)."""
    try:
        policy = _policy_file(args)
        if args.insecure_any_measurement:
            policy = dataclasses.replace(policy, insecure_any_measurement=True)
        accepted = set(getattr(args, "insecure_accept_service", None) or ())
        if getattr(args, "insecure_simulated_root", False):
            accepted.add("insecure_allow_simulated_tee")
        if accepted:
            policy = dataclasses.replace(
                policy, insecure_accept_service=policy.insecure_accept_service | accepted
            )
    except AttestationError as exc:
        raise InputError(str(exc)) from exc
    if sending and not (policy.pins_measurements or policy.insecure_any_measurement):
        raise InputError(unpinned_message(policy))
    return policy


def _policy_file(args: argparse.Namespace) -> Policy:
    """The --policy file, through its --policy-bundle when one is given."""
    bundle: Path | None = getattr(args, "policy_bundle", None)
    if bundle is None:
        if getattr(args, "policy_trusted_root", None) or getattr(args, "policy_signer", None):
            raise InputError("--policy-trusted-root and --policy-signer go with --policy-bundle")
        return DEFAULT_POLICY if args.policy is None else load_policy(args.policy)
    if args.policy is None:
        raise InputError("--policy-bundle is the bundle of a --policy file: give both")
    if args.policy_trusted_root is None or args.policy_signer is None:
        raise InputError("--policy-bundle needs --policy-trusted-root and --policy-signer")
    identity = ReleaseIdentity(args.policy_signer, args.policy_workflow)
    try:
        signed = load_signed_policy(
            args.policy, bundle, trusted_root=args.policy_trusted_root, identity=identity
        )
    except VerificationError as exc:
        raise PolicyBundleRefusedError(exc) from exc
    logger.info(
        "policy %s version %d verified: signed by %s at %s",
        args.policy,
        signed.version,
        identity.repository,
        signed.release_ref,
    )
    args.signed_policy = {
        "version": signed.version,
        "signer": f"{identity.repository_uri}/{identity.workflow}@{signed.release_ref}",
        "sha256": signed.subject_sha256.hex(),
    }
    return signed.policy


def verifier_from_args(args: argparse.Namespace, *, sending: bool = True) -> Verifier:
    """Build the verifier from the shared options; ``InputError`` for unusable input."""
    policy = policy_from_args(args, sending=sending)
    root_ca_der = None
    if args.root_ca is not None:
        if not args.insecure_simulated_root:
            raise InputError("--root-ca replaces Intel's root; add --insecure-simulated-root")
        root_ca_der = _root_ca(args.root_ca)
    gpu_root_der = None
    if args.gpu_root_ca is not None:
        if not args.insecure_simulated_root:
            raise InputError("--gpu-root-ca replaces NVIDIA's root; add --insecure-simulated-root")
        gpu_root_der = _root_ca(args.gpu_root_ca)
    source: CollateralSource
    if args.collateral is not None:
        source = OfflineCollateral(args.collateral)
    else:
        try:
            source = PccsCollateral(args.pccs or INTEL_PCS_URL)
        except AttestationError as exc:
            raise InputError(str(exc)) from exc
    return Verifier(
        source,
        policy=policy,
        insecure_root_ca_der=root_ca_der,
        insecure_gpu_root_der=gpu_root_der,
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="verify a service endpoint's attestation; --save-policy pins what it saw",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", metavar="URL", help="the service's https:// base URL")
    add_verifier_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the document as JSON")
    parser.add_argument(
        "--save-policy",
        type=Path,
        metavar="FILE",
        help="after a successful verification, write a policy (TOML) pinning exactly the "
        "measurements verified (MRTD, RTMR0-3, MRCONFIGID); refuses to overwrite FILE",
    )
    parser.set_defaults(handler=_verify)


def _trust_description(args: argparse.Namespace) -> tuple[str, str]:
    anchor = "Intel SGX Root CA (built into dcap-qvl)"
    if args.root_ca is not None:
        anchor = f"INSECURE: the root CA in {args.root_ca} (--insecure-simulated-root)"
    if args.collateral is not None:
        collateral = f"the file {args.collateral}"
    else:
        collateral = f"fetched from {args.pccs or INTEL_PCS_URL}"
    return anchor, collateral


def saved_policy(
    endpoint: VerifiedEndpoint, when: float, accepted: frozenset[str] = frozenset()
) -> tuple[Policy, str]:
    """The policy pinning exactly ``endpoint``'s measurements (and accepting the service
    settings ``accepted``, as the verification that saw them did), and its file header."""
    measured = {name: getattr(endpoint.measurements, name) for name in MEASUREMENT_KEYS}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    note = f"trust on first use of {endpoint.url} at {stamp} (enclave verify --save-policy)"
    header = (
        f"Measurement policy written by `enclave verify --save-policy` at {stamp}\n"
        f"from {endpoint.url} (TCB {endpoint.tcb_status}, quote provider "
        f"{endpoint.quote_provider}).\n"
        "Trust on first use: these are the values that endpoint presented, checked against\n"
        "nothing. Compare them with deploy/image/measure.py for the image you expect.\n"
        "A rolling upgrade lists old and new values side by side; rtmr3 and mrconfigid\n"
        "may be dropped where they vary per instance (see docs/client.md)."
    )
    policy = pinned_policy(measured, note=note)
    if endpoint.gpus:  # pin the GPUs seen too: their count, architectures and measurements
        pinned: dict[int, set[bytes]] = {}
        for gpu in endpoint.gpus:
            for index, value in gpu.measurements.items():
                pinned.setdefault(index, set()).add(value)
        policy = dataclasses.replace(
            policy,
            gpu=GpuPolicy(
                required_count=len(endpoint.gpus),
                architectures=frozenset(gpu.architecture for gpu in endpoint.gpus),
                measurements={index: frozenset(v) for index, v in pinned.items()},
            ),
        )
    return dataclasses.replace(policy, insecure_accept_service=accepted), header


def _save_policy(path: Path, endpoint: VerifiedEndpoint, accepted: frozenset[str]) -> None:
    policy, header = saved_policy(endpoint, time.time(), accepted)
    text = policy_to_toml(policy, header=header)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError as exc:
        raise InputError(f"{path} exists; not overwriting a policy") from exc
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _verify(args: argparse.Namespace) -> int:
    try:
        if not args.url.startswith("https://"):
            raise InputError("URL must be https://")
        path = urlsplit(args.url).path
        if path not in ("", "/"):
            base = args.url[: len(args.url) - len(path)] if args.url.endswith(path) else ""
            raise InputError(
                f"give the service's base URL, without {path!r}"
                + (f": enclave verify {base}" if base else "")
            )
        verifier = verifier_from_args(args, sending=False)
    except InputError as exc:
        return _input_error(args, str(exc), exc.reason)
    anchor, collateral = _trust_description(args)
    url = args.url.rstrip("/")
    try:
        endpoint = run_sync(attest_endpoint(verifier, url))
    except AttestationFailed as exc:
        document = verification_document(
            url, verifier.policy, trust_anchor=anchor, collateral=collateral, failure=exc
        )
        _emit(args, document.to_json_dict(), document.render())
        return 1
    document = verification_document(
        url, verifier.policy, trust_anchor=anchor, collateral=collateral, endpoint=endpoint
    )
    facts = {**document.to_json_dict(), "facts": endpoint.to_json_dict()}
    saved = ""
    signed = getattr(args, "signed_policy", None)
    if signed is not None:
        facts["signed_policy"] = signed
        saved = f"policy: version {signed['version']}, signed by {signed['signer']}\n"
    if args.save_policy is not None:
        try:
            _save_policy(args.save_policy, endpoint, verifier.policy.insecure_accept_service)
        except InputError as exc:
            return _input_error(args, str(exc))
        facts["saved_policy"] = str(args.save_policy)
        saved += f"policy pinning these measurements written to {args.save_policy}\n"
    _emit(args, facts, document.render() + _facts_text(endpoint) + saved)
    return 0


def _facts_text(endpoint: VerifiedEndpoint) -> str:
    model = endpoint.model
    lines = [
        "",
        f"model: {'-' if model is None else model.name}",
        f"model_digest: {'-' if model is None else model.digest_kind + ':' + model.digest.hex()}",
        f"service_version: {endpoint.service_version or '-'}",
        "receipt_key_sha256: "
        + ("-" if endpoint.receipt_key_sha256 is None else endpoint.receipt_key_sha256.hex()),
        f"quote_provider: {endpoint.quote_provider}",
        f"gpus: {len(endpoint.gpus) or 'none'}",
    ]
    lines += [
        f"  gpu {index}: {gpu.architecture}, driver {gpu.driver_version}, VBIOS "
        f"{gpu.vbios_version}, FWID {gpu.fwid.hex()}, {len(gpu.measurements)} measurements, "
        f"CC mode {gpu.cc_mode}"
        for index, gpu in enumerate(endpoint.gpus)
    ]
    return "\n".join(lines) + "\n"


def _emit(args: argparse.Namespace, document: dict[str, object], text: str) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n" if args.json else text)


def _input_error(args: argparse.Namespace, detail: str, reason: str = "input_error") -> int:
    document = {"verified": False, "reason": reason, "detail": detail}
    _emit(args, document, f"verified: no\nreason: {reason}\ndetail: {detail}\n")
    return 1
