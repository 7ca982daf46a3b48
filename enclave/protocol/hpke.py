"""HPKE, RFC 9180 base mode, written over cryptography's primitives.

Suites combine a KEM (DHKEM(X25519, HKDF-SHA256) 0x0020, or X-Wing 0x647a), the KDF HKDF-SHA256
and an AEAD (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305). A sender context seals and a recipient
context opens a sequence of messages, each nonce being ``base_nonce XOR seq``; both export
secrets. Sans-IO: nothing here touches a socket, a file or a clock.

::

    enc, sender = setup_base_sender(suite, recipient_public_key, info)
    ciphertext = sender.seal(aad, plaintext)
    recipient = setup_base_recipient(suite, enc, recipient_private_key, info)
    plaintext = recipient.open(aad, ciphertext)

Every failure to open raises the one opaque :class:`~enclave.protocol.errors.DecryptError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from enclave.protocol._dhkem import DHKEM_X25519
from enclave.protocol._kem import Encapsulation, Kem, KemId, KemPrivateKey
from enclave.protocol._primitives import AEADS, KDFS, Aead, AeadCipher, AeadId, Kdf, KdfId, i2osp
from enclave.protocol.errors import DecryptError, MessageLimitReachedError, UnsupportedSuiteError
from enclave.protocol.xwing import XWING

__all__ = [
    "Aead",
    "AeadId",
    "Encapsulation",
    "Kdf",
    "KdfId",
    "Kem",
    "KemId",
    "KemPrivateKey",
    "KeySchedule",
    "RecipientContext",
    "SenderContext",
    "Suite",
    "dhkem_x25519_encapsulate_with",
    "get_kem",
    "key_schedule",
    "setup_base_recipient",
    "setup_base_sender",
]

MODE_BASE = 0x00
_KEMS: dict[KemId, Kem] = {KemId.DHKEM_X25519_HKDF_SHA256: DHKEM_X25519, KemId.X_WING: XWING}


def get_kem(kem_id: int) -> Kem:
    """The KEM for ``kem_id``; ``UnsupportedSuiteError`` for one not implemented here."""
    try:
        return _KEMS[KemId(kem_id)]
    except ValueError as exc:
        raise UnsupportedSuiteError(f"unsupported KEM {kem_id:#06x}") from exc


@dataclass(frozen=True, slots=True)
class Suite:
    """A (KEM, KDF, AEAD) triple. Build one from wire identifiers with :meth:`from_ids`."""

    kem_id: KemId
    kdf_id: KdfId
    aead_id: AeadId

    @classmethod
    def from_ids(cls, kem_id: int, kdf_id: int, aead_id: int) -> Suite:
        """``UnsupportedSuiteError`` if any identifier is not implemented here."""
        try:
            return cls(KemId(kem_id), KdfId(kdf_id), AeadId(aead_id))
        except ValueError as exc:
            raise UnsupportedSuiteError(
                f"unsupported HPKE suite ({kem_id:#06x}, {kdf_id:#06x}, {aead_id:#06x})"
            ) from exc

    @property
    def kem(self) -> Kem:
        return _KEMS[self.kem_id]

    @property
    def kdf(self) -> Kdf:
        return KDFS[self.kdf_id]

    @property
    def aead(self) -> Aead:
        return AEADS[self.aead_id]

    @property
    def suite_id(self) -> bytes:
        """``"HPKE" || kem_id || kdf_id || aead_id`` (RFC 9180 section 5.1)."""
        return b"HPKE" + i2osp(self.kem_id, 2) + i2osp(self.kdf_id, 2) + i2osp(self.aead_id, 2)


@dataclass(frozen=True, slots=True)
class KeySchedule:
    """The outputs of KeySchedule() in base mode."""

    key: bytes = field(repr=False)
    base_nonce: bytes = field(repr=False)
    exporter_secret: bytes = field(repr=False)


def key_schedule(suite: Suite, shared_secret: bytes, info: bytes) -> KeySchedule:
    """RFC 9180 section 5.1, mode_base (empty PSK and PSK ID)."""
    kdf, aead, suite_id = suite.kdf, suite.aead, suite.suite_id
    psk_id_hash = kdf.labeled_extract(suite_id, b"", b"psk_id_hash", b"")
    info_hash = kdf.labeled_extract(suite_id, b"", b"info_hash", info)
    context = bytes((MODE_BASE,)) + psk_id_hash + info_hash
    secret = kdf.labeled_extract(suite_id, shared_secret, b"secret", b"")
    return KeySchedule(
        key=kdf.labeled_expand(suite_id, secret, b"key", context, aead.key_size),
        base_nonce=kdf.labeled_expand(suite_id, secret, b"base_nonce", context, aead.nonce_size),
        exporter_secret=kdf.labeled_expand(suite_id, secret, b"exp", context, kdf.hash_size),
    )


class _Context:
    """Shared by both roles: the keyed AEAD, the nonce sequence and the exporter."""

    __slots__ = (
        "_base_nonce",
        "_cipher",
        "_exporter_secret",
        "_kdf",
        "_limit",
        "_nonce_size",
        "_seq",
        "_suite_id",
    )

    def __init__(self, suite: Suite, schedule: KeySchedule) -> None:
        self._cipher: AeadCipher = suite.aead.cipher(schedule.key)
        self._base_nonce = int.from_bytes(schedule.base_nonce, "big")
        self._exporter_secret = schedule.exporter_secret
        self._kdf = suite.kdf
        self._suite_id = suite.suite_id
        self._seq = 0
        self._limit = (1 << (8 * suite.aead.nonce_size)) - 1
        self._nonce_size = suite.aead.nonce_size

    @property
    def seq(self) -> int:
        """The sequence number the next message will use."""
        return self._seq

    def export(self, exporter_context: bytes, length: int) -> bytes:
        """Export(exporter_context, L): a secret of ``length`` bytes bound to this context."""
        return self._kdf.labeled_expand(
            self._suite_id, self._exporter_secret, b"sec", exporter_context, length
        )

    def _next_nonce(self) -> bytes:
        if self._seq >= self._limit:
            raise MessageLimitReachedError("HPKE sequence number exhausted")
        return (self._base_nonce ^ self._seq).to_bytes(self._nonce_size, "big")


class SenderContext(_Context):
    """Seals messages in order."""

    __slots__ = ()

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        ciphertext = self._cipher.encrypt(self._next_nonce(), plaintext, aad)
        self._seq += 1
        return ciphertext


class RecipientContext(_Context):
    """Opens messages in order; a failed open does not advance the sequence."""

    __slots__ = ()

    def open(self, aad: bytes, ciphertext: bytes) -> bytes:
        try:
            plaintext = self._cipher.decrypt(self._next_nonce(), ciphertext, aad)
        except InvalidTag as exc:
            raise DecryptError() from exc
        self._seq += 1
        return plaintext


def setup_base_sender(
    suite: Suite,
    public_key: bytes,
    info: bytes,
    *,
    encapsulation: Encapsulation | None = None,
) -> tuple[bytes, SenderContext]:
    """SetupBaseS: ``(enc, context)``. ``encapsulation`` fixes the KEM output (known-answer
    tests only); by default a fresh one is made. ``ValueError`` for a malformed public key."""
    if encapsulation is None:
        encapsulation = suite.kem.encapsulate(public_key)
    schedule = key_schedule(suite, encapsulation.shared_secret, info)
    return encapsulation.enc, SenderContext(suite, schedule)


def setup_base_recipient(
    suite: Suite, enc: bytes, private_key: KemPrivateKey, info: bytes
) -> RecipientContext:
    """SetupBaseR. ``DecryptError`` if ``enc`` does not decapsulate."""
    if private_key.kem_id != suite.kem_id:
        raise ValueError("the private key belongs to another KEM than the suite's")
    shared_secret = suite.kem.decapsulate(enc, private_key)
    return RecipientContext(suite, key_schedule(suite, shared_secret, info))


def dhkem_x25519_encapsulate_with(ephemeral_private_key: bytes, public_key: bytes) -> Encapsulation:
    """DHKEM(X25519) Encap with a fixed ephemeral key, for known-answer tests."""
    ephemeral = X25519PrivateKey.from_private_bytes(ephemeral_private_key)
    return DHKEM_X25519.encapsulate_with(ephemeral, public_key)
