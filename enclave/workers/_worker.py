"""A data-plane worker: the TLS listener, the relay, the gateway and an engine client of its own.

It is started by the owner (:mod:`enclave.workers._owner`) with one end of a socketpair, gets
its settings, the RA-TLS certificate and key, the OHTTP key pairs, the model status and the
gateway's pseudonym key over it, and listens on the service's port with ``SO_REUSEPORT`` next
to the other workers. Every later change arrives the same way and is swapped in place: a
certificate into the live SSL context (open connections keep theirs), a key set into the key
store, a status into the mirror of the model manager (streams of a superseded generation end
with ``model_unloaded``, as in one process). What the owner keeps is asked of it: the replay
admission of every OHTTP request, and the lifecycle, report, GPU-evidence and metrics routes,
which are forwarded whole (the owner answers them under its global rate limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httpx
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from enclave.gateway import OhttpGateway, gateway_routes
from enclave.gateway._dispatch import SCOPE_EXTENSION, set_pseudonym_key
from enclave.gateway._replay import ReplayStore, ReplayStoreUnavailableError
from enclave.net import BodyGuard, BodyLimits, ConnectionLimits, GuardedServer
from enclave.net._connections import fit_to_descriptor_limit
from enclave.protocol.api import GPUS_PATH, REPORT_PATH
from enclave.protocol.ohttp import KeyStore
from enclave.routes._errors import error_response
from enclave.service import Service
from enclave.settings import EnclaveSettings
from enclave.tls import load_chain, server_context
from enclave.workers._channel import Channel, ChannelClosedError
from enclave.workers._state import load_keys, load_settings_values, load_status
from model_manager import EngineEndpoint, ModelManager, ModelManagerSettings, ModelStatus
from model_manager.engine import engine_endpoint

__all__ = ["FORWARD_TIMEOUT_SECONDS", "MirrorManager", "WorkerServer", "run_worker", "share"]

logger = logging.getLogger(__name__)

#: How long a forwarded request (lifecycle, report, metrics) may take at the owner.
FORWARD_TIMEOUT_SECONDS = 60.0

TransitionHook = Callable[[ModelStatus], Awaitable[None]]


def share(total: int, workers: int, minimum: int = 1) -> int:
    """A worker's share of a limit held across ``workers`` processes (rounded up)."""
    return max(math.ceil(total / workers), minimum)


class MirrorManager:
    """The owner's model manager as a worker sees it: the status it was last sent, the same
    engine endpoint (from the same settings), and the hooks run on every change."""

    def __init__(self, settings: ModelManagerSettings, status: ModelStatus) -> None:
        self._settings = settings
        self._status = status
        self._hooks: list[TransitionHook] = []

    def status(self) -> ModelStatus:
        return self._status

    def add_hook(self, hook: TransitionHook) -> None:
        self._hooks.append(hook)

    def engine_endpoint(self) -> EngineEndpoint:
        return engine_endpoint(self._settings)

    def engine_client(self, timeout: httpx.Timeout | float | None = None) -> httpx.AsyncClient:
        return self.engine_endpoint().client(timeout)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def update(self, status: ModelStatus) -> None:
        self._status = status
        for hook in self._hooks:
            try:
                await hook(status)
            except Exception as exc:  # as the manager does: one failing hook is logged only
                logger.error("status hook failed: %s", type(exc).__name__)


class OwnerReplayStore:
    """The replay set held by the owner: one set across every worker (one round trip per
    request, not per token). Fails closed: no answer means the request is refused."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    async def seen_or_add(self, key: bytes, ttl_seconds: float) -> bool:
        try:
            answer = await self._channel.call("replay", 10.0, key=key, ttl=ttl_seconds)
        except (ChannelClosedError, TimeoutError) as exc:
            raise ReplayStoreUnavailableError from exc
        if "fresh" not in answer:
            raise ReplayStoreUnavailableError
        return bool(answer["fresh"])

    async def aclose(self) -> None:
        return None


class ForwardToOwner:
    """ASGI app: send the request whole to the owner over the channel and answer what it
    answered. The peer address and the gateway's extension (the relay's pseudonym) go with it,
    so the owner's rate limits key it as if it had taken the connection."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        client = scope.get("client")
        extension = (scope.get("extensions") or {}).get(SCOPE_EXTENSION)
        try:
            answer = await self._channel.call(
                "http",
                FORWARD_TIMEOUT_SECONDS,
                method=scope["method"],
                path=scope["path"],
                query=scope.get("query_string", b""),
                headers=[[name, value] for name, value in scope.get("headers", ())],
                body=bytes(body),
                client=None if client is None else [str(client[0]), int(client[1])],
                ohttp=None if extension is None else dict(extension),
            )
        except (ChannelClosedError, TimeoutError):
            await error_response("owner_unavailable")(scope, receive, send)
            return
        if "status" not in answer:
            await error_response("internal_error")(scope, receive, send)
            return
        headers = [(bytes(name), bytes(value)) for name, value in answer["headers"]]
        await send({"type": "http.response.start", "status": answer["status"], "headers": headers})
        await send({"type": "http.response.body", "body": answer["body"]})


class _Certificates:
    """The worker's live SSL context and whether a certificate is in it."""

    def __init__(self) -> None:
        self.ssl_context = server_context()
        self.loaded = asyncio.Event()

    def load(self, certificate_pem: bytes, key_pem: bytes) -> None:
        load_chain(self.ssl_context, certificate_pem, key_pem)
        self.loaded.set()


class WorkerServer:
    """One worker's service, built from what the owner sent in ``init``."""

    def __init__(self, channel: Channel, init: dict[str, Any]) -> None:
        owner_settings = load_settings_values(init["settings"])
        self.index: int = init["index"]
        #: The service's port (the owner resolved a 0 to the one it reserved).
        self.port = int(init["port"])
        count: int = init["count"]
        service = owner_settings.service
        budget = share(service.body_memory_budget_bytes, count, minimum=service.body_limit_bytes)
        self.settings = EnclaveSettings(
            service=service.model_copy(
                update={
                    "max_concurrent_streams": share(service.max_concurrent_streams, count),
                    "body_memory_budget_bytes": budget,
                    "max_connections": share(service.max_connections, count),
                    "max_connections_per_address": min(
                        service.max_connections_per_address, share(service.max_connections, count)
                    ),
                }
            ),
            model_manager=owner_settings.model_manager,
        )
        self.channel = channel
        self.mirror = MirrorManager(self.settings.model_manager, load_status(init["status"]))
        self.service = Service(self.settings, manager=cast(ModelManager, self.mirror))
        self.key_store = KeyStore()
        from enclave.server import GatewayMetrics, _shared_replay_store

        #: One replay set for every worker: the owner's (memory), or the replicas' Redis.
        self.replay_store: ReplayStore = _shared_replay_store(self.settings) or OwnerReplayStore(
            channel
        )

        self.gateway = OhttpGateway(
            self.key_store,
            limits=self.settings.gateway,
            observer=GatewayMetrics(self.service.metrics),
            replay_store=self.replay_store,
        )
        # The owner's reference time, which never went back: a restarted worker does not
        # accept a Date the owner's replay set has already forgotten.
        self.gateway.replay_cache.hold_at_least(float(init["reference"]))
        self.certificates = _Certificates()
        forward = ForwardToOwner(channel)
        from enclave.app import build_app

        self.app = build_app(
            self.service,
            extra_routes=[
                *gateway_routes(self.gateway),
                *_forwarded_report_routes(forward),
            ],
            forward=forward,
        )
        self.gateway.set_app(self.app)
        self.service.readiness_checks.append(
            lambda: None if self.certificates.loaded.is_set() else "not_attested"
        )
        self.service.readiness_checks.append(
            lambda: None if self.key_store.key_ids else "ohttp_key_unavailable"
        )
        self.uvicorn: GuardedServer | None = None

    async def handle(self, message: dict[str, Any]) -> dict[str, Any] | None:
        op = message.get("op")
        if op == "tls":
            self.certificates.load(message["certificate"], message["key"])
        elif op == "keys":
            active, accepted = load_keys(message)
            self.key_store.replace(active, accepted)
        elif op == "status":
            await self.mirror.update(load_status(message["status"]))
        elif op == "metrics":
            return {"exposition": self.service.metrics.render()}
        elif op == "stop":
            self.request_shutdown()
        return None

    def request_shutdown(self) -> None:
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True

    async def serve(self) -> None:
        await self.certificates.loaded.wait()
        settings = self.settings.service
        config = _uvicorn_config(self, settings.body_timeout_seconds)
        limits = fit_to_descriptor_limit(
            ConnectionLimits(
                max_connections=settings.max_connections,
                max_per_address=settings.max_connections_per_address,
                handshake_timeout_seconds=settings.tls_handshake_timeout_seconds,
                header_timeout_seconds=settings.header_timeout_seconds,
                keep_alive_timeout_seconds=settings.keep_alive_timeout_seconds,
                body_timeout_seconds=settings.body_timeout_seconds,
            )
        )
        self.uvicorn = GuardedServer(
            config,
            limits=limits,
            grace_seconds=settings.shutdown_grace_seconds,
            on_grace_over=self.service.end_streams,
            reuse_port=True,
        )
        watcher = asyncio.create_task(self._owner_gone())
        try:
            await self.uvicorn.serve()
        finally:
            watcher.cancel()
            await self.replay_store.aclose()

    async def _owner_gone(self) -> None:
        await self.channel.closed.wait()
        logger.error("the owner process is gone; worker %d stops", self.index)
        self.request_shutdown()


def _forwarded_report_routes(forward: ForwardToOwner) -> list[BaseRoute]:
    return [
        Route(REPORT_PATH, forward, methods=["GET"]),
        Route(GPUS_PATH, forward, methods=["GET"]),
    ]


def _uvicorn_config(worker: WorkerServer, body_timeout: float) -> Any:
    import uvicorn

    settings = worker.settings.service
    body_limits = BodyLimits(
        body_limit_bytes=settings.body_limit_bytes,
        timeout_seconds=body_timeout,
        budget_bytes=settings.body_memory_budget_bytes,
    )
    config = uvicorn.Config(
        BodyGuard(worker.app, body_limits),
        host=settings.host,
        port=worker.port,
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
    )
    config.load()
    config.ssl = worker.certificates.ssl_context
    return config


async def run_worker(fd: int) -> None:
    """The worker's main: the channel on ``fd``, ``init``, then serve until told to stop."""
    sock = socket.socket(fileno=fd)
    ready: asyncio.Future[WorkerServer] = asyncio.get_running_loop().create_future()
    holder: list[WorkerServer] = []

    async def handler(message: dict[str, Any]) -> dict[str, Any] | None:
        if message.get("op") == "init":
            from enclave._logging import configure_logging

            values = message["settings"]["service"]
            configure_logging(values["log_level"], values["log_format"])
            set_pseudonym_key(bytes(message["pseudonym"]))
            worker = WorkerServer(channel, message)
            holder.append(worker)
            ready.set_result(worker)
            return None
        if not holder:
            return None
        return await holder[0].handle(message)

    channel = Channel(sock, handler)
    await channel.start()
    closed: asyncio.Future[Any] = asyncio.ensure_future(channel.closed.wait())
    waiting: set[asyncio.Future[Any]] = {ready, closed}
    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    closed.cancel()
    if ready not in done:
        return
    worker = ready.result()
    logger.info("data-plane worker %d (pid %d) starting", worker.index, os.getpid())
    try:
        await worker.serve()
    finally:
        with contextlib.suppress(Exception):
            await channel.aclose()
