"""What the HTTP-speaking providers (dstack, CoCo) share: reading a reply with a size cap."""

from __future__ import annotations

import httpx

from attestation.errors import QuoteProviderError

__all__ = ["read_bounded"]


async def read_bounded(response: httpx.Response, limit: int, what: str) -> bytes:
    """The whole body, refusing it (``QuoteProviderError``) once it passes ``limit`` bytes,
    whether its ``Content-Length`` says so up front or the stream runs over."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise QuoteProviderError(f"{what}: reply exceeds {limit} bytes")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise QuoteProviderError(f"{what}: reply exceeds {limit} bytes")
    return bytes(body)
