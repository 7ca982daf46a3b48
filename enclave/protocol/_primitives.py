"""HPKE's symmetric building blocks (RFC 9180 section 7.2, 7.3): HKDF-SHA256 with the labeled
Extract/Expand of section 4, and the three AEADs, each a thin descriptor over cryptography."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

__all__ = [
    "AEADS",
    "HPKE_V1",
    "KDFS",
    "Aead",
    "AeadCipher",
    "AeadId",
    "Kdf",
    "KdfId",
    "i2osp",
]

HPKE_V1 = b"HPKE-v1"


class KdfId(IntEnum):
    HKDF_SHA256 = 0x0001


class AeadId(IntEnum):
    AES_128_GCM = 0x0001
    AES_256_GCM = 0x0002
    CHACHA20_POLY1305 = 0x0003


def i2osp(value: int, length: int) -> bytes:
    """RFC 8017 I2OSP: ``value`` big-endian in exactly ``length`` bytes."""
    return value.to_bytes(length, "big")


@dataclass(frozen=True, slots=True)
class Kdf:
    """An HKDF over one hash (RFC 5869), with HPKE's labeled forms (RFC 9180 section 4)."""

    kdf_id: KdfId
    hash_name: str
    hash_size: int  # Nh

    def extract(self, salt: bytes, ikm: bytes) -> bytes:
        return hmac.digest(salt, ikm, self.hash_name)

    def expand(self, prk: bytes, info: bytes, length: int) -> bytes:
        if length > 255 * self.hash_size:
            raise ValueError("HKDF-Expand output too long")
        out = b""
        block = b""
        counter = 1
        while len(out) < length:
            block = hmac.digest(prk, block + info + bytes((counter,)), self.hash_name)
            out += block
            counter += 1
        return out[:length]

    def labeled_extract(self, suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        return self.extract(salt, HPKE_V1 + suite_id + label + ikm)

    def labeled_expand(
        self, suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int
    ) -> bytes:
        labeled_info = i2osp(length, 2) + HPKE_V1 + suite_id + label + info
        return self.expand(prk, labeled_info, length)


class AeadCipher(Protocol):
    """What cryptography's ``AESGCM`` and ``ChaCha20Poly1305`` have in common."""

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...
    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Aead:
    """One AEAD: its sizes (Nk, Nn, Nt) and a factory for a keyed cipher."""

    aead_id: AeadId
    key_size: int  # Nk
    nonce_size: int  # Nn
    tag_size: int  # Nt
    _factory: Callable[[bytes], AeadCipher]

    def cipher(self, key: bytes) -> AeadCipher:
        if len(key) != self.key_size:
            raise ValueError(f"AEAD key must be {self.key_size} bytes")
        return self._factory(key)


KDFS = {KdfId.HKDF_SHA256: Kdf(KdfId.HKDF_SHA256, "sha256", 32)}
AEADS = {
    AeadId.AES_128_GCM: Aead(AeadId.AES_128_GCM, 16, 12, 16, AESGCM),
    AeadId.AES_256_GCM: Aead(AeadId.AES_256_GCM, 32, 12, 16, AESGCM),
    AeadId.CHACHA20_POLY1305: Aead(AeadId.CHACHA20_POLY1305, 32, 12, 16, ChaCha20Poly1305),
}
