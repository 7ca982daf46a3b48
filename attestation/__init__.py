"""TDX quotes, quote providers, evidence claims, RA-TLS certificates and DCAP verification.

The most used names are re-exported here; the modules are the full surface:

- ``attestation.quote``: parse Intel quotes (TDX v4/v5, recognise SGX);
- ``attestation.evidence``: the claims buffer and the CBOR tag 60000 evidence;
- ``attestation.ratls``: issue and parse RA-TLS certificates;
- ``attestation.collateral``, ``attestation.policy``, ``attestation.verify``: verification;
- ``attestation.providers``: configfs-tsm, dstack and simulated quote providers;
- ``attestation.eventlog``: dstack and CCEL event logs, RTMR replay;
- ``attestation.gpu``: NVIDIA GPU evidence (SPDM reports, device chains, GPU policy, NVML and
  simulated providers), bound into the claims (``gpus``);
- ``enclave_dev.tee``: the DCAP-verifiable simulator (import it explicitly; its root is
  never trusted by default anywhere).

This package imports neither ``enclave`` nor ``model_manager``. docs/attestation.md has the
evidence format, the verification steps and every reason code.
"""

from attestation.checks import Reason
from attestation.collateral import Collateral, CollateralSource, OfflineCollateral, PccsCollateral
from attestation.errors import (
    AttestationError,
    CertificateError,
    CollateralError,
    EvidenceError,
    PolicyError,
    QuoteParseError,
    QuoteProviderError,
    QuoteProviderUnavailableError,
    VerificationError,
)
from attestation.eventlog import EventLog, parse_ccel, parse_dstack_event_log
from attestation.evidence import Claims, Evidence, ModelClaim, decode_evidence
from attestation.policy import DEFAULT_POLICY, Policy, load_policy
from attestation.providers import QuoteProvider, QuoteResult, detect_provider
from attestation.quote import Quote, TdReport, parse_quote
from attestation.ratls import RaTlsIssuer, parse_certificate
from attestation.verify import Measurements, VerifiedEvidence, verify_evidence, verify_quote

__all__ = [
    "DEFAULT_POLICY",
    "AttestationError",
    "CertificateError",
    "Claims",
    "Collateral",
    "CollateralError",
    "CollateralSource",
    "EventLog",
    "Evidence",
    "EvidenceError",
    "Measurements",
    "ModelClaim",
    "OfflineCollateral",
    "PccsCollateral",
    "Policy",
    "PolicyError",
    "Quote",
    "QuoteParseError",
    "QuoteProvider",
    "QuoteProviderError",
    "QuoteProviderUnavailableError",
    "QuoteResult",
    "RaTlsIssuer",
    "Reason",
    "TdReport",
    "VerificationError",
    "VerifiedEvidence",
    "decode_evidence",
    "detect_provider",
    "load_policy",
    "parse_ccel",
    "parse_certificate",
    "parse_dstack_event_log",
    "parse_quote",
    "verify_evidence",
    "verify_quote",
]
