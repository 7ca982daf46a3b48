"""The service as clients meet it: RA-TLS on loopback, the OHTTP gateway, the dev engine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import pytest

from enclave.protocol import bhttp
from enclave.protocol.errors import TruncatedMessageError
from enclave.protocol.padding import strip_event_padding
from tests.integration.server.conftest import (
    CANARY,
    METRICS_AUTH,
    Running,
    chat_request,
    encapsulate,
    engine_faults,
    handshake_certificate,
    key_configs,
    load_model,
    post_ohttp,
    sse_text,
    verified_certificate,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


async def test_the_handshake_certificate_verifies_and_follows_the_model(running: Running):
    before = await verified_certificate(running)
    assert before.status == "UpToDate"
    assert before.model is None
    assert before.claims.service_version
    status = await load_model(running, "tiny")
    after = await verified_certificate(running)
    assert after.model is not None
    assert after.model.name == "tiny"
    assert after.model.digest.hex() == status["loaded_model_digest"]
    assert after.model.digest_kind == status["digest_kind"] == "manifest-sha256"


async def test_ohttp_claim_matches_the_served_keys(running: Running):
    import hashlib

    verified = await verified_certificate(running)
    async with running.client() as client:
        served = (await client.get("/.well-known/ohttp-keys")).content
    assert verified.claims.ohttp_keys == hashlib.sha256(served).digest()


@pytest.mark.parametrize("kem_index", [0, 1], ids=["xwing", "x25519"])
async def test_ohttp_streaming_returns_exactly_the_plaintext_paths_content(
    running: Running, kem_index: int
):
    await load_model(running, "tiny")
    prompt = "tell me about attested inference"
    async with running.client() as client:
        plain = await client.post(
            "/v1/chat/completions",
            json=json.loads(chat_request(prompt).content),
        )
        assert plain.status_code == 200
        config = (await key_configs(running))[kem_index]
        body, decoder = encapsulate(config, chat_request(prompt))
        result = await post_ohttp(client, body, decoder)
    assert result.complete
    inner = bhttp.decode_response(result.plaintext)
    assert inner.status == 200
    assert dict(inner.headers)[b"content-type"].startswith(b"text/event-stream")
    assert sse_text(inner.content) == sse_text(plain.content) != ""
    assert inner.content.endswith(b"data: [DONE]\n\n")
    assert prompt.encode() not in result.outer_bytes


async def test_a_connection_cut_mid_stream_is_reported_as_truncation(running: Running):
    await load_model(running, "slow")
    config = (await key_configs(running))[0]
    body, decoder = encapsulate(config, chat_request("a long answer please", model="slow"))
    received = bytearray()
    async with (
        running.client() as client,
        client.stream(
            "POST",
            "/.well-known/ohttp-gateway",
            content=body,
            headers={"content-type": "message/ohttp-chunked-req"},
        ) as response,
    ):
        async for piece in response.aiter_raw():
            received += piece
            if len(received) > 400:
                break  # the connection is cut here
    plaintext = b"".join(decoder.feed(bytes(received)))
    assert b"data: " in plaintext  # some events did arrive, decrypted
    with pytest.raises(TruncatedMessageError):
        decoder.finish()


async def test_an_open_stream_survives_a_certificate_reissue(running: Running):
    """No sleeps: the engine holds the stream after two events (a live fault switch); the
    reissue happens once the client has decrypted part of the answer, the stream is checked to
    be still open after it, and only then released to finish under the new certificate."""
    await load_model(running, "tiny")
    await engine_faults(running, hold_after_chunks=2)
    try:
        before = await handshake_certificate(running.port)
        config = (await key_configs(running))[1]
        body, decoder = encapsulate(config, chat_request("keep streaming"))
        opened = asyncio.Event()
        async with running.client() as client:
            stream = asyncio.create_task(post_ohttp(client, body, decoder, opened=opened))
            await asyncio.wait_for(opened.wait(), 30)
            await running.server.rotate_keys()  # reissues the certificate mid-stream
            assert await handshake_certificate(running.port) != before
            assert not stream.done()  # the reissue really happened while the stream was open
            await engine_faults(running, hold_after_chunks=None)
            result = await asyncio.wait_for(stream, 30)
    finally:
        await engine_faults(running, hold_after_chunks=None)
    assert result.complete
    assert bhttp.decode_response(result.plaintext).content.endswith(b"data: [DONE]\n\n")
    # the rotated-out key is still accepted during the overlap
    body, decoder = encapsulate(config, chat_request("old key"))
    async with running.client() as client:
        assert (await post_ohttp(client, body, decoder)).complete


async def test_gateway_refusals_over_tls(running: Running):
    config = (await key_configs(running))[0]
    body, decoder = encapsulate(config, chat_request("replay me"))
    async with running.client() as client:
        assert (await post_ohttp(client, body, decoder)).complete
        replay = await client.post(
            "/.well-known/ohttp-gateway",
            content=body,
            headers={"content-type": "message/ohttp-chunked-req"},
        )
        assert replay.status_code == 400
        unknown = await client.post(
            "/.well-known/ohttp-gateway",
            content=bytes([250]) + body[1:],
            headers={"content-type": "message/ohttp-chunked-req"},
        )
        assert unknown.status_code == 422
        assert unknown.json()["type"].endswith("#ohttp-key")
        too_big = await client.post(
            "/.well-known/ohttp-gateway",
            content=b"\x00" * (33 * 1024 * 1024),
            headers={"content-type": "message/ohttp-req"},
        )
        assert too_big.status_code == 413
        wrong_type = await client.post(
            "/.well-known/ohttp-gateway", content=body, headers={"content-type": "text/plain"}
        )
        assert wrong_type.status_code == 415
        metrics = (await client.get("/metrics", headers=METRICS_AUTH)).text
    assert 'reason="replay"' in metrics
    assert 'reason="unknown_key"' in metrics


async def test_an_engine_crash_mid_stream_is_an_encrypted_error_then_the_final_chunk(
    running: Running,
):
    await load_model(running, "crashy")
    config = (await key_configs(running))[0]
    body, decoder = encapsulate(config, chat_request("crash while answering", model="crashy"))
    async with running.client() as client:
        result = await post_ohttp(client, body, decoder)
    assert result.complete  # the final chunk came: nothing was cut silently
    inner = bhttp.decode_response(result.plaintext)
    content = strip_event_padding(inner.content)
    events = [e for e in content.split(b"\n\n") if e.startswith(b"data: {")]
    assert events[-1].startswith(b'data: {"enclave_receipt":')  # signed, after the error
    assert b"error" in events[-2]
    error = json.loads(events[-2][len(b"data: ") :])["error"]
    assert error["code"]


async def test_canary_never_reaches_logs_metrics_or_error_bodies(
    running: Running, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    await load_model(running, "tiny")
    config = (await key_configs(running))[0]
    bodies: list[bytes] = []
    async with running.client() as client:
        plain = await client.post(
            "/v1/chat/completions", json=json.loads(chat_request(CANARY).content)
        )
        assert CANARY in plain.text  # the dev engine echoes the prompt: the path carried it
        wrong = await client.post(
            "/v1/chat/completions", json=json.loads(chat_request(CANARY, model=CANARY).content)
        )
        bodies.append(wrong.content)
        body, decoder = encapsulate(config, chat_request(CANARY))
        result = await post_ohttp(client, body, decoder)
        assert CANARY.encode() in result.plaintext
        bodies.append(result.outer_bytes)
        with contextlib.suppress(Exception):
            bodies.append(
                (
                    await client.post(
                        "/.well-known/ohttp-gateway",
                        content=body[:-5],
                        headers={"content-type": "message/ohttp-chunked-req"},
                    )
                ).content
            )
        metrics = (await client.get("/metrics", headers=METRICS_AUTH)).text
    assert wrong.status_code == 404
    for item in bodies:
        assert CANARY.encode() not in item
    assert CANARY not in metrics
    assert CANARY not in caplog.text


def _count(metrics: str, route: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("enclave_http_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_encrypted_requests_are_not_counted_by_their_inner_route(running: Running):
    await load_model(running, "tiny")
    config = (await key_configs(running))[0]
    async with running.client() as client:
        before = (await client.get("/metrics", headers=METRICS_AUTH)).text
        body, decoder = encapsulate(config, chat_request("which route was this?"))
        assert (await post_ohttp(client, body, decoder)).complete
        # the inner request is counted as its task ends, just after the outer body
        for _ in range(100):
            after = (await client.get("/metrics", headers=METRICS_AUTH)).text
            if _count(after, "ohttp_inner") > _count(before, "ohttp_inner"):
                break
            await asyncio.sleep(0.05)
    assert _count(after, "ohttp_inner") == _count(before, "ohttp_inner") + 1
    assert _count(after, "/v1/chat/completions") == _count(before, "/v1/chat/completions")
