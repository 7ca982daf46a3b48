"""The replay cache of RFC 9458 section 6.5: the ``enc`` of every request accepted within the
window. Bounded: when it is full of entries that are still live it refuses new ones (fails
closed) rather than forgetting one early, which would reopen a replay."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["ReplayCache", "ReplayCacheFullError"]


class ReplayCacheFullError(Exception):
    """Every slot holds an ``enc`` still inside the window."""


class ReplayCache:
    """``check_and_add(enc)``: True the first time within the window, False for a replay.

    Keys are 16-byte digests of ``enc`` (an X-Wing ``enc`` is 1120 bytes), so memory is bounded
    by ``capacity`` small entries. ``clock`` is a monotonic seconds source.
    """

    def __init__(self, window_seconds: float, capacity: int, clock: Callable[[], float]) -> None:
        self._window = window_seconds
        self._capacity = capacity
        self._clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # digest -> expiry, oldest first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_add(self, enc: bytes) -> bool:
        key = hashlib.blake2b(enc, digest_size=16).digest()
        now = self._clock()
        with self._lock:
            self._expire(now)
            if key in self._seen:
                return False
            if len(self._seen) >= self._capacity:
                raise ReplayCacheFullError
            self._seen[key] = now + self._window
            return True

    def _expire(self, now: float) -> None:
        seen = self._seen
        while seen:
            oldest, expiry = next(iter(seen.items()))
            if expiry > now:
                return
            del seen[oldest]
