"""The local channel between the owner and one data-plane worker: a connected Unix stream
socket (one end of a ``socketpair`` made by the owner before it starts the worker, so nothing
of it is on any file system).

Frames are a 4-byte big-endian length and a CBOR map with an ``op``. A map with an ``id`` is a
request, answered by a map with ``reply`` (the same id) and either the answer's fields or an
``error`` code; a map without one is a notification, handled in the order it arrived (a new
certificate is never applied after a later one). What crosses it: the settings, the RA-TLS
certificate and its key, the OHTTP key pairs, the model status, replay admissions, forwarded
management requests and metrics expositions; never written anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import cbor2

from enclave.errors import EnclaveError

__all__ = ["MAX_FRAME_BYTES", "Channel", "ChannelClosedError"]

logger = logging.getLogger(__name__)

#: The largest frame either side accepts (a forwarded body is bounded by the body limit).
MAX_FRAME_BYTES = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")

#: Handles one incoming map; a request's handler returns its answer's fields.
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


class ChannelClosedError(EnclaveError):
    """The other side is gone (or the channel was closed)."""


class Channel:
    """Requests and notifications over one connected stream socket. Use inside one loop."""

    def __init__(self, sock: socket.socket, handler: Handler) -> None:
        self._sock = sock
        self._handler = handler
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()

    async def start(self) -> None:
        self._sock.setblocking(False)
        reader, self._writer = await asyncio.open_unix_connection(
            sock=self._sock, limit=MAX_FRAME_BYTES
        )
        self._reader_task = asyncio.create_task(self._read_loop(reader), name="channel-reader")

    def notify(self, op: str, **fields: Any) -> None:
        """Send a notification (no answer). Dropped quietly once the channel is closed."""
        self._write({"op": op, **fields})

    async def call(self, op: str, timeout: float, **fields: Any) -> dict[str, Any]:
        """Send a request and wait for its answer (``ChannelClosedError`` if the other side
        goes away first, ``TimeoutError`` after ``timeout``)."""
        if self.closed.is_set():
            raise ChannelClosedError
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._write({"op": op, "id": request_id, **fields})
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._pending.pop(request_id, None)

    async def aclose(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        task = self._reader_task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._closed()

    def _write(self, message: dict[str, Any]) -> None:
        writer = self._writer
        if writer is None or self.closed.is_set():
            return
        frame = cbor2.dumps(message)
        if len(frame) > MAX_FRAME_BYTES:
            raise ValueError("message over the channel's frame limit")
        writer.write(_HEADER.pack(len(frame)) + frame)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await reader.readexactly(_HEADER.size)
                (length,) = _HEADER.unpack(header)
                if length > MAX_FRAME_BYTES:
                    logger.error("channel frame over the limit; closing the channel")
                    return
                message = cbor2.loads(await reader.readexactly(length))
                if not isinstance(message, dict):
                    logger.error("channel frame is not a map; closing the channel")
                    return
                await self._dispatch(message)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return
        except cbor2.CBORDecodeError:
            logger.error("channel frame is not CBOR; closing the channel")
            return
        finally:
            self._closed()

    async def _dispatch(self, message: dict[str, Any]) -> None:
        reply = message.get("reply")
        if reply is not None:
            future = self._pending.get(reply)
            if future is not None and not future.done():
                future.set_result(message)
            return
        request_id = message.get("id")
        if request_id is None:
            try:
                await self._handler(message)
            except Exception as exc:  # one bad notification must not end the channel
                logger.error("channel notification %s failed: %s", message.get("op"), exc)
            return
        task = asyncio.create_task(self._answer(request_id, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, request_id: int, message: dict[str, Any]) -> None:
        try:
            answer = await self._handler(message) or {}
        except Exception as exc:
            logger.error("channel request %s failed: %s", message.get("op"), type(exc).__name__)
            answer = {"error": "internal_error"}
        self._write({"reply": request_id, **answer})

    def _closed(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ChannelClosedError())
        for task in list(self._tasks):
            task.cancel()
