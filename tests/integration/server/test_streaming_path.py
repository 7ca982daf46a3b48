"""The streaming path through a real service and the development engine: a stalled engine
stream (the engine's stall fault) is ended with the error event (and on OHTTP the final
chunk), and the streaming metrics count each encrypted event once."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from enclave.protocol import bhttp
from enclave.protocol.padding import strip_event_padding
from enclave_dev.local import local_settings, serve_locally
from enclave_dev.tee import Simulator
from tests.integration.server.conftest import (
    METRICS_AUTH,
    METRICS_TOKEN,
    TOKEN,
    Running,
    chat_request,
    encapsulate,
    key_configs,
    load_model,
    post_ohttp,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

MODELS_TOML = """
[models.stally]
path = "tiny"
extra_args = ["--dev-stall-after-chunks", "3"]
"""
STALL_SECONDS = 1.0


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stalling(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    tmp = tmp_path_factory.mktemp("stall")
    (tmp / "models" / "tiny").mkdir(parents=True)
    (tmp / "models" / "tiny" / "config.json").write_text('{"architectures": ["Fake"]}')
    (tmp / "models" / "models.toml").write_text(MODELS_TOML)
    settings = local_settings(
        tmp,
        load_token=TOKEN,
        engine_flags=("--dev-load-seconds", "0.2", "--dev-tokens-per-second", "0"),
        engine_stall_timeout_seconds=STALL_SECONDS,
        engine_first_token_timeout_seconds=30,
        metrics_token=METRICS_TOKEN,
    )
    simulator = Simulator.create()
    async with serve_locally(settings, simulator=simulator) as server:
        assert server.bound_port is not None
        yield Running(server, simulator, server.bound_port, tmp)


def events_of(content: bytes) -> list[bytes]:
    return [event for event in strip_event_padding(content).split(b"\n\n") if event]


async def test_a_stalled_stream_ends_with_the_error_event(stalling: Running) -> None:
    await load_model(stalling, "stally")
    body = json.loads(chat_request("stall after three events", model="stally").content)
    outcome = 'outcome="engine_stalled",route="/v1/chat/completions"} 1.0'
    async with stalling.client() as client:
        response = await client.post("/v1/chat/completions", json=body)
        for _ in range(100):  # the outcome is counted as the relay ends, just after the body
            metrics = (await client.get("/metrics", headers=METRICS_AUTH)).text
            if outcome in metrics:
                break
            await asyncio.sleep(0.05)
    events = events_of(response.content)
    # three from the engine, then the error event, the receipt event and [DONE]
    assert len(events) == 3 + 3
    assert json.loads(events[3][len(b"data: ") :])["error"]["code"] == "engine_stalled"
    assert events[4].startswith(b'data: {"enclave_receipt":')
    assert events[5] == b"data: [DONE]"
    assert outcome in metrics
    assert "enclave_active_streams 0.0" in metrics  # the slot came back


async def test_a_stalled_encrypted_stream_ends_with_the_error_then_the_final_chunk(
    stalling: Running,
) -> None:
    await load_model(stalling, "stally")
    config = (await key_configs(stalling))[0]
    body, decoder = encapsulate(config, chat_request("stall, encrypted", model="stally"))
    async with stalling.client() as client:
        result = await post_ohttp(client, body, decoder)
    assert result.complete  # the final chunk came
    events = events_of(bhttp.decode_response(result.plaintext).content)
    assert json.loads(events[-3][len(b"data: ") :])["error"]["code"] == "engine_stalled"
    assert events[-2].startswith(b'data: {"enclave_receipt":')
    assert events[-1] == b"data: [DONE]"


def _value(metrics: str, pattern: str) -> float:
    found = re.search(pattern + r" ([0-9.e+]+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_each_encrypted_event_is_counted_once(stalling: Running) -> None:
    await load_model(stalling, "tiny")
    config = (await key_configs(stalling))[0]
    chunks = r'enclave_streamed_chunks_total\{route="ohttp_inner"\}'
    sealed = r"enclave_ohttp_chunks_sealed_total"
    async with stalling.client() as client:
        before = (await client.get("/metrics", headers=METRICS_AUTH)).text
        body, decoder = encapsulate(config, chat_request("count me once", max_tokens=8))
        result = await post_ohttp(client, body, decoder)
        after = (await client.get("/metrics", headers=METRICS_AUTH)).text
    events = events_of(bhttp.decode_response(result.plaintext).content)
    # every event but the service's own receipt event, which is no engine chunk
    assert events[-2].startswith(b'data: {"enclave_receipt":')
    assert _value(after, chunks) - _value(before, chunks) == len(events) - 1
    assert "/.well-known/ohttp-gateway" not in "".join(
        line for line in after.splitlines() if line.startswith("enclave_streamed_chunks")
    )
    # nonce+head, at least one chunk of events, the final chunk; never more than one per event
    assert 3 <= _value(after, sealed) - _value(before, sealed) <= len(events) + 2
