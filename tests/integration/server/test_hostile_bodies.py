"""Hostile clients at the body level, against the real service (uvicorn, RA-TLS, loopback):
slow bodies hold no stream slot and no gateway in-flight count, and are refused with 408 when
their time is up; bodies together stay within the memory budget (issue 12, points 1 and 5)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from enclave.protocol import bhttp
from enclave_dev.local import local_settings, serve_locally
from enclave_dev.tee import Simulator
from tests.integration.server._raw import RawClient
from tests.integration.server.conftest import (
    TOKEN,
    Running,
    chat_request,
    encapsulate,
    key_configs,
    load_model,
    post_ohttp,
    sse_text,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

STREAMS = 4  # stream slots, and the gateway's in-flight limit
BODY_TIMEOUT = 8.0
BODY_LIMIT = 64 * 1024
BUDGET = 2 * BODY_LIMIT


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    tmp = tmp_path_factory.mktemp("hostile-bodies")
    (tmp / "models" / "tiny").mkdir(parents=True)
    (tmp / "models" / "tiny" / "config.json").write_text("{}")
    settings = local_settings(
        tmp,
        load_token=TOKEN,
        engine_flags=("--dev-load-seconds", "0.2"),
        max_concurrent_streams=STREAMS,
        body_timeout_seconds=BODY_TIMEOUT,
        body_limit_bytes=BODY_LIMIT,
        body_memory_budget_bytes=BUDGET,
    )
    simulator = Simulator.create()
    async with serve_locally(settings, simulator=simulator) as server:
        assert server.bound_port is not None
        running = Running(server, simulator, server.bound_port, tmp)
        await load_model(running, "tiny")
        yield running


async def slow_body(port: int, path: str, content_type: str, holding: list[int]) -> bytes:
    """Headers, then one body byte every 0.5 s until the server answers (or 30 s pass);
    returns the first bytes of the answer (b"" if the connection closed without one)."""
    client = await RawClient.open(port)
    try:
        await client.head(path, content_type, 1000)
        answer = asyncio.create_task(client.reader.read(65536))
        deadline = time.monotonic() + 30
        sent = 0
        while not answer.done() and time.monotonic() < deadline:
            with contextlib.suppress(ConnectionError):
                await client.send(b" ")
            sent += 1
            if sent == 2:
                holding.append(1)
            await asyncio.wait({answer}, timeout=0.5)
        with contextlib.suppress(ConnectionError):
            return await answer if answer.done() else b""
        return b""
    finally:
        await client.aclose()


async def test_slow_bodies_take_no_slot_and_are_refused_with_408(running: Running):
    attackers = 48
    holding: list[int] = []
    attacks = [
        asyncio.create_task(
            slow_body(running.port, "/v1/chat/completions", "application/json", holding)
        )
        for _ in range(attackers * 2 // 3)
    ] + [
        asyncio.create_task(
            slow_body(running.port, "/.well-known/ohttp-gateway", "message/ohttp-req", holding)
        )
        for _ in range(attackers // 3)
    ]
    async with asyncio.timeout(BODY_TIMEOUT - 2):
        while len(holding) < attackers:  # every attacker is into its body
            await asyncio.sleep(0.05)
    config = (await key_configs(running))[0]
    async with running.client() as client:
        body = json.loads(chat_request("still served").content)
        plain = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=body) for _ in range(STREAMS))
        )
        encrypted = []
        for _ in range(STREAMS):
            sealed, decoder = encapsulate(config, chat_request("still served"))
            encrypted.append(await post_ohttp(client, sealed, decoder))
    assert not any(task.done() for task in attacks), "an attacker was answered too early"
    assert [r.status_code for r in plain] == [200] * STREAMS
    assert all(sse_text(r.content) for r in plain)
    assert [r.status for r in encrypted] == [200] * STREAMS
    for result in encrypted:
        inner = bhttp.decode_response(result.plaintext)
        assert inner.status == 200
        assert sse_text(inner.content)
    answers = await asyncio.gather(*attacks)
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers[:3]
    assert all(b"body_timeout" in answer for answer in answers)


async def test_bodies_together_stay_within_the_budget(running: Running):
    holders = [await RawClient.open(running.port) for _ in range(2)]
    late = await RawClient.open(running.port)
    try:
        for holder in holders:  # each holds most of a maximal body, and waits
            await holder.head("/v1/chat/completions", "application/json", BODY_LIMIT)
            await holder.send(b" " * (BODY_LIMIT - 1024))
        await asyncio.sleep(0.5)
        await late.head("/v1/chat/completions", "application/json", 16 * 1024)
        status, headers, body = await late.response(timeout=BODY_TIMEOUT / 2)
        assert (status, json.loads(body)["error"]["code"]) == (503, "overloaded")
        assert headers["retry-after"] == "1"
        for holder in holders:  # the bodies complete (and are not JSON): the budget frees
            await holder.send(b" " * 1024)
            assert (await holder.response(timeout=10))[0] == 400
    finally:
        for client in (*holders, late):
            await client.aclose()
    async with running.client() as client:
        response = await client.post(
            "/v1/chat/completions", json=json.loads(chat_request("after").content)
        )
        assert response.status_code == 200
        too_big = await client.post(
            "/v1/chat/completions",
            content=b" " * (BODY_LIMIT + 1),
            headers={"content-type": "application/json"},
        )
        assert too_big.status_code == 413


async def test_a_body_refused_from_its_headers_may_follow_but_must_end_in_time(running: Running):
    client = await RawClient.open(running.port)
    try:
        await client.head("/.well-known/ohttp-gateway", "message/ohttp-req", BODY_LIMIT + 1)
        status, headers, body = await client.response(timeout=10)
        assert (status, json.loads(body)["error"]["code"]) == (413, "body_too_large")
        # left open so that a client still sending can read the answer; the rest of its body
        # is discarded, and the connection closed when it does not end within the body timeout
        assert "connection" not in headers
        await client.send(b"x" * 1000)
        assert await client.closed_by_server(timeout=BODY_TIMEOUT + 20)
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("length", "code"),
    [
        (b"-1", "invalid_content_length"),
        (b"+5", "invalid_content_length"),
        (b"5,5", "invalid_content_length"),
        (b"5, 6", "invalid_content_length"),
        (b"99999999999999999999", "invalid_content_length"),
        (b"5\r\ncontent-length: 6", "invalid_content_length"),
    ],
)
async def test_a_bad_content_length_on_the_wire_gets_the_typed_400(
    running: Running, length: bytes, code: str
) -> None:
    """Through the real server (TLS, llhttp): the parser refuses it before any route, and the
    answer is the API's error shape with the code every ASGI path gives; then the close."""
    client = await RawClient.open(running.port)
    try:
        await client.send(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: enclave\r\n"
            b"content-type: application/json\r\ncontent-length: " + length + b"\r\n\r\n{}"
        )
        status, headers, body = await client.response(10)
        assert status == 400
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["error"]["code"] == code
        assert await client.closed_by_server(5)
    finally:
        await client.aclose()
