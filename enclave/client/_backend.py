"""httpcore network backends that verify the RA-TLS certificate inside the TLS layer.

httpcore opens a connection with ``connect_tcp`` and then calls ``start_tls`` on the stream;
only after that returns does it write the request. Our ``start_tls`` completes the handshake,
takes the peer's certificate, and verifies its evidence before returning, so a connection
whose evidence fails is closed with ``AttestationFailed`` before any request byte exists on
the wire. As a second fence, a stream refuses ``write`` until it holds a verified result.

When the certificate's claims bind GPU evidence (or the policy requires GPUs), ``start_tls``
also fetches ``GET /v1/attestation/gpus`` on that connection and verifies it against the
certificate's claims before returning (``enclave.client._gpus``); the connection is then
reused for the caller's requests.
"""

from __future__ import annotations

import dataclasses
import ssl
import typing

import httpcore

from attestation.reasons import Reason
from enclave.client._gpus import GpusResponse, gpus_request, needs_gpu_check
from enclave.client._verifier import VerifiedCertificate, Verifier
from enclave.client.errors import AttestationFailed, ClientReason

__all__ = ["VERIFIED_INFO", "AsyncRaTlsBackend", "RaTlsBackend", "client_ssl_context"]

#: ``get_extra_info`` key (and response extension) holding the connection's VerifiedCertificate.
VERIFIED_INFO = "enclave_verified"

_SocketOption = typing.Union[  # noqa: UP007 (the shape httpcore uses)
    tuple[int, int, int], tuple[int, int, bytes | bytearray], tuple[int, int, None, int]
]


def client_ssl_context() -> ssl.SSLContext:
    """TLS 1.3 only, no CA check: the trust comes from the evidence, checked after the
    handshake against the key the handshake proved."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _peer_certificate(stream: httpcore.NetworkStream | httpcore.AsyncNetworkStream) -> bytes:
    ssl_object = stream.get_extra_info("ssl_object")
    der = None if ssl_object is None else ssl_object.getpeercert(True)
    if not isinstance(der, bytes) or not der:
        raise AttestationFailed(Reason.EVIDENCE_MALFORMED, "the peer presented no certificate")
    return der


def _gpu_check_needed(verifier: Verifier, verified: VerifiedCertificate) -> bool:
    claims = verified.evidence.claims
    claimed = None if claims is None else claims.gpus
    return needs_gpu_check(claimed, verifier.policy.gpu.required_count) and not verified.gpus


def _with_gpus(
    verifier: Verifier, verified: VerifiedCertificate, answer: GpusResponse
) -> VerifiedCertificate:
    gpus = verifier.verify_gpus(verified.evidence.claims, answer.items(verified.certificate_der))
    checked = dataclasses.replace(verified, gpus=gpus)
    # The GPU evidence belongs to the certificate: the next connection to it (the pool opens
    # many) needs no fetch of its own, so the service's rate limit on it is never reached.
    verifier.remember_gpus(checked)
    return checked


class _Stream(httpcore.NetworkStream):
    def __init__(
        self,
        inner: httpcore.NetworkStream,
        verifier: Verifier,
        verified: VerifiedCertificate | None = None,
    ) -> None:
        self._inner, self._verifier, self._verified = inner, verifier, verified

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self._verified is None:
            raise AttestationFailed(
                ClientReason.NOT_VERIFIED, "refusing to write before verification"
            )
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(ssl_context, server_hostname, timeout)
        try:
            verified = self._verifier.verify_certificate_sync(_peer_certificate(tls))
            if _gpu_check_needed(self._verifier, verified):
                tls.write(gpus_request(server_hostname), timeout)
                answer = GpusResponse()
                while not answer.done:
                    answer.feed(tls.read(65536, timeout))
                verified = _with_gpus(self._verifier, verified, answer)
        except BaseException:
            tls.close()
            raise
        return _Stream(tls, self._verifier, verified)

    def get_extra_info(self, info: str) -> typing.Any:
        if info == VERIFIED_INFO:
            return self._verified
        return self._inner.get_extra_info(info)


class _AsyncStream(httpcore.AsyncNetworkStream):
    def __init__(
        self,
        inner: httpcore.AsyncNetworkStream,
        verifier: Verifier,
        verified: VerifiedCertificate | None = None,
    ) -> None:
        self._inner, self._verifier, self._verified = inner, verifier, verified

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self._verified is None:
            raise AttestationFailed(
                ClientReason.NOT_VERIFIED, "refusing to write before verification"
            )
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        tls = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        try:
            verified = await self._verifier.verify_certificate(_peer_certificate(tls))
            if _gpu_check_needed(self._verifier, verified):
                await tls.write(gpus_request(server_hostname), timeout)
                answer = GpusResponse()
                while not answer.done:
                    answer.feed(await tls.read(65536, timeout))
                verified = _with_gpus(self._verifier, verified, answer)
        except BaseException:
            await tls.aclose()
            raise
        return _AsyncStream(tls, self._verifier, verified)

    def get_extra_info(self, info: str) -> typing.Any:
        if info == VERIFIED_INFO:
            return self._verified
        return self._inner.get_extra_info(info)


class RaTlsBackend(httpcore.NetworkBackend):
    """The sync backend: every TLS connection verified before it is handed back."""

    def __init__(self, verifier: Verifier, inner: httpcore.NetworkBackend | None = None) -> None:
        self._verifier = verifier
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[_SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _Stream(inner, self._verifier)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[_SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(
            self._inner.connect_unix_socket(path, timeout, socket_options), self._verifier
        )

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class AsyncRaTlsBackend(httpcore.AsyncNetworkBackend):
    """The async backend: every TLS connection verified before it is handed back."""

    def __init__(
        self, verifier: Verifier, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self._verifier = verifier
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        inner = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _AsyncStream(inner, self._verifier)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        inner = await self._inner.connect_unix_socket(path, timeout, socket_options)
        return _AsyncStream(inner, self._verifier)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
