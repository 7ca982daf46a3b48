"""The verification document ``enclave verify`` prints: every numbered step of
``verify_endpoint`` (and, inside it, of ``attestation.verify``), what it checked, against what,
and the result.

A step prints "ok" only if the verifier's own record says it ran and passed
(``VerifiedEndpoint.steps``, ``AttestationFailed.steps``: ``EndpointStep`` and
``attestation.verify.EvidenceStep`` values appended as each check returns), never because the
document expects it to have; a step not in the record prints "not run". Verification stops at
the first failed step: that one carries the reason code, the rest did not run. The document
adds no check of its own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from attestation.policy import Policy
from attestation.reasons import GpuReason, Reason
from attestation.verify import EvidenceStep
from enclave.client._endpoint import (
    MAX_REPORT_BYTES,
    REPORT_PATH,
    EndpointStep,
    VerifiedEndpoint,
)
from enclave.client.errors import AttestationFailed, ClientReason

__all__ = ["OK", "Step", "VerificationDocument", "verification_document"]

OK = "ok"
FAIL = "FAIL"
NOT_RUN = "not run"
SKIPPED = "skipped"
NOT_PINNED = "NOT PINNED"

_REGISTERS = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid")

#: Which step raises which reason code (in the report stage).
_STEP_OF_REASON: dict[str, str] = {
    ClientReason.ENDPOINT_UNREACHABLE: "2",
    ClientReason.NOT_VERIFIED: "2",
    ClientReason.REPORT_UNAVAILABLE: "2",
    ClientReason.REPORT_RATE_LIMITED: "2",
    ClientReason.REPORT_TOO_LARGE: "2",
    ClientReason.REPORT_MALFORMED: "2",
    ClientReason.REPORT_CERTIFICATE_MISMATCH: "3",
    Reason.EVIDENCE_MALFORMED: "4.1",
    Reason.QUOTE_MALFORMED: "4.1",
    Reason.COLLATERAL_UNAVAILABLE: "4.2",
    Reason.COLLATERAL_EXPIRED: "4.2",
    Reason.COLLATERAL_NOT_YET_VALID: "4.2",
    Reason.CERT_CHAIN_INVALID: "4.2",
    Reason.QUOTE_SIGNATURE_INVALID: "4.2",
    Reason.TCB_LEVEL_UNKNOWN: "4.2",
    Reason.DCAP_FAILED: "4.2",
    Reason.NOT_TDX: "4.3",
    Reason.TCB_STATUS_NOT_ALLOWED: "4.4",
    Reason.ADVISORY_NOT_ALLOWED: "4.4",
    Reason.TD_DEBUG: "4.5",
    Reason.REPORT_DATA_MISMATCH: "4.6",
    Reason.PUBKEY_HASH_MISMATCH: "4.7",
    Reason.NONCE_MISSING: "4.8",
    Reason.NONCE_MISMATCH: "4.8",
    Reason.EVENT_LOG_MISMATCH: "4.9",
    Reason.MRTD_NOT_ALLOWED: "4.10/mrtd",
    Reason.RTMR_NOT_ALLOWED: "4.10/rtmr",  # completed from the detail ("RTMR2 <hex>")
    Reason.MRCONFIGID_NOT_ALLOWED: "4.10/mrconfigid",
    Reason.CLAIMS_INCOMPLETE: "4.11",
    Reason.MODEL_MISSING: "4.11",
    Reason.MODEL_NOT_ALLOWED: "4.11",
    Reason.SERVICE_INSECURE: "4.11",
    ClientReason.OHTTP_KEYS_MISMATCH: "5",
    ClientReason.OHTTP_KEYS_UNUSABLE: "6",
    ClientReason.RECEIPT_KEY_MISMATCH: "8",
    **dict.fromkeys(GpuReason, "7"),
}

#: What the verifier's record must hold for a step to print "ok" (all of it).
_RAN_BY: dict[str, frozenset[str]] = {
    "1": frozenset({EndpointStep.CERTIFICATE}),
    "2": frozenset({EndpointStep.REPORT}),
    "3": frozenset({EndpointStep.REPORT_CERTIFICATE}),
    "4.1": frozenset({EvidenceStep.PARSE}),
    "4.2": frozenset({EvidenceStep.DCAP}),
    "4.3": frozenset({EvidenceStep.TDX_ONLY}),
    "4.4": frozenset({EvidenceStep.TCB_STATUS}),
    "4.5": frozenset({EvidenceStep.NOT_DEBUG}),
    "4.6": frozenset({EvidenceStep.REPORT_DATA}),
    "4.7": frozenset({EvidenceStep.PUBKEY_HASH}),
    "4.8": frozenset({EvidenceStep.NONCE}),
    "4.9": frozenset({EvidenceStep.EVENT_LOG}),
    "4.10": frozenset({EvidenceStep.MEASUREMENTS}),
    "4.11": frozenset({EvidenceStep.CLAIMS, EvidenceStep.MODEL, EvidenceStep.SERVICE_SETTINGS}),
    "5": frozenset({EndpointStep.OHTTP_KEYS}),
    "6": frozenset({EndpointStep.KEY_CONFIG}),
    "7": frozenset({EndpointStep.GPUS}),
    "8": frozenset({EndpointStep.RECEIPT_KEY}),
}


@dataclass(frozen=True, slots=True)
class Step:
    number: str
    title: str
    checked: str
    against: str
    result: str
    key: str = ""  # what a failure names, when not the number (one step per register)

    @property
    def anchor(self) -> str:
        return self.key or self.number

    def to_json_dict(self) -> dict[str, str]:
        return {
            "step": self.number,
            "title": self.title,
            "checked": self.checked,
            "against": self.against,
            "result": self.result,
        }


@dataclass(frozen=True, slots=True)
class VerificationDocument:
    url: str
    verified: bool
    measurements_pinned: bool
    insecure: tuple[str, ...]
    steps: tuple[Step, ...]
    reason: str | None = None
    detail: str = ""

    def to_json_dict(self) -> dict[str, object]:
        return {
            "url": self.url,
            "verified": self.verified,
            "measurements_pinned": self.measurements_pinned,
            "insecure": list(self.insecure),
            "reason": self.reason,
            "detail": self.detail,
            "steps": [step.to_json_dict() for step in self.steps],
        }

    def render(self) -> str:
        lines = [f"Verification of {self.url}"]
        for step in self.steps:
            lines.append(f"  {step.number:<5} {step.title}: {step.result}")
            if step.checked:
                lines.append(f"        checked: {step.checked}")
            if step.against:
                lines.append(f"        against: {step.against}")
        lines.append("")
        if not self.verified:
            lines.append(f"verified: no (reason: {self.reason})")
            if self.detail:
                lines.append(f"detail: {self.detail}")
            return "\n".join(lines) + "\n"
        lines.append("verified: yes")
        if not self.measurements_pinned:
            lines.append(
                "WARNING: the measurements above are NOT PINNED: any TDX VM on a genuine, "
                "up-to-date platform would have passed. Check them against the image you "
                "expect, then pin them: --save-policy FILE."
            )
        for name in self.insecure:
            lines.append(f"WARNING: verified with {name} (INSECURE)")
        return "\n".join(lines) + "\n"


def verification_document(
    url: str,
    policy: Policy,
    *,
    trust_anchor: str,
    collateral: str,
    endpoint: VerifiedEndpoint | None = None,
    failure: AttestationFailed | None = None,
) -> VerificationDocument:
    """The document for a verified ``endpoint`` or a ``failure`` (exactly one)."""
    record = frozenset(
        endpoint.steps if endpoint is not None else () if failure is None else failure.steps
    )
    steps = _from_record(_steps(url, policy, trust_anchor, collateral, endpoint), record, policy)
    if failure is not None and endpoint is None:
        failed = "1" if failure.stage == "certificate" else _failed_step(failure)
        steps = _mark_failure(steps, failed, failure.reason)
        return VerificationDocument(
            url=url,
            verified=False,
            measurements_pinned=policy.pins_measurements,
            insecure=policy.insecure_options,
            steps=steps,
            reason=failure.reason,
            detail=failure.detail,
        )
    if failure is not None or endpoint is None:
        raise ValueError("pass exactly one of endpoint and failure")
    return VerificationDocument(
        url=url,
        verified=True,
        measurements_pinned=endpoint.measurements_pinned,
        insecure=endpoint.insecure,
        steps=steps,
    )


def _failed_step(failure: AttestationFailed) -> str | None:
    failed = _STEP_OF_REASON.get(failure.reason)
    if failed == "4.10/rtmr":
        index = failure.detail[4:5]
        failed = f"4.10/rtmr{index}" if failure.detail.startswith("RTMR") else "4.10/rtmr0"
    return failed


def _mark_failure(steps: tuple[Step, ...], failed: str | None, reason: str) -> tuple[Step, ...]:
    out: list[Step] = []
    seen = False
    for step in steps:
        if seen:
            out.append(_with(step, NOT_RUN))
        elif step.anchor == failed or (failed is None and step is steps[-1]):
            out.append(_with(step, f"{FAIL} ({reason})"))
            seen = True
        else:
            out.append(step)
    return tuple(out)


def _from_record(
    steps: tuple[Step, ...], record: frozenset[str], policy: Policy
) -> tuple[Step, ...]:
    """Each step's result as written where the record says it ran (4.10: pinned or not per
    register); "not run" where it does not (4.9 says why it is skipped, 4.5 that
    ``insecure_allow_debug`` skipped it)."""
    out = []
    for step in steps:
        if _RAN_BY[step.number] <= record:
            result = OK if step.number == "4.9" else step.result
        elif step.number == "4.9":
            result = step.result  # skipped: this client gives the verifier no event log
        elif step.number == "4.5" and policy.insecure_allow_debug:
            result = SKIPPED + " (INSECURE: insecure_allow_debug)"
        else:
            result = NOT_RUN
        out.append(_with(step, result))
    return tuple(out)


def _with(step: Step, result: str) -> Step:
    return Step(step.number, step.title, step.checked, step.against, result, step.key)


def _steps(
    url: str,
    policy: Policy,
    trust_anchor: str,
    collateral: str,
    endpoint: VerifiedEndpoint | None,
) -> tuple[Step, ...]:
    e = endpoint
    m = None if e is None else e.measurements
    claimed_keys = "" if e is None else hashlib.sha256(e.ohttp_keys).hexdigest()
    steps = [
        Step(
            "1",
            "RA-TLS connection",
            f"TLS 1.3 to {url}; the certificate's own evidence, steps 4.1-4.11 without a nonce"
            + ("" if e is None else f" (quote SHA-256 {e.certificate_quote_sha256.hex()})"),
            "the same policy and trust anchor; verified before any request byte is written "
            "(with its GPU evidence, step 7's checks, when it binds GPUs)",
            OK,
        ),
        Step(
            "2",
            "attestation report",
            f"GET {REPORT_PATH}?nonce=<32 random bytes> over that connection: status 200, "
            "JSON with evidence, certificate and key configurations"
            + ("" if e is None else f" (nonce {e.nonce.hex()})"),
            f"at most {MAX_REPORT_BYTES} bytes, refused while reading",
            OK,
        ),
        Step(
            "3",
            "report certificate is the connection's",
            "the SubjectPublicKeyInfo of the report's certificate_pem",
            "the key the TLS handshake proved"
            + ("" if e is None else f" (SHA-256 {e.spki_sha256.hex()})"),
            OK,
        ),
        Step(
            "4.1",
            "parse evidence",
            "CBOR tag 60000 [quote, claims-buffer]; the quote's header and TD report",
            "Intel TDX quote format v4/v5",
            OK,
        ),
        Step(
            "4.2",
            "DCAP (dcap-qvl)",
            "quote signature, attestation key, QE report, PCK certificate chain, CRLs, "
            "TCB info and QE identity signatures and validity",
            f"root: {trust_anchor}; collateral: {collateral}",
            OK,
        ),
        Step("4.3", "TDX only", "the quote's TEE type", "TDX (0x81)", OK),
        Step(
            "4.4",
            "TCB status",
            "TCB status and advisories" + ("" if e is None else f": {_tcb(e)}"),
            f"allowed statuses {sorted(policy.allowed_tcb_statuses)}, allowed advisories "
            f"{sorted(policy.allowed_advisory_ids) or 'none'}",
            OK,
        ),
        Step(
            "4.5",
            "not a debug TD",
            "TDATTRIBUTES.DEBUG"
            + ("" if m is None else f" (TD attributes {m.td_attributes.hex()})"),
            "clear"
            + (
                " (INSECURE: insecure_allow_debug accepts it set)"
                if policy.insecure_allow_debug
                else ""
            ),
            OK,
        ),
        Step(
            "4.6",
            "report_data binds the claims",
            "report_data" + ("" if e is None else f" {e.report_data.hex()[:64]}..."),
            "SHA-256(claims-buffer) || 32 zero bytes",
            OK,
        ),
        Step(
            "4.7",
            "pubkey-hash binds the TLS key",
            "the pubkey-hash claim",
            "SHA-256 of the connection's SubjectPublicKeyInfo"
            + ("" if e is None else f" ({e.spki_sha256.hex()})"),
            OK,
        ),
        Step(
            "4.8",
            "nonce is ours",
            "the nonce claim",
            "the nonce sent in step 2" + ("" if e is None else f" ({e.nonce.hex()})"),
            OK,
        ),
        Step(
            "4.9",
            "event log",
            "the event log's replay",
            "the quote's RTMR0-3",
            SKIPPED + " (not used by this client: RTMRs are checked directly in 4.10)",
        ),
        *_measurement_steps(policy, e),
        Step(
            "4.11",
            "claims and model",
            "ohttp-keys and service claims present; model claim"
            + ("" if e is None else f": {_model(e)}"),
            "allowed model digests: "
            + (
                "any"
                if policy.allowed_model_digests is None
                else ", ".join(sorted(d.hex() for d in policy.allowed_model_digests))
            ),
            OK,
        ),
        Step(
            "5",
            "OHTTP key configurations are attested",
            "SHA-256 of the served application/ohttp-keys bytes"
            + ("" if e is None else f" ({claimed_keys})"),
            "the ohttp-keys claim in the evidence",
            OK,
        ),
        Step(
            "6",
            "usable key configuration",
            "the served key configurations"
            + (
                ""
                if e is None
                else ": "
                + ", ".join(f"id {c.key_id} KEM {int(c.kem_id):#06x}" for c in e.key_configs)
            ),
            "KEMs this client implements (X-Wing preferred)",
            OK,
        ),
        Step(
            "7",
            "GPUs",
            "the report's GPU evidence: bound by the gpus claim, GPU nonce of the claims, "
            "NVIDIA device chain, FWID, SPDM signature, CC mode, versions, measurements"
            + ("" if e is None else f": {_gpus(e)}"),
            _gpu_policy(policy),
            OK,
        ),
        Step(
            "8",
            "receipt key",
            "the report's receipt-key claim (SHA-256 of the Ed25519 key signing answer receipts)"
            + ("" if e is None else f": {_receipt_key(e)}"),
            "the certificate's receipt-key claim (receipts verify against the pinned quote)",
            OK,
        ),
    ]
    return tuple(steps)


def _receipt_key(endpoint: VerifiedEndpoint) -> str:
    key = endpoint.receipt_key_sha256
    return "none (the service signs no receipts)" if key is None else key.hex()


def _gpus(endpoint: VerifiedEndpoint) -> str:
    if not endpoint.gpus:
        return "none"
    return "; ".join(
        f"GPU {index} {gpu.architecture} driver {gpu.driver_version} VBIOS {gpu.vbios_version} "
        f"FWID {gpu.fwid.hex()[:16]}... {len(gpu.measurements)} measurements"
        for index, gpu in enumerate(endpoint.gpus)
    )


def _gpu_policy(policy: Policy) -> str:
    gpu = policy.gpu
    parts = [f"at least {gpu.required_count} GPU(s)"]
    if gpu.architectures is not None:
        parts.append("architectures " + ", ".join(sorted(gpu.architectures)))
    if gpu.min_driver_version is not None:
        parts.append(f"driver >= {gpu.min_driver_version}")
    if gpu.min_vbios_version is not None:
        parts.append(f"VBIOS >= {gpu.min_vbios_version}")
    parts.append(f"{len(gpu.measurements)} pinned measurement index(es)")
    if gpu.insecure_allow_devtools:
        parts.append("INSECURE: DEVTOOLS accepted")
    return "; ".join(parts)


def _measurement_steps(policy: Policy, endpoint: VerifiedEndpoint | None) -> list[Step]:
    m = None if endpoint is None else endpoint.measurements
    out = []
    for name in _REGISTERS:
        allowed: frozenset[bytes] | None = getattr(policy, name)
        value = "" if m is None else f" = {getattr(m, name).hex()}"
        if policy.insecure_any_measurement:
            against, result = "nothing: insecure_any_measurement (INSECURE)", NOT_PINNED
        elif allowed is None:
            against, result = "no allow-list in the policy", NOT_PINNED
        else:
            against, result = f"the policy's allow-list ({len(allowed)} value(s))", OK
        title = f"measurement {name.upper()}"
        out.append(Step("4.10", title, name + value, against, result, f"4.10/{name}"))
    return out


def _tcb(endpoint: VerifiedEndpoint) -> str:
    advisories = ", ".join(endpoint.advisory_ids) or "no advisories"
    return f"{endpoint.tcb_status}, {advisories}"


def _model(endpoint: VerifiedEndpoint) -> str:
    model = endpoint.model
    if model is None:
        return "none (no model loaded)"
    return f"{model.name}, {model.digest_kind} {model.digest.hex()}"
