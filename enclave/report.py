"""``GET /v1/attestation/report?nonce=<hex>``: challenge-mode evidence.

A fresh quote over claims that include the caller's nonce (32 to 64 bytes, hex), bound to the
same TLS key as the certificate, plus the current certificate, the OHTTP key configurations
(exact bytes), the event log when the platform has one, the model status, and with GPUs each
GPU's evidence collected for the GPU nonce of these claims. Rate-limited (:class:`RateLimiter`):
direct clients and requests through the OHTTP gateway have separate budgets, so a flood through
the gateway cannot deny a directly connected client its report. The JSON schema and the limits
are in docs/attestation-report.md.

``GET /v1/attestation/gpus``: the GPU evidence of the current RA-TLS certificate (whose
claims carry only the digests), for clients that verified that certificate in the handshake.
Its answer is about a thousand times its request, so it is rate-limited like the report, with
a budget of its own (``gpus_limiter``: ``gpus_rate_*`` settings). It changes only with the
certificate, so it carries ``ETag: "<certificate_sha256>"`` and ``Cache-Control: no-cache``;
``If-None-Match`` with that tag gets ``304 Not Modified`` with no body and is not charged.
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
from enclave._ratelimit import TokenBuckets, request_origin
from enclave.protocol.api import GPUS_PATH, REPORT_PATH
from enclave.routes._errors import error_response
from enclave.tls import CertificateManager, model_claim
from model_manager.status import ModelStatus

__all__ = ["REPORT_VERSION", "RateLimiter", "ReportSource", "gpu_evidence_json", "report_routes"]

logger = logging.getLogger(__name__)

REPORT_VERSION = 1
#: Origins whose last request the rare clients' reserve remembers (about 100 bytes each).
_MAX_ORIGINS = 65_536
MIN_NONCE_BYTES, MAX_NONCE_BYTES = 32, 64
_HEX_NONCE = re.compile(f"(?:[0-9a-fA-F]{{2}}){{{MIN_NONCE_BYTES},{MAX_NONCE_BYTES}}}")


class RateLimiter:
    """The report's rate limits: token buckets refilled over a minute.

    A direct request (its own connection) is charged to a bucket of its client address (an
    IPv6 client by its /64; ``per_client``) and to one shared by every direct request
    (``global_``). A request that came through the OHTTP gateway has no client address; it is
    charged to a bucket of its outer peer's pseudonym (``relayed_per_peer``: the relay, or a
    client talking to the gateway itself) and to one shared by every relayed request
    (``relayed_global``). The shared buckets are separate, so anonymous traffic through the
    gateway can never spend the budget of clients that connect directly, which is how a client
    verifies an endpoint.

    A flood from many direct addresses can spend the direct shared bucket, so ``rare`` (a
    minute's worth, 0 for none) is a reserve kept for *rare* direct clients: those that asked
    nothing in the last ``rare_after_seconds``. A rare client's request that finds the shared
    bucket empty is charged to the reserve instead. Every request, served or refused, makes its
    origin not rare for ``rare_after_seconds``, so addresses that keep asking never reach the
    reserve, however many they are.
    """

    def __init__(
        self,
        per_client: int,
        global_: int,
        relayed_per_peer: int = 30,
        relayed_global: int = 60,
        *,
        rare: int = 0,
        rare_after_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(per_client, global_, relayed_per_peer, relayed_global) < 1:
            raise ValueError("rate limits must be at least one request per minute")
        if rare < 0 or rare_after_seconds <= 0:
            raise ValueError("the rare clients' reserve must be >= 0, its period > 0")
        self._rates = {
            "direct": (per_client, global_),
            "relayed": (relayed_per_peer, relayed_global),
        }
        self._rare = rare
        self._rare_after = rare_after_seconds
        self._clock = clock
        self._buckets = TokenBuckets(clock)
        self._last_asked: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, origin: str) -> float:
        """0.0 when a report may be made for ``origin`` (:func:`request_origin`) now, and the
        request is charged; else the seconds to wait."""
        kind = "relayed" if origin.startswith("relayed:") else "direct"
        per_origin, shared = self._rates[kind]
        rare = self._asked(origin) and kind == "direct" and self._rare > 0
        wait = self._buckets.take((origin, per_origin), (f"{kind}:*", shared))
        if (
            wait
            and rare
            and not self._buckets.take((origin, per_origin), ("direct:rare", self._rare))
        ):
            return 0.0
        return wait

    def _asked(self, origin: str) -> bool:
        """Record that ``origin`` asked now; whether it had asked nothing for the period. At
        most ``_MAX_ORIGINS`` are remembered, the least recent forgotten first."""
        now = self._clock()
        with self._lock:
            last = self._last_asked.pop(origin, None)
            self._last_asked[origin] = now
            while len(self._last_asked) > _MAX_ORIGINS:
                self._last_asked.popitem(last=False)
        return last is None or now - last >= self._rare_after


@dataclass(frozen=True, slots=True)
class ReportSource:
    """What a report is made of, read at request time."""

    certificates: CertificateManager
    provider: QuoteProvider
    ohttp_keys: Callable[[], bytes]
    status: Callable[[], ModelStatus]
    service_version: str
    observe_quote_seconds: Callable[[float], None] = lambda seconds: None
    #: Called once per request with its outcome (``enclave.metrics.REPORT_OUTCOMES``).
    on_outcome: Callable[[str], None] = lambda outcome: None


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


def _matches(if_none_match: str | None, digest: str) -> bool:
    """``If-None-Match`` names the current tag (RFC 9110 13.1.2, weak comparison), or ``*``."""
    if if_none_match is None:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip().removeprefix("W/")
        if tag == "*" or tag == f'"{digest}"':
            return True
    return False


def gpu_evidence_json(items: tuple[GpuEvidence, ...]) -> list[str]:
    """Each GPU's evidence (deterministic CBOR, docs/attestation.md 7.4), base64."""
    return [base64.b64encode(item.encode()).decode("ascii") for item in items]


def report_routes(
    source: ReportSource, limiter: RateLimiter, gpus_limiter: RateLimiter | None = None
) -> list[Route]:
    """The report (charged to ``limiter``) and the GPU evidence route (to ``gpus_limiter``,
    by default a budget of its own at the report's default rates)."""
    gpu_budget = gpus_limiter if gpus_limiter is not None else RateLimiter(10, 60)

    async def report(request: Request) -> Response:
        nonce = _nonce(request)
        if nonce is None:
            source.on_outcome("invalid_nonce")
            return error_response("invalid_nonce", param="nonce")
        origin = request_origin(request.scope)
        wait = limiter.wait(origin)
        if wait:
            source.on_outcome("rate_limited")
            return error_response("rate_limited", headers={"Retry-After": str(int(wait))})
        certificate = source.certificates.current
        if certificate is None:
            source.on_outcome("not_attested")
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
            source.on_outcome("gpu_evidence_unavailable")
            return error_response("gpu_evidence_unavailable")
        claims_buffer = encode_claims(claims)
        started = time.perf_counter()
        try:
            result = await source.provider.get_quote(report_data_for(claims_buffer))
        except AttestationError as exc:
            logger.error("attestation report: quote failed: %s", type(exc).__name__)
            source.on_outcome("quote_unavailable")
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
        source.on_outcome("served")
        return JSONResponse(document, headers={"Cache-Control": "no-store"})

    async def gpus(request: Request) -> Response:
        certificate = source.certificates.current
        if certificate is None:
            return error_response("not_attested", headers={"Retry-After": "1"})
        digest = hashlib.sha256(certificate.certificate_der).hexdigest()
        headers = {"Cache-Control": "no-cache", "ETag": f'"{digest}"'}
        if _matches(request.headers.get("if-none-match"), digest):
            return Response(status_code=304, headers=headers)
        wait = gpu_budget.wait(request_origin(request.scope))
        if wait:
            return error_response("rate_limited", headers={"Retry-After": str(int(wait))})
        document = {
            "version": REPORT_VERSION,
            "certificate_sha256": digest,
            "gpu_evidence": gpu_evidence_json(certificate.gpu_evidence),
        }
        return JSONResponse(document, headers=headers)

    return [
        Route(REPORT_PATH, report, methods=["GET"]),
        Route(GPUS_PATH, gpus, methods=["GET"]),
    ]
