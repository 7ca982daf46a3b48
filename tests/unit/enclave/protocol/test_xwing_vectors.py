"""draft-connolly-cfrg-xwing-kem test vectors: key generation from the seed, decapsulation
(cryptography's ML-KEM alone) and encapsulation (kyber-py's derandomized ML-KEM, tests only)."""

import pytest
from kyber_py.ml_kem import ML_KEM_768

from enclave.protocol.errors import DecryptError
from enclave.protocol.xwing import CIPHERTEXT_SIZE, LABEL, PUBLIC_KEY_SIZE, XWING
from tests.vectors import load_json

VECTORS = [
    pytest.param(v, id=f"xwing-{i}") for i, v in enumerate(load_json("xwing/test-vectors.json"))
]


def h(vector, name: str) -> bytes:
    return bytes.fromhex(vector[name])


def test_label_and_sizes():
    assert LABEL.hex() == "5c2e2f2f5e5c"
    assert (PUBLIC_KEY_SIZE, CIPHERTEXT_SIZE) == (1216, 1120)


@pytest.mark.parametrize("vector", VECTORS)
def test_key_generation_from_seed(vector):
    key = XWING.load_private_key(h(vector, "seed"))
    assert key.private_bytes() == h(vector, "sk")
    assert key.public_key_bytes() == h(vector, "pk")


@pytest.mark.parametrize("vector", VECTORS)
def test_decapsulation(vector):
    key = XWING.load_private_key(h(vector, "sk"))
    assert XWING.decapsulate(h(vector, "ct"), key) == h(vector, "ss")


@pytest.mark.parametrize("vector", VECTORS)
def test_encapsulation(vector):
    encapsulation = XWING.encapsulate_derand(
        h(vector, "pk"), h(vector, "eseed"), ML_KEM_768._encaps_internal
    )
    assert encapsulation.enc == h(vector, "ct")
    assert encapsulation.shared_secret == h(vector, "ss")


@pytest.mark.parametrize("vector", VECTORS)
def test_a_flipped_ciphertext_bit_changes_the_secret_or_fails(vector):
    key = XWING.load_private_key(h(vector, "sk"))
    for position in (0, 1087, 1088, 1119):  # first and last byte of ct_M and of ct_X
        mutated = bytearray(h(vector, "ct"))
        mutated[position] ^= 0x01
        try:
            secret = XWING.decapsulate(bytes(mutated), key)
        except DecryptError:
            continue  # an X25519 share that yields no secret
        assert secret != h(vector, "ss")


def test_randomized_encapsulation_round_trips():
    key = XWING.generate_private_key()
    encapsulation = XWING.encapsulate(key.public_key_bytes())
    assert XWING.decapsulate(encapsulation.enc, key) == encapsulation.shared_secret


def test_wrong_sizes_are_refused():
    key = XWING.generate_private_key()
    with pytest.raises(ValueError, match="seed"):
        XWING.load_private_key(b"\x00" * 31)
    with pytest.raises(ValueError, match="public key"):
        XWING.encapsulate(key.public_key_bytes()[:-1])
    with pytest.raises(DecryptError):
        XWING.decapsulate(b"\x00" * (CIPHERTEXT_SIZE - 1), key)
