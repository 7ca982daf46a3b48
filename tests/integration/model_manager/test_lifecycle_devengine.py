"""Load, serve, unload, crash and hang with the development engine as a real child process.

After every test the harness checks the process table: no process of any engine's session or
process group may remain.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from enclave_dev.engine import NOT_A_LANGUAGE_MODEL, expected_completion
from model_manager.endpoints import LOAD_PATH, UNLOAD_PATH

from .conftest import WAIT, Harness, live

PROMPT = "the quick brown fox"


async def poll_until(harness: Harness, *states: str) -> tuple[dict[str, Any], list[float]]:
    """Poll the status route until a state is reached; return it and every progress seen."""
    progress: list[float] = []
    async with asyncio.timeout(WAIT):
        while True:
            document = await harness.status()
            progress.append(document["proxy_progress"])
            if document["proxy_status"] in states:
                return document, progress
            await asyncio.sleep(0.01)


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], **extra}


async def collect(lines: AsyncIterator[str], into: list[str]) -> None:
    async for line in lines:
        if line.startswith("data: "):
            into.append(line)


async def read_events(response: httpx.Response, limit: int | None = None) -> list[str]:
    events: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            events.append(line.removeprefix("data: "))
            if limit is not None and len(events) >= limit:
                break
    return events


async def test_load_ready_serve_unload(harness: Any) -> None:
    h: Harness = await harness("--dev-workers", "2")
    accepted = await h.post(LOAD_PATH, "tiny")
    assert accepted.status_code == 202
    # A second load, of the same or another model, conflicts while this one runs.
    assert (await h.post(LOAD_PATH, "tiny")).status_code == 409
    ready, progress = await poll_until(h, "ready", "error")
    assert ready["proxy_status"] == "ready", ready
    assert progress == sorted(progress), "progress went down"
    assert progress[-1] == 1.0
    assert len({p for p in progress if 0.0 < p < 1.0}) >= 2, progress
    assert ready["digest_kind"] == "manifest-sha256"
    assert len(ready["loaded_model_digest"]) == 64
    assert (await h.post(LOAD_PATH, "tiny")).status_code == 200

    pid = h.manager.engine_pid()
    assert pid is not None
    assert len(live(pid)) == 3  # the engine and its two workers

    async with h.manager.engine_client() as engine:
        models = (await engine.get("/v1/models")).json()
        assert [card["id"] for card in models["data"]] == ["tiny"]
        assert models["data"][0]["description"] == NOT_A_LANGUAGE_MODEL
        answer = (await engine.post("/v1/chat/completions", json=chat_body())).json()
        assert answer["choices"][0]["message"]["content"] == "".join(expected_completion(PROMPT))
        body = chat_body(stream=True, stream_options={"include_usage": True})
        async with engine.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = await read_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "".join(expected_completion(PROMPT))
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == len(expected_completion(PROMPT)) + 1

    assert (await h.post(UNLOAD_PATH, "tiny")).status_code == 202
    idle, _ = await poll_until(h, "idle")
    assert idle["loaded_model"] is None
    assert live(pid) == []
    assert not (h.settings.run_dir / "engine.sock").exists()
    await h.manager.settled(WAIT)  # every hook call of those transitions has returned
    assert h.states == ["loading", "ready", "unloading", "idle"]


async def test_unload_during_an_open_stream_ends_it_visibly(harness: Any) -> None:
    h: Harness = await harness("--dev-tokens-per-second", "20", stop_grace_seconds=1.0)
    await h.post(LOAD_PATH, "tiny")
    await poll_until(h, "ready")
    pid = h.manager.engine_pid()
    assert pid is not None
    body = chat_body(stream=True, max_tokens=2000, ignore_eos=True)
    events: list[str] = []
    async with (
        h.manager.engine_client() as engine,
        engine.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        lines = response.aiter_lines()
        while len(events) < 3:
            line = await anext(lines)
            if line.startswith("data: "):
                events.append(line)
        assert (await h.post(UNLOAD_PATH, "tiny")).status_code == 202
        with pytest.raises(httpx.TransportError):  # cut mid-stream, never a clean end
            await collect(lines, events)
    assert "data: [DONE]" not in events
    await poll_until(h, "idle")
    assert live(pid) == []


async def test_crash_while_ready_goes_to_error_then_restarts(harness: Any) -> None:
    h: Harness = await harness("--dev-crash-after-chunks", "3", "--dev-workers", "2")
    await h.post(LOAD_PATH, "tiny")
    await poll_until(h, "ready")
    first = h.manager.engine_pid()
    assert first is not None
    async with (
        h.manager.engine_client() as engine,
        engine.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as response,
    ):
        with pytest.raises(httpx.TransportError):
            await read_events(response)
    crashed = await h.manager.wait_status("error", timeout=WAIT)
    assert crashed.error is not None
    assert crashed.error.message == "the engine stopped unexpectedly (exit code 1)"
    await h.manager.wait_status("ready", timeout=WAIT)
    await h.manager.settled(WAIT)
    status = await h.status()
    assert status["restarts"] == 1
    assert status["error"] is None  # cleared once ready again; the hooks saw why
    errors = [seen.error for seen in h.seen if seen.proxy_status == "error"]
    assert [error.code for error in errors if error is not None] == ["engine_crashed"]
    assert h.states == ["loading", "ready", "error", "loading", "ready"]
    assert live(first) == []  # the crashed engine's orphaned workers were reaped too
    second = h.manager.engine_pid()
    assert second is not None
    assert second != first


async def test_hung_health_times_out_and_the_engine_is_killed(harness: Any) -> None:
    h: Harness = await harness(
        "--dev-hang-health",
        "--dev-workers",
        "2",
        load_timeout_seconds=3.0,
        health_request_timeout_seconds=0.5,
    )
    await h.post(LOAD_PATH, "tiny")
    failed, _ = await poll_until(h, "error", "ready")
    assert failed["proxy_status"] == "error"
    assert failed["error"]["code"] == "engine_load_timeout"
    assert failed["restarts"] == 0
    assert len(h.engines) == 1
    assert h.orphans() == []


async def test_start_failure_fails_fast_and_says_why(
    harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The load timeout is longer than the wait: an error here is the fail-fast path.
    h: Harness = await harness("--dev-fail-at-start", load_timeout_seconds=WAIT * 10)
    await h.post(LOAD_PATH, "tiny")
    with caplog.at_level(logging.WARNING, logger="model_manager.lifecycle"):
        failed, _ = await poll_until(h, "error", "ready")
    reason = "RuntimeError: development engine: start failure requested by --dev-fail-at-start"
    assert failed["error"]["code"] == "engine_exited"
    assert failed["error"]["message"] == f"the engine exited while loading (exit code 1): {reason}"
    assert reason in caplog.text  # the operator sees it in the service log too
    assert h.orphans() == []
    assert any("EngineCore failed to start" in line for line in h.manager.engine_log_tail())


async def test_error_event_inside_a_200_stream(harness: Any) -> None:
    h: Harness = await harness("--dev-error-after-chunks", "2")
    await h.post(LOAD_PATH, "tiny")
    await poll_until(h, "ready")
    async with (
        h.manager.engine_client() as engine,
        engine.stream(
            "POST", "/v1/completions", json={"model": "tiny", "prompt": PROMPT, "stream": True}
        ) as response,
    ):
        assert response.status_code == 200
        events = await read_events(response)
    assert len(events) == 4
    assert json.loads(events[2]) == {
        "error": {
            "message": "Internal server error",
            "type": "InternalServerError",
            "param": None,
            "code": 500,
        }
    }
    assert events[3] == "[DONE]"


async def test_stalled_stream_goes_silent(harness: Any) -> None:
    h: Harness = await harness("--dev-stall-after-chunks", "2")
    await h.post(LOAD_PATH, "tiny")
    await poll_until(h, "ready")
    timeout = httpx.Timeout(WAIT, read=2.5)  # silence, not speed: 2 events come at once
    async with (
        h.manager.engine_client(timeout=timeout) as engine,
        engine.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as response,
    ):
        events: list[str] = []
        with pytest.raises(httpx.ReadTimeout):
            await collect(response.aiter_lines(), events)
    assert len(events) == 2


async def test_restore_at_boot_with_a_real_engine(harness: Any) -> None:
    first: Harness = await harness()
    await first.post(LOAD_PATH, "tiny")
    await poll_until(first, "ready")
    await first.manager.aclose()  # the service stops; the model stays recorded
    second: Harness = await harness(restore_on_boot=True)
    restored, _ = await poll_until(second, "ready", "error")
    assert (restored["proxy_status"], restored["loaded_model"]) == ("ready", "tiny")
