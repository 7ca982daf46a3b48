"""Every refusal: outer ones say nothing about the content; inner ones are encapsulated; the
observer sees fixed reason codes; nothing reaches logs or responses from the request."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from starlette.applications import Starlette

from enclave.gateway import FAILURE_REASONS, OhttpGateway, gateway_routes
from enclave.protocol import bhttp
from enclave.protocol.errors import TruncatedMessageError
from tests.unit.enclave.gateway.conftest import (
    CANARY,
    Setup,
    call,
    chunked_body,
    inner_request,
    make_setup,
    now,
    whole_body,
)

GENERIC_400 = b"bad request\n"


def flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


async def test_wrong_method_and_media_type(setup: Setup):
    assert (await call(setup.app, b"", method="PUT")).status == 405
    out = await call(setup.app, b"x", content_type=b"application/json")
    assert out.status == 415
    assert setup.recorder.failures == ["method", "content_type"]


async def test_body_over_the_limit_by_header_and_by_stream():
    setup = make_setup(body_limit_bytes=2048)
    out = await call(setup.app, b"", headers=((b"content-length", b"4096"),))
    assert out.status == 413
    body, _ = chunked_body(setup.xwing, inner_request(payload={"pad": "x" * 4000}, date=now()))
    assert (await call(setup.app, body, pieces=5)).status == 413
    assert setup.recorder.failures == ["body_too_large", "body_too_large"]


async def test_unknown_key_id_is_the_422_ohttp_key_problem(setup: Setup):
    body, _ = chunked_body(setup.xwing, inner_request(date=now()))
    out = await call(setup.app, bytes([99]) + body[1:])
    assert out.status == 422
    assert out.headers[b"content-type"] == b"application/problem+json"
    assert json.loads(out.body)["type"].endswith("#ohttp-key")
    assert setup.recorder.failures == ["unknown_key"]


async def test_a_suite_the_key_does_not_offer_is_the_same_422(setup: Setup):
    body, _ = whole_body(setup.x25519, inner_request(date=now()))
    # X25519 config offers AEADs 1, 2, 3; name the X-Wing KEM under its key ID instead
    mutated = body[:1] + (0x647A).to_bytes(2, "big") + body[3:]
    out = await call(setup.app, mutated, content_type=b"message/ohttp-req")
    assert out.status == 422
    assert setup.recorder.failures == ["unsupported_suite"]


@pytest.mark.parametrize("chunked", [True, False])
async def test_anything_that_does_not_decrypt_is_one_generic_400(setup: Setup, chunked: bool):
    request = inner_request(payload={"prompt": CANARY}, date=now())
    if chunked:
        body, _ = chunked_body(setup.xwing, request)
        kind = b"message/ohttp-chunked-req"
    else:
        body, _ = whole_body(setup.xwing, request)
        kind = b"message/ohttp-req"
    outs = [
        await call(setup.app, flip(body, at), content_type=kind)
        for at in (20, len(body) // 2, len(body) - 1)
    ]
    outs.append(await call(setup.app, body[:-3], content_type=kind))  # truncated
    assert {(out.status, out.body) for out in outs} == {(400, GENERIC_400)}
    assert set(setup.recorder.failures) == {"decrypt"}


async def test_a_replayed_request_is_refused_like_any_other_bad_request(setup: Setup):
    body, decoder = chunked_body(setup.xwing, inner_request(payload={"events": 1}, date=now()))
    first = await call(setup.app, body)
    assert first.status == 200
    decoder.feed(first.body)
    decoder.finish()
    second = await call(setup.app, body)
    assert (second.status, second.body) == (400, GENERIC_400)
    assert setup.recorder.failures == ["replay"]


async def test_a_full_replay_cache_fails_closed():
    setup = make_setup(replay_cache_size=1)
    ok, _ = chunked_body(setup.xwing, inner_request(payload={"events": 1}, date=now()))
    assert (await call(setup.app, ok)).status == 200
    other, _ = chunked_body(setup.xwing, inner_request(payload={"events": 1}, date=now()))
    out = await call(setup.app, other)
    assert out.status == 503
    assert out.headers[b"retry-after"] == b"1"


@pytest.mark.parametrize("offset", [None, -3600.0, 3600.0])
async def test_a_missing_or_stale_date_gets_the_encapsulated_date_problem(setup: Setup, offset):
    date = None if offset is None else now() + offset
    body, decoder = chunked_body(setup.xwing, inner_request(payload={"events": 1}, date=date))
    out = await call(setup.app, body)
    assert out.status == 200  # the refusal is inside, readable by the client alone
    response = bhttp.decode_response(b"".join(decoder.feed(out.body)) + decoder.finish())
    assert response.status == 400
    assert json.loads(response.content)["type"].endswith("#date")
    assert dict(response.headers)[b"date"]
    assert setup.state.produced == 0
    assert setup.recorder.failures == ["date"]


async def test_a_route_off_the_allow_list_is_an_encapsulated_404(setup: Setup):
    request = inner_request("/internal/secret", method=b"GET", date=now())
    body, context = whole_body(setup.xwing, request)
    out = await call(setup.app, body, content_type=b"message/ohttp-req")
    response = bhttp.decode_response(context.decapsulate_response(out.body))
    assert response.status == 404
    assert json.loads(response.content)["error"]["code"] == "route_not_allowed"
    assert setup.recorder.failures == ["route_not_allowed"]


async def test_not_binary_http_inside_is_the_generic_400(setup: Setup):
    from enclave.protocol.chunked import ChunkedRequestEncoder

    encoder = ChunkedRequestEncoder(setup.xwing)
    body = encoder.header + encoder.seal_chunk(b"\xff\xffnot bhttp", final=True)
    out = await call(setup.app, body)
    assert (out.status, out.body) == (400, GENERIC_400)
    assert setup.recorder.failures == ["bad_inner_request"]


async def test_engine_failure_mid_sse_is_an_encrypted_error_event_then_the_final_chunk(
    setup: Setup, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    request = inner_request(payload={"events": 5, "mode": "fail", "prompt": CANARY}, date=now())
    body, decoder = chunked_body(setup.xwing, request)
    out = await call(setup.app, body)
    plaintext = b"".join(decoder.feed(out.body)) + decoder.finish()  # complete: final chunk seen
    response = bhttp.decode_response(plaintext)
    events = response.content.split(b"\n\n")[:-1]
    assert len(events) == 3
    error = json.loads(events[-1][len(b"data: ") :])["error"]
    assert (error["code"], error["type"]) == ("internal_error", "server_error")
    assert "inner_error" in setup.recorder.failures
    assert CANARY.encode() not in out.body


async def test_failure_mid_plain_body_ends_without_the_final_chunk(setup: Setup):
    body, decoder = chunked_body(setup.xwing, inner_request("/v1/completions", date=now()))
    out = await call(setup.app, body)
    assert b"part one;" in b"".join(decoder.feed(out.body))
    with pytest.raises(TruncatedMessageError):
        decoder.finish()
    # The truncating end is an empty send: not a sealed chunk (it was counted as one).
    assert out.bodies[-1] == b""
    assert setup.recorder.chunks == len([piece for piece in out.bodies if piece])


async def test_failure_before_the_response_is_an_encapsulated_500(setup: Setup):
    body, decoder = chunked_body(setup.xwing, inner_request("/v1/embeddings", date=now()))
    out = await call(setup.app, body)
    response = bhttp.decode_response(b"".join(decoder.feed(out.body)) + decoder.finish())
    assert response.status == 500
    assert CANARY.encode() not in response.content


async def test_an_outer_disconnect_cancels_the_inner_request(setup: Setup):
    request = inner_request(payload={"events": 100_000}, date=now())
    body, _ = chunked_body(setup.xwing, request)
    out = await asyncio.wait_for(call(setup.app, body, disconnect_after_bodies=3), 10)
    assert setup.state.cancelled.is_set()
    assert setup.state.produced < 100_000
    assert len(out.bodies) >= 3
    assert "client_disconnected" in setup.recorder.failures


async def test_in_flight_limit():
    setup = make_setup(max_concurrent_requests=1)
    gate = asyncio.Event()
    first_body, _ = chunked_body(setup.xwing, inner_request(payload={"events": 2}, date=now()))
    first = asyncio.create_task(call(setup.app, first_body, send_gate=gate))
    for _ in range(50):
        await asyncio.sleep(0)
    second_body, _ = chunked_body(setup.xwing, inner_request(payload={"events": 2}, date=now()))
    refused = await call(setup.app, second_body)
    gate.set()
    assert (await first).status == 200
    assert refused.status == 503
    assert "overloaded" in setup.recorder.failures


async def test_reason_codes_are_a_fixed_set_and_logs_hold_no_request_content(
    setup: Setup, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    request = inner_request(payload={"events": 5, "mode": "fail", "prompt": CANARY}, date=now())
    body, _ = chunked_body(setup.xwing, request)
    await call(setup.app, body)
    await call(setup.app, flip(body, 30))
    await call(setup.app, body)  # replay
    assert set(setup.recorder.failures) <= set(FAILURE_REASONS)
    assert CANARY not in caplog.text


async def test_replay_of_a_future_dated_request_after_the_window_is_refused():
    """Issue 12 point 3 through the gateway: a request dated now + 0.9 W, replayed W + 1.5 s
    later, must not run again."""
    clock = [now()]
    monotonic = [1000.0]
    setup = make_setup(replay_window_seconds=5.0)
    setup.gateway = OhttpGateway(
        setup.store,
        limits=setup.gateway.limits,
        observer=setup.recorder,
        clock=lambda: clock[0],
        monotonic=lambda: monotonic[0],
    )
    app = Starlette(routes=[*gateway_routes(setup.gateway), *setup.app.routes])
    setup.gateway.set_app(app)
    request = inner_request(payload={"events": 1}, date=clock[0] + 4.5)
    body, decoder = chunked_body(setup.xwing, request)
    first = await call(app, body)
    assert first.status == 200
    bhttp.decode_response(b"".join(decoder.feed(first.body)) + decoder.finish())
    produced = setup.state.produced
    clock[0] += 6.5
    monotonic[0] += 6.5
    second = await call(app, body)
    assert (second.status, second.body) == (400, GENERIC_400)
    assert setup.state.produced == produced
    assert setup.recorder.failures == ["replay"]


@pytest.mark.parametrize("chunked", [True, False])
async def test_an_inner_expect_100_continue_is_refused_encapsulated(setup: Setup, chunked: bool):
    """RFC 9458 section 5.1: the gateway MUST generate an error for a 100-continue expectation."""
    request = inner_request(
        payload={"events": 1}, date=now(), extra_headers=((b"Expect", b"100-Continue"),)
    )
    if chunked:
        body, decoder = chunked_body(setup.xwing, request)
        out = await call(setup.app, body)
        plaintext = b"".join(decoder.feed(out.body)) + decoder.finish()
    else:
        body, context = whole_body(setup.xwing, request)
        out = await call(setup.app, body, content_type=b"message/ohttp-req")
        plaintext = context.decapsulate_response(out.body)
    assert out.status == 200
    response = bhttp.decode_response(plaintext)
    assert response.status == 417
    assert json.loads(response.content)["error"]["code"] == "expectation_failed"
    assert setup.state.produced == 0
    assert setup.recorder.failures == ["expect_continue"]


@pytest.mark.parametrize("window", [10.0, 60.0])
@pytest.mark.parametrize("delay", [26.8, 42.1, 126.8])
async def test_a_replay_after_the_host_steps_the_clock_back_does_not_run(
    window: float, delay: float
):
    """Issue 20 point 2 through the gateway: a captured request replayed ``delay`` seconds
    later, the wall clock stepped back to when it was sent (its Date looks fresh again). It
    used to run again once the cache had forgotten it (26.8 and 42.1 s with W 10 s, 126.8 s
    with W 60 s); now it is a replay or a stale Date, and never reaches the app."""
    wall = [float(int(now()))]
    sent = wall[0]
    monotonic = [1000.0]
    setup = make_setup(replay_window_seconds=window)
    setup.gateway = OhttpGateway(
        setup.store,
        limits=setup.gateway.limits,
        observer=setup.recorder,
        clock=lambda: wall[0],
        monotonic=lambda: monotonic[0],
    )
    app = Starlette(routes=[*gateway_routes(setup.gateway), *setup.app.routes])
    setup.gateway.set_app(app)
    body, decoder = chunked_body(setup.xwing, inner_request(payload={"events": 1}, date=sent))
    first = await call(app, body)
    assert first.status == 200
    assert bhttp.decode_response(b"".join(decoder.feed(first.body)) + decoder.finish()).status
    produced = setup.state.produced
    wall[0] += delay
    monotonic[0] += delay
    wall[0] = sent  # the host steps the clock back
    second = await call(app, body)
    assert setup.state.produced == produced
    if second.status == 200:  # forgotten, but its Date is stale against the reference time
        assert setup.recorder.failures == ["date"]
    else:
        assert (second.status, second.body) == (400, GENERIC_400)
        assert setup.recorder.failures == ["replay"]


async def test_refusals_are_padded_to_the_bucket_inside_the_encryption() -> None:
    """The gateway's own refusals (here a route not allowed), whole and chunked, carry zero
    padding to the size bucket (RFC 9292 section 3.8): the relay sees the bucket, not which
    refusal it is."""
    from tests.unit.enclave.gateway.conftest import make_setup

    padded = make_setup(padding=256)
    request = inner_request("/internal/secret", method=b"GET", date=now())
    body, context = whole_body(padded.xwing, request)
    out = await call(padded.app, body, content_type=b"message/ohttp-req")
    plaintext = context.decapsulate_response(out.body)
    assert len(plaintext) % 256 == 0
    assert json.loads(bhttp.decode_response(plaintext).content)["error"]["code"] == (
        "route_not_allowed"
    )
    refused = inner_request("/internal/x", method=b"GET", date=now())
    body, decoder = chunked_body(padded.xwing, refused)
    out = await call(padded.app, body)
    pieces = decoder.feed(out.body)
    final = decoder.finish()
    assert len(pieces) == 1  # the head
    assert len(final) % 256 == 0  # the content, its end and the padding
    response = bhttp.decode_response(b"".join(pieces) + final)
    assert response.status == 404
