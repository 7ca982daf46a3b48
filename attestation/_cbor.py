"""CBOR decoding that refuses trailing bytes (cbor2.loads silently ignores them)."""

from __future__ import annotations

import io

import cbor2

from attestation.errors import EvidenceError

__all__ = ["loads_exact"]


def loads_exact(data: bytes, what: str) -> object:
    """Decode exactly one CBOR item that spans all of ``data``; raise EvidenceError otherwise."""
    stream = io.BytesIO(data)
    try:
        item: object = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:  # cbor2 raises several unrelated types on bad input
        raise EvidenceError(f"{what} is not well-formed CBOR") from exc
    if stream.tell() != len(data):
        raise EvidenceError(f"{what} has {len(data) - stream.tell()} trailing bytes")
    return item
