"""Engine refusals, failures and the concurrency limit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from tests.unit.enclave.routes.conftest import MODEL, Harness, sse_response

MakeHarness = Callable[..., Awaitable[Harness]]
CHAT = "/v1/chat/completions"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
SECRET = "engine-internal-detail-5b1e"


async def ready(make_harness: MakeHarness, **settings: object) -> Harness:
    harness = await make_harness(**settings)
    await harness.load()
    return harness


async def test_engine_4xx_keeps_its_message_in_our_shape(make_harness: MakeHarness) -> None:
    harness = await ready(make_harness)
    refusal = {
        "error": {
            "message": "This model's maximum context length is 8192 tokens.",
            "type": "BadRequestError",
            "param": "input_tokens",
            "code": 400,
        }
    }

    async def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json=refusal)

    harness.engine.handler = handler
    response = await harness.client.post(CHAT, json=BODY)
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": refusal["error"]["message"],
            "type": "BadRequestError",
            "param": "input_tokens",
            "code": "engine_rejected",
        }
    }
    assert harness.service.streams.active == 0


async def test_engine_5xx_text_never_reaches_the_client(make_harness: MakeHarness) -> None:
    harness = await ready(make_harness)

    async def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": {"message": SECRET}})

    harness.engine.handler = handler
    response = await harness.client.post(CHAT, json=BODY)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "engine_error"
    assert SECRET not in response.text


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (httpx.ConnectError(SECRET), 502, "engine_unavailable"),
        (httpx.ReadTimeout(SECRET), 504, "engine_timeout"),
    ],
)
async def test_engine_unreachable_or_slow(
    make_harness: MakeHarness, exc: Exception, status: int, code: str
) -> None:
    harness = await ready(make_harness)

    async def handler(_: httpx.Request) -> httpx.Response:
        raise exc

    harness.engine.handler = handler
    response = await harness.client.post(CHAT, json=BODY)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert SECRET not in response.text
    assert harness.service.streams.active == 0


async def test_requests_over_the_stream_limit_get_429(make_harness: MakeHarness) -> None:
    harness = await ready(make_harness, max_concurrent_streams=2)
    started = asyncio.Semaphore(0)
    finish = asyncio.Event()

    async def held() -> AsyncIterator[bytes]:
        yield b"data: {}\n\n"
        started.release()
        await finish.wait()
        yield b"data: [DONE]\n\n"

    async def handler(_: httpx.Request) -> httpx.Response:
        return sse_response(held())

    harness.engine.handler = handler
    body = {**BODY, "stream": True}
    open_requests = [asyncio.create_task(harness.client.post(CHAT, json=body)) for _ in range(2)]
    for _ in range(2):
        await started.acquire()
    refused = await harness.client.post(CHAT, json=body)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_streams"
    assert refused.headers["retry-after"] == "1"
    metrics = harness.service.metrics.render().decode()
    assert "enclave_active_streams 2.0" in metrics
    finish.set()
    for response in await asyncio.gather(*open_requests):
        assert response.content.endswith(b"data: [DONE]\n\n")
    assert harness.service.streams.active == 0
    again = await harness.client.post(CHAT, json=body)
    assert again.status_code == 200
    assert "enclave_active_streams 0.0" in harness.service.metrics.render().decode()


async def test_embeddings_and_completions_are_passed_through(make_harness: MakeHarness) -> None:
    harness = await ready(make_harness)

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"path": request.url.path})

    harness.engine.handler = handler
    for path in ("/v1/completions", "/v1/embeddings"):
        response = await harness.client.post(path, json={"model": MODEL, "input": "x"})
        assert response.status_code == 200
        assert json.loads(response.content) == {"path": path}
