"""The engine's prefix-cache salt: set by the service on every inference request, never by the
client (vLLM CVE-2025-46570: a prompt prefix cached for one client answers another's faster).

vLLM 0.32 reads ``cache_salt`` (a non-empty string, at most 128 characters, no ``@ / \\`` or
NUL) from the body of chat, completions, responses and pooling requests and mixes it into the
hash of the first block of the prompt, so two requests share cached blocks only when their
salts are equal. The service removes any ``cache_salt`` the client sent and sets its own:

- by default a fresh random salt per request (64 hex digits, 256 bits): nothing is shared;
- with the request header ``x-cache-isolation-key`` (inside the TLS or OHTTP encryption, never
  forwarded to the engine), ``HMAC-SHA256(service secret, "enclave-cache-salt-v1" || key)`` in
  hex: requests presenting the same key share the cache, and nobody who does not hold that key
  can reach it (the service secret is made in memory at start and never leaves the process, so
  a salt cannot be computed, or copied, from outside).

An isolation key must be 16 to 256 visible ASCII characters (400 ``invalid_cache_isolation_key``
otherwise); it is a secret and is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Final

from enclave.errors import EnclaveError

__all__ = [
    "CACHE_ISOLATION_HEADER",
    "CACHE_SALT_FIELD",
    "MAX_ISOLATION_KEY_CHARS",
    "MIN_ISOLATION_KEY_CHARS",
    "CacheSalter",
    "InvalidIsolationKeyError",
    "salted_body",
]

CACHE_ISOLATION_HEADER: Final = "x-cache-isolation-key"
CACHE_SALT_FIELD: Final = "cache_salt"
MIN_ISOLATION_KEY_CHARS: Final = 16
MAX_ISOLATION_KEY_CHARS: Final = 256
_LABEL: Final = b"enclave-cache-salt-v1\x00"
_WHITESPACE: Final = b" \t\r\n"


class InvalidIsolationKeyError(EnclaveError, ValueError):
    """The isolation key is not 16..256 visible ASCII characters."""


class CacheSalter:
    """Makes salts: random per request, or keyed per isolation domain."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        if len(self._secret) < 32:
            raise ValueError("the cache-salt secret is at least 32 bytes")

    def salt(self, isolation_key: str | None) -> str:
        """A fresh random salt, or the domain's salt for ``isolation_key``."""
        if isolation_key is None:
            return secrets.token_hex(32)
        if not (
            MIN_ISOLATION_KEY_CHARS <= len(isolation_key) <= MAX_ISOLATION_KEY_CHARS
            and all("!" <= char <= "~" for char in isolation_key)
        ):
            raise InvalidIsolationKeyError("an isolation key is 16..256 visible ASCII characters")
        return hmac.new(
            self._secret, _LABEL + isolation_key.encode("ascii"), hashlib.sha256
        ).hexdigest()


def salted_body(body: bytes, document: dict[str, object], salt: str) -> bytes:
    """``body`` with ``"cache_salt": salt`` as its first member and no other ``cache_salt``.

    ``document`` is ``body`` parsed. Without a client ``cache_salt`` and with a UTF-8 body that
    opens with ``{`` (not UTF-16 or UTF-32, which ``json`` also reads) the member is spliced in
    front and the rest goes on byte for byte; otherwise the document is serialised again
    without the client's member (JSON decoders keep the last of duplicate names, so a client's
    own would win over one put in front)."""
    member = b'"cache_salt":"' + salt.encode("ascii") + b'",'
    start = len(body) - len(body.lstrip(_WHITESPACE))
    opens = body[start : start + 1] == b"{" and body[start + 1 : start + 2] != b"\x00"
    if CACHE_SALT_FIELD not in document and opens and document:
        return body[: start + 1] + member + body[start + 1 :]
    rest = {key: value for key, value in document.items() if key != CACHE_SALT_FIELD}
    return json.dumps({CACHE_SALT_FIELD: salt, **rest}).encode("ascii")
