"""The development engine's documents have real vLLM 0.32's shapes: the same keys in the same
order, the same types, chunk by chunk (first, middle, finishing, usage), compared with output
recorded from real vLLM (tests/vectors/vllm/README.md says how)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from enclave_dev.engine._app import EngineState, build_app
from enclave_dev.engine._config import parse_config
from enclave_dev.engine._faults import FaultSwitch
from enclave_dev.engine._loading import inspect_model
from enclave_dev.engine._metrics import EngineMetrics

VECTORS = Path(__file__).resolve().parents[3] / "vectors" / "vllm"
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 5}
COMPLETION = {"model": "tiny", "prompt": "The quick brown fox", "max_tokens": 5}
USAGE = {"stream": True, "stream_options": {"include_usage": True}}


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text('{"max_position_embeddings": 512}')
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


def skeleton(value: Any) -> Any:
    """Keys (in order) and value types, not values; a list by its first element."""
    if isinstance(value, dict):
        return [(key, skeleton(item)) for key, item in value.items()]
    if isinstance(value, list):
        return ["list", skeleton(value[0])] if value else ["list"]
    return type(value).__name__


def chunks(raw: str) -> list[dict[str, Any]]:
    data = [block.removeprefix("data: ") for block in raw.split("\n\n") if block]
    assert data[-1] == "[DONE]"
    return [json.loads(item) for item in data[:-1]]


def stream_skeleton(raw: str) -> list[Any]:
    """First, a middle, the last two chunks: every kind of chunk a stream has."""
    documents = chunks(raw)
    return [skeleton(documents[0]), skeleton(documents[1]), *map(skeleton, documents[-2:])]


@pytest.mark.parametrize(
    ("recording", "path", "body"),
    [
        ("chat.json", "/v1/chat/completions", CHAT),
        ("completion.json", "/v1/completions", COMPLETION),
        ("error-unknown-model.json", "/v1/completions", {**COMPLETION, "model": "nope"}),
        ("error-too-long.json", "/v1/completions", {**COMPLETION, "max_tokens": 100000}),
    ],
)
async def test_json_bodies_match_real_vllm(
    engine: httpx.AsyncClient, recording: str, path: str, body: dict[str, Any]
) -> None:
    recorded = json.loads((VECTORS / recording).read_text())
    response = await engine.post(path, json=body)
    assert response.status_code == recorded["status"]
    assert skeleton(response.json()) == skeleton(recorded["body"])


@pytest.mark.parametrize(
    ("recording", "path", "body"),
    [
        ("chat-stream.sse", "/v1/chat/completions", {**CHAT, "stream": True}),
        ("chat-stream-usage.sse", "/v1/chat/completions", {**CHAT, **USAGE}),
        ("completion-stream.sse", "/v1/completions", {**COMPLETION, "stream": True}),
        ("completion-stream-usage.sse", "/v1/completions", {**COMPLETION, **USAGE}),
    ],
)
async def test_streams_match_real_vllm(
    engine: httpx.AsyncClient, recording: str, path: str, body: dict[str, Any]
) -> None:
    recorded = (VECTORS / recording).read_text()
    response = await engine.post(path, json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert stream_skeleton(response.text) == stream_skeleton(recorded)


async def test_version_and_model_list_match_real_vllm(engine: httpx.AsyncClient) -> None:
    version = json.loads((VECTORS / "version.json").read_text())["body"]
    assert skeleton((await engine.get("/version")).json()) == skeleton(version)
    ours = (await engine.get("/v1/models")).json()
    theirs = json.loads((VECTORS / "models.json").read_text())["body"]
    real_keys = [key for key, _ in skeleton(theirs["data"][0])]
    # The development engine adds "description" (it says it is not a language model).
    assert [key for key, _ in skeleton(ours["data"][0]) if key != "description"] == real_keys
