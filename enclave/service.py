"""The running service: the object that owns the long-lived parts and their lifetimes.

A :class:`Service` holds the settings, the :class:`~model_manager.ModelManager`, one pooled
HTTP client to the engine (sized for ``max_concurrent_streams``), the metrics registry and the
stream slots. ``start()`` and ``aclose()`` bring them up and down; the app's lifespan calls
them. Use it inside one event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

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
        self.readiness_checks: list[ReadinessCheck] = []
        self._client_factory = engine_client_factory or self._new_client
        self._endpoint: EngineEndpoint | None = None
        self._client: EngineClientProtocol | None = None
        self._retired: list[EngineClientProtocol] = []
        self._epochs: dict[int, asyncio.Event] = {}
        self._started = False
        self.manager.add_hook(self._on_transition)

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
        if self._started:
            self._started = False
            await self.manager.aclose()
        clients = [*self._retired, *([self._client] if self._client is not None else [])]
        self._retired.clear()
        self._client = None
        self._endpoint = None
        for client in clients:
            await client.aclose()

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

    def _end_epochs(self, keep: int | None) -> None:
        for generation in [g for g in self._epochs if g != keep]:
            self._epochs.pop(generation).set()
