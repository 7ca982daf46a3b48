"""The streamed response: sends precomputed events at the configured pace, applying faults.

Before each event the live switches are read: after N events sent, ``crash_after_chunks=N``
exits the process (``os._exit(1)``), ``stall_after_chunks=N`` goes silent until the client
leaves, ``error_after_chunks=N`` sends vLLM's in-stream error event and ``[DONE]``,
``hold_after_chunks=N`` waits until the switches change. A client
that disconnects aborts the generation, as vLLM aborts the request.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from enclave_dev.engine._faults import FaultSwitch
from enclave_dev.engine._logs import ENGINE_CORE, LOGGER_NAME, vlog
from enclave_dev.engine._shapes import DONE, stream_error_event
from enclave_dev.engine._streams import Event

__all__ = ["CRASH_EXIT_CODE", "EventStream"]

#: The exit status of the crash fault.
CRASH_EXIT_CODE = 1
_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8")]

logger = logging.getLogger(LOGGER_NAME)


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


def _crash(request_id: str, sent: int) -> None:
    vlog(
        logger,
        logging.ERROR,
        "core.py:720",
        "EngineCore encountered a fatal error (development fault: crash after %d chunks of %s).",
        sent,
        request_id,
        proc=ENGINE_CORE,
    )
    for handler in logger.handlers:
        handler.flush()
    os._exit(CRASH_EXIT_CODE)


class EventStream(Response):
    """A response streaming ``events`` as ``text/event-stream``.

    ``on_end(completed)`` runs once when the stream ends (``completed`` is False when it was
    cut by a fault or a disconnect).
    """

    def __init__(
        self,
        request_id: str,
        events: Sequence[Event],
        faults: FaultSwitch,
        on_end: Callable[[bool], None],
    ) -> None:
        super().__init__(status_code=200, media_type="text/event-stream")
        self._request_id = request_id
        self._events = events
        self._faults = faults
        self._on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, gone))
        completed = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            completed = await self._send_events(send, gone)
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            self._on_end(completed)

    async def _send_events(self, send: Send, gone: asyncio.Event) -> bool:
        for sent, event in enumerate(self._events):
            faults = self._faults.current
            if event.paced and faults.tokens_per_second > 0:
                await _pause(gone, 1.0 / faults.tokens_per_second)
            if gone.is_set():
                return False
            faults = self._faults.current
            while faults.hold_after_chunks is not None and sent >= faults.hold_after_chunks:
                if not await _until_changed(self._faults, gone):
                    return False
                faults = self._faults.current
            if faults.crash_after_chunks is not None and sent >= faults.crash_after_chunks:
                _crash(self._request_id, sent)
            if faults.stall_after_chunks is not None and sent >= faults.stall_after_chunks:
                await gone.wait()
                return False
            if faults.error_after_chunks is not None and sent >= faults.error_after_chunks:
                error = stream_error_event("Internal server error", "InternalServerError", 500)
                await send({"type": "http.response.body", "body": error, "more_body": True})
                await send({"type": "http.response.body", "body": DONE, "more_body": True})
                return False
            await send({"type": "http.response.body", "body": event.data, "more_body": True})
        return True


async def _until_changed(faults: FaultSwitch, gone: asyncio.Event) -> bool:
    """Wait for the next fault change (True) or for the client to leave (False)."""
    changed = asyncio.ensure_future(faults.changed())
    left = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait({changed, left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        changed.cancel()
        left.cancel()
    return not gone.is_set()


async def _pause(gone: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, returning early if the client has gone."""
    try:
        await asyncio.wait_for(gone.wait(), timeout=seconds)
    except TimeoutError:
        return
