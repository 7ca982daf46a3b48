"""Errors of the client side.

The hierarchy::

    ClientError                   root of everything raised by enclave.client
    ├── AttestationFailed         the endpoint's evidence did not verify, or could not be
    │                             fetched; ``reason`` is a stable code (the attestation
    │                             package's reason codes, plus the client's own below).
    │                             Also an ``httpx.ConnectError``: no request byte was sent.
    ├── ResponseTruncated         an OHTTP response ended without its authenticated final
    │                             chunk; also an ``httpx.RemoteProtocolError``
    ├── ResponseDecryptError      an OHTTP response did not decrypt or decode; also an
    │                             ``httpx.RemoteProtocolError``
    ├── GatewayRefused            the gateway refused the encapsulated request (outer status
    │                             other than 200); also an ``httpx.RemoteProtocolError``
    └── MeasurementsNotPinned     a transport was given a verifier whose policy does not pin
                                  the measurements (and does not say
                                  ``insecure_any_measurement``); raised before anything is
                                  sent; the message says how to get a policy; also a
                                  ``ValueError``

The client's own ``AttestationFailed.reason`` codes (next to ``attestation.checks.Reason``):

- ``endpoint_unreachable``: the TLS connection or the report request failed; the detail says
  how (DNS, connection refused, not a TLS port, TLS handshake, timed out);
- ``report_malformed``: the report is not the documented JSON, or its evidence is not hex;
- ``report_certificate_mismatch``: the report's certificate is not the connection's;
- ``ohttp_keys_mismatch``: the served key configurations do not hash to the ``ohttp-keys`` claim;
- ``ohttp_keys_unusable``: no key configuration this client can encrypt to;
- ``receipt_key_mismatch``: the report's ``receipt-key`` claim is not the certificate's;
- ``collateral_unavailable``: the collateral source failed;
- ``not_tls`` / ``not_verified``: an http:// URL, or a response that did not come over a
  verified RA-TLS connection;
- ``report_unavailable``: the report request was answered with a status other than 200;
- ``report_rate_limited``: the report request was refused by the service's rate limit (429);
  the detail is the ``Retry-After`` seconds;
- ``report_too_large``: the report is larger than ``MAX_REPORT_BYTES`` (refused while it is
  being read);
- ``gpu_evidence_unavailable``: the GPU evidence request was answered with a status other
  than 200.

A signed policy (``load_signed_policy``, ``--policy-bundle``) is checked before any connection:
its refusals are ``attestation.errors.VerificationError`` with the ``policy_bundle_*`` codes of
``attestation.policy_bundle.BundleReason`` (docs/client.md lists them).
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

import httpx

from enclave.errors import EnclaveError

__all__ = [
    "AttestationFailed",
    "ClientError",
    "ClientReason",
    "GatewayRefused",
    "MeasurementsNotPinned",
    "ResponseDecryptError",
    "ResponseTruncated",
]


class ClientReason(StrEnum):
    """The client's own ``AttestationFailed.reason`` codes (the list above; docs/client.md's
    table is checked against it). The others are ``attestation.reasons.Reason`` and
    ``GpuReason`` values, raised by the verifier and passed on unchanged."""

    ENDPOINT_UNREACHABLE = "endpoint_unreachable"
    REPORT_MALFORMED = "report_malformed"
    REPORT_CERTIFICATE_MISMATCH = "report_certificate_mismatch"
    OHTTP_KEYS_MISMATCH = "ohttp_keys_mismatch"
    OHTTP_KEYS_UNUSABLE = "ohttp_keys_unusable"
    NOT_TLS = "not_tls"
    NOT_VERIFIED = "not_verified"
    REPORT_UNAVAILABLE = "report_unavailable"
    REPORT_RATE_LIMITED = "report_rate_limited"
    REPORT_TOO_LARGE = "report_too_large"
    GPU_EVIDENCE_UNAVAILABLE = "gpu_evidence_unavailable"
    RECEIPT_KEY_MISMATCH = "receipt_key_mismatch"

    #: Every code (derived from the members).
    ALL: ClassVar[frozenset[str]]


ClientReason.ALL = frozenset(ClientReason)


class ClientError(EnclaveError):
    """Root of every error raised by the client side."""


class AttestationFailed(ClientError, httpx.ConnectError):  # noqa: N818 (the name the API uses)
    """The endpoint could not be verified; nothing was sent to it."""

    def __init__(self, reason: str, detail: str = "", *, stage: str = "") -> None:
        message = f"attestation failed: {reason}" + (f" ({detail})" if detail else "")
        httpx.ConnectError.__init__(self, message)
        self.reason = reason
        self.detail = detail
        #: Where it failed in ``verify_endpoint``: "certificate" (the TLS connection's RA-TLS
        #: certificate), "report" (the attestation report), or "" (elsewhere).
        self.stage = stage
        #: The steps of ``verify_endpoint`` that ran and passed before it failed.
        self.steps: tuple[str, ...] = ()


class ResponseTruncated(ClientError, httpx.RemoteProtocolError):  # noqa: N818
    """The encrypted response stream ended before its authenticated final chunk."""

    def __init__(self) -> None:
        httpx.RemoteProtocolError.__init__(
            self, "the encrypted response was truncated (no authenticated final chunk)"
        )


class ResponseDecryptError(ClientError, httpx.RemoteProtocolError):
    """The encrypted response did not decrypt or decode. Deliberately uninformative."""

    def __init__(self) -> None:
        httpx.RemoteProtocolError.__init__(self, "the encrypted response could not be decrypted")


class GatewayRefused(ClientError, httpx.RemoteProtocolError):  # noqa: N818
    """The OHTTP gateway (or the relay) refused the encapsulated request."""

    def __init__(self, status: int, code: str | None = None) -> None:
        said = f"the OHTTP gateway answered {status}" + (f" {code}" if code else "")
        httpx.RemoteProtocolError.__init__(self, said)
        self.status = status
        #: The gateway's own error code for a refusal about the service's state, e.g.
        #: ``ohttp_key_unavailable`` or ``replay_store_unavailable`` (replicas); else None.
        self.code = code


class MeasurementsNotPinned(ClientError, ValueError):  # noqa: N818
    """The policy does not pin the measurements; nothing may be sent under it."""
