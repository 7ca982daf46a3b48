"""The gateway's limits, its failure reason codes, and the seam its metrics go through."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Protocol

from enclave.protocol.api import GPUS_PATH, REPORT_PATH
from enclave.protocol.chunked import DEFAULT_MAX_CHUNK_SIZE, MIN_CHUNK_SIZE

__all__ = [
    "DEFAULT_ALLOWED_ROUTES",
    "FAILURE_REASONS",
    "FailureReason",
    "GatewayLimits",
    "GatewayObserver",
    "NullObserver",
]

#: Inner routes a decapsulated request may reach: the whole API, not the gateway itself.
DEFAULT_ALLOWED_ROUTES: Final = frozenset(
    {
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/embeddings"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/status"),
        ("POST", "/v1/models/load"),
        ("POST", "/v1/models/unload"),
        ("GET", REPORT_PATH),
        ("GET", GPUS_PATH),
        ("GET", "/health"),
        ("GET", "/ready"),
    }
)


class FailureReason(StrEnum):
    """Every reason a gateway request can fail for; the only values a metric label takes
    (``GatewayObserver.failure`` takes only these, so a new one is checked by mypy)."""

    #: Not POST.
    METHOD = "method"
    #: Neither request media type.
    CONTENT_TYPE = "content_type"
    #: Content-Length not 1*DIGIT, repeated otherwise, or not the body's.
    CONTENT_LENGTH = "content_length"
    #: Over the body limit.
    BODY_TOO_LARGE = "body_too_large"
    #: Too many requests in flight.
    OVERLOADED = "overloaded"
    #: Key ID not held.
    UNKNOWN_KEY = "unknown_key"
    #: KEM/KDF/AEAD not offered by that key.
    UNSUPPORTED_SUITE = "unsupported_suite"
    #: Anything that does not decrypt or frame: one generic 400.
    DECRYPT = "decrypt"
    #: Decrypted, but not valid Binary HTTP.
    BAD_INNER_REQUEST = "bad_inner_request"
    #: ``enc`` seen before within the window.
    REPLAY = "replay"
    #: Inner Date missing or outside the window.
    DATE = "date"
    #: Inner request expects 100-continue (RFC 9458 section 5.1).
    EXPECT_CONTINUE = "expect_continue"
    #: Inner route not on the allow-list.
    ROUTE_NOT_ALLOWED = "route_not_allowed"
    #: The inner app failed.
    INNER_ERROR = "inner_error"
    #: The outer client went away mid-response.
    CLIENT_DISCONNECTED = "client_disconnected"
    #: This replica holds no OHTTP key (the key broker refused it).
    OHTTP_KEY_UNAVAILABLE = "ohttp_key_unavailable"
    #: The shared replay store (Redis) did not answer.
    REPLAY_STORE_UNAVAILABLE = "replay_store_unavailable"


#: The values, in order (the ``reason`` label of ``enclave_ohttp_failures_total``).
FAILURE_REASONS: Final[tuple[str, ...]] = tuple(reason.value for reason in FailureReason)


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    """Named limits, with DESIGN.md's defaults."""

    body_limit_bytes: int = 32 * 1024 * 1024
    max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE
    replay_window_seconds: float = 60.0
    # A digest per accepted request for the window: about 150 bytes each, so the default
    # bounds the cache near 150 MB and admits ~16,000 requests/s at a 60 s window.
    replay_cache_size: int = 1_000_000
    max_concurrent_requests: int = 256
    inner_queue_messages: int = 4  # backpressure: inner response messages buffered at most
    allowed_routes: frozenset[tuple[str, str]] = field(default=DEFAULT_ALLOWED_ROUTES)
    #: Size bucket (enclave.protocol.padding) of whole encapsulated responses and of the
    #: gateway's own in-stream error event; 0 pads nothing.
    padding: int = 0

    def __post_init__(self) -> None:
        if self.body_limit_bytes < 1024:
            raise ValueError("body_limit_bytes must be at least 1024")
        if self.max_chunk_size < MIN_CHUNK_SIZE:
            raise ValueError(f"max_chunk_size must be at least {MIN_CHUNK_SIZE} (the draft's)")
        if self.replay_window_seconds <= 0 or self.replay_cache_size < 1:
            raise ValueError("the replay window and cache size must be positive")
        if self.max_concurrent_requests < 1 or self.inner_queue_messages < 1:
            raise ValueError("concurrency and queue limits must be positive")


class GatewayObserver(Protocol):
    """Where the gateway reports what happened; labels are fixed codes only."""

    def failure(self, reason: FailureReason) -> None: ...
    def chunk_sealed(self) -> None: ...
    def request_served(self, chunked: bool) -> None: ...


class NullObserver:
    """Reports nowhere."""

    def failure(self, reason: FailureReason) -> None:
        return None

    def chunk_sealed(self) -> None:
        return None

    def request_served(self, chunked: bool) -> None:
        return None
