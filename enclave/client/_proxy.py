"""The local plaintext proxy: OpenAI-compatible routes (and the Anthropic Messages API,
translated) on loopback, every request forwarded end-to-end encrypted through
:class:`AsyncOhttpTransport`.

The caller's own headers (its API key among them) travel only inside the encryption. Each
response carries ``X-Confidential-Verified``, ``X-Confidential-Tcb`` and
``X-Confidential-Model-Digest`` from the endpoint verification its key came from. It fails
closed: when the endpoint does not verify, the answer is ``503`` with the code
``attestation_unverified`` and nothing was sent to the endpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from enclave.client._anthropic import (
    AnthropicRequestError,
    TranslatedRequest,
    error_document,
    error_type_for_status,
    to_anthropic_message,
    to_openai_request,
)
from enclave.client._anthropic_stream import AnthropicStream, SseDecoder
from enclave.client._endpoint import VerifiedEndpoint
from enclave.client._ohttp import AsyncOhttpTransport, attested_endpoint
from enclave.client.errors import AttestationFailed, ClientError
from enclave.protocol import api

__all__ = ["HEALTH_PATH", "build_proxy_app", "confidential_headers"]

logger = logging.getLogger(__name__)

HEALTH_PATH = "/proxy/health"
COMPAT_MODES = ("openai", "anthropic", "both")

_REQUEST_DROPPED = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade"}
)
_RESPONSE_DROPPED = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
#: The only caller headers an Anthropic-mode request carries (inside the encryption).
_ANTHROPIC_KEPT = ("authorization", "x-api-key")


def confidential_headers(endpoint: VerifiedEndpoint) -> dict[str, str]:
    return {
        "X-Confidential-Verified": "true",
        "X-Confidential-Tcb": endpoint.tcb_status,
        "X-Confidential-Model-Digest": endpoint.model_digest_hex or "none",
        # the insecure_* options the endpoint was verified under (insecure_any_measurement...)
        "X-Confidential-Insecure": ",".join(endpoint.insecure) or "none",
    }


def _error(code: str, message: str | None = None) -> JSONResponse:
    """The proxy's own refusal, in the service's one error vocabulary."""
    return JSONResponse(
        api.error_document(code, message=message),
        status_code=api.ERRORS[code].status,
        headers={"X-Confidential-Verified": "false"},
    )


def _anthropic_error(status: int, error_type: str, message: str) -> JSONResponse:
    return JSONResponse(
        error_document(error_type, message),
        status_code=status,
        headers={"X-Confidential-Verified": "false"},
    )


def _anthropic_headers(request: Request) -> dict[str, str]:
    """The caller's key headers; ``x-api-key`` is also sent as a bearer token when no
    ``Authorization`` was given, for an OpenAI-style check in front of the engine."""
    headers = {name: request.headers[name] for name in _ANTHROPIC_KEPT if name in request.headers}
    if "x-api-key" in headers and "authorization" not in headers:
        headers["authorization"] = "Bearer " + headers["x-api-key"]
    return headers


async def _upstream_error(upstream: httpx.Response, extra: dict[str, str]) -> JSONResponse:
    """An OpenAI error answer in Anthropic's shape, same status."""
    try:
        error = json.loads(await upstream.aread()).get("error")
        message = error.get("message") if isinstance(error, dict) else None
    except (ValueError, AttributeError, httpx.HTTPError, ClientError):
        message = None
    status = upstream.status_code
    text = message if isinstance(message, str) else f"the endpoint answered {status}"
    return JSONResponse(
        error_document(error_type_for_status(status), text), status_code=status, headers=extra
    )


async def _anthropic_stream(
    upstream: httpx.Response, translated: TranslatedRequest, message_id: str
) -> AsyncIterator[bytes]:
    stream = AnthropicStream(
        message_id=message_id, model=translated.model, stop_sequences=translated.stop_sequences
    )
    decoder = SseDecoder()
    try:
        try:
            async for piece in upstream.aiter_bytes():
                for data in decoder.feed(piece):
                    for event in stream.feed(data):
                        yield event
                if stream.finished:
                    return
        except (ClientError, httpx.HTTPError) as exc:
            logger.warning("upstream stream failed: %s", type(exc).__name__)
            for event in stream.fail("the encrypted response stream failed or was truncated"):
                yield event
            return
        for event in stream.end():
            yield event
    finally:
        await upstream.aclose()


def build_proxy_app(transport: AsyncOhttpTransport, *, compat: str = "openai") -> Starlette:
    """The proxy app over ``transport`` (which knows the endpoint's URL and verifier)."""
    if compat not in COMPAT_MODES:
        raise ValueError(f"compat must be one of {COMPAT_MODES}")
    client = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(30.0, read=None))
    base = transport.url

    async def forward(request: Request) -> Response:
        path = "/v1/" + request.path_params["path"]
        query = request.url.query
        headers = [
            (name, value) for name, value in request.headers.items() if name not in _REQUEST_DROPPED
        ]
        body = await request.body()
        outgoing = client.build_request(
            request.method,
            base + path + ("?" + query if query else ""),
            headers=headers,
            content=body,
        )
        try:
            upstream = await client.send(outgoing, stream=True)
        except AttestationFailed as exc:
            logger.warning("refused: the endpoint did not verify (%s)", exc.reason)
            return _error("attestation_unverified", f"endpoint not verified: {exc.reason}")
        except (ClientError, httpx.HTTPError) as exc:
            logger.warning("upstream failed: %s", type(exc).__name__)
            return _error("upstream_failed")
        endpoint = attested_endpoint(upstream)
        extra = {} if endpoint is None else confidential_headers(endpoint)
        kept = {
            name: value
            for name, value in upstream.headers.items()
            if name.lower() not in _RESPONSE_DROPPED
        }

        async def body_stream() -> AsyncIterator[bytes]:
            try:
                async for piece in upstream.aiter_raw():
                    yield piece
            finally:
                await upstream.aclose()

        return StreamingResponse(
            body_stream(), status_code=upstream.status_code, headers={**kept, **extra}
        )

    async def messages(request: Request) -> Response:
        """``POST /v1/messages``: translated to ``/v1/chat/completions`` and back."""
        try:
            translated = to_openai_request(json.loads(await request.body()))
        except (ValueError, RecursionError):
            return _anthropic_error(400, "invalid_request_error", "the body is not valid JSON")
        except AnthropicRequestError as exc:
            return _anthropic_error(400, "invalid_request_error", str(exc))
        outgoing = client.build_request(
            "POST",
            base + "/v1/chat/completions",
            headers=_anthropic_headers(request),
            json=translated.body,
        )
        try:
            upstream = await client.send(outgoing, stream=True)
        except AttestationFailed as exc:
            logger.warning("refused: the endpoint did not verify (%s)", exc.reason)
            message = f"endpoint not verified: {exc.reason}"
            return _anthropic_error(503, "attestation_unverified", message)
        except (ClientError, httpx.HTTPError) as exc:
            logger.warning("upstream failed: %s", type(exc).__name__)
            return _anthropic_error(502, "api_error", "the encrypted request failed")
        endpoint = attested_endpoint(upstream)
        extra = {} if endpoint is None else confidential_headers(endpoint)
        if upstream.status_code != 200:
            try:
                return await _upstream_error(upstream, extra)
            finally:
                await upstream.aclose()
        message_id = "msg_" + secrets.token_hex(12)
        if translated.stream:
            headers = {**extra, "Cache-Control": "no-store"}
            events = _anthropic_stream(upstream, translated, message_id)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        try:
            document = to_anthropic_message(
                json.loads(await upstream.aread()),
                message_id=message_id,
                model=translated.model,
                stop_sequences=translated.stop_sequences,
            )
        except (ValueError, ClientError, httpx.HTTPError) as exc:
            logger.warning("upstream answer unusable: %s", type(exc).__name__)
            return _anthropic_error(502, "api_error", "the endpoint's answer could not be read")
        finally:
            await upstream.aclose()
        return JSONResponse(document, headers=extra)

    async def health(_: Request) -> Response:
        endpoint = transport.endpoint
        return JSONResponse(
            {
                "status": "ok",
                "endpoint": base,
                "verified": endpoint is not None,
                "tcb_status": None if endpoint is None else endpoint.tcb_status,
            }
        )

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    routes = [Route(HEALTH_PATH, health, methods=["GET"])]
    if compat == "anthropic":
        routes.append(Route("/v1/messages", messages, methods=["POST"]))
    else:
        routes.append(Route("/v1/{path:path}", forward, methods=methods))
    if compat == "both":
        routes.append(Route("/openai/v1/{path:path}", forward, methods=methods))
        routes.append(Route("/anthropic/v1/messages", messages, methods=["POST"]))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    return Starlette(routes=routes, lifespan=lifespan)
