"""What a client meets before the app: connection admission and timeouts, request bodies,
and the server's shutdown.

- :class:`GuardedServer` (a ``uvicorn.Server``): accepts connections itself, caps them overall
  and per peer address, bounds the TLS handshake, the request head and keep-alive idle time,
  and on SIGTERM drains for the grace, then ends open streams with their error event.
- :class:`BodyGuard` (ASGI): a body is read whole, within a deadline and a shared memory
  budget, before any route runs; refusals are 408, 413 and 503.
"""

from enclave.net._bodies import BodyBudget, BodyGuard, BodyLimits
from enclave.net._connections import ConnectionLimits, ConnectionTable, peer_key
from enclave.net._server import STREAM_END_SECONDS, GuardedServer

__all__ = [
    "STREAM_END_SECONDS",
    "BodyBudget",
    "BodyGuard",
    "BodyLimits",
    "ConnectionLimits",
    "ConnectionTable",
    "GuardedServer",
    "peer_key",
]
