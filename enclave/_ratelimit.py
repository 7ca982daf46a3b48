"""Token buckets keyed by name, and who a request came from (the key they are kept under).

A bucket holds at most ``rate`` tokens and gains ``rate`` per minute, smoothly: a client may
spend a minute's worth at once, then one every ``60 / rate`` seconds. :meth:`TokenBuckets.take`
takes one token from several buckets at once (all or none), so a per-client bucket and a shared
one are charged together, and says how long to wait when it cannot.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from enclave._prefix import address_prefix
from enclave.gateway import SCOPE_EXTENSION, through_gateway

__all__ = ["Bucket", "TokenBuckets", "request_origin"]

#: A named bucket and its rate (tokens per minute).
Bucket = tuple[str, int]
DEFAULT_MAX_KEYS = 10_000


class TokenBuckets:
    """Buckets by name. At most ``max_keys`` are kept, least recently used dropped first (a
    dropped bucket starts full again, which errs towards the client, never against it)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, stamp
        self._lock = threading.Lock()

    def take(self, *buckets: Bucket) -> float:
        """Take one token from each bucket, all or none. Returns 0.0 when taken, else the
        seconds until every one of them holds a token again (at least 1)."""
        for _, rate in buckets:
            if rate < 1:
                raise ValueError("a rate must be at least one per minute")
        now = self._clock()
        with self._lock:
            levels = [self._level(name, rate, now) for name, rate in buckets]
            wait = max(
                ((1.0 - level) * 60.0 / rate for level, (_, rate) in _pairs(levels, buckets)),
                default=0.0,
            )
            if wait <= 0.0:
                levels = [level - 1.0 for level in levels]
            for level, (name, _) in _pairs(levels, buckets):
                self._store(name, level, now)
        return 0.0 if wait <= 0.0 else float(max(1, math.ceil(wait)))

    def wait(self, *buckets: Bucket) -> float:
        """What :meth:`take` would answer, without taking anything."""
        now = self._clock()
        with self._lock:
            wait = max(
                ((1.0 - self._level(name, rate, now)) * 60.0 / rate for name, rate in buckets),
                default=0.0,
            )
        return 0.0 if wait <= 0.0 else float(max(1, math.ceil(wait)))

    def give_back(self, *buckets: Bucket) -> None:
        """Return the token :meth:`take` took (the attempt turned out not to count)."""
        now = self._clock()
        with self._lock:
            for name, rate in buckets:
                self._store(name, min(float(rate), self._level(name, rate, now) + 1.0), now)

    def _level(self, name: str, rate: int, now: float) -> float:
        tokens, stamp = self._buckets.get(name, (float(rate), now))
        return min(float(rate), tokens + (now - stamp) * rate / 60.0)

    def _store(self, name: str, tokens: float, now: float) -> None:
        self._buckets[name] = (tokens, now)
        self._buckets.move_to_end(name)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)


def _pairs(levels: list[float], buckets: tuple[Bucket, ...]) -> zip[tuple[float, Bucket]]:
    return zip(levels, buckets, strict=True)


def request_origin(scope: Mapping[str, Any]) -> str:
    """The key a request's rate limits are kept under: ``direct:<peer>`` for a request on a
    connection of its own (an IPv4 address, or an IPv6 peer's /64: one subscriber usually holds
    the whole /64, :func:`enclave._prefix.address_prefix`), ``relayed:<pseudonym>`` for one
    decapsulated by the OHTTP gateway. The pseudonym is a keyed hash of the outer peer's
    address (the relay, or a client that talks to the gateway directly; an IPv6 one by its
    /64), made by the gateway: one bucket per relay without the address reaching the inner
    request."""
    if through_gateway(scope):
        origin = (scope.get("extensions") or {}).get(SCOPE_EXTENSION, {}).get("origin")
        return f"relayed:{origin or 'unknown'}"
    client = scope.get("client")
    return f"direct:{address_prefix(str(client[0])) if client else 'unknown'}"
