"""Errors the routes raise and the one place they become HTTP responses.

The vocabulary (codes, statuses, types, fixed messages) is :mod:`enclave.protocol.api`; this
module only wraps its documents in Starlette responses. ``message`` is fixed per code and never
contains request content or the text of a foreign exception.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

from enclave.errors import EnclaveError
from enclave.protocol.api import ERRORS, error_document, sse_error_event

__all__ = ["ERRORS", "ApiError", "error_document", "error_response", "sse_error_event"]


class ApiError(EnclaveError):
    """A refusal with a stable ``code``; the handler turns it into the OpenAI error shape."""

    def __init__(
        self, code: str, *, param: str | None = None, headers: dict[str, str] | None = None
    ):
        if code not in ERRORS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(code)
        self.code = code
        self.param = param
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return ERRORS[self.code].status


def error_response(
    code: str,
    *,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
    status: int | None = None,
    message: str | None = None,
    err_type: str | None = None,
) -> JSONResponse:
    """The JSON response for ``code`` (``status`` overrides the code's own only for an
    engine's refusal relayed with the engine's status)."""
    all_headers = {"Cache-Control": "no-store", **(headers or {})}
    return JSONResponse(
        error_document(code, param=param, message=message, status=status, err_type=err_type),
        status_code=ERRORS[code].status if status is None else status,
        headers=all_headers,
    )
