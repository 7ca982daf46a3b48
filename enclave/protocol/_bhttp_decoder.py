"""Incremental Binary HTTP decoders (RFC 9292): feed bytes as they arrive, receive events.

The decoder keeps one ``bytearray`` and a read offset, and drops consumed bytes after every
``feed`` (CPython deletes a bytearray prefix in constant time), so input split into many
pieces costs linear time. Each unit (a varint, the control data, one field line, a known-length
field section) is parsed only once all of its bytes are present; declared lengths are checked
against the named limits as soon as they are read, before any waiting. Content is never
buffered: it is passed on as ``BodyChunk`` events as soon as its bytes arrive.
"""

from __future__ import annotations

from typing import cast

from enclave.protocol._bhttp_fields import (
    MAX_CONTROL_DATA_SIZE,
    MAX_FIELD_LINES,
    MAX_FIELD_SECTION_SIZE,
    MAX_INFORMATIONAL_RESPONSES,
    Field,
    control_data_problem,
    field_problem,
    field_section_problem,
)
from enclave.protocol._bhttp_types import (
    BodyChunk,
    InformationalHead,
    MessageEnd,
    RequestEvent,
    RequestHead,
    ResponseEvent,
    ResponseHead,
    Trailers,
)
from enclave.protocol._varint import decode_varint
from enclave.protocol.errors import MalformedMessageError, TruncatedMessageError

__all__ = ["RequestDecoder", "ResponseDecoder"]

_Event = RequestHead | InformationalHead | ResponseHead | BodyChunk | Trailers | MessageEnd

# Parser states, in message order.
_FRAMING = 0
_CONTROL = 1  # request control data
_STATUS = 2  # response status code (informational or final)
_INFO_FIELDS = 3  # header section of an informational response
_HEADERS = 4
_CONTENT = 5  # before a content length (known) or a chunk length (indeterminate)
_CONTENT_DATA = 6  # inside content bytes
_TRAILERS = 7
_DONE = 8  # only zero padding may follow


def _parse_known_section(data: bytes) -> tuple[Field, ...]:
    """Parse the field lines of a known-length field section whose bytes are all present."""
    lines: list[Field] = []
    pos, end = 0, len(data)
    try:
        while pos < end:
            name_length, pos = decode_varint(data, pos)
            if name_length == 0:
                raise MalformedMessageError("empty field name")
            name_end = pos + name_length
            if name_end > end:
                raise MalformedMessageError("field name runs past its section")
            value_length, value_start = decode_varint(data, name_end)
            value_end = value_start + value_length
            if value_end > end:
                raise MalformedMessageError("field value runs past its section")
            field = (data[pos:name_end], data[value_start:value_end])
            problem = field_problem(field[0], field[1])
            if problem is not None:
                raise MalformedMessageError(problem)
            lines.append(field)
            if len(lines) > MAX_FIELD_LINES:
                raise MalformedMessageError("field section exceeds MAX_FIELD_LINES")
            pos = value_end
    except TruncatedMessageError as exc:
        raise MalformedMessageError("varint runs past its field section") from exc
    return tuple(lines)


class _Decoder:
    """The state machine shared by both decoders."""

    _is_response = False

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._state = _FRAMING
        self._indeterminate = False
        self._lines: list[Field] = []  # field lines of an unfinished indeterminate section
        self._section_size = 0
        self._content_left = 0
        self._content_started = False
        self._control: tuple[bytes, bytes, bytes, bytes] = (b"", b"", b"", b"")
        self._status = 0
        self._informational = 0
        self._finished = False
        self._failed = False

    # -- driving -------------------------------------------------------------------------

    def _feed(self, data: bytes | bytearray | memoryview) -> list[_Event]:
        self._check_usable()
        if self._finished:
            raise ValueError("feed() called after finish()")
        events: list[_Event] = []
        try:
            if self._state == _DONE:
                self._check_padding(bytes(data), 0)
                return events
            self._buf += data
            while self._step(events):
                pass
        except MalformedMessageError:
            self._failed = True
            raise
        del self._buf[: self._pos]
        self._pos = 0
        return events

    def _finish(self) -> list[_Event]:
        self._check_usable()
        if self._finished:
            raise ValueError("finish() called twice")
        self._finished = True
        events: list[_Event] = []
        if self._state == _DONE:
            return events
        state, known = self._state, not self._indeterminate
        at_boundary = self._pos == len(self._buf)
        if at_boundary and state == _HEADERS and (known or not self._lines):
            events.append(self._head(()))
            state = _TRAILERS
        elif at_boundary and state == _CONTENT and (known or not self._content_started):
            state = _TRAILERS
        if at_boundary and state == _TRAILERS and (known or not self._lines):
            events += (Trailers(()), MessageEnd())
            self._state = _DONE
            return events
        self._failed = True
        raise TruncatedMessageError("the message ended before it was complete")

    def _check_usable(self) -> None:
        if self._failed:
            raise MalformedMessageError("the message already failed to decode")

    def _step(self, events: list[_Event]) -> bool:
        """Advance by one unit; return False when more input is needed."""
        state = self._state
        if state == _CONTENT_DATA:
            return self._content_data(events)
        if state == _CONTENT:
            return self._content_length()
        if state in (_HEADERS, _TRAILERS, _INFO_FIELDS):
            fields = self._section()
            if fields is None:
                return False
            if state == _HEADERS:
                events.append(self._head(fields))
                self._state = _CONTENT
            elif state == _TRAILERS:
                events += (Trailers(fields), MessageEnd())
                self._state = _DONE
                self._check_padding(self._buf, self._pos)
                self._pos = len(self._buf)
                return False
            else:
                events.append(InformationalHead(self._status, fields))
                self._state = _STATUS
            return True
        if state == _FRAMING:
            return self._framing()
        if state == _CONTROL:
            return self._control_data()
        if state == _STATUS:
            return self._status_code()
        return False

    def _head(self, fields: tuple[Field, ...]) -> _Event:
        if self._is_response:
            return ResponseHead(self._status, fields)
        return RequestHead(*self._control, fields)

    # -- units ---------------------------------------------------------------------------

    def _peek(self, pos: int) -> tuple[int, int] | None:
        try:
            return decode_varint(self._buf, pos)
        except TruncatedMessageError:
            return None

    def _framing(self) -> bool:
        read = self._peek(self._pos)
        if read is None:
            return False
        framing, self._pos = read
        if framing > 3:
            raise MalformedMessageError("unknown framing indicator")
        if bool(framing & 1) != self._is_response:
            kind = "response" if framing & 1 else "request"
            raise MalformedMessageError(f"framing indicator announces a {kind}")
        self._indeterminate = framing >= 2
        self._state = _STATUS if self._is_response else _CONTROL
        return True

    def _control_data(self) -> bool:
        buf, pos, total = self._buf, self._pos, 0
        items: list[bytes] = []
        for _ in range(4):
            read = self._peek(pos)
            if read is None:
                return False
            length, pos = read
            total += length
            if total > MAX_CONTROL_DATA_SIZE:
                raise MalformedMessageError("request control data exceeds MAX_CONTROL_DATA_SIZE")
            if pos + length > len(buf):
                return False
            items.append(bytes(buf[pos : pos + length]))
            pos += length
        method, scheme, authority, path = items
        problem = control_data_problem(method, scheme, authority, path)
        if problem is not None:
            raise MalformedMessageError(problem)
        self._control = (method, scheme, authority, path)
        self._pos = pos
        self._state = _HEADERS
        return True

    def _status_code(self) -> bool:
        read = self._peek(self._pos)
        if read is None:
            return False
        status, self._pos = read
        if 100 <= status <= 199:
            self._informational += 1
            if self._informational > MAX_INFORMATIONAL_RESPONSES:
                raise MalformedMessageError("more than MAX_INFORMATIONAL_RESPONSES")
            self._state = _INFO_FIELDS
        elif 200 <= status <= 599:
            self._state = _HEADERS
        else:
            raise MalformedMessageError("status code is not in 100..599")
        self._status = status
        return True

    def _section(self) -> tuple[Field, ...] | None:
        if not self._indeterminate:
            read = self._peek(self._pos)
            if read is None:
                return None
            length, start = read
            if length > MAX_FIELD_SECTION_SIZE:
                raise MalformedMessageError("field section exceeds MAX_FIELD_SECTION_SIZE")
            end = start + length
            if end > len(self._buf):
                return None
            fields = _parse_known_section(bytes(self._buf[start:end]))
            self._pos = end
            return fields
        while True:
            read = self._peek(self._pos)
            if read is None:
                return None
            name_length, name_start = read
            if name_length == 0:  # the terminator
                self._pos = name_start
                fields = tuple(self._lines)
                self._lines.clear()
                self._section_size = 0
                return fields
            if not self._field_line(name_length, name_start):
                return None

    def _field_line(self, name_length: int, name_start: int) -> bool:
        """Consume one field line of an indeterminate-length section if it is all present."""
        buf, line_start = self._buf, self._pos
        name_end = name_start + name_length
        problem = field_section_problem(
            self._section_size + name_end - line_start, len(self._lines) + 1
        )
        if problem is not None:
            raise MalformedMessageError(problem)
        if name_end > len(buf):
            return False
        read = self._peek(name_end)
        if read is None:
            return False
        value_length, value_start = read
        value_end = value_start + value_length
        if self._section_size + value_end - line_start > MAX_FIELD_SECTION_SIZE:
            raise MalformedMessageError("field section exceeds MAX_FIELD_SECTION_SIZE")
        if value_end > len(buf):
            return False
        field = (bytes(buf[name_start:name_end]), bytes(buf[value_start:value_end]))
        problem = field_problem(field[0], field[1])
        if problem is not None:
            raise MalformedMessageError(problem)
        self._lines.append(field)
        self._section_size += value_end - line_start
        self._pos = value_end
        return True

    def _content_length(self) -> bool:
        read = self._peek(self._pos)
        if read is None:
            return False
        length, self._pos = read
        if length == 0:
            self._state = _TRAILERS
        else:
            self._content_left = length
            self._content_started = True
            self._state = _CONTENT_DATA
        return True

    def _content_data(self, events: list[_Event]) -> bool:
        available = len(self._buf) - self._pos
        if available == 0:
            return False
        size = min(available, self._content_left)
        end = self._pos + size
        events.append(BodyChunk(bytes(self._buf[self._pos : end])))
        self._pos = end
        self._content_left -= size
        if self._content_left == 0:
            self._state = _CONTENT if self._indeterminate else _TRAILERS
        return True

    @staticmethod
    def _check_padding(data: bytes | bytearray, start: int) -> None:
        if data.count(0, start) != len(data) - start:
            raise MalformedMessageError("nonzero byte in padding")


class RequestDecoder(_Decoder):
    """Decode one request incrementally. Events: ``RequestHead``, ``BodyChunk``...,
    ``Trailers``, ``MessageEnd``."""

    _is_response = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[RequestEvent]:
        """Consume ``data``; return the events it completes. Raises ``MalformedMessageError``."""
        # A request decoder never produces InformationalHead or ResponseHead.
        return cast("list[RequestEvent]", self._feed(data))

    def finish(self) -> list[RequestEvent]:
        """Declare the end of input; return the events a permitted truncation completes.

        Raises ``TruncatedMessageError`` when the message is incomplete.
        """
        return cast("list[RequestEvent]", self._finish())


class ResponseDecoder(_Decoder):
    """Decode one response incrementally. Events: ``InformationalHead``..., ``ResponseHead``,
    ``BodyChunk``..., ``Trailers``, ``MessageEnd``."""

    _is_response = True

    def feed(self, data: bytes | bytearray | memoryview) -> list[ResponseEvent]:
        """Consume ``data``; return the events it completes. Raises ``MalformedMessageError``."""
        # A response decoder never produces RequestHead.
        return cast("list[ResponseEvent]", self._feed(data))

    def finish(self) -> list[ResponseEvent]:
        """Declare the end of input; return the events a permitted truncation completes.

        Raises ``TruncatedMessageError`` when the message is incomplete.
        """
        return cast("list[ResponseEvent]", self._finish())
