"""Errors the routes raise and the one place they become HTTP responses.

The body is OpenAI's error shape ``{"error": {"message", "type", "param", "code"}}``. ``code``
is a stable string from :data:`ERROR_CODES`; ``message`` is fixed per code and never contains
request content or the text of a foreign exception.
"""

from __future__ import annotations

import json

from starlette.responses import JSONResponse

__all__ = ["ERROR_CODES", "ApiError", "error_document", "error_response", "sse_error_event"]

#: code -> (HTTP status, OpenAI error type, fixed message).
ERROR_CODES: dict[str, tuple[int, str, str]] = {
    "invalid_json": (400, "invalid_request_error", "the body is not valid JSON"),
    "invalid_request": (400, "invalid_request_error", "the body must be a JSON object"),
    "invalid_model": (400, "invalid_request_error", '"model" must be a string'),
    "missing_model": (400, "invalid_request_error", 'the body needs a "model" field'),
    "invalid_stream": (400, "invalid_request_error", '"stream" must be a boolean'),
    "not_found": (404, "not_found_error", "no such route"),
    "model_not_found": (404, "not_found_error", "the requested model is not the model served"),
    "method_not_allowed": (405, "invalid_request_error", "method not allowed on this route"),
    "body_too_large": (413, "invalid_request_error", "the request body is too large"),
    "unsupported_media_type": (
        415,
        "invalid_request_error",
        "the body must be application/json",
    ),
    "too_many_streams": (
        429,
        "rate_limit_error",
        "too many concurrent requests; retry later",
    ),
    "engine_rejected": (400, "invalid_request_error", "the engine refused the request"),
    "internal_error": (500, "server_error", "internal error"),
    "engine_error": (502, "server_error", "the engine failed to answer"),
    "engine_unavailable": (502, "server_error", "the engine could not be reached"),
    "model_not_ready": (503, "service_unavailable_error", "no model is ready; retry later"),
    "engine_timeout": (504, "server_error", "the engine did not answer in time"),
    # In-stream only (the status line has gone out already).
    "engine_stream_failed": (500, "server_error", "the engine failed while streaming"),
    "model_unloaded": (503, "service_unavailable_error", "the model was unloaded"),
}


class ApiError(Exception):
    """A refusal with a stable ``code``; the handler turns it into the OpenAI error shape."""

    def __init__(
        self, code: str, *, param: str | None = None, headers: dict[str, str] | None = None
    ):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(code)
        self.code = code
        self.param = param
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return ERROR_CODES[self.code][0]


def error_document(
    code: str, *, param: str | None = None, message: str | None = None, err_type: str | None = None
) -> dict[str, dict[str, object]]:
    """The OpenAI error document for ``code`` (``message``/``err_type`` override the fixed ones
    only for errors relayed from the engine to the client who caused them)."""
    _, fixed_type, fixed_message = ERROR_CODES[code]
    return {
        "error": {
            "message": fixed_message if message is None else message,
            "type": fixed_type if err_type is None else err_type,
            "param": param,
            "code": code,
        }
    }


def error_response(
    code: str,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    status: int | None = None,
    message: str | None = None,
    err_type: str | None = None,
) -> JSONResponse:
    all_headers = {"Cache-Control": "no-store", **(headers or {})}
    return JSONResponse(
        error_document(code, param=param, message=message, err_type=err_type),
        status_code=ERROR_CODES[code][0] if status is None else status,
        headers=all_headers,
    )


def sse_error_event(code: str) -> bytes:
    """An in-stream error event, as vLLM sends one: ``data: {"error": {...}}`` and a blank line."""
    return f"data: {json.dumps(error_document(code), separators=(',', ':'))}\n\n".encode()
