"""Evidence and claims: encoding, decoding, determinism, tolerance, and malformed input."""

from __future__ import annotations

import contextlib
import hashlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.errors import EvidenceError
from attestation.evidence import (
    EVIDENCE_CBOR_TAG,
    Claims,
    Evidence,
    ModelClaim,
    PubkeyHash,
    decode_claims,
    decode_evidence,
    encode_claims,
    ohttp_keys_digest,
    report_data_for,
)
from attestation.ratls import parse_certificate
from tests.vectors import load_bytes

SPKI = b"0Y0\x13\x06\x07*\x86H\xce=\x02\x01" + bytes(70)


def _full_claims() -> Claims:
    return Claims(
        pubkey_hash=PubkeyHash.of(SPKI),
        nonce=b"\x01" * 32,
        ohttp_keys=ohttp_keys_digest(b"key configs"),
        model=ModelClaim("llama", "dm-verity", b"\xaa" * 32),
        service_version="0.1.0",
    )


def test_claims_round_trip() -> None:
    claims = _full_claims()
    assert decode_claims(encode_claims(claims)) == claims


def test_claims_encoding_is_core_deterministic() -> None:
    buffer = encode_claims(_full_claims())
    decoded = cbor2.loads(buffer)
    keys = list(decoded)
    assert keys == sorted(keys, key=cbor2.dumps)  # bytewise order of encoded keys
    assert keys == ["model", "nonce", "service", "ohttp-keys", "pubkey-hash"]
    assert list(decoded["model"]) == ["name", "digest", "digest-kind"]
    # Same claims, same bytes, whatever order they were given in.
    assert encode_claims(_full_claims()) == buffer


def test_pubkey_hash_claim_is_cbor_array_in_a_byte_string() -> None:
    buffer = encode_claims(Claims(pubkey_hash=PubkeyHash.of(SPKI)))
    raw = cbor2.loads(buffer)["pubkey-hash"]
    assert isinstance(raw, bytes)
    assert cbor2.loads(raw) == [1, hashlib.sha256(SPKI).digest()]


@pytest.mark.parametrize(("alg", "size"), [(1, 32), (7, 48), (8, 64)])
def test_pubkey_hash_supports_the_three_interoperable_algorithms(alg: int, size: int) -> None:
    entry = PubkeyHash.of(SPKI, alg)
    assert len(entry.value) == size
    assert PubkeyHash.decode(entry.encode()) == entry
    assert entry.matches(SPKI)
    assert not entry.matches(SPKI + b"\x00")


@pytest.mark.parametrize(
    "encoded",
    [
        cbor2.dumps([2, bytes(32)]),
        cbor2.dumps([1, bytes(31)]),
        cbor2.dumps([1, "text"]),
        cbor2.dumps([1]),
        cbor2.dumps({"alg": 1}),
        cbor2.dumps([True, bytes(32)]),
        cbor2.dumps([1, bytes(32)]) + b"\x00",
        b"\xff",
    ],
)
def test_bad_pubkey_hash_entries_are_refused(encoded: bytes) -> None:
    with pytest.raises(EvidenceError):
        PubkeyHash.decode(encoded)


def test_unknown_hash_algorithm_cannot_be_produced() -> None:
    with pytest.raises(EvidenceError):
        PubkeyHash.of(SPKI, 99)


def test_extra_claims_from_other_implementations_are_tolerated() -> None:
    buffer = cbor2.dumps(
        {"pubkey-hash": PubkeyHash.of(SPKI).encode(), "x-vendor": [1, 2], "zzz": "v"}
    )
    claims = decode_claims(buffer)
    assert claims.extra == ("x-vendor", "zzz")
    assert claims.model is None
    assert claims.nonce is None


@pytest.mark.parametrize(
    "buffer",
    [
        cbor2.dumps({"nonce": b"x"}),
        cbor2.dumps([1, 2]),
        cbor2.dumps({1: b"x", "pubkey-hash": PubkeyHash.of(SPKI).encode()}),
        cbor2.dumps({"pubkey-hash": "text"}),
        cbor2.dumps({"pubkey-hash": PubkeyHash.of(SPKI).encode(), "nonce": "text"}),
        cbor2.dumps({"pubkey-hash": PubkeyHash.of(SPKI).encode(), "model": b"x"}),
        cbor2.dumps(
            {
                "pubkey-hash": PubkeyHash.of(SPKI).encode(),
                "model": {"name": "m", "digest-kind": "md5", "digest": b"x"},
            }
        ),
        cbor2.dumps({"pubkey-hash": PubkeyHash.of(SPKI).encode(), "service": {"version": 1}}),
        cbor2.dumps({"pubkey-hash": PubkeyHash.of(SPKI).encode()}) + b"\x00",
        b"",
        bytes(70 * 1024),
    ],
)
def test_malformed_claims_buffers_are_refused(buffer: bytes) -> None:
    with pytest.raises(EvidenceError):
        decode_claims(buffer)


def test_report_data_is_sha256_of_claims_then_zeros() -> None:
    buffer = encode_claims(_full_claims())
    report_data = report_data_for(buffer)
    assert len(report_data) == 64
    assert report_data == hashlib.sha256(buffer).digest() + bytes(32)


def test_evidence_round_trip_and_wire_form() -> None:
    evidence = Evidence(quote=b"quote bytes", claims_buffer=encode_claims(_full_claims()))
    encoded = evidence.encode()
    assert encoded[:3] == b"\xd9\xea\x60"  # tag 60000, two-byte argument
    assert decode_evidence(encoded) == evidence
    assert decode_evidence(encoded).claims == _full_claims()


@pytest.mark.parametrize(
    "data",
    [
        cbor2.dumps(cbor2.CBORTag(60001, [b"q", b"c"])),
        cbor2.dumps([b"q", b"c"]),
        cbor2.dumps(cbor2.CBORTag(EVIDENCE_CBOR_TAG, [b"q"])),
        cbor2.dumps(cbor2.CBORTag(EVIDENCE_CBOR_TAG, [b"q", b"c", b"x"])),
        cbor2.dumps(cbor2.CBORTag(EVIDENCE_CBOR_TAG, [b"q", "c"])),
        cbor2.dumps(cbor2.CBORTag(EVIDENCE_CBOR_TAG, [b"q", b"c"])) + b"\x00",
        b"\xd9\xea",
        b"",
    ],
)
def test_malformed_evidence_is_refused(data: bytes) -> None:
    with pytest.raises(EvidenceError):
        decode_evidence(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_evidence_and_claims_only_raise_evidence_error(data: bytes) -> None:
    for decode in (decode_evidence, decode_claims):
        with contextlib.suppress(EvidenceError):
            decode(data)


@pytest.mark.parametrize("name", ["intel-sgxsdk-cert.pem", "gramine-cert.pem"])
def test_reference_claims_buffers_decode_and_reencode_identically(name: str) -> None:
    found = parse_certificate(load_bytes(f"ratls/{name}"), lenient_der=True)
    claims = found.claims
    assert claims.pubkey_hash.alg_id == 1
    assert claims.extra == ()
    # Their claims layout is exactly ours for the standard claims.
    assert encode_claims(claims) == found.evidence.claims_buffer


def test_model_claim_validates_its_fields() -> None:
    with pytest.raises(EvidenceError):
        ModelClaim("m", "sha1", b"x")  # type: ignore[arg-type]
    with pytest.raises(EvidenceError):
        ModelClaim("", "dm-verity", b"x")


def test_ohttp_keys_claim_must_be_a_sha256_digest() -> None:
    with pytest.raises(EvidenceError):
        encode_claims(Claims(pubkey_hash=PubkeyHash.of(SPKI), ohttp_keys=b"short"))


def test_the_insecure_claim_round_trips_sorted_and_is_absent_when_empty() -> None:
    from attestation.evidence import Claims, PubkeyHash, decode_claims, encode_claims

    base = Claims(pubkey_hash=PubkeyHash.of(b"spki"))
    assert b"insecure" not in encode_claims(base)
    marked = Claims(
        pubkey_hash=base.pubkey_hash, insecure=("insecure_dev_engine", "insecure_allow_x")
    )
    decoded = decode_claims(encode_claims(marked))
    assert decoded.insecure == ("insecure_allow_x", "insecure_dev_engine")
    assert decoded.extra == ()
    assert decoded.to_json_dict()["insecure"] == ["insecure_allow_x", "insecure_dev_engine"]


@pytest.mark.parametrize("value", ["insecure_dev_engine", [1], [""], ["x" * 65], ["a"] * 17])
def test_a_malformed_insecure_claim_is_refused(value: object) -> None:
    import cbor2

    from attestation.errors import EvidenceError
    from attestation.evidence import PubkeyHash, decode_claims

    buffer = cbor2.dumps({"pubkey-hash": PubkeyHash.of(b"spki").encode(), "insecure": value})
    with pytest.raises(EvidenceError, match="insecure"):
        decode_claims(buffer)
