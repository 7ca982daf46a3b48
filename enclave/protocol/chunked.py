"""Chunked Oblivious HTTP (draft-ietf-ohai-chunked-ohttp-08), incremental and sans-IO.

Request: ``hdr || enc`` then chunks sealed with the HPKE context (sequence-numbered nonces);
response: a random nonce of ``max(Nn, Nk)`` bytes then chunks sealed with an AEAD key derived
from the HPKE export ``"message/bhttp chunked response"``, each chunk's nonce being the base
nonce XOR the chunk counter. Every non-final chunk is ``varint(len) || sealed`` with an empty
AAD; the final chunk is ``varint(0) || sealed`` with the AAD ``"final"`` and runs to the end of
the stream, so only the transport's end of stream (``finish()``) completes a message.

A decoder that raises stays failed: every later call raises ``MalformedMessageError``.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable

from cryptography.exceptions import InvalidTag

from enclave.protocol._chunk_reader import ChunkReader
from enclave.protocol._encap import (
    CHUNKED_REQUEST_LABEL,
    CHUNKED_RESPONSE_LABEL,
    HEADER_SIZE,
    derive_response_keys,
    enc_size,
    gateway_key_for,
    open_context,
    response_nonce_size,
    sender_setup,
)
from enclave.protocol._keyconfig import KeyConfig
from enclave.protocol._keystore import KeyStore
from enclave.protocol._varint import SHORT_VARINTS, encode_varint
from enclave.protocol.errors import (
    DecryptError,
    MalformedMessageError,
    MessageLimitReachedError,
    ProtocolError,
    TruncatedMessageError,
)
from enclave.protocol.hpke import Encapsulation, RecipientContext, Suite

__all__ = [
    "DEFAULT_MAX_CHUNK_SIZE",
    "FINAL_AAD",
    "MEDIA_TYPE_CHUNKED_REQUEST",
    "MEDIA_TYPE_CHUNKED_RESPONSE",
    "MIN_CHUNK_SIZE",
    "ChunkedRequestDecoder",
    "ChunkedRequestEncoder",
    "ChunkedResponseDecoder",
    "ChunkedResponseEncoder",
]

MEDIA_TYPE_CHUNKED_REQUEST = "message/ohttp-chunked-req"
MEDIA_TYPE_CHUNKED_RESPONSE = "message/ohttp-chunked-res"
MIN_CHUNK_SIZE = 16384
"""The draft's required minimum (2**14): a peer must accept chunks of this plaintext size, so
no maximum may be configured below it."""
DEFAULT_MAX_CHUNK_SIZE = MIN_CHUNK_SIZE
"""Largest plaintext per chunk that is sent or accepted, unless configured otherwise."""
FINAL_AAD = b"final"

_Encrypt = Callable[[bytes, bytes, bytes | None], bytes]


def _check_max_chunk_size(max_chunk_size: int) -> int:
    if max_chunk_size < MIN_CHUNK_SIZE:
        raise ValueError(f"the maximum chunk size must be at least {MIN_CHUNK_SIZE}")
    return max_chunk_size


def _frame(sealed: bytes) -> bytes:
    return encode_varint(len(sealed)) + sealed


def _pieces(data: bytes, max_chunk_size: int) -> list[bytes]:
    return [data[at : at + max_chunk_size] for at in range(0, len(data), max_chunk_size)] or [b""]


class ChunkedResponseEncoder:
    """Gateway side: :attr:`header` (the response nonce) first, then one :meth:`seal_chunk` per
    piece of the Binary HTTP response as it is produced; the last call passes ``final=True``."""

    __slots__ = ("_counter", "_encrypt", "_finished", "_limit", "_max", "_nn", "_nonce", "header")

    def __init__(
        self,
        suite: Suite,
        enc: bytes,
        secret: bytes,
        *,
        response_nonce: bytes | None = None,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
    ) -> None:
        nonce_size = response_nonce_size(suite)
        if response_nonce is None:
            response_nonce = os.urandom(nonce_size)
        elif len(response_nonce) != nonce_size:
            raise ValueError(f"response nonce must be {nonce_size} bytes")
        keys = derive_response_keys(suite, secret, enc, response_nonce)
        self.header = bytes(response_nonce)
        self._encrypt: _Encrypt = suite.aead.cipher(keys.key).encrypt
        self._nn = suite.aead.nonce_size
        self._nonce = int.from_bytes(keys.nonce, "big")
        self._limit = 1 << (8 * self._nn)
        self._counter = 0
        self._max = _check_max_chunk_size(max_chunk_size)
        self._finished = False

    @property
    def is_finished(self) -> bool:
        return self._finished

    def seal_chunk(self, data: bytes, *, final: bool = False) -> bytes:
        """Seal ``data`` as one chunk (several if it exceeds the maximum chunk size) and return
        the framed bytes. Non-final data must not be empty; nothing may follow the final chunk."""
        counter = self._counter
        if final or not data or self._finished or len(data) > self._max or counter >= self._limit:
            return self._seal_checked(data, final)
        self._counter = counter + 1
        sealed = self._encrypt((self._nonce ^ counter).to_bytes(self._nn, "big"), data, None)
        size = len(sealed)
        return (SHORT_VARINTS[size] if size < 4096 else encode_varint(size)) + sealed

    def _seal_checked(self, data: bytes, final: bool) -> bytes:
        """The general path: the final chunk, oversized data, and every error."""
        if self._finished:
            raise ValueError("the response already ended with its final chunk")
        if not data and not final:
            raise ValueError("a non-final chunk must carry data")
        pieces = _pieces(data, self._max)
        if self._counter + len(pieces) > self._limit:
            raise MessageLimitReachedError("response chunk counter exhausted")
        out = [self.seal_chunk(piece) for piece in pieces[:-1]]
        if not final:
            return b"".join((*out, self.seal_chunk(pieces[-1])))
        counter = self._counter
        self._counter = counter + 1
        self._finished = True
        nonce = (self._nonce ^ counter).to_bytes(self._nn, "big")
        return b"".join((*out, b"\x00", self._encrypt(nonce, pieces[-1], FINAL_AAD)))


class ChunkedRequestEncoder:
    """Client side: :attr:`header` (``hdr || enc``) first, then :meth:`seal_chunk` per piece of
    the Binary HTTP request; the last call passes ``final=True``."""

    __slots__ = ("_context", "_finished", "_max", "_secret", "enc", "header", "suite")

    def __init__(
        self,
        key_config: KeyConfig,
        *,
        suite: Suite | None = None,
        encapsulation: Encapsulation | None = None,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
    ) -> None:
        chosen, header, enc, context = sender_setup(
            key_config, suite, CHUNKED_REQUEST_LABEL, encapsulation
        )
        self.suite = chosen
        self.header = header
        self.enc = enc
        self._context = context
        self._secret = context.export(CHUNKED_RESPONSE_LABEL, response_nonce_size(chosen))
        self._max = _check_max_chunk_size(max_chunk_size)
        self._finished = False

    @property
    def is_finished(self) -> bool:
        return self._finished

    def seal_chunk(self, data: bytes, *, final: bool = False) -> bytes:
        """Seal ``data`` as one chunk (several if it exceeds the maximum chunk size)."""
        if self._finished:
            raise ValueError("the request already ended with its final chunk")
        if not data and not final:
            raise ValueError("a non-final chunk must carry data")
        out = bytearray()
        pieces = _pieces(data, self._max)
        for index, piece in enumerate(pieces):
            if final and index == len(pieces) - 1:
                out += b"\x00" + self._context.seal(FINAL_AAD, piece)
                self._finished = True
            else:
                out += _frame(self._context.seal(b"", piece))
        return bytes(out)

    def response_decoder(
        self, *, max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE
    ) -> ChunkedResponseDecoder:
        """The decoder for this request's chunked response."""
        return ChunkedResponseDecoder(
            self.suite, self.enc, self._secret, max_chunk_size=max_chunk_size
        )


class _Decoder(abc.ABC):
    """Shared state machine: header, non-final chunks, final chunk, end of stream. Each role
    says how its header is read and how a chunk is opened."""

    __slots__ = ("_complete", "_failed", "_max", "_reader")

    def __init__(self, max_chunk_size: int) -> None:
        self._max = _check_max_chunk_size(max_chunk_size)
        self._reader: ChunkReader | None = None
        self._complete = False
        self._failed = False

    @property
    def is_complete(self) -> bool:
        """True once :meth:`finish` has opened the final chunk."""
        return self._complete

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Take the next bytes of the stream; return the plaintext of every chunk they complete."""
        self._check_usable()
        if self._complete:
            self._failed = True
            raise MalformedMessageError("data after the end of the message")
        try:
            reader = self._reader
            if reader is None:
                started = self._read_header(data)
                if started is None:
                    return []
                reader, data = started
            return [self._open(sealed, b"") for sealed in reader.feed(data)]
        except ProtocolError:
            self._failed = True
            raise

    def finish(self) -> bytes:
        """Signal the end of the stream; return the final chunk's plaintext.

        ``TruncatedMessageError`` if the final chunk never came: the message is incomplete.
        """
        self._check_usable()
        if self._complete:
            raise ValueError("finish() was already called")
        try:
            if self._reader is None:
                raise TruncatedMessageError("the stream ended inside the message header")
            plaintext = self._open(self._reader.final_chunk(), FINAL_AAD)
        except ProtocolError:
            self._failed = True
            raise
        self._complete = True
        return plaintext

    def _check_usable(self) -> None:
        if self._failed:
            raise MalformedMessageError("the message already failed to decode")

    @abc.abstractmethod
    def _read_header(
        self, data: bytes | bytearray | memoryview
    ) -> tuple[ChunkReader, bytes] | None:
        """Consume header bytes; once the header is complete, the chunk reader and the bytes
        of ``data`` after the header, else ``None``."""

    @abc.abstractmethod
    def _open(self, sealed: bytes, aad: bytes) -> bytes:
        """The plaintext of one sealed chunk (``aad`` is ``"final"`` for the last one)."""


class ChunkedRequestDecoder(_Decoder):
    """Gateway side: feed the request body as it arrives; :meth:`finish` at its end.

    The key ID is checked as soon as the 7-byte header is in (``UnknownKeyIdError``,
    ``UnsupportedSuiteError``); ``key_id``, ``suite`` and ``enc`` are set once known.
    """

    __slots__ = ("_context", "_header", "_key_store", "enc", "key_id", "suite")

    def __init__(
        self, key_store: KeyStore, *, max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE
    ) -> None:
        super().__init__(max_chunk_size)
        self._key_store = key_store
        self._header = bytearray()
        self._context: RecipientContext | None = None
        self.key_id: int | None = None
        self.suite: Suite | None = None
        self.enc: bytes | None = None

    def response_encoder(
        self,
        *,
        response_nonce: bytes | None = None,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
    ) -> ChunkedResponseEncoder:
        """The encoder for the chunked response; available once the header has been read.
        ``response_nonce`` is for known-answer tests only."""
        if self._context is None or self.suite is None or self.enc is None:
            raise ValueError("the request header has not been read yet")
        secret = self._context.export(CHUNKED_RESPONSE_LABEL, response_nonce_size(self.suite))
        return ChunkedResponseEncoder(
            self.suite,
            self.enc,
            secret,
            response_nonce=response_nonce,
            max_chunk_size=max_chunk_size,
        )

    def _read_header(
        self, data: bytes | bytearray | memoryview
    ) -> tuple[ChunkReader, bytes] | None:
        header = self._header
        before = len(header)
        header += data
        if len(header) < HEADER_SIZE:
            return None
        key, suite = gateway_key_for(self._key_store, bytes(header[:HEADER_SIZE]))
        self.key_id, self.suite = key.config.key_id, suite
        needed = HEADER_SIZE + enc_size(suite)
        if len(header) < needed:
            return None
        enc = bytes(header[HEADER_SIZE:needed])
        self._context = open_context(key, suite, CHUNKED_REQUEST_LABEL, bytes(header), enc)
        self.enc = enc
        reader = self._reader = ChunkReader(self._max + suite.aead.tag_size, suite.aead.tag_size)
        self._header = bytearray()
        return reader, bytes(data[needed - before :])

    def _open(self, sealed: bytes, aad: bytes) -> bytes:
        if self._context is None:
            raise TruncatedMessageError("the request header has not been read")
        return self._context.open(aad, sealed)


class ChunkedResponseDecoder(_Decoder):
    """Client side: feed the response body as it arrives; :meth:`finish` at its end."""

    __slots__ = (
        "_counter",
        "_decrypt",
        "_enc",
        "_nn",
        "_nonce",
        "_nonce_buffer",
        "_secret",
        "_suite",
    )

    def __init__(
        self,
        suite: Suite,
        enc: bytes,
        secret: bytes,
        *,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
    ) -> None:
        super().__init__(max_chunk_size)
        self._suite = suite
        self._enc = enc
        self._secret = secret
        self._nonce_buffer = bytearray()
        self._decrypt: _Encrypt | None = None
        self._nn = suite.aead.nonce_size
        self._nonce = 0
        self._counter = 0

    def _read_header(
        self, data: bytes | bytearray | memoryview
    ) -> tuple[ChunkReader, bytes] | None:
        buffer = self._nonce_buffer
        before = len(buffer)
        buffer += data
        nonce_size = response_nonce_size(self._suite)
        if len(buffer) < nonce_size:
            return None
        keys = derive_response_keys(
            self._suite, self._secret, self._enc, bytes(buffer[:nonce_size])
        )
        self._decrypt = self._suite.aead.cipher(keys.key).decrypt
        self._nonce = int.from_bytes(keys.nonce, "big")
        tag_size = self._suite.aead.tag_size
        reader = self._reader = ChunkReader(self._max + tag_size, tag_size)
        self._nonce_buffer = bytearray()
        return reader, bytes(data[nonce_size - before :])

    def _open(self, sealed: bytes, aad: bytes) -> bytes:
        if self._decrypt is None:
            raise TruncatedMessageError("the response nonce has not been read")
        counter = self._counter
        if counter >> (8 * self._nn):
            raise MessageLimitReachedError("response chunk counter exhausted")
        self._counter = counter + 1
        nonce = (self._nonce ^ counter).to_bytes(self._nn, "big")
        try:
            return self._decrypt(nonce, sealed, aad or None)
        except InvalidTag as exc:
            raise DecryptError() from exc
