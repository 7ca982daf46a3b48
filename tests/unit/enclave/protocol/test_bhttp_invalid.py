"""Invalid, truncated and hostile Binary HTTP: every decoder raises only the typed errors, and
each kind of defect raises the specific one."""

import contextlib
from dataclasses import replace
from functools import partial

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave.protocol._varint import VARINT_MAX, encode_varint
from enclave.protocol.bhttp import (
    MAX_CONTROL_DATA_SIZE,
    MAX_FIELD_LINES,
    MAX_FIELD_SECTION_SIZE,
    MAX_INFORMATIONAL_RESPONSES,
    InformationalResponse,
    Request,
    RequestDecoder,
    Response,
    ResponseDecoder,
    StreamingRequestEncoder,
    StreamingResponseEncoder,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from enclave.protocol.errors import MalformedMessageError, TruncatedMessageError
from tests.unit.enclave.protocol.test_bhttp_examples import (
    RFC9292_INDETERMINATE_LENGTH_REQUEST,
    RFC9292_KNOWN_LENGTH_REQUEST,
    RFC9292_KNOWN_LENGTH_RESPONSE_WITH_TRAILER,
    RFC9292_RESPONSE_WITH_INFORMATIONAL,
)
from tests.unit.enclave.protocol.test_bhttp_roundtrip import forms, requests, responses, split

CONTROL = b"\x03GET\x05https\x01a\x01/"


def line(name: bytes, value: bytes) -> bytes:
    return encode_varint(len(name)) + name + encode_varint(len(value)) + value


def known_request(headers: bytes = b"", content: bytes = b"", trailers: bytes = b"") -> bytes:
    parts = [b"\x00", CONTROL, encode_varint(len(headers)), headers]
    parts += [encode_varint(len(content)), content, encode_varint(len(trailers)), trailers]
    return b"".join(parts)


def indeterminate_request(headers: bytes = b"", trailers: bytes = b"") -> bytes:
    return b"\x02" + CONTROL + headers + b"\x00" + b"\x00" + trailers + b"\x00"


def assert_malformed(decode, data: bytes) -> MalformedMessageError:
    """``decode`` raises MalformedMessageError itself, not its truncation subclass."""
    with pytest.raises(MalformedMessageError) as info:
        decode(data)
    assert type(info.value) is MalformedMessageError
    return info.value


def decode_incrementally(decoder_class, pieces: list[bytes]) -> None:
    decoder = decoder_class()
    for piece in pieces:
        decoder.feed(piece)
    decoder.finish()


# -- arbitrary input ---------------------------------------------------------------------------

framings = st.sampled_from([b"", b"\x00", b"\x01", b"\x02", b"\x03"])


@given(framings, st.binary(max_size=200), st.lists(st.integers(0, 400), max_size=6))
def test_arbitrary_bytes_raise_only_typed_errors(framing: bytes, tail: bytes, cuts) -> None:
    data = framing + tail
    for decode in (
        decode_request,
        decode_response,
        lambda d: decode_incrementally(RequestDecoder, split(d, cuts)),
        lambda d: decode_incrementally(ResponseDecoder, split(d, cuts)),
    ):
        with contextlib.suppress(MalformedMessageError):
            decode(data)


@given(
    st.one_of(
        st.tuples(requests.map(encode_request), st.just(decode_request)),
        st.tuples(responses.map(encode_response), st.just(decode_response)),
    ),
    st.integers(0, 10_000),
    st.integers(0, 255),
)
def test_mutated_messages_decode_or_raise_typed_errors(case, position: int, byte: int) -> None:
    encoded, decode = case
    mutated = bytearray(encoded)
    mutated[position % len(mutated)] = byte
    with contextlib.suppress(MalformedMessageError):
        decode(bytes(mutated))


# -- truncation --------------------------------------------------------------------------------


def permitted_cuts(message, encode) -> dict[int, Request | Response]:
    """Where an encoding may end (RFC 9292 sections 3.1, 3.2, 3.8), and what it then means.

    Cutting just before the trailer section, the content or the header section reads the
    parts cut off as empty: the result is another valid message, so such a cut cannot be
    detected here (chunked OHTTP's final-chunk AAD is what detects it on the wire).
    """
    permitted = {}
    emptied = message
    for dropped, part in enumerate(("trailers", "content", "headers")):
        emptied = replace(emptied, **{part: b"" if part == "content" else ()})
        shorter = encode(emptied)
        assert shorter.endswith(bytes(dropped + 1))  # each empty part is one zero byte
        permitted[len(shorter) - dropped - 1] = emptied
    return permitted


def check_every_cut(encoded: bytes, message, decode, decoder_class, encode, cuts) -> None:
    permitted = permitted_cuts(message, encode)
    permitted[len(encoded)] = message
    for cut in cuts:
        prefix = encoded[:cut]
        if cut in permitted:
            assert decode(prefix) == permitted[cut]
            continue
        with pytest.raises(TruncatedMessageError):
            decode(prefix)
        decoder = decoder_class()
        decoder.feed(prefix)  # a prefix of a valid message is never malformed
        with pytest.raises(TruncatedMessageError):
            decoder.finish()


def sampled_cuts(encoded: bytes, picks: list[int]) -> set[int]:
    near_end = {len(encoded) - k for k in range(5) if len(encoded) >= k}
    return near_end | {p % (len(encoded) + 1) for p in picks}


@given(requests, forms, st.lists(st.integers(0, 10_000), max_size=10))
def test_truncated_requests(request: Request, indeterminate: bool, picks: list[int]) -> None:
    encode = partial(encode_request, indeterminate=indeterminate)
    encoded = encode(request)
    cuts = sampled_cuts(encoded, picks)
    check_every_cut(encoded, request, decode_request, RequestDecoder, encode, cuts)


@given(responses, forms, st.lists(st.integers(0, 10_000), max_size=10))
def test_truncated_responses(response: Response, indeterminate: bool, picks: list[int]) -> None:
    encode = partial(encode_response, indeterminate=indeterminate)
    encoded = encode(response)
    cuts = sampled_cuts(encoded, picks)
    check_every_cut(encoded, response, decode_response, ResponseDecoder, encode, cuts)


REQUEST_CODEC = (decode_request, RequestDecoder, encode_request)
RESPONSE_CODEC = (decode_response, ResponseDecoder, encode_response)


@pytest.mark.parametrize(
    ("encoded", "codec", "indeterminate"),
    [
        (RFC9292_KNOWN_LENGTH_REQUEST, REQUEST_CODEC, False),
        (RFC9292_INDETERMINATE_LENGTH_REQUEST[:-10], REQUEST_CODEC, True),  # padding removed
        (RFC9292_RESPONSE_WITH_INFORMATIONAL, RESPONSE_CODEC, True),
        (RFC9292_KNOWN_LENGTH_RESPONSE_WITH_TRAILER, RESPONSE_CODEC, False),
    ],
    ids=["figure-7", "figure-8", "figure-10", "figure-12"],
)
def test_every_cut_of_the_rfc9292_examples(encoded, codec, indeterminate: bool) -> None:
    decode, decoder_class, encode = codec
    encode = partial(encode, indeterminate=indeterminate)
    assert encode(decode(encoded)) == encoded
    cuts = range(len(encoded) + 1)
    check_every_cut(encoded, decode(encoded), decode, decoder_class, encode, cuts)


def test_indeterminate_content_cut_between_chunks_is_truncated() -> None:
    encoder = StreamingResponseEncoder()
    data = encoder.head(200) + encoder.body(b"first") + encoder.body(b"second")
    with pytest.raises(TruncatedMessageError):
        decode_response(data)


def test_response_ending_after_an_informational_response_is_truncated() -> None:
    with pytest.raises(TruncatedMessageError):
        decode_response(b"\x01\x40\x67\x00")


def test_empty_input_is_truncated() -> None:
    with pytest.raises(TruncatedMessageError):
        decode_request(b"")


# -- invalid encodings ---------------------------------------------------------------------------


@pytest.mark.parametrize("framing", [b"\x04", b"\x3f", b"\x40\x04", b"\x80\x00\x00\x07"])
def test_unknown_framing_indicator(framing: bytes) -> None:
    assert_malformed(decode_request, framing + CONTROL + b"\x00\x00\x00")
    assert_malformed(decode_response, framing + b"\x40\xc8\x00\x00\x00")


def test_framing_of_the_other_kind_of_message() -> None:
    assert_malformed(decode_request, bytes.fromhex("0140c8"))
    assert_malformed(decode_request, bytes.fromhex("0340c8000000"))
    assert_malformed(decode_response, known_request())
    assert_malformed(decode_response, indeterminate_request())


def test_non_minimal_varints_are_accepted() -> None:
    # RFC 9292 section 3: "Integer values do not need to be encoded on the minimum number of
    # bytes necessary."
    assert decode_response(b"\x40\x01\x80\x00\x00\xc8\x40\x00") == Response(200)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"Content-Type", b"text/plain"),
        (b"bad name", b"x"),
        (b":path", b"/"),
        (b"na\x00me", b"x"),
        (b"x", b"a\r\nb"),
        (b"x", b"a\nb"),
        (b"x", b"a\x00b"),
        (b"x", b" leading"),
        (b"x", b"trailing\t"),
    ],
)
@pytest.mark.parametrize("section", ["headers", "trailers"])
def test_invalid_field_lines(name: bytes, value: bytes, section: str) -> None:
    encoded = line(name, value)
    assert_malformed(decode_request, known_request(**{section: encoded}))
    assert_malformed(decode_request, indeterminate_request(**{section: encoded}))
    if name == b"Content-Type":
        return  # encoders lowercase names, so this one is valid to them
    with pytest.raises(ValueError, match="field"):
        encode_request(
            replace(Request(b"GET", b"https", b"a", b"/"), **{section: ((name, value),)})
        )
    with pytest.raises(ValueError, match="field"):
        encode_response(replace(Response(200), **{section: ((name, value),)}), indeterminate=True)


def test_error_messages_never_quote_field_values() -> None:
    secret = b"Bearer s3cret-token\r\n"
    error = assert_malformed(decode_request, known_request(line(b"authorization", secret)))
    assert "s3cret" not in str(error)


def test_empty_field_name_in_known_length_section() -> None:
    assert_malformed(decode_request, known_request(b"\x00\x01x"))


def test_field_line_running_past_its_known_length_section() -> None:
    # The section says 5 bytes; its one line says 8.
    assert_malformed(decode_request, b"\x00" + CONTROL + b"\x05\x01a\x05hello\x00\x00")
    data = b"\x00" + CONTROL + b"\x02\x01a\x01b\x00\x00"  # section ends before value length
    assert_malformed(decode_request, data)


@pytest.mark.parametrize(
    ("method", "scheme", "authority", "path"),
    [
        (b"", b"https", b"a", b"/"),
        (b"G T", b"https", b"a", b"/"),
        (b"GET/", b"https", b"a", b"/"),
        (b"GET", b"1ttp", b"a", b"/"),
        (b"GET", b"https", b"a b", b"/"),
        (b"GET", b"https", b"a\x7f", b"/"),
        (b"GET", b"https", b"a", b"/a b"),
        (b"GET", b"https", b"a", b"/\r\nx"),
        (b"GET", b"https", b"a", b""),
    ],
)
def test_invalid_control_data(method: bytes, scheme: bytes, authority: bytes, path: bytes) -> None:
    control = b"".join(encode_varint(len(x)) + x for x in (method, scheme, authority, path))
    assert_malformed(decode_request, b"\x00" + control + b"\x00\x00\x00")
    with pytest.raises(ValueError, match=r"method|scheme|authority|path"):
        encode_request(Request(method, scheme, authority, path))
    with pytest.raises(ValueError, match=r"method|scheme|authority|path"):
        StreamingRequestEncoder().head(method, scheme, authority, path)


@pytest.mark.parametrize("status", [0, 99, 600, 1000, VARINT_MAX])
def test_status_out_of_range(status: int) -> None:
    assert_malformed(decode_response, b"\x01" + encode_varint(status) + b"\x00\x00\x00")
    assert_malformed(decode_response, b"\x03" + encode_varint(status) + b"\x00\x00\x00")
    with pytest.raises(ValueError, match="final status code"):
        Response(status)
    with pytest.raises(ValueError, match="final status code"):
        StreamingResponseEncoder().head(status)


@pytest.mark.parametrize("status", [99, 200, 600])
def test_informational_status_out_of_range(status: int) -> None:
    with pytest.raises(ValueError, match="informational status code"):
        InformationalResponse(status)


@pytest.mark.parametrize("padding", [b"\x01", b"\x00\x00\x80", b"\x00" * 9 + b"\xff"])
def test_nonzero_padding(padding: bytes) -> None:
    assert_malformed(decode_request, known_request() + padding)
    assert_malformed(decode_request, indeterminate_request() + padding)
    assert_malformed(decode_response, RFC9292_RESPONSE_WITH_INFORMATIONAL + padding)


def test_nonzero_padding_in_a_later_feed() -> None:
    decoder = ResponseDecoder()
    decoder.feed(RFC9292_KNOWN_LENGTH_RESPONSE_WITH_TRAILER + b"\x00")
    assert decoder.feed(b"\x00\x00") == []
    with pytest.raises(MalformedMessageError) as info:
        decoder.feed(b"\x00\x02")
    assert type(info.value) is MalformedMessageError


# -- named limits: refused as soon as the length is read, before waiting for the bytes --------


@pytest.mark.parametrize(
    "prefix",
    [
        b"\x00" + CONTROL + encode_varint(VARINT_MAX),  # known-length header section
        b"\x00" + CONTROL + encode_varint(MAX_FIELD_SECTION_SIZE + 1),
        b"\x00" + encode_varint(MAX_CONTROL_DATA_SIZE + 1),  # method
        b"\x00\x03GET\x05https" + encode_varint(VARINT_MAX),  # authority
        b"\x02" + CONTROL + encode_varint(VARINT_MAX),  # indeterminate name length
        b"\x02" + CONTROL + b"\x01a" + encode_varint(VARINT_MAX),  # indeterminate value length
        b"\x02" + CONTROL + b"\x01a" + encode_varint(MAX_FIELD_SECTION_SIZE),
    ],
)
def test_oversized_declared_lengths_fail_before_buffering(prefix: bytes) -> None:
    with pytest.raises(MalformedMessageError) as info:
        RequestDecoder().feed(prefix)
    assert type(info.value) is MalformedMessageError


def test_oversized_indeterminate_section_accumulated_from_lines() -> None:
    big = line(b"x", b"v" * (MAX_FIELD_SECTION_SIZE // 2))
    assert_malformed(decode_request, indeterminate_request(big + big + big))


@pytest.mark.parametrize("count", [MAX_FIELD_LINES, MAX_FIELD_LINES + 1])
def test_field_line_count_limit(count: int) -> None:
    lines = line(b"a", b"") * count
    fields = ((b"a", b""),) * count
    if count <= MAX_FIELD_LINES:
        assert decode_request(known_request(lines)).headers == fields
        assert decode_request(indeterminate_request(lines)).headers == fields
        return
    assert_malformed(decode_request, known_request(lines))
    assert_malformed(decode_request, indeterminate_request(lines))
    with pytest.raises(ValueError, match="MAX_FIELD_LINES"):
        encode_request(Request(b"GET", b"https", b"a", b"/", fields))


def test_field_section_size_limit_on_encode() -> None:
    fields = ((b"x", b"v" * MAX_FIELD_SECTION_SIZE),)
    with pytest.raises(ValueError, match="MAX_FIELD_SECTION_SIZE"):
        encode_request(Request(b"GET", b"https", b"a", b"/", fields))


def test_informational_response_limit() -> None:
    interim = b"\x40\x64\x00"  # 100 Continue, empty known-length header section
    ok = b"\x01" + interim * MAX_INFORMATIONAL_RESPONSES + b"\x40\xc8\x00\x00\x00"
    assert len(decode_response(ok).informational) == MAX_INFORMATIONAL_RESPONSES
    assert_malformed(decode_response, b"\x01" + interim * (MAX_INFORMATIONAL_RESPONSES + 1))


# -- misuse ------------------------------------------------------------------------------------


def test_decoder_refuses_use_after_finish() -> None:
    decoder = RequestDecoder()
    decoder.feed(known_request())
    decoder.finish()
    with pytest.raises(ValueError, match="after finish"):
        decoder.feed(b"\x00")
    with pytest.raises(ValueError, match="twice"):
        decoder.finish()


def test_decoder_stays_failed_after_an_error() -> None:
    decoder = RequestDecoder()
    with pytest.raises(MalformedMessageError):
        decoder.feed(b"\x07")
    with pytest.raises(MalformedMessageError):
        decoder.feed(known_request())
    with pytest.raises(MalformedMessageError):
        decoder.finish()


def test_encoders_refuse_negative_padding() -> None:
    with pytest.raises(ValueError, match="padding"):
        encode_request(Request(b"GET", b"https", b"a", b"/"), padding=-1)
    with pytest.raises(ValueError, match="padding"):
        encode_response(Response(200), indeterminate=True, padding=-1)


@pytest.mark.parametrize("encoder_class", [StreamingRequestEncoder, StreamingResponseEncoder])
def test_streaming_encoder_misuse(encoder_class) -> None:
    def start(encoder: StreamingRequestEncoder | StreamingResponseEncoder) -> bytes:
        if isinstance(encoder, StreamingRequestEncoder):
            return encoder.head(b"GET", b"https", b"a", b"/")
        return encoder.head(200)

    encoder = encoder_class()
    with pytest.raises(ValueError, match=r"body\(\) must follow head\(\)"):
        encoder.body(b"x")
    with pytest.raises(ValueError, match=r"end\(\) must follow head\(\)"):
        encoder.end()
    start(encoder)
    with pytest.raises(ValueError, match=r"head\(\) may be called only once"):
        start(encoder)
    encoder.end()
    for misuse in (lambda: encoder.body(b"x"), encoder.end, lambda: start(encoder)):
        with pytest.raises(ValueError, match=r"head\(\)"):
            misuse()
