"""One access record per HTTP request, logged by :class:`~enclave.routes._middleware.ObservedApp`
when the response ends (logger ``enclave.access``).

Fields (also the JSON log's keys): ``request_id`` (made here, never the client's), ``method``
(a standard method, else ``other``), ``route`` (the route template or ``ohttp_inner`` /
``unmatched``: never the raw path), ``status``, ``duration_ms``, ``bytes_in``, ``bytes_out``,
and, where a route set them, ``model`` and ``generation`` (only once the request named the
model being served: a name a client made up is never logged) and ``reason`` (the stable error
code of a refusal). Never a body, a header value, a query string or a path.
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.types import Scope

from enclave._logging import ACCESS_FIELDS

__all__ = ["ACCESS_FIELDS", "ACCESS_SCOPE_KEY", "access_record", "annotate", "request_id"]

#: The scope key of the record (a dict) shared by the middleware, the routes and the handlers.
ACCESS_SCOPE_KEY = "enclave.access"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def access_record(scope: Scope) -> dict[str, Any]:
    """The record of this request (created with a fresh request id on first use)."""
    record: dict[str, Any] | None = scope.get(ACCESS_SCOPE_KEY)
    if record is None:
        method = str(scope.get("method", ""))
        record = {
            "request_id": secrets.token_hex(12),
            "method": method if method in _METHODS else "other",
        }
        scope[ACCESS_SCOPE_KEY] = record
    return record


def request_id(scope: Scope) -> str:
    """This request's id (the same one the engine gets as ``x-request-id``)."""
    value: str = access_record(scope)["request_id"]
    return value


def annotate(
    scope: Scope,
    *,
    model: str | None = None,
    generation: int | None = None,
    reason: str | None = None,
) -> None:
    """Add the served model (and its generation) or a refusal's stable code to the record."""
    record = access_record(scope)
    if model is not None:
        record["model"] = model
    if generation is not None:
        record["generation"] = generation
    if reason is not None:
        record["reason"] = reason
