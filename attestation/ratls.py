"""RA-TLS certificates: issue them with fresh evidence, and read evidence out of any of them.

Issued certificates are self-signed ECDSA P-256 leaves carrying the evidence (CBOR tag 60000
``[quote, claims-buffer]``) as the raw value of the non-critical extension 2.23.133.5.4.9
(TCG DICE conceptual message wrapper, CBOR-tag form), exactly as Gramine and the Intel SGX
SDK place it: the extension's OCTET STRING holds the tagged CBOR item and nothing else.
Optionally a second non-critical extension 1.3.6.1.4.1.65230.3.5.5 carries the raw model
digest bytes, for clients that pin a model without decoding CBOR (off by default).

With a GPU provider, every issue first collects each GPU's evidence for the GPU nonce of the
claims (``attestation.gpu.evidence.gpu_nonce``) and adds their digests as the ``gpus`` claim;
the evidence itself stays with the issued certificate (served over the connection, not
embedded: docs/attestation.md section 7.4).

The private key is generated in memory when the issuer is created and is never serialised.
"""

from __future__ import annotations

import base64
import datetime
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Final, Literal, Protocol, runtime_checkable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attestation._der import read_certificate
from attestation.errors import CertificateError
from attestation.evidence import (
    Claims,
    Evidence,
    ModelClaim,
    PubkeyHash,
    decode_evidence,
    encode_claims,
    ohttp_keys_digest,
    report_data_for,
)
from attestation.gpu.evidence import GpuEvidence, gpu_nonce
from attestation.gpu.providers import GpuProvider

__all__ = [
    "EVIDENCE_OID",
    "MODEL_DIGEST_OID",
    "CertificateEvidence",
    "IssuedCertificate",
    "QuoteSource",
    "RaTlsIssuer",
    "parse_certificate",
]

logger = logging.getLogger(__name__)

EVIDENCE_OID: Final = x509.ObjectIdentifier("2.23.133.5.4.9")
MODEL_DIGEST_OID: Final = x509.ObjectIdentifier("1.3.6.1.4.1.65230.3.5.5")
DEFAULT_LIFETIME: Final = datetime.timedelta(hours=24)
CLOCK_SKEW: Final = datetime.timedelta(minutes=5)
MAX_CERTIFICATE_SIZE: Final = 1 << 20


@runtime_checkable
class QuoteSource(Protocol):
    """Anything that returns a quote over 64 bytes of report_data (a quote provider)."""

    async def get_quote(self, report_data: bytes) -> bytes: ...


QuoteFunction = Callable[[bytes], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    certificate_der: bytes
    certificate_pem: bytes
    evidence: Evidence
    claims: Claims
    not_before: datetime.datetime
    not_after: datetime.datetime
    gpu_evidence: tuple[GpuEvidence, ...] = ()


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class RaTlsIssuer:
    """Issues (and reissues, same key) RA-TLS certificates over fresh quotes."""

    def __init__(
        self,
        quote_source: QuoteSource | QuoteFunction,
        *,
        lifetime: datetime.timedelta = DEFAULT_LIFETIME,
        common_name: str = "enclave RA-TLS",
        include_model_digest_extension: bool = False,
        clock: Callable[[], datetime.datetime] = _utc_now,
        gpu_provider: GpuProvider | None = None,
        insecure: tuple[str, ...] = (),
        receipt_key: bytes | None = None,
    ) -> None:
        """``insecure``: the service's ``insecure_*`` settings in effect, bound into every
        claims buffer (``insecure`` claim) so a verifier's policy can refuse them.
        ``receipt_key``: the ``receipt-key`` claim (SHA-256 of the raw Ed25519 public key the
        service signs receipts with), bound into every certificate and report likewise."""
        if lifetime <= datetime.timedelta(0):
            raise ValueError("certificate lifetime must be positive")
        if isinstance(quote_source, QuoteSource):
            self._get_quote: QuoteFunction = quote_source.get_quote
        elif callable(quote_source):
            self._get_quote = quote_source
        else:
            raise TypeError("quote_source must have async get_quote(report_data) or be callable")
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._lifetime = lifetime
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self._model_extension = include_model_digest_extension
        self._clock = clock
        self._gpus = gpu_provider
        self._insecure = tuple(sorted(set(insecure)))
        if receipt_key is not None and len(receipt_key) != 32:
            raise ValueError("receipt_key is a 32-byte SHA-256 digest")
        self._receipt_key = receipt_key

    @property
    def gpu_provider(self) -> GpuProvider | None:
        return self._gpus

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """The TLS key, for loading into an SSL context in memory. Never write it anywhere."""
        return self._key

    @property
    def spki_der(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def claims(
        self,
        *,
        nonce: bytes | None = None,
        ohttp_keys_body: bytes | None = None,
        model: ModelClaim | None = None,
        service_version: str | None = None,
    ) -> Claims:
        """The claims this issuer binds: its own public key plus what the caller passes."""
        return Claims(
            pubkey_hash=PubkeyHash.of(self.spki_der),
            nonce=nonce,
            ohttp_keys=None if ohttp_keys_body is None else ohttp_keys_digest(ohttp_keys_body),
            model=model,
            service_version=service_version,
            insecure=self._insecure,
            receipt_key=self._receipt_key,
        )

    async def bind_gpus(self, claims: Claims) -> tuple[Claims, tuple[GpuEvidence, ...]]:
        """With a GPU provider: collect every GPU's evidence for these claims' GPU nonce and
        return the claims with their ``gpus`` digests; without one, the claims unchanged."""
        if self._gpus is None:
            return claims, ()
        nonce = gpu_nonce(claims.pubkey_hash, claims.ohttp_keys, claims.nonce)
        collected = await self._gpus.collect(nonce)
        return replace(claims, gpus=tuple(item.digest for item in collected)), collected

    async def evidence(self, claims: Claims) -> Evidence:
        """Fresh evidence: a quote whose report_data binds the encoded claims."""
        claims_buffer = encode_claims(claims)
        quote = await self._get_quote(report_data_for(claims_buffer))
        if not isinstance(quote, bytes) or not quote:
            raise CertificateError("the quote provider returned no quote")
        return Evidence(quote=quote, claims_buffer=claims_buffer)

    async def issue(
        self,
        *,
        ohttp_keys_body: bytes | None = None,
        model: ModelClaim | None = None,
        service_version: str | None = None,
    ) -> IssuedCertificate:
        """Issue a certificate (same key every time) over a fresh quote and these claims."""
        claims = self.claims(
            ohttp_keys_body=ohttp_keys_body, model=model, service_version=service_version
        )
        claims, gpus = await self.bind_gpus(claims)
        evidence = await self.evidence(claims)
        return self._sign(evidence, claims, gpus)

    def _sign(
        self, evidence: Evidence, claims: Claims, gpus: tuple[GpuEvidence, ...] = ()
    ) -> IssuedCertificate:
        now = self._clock()
        not_before, not_after = now - CLOCK_SKEW, now + self._lifetime
        public_key = self._key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(public_key)
            .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1 or 1)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.UnrecognizedExtension(EVIDENCE_OID, evidence.encode()), critical=False
            )
        )
        if self._model_extension and claims.model is not None:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(MODEL_DIGEST_OID, claims.model.digest), critical=False
            )
        cert = builder.sign(self._key, hashes.SHA256())
        logger.info("issued RA-TLS certificate valid until %s", not_after.isoformat())
        return IssuedCertificate(
            certificate_der=cert.public_bytes(serialization.Encoding.DER),
            certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
            evidence=evidence,
            claims=claims,
            not_before=not_before,
            not_after=not_after,
            gpu_evidence=gpus,
        )


@dataclass(frozen=True, slots=True)
class CertificateEvidence:
    """What an RA-TLS certificate carries, with the parser that read it."""

    certificate_der: bytes
    spki_der: bytes
    evidence: Evidence
    claims: Claims
    model_digest: bytes | None
    parser: Literal["cryptography", "der-fallback"]


def parse_certificate(data: bytes, *, lenient_der: bool = False) -> CertificateEvidence:
    """Read the evidence out of an RA-TLS certificate (PEM or DER).

    cryptography parses the certificate strictly. Some RA-TLS stacks emit DER it refuses
    (Gramine: a NULL parameter after ecdsa-with-SHA256); that raises :class:`CertificateError`
    saying so, unless ``lenient_der`` is set, in which case a minimal DER reader extracts the
    SubjectPublicKeyInfo and the extensions (nothing here relies on the self-signature, which
    proves nothing for a self-signed certificate; the TLS handshake proves the key).
    """
    if len(data) > MAX_CERTIFICATE_SIZE:
        raise CertificateError(f"certificate larger than {MAX_CERTIFICATE_SIZE} bytes")
    der = _to_der(data)
    try:
        cert = x509.load_der_x509_certificate(der)
        spki_der = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        extensions = {
            ext.oid.dotted_string: (ext.critical, ext.value.value)
            for ext in cert.extensions
            if isinstance(ext.value, x509.UnrecognizedExtension)
        }
        parser: Literal["cryptography", "der-fallback"] = "cryptography"
    except UnsupportedAlgorithm as exc:  # a key type cryptography cannot load (fuzzing found it)
        raise CertificateError("the certificate's public key algorithm is not supported") from exc
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        if not lenient_der:
            raise CertificateError(
                f"cryptography cannot parse this certificate ({exc}); it is not strict DER. "
                "Use the lenient DER reader to extract its evidence anyway."
            ) from exc
        raw = read_certificate(der)
        spki_der, extensions, parser = raw.spki_der, raw.extensions, "der-fallback"
    found = extensions.get(EVIDENCE_OID.dotted_string)
    if found is None:
        raise CertificateError("the certificate has no evidence extension 2.23.133.5.4.9")
    evidence = decode_evidence(found[1])
    model = extensions.get(MODEL_DIGEST_OID.dotted_string)
    return CertificateEvidence(
        certificate_der=der,
        spki_der=spki_der,
        evidence=evidence,
        claims=evidence.claims,
        model_digest=None if model is None else model[1],
        parser=parser,
    )


def _to_der(data: bytes) -> bytes:
    stripped = data.strip()
    if not stripped.startswith(b"-----BEGIN CERTIFICATE-----"):
        return data
    try:
        pem_body = stripped.split(b"-----BEGIN CERTIFICATE-----", 1)[1]
        pem_body = pem_body.split(b"-----END CERTIFICATE-----", 1)[0]
        return base64.b64decode(b"".join(pem_body.split()), validate=True)
    except (IndexError, ValueError) as exc:
        raise CertificateError("malformed PEM certificate") from exc
