"""The stable ``VerificationError.reason`` codes of the attestation package, as types.

Each is a :class:`~enum.StrEnum`: a member *is* its string (``Reason.TD_DEBUG ==
"td_debug"``, JSON and metric labels carry the value unchanged), and ``ALL`` is derived from
the members, never typed by hand. docs/attestation.md explains each code; its lists are
checked against these enums (tests/unit/attestation/test_reason_docs.py).
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

__all__ = ["GpuReason", "Reason"]


class Reason(StrEnum):
    """Stable ``VerificationError.reason`` codes (docs/attestation.md explains each)."""

    EVIDENCE_MALFORMED = "evidence_malformed"
    QUOTE_MALFORMED = "quote_malformed"
    COLLATERAL_UNAVAILABLE = "collateral_unavailable"
    COLLATERAL_EXPIRED = "collateral_expired"
    COLLATERAL_NOT_YET_VALID = "collateral_not_yet_valid"
    CERT_CHAIN_INVALID = "cert_chain_invalid"
    QUOTE_SIGNATURE_INVALID = "quote_signature_invalid"
    TCB_LEVEL_UNKNOWN = "tcb_level_unknown"
    DCAP_FAILED = "dcap_verification_failed"
    NOT_TDX = "not_tdx"
    TCB_STATUS_NOT_ALLOWED = "tcb_status_not_allowed"
    ADVISORY_NOT_ALLOWED = "advisory_not_allowed"
    TD_DEBUG = "td_debug"
    REPORT_DATA_MISMATCH = "report_data_mismatch"
    PUBKEY_HASH_MISMATCH = "pubkey_hash_mismatch"
    NONCE_MISSING = "nonce_missing"
    NONCE_MISMATCH = "nonce_mismatch"
    EVENT_LOG_MISMATCH = "event_log_mismatch"
    MRTD_NOT_ALLOWED = "mrtd_not_allowed"
    RTMR_NOT_ALLOWED = "rtmr_not_allowed"
    MRCONFIGID_NOT_ALLOWED = "mrconfigid_not_allowed"
    CLAIMS_INCOMPLETE = "claims_incomplete"
    MODEL_MISSING = "model_missing"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    SERVICE_INSECURE = "service_insecure"

    #: Every code (derived from the members, never typed by hand).
    ALL: ClassVar[frozenset[str]]


Reason.ALL = frozenset(Reason)


class GpuReason(StrEnum):
    """Stable ``VerificationError.reason`` codes of the GPU steps (docs/attestation.md)."""

    REPORT_MALFORMED = "gpu_report_malformed"
    CHAIN_MALFORMED = "gpu_chain_malformed"
    CHAIN_INCOMPLETE = "gpu_chain_incomplete"
    ROOT_UNTRUSTED = "gpu_root_untrusted"
    CHAIN_INVALID = "gpu_chain_invalid"
    CERT_EXPIRED = "gpu_cert_expired"
    REVOCATION_UNAVAILABLE = "gpu_revocation_unavailable"
    OCSP_INVALID = "gpu_ocsp_invalid"
    CERT_REVOKED = "gpu_cert_revoked"
    FWID_MISSING = "gpu_fwid_missing"
    ARCHITECTURE_MISMATCH = "gpu_architecture_mismatch"
    ARCHITECTURE_NOT_ALLOWED = "gpu_architecture_not_allowed"
    FWID_MISMATCH = "gpu_fwid_mismatch"
    SIGNATURE_INVALID = "gpu_signature_invalid"
    NONCE_MISMATCH = "gpu_nonce_mismatch"
    CC_OFF = "gpu_cc_off"
    DEVTOOLS = "gpu_devtools"
    NOT_READY = "gpu_not_ready"
    VERSION_MISSING = "gpu_version_missing"
    DRIVER_TOO_OLD = "gpu_driver_too_old"
    VBIOS_TOO_OLD = "gpu_vbios_too_old"
    MEASUREMENT_MISSING = "gpu_measurement_missing"
    MEASUREMENT_NOT_ALLOWED = "gpu_measurement_not_allowed"
    EVIDENCE_MALFORMED = "gpu_evidence_malformed"
    EVIDENCE_UNBOUND = "gpu_evidence_unbound"
    EVIDENCE_MISSING = "gpu_evidence_missing"

    #: Every code (derived from the members, never typed by hand).
    ALL: ClassVar[frozenset[str]]


GpuReason.ALL = frozenset(GpuReason)
