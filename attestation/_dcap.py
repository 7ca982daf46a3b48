"""The one boundary to dcap-qvl: every call into it, and every translation of its errors.

dcap-qvl raises ``ValueError`` with a human-readable message for every failure; the message is
mapped onto a stable reason code here (and only here) and chained with ``raise ... from``.
"""

from __future__ import annotations

from dataclasses import dataclass

import dcap_qvl

from attestation.checks import Reason
from attestation.errors import CollateralError, VerificationError

__all__ = [
    "DcapVerdict",
    "QuoteIds",
    "collateral_from_json",
    "quote_ids",
    "verify_quote_dcap",
]


@dataclass(frozen=True, slots=True)
class DcapVerdict:
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QuoteIds:
    """What a collateral lookup is keyed by."""

    tee: str  # "tdx" or "sgx"
    ca: str  # "platform" or "processor"
    fmspc: str  # 12 upper-case hex digits


# Substrings of dcap-qvl 0.7 error messages -> reason codes (first match wins).
_REASONS: tuple[tuple[str, str], ...] = (
    ("Expired", Reason.COLLATERAL_EXPIRED),
    ("expired", Reason.COLLATERAL_EXPIRED),
    ("in the future", Reason.COLLATERAL_NOT_YET_VALID),
    ("No matching TCB level", Reason.TCB_LEVEL_UNKNOWN),
    ("Debug mode", Reason.TD_DEBUG),
    ("root CA", Reason.CERT_CHAIN_INVALID),
    ("root ca", Reason.CERT_CHAIN_INVALID),
    ("certificate chain", Reason.CERT_CHAIN_INVALID),
    ("Failed to decode quote", Reason.QUOTE_MALFORMED),
    ("signature is invalid", Reason.QUOTE_SIGNATURE_INVALID),
    ("Signature is invalid", Reason.QUOTE_SIGNATURE_INVALID),
    ("hash mismatch", Reason.QUOTE_SIGNATURE_INVALID),
)


def _reason_for(message: str) -> str:
    for needle, reason in _REASONS:
        if needle in message:
            return reason
    return Reason.DCAP_FAILED


def collateral_from_json(text: str) -> object:
    try:
        return dcap_qvl.QuoteCollateralV3.from_json(text)
    except (ValueError, TypeError) as exc:
        raise CollateralError(
            f"collateral is not in dcap-qvl's QuoteCollateralV3 layout: {exc}"
        ) from exc


def quote_ids(quote: bytes) -> QuoteIds:
    """TEE, PCK CA and FMSPC of a quote (read from the PCK certificate it embeds)."""
    try:
        parsed = dcap_qvl.parse_quote(quote)
        return QuoteIds(
            tee=str(parsed.quote_type()).lower(), ca=str(parsed.ca()), fmspc=str(parsed.fmspc())
        )
    except ValueError as exc:
        raise CollateralError(f"cannot read FMSPC / CA from the quote: {exc}") from exc


def verify_quote_dcap(
    quote: bytes, collateral_json: str, now: int, root_ca_der: bytes | None
) -> DcapVerdict:
    """Run dcap-qvl. The Intel root is used unless ``root_ca_der`` is passed explicitly."""
    collateral = collateral_from_json(collateral_json)
    try:
        if root_ca_der is None:
            report = dcap_qvl.verify(quote, collateral, now)
        else:
            report = dcap_qvl.verify_with_root_ca(quote, collateral, root_ca_der, now)
    except (ValueError, TypeError, OverflowError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VerificationError(_reason_for(str(exc)), message) from exc
    return DcapVerdict(status=str(report.status), advisory_ids=tuple(report.advisory_ids))
