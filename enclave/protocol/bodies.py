"""Request bodies as the service and the local proxy take them: one ``Content-Length`` parser
and one reader of an ASGI request body, for every place a body is read (the body guard in front
of the served app, the OHTTP gateway's outer request, the inference routes, the proxy).

``Content-Length`` (RFC 9110 section 8.6) is ``1*DIGIT``, nothing else: no sign, no
whitespace, no list (``5,5``), no non-ASCII digit; at most :data:`MAX_CONTENT_LENGTH_DIGITS`
digits (so no value is ever parsed into a number larger than any limit). A field given more
than once must repeat the same value. Anything else is :class:`InvalidContentLengthError`,
which every caller turns into the typed 400 ``invalid_content_length``.

The reader takes an ASGI ``receive`` callable (no I/O of its own): pieces counted against a
limit as they arrive (:class:`BodyTooLargeError` past it), each handed to ``take`` first (a
shared budget may refuse it by raising), the whole joined once at the end (a body that came as
one piece is not copied). A declared length the body does not match is
:class:`InvalidContentLengthError` too: through the OHTTP gateway the inner request's framing
is Binary HTTP's, and a field that disagrees with it is a malformed request, never a hint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final

from enclave.protocol.errors import ProtocolError

__all__ = [
    "MAX_CONTENT_LENGTH_DIGITS",
    "BodyIncompleteError",
    "BodyTooLargeError",
    "InvalidContentLengthError",
    "content_length",
    "read_body",
    "stream_body",
]

#: 10**16 bytes is beyond every limit the service or the proxy has; a longer field is refused
#: as invalid rather than parsed.
MAX_CONTENT_LENGTH_DIGITS: Final = 16

_DIGITS: Final = frozenset(b"0123456789")

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class InvalidContentLengthError(ProtocolError):
    """A ``Content-Length`` that is not ``1*DIGIT``, too long, repeated with another value, or
    not the length of the body that came."""


class BodyTooLargeError(ProtocolError):
    """The body (declared or counted while reading) is over the limit."""


class BodyIncompleteError(ProtocolError):
    """The client disconnected before its body was complete."""


def content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The declared length of ASGI ``headers`` (names lower-case, as ASGI gives them), or
    ``None`` when there is no ``content-length`` field."""
    declared: bytes | None = None
    for name, value in headers:
        if name.lower() != b"content-length":
            continue
        value = bytes(value)
        if not value or len(value) > MAX_CONTENT_LENGTH_DIGITS or not _DIGITS.issuperset(value):
            raise InvalidContentLengthError("Content-Length must be 1 to 16 ASCII digits")
        if declared is not None and value != declared:
            raise InvalidContentLengthError("Content-Length given twice with different values")
        declared = value
    return None if declared is None else int(declared)


async def stream_body(
    receive: Receive,
    limit: int,
    sink: Callable[[bytes], None],
    *,
    declared: int | None = None,
) -> int:
    """Each piece of the body to ``sink`` as it arrives; the number of bytes read."""
    if declared is not None and declared > limit:
        raise BodyTooLargeError
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BodyIncompleteError
        data = bytes(message.get("body", b""))
        if data:
            total += len(data)
            if total > limit:
                raise BodyTooLargeError
            if declared is not None and total > declared:
                raise InvalidContentLengthError("more body than Content-Length declared")
            sink(data)
        if not message.get("more_body", False):
            if declared is not None and total != declared:
                raise InvalidContentLengthError("less body than Content-Length declared")
            return total


async def read_body(
    receive: Receive,
    limit: int,
    *,
    declared: int | None = None,
    take: Callable[[int], None] | None = None,
) -> bytes:
    """The whole body, at most ``limit`` bytes; ``take(size)`` is called for each piece before
    it is kept (it may raise to refuse it)."""
    pieces: list[bytes] = []

    def keep(data: bytes) -> None:
        if take is not None:
            take(len(data))
        pieces.append(data)

    await stream_body(receive, limit, keep, declared=declared)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)
