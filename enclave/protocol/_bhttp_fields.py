"""Binary HTTP field lines and control data: named limits and validity rules (RFC 9292).

Each ``*_problem`` function returns ``None`` for a valid input or a short reason. Decoders
raise the reason as ``MalformedMessageError``, encoders as ``ValueError``. Reasons never quote
the offending bytes: a field value can be a bearer token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from enclave.protocol._varint import encode_varint

__all__ = [
    "MAX_CONTROL_DATA_SIZE",
    "MAX_FIELD_LINES",
    "MAX_FIELD_SECTION_SIZE",
    "MAX_INFORMATIONAL_RESPONSES",
    "Field",
    "control_data_problem",
    "encode_field_lines",
    "field_problem",
    "field_section_problem",
    "final_status_problem",
    "informational_status_problem",
]

Field = tuple[bytes, bytes]
"""One field line: ``(name, value)``. Names are lowercase tokens."""

MAX_FIELD_SECTION_SIZE = 64 * 1024
"""Largest header or trailer section accepted, in encoded bytes (length prefixes included,
the section's own length or terminator excluded)."""

MAX_FIELD_LINES = 256
"""Most field lines accepted in one header or trailer section."""

MAX_CONTROL_DATA_SIZE = 16 * 1024
"""Largest total of method, scheme, authority and path accepted, in bytes."""

MAX_INFORMATIONAL_RESPONSES = 16
"""Most informational (1xx) responses accepted before the final response."""

# RFC 9110 section 5.6.2: tchar. Field names must also be lowercase (RFC 9113 section 8.2.1).
_DIGITS_AND_MARKS = b"!#$%&'*+-.^_`|~0123456789"
_LOWER_TCHARS = _DIGITS_AND_MARKS + b"abcdefghijklmnopqrstuvwxyz"
_TCHARS = _LOWER_TCHARS + b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# RFC 9113 section 8.2.1: no NUL, CR or LF anywhere; no leading or trailing SP or HTAB.
_BAD_VALUE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")
# RFC 3986 section 3.1 (empty is allowed: CONNECT has no scheme in HTTP/2).
_SCHEME = re.compile(rb"(?:[A-Za-z][A-Za-z0-9+.\-]*)?")
# Stricter than RFC 9292: no controls, space or DEL in authority or path, so that a request
# cannot be split or smuggled when it is replayed into another HTTP stack.
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")


def _is_token(data: bytes, alphabet: bytes) -> bool:
    return bool(data) and not data.translate(None, alphabet)


def field_problem(name: bytes, value: bytes) -> str | None:
    """Why this field line is invalid, or ``None``. Pseudo-fields (``:name``) are refused."""
    if not _is_token(name, _LOWER_TCHARS):
        return "field name is not a lowercase token"
    if _BAD_VALUE.search(value) is not None:
        return "field value contains NUL, CR or LF, or starts or ends with whitespace"
    return None


def control_data_problem(method: bytes, scheme: bytes, authority: bytes, path: bytes) -> str | None:
    """Why this request control data is invalid, or ``None``."""
    if len(method) + len(scheme) + len(authority) + len(path) > MAX_CONTROL_DATA_SIZE:
        return "request control data exceeds MAX_CONTROL_DATA_SIZE"
    if not _is_token(method, _TCHARS):
        return "method is not a token"
    if _SCHEME.fullmatch(scheme) is None:
        return "scheme is not a URI scheme"
    if _BAD_TARGET.search(authority) is not None:
        return "authority contains a control character or space"
    if _BAD_TARGET.search(path) is not None:
        return "path contains a control character or space"
    if not path and scheme.lower() in (b"http", b"https"):
        return "path is empty for an http or https request"
    return None


def informational_status_problem(status: int) -> str | None:
    if not 100 <= status <= 199:
        return "informational status code is not in 100..199"
    return None


def final_status_problem(status: int) -> str | None:
    if not 200 <= status <= 599:
        return "final status code is not in 200..599"
    return None


def field_section_problem(size: int, lines: int) -> str | None:
    """Why a field section of ``size`` encoded bytes and ``lines`` lines is refused, or ``None``."""
    if size > MAX_FIELD_SECTION_SIZE:
        return "field section exceeds MAX_FIELD_SECTION_SIZE"
    if lines > MAX_FIELD_LINES:
        return "field section exceeds MAX_FIELD_LINES"
    return None


def encode_field_lines(fields: Iterable[Field]) -> bytes:
    """Encode field lines (names lowercased), without a length or terminator.

    Raises ``ValueError`` for an invalid field or a section over the named limits.
    """
    parts: list[bytes] = []
    count = 0
    for raw_name, value in fields:
        name = raw_name.lower()
        problem = field_problem(name, value)
        if problem is not None:
            raise ValueError(problem)
        parts += (encode_varint(len(name)), name, encode_varint(len(value)), value)
        count += 1
    encoded = b"".join(parts)
    problem = field_section_problem(len(encoded), count)
    if problem is not None:
        raise ValueError(problem)
    return encoded
