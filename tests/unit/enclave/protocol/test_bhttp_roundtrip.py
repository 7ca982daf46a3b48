"""Round trips: whole-message codecs in both forms, the incremental decoders on input split at
arbitrary points, and the streaming encoders. The strategies here are shared with
test_bhttp_invalid.py."""

import itertools
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave.protocol.bhttp import (
    BodyChunk,
    InformationalHead,
    InformationalResponse,
    MessageEnd,
    Request,
    RequestDecoder,
    RequestHead,
    Response,
    ResponseDecoder,
    ResponseHead,
    StreamingRequestEncoder,
    StreamingResponseEncoder,
    Trailers,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

_LOWER_TCHARS = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_lowercase
_VALUE_BYTES = [b for b in range(256) if b not in (0x00, 0x0A, 0x0D)]
_TARGET_CHARS = string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@/?[]"

names = st.text(_LOWER_TCHARS, min_size=1, max_size=16).map(str.encode)
values = (
    st.lists(st.sampled_from(_VALUE_BYTES), max_size=40).map(bytes).map(lambda v: v.strip(b" \t"))
)
field_sections = st.lists(st.tuples(names, values), max_size=6).map(tuple)
contents = st.binary(max_size=300)
methods = st.sampled_from([b"GET", b"POST", b"DELETE", b"OPTIONS"]) | st.text(
    _LOWER_TCHARS + string.ascii_uppercase, min_size=1, max_size=10
).map(str.encode)
schemes = st.sampled_from([b"https", b"http", b"coap+tcp"])
authorities = st.text(_TARGET_CHARS, max_size=30).map(str.encode)
paths = st.text(_TARGET_CHARS, max_size=40).map(lambda p: b"/" + p.encode())

requests = st.builds(
    Request,
    method=methods,
    scheme=schemes,
    authority=authorities,
    path=paths,
    headers=field_sections,
    content=contents,
    trailers=field_sections,
)
interim_responses = st.builds(
    InformationalResponse, status=st.integers(100, 199), headers=field_sections
)
responses = st.builds(
    Response,
    status=st.integers(200, 599),
    headers=field_sections,
    content=contents,
    trailers=field_sections,
    informational=st.lists(interim_responses, max_size=3).map(tuple),
)
forms = st.booleans()
paddings = st.integers(0, 20)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def assemble_request(events: list[Any]) -> Request:
    """Rebuild a request from events, checking the order the decoder promises."""
    assert isinstance(events[0], RequestHead)
    assert isinstance(events[-2], Trailers)
    assert isinstance(events[-1], MessageEnd)
    chunks = events[1:-2]
    assert all(isinstance(c, BodyChunk) and c.data for c in chunks)
    head = events[0]
    return Request(
        head.method,
        head.scheme,
        head.authority,
        head.path,
        head.headers,
        b"".join(c.data for c in chunks),
        events[-2].fields,
    )


def assemble_response(events: list[Any]) -> Response:
    """Rebuild a response from events, checking the order the decoder promises."""
    interim = []
    while isinstance(events[0], InformationalHead):
        interim.append(InformationalResponse(events[0].status, events[0].headers))
        events = events[1:]
    assert isinstance(events[0], ResponseHead)
    assert isinstance(events[-2], Trailers)
    assert isinstance(events[-1], MessageEnd)
    chunks = events[1:-2]
    assert all(isinstance(c, BodyChunk) and c.data for c in chunks)
    return Response(
        events[0].status,
        events[0].headers,
        b"".join(c.data for c in chunks),
        events[-2].fields,
        tuple(interim),
    )


def feed_all(decoder: RequestDecoder | ResponseDecoder, pieces: list[bytes]) -> list[Any]:
    events: list[Any] = []
    for piece in pieces:
        events += decoder.feed(piece)
    events += decoder.finish()
    return events


@given(requests, forms, paddings)
def test_request_round_trip(request: Request, indeterminate: bool, padding: int) -> None:
    encoded = encode_request(request, indeterminate=indeterminate, padding=padding)
    assert encoded[0] == (2 if indeterminate else 0)
    assert encoded.endswith(bytes(padding))
    assert decode_request(encoded) == request


@given(responses, forms, paddings)
def test_response_round_trip(response: Response, indeterminate: bool, padding: int) -> None:
    encoded = encode_response(response, indeterminate=indeterminate, padding=padding)
    assert encoded[0] == (3 if indeterminate else 1)
    assert decode_response(encoded) == response


@given(requests, forms, paddings, st.lists(st.integers(0, 10_000), max_size=12))
def test_request_decoder_on_split_input(
    request: Request, indeterminate: bool, padding: int, cuts: list[int]
) -> None:
    encoded = encode_request(request, indeterminate=indeterminate, padding=padding)
    events = feed_all(RequestDecoder(), split(encoded, cuts))
    assert assemble_request(events) == request


@given(responses, forms, paddings, st.lists(st.integers(0, 10_000), max_size=12))
def test_response_decoder_on_split_input(
    response: Response, indeterminate: bool, padding: int, cuts: list[int]
) -> None:
    encoded = encode_response(response, indeterminate=indeterminate, padding=padding)
    events = feed_all(ResponseDecoder(), split(encoded, cuts))
    assert assemble_response(events) == response


@pytest.mark.parametrize("indeterminate", [False, True])
def test_decoders_fed_one_byte_at_a_time(indeterminate: bool) -> None:
    response = Response(
        207,
        ((b"content-type", b"text/event-stream"),),
        b"data: 1\n\n" * 50,
        ((b"x-usage", b"12"),),
        (InformationalResponse(103, ((b"link", b"</a>"),)),),
    )
    encoded = encode_response(response, indeterminate=indeterminate, padding=3)
    pieces = [encoded[i : i + 1] for i in range(len(encoded))]
    assert assemble_response(feed_all(ResponseDecoder(), pieces)) == response


def test_known_length_content_is_passed_on_as_it_arrives() -> None:
    encoded = encode_request(Request(b"POST", b"https", b"a", b"/", content=b"x" * 100))
    decoder = RequestDecoder()
    head_end = encoded.index(b"x")
    assert decoder.feed(encoded[: head_end + 10]) == [
        RequestHead(b"POST", b"https", b"a", b"/", ()),
        BodyChunk(b"x" * 10),
    ]
    assert decoder.feed(encoded[head_end + 10 : head_end + 30]) == [BodyChunk(b"x" * 20)]


def test_field_names_are_lowercased_on_encode() -> None:
    request = Request(b"GET", b"https", b"a", b"/", headers=((b"Content-Type", b"text/plain"),))
    decoded = decode_request(encode_request(request))
    assert decoded.headers == ((b"content-type", b"text/plain"),)


@given(
    st.integers(200, 599),
    field_sections,
    st.lists(interim_responses, max_size=2).map(tuple),
    st.lists(contents, max_size=6),
    field_sections,
    paddings,
)
def test_streaming_response_encoder(status, headers, interim, chunks, trailers, padding) -> None:
    encoder = StreamingResponseEncoder()
    pieces = [encoder.head(status, headers, interim)]
    pieces += [encoder.body(chunk) for chunk in chunks]
    pieces.append(encoder.end(trailers, padding=padding))
    expected = Response(status, headers, b"".join(chunks), trailers, interim)
    assert decode_response(b"".join(pieces)) == expected
    # Fed piece by piece, each non-empty body() yields exactly its own chunk, at once.
    decoder = ResponseDecoder()
    per_piece = [decoder.feed(piece) for piece in pieces]
    assert decoder.finish() == []
    assert [[BodyChunk(c)] if c else [] for c in chunks] == per_piece[1:-1]
    assert assemble_response([e for events in per_piece for e in events]) == expected


@given(requests, st.lists(contents, max_size=6))
def test_streaming_request_encoder(request: Request, chunks: list[bytes]) -> None:
    encoder = StreamingRequestEncoder()
    head = encoder.head(
        request.method, request.scheme, request.authority, request.path, request.headers
    )
    body = b"".join(encoder.body(chunk) for chunk in chunks)
    tail = encoder.end(request.trailers)
    expected = Request(
        request.method,
        request.scheme,
        request.authority,
        request.path,
        request.headers,
        b"".join(chunks),
        request.trailers,
    )
    assert decode_request(head + body + tail) == expected
    assert assemble_request(feed_all(RequestDecoder(), [head, body, tail])) == expected


def test_streaming_encoder_writes_no_chunk_for_empty_data() -> None:
    encoder = StreamingResponseEncoder()
    encoder.head(200)
    assert encoder.body(b"") == b""
    assert encoder.body(b"ab") == b"\x02ab"
