"""What an observer of the ciphertext sees (issue 19): the tests and bench/bench_side_channel.py
play the attacker with these.

- :class:`TlsRecordForwarder`: a loopback TCP forwarder in front of the service, as any
  on-path network element is; it parses the TLS record headers (type, length) going from the
  service to the client and keeps each with its arrival time. It never decrypts anything.
- :func:`ohttp_chunk_lengths`: what an OHTTP relay sees of a chunked response: the framing of
  the sealed chunks (draft-ietf-ohai-chunked-ohttp: the response nonce, then varint-length
  prefixed chunks, the final one prefixed with length 0 and running to the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

__all__ = [
    "TlsRecord",
    "TlsRecordForwarder",
    "bursts",
    "ohttp_chunk_lengths",
    "ohttp_chunks",
    "raw_tls_exchange",
]

APPLICATION_DATA = 23


@dataclass(frozen=True, slots=True)
class TlsRecord:
    content_type: int
    length: int
    at: float


@dataclass
class _RecordParser:
    records: list[TlsRecord] = field(default_factory=list)
    _buffer: bytearray = field(default_factory=bytearray)
    _need: int = 5  # bytes of the record (header, then body) still to skip past
    _header: bool = True

    def feed(self, data: bytes, now: float) -> None:
        self._buffer += data
        while len(self._buffer) >= self._need:
            if self._header:
                content_type = self._buffer[0]
                length = int.from_bytes(self._buffer[3:5], "big")
                self.records.append(TlsRecord(content_type, length, now))
                del self._buffer[:5]
                self._need, self._header = length, False
            else:
                del self._buffer[: self._need]
                self._need, self._header = 5, True


class TlsRecordForwarder:
    """``async with TlsRecordForwarder(port) as forwarder``: connect to ``forwarder.port``
    instead of ``port``; :attr:`records` holds the service-to-client records seen so far,
    :attr:`sent_records` the client-to-service ones."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._parser = _RecordParser()
        self._sent = _RecordParser()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def records(self) -> list[TlsRecord]:
        return self._parser.records

    @property
    def sent_records(self) -> list[TlsRecord]:
        """The client-to-service records seen so far."""
        return self._sent.records

    def application_data(self, since: int = 0) -> list[TlsRecord]:
        """The application-data records from index ``since`` of :attr:`records` on."""
        return [r for r in self.records[since:] if r.content_type == APPLICATION_DATA]

    async def __aenter__(self) -> TlsRecordForwarder:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, parser: _RecordParser
        ) -> None:
            try:
                while data := await source.read(65536):
                    parser.feed(data, time.monotonic())
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    sink.close()

        for task in (
            asyncio.create_task(pipe(reader, up_writer, self._sent)),
            asyncio.create_task(pipe(up_reader, writer, self._parser)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


async def raw_tls_exchange(
    forwarder: TlsRecordForwarder, request: bytes, *, settle: float = 0.3
) -> tuple[bytes, list[TlsRecord]]:
    """One HTTP/1.1 request (``request``: head and body, ``connection: close``) on a fresh TLS
    connection through ``forwarder``: the raw response and the application-data records the
    forwarder saw for it (the handshake, and the session tickets that follow it, are left out:
    the service's signature varies in length, and says nothing about the answer)."""
    from tests.integration.server.conftest import tls_client_context

    reader, writer = await asyncio.open_connection(
        "127.0.0.1", forwarder.port, ssl=tls_client_context()
    )
    await asyncio.sleep(settle)  # the session tickets come right after the handshake
    mark = len(forwarder.records)
    writer.write(request)
    await writer.drain()
    response = bytearray()
    with contextlib.suppress(ConnectionError, OSError):
        async with asyncio.timeout(60):
            while data := await reader.read(65536):
                response += data
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    await asyncio.sleep(0.05)  # the forwarder parses what it passed on
    return bytes(response), forwarder.application_data(mark)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    first = data[at]
    size = 1 << (first >> 6)
    value = first & 0x3F
    for byte in data[at + 1 : at + size]:
        value = (value << 8) | byte
    return value, at + size


def ohttp_chunks(pieces: list[tuple[float, bytes]], nonce_size: int) -> list[TlsRecord]:
    """The chunks of a chunked OHTTP response body that arrived as ``pieces`` (arrival time,
    bytes), each with its sealed length and the time its last byte arrived (content type 0)."""
    outer = b"".join(piece for _, piece in pieces)
    ends, total = [], 0
    for at, piece in pieces:
        total += len(piece)
        ends.append((total, at))
    return [
        TlsRecord(0, length, next(at for total, at in ends if total >= end))
        for length, end in _chunk_spans(outer, nonce_size)
    ]


def bursts(records: list[TlsRecord], gap: float, framing: int, bucket: int) -> list[float]:
    """The buckets of payload per burst: records less than ``gap`` seconds apart are one burst
    (what arrives together: how pieces that came together are cut into records is scheduling,
    not content); each record's payload is its length less ``framing``."""
    out: list[float] = []
    last = None
    for record in records:
        buckets = (record.length - framing) / bucket
        if last is not None and record.at - last < gap:
            out[-1] += buckets
        else:
            out.append(buckets)
        last = record.at
    return out


def _chunk_spans(outer: bytes, nonce_size: int) -> list[tuple[int, int]]:
    spans = []
    at = nonce_size
    while at < len(outer):
        length, at = _varint(outer, at)
        if length == 0:  # the final chunk: the rest of the body
            spans.append((len(outer) - at, len(outer)))
            break
        at += length
        spans.append((length, at))
    return spans


def ohttp_chunk_lengths(outer: bytes, nonce_size: int) -> list[int]:
    """The sealed lengths of the chunks of a chunked OHTTP response body, the final one last."""
    return [length for length, _ in _chunk_spans(outer, nonce_size)]
