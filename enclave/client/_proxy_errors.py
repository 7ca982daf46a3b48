"""What the local proxy answers when it cannot deliver a request: each failure mapped to a code
of the one error vocabulary (``enclave.protocol.api``) and a status a client can act on.

- the endpoint did not verify: 503 ``attestation_unverified`` (nothing was sent);
- the attestation report was rate-limited: 503 ``attestation_unverified`` with ``Retry-After``;
- connection refused, DNS failure, TLS to a plain port, timeouts: 502 ``upstream_unreachable``
  (504 ``upstream_timeout`` for timeouts), the message says which;
- the OHTTP gateway refused the encapsulated request: 413 stays 413 (``body_too_large``: an SDK
  must not retry it), 429/503 become 503 ``gateway_overloaded`` with ``Retry-After``, a relay's
  401/403/407 is 502 ``relay_refused`` (check the relay key), anything else 502
  ``gateway_refused`` naming the status;
- anything else: 502 ``upstream_failed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from enclave.client._neterrors import describe_connection_error
from enclave.client.errors import AttestationFailed, GatewayRefused
from enclave.protocol import api

__all__ = ["Refusal", "refusal_for"]

_RELAY_REFUSALS = frozenset({401, 403, 407})


@dataclass(frozen=True, slots=True)
class Refusal:
    """A vocabulary ``code``, its fixed-text ``message`` and extra response headers."""

    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> int:
        return api.ERRORS[self.code].status


def refusal_for(exc: BaseException, *, through_relay: bool) -> Refusal:
    """The answer for a failed upstream request (never the exception's own text, except the
    verifier's reason code and the connection failure's kind)."""
    if isinstance(exc, AttestationFailed):
        if exc.reason == "endpoint_unreachable":
            return Refusal("upstream_unreachable", f"the endpoint is unreachable: {exc.detail}")
        if exc.reason == "report_rate_limited":
            return Refusal(
                "attestation_unverified",
                "the endpoint rate-limited its attestation report; retry later",
                {"Retry-After": exc.detail or "6"},
            )
        return Refusal("attestation_unverified", f"endpoint not verified: {exc.reason}")
    if isinstance(exc, GatewayRefused):
        return _gateway_refusal(exc.status, through_relay, exc.code)
    if isinstance(exc, httpx.TimeoutException):
        return Refusal("upstream_timeout", "the endpoint did not answer in time")
    if isinstance(exc, httpx.ConnectError | httpx.NetworkError):
        detail = describe_connection_error(exc)
        return Refusal("upstream_unreachable", f"the endpoint is unreachable: {detail}")
    return Refusal("upstream_failed", "the encrypted request failed")


def _gateway_refusal(status: int, through_relay: bool, code: str | None = None) -> Refusal:
    if status == 413:
        return Refusal("body_too_large", "the endpoint refused the request body as too large")
    if status == 503 and code is not None:  # a replica without its key or its replay store
        return Refusal(
            "gateway_overloaded",
            f"the endpoint's OHTTP gateway cannot serve now ({code}); retry later",
            {"Retry-After": "1"},
        )
    if status in (429, 503):
        return Refusal(
            "gateway_overloaded",
            f"the endpoint's OHTTP gateway is busy (HTTP {status}); retry later",
            {"Retry-After": "1"},
        )
    if through_relay and status in _RELAY_REFUSALS:
        return Refusal(
            "relay_refused",
            f"the OHTTP relay refused the request (HTTP {status}); check its API key "
            "(--relay-key-env)",
        )
    return Refusal("gateway_refused", f"the endpoint's OHTTP gateway refused it (HTTP {status})")
