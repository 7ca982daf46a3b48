"""The official openai SDK over the OHTTP transports (sync and async, streamed and not) and
through the local proxy, against the real service with the development engine."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from enclave.client import (
    AsyncOhttpTransport,
    AsyncRaTlsTransport,
    OhttpTransport,
    attested_endpoint,
)
from enclave.client._proxy import build_proxy_app
from tests.integration.client.conftest import Running, serve

pytestmark = pytest.mark.asyncio(loop_scope="module")

MESSAGES = [{"role": "user", "content": "hello there"}]


async def test_async_sdk_through_ohttp_streamed_and_not(running: Running) -> None:
    transport = AsyncOhttpTransport(running.url, running.verifier())
    client = openai.AsyncOpenAI(
        base_url=running.url + "/v1",
        api_key="sk-caller",
        http_client=httpx.AsyncClient(transport=transport),
    )
    whole = await client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8)
    assert whole.choices[0].message.content
    pieces = []
    stream = await client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=8, stream=True
    )
    async for event in stream:
        pieces += [choice.delta.content or "" for choice in event.choices]
    assert "".join(pieces) == whole.choices[0].message.content
    assert transport.endpoint is not None
    assert transport.endpoint.model is not None
    assert transport.refreshes == 1
    await client.close()


@pytest.mark.parametrize("chunked", [True, False])
async def test_sync_sdk_through_ohttp_streamed_and_not(running: Running, chunked: bool) -> None:
    def use() -> tuple[str, str]:
        transport = OhttpTransport(running.url, running.verifier(), chunked=chunked)
        with openai.OpenAI(
            base_url=running.url + "/v1",
            api_key="sk-caller",
            http_client=httpx.Client(transport=transport),
        ) as client:
            whole = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8)
            streamed = "".join(
                choice.delta.content or ""
                for event in client.chat.completions.create(
                    model="tiny", messages=MESSAGES, max_tokens=8, stream=True
                )
                for choice in event.choices
            )
        return whole.choices[0].message.content or "", streamed

    whole, streamed = await asyncio.to_thread(use)
    assert whole
    assert whole == streamed


async def test_sdk_over_ratls_transport(running: Running) -> None:
    verifier = running.verifier()
    client = openai.AsyncOpenAI(
        base_url=running.url + "/v1",
        api_key="sk-caller",
        http_client=httpx.AsyncClient(transport=AsyncRaTlsTransport(verifier)),
    )
    first = await client.models.list()
    await client.models.list()
    assert [model.id for model in first.data] == ["tiny"]
    assert verifier.verifications == 1  # one connection, verified once, then cached
    await client.close()


async def test_sdk_through_the_proxy_carries_confidential_headers(running: Running) -> None:
    transport = AsyncOhttpTransport(running.url, running.verifier())
    async with serve(build_proxy_app(transport, compat="both")) as proxy:
        for prefix in ("/v1", "/openai/v1"):
            client = openai.AsyncOpenAI(base_url=proxy + prefix, api_key="sk-caller")
            raw = await client.chat.completions.with_raw_response.create(
                model="tiny", messages=MESSAGES, max_tokens=8
            )
            assert raw.headers["x-confidential-verified"] == "true"
            assert raw.headers["x-confidential-tcb"] == "UpToDate"
            insecure = raw.headers["x-confidential-insecure"]
            assert insecure == "insecure_root_ca_der,insecure_accept_service"
            endpoint = transport.endpoint
            assert endpoint is not None
            assert endpoint.model is not None
            assert raw.headers["x-confidential-model-digest"] == endpoint.model.digest.hex()
            whole = raw.parse().choices[0].message.content
            stream = await client.chat.completions.create(
                model="tiny", messages=MESSAGES, max_tokens=8, stream=True
            )
            text = ""
            async for event in stream:
                text += "".join(choice.delta.content or "" for choice in event.choices)
            assert text == whole
            await client.close()


async def test_proxy_fails_closed_on_a_wrong_mrtd(running: Running) -> None:
    wrong = running.policy(mrtd=frozenset({b"\x11" * 48}))
    transport = AsyncOhttpTransport(running.url, running.verifier(wrong))
    async with (
        serve(build_proxy_app(transport)) as proxy,
        httpx.AsyncClient(base_url=proxy) as client,
    ):
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": "secret"}]},
        )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "attestation_unverified"
    assert "mrtd_not_allowed" in response.json()["error"]["message"]
    assert response.headers["x-confidential-verified"] == "false"
    assert transport.endpoint is None  # never verified, so nothing was encrypted or sent


async def test_model_reload_is_reverified_and_the_new_digest_seen(running: Running) -> None:
    clock = [1000.0]
    transport = AsyncOhttpTransport(
        running.url, running.verifier(clock=lambda: clock[0]), max_age=60.0
    )
    async with httpx.AsyncClient(transport=transport) as client:
        first = await client.get(running.url + "/v1/models")
        before = attested_endpoint(first)
        assert before is not None
        assert before.model is not None
        assert before.model.name == "tiny"
        await running.load_model("other")
        try:
            clock[0] += 61.0  # later in the session: the attested state is re-checked
            second = await client.get(running.url + "/v1/models")
            after = attested_endpoint(second)
            assert after is not None
            assert after.model is not None
            assert after.model.name == "other"
            assert transport.refreshes == 2
        finally:
            await running.load_model("tiny")
