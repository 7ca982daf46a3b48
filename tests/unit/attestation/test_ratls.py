"""RA-TLS certificates: issuing with the simulator, and reading the reference certificates."""

from __future__ import annotations

import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attestation._der import read_certificate
from attestation.checks import check_pubkey_hash, check_report_data
from attestation.errors import CertificateError, EvidenceError, VerificationError
from attestation.evidence import ModelClaim, report_data_for
from attestation.quote import TEE_TYPE_SGX, parse_quote
from attestation.ratls import EVIDENCE_OID, MODEL_DIGEST_OID, RaTlsIssuer, parse_certificate
from tests.vectors import load_bytes

MODEL = ModelClaim("llama-3-8b", "dm-verity", bytes(range(32)))


class RecordingProvider:
    """A QuoteSource that records report_data and returns a fake quote embedding it."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    async def get_quote(self, report_data: bytes) -> bytes:
        self.requests.append(report_data)
        return b"QUOTE" + report_data


async def test_issue_binds_claims_to_quote_and_key() -> None:
    provider = RecordingProvider()
    issuer = RaTlsIssuer(provider)
    issued = await issuer.issue(ohttp_keys_body=b"keys", model=MODEL, service_version="1.2.3")
    cert = x509.load_der_x509_certificate(issued.certificate_der)
    ext = cert.extensions.get_extension_for_oid(EVIDENCE_OID)
    assert not ext.critical
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    assert ext.value.value == issued.evidence.encode()  # raw tagged CBOR, as the references do
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    assert provider.requests == [report_data_for(issued.evidence.claims_buffer)]
    found = parse_certificate(issued.certificate_pem)
    assert found.parser == "cryptography"
    assert found.claims == issued.claims
    assert found.claims.ohttp_keys == hashlib.sha256(b"keys").digest()
    assert found.claims.model == MODEL
    assert found.claims.service_version == "1.2.3"
    check_pubkey_hash(found.claims, found.spki_der)
    assert found.model_digest is None  # the model extension is off by default
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_oid(MODEL_DIGEST_OID)


async def test_reissue_keeps_the_key_and_refreshes_evidence() -> None:
    provider = RecordingProvider()
    issuer = RaTlsIssuer(provider)
    first = await issuer.issue(service_version="1")
    second = await issuer.issue(model=MODEL, service_version="1")
    one = x509.load_der_x509_certificate(first.certificate_der)
    two = x509.load_der_x509_certificate(second.certificate_der)
    assert one.public_key() == two.public_key()
    assert one.serial_number != two.serial_number
    assert first.evidence != second.evidence
    assert len(provider.requests) == 2


async def test_other_issuers_have_other_keys() -> None:
    one, two = RaTlsIssuer(RecordingProvider()), RaTlsIssuer(RecordingProvider())
    assert one.spki_der != two.spki_der


async def test_a_plain_async_callable_is_a_quote_source() -> None:
    async def quote(report_data: bytes) -> bytes:
        return b"Q" + report_data

    issued = await RaTlsIssuer(quote).issue()
    assert issued.evidence.quote == b"Q" + report_data_for(issued.evidence.claims_buffer)


async def test_optional_model_digest_extension() -> None:
    issuer = RaTlsIssuer(RecordingProvider(), include_model_digest_extension=True)
    issued = await issuer.issue(model=MODEL)
    cert = x509.load_der_x509_certificate(issued.certificate_der)
    ext = cert.extensions.get_extension_for_oid(MODEL_DIGEST_OID)
    assert not ext.critical
    assert parse_certificate(issued.certificate_der).model_digest == MODEL.digest
    without_model = await issuer.issue()
    assert parse_certificate(without_model.certificate_der).model_digest is None


async def test_lifetime_follows_the_clock() -> None:
    start = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    issuer = RaTlsIssuer(
        RecordingProvider(), lifetime=datetime.timedelta(hours=2), clock=lambda: start
    )
    issued = await issuer.issue()
    assert issued.not_after == start + datetime.timedelta(hours=2)
    assert issued.not_before < start


async def test_private_key_is_not_serialised_anywhere_by_issuing() -> None:
    issuer = RaTlsIssuer(RecordingProvider())
    issued = await issuer.issue()
    key_der = issuer.private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    scalar = issuer.private_key.private_numbers().private_value.to_bytes(32, "big")
    assert scalar not in issued.certificate_der
    assert key_der not in issued.certificate_pem


async def test_an_empty_quote_is_an_error() -> None:
    async def nothing(report_data: bytes) -> bytes:
        return b""

    with pytest.raises(CertificateError):
        await RaTlsIssuer(nothing).issue()


def test_lifetime_must_be_positive() -> None:
    with pytest.raises(ValueError, match="lifetime"):
        RaTlsIssuer(RecordingProvider(), lifetime=datetime.timedelta(0))


def test_intel_sgx_sdk_certificate_parses_and_its_bindings_hold() -> None:
    found = parse_certificate(load_bytes("ratls/intel-sgxsdk-cert.pem"))
    assert found.parser == "cryptography"
    quote = parse_quote(found.evidence.quote)
    assert quote.tee_type == TEE_TYPE_SGX
    assert quote.version == 3
    check_pubkey_hash(found.claims, found.spki_der)
    check_report_data(quote.report_data, found.evidence.claims_buffer)


def test_gramine_certificate_gives_a_clear_error_by_default() -> None:
    with pytest.raises(CertificateError, match="cryptography cannot parse this certificate"):
        parse_certificate(load_bytes("ratls/gramine-cert.pem"))


def test_gramine_certificate_bindings_hold_with_the_der_fallback() -> None:
    found = parse_certificate(load_bytes("ratls/gramine-cert.pem"), lenient_der=True)
    assert found.parser == "der-fallback"
    quote = parse_quote(found.evidence.quote)
    assert quote.tee_type == TEE_TYPE_SGX
    check_pubkey_hash(found.claims, found.spki_der)
    check_report_data(quote.report_data, found.evidence.claims_buffer)


def test_der_fallback_reads_the_same_as_cryptography() -> None:
    pem = load_bytes("ratls/intel-sgxsdk-cert.pem")
    strict = parse_certificate(pem)
    raw = read_certificate(strict.certificate_der)
    assert raw.spki_der == strict.spki_der
    assert raw.extensions[EVIDENCE_OID.dotted_string] == (False, strict.evidence.encode())


def test_pubkey_binding_fails_against_another_key() -> None:
    found = parse_certificate(load_bytes("ratls/intel-sgxsdk-cert.pem"))
    other = parse_certificate(load_bytes("ratls/gramine-cert.pem"), lenient_der=True)
    with pytest.raises(VerificationError) as exc:
        check_pubkey_hash(found.claims, other.spki_der)
    assert exc.value.reason == "pubkey_hash_mismatch"


def _plain_certificate() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plain")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_certificate_without_evidence_is_an_error() -> None:
    with pytest.raises(CertificateError, match="no evidence extension"):
        parse_certificate(_plain_certificate())


def test_garbage_and_bad_pem_are_certificate_errors() -> None:
    with pytest.raises(CertificateError):
        parse_certificate(b"not a certificate")
    with pytest.raises(CertificateError):
        parse_certificate(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
    with pytest.raises(CertificateError):
        parse_certificate(b"not a certificate", lenient_der=True)


def test_every_truncation_of_a_reference_certificate_fails_cleanly() -> None:
    der = parse_certificate(load_bytes("ratls/intel-sgxsdk-cert.pem")).certificate_der
    for cut in range(0, len(der) - 1, 97):
        with pytest.raises((CertificateError, EvidenceError)):
            parse_certificate(der[:cut], lenient_der=True)


async def test_an_unknown_public_key_curve_is_a_certificate_error() -> None:
    """Found by tests/fuzz: a certificate whose SPKI names a curve cryptography does not know
    made ``public_key()`` raise UnsupportedAlgorithm, which escaped the parser (a hostile
    server could turn a clean AttestationFailed into an unexpected exception)."""
    issued = await RaTlsIssuer(RecordingProvider()).issue()
    prime256v1 = bytes.fromhex("2a8648ce3d030107")
    assert issued.certificate_der.count(prime256v1) == 1
    unknown = issued.certificate_der.replace(prime256v1, bytes.fromhex("2a86487f3d030107"))
    with pytest.raises(CertificateError, match="not supported"):
        parse_certificate(unknown)
