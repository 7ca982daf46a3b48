"""The relay's streaming properties: backpressure, events that arrived together sent together,
stall detection (with its separate allowance for the first event), the metrics per stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from enclave.protocol.padding import strip_event_padding
from tests.unit.enclave.routes.conftest import MODEL, Harness, sse_response

MakeHarness = Callable[..., Awaitable[Harness]]
CHAT = "/v1/chat/completions"


def event(index: int) -> bytes:
    return b'data: {"choices":[{"delta":{"content":"t%d"}}]}\n\n' % index


async def ready(make_harness: MakeHarness, **settings: object) -> Harness:
    harness = await make_harness(**settings)
    await harness.load()
    return harness


async def drive(
    harness: Harness, gate: asyncio.Event | None = None
) -> tuple[asyncio.Task[None], list[bytes]]:
    """Call the app as a server would; with ``gate``, every body send after the first waits
    for it (a client that stopped reading)."""
    body = json.dumps({"model": MODEL, "stream": True, "messages": []}).encode()
    received: list[bytes] = []
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop()
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            if gate is not None and received:
                await gate.wait()
            received.append(message.get("body", b""))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": CHAT,
        "raw_path": CHAT.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8443),
    }
    return asyncio.create_task(harness.app(scope, receive, send)), received


async def test_a_client_that_stops_reading_stops_the_engine_reads(
    make_harness: MakeHarness,
) -> None:
    harness = await ready(make_harness)
    produced = 0

    async def events() -> AsyncIterator[bytes]:
        nonlocal produced
        for index in range(200):
            produced += 1
            yield event(index)
        yield b"data: [DONE]\n\n"

    async def handler(_: httpx.Request) -> httpx.Response:
        return sse_response(events())

    harness.engine.handler = handler
    gate = asyncio.Event()
    task, received = await drive(harness, gate)
    for _ in range(1000):
        await asyncio.sleep(0)
    held_back = produced
    gate.set()
    await asyncio.wait_for(task, 10)
    assert 0 < held_back <= 3  # one event sent, one waiting in send, one read ahead at most
    expected = b"".join(event(i) for i in range(200)) + b"data: [DONE]\n\n"
    assert strip_event_padding(b"".join(received)) == expected


async def test_events_that_arrive_together_go_out_together(make_harness: MakeHarness) -> None:
    harness = await ready(make_harness)
    first = event(0)
    together = event(1) + event(2) + b"data: [DONE]\n\n"

    async def events() -> AsyncIterator[bytes]:
        yield first
        yield together[:10]  # a partial event waits for the rest
        yield together[10:]

    async def handler(_: httpx.Request) -> httpx.Response:
        return sse_response(events())

    harness.engine.handler = handler
    task, received = await drive(harness)
    await asyncio.wait_for(task, 10)
    assert [strip_event_padding(message) for message in received] == [first, together, b""]
    assert [len(message) % 256 for message in received] == [0, 0, 0]  # each event padded
    metrics = harness.service.metrics.render().decode()
    assert f'enclave_streamed_chunks_total{{route="{CHAT}"}} 4.0' in metrics
    assert f'enclave_streamed_tokens_total{{route="{CHAT}"}} 3.0' in metrics
    assert f'enclave_inter_token_latency_seconds_count{{route="{CHAT}"}} 3.0' in metrics


async def test_a_stream_that_goes_silent_is_ended_as_stalled(make_harness: MakeHarness) -> None:
    harness = await ready(
        make_harness, engine_stall_timeout_seconds=0.2, engine_first_token_timeout_seconds=30
    )
    never = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        yield event(0)
        yield event(1)
        await never.wait()
        yield b"data: [DONE]\n\n"

    async def handler(_: httpx.Request) -> httpx.Response:
        return sse_response(events())

    harness.engine.handler = handler
    response = await asyncio.wait_for(
        harness.client.post(CHAT, json={"model": MODEL, "stream": True}), 10
    )
    assert strip_event_padding(response.content).startswith(event(0) + event(1))
    relayed = strip_event_padding(response.content).split(b"\n\n")
    error = json.loads(relayed[2][len(b"data: ") :])["error"]
    assert error["code"] == "engine_stalled"
    assert strip_event_padding(response.content).endswith(b"data: [DONE]\n\n")
    assert harness.service.streams.active == 0
    metrics = harness.service.metrics.render().decode()
    assert f'enclave_stream_outcomes_total{{outcome="engine_stalled",route="{CHAT}"}} 1.0' in (
        metrics
    )


async def test_a_slow_first_event_is_prefill_not_a_stall(make_harness: MakeHarness) -> None:
    harness = await ready(
        make_harness, engine_stall_timeout_seconds=0.1, engine_first_token_timeout_seconds=30
    )

    async def events() -> AsyncIterator[bytes]:
        await asyncio.sleep(0.5)  # five stall allowances: a long prompt's prefill
        yield event(0)
        yield b"data: [DONE]\n\n"

    async def handler(_: httpx.Request) -> httpx.Response:
        return sse_response(events())

    harness.engine.handler = handler
    response = await asyncio.wait_for(
        harness.client.post(CHAT, json={"model": MODEL, "stream": True}), 10
    )
    assert strip_event_padding(response.content) == event(0) + b"data: [DONE]\n\n"


async def test_no_first_event_within_its_allowance_is_a_stall(make_harness: MakeHarness) -> None:
    harness = await ready(
        make_harness, engine_stall_timeout_seconds=30, engine_first_token_timeout_seconds=0.2
    )
    never = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        await never.wait()
        yield b"data: [DONE]\n\n"

    async def handler(_: httpx.Request) -> httpx.Response:
        return sse_response(events())

    harness.engine.handler = handler
    response = await asyncio.wait_for(
        harness.client.post(CHAT, json={"model": MODEL, "stream": True}), 10
    )
    assert b'"code":"engine_stalled"' in strip_event_padding(response.content)
    assert strip_event_padding(response.content).endswith(b"data: [DONE]\n\n")
    assert harness.service.streams.active == 0


async def test_at_a_cadence_a_stall_still_ends_with_the_error_event(
    make_harness: MakeHarness,
) -> None:
    harness = await ready(
        make_harness,
        engine_stall_timeout_seconds=0.3,
        engine_first_token_timeout_seconds=30,
        stream_cadence_ms=20,
    )
    never = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        yield event(0) + event(1)
        await never.wait()
        yield b"data: [DONE]\n\n"

    async def handler(_: httpx.Request) -> httpx.Response:
        return sse_response(events())

    harness.engine.handler = handler
    response = await asyncio.wait_for(
        harness.client.post(CHAT, json={"model": MODEL, "stream": True}), 10
    )
    relayed = strip_event_padding(response.content)
    assert relayed.startswith(event(0) + event(1))
    assert b'"code":"engine_stalled"' in relayed
    assert relayed.endswith(b"data: [DONE]\n\n")
    assert len(response.content) % 256 == 0
    # 0.3 s of silence at 20 ms: keep-alive pieces (comment lines only) filled the ticks.
    assert response.content.count(b"\n:") + 1 - relayed.count(b"\n\n") >= 5
    assert harness.service.streams.active == 0
