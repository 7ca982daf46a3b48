"""Binary HTTP encoders (RFC 9292): whole messages in either form, and streaming encoders.

Encoders refuse (``ValueError``) whatever the decoders would reject, so every encoding they
produce decodes. They never truncate: empty sections are written out as zero lengths.
"""

from __future__ import annotations

from collections.abc import Iterable

from enclave.protocol._bhttp_fields import (
    Field,
    control_data_problem,
    encode_field_lines,
    final_status_problem,
    informational_status_problem,
)
from enclave.protocol._bhttp_types import InformationalResponse, Request, Response
from enclave.protocol._varint import encode_varint

__all__ = [
    "StreamingRequestEncoder",
    "StreamingResponseEncoder",
    "encode_request",
    "encode_response",
]

_KNOWN_REQUEST, _KNOWN_RESPONSE, _INDETERMINATE_REQUEST, _INDETERMINATE_RESPONSE = 0, 1, 2, 3


def _section(fields: Iterable[Field], indeterminate: bool) -> bytes:
    lines = encode_field_lines(fields)
    if indeterminate:
        return lines + b"\x00"
    return encode_varint(len(lines)) + lines


def _control_data(method: bytes, scheme: bytes, authority: bytes, path: bytes) -> bytes:
    problem = control_data_problem(method, scheme, authority, path)
    if problem is not None:
        raise ValueError(problem)
    return b"".join(
        (
            encode_varint(len(method)),
            method,
            encode_varint(len(scheme)),
            scheme,
            encode_varint(len(authority)),
            authority,
            encode_varint(len(path)),
            path,
        )
    )


def _informational(responses: Iterable[InformationalResponse], indeterminate: bool) -> bytes:
    parts: list[bytes] = []
    for interim in responses:
        problem = informational_status_problem(interim.status)
        if problem is not None:
            raise ValueError(problem)
        parts += (encode_varint(interim.status), _section(interim.headers, indeterminate))
    return b"".join(parts)


def _final_status(status: int) -> bytes:
    problem = final_status_problem(status)
    if problem is not None:
        raise ValueError(problem)
    return encode_varint(status)


def _content(content: bytes, indeterminate: bool) -> bytes:
    if not indeterminate:
        return encode_varint(len(content)) + content
    if not content:
        return b"\x00"
    return encode_varint(len(content)) + content + b"\x00"


def _padding(padding: int) -> bytes:
    if padding < 0:
        raise ValueError("padding must not be negative")
    return bytes(padding)


def encode_request(request: Request, *, indeterminate: bool = False, padding: int = 0) -> bytes:
    """Encode ``request`` in the known-length (default) or indeterminate-length form, followed
    by ``padding`` zero bytes. Raises ``ValueError`` for a request the decoder would refuse."""
    return b"".join(
        (
            encode_varint(_INDETERMINATE_REQUEST if indeterminate else _KNOWN_REQUEST),
            _control_data(request.method, request.scheme, request.authority, request.path),
            _section(request.headers, indeterminate),
            _content(request.content, indeterminate),
            _section(request.trailers, indeterminate),
            _padding(padding),
        )
    )


def encode_response(response: Response, *, indeterminate: bool = False, padding: int = 0) -> bytes:
    """Encode ``response`` (informational responses first) in either form, followed by
    ``padding`` zero bytes. Raises ``ValueError`` for a response the decoder would refuse."""
    return b"".join(
        (
            encode_varint(_INDETERMINATE_RESPONSE if indeterminate else _KNOWN_RESPONSE),
            _informational(response.informational, indeterminate),
            _final_status(response.status),
            _section(response.headers, indeterminate),
            _content(response.content, indeterminate),
            _section(response.trailers, indeterminate),
            _padding(padding),
        )
    )


class _StreamingEncoder:
    """Indeterminate-length content and trailers, after a head the subclass writes."""

    def __init__(self) -> None:
        self._state = "new"

    def _begin(self) -> None:
        if self._state != "new":
            raise ValueError("head() may be called only once, first")
        self._state = "body"

    def body(self, data: bytes) -> bytes:
        """One content chunk; ``b""`` for empty ``data`` (a zero length would end the content)."""
        if self._state != "body":
            raise ValueError("body() must follow head() and precede end()")
        if not data:
            return b""
        return encode_varint(len(data)) + data

    def end(self, trailers: Iterable[Field] = (), *, padding: int = 0) -> bytes:
        """The content terminator, the trailer section and ``padding`` zero bytes."""
        if self._state != "body":
            raise ValueError("end() must follow head() and be called once")
        encoded = b"\x00" + _section(trailers, True) + _padding(padding)
        self._state = "ended"
        return encoded


class StreamingResponseEncoder(_StreamingEncoder):
    """Encode a response as it is produced, in the indeterminate-length form."""

    def head(
        self,
        status: int,
        headers: Iterable[Field] = (),
        informational: Iterable[InformationalResponse] = (),
    ) -> bytes:
        """The framing indicator, informational responses, final status and header section."""
        encoded = b"".join(
            (
                encode_varint(_INDETERMINATE_RESPONSE),
                _informational(informational, True),
                _final_status(status),
                _section(headers, True),
            )
        )
        self._begin()
        return encoded


class StreamingRequestEncoder(_StreamingEncoder):
    """Encode a request as it is produced, in the indeterminate-length form."""

    def head(
        self,
        method: bytes,
        scheme: bytes,
        authority: bytes,
        path: bytes,
        headers: Iterable[Field] = (),
    ) -> bytes:
        """The framing indicator, control data and header section."""
        encoded = b"".join(
            (
                encode_varint(_INDETERMINATE_REQUEST),
                _control_data(method, scheme, authority, path),
                _section(headers, True),
            )
        )
        self._begin()
        return encoded
