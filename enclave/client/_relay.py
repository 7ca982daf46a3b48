"""A minimal OHTTP relay: forwards the opaque encapsulated body to the gateway resource and
streams the answer back, so the two-server model of RFC 9458 can be run end to end.

It sees ciphertext only. It forwards nothing that identifies the client: only the media
type, ``Incremental`` and ``Accept`` go to the gateway (no cookies, no ``Authorization``, no
``User-Agent``, no forwarding headers, no client address). With an API key set, callers must
present ``Authorization: Bearer <key>`` (compared in constant time); the key is not forwarded.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["RELAY_PATH", "build_relay_app"]

logger = logging.getLogger(__name__)

RELAY_PATH = "/.well-known/ohttp-relay"
MAX_BODY = 32 * 1024 * 1024
_FORWARDED_REQUEST = ("content-type", "incremental", "accept")
_FORWARDED_RESPONSE = ("content-type", "incremental", "cache-control", "retry-after")
_MEDIA_TYPES = ("message/ohttp-req", "message/ohttp-chunked-req")


def build_relay_app(
    gateway_url: str,
    *,
    api_key: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    insecure_skip_tls_verify: bool = False,
    observe: Callable[[bytes], None] | None = None,
) -> Starlette:
    """The relay app. ``observe`` sees every byte the relay receives (for tests)."""
    if insecure_skip_tls_verify:
        logger.warning("INSECURE: the relay does not verify the gateway's TLS certificate")
    client = httpx.AsyncClient(
        transport=transport,
        verify=not insecure_skip_tls_verify,
        timeout=httpx.Timeout(30.0, read=None),
    )

    async def relay(request: Request) -> Response:
        if api_key is not None:
            presented = request.headers.get("authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(presented.encode(), api_key.encode()):
                return PlainTextResponse("unauthorized\n", status_code=401)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in _MEDIA_TYPES:
            return PlainTextResponse("unsupported media type\n", status_code=415)
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > MAX_BODY:
                return PlainTextResponse("request body too large\n", status_code=413)
        if observe is not None:
            observe(bytes(body))
        headers = {
            name: request.headers[name] for name in _FORWARDED_REQUEST if name in request.headers
        }
        outgoing = client.build_request("POST", gateway_url, content=bytes(body), headers=headers)
        try:
            upstream = await client.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            logger.warning("relay: gateway unreachable (%s)", type(exc).__name__)
            return PlainTextResponse("gateway unreachable\n", status_code=502)

        async def stream() -> AsyncIterator[bytes]:
            try:
                async for piece in upstream.aiter_raw():
                    yield piece
            finally:
                await upstream.aclose()

        kept = {
            name: upstream.headers[name] for name in _FORWARDED_RESPONSE if name in upstream.headers
        }
        return StreamingResponse(stream(), status_code=upstream.status_code, headers=kept)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    return Starlette(routes=[Route(RELAY_PATH, relay, methods=["POST"])], lifespan=lifespan)
