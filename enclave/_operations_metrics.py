"""The operator's metrics: engine restarts, model loads, certificate and OHTTP key ages,
attestation reports, and ``enclave_build_info``.

Registered into the service's registry by :class:`enclave.metrics.ServiceMetrics` (as its
``operations`` attribute). Every label value is from a fixed set or a version string the
service itself reports; gauges over the certificate and keys are read at scrape time from the
callables the server gives.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["LOAD_OUTCOMES", "REPORT_OUTCOMES", "OperationsMetrics"]

#: How an attestation report request ended.
REPORT_OUTCOMES: tuple[str, ...] = (
    "served",
    "rate_limited",
    "invalid_nonce",
    "not_attested",
    "quote_unavailable",
    "gpu_evidence_unavailable",
)
#: How a model load ended.
LOAD_OUTCOMES: tuple[str, ...] = ("ready", "error")
_LOAD_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)


class OperationsMetrics:
    """Counters and gauges an operator alerts on; see docs/service.md#metrics."""

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._certificate: Callable[[], tuple[float, float] | None] = lambda: None
        self._keys_since: Callable[[], float | None] = lambda: None
        self._restarts = Counter(
            "enclave_engine_restarts",
            "Automatic engine restarts after a crash or a failed restart.",
            registry=registry,
        )
        self._loads = Counter(
            "enclave_model_loads",
            "Model loads that ended, by outcome (ready, error).",
            ("outcome",),
            registry=registry,
        )
        self._load_seconds = Histogram(
            "enclave_model_load_seconds",
            "Time from entering loading (digest, engine start) to ready.",
            buckets=_LOAD_BUCKETS,
            registry=registry,
        )
        self._reports = Counter(
            "enclave_attestation_reports",
            "Attestation report requests, by outcome (rate_limited: refused by the rate limit).",
            ("outcome",),
            registry=registry,
        )
        self._build = Gauge(
            "enclave_build_info",
            "1, labelled with the service version, the engine's (vLLM) version and the TEE kind.",
            ("version", "vllm_version", "tee"),
            registry=registry,
        )
        self._build_labels: tuple[str, str, str] | None = None
        Gauge(
            "enclave_certificate_age_seconds",
            "Seconds since the current RA-TLS certificate's notBefore (NaN before the first).",
            registry=registry,
        ).set_function(self._certificate_age)
        Gauge(
            "enclave_certificate_expiry_timestamp_seconds",
            "Unix time of the current RA-TLS certificate's notAfter (NaN before the first).",
            registry=registry,
        ).set_function(self._certificate_expiry)
        Gauge(
            "enclave_ohttp_key_age_seconds",
            "Seconds since the active OHTTP key configurations were generated.",
            registry=registry,
        ).set_function(self._key_age)
        for outcome in REPORT_OUTCOMES:
            self._reports.labels(outcome=outcome)
        for outcome in LOAD_OUTCOMES:
            self._loads.labels(outcome=outcome)

    # -- what the server tells --------------------------------------------------------------

    def track_certificate(self, validity: Callable[[], tuple[float, float] | None]) -> None:
        """``validity`` returns the current certificate's (notBefore, notAfter) as Unix times."""
        self._certificate = validity

    def track_ohttp_keys(self, since: Callable[[], float | None]) -> None:
        """``since`` returns when the active OHTTP keys were generated (Unix time)."""
        self._keys_since = since

    def set_build_info(
        self, *, version: str | None = None, vllm_version: str | None = None, tee: str | None = None
    ) -> None:
        """Set (or change some of) the labels of ``enclave_build_info``; unset ones stay, or
        are ``unknown``."""
        old = self._build_labels or ("unknown", "unknown", "unknown")
        labels = (version or old[0], vllm_version or old[1], tee or old[2])
        if labels == self._build_labels:
            return
        if self._build_labels is not None:
            self._build.remove(*self._build_labels)
        self._build.labels(*labels).set(1)
        self._build_labels = labels

    @property
    def build_labels(self) -> tuple[str, str, str] | None:
        return self._build_labels

    def engine_restarted(self, count: int = 1) -> None:
        self._restarts.inc(count)

    def model_load_ended(self, outcome: str, seconds: float | None) -> None:
        if outcome not in LOAD_OUTCOMES:
            raise ValueError("load outcome is not one of the fixed label values")
        self._loads.labels(outcome=outcome).inc()
        if outcome == "ready" and seconds is not None:
            self._load_seconds.observe(max(seconds, 0.0))

    def report(self, outcome: str) -> None:
        if outcome not in REPORT_OUTCOMES:
            raise ValueError("report outcome is not one of the fixed label values")
        self._reports.labels(outcome=outcome).inc()

    # -- scrape-time gauges -----------------------------------------------------------------

    def _certificate_age(self) -> float:
        validity = self._certificate()
        return math.nan if validity is None else self._clock() - validity[0]

    def _certificate_expiry(self) -> float:
        validity = self._certificate()
        return math.nan if validity is None else validity[1]

    def _key_age(self) -> float:
        since = self._keys_since()
        return math.nan if since is None else self._clock() - since
