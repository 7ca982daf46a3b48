"""Verify RA-TLS evidence (or a bare quote): one entry point, numbered steps, one error.

The steps, in the order of DESIGN.md ("Attestation evidence"); each failure raises
:class:`~attestation.errors.VerificationError` with a stable ``reason`` code:

 1. parse the evidence (tag 60000 [quote, claims]) and the quote
 2. DCAP: dcap-qvl checks the quote's signature chain, QE identity, TCB info, CRLs at ``now``
    (Intel's root by default; another root only when passed explicitly)
 3. TDX only
 4. TCB status (and advisories) allowed by policy
 5. the TD is not in debug mode
 6. report_data == SHA-256(claims-buffer) || 0^32
 7. pubkey-hash matches the peer's SPKI
 8. the nonce matches, when one was sent (policy may demand one)
 9. the event log, when given, replays to the quote's RTMRs
10. measurement policy: MRTD, RTMR0-3, MRCONFIGID allow-lists
11. claims and model policy
12. the service declares no insecure_* setting the policy does not accept (service_insecure)

Only a returned :class:`VerifiedEvidence` means "verified"; there is no boolean result. It says
whether the policy pinned the measurements (``measurements_pinned``) and names every
``insecure_*`` option the verification ran under (``insecure``); each such option also logs a
warning on every verification (sigstore's ``UnsafeNoOp`` does the same), not once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import StrEnum

from attestation import _dcap
from attestation.checks import (
    Reason,
    check_enclave_claims,
    check_model,
    check_nonce,
    check_not_debug,
    check_pubkey_hash,
    check_report_data,
    check_service_settings,
    check_tdx,
)
from attestation.collateral import Collateral
from attestation.errors import EvidenceError, QuoteParseError, VerificationError
from attestation.eventlog import EventLog, verify_event_log
from attestation.evidence import Claims, Evidence, ModelClaim, decode_evidence
from attestation.policy import DEFAULT_POLICY, Policy
from attestation.quote import Quote, TdReport, parse_quote

__all__ = [
    "INSECURE_ROOT_CA",
    "EvidenceStep",
    "Measurements",
    "VerifiedEvidence",
    "check_measurements",
    "check_tcb_status",
    "verify_evidence",
    "verify_quote",
]

logger = logging.getLogger(__name__)

#: How a result names a replaced root of trust (``insecure_root_ca_der``).
INSECURE_ROOT_CA = "insecure_root_ca_der"


@dataclass(frozen=True, slots=True)
class Measurements:
    mrtd: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    mrconfigid: bytes
    mrowner: bytes
    mrownerconfig: bytes
    td_attributes: bytes
    xfam: bytes
    tee_tcb_svn: bytes

    @classmethod
    def of(cls, report: TdReport) -> Measurements:
        return cls(
            mrtd=report.mr_td,
            rtmr0=report.rtmr0,
            rtmr1=report.rtmr1,
            rtmr2=report.rtmr2,
            rtmr3=report.rtmr3,
            mrconfigid=report.mr_config_id,
            mrowner=report.mr_owner,
            mrownerconfig=report.mr_owner_config,
            td_attributes=report.td_attributes,
            xfam=report.xfam,
            tee_tcb_svn=report.tee_tcb_svn,
        )

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        return (self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3)


class EvidenceStep(StrEnum):
    """The steps of :func:`verify_evidence`, in order. A result's ``steps`` (and the
    ``record`` list a caller may pass) name those that ran and passed, so a report of the
    verification prints what ran, not what should have."""

    PARSE = "parse"  # 1
    DCAP = "dcap"  # 2
    TDX_ONLY = "tdx_only"  # 3
    TCB_STATUS = "tcb_status"  # 4
    NOT_DEBUG = "not_debug"  # 5 (not run under insecure_allow_debug)
    REPORT_DATA = "report_data"  # 6
    PUBKEY_HASH = "pubkey_hash"  # 7
    NONCE = "nonce"  # 8
    EVENT_LOG = "event_log"  # 9 (only with an event log)
    MEASUREMENTS = "measurements"  # 10
    CLAIMS = "claims"  # 11
    MODEL = "model"  # 11
    SERVICE_SETTINGS = "service_settings"  # 12


@dataclass(frozen=True, slots=True)
class VerifiedEvidence:
    status: str
    advisory_ids: tuple[str, ...]
    tee_type: int
    quote_version: int
    measurements: Measurements
    report_data: bytes
    claims: Claims | None  # None for a bare quote
    model: ModelClaim | None
    event_log: EventLog | None = None
    #: Whether the policy pinned MRTD and RTMR0-2 (see ``attestation.policy``).
    measurements_pinned: bool = False
    #: The ``insecure_*`` options this verification ran under (empty: none).
    insecure: tuple[str, ...] = ()
    #: The steps that ran and passed, in order (:class:`EvidenceStep`).
    steps: tuple[EvidenceStep, ...] = ()


def verify_evidence(
    evidence: bytes | Evidence,
    *,
    collateral: Collateral,
    peer_spki_der: bytes,
    policy: Policy = DEFAULT_POLICY,
    nonce: bytes | None = None,
    event_log: EventLog | None = None,
    now: int | None = None,
    insecure_root_ca_der: bytes | None = None,
    record: list[EvidenceStep] | None = None,
) -> VerifiedEvidence:
    """Verify evidence presented by a peer whose certificate has ``peer_spki_der``.

    ``insecure_root_ca_der`` replaces Intel's root CA (the simulator's, in tests and demos):
    it warns on every call and is named in the result's ``insecure``. Each step that passes
    is appended to ``record`` (when given) as it passes: after a failure it holds the steps
    before it."""
    insecure = _insecure_options(policy, insecure_root_ca_der)
    ran = [] if record is None else record
    # 1. Parse the evidence and the quote.
    try:
        parsed = evidence if isinstance(evidence, Evidence) else decode_evidence(evidence)
        claims = parsed.claims
    except EvidenceError as exc:
        raise VerificationError(Reason.EVIDENCE_MALFORMED, str(exc)) from exc
    quote = _parse(parsed.quote)
    ran.append(EvidenceStep.PARSE)
    # 2-5. DCAP, TDX only, TCB status, not debug.
    report, status, advisories = _verify_platform(
        parsed.quote, quote, collateral, policy, now, insecure_root_ca_der, ran
    )
    # 6. report_data binds the claims buffer.
    check_report_data(report.report_data, parsed.claims_buffer)
    ran.append(EvidenceStep.REPORT_DATA)
    # 7. pubkey-hash binds the peer's TLS key.
    check_pubkey_hash(claims, peer_spki_der)
    ran.append(EvidenceStep.PUBKEY_HASH)
    # 8. The nonce, when one was sent, is echoed.
    check_nonce(claims, nonce, required=policy.require_nonce)
    ran.append(EvidenceStep.NONCE)
    # 9. The event log, when given, replays to the quote's RTMRs.
    if event_log is not None:
        verify_event_log(event_log, report.rtmrs)
        ran.append(EvidenceStep.EVENT_LOG)
    # 10. Measurement policy.
    check_measurements(report, policy)
    ran.append(EvidenceStep.MEASUREMENTS)
    # 11. Our claims, and model policy.
    check_enclave_claims(claims, required=policy.require_enclave_claims)
    ran.append(EvidenceStep.CLAIMS)
    check_model(claims.model, policy.allowed_model_digests, required=policy.require_model)
    ran.append(EvidenceStep.MODEL)
    # 12. The service's own insecure_* settings (development engine, simulated TEE, ...).
    check_service_settings(claims, policy.insecure_accept_service)
    ran.append(EvidenceStep.SERVICE_SETTINGS)
    return VerifiedEvidence(
        status=status,
        advisory_ids=advisories,
        tee_type=quote.tee_type,
        quote_version=quote.version,
        measurements=Measurements.of(report),
        report_data=report.report_data,
        claims=claims,
        model=claims.model,
        event_log=event_log,
        measurements_pinned=policy.pins_measurements,
        insecure=insecure,
        steps=tuple(ran),
    )


def verify_quote(
    quote_bytes: bytes,
    *,
    collateral: Collateral,
    policy: Policy = DEFAULT_POLICY,
    now: int | None = None,
    insecure_root_ca_der: bytes | None = None,
) -> VerifiedEvidence:
    """Verify a bare quote: the evidence steps 1-5 and 10 (no claims to bind)."""
    insecure = _insecure_options(policy, insecure_root_ca_der)
    quote = _parse(quote_bytes)  # 1.
    ran = [EvidenceStep.PARSE]
    report, status, advisories = _verify_platform(  # 2-5.
        quote_bytes, quote, collateral, policy, now, insecure_root_ca_der, ran
    )
    check_measurements(report, policy)  # 10.
    ran.append(EvidenceStep.MEASUREMENTS)
    return VerifiedEvidence(
        status=status,
        advisory_ids=advisories,
        tee_type=quote.tee_type,
        quote_version=quote.version,
        measurements=Measurements.of(report),
        report_data=report.report_data,
        claims=None,
        model=None,
        measurements_pinned=policy.pins_measurements,
        insecure=insecure,
        steps=tuple(ran),
    )


def _insecure_options(policy: Policy, root_ca_der: bytes | None) -> tuple[str, ...]:
    """Name, and warn about, every insecure option of this one verification."""
    names = ((INSECURE_ROOT_CA,) if root_ca_der is not None else ()) + policy.insecure_options
    for name in names:
        logger.warning("INSECURE: verifying with %s (%s)", name, _INSECURE_MEANING[name])
    return names


_INSECURE_MEANING = {
    INSECURE_ROOT_CA: "a root CA other than Intel's: the quote proves nothing about hardware",
    "insecure_allow_debug": "debug TDs accepted: the host can read their memory",
    "insecure_any_measurement": "measurements not checked: any TDX VM is trusted",
    "insecure_accept_service": (
        "a service declaring insecure settings (development engine, simulated TEE) is accepted"
    ),
}


def _parse(quote_bytes: bytes) -> Quote:
    try:
        return parse_quote(quote_bytes)
    except QuoteParseError as exc:
        raise VerificationError(Reason.QUOTE_MALFORMED, str(exc)) from exc


def _verify_platform(
    quote_bytes: bytes,
    quote: Quote,
    collateral: Collateral,
    policy: Policy,
    now: int | None,
    insecure_root_ca_der: bytes | None,
    ran: list[EvidenceStep],
) -> tuple[TdReport, str, tuple[str, ...]]:
    at = int(time.time()) if now is None else now
    # 2. DCAP verification (the only place dcap-qvl is called; errors translated there).
    verdict = _dcap.verify_quote_dcap(quote_bytes, collateral.json_text, at, insecure_root_ca_der)
    ran.append(EvidenceStep.DCAP)
    # 3. TDX only.
    report = check_tdx(quote)
    ran.append(EvidenceStep.TDX_ONLY)
    # 4. TCB status and advisories.
    check_tcb_status(verdict.status, verdict.advisory_ids, policy)
    ran.append(EvidenceStep.TCB_STATUS)
    # 5. Not a debug TD.
    if not policy.insecure_allow_debug:
        check_not_debug(report)
        ran.append(EvidenceStep.NOT_DEBUG)
    return report, verdict.status, verdict.advisory_ids


def check_tcb_status(status: str, advisory_ids: tuple[str, ...], policy: Policy) -> None:
    if status not in policy.allowed_tcb_statuses:
        raise VerificationError(
            Reason.TCB_STATUS_NOT_ALLOWED,
            f"TCB status {status} is not in {sorted(policy.allowed_tcb_statuses)}",
        )
    refused = sorted(set(advisory_ids) - policy.allowed_advisory_ids)
    if refused:
        raise VerificationError(
            Reason.ADVISORY_NOT_ALLOWED, f"advisories not allowed: {', '.join(refused)}"
        )


def check_measurements(report: TdReport, policy: Policy) -> None:
    if policy.mrtd is not None and report.mr_td not in policy.mrtd:
        raise VerificationError(Reason.MRTD_NOT_ALLOWED, f"MRTD {report.mr_td.hex()}")
    for index, (value, allowed) in enumerate(zip(report.rtmrs, policy.rtmrs, strict=True)):
        if allowed is not None and value not in allowed:
            raise VerificationError(Reason.RTMR_NOT_ALLOWED, f"RTMR{index} {value.hex()}")
    if policy.mrconfigid is not None and report.mr_config_id not in policy.mrconfigid:
        raise VerificationError(
            Reason.MRCONFIGID_NOT_ALLOWED, f"MRCONFIGID {report.mr_config_id.hex()}"
        )
