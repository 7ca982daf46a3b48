"""GPU evidence encoding, its digest in the claims, the GPU nonce, and the policy table."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attestation.errors import EvidenceError, PolicyError
from attestation.evidence import Claims, PubkeyHash, decode_claims, encode_claims
from attestation.gpu import (
    GpuEvidence,
    GpuPolicy,
    decode_gpu_evidence,
    decode_gpu_evidence_list,
    encode_gpu_evidence_list,
    gpu_nonce,
    gpu_policy_from_mapping,
)
from tests.vectors import load_bytes


def real_evidence() -> GpuEvidence:
    report = bytes.fromhex(load_bytes("gpu/hopperAttestationReport.txt").decode().strip())
    certs = x509.load_pem_x509_certificates(load_bytes("gpu/hopper_cert_chain_case1.txt"))
    return GpuEvidence(
        architecture="hopper",
        report=report,
        cert_chain=tuple(c.public_bytes(serialization.Encoding.DER) for c in certs),
        cc_mode="on",
        ready=True,
    )


def test_evidence_round_trips_and_digest_is_sha256_of_the_encoding() -> None:
    evidence = real_evidence()
    encoded = evidence.encode()
    assert decode_gpu_evidence(encoded) == evidence
    assert evidence.digest == hashlib.sha256(encoded).digest()
    assert decode_gpu_evidence_list(encode_gpu_evidence_list([evidence, evidence])) == (
        evidence,
        evidence,
    )


def test_evidence_size_of_one_real_h100() -> None:
    # Measured: the report is 4117 bytes, the DER chain about 3.3 KB; docs/attestation.md
    # quotes these figures for the decision to fetch GPU evidence instead of embedding it.
    size = len(real_evidence().encode())
    assert 7000 < size < 8000


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: {**d, "arch": "volta"},
        lambda d: {**d, "cc-mode": "maybe"},
        lambda d: {**d, "ready": 1},
        lambda d: {**d, "certs": []},
        lambda d: {**d, "report": "text"},
        lambda d: {k: v for k, v in d.items() if k != "ready"},
        lambda d: {**d, "extra": 1},
    ],
)
def test_malformed_evidence_is_refused(mutate: object) -> None:
    decoded = cbor2.loads(real_evidence().encode())
    with pytest.raises(EvidenceError):
        decode_gpu_evidence(cbor2.dumps(mutate(decoded)))  # type: ignore[operator]


def test_non_deterministic_encoding_is_refused() -> None:
    decoded = cbor2.loads(real_evidence().encode())
    reordered = dict(reversed(list(decoded.items())))
    with pytest.raises(EvidenceError):
        decode_gpu_evidence(cbor2.dumps(reordered))


def test_gpus_claim_round_trips() -> None:
    claims = Claims(pubkey_hash=PubkeyHash.of(b"spki"), gpus=(bytes(32), b"\x01" * 32))
    assert decode_claims(encode_claims(claims)).gpus == claims.gpus
    assert decode_claims(encode_claims(Claims(pubkey_hash=PubkeyHash.of(b"spki")))).gpus is None


def test_gpus_claim_must_hold_digests() -> None:
    with pytest.raises(EvidenceError):
        encode_claims(Claims(pubkey_hash=PubkeyHash.of(b"spki"), gpus=(b"short",)))
    buffer = cbor2.dumps({"pubkey-hash": PubkeyHash.of(b"k").encode(), "gpus": [b"x"]})
    with pytest.raises(EvidenceError):
        decode_claims(buffer)


def test_gpu_nonce_derivation_is_the_documented_one() -> None:
    key = PubkeyHash.of(b"spki")
    ohttp, nonce = b"\x02" * 32, b"\x03" * 40
    encoded = key.encode()
    expected = hashlib.sha256(
        b"enclave-gpu-nonce-v1"
        + len(encoded).to_bytes(2, "big")
        + encoded
        + (32).to_bytes(2, "big")
        + ohttp
        + (40).to_bytes(2, "big")
        + nonce
    ).digest()
    assert gpu_nonce(key, ohttp, nonce) == expected
    assert gpu_nonce(key, ohttp, None) != expected
    assert (
        gpu_nonce(key, None, None)
        == hashlib.sha256(
            b"enclave-gpu-nonce-v1" + len(encoded).to_bytes(2, "big") + encoded + bytes(4)
        ).digest()
    )


def test_gpu_policy_table() -> None:
    policy = gpu_policy_from_mapping(
        {
            "required_count": 2,
            "architectures": ["hopper"],
            "min_driver_version": "550.90.07",
            "min_vbios_version": "96.00.9f.00.01",
            "measurements": {"2": ["0x" + "ab" * 48]},
        }
    )
    assert policy.required_count == 2
    assert policy.measurements[2] == frozenset({b"\xab" * 48})


@pytest.mark.parametrize(
    "table",
    [
        {"required_count": "2"},
        {"required_count": 99},
        {"architectures": []},
        {"architectures": ["volta"]},
        {"min_driver_version": "new"},
        {"min_vbios_version": "96.00"},
        {"measurements": {"2": []}},
        {"measurements": {"2": ["ab"]}},
        {"measurements": {"x": ["ab" * 48]}},
        {"insecure_allow_devtools": "yes"},
        {"unknown": 1},
    ],
)
def test_bad_gpu_policy_tables_are_refused(table: dict[str, object]) -> None:
    with pytest.raises(PolicyError):
        gpu_policy_from_mapping(table)


def test_policy_file_gpu_table_round_trips_through_toml(tmp_path: Path) -> None:
    from attestation.policy import Policy, load_policy, policy_to_toml

    policy = Policy(
        gpu=GpuPolicy(
            required_count=8,
            architectures=frozenset({"hopper", "blackwell"}),
            min_vbios_version="96.00.9f.00.01",
            measurements={2: frozenset({b"\x01" * 48, b"\x02" * 48}), 12: frozenset({bytes(48)})},
        )
    )
    path = tmp_path / "policy.toml"
    path.write_text(policy_to_toml(policy))
    assert "[gpu.measurements]" in path.read_text()
    assert load_policy(path) == policy


def test_policy_file_with_a_bad_gpu_table_is_refused(tmp_path: Path) -> None:
    from attestation.policy import load_policy

    path = tmp_path / "policy.toml"
    path.write_text('[gpu]\nrequired_count = 1\narchitecture = ["hopper"]\n')
    with pytest.raises(PolicyError, match="architecture"):
        load_policy(path)
