"""The gateway's own responses: plain ones on the outer connection (which must say nothing
about the content), and encapsulated inner ones (problem details the client alone can read)."""

from __future__ import annotations

import json
from email.utils import formatdate

from starlette.types import Send

from enclave.protocol.api import ERRORS, error_body
from enclave.protocol.bhttp import Response as BhttpResponse
from enclave.protocol.ohttp import DATE_PROBLEM_TYPE, OHTTP_KEY_PROBLEM_TYPE

__all__ = [
    "DATE_PROBLEM",
    "OHTTP_KEY_PROBLEM",
    "inner_date_problem",
    "inner_json_error",
    "send_json_error",
    "send_plain",
    "send_problem",
]

OHTTP_KEY_PROBLEM = {"type": OHTTP_KEY_PROBLEM_TYPE, "title": "key configuration not accepted"}
DATE_PROBLEM = {"type": DATE_PROBLEM_TYPE, "title": "date field not acceptable"}
_NO_STORE = (b"cache-control", b"no-store")


async def send_plain(
    send: Send, status: int, body: bytes = b"", headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """A small fixed outer response. ``body`` is a constant: nothing from the request."""
    all_headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        _NO_STORE,
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def send_problem(send: Send, status: int, problem: dict[str, str]) -> None:
    body = json.dumps(problem).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        _NO_STORE,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json_error(
    send: Send, code: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """An outer refusal in the API's error shape, for a state of the service (no key, no
    replay store) or the outer framing (``invalid_content_length``): it says nothing about
    the content."""
    body = error_body(code)
    all_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        _NO_STORE,
        *headers,
    ]
    await send(
        {"type": "http.response.start", "status": ERRORS[code].status, "headers": all_headers}
    )
    await send({"type": "http.response.body", "body": body})


def inner_date_problem(now: float) -> BhttpResponse:
    """RFC 9458 section 6.5: 400 with the ``date`` problem and the gateway's own ``Date``."""
    return BhttpResponse(
        400,
        headers=(
            (b"content-type", b"application/problem+json"),
            (b"date", formatdate(now, usegmt=True).encode()),
        ),
        content=json.dumps(DATE_PROBLEM).encode(),
    )


def inner_json_error(code: str) -> BhttpResponse:
    """An inner error in the API's one error shape (:mod:`enclave.protocol.api`)."""
    return BhttpResponse(
        ERRORS[code].status,
        headers=((b"content-type", b"application/json"),),
        content=error_body(code),
    )
