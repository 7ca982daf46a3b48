"""The padding policy (issue 19): sizes are whole buckets, and parsers read the same thing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave.client._anthropic_stream import SseDecoder
from enclave.protocol import bhttp
from enclave.protocol.padding import (
    bhttp_padding,
    json_padding,
    keep_alive,
    pad_events,
    padded_length,
    strip_event_padding,
)

EVENT = b'data: {"choices":[{"delta":{"content":" abcdefghijkl"}}]}\n\n'
DONE = b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("length", "bucket", "expected"),
    [(0, 256, 0), (1, 256, 256), (256, 256, 256), (257, 256, 512), (5, 0, 5)],
)
def test_padded_length(length: int, bucket: int, expected: int) -> None:
    assert padded_length(length, bucket) == expected


def test_each_event_is_a_whole_number_of_buckets() -> None:
    padded = pad_events(EVENT + DONE, 256)
    assert len(padded) == 512
    assert padded.count(b"\n:") == 1
    assert padded.startswith(b":")
    assert strip_event_padding(padded) == EVENT + DONE
    assert len(pad_events(DONE, 256)) == 256
    assert len(pad_events(b"x" * 255, 256)) == 512  # the comment line needs 2 bytes of room


def test_grouping_changes_no_total() -> None:
    alone = len(pad_events(EVENT, 256)) + len(pad_events(EVENT, 256)) + len(pad_events(DONE, 256))
    assert len(pad_events(EVENT + EVENT + DONE, 256)) == alone


@given(st.lists(st.text(min_size=0, max_size=600), min_size=1, max_size=5))
def test_parsers_read_the_same_events(contents: list[str]) -> None:
    events = b"".join(
        b"data: " + json.dumps({"content": text}).encode() + b"\n\n" for text in contents
    )
    padded = pad_events(events + DONE, 256)
    assert len(padded) % 256 == 0
    assert SseDecoder().feed(padded) == SseDecoder().feed(events + DONE)
    assert strip_event_padding(padded) == events + DONE


def test_bucket_zero_is_no_padding() -> None:
    assert pad_events(EVENT, 0) == EVENT
    assert json_padding(10, 0) == b""
    assert bhttp_padding(10, 0) == 0


def test_keep_alive_is_an_empty_bucket() -> None:
    assert keep_alive(256) == b":" + b" " * 254 + b"\n"
    assert SseDecoder().feed(keep_alive(256) + DONE) == ["[DONE]"]


def test_json_padding_keeps_the_document() -> None:
    body = b'{"id":"x","choices":[]}'
    padded = body + json_padding(len(body), 256)
    assert len(padded) == 256
    assert json.loads(padded) == json.loads(body)


def test_the_decoders_strip_binary_http_zero_padding() -> None:
    request = bhttp.Request(b"POST", b"https", b"enclave", b"/v1/chat/completions", (), b"{}")
    for indeterminate in (False, True):
        plain = bhttp.encode_request(request, indeterminate=indeterminate)
        padding = bhttp_padding(len(plain), 256)
        padded = bhttp.encode_request(request, indeterminate=indeterminate, padding=padding)
        assert len(padded) == 256
        assert bhttp.decode_request(padded) == bhttp.decode_request(plain)
    response = bhttp.Response(200, ((b"content-type", b"application/json"),), b"{}")
    plain = bhttp.encode_response(response)
    padded = bhttp.encode_response(response, padding=bhttp_padding(len(plain), 256))
    assert len(padded) == 256
    assert bhttp.decode_response(padded) == bhttp.decode_response(plain)
