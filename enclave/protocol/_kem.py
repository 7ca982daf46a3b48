"""The KEM seam HPKE is written against (RFC 9180 section 4): identifiers, sizes, key objects and
the result of an encapsulation. DHKEM(X25519) and X-Wing implement it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

__all__ = ["Encapsulation", "Kem", "KemId", "KemPrivateKey"]


class KemId(IntEnum):
    DHKEM_X25519_HKDF_SHA256 = 0x0020
    X_WING = 0x647A  # MLKEM768-X25519


@dataclass(frozen=True, slots=True)
class Encapsulation:
    """``enc`` travels to the recipient; ``shared_secret`` stays with the sender."""

    enc: bytes
    shared_secret: bytes = field(repr=False)


class KemPrivateKey(Protocol):
    """A recipient's private key, loaded into the KEM's internal form."""

    @property
    def kem_id(self) -> KemId: ...

    def public_key_bytes(self) -> bytes:
        """SerializePublicKey(pk) of the matching public key."""
        ...

    def private_bytes(self) -> bytes:
        """SerializePrivateKey(sk): the form ``Kem.load_private_key`` takes back."""
        ...


class Kem(Protocol):
    """One KEM and its sizes: Nsecret, Nenc, Npk, Nsk."""

    @property
    def kem_id(self) -> KemId: ...
    @property
    def n_secret(self) -> int: ...
    @property
    def n_enc(self) -> int: ...
    @property
    def n_pk(self) -> int: ...
    @property
    def n_sk(self) -> int: ...

    def generate_private_key(self) -> KemPrivateKey: ...
    def derive_key_pair(self, ikm: bytes) -> KemPrivateKey: ...
    def load_private_key(self, data: bytes) -> KemPrivateKey: ...
    def encapsulate(self, public_key: bytes) -> Encapsulation: ...
    def decapsulate(self, enc: bytes, private_key: KemPrivateKey) -> bytes: ...
