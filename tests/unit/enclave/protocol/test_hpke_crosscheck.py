"""Cross-implementation: cryptography's one-shot ``hazmat.primitives.hpke.Suite`` opens what our
sender seals, and our recipient opens what it seals, for X25519 and MLKEM768_X25519 (X-Wing)
with every AEAD. Its one-shot API uses an empty AAD and sequence number 0, and returns
``enc || ciphertext``."""

import pytest
from cryptography.hazmat.primitives import hpke as reference
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.protocol.hpke import (
    AeadId,
    KdfId,
    KemId,
    KemPrivateKey,
    Suite,
    get_kem,
    setup_base_recipient,
    setup_base_sender,
)
from enclave.protocol.xwing import XWingKey

REFERENCE_KEM = {
    KemId.DHKEM_X25519_HKDF_SHA256: reference.KEM.X25519,
    KemId.X_WING: reference.KEM.MLKEM768_X25519,
}
REFERENCE_AEAD = {
    AeadId.AES_128_GCM: reference.AEAD.AES_128_GCM,
    AeadId.AES_256_GCM: reference.AEAD.AES_256_GCM,
    AeadId.CHACHA20_POLY1305: reference.AEAD.CHACHA20_POLY1305,
}
SUITES = [
    pytest.param(Suite(kem, KdfId.HKDF_SHA256, aead), id=f"{kem.name}-{aead.name}")
    for kem in KemId
    for aead in AeadId
]
KEYS = {kem: get_kem(kem).generate_private_key() for kem in KemId}


def reference_suite(suite: Suite) -> reference.Suite:
    return reference.Suite(
        REFERENCE_KEM[suite.kem_id], reference.KDF.HKDF_SHA256, REFERENCE_AEAD[suite.aead_id]
    )


def reference_private_key(key: KemPrivateKey):
    """The same private key as cryptography's own HPKE key types."""
    if isinstance(key, XWingKey):
        import hashlib

        expanded = hashlib.shake_256(key.private_bytes()).digest(96)
        return reference.MLKEM768X25519PrivateKey(
            MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
            X25519PrivateKey.from_private_bytes(expanded[64:]),
        )
    return X25519PrivateKey.from_private_bytes(key.private_bytes())


@pytest.mark.parametrize("suite", SUITES)
@settings(max_examples=10, deadline=None)
@given(plaintext=st.binary(max_size=2048), info=st.binary(max_size=64))
def test_reference_opens_what_we_seal(suite, plaintext, info):
    key = KEYS[suite.kem_id]
    enc, sender = setup_base_sender(suite, key.public_key_bytes(), info)
    sealed = enc + sender.seal(b"", plaintext)
    opened = reference_suite(suite).decrypt(sealed, reference_private_key(key), info=info)
    assert opened == plaintext


@pytest.mark.parametrize("suite", SUITES)
@settings(max_examples=10, deadline=None)
@given(plaintext=st.binary(max_size=2048), info=st.binary(max_size=64))
def test_we_open_what_the_reference_seals(suite, plaintext, info):
    key = KEYS[suite.kem_id]
    public_key = reference_private_key(key).public_key()
    sealed = reference_suite(suite).encrypt(plaintext, public_key, info=info)
    n_enc = suite.kem.n_enc
    recipient = setup_base_recipient(suite, sealed[:n_enc], key, info)
    assert recipient.open(b"", sealed[n_enc:]) == plaintext
