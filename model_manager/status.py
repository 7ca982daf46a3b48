"""The model status: what ``GET /v1/models/status`` returns and the status push sends.

Document (JSON object)::

    loaded_model         string | null   the model the state refers to (being loaded, ready,
                                         being unloaded, or failed); null when idle
    loaded_model_digest  string | null   lowercase hex; null until the digest is known
    digest_kind          "dm-verity" | "manifest-sha256" | null
    proxy_status         "idle" | "loading" | "ready" | "unloading" | "error"
    proxy_message        string          short human-readable state description
    proxy_progress       number          0.0..1.0, non-decreasing within one load; 1.0 when ready
    since                string          RFC 3339 UTC time of the last transition
    error                {"code", "message"} | null   why the last load or the engine failed
    restarts             integer         automatic restarts since the last explicit load
    generation           integer         increases with every accepted transition
    hashing              {"done_bytes", "total_bytes"} | null   while a manifest digest is
                                         computed: the bytes hashed so far and in all
    insecure             [string]        the service's insecure_* settings in effect (e.g.
                                         "insecure_dev_engine": the engine is the development
                                         engine, not a language model); empty in production
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from model_manager.digests import DigestKind, ModelDigest

__all__ = ["PROXY_STATUSES", "ModelStatus", "ProxyStatus", "StatusError"]

ProxyStatus = Literal["idle", "loading", "ready", "unloading", "error"]
PROXY_STATUSES: tuple[ProxyStatus, ...] = ("idle", "loading", "ready", "unloading", "error")


@dataclass(frozen=True, slots=True)
class StatusError:
    """A stable error ``code`` and a message safe to show (no paths, no engine output)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """A snapshot of the lifecycle state."""

    proxy_status: ProxyStatus
    loaded_model: str | None
    digest: ModelDigest | None
    proxy_message: str
    proxy_progress: float
    since: float
    generation: int
    restarts: int = 0
    error: StatusError | None = None
    insecure: tuple[str, ...] = ()
    hashing: tuple[int, int] | None = None

    @property
    def digest_kind(self) -> DigestKind | None:
        return None if self.digest is None else self.digest.kind

    @property
    def is_ready(self) -> bool:
        return self.proxy_status == "ready"

    def to_document(self) -> dict[str, object]:
        """The JSON document (keys as in the module docstring)."""
        return {
            "loaded_model": self.loaded_model,
            "loaded_model_digest": None if self.digest is None else self.digest.hex,
            "digest_kind": self.digest_kind,
            "proxy_status": self.proxy_status,
            "proxy_message": self.proxy_message,
            "proxy_progress": round(min(max(self.proxy_progress, 0.0), 1.0), 4),
            "since": datetime.fromtimestamp(self.since, UTC).isoformat().replace("+00:00", "Z"),
            "error": None
            if self.error is None
            else {"code": self.error.code, "message": self.error.message},
            "restarts": self.restarts,
            "generation": self.generation,
            "hashing": None
            if self.hashing is None
            else {"done_bytes": self.hashing[0], "total_bytes": self.hashing[1]},
            "insecure": list(self.insecure),
        }
