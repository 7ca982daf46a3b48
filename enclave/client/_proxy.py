"""The local plaintext proxy: OpenAI-compatible routes on loopback, every request forwarded
end-to-end encrypted through :class:`AsyncOhttpTransport`.

The caller's own headers (its API key among them) travel only inside the encryption. Each
response carries ``X-Confidential-Verified``, ``X-Confidential-Tcb`` and
``X-Confidential-Model-Digest`` from the endpoint verification its key came from. It fails
closed: when the endpoint does not verify, the answer is ``503`` with the code
``attestation_unverified`` and nothing was sent to the endpoint.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from enclave.client._endpoint import VerifiedEndpoint
from enclave.client._ohttp import AsyncOhttpTransport, attested_endpoint
from enclave.client.errors import AttestationFailed, ClientError

__all__ = ["HEALTH_PATH", "build_proxy_app", "confidential_headers"]

logger = logging.getLogger(__name__)

HEALTH_PATH = "/proxy/health"
COMPAT_MODES = ("openai", "both")

_REQUEST_DROPPED = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade"}
)
_RESPONSE_DROPPED = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


def confidential_headers(endpoint: VerifiedEndpoint) -> dict[str, str]:
    return {
        "X-Confidential-Verified": "true",
        "X-Confidential-Tcb": endpoint.tcb_status,
        "X-Confidential-Model-Digest": endpoint.model_digest_hex or "none",
    }


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "proxy_error", "code": code}},
        status_code=status,
        headers={"X-Confidential-Verified": "false"},
    )


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
            return _error(503, "attestation_unverified", f"endpoint not verified: {exc.reason}")
        except (ClientError, httpx.HTTPError) as exc:
            logger.warning("upstream failed: %s", type(exc).__name__)
            return _error(502, "upstream_failed", "the encrypted request failed")
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
    routes = [
        Route(HEALTH_PATH, health, methods=["GET"]),
        Route("/v1/{path:path}", forward, methods=methods),
    ]
    if compat == "both":
        routes.append(Route("/openai/v1/{path:path}", forward, methods=methods))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    return Starlette(routes=routes, lifespan=lifespan)
