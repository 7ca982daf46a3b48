"""The official anthropic SDK through ``enclave proxy`` in anthropic mode, against the real
service with the development engine (streamed and not, tool calls, stop sequences), and the
proxy failing closed on a policy that does not match."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx
import pytest
import pytest_asyncio

from enclave.client import AsyncOhttpTransport
from enclave.client._proxy import build_proxy_app
from enclave_dev.engine import expected_completion, prompt_tag
from tests.integration.client.conftest import Running, serve

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: The same model directory, with the engine's automatic tool choice switched on.
MODEL = "tiny-tools"
PROMPT = "hello there"
WEATHER = {
    "name": "get_weather",
    "description": "the weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def proxy(running: Running) -> AsyncIterator[tuple[str, AsyncOhttpTransport]]:
    catalog = running.tmp / "models" / "models.toml"
    catalog.write_text(
        catalog.read_text() + f'\n[models.{MODEL}]\npath = "tiny"\ntool_call_parser = "hermes"\n'
    )
    await running.load_model(MODEL)
    transport = AsyncOhttpTransport(running.url, running.verifier())
    async with serve(build_proxy_app(transport, compat="anthropic")) as url:
        yield url, transport


def client_for(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key="sk-ant-caller", max_retries=0)


async def test_messages_streamed_and_not(proxy: tuple[str, AsyncOhttpTransport]) -> None:
    url, transport = proxy
    client = client_for(url)
    raw = await client.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=32,
        system="be brief",
        messages=[{"role": "user", "content": PROMPT}],
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 20},  # not in this SDK's signature
        metadata={"user_id": "user-1"},
    )
    endpoint = transport.endpoint
    assert endpoint is not None
    assert endpoint.model is not None
    assert raw.headers["x-confidential-verified"] == "true"
    assert raw.headers["x-confidential-tcb"] == "UpToDate"
    assert raw.headers["x-confidential-model-digest"] == endpoint.model.digest.hex()
    whole = await raw.parse()
    assert whole.id.startswith("msg_")
    assert whole.model == MODEL
    assert whole.stop_reason == "end_turn"
    assert [block.type for block in whole.content] == ["text"]
    text = whole.content[0].text  # type: ignore[union-attr]
    assert text == "".join(expected_completion(PROMPT))
    assert whole.usage.input_tokens == 4  # "be brief" and "hello there"
    assert whole.usage.output_tokens == len(expected_completion(PROMPT)) + 1  # and EOS

    seen: list[str] = []
    async with client.messages.stream(
        model=MODEL, max_tokens=32, messages=[{"role": "user", "content": PROMPT}]
    ) as stream:
        async for event in stream:
            seen.append(event.type)
        streamed = await stream.get_final_message()
    assert seen[0] == "message_start"
    assert seen[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop"} <= set(seen)
    assert streamed.content[0].text == text  # type: ignore[union-attr]
    assert streamed.stop_reason == "end_turn"
    assert streamed.usage.input_tokens == 2
    assert streamed.usage.output_tokens == whole.usage.output_tokens
    await client.close()


async def test_stop_sequence_and_max_tokens(proxy: tuple[str, AsyncOhttpTransport]) -> None:
    client = client_for(proxy[0])
    messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": PROMPT}]
    stopped = await client.messages.create(
        model=MODEL, max_tokens=32, messages=messages, stop_sequences=["there"]
    )
    assert stopped.stop_reason == "stop_sequence"
    assert stopped.stop_sequence == "there"
    assert stopped.content[0].text == f"Echo: {prompt_tag(PROMPT)} hello "  # type: ignore[union-attr]
    async with client.messages.stream(
        model=MODEL, max_tokens=2, messages=messages, stop_sequences=["never"]
    ) as stream:
        cut = await stream.get_final_message()
    assert cut.stop_reason == "max_tokens"
    assert cut.stop_sequence is None
    assert cut.content[0].text == "".join(expected_completion(PROMPT, 2))  # type: ignore[union-attr]
    await client.close()


async def test_tool_call_streamed_and_not_then_the_result(
    proxy: tuple[str, AsyncOhttpTransport],
) -> None:
    client = client_for(proxy[0])
    question = "what is the get_weather in Oslo"
    messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": question}]
    whole = await client.messages.create(
        model=MODEL, max_tokens=64, messages=messages, tools=[WEATHER]
    )
    assert whole.stop_reason == "tool_use"
    [call] = [block for block in whole.content if block.type == "tool_use"]
    assert call.name == "get_weather"
    assert call.input == {"city": question}

    async with client.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "any city"}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        deltas = [event.type async for event in stream if event.type == "input_json"]
        streamed = await stream.get_final_message()
    assert deltas  # the arguments arrived as input_json_delta pieces
    assert streamed.stop_reason == "tool_use"
    [named] = [block for block in streamed.content if block.type == "tool_use"]
    assert (named.name, named.input) == ("get_weather", {"city": "any city"})

    follow_up = await client.messages.create(
        model=MODEL,
        max_tokens=64,
        tools=[WEATHER],
        messages=[
            *messages,
            {"role": "assistant", "content": [call.model_dump()]},  # type: ignore[list-item]
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"},
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
    )
    assert follow_up.stop_reason == "end_turn"
    assert follow_up.content[0].text == "".join(expected_completion("thanks"))  # type: ignore[union-attr]
    await client.close()


async def test_bad_requests_get_anthropic_errors(proxy: tuple[str, AsyncOhttpTransport]) -> None:
    client = client_for(proxy[0])
    with pytest.raises(anthropic.BadRequestError) as refused:
        await client.messages.create(
            model=MODEL,
            max_tokens=8,
            messages=[{"role": "user", "content": [{"type": "document", "source": {}}]}],  # type: ignore[list-item]
        )
    assert refused.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "messages[0].content[0]: block type 'document' is not supported here",
        },
    }
    with pytest.raises(anthropic.NotFoundError) as missing:  # the service's 404, translated
        await client.messages.create(
            model="claude-elsewhere", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["error"]["type"] == "not_found_error"
    await client.close()


async def test_both_mode_serves_openai_and_anthropic(running: Running) -> None:
    transport = AsyncOhttpTransport(running.url, running.verifier())
    async with serve(build_proxy_app(transport, compat="both")) as url:
        client = client_for(url + "/anthropic")
        message = await client.messages.create(
            model=MODEL, max_tokens=32, messages=[{"role": "user", "content": PROMPT}]
        )
        assert message.content[0].text == "".join(expected_completion(PROMPT))  # type: ignore[union-attr]
        await client.close()
        async with httpx.AsyncClient(base_url=url) as plain:
            models = await plain.get("/openai/v1/models")
            assert [model["id"] for model in models.json()["data"]] == [MODEL]
            assert (await plain.post("/v1/messages", json={})).status_code != 200


async def test_wrong_mrtd_fails_closed_and_sends_nothing(running: Running) -> None:
    wrong = running.policy(mrtd=frozenset({b"\x11" * 48}))
    transport = AsyncOhttpTransport(running.url, running.verifier(wrong))
    async with serve(build_proxy_app(transport, compat="anthropic")) as url:
        client = client_for(url)
        with pytest.raises(anthropic.InternalServerError) as refused:
            await client.messages.create(
                model=MODEL,
                max_tokens=8,
                messages=[{"role": "user", "content": "secret prompt"}],
            )
        await client.close()
    assert refused.value.status_code == 503
    assert refused.value.response.headers["x-confidential-verified"] == "false"
    body = refused.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "attestation_unverified"
    assert "mrtd_not_allowed" in body["error"]["message"]
    assert transport.endpoint is None  # never verified, so nothing was encrypted or sent
