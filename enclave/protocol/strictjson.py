"""JSON as RFC 8259 defines it, for bodies that cross a trust boundary.

Python's ``json`` reads more than JSON: ``NaN``, ``Infinity`` and ``-Infinity``, numbers out of
the double range (``1e999`` becomes ``inf``) and ``\\ud800``-style escapes that leave a lone
surrogate, which no UTF-8 encoder can write again. Passed on, each of them fails later and
elsewhere (an engine's 5xx, an encoder's traceback); refused here, each is the caller's 400.
The service's inference routes and the local proxy read request bodies with :func:`loads`.
"""

from __future__ import annotations

import json
import math

__all__ = ["dumps", "loads"]


def _not_json(constant: str) -> float:
    raise ValueError(f"{constant} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number out of range")
    return value


def loads(raw: bytes | str) -> object:
    """``raw`` as JSON, or ``ValueError`` (``RecursionError`` when nested too deep) for what is
    not: the constants, numbers out of range and strings that are not Unicode, key or value."""
    document = json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    dumps(document)  # a lone surrogate anywhere: UnicodeEncodeError, a ValueError
    return document


def dumps(document: object) -> bytes:
    """The compact UTF-8 JSON of ``document``; ``ValueError`` for what is not JSON."""
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
