"""The running service: the object that owns the long-lived parts and their lifetimes.

A :class:`Service` holds the settings, the :class:`~model_manager.ModelManager`, one pooled
HTTP client to the engine (sized for ``max_concurrent_streams``), the metrics registry and the
stream slots. ``start()`` and ``aclose()`` bring them up and down; the app's lifespan calls
them. Use it inside one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable

import httpx

from enclave._cache_salt import CacheSalter
from enclave._receipts import ReceiptIssuer
from enclave.engine import EngineClient, EngineClientProtocol, EngineTimeouts
from enclave.metrics import ServiceMetrics
from enclave.settings import EnclaveSettings, insecure_settings, insecure_warnings
from model_manager import EngineEndpoint, ModelManager, ModelStatus

__all__ = ["EngineClientFactory", "ReadinessCheck", "Service", "StreamSlots"]

logger = logging.getLogger(__name__)

#: Returns ``None`` when its part is ready, else a stable reason code for ``/ready``.
ReadinessCheck = Callable[[], str | None]
#: Makes the pooled engine client for an endpoint (a seam for tests).
EngineClientFactory = Callable[[EngineEndpoint], EngineClientProtocol]
#: Idle keep-alive connections kept to the engine at most.
_MAX_KEEPALIVE = 64
#: How long the engine's ``GET /version`` may take (read once per ready model, for build_info).
_VERSION_TIMEOUT_SECONDS = 5.0
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}")


class StreamSlots:
    """A non-blocking counting limit: ``try_acquire`` fails at once when all slots are taken."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the limit must be at least 1")
        self._limit = limit
        self._active = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def active(self) -> int:
        return self._active

    def try_acquire(self) -> bool:
        if self._active >= self._limit:
            return False
        self._active += 1
        return True

    def release(self) -> None:
        if self._active <= 0:
            raise RuntimeError("release without a matching acquire")
        self._active -= 1


class Service:
    """Owns the model manager, the engine client, the metrics and the stream slots."""

    def __init__(
        self,
        settings: EnclaveSettings,
        *,
        manager: ModelManager | None = None,
        metrics: ServiceMetrics | None = None,
        engine_client_factory: EngineClientFactory | None = None,
    ) -> None:
        self.settings = settings
        self.insecure = insecure_settings(settings)
        self.manager = manager or ModelManager(settings.model_manager, insecure=self.insecure)
        self.metrics = metrics or ServiceMetrics()
        self.streams = StreamSlots(settings.service.max_concurrent_streams)
        #: The prefix-cache salts of engine requests (its secret lives in memory only).
        self.cache_salter = CacheSalter()
        #: Signs a receipt for every inference answer (set by EnclaveServer, which binds its
        #: key into the evidence); None: answers carry no receipt.
        self.receipts: ReceiptIssuer | None = None
        self.readiness_checks: list[ReadinessCheck] = []
        #: The metrics exposition when more than this registry makes it (the owner of
        #: data-plane workers sums theirs in); None: this registry's.
        self.exposition: Callable[[], Awaitable[bytes]] | None = None
        self._client_factory = engine_client_factory or self._new_client
        self._endpoint: EngineEndpoint | None = None
        self._client: EngineClientProtocol | None = None
        self._retired: list[EngineClientProtocol] = []
        self._epochs: dict[int, asyncio.Event] = {}
        self._started = False
        self._seen_restarts = 0
        self._loading_since: float | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.manager.add_hook(self._on_transition)
        self.manager.add_hook(self._observe_transition)

    # -- lifetime ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the model manager (idempotent). Insecure settings are announced here."""
        if self._started:
            return
        self._started = True
        for line in insecure_warnings(self.settings):
            logger.warning("%s", line)
        self.metrics.set_model_state(self.manager.status().proxy_status)
        await self.manager.start()

    async def aclose(self) -> None:
        """Stop the engine and close every client (idempotent)."""
        self._end_epochs(keep=None)
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._started:
            self._started = False
            await self.manager.aclose()
        clients = [*self._retired, *([self._client] if self._client is not None else [])]
        self._retired.clear()
        self._client = None
        self._endpoint = None
        for client in clients:
            await client.aclose()

    def end_streams(self) -> None:
        """End every open stream now, as an unload would: each gets its error event (the
        shutdown calls this when its grace is over; the engine is stopped next)."""
        self._end_epochs(keep=None)

    # -- the engine ----------------------------------------------------------------------------

    def engine_client(self) -> EngineClientProtocol:
        """The pooled client for the engine's current endpoint (created on first use)."""
        endpoint = self.manager.engine_endpoint()
        if self._client is None or endpoint != self._endpoint:
            if self._client is not None:
                # Streams may still read from the old client; it is closed at aclose().
                self._retired.append(self._client)
            self._client = self._client_factory(endpoint)
            self._endpoint = endpoint
        return self._client

    def _new_client(self, endpoint: EngineEndpoint) -> EngineClient:
        service = self.settings.service
        limit = service.max_concurrent_streams
        timeouts = EngineTimeouts(
            connect=service.engine_connect_timeout_seconds,
            read=service.engine_read_timeout_seconds,
            write=service.engine_write_timeout_seconds,
            pool=service.engine_pool_timeout_seconds,
        )
        return EngineClient(
            uds=endpoint.uds,
            host=endpoint.host,
            port=endpoint.port,
            timeouts=timeouts,
            max_connections=limit,
            max_idle=min(limit, _MAX_KEEPALIVE),
        )

    # -- the served model ----------------------------------------------------------------------

    def ready_model(self) -> ModelStatus | None:
        """The status when a model is ready, else ``None``."""
        status = self.manager.status()
        return status if status.is_ready and status.loaded_model is not None else None

    def model_gone(self, generation: int) -> asyncio.Event:
        """An event set once the model of ``generation`` stops being the ready one."""
        event = self._epochs.get(generation)
        if event is None:
            event = self._epochs[generation] = asyncio.Event()
            status = self.manager.status()
            if not status.is_ready or status.generation != generation:
                event.set()
                del self._epochs[generation]
        return event

    async def _on_transition(self, _: ModelStatus) -> None:
        # Hooks arrive after the fact and may be stale: act on the live state.
        status = self.manager.status()
        self.metrics.set_model_state(status.proxy_status)
        self._end_epochs(keep=status.generation if status.is_ready else None)
        if self._client is not None and self.manager.engine_endpoint() != self._endpoint:
            self.engine_client()

    async def _observe_transition(self, status: ModelStatus) -> None:
        """Metrics and the log line of each transition (the snapshot, not the live state)."""
        operations = self.metrics.operations
        if status.restarts > self._seen_restarts:
            operations.engine_restarted(status.restarts - self._seen_restarts)
        self._seen_restarts = status.restarts
        state = status.proxy_status
        if state == "loading":
            if self._loading_since is None:
                self._loading_since = status.since
            return
        started, self._loading_since = self._loading_since, None
        if state == "ready":
            seconds = None if started is None else max(status.since - started, 0.0)
            operations.model_load_ended("ready", seconds)
            digest = status.digest
            logger.info(
                "model %s ready in %s s (generation %d, %s %s)",
                status.loaded_model,
                "?" if seconds is None else f"{seconds:.1f}",
                status.generation,
                None if digest is None else digest.kind,
                None if digest is None else digest.hex,
                extra={
                    "model": status.loaded_model,
                    "generation": status.generation,
                    "load_seconds": None if seconds is None else round(seconds, 3),
                    "digest_kind": None if digest is None else digest.kind,
                    "digest": None if digest is None else digest.hex,
                },
            )
            task = asyncio.create_task(self._read_engine_version(status.generation))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        elif state == "error" and started is not None:
            operations.model_load_ended("error", None)
            error = status.error
            logger.warning(
                "model %s failed to load (generation %d, %s)",
                status.loaded_model,
                status.generation,
                None if error is None else error.code,
                extra={
                    "model": status.loaded_model,
                    "generation": status.generation,
                    "reason": None if error is None else error.code,
                },
            )

    async def _read_engine_version(self, generation: int) -> None:
        """Ask the ready engine its version (vLLM's ``GET /version``) for ``build_info``."""
        try:
            async with self.manager.engine_client(_VERSION_TIMEOUT_SECONDS) as client:
                response = await client.get("/version")
            version = response.json().get("version") if response.is_success else None
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            logger.info("engine version unavailable: %s", type(exc).__name__)
            return
        if not isinstance(version, str) or _VERSION_RE.fullmatch(version) is None:
            logger.info("engine version unavailable: not a version string")
            return
        if self.manager.status().generation == generation:
            self.metrics.operations.set_build_info(vllm_version=version)

    def _end_epochs(self, keep: int | None) -> None:
        for generation in [g for g in self._epochs if g != keep]:
            self._epochs.pop(generation).set()
