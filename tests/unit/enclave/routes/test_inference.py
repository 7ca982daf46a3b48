"""The inference pass-through: validation, byte-exact relay, engine failures, limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from enclave.protocol.padding import strip_event_padding
from tests.unit.enclave.routes.conftest import MODEL, Harness, sse_response

MakeHarness = Callable[..., Awaitable[Harness]]
CHAT = "/v1/chat/completions"
CANARY = "canary-7f3a91c2-never-log-me"

EVENTS = [
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Echo:"}}]}\n\n',
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":" \\u00e9t\\u00e9"}}]}\n\n',
    b"data: [DONE]\n\n",
]


def chat_body(**extra: object) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra}


async def events_in_odd_pieces() -> AsyncIterator[bytes]:
    data = b"".join(EVENTS)
    # Cut across event boundaries, as TCP may.
    for start in range(0, len(data), 37):
        yield data[start : start + 37]


async def ready(make_harness: MakeHarness, **settings: object) -> Harness:
    harness = await make_harness(**settings)
    await harness.load()
    return harness


async def test_non_streamed_answer_is_relayed_byte_for_byte(make_harness: MakeHarness) -> None:
    harness = await ready(make_harness)
    answer = b'{"id":"x","object":"chat.completion","choices":[]}'

    async def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "application/json"}, content=answer)

    harness.engine.handler = handler
    raw = json.dumps(chat_body()).encode()
    response = await harness.client.post(
        CHAT,
        content=raw,
        headers={
            "content-type": "application/json",
            "authorization": "Bearer client-secret",
            "cookie": "session=abc",
            "x-custom": "1",
            "connection": "keep-alive, x-custom",
        },
    )
    assert response.status_code == 200
    # Byte for byte, then spaces to the size bucket (JSON allows them after the value).
    assert response.content == answer + b" " * (256 - len(answer))
    assert response.headers["content-length"] == "256"
    assert response.headers["x-request-id"]
    sent = harness.engine.requests[0]
    # Byte for byte but for the prefix-cache salt the service puts in front (test_cache_salt).
    salted = harness.engine.bodies[0]
    member = len(b'"cache_salt":"",') + 64
    assert salted[:15] == b'{"cache_salt":"'
    assert salted[:1] + salted[1 + member :] == raw
    assert sent.url.path == CHAT
    for name in ("authorization", "cookie", "x-custom"):
        assert name not in sent.headers
    assert sent.headers["accept-encoding"] == "identity"
    assert sent.headers["x-request-id"] == response.headers["x-request-id"]


async def test_stream_is_relayed_exactly_and_event_aligned(make_harness: MakeHarness) -> None:
    harness = await ready(make_harness)

    async def handler(_: httpx.Request) -> httpx.Response:
        return sse_response(events_in_odd_pieces())

    harness.engine.handler = handler
    response = await harness.client.post(CHAT, json=chat_body(stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert strip_event_padding(response.content) == b"".join(EVENTS)
    metrics = harness.service.metrics.render().decode()
    assert f'enclave_streamed_chunks_total{{route="{CHAT}"}} 4.0' in metrics
    assert f'enclave_stream_outcomes_total{{outcome="completed",route="{CHAT}"}} 1.0' in metrics


async def test_engine_failure_mid_stream_becomes_error_event_then_done(
    make_harness: MakeHarness,
) -> None:
    harness = await ready(make_harness)

    async def broken() -> AsyncIterator[bytes]:
        yield EVENTS[0]
        yield EVENTS[1][:20]
        raise httpx.ReadError("connection reset")

    async def handler(_: httpx.Request) -> httpx.Response:
        return sse_response(broken())

    harness.engine.handler = handler
    response = await harness.client.post(CHAT, json=chat_body(stream=True))
    events = strip_event_padding(response.content).split(b"\n\n")
    assert strip_event_padding(response.content).startswith(EVENTS[0])
    assert strip_event_padding(response.content).endswith(b"data: [DONE]\n\n")
    error = json.loads(events[-3].removeprefix(EVENTS[1][:20]).removeprefix(b"data: "))
    assert error["error"]["code"] == "engine_stream_failed"
    assert "connection reset" not in response.text


async def test_stream_ending_without_done_is_reported(make_harness: MakeHarness) -> None:
    harness = await ready(make_harness)

    async def short() -> AsyncIterator[bytes]:
        yield EVENTS[0]

    async def handler(_: httpx.Request) -> httpx.Response:
        return sse_response(short())

    harness.engine.handler = handler
    response = await harness.client.post(CHAT, json=chat_body(stream=True))
    assert strip_event_padding(response.content).startswith(EVENTS[0])
    assert b'"code":"engine_stream_failed"' in strip_event_padding(response.content)
    assert strip_event_padding(response.content).endswith(b"data: [DONE]\n\n")


async def test_engine_in_stream_error_is_relayed_verbatim(make_harness: MakeHarness) -> None:
    harness = await ready(make_harness)
    engine_error = b'data: {"error": {"message": "Internal server error", "code": 500}}\n\n'

    async def failing() -> AsyncIterator[bytes]:
        yield EVENTS[0]
        yield engine_error
        yield b"data: [DONE]\n\n"

    async def handler(_: httpx.Request) -> httpx.Response:
        return sse_response(failing())

    harness.engine.handler = handler
    response = await harness.client.post(CHAT, json=chat_body(stream=True))
    assert strip_event_padding(response.content) == EVENTS[0] + engine_error + b"data: [DONE]\n\n"
    metrics = harness.service.metrics.render().decode()
    assert f'enclave_stream_outcomes_total{{outcome="engine_failed",route="{CHAT}"}} 1.0' in metrics


async def test_unload_during_stream_ends_it_with_model_unloaded(
    make_harness: MakeHarness,
) -> None:
    harness = await ready(make_harness)
    first_sent = asyncio.Event()
    never = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield EVENTS[0]
        first_sent.set()
        await never.wait()
        yield EVENTS[1]

    async def handler(_: httpx.Request) -> httpx.Response:
        return sse_response(stalled())

    harness.engine.handler = handler
    request = asyncio.create_task(harness.client.post(CHAT, json=chat_body(stream=True)))
    await first_sent.wait()
    await harness.unload()
    response = await asyncio.wait_for(request, timeout=5)
    assert strip_event_padding(response.content).startswith(EVENTS[0])
    assert b'"code":"model_unloaded"' in strip_event_padding(response.content)
    assert strip_event_padding(response.content).endswith(b"data: [DONE]\n\n")
    assert harness.service.streams.active == 0


@pytest.mark.parametrize(
    ("content", "content_type", "code", "status"),
    [
        (b"{not json", "application/json", "invalid_json", 400),
        (b"[1, 2]", "application/json", "invalid_request", 400),
        (b'{"messages": []}', "application/json", "missing_model", 400),
        (b'{"model": 7}', "application/json", "invalid_model", 400),
        (b'{"model": "tiny", "stream": "yes"}', "application/json", "invalid_stream", 400),
        (b'{"model": "tiny"}', "text/plain", "unsupported_media_type", 415),
        (b'{"model": "other"}', "application/json", "model_not_found", 404),
    ],
)
async def test_bad_requests_get_typed_errors(
    make_harness: MakeHarness, content: bytes, content_type: str, code: str, status: int
) -> None:
    harness = await ready(make_harness)
    response = await harness.client.post(
        CHAT, content=content, headers={"content-type": content_type}
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}
    assert harness.engine.requests == []
    assert harness.service.streams.active == 0


async def test_wrong_model_does_not_echo_the_name(make_harness: MakeHarness) -> None:
    harness = await ready(make_harness)
    response = await harness.client.post(CHAT, json=chat_body(model=CANARY))
    assert response.status_code == 404
    assert CANARY not in response.text


async def test_no_model_ready_is_503(make_harness: MakeHarness) -> None:
    harness = await make_harness()
    response = await harness.client.post(CHAT, json=chat_body())
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_not_ready"
    assert "retry-after" in response.headers


@pytest.mark.parametrize("declare_length", [True, False])
async def test_body_over_the_limit_is_413(make_harness: MakeHarness, declare_length: bool) -> None:
    harness = await ready(make_harness, body_limit_bytes=16384)
    body = json.dumps(chat_body(padding="x" * 20000)).encode()

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    content: bytes | AsyncIterator[bytes] = body if declare_length else chunks()
    response = await harness.client.post(
        CHAT, content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert harness.engine.requests == []


async def test_refusals_are_padded_to_the_bucket(make_harness: MakeHarness) -> None:
    """A refusal is a whole answer: its size, which an engine's message could make depend on
    the request (lengths it quotes), is a whole number of buckets too."""
    harness = await ready(make_harness)
    sizes = []
    for words in (1, 40):
        message = "context too long: " + "x " * words

        async def handler(_: httpx.Request, message: str = message) -> httpx.Response:
            error = {"error": {"message": message, "type": "BadRequestError", "code": 400}}
            return httpx.Response(400, json=error)

        harness.engine.handler = handler
        refused = await harness.client.post(CHAT, json=chat_body())
        assert refused.status_code == 400
        assert refused.json()["error"]["message"] == message
        sizes.append(len(refused.content))
    unknown = await harness.client.post(CHAT, json=chat_body(model="other"))
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    sizes.append(len(unknown.content))
    assert [size % 256 for size in sizes] == [0, 0, 0]
    assert int(unknown.headers["content-length"]) == sizes[-1]
