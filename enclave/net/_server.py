"""uvicorn's server with the service's own front door and shutdown.

:class:`GuardedServer` is a ``uvicorn.Server`` whose listening sockets are served by
:class:`~enclave.net._connections.Listener` (admission, TLS and request-head deadlines) and
whose shutdown is the service's contract: on SIGTERM or SIGINT

1. stop accepting, close idle connections, let the others finish their current request;
2. wait up to ``grace_seconds`` for open requests to end (0: not at all; fractions count);
3. if some are still open: ``on_grace_over()`` ends every open stream with its error event
   (on OHTTP, then the final chunk), and they get up to ``STREAM_END_SECONDS`` to send it;
4. whatever is still running is cancelled; each is logged as one line with the exception's
   type name (no traceback), and one that had sent nothing yet gets a 503;
5. the app's lifespan shutdown stops the engine; the process exits 0 (uvicorn would re-raise
   the captured signal and die by it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import STARTUP_FAILURE

from enclave.net._connections import (
    ConnectionLimits,
    ConnectionTable,
    GuardedHttpProtocol,
    Listener,
    bind_sockets,
)
from enclave.routes._errors import error_response

__all__ = ["STREAM_END_SECONDS", "GuardedServer"]

logger = logging.getLogger(__name__)

#: After the grace, how long open streams get to send their error event before being cut.
STREAM_END_SECONDS = 2.0
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_POLL_SECONDS = 0.05


class _CutQuietly:
    """The outermost ASGI layer: a request cancelled by the shutdown is logged as one line
    (uvicorn would log a traceback); one that had not started its response gets a 503."""

    def __init__(self, app: ASGIApp, server: GuardedServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError as exc:
            if not self.server.cutting:
                raise
            logger.warning("request cut at shutdown: %s", type(exc).__name__)
            if not started:
                response = error_response("service_stopping", headers={"Connection": "close"})
                await response(scope, receive, send)


class GuardedServer(uvicorn.Server):
    """``uvicorn.Server`` with :class:`Listener` sockets and the shutdown described above."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        limits: ConnectionLimits,
        grace_seconds: float,
        on_grace_over: Callable[[], None] = lambda: None,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(config)
        self.reuse_port = reuse_port
        if grace_seconds < 0:
            raise ValueError("the grace may not be negative")
        self.limits = limits
        self.grace_seconds = grace_seconds
        self.on_grace_over = on_grace_over
        self.table = ConnectionTable(limits)
        self.listeners: list[Listener] = []
        self.cutting = False

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises a captured signal after its shutdown, so the process would die by
        # it; the service's contract is: drain, stop the engine, exit 0.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in _HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    @property
    def bound_port(self) -> int | None:
        for listener in self.listeners:
            for sock in listener.sockets:
                port: int = sock.getsockname()[1]
                return port
        return None

    async def startup(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        config = self.config
        config.loaded_app = _CutQuietly(config.loaded_app, self)
        loop = asyncio.get_running_loop()

        def protocol(on_close: Callable[[], None]) -> asyncio.Protocol:
            return GuardedHttpProtocol(
                config,
                self.server_state,
                self.lifespan.state,
                limits=self.limits,
                on_close=on_close,
                _loop=loop,
            )

        try:
            bound = bind_sockets(
                config.host, config.port, config.backlog, reuse_port=self.reuse_port
            )
        except OSError as exc:
            logger.error("cannot listen on %s port %d: %s", config.host, config.port, exc)
            await self.lifespan.shutdown()
            sys.exit(STARTUP_FAILURE)
        self.servers = []
        for sock in bound:
            listener = Listener(
                sock,
                ssl_context=config.ssl,
                limits=self.limits,
                table=self.table,
                protocol_factory=protocol,
            )
            listener.start()
            self.listeners.append(listener)
        logger.info("listening on %s port %d", config.host, self.bound_port or config.port)
        self.started = True

    async def shutdown(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        logger.info("shutting down: draining open requests for %.1f s", self.grace_seconds)
        for listener in self.listeners:
            listener.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        if self.grace_seconds > 0:
            await self._drained(self.grace_seconds, connections=True)
        if self.server_state.tasks and not self.force_exit:
            logger.warning(
                "shutdown grace over: ending %d open requests", len(self.server_state.tasks)
            )
            self.on_grace_over()
            if not await self._drained(STREAM_END_SECONDS, connections=False):
                await self._cut()
        for listener in self.listeners:
            await listener.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def _drained(self, seconds: float, *, connections: bool) -> bool:
        """Wait until no request (and, if asked, no connection) is open, for ``seconds`` at
        most; whether that happened."""
        deadline = time.monotonic() + seconds
        state = self.server_state
        while (state.tasks or (connections and state.connections)) and not self.force_exit:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        return True

    async def _cut(self) -> None:
        self.cutting = True
        tasks = list(self.server_state.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=STREAM_END_SECONDS)
