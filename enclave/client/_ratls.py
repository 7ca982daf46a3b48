"""httpx transports that speak RA-TLS: every connection's certificate evidence verified (and
its key thereby pinned) before the request is written. See docs/client.md for why the check
sits in the TLS layer (a network backend) rather than in a pre-flight handshake."""

from __future__ import annotations

import contextlib
import typing
from collections.abc import AsyncIterator, Iterator

import httpcore
import httpx

from enclave.client._backend import (
    VERIFIED_INFO,
    AsyncRaTlsBackend,
    RaTlsBackend,
    client_ssl_context,
)
from enclave.client._verifier import VerifiedCertificate, Verifier
from enclave.client.errors import AttestationFailed, ClientReason
from enclave.protocol.padding import DEFAULT_BUCKET, json_padding

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_KEEPALIVE_CONNECTIONS",
    "AsyncRaTlsTransport",
    "RaTlsTransport",
    "verified_certificate",
]

#: The connection pool follows the load: a streamed response holds its connection while it
#: streams, so the pool admits as many connections as the service's default stream limit
#: (``max_concurrent_streams``, 256; more would only be refused there with 429), and keeps up
#: to 100 of them open when idle. A pool of 10 made 200 OHTTP streams arrive in waves of 10
#: (issue 20 point 7; bench/bench_client_pool.py).
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_MAX_KEEPALIVE_CONNECTIONS = 100

_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """Translate httpcore's exceptions into httpx's at this one boundary."""
    try:
        yield
    except AttestationFailed:
        raise
    except Exception as exc:
        for source, target in _EXCEPTIONS:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


def verified_certificate(response: httpx.Response) -> VerifiedCertificate | None:
    """The verified certificate of the connection that carried ``response`` (RA-TLS only)."""
    found = response.extensions.get(VERIFIED_INFO)
    return found if isinstance(found, VerifiedCertificate) else None


def _core_request(request: httpx.Request) -> httpcore.Request:
    if request.url.scheme != "https":
        raise AttestationFailed(ClientReason.NOT_TLS, "RA-TLS needs an https:// URL")
    headers, content = _padded(request)
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(
            scheme=request.url.raw_scheme,
            host=request.url.raw_host,
            port=request.url.port,
            target=request.url.raw_path,
        ),
        headers=headers,
        content=content,
        extensions=request.extensions,
    )


def _padded(request: httpx.Request) -> tuple[list[tuple[bytes, bytes]], typing.Any]:
    """A JSON body whose bytes are known, with spaces to its size bucket (JSON allows them
    after the value; the service reads the same document), so the request's size says nothing
    more of the prompt's length than its bucket; any other body as it is."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" or "content-length" not in request.headers:
        return request.headers.raw, request.stream
    try:
        body = request.content
    except httpx.RequestNotRead:
        return request.headers.raw, request.stream
    padded = body + json_padding(len(body), DEFAULT_BUCKET)
    headers = [(n, v) for n, v in request.headers.raw if n.lower() != b"content-length"]
    headers.append((b"content-length", str(len(padded)).encode("ascii")))
    return headers, padded


def _extensions(response: httpcore.Response) -> dict[str, typing.Any]:
    extensions = dict(response.extensions)
    stream = extensions.get("network_stream")
    if stream is not None:
        extensions[VERIFIED_INFO] = stream.get_extra_info(VERIFIED_INFO)
    return extensions


class _SyncBody(httpx.SyncByteStream):
    def __init__(self, inner: typing.Iterable[bytes]) -> None:
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        with _mapped():
            yield from self._inner

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, inner: typing.AsyncIterable[bytes]) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped():
            async for part in self._inner:
                yield part

    async def aclose(self) -> None:
        aclose = getattr(self._inner, "aclose", None)
        if aclose is not None:
            await aclose()


class RaTlsTransport(httpx.BaseTransport):
    """Sync RA-TLS transport: ``httpx.Client(transport=RaTlsTransport(verifier))``.

    Raises :class:`MeasurementsNotPinned` when the verifier's policy does not pin the
    measurements (see ``Verifier.require_pinned``): nothing is ever sent under such a policy.
    """

    def __init__(
        self,
        verifier: Verifier,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_keepalive_connections: int = DEFAULT_MAX_KEEPALIVE_CONNECTIONS,
        keepalive_expiry: float = 5.0,
    ) -> None:
        verifier.require_pinned()
        self.verifier = verifier
        self._pool = httpcore.ConnectionPool(
            ssl_context=client_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=min(max_keepalive_connections, max_connections),
            keepalive_expiry=keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=RaTlsBackend(verifier),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core = _core_request(request)
        with _mapped():
            response = self._pool.handle_request(core)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_SyncBody(typing.cast(typing.Iterable[bytes], response.stream)),
            extensions=_extensions(response),
        )

    def close(self) -> None:
        self._pool.close()


class AsyncRaTlsTransport(httpx.AsyncBaseTransport):
    """Async RA-TLS transport: ``httpx.AsyncClient(transport=AsyncRaTlsTransport(verifier))``.

    Raises :class:`MeasurementsNotPinned` as :class:`RaTlsTransport` does.
    """

    def __init__(
        self,
        verifier: Verifier,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_keepalive_connections: int = DEFAULT_MAX_KEEPALIVE_CONNECTIONS,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self._require_policy(verifier)
        self.verifier = verifier
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=client_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=min(max_keepalive_connections, max_connections),
            keepalive_expiry=keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=AsyncRaTlsBackend(verifier),
        )

    def _require_policy(self, verifier: Verifier) -> None:
        verifier.require_pinned()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core = _core_request(request)
        with _mapped():
            response = await self._pool.handle_async_request(core)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_AsyncBody(typing.cast(typing.AsyncIterable[bytes], response.stream)),
            extensions=_extensions(response),
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
