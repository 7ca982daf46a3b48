"""The client side: verify an endpoint, and talk to it over attested channels.

- :func:`verify_endpoint` / :func:`averify_endpoint`: the RA-TLS certificate and a nonce-fresh
  attestation report, verified together, returning a :class:`VerifiedEndpoint`;
- :class:`RaTlsTransport` / :class:`AsyncRaTlsTransport`: httpx transports whose connections
  are verified in the TLS layer before any request byte is written;
- :class:`OhttpTransport` / :class:`AsyncOhttpTransport`: httpx transports that encrypt every
  request to the attested OHTTP key (chunked, streamed), directly or through a relay;
- :func:`load_signed_policy`: a release's policy file, verified through its Sigstore bundle
  (signed by the release workflow, Rekor-logged, its version never going backwards) before
  it is used: ``Verifier(source, policy=load_signed_policy(...).policy)``;
- :class:`ReceiptKeeper` / :class:`ResponseWatcher`: check an answer's signed receipt against
  the verified endpoint and keep it with its evidence, for ``enclave receipt verify`` later;
- :class:`Verifier`: the policy, collateral and cache these share. The transports refuse
  (:class:`MeasurementsNotPinned`) a policy that does not pin the measurements unless it says
  ``insecure_any_measurement``.

docs/client.md describes the design and the error codes.
"""

from attestation.policy_bundle import ReleaseIdentity, SignedPolicy
from attestation.policy_bundle_files import load_signed_policy
from enclave.client._endpoint import (
    VerifiedEndpoint,
    attest_endpoint,
    averify_endpoint,
    verify_endpoint,
)
from enclave.client._ohttp import (
    ENDPOINT_EXTENSION,
    AsyncOhttpTransport,
    OhttpTransport,
    attested_endpoint,
)
from enclave.client._ratls import AsyncRaTlsTransport, RaTlsTransport, verified_certificate
from enclave.client._receipts import KeptReceipt, ReceiptKeeper, ResponseWatcher
from enclave.client._verifier import VerifiedCertificate, Verifier
from enclave.client.errors import (
    AttestationFailed,
    ClientError,
    ClientReason,
    GatewayRefused,
    MeasurementsNotPinned,
    ResponseDecryptError,
    ResponseTruncated,
)

__all__ = [
    "ENDPOINT_EXTENSION",
    "AsyncOhttpTransport",
    "AsyncRaTlsTransport",
    "AttestationFailed",
    "ClientError",
    "ClientReason",
    "GatewayRefused",
    "KeptReceipt",
    "MeasurementsNotPinned",
    "OhttpTransport",
    "RaTlsTransport",
    "ReceiptKeeper",
    "ReleaseIdentity",
    "ResponseDecryptError",
    "ResponseTruncated",
    "ResponseWatcher",
    "SignedPolicy",
    "VerifiedCertificate",
    "VerifiedEndpoint",
    "Verifier",
    "attest_endpoint",
    "attested_endpoint",
    "averify_endpoint",
    "load_signed_policy",
    "verified_certificate",
    "verify_endpoint",
]
