"""Status push: the status document POSTed to the management plane.

- Every ``push_interval_seconds`` (± ``push_jitter_fraction``) and on every transition, the
  newest status document is sent as JSON to ``push_url`` with ``Authorization: Bearer
  <push_token>`` (when set). A 2xx answer is success.
- The pending slot holds one document: a newer transition replaces an unsent one.
- A failure (network error, timeout, non-2xx) waits with exponential backoff from
  ``push_backoff_initial_seconds`` to ``push_backoff_max_seconds``, then sends the newest
  document. Nothing here ever blocks or fails the lifecycle: :meth:`StatusPusher.on_transition`
  only stores the document and wakes the sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

import httpx

from model_manager.settings import ModelManagerSettings
from model_manager.status import ModelStatus

__all__ = ["StatusPusher"]

logger = logging.getLogger(__name__)

USER_AGENT = "enclave-model-manager"


class StatusPusher:
    """Pushes status documents; a no-op when ``push_url`` is unset."""

    def __init__(
        self,
        settings: ModelManagerSettings,
        source: Callable[[], ModelStatus],
        *,
        client: httpx.AsyncClient | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._source = source
        self._client = client
        self._own_client = client is None
        self._rng = rng
        self._pending: dict[str, object] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return self._settings.push_url is not None

    async def start(self) -> None:
        """Start the sender (sends the current status at once)."""
        if not self.enabled or self._task is not None:
            return
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._settings.push_timeout_seconds,
                headers={"User-Agent": USER_AGENT},
            )
        self._pending = self._source().to_document()
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name="status-push")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def on_transition(self, status: ModelStatus) -> None:
        """A lifecycle hook: queue ``status`` (replacing any unsent one) and wake the sender."""
        self._pending = status.to_document()
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            if backoff:
                await asyncio.sleep(backoff)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval()):
                        await self._wake.wait()
            self._wake.clear()
            document, self._pending = self._pending, None
            if document is None:
                document = self._source().to_document()
            if await self._send(document):
                backoff = 0.0
            else:
                if self._pending is None:
                    self._pending = document
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
            response = await self._client.post(
                str(settings.push_url), json=document, headers=headers
            )
        except httpx.HTTPError as exc:
            self.failures += 1
            logger.warning("status push failed: %s", type(exc).__name__)
            return False
        if not response.is_success:
            self.failures += 1
            logger.warning("status push refused: HTTP %d", response.status_code)
            return False
        self.sent += 1
        logger.debug("status pushed (%s)", document.get("proxy_status"))
        return True

    def _interval(self) -> float:
        settings = self._settings
        spread = settings.push_jitter_fraction * (2.0 * self._rng() - 1.0)
        return max(settings.push_interval_seconds * (1.0 + spread), 0.001)
