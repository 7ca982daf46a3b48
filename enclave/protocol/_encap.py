"""Pieces shared by RFC 9458 and chunked OHTTP: the request header, the HPKE info string, the
sender and recipient setup, and the response key schedule (RFC 9458 section 4.4)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from enclave.protocol._keyconfig import KeyConfig
from enclave.protocol._keystore import GatewayKey, KeyStore
from enclave.protocol.errors import (
    DecryptError,
    ProtocolError,
    TruncatedMessageError,
    UnsupportedSuiteError,
)
from enclave.protocol.hpke import (
    Encapsulation,
    RecipientContext,
    SenderContext,
    Suite,
    get_kem,
    setup_base_recipient,
    setup_base_sender,
)

__all__ = [
    "CHUNKED_REQUEST_LABEL",
    "CHUNKED_RESPONSE_LABEL",
    "HEADER_SIZE",
    "REQUEST_LABEL",
    "RESPONSE_LABEL",
    "ResponseKeys",
    "choose_suite",
    "derive_response_keys",
    "enc_size",
    "gateway_key_for",
    "open_context",
    "parse_header",
    "request_header",
    "request_info",
    "response_nonce_size",
    "sender_setup",
]

REQUEST_LABEL = b"message/bhttp request"
RESPONSE_LABEL = b"message/bhttp response"
CHUNKED_REQUEST_LABEL = b"message/bhttp chunked request"
CHUNKED_RESPONSE_LABEL = b"message/bhttp chunked response"
HEADER_SIZE = 7  # key ID (1), KEM ID (2), KDF ID (2), AEAD ID (2)

_HEADER = struct.Struct(">BHHH")


def request_header(key_id: int, suite: Suite) -> bytes:
    """``hdr``: the key ID, then the KEM, KDF and AEAD identifiers."""
    return _HEADER.pack(key_id, suite.kem_id, suite.kdf_id, suite.aead_id)


def parse_header(data: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
    """``(key_id, kem_id, kdf_id, aead_id)`` from the first ``HEADER_SIZE`` bytes of ``data``."""
    if len(data) < HEADER_SIZE:
        raise TruncatedMessageError("encapsulated request shorter than its header")
    key_id, kem_id, kdf_id, aead_id = _HEADER.unpack_from(data)
    return key_id, kem_id, kdf_id, aead_id


def request_info(label: bytes, header: bytes) -> bytes:
    """The HPKE ``info``: the label, a zero byte, then ``hdr``."""
    return label + b"\x00" + header


def choose_suite(config: KeyConfig, suite: Suite | None) -> Suite:
    """``suite`` if ``config`` offers it; with ``None``, the first offered suite supported here."""
    if suite is None:
        offered = config.suites()
        if not offered:
            raise UnsupportedSuiteError("the key configuration offers no supported suite")
        return offered[0]
    if not config.offers(suite):
        raise UnsupportedSuiteError("the key configuration does not offer this suite")
    return suite


def sender_setup(
    config: KeyConfig,
    suite: Suite | None,
    label: bytes,
    encapsulation: Encapsulation | None,
) -> tuple[Suite, bytes, bytes, SenderContext]:
    """Client side: ``(suite, hdr || enc, enc, sender context)``."""
    chosen = choose_suite(config, suite)
    header = request_header(config.key_id, chosen)
    enc, context = setup_base_sender(
        chosen, config.public_key, request_info(label, header), encapsulation=encapsulation
    )
    return chosen, header + enc, enc, context


def gateway_key_for(key_store: KeyStore, header: bytes) -> tuple[GatewayKey, Suite]:
    """Gateway side: the key a request header names and the suite it uses.

    ``UnknownKeyIdError`` for an unknown key ID; ``UnsupportedSuiteError`` when the KEM is not
    the key's or the (KDF, AEAD) pair is not one its configuration offers.
    """
    key_id, kem_id, kdf_id, aead_id = parse_header(header)
    key = key_store.lookup(key_id)
    if kem_id != key.config.kem_id:
        raise UnsupportedSuiteError("the request's KEM does not match its key ID")
    suite = Suite.from_ids(kem_id, kdf_id, aead_id)
    if not key.config.offers(suite):
        raise UnsupportedSuiteError("the key configuration does not offer this suite")
    return key, suite


def enc_size(suite: Suite) -> int:
    return get_kem(suite.kem_id).n_enc


def open_context(
    key: GatewayKey, suite: Suite, label: bytes, header: bytes, enc: bytes
) -> RecipientContext:
    """Gateway side: the HPKE recipient context. Any KEM failure is a ``DecryptError``."""
    try:
        return setup_base_recipient(
            suite, enc, key.private_key, request_info(label, header[:HEADER_SIZE])
        )
    except ProtocolError:
        raise
    except ValueError as exc:  # e.g. an X25519 share that yields the all-zero secret
        raise DecryptError() from exc


def response_nonce_size(suite: Suite) -> int:
    """``max(Nn, Nk)``: the length of the response nonce and of the exported secret."""
    return max(suite.aead.nonce_size, suite.aead.key_size)


@dataclass(frozen=True, slots=True)
class ResponseKeys:
    """The response key schedule's outputs (RFC 9458 section 4.4)."""

    prk: bytes = field(repr=False)
    key: bytes = field(repr=False)
    nonce: bytes = field(repr=False)


def derive_response_keys(
    suite: Suite, secret: bytes, enc: bytes, response_nonce: bytes
) -> ResponseKeys:
    """``prk = Extract(enc || response_nonce, secret)``; key and nonce expanded from ``prk``."""
    prk = suite.kdf.extract(enc + response_nonce, secret)
    key = suite.kdf.expand(prk, b"key", suite.aead.key_size)
    nonce = suite.kdf.expand(prk, b"nonce", suite.aead.nonce_size)
    return ResponseKeys(prk, key, nonce)
