"""DHKEM(X25519, HKDF-SHA256), KEM ID 0x0020 (RFC 9180 section 4.1, 7.1)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from enclave.protocol._kem import Encapsulation, KemId, KemPrivateKey
from enclave.protocol._primitives import KDFS, KdfId, i2osp
from enclave.protocol.errors import DecryptError

__all__ = ["DHKEM_X25519", "DhKemX25519", "X25519Key"]

_KDF = KDFS[KdfId.HKDF_SHA256]
_SUITE_ID = b"KEM" + i2osp(KemId.DHKEM_X25519_HKDF_SHA256, 2)
_N = 32  # Nsecret = Nenc = Npk = Nsk


@dataclass(frozen=True, slots=True)
class X25519Key:
    """An X25519 private key with its serialized public key."""

    key: X25519PrivateKey = field(repr=False)
    public: bytes

    @property
    def kem_id(self) -> KemId:
        return KemId.DHKEM_X25519_HKDF_SHA256

    def public_key_bytes(self) -> bytes:
        return self.public

    def private_bytes(self) -> bytes:
        return self.key.private_bytes_raw()


def _wrap(key: X25519PrivateKey) -> X25519Key:
    return X25519Key(key, key.public_key().public_bytes_raw())


def _extract_and_expand(dh: bytes, kem_context: bytes) -> bytes:
    eae_prk = _KDF.labeled_extract(_SUITE_ID, b"", b"eae_prk", dh)
    return _KDF.labeled_expand(_SUITE_ID, eae_prk, b"shared_secret", kem_context, _N)


def _exchange(private: X25519PrivateKey, public: bytes) -> bytes:
    """DH(sk, pk); ``ValueError`` for a malformed share or an all-zero result."""
    return private.exchange(X25519PublicKey.from_public_bytes(public))


class DhKemX25519:
    """The KEM object; stateless, one shared instance (:data:`DHKEM_X25519`)."""

    kem_id = KemId.DHKEM_X25519_HKDF_SHA256
    n_secret = n_enc = n_pk = n_sk = _N

    def generate_private_key(self) -> X25519Key:
        return _wrap(X25519PrivateKey.generate())

    def derive_key_pair(self, ikm: bytes) -> X25519Key:
        dkp_prk = _KDF.labeled_extract(_SUITE_ID, b"", b"dkp_prk", ikm)
        sk = _KDF.labeled_expand(_SUITE_ID, dkp_prk, b"sk", b"", _N)
        return self.load_private_key(sk)

    def load_private_key(self, data: bytes) -> X25519Key:
        if len(data) != _N:
            raise ValueError("an X25519 private key is 32 bytes")
        return _wrap(X25519PrivateKey.from_private_bytes(data))

    def encapsulate(self, public_key: bytes) -> Encapsulation:
        return self.encapsulate_with(X25519PrivateKey.generate(), public_key)

    def encapsulate_with(self, ephemeral: X25519PrivateKey, public_key: bytes) -> Encapsulation:
        """Encap with a given ephemeral key (known-answer tests). ``ValueError`` for a bad pkR."""
        if len(public_key) != _N:
            raise ValueError("an X25519 public key is 32 bytes")
        dh = _exchange(ephemeral, public_key)
        enc = ephemeral.public_key().public_bytes_raw()
        return Encapsulation(enc, _extract_and_expand(dh, enc + public_key))

    def decapsulate(self, enc: bytes, private_key: KemPrivateKey) -> bytes:
        """The shared secret; ``DecryptError`` for a share that yields no valid secret."""
        if not isinstance(private_key, X25519Key):
            raise TypeError("not an X25519 private key")
        if len(enc) != _N:
            raise DecryptError()
        try:
            dh = _exchange(private_key.key, enc)
        except ValueError as exc:
            raise DecryptError() from exc
        return _extract_and_expand(dh, enc + private_key.public)


DHKEM_X25519 = DhKemX25519()
