"""``GET /v1/attestation/report?nonce=<hex>``: challenge-mode evidence.

A fresh quote over claims that include the caller's nonce (32 to 64 bytes, hex), bound to the
same TLS key as the certificate, plus the current certificate, the OHTTP key configurations
(exact bytes), the event log when the platform has one, the model status, and with GPUs each
GPU's evidence collected for the GPU nonce of these claims. Rate-limited:
one bucket per client address and one global bucket (requests through the OHTTP gateway have no
client address and share the global one). The JSON schema is in docs/attestation-report.md.

``GET /v1/attestation/gpus``: the GPU evidence of the current RA-TLS certificate (whose
claims carry only the digests), for clients that verified that certificate in the handshake.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from attestation.errors import AttestationError
from attestation.evidence import Evidence, encode_claims, report_data_for
from attestation.gpu.evidence import GpuEvidence
from attestation.providers import QuoteProvider
from enclave.protocol.api import GPUS_PATH, REPORT_PATH
from enclave.routes._errors import error_response
from enclave.tls import CertificateManager, model_claim
from model_manager.status import ModelStatus

__all__ = ["REPORT_VERSION", "RateLimiter", "ReportSource", "gpu_evidence_json", "report_routes"]

logger = logging.getLogger(__name__)

REPORT_VERSION = 1
MIN_NONCE_BYTES, MAX_NONCE_BYTES = 32, 64
_MAX_CLIENT_BUCKETS = 10_000
_HEX_NONCE = re.compile(f"(?:[0-9a-fA-F]{{2}}){{{MIN_NONCE_BYTES},{MAX_NONCE_BYTES}}}")


class RateLimiter:
    """Token buckets: ``per_client`` and ``global_`` requests per minute, refilled smoothly."""

    def __init__(
        self, per_client: int, global_: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_client < 1 or global_ < 1:
            raise ValueError("rate limits must be at least one request per minute")
        self._per_client, self._global = per_client, global_
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _take(self, key: str, capacity: int, now: float) -> bool:
        tokens, stamp = self._buckets.get(key, (float(capacity), now))
        tokens = min(float(capacity), tokens + (now - stamp) * capacity / 60.0)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > _MAX_CLIENT_BUCKETS:
            self._buckets.popitem(last=False)
        return allowed

    def allow(self, client: str | None) -> bool:
        now = self._clock()
        with self._lock:
            if client is not None and not self._take("client:" + client, self._per_client, now):
                return False
            return self._take("global", self._global, now)


@dataclass(frozen=True, slots=True)
class ReportSource:
    """What a report is made of, read at request time."""

    certificates: CertificateManager
    provider: QuoteProvider
    ohttp_keys: Callable[[], bytes]
    status: Callable[[], ModelStatus]
    service_version: str
    observe_quote_seconds: Callable[[float], None] = lambda seconds: None


def _nonce(request: Request) -> bytes | None:
    """Strict hex (an optional ``0x``, then an even number of hex digits, nothing else):
    ``bytes.fromhex`` alone skips whitespace, which let ``"ab" + " " * 62`` pass the length
    check as a 1-byte nonce."""
    values = request.query_params.getlist("nonce")
    if len(values) != 1:
        return None
    text = values[0].removeprefix("0x")
    if _HEX_NONCE.fullmatch(text) is None:
        return None
    return bytes.fromhex(text)


def gpu_evidence_json(items: tuple[GpuEvidence, ...]) -> list[str]:
    """Each GPU's evidence (deterministic CBOR, docs/attestation.md 7.4), base64."""
    return [base64.b64encode(item.encode()).decode("ascii") for item in items]


def report_routes(source: ReportSource, limiter: RateLimiter) -> list[Route]:
    async def report(request: Request) -> Response:
        nonce = _nonce(request)
        if nonce is None:
            return error_response("invalid_nonce", param="nonce")
        client = request.client.host if request.client is not None else None
        if not limiter.allow(client):
            return error_response("rate_limited", headers={"Retry-After": "6"})
        certificate = source.certificates.current
        if certificate is None:
            return error_response("not_attested", headers={"Retry-After": "1"})
        status = source.status()
        ohttp_keys = source.ohttp_keys()
        claims = source.certificates.issuer.claims(
            nonce=nonce,
            ohttp_keys_body=ohttp_keys,
            model=model_claim(status),
            service_version=source.service_version,
        )
        try:
            claims, gpus = await source.certificates.issuer.bind_gpus(claims)
        except AttestationError as exc:
            logger.error("attestation report: GPU evidence failed: %s", type(exc).__name__)
            return error_response("gpu_evidence_unavailable")
        claims_buffer = encode_claims(claims)
        started = time.perf_counter()
        try:
            result = await source.provider.get_quote(report_data_for(claims_buffer))
        except AttestationError as exc:
            logger.error("attestation report: quote failed: %s", type(exc).__name__)
            return error_response("quote_unavailable")
        source.observe_quote_seconds(time.perf_counter() - started)
        evidence = Evidence(quote=result.quote, claims_buffer=claims_buffer)
        log = result.event_log
        document = {
            "version": REPORT_VERSION,
            "nonce": nonce.hex(),
            "evidence": evidence.encode().hex(),
            "quote_provider": result.provider,
            "certificate_pem": certificate.certificate_pem.decode("ascii"),
            "ohttp_keys": base64.b64encode(ohttp_keys).decode("ascii"),
            "event_log": None
            if log is None
            else {"format": log.format, "raw": base64.b64encode(log.raw).decode("ascii")},
            "model": status.to_document(),
            "claims": claims.to_json_dict(),
            "gpu_evidence": gpu_evidence_json(gpus),
        }
        return JSONResponse(document, headers={"Cache-Control": "no-store"})

    async def gpus(request: Request) -> Response:
        certificate = source.certificates.current
        if certificate is None:
            return error_response("not_attested", headers={"Retry-After": "1"})
        document = {
            "version": REPORT_VERSION,
            "certificate_sha256": hashlib.sha256(certificate.certificate_der).hexdigest(),
            "gpu_evidence": gpu_evidence_json(certificate.gpu_evidence),
        }
        return JSONResponse(document, headers={"Cache-Control": "no-store"})

    return [
        Route(REPORT_PATH, report, methods=["GET"]),
        Route(GPUS_PATH, gpus, methods=["GET"]),
    ]
