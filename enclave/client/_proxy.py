"""The local plaintext proxy: OpenAI-compatible routes (and the Anthropic Messages API,
translated) on loopback, every request forwarded end-to-end encrypted through
:class:`AsyncOhttpTransport`.

The caller's own headers (its API key among them) travel only inside the encryption. Each
response carries ``X-Confidential-Verified``, ``X-Confidential-Tcb`` and
``X-Confidential-Model-Digest`` from the endpoint verification its key came from, and
``x-request-id`` / ``request-id`` (the OpenAI and Anthropic SDKs read one each). It fails
closed: when the endpoint does not verify, the answer is ``503`` with the code
``attestation_unverified`` and nothing was sent to the endpoint. Its other refusals are in
:mod:`enclave.client._proxy_errors` (a body over ``body_limit_bytes`` is its own 413).

Every route sits behind :class:`enclave.client._proxy_guard.ProxyGuard` (Host and Origin
checks against web pages, the optional access token, JSON-only bodies).

``/proxy/health`` says what the proxy knows: the endpoint, the compat mode, whether it is
verified now and when it was last verified. A verification older than ``recheck_seconds`` is
redone when health is asked, and a failed upstream request clears ``verified``, so health does
not stay ``verified: true`` after the service is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from asyncio import timeout as asyncio_timeout
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from attestation.receipt import EVIDENCE_REQUEST_HEADER
from enclave.client._anthropic import (
    AnthropicRequestError,
    TranslatedRequest,
    error_document,
    error_type_for_status,
    to_anthropic_message,
    to_openai_request,
)
from enclave.client._anthropic_stream import AnthropicStream, SseDecoder
from enclave.client._document import verification_document
from enclave.client._endpoint import VerifiedEndpoint
from enclave.client._ohttp import AsyncOhttpTransport, attested_endpoint
from enclave.client._proxy_errors import Refusal, refusal_for
from enclave.client._proxy_guard import ProxyGuard
from enclave.client._proxy_page import PAGE_PATH, render_page
from enclave.client._receipts import ReceiptKeeper, ResponseWatcher
from enclave.client.errors import AttestationFailed, ClientError, ClientReason
from enclave.protocol import api, strictjson
from enclave.protocol.bodies import (
    BodyIncompleteError,
    BodyTooLargeError,
    InvalidContentLengthError,
    content_length,
    read_body,
)

__all__ = [
    "CHALLENGE_HEADER",
    "HEALTH_PATH",
    "ProxyOptions",
    "build_proxy_app",
    "confidential_headers",
    "instance_proof",
]

logger = logging.getLogger(__name__)

HEALTH_PATH = "/proxy/health"
COMPAT_MODES = ("openai", "anthropic", "both")
#: Environment variable a daemon's parent sets so that ``proxy start`` knows the health answer
#: came from its own child (not from another process on the port).
INSTANCE_ENV = "ENCLAVE_PROXY_INSTANCE"
#: A health request with this header (hex, 16 to 64 bytes) gets ``instance_proof``:
#: HMAC-SHA256(instance token, challenge). The token itself is never shown to anyone.
CHALLENGE_HEADER = "x-enclave-proxy-challenge"


def instance_proof(instance: str, challenge: str) -> str:
    """What a proxy started with ``instance`` answers to ``challenge``."""
    return hmac.new(instance.encode(), challenge.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    """The proxy's limits: request bodies larger than ``body_limit_bytes`` are refused (413)
    before anything is encrypted; health re-verifies an endpoint verified longer than
    ``recheck_seconds`` ago (at most ``recheck_timeout_seconds``). The door
    (:mod:`enclave.client._proxy_guard`): ``allowed_hosts`` beyond the loopback names,
    ``allowed_origins`` (none by default), and the access ``token`` every request then needs."""

    body_limit_bytes: int = 32 * 1024 * 1024
    recheck_seconds: float = 30.0
    recheck_timeout_seconds: float = 15.0
    through_relay: bool = False
    #: Where each answer's receipt is kept with its evidence (``--receipts DIR``); None: the
    #: receipts are still checked, and the latest kept in memory only.
    receipts_dir: Path | None = None
    #: How the page (``/proxy/``) names the trust anchor and the collateral source.
    trust_anchor: str = "Intel SGX Root CA (built into dcap-qvl)"
    collateral_source: str = "the verifier's collateral source"
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    token: str | None = field(default=None, repr=False)
    #: The secret the health route proves it holds to ``enclave proxy status`` (the daemon's
    #: ``ENCLAVE_PROXY_INSTANCE``, through ``ProxySettings``); None: no proof.
    instance: str | None = field(default=None, repr=False)


class _Health:
    """Verification state as the proxy last saw it."""

    def __init__(self) -> None:
        self.failure: str | None = None
        self.checked_at: float = 0.0
        #: Why, for the page: the verification failure, or the refusal as one.
        self.error: AttestationFailed | None = None

    def failed(self, refusal: Refusal, exc: BaseException | None = None) -> None:
        self.failure = refusal.code
        self.checked_at = time.time()
        self.error = (
            exc if isinstance(exc, AttestationFailed) else AttestationFailed(refusal.code, "")
        )
        if not isinstance(exc, AttestationFailed):
            self.error.detail = refusal.message

    def succeeded(self) -> None:
        self.failure = None
        self.error = None
        self.checked_at = time.time()


_REQUEST_DROPPED = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade"}
)
_RESPONSE_DROPPED = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
#: The only caller headers an Anthropic-mode request carries (inside the encryption).
_ANTHROPIC_KEPT = ("authorization", "x-api-key")
#: The routes whose answers carry a receipt.
_RECEIPT_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})


def _watcher(upstream: httpx.Response) -> ResponseWatcher | None:
    """A watcher for an answer that should carry a receipt (a 200 from an inference route)."""
    if upstream.status_code != 200 or upstream.request.url.path not in _RECEIPT_PATHS:
        return None
    return ResponseWatcher.of(upstream)


def confidential_headers(endpoint: VerifiedEndpoint) -> dict[str, str]:
    return {
        "X-Confidential-Verified": "true",
        "X-Confidential-Tcb": endpoint.tcb_status,
        "X-Confidential-Model-Digest": endpoint.model_digest_hex or "none",
        # the insecure_* options the endpoint was verified under (insecure_any_measurement...)
        "X-Confidential-Insecure": ",".join(endpoint.insecure) or "none",
    }


def _request_id_headers(request_id: str) -> dict[str, str]:
    return {"x-request-id": request_id, "request-id": request_id}


def _error(refusal: Refusal, request_id: str) -> JSONResponse:
    """The proxy's own refusal, in the service's one error vocabulary."""
    return JSONResponse(
        api.error_document(refusal.code, message=refusal.message),
        status_code=refusal.status,
        headers={
            "X-Confidential-Verified": "false",
            **refusal.headers,
            **_request_id_headers(request_id),
        },
    )


def _anthropic_error(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        error_document(error_type, message),
        status_code=status,
        headers={"X-Confidential-Verified": "false", **(headers or {})},
    )


def _anthropic_refusal(refusal: Refusal, request_id: str) -> JSONResponse:
    error_type = error_type_for_status(refusal.status)
    if refusal.code == "gateway_overloaded":
        error_type = "overloaded_error"
    elif refusal.code == "attestation_unverified":  # the type a caller matches fail-closed on
        error_type = refusal.code
    headers = {**refusal.headers, **_request_id_headers(request_id)}
    return _anthropic_error(refusal.status, error_type, refusal.message, headers)


async def _read_body(request: Request, options: ProxyOptions) -> bytes | Refusal:
    """The body, or the refusal for it (:mod:`enclave.protocol.bodies` reads and parses)."""
    try:
        declared = content_length(request.scope["headers"])
        return await read_body(request.receive, options.body_limit_bytes, declared=declared)
    except InvalidContentLengthError:
        return _INVALID_LENGTH
    except BodyTooLargeError:
        return _too_large(options)
    except BodyIncompleteError as exc:
        raise ClientDisconnect from exc


def _new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


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
    upstream: httpx.Response,
    translated: TranslatedRequest,
    message_id: str,
    watcher: ResponseWatcher | None = None,
) -> AsyncIterator[bytes]:
    stream = AnthropicStream(
        message_id=message_id, model=translated.model, stop_sequences=translated.stop_sequences
    )
    decoder = SseDecoder()
    try:
        try:
            async for piece in upstream.aiter_bytes():
                if watcher is not None:
                    watcher.feed(piece)
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


def build_proxy_app(
    transport: AsyncOhttpTransport,
    *,
    compat: str = "openai",
    options: ProxyOptions | None = None,
) -> Starlette:
    """The proxy app over ``transport`` (which knows the endpoint's URL and verifier)."""
    if compat not in COMPAT_MODES:
        raise ValueError(f"compat must be one of {COMPAT_MODES}")
    options = options or ProxyOptions()
    client = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(30.0, read=None))
    base = transport.url
    state = _Health()
    keeper = ReceiptKeeper(options.receipts_dir)
    # Keeping receipts: ask for the signing service's certificate with each answer (another
    # replica than the verified one may answer behind a balancer).
    evidence_wanted = (
        [] if options.receipts_dir is None else [(EVIDENCE_REQUEST_HEADER, "certificate")]
    )

    async def send(outgoing: httpx.Request) -> httpx.Response | Refusal:
        try:
            upstream = await client.send(outgoing, stream=True)
        except (ClientError, httpx.HTTPError) as exc:
            refusal = refusal_for(exc, through_relay=options.through_relay)
            reason = exc.reason if isinstance(exc, AttestationFailed) else type(exc).__name__
            logger.warning("request refused: %s (%s)", refusal.code, reason)
            state.failed(refusal, exc)
            return refusal
        state.succeeded()
        return upstream

    async def forward(request: Request) -> Response:
        path = "/v1/" + request.path_params["path"]
        query = request.url.query
        request_id = request.headers.get("x-request-id") or _new_request_id()
        headers = [
            (name, value) for name, value in request.headers.items() if name not in _REQUEST_DROPPED
        ]
        body = await _read_body(request, options)
        if isinstance(body, Refusal):
            return _error(body, request_id)
        if body:  # JSON by its content type (the door refuses any other)
            try:
                strictjson.loads(body)
            except (ValueError, RecursionError):
                return _error(_INVALID_JSON, request_id)
        if "x-request-id" not in request.headers:
            headers.append(("x-request-id", request_id))
        headers += evidence_wanted
        outgoing = client.build_request(
            request.method,
            base + path + ("?" + query if query else ""),
            headers=headers,
            content=body,
        )
        upstream = await send(outgoing)
        if isinstance(upstream, Refusal):
            return _error(upstream, request_id)
        endpoint = attested_endpoint(upstream)
        extra = {} if endpoint is None else confidential_headers(endpoint)
        kept = {
            name: value
            for name, value in upstream.headers.items()
            if name.lower() not in _RESPONSE_DROPPED
        }
        kept.update(_request_id_headers(upstream.headers.get("x-request-id") or request_id))

        watcher = _watcher(upstream)

        async def body_stream() -> AsyncIterator[bytes]:
            try:
                async for piece in upstream.aiter_raw():
                    if watcher is not None:
                        watcher.feed(piece)
                    yield piece
            finally:
                await upstream.aclose()
            if watcher is not None:  # the whole answer went by: check and keep its receipt
                await keeper.keep(endpoint, path, body, watcher, transport.verifier)

        return StreamingResponse(
            body_stream(), status_code=upstream.status_code, headers={**kept, **extra}
        )

    async def messages(request: Request) -> Response:
        """``POST /v1/messages``: translated to ``/v1/chat/completions`` and back."""
        request_id = _new_request_id()
        raw = await _read_body(request, options)
        if isinstance(raw, Refusal):
            return _anthropic_refusal(raw, request_id)
        try:
            translated = to_openai_request(strictjson.loads(raw))
            content = strictjson.dumps(translated.body)
        except (ValueError, RecursionError):
            return _anthropic_error(400, "invalid_request_error", _INVALID_JSON.message)
        except AnthropicRequestError as exc:
            return _anthropic_error(400, "invalid_request_error", str(exc))
        outgoing = client.build_request(
            "POST",
            base + "/v1/chat/completions",
            headers={
                **_anthropic_headers(request),
                "x-request-id": request_id,
                "content-type": "application/json",
                **dict(evidence_wanted),
            },
            content=content,
        )
        upstream = await send(outgoing)
        if isinstance(upstream, Refusal):
            return _anthropic_refusal(upstream, request_id)
        endpoint = attested_endpoint(upstream)
        extra = {} if endpoint is None else confidential_headers(endpoint)
        extra.update(_request_id_headers(upstream.headers.get("x-request-id") or request_id))
        if upstream.status_code != 200:
            try:
                return await _upstream_error(upstream, extra)
            finally:
                await upstream.aclose()
        message_id = "msg_" + secrets.token_hex(12)
        watcher = _watcher(upstream)
        sent = outgoing.content
        if translated.stream:
            headers = {**extra, "Cache-Control": "no-store"}

            async def events() -> AsyncIterator[bytes]:
                async for event in _anthropic_stream(upstream, translated, message_id, watcher):
                    yield event
                if watcher is not None:
                    await keeper.keep(
                        endpoint, "/v1/chat/completions", sent, watcher, transport.verifier
                    )

            return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
        try:
            answer = await upstream.aread()
            if watcher is not None:
                watcher.feed(answer)
                await keeper.keep(
                    endpoint, "/v1/chat/completions", sent, watcher, transport.verifier
                )
            document = to_anthropic_message(
                json.loads(answer),
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

    async def recheck() -> None:
        """Re-verify the endpoint when the last verification is older than the recheck time
        (a service that went away then shows as not verified, with the reason)."""
        endpoint = transport.endpoint
        last = max(state.checked_at, 0.0 if endpoint is None else endpoint.verified_at)
        if time.time() - last < options.recheck_seconds and (
            endpoint is not None or state.failure is not None
        ):
            return
        try:
            async with asyncio_timeout(options.recheck_timeout_seconds):
                await transport.refresh()
        except (ClientError, httpx.HTTPError, TimeoutError) as exc:
            state.failed(refusal_for(exc, through_relay=options.through_relay), exc)
            return
        state.succeeded()

    async def page(_: Request) -> Response:
        """``/proxy/``: what was verified, for a person (enclave.client._proxy_page)."""
        await recheck()
        endpoint = transport.endpoint
        policy = transport.verifier.policy
        anchor, collateral = options.trust_anchor, options.collateral_source
        if endpoint is not None and state.failure is None:
            document = verification_document(
                base, policy, trust_anchor=anchor, collateral=collateral, endpoint=endpoint
            )
        else:
            error = state.error or AttestationFailed(ClientReason.NOT_VERIFIED, "not verified yet")
            document = verification_document(
                base, policy, trust_anchor=anchor, collateral=collateral, failure=error
            )
        text = render_page(
            url=base,
            compat=compat,
            policy=policy,
            document=document,
            endpoint=endpoint,
            failure=state.failure,
            last_checked=state.checked_at or None,
            receipts=keeper.latest,
            receipts_dir=None if options.receipts_dir is None else str(options.receipts_dir),
        )
        return HTMLResponse(
            text,
            headers={
                "Cache-Control": "no-store",
                # nothing to load and nothing to run: the page is inert
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    async def health(request: Request) -> Response:
        await recheck()
        endpoint = transport.endpoint
        verified = endpoint is not None and state.failure is None
        instance = options.instance
        challenge = request.headers.get(CHALLENGE_HEADER, "")
        proof = None
        if instance and 32 <= len(challenge) <= 128 and _is_hex(challenge):
            proof = instance_proof(instance, challenge)
        return JSONResponse(
            {
                "status": "ok",
                "instance_proof": proof,
                "endpoint": base,
                "compat": compat,
                "verified": verified,
                "failure": state.failure,
                "last_verified": None if endpoint is None else _iso(endpoint.verified_at),
                "last_checked": _iso(state.checked_at) if state.checked_at else None,
                "tcb_status": None if endpoint is None else endpoint.tcb_status,
                "model_digest": None if endpoint is None else endpoint.model_digest_hex,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def anthropic_unsupported(request: Request) -> Response:
        path = request.url.path
        if path.endswith("/count_tokens"):
            message = "count_tokens is not available through this proxy"
        elif path.rstrip("/").endswith("/models"):
            message = "the model list is not available in Anthropic mode; use --compat both"
        else:
            message = "no such route"
        return _anthropic_error(404, "not_found_error", message)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    routes = [
        Route(HEALTH_PATH, health, methods=["GET"]),
        Route(PAGE_PATH, page, methods=["GET"]),
    ]
    if compat in ("anthropic", "both"):  # in "both", /v1/messages also works at the root
        routes.append(Route("/v1/messages", messages, methods=["POST"]))
    if compat == "anthropic":
        routes.append(Route("/{path:path}", anthropic_unsupported, methods=methods))
    else:
        routes.append(Route("/v1/{path:path}", forward, methods=methods))
    if compat == "both":
        routes.append(Route("/openai/v1/{path:path}", forward, methods=methods))
        routes.append(Route("/anthropic/v1/messages", messages, methods=["POST"]))
        routes.append(Route("/anthropic/{path:path}", anthropic_unsupported, methods=methods))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    def anthropic_shaped(path: str) -> bool:
        if compat == "anthropic":
            return path not in (HEALTH_PATH, PAGE_PATH)
        return compat == "both" and (
            path.startswith("/anthropic/") or path.startswith("/v1/messages")
        )

    guard = Middleware(
        ProxyGuard,
        anthropic_paths=anthropic_shaped,
        allowed_hosts=options.allowed_hosts,
        allowed_origins=options.allowed_origins,
        token=options.token,
    )
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[guard])
    app.state.receipts = keeper  # what the answers' receipts were, for tests and the page
    return app


_INVALID_JSON = Refusal(
    "invalid_json",
    "the body is not valid JSON (NaN, Infinity, numbers out of range and lone surrogates are "
    "not JSON)",
)


_INVALID_LENGTH = Refusal("invalid_content_length", api.ERRORS["invalid_content_length"].message)


def _too_large(options: ProxyOptions) -> Refusal:
    return Refusal(
        "body_too_large",
        f"the request body is larger than the proxy's limit of {options.body_limit_bytes} bytes",
    )


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")
