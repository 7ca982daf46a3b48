"""Requests say nothing of the prompt's length but its bucket (issue 19 #2): the client library
pads every OHTTP request (Binary HTTP zero padding, RFC 9292 section 3.8, inside the
encryption) and every JSON body it sends over RA-TLS (trailing spaces), and the service reads
them as if unpadded. Through the real service and the development engine."""

from __future__ import annotations

import httpx
import pytest

from enclave.client import AsyncOhttpTransport, AsyncRaTlsTransport
from tests.integration.client.conftest import Running
from tests.integration.server.observers import TlsRecordForwarder

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: Prompts of 3 to 400 characters: every request is a whole number of buckets.
PROMPTS = ["hi " * n for n in range(1, 134, 19)]


def _chat(prompt: str) -> dict[str, object]:
    return {"model": "tiny", "messages": [{"role": "user", "content": prompt}], "max_tokens": 4}


@pytest.mark.parametrize("chunked", [True, False])
async def test_ohttp_requests_are_padded_to_the_bucket(running: Running, chunked: bool) -> None:
    transport = AsyncOhttpTransport(running.url, running.verifier(), chunked=chunked)
    sizes: list[int] = []

    async def record(request: httpx.Request) -> None:
        if request.url.path.endswith("ohttp-gateway"):
            sizes.append(len(request.content))

    transport._outer.event_hooks["request"].append(record)
    async with httpx.AsyncClient(transport=transport, base_url=running.url) as client:
        for prompt in PROMPTS:
            response = await client.post("/v1/chat/completions", json=_chat(prompt))
            assert response.status_code == 200
            assert response.json()["choices"][0]["message"]["content"].startswith("Echo:")
    assert len(sizes) == len(PROMPTS)
    # The encapsulation adds the same bytes to each (key id, KEM output, tag, framing), so the
    # padded inner messages are whole buckets exactly when all sizes agree modulo the bucket;
    # 400 characters span 2 or 3 buckets, not 8 sizes.
    assert len({size % 256 for size in sizes}) == 1, sizes
    assert len(set(sizes)) <= 3, sizes


async def test_ratls_json_requests_are_padded_to_the_bucket(running: Running) -> None:
    async with TlsRecordForwarder(running.port) as forwarder:
        url = f"https://127.0.0.1:{forwarder.port}"
        transport = AsyncRaTlsTransport(running.verifier())
        async with httpx.AsyncClient(transport=transport, base_url=url) as client:
            assert (await client.get("/v1/models")).status_code == 200  # the handshake first
            sent = []
            for prompt in PROMPTS:
                mark = len(forwarder.sent_records)
                response = await client.post("/v1/chat/completions", json=_chat(prompt))
                assert response.status_code == 200
                text = response.json()["choices"][0]["message"]["content"]
                assert text.endswith(prompt.split()[-1])  # the service read the padded body
                sent.append([r.length for r in forwarder.sent_records[mark:]])
    # The head (its content-length the padded one), then the body: whole buckets, plus TLS's
    # tag and content type.
    assert {records[-1] % 256 for records in sent} == {17}, sent
    assert len({records[-1] for records in sent}) <= 3, sent


async def test_whole_answers_are_padded_to_the_bucket(running: Running) -> None:
    """Non-streamed answers: a JSON body of whole buckets over RA-TLS (its length as sent), and
    over OHTTP (``message/ohttp-res``) a Binary HTTP message of whole buckets inside."""
    transport = AsyncOhttpTransport(running.url, running.verifier(), chunked=False)
    outer: list[int] = []

    async def record(response: httpx.Response) -> None:
        if response.request.url.path.endswith("ohttp-gateway"):
            outer.append(int(response.headers["content-length"]))

    transport._outer.event_hooks["response"].append(record)
    direct = AsyncRaTlsTransport(running.verifier())
    async with (
        httpx.AsyncClient(transport=transport, base_url=running.url) as ohttp,
        httpx.AsyncClient(transport=direct, base_url=running.url) as ratls,
    ):
        for prompt in PROMPTS[::2]:
            body = _chat(prompt) | {"max_tokens": 200}
            answer = await ratls.post("/v1/chat/completions", json=body)
            assert answer.status_code == 200
            assert len(answer.content) % 256 == 0
            assert int(answer.headers["content-length"]) == len(answer.content)
            assert (await ohttp.post("/v1/chat/completions", json=body)).status_code == 200
    assert len({size % 256 for size in outer}) == 1, outer
