"""A minimal DER encoder: just the types Intel's SGX certificate extension uses.

``cryptography`` encodes whole certificates but offers no way to build the contents of an
unrecognised extension, so the SGX extension (OID 1.2.840.113741.1.13.1) is encoded here
and handed to ``cryptography`` as an ``UnrecognizedExtension``.
"""

from __future__ import annotations

__all__ = [
    "boolean",
    "enumerated",
    "integer",
    "octet_string",
    "oid",
    "oid_value_pair",
    "sequence",
]

_TAG_BOOLEAN = 0x01
_TAG_INTEGER = 0x02
_TAG_OCTET_STRING = 0x04
_TAG_OID = 0x06
_TAG_ENUMERATED = 0x0A
_TAG_SEQUENCE = 0x30


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _length(len(value)) + value


def _unsigned(value: int) -> bytes:
    """Minimal two's-complement big-endian bytes of a non-negative integer."""
    if value < 0:
        raise ValueError("only non-negative integers are encoded here")
    return value.to_bytes(value.bit_length() // 8 + 1, "big")


def integer(value: int) -> bytes:
    return _tlv(_TAG_INTEGER, _unsigned(value))


def enumerated(value: int) -> bytes:
    return _tlv(_TAG_ENUMERATED, _unsigned(value))


def boolean(value: bool) -> bytes:
    return _tlv(_TAG_BOOLEAN, b"\xff" if value else b"\x00")


def octet_string(value: bytes) -> bytes:
    return _tlv(_TAG_OCTET_STRING, value)


def oid(dotted: str) -> bytes:
    arcs = [int(part) for part in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2:
        raise ValueError(f"not an object identifier: {dotted!r}")
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return _tlv(_TAG_OID, bytes(body))


def sequence(*items: bytes) -> bytes:
    return _tlv(_TAG_SEQUENCE, b"".join(items))


def oid_value_pair(dotted: str, value: bytes) -> bytes:
    """``SEQUENCE { OBJECT IDENTIFIER, value }``: the shape of every SGX extension entry."""
    return sequence(oid(dotted), value)
