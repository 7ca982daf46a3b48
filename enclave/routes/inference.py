"""The inference routes, passed through to the engine: ``POST /v1/chat/completions``,
``/v1/completions`` and ``/v1/embeddings``.

Per request, in order: a stream slot (else 429 ``too_many_streams``: requests are refused, not
queued, so a saturated service answers at once and the client decides when to retry); the
content type (415); the body limit (413); JSON with a string ``model`` (400); a ready model
(503 ``model_not_ready``) that is the one named (404 ``model_not_found``); then the engine.
Refusals and whole answers are padded to the size bucket with trailing spaces
(:mod:`enclave.protocol.padding`), streams by the relay. Only ``model``, ``stream`` and
``cache_salt`` are read; the body goes to the engine byte for byte
but for the prefix-cache salt the service sets itself (:mod:`enclave._cache_salt`: a
client's ``cache_salt`` is replaced; the ``x-cache-isolation-key`` header chooses a shared
domain, 400 ``invalid_cache_isolation_key`` when malformed).

Headers to the engine: ``content-type``, the client's ``accept``, ``accept-encoding:
identity`` and a fresh ``x-request-id``; nothing else (no ``Authorization``, no hop-by-hop
header). Engine refusals (4xx) reach the client in the OpenAI shape with code
``engine_rejected`` and the engine's message (it answers that client's own request and is
never logged); engine failures (5xx, unreachable, timeout) get our fixed messages.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from attestation.receipt import EVIDENCE_REQUEST_HEADER as RECEIPT_EVIDENCE_HEADER
from enclave._cache_salt import CACHE_ISOLATION_HEADER, InvalidIsolationKeyError, salted_body
from enclave.engine import EngineError, EngineResponseProtocol, EngineTimeoutError
from enclave.gateway import through_gateway
from enclave.metrics import OHTTP_INNER_ROUTE
from enclave.protocol import strictjson
from enclave.protocol.bodies import (
    BodyIncompleteError,
    BodyTooLargeError,
    InvalidContentLengthError,
    content_length,
    read_body,
)
from enclave.protocol.padding import json_padding
from enclave.routes._access import annotate
from enclave.routes._access import request_id as access_request_id
from enclave.routes._errors import ApiError, error_response
from enclave.routes._relay import Relay, RelayContext
from enclave.service import Service

__all__ = ["INFERENCE_PATHS", "MAX_ENGINE_ERROR_BYTES", "inference_routes"]

logger = logging.getLogger(__name__)

INFERENCE_PATHS: tuple[str, ...] = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
#: An engine error body is read up to this size; a larger one is replaced by ours.
MAX_ENGINE_ERROR_BYTES = 64 * 1024
_MAX_ENGINE_MESSAGE_CHARS = 2000


def inference_routes(service: Service) -> list[BaseRoute]:
    """The three pass-through routes."""

    def endpoint(path: str) -> Route:
        async def handle(request: Request) -> Response:
            return await _handle(service, path, request)

        return Route(path, handle, methods=["POST"])

    return [endpoint(path) for path in INFERENCE_PATHS]


async def _handle(service: Service, path: str, request: Request) -> Response:
    if not service.streams.try_acquire():
        logger.info("request on %s refused: too_many_streams", path)
        raise ApiError("too_many_streams", headers={"Retry-After": "1"})
    service.metrics.stream_started()
    ended = False

    def end() -> None:
        nonlocal ended
        if not ended:
            ended = True
            service.streams.release()
            service.metrics.stream_ended()

    relay: Response | None = None
    bucket = service.settings.service.padding_bucket
    try:
        relay = await _pass_through(service, path, request, end)
        return relay if isinstance(relay, Relay) else _padded(relay, bucket)
    except ApiError as exc:
        # Answered here rather than by the app's handler: a refusal is a whole answer too, and
        # its size (an engine's message may quote the request's lengths) is padded like one.
        annotate(request.scope, reason=exc.code)
        return _padded(error_response(exc.code, param=exc.param, headers=exc.headers), bucket)
    finally:
        if not isinstance(relay, Relay):
            end()


def _padded(response: Response, bucket: int) -> Response:
    """A whole JSON answer with spaces to its size bucket (JSON allows them after the value)."""
    body = bytes(response.body)
    padding = json_padding(len(body), bucket)
    if padding:
        response.body = body + padding
        response.headers["content-length"] = str(len(response.body))
    return response


async def _pass_through(
    service: Service, path: str, request: Request, end: Callable[[], None]
) -> Response:
    started = time.monotonic()
    limit = service.settings.service.body_limit_bytes
    body = await _read_body(request, limit)
    document = _request_document(body)
    model = str(document["model"])
    try:
        salt = service.cache_salter.salt(request.headers.get(CACHE_ISOLATION_HEADER))
    except InvalidIsolationKeyError as exc:
        raise ApiError("invalid_cache_isolation_key") from exc
    status = service.ready_model()
    if status is None:
        raise ApiError("model_not_ready", headers={"Retry-After": "5"})
    if model != status.loaded_model:
        raise ApiError("model_not_found", param="model")
    annotate(request.scope, model=status.loaded_model, generation=status.generation)
    gone = service.model_gone(status.generation)
    request_id = access_request_id(request.scope)
    client = service.engine_client()
    headers = (
        ("content-type", "application/json"),
        ("accept", _accept(request)),
        ("accept-encoding", "identity"),
        ("x-request-id", request_id),
    )
    try:
        upstream = await client.post(path, salted_body(body, document, salt), headers)
    except EngineTimeoutError as exc:
        logger.warning("request %s on %s: engine timeout", request_id, path)
        raise ApiError("engine_timeout") from exc
    except EngineError as exc:
        logger.warning(
            "request %s on %s: engine unreachable (%s)", request_id, path, type(exc).__name__
        )
        raise ApiError("engine_unavailable") from exc
    if upstream.status != 200:
        refused = 400 <= upstream.status <= 499
        annotate(request.scope, reason="engine_rejected" if refused else "engine_error")
        return await _engine_refusal(upstream, request_id, path)
    logger.info("request %s on %s: relaying (%d bytes in)", request_id, path, len(body))
    issuer = service.receipts
    receipt = None
    if issuer is not None:
        wanted = request.headers.get(RECEIPT_EVIDENCE_HEADER, "").strip().lower()
        receipt = issuer.for_request(path, body, status, with_certificate=wanted == "certificate")
    context = RelayContext(
        route=OHTTP_INNER_ROUTE if through_gateway(request.scope) else path,
        request_id=request_id,
        metrics=service.metrics,
        started=started,
        model_gone=gone,
        on_end=end,
        stall_timeout=service.settings.service.engine_stall_timeout_seconds,
        first_token_timeout=service.settings.service.engine_first_token_timeout_seconds,
        receipt=receipt,
        padding=service.settings.service.padding_bucket,
        cadence=_cadence(service.settings.service.stream_cadence_ms),
    )
    return Relay(upstream, context)


def _cadence(milliseconds: int | None) -> float | None:
    return None if milliseconds is None else milliseconds / 1000.0


def _accept(request: Request) -> str:
    """The client's ``accept``, unless it could not be a header line (CR, LF, NUL)."""
    value = request.headers.get("accept", "*/*")
    return "*/*" if any(c in value for c in "\r\n\x00") else value


async def _read_body(request: Request, limit: int) -> bytes:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError("unsupported_media_type")
    try:
        return await read_body(
            request.receive, limit, declared=content_length(request.scope["headers"])
        )
    except InvalidContentLengthError as exc:
        raise ApiError("invalid_content_length") from exc
    except BodyTooLargeError as exc:
        raise ApiError("body_too_large") from exc
    except BodyIncompleteError as exc:
        raise ClientDisconnect from exc


def _request_document(body: bytes) -> dict[str, object]:
    """The body as a JSON object with a string ``model`` and a boolean ``stream`` if any."""
    try:
        document = strictjson.loads(body)
    except (ValueError, RecursionError) as exc:  # too deep is bad input too
        raise ApiError("invalid_json") from exc
    if not isinstance(document, dict):
        raise ApiError("invalid_request")
    if "model" not in document:
        raise ApiError("missing_model", param="model")
    model = document["model"]
    if not isinstance(model, str):
        raise ApiError("invalid_model", param="model")
    if not isinstance(document.get("stream", False), bool):
        raise ApiError("invalid_stream", param="stream")
    return document


async def _engine_refusal(upstream: EngineResponseProtocol, request_id: str, path: str) -> Response:
    """An engine's non-200 answer: 4xx keeps the engine's message, 5xx gets ours."""
    code = upstream.status
    raw = bytearray()
    try:
        while chunk := await upstream.read():
            raw += chunk
            if len(raw) > MAX_ENGINE_ERROR_BYTES:
                break
    except EngineError:
        raw.clear()
    finally:
        await upstream.aclose()
    logger.info("request %s on %s: engine answered %d", request_id, path, code)
    headers = {"X-Request-Id": request_id}
    if not 400 <= code <= 499:
        return error_response("engine_error", headers=headers)
    message, err_type, param = _engine_error_fields(bytes(raw))
    return error_response(
        "engine_rejected",
        status=code,
        message=message,
        err_type=err_type,
        param=param,
        headers=headers,
    )


def _engine_error_fields(raw: bytes) -> tuple[str | None, str | None, str | None]:
    if len(raw) > MAX_ENGINE_ERROR_BYTES:
        return None, None, None
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, None, None
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None, None, None
    message = error.get("message")
    err_type = error.get("type")
    param = error.get("param")
    return (
        message[:_MAX_ENGINE_MESSAGE_CHARS] if isinstance(message, str) else None,
        err_type if isinstance(err_type, str) and len(err_type) <= 64 else None,
        param if isinstance(param, str) and len(param) <= 64 else None,
    )
