"""Connections: how many a client may hold, and how long each phase of one may take.

uvicorn bounds only the idle time of a keep-alive connection; a TLS handshake, the request
head and a connection that never sends anything are unbounded there, and it counts no
connections. So the service accepts connections itself (:class:`Listener`) and hands each one,
once admitted and through its TLS handshake, to uvicorn's httptools protocol with deadlines
added (:class:`GuardedHttpProtocol`):

1. admission, before TLS (:class:`ConnectionTable`): at most ``max_connections`` open
   connections, at most ``max_per_address`` from one peer address (an IPv6 peer counts by its
   /64, which one subscriber usually holds whole) and ``max_per_prefix`` from one IPv6 /56, and
   the last ``reserved_for_light_peers`` places only for peers holding few connections; the
   excess is closed at once;
2. the TLS handshake must end within ``handshake_timeout_seconds`` (this also bounds the TLS
   closing handshake);
3. a request head must be complete within ``header_timeout_seconds``: counted from the end of
   the handshake for the first request, from its first byte for the next ones;
4. between two requests a keep-alive connection may stay idle ``keep_alive_timeout_seconds``;
5. a response sent before its request body ended (a 413 or 503 answered from the headers)
   leaves the connection open to read the rest of that body, which is discarded and must end
   within ``body_timeout_seconds``.

A connection past a deadline is aborted; what was refused or timed out is logged at most once
per period per reason, with a count, so a flood cannot flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import resource
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from enclave._prefix import address_prefix
from enclave.protocol.api import error_body
from enclave.settings import ServiceSettings

__all__ = [
    "ConnectionLimits",
    "ConnectionTable",
    "GuardedHttpProtocol",
    "Listener",
    "bind_sockets",
    "fit_to_descriptor_limit",
    "peer_key",
]

logger = logging.getLogger(__name__)

_LOG_PERIOD_SECONDS = 10.0


def _default(name: str) -> Any:
    """The default of setting ``name``: one source (issue 23 point 7), the settings model."""
    return ServiceSettings.model_fields[name].default


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Named limits of the connection layer (settings: docs/operations.md, "Limits")."""

    max_connections: int = _default("max_connections")
    max_per_address: int = _default("max_connections_per_address")
    #: IPv6 peers are also counted by their /56: one subscriber often holds a /56 or a /48, so
    #: eight /64s of one /61 could hold 8 x 256 = every connection.
    max_per_prefix: int = _default("max_connections_per_prefix")
    #: The last ``reserved_for_light_peers`` of ``max_connections`` admit only peers (an IPv4
    #: address, an IPv6 /56) holding fewer than ``light_peer_connections``.
    reserved_for_light_peers: int = _default("connections_reserved_for_light_peers")
    light_peer_connections: int = _default("light_peer_connections")
    handshake_timeout_seconds: float = _default("tls_handshake_timeout_seconds")
    header_timeout_seconds: float = _default("header_timeout_seconds")
    keep_alive_timeout_seconds: float = _default("keep_alive_timeout_seconds")
    body_timeout_seconds: float = _default("body_timeout_seconds")

    def __post_init__(self) -> None:
        counts = (
            self.max_connections,
            self.max_per_address,
            self.max_per_prefix,
            self.light_peer_connections,
        )
        if min(counts) < 1:
            raise ValueError("connection limits must be positive")
        if not 0 <= self.reserved_for_light_peers < self.max_connections:
            raise ValueError("the connections reserved for light peers must be below the cap")
        timeouts = (
            self.handshake_timeout_seconds,
            self.header_timeout_seconds,
            self.keep_alive_timeout_seconds,
            self.body_timeout_seconds,
        )
        if min(timeouts) <= 0:
            raise ValueError("connection timeouts must be positive")


#: Descriptors kept for everything but client connections: listeners, the engine's
#: connections, model and log files, the metrics listener.
FD_RESERVE = 256


def fit_to_descriptor_limit(
    limits: ConnectionLimits,
    *,
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
) -> ConnectionLimits:
    """``limits`` such that ``max_connections`` plus :data:`FD_RESERVE` descriptors fit the
    process's ``RLIMIT_NOFILE`` (past it, accept fails with EMFILE). The soft limit is first
    raised towards the hard one; if that is still too small, ``max_connections`` (and the
    limits under it) are lowered, with a warning that names both numbers. Raises
    ``ValueError`` when not even one connection would fit."""
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    need = limits.max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= need:
        return limits
    fitted = soft - FD_RESERVE
    if fitted < 1:
        raise ValueError(
            f"the process may open only {soft} files (RLIMIT_NOFILE): too few to serve "
            f"connections ({FD_RESERVE} are kept for the engine, models and listeners); "
            "raise LimitNOFILE or ulimit -n"
        )
    logger.warning(
        "max_connections %d lowered to %d: the process may open only %d files "
        "(RLIMIT_NOFILE, hard limit %s) and keeps %d for the engine, models and listeners; "
        "raise LimitNOFILE or ulimit -n to serve more",
        limits.max_connections,
        fitted,
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
        FD_RESERVE,
    )
    return dataclasses.replace(
        limits,
        max_connections=fitted,
        max_per_address=min(limits.max_per_address, fitted),
        max_per_prefix=min(limits.max_per_prefix, fitted),
        reserved_for_light_peers=min(limits.reserved_for_light_peers, fitted // 8),
    )


def peer_key(host: str) -> str:
    """The address a peer is counted by: IPv4 as is (also when IPv4-mapped), IPv6 by /64."""
    return address_prefix(host, 64)


class _Throttled:
    """Logs one line per reason at most every period, with the count since the last one."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._pending: Counter[str] = Counter()
        self._last: dict[str, float] = {}

    def __call__(self, reason: str) -> None:
        self._pending[reason] += 1
        now = time.monotonic()
        if now - self._last.get(reason, -_LOG_PERIOD_SECONDS) >= _LOG_PERIOD_SECONDS:
            logger.warning(
                "%s: %s (%d since the last report)", self._what, reason, self._pending[reason]
            )
            self._last[reason] = now
            self._pending[reason] = 0


_refused = _Throttled("connection refused")
_timed_out = _Throttled("connection closed")


class ConnectionTable:
    """Open connections, overall, per peer (an IPv4 address or an IPv6 /64) and per IPv6 /56.

    ``admit(host)`` refuses, in order: past ``max_connections``; past ``max_per_address`` from
    the peer; past ``max_per_prefix`` from its /56; and once fewer than
    ``reserved_for_light_peers`` places are left, a peer whose IPv4 address or /56 already
    holds ``light_peer_connections`` or more, so that clients holding few connections still
    get in when heavy ones have taken the rest.
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        self._limits = limits
        self._by_peer: Counter[str] = Counter()
        self._by_prefix: Counter[str] = Counter()
        self._open = 0

    @property
    def open(self) -> int:
        return self._open

    def from_peer(self, host: str) -> int:
        return self._by_peer[peer_key(host)]

    def from_prefix(self, host: str) -> int:
        return self._by_prefix[_prefix_key(host)]

    def admit(self, host: str) -> str | None:
        """Count a new connection from ``host``; ``None``, or the reason it is refused."""
        limits = self._limits
        peer, prefix = peer_key(host), _prefix_key(host)
        if self._open >= limits.max_connections:
            return "max_connections"
        if self._by_peer[peer] >= limits.max_per_address:
            return "max_connections_per_address"
        if prefix != peer and self._by_prefix[prefix] >= limits.max_per_prefix:  # IPv6 only
            return "max_connections_per_prefix"
        if (
            self._open >= limits.max_connections - limits.reserved_for_light_peers
            and self._by_prefix[prefix] >= limits.light_peer_connections
        ):
            return "max_connections_reserved"
        self._open += 1
        self._by_peer[peer] += 1
        self._by_prefix[prefix] += 1
        return None

    def release(self, host: str) -> None:
        peer, prefix = peer_key(host), _prefix_key(host)
        if self._by_peer[peer] <= 0:
            raise RuntimeError("release without a matching admit")
        self._open -= 1
        for counter, key in ((self._by_peer, peer), (self._by_prefix, prefix)):
            counter[key] -= 1
            if not counter[key]:
                del counter[key]


def _prefix_key(host: str) -> str:
    """An IPv6 peer's /56; an IPv4 peer (or anything else) as :func:`peer_key` counts it."""
    return address_prefix(host, 56)


class _RecordingParser:
    """httptools' parser, keeping the text of the error it raised (to pick the error code of
    the 400; the text itself never goes to the client)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.error = ""

    def feed_data(self, data: bytes) -> None:
        try:
            self._inner.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = str(exc)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines on the request head, the idle time between
    requests and the rest of a body answered early; ``on_close`` runs once it has ended."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        *,
        limits: ConnectionLimits,
        on_close: Callable[[], None],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.parser = _RecordingParser(self.parser)  # type: ignore[assignment]
        self._limits = limits
        self._on_close = on_close
        self._deadline: asyncio.TimerHandle | None = None
        self._in_body = False

    # deadlines

    def _arm(self, seconds: float, phase: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, phase: str) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            _timed_out(f"{phase}_timeout")
            self.transport.abort()

    def _between_requests(self) -> bool:
        return not self._in_body and (self.cycle is None or self.cycle.response_complete)

    # the protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._limits.header_timeout_seconds, "header")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        try:
            super().connection_lost(exc)
        finally:
            self._on_close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # The first byte of a request head starts its deadline. uvicorn drops its idle timer
        # on any byte, so bytes that begin no request (stray line ends) start one too.
        if self._deadline is None and self._between_requests() and not self.transport.is_closing():
            self._arm(self._limits.header_timeout_seconds, "header")

    def send_400_response(self, msg: str) -> None:
        """A request the parser refused (llhttp: a bad method, header or framing), answered in
        the API's error shape instead of uvicorn's plain text: ``invalid_content_length`` for a
        ``Content-Length`` that is not one ``1*DIGIT`` value (as every ASGI path answers it,
        :mod:`enclave.protocol.bodies`), ``malformed_request`` otherwise. The parser's own
        text is never sent; the connection is closed (its framing is unknown)."""
        error = self.parser.error if isinstance(self.parser, _RecordingParser) else ""
        code = (
            "invalid_content_length" if "content-length" in error.lower() else "malformed_request"
        )
        body = error_body(code)
        content = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"cache-control: no-store\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # idle now: uvicorn's timer, our length
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = self.loop.call_later(
                self._limits.keep_alive_timeout_seconds, self.timeout_keep_alive_handler
            )
        if self._in_body and not self.transport.is_closing():
            self._arm(self._limits.body_timeout_seconds, "body")


ProtocolFactory = Callable[[Callable[[], None]], asyncio.Protocol]


class Listener:
    """Accepts on one listening socket: admission by the table, then TLS with a deadline,
    then ``protocol_factory(on_close)``'s protocol. Quacks like ``asyncio.Server`` for
    uvicorn's shutdown (``close``, ``wait_closed``, ``sockets``)."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        ssl_context: ssl.SSLContext | None,
        limits: ConnectionLimits,
        table: ConnectionTable,
        protocol_factory: ProtocolFactory,
    ) -> None:
        self._sock = sock
        self._ssl = ssl_context
        self._limits = limits
        self._table = table
        self._factory = protocol_factory
        self._accepting: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,)

    def start(self) -> None:
        self._accepting = asyncio.create_task(self._accept_loop())

    def close(self) -> None:
        """Stop accepting and abandon handshakes in progress; open connections stay."""
        if self._accepting is not None:
            self._accepting.cancel()
        for task in self._handshakes:
            task.cancel()
        self._sock.close()

    async def wait_closed(self) -> None:
        tasks = [*self._handshakes, *([self._accepting] if self._accepting else [])]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(self._sock)
            except OSError as exc:  # out of descriptors, or a peer gone before the accept
                _refused(f"accept_failed:{type(exc).__name__}")
                await asyncio.sleep(0.05)
                continue
            key = str(address[0]) if isinstance(address, tuple) else "local"
            reason = self._table.admit(key)
            if reason is not None:
                _refused(reason)
                conn.close()
                continue
            task = asyncio.create_task(self._connect(conn, key))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _connect(self, conn: socket.socket, key: str) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._table.release(key)

        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        tls: dict[str, Any] = {}
        if self._ssl is not None:
            timeout = self._limits.handshake_timeout_seconds
            tls = {
                "ssl": self._ssl,
                "ssl_handshake_timeout": timeout,
                "ssl_shutdown_timeout": timeout,
            }
        try:
            await loop.connect_accepted_socket(lambda: self._factory(release), conn, **tls)
        except asyncio.CancelledError:
            release()
            conn.close()
            raise
        except (OSError, ssl.SSLError, ValueError) as exc:  # handshake failed or timed out
            release()
            conn.close()
            _timed_out(f"handshake_failed:{type(exc).__name__}")


def bind_sockets(
    host: str, port: int, backlog: int, *, reuse_port: bool = False, listen: bool = True
) -> list[socket.socket]:
    """Listening sockets for ``host`` (every address it resolves to) and ``port``.

    ``reuse_port``: with ``SO_REUSEPORT``, so that the data-plane workers each listen on the
    same port and the kernel spreads connections across them; ``listen=False`` only binds
    (the owner of the workers holds the port that way and takes no connection)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            if listen:
                sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
