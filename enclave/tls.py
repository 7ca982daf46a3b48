"""RA-TLS serving: the TLS 1.3 context holding the evidence certificate, and its reissue.

The certificate is reissued (same key, fresh quote and claims) when the model changes, when the
OHTTP keys rotate, and at 80% of its lifetime; each new one is loaded into the *same* live
``ssl.SSLContext``, so new handshakes get it and open connections are untouched.

The stdlib ``ssl`` module loads a key only from a path. The key goes through an anonymous
memory file (``memfd_create``, read via ``/proc/self/fd``): it exists in this process's memory
only, on no file system, and the descriptor is closed as soon as the context has read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import ssl
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization

from attestation.evidence import ModelClaim
from attestation.ratls import CLOCK_SKEW, IssuedCertificate, RaTlsIssuer
from model_manager.status import ModelStatus

__all__ = ["REFRESH_FRACTION", "CertificateManager", "load_chain", "model_claim", "server_context"]

logger = logging.getLogger(__name__)

REFRESH_FRACTION = 0.8
_RETRY_SECONDS = 30.0


def model_claim(status: ModelStatus) -> ModelClaim | None:
    """The ``model`` claim of a status: present only while a model is ready."""
    if not status.is_ready or status.loaded_model is None or status.digest is None:
        return None
    return ModelClaim(status.loaded_model, status.digest.kind, status.digest.value)


def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    return context


class CertificateManager:
    """Owns the issuer, the live SSL context and the current certificate."""

    def __init__(
        self,
        issuer: RaTlsIssuer,
        *,
        ohttp_keys: Callable[[], bytes],
        model: Callable[[], ModelClaim | None],
        service_version: str,
        on_reissue: Callable[[str], None] | None = None,
    ) -> None:
        self._issuer = issuer
        self._ohttp_keys = ohttp_keys
        self._model = model
        self._version = service_version
        self._on_reissue = on_reissue
        self._lock = asyncio.Lock()
        self._refresher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.ssl_context = _server_context()
        self.current: IssuedCertificate | None = None
        #: Called with each certificate once it is loaded (the data-plane workers' push).
        self.listeners: list[Callable[[IssuedCertificate], None]] = []

    @property
    def issuer(self) -> RaTlsIssuer:
        return self._issuer

    async def reissue(self, reason: str) -> IssuedCertificate:
        """Issue a certificate over the current claims and load it into the live context."""
        async with self._lock:
            issued = await self._issuer.issue(
                ohttp_keys_body=self._ohttp_keys(),
                model=self._model(),
                service_version=self._version,
            )
            self._load(issued)
            self.current = issued
        logger.info("RA-TLS certificate reissued (%s)", reason)
        if self._on_reissue is not None:
            self._on_reissue(reason)
        self._wake.set()
        return issued

    def key_pem(self) -> bytes:
        """The certificate key, PEM (PKCS#8): for the data-plane workers, over their channel."""
        return self._issuer.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def _load(self, issued: IssuedCertificate) -> None:
        load_chain(self.ssl_context, issued.certificate_pem, self.key_pem())
        for listener in self.listeners:
            listener(issued)

    def start(self) -> None:
        """Start reissuing at ``REFRESH_FRACTION`` of each certificate's lifetime."""
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_loop())

    async def aclose(self) -> None:
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def seconds_until_refresh(self, now: datetime.datetime) -> float:
        current = self.current
        if current is None:
            return 0.0
        # The issuer backdates notBefore by the clock skew: the lifetime runs from issuance
        # (counted from notBefore, a certificate of 60 s would be due before it was issued).
        issued = current.not_before + CLOCK_SKEW
        lifetime = (current.not_after - issued).total_seconds()
        due = issued + datetime.timedelta(seconds=lifetime * REFRESH_FRACTION)
        return max(0.0, (due - now).total_seconds())

    async def _refresh_loop(self) -> None:
        while True:
            self._wake.clear()
            delay = self.seconds_until_refresh(datetime.datetime.now(datetime.UTC))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
                continue  # reissued meanwhile: recompute the deadline
            try:
                await self.reissue("lifetime")
            except Exception as exc:  # keep serving the current one; try again soon
                logger.error("RA-TLS certificate refresh failed: %s", type(exc).__name__)
                await asyncio.sleep(_RETRY_SECONDS)


def load_chain(context: ssl.SSLContext, certificate_pem: bytes, key_pem: bytes) -> None:
    """Load a certificate and its key into a live context through an anonymous memory file."""
    fd = os.memfd_create("ratls", os.MFD_CLOEXEC)
    try:
        os.write(fd, certificate_pem + key_pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def server_context() -> ssl.SSLContext:
    """A TLS 1.3-only server context, as the service's listener uses."""
    return _server_context()
