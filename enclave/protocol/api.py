"""The service's HTTP API as wire facts: its well-known paths and its one error vocabulary.

Every error body the service (routes, lifecycle, gateway, report) and the local proxy send is
OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` built here:

- ``code`` is a stable string from :data:`ERRORS`, which also fixes the HTTP status and a
  default message. The message never holds request content or a foreign exception's text;
  a caller may pass a more precise fixed message (the lifecycle's per-code messages), or, for
  ``engine_rejected`` only, the engine's own answer to the client that caused it.
- ``type`` follows from the status alone (:func:`error_type`), so it cannot drift between
  modules: other 4xx ``invalid_request_error``, 401 ``authentication_error``,
  403 ``permission_error``, 404 ``not_found_error``, 409 ``conflict_error``, 429
  ``rate_limit_error``, 503 ``service_unavailable_error``, every other 5xx ``server_error``.
- ``param`` names the offending request field, or is ``null``; the key is always present.

The local proxy's Anthropic surface (``/v1/messages``) answers the same refusals in Anthropic's
shape (:func:`anthropic_error_document`, :func:`anthropic_error_type`): both shapes are built
here and nowhere else.

Sans-IO: dictionaries and bytes in, dictionaries and bytes out; the server renders them with
Starlette, the proxy and the client read them. docs/service.md lists the codes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ERRORS",
    "GATEWAY_PATH",
    "GPUS_PATH",
    "KEYS_PATH",
    "REPORT_PATH",
    "ErrorCode",
    "anthropic_error_document",
    "anthropic_error_type",
    "error_body",
    "error_document",
    "error_type",
    "sse_error_event",
]

#: ``GET``: the OHTTP key configurations (``application/ohttp-keys``).
KEYS_PATH: Final = "/.well-known/ohttp-keys"
#: ``POST``: the OHTTP gateway resource (RFC 9458 and chunked OHTTP).
GATEWAY_PATH: Final = "/.well-known/ohttp-gateway"
#: ``GET ?nonce=<hex>``: the challenge-mode attestation report.
REPORT_PATH: Final = "/v1/attestation/report"
#: ``GET``: the GPU evidence whose digests the current RA-TLS certificate's claims carry.
GPUS_PATH: Final = "/v1/attestation/gpus"


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One entry of the vocabulary: the HTTP status and the default (fixed) message."""

    status: int
    message: str


def _e(status: int, message: str) -> ErrorCode:
    return ErrorCode(status, message)


#: Every error code the service or the local proxy sends, with its status and fixed message.
ERRORS: Final[dict[str, ErrorCode]] = {
    # Request shape (inference routes, lifecycle routes, proxy).
    "invalid_json": _e(400, "the body is not valid JSON"),
    "invalid_request": _e(400, "the body must be a JSON object"),
    "invalid_body": _e(400, 'the body must be an object {"model": NAME}'),
    "invalid_model": _e(400, '"model" must be a string'),
    "missing_model": _e(400, 'the body needs a "model" field'),
    "invalid_stream": _e(400, '"stream" must be a boolean'),
    "invalid_cache_isolation_key": _e(
        400, "x-cache-isolation-key must be 16 to 256 visible ASCII characters"
    ),
    "invalid_nonce": _e(400, "nonce must be 32 to 64 bytes, hex-encoded"),
    "invalid_content_length": _e(
        400, "Content-Length must be 1 to 16 ASCII digits, given once, and match the body"
    ),
    "malformed_request": _e(400, "the request is not valid HTTP/1.1"),
    "not_found": _e(404, "no such route"),
    "route_not_allowed": _e(404, "no such route through the gateway"),
    "method_not_allowed": _e(405, "method not allowed on this route"),
    "body_timeout": _e(408, "the request body did not arrive in time"),
    "body_too_large": _e(413, "the request body is too large"),
    "unsupported_media_type": _e(415, "the body must be application/json"),
    "expectation_failed": _e(417, "Expect: 100-continue cannot be used through OHTTP"),
    # Authorization (lifecycle routes).
    "missing_token": _e(401, "a bearer token is required"),
    "invalid_token": _e(401, "the bearer token is invalid"),
    "load_token_not_configured": _e(503, "no load token is configured"),
    # Models and the lifecycle (messages: model_manager's fixed per-code messages).
    "model_not_found": _e(404, "the requested model is not the model served"),
    "invalid_model_name": _e(400, "invalid model name"),
    "transition_in_progress": _e(409, "another transition is in progress"),
    "model_not_loaded": _e(409, "that model is not the one loaded"),
    "catalog_error": _e(500, "the model catalog is invalid"),
    "digest_mismatch": _e(500, "the model digest does not match"),
    "digest_error": _e(500, "the model digest could not be read or computed"),
    "engine_exited": _e(500, "the engine exited while loading"),
    "engine_load_timeout": _e(500, "the engine did not become healthy within the load timeout"),
    "model_manager_error": _e(500, "the model manager failed"),
    "model_not_ready": _e(503, "no model is ready; retry later"),
    "model_unloaded": _e(503, "the model was unloaded"),
    # Capacity.
    "too_many_streams": _e(429, "too many concurrent requests; retry later"),
    "overloaded": _e(503, "the service is busy; retry later"),
    "service_stopping": _e(503, "the service is stopping"),
    "owner_unavailable": _e(503, "the service's owner process did not answer; retry later"),
    "rate_limited": _e(429, "too many attestation reports; retry after Retry-After seconds"),
    "too_many_token_failures": _e(
        429, "too many failed token attempts; retry after Retry-After seconds"
    ),
    # Attestation report.
    "not_attested": _e(503, "no certificate has been issued yet"),
    "quote_unavailable": _e(503, "the platform could not produce a quote"),
    "gpu_evidence_unavailable": _e(503, "the GPUs could not produce attestation evidence"),
    # Replicas: the OHTTP key from the key broker, the shared replay store.
    "ohttp_key_unavailable": _e(
        503, "this replica holds no OHTTP key (the key broker did not release it); use another"
    ),
    "replay_store_unavailable": _e(
        503, "the shared replay store did not answer; the request was not accepted"
    ),
    # The engine.
    "engine_rejected": _e(400, "the engine refused the request"),
    "engine_error": _e(502, "the engine failed to answer"),
    "engine_unavailable": _e(502, "the engine could not be reached"),
    "engine_timeout": _e(504, "the engine did not answer in time"),
    "engine_stream_failed": _e(500, "the engine failed while streaming"),
    "engine_stalled": _e(504, "the engine stopped producing output"),
    # Anything else: a bug, logged by type name only.
    "internal_error": _e(500, "internal error"),
    # The local proxy (enclave proxy), in front of the service.
    "attestation_unverified": _e(503, "the endpoint's attestation did not verify"),
    "upstream_unreachable": _e(502, "the endpoint could not be reached"),
    "upstream_failed": _e(502, "the encrypted request failed"),
    "upstream_timeout": _e(504, "the endpoint did not answer in time"),
    "relay_refused": _e(502, "the OHTTP relay refused the request"),
    "gateway_refused": _e(502, "the endpoint's OHTTP gateway refused the request"),
    "gateway_overloaded": _e(503, "the endpoint's OHTTP gateway is busy; retry later"),
    # The local proxy's door (enclave.client._proxy_guard): web pages and other local users.
    "host_not_allowed": _e(
        403, "the Host header is not a loopback name or address, nor an allowed host"
    ),
    "origin_not_allowed": _e(403, "requests from this Origin are not allowed"),
    "proxy_token_required": _e(401, "the proxy's access token is required (ENCLAVE_PROXY_TOKEN)"),
    "proxy_token_invalid": _e(401, "the proxy's access token is invalid"),
}

_TYPES: Final = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status (the one rule every error body follows)."""
    if status in _TYPES:
        return _TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def error_document(
    code: str,
    *,
    message: str | None = None,
    param: str | None = None,
    status: int | None = None,
    err_type: str | None = None,
) -> dict[str, dict[str, object]]:
    """The error document for ``code``. ``status`` (default: the code's) picks the ``type``;
    ``err_type`` overrides it only for an engine's own refusal relayed to its client."""
    entry = ERRORS.get(code)
    if entry is None:
        raise ValueError(f"unknown error code {code!r}")
    return {
        "error": {
            "message": entry.message if message is None else message,
            "type": error_type(entry.status if status is None else status)
            if err_type is None
            else err_type,
            "param": param,
            "code": code,
        }
    }


def error_body(code: str, *, message: str | None = None, param: str | None = None) -> bytes:
    """:func:`error_document` as compact JSON bytes."""
    document = error_document(code, message=message, param=param)
    return json.dumps(document, separators=(",", ":")).encode()


#: Anthropic's error ``type`` per status (the proxy's ``/v1/messages`` surface).
_ANTHROPIC_TYPES: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status."""
    if status in _ANTHROPIC_TYPES:
        return _ANTHROPIC_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_error_document(error_type: str, message: str) -> dict[str, object]:
    """The same refusal in Anthropic's shape, for the proxy's ``/v1/messages`` surface:
    ``{"type": "error", "error": {"type": ..., "message": ...}}``."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


def sse_error_event(code: str) -> bytes:
    """An in-stream error event, as vLLM sends one: ``data: {"error": {...}}`` and a blank line
    (the status line has gone out already, so the status only picks the ``type``)."""
    return b"data: " + error_body(code) + b"\n\n"
