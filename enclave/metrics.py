"""The service's Prometheus metrics, in a registry of its own (never the global one).

Every label value comes from a fixed set: route templates registered when the app is built
(anything else is ``unmatched``), HTTP status codes (100..599, else ``other``), and the
reason, outcome and state tuples below. A value outside its set raises ``ValueError``: no
label ever carries user data. ``docs/service.md`` lists the metrics.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from enclave._operations_metrics import LOAD_OUTCOMES, REPORT_OUTCOMES, OperationsMetrics
from enclave._stream_metrics import RouteStreamStats, StreamStats
from enclave.gateway import FAILURE_REASONS
from model_manager.push import PUSH_OUTCOMES
from model_manager.status import PROXY_STATUSES

__all__ = [
    "CONTENT_TYPE",
    "LOAD_OUTCOMES",
    "OHTTP_FAILURE_REASONS",
    "OHTTP_INNER_ROUTE",
    "REISSUE_REASONS",
    "REPORT_OUTCOMES",
    "STREAM_OUTCOMES",
    "UNMATCHED_ROUTE",
    "ServiceMetrics",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
UNMATCHED_ROUTE = "unmatched"
#: The route label of every request the OHTTP gateway dispatched: which API route an encrypted
#: request reached is not for a metrics scraper to learn.
OHTTP_INNER_ROUTE = "ohttp_inner"
#: Why the OHTTP gateway refused or failed a request: the gateway's own fixed codes.
OHTTP_FAILURE_REASONS: tuple[str, ...] = FAILURE_REASONS
#: Why the RA-TLS certificate was issued again.
REISSUE_REASONS: tuple[str, ...] = ("start", "model_change", "key_rotation", "lifetime")
#: How a relayed response ended.
STREAM_OUTCOMES: tuple[str, ...] = (
    "completed",
    "client_disconnected",
    "engine_failed",
    "engine_stalled",
    "model_unloaded",
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_QUOTE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _require(value: str, allowed: Iterable[str], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} is not one of the fixed label values")
    return value


class ServiceMetrics:
    """The service's counters, gauges and histograms; :meth:`render` gives the exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._routes: set[str] = {UNMATCHED_ROUTE}
        reg = self.registry
        self._requests = Counter(
            "enclave_http_requests",
            "HTTP requests answered, by route template and status code.",
            ("route", "status"),
            registry=reg,
        )
        self._latency = Histogram(
            "enclave_http_request_duration_seconds",
            "Time from request start to the end of the response, by route and status.",
            ("route", "status"),
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self._ttft = Histogram(
            "enclave_time_to_first_token_seconds",
            "Time from request start to the first streamed event relayed, by route.",
            ("route",),
            buckets=_TTFT_BUCKETS,
            registry=reg,
        )
        self.streams = StreamStats()
        reg.register(self.streams)
        self._active = Gauge(
            "enclave_active_streams", "Inference requests in flight.", registry=reg
        )
        self._outcomes = Counter(
            "enclave_stream_outcomes",
            "How relayed inference responses ended, by route and outcome.",
            ("route", "outcome"),
            registry=reg,
        )
        self._model_state = Gauge(
            "enclave_model_state",
            "1 for the model lifecycle's current state, 0 for the others.",
            ("state",),
            registry=reg,
        )
        self._quote = Histogram(
            "enclave_quote_generation_seconds",
            "Time to obtain a TDX quote.",
            buckets=_QUOTE_BUCKETS,
            registry=reg,
        )
        self._ohttp = Counter(
            "enclave_ohttp_failures",
            "OHTTP requests refused or failed, by reason.",
            ("reason",),
            registry=reg,
        )
        self._replays = Counter(
            "enclave_ohttp_replays_refused", "OHTTP requests refused as replays.", registry=reg
        )
        self._reissues = Counter(
            "enclave_certificate_reissues",
            "RA-TLS certificates issued, by reason.",
            ("reason",),
            registry=reg,
        )
        self._pushes = Counter(
            "enclave_status_pushes",
            "Status pushes to the management plane, by outcome (sent, failed, dropped).",
            ("outcome",),
            registry=reg,
        )
        #: Restarts, loads, certificate and key ages, reports, build_info.
        self.operations = OperationsMetrics(reg)
        for outcome in PUSH_OUTCOMES:
            self._pushes.labels(outcome=outcome)
        for reason in OHTTP_FAILURE_REASONS:
            self._ohttp.labels(reason=reason)
        for reason in REISSUE_REASONS:
            self._reissues.labels(reason=reason)
        self.set_model_state("idle")

    # -- routes --------------------------------------------------------------------------------

    def register_routes(self, templates: Iterable[str]) -> None:
        """Declare the route templates that may appear as ``route`` label values."""
        self._routes.update(templates)

    def route_label(self, template: str | None) -> str:
        """``template`` if registered (or the OHTTP inner label), else ``unmatched``."""
        if template == OHTTP_INNER_ROUTE:
            return template
        return template if template is not None and template in self._routes else UNMATCHED_ROUTE

    def observe_request(self, route: str | None, status: int, seconds: float) -> None:
        label = self.route_label(route)
        code = str(status) if 100 <= status <= 599 else "other"
        self._requests.labels(route=label, status=code).inc()
        self._latency.labels(route=label, status=code).observe(seconds)

    # -- streams -------------------------------------------------------------------------------

    def observe_time_to_first_token(self, route: str, seconds: float) -> None:
        self._ttft.labels(route=self.route_label(route)).observe(seconds)

    def stream_stats(self, route: str) -> RouteStreamStats:
        """The streaming numbers of ``route``: the relay takes it once per stream."""
        return self.streams.route(self.route_label(route))

    def ohttp_chunk_sealed(self) -> None:
        self.streams.sealed_chunks += 1

    def stream_started(self) -> None:
        self._active.inc()

    def stream_ended(self) -> None:
        self._active.dec()

    def stream_outcome(self, route: str, outcome: str) -> None:
        label = _require(outcome, STREAM_OUTCOMES, "stream outcome")
        self._outcomes.labels(route=self.route_label(route), outcome=label).inc()

    # -- model, attestation, gateway -----------------------------------------------------------

    def set_model_state(self, state: str) -> None:
        _require(state, PROXY_STATUSES, "model state")
        for candidate in PROXY_STATUSES:
            self._model_state.labels(state=candidate).set(1 if candidate == state else 0)

    def observe_quote_generation(self, seconds: float) -> None:
        self._quote.observe(seconds)

    def ohttp_failure(self, reason: str) -> None:
        self._ohttp.labels(reason=_require(reason, OHTTP_FAILURE_REASONS, "OHTTP reason")).inc()

    def replay_refused(self) -> None:
        self._replays.inc()

    def certificate_reissued(self, reason: str) -> None:
        self._reissues.labels(reason=_require(reason, REISSUE_REASONS, "reissue reason")).inc()

    def status_push(self, outcome: str) -> None:
        self._pushes.labels(outcome=_require(outcome, PUSH_OUTCOMES, "push outcome")).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
