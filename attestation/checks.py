"""The individual verification steps after DCAP, each raising :class:`VerificationError`.

:func:`attestation.verify.verify_evidence` runs them in order; they are public so that each
can be tested (and reused, e.g. by ``enclave attest inspect-cert``) on its own, including on
inputs a real quote signed by real hardware can never produce.
"""

from __future__ import annotations

import hmac
from typing import Final

from attestation.errors import VerificationError
from attestation.evidence import Claims, ModelClaim, report_data_for
from attestation.quote import TEE_TYPE_TDX, Quote, TdReport

__all__ = [
    "Reason",
    "check_enclave_claims",
    "check_model",
    "check_nonce",
    "check_not_debug",
    "check_pubkey_hash",
    "check_report_data",
    "check_service_settings",
    "check_tdx",
]


class Reason:
    """Stable ``VerificationError.reason`` codes (docs/attestation.md explains each)."""

    EVIDENCE_MALFORMED: Final = "evidence_malformed"
    QUOTE_MALFORMED: Final = "quote_malformed"
    COLLATERAL_UNAVAILABLE: Final = "collateral_unavailable"
    COLLATERAL_EXPIRED: Final = "collateral_expired"
    COLLATERAL_NOT_YET_VALID: Final = "collateral_not_yet_valid"
    CERT_CHAIN_INVALID: Final = "cert_chain_invalid"
    QUOTE_SIGNATURE_INVALID: Final = "quote_signature_invalid"
    TCB_LEVEL_UNKNOWN: Final = "tcb_level_unknown"
    DCAP_FAILED: Final = "dcap_verification_failed"
    NOT_TDX: Final = "not_tdx"
    TCB_STATUS_NOT_ALLOWED: Final = "tcb_status_not_allowed"
    ADVISORY_NOT_ALLOWED: Final = "advisory_not_allowed"
    TD_DEBUG: Final = "td_debug"
    REPORT_DATA_MISMATCH: Final = "report_data_mismatch"
    PUBKEY_HASH_MISMATCH: Final = "pubkey_hash_mismatch"
    NONCE_MISSING: Final = "nonce_missing"
    NONCE_MISMATCH: Final = "nonce_mismatch"
    EVENT_LOG_MISMATCH: Final = "event_log_mismatch"
    MRTD_NOT_ALLOWED: Final = "mrtd_not_allowed"
    RTMR_NOT_ALLOWED: Final = "rtmr_not_allowed"
    MRCONFIGID_NOT_ALLOWED: Final = "mrconfigid_not_allowed"
    CLAIMS_INCOMPLETE: Final = "claims_incomplete"
    MODEL_MISSING: Final = "model_missing"
    MODEL_NOT_ALLOWED: Final = "model_not_allowed"
    SERVICE_INSECURE: Final = "service_insecure"

    ALL: Final = frozenset(
        {
            "evidence_malformed",
            "quote_malformed",
            "collateral_unavailable",
            "collateral_expired",
            "collateral_not_yet_valid",
            "cert_chain_invalid",
            "quote_signature_invalid",
            "tcb_level_unknown",
            "dcap_verification_failed",
            "not_tdx",
            "tcb_status_not_allowed",
            "advisory_not_allowed",
            "td_debug",
            "report_data_mismatch",
            "pubkey_hash_mismatch",
            "nonce_missing",
            "nonce_mismatch",
            "event_log_mismatch",
            "mrtd_not_allowed",
            "rtmr_not_allowed",
            "mrconfigid_not_allowed",
            "claims_incomplete",
            "model_missing",
            "service_insecure",
            "model_not_allowed",
        }
    )


def check_tdx(quote: Quote) -> TdReport:
    """Only TDX quotes are accepted; SGX quotes (v3, or v4/v5 with TEE type 0) are refused."""
    if quote.tee_type != TEE_TYPE_TDX or not isinstance(quote.body, TdReport):
        raise VerificationError(
            Reason.NOT_TDX, f"TEE type {quote.tee_type:#x} (quote v{quote.version}) is not TDX"
        )
    return quote.body


def check_not_debug(report: TdReport) -> None:
    if report.debug:
        raise VerificationError(Reason.TD_DEBUG, "TDATTRIBUTES.DEBUG is set")


def check_report_data(report_data: bytes, claims_buffer: bytes) -> None:
    """report_data must be SHA-256(claims-buffer) followed by 32 zero bytes."""
    if not hmac.compare_digest(report_data, report_data_for(claims_buffer)):
        raise VerificationError(
            Reason.REPORT_DATA_MISMATCH,
            "report_data is not SHA-256(claims-buffer) || 0^32",
        )


def check_pubkey_hash(claims: Claims, spki_der: bytes) -> None:
    """The pubkey-hash claim must hash the peer certificate's SubjectPublicKeyInfo."""
    if not claims.pubkey_hash.matches(spki_der):
        raise VerificationError(
            Reason.PUBKEY_HASH_MISMATCH, "pubkey-hash does not hash the peer's public key"
        )


def check_nonce(claims: Claims, expected: bytes | None, *, required: bool) -> None:
    """When a nonce was sent it must be echoed exactly; a policy may demand one was sent."""
    if expected is None:
        if required:
            raise VerificationError(Reason.NONCE_MISSING, "policy requires a challenge nonce")
        return
    if claims.nonce is None:
        raise VerificationError(Reason.NONCE_MISSING, "a nonce was sent; the claims carry none")
    if not hmac.compare_digest(claims.nonce, expected):
        raise VerificationError(Reason.NONCE_MISMATCH, "the claims carry a different nonce")


def check_enclave_claims(claims: Claims, *, required: bool) -> None:
    """Our claims (``ohttp-keys``, ``service``) must be present unless the policy waives them:
    without ``ohttp-keys`` the served key configurations are bound to nothing."""
    if required and (claims.ohttp_keys is None or claims.service_version is None):
        raise VerificationError(
            Reason.CLAIMS_INCOMPLETE, "evidence lacks the ohttp-keys or service claim"
        )


def check_model(
    model: ModelClaim | None, allowed: frozenset[bytes] | None, *, required: bool
) -> None:
    """With an allow-list, the model claim's digest must be on it."""
    if model is None:
        if required or allowed:
            raise VerificationError(Reason.MODEL_MISSING, "no model claim; policy requires one")
        return
    if allowed is not None and model.digest not in allowed:
        raise VerificationError(
            Reason.MODEL_NOT_ALLOWED,
            f"model {model.name!r} digest {model.digest.hex()} is not allowed",
        )


def check_service_settings(claims: Claims, accepted: frozenset[str]) -> None:
    """Every ``insecure_*`` setting the service declares (development engine, simulated TEE,
    open lifecycle API) must be one the policy explicitly accepts; by default none is."""
    refused = sorted(set(claims.insecure) - accepted)
    if refused:
        raise VerificationError(
            Reason.SERVICE_INSECURE,
            "the service runs with insecure settings the policy does not accept: "
            + ", ".join(refused),
        )
