"""The relay's receipts (enclave.routes._relay, enclave._receipts) with a scripted engine: a
whole answer is read whole, then sent with the header, the member and its content-length; an
engine failure before such a body was read answers 502 engine_error (not a cut body); a stream
gets one receipt event before [DONE] in the message that carries [DONE]; asked for, the
certificate comes along; without an issuer nothing changes."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx

from attestation.receipt import (
    CERTIFICATE_HEADER,
    EVIDENCE_REQUEST_HEADER,
    HEADER,
    MEMBER,
    decode_receipt,
    request_digest,
    response_digest_of,
)
from enclave._receipts import ReceiptIssuer
from enclave.protocol.padding import strip_event_padding
from tests.unit.enclave.routes.conftest import MODEL, Harness, sse_response

MakeHarness = Callable[..., Awaitable[Harness]]
CHAT = "/v1/chat/completions"
QUOTE = hashlib.sha256(b"quote").digest()
CERTIFICATE = b"certificate DER"
ANSWER = b'{"id":"c1","choices":[{"message":{"content":"hello"}}]}'


async def _harness(make_harness: MakeHarness) -> tuple[Harness, ReceiptIssuer]:
    harness = await make_harness()
    await harness.load()
    issuer = ReceiptIssuer(lambda: (QUOTE, CERTIFICATE))
    harness.service.receipts = issuer
    return harness, issuer


def _body(stream: bool) -> bytes:
    return json.dumps({"model": MODEL, "messages": [], "stream": stream}).encode()


async def test_a_whole_answer_carries_the_receipt_header_and_member(
    make_harness: MakeHarness,
) -> None:
    harness, issuer = await _harness(make_harness)

    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=json.loads(ANSWER), headers={"content-length": "999"})

    harness.engine.handler = answer
    body = _body(False)
    response = await harness.client.post(
        CHAT, content=body + b"   ", headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    receipt = decode_receipt(response.headers[HEADER])
    assert decode_receipt(response.json()[MEMBER]).encoded == receipt.encoded
    receipt.verify_signature()
    receipt.check_key(issuer.claim)
    assert receipt.quote_sha256 == QUOTE
    assert receipt.request_sha256 == request_digest(body)  # the padding spaces aside
    assert response_digest_of(response.content, receipt) == receipt.response_sha256
    assert receipt.response_sha256 == hashlib.sha256(ANSWER).digest()
    assert CERTIFICATE_HEADER not in response.headers


async def test_an_engine_failure_before_a_whole_body_is_a_502_not_a_cut_body(
    make_harness: MakeHarness,
) -> None:
    harness, _ = await _harness(make_harness)

    async def broken() -> AsyncIterator[bytes]:
        yield b'{"id":'
        raise httpx.ReadError("engine died")

    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "application/json"}, content=broken())

    harness.engine.handler = answer
    response = await harness.client.post(
        CHAT, content=_body(False), headers={"content-type": "application/json"}
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "engine_error"
    assert HEADER not in response.headers


async def test_a_stream_ends_with_one_receipt_event_and_the_certificate_when_asked(
    make_harness: MakeHarness,
) -> None:
    harness, _ = await _harness(make_harness)
    events = [
        b'data: {"id":"c2","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"delta":{"content":"a"}}]}\n\n',
        b'data: {"id":"c2","choices":[{"delta":{"content":"b"}}]}\n\ndata: [DONE]\n\n',
    ]

    async def stream() -> AsyncIterator[bytes]:
        for item in events:
            yield item

    async def answer(request: httpx.Request) -> httpx.Response:
        return sse_response(stream())

    harness.engine.handler = answer
    response = await harness.client.post(
        CHAT,
        content=_body(True),
        headers={"content-type": "application/json", EVIDENCE_REQUEST_HEADER: "certificate"},
    )
    content = strip_event_padding(response.content)
    parts = [part for part in content.split(b"\n\n") if part]
    assert parts[-1] == b"data: [DONE]"
    assert sum(part.startswith(b'data: {"enclave_receipt":') for part in parts) == 1
    event = json.loads(parts[-2][len(b"data: ") :])
    assert (event["id"], event["object"], event["choices"]) == ("c2", "chat.completion.chunk", [])
    assert base64.b64decode(event["enclave_certificate"]) == CERTIFICATE
    receipt = decode_receipt(event[MEMBER])
    receipt.verify_signature()
    assert receipt.response_hash == "sse-lines"
    assert response_digest_of(response.content, receipt) == receipt.response_sha256
    assert (
        receipt.response_sha256
        == hashlib.sha256(b"".join(events[:1]) + events[1][: -len(b"data: [DONE]\n\n")]).digest()
    )


async def test_without_an_issuer_answers_are_unchanged(make_harness: MakeHarness) -> None:
    harness = await make_harness()
    await harness.load()

    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=json.loads(ANSWER))

    harness.engine.handler = answer
    response = await harness.client.post(
        CHAT, content=_body(False), headers={"content-type": "application/json"}
    )
    assert response.content.rstrip(b" ") == ANSWER  # padded, nothing else
    assert HEADER not in response.headers
