"""Oblivious HTTP (RFC 9458): key configurations, the gateway's key store, and the request and
response encapsulation for both roles. Sans-IO: bytes in, bytes out; the payload is opaque.

Client::

    encapsulated, context = encapsulate_request(key_config, bhttp_request)
    bhttp_response = context.decapsulate_response(encapsulated_response)

Gateway::

    bhttp_request, context = decapsulate_request(key_store, encapsulated)
    encapsulated_response = context.encapsulate_response(bhttp_response)
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag

from enclave.protocol._encap import (
    HEADER_SIZE,
    REQUEST_LABEL,
    RESPONSE_LABEL,
    derive_response_keys,
    enc_size,
    gateway_key_for,
    open_context,
    response_nonce_size,
    sender_setup,
)
from enclave.protocol._keyconfig import (
    KeyConfig,
    SymmetricAlgorithms,
    decode_key_config,
    decode_key_configs,
    encode_key_config,
    encode_key_configs,
)
from enclave.protocol._keystore import (
    DEFAULT_X25519_SYMMETRIC,
    DEFAULT_XWING_SYMMETRIC,
    GatewayKey,
    KeyStore,
    generate_default_key_configs,
    generate_key,
)
from enclave.protocol.errors import DecryptError, TruncatedMessageError
from enclave.protocol.hpke import Encapsulation, Suite

__all__ = [
    "DATE_PROBLEM_TYPE",
    "DEFAULT_X25519_SYMMETRIC",
    "DEFAULT_XWING_SYMMETRIC",
    "MEDIA_TYPE_KEYS",
    "MEDIA_TYPE_REQUEST",
    "MEDIA_TYPE_RESPONSE",
    "OHTTP_KEY_PROBLEM_TYPE",
    "ClientRequestContext",
    "GatewayKey",
    "KeyConfig",
    "KeyStore",
    "ServerResponseContext",
    "SymmetricAlgorithms",
    "decapsulate_request",
    "decode_key_config",
    "decode_key_configs",
    "encapsulate_request",
    "encode_key_config",
    "encode_key_configs",
    "generate_default_key_configs",
    "generate_key",
]

MEDIA_TYPE_KEYS = "application/ohttp-keys"
MEDIA_TYPE_REQUEST = "message/ohttp-req"
MEDIA_TYPE_RESPONSE = "message/ohttp-res"
#: RFC 9458 section 5.3 / 6.5 problem types (``application/problem+json``).
OHTTP_KEY_PROBLEM_TYPE = "https://iana.org/assignments/http-problem-types#ohttp-key"
DATE_PROBLEM_TYPE = "https://iana.org/assignments/http-problem-types#date"


def _seal_response(
    suite: Suite, secret: bytes, enc: bytes, response_nonce: bytes, response: bytes
) -> bytes:
    keys = derive_response_keys(suite, secret, enc, response_nonce)
    return response_nonce + suite.aead.cipher(keys.key).encrypt(keys.nonce, response, b"")


class ClientRequestContext:
    """What the client keeps to open the response: the suite, ``enc``, the exported secret."""

    __slots__ = ("_secret", "enc", "suite")

    def __init__(self, suite: Suite, enc: bytes, secret: bytes) -> None:
        self.suite = suite
        self.enc = enc
        self._secret = secret

    def decapsulate_response(self, data: bytes) -> bytes:
        """Open an encapsulated response; ``DecryptError`` if it does not authenticate."""
        nonce_size = response_nonce_size(self.suite)
        if len(data) < nonce_size + self.suite.aead.tag_size:
            raise TruncatedMessageError("encapsulated response too short")
        response_nonce = bytes(data[:nonce_size])
        keys = derive_response_keys(self.suite, self._secret, self.enc, response_nonce)
        try:
            return self.suite.aead.cipher(keys.key).decrypt(keys.nonce, data[nonce_size:], b"")
        except InvalidTag as exc:
            raise DecryptError() from exc


class ServerResponseContext:
    """What the gateway keeps to seal the response: key ID, suite, ``enc``, exported secret.

    ``enc`` is what a replay cache remembers (RFC 9458 section 6.5).
    """

    __slots__ = ("_secret", "enc", "key_id", "suite")

    def __init__(self, key_id: int, suite: Suite, enc: bytes, secret: bytes) -> None:
        self.key_id = key_id
        self.suite = suite
        self.enc = enc
        self._secret = secret

    def encapsulate_response(
        self, response: bytes, *, response_nonce: bytes | None = None
    ) -> bytes:
        """Seal ``response``. ``response_nonce`` is for known-answer tests only; by default a
        fresh random nonce of ``max(Nn, Nk)`` bytes is drawn."""
        nonce_size = response_nonce_size(self.suite)
        if response_nonce is None:
            response_nonce = os.urandom(nonce_size)
        elif len(response_nonce) != nonce_size:
            raise ValueError(f"response nonce must be {nonce_size} bytes")
        return _seal_response(self.suite, self._secret, self.enc, response_nonce, response)


def encapsulate_request(
    key_config: KeyConfig,
    request: bytes,
    *,
    suite: Suite | None = None,
    encapsulation: Encapsulation | None = None,
) -> tuple[bytes, ClientRequestContext]:
    """Encapsulate ``request`` (Binary HTTP bytes) to ``key_config``.

    ``suite`` defaults to the first offered suite supported here. ``encapsulation`` fixes the
    KEM output, for known-answer tests only.
    """
    chosen, header, enc, context = sender_setup(key_config, suite, REQUEST_LABEL, encapsulation)
    sealed = context.seal(b"", request)
    secret = context.export(RESPONSE_LABEL, response_nonce_size(chosen))
    return header + sealed, ClientRequestContext(chosen, enc, secret)


def decapsulate_request(key_store: KeyStore, data: bytes) -> tuple[bytes, ServerResponseContext]:
    """Open an encapsulated request with the key its key ID names.

    Raises ``UnknownKeyIdError``, ``UnsupportedSuiteError``, ``TruncatedMessageError`` or the
    opaque ``DecryptError``.
    """
    key, suite = gateway_key_for(key_store, data[:HEADER_SIZE])
    enc_end = HEADER_SIZE + enc_size(suite)
    if len(data) < enc_end + suite.aead.tag_size:
        raise TruncatedMessageError("encapsulated request too short")
    enc = bytes(data[HEADER_SIZE:enc_end])
    context = open_context(key, suite, REQUEST_LABEL, bytes(data[:HEADER_SIZE]), enc)
    request = context.open(b"", data[enc_end:])
    secret = context.export(RESPONSE_LABEL, response_nonce_size(suite))
    return request, ServerResponseContext(key.config.key_id, suite, enc, secret)
