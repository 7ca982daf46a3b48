"""RFC 9180 base-mode vectors (DHKEM(X25519), HKDF-SHA256; AES-128-GCM, AES-256-GCM,
ChaCha20-Poly1305) and the draft-ietf-hpke-pq vectors for X-Wing (0x647a): key derivation,
encapsulation, decapsulation, the key schedule, every encryption and every export.

One PQ vector uses the single-stage SHAKE256 KDF (0x0011), which this implementation does not
offer (DESIGN.md: HKDF-SHA256): its KEM half is still checked, and its suite must be refused."""

import pytest
from kyber_py.ml_kem import ML_KEM_768

from enclave.protocol.errors import UnsupportedSuiteError
from enclave.protocol.hpke import (
    Encapsulation,
    KemId,
    Suite,
    dhkem_x25519_encapsulate_with,
    get_kem,
    key_schedule,
    setup_base_recipient,
    setup_base_sender,
)
from enclave.protocol.xwing import XWING
from tests.vectors import load_json

RFC9180 = load_json("hpke/rfc9180-base-x25519-hkdfsha256.json")
PQ = load_json("hpke/hpke-pq-xwing.json")


def h(vector: dict[str, str], name: str) -> bytes:
    return bytes.fromhex(vector[name])


def suite_of(vector) -> Suite:
    return Suite.from_ids(int(vector["kem_id"]), int(vector["kdf_id"]), int(vector["aead_id"]))


def encapsulation_of(vector) -> Encapsulation:
    """The sender's KEM output rebuilt from the vector's ephemeral randomness."""
    if int(vector["kem_id"]) == KemId.X_WING:
        return XWING.encapsulate_derand(
            h(vector, "pkRm"), h(vector, "ikmE"), ML_KEM_768._encaps_internal
        )
    kem = get_kem(KemId.DHKEM_X25519_HKDF_SHA256)
    ephemeral = kem.derive_key_pair(h(vector, "ikmE"))
    assert ephemeral.private_bytes() == h(vector, "skEm")
    assert ephemeral.public_key_bytes() == h(vector, "pkEm")
    return dhkem_x25519_encapsulate_with(ephemeral.private_bytes(), h(vector, "pkRm"))


HKDF_SHA256 = 0x0001
ALL = [pytest.param(v, id=f"rfc9180-aead{v['aead_id']}") for v in RFC9180] + [
    pytest.param(v, id=f"hpke-pq-xwing-kdf{v['kdf_id']}-{i}") for i, v in enumerate(PQ)
]
SUPPORTED = [p for p in ALL if int(p.values[0]["kdf_id"]) == HKDF_SHA256]


def kem_of(vector):
    return get_kem(int(vector["kem_id"]))


def test_the_vectors_cover_every_suite_we_implement():
    assert {int(v["aead_id"]) for v in RFC9180} == {1, 2, 3}
    assert all(int(v["mode"]) == 0 for v in RFC9180 + PQ)
    assert {int(v["kem_id"]) for v in PQ} == {0x647A}
    assert any(int(v["kdf_id"]) == HKDF_SHA256 for v in PQ)


def test_the_single_stage_shake256_kdf_is_refused_with_the_typed_error():
    shake = [v for v in PQ if int(v["kdf_id"]) != HKDF_SHA256]
    assert shake
    for vector in shake:
        with pytest.raises(UnsupportedSuiteError):
            suite_of(vector)


@pytest.mark.parametrize("vector", ALL)
def test_derive_key_pair(vector):
    key = kem_of(vector).derive_key_pair(h(vector, "ikmR"))
    assert key.private_bytes() == h(vector, "skRm")
    assert key.public_key_bytes() == h(vector, "pkRm")


@pytest.mark.parametrize("vector", ALL)
def test_encapsulation_reproduces_enc_and_shared_secret(vector):
    encapsulation = encapsulation_of(vector)
    assert encapsulation.enc == h(vector, "enc")
    assert encapsulation.shared_secret == h(vector, "shared_secret")


@pytest.mark.parametrize("vector", ALL)
def test_decapsulation_recovers_the_shared_secret(vector):
    kem = kem_of(vector)
    private_key = kem.load_private_key(h(vector, "skRm"))
    assert kem.decapsulate(h(vector, "enc"), private_key) == h(vector, "shared_secret")


@pytest.mark.parametrize("vector", SUPPORTED)
def test_key_schedule(vector):
    schedule = key_schedule(suite_of(vector), h(vector, "shared_secret"), h(vector, "info"))
    assert schedule.key == h(vector, "key")
    assert schedule.base_nonce == h(vector, "base_nonce")
    assert schedule.exporter_secret == h(vector, "exporter_secret")


def test_suite_id_of_the_pq_vectors():
    for vector in (p.values[0] for p in SUPPORTED if int(p.values[0]["kem_id"]) == 0x647A):
        assert suite_of(vector).suite_id == h(vector, "suite_id")


@pytest.mark.parametrize("vector", SUPPORTED)
def test_every_encryption_both_directions(vector):
    suite = suite_of(vector)
    enc, sender = setup_base_sender(
        suite, h(vector, "pkRm"), h(vector, "info"), encapsulation=encapsulation_of(vector)
    )
    assert enc == h(vector, "enc")
    recipient = setup_base_recipient(
        suite, enc, suite.kem.load_private_key(h(vector, "skRm")), h(vector, "info")
    )
    # The vectors list selected sequence numbers; seal and open everything in between too.
    expected = {int(e.get("seq", i)): e for i, e in enumerate(vector["encryptions"])}
    for seq in range(max(expected) + 1):
        entry = expected.get(seq)
        aad = bytes.fromhex(entry["aad"]) if entry else b"filler"
        plaintext = bytes.fromhex(entry["pt"]) if entry else b"filler"
        assert sender.seq == recipient.seq == seq
        ciphertext = sender.seal(aad, plaintext)
        if entry:
            assert ciphertext == bytes.fromhex(entry["ct"])
        assert recipient.open(aad, ciphertext) == plaintext


@pytest.mark.parametrize("vector", SUPPORTED)
def test_every_export(vector):
    suite = suite_of(vector)
    _, sender = setup_base_sender(
        suite, h(vector, "pkRm"), h(vector, "info"), encapsulation=encapsulation_of(vector)
    )
    recipient = setup_base_recipient(
        suite, h(vector, "enc"), suite.kem.load_private_key(h(vector, "skRm")), h(vector, "info")
    )
    assert vector["exports"]
    for entry in vector["exports"]:
        context, length = bytes.fromhex(entry["exporter_context"]), int(entry["L"])
        expected = bytes.fromhex(entry["exported_value"])
        assert sender.export(context, length) == expected
        assert recipient.export(context, length) == expected
