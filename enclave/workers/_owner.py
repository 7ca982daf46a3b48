"""The owner of the data-plane workers: starts them, feeds them, restarts them.

The owner keeps the model lifecycle, the RA-TLS key and certificate, the OHTTP keys, reissue
and rotation, the management API and the metrics. It starts each worker as
``python -m enclave.workers --channel-fd N`` with one end of a socketpair, sends it the
settings, the certificate and its key, the key pairs, the status and the pseudonym key, and
then every change as it happens. It answers what workers ask: the replay admission of each
OHTTP request (one set for all of them) and the forwarded management requests (run in the
owner's own app, so load-token failures and report budgets are counted once for the service).

A worker that dies is restarted (after 0.5 s, doubling to 10 s while it keeps dying within a
minute of its start); the connections it held are gone with it, so their clients see the
stream cut: a chunked OHTTP client reports it as truncated (no final chunk), a plaintext one
as a response without its terminating chunk (docs/service.md, "More than one core").
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.types import Message

from enclave.gateway import _dispatch
from enclave.gateway._dispatch import SCOPE_EXTENSION
from enclave.workers._channel import Channel, ChannelClosedError
from enclave.workers._metrics import merge_expositions
from enclave.workers._state import dump_keys, dump_settings, dump_status

if TYPE_CHECKING:
    from attestation.ratls import IssuedCertificate
    from enclave.server import EnclaveServer
    from model_manager import ModelStatus

__all__ = ["OwnerReplaySet", "WorkerPool"]

logger = logging.getLogger(__name__)

_RESTART_INITIAL_SECONDS = 0.5
_RESTART_MAX_SECONDS = 10.0
_STABLE_SECONDS = 60.0
_METRICS_TIMEOUT_SECONDS = 5.0
#: After the workers' own grace (drain, then STREAM_END_SECONDS for the error events).
_STOP_MARGIN_SECONDS = 10.0


class OwnerReplaySet:
    """The one replay set of all workers (``replay_store = memory``): keyed hashes with their
    expiry, bounded; full of live entries it refuses (fails closed), never forgets early."""

    def __init__(self, capacity: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._capacity = capacity
        self._monotonic = monotonic
        self._seen: dict[bytes, float] = {}
        self._expiries: list[tuple[float, bytes]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def seen_or_add(self, key: bytes, ttl_seconds: float) -> bool | None:
        """True the first time (now remembered), False for a replay, None when full."""
        now = self._monotonic()
        while self._expiries and self._expiries[0][0] <= now:
            _, old = heapq.heappop(self._expiries)
            if self._seen.get(old, now + 1) <= now:
                del self._seen[old]
        if key in self._seen:
            return False
        if len(self._seen) >= self._capacity:
            return None
        expiry = now + ttl_seconds
        self._seen[key] = expiry
        heapq.heappush(self._expiries, (expiry, key))
        return True


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.channel: Channel | None = None
        self.restarts = 0
        self.started_at = 0.0


class WorkerPool:
    """``count`` workers on ``port``, fed from ``server`` (the owner's :class:`EnclaveServer`)."""

    def __init__(self, server: EnclaveServer, count: int, port: int) -> None:
        self._server = server
        self._count = count
        self._port = port
        self._workers = [_Worker(index) for index in range(count)]
        self._replay = OwnerReplaySet(server.settings.service.replay_cache_size)
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def pids(self) -> list[int | None]:
        return [None if w.process is None else w.process.pid for w in self._workers]

    async def start(self) -> None:
        """Start every worker (the first certificate is issued: they can serve at once)."""
        for worker in self._workers:
            await self._spawn(worker)
        for worker in self._workers:
            self._watchers.append(asyncio.create_task(self._watch(worker)))

    async def _spawn(self, worker: _Worker) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "enclave.workers",
                "--channel-fd",
                str(child.fileno()),
                pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            child.close()
        channel = Channel(parent, lambda message: self._handle(worker, message))
        await channel.start()
        worker.process, worker.channel = process, channel
        worker.started_at = time.monotonic()
        server = self._server
        channel.notify(
            "init",
            index=worker.index,
            count=self._count,
            port=self._port,
            settings=dump_settings(server.settings),
            status=dump_status(server.service.manager.status()),
            pseudonym=_dispatch.pseudonym_key(),
            reference=server.gateway.replay_cache.reference(),
        )
        channel.notify("keys", **dump_keys(server.key_store))
        current = server.certificates.current
        if current is not None:
            channel.notify(
                "tls", certificate=current.certificate_pem, key=server.certificates.key_pem()
            )
        logger.info("data-plane worker %d started (pid %d)", worker.index, process.pid)

    async def _watch(self, worker: _Worker) -> None:
        delay = _RESTART_INITIAL_SECONDS
        while True:
            process = worker.process
            assert process is not None
            code = await process.wait()
            if worker.channel is not None:
                await worker.channel.aclose()
            if self._stopping:
                return
            logger.error(
                "data-plane worker %d (pid %d) exited with %s; restarting in %.1f s",
                worker.index,
                process.pid,
                code,
                delay,
            )
            if time.monotonic() - worker.started_at >= _STABLE_SECONDS:
                delay = _RESTART_INITIAL_SECONDS
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RESTART_MAX_SECONDS)
            if self.stopping:
                return
            worker.restarts += 1
            try:
                await self._spawn(worker)
            except OSError as exc:
                logger.error("data-plane worker %d could not start: %s", worker.index, exc)

    # -- what the owner pushes ----------------------------------------------------------------

    def _broadcast(self, op: str, **fields: Any) -> None:
        for worker in self._workers:
            if worker.channel is not None:
                worker.channel.notify(op, **fields)

    def push_certificate(self, issued: IssuedCertificate) -> None:
        """A new certificate (same key): and the key set it attests, first."""
        self.push_keys()
        self._broadcast(
            "tls", certificate=issued.certificate_pem, key=self._server.certificates.key_pem()
        )

    def push_keys(self) -> None:
        self._broadcast("keys", **dump_keys(self._server.key_store))

    async def push_status(self, status: ModelStatus) -> None:
        self._broadcast("status", status=dump_status(self._server.service.manager.status()))

    # -- what workers ask ---------------------------------------------------------------------

    async def _handle(self, worker: _Worker, message: dict[str, Any]) -> dict[str, Any] | None:
        op = message.get("op")
        if op == "replay":
            fresh = self._replay.seen_or_add(bytes(message["key"]), float(message["ttl"]))
            return {"error": "full"} if fresh is None else {"fresh": fresh}
        if op == "http":
            return await self._forwarded(message)
        return {"error": "unknown_op"}

    async def _forwarded(self, message: dict[str, Any]) -> dict[str, Any]:
        """Run a worker's forwarded request in the owner's app and collect its answer."""
        client = message.get("client")
        extension = message.get("ohttp")
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": message["method"],
            "scheme": "https",
            "path": message["path"],
            "raw_path": message["path"].encode(),
            "query_string": bytes(message["query"]),
            "root_path": "",
            "headers": [(bytes(name), bytes(value)) for name, value in message["headers"]],
            "client": None if client is None else (client[0], client[1]),
            "server": None,
            "state": {},
            "extensions": {} if extension is None else {SCOPE_EXTENSION: dict(extension)},
        }
        body = bytes(message["body"])
        sent = False
        status = 500
        headers: list[list[bytes]] = []
        out = bytearray()

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # never: these routes do not wait for a disconnect
            raise AssertionError

        async def send(piece: Message) -> None:
            nonlocal status
            if piece["type"] == "http.response.start":
                status = int(piece["status"])
                headers.extend([bytes(n), bytes(v)] for n, v in piece.get("headers", ()))
            elif piece["type"] == "http.response.body":
                out.extend(piece.get("body", b""))

        try:
            await self._server.app(scope, receive, send)
        except Exception as exc:
            logger.error("forwarded request failed: %s", type(exc).__name__)
            return {"error": "internal_error"}
        return {"status": status, "headers": headers, "body": bytes(out)}

    async def exposition(self) -> bytes:
        """The service's one metrics exposition: the owner's and every worker's, summed."""
        server = self._server
        server.service.metrics.set_model_state(server.service.manager.status().proxy_status)

        async def ask(worker: _Worker) -> bytes | None:
            channel = worker.channel
            if channel is None:
                return None
            try:
                answer = await channel.call("metrics", _METRICS_TIMEOUT_SECONDS)
            except (ChannelClosedError, TimeoutError):
                return None
            exposition = answer.get("exposition")
            return bytes(exposition) if exposition is not None else None

        workers = await asyncio.gather(*(ask(worker) for worker in self._workers))
        return merge_expositions(
            server.service.metrics.render(), workers, [w.restarts for w in self._workers]
        )

    # -- stopping -------------------------------------------------------------------------------

    async def stop(self, grace_seconds: float) -> None:
        """SIGTERM every worker (each drains as the single process does) and wait for them."""
        self._stopping = True
        processes = [w.process for w in self._workers if w.process is not None]
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(process.wait()) for process in processes]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=grace_seconds + _STOP_MARGIN_SECONDS)
            for process in processes:
                if process.returncode is None:
                    logger.warning("data-plane worker pid %d did not stop; killed", process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            if pending:
                await asyncio.wait(pending, timeout=5)
        for task in self._watchers:
            task.cancel()
        for task in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for worker in self._workers:
            if worker.channel is not None:
                await worker.channel.aclose()
