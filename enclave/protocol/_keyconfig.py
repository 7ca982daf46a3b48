"""OHTTP key configurations (RFC 9458 section 3): one config, and the ``application/ohttp-keys``
list in which each config carries a 2-byte length prefix (section 3.2)."""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass

from enclave.protocol.errors import (
    MalformedMessageError,
    TruncatedMessageError,
    UnsupportedSuiteError,
)
from enclave.protocol.hpke import AeadId, KdfId, KemId, Suite, get_kem

__all__ = [
    "KeyConfig",
    "SymmetricAlgorithms",
    "decode_key_config",
    "decode_key_configs",
    "encode_key_config",
    "encode_key_configs",
]

_U16 = struct.Struct(">H")
_MAX_SYMMETRIC_LENGTH = 65532
_KEM_IDS = frozenset(int(kem) for kem in KemId)
_KDF_IDS = frozenset(int(kdf) for kdf in KdfId)
_AEAD_IDS = frozenset(int(aead) for aead in AeadId)


@dataclass(frozen=True, slots=True)
class SymmetricAlgorithms:
    """One (KDF, AEAD) pair a key configuration offers. Unknown identifiers are kept as ints."""

    kdf_id: int
    aead_id: int

    def __post_init__(self) -> None:
        for value in (self.kdf_id, self.aead_id):
            if not 0 <= value <= 0xFFFF:
                raise ValueError(f"HPKE algorithm identifier out of range: {value}")

    @property
    def is_supported(self) -> bool:
        return self.kdf_id in _KDF_IDS and self.aead_id in _AEAD_IDS


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """A gateway's public key configuration: key ID, KEM, public key, offered (KDF, AEAD) pairs."""

    key_id: int
    kem_id: KemId
    public_key: bytes
    symmetric: tuple[SymmetricAlgorithms, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.key_id <= 0xFF:
            raise ValueError(f"key ID out of range: {self.key_id}")
        if not self.symmetric or 4 * len(self.symmetric) > _MAX_SYMMETRIC_LENGTH:
            raise ValueError("a key configuration needs 1..16383 symmetric algorithm pairs")
        n_pk = get_kem(self.kem_id).n_pk
        if len(self.public_key) != n_pk:
            raise ValueError(f"public key must be {n_pk} bytes for KEM {self.kem_id:#06x}")

    def suites(self) -> tuple[Suite, ...]:
        """The HPKE suites this configuration offers that this side supports, in offered order."""
        return tuple(
            Suite.from_ids(self.kem_id, pair.kdf_id, pair.aead_id)
            for pair in self.symmetric
            if pair.is_supported
        )

    def offers(self, suite: Suite) -> bool:
        """Whether ``suite`` uses this config's KEM and one of its offered (KDF, AEAD) pairs."""
        if suite.kem_id != self.kem_id:
            return False
        return SymmetricAlgorithms(suite.kdf_id, suite.aead_id) in self.symmetric


def encode_key_config(config: KeyConfig) -> bytes:
    """The RFC 9458 section 3.1 encoding of one key configuration."""
    out = bytearray([config.key_id])
    out += _U16.pack(config.kem_id)
    out += config.public_key
    out += _U16.pack(4 * len(config.symmetric))
    for pair in config.symmetric:
        out += _U16.pack(pair.kdf_id) + _U16.pack(pair.aead_id)
    return bytes(out)


def decode_key_config(data: bytes) -> KeyConfig:
    """Decode exactly one key configuration (no length prefix).

    Raises ``UnsupportedSuiteError`` for a KEM this side does not implement (its public key
    length is then unknown), ``TruncatedMessageError`` / ``MalformedMessageError`` otherwise.
    """
    if len(data) < 3:
        raise TruncatedMessageError("key configuration shorter than its header")
    key_id = data[0]
    (raw_kem,) = _U16.unpack_from(data, 1)
    if raw_kem not in _KEM_IDS:
        raise UnsupportedSuiteError(f"unsupported KEM {raw_kem:#06x}")
    kem_id = KemId(raw_kem)
    n_pk = get_kem(kem_id).n_pk
    offset = 3 + n_pk
    if len(data) < offset + 2:
        raise TruncatedMessageError("key configuration ends inside the public key")
    public_key = bytes(data[3:offset])
    (sym_length,) = _U16.unpack_from(data, offset)
    offset += 2
    if sym_length < 4 or sym_length > _MAX_SYMMETRIC_LENGTH or sym_length % 4:
        raise MalformedMessageError("invalid symmetric algorithms length")
    end = offset + sym_length
    if len(data) < end:
        raise TruncatedMessageError("key configuration ends inside its symmetric algorithms")
    if len(data) != end:
        raise MalformedMessageError("trailing bytes after a key configuration")
    pairs = tuple(
        SymmetricAlgorithms(*struct.unpack_from(">HH", data, at)) for at in range(offset, end, 4)
    )
    return KeyConfig(key_id, kem_id, public_key, pairs)


def encode_key_configs(configs: tuple[KeyConfig, ...] | list[KeyConfig]) -> bytes:
    """The ``application/ohttp-keys`` encoding: each config with a 2-byte length prefix."""
    out = bytearray()
    for config in configs:
        encoded = encode_key_config(config)
        out += _U16.pack(len(encoded)) + encoded
    return bytes(out)


def decode_key_configs(data: bytes) -> tuple[KeyConfig, ...]:
    """Decode an ``application/ohttp-keys`` list.

    Configurations whose KEM this side does not implement are skipped (their length prefix makes
    that possible); any other defect raises. An empty list, or one with no usable
    configuration, raises ``UnsupportedSuiteError``.
    """
    configs: list[KeyConfig] = []
    offset = 0
    while offset < len(data):
        if offset + 2 > len(data):
            raise TruncatedMessageError("key configuration list ends inside a length prefix")
        (length,) = _U16.unpack_from(data, offset)
        offset += 2
        if offset + length > len(data):
            raise TruncatedMessageError("key configuration list ends inside a configuration")
        with contextlib.suppress(UnsupportedSuiteError):  # RFC 9458 section 3.2: skip it
            configs.append(decode_key_config(data[offset : offset + length]))
        offset += length
    if not configs:
        raise UnsupportedSuiteError("no supported key configuration in the list")
    return tuple(configs)
