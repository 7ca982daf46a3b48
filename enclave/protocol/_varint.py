"""QUIC variable-length integers (RFC 9000 section 16), as Binary HTTP and chunked OHTTP use them.

The two most significant bits of the first byte give the length (1, 2, 4 or 8 bytes); the rest
is the value, big-endian. Encoders always use the shortest form; decoders accept any form.
"""

from __future__ import annotations

from enclave.protocol.errors import TruncatedMessageError

__all__ = ["SHORT_VARINTS", "VARINT_MAX", "decode_varint", "encode_varint", "varint_size"]

VARINT_MAX = (1 << 62) - 1


def varint_size(value: int) -> int:
    if value < 0 or value > VARINT_MAX:
        raise ValueError(f"varint out of range: {value}")
    if value < 1 << 6:
        return 1
    if value < 1 << 14:
        return 2
    if value < 1 << 30:
        return 4
    return 8


def _encode(value: int) -> bytes:
    size = varint_size(value)
    prefix = {1: 0x00, 2: 0x40, 4: 0x80, 8: 0xC0}[size]
    raw = value.to_bytes(size, "big")
    return bytes([raw[0] | prefix]) + raw[1:]


SHORT_VARINTS = tuple(_encode(value) for value in range(4096))
"""The encodings of 0..4095: most lengths on the wire, so encoding them is one lookup (hot
paths index this table directly)."""


def encode_varint(value: int) -> bytes:
    """The shortest encoding of ``value``; ``ValueError`` outside 0..2**62-1."""
    if 0 <= value < 4096:
        return SHORT_VARINTS[value]
    return _encode(value)


def decode_varint(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """Decode one varint at ``offset``; return ``(value, offset after it)``.

    Raises ``TruncatedMessageError`` when the data ends inside the varint.
    """
    if offset >= len(data):
        raise TruncatedMessageError("data ends before a variable-length integer")
    first = data[offset]
    if first < 0x40:
        return first, offset + 1
    size = 1 << (first >> 6)
    end = offset + size
    if end > len(data):
        raise TruncatedMessageError("data ends inside a variable-length integer")
    value = first & 0x3F
    for byte in data[offset + 1 : end]:
        value = (value << 8) | byte
    return value, end
