"""Binary HTTP messages (RFC 9292), sans-IO: the inner messages of Oblivious HTTP.

Both forms are supported: known-length (framing indicators 0 and 1) and indeterminate-length
(2 and 3, content as a sequence of non-empty chunks ended by a zero length). Responses may
carry any number of informational (1xx) responses, up to ``MAX_INFORMATIONAL_RESPONSES``.

Encoders (``encode_request``, ``encode_response``, the streaming encoders) lowercase field
names, never truncate, append the requested number of zero padding bytes, and raise
``ValueError`` for anything the decoders would refuse. Decoders (``decode_request``,
``decode_response``, ``RequestDecoder``, ``ResponseDecoder``) raise ``MalformedMessageError``
for an invalid message and its subclass ``TruncatedMessageError`` when the input ends early.

Truncation (RFC 9292 sections 3.1, 3.2 and 3.8): a message may end just before the length
prefix of its header section, its content or its trailer section (known-length form), or just
after its control data, a header section's terminator or the content terminator
(indeterminate-length form); the missing parts are read as empty, as section 3.8 requires of
decoders. Section 3.8 on its own words only mentions omitting empty trailers, and empty
content before them; sections 3.1 and 3.2 also allow ending before the header section, and
RFC 9458 Appendix A relies on that (its request ends after the control data, its response
after the status code), so it is accepted. Ending anywhere else, for example between two
content chunks or inside an informational response, is ``TruncatedMessageError``. Because the
end of input is what completes such a message, ``finish()`` of the incremental decoders
returns the events it completes (the head, ``Trailers``, ``MessageEnd``).

Validation (RFC 9292 section 3.6, RFC 9110 section 5.1, RFC 9113 section 8.2.1): field names
are non-empty lowercase tokens, so pseudo-fields are refused; field values hold no NUL, CR or
LF and neither start nor end with a space or tab; the method is a token; the scheme is empty
or a URI scheme; authority and path hold no control characters, spaces or DEL (stricter than
the RFC, so a decoded request cannot be split when it is replayed); the path of an http or
https request is not empty; informational status codes are 100..199, final ones 200..599.
Padding after the message must be zero bytes. Declared lengths over ``MAX_FIELD_SECTION_SIZE``
or ``MAX_CONTROL_DATA_SIZE``, and sections over ``MAX_FIELD_LINES`` lines, are refused as
soon as they are read. Content size is not limited here; it is streamed, and the caller
counts it.
"""

from __future__ import annotations

from enclave.protocol._bhttp_decoder import RequestDecoder, ResponseDecoder
from enclave.protocol._bhttp_encoder import (
    StreamingRequestEncoder,
    StreamingResponseEncoder,
    encode_request,
    encode_response,
)
from enclave.protocol._bhttp_fields import (
    MAX_CONTROL_DATA_SIZE,
    MAX_FIELD_LINES,
    MAX_FIELD_SECTION_SIZE,
    MAX_INFORMATIONAL_RESPONSES,
    Field,
)
from enclave.protocol._bhttp_types import (
    BodyChunk,
    InformationalHead,
    InformationalResponse,
    MessageEnd,
    Request,
    RequestEvent,
    RequestHead,
    Response,
    ResponseEvent,
    ResponseHead,
    Trailers,
)

__all__ = [
    "MAX_CONTROL_DATA_SIZE",
    "MAX_FIELD_LINES",
    "MAX_FIELD_SECTION_SIZE",
    "MAX_INFORMATIONAL_RESPONSES",
    "BodyChunk",
    "Field",
    "InformationalHead",
    "InformationalResponse",
    "MessageEnd",
    "Request",
    "RequestDecoder",
    "RequestEvent",
    "RequestHead",
    "Response",
    "ResponseDecoder",
    "ResponseEvent",
    "ResponseHead",
    "StreamingRequestEncoder",
    "StreamingResponseEncoder",
    "Trailers",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
]


def decode_request(data: bytes | bytearray | memoryview) -> Request:
    """Decode one complete request in either form, padding included."""
    decoder = RequestDecoder()
    events = decoder.feed(data)
    events += decoder.finish()
    head: RequestHead | None = None
    content: list[bytes] = []
    trailers: tuple[Field, ...] = ()
    for event in events:
        if isinstance(event, BodyChunk):
            content.append(event.data)
        elif isinstance(event, RequestHead):
            head = event
        elif isinstance(event, Trailers):
            trailers = event.fields
    if head is None:  # finish() returned, so the decoder saw the whole message
        raise RuntimeError("request decoder ended without a head")
    return Request(
        head.method,
        head.scheme,
        head.authority,
        head.path,
        head.headers,
        b"".join(content),
        trailers,
    )


def decode_response(data: bytes | bytearray | memoryview) -> Response:
    """Decode one complete response in either form, padding included."""
    decoder = ResponseDecoder()
    events = decoder.feed(data)
    events += decoder.finish()
    informational: list[InformationalResponse] = []
    head: ResponseHead | None = None
    content: list[bytes] = []
    trailers: tuple[Field, ...] = ()
    for event in events:
        if isinstance(event, BodyChunk):
            content.append(event.data)
        elif isinstance(event, InformationalHead):
            informational.append(InformationalResponse(event.status, event.headers))
        elif isinstance(event, ResponseHead):
            head = event
        elif isinstance(event, Trailers):
            trailers = event.fields
    if head is None:  # finish() returned, so the decoder saw the whole message
        raise RuntimeError("response decoder ended without a head")
    return Response(
        head.status,
        head.headers,
        b"".join(content),
        trailers,
        tuple(informational),
    )
