"""HPKE failure modes: every tampering raises the one opaque DecryptError, a failed open does not
advance the sequence, the sequence number cannot overflow, unknown identifiers and malformed keys
raise typed errors."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.protocol.errors import DecryptError, MessageLimitReachedError, UnsupportedSuiteError
from enclave.protocol.hpke import (
    AeadId,
    KdfId,
    KemId,
    Suite,
    get_kem,
    setup_base_recipient,
    setup_base_sender,
)

SUITES = [Suite(kem, KdfId.HKDF_SHA256, aead) for kem in KemId for aead in AeadId]
KEYS = {kem: get_kem(kem).generate_private_key() for kem in KemId}


def pair(suite: Suite, info: bytes = b"info"):
    key = KEYS[suite.kem_id]
    enc, sender = setup_base_sender(suite, key.public_key_bytes(), info)
    return enc, sender, setup_base_recipient(suite, enc, key, info)


@pytest.mark.parametrize("suite", SUITES, ids=str)
def test_every_bit_flip_of_a_ciphertext_fails_opaquely(suite):
    _, sender, recipient = pair(suite)
    ciphertext = sender.seal(b"aad", b"attack at dawn")
    for bit in range(len(ciphertext) * 8):
        mutated = bytearray(ciphertext)
        mutated[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(DecryptError) as caught:
            recipient.open(b"aad", bytes(mutated))
        assert str(caught.value) == "message could not be decrypted"
    assert recipient.seq == 0  # failures never advanced it
    assert recipient.open(b"aad", ciphertext) == b"attack at dawn"


@pytest.mark.parametrize("suite", SUITES, ids=str)
def test_wrong_aad_truncation_and_out_of_order_fail(suite):
    _, sender, recipient = pair(suite)
    first, second = sender.seal(b"", b"one"), sender.seal(b"", b"two")
    with pytest.raises(DecryptError):
        recipient.open(b"other", first)
    for end in range(len(first)):
        with pytest.raises(DecryptError):
            recipient.open(b"", first[:end])
    with pytest.raises(DecryptError):
        recipient.open(b"", second)  # sequence 0 expected
    assert recipient.open(b"", first) == b"one"
    assert recipient.open(b"", second) == b"two"
    with pytest.raises(DecryptError):
        recipient.open(b"", second)  # replayed


@pytest.mark.parametrize("kem", list(KemId))
def test_different_info_or_another_key_gives_another_context(kem):
    suite = Suite(kem, KdfId.HKDF_SHA256, AeadId.AES_256_GCM)
    enc, sender = setup_base_sender(suite, KEYS[kem].public_key_bytes(), b"info")
    ciphertext = sender.seal(b"", b"secret")
    with pytest.raises(DecryptError):
        setup_base_recipient(suite, enc, KEYS[kem], b"other info").open(b"", ciphertext)
    stranger = get_kem(kem).generate_private_key()
    try:
        recipient = setup_base_recipient(suite, enc, stranger, b"info")
    except DecryptError:
        return
    with pytest.raises(DecryptError):
        recipient.open(b"", ciphertext)


def test_sequence_number_overflow_raises_before_reusing_a_nonce():
    suite = Suite(KemId.DHKEM_X25519_HKDF_SHA256, KdfId.HKDF_SHA256, AeadId.AES_128_GCM)
    _, sender, recipient = pair(suite)
    limit = (1 << 96) - 1
    sender._seq = recipient._seq = limit - 1  # white-box: 2**96 messages cannot be sent here
    ciphertext = sender.seal(b"", b"last")
    assert recipient.open(b"", ciphertext) == b"last"
    with pytest.raises(MessageLimitReachedError):
        sender.seal(b"", b"one too many")
    with pytest.raises(MessageLimitReachedError):
        recipient.open(b"", ciphertext)


@pytest.mark.parametrize(
    "ids", [(0x0010, 1, 1), (0x0020, 2, 1), (0x0020, 1, 0xFFFF), (0x647A, 0x0011, 3)]
)
def test_unknown_identifiers_are_unsupported(ids):
    with pytest.raises(UnsupportedSuiteError):
        Suite.from_ids(*ids)


def test_unknown_kem_is_unsupported():
    with pytest.raises(UnsupportedSuiteError):
        get_kem(0x0012)


@pytest.mark.parametrize("kem", list(KemId))
def test_malformed_public_keys_and_encs(kem):
    suite = Suite(kem, KdfId.HKDF_SHA256, AeadId.AES_128_GCM)
    public_key = KEYS[kem].public_key_bytes()
    with pytest.raises(ValueError, match="public key"):
        setup_base_sender(suite, public_key[:-1], b"")
    with pytest.raises(DecryptError):
        setup_base_recipient(suite, b"\x00" * (suite.kem.n_enc + 1), KEYS[kem], b"")


def test_an_all_zero_x25519_share_is_a_decrypt_error():
    suite = Suite(KemId.DHKEM_X25519_HKDF_SHA256, KdfId.HKDF_SHA256, AeadId.AES_128_GCM)
    with pytest.raises(DecryptError):
        setup_base_recipient(suite, b"\x00" * 32, KEYS[suite.kem_id], b"")


def test_a_key_of_another_kem_is_refused():
    suite = Suite(KemId.X_WING, KdfId.HKDF_SHA256, AeadId.AES_128_GCM)
    enc, _ = setup_base_sender(suite, KEYS[KemId.X_WING].public_key_bytes(), b"")
    with pytest.raises(ValueError, match="another KEM"):
        setup_base_recipient(suite, enc, KEYS[KemId.DHKEM_X25519_HKDF_SHA256], b"")


@settings(max_examples=50, deadline=None)
@given(
    suite=st.sampled_from(SUITES),
    messages=st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=40)), max_size=8),
)
def test_any_message_sequence_round_trips(suite, messages):
    _, sender, recipient = pair(suite)
    for plaintext, aad in messages:
        assert recipient.open(aad, sender.seal(aad, plaintext)) == plaintext
    assert sender.export(b"ctx", 48) == recipient.export(b"ctx", 48)


@settings(max_examples=100, deadline=None)
@given(suite=st.sampled_from(SUITES), garbage=st.binary(max_size=1300))
def test_arbitrary_bytes_only_ever_raise_decrypt_error(suite, garbage):
    key = KEYS[suite.kem_id]
    n_enc = suite.kem.n_enc

    def open_garbage() -> bytes:
        enc = garbage[:n_enc].ljust(n_enc, b"\x01")
        return setup_base_recipient(suite, enc, key, b"").open(b"", garbage[n_enc:])

    with pytest.raises(DecryptError):
        open_garbage()
