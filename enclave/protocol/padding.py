"""Size padding: every piece an observer can measure is rounded up to a bucket (issue 19).

One policy, used by every path (sans-IO, no settings read here): a piece of ``n`` bytes is
sent as :func:`padded_length` ``(n, bucket)`` bytes, the smallest multiple of ``bucket`` that
is at least ``n`` (plus the room the padding itself needs). ``bucket`` 0 means no padding.
What each path pads, and how (docs/threat-model.md, "Sizes and timing"):

- **Server-sent events** (the RA-TLS stream, and the inner response of chunked OHTTP, which
  is that same stream sealed chunk by chunk): each piece of whole events the relay sends is
  split into its events and each event is prefixed with one SSE *comment line*, ``:`` then
  spaces then LF (:func:`pad_events`), so every event is a whole number of buckets whether it
  travels alone or with others.
  The WHATWG HTML standard ("Interpreting an event stream") says a line starting with a colon
  is ignored, so every conforming parser (the openai and anthropic SDKs, browsers'
  EventSource, the project's own client and proxy) drops it, and the events parsed are the
  same, byte for byte, as without padding. A JSON field inside ``data`` (what some providers
  did) would show up in SDK objects, cannot pad ``data: [DONE]``, and needs the JSON edited;
  the comment needs none of that. The comment goes *first*: a piece always starts at an
  event boundary, so the comment never lands inside an event's data.
- **JSON bodies** (non-streamed answers): trailing spaces (:func:`json_padding`); JSON allows
  whitespace after the value (RFC 8259 section 2), so every parser reads the same document.
- **Binary HTTP messages** (OHTTP requests and whole responses): zero bytes after the message,
  which RFC 9292 section 3.8 allows and every decoder must ignore (:func:`bhttp_padding`).

A keep-alive piece (:func:`keep_alive`, for a fixed cadence) is a comment-only piece of one
bucket: parsers ignore it entirely.
"""

from __future__ import annotations

import re

__all__ = [
    "DEFAULT_BUCKET",
    "bhttp_padding",
    "json_padding",
    "keep_alive",
    "pad_events",
    "padded_length",
    "strip_event_padding",
]

#: The default bucket in bytes (setting ``stream_padding_bytes``; clients pad requests to it).
DEFAULT_BUCKET = 256
#: The shortest SSE comment line: ``:`` and LF.
_MIN_COMMENT = 2
_PADDING_LINE = re.compile(rb"^:[ ]*\n", re.MULTILINE)


def padded_length(length: int, bucket: int) -> int:
    """The smallest multiple of ``bucket`` that is ``>= length`` (``length`` itself for 0)."""
    if length < 0 or bucket < 0:
        raise ValueError("length and bucket must not be negative")
    if bucket == 0:
        return length
    return -(-length // bucket) * bucket


def pad_events(piece: bytes, bucket: int) -> bytes:
    """``piece`` (SSE events, starting at an event boundary) with each event (each run ending
    in a blank line, LF LF; and what follows the last one) after one comment line that makes
    its length a multiple of ``bucket``. Each event on its own: how events that arrived
    together are grouped into pieces then changes no total. ``bucket`` 0 returns ``piece``."""
    if bucket == 0:
        return piece
    if piece.count(b"\n\n") <= 1:
        return _pad_one(piece, bucket)
    events = piece.split(b"\n\n")
    padded = [_pad_one(event + b"\n\n", bucket) for event in events[:-1]]
    if events[-1]:
        padded.append(_pad_one(events[-1], bucket))
    return b"".join(padded)


def _pad_one(event: bytes, bucket: int) -> bytes:
    target = padded_length(len(event) + _MIN_COMMENT, bucket)
    return b":" + b" " * (target - len(event) - _MIN_COMMENT) + b"\n" + event


def keep_alive(bucket: int) -> bytes:
    """A piece that carries nothing (one SSE comment line), of one bucket (2 bytes for 0)."""
    return _pad_one(b"", bucket) if bucket else b":\n"


def json_padding(length: int, bucket: int) -> bytes:
    """The spaces to append to a JSON body of ``length`` bytes to fill its bucket."""
    return b" " * (padded_length(length, bucket) - length)


def bhttp_padding(length: int, bucket: int) -> int:
    """How many zero bytes to append to a Binary HTTP message of ``length`` bytes."""
    return padded_length(length, bucket) - length


def strip_event_padding(data: bytes) -> bytes:
    """``data`` (an SSE stream or part of one) without the padding comment lines (``:``, only
    spaces, LF): the bytes as they were before :func:`pad_events`, and what a parser reads."""
    return _PADDING_LINE.sub(b"", data)
