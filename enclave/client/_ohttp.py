"""httpx transports that send every request end-to-end encrypted through Oblivious HTTP.

The transport first verifies the endpoint (``attest_endpoint``: RA-TLS certificate plus a
nonce-fresh report) and encrypts to the attested key configuration (X-Wing first). Each
request becomes a Binary HTTP message with a ``Date``, sealed in the chunked form (default:
the response then streams, sealed per chunk, and is decrypted as it arrives) or as one RFC
9458 message, and is posted to the gateway, directly (over RA-TLS) or through a relay (with
optional outer headers such as the relay's API key). The caller's own headers, its API key
included, travel only inside the encryption.

Re-verification happens when the attested state is older than ``max_age``, when the direct
connection presents a different certificate (model change, key rotation, refresh), after an
inner 503, and on the gateway's ``ohttp-key`` problem (then the request is retried once).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TypeAlias

import httpx

from enclave.client._endpoint import VerifiedEndpoint, attest_endpoint
from enclave.client._messages import (
    ChunkedResponseReader,
    gateway_state_code,
    inner_request,
    is_ohttp_key_problem,
    response_headers,
)
from enclave.client._ratls import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_KEEPALIVE_CONNECTIONS,
    AsyncRaTlsTransport,
    RaTlsTransport,
    verified_certificate,
)
from enclave.client._verifier import Verifier, run_sync
from enclave.client.errors import GatewayRefused, ResponseDecryptError, ResponseTruncated
from enclave.protocol import bhttp
from enclave.protocol.api import GATEWAY_PATH
from enclave.protocol.chunked import (
    MEDIA_TYPE_CHUNKED_REQUEST,
    MEDIA_TYPE_CHUNKED_RESPONSE,
    ChunkedRequestEncoder,
)
from enclave.protocol.errors import ProtocolError, TruncatedMessageError
from enclave.protocol.ohttp import (
    MEDIA_TYPE_REQUEST,
    MEDIA_TYPE_RESPONSE,
    ClientRequestContext,
    encapsulate_request,
)
from enclave.protocol.padding import DEFAULT_BUCKET, bhttp_padding

__all__ = ["ENDPOINT_EXTENSION", "AsyncOhttpTransport", "OhttpTransport", "attested_endpoint"]

#: Response extension holding the VerifiedEndpoint a response was encrypted under.
ENDPOINT_EXTENSION = "enclave_endpoint"
DEFAULT_MAX_AGE = 300.0
_OUTER_TIMEOUT = httpx.Timeout(30.0, read=None)  # when the caller set none: streams may idle


def _limits(max_connections: int) -> httpx.Limits:
    """The pool of the plain outer client (through a relay); RA-TLS pools are the transport's."""
    return httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=min(DEFAULT_MAX_KEEPALIVE_CONNECTIONS, max_connections),
    )


_Opener: TypeAlias = ChunkedRequestEncoder | ClientRequestContext


def attested_endpoint(response: httpx.Response) -> VerifiedEndpoint | None:
    """The verified endpoint whose key encrypted ``response`` (OHTTP transports only)."""
    found = response.extensions.get(ENDPOINT_EXTENSION)
    return found if isinstance(found, VerifiedEndpoint) else None


class _Common:
    """Configuration and the sans-IO steps both transports share."""

    def __init__(
        self,
        url: str,
        verifier: Verifier,
        relay_url: str | None,
        relay_headers: Mapping[str, str] | None,
        chunked: bool,
        max_age: float,
    ) -> None:
        if not url.startswith("https://"):
            raise ValueError("the endpoint URL must be https:// (RA-TLS)")
        verifier.require_pinned()  # nothing is encrypted to an endpoint we do not pin
        self.url = url.rstrip("/")
        self.verifier = verifier
        self.gateway_url = relay_url or self.url + GATEWAY_PATH
        self.relay_headers = dict(relay_headers or {})
        self.chunked = chunked
        self.max_age = max_age
        self.endpoint: VerifiedEndpoint | None = None
        self.stale = False
        self.refreshes = 0  # endpoint verifications done (for tests and logs)
        self.seen_certificate: bytes | None = None  # quote digest on the direct connection
        self.padding_bytes = DEFAULT_BUCKET  # every request is padded to a multiple of this

    def needs_refresh(self) -> bool:
        endpoint = self.endpoint
        return (
            endpoint is None
            or self.stale
            or self.verifier.clock() - endpoint.verified_at >= self.max_age
        )

    def seal(
        self, request: httpx.Request, content: bytes, endpoint: VerifiedEndpoint
    ) -> tuple[bytes, dict[str, str], _Opener]:
        inner = inner_request(request, content, self.verifier.clock())
        # Zero padding to the size bucket (RFC 9292 section 3.8), inside the encryption: the
        # relay and the network see the bucket, not the prompt's length.
        message = bhttp.encode_request(inner)
        message = bhttp.encode_request(
            inner, padding=bhttp_padding(len(message), self.padding_bytes)
        )
        config = endpoint.key_configs[0]
        headers = dict(self.relay_headers)
        if self.chunked:
            encoder = ChunkedRequestEncoder(config)
            body = encoder.header + encoder.seal_chunk(message, final=True)
            headers.update(
                {
                    "content-type": MEDIA_TYPE_CHUNKED_REQUEST,
                    "accept": MEDIA_TYPE_CHUNKED_RESPONSE,
                    "incremental": "?1",
                }
            )
            return body, headers, encoder
        body, context = encapsulate_request(config, message)
        headers.update({"content-type": MEDIA_TYPE_REQUEST, "accept": MEDIA_TYPE_RESPONSE})
        return body, headers, context

    def certificate_changed(self, outer: httpx.Response, endpoint: VerifiedEndpoint) -> bool:
        """Whether the direct connection shows a certificate other than the last one seen
        (a keep-alive connection may still show an older one: that is no change)."""
        seen = verified_certificate(outer)
        if seen is None:
            return False
        known = (endpoint.certificate_quote_sha256, self.seen_certificate)
        self.seen_certificate = seen.quote_sha256
        # The one the endpoint was verified with (a refresh verifies on its own connection,
        # so a new connection then shows it) is no change either.
        return seen.quote_sha256 not in known

    def whole_response(
        self,
        context: ClientRequestContext,
        body: bytes,
        request: httpx.Request,
        endpoint: VerifiedEndpoint,
    ) -> httpx.Response:
        try:
            inner = bhttp.decode_response(context.decapsulate_response(body))
        except TruncatedMessageError as exc:
            raise ResponseTruncated() from exc
        except ProtocolError as exc:
            raise ResponseDecryptError() from exc
        self.stale = self.stale or inner.status == 503
        headers = [(n, v) for n, v in inner.headers if n != b"content-length"]
        return httpx.Response(
            inner.status,
            headers=headers,
            content=inner.content,
            request=request,
            extensions={ENDPOINT_EXTENSION: endpoint},
        )

    def head_response(
        self,
        head: bhttp.ResponseHead,
        stream: httpx.SyncByteStream | httpx.AsyncByteStream,
        endpoint: VerifiedEndpoint,
    ) -> httpx.Response:
        self.stale = self.stale or head.status == 503
        return httpx.Response(
            head.status,
            headers=response_headers(head),
            stream=stream,
            extensions={ENDPOINT_EXTENSION: endpoint},
        )


def _outer_request(
    client: httpx.Client | httpx.AsyncClient,
    common: _Common,
    request: httpx.Request,
    body: bytes,
    headers: dict[str, str],
) -> httpx.Request:
    extensions = {}
    if "timeout" in request.extensions:
        extensions["timeout"] = request.extensions["timeout"]
    return client.build_request(
        "POST", common.gateway_url, content=body, headers=headers, extensions=extensions
    )


def _events(
    chunks: Iterator[bytes], reader: ChunkedResponseReader
) -> Iterator[bhttp.ResponseEvent]:
    for data in chunks:
        yield from reader.feed(data)
    yield from reader.finish()


async def _aevents(
    chunks: AsyncIterator[bytes], reader: ChunkedResponseReader
) -> AsyncIterator[bhttp.ResponseEvent]:
    async for data in chunks:
        for event in reader.feed(data):
            yield event
    for event in reader.finish():
        yield event


class _Body(httpx.SyncByteStream):
    def __init__(self, events: Iterator[bhttp.ResponseEvent], outer: httpx.Response) -> None:
        self._events, self._outer = events, outer

    def __iter__(self) -> Iterator[bytes]:
        for event in self._events:
            if isinstance(event, bhttp.BodyChunk):
                yield event.data

    def close(self) -> None:
        self._outer.close()


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, events: AsyncIterator[bhttp.ResponseEvent], outer: httpx.Response) -> None:
        self._events, self._outer = events, outer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for event in self._events:
            if isinstance(event, bhttp.BodyChunk):
                yield event.data

    async def aclose(self) -> None:
        await self._outer.aclose()


class OhttpTransport(httpx.BaseTransport):
    """Sync OHTTP transport: ``httpx.Client(transport=OhttpTransport(url, verifier))``.

    ``url`` is the service's https base URL (where it is attested). ``relay_url``, when
    given, is where encapsulated requests go instead (a full URL), with ``relay_headers``
    added to the outer request only. ``outer_transport`` overrides how the outer request
    travels (default: RA-TLS directly, plain httpx through a relay), and ``max_connections``
    bounds its connection pool (each streamed response holds one connection while it streams;
    default :data:`~enclave.client._ratls.DEFAULT_MAX_CONNECTIONS`, the service's default
    stream limit).
    """

    def __init__(
        self,
        url: str,
        verifier: Verifier,
        *,
        relay_url: str | None = None,
        relay_headers: Mapping[str, str] | None = None,
        outer_transport: httpx.BaseTransport | None = None,
        chunked: bool = True,
        max_age: float = DEFAULT_MAX_AGE,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self._common = _Common(url, verifier, relay_url, relay_headers, chunked, max_age)
        if outer_transport is None and relay_url is None:
            outer_transport = RaTlsTransport(verifier, max_connections=max_connections)
        self._outer = httpx.Client(
            transport=outer_transport, timeout=_OUTER_TIMEOUT, limits=_limits(max_connections)
        )
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The service's base URL (where it is attested)."""
        return self._common.url

    @property
    def endpoint(self) -> VerifiedEndpoint | None:
        return self._common.endpoint

    @property
    def refreshes(self) -> int:
        return self._common.refreshes

    def refresh(self) -> VerifiedEndpoint:
        """Verify the endpoint again (certificate, fresh report, key configurations)."""
        with self._lock:
            endpoint = run_sync(attest_endpoint(self._common.verifier, self._common.url))
            self._common.endpoint, self._common.stale = endpoint, False
            self._common.refreshes += 1
            return endpoint

    def current(self) -> VerifiedEndpoint:
        endpoint = self._common.endpoint
        if endpoint is None or self._common.needs_refresh():
            return self.refresh()
        return endpoint

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        common = self._common
        content = request.read()
        endpoint = self.current()
        for attempt in (1, 2):
            body, headers, opener = common.seal(request, content, endpoint)
            outer_request = _outer_request(self._outer, common, request, body, headers)
            outer = self._outer.send(outer_request, stream=True)
            if outer.status_code != 200:
                problem = outer.read()
                outer.close()
                if attempt == 1 and is_ohttp_key_problem(outer.status_code, problem):
                    endpoint = self.refresh()
                    continue
                raise GatewayRefused(
                    outer.status_code, gateway_state_code(outer.status_code, problem)
                )
            if common.certificate_changed(outer, endpoint):
                endpoint = self.refresh()
            return self._open(outer, opener, request, endpoint)
        raise GatewayRefused(422)  # the retry with fresh keys was refused too

    def _open(
        self,
        outer: httpx.Response,
        opener: _Opener,
        request: httpx.Request,
        endpoint: VerifiedEndpoint,
    ) -> httpx.Response:
        try:
            if isinstance(opener, ClientRequestContext):
                return self._common.whole_response(opener, outer.read(), request, endpoint)
            reader = ChunkedResponseReader(opener.response_decoder())
            events = _events(outer.iter_raw(), reader)
            for event in events:
                if isinstance(event, bhttp.ResponseHead):
                    return self._common.head_response(event, _Body(events, outer), endpoint)
            raise ResponseTruncated()
        except BaseException:
            outer.close()
            raise
        finally:
            if isinstance(opener, ClientRequestContext):
                outer.close()

    def close(self) -> None:
        self._outer.close()


class AsyncOhttpTransport(httpx.AsyncBaseTransport):
    """Async OHTTP transport: ``httpx.AsyncClient(transport=AsyncOhttpTransport(...))``.
    The same parameters as :class:`OhttpTransport`."""

    def __init__(
        self,
        url: str,
        verifier: Verifier,
        *,
        relay_url: str | None = None,
        relay_headers: Mapping[str, str] | None = None,
        outer_transport: httpx.AsyncBaseTransport | None = None,
        chunked: bool = True,
        max_age: float = DEFAULT_MAX_AGE,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self._common = _Common(url, verifier, relay_url, relay_headers, chunked, max_age)
        if outer_transport is None and relay_url is None:
            outer_transport = AsyncRaTlsTransport(verifier, max_connections=max_connections)
        self._outer = httpx.AsyncClient(
            transport=outer_transport, timeout=_OUTER_TIMEOUT, limits=_limits(max_connections)
        )
        self._lock: asyncio.Lock | None = None

    @property
    def url(self) -> str:
        """The service's base URL (where it is attested)."""
        return self._common.url

    @property
    def verifier(self) -> Verifier:
        """The verifier (and so the policy) every endpoint verification uses."""
        return self._common.verifier

    @property
    def endpoint(self) -> VerifiedEndpoint | None:
        return self._common.endpoint

    @property
    def refreshes(self) -> int:
        return self._common.refreshes

    async def refresh(self) -> VerifiedEndpoint:
        """Verify the endpoint again (certificate, fresh report, key configurations)."""
        endpoint = await attest_endpoint(self._common.verifier, self._common.url)
        self._common.endpoint, self._common.stale = endpoint, False
        self._common.refreshes += 1
        return endpoint

    async def current(self) -> VerifiedEndpoint:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            endpoint = self._common.endpoint
            if endpoint is None or self._common.needs_refresh():
                return await self.refresh()
            return endpoint

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        common = self._common
        content = await request.aread()
        endpoint = await self.current()
        for attempt in (1, 2):
            body, headers, opener = common.seal(request, content, endpoint)
            outer_request = _outer_request(self._outer, common, request, body, headers)
            outer = await self._outer.send(outer_request, stream=True)
            if outer.status_code != 200:
                problem = await outer.aread()
                await outer.aclose()
                if attempt == 1 and is_ohttp_key_problem(outer.status_code, problem):
                    endpoint = await self.refresh()
                    continue
                raise GatewayRefused(
                    outer.status_code, gateway_state_code(outer.status_code, problem)
                )
            if common.certificate_changed(outer, endpoint):
                endpoint = await self.refresh()
            return await self._open(outer, opener, request, endpoint)
        raise GatewayRefused(422)

    async def _open(
        self,
        outer: httpx.Response,
        opener: _Opener,
        request: httpx.Request,
        endpoint: VerifiedEndpoint,
    ) -> httpx.Response:
        try:
            if isinstance(opener, ClientRequestContext):
                body = await outer.aread()
                await outer.aclose()
                return self._common.whole_response(opener, body, request, endpoint)
            reader = ChunkedResponseReader(opener.response_decoder())
            events = _aevents(outer.aiter_raw(), reader)
            async for event in events:
                if isinstance(event, bhttp.ResponseHead):
                    return self._common.head_response(event, _AsyncBody(events, outer), endpoint)
            raise ResponseTruncated()
        except BaseException:
            await outer.aclose()
            raise

    async def aclose(self) -> None:
        await self._outer.aclose()
