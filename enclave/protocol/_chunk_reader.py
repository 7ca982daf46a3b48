"""Incremental parsing of chunked OHTTP framing (draft-ietf-ohai-chunked-ohttp-08 sections 4-5),
after the message header: length-prefixed non-final chunks, then a zero length and the final
chunk, which runs to the end of the stream. No cryptography here."""

from __future__ import annotations

from enclave.protocol._varint import decode_varint
from enclave.protocol.errors import MalformedMessageError, TruncatedMessageError

__all__ = ["ChunkReader"]


class ChunkReader:
    """Splits a byte stream into sealed chunks.

    ``max_sealed`` bounds every sealed chunk, the final one included (the plaintext limit plus
    the AEAD tag). A non-final chunk no longer than the tag carries no plaintext, which the
    draft forbids; it is rejected before any decryption.
    """

    __slots__ = ("_buffer", "_in_final", "_max_sealed", "_tag_size")

    def __init__(self, max_sealed: int, tag_size: int) -> None:
        self._buffer = bytearray()
        self._in_final = False
        self._max_sealed = max_sealed
        self._tag_size = tag_size

    @property
    def in_final(self) -> bool:
        """Whether the zero length that announces the final chunk has been read."""
        return self._in_final

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Append ``data``; return the non-final sealed chunks completed by it, in order."""
        buffer = self._buffer
        buffer += data
        if self._in_final:
            self._check_final_size()
            return []
        chunks: list[bytes] = []
        offset = 0
        end = len(buffer)
        while offset < end:
            try:
                length, body_start = decode_varint(buffer, offset)
            except TruncatedMessageError:
                break  # the rest of the length prefix has not arrived yet
            if length == 0:
                offset = body_start
                self._in_final = True
                break
            if length > self._max_sealed:
                raise MalformedMessageError("chunk larger than the maximum chunk size")
            if length <= self._tag_size:
                raise MalformedMessageError("non-final chunk with no plaintext")
            body_end = body_start + length
            if body_end > end:
                break
            chunks.append(bytes(buffer[body_start:body_end]))
            offset = body_end
        del buffer[:offset]
        if self._in_final:
            self._check_final_size()
        return chunks

    def final_chunk(self) -> bytes:
        """The sealed final chunk, once the stream has ended. ``TruncatedMessageError`` if the
        final chunk was never announced or is too short to hold an AEAD tag."""
        if not self._in_final:
            raise TruncatedMessageError("the stream ended before the final chunk")
        if len(self._buffer) < self._tag_size:
            raise TruncatedMessageError("the final chunk is shorter than an AEAD tag")
        sealed = bytes(self._buffer)
        self._buffer.clear()
        return sealed

    def _check_final_size(self) -> None:
        if len(self._buffer) > self._max_sealed:
            raise MalformedMessageError("final chunk larger than the maximum chunk size")
