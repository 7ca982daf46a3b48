"""The gateway's happy paths: key configs, chunked streaming with one seal per inner piece,
RFC 9458 whole messages, both KEMs, in-process dispatch properties."""

from __future__ import annotations

import asyncio
import json

import pytest

from enclave.protocol import bhttp
from tests.unit.enclave.gateway.conftest import (
    Setup,
    call,
    chunked_body,
    inner_request,
    now,
    whole_body,
)


def open_chunked(decoder, bodies: list[bytes]) -> tuple[list[bytes], bhttp.Response]:
    """Decrypt the outer body messages one by one; return each message's plaintext too."""
    per_message = [b"".join(decoder.feed(body)) for body in bodies]
    final = decoder.finish()
    response = bhttp.decode_response(b"".join(per_message) + final)
    return per_message, response


async def test_ohttp_keys_serves_exactly_the_store_bytes(setup: Setup):
    out = await call(setup.app, b"", method="GET", path="/.well-known/ohttp-keys")
    assert out.status == 200
    assert out.headers[b"content-type"] == b"application/ohttp-keys"
    assert out.body == setup.store.ohttp_keys()


@pytest.mark.parametrize("kem", ["xwing", "x25519"])
async def test_chunked_stream_seals_each_inner_event_as_it_comes(setup: Setup, kem: str):
    config = getattr(setup, kem)
    request = inner_request(payload={"prompt": "hello", "events": 5}, date=now())
    body, decoder = chunked_body(config, request)
    out = await call(setup.app, body, pieces=3)
    assert out.status == 200
    assert out.headers[b"content-type"] == b"message/ohttp-chunked-res"
    assert out.headers[b"incremental"] == b"?1"
    per_message, response = open_chunked(decoder, out.bodies)
    assert response.status == 200
    events = response.content.split(b"\n\n")[:-1]
    assert len(events) == 6  # five events and [DONE]
    assert json.loads(events[0][len(b"data: ") :]) == {"index": 0, "echo": "hello"}
    # message 0: nonce + head; then one message per event; then the final chunk alone
    assert len(out.bodies) == 1 + 6 + 1
    for index, plaintext in enumerate(per_message[1:7]):
        assert plaintext.endswith(events[index] + b"\n\n")
    assert setup.recorder.served == [True]
    assert setup.recorder.chunks == len(out.bodies)


@pytest.mark.parametrize("kem", ["xwing", "x25519"])
async def test_whole_message_round_trip(setup: Setup, kem: str):
    request = inner_request(payload={"prompt": "hi", "stream": False}, date=now())
    body, context = whole_body(getattr(setup, kem), request)
    out = await call(setup.app, body, content_type=b"message/ohttp-req", pieces=4)
    assert out.status == 200
    assert out.headers[b"content-type"] == b"message/ohttp-res"
    response = bhttp.decode_response(context.decapsulate_response(out.body))
    assert response.status == 200
    assert json.loads(response.content) == {"echo": "hi", "n": 3}
    assert setup.recorder.served == [False]


async def test_inner_request_sees_no_client_address_but_its_own_headers(setup: Setup):
    request = inner_request(
        payload={"events": 1}, date=now(), extra_headers=((b"authorization", b"Bearer inner"),)
    )
    body, decoder = chunked_body(setup.xwing, request)
    out = await call(setup.app, body, headers=((b"authorization", b"Bearer outer"),))
    open_chunked(decoder, out.bodies)
    assert setup.state.seen_client is None
    assert setup.state.seen_authorization == b"Bearer inner"


async def test_get_route_through_the_gateway(setup: Setup):
    request = inner_request("/v1/models", method=b"GET", date=now())
    body, decoder = chunked_body(setup.x25519, request)
    _, response = open_chunked(decoder, (await call(setup.app, body)).bodies)
    assert response.status == 200
    assert json.loads(response.content) == {"object": "list", "data": []}


@pytest.mark.parametrize("let_through", [1, 3])
async def test_a_slow_client_holds_the_inner_app_back(setup: Setup, let_through: int):
    """Backpressure: once the outer client takes nothing more (after the head, or after the
    head and two events, when the pieces already go straight from the inner app's send to the
    sealing), the inner app runs at most the queue's few messages ahead instead of producing
    its whole stream (with an unbounded queue it produces all 200 events here)."""
    gate = asyncio.Event()
    request = inner_request(payload={"events": 200}, date=now())
    body, decoder = chunked_body(setup.xwing, request)
    task = asyncio.create_task(call(setup.app, body, send_gate=gate, gate_after_bodies=let_through))
    for _ in range(1000):  # every task runs as far as it can
        await asyncio.sleep(0)
    held_back = setup.state.produced
    gate.set()
    out = await task
    assert held_back >= let_through  # the inner app did run: the hold is what stopped it
    assert held_back <= setup.gateway.limits.inner_queue_messages + 3 + let_through
    _, response = open_chunked(decoder, out.bodies)
    assert setup.state.produced == 200
    assert response.content.endswith(b"data: [DONE]\n\n")


async def test_pieces_that_waited_for_a_busy_client_are_sealed_together(setup: Setup):
    """While the outer send is busy, the inner pieces that queue up go out as one chunk when
    it frees (none is held back once it could be sent); the stream is intact."""
    gate = asyncio.Event()
    request = inner_request(payload={"events": 20}, date=now())
    body, decoder = chunked_body(setup.xwing, request)
    task = asyncio.create_task(call(setup.app, body, send_gate=gate, gate_after_bodies=1))
    for _ in range(1000):
        await asyncio.sleep(0)
    gate.set()
    out = await task
    per_message, response = open_chunked(decoder, out.bodies)
    events = response.content.split(b"\n\n")[:-1]
    assert len(events) == 21  # 20 events and [DONE], in order
    assert [json.loads(e[len(b"data: ") :])["index"] for e in events[:-1]] == list(range(20))
    # Fewer chunks than events: at least one chunk carried several waiting events.
    assert len(out.bodies) < 1 + 21 + 1
    assert max(p.count(b"\n\n") for p in per_message[1:]) > 1
    assert setup.recorder.chunks == len(out.bodies)
