"""Verify NVIDIA GPU evidence: numbered steps, stable reason codes, one error type.

Per GPU (:func:`verify_gpu_report`, :func:`verify_gpu`), in this order; each failure raises
:class:`~attestation.errors.VerificationError` with the ``reason`` shown:

 1. parse the attestation report (SPDM request + MEASUREMENTS)   gpu_report_malformed
 2. parse the certificate chain (PEM or DER, leaf first)         gpu_chain_malformed
 3. the chain has a leaf and ends in the pinned NVIDIA root      gpu_chain_incomplete,
                                                                  gpu_root_untrusted
 4. every certificate is signed by the next, issuers are CAs,    gpu_chain_invalid,
    all are valid now; with OCSP responses supplied, none of      gpu_cert_expired,
    the device CAs is revoked (attestation.gpu.revocation)        gpu_revocation_unavailable,
                                                                  gpu_ocsp_invalid,
                                                                  gpu_cert_revoked
 5. the leaf's FWID extension is of the GPU's architecture,      gpu_fwid_missing,
    which the policy allows                                       gpu_architecture_mismatch,
                                                                  gpu_architecture_not_allowed
 6. the report's FWID equals the leaf certificate's              gpu_fwid_missing,
                                                                  gpu_fwid_mismatch
 7. the report's signature verifies with the leaf key            gpu_signature_invalid
    (ECDSA P-384, SHA-384 over request || response minus the signature)
 8. the request nonce is the expected one                        gpu_nonce_mismatch
 9. CC mode on, not DEVTOOLS, GPUs ready (NVML state carried     gpu_cc_off, gpu_devtools,
    in the evidence; skipped only for a bare report)              gpu_not_ready
10. driver and VBIOS versions at least the policy's minimums     gpu_version_missing,
                                                                  gpu_driver_too_old,
                                                                  gpu_vbios_too_old
11. every measurement the policy pins holds an allowed value     gpu_measurement_missing,
                                                                  gpu_measurement_not_allowed

Bound to TDX claims (:func:`verify_gpus`), before the per-GPU steps:

 B1. the served GPU evidence decodes                              gpu_evidence_malformed
 B2. its digests are exactly the claims' ``gpus`` list, in order  gpu_evidence_unbound
 B3. at least the policy's required number of GPUs                gpu_evidence_missing

and every GPU's nonce must be :func:`attestation.gpu.evidence.gpu_nonce` of those claims.
"""

from __future__ import annotations

import datetime
import hmac
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from attestation.errors import VerificationError
from attestation.evidence import Claims
from attestation.gpu._certs import (
    Architecture,
    GpuChainError,
    architecture_of,
    certificate_fwid,
    check_links,
    check_root,
    parse_chain,
)
from attestation.gpu._report import GpuReport, GpuReportError, parse_gpu_report
from attestation.gpu.evidence import CcMode, GpuEvidence, gpu_nonce
from attestation.gpu.policy import (
    DEFAULT_GPU_POLICY,
    GpuPolicy,
    driver_version_key,
    vbios_version_key,
)
from attestation.gpu.revocation import check_revocation
from attestation.reasons import GpuReason

__all__ = [
    "GPU_STEPS",
    "GpuReason",
    "VerifiedGpu",
    "report_claims",
    "verify_gpu",
    "verify_gpu_report",
    "verify_gpus",
]

logger = logging.getLogger(__name__)


# The per-GPU steps, in order, and the reasons each can raise (docs and step-by-step output).
GPU_STEPS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("report parses", (GpuReason.REPORT_MALFORMED,)),
    ("certificate chain parses", (GpuReason.CHAIN_MALFORMED,)),
    (
        "chain ends in the pinned NVIDIA root",
        (GpuReason.CHAIN_INCOMPLETE, GpuReason.ROOT_UNTRUSTED),
    ),
    (
        "chain signatures, validity, revocation",
        (
            GpuReason.CHAIN_INVALID,
            GpuReason.CERT_EXPIRED,
            GpuReason.REVOCATION_UNAVAILABLE,
            GpuReason.OCSP_INVALID,
            GpuReason.CERT_REVOKED,
        ),
    ),
    (
        "architecture",
        (
            GpuReason.FWID_MISSING,
            GpuReason.ARCHITECTURE_MISMATCH,
            GpuReason.ARCHITECTURE_NOT_ALLOWED,
        ),
    ),
    ("FWID matches the signing certificate", (GpuReason.FWID_MISMATCH,)),
    ("report signature", (GpuReason.SIGNATURE_INVALID,)),
    ("nonce", (GpuReason.NONCE_MISMATCH,)),
    ("CC mode on, no DEVTOOLS, ready", (GpuReason.CC_OFF, GpuReason.DEVTOOLS, GpuReason.NOT_READY)),
    (
        "driver and VBIOS versions",
        (GpuReason.VERSION_MISSING, GpuReason.DRIVER_TOO_OLD, GpuReason.VBIOS_TOO_OLD),
    ),
    (
        "measurements",
        (GpuReason.MEASUREMENT_MISSING, GpuReason.MEASUREMENT_NOT_ALLOWED),
    ),
)


@dataclass(frozen=True, slots=True)
class VerifiedGpu:
    architecture: Architecture
    fwid: bytes
    driver_version: str
    vbios_version: str
    measurements: Mapping[int, bytes]
    report: GpuReport
    cc_mode: CcMode | None  # None when verified as a bare report (step 9 not run)
    ready: bool | None

    def claims(self) -> dict[str, object]:
        return report_claims(self.report, self.architecture)


def verify_gpu_report(
    report: bytes,
    cert_chain: bytes | str | Sequence[bytes],
    *,
    nonce: bytes,
    architecture: Architecture | None = None,
    policy: GpuPolicy = DEFAULT_GPU_POLICY,
    cc_mode: CcMode | None = None,
    ready: bool | None = None,
    now: datetime.datetime | None = None,
    insecure_root_der: bytes | None = None,
    passed: list[int] | None = None,
    ocsp_responses: Mapping[str, bytes] | None = None,
) -> VerifiedGpu:
    """Steps 1-11 for one GPU. ``architecture=None`` takes it from the leaf's extension.

    Without ``cc_mode`` (a bare report, as ``enclave attest verify-gpu`` reads it) step 9
    cannot run: the SPDM report does not carry the CC state. ``insecure_root_der`` replaces the
    pinned NVIDIA root (the simulated GPU's, in tests and demos) and warns on every call.
    ``passed``, when given, receives the number of each step as it passes (for step-by-step
    output). ``ocsp_responses`` (DER, keyed by ``revocation.certificate_key``) adds the
    revocation check to step 4; ``None`` skips it.
    """
    at = now if now is not None else datetime.datetime.now(datetime.UTC)
    done = passed if passed is not None else []
    if insecure_root_der is not None:
        logger.warning("INSECURE: GPU evidence checked against a replaced root, not NVIDIA's")
    # 1. The report.
    try:
        parsed = parse_gpu_report(report)
    except GpuReportError as exc:
        raise VerificationError(GpuReason.REPORT_MALFORMED, str(exc)) from exc
    done.append(1)
    try:
        # 2. The chain.
        certs = _chain(cert_chain)
        done.append(2)
        # 3. To the pinned root.
        check_root(certs, root_der=insecure_root_der)
        done.append(3)
        # 4. Signatures, CA constraints, validity.
        check_links(certs, now=at)
        if ocsp_responses is not None:
            check_revocation(certs, ocsp_responses, now=at)
        done.append(4)
        leaf = certs[0]
    except GpuChainError as exc:
        raise VerificationError(exc.reason, exc.detail) from exc
    # 5. Architecture.
    arch = _architecture(leaf, architecture, policy)
    done.append(5)
    # 6. FWID.
    try:
        cert_fwid = certificate_fwid(leaf, arch)
    except GpuChainError as exc:
        raise VerificationError(exc.reason, exc.detail) from exc
    if parsed.fwid is None:
        raise VerificationError(GpuReason.FWID_MISSING, "the report carries no FWID")
    if not hmac.compare_digest(parsed.fwid, cert_fwid):
        raise VerificationError(
            GpuReason.FWID_MISMATCH,
            f"report FWID {parsed.fwid.hex()} is not the certificate's {cert_fwid.hex()}",
        )
    done.append(6)
    # 7. Signature.
    _check_signature(parsed, leaf)
    done.append(7)
    # 8. Nonce.
    if not hmac.compare_digest(parsed.request_nonce, nonce):
        raise VerificationError(
            GpuReason.NONCE_MISMATCH, "the report was requested for another nonce"
        )
    done.append(8)
    # 9. CC state (not run for a bare report).
    if cc_mode is not None:
        _check_cc(cc_mode, ready, policy)
        done.append(9)
    # 10. Versions.
    driver, vbios = _check_versions(parsed, policy)
    done.append(10)
    # 11. Measurements.
    _check_measurements(parsed, policy)
    done.append(11)
    return VerifiedGpu(
        architecture=arch,
        fwid=parsed.fwid,
        driver_version=driver,
        vbios_version=vbios,
        measurements=parsed.measurements,
        report=parsed,
        cc_mode=cc_mode,
        ready=ready,
    )


def verify_gpu(
    evidence: GpuEvidence,
    *,
    nonce: bytes,
    policy: GpuPolicy = DEFAULT_GPU_POLICY,
    now: datetime.datetime | None = None,
    insecure_root_der: bytes | None = None,
) -> VerifiedGpu:
    """Steps 1-11 for one GPU's evidence, including its NVML CC state."""
    return verify_gpu_report(
        evidence.report,
        evidence.cert_chain,
        nonce=nonce,
        architecture=evidence.architecture,
        policy=policy,
        cc_mode=evidence.cc_mode,
        ready=evidence.ready,
        now=now,
        insecure_root_der=insecure_root_der,
    )


def verify_gpus(
    claims: Claims,
    evidence: Sequence[GpuEvidence] | None,
    *,
    policy: GpuPolicy = DEFAULT_GPU_POLICY,
    now: datetime.datetime | None = None,
    insecure_root_der: bytes | None = None,
) -> tuple[VerifiedGpu, ...]:
    """Steps B2-B3 against verified TDX ``claims``, then 1-11 for every GPU."""
    items = tuple(evidence or ())
    claimed = claims.gpus or ()
    # B2. The served evidence is exactly what the quote's claims bind, in order.
    digests = tuple(item.digest for item in items)
    if len(digests) != len(claimed) or not all(
        hmac.compare_digest(a, b) for a, b in zip(digests, claimed, strict=True)
    ):
        raise VerificationError(
            GpuReason.EVIDENCE_UNBOUND,
            f"{len(items)} GPU evidence item(s) do not match the {len(claimed)} claimed digest(s)",
        )
    # B3. Enough GPUs.
    if len(items) < policy.required_count:
        raise VerificationError(
            GpuReason.EVIDENCE_MISSING,
            f"policy requires {policy.required_count} GPU(s); the evidence has {len(items)}",
        )
    expected = gpu_nonce(claims.pubkey_hash, claims.ohttp_keys, claims.nonce)
    return tuple(
        verify_gpu(
            item, nonce=expected, policy=policy, now=now, insecure_root_der=insecure_root_der
        )
        for item in items
    )


def _chain(cert_chain: bytes | str | Sequence[bytes]) -> tuple[x509.Certificate, ...]:
    if isinstance(cert_chain, bytes | str):
        return parse_chain(cert_chain)
    try:
        return tuple(x509.load_der_x509_certificate(der) for der in cert_chain)
    except ValueError as exc:
        raise GpuChainError(GpuReason.CHAIN_MALFORMED, "a certificate is not DER") from exc


def _architecture(
    leaf: x509.Certificate, claimed: Architecture | None, policy: GpuPolicy
) -> Architecture:
    found = architecture_of(leaf)
    if found is None:
        raise VerificationError(
            GpuReason.FWID_MISSING, "the signing certificate carries no FWID extension"
        )
    if claimed is not None and claimed != found:
        raise VerificationError(
            GpuReason.ARCHITECTURE_MISMATCH,
            f"evidence says {claimed}, the signing certificate is {found}",
        )
    if policy.architectures is not None and found not in policy.architectures:
        raise VerificationError(
            GpuReason.ARCHITECTURE_NOT_ALLOWED, f"{found} is not in {sorted(policy.architectures)}"
        )
    return found


def _check_signature(report: GpuReport, leaf: x509.Certificate) -> None:
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise VerificationError(GpuReason.SIGNATURE_INVALID, "the leaf key is not ECDSA P-384")
    half = len(report.signature) // 2
    signature = utils.encode_dss_signature(
        int.from_bytes(report.signature[:half], "big"),
        int.from_bytes(report.signature[half:], "big"),
    )
    try:
        key.verify(signature, report.signed, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        raise VerificationError(
            GpuReason.SIGNATURE_INVALID, "the report signature does not verify"
        ) from exc


def _check_cc(cc_mode: CcMode, ready: bool | None, policy: GpuPolicy) -> None:
    if cc_mode == "off":
        raise VerificationError(GpuReason.CC_OFF, "the GPU is not in confidential-computing mode")
    if cc_mode == "devtools" and not policy.insecure_allow_devtools:
        raise VerificationError(GpuReason.DEVTOOLS, "the GPU is in CC DEVTOOLS mode")
    if ready is False:  # None: not known (the boot gate checks before it sets the state)
        raise VerificationError(GpuReason.NOT_READY, "the CC GPUs-ready state is not set")


def _check_versions(report: GpuReport, policy: GpuPolicy) -> tuple[str, str]:
    driver, vbios = report.driver_version, report.vbios_version
    if not driver or not vbios:
        raise VerificationError(
            GpuReason.VERSION_MISSING, "the report lacks a driver or VBIOS version"
        )
    try:
        if policy.min_driver_version is not None and driver_version_key(
            driver
        ) < driver_version_key(policy.min_driver_version):
            raise VerificationError(
                GpuReason.DRIVER_TOO_OLD, f"driver {driver} < {policy.min_driver_version}"
            )
        if policy.min_vbios_version is not None and vbios_version_key(vbios) < vbios_version_key(
            policy.min_vbios_version
        ):
            raise VerificationError(
                GpuReason.VBIOS_TOO_OLD, f"VBIOS {vbios} < {policy.min_vbios_version}"
            )
    except ValueError as exc:
        raise VerificationError(GpuReason.VERSION_MISSING, f"unreadable version: {exc}") from exc
    return driver, vbios


def _check_measurements(report: GpuReport, policy: GpuPolicy) -> None:
    values = report.measurements
    for index, allowed in sorted(policy.measurements.items()):
        value = values.get(index)
        if value is None:
            raise VerificationError(
                GpuReason.MEASUREMENT_MISSING, f"the report has no measurement {index}"
            )
        if value not in allowed:
            raise VerificationError(
                GpuReason.MEASUREMENT_NOT_ALLOWED, f"measurement {index} is {value.hex()}"
            )


# The claims NVIDIA-style verifiers extract (the layout of confidential-containers/trustee's
# NVIDIA verifier): text fields decoded as ASCII up to the first NUL, the others as hex.
_TEXT_FIELDS: Final = {
    3: "driver_version",
    11: "nvdec0_status",
    15: "chip_sku",
    16: "chip_sku_mod",
    17: "project",
    18: "project_sku",
    21: "protected_pcie_status",
}
_HEX_FIELDS: Final = {4: "gpu_info", 13: "cpr_info", 14: "board_id", 19: "project_sku_mod"}


def report_claims(report: GpuReport, architecture: Architecture) -> dict[str, object]:
    """``{"arch", "config", "measurements"}``: the report's values as JSON-friendly claims."""
    config: dict[str, object] = {}
    for field_type, name in _TEXT_FIELDS.items():
        if (text := report.opaque_text(field_type)) is not None:
            config[name] = text
    for field_type, name in _HEX_FIELDS.items():
        if (raw := report.opaque.get(field_type)) is not None:
            config[name] = raw.hex()
    if report.fwid is not None:
        config["fwid"] = report.fwid.hex()
    if report.vbios_version is not None:
        config["vbios_version"] = report.vbios_version
    config["measurement_count"] = {
        str(index): count for index, count in enumerate(report.measurement_counts, start=1)
    }
    return {
        "arch": architecture.capitalize(),
        "config": dict(sorted(config.items())),
        "measurements": {str(b.index): b.value.hex() for b in report.blocks},
    }
