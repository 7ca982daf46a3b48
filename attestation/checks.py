"""The individual verification steps after DCAP, each raising :class:`VerificationError`.

:func:`attestation.verify.verify_evidence` runs them in order; they are public so that each
can be tested (and reused, e.g. by ``enclave attest inspect-cert``) on its own, including on
inputs a real quote signed by real hardware can never produce.
"""

from __future__ import annotations

import hmac

from attestation.errors import VerificationError
from attestation.evidence import Claims, ModelClaim, report_data_for
from attestation.quote import TEE_TYPE_TDX, Quote, TdReport
from attestation.reasons import Reason

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
