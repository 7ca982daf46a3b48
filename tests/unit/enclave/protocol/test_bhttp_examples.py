"""Known answers: the worked examples of RFC 9292 section 5 and the inner messages of RFC 9458
Appendix A."""

import pytest

from enclave.protocol.bhttp import (
    InformationalResponse,
    MessageEnd,
    Request,
    RequestDecoder,
    RequestHead,
    Response,
    ResponseDecoder,
    ResponseHead,
    Trailers,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from enclave.protocol.errors import TruncatedMessageError
from tests.vectors import load_json


def _hex(dump: str) -> bytes:
    return bytes.fromhex("".join(dump.split()))


# RFC 9292 section 5.1, Figure 7: "Known-Length Binary Encoding of Request".
RFC9292_KNOWN_LENGTH_REQUEST = _hex(
    """
    00034745 54056874 74707300 0a2f6865
    6c6c6f2e 74787440 6c0a7573 65722d61
    67656e74 34637572 6c2f372e 31362e33
    206c6962 6375726c 2f372e31 362e3320
    4f70656e 53534c2f 302e392e 376c207a
    6c69622f 312e322e 3304686f 73740f77
    77772e65 78616d70 6c652e63 6f6d0f61
    63636570 742d6c61 6e677561 67650665
    6e2c206d 690000
    """
)

# RFC 9292 section 5.1, Figure 8: "Indeterminate-Length Binary Encoding of Request"
# (10 bytes of padding).
RFC9292_INDETERMINATE_LENGTH_REQUEST = _hex(
    """
    02034745 54056874 74707300 0a2f6865
    6c6c6f2e 7478740a 75736572 2d616765
    6e743463 75726c2f 372e3136 2e33206c
    69626375 726c2f37 2e31362e 33204f70
    656e5353 4c2f302e 392e376c 207a6c69
    622f312e 322e3304 686f7374 0f777777
    2e657861 6d706c65 2e636f6d 0f616363
    6570742d 6c616e67 75616765 06656e2c
    206d6900 00000000 00000000 00000000
    """
)

# RFC 9292 section 5.2, Figure 10: "Binary Response, including Informational Responses".
RFC9292_RESPONSE_WITH_INFORMATIONAL = _hex(
    """
    03406607 72756e6e 696e670a 22736c65
    65702031 35220040 67046c69 6e6b233c
    2f737479 6c652e63 73733e3b 2072656c
    3d707265 6c6f6164 3b206173 3d737479
    6c65046c 696e6b24 3c2f7363 72697074
    2e6a733e 3b207265 6c3d7072 656c6f61
    643b2061 733d7363 72697074 0040c804
    64617465 1d4d6f6e 2c203237 204a756c
    20323030 39203132 3a32383a 35332047
    4d540673 65727665 72064170 61636865
    0d6c6173 742d6d6f 64696669 65641d57
    65642c20 3232204a 756c2032 30303920
    31393a31 353a3536 20474d54 04657461
    67142233 34616133 38372d64 2d313536
    38656230 30220d61 63636570 742d7261
    6e676573 05627974 65730e63 6f6e7465
    6e742d6c 656e6774 68023531 04766172
    790f4163 63657074 2d456e63 6f64696e
    670c636f 6e74656e 742d7479 70650a74
    6578742f 706c6169 6e003348 656c6c6f
    20576f72 6c642120 4d792063 6f6e7465
    6e742069 6e636c75 64657320 61207472
    61696c69 6e672043 524c462e 0d0a0000
    """
)

# RFC 9292 section 5.2, Figure 12: "Known-Length Encoding of Response" (with a trailer).
RFC9292_KNOWN_LENGTH_RESPONSE_WITH_TRAILER = _hex(
    """
    0140c800 1d546869 7320636f 6e74656e
    7420636f 6e746169 6e732043 524c462e
    0d0a0d07 74726169 6c657204 74657874
    """
)

HELLO_REQUEST = Request(
    method=b"GET",
    scheme=b"https",
    authority=b"",
    path=b"/hello.txt",
    headers=(
        (b"user-agent", b"curl/7.16.3 libcurl/7.16.3 OpenSSL/0.9.7l zlib/1.2.3"),
        (b"host", b"www.example.com"),
        (b"accept-language", b"en, mi"),
    ),
)

HELLO_RESPONSE = Response(
    status=200,
    headers=(
        (b"date", b"Mon, 27 Jul 2009 12:28:53 GMT"),
        (b"server", b"Apache"),
        (b"last-modified", b"Wed, 22 Jul 2009 19:15:56 GMT"),
        (b"etag", b'"34aa387-d-1568eb00"'),
        (b"accept-ranges", b"bytes"),
        (b"content-length", b"51"),
        (b"vary", b"Accept-Encoding"),
        (b"content-type", b"text/plain"),
    ),
    content=b"Hello World! My content includes a trailing CRLF.\r\n",
    informational=(
        InformationalResponse(102, ((b"running", b'"sleep 15"'),)),
        InformationalResponse(
            103,
            (
                (b"link", b"</style.css>; rel=preload; as=style"),
                (b"link", b"</script.js>; rel=preload; as=script"),
            ),
        ),
    ),
)


def test_rfc9292_known_length_request_decodes_and_encodes() -> None:
    assert decode_request(RFC9292_KNOWN_LENGTH_REQUEST) == HELLO_REQUEST
    assert encode_request(HELLO_REQUEST) == RFC9292_KNOWN_LENGTH_REQUEST


@pytest.mark.parametrize("removed", [1, 2])
def test_rfc9292_known_length_request_may_lose_its_empty_content_and_trailers(
    removed: int,
) -> None:
    # Section 5.1: "the last two bytes ... can each be removed without altering the semantics".
    assert decode_request(RFC9292_KNOWN_LENGTH_REQUEST[:-removed]) == HELLO_REQUEST


def test_rfc9292_known_length_request_cut_inside_its_headers_is_truncated() -> None:
    with pytest.raises(TruncatedMessageError):
        decode_request(RFC9292_KNOWN_LENGTH_REQUEST[:-3])


def test_rfc9292_indeterminate_length_request_decodes_and_encodes() -> None:
    assert decode_request(RFC9292_INDETERMINATE_LENGTH_REQUEST) == HELLO_REQUEST
    encoded = encode_request(HELLO_REQUEST, indeterminate=True, padding=10)
    assert encoded == RFC9292_INDETERMINATE_LENGTH_REQUEST


@pytest.mark.parametrize("removed", range(13))
def test_rfc9292_indeterminate_request_may_lose_up_to_12_bytes(removed: int) -> None:
    # Section 5.1: "anything up to 12 bytes can be removed from this message".
    data = RFC9292_INDETERMINATE_LENGTH_REQUEST[
        : len(RFC9292_INDETERMINATE_LENGTH_REQUEST) - removed
    ]
    assert decode_request(data) == HELLO_REQUEST


def test_rfc9292_indeterminate_request_without_header_terminator_is_truncated() -> None:
    with pytest.raises(TruncatedMessageError):
        decode_request(RFC9292_INDETERMINATE_LENGTH_REQUEST[:-13])


def test_rfc9292_response_with_informational_responses_decodes_and_encodes() -> None:
    assert decode_response(RFC9292_RESPONSE_WITH_INFORMATIONAL) == HELLO_RESPONSE
    assert (
        encode_response(HELLO_RESPONSE, indeterminate=True) == RFC9292_RESPONSE_WITH_INFORMATIONAL
    )


def test_rfc9292_known_length_response_with_trailer_decodes_and_encodes() -> None:
    expected = Response(
        status=200,
        content=b"This content contains CRLF.\r\n",
        trailers=((b"trailer", b"text"),),
    )
    assert decode_response(RFC9292_KNOWN_LENGTH_RESPONSE_WITH_TRAILER) == expected
    assert encode_response(expected) == RFC9292_KNOWN_LENGTH_RESPONSE_WITH_TRAILER


def test_rfc9458_appendix_a_request_ends_after_its_control_data() -> None:
    data = bytes.fromhex(load_json("ohttp/rfc9458-appendix-a.json")["bhttp_request"])
    assert decode_request(data) == Request(b"GET", b"https", b"example.com", b"/")
    decoder = RequestDecoder()
    assert decoder.feed(data) == []  # only the end of input says the headers are absent
    assert decoder.finish() == [
        RequestHead(b"GET", b"https", b"example.com", b"/", ()),
        Trailers(()),
        MessageEnd(),
    ]


def test_rfc9458_appendix_a_response_ends_after_its_status() -> None:
    data = bytes.fromhex(load_json("ohttp/rfc9458-appendix-a.json")["bhttp_response"])
    assert decode_response(data) == Response(200)
    decoder = ResponseDecoder()
    assert decoder.feed(data) == []
    assert decoder.finish() == [ResponseHead(200, ()), Trailers(()), MessageEnd()]
