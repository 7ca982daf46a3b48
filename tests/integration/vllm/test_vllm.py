"""The service driving real ``vllm serve`` through the ModelManager, in one module sharing one
service (tests run in file order; each leaves the engine as the next one expects it):

load with progress from real log lines -> /v1/models -> chat and completions, streamed and not,
with and without usage -> the OHTTP path with the project's client -> the local proxy in
Anthropic mode -> prefix-cache isolation (the service's cache_salt) -> kill -9 of EngineCore
mid-stream (error event, end, ready left, restart with backoff) -> kill -9 of the API server
mid-stream -> unload (no process, no socket) -> a load vLLM refuses, with its reason in the
status and the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import pytest

from enclave.client import AsyncOhttpTransport
from enclave.client._proxy import build_proxy_app
from enclave_dev.tinymodel import TINY_MODEL_NAME
from model_manager._progress import MAX_FROM_LOGS
from tests.integration.client.conftest import serve

from .conftest import MAX_MODEL_LEN, REFUSED, START_WAIT, VllmService, alive, rss_kib

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MODEL = TINY_MODEL_NAME
MESSAGES = [{"role": "user", "content": "Say hello."}]


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, "max_tokens": 5, "temperature": 0, **extra}


def completion(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "The quick brown fox", "max_tokens": 5, **extra}


async def events_of(response: httpx.Response) -> list[str]:
    return [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]


async def test_load_moves_progress_through_real_log_lines(vllm_service: VllmService) -> None:
    started = time.monotonic()
    accepted = await vllm_service.post_model("/v1/models/load", MODEL)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["generation"] == 1
    seen = await vllm_service.wait_for("ready", "error")
    took = time.monotonic() - started
    assert seen[-1]["proxy_status"] == "ready", seen[-1]
    progress = [document["proxy_progress"] for document in seen]
    assert progress == sorted(progress), "progress went down"
    assert progress[-1] == 1.0
    # The manifest hash takes 0..0.2; everything above it up to 1.0 comes from vLLM's lines.
    from_logs = {value for value in progress if 0.2 < value < 1.0}
    assert len(from_logs) >= 3, progress
    assert max(from_logs) <= 0.2 + 0.8 * MAX_FROM_LOGS
    processes = vllm_service.engine_processes()
    memory = sum(rss_kib(pid) for pid, _ in processes) // 1024
    print(f"\nvLLM start to ready: {took:.1f} s; {len(processes)} processes, {memory} MiB RSS")
    assert len(processes) >= 2  # the API server and its EngineCore (and a worker)


async def test_models_route_lists_the_model(vllm_service: VllmService) -> None:
    async with vllm_service.plain_client() as client:
        models = (await client.get("/v1/models")).json()
    assert [card["id"] for card in models["data"]] == [MODEL]
    assert models["data"][0]["digest_kind"] == "manifest-sha256"
    async with vllm_service.manager.engine_client() as engine:  # vLLM's own list, direct
        own = (await engine.get("/v1/models")).json()
    assert [(card["id"], card["max_model_len"]) for card in own["data"]] == [(MODEL, MAX_MODEL_LEN)]


async def test_chat_and_completions_streamed_and_not(vllm_service: VllmService) -> None:
    async with vllm_service.plain_client() as client:
        answer = (await client.post("/v1/chat/completions", json=chat())).json()
        assert answer["object"] == "chat.completion"
        assert isinstance(answer["choices"][0]["message"]["content"], str)
        assert answer["usage"]["completion_tokens"] <= 5
        text = (await client.post("/v1/completions", json=completion())).json()
        assert text["object"] == "text_completion"
        assert isinstance(text["choices"][0]["text"], str)

        for path, body in (("/v1/chat/completions", chat()), ("/v1/completions", completion())):
            async with client.stream("POST", path, json={**body, "stream": True}) as response:
                assert response.status_code == 200
                plain = await events_of(response)
            usage = {"stream": True, "stream_options": {"include_usage": True}}
            async with client.stream("POST", path, json={**body, **usage}) as response:
                with_usage = await events_of(response)
            assert plain[-1] == with_usage[-1] == "[DONE]"
            # The service's receipt event (docs/attestation.md 9.2) is the last before [DONE].
            assert "enclave_receipt" in json.loads(plain[-2])
            assert "enclave_receipt" in json.loads(with_usage[-2])
            plain_chunks = [json.loads(event) for event in plain[:-2]]
            assert all(chunk["choices"] for chunk in plain_chunks)
            assert not any(chunk.get("usage") for chunk in plain_chunks)
            last = json.loads(with_usage[-3])
            assert last["choices"] == []
            assert last["usage"]["completion_tokens"] <= 5


async def test_the_ohttp_path_with_the_projects_client(vllm_service: VllmService) -> None:
    transport = AsyncOhttpTransport(vllm_service.url, vllm_service.verifier())
    async with httpx.AsyncClient(
        transport=transport, base_url=vllm_service.url, timeout=60
    ) as client:
        answer = (await client.post("/v1/chat/completions", json=chat())).json()
        assert answer["choices"][0]["finish_reason"] in ("stop", "length")
        async with client.stream(
            "POST", "/v1/chat/completions", json=chat(stream=True)
        ) as response:
            assert response.status_code == 200
            events = await events_of(response)
    assert events[-1] == "[DONE]"
    assert json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"


async def test_the_local_proxy_in_anthropic_mode(vllm_service: VllmService) -> None:
    transport = AsyncOhttpTransport(vllm_service.url, vllm_service.verifier())
    async with serve(build_proxy_app(transport, compat="anthropic")) as url:
        client = anthropic.AsyncAnthropic(base_url=url, api_key="sk-ant-caller", max_retries=0)
        message = await client.messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "Say hello."}]
        )
        assert message.role == "assistant"
        assert message.stop_reason in ("end_turn", "max_tokens")
        assert message.usage.output_tokens <= 5
        async with client.messages.stream(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "Say hello."}]
        ) as stream:
            streamed = await stream.get_final_message()
        assert streamed.stop_reason in ("end_turn", "max_tokens")
        await client.close()


#: Long enough for two full KV blocks (vLLM's CPU block is 128 tokens): only full blocks hit.
CACHE_PROMPT = " ".join(f"entry {i} of the ledger," for i in range(45))
DOMAIN_A = "isolation-domain-a-5f1c0e9a2b7d"
DOMAIN_B = "isolation-domain-b-93d4a61e0c58"


async def prefix_cache_counters(vllm_service: VllmService) -> tuple[float, float]:
    """vLLM's own (queries, hits) prefix-cache token counters, read from the engine."""
    async with vllm_service.manager.engine_client() as engine:
        text = (await engine.get("/metrics")).text
    totals = {"vllm:prefix_cache_queries_total": 0.0, "vllm:prefix_cache_hits_total": 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals["vllm:prefix_cache_queries_total"], totals["vllm:prefix_cache_hits_total"]


async def cached_tokens(
    vllm_service: VllmService, client: httpx.AsyncClient, **headers: str
) -> tuple[int, float]:
    """Send CACHE_PROMPT; (its prompt tokens, the prefix-cache hits it made, in tokens)."""
    queries, hits = await prefix_cache_counters(vllm_service)
    body = completion(prompt=CACHE_PROMPT, max_tokens=1, cache_salt="client-chosen-salt")
    answer = await client.post("/v1/completions", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    prompt_tokens = answer.json()["usage"]["prompt_tokens"]
    async with asyncio.timeout(10):  # vLLM records the request's stats just after it answers
        while (now := await prefix_cache_counters(vllm_service))[0] < queries + prompt_tokens:
            await asyncio.sleep(0.05)
    return prompt_tokens, now[1] - hits


async def test_prefix_cache_is_isolated_between_domains(vllm_service: VllmService) -> None:
    """CVE-2025-46570: a second identical prompt from another isolation domain (or with no
    key, or with the same client-chosen ``cache_salt``) gets no prefix-cache hit on real vLLM;
    from the same domain it does."""
    if vllm_service.manager.status().proxy_status != "ready":  # run alone (-k)
        assert (await vllm_service.post_model("/v1/models/load", MODEL)).status_code == 202
        assert (await vllm_service.wait_for("ready", "error"))[-1]["proxy_status"] == "ready"
    key = "x-cache-isolation-key"
    async with vllm_service.plain_client() as client:
        tokens, first = await cached_tokens(vllm_service, client, **{key: DOMAIN_A})
        assert 256 < tokens < 500, tokens
        _, same_domain = await cached_tokens(vllm_service, client, **{key: DOMAIN_A})
        _, other_domain = await cached_tokens(vllm_service, client, **{key: DOMAIN_B})
        _, no_key = await cached_tokens(vllm_service, client)
        _, no_key_again = await cached_tokens(vllm_service, client)
    print(
        f"\nprefix-cache hits of a {tokens}-token prompt: first {first:.0f}, same domain "
        f"{same_domain:.0f}, other domain {other_domain:.0f}, no key {no_key:.0f} then "
        f"{no_key_again:.0f}"
    )
    assert first == 0
    assert same_domain >= 256
    assert other_domain == no_key == no_key_again == 0


#: A stream the kill tests cut: as long as the model's context allows.
LONG_TOKENS = MAX_MODEL_LEN - 100


async def long_stream(vllm_service: VllmService, client: httpx.AsyncClient) -> AsyncIterator[str]:
    body = chat(stream=True, max_tokens=LONG_TOKENS, ignore_eos=True)
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                yield line[6:]


async def kill_mid_stream(vllm_service: VllmService, victim: int) -> list[str]:
    """Stream, SIGKILL ``victim`` after the first event (the role: the engine has LONG_TOKENS
    still to make; with 400 and the kill after the third event, the tiny model on a loaded
    machine had sometimes made them all before the signal landed), read to the end; every
    event. Then
    wait until the state leaves ``ready`` (printing how long each took)."""
    events: list[str] = []
    async with vllm_service.plain_client() as client:
        async with asyncio.timeout(120):
            async for event in long_stream(vllm_service, client):
                events.append(event)
                if len(events) == 1:
                    os.kill(victim, signal.SIGKILL)
                    killed = time.monotonic()
    ended = time.monotonic() - killed
    await vllm_service.manager.wait_status("error", "loading", timeout=60)
    left = time.monotonic() - killed
    print(f"\nkill -9: stream ended after {ended:.2f} s, state left ready after {left:.2f} s")
    return events


def assert_ended_with_an_error_event(events: list[str]) -> None:
    assert len(events) < LONG_TOKENS
    assert events[-1] == "[DONE]"
    assert "enclave_receipt" in json.loads(events[-2])  # an ended stream is signed too
    assert "error" in json.loads(events[-3]), events[-4:]


async def test_kill_of_engine_core_mid_stream_then_restart(vllm_service: VllmService) -> None:
    processes = vllm_service.engine_processes()
    core = [pid for pid, name in processes if "EngineCor" in name]  # comm: 15 chars
    assert len(core) == 1, processes
    before = vllm_service.manager.status().restarts
    events = await kill_mid_stream(vllm_service, core[0])
    assert_ended_with_an_error_event(events)
    crashed = await vllm_service.manager.wait_status("error", "loading", timeout=60)
    assert crashed.proxy_message.startswith("restart 1 of ")  # after the backoff
    await vllm_service.manager.wait_status("loading", timeout=60)
    seen = await vllm_service.wait_for("ready", "error", timeout=START_WAIT)
    ready = seen[-1]
    assert ready["proxy_status"] == "ready", ready
    assert ready["restarts"] == before + 1
    assert crashed.error is not None
    assert crashed.error.code == "engine_crashed"
    # Seen as the EngineCore's death, not as the API server's exit seconds later (code 0).
    assert crashed.error.message.startswith("the engine stopped unexpectedly (its process ")
    assert crashed.error.message.endswith(f"(pid {core[0]}) died)")
    assert alive([pid for pid, _ in processes]) == []


async def test_kill_of_the_api_server_mid_stream(vllm_service: VllmService) -> None:
    api_server = vllm_service.manager.engine_pid()
    assert api_server is not None
    processes = [pid for pid, _ in vllm_service.engine_processes()]
    events = await kill_mid_stream(vllm_service, api_server)
    assert_ended_with_an_error_event(events)
    crashed = await vllm_service.manager.wait_status("error", "loading", timeout=10)
    assert crashed.error is not None
    assert crashed.error.message == "the engine stopped unexpectedly (killed by SIGKILL)"
    assert crashed.proxy_message.startswith("restart 2 of ")
    # No waiting for the second restart: unload it (the next test checks nothing is left).
    await vllm_service.manager.wait_status("loading", timeout=60)
    assert alive(processes) == []


async def test_unload_leaves_no_process_and_no_socket(vllm_service: VllmService) -> None:
    pid = vllm_service.manager.engine_pid()
    processes = [pid for pid, _ in vllm_service.engine_processes()]
    response = await vllm_service.post_model("/v1/models/unload", MODEL)
    assert response.status_code == 202, response.text
    seen = await vllm_service.wait_for("idle", timeout=60)
    assert seen[-1]["loaded_model"] is None
    assert pid is None or alive([pid, *processes]) == []
    assert not (vllm_service.tmp / "run" / "engine.sock").exists()


async def test_a_load_vllm_refuses_says_why(
    vllm_service: VllmService, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="model_manager.lifecycle"):
        assert (await vllm_service.post_model("/v1/models/load", REFUSED)).status_code == 202
        failed = (await vllm_service.wait_for("error", "ready"))[-1]
    assert failed["proxy_status"] == "error"
    assert failed["error"]["code"] == "engine_exited"
    reason = "User-specified max_model_len (999999) is greater than the derived max_model_len"
    assert reason in failed["error"]["message"]
    assert reason in caplog.text
    assert vllm_service.manager.engine_pid() is None
