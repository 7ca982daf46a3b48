"""The replay cache of RFC 9458 section 6.5, and the gateway's one reading of time for it.

The host controls the CVM's wall clock. If the ``Date`` check read the wall clock while the cache
expired entries on another clock, a host that steps the wall clock back could make a captured
request acceptable again after its entry was gone. So both read one *reference time* that never
goes back: the largest of every wall-clock reading and of the previous reference advanced by the
monotonic clock. A ``Date`` is accepted when it is within ``window`` of the reference, and its
``enc`` is kept until the reference passes ``Date + window`` (plus an edge second): because the
reference only grows, a forgotten request can never be accepted again, whatever either clock
does. Bounded: when the cache is full of entries that are still live it refuses new ones (fails
closed) rather than forgetting one early, which would reopen a replay."""

from __future__ import annotations

import enum
import hashlib
import heapq
import threading
from collections.abc import Callable
from typing import Protocol

from enclave.errors import EnclaveError

__all__ = [
    "Admission",
    "ReplayCache",
    "ReplayCacheFullError",
    "ReplayStore",
    "ReplayStoreUnavailableError",
]

#: Kept this much longer than the arithmetic says, so that a request at the exact edge of the
#: window (the Date check is inclusive) is never both acceptable and forgotten.
_EDGE_SECONDS = 1.0


class ReplayCacheFullError(EnclaveError):
    """Every slot holds an ``enc`` still inside the window."""


class Admission(enum.Enum):
    FRESH = "fresh"  # first time, Date in the window: run it (now remembered)
    REPLAY = "replay"  # seen before
    STALE = "stale"  # no Date, or one outside the window: refuse it (not remembered)


class ReplayCache:
    """``admit(enc, date)``: FRESH once, REPLAY for an ``enc`` seen inside its acceptable life,
    STALE for a missing ``Date`` or one more than ``window`` seconds from the reference time.

    Keys are 16-byte digests of ``enc`` (an X-Wing ``enc`` is 1120 bytes), so memory is bounded
    by ``capacity`` small entries. ``wall`` is the wall clock (seconds since the epoch, as the
    ``Date`` header), ``monotonic`` a monotonic seconds source.

    A request refused as STALE does not enter the cache: one dated too far in the past can never
    be accepted later (the reference only grows), and keeping far-future ones would let anyone
    holding the public key configuration fill the cache for good.
    """

    def __init__(
        self,
        window_seconds: float,
        capacity: int,
        wall: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self._window = window_seconds
        self._capacity = capacity
        self._wall = wall
        self._monotonic = monotonic
        self._reference: float | None = None
        self._last_monotonic = 0.0
        self._seen: dict[bytes, float] = {}  # digest -> expiry, in reference time
        self._expiries: list[tuple[float, bytes]] = []  # heap of (expiry, digest)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def reference(self) -> float:
        """The reference time now (seconds since the epoch): never less than any wall-clock
        reading so far, and advancing at least as fast as the monotonic clock."""
        with self._lock:
            return self._advance()

    def hold_at_least(self, reference: float) -> None:
        """Never read a reference time below ``reference`` from now on (a data-plane worker
        starts from its owner's, so a restarted worker does not go back with the wall clock)."""
        with self._lock:
            if reference > self._advance():
                self._reference = reference

    def admit(self, enc: bytes, date: float | None) -> Admission:
        """Decide once, under one reading of the reference time, whether a request runs."""
        key = hashlib.blake2b(enc, digest_size=16).digest()
        with self._lock:
            now = self._advance()
            self._expire(now)
            if key in self._seen:
                return Admission.REPLAY
            if date is None or abs(now - date) > self._window:
                return Admission.STALE
            if len(self._seen) >= self._capacity:
                raise ReplayCacheFullError
            expiry = date + self._window + _EDGE_SECONDS
            self._seen[key] = expiry
            heapq.heappush(self._expiries, (expiry, key))
            return Admission.FRESH

    def _advance(self) -> float:
        wall, monotonic = self._wall(), self._monotonic()
        if self._reference is None:
            reference = wall
        else:
            elapsed = max(monotonic - self._last_monotonic, 0.0)
            reference = max(wall, self._reference + elapsed)
        self._reference, self._last_monotonic = reference, monotonic
        return reference

    def _expire(self, now: float) -> None:
        expiries, seen = self._expiries, self._seen
        while expiries and expiries[0][0] <= now:
            _, key = heapq.heappop(expiries)
            del seen[key]


# --- Shared replay stores (replicas): the interface the gateway calls when the replay set is
# kept outside this process. The in-memory cache above stays the default for one replica.


class ReplayStoreUnavailableError(EnclaveError):
    """The shared replay store could not answer: the request must be refused (fail closed),
    never accepted unchecked."""


class ReplayStore(Protocol):
    """A replay set shared by replicas.

    ``seen_or_add(key, ttl_seconds)``: atomically remember ``key`` for ``ttl_seconds`` and
    return True if it was not held (the first time), False if it was (a replay). ``key`` is
    already a keyed hash of ``enc`` (never ``enc`` itself). Raises
    :class:`ReplayStoreUnavailableError` when the store cannot answer."""

    async def seen_or_add(self, key: bytes, ttl_seconds: float) -> bool: ...

    async def aclose(self) -> None: ...
