"""Sans-IO pieces of the OHTTP client: the inner request, and the decrypting response reader."""

from __future__ import annotations

import json
from email.utils import formatdate

import httpx

from enclave.client.errors import ResponseDecryptError, ResponseTruncated
from enclave.protocol import bhttp
from enclave.protocol.chunked import ChunkedResponseDecoder
from enclave.protocol.errors import ProtocolError, TruncatedMessageError
from enclave.protocol.ohttp import OHTTP_KEY_PROBLEM_TYPE

__all__ = [
    "OHTTP_KEY_PROBLEM",
    "ChunkedResponseReader",
    "inner_request",
    "is_ohttp_key_problem",
    "response_headers",
]

OHTTP_KEY_PROBLEM = OHTTP_KEY_PROBLEM_TYPE

# Connection-level fields: they describe the outer hop, never the inner message.
_DROPPED = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"accept-encoding",
        b"date",
    }
)


def inner_request(request: httpx.Request, content: bytes, now: float) -> bhttp.Request:
    """The Binary HTTP form of ``request``, with a ``Date`` the gateway checks for replay."""
    headers = [
        (name.lower(), value) for name, value in request.headers.raw if name.lower() not in _DROPPED
    ]
    headers.append((b"date", formatdate(now, usegmt=True).encode("ascii")))
    return bhttp.Request(
        method=request.method.encode("ascii"),
        scheme=b"https",
        authority=request.url.netloc,
        path=request.url.raw_path,
        headers=tuple(headers),
        content=content,
    )


def response_headers(head: bhttp.ResponseHead) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in head.headers if name != b"content-length"]


#: The outer refusals a gateway names with a code (its state, never the request's content).
GATEWAY_STATE_CODES = frozenset({"ohttp_key_unavailable", "replay_store_unavailable"})


def gateway_state_code(status: int, body: bytes) -> str | None:
    """The code of an outer 503 that says why the gateway cannot serve (replicas), or None."""
    if status != 503:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    error = document.get("error") if isinstance(document, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if code in GATEWAY_STATE_CODES else None


def is_ohttp_key_problem(status: int, body: bytes) -> bool:
    """Whether an outer response is the gateway's ``ohttp-key`` problem (RFC 9458 5.3)."""
    if status not in (400, 422):
        return False
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("type") == OHTTP_KEY_PROBLEM


class ChunkedResponseReader:
    """Outer bytes in, Binary HTTP response events out; the end of the outer stream must
    complete the message (``ResponseTruncated`` otherwise)."""

    def __init__(self, decoder: ChunkedResponseDecoder) -> None:
        self._decoder = decoder
        self._bhttp = bhttp.ResponseDecoder()
        self.ended = False

    def feed(self, data: bytes) -> list[bhttp.ResponseEvent]:
        try:
            events: list[bhttp.ResponseEvent] = []
            for plaintext in self._decoder.feed(data):
                events += self._bhttp.feed(plaintext)
            return events
        except ProtocolError as exc:
            raise ResponseDecryptError() from exc

    def finish(self) -> list[bhttp.ResponseEvent]:
        try:
            last = self._decoder.finish()
            events = self._bhttp.feed(last) + self._bhttp.finish()
        except TruncatedMessageError as exc:
            raise ResponseTruncated() from exc
        except ProtocolError as exc:
            raise ResponseDecryptError() from exc
        self.ended = True
        return events
