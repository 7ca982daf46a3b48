"""X-Wing, the hybrid post-quantum KEM ML-KEM-768 + X25519 (draft-connolly-cfrg-xwing-kem; HPKE
KEM ID 0x647a, named MLKEM768-X25519 in draft-ietf-hpke-pq).

A private key is a 32-byte seed. ``SHAKE256(seed, 96)`` expands it: bytes 0..63 are the ML-KEM-768
key-generation seed ``d || z``, bytes 64..95 the X25519 private key. The public key is
``pk_M (1184) || pk_X (32)``, the ciphertext ``ct_M (1088) || ct_X (32)``, and the shared secret
``SHA3-256(ss_M || ss_X || ct_X || pk_X || "\\.//^\\")``.

ML-KEM comes from cryptography. It draws its own encapsulation randomness, so known-answer tests
pass a derandomized ML-KEM encapsulation in (:meth:`XWing.encapsulate_derand`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from enclave.protocol._kem import Encapsulation, KemId, KemPrivateKey
from enclave.protocol._primitives import HPKE_V1, i2osp
from enclave.protocol.errors import DecryptError

__all__ = [
    "CIPHERTEXT_SIZE",
    "LABEL",
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SHARED_SECRET_SIZE",
    "XWING",
    "MlKemEncapsDerand",
    "XWing",
    "XWingKey",
    "combine",
]

LABEL = b"\\.//^\\"
SEED_SIZE = 32
SHARED_SECRET_SIZE = 32
_MLKEM_PK, _MLKEM_CT, _X_SIZE = 1184, 1088, 32
PUBLIC_KEY_SIZE = _MLKEM_PK + _X_SIZE
CIPHERTEXT_SIZE = _MLKEM_CT + _X_SIZE
ENCAPS_RANDOMNESS_SIZE = 64  # ML-KEM's m (32) then the X25519 ephemeral key (32)
_SUITE_ID = b"KEM" + i2osp(KemId.X_WING, 2)

#: ``(ek_M, m) -> (ss_M, ct_M)``: ML-KEM-768.Encaps_internal of FIPS 203 (tests only).
MlKemEncapsDerand = Callable[[bytes, bytes], tuple[bytes, bytes]]


def combine(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    """The X-Wing combiner."""
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + LABEL).digest()


@dataclass(frozen=True, slots=True)
class XWingKey:
    """A decapsulation key: the seed and its expansion, computed once at load."""

    seed: bytes = field(repr=False)
    mlkem: MLKEM768PrivateKey = field(repr=False)
    x25519: X25519PrivateKey = field(repr=False)
    public: bytes

    @property
    def kem_id(self) -> KemId:
        return KemId.X_WING

    def public_key_bytes(self) -> bytes:
        return self.public

    def private_bytes(self) -> bytes:
        return self.seed


def _split_public(public_key: bytes) -> tuple[bytes, bytes]:
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an X-Wing public key is {PUBLIC_KEY_SIZE} bytes")
    return public_key[:_MLKEM_PK], public_key[_MLKEM_PK:]


def _x25519_half(ephemeral: X25519PrivateKey, pk_x: bytes) -> tuple[bytes, bytes]:
    """``(ct_X, ss_X)``; ``ValueError`` for a bad or low-order ``pk_X``."""
    ss_x = ephemeral.exchange(X25519PublicKey.from_public_bytes(pk_x))
    return ephemeral.public_key().public_bytes_raw(), ss_x


class XWing:
    """The KEM object; stateless, one shared instance (:data:`XWING`)."""

    kem_id = KemId.X_WING
    n_secret = SHARED_SECRET_SIZE
    n_enc = CIPHERTEXT_SIZE
    n_pk = PUBLIC_KEY_SIZE
    n_sk = SEED_SIZE

    def generate_private_key(self) -> XWingKey:
        return self.load_private_key(os.urandom(SEED_SIZE))

    def load_private_key(self, data: bytes) -> XWingKey:
        """Expand a 32-byte seed (the X-Wing private key)."""
        if len(data) != SEED_SIZE:
            raise ValueError(f"an X-Wing private key is a {SEED_SIZE}-byte seed")
        expanded = hashlib.shake_256(data).digest(96)
        mlkem = MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        x25519 = X25519PrivateKey.from_private_bytes(expanded[64:])
        public = mlkem.public_key().public_bytes_raw() + x25519.public_key().public_bytes_raw()
        return XWingKey(bytes(data), mlkem, x25519, public)

    def derive_key_pair(self, ikm: bytes) -> XWingKey:
        """HPKE DeriveKeyPair: the seed is ``SHAKE256.LabeledDerive(ikm, "DeriveKeyPair", "", 32)``
        (draft-ietf-hpke-pq)."""
        label = b"DeriveKeyPair"
        labeled_ikm = b"".join(
            (ikm, HPKE_V1, _SUITE_ID, i2osp(len(label), 2), label, i2osp(SEED_SIZE, 2))
        )
        return self.load_private_key(hashlib.shake_256(labeled_ikm).digest(SEED_SIZE))

    def encapsulate(self, public_key: bytes) -> Encapsulation:
        pk_m, pk_x = _split_public(public_key)
        ss_m, ct_m = MLKEM768PublicKey.from_public_bytes(pk_m).encapsulate()
        ct_x, ss_x = _x25519_half(X25519PrivateKey.generate(), pk_x)
        return Encapsulation(ct_m + ct_x, combine(ss_m, ss_x, ct_x, pk_x))

    def encapsulate_derand(
        self, public_key: bytes, randomness: bytes, mlkem_encaps: MlKemEncapsDerand
    ) -> Encapsulation:
        """Encapsulation with fixed randomness (``eseed``, 64 bytes), for known-answer tests."""
        if len(randomness) != ENCAPS_RANDOMNESS_SIZE:
            raise ValueError(f"X-Wing encapsulation randomness is {ENCAPS_RANDOMNESS_SIZE} bytes")
        pk_m, pk_x = _split_public(public_key)
        ss_m, ct_m = mlkem_encaps(pk_m, randomness[:32])
        ephemeral = X25519PrivateKey.from_private_bytes(randomness[32:])
        ct_x, ss_x = _x25519_half(ephemeral, pk_x)
        return Encapsulation(ct_m + ct_x, combine(ss_m, ss_x, ct_x, pk_x))

    def decapsulate(self, enc: bytes, private_key: KemPrivateKey) -> bytes:
        """The shared secret. ML-KEM rejects implicitly (a wrong ciphertext gives a different
        secret); only a malformed X25519 share raises ``DecryptError`` here."""
        if not isinstance(private_key, XWingKey):
            raise TypeError("not an X-Wing private key")
        if len(enc) != CIPHERTEXT_SIZE:
            raise DecryptError()
        ct_m, ct_x = enc[:_MLKEM_CT], enc[_MLKEM_CT:]
        try:
            ss_m = private_key.mlkem.decapsulate(ct_m)
            ss_x = private_key.x25519.exchange(X25519PublicKey.from_public_bytes(ct_x))
        except ValueError as exc:
            raise DecryptError() from exc
        return combine(ss_m, ss_x, ct_x, private_key.public[_MLKEM_PK:])


XWING = XWing()
