"""Errors of the protocol core.

The hierarchy::

    ProtocolError                 root of everything raised by enclave.protocol
    ├── DecryptError              opaque: any decryption or authentication failure (HPKE open,
    │                             KEM decapsulation, response AEAD); says nothing about which
    │                             check failed, like cryptography's ``InvalidToken``
    ├── MalformedMessageError     framing that cannot be parsed: bad varint, bad length, trailing
    │   │                         bytes, an empty non-final chunk, a chunk over the size limit,
    │   │                         invalid Binary HTTP
    │   └── TruncatedMessageError the input ended before the message did (no final chunk,
    │                             or a length running past the end)
    ├── UnknownKeyIdError         the key ID names no key configuration this side holds
    ├── UnsupportedSuiteError     a KEM, KDF or AEAD identifier this side does not offer
    └── MessageLimitReachedError  an HPKE context's sequence number would overflow

Callers map these to responses in exactly one place; ``str(exc)`` never goes to a client.
"""

from __future__ import annotations

from enclave.errors import EnclaveError

__all__ = [
    "DecryptError",
    "MalformedMessageError",
    "MessageLimitReachedError",
    "ProtocolError",
    "TruncatedMessageError",
    "UnknownKeyIdError",
    "UnsupportedSuiteError",
]


class ProtocolError(EnclaveError):
    """Root of every error raised by the protocol core."""


class DecryptError(ProtocolError):
    """A message did not decrypt or authenticate. Deliberately uninformative."""

    def __init__(self) -> None:
        super().__init__("message could not be decrypted")


class MalformedMessageError(ProtocolError):
    """The framing of a message is invalid."""


class TruncatedMessageError(MalformedMessageError):
    """The input ended before the message was complete."""


class UnknownKeyIdError(ProtocolError):
    """No key configuration with this key ID is held."""

    def __init__(self, key_id: int) -> None:
        super().__init__(f"unknown key ID {key_id}")
        self.key_id = key_id


class UnsupportedSuiteError(ProtocolError):
    """A KEM, KDF or AEAD identifier that is not supported."""


class MessageLimitReachedError(ProtocolError):
    """An HPKE context has used every sequence number it may (RFC 9180 section 5.2)."""
