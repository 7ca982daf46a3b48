"""Status push: status documents POSTed to the management plane.

- At :meth:`StatusPusher.start` (reason ``start``), on every transition (``transition``: the
  hook :meth:`StatusPusher.on_transition`), and every ``push_interval_seconds``
  (± ``push_jitter_fraction``) while nothing else is waiting (``interval``), a document is sent
  as JSON to ``push_url`` with ``Authorization: Bearer <push_token>`` (when set). A 2xx answer
  is success.
- The document is the status document (model_manager/status.py) plus who sends it:
  ``instance_id`` (``instance_id`` setting, else the host name), ``replica_id`` (which
  replica of several behind one load balancer), ``boot_id`` (random per process start),
  ``push_reason``, and whatever the ``envelope`` callable adds (the service
  adds ``certificate_sha256`` and ``service_version``). The envelope is read when the document
  is queued, so a transition's document names the certificate current at that transition.
- Documents wait in a bounded queue (``push_queue_size``); when it is full the oldest is dropped
  (counted as ``dropped``). A failure (network error, timeout, non-2xx) keeps the document at the
  head and waits with exponential backoff from ``push_backoff_initial_seconds`` to
  ``push_backoff_max_seconds``. One push has a total deadline, ``push_deadline_seconds``
  (``push_timeout_seconds`` bounds each connect, write and read; a receiver trickling its
  answer a byte at a time would pass those forever), and at most ``push_max_answer_bytes`` of
  the answer are read (it is ignored: the status code decides; past the cap the connection is
  closed, so a huge answer costs no memory). Nothing here ever blocks or fails the lifecycle:
  :meth:`StatusPusher.on_transition` only queues the document and wakes the sender.
- ``observer`` is called with ``sent``, ``failed`` or ``dropped`` for every outcome (metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Literal

import httpx

from model_manager.settings import ModelManagerSettings
from model_manager.status import ModelStatus

__all__ = ["PUSH_OUTCOMES", "PUSH_REASONS", "PushOutcome", "PushReason", "StatusPusher"]

logger = logging.getLogger(__name__)

USER_AGENT = "enclave-model-manager"

PushReason = Literal["start", "transition", "interval"]
PushOutcome = Literal["sent", "failed", "dropped"]
PUSH_REASONS: tuple[PushReason, ...] = ("start", "transition", "interval")
PUSH_OUTCOMES: tuple[PushOutcome, ...] = ("sent", "failed", "dropped")


class StatusPusher:
    """Pushes status documents; a no-op when ``push_url`` is unset."""

    def __init__(
        self,
        settings: ModelManagerSettings,
        source: Callable[[], ModelStatus],
        *,
        client: httpx.AsyncClient | None = None,
        rng: Callable[[], float] = random.random,
        envelope: Callable[[], Mapping[str, object]] | None = None,
        observer: Callable[[PushOutcome], None] | None = None,
    ) -> None:
        self._settings = settings
        self._source = source
        self._client = client
        self._own_client = client is None
        self._rng = rng
        self._envelope = envelope
        self._observer = observer
        self._queue: deque[dict[str, object]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.instance_id = settings.instance_id or socket.gethostname()
        self.boot_id = str(uuid.uuid4())
        self.sent = 0
        self.failures = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return self._settings.push_url is not None

    @property
    def queued(self) -> int:
        """Documents waiting to be sent."""
        return len(self._queue)

    async def start(self) -> None:
        """Start the sender (queues the current status at once)."""
        if not self.enabled or self._task is not None:
            return
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._settings.push_timeout_seconds,
                headers={"User-Agent": USER_AGENT},
                trust_env=False,
            )
        self._enqueue(self._source(), "start")
        self._task = asyncio.create_task(self._run(), name="status-push")
        logger.info(
            "status push to the management plane every %gs", self._settings.push_interval_seconds
        )

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def on_transition(self, status: ModelStatus) -> None:
        """A lifecycle hook: queue ``status`` and wake the sender; never waits on the network."""
        if self.enabled:
            self._enqueue(status, "transition")

    def _enqueue(self, status: ModelStatus, reason: PushReason) -> None:
        document = status.to_document()
        if self._envelope is not None:
            document.update(self._envelope())
        document["instance_id"] = self.instance_id
        document["replica_id"] = self._settings.effective_replica_id
        document["boot_id"] = self.boot_id
        document["push_reason"] = reason
        if len(self._queue) >= self._settings.push_queue_size:
            self._queue.popleft()
            self.dropped += 1
            self._observe("dropped")
            logger.warning("status push queue full: the oldest document was dropped")
        self._queue.append(document)
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            if backoff:
                await asyncio.sleep(backoff)
            elif not self._queue:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval()):
                        await self._wake.wait()
                if not self._queue:
                    self._enqueue(self._source(), "interval")
            self._wake.clear()
            document = self._queue[0]
            if await self._send(document):
                if self._queue and self._queue[0] is document:
                    self._queue.popleft()
                backoff = 0.0
            else:
                settings = self._settings
                backoff = min(
                    max(backoff * 2, settings.push_backoff_initial_seconds),
                    settings.push_backoff_max_seconds,
                )

    async def _send(self, document: dict[str, object]) -> bool:
        settings = self._settings
        if self._client is None or settings.push_url is None:
            return False
        headers = {}
        if settings.push_token is not None:
            headers["Authorization"] = f"Bearer {settings.push_token.get_secret_value()}"
        try:
            async with asyncio.timeout(settings.push_deadline_seconds):
                status = await self._post(str(settings.push_url), document, headers)
        except (httpx.HTTPError, TimeoutError) as exc:
            self.failures += 1
            self._observe("failed")
            what = "deadline" if isinstance(exc, TimeoutError) else type(exc).__name__
            logger.warning("status push failed: %s", what)
            return False
        if not 200 <= status <= 299:
            self.failures += 1
            self._observe("failed")
            logger.warning("status push refused: HTTP %d", status)
            return False
        self.sent += 1
        self._observe("sent")
        logger.debug(
            "status pushed (%s, %s, generation %s)",
            document.get("push_reason"),
            document.get("proxy_status"),
            document.get("generation"),
        )
        return True

    async def _post(self, url: str, document: dict[str, object], headers: dict[str, str]) -> int:
        """POST ``document``; the answer's status, having read at most the answer cap."""
        if self._client is None:
            raise httpx.TransportError("the push client is closed")
        cap = self._settings.push_max_answer_bytes
        async with self._client.stream("POST", url, json=document, headers=headers) as response:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read > cap:
                    logger.warning("status push: answer over %d bytes, not read further", cap)
                    break
            return response.status_code

    def _observe(self, outcome: PushOutcome) -> None:
        if self._observer is not None:
            self._observer(outcome)

    def _interval(self) -> float:
        settings = self._settings
        spread = settings.push_jitter_fraction * (2.0 * self._rng() - 1.0)
        return max(settings.push_interval_seconds * (1.0 + spread), 0.001)
