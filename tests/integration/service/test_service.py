"""The service end to end: uvicorn, the app, the ModelManager and the development engine."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from enclave.protocol.padding import strip_event_padding
from enclave_dev.engine import expected_completion, expected_embedding
from tests.integration.service.conftest import MODEL, WAIT_SECONDS, Running

CHAT = "/v1/chat/completions"
PROMPT = "the quick brown fox"
LONG_PROMPT = " ".join(f"word{i}" for i in range(400))


def chat(prompt: str = PROMPT, **extra: object) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], **extra}


async def read_events(response: httpx.Response) -> list[str]:
    """The ``data:`` payloads of a streamed response, in order."""
    events = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            events.append(line.removeprefix("data: "))
    return events


def streamed_text(events: list[str]) -> str:
    text = ""
    for event in events:
        if event == "[DONE]":
            continue
        for choice in json.loads(event).get("choices", []):
            text += choice.get("delta", {}).get("content") or choice.get("text") or ""
    return text


async def test_chat_completions_and_embeddings_match_the_engine(running: Running) -> None:
    await running.load()
    expected = "".join(expected_completion(PROMPT))
    async with running.client() as client:
        answer = await client.post(CHAT, json=chat())
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"] == expected

        async with client.stream("POST", CHAT, json=chat(stream=True)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = await read_events(response)
        assert events[-1] == "[DONE]"
        assert streamed_text(events) == expected

        completion = await client.post(
            "/v1/completions", json={"model": MODEL, "prompt": PROMPT, "stream": True}
        )
        assert streamed_text(
            [
                line.removeprefix("data: ")
                for line in strip_event_padding(completion.content).decode().split("\n\n")
                if line
            ]
        ) == "".join(expected_completion(PROMPT))

        embedding = await client.post("/v1/embeddings", json={"model": MODEL, "input": PROMPT})
        assert embedding.status_code == 200
        assert embedding.json()["data"][0]["embedding"] == pytest.approx(expected_embedding(PROMPT))

        models = (await client.get("/v1/models")).json()["data"]
        assert [model["id"] for model in models] == [MODEL]
        # The development engine serves it: said in the list, so not "confidential".
        assert "insecure_dev_engine" in models[0]["insecure"]
        assert models[0]["confidential"] is False
        status = (await client.get("/v1/models/status")).json()
        assert "insecure_dev_engine" in status["insecure"]
        assert (await client.get("/ready")).status_code == 200


async def test_no_model_is_503_and_wrong_model_is_404(running: Running) -> None:
    async with running.client() as client:
        response = await client.post(CHAT, json=chat())
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "model_not_ready"
        await running.load()
        response = await client.post(CHAT, json={**chat(), "model": "another-model"})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"


async def test_a_disconnecting_client_cancels_its_upstream_request(running: Running) -> None:
    await running.load()
    await running.faults(tokens_per_second=20)  # 400 words: 20 s if nobody cancels
    async with (
        running.client() as client,
        client.stream("POST", CHAT, json=chat(LONG_PROMPT, stream=True)) as response,
    ):
        lines = response.aiter_lines()
        while not (await anext(lines)).startswith("data: "):
            continue
        assert await running.engine_metric("vllm:num_requests_running") == 1
        # Leaving the block closed the connection mid-stream.
    async with asyncio.timeout(WAIT_SECONDS / 2):
        while await running.engine_metric("vllm:num_requests_running") != 0:
            await asyncio.sleep(0.05)
    assert await running.engine_metric("vllm:request_success_total") == 0
    async with asyncio.timeout(WAIT_SECONDS / 2):
        while running.service.streams.active:
            await asyncio.sleep(0.02)


async def test_an_engine_crash_mid_stream_reaches_the_client(running: Running) -> None:
    await running.load()
    await running.faults(crash_after_chunks=3)
    async with (
        running.client() as client,
        client.stream("POST", CHAT, json=chat(stream=True)) as response,
    ):
        assert response.status_code == 200
        events = await read_events(response)
    assert len(events) == 5
    assert json.loads(events[3])["error"]["code"] == "engine_stream_failed"
    assert events[4] == "[DONE]"


async def test_unloading_ends_an_open_stream_visibly(running: Running) -> None:
    await running.load()
    await running.faults(tokens_per_second=20)
    async with (
        running.client() as client,
        client.stream("POST", CHAT, json=chat(LONG_PROMPT, stream=True)) as response,
    ):
        lines = response.aiter_lines()
        first = await anext(lines)
        assert first.startswith(":")  # the size padding, then the event
        assert (await anext(lines)).startswith("data: ")
        unload = await client.post("/v1/models/unload", json={"model": MODEL})
        assert unload.status_code == 202
        rest = [line.removeprefix("data: ") async for line in lines if line.startswith("data:")]
    assert rest[-1] == "[DONE]"
    error = json.loads(rest[-2])["error"]
    assert error["code"] == "model_unloaded"
    # Let the unload finish: ModelManager.aclose() does not wait for a stop it interrupts.
    await running.service.manager.wait_status("idle", timeout=WAIT_SECONDS)


async def test_200_concurrent_streams_complete(running: Running) -> None:
    await running.load()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)

    async def one(client: httpx.AsyncClient, index: int) -> str:
        prompt = f"stream {index}"
        async with client.stream("POST", CHAT, json=chat(prompt, stream=True)) as response:
            assert response.status_code == 200
            events = await read_events(response)
        assert events[-1] == "[DONE]"
        return streamed_text(events)

    async with running.client(limits=limits) as client:
        texts = await asyncio.gather(*(one(client, i) for i in range(200)))
    assert texts == ["".join(expected_completion(f"stream {i}")) for i in range(200)]
    assert running.service.streams.active == 0
