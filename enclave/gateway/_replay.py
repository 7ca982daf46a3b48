"""The replay cache of RFC 9458 section 6.5: the ``enc`` of every accepted request, kept until
the request's ``Date`` can no longer be accepted. Bounded: when it is full of entries that are
still live it refuses new ones (fails closed) rather than forgetting one early, which would
reopen a replay."""

from __future__ import annotations

import hashlib
import heapq
import threading
from collections.abc import Callable
from typing import Protocol

__all__ = ["ReplayCache", "ReplayCacheFullError", "ReplayStore", "ReplayStoreUnavailableError"]

#: Kept this much longer than the arithmetic says, so that a request at the exact edge of the
#: window (the Date check is inclusive) is never both acceptable and forgotten.
_EDGE_SECONDS = 1.0


class ReplayCacheFullError(Exception):
    """Every slot holds an ``enc`` still inside the window."""


class ReplayCache:
    """``check_and_add(enc, date_ahead)``: True the first time, False for a replay.

    The gateway accepts a ``Date`` up to ``window`` seconds away from its clock, in either
    direction. A request dated ``date_ahead`` seconds in the future therefore stays acceptable
    for ``date_ahead + window`` seconds, and its ``enc`` is kept that long (plus a second at
    the edge); one dated in the past is kept ``window`` seconds, which covers the rest of its
    acceptable life.

    Keys are 16-byte digests of ``enc`` (an X-Wing ``enc`` is 1120 bytes), so memory is bounded
    by ``capacity`` small entries. ``clock`` is a monotonic seconds source.
    """

    def __init__(self, window_seconds: float, capacity: int, clock: Callable[[], float]) -> None:
        self._window = window_seconds
        self._capacity = capacity
        self._clock = clock
        self._seen: dict[bytes, float] = {}  # digest -> expiry
        self._expiries: list[tuple[float, bytes]] = []  # heap of (expiry, digest)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_add(self, enc: bytes, date_ahead: float = 0.0) -> bool:
        """``date_ahead``: how far the request's Date is ahead of the gateway's clock (seconds;
        negative or zero for a Date in the past); it is capped at the window."""
        key = hashlib.blake2b(enc, digest_size=16).digest()
        now = self._clock()
        ahead = min(max(date_ahead, 0.0), self._window)
        with self._lock:
            self._expire(now)
            if key in self._seen:
                return False
            if len(self._seen) >= self._capacity:
                raise ReplayCacheFullError
            expiry = now + ahead + self._window + _EDGE_SECONDS
            self._seen[key] = expiry
            heapq.heappush(self._expiries, (expiry, key))
            return True

    def _expire(self, now: float) -> None:
        expiries, seen = self._expiries, self._seen
        while expiries and expiries[0][0] <= now:
            _, key = heapq.heappop(expiries)
            del seen[key]


# --- Shared replay stores (replicas): the interface the gateway calls when the replay set is
# kept outside this process. The in-memory cache above stays the default for one replica.


class ReplayStoreUnavailableError(Exception):
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
