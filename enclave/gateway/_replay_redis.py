"""The replay set shared by replicas, in Redis: ``SET <prefix><keyed hash> 1 NX EX <ttl>``.

One command per accepted OHTTP request, atomic on the server: the first replica to set the key
wins, every later one (a replay sent to any replica) sees it held. The key is a keyed hash of
``enc`` (HMAC-SHA256 under a key derived from the OHTTP private key, computed by the gateway),
so Redis holds nothing a client sent and nothing a party without the OHTTP key could compute
or correlate. The password comes from the settings (``ENCLAVE_REPLAY_STORE_PASSWORD``), never
from the URL, and is never logged. Any failure to answer (unreachable, timeout, an error
reply) is :class:`ReplayStoreUnavailableError`: the gateway then refuses the request (503).
"""

from __future__ import annotations

import logging
import math
import time
import urllib.parse
from typing import Any

from enclave.gateway._replay import ReplayStoreUnavailableError

__all__ = ["DEFAULT_REDIS_PREFIX", "RedisReplayStore", "check_redis_url", "redacted_redis_url"]

logger = logging.getLogger(__name__)

DEFAULT_REDIS_PREFIX = "enclave:replay:"
#: Connections to Redis at most; a request waits (up to the timeout) for a free one rather than
#: failing at once (redis-py's plain pool raises when it is exhausted).
DEFAULT_MAX_CONNECTIONS = 64
#: An outage is logged once per this many seconds, not once per refused request.
_LOG_EVERY_SECONDS = 10.0
_SCHEMES = ("redis", "rediss", "unix")


def check_redis_url(url: str) -> str:
    """``redis://host[:port][/db]``, ``rediss://...`` (TLS) or ``unix:///path``; a
    ``ValueError`` (naming no value) for anything else, or for a password in the URL."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise ValueError("replay_store is not a URL") from exc
    if parts.scheme not in _SCHEMES:
        raise ValueError('replay_store must be "memory" or a redis://, rediss:// or unix:// URL')
    if parts.password is not None or parts.username:
        raise ValueError(
            "replay_store must not carry credentials: put the password in "
            "ENCLAVE_REPLAY_STORE_PASSWORD (replay_store_password)"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// replay_store needs a socket path")
    elif not parts.hostname:
        raise ValueError("a redis:// replay_store needs a host")
    return url


def redacted_redis_url(url: str) -> str:
    """The URL as logs may show it: scheme, host, port and path only."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


class RedisReplayStore:
    """:class:`~enclave.gateway._replay.ReplayStore` over one Redis server (redis-py asyncio)."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        prefix: str = DEFAULT_REDIS_PREFIX,
        timeout_seconds: float = 1.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        client: Any = None,
    ) -> None:
        check_redis_url(url)
        self._prefix = prefix.encode()
        self._where = redacted_redis_url(url)
        self._logged_at = -math.inf
        if client is None:
            import redis.asyncio  # imported here: only a replica with a shared store needs it

            pool = redis.asyncio.BlockingConnectionPool.from_url(
                url,
                password=password,
                max_connections=max_connections,
                timeout=timeout_seconds,  # the wait for a free connection
                socket_timeout=timeout_seconds,
                socket_connect_timeout=timeout_seconds,
                retry_on_timeout=False,
                health_check_interval=30,
            )
            client = redis.asyncio.Redis.from_pool(pool)  # owns the pool: aclose closes it
        self._client = client

    @property
    def where(self) -> str:
        """The store's address without credentials (for logs)."""
        return self._where

    async def seen_or_add(self, key: bytes, ttl_seconds: float) -> bool:
        seconds = max(1, math.ceil(ttl_seconds))
        try:
            answer = await self._client.set(
                self._prefix + key.hex().encode(), b"1", nx=True, ex=seconds
            )
        except Exception as exc:  # redis errors, OSError, timeouts: all mean "no answer"
            now = time.monotonic()
            if now - self._logged_at >= _LOG_EVERY_SECONDS:
                self._logged_at = now
                logger.warning(
                    "replay store %s did not answer (%s): OHTTP requests are refused until it does",
                    self._where,
                    type(exc).__name__,
                )
            raise ReplayStoreUnavailableError from exc
        return answer is True

    async def ping(self) -> None:
        """Check the store answers (at start: a replica configured with an unreachable store
        says so in its log at once, and keeps refusing OHTTP until it answers)."""
        try:
            await self._client.ping()
        except Exception as exc:
            raise ReplayStoreUnavailableError from exc

    async def aclose(self) -> None:
        try:
            await self._client.aclose()
        except Exception as exc:  # closing a dead connection may fail; nothing to do then
            logger.debug("closing the replay store: %s", type(exc).__name__)
