"""The development engine's HTTP surface, in process (real processes: tests/integration)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from enclave_dev.engine import (
    NOT_A_LANGUAGE_MODEL,
    expected_completion,
    expected_embedding,
    prompt_tag,
)
from enclave_dev.engine._app import EngineState, build_app
from enclave_dev.engine._config import parse_config
from enclave_dev.engine._faults import FaultSwitch
from enclave_dev.engine._loading import inspect_model
from enclave_dev.engine._metrics import EngineMetrics

PROMPT = "hello there general kenobi"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text('{"max_position_embeddings": 64}')
    config = parse_config(
        ["serve", str(model), "--served-model-name", "tiny", "--dev-tokens-per-second", "0"]
    )
    state = EngineState(
        config=config,
        info=inspect_model(model, None),
        faults=FaultSwitch(config.faults),
        metrics=EngineMetrics("tiny"),
    )
    transport = httpx.ASGITransport(app=build_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://engine") as client:
        yield client


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], **extra}


def events(text: str) -> list[str]:
    assert text.endswith("\n\n")
    blocks = text.split("\n\n")[:-1]
    assert all(block.startswith("data: ") for block in blocks)
    return [block.removeprefix("data: ") for block in blocks]


async def test_health_version_models(engine: httpx.AsyncClient) -> None:
    health = await engine.get("/health")
    assert (health.status_code, health.content) == (200, b"")
    assert "devengine" in (await engine.get("/version")).json()["version"]
    models = (await engine.get("/v1/models")).json()
    card = models["data"][0]
    assert models["object"] == "list"
    assert (card["id"], card["object"], card["owned_by"]) == ("tiny", "model", "vllm")
    assert card["max_model_len"] == 64
    assert card["description"] == NOT_A_LANGUAGE_MODEL
    assert "not a language model" in NOT_A_LANGUAGE_MODEL


async def test_chat_non_streamed_is_vllm_shaped_and_deterministic(
    engine: httpx.AsyncClient,
) -> None:
    response = await engine.post("/v1/chat/completions", json=chat())
    document = response.json()
    # Key order and null fields: test_shapes.py, against real vLLM's output.
    assert document["id"].startswith("chatcmpl-")
    assert document["object"] == "chat.completion"
    choice = document["choices"][0]
    assert choice["message"]["role"] == "assistant"
    tokens = expected_completion(PROMPT)
    assert choice["message"]["content"] == "".join(tokens)
    assert tokens[:2] == ["Echo:", " " + prompt_tag(PROMPT)]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", None)
    assert document["usage"] == {
        "prompt_tokens": 4,
        "total_tokens": 4 + len(tokens) + 1,
        "completion_tokens": len(tokens) + 1,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }


async def test_chat_stream_chunks_usage_and_done(engine: httpx.AsyncClient) -> None:
    body = chat(stream=True, stream_options={"include_usage": True})
    response = await engine.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = events(response.text)
    assert raw[-1] == "[DONE]"
    chunks = [json.loads(item) for item in raw[:-1]]
    first, *middle, last_token, usage = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == first["id"] for c in chunks)
    assert last_token["choices"][0]["finish_reason"] == "stop"
    assert "stop_reason" in last_token["choices"][0]
    text = "".join(c["choices"][0]["delta"]["content"] for c in [*middle, last_token])
    assert text == "".join(expected_completion(PROMPT))
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": 4,
        "total_tokens": 4 + len(middle) + 1,
        "completion_tokens": len(middle) + 1,
    }
    # Compact JSON, as vLLM's model_dump_json writes it.
    assert ", " not in raw[0]


async def test_completion_streamed_and_not(engine: httpx.AsyncClient) -> None:
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 3}
    document = (await engine.post("/v1/completions", json=body)).json()
    assert document["object"] == "text_completion"
    choice = document["choices"][0]
    assert choice["text"] == "".join(expected_completion(PROMPT, 3))
    assert choice["finish_reason"] == "length"
    streamed = await engine.post("/v1/completions", json=body | {"stream": True})
    raw = events(streamed.text)
    assert raw[-1] == "[DONE]"
    chunks = [json.loads(item) for item in raw[:-1]]
    assert len(chunks) == 3  # no usage chunk unless asked
    assert "".join(c["choices"][0]["text"] for c in chunks) == choice["text"]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "length"]


async def test_stop_string_and_ignore_eos(engine: httpx.AsyncClient) -> None:
    body = {"model": "tiny", "prompt": PROMPT, "stop": ["general"], "max_tokens": 30}
    choice = (await engine.post("/v1/completions", json=body)).json()["choices"][0]
    assert choice["text"] == f"Echo: {prompt_tag(PROMPT)} hello there "
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", "general")
    body = {"model": "tiny", "prompt": PROMPT, "ignore_eos": True, "max_tokens": 14}
    choice = (await engine.post("/v1/completions", json=body)).json()["choices"][0]
    assert choice["text"] == "".join(expected_completion(PROMPT, 14, ignore_eos=True))
    assert choice["finish_reason"] == "length"


async def test_embeddings_float_and_base64(engine: httpx.AsyncClient) -> None:
    body = {"model": "tiny", "input": ["a b", "c"], "dimensions": 8}
    document = (await engine.post("/v1/embeddings", json=body)).json()
    vectors = [item["embedding"] for item in document["data"]]
    assert vectors[0] == pytest.approx(expected_embedding("a b", 8))
    assert math.isclose(sum(v * v for v in vectors[1]), 1.0, rel_tol=1e-9)
    assert document["usage"]["prompt_tokens"] == 3
    packed = await engine.post("/v1/embeddings", json=body | {"encoding_format": "base64"})
    decoded = struct.unpack("<8f", base64.b64decode(packed.json()["data"][0]["embedding"]))
    assert decoded == pytest.approx(vectors[0], rel=1e-6)


async def test_metrics_count_tokens_without_content(engine: httpx.AsyncClient) -> None:
    await engine.post("/v1/chat/completions", json=chat())
    text = (await engine.get("/metrics")).text
    assert 'vllm:prompt_tokens_total{engine="0",model_name="tiny"} 4.0' in text
    assert "vllm:request_success_total" in text
    assert PROMPT not in text


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user"}]}, 404, "model"),
        ("/v1/chat/completions", {"messages": []}, 400, "messages"),
        ("/v1/chat/completions", chat(stream_options={"include_usage": True}), 400, None),
        ("/v1/chat/completions", chat(max_tokens=1000), 400, "max_tokens"),
        ("/v1/chat/completions", chat(n=2), 400, "n"),
        ("/v1/completions", {"prompt": ""}, 400, None),
        ("/v1/completions", {"prompt": " ".join(["w"] * 64)}, 400, "input_tokens"),
        ("/v1/embeddings", {"input": 7}, 400, "input"),
    ],
)
async def test_refusals_use_vllms_error_shape(
    engine: httpx.AsyncClient, path: str, body: dict[str, Any], status: int, param: str | None
) -> None:
    response = await engine.post(path, json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert list(error) == ["message", "type", "param", "code"]
    assert error["code"] == status
    if param is not None:
        assert error["param"] == param


async def test_invalid_json_is_400(engine: httpx.AsyncClient) -> None:
    response = await engine.post("/v1/completions", content=b"{not json")
    assert response.status_code == 400


async def test_error_fault_inside_a_200_stream_then_done(engine: httpx.AsyncClient) -> None:
    switched = await engine.post("/dev/faults", json={"error_after_chunks": 2})
    assert switched.json()["error_after_chunks"] == 2
    response = await engine.post("/v1/chat/completions", json=chat(stream=True))
    assert response.status_code == 200
    raw = events(response.text)
    assert len(raw) == 4
    assert json.loads(raw[2])["error"]["type"] == "InternalServerError"
    assert raw[3] == "[DONE]"


async def test_hold_fault_keeps_a_stream_open_until_released(tmp_path: Path) -> None:
    """Driven as a server would drive it (httpx's ASGI transport collects whole bodies)."""
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text('{"max_position_embeddings": 64}')
    config = parse_config(["serve", str(model), "--served-model-name", "tiny"])
    faults = FaultSwitch(config.faults)
    state = EngineState(config, inspect_model(model, None), faults, EngineMetrics("tiny"))
    app = build_app(state)
    faults.apply({"hold_after_chunks": 2, "tokens_per_second": 0})
    body = json.dumps(chat(stream=True)).encode()
    requests = [{"type": "http.request", "body": body, "more_body": False}]
    done = asyncio.Event()
    received: list[bytes] = []
    two_events = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop(0)
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            received.append(message["body"])
            if len(received) == 2:
                two_events.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }
    serving = asyncio.create_task(app(scope, receive, send))
    await asyncio.wait_for(two_events.wait(), 10)
    for _ in range(20):  # every chance to send a third event: it must not
        await asyncio.sleep(0)
    assert len(received) == 2
    assert not serving.done()
    assert faults.apply({"hold_after_chunks": None}).hold_after_chunks is None
    await asyncio.wait_for(serving, 10)
    done.set()
    assert received[-1].strip() == b"data: [DONE]"
    assert len(received) > 3


async def test_hang_health_fault_and_bad_fault_updates(engine: httpx.AsyncClient) -> None:
    bad = await engine.post("/dev/faults", json={"crash_after_chunks": -1})
    assert bad.status_code == 400
    unknown = await engine.post("/dev/faults", json={"explode": True})
    assert unknown.status_code == 400
    assert (await engine.get("/dev/faults")).json()["hang_health"] is False


async def test_tool_call_streamed(engine: httpx.AsyncClient) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    body = chat(
        stream=True, tools=tools, tool_choice={"type": "function", "function": {"name": "weather"}}
    )
    raw = events((await engine.post("/v1/chat/completions", json=body)).text)
    chunks = [json.loads(item) for item in raw[:-1]]
    head = chunks[1]["choices"][0]["delta"]["tool_calls"][0]
    assert head["function"] == {"name": "weather"}
    arguments = "".join(
        c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
        for c in chunks[2:]
        if c["choices"][0]["delta"].get("tool_calls")
    )
    assert json.loads(arguments) == {"input": PROMPT}
