"""Errors of the attestation package.

The hierarchy::

    AttestationError              root of everything raised by attestation
    ├── QuoteParseError           bytes that are not a quote this package understands
    ├── EvidenceError             evidence (CBOR tag 60000, claims buffer) that is malformed
    ├── CertificateError          an RA-TLS certificate that cannot be parsed or issued
    ├── QuoteProviderError        a quote provider (configfs-tsm, dstack, simulated) failed
    │   └── QuoteProviderUnavailableError   no provider of the requested kind on this machine
    ├── GpuProviderError          GPU evidence could not be collected (NVML, simulated)
    │   ├── GpuProviderUnavailableError   no NVML (library, bindings) on this machine
    │   └── GpuNotInCcModeError           the GPUs are not in confidential-computing mode
    ├── CollateralError           collateral could not be loaded or fetched
    │   └── PccsFetchError        one request of a PCCS / Intel PCS fetch failed
    ├── PolicyError               a policy file that is invalid
    ├── GpuReportError            bytes that are not a GPU attestation report
    ├── GpuChainError             a GPU certificate chain failed a check (``reason``: a GPU
    │                             reason code)
    └── VerificationError         evidence did not verify; ``reason`` is a stable code

``VerificationError.reason`` codes are part of the public interface (CLI output, metrics,
client errors); they never change meaning once released.
"""

from __future__ import annotations

__all__ = [
    "AttestationError",
    "CertificateError",
    "CollateralError",
    "EvidenceError",
    "GpuChainError",
    "GpuNotInCcModeError",
    "GpuProviderError",
    "GpuProviderUnavailableError",
    "GpuReportError",
    "PccsFetchError",
    "PolicyError",
    "QuoteParseError",
    "QuoteProviderError",
    "QuoteProviderUnavailableError",
    "VerificationError",
]


class AttestationError(Exception):
    """Root of every error raised by the attestation package."""


class QuoteParseError(AttestationError):
    """The bytes are not a quote this package understands."""


class EvidenceError(AttestationError):
    """Evidence or its claims buffer is malformed."""


class CertificateError(AttestationError):
    """An RA-TLS certificate could not be parsed or issued."""


class QuoteProviderError(AttestationError):
    """A quote provider failed to produce a quote."""


class QuoteProviderUnavailableError(QuoteProviderError):
    """No quote provider of the requested kind is available on this machine."""


class GpuProviderError(AttestationError):
    """GPU evidence could not be collected."""


class GpuProviderUnavailableError(GpuProviderError):
    """NVML (the library or its Python bindings) is not available on this machine."""


class GpuNotInCcModeError(GpuProviderError):
    """The GPUs are not in confidential-computing mode, so they cannot attest."""


class CollateralError(AttestationError):
    """Collateral could not be loaded or fetched."""


class PccsFetchError(CollateralError):
    """One request of the fetch failed; the message says which, never with response content."""


class GpuReportError(AttestationError):
    """Bytes that are not a GPU attestation report (request + MEASUREMENTS response)."""


class GpuChainError(AttestationError):
    """A certificate chain failed a check; reason names which (a GPU reason code)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PolicyError(AttestationError):
    """A verification policy is invalid."""


class VerificationError(AttestationError):
    """Evidence failed verification. ``reason`` is a stable machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
