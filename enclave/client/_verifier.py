"""The verifier the transports share: certificate and report evidence checks, cached.

A certificate's result is cached by the SHA-256 of its quote together with the SHA-256 of the
certificate's public key, until the collateral's ``nextUpdate`` or ``cache_seconds`` after the
check, whichever comes first. A changed certificate (model change, key rotation, refresh)
has a new quote, so it is verified anew; a failure is never cached.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import datetime
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TypeVar

from attestation.collateral import Collateral, CollateralSource
from attestation.errors import AttestationError, CollateralError, VerificationError
from attestation.evidence import Claims, Evidence, decode_evidence
from attestation.gpu import VerifiedGpu, decode_gpu_evidence, verify_gpus
from attestation.policy import Policy, unpinned_message
from attestation.ratls import parse_certificate
from attestation.reasons import GpuReason, Reason
from attestation.verify import EvidenceStep, VerifiedEvidence, verify_evidence
from enclave.client.errors import AttestationFailed, MeasurementsNotPinned

__all__ = ["DEFAULT_CACHE_SECONDS", "VerifiedCertificate", "Verifier", "run_sync"]

logger = logging.getLogger(__name__)

DEFAULT_CACHE_SECONDS = 300.0
MAX_CACHE_ENTRIES = 64

_T = TypeVar("_T")


def run_sync(coroutine: Coroutine[object, object, _T]) -> _T:
    """Run a coroutine to completion from synchronous code, even under a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@dataclass(frozen=True, slots=True)
class VerifiedCertificate:
    """A certificate whose evidence verified, and the facts it proved."""

    certificate_der: bytes
    spki_der: bytes
    spki_sha256: bytes
    quote_sha256: bytes
    evidence: VerifiedEvidence
    valid_until: float
    #: The GPUs this connection's evidence binds, verified in the TLS layer (empty: none).
    gpus: tuple[VerifiedGpu, ...] = ()
    #: The collateral the evidence verified with (its JSON text), kept so that receipts
    #: naming this certificate can be verified later without the service (``enclave proxy
    #: --receipts``); None when the verifier was given no text.
    collateral_json: str | None = None

    @property
    def receipt_key_sha256(self) -> bytes | None:
        """The ``receipt-key`` claim: SHA-256 of the key that signs this service's receipts."""
        claims = self.evidence.claims
        return None if claims is None else claims.receipt_key


class Verifier:
    """Verifies RA-TLS certificates and challenge evidence against one policy.

    ``policy`` is required. The transports (everything that sends a request) refuse a
    verifier whose policy does not pin the measurements (:meth:`require_pinned`), unless the
    policy says ``insecure_any_measurement``; ``verify_endpoint`` alone accepts it and reports
    the measurements as not pinned. ``insecure_root_ca_der`` replaces Intel's root (only for
    the simulator's, in tests and demos) and warns on every verification; ``now`` fixes the
    verification time (Unix seconds) instead of the clock. ``insecure_gpu_root_der`` replaces
    NVIDIA's device identity root likewise (the simulated GPU's).
    """

    def __init__(
        self,
        collateral: CollateralSource,
        *,
        policy: Policy,
        insecure_root_ca_der: bytes | None = None,
        now: int | None = None,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        clock: Callable[[], float] = time.time,
        insecure_gpu_root_der: bytes | None = None,
    ) -> None:
        if cache_seconds < 0:
            raise ValueError("cache_seconds must not be negative")
        if not isinstance(policy, Policy):
            raise TypeError("policy must be an attestation.policy.Policy")
        self._policy = policy
        self._collateral = collateral
        self._root_ca_der = insecure_root_ca_der
        self._gpu_root_der = insecure_gpu_root_der
        self._now = now
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: OrderedDict[tuple[bytes, bytes], VerifiedCertificate] = OrderedDict()
        self._lock = threading.Lock()
        self.verifications = 0  # evidence checks actually run (cache misses), for tests

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    def require_pinned(self) -> None:
        """Raise :class:`MeasurementsNotPinned` unless the policy pins the measurements or
        says ``insecure_any_measurement``: called before anything is sent."""
        if not (self._policy.pins_measurements or self._policy.insecure_any_measurement):
            raise MeasurementsNotPinned(unpinned_message(self._policy))

    def _cached(self, key: tuple[bytes, bytes]) -> VerifiedCertificate | None:
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            if self._clock() >= entry.valid_until:
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return entry

    def remember_gpus(self, verified: VerifiedCertificate) -> None:
        """Keep ``verified`` with its verified GPUs in the cache, in place of the entry without
        them (same certificate, same lifetime)."""
        key = (verified.quote_sha256, verified.spki_sha256)
        if verified.gpus and self._cached(key) is not None:
            self._remember(key, verified)

    def _remember(self, key: tuple[bytes, bytes], entry: VerifiedCertificate) -> None:
        with self._lock:
            self._cache[key] = entry
            while len(self._cache) > MAX_CACHE_ENTRIES:
                self._cache.popitem(last=False)

    async def collateral_for(self, quote: bytes) -> Collateral:
        try:
            return await self._collateral.get_collateral(quote)
        except CollateralError as exc:
            raise AttestationFailed(Reason.COLLATERAL_UNAVAILABLE, str(exc)) from exc

    async def verify_certificate(self, certificate_der: bytes) -> VerifiedCertificate:
        """Verify the evidence a peer's certificate carries (cached); raise AttestationFailed."""
        try:
            parsed = parse_certificate(certificate_der)
        except AttestationError as exc:
            raise AttestationFailed(Reason.EVIDENCE_MALFORMED, str(exc)) from exc
        key = (hashlib.sha256(parsed.evidence.quote).digest(), _sha256(parsed.spki_der))
        cached = self._cached(key)
        if cached is not None:
            return cached
        collateral = await self.collateral_for(parsed.evidence.quote)
        verified = self._check(parsed.evidence, collateral, parsed.spki_der, None)
        entry = VerifiedCertificate(
            certificate_der=parsed.certificate_der,
            spki_der=parsed.spki_der,
            spki_sha256=key[1],
            quote_sha256=key[0],
            evidence=verified,
            valid_until=min(self._clock() + self._cache_seconds, float(collateral.next_update)),
            collateral_json=collateral.json_text,
        )
        self._remember(key, entry)
        logger.info("RA-TLS certificate verified (TCB %s)", verified.status)
        return entry

    def verify_certificate_sync(self, certificate_der: bytes) -> VerifiedCertificate:
        return run_sync(self.verify_certificate(certificate_der))

    async def verify_evidence(
        self,
        evidence: bytes,
        *,
        spki_der: bytes,
        nonce: bytes | None,
        record: list[EvidenceStep] | None = None,
    ) -> VerifiedEvidence:
        """Verify challenge evidence (never cached: it is fresh by construction); each step
        that passes is appended to ``record`` (``attestation.verify.verify_evidence``)."""
        try:
            parsed = decode_evidence(evidence)
        except AttestationError as exc:
            raise AttestationFailed(Reason.EVIDENCE_MALFORMED, str(exc)) from exc
        collateral = await self.collateral_for(parsed.quote)
        return self._check(parsed, collateral, spki_der, nonce, record)

    def verify_gpus(self, claims: Claims | None, served: object) -> tuple[VerifiedGpu, ...]:
        """The GPU evidence served with verified ``claims`` (a list of base64 items): bound to
        the claims' ``gpus`` digests and nonce, and allowed by the policy's ``[gpu]`` table."""
        if claims is None:
            raise AttestationFailed(GpuReason.EVIDENCE_UNBOUND, "no claims to bind GPU evidence to")
        if served is None:
            served = []
        try:
            if not isinstance(served, list) or not all(isinstance(i, str) for i in served):
                raise ValueError("gpu_evidence must be a list of base64 strings")
            items = tuple(
                decode_gpu_evidence(base64.b64decode(item, validate=True)) for item in served
            )
        except (ValueError, binascii.Error, AttestationError) as exc:
            raise AttestationFailed(GpuReason.EVIDENCE_MALFORMED, str(exc)) from exc
        at = None if self._now is None else datetime.datetime.fromtimestamp(self._now, datetime.UTC)
        try:
            return verify_gpus(
                claims,
                items,
                policy=self._policy.gpu,
                now=at,
                insecure_root_der=self._gpu_root_der,
            )
        except VerificationError as exc:
            logger.warning("GPU evidence refused: %s", exc.reason)
            raise AttestationFailed(exc.reason, exc.detail) from exc

    def _check(
        self,
        evidence: Evidence,
        collateral: Collateral,
        spki_der: bytes,
        nonce: bytes | None,
        record: list[EvidenceStep] | None = None,
    ) -> VerifiedEvidence:
        self.verifications += 1
        try:
            return verify_evidence(
                evidence,
                collateral=collateral,
                peer_spki_der=spki_der,
                policy=self._policy,
                nonce=nonce,
                now=self._now,
                insecure_root_ca_der=self._root_ca_der,
                record=record,
            )
        except VerificationError as exc:
            logger.warning("evidence refused: %s", exc.reason)
            raise AttestationFailed(exc.reason, exc.detail) from exc


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
