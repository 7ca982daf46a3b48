"""The padding comment lines change nothing any client parses (issue 19 #1): the official openai
and anthropic SDKs read a padded stream as the same events, object for object, as the stream
without padding. The streams are real vLLM output (tests/vectors/vllm) and an Anthropic
stream as the project's proxy writes it, each event padded by the service's own relay rule.
(Through the real service the SDKs are run in tests/integration/client: test_sdk.py,
test_anthropic_sdk.py; padding is on there by default.)"""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import httpx
import httpx2  # what this anthropic SDK is built on
import openai

from enclave.client._anthropic_stream import SseDecoder
from enclave.protocol.padding import pad_events

VECTORS = Path(__file__).parents[3] / "vectors" / "vllm"
BUCKET = 256


def _padded(stream: bytes) -> bytes:
    """Each event padded, one message per event, as the relay sends them."""
    events = [event + b"\n\n" for event in stream.split(b"\n\n") if event]
    return b"".join(pad_events(event, BUCKET) for event in events)


def _mock(content_type: str, body: bytes) -> httpx.Client:
    def answer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, content=body)

    return httpx.Client(transport=httpx.MockTransport(answer))


def _openai_chunks(body: bytes) -> list[dict[str, object]]:
    client = openai.OpenAI(
        base_url="https://enclave/v1",
        api_key="sk-test",
        http_client=_mock("text/event-stream", body),  # type: ignore[arg-type]
    )
    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    return [chunk.model_dump() for chunk in stream]


def test_openai_sdk_reads_the_same_chunks() -> None:
    for name in ("chat-stream.sse", "chat-stream-usage.sse"):
        plain = (VECTORS / name).read_bytes()
        padded = _padded(plain)
        assert padded != plain
        chunks = _openai_chunks(plain)
        assert chunks
        assert _openai_chunks(padded) == chunks


def _event(name: str, **data: object) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


def _text_delta(text: str) -> bytes:
    return _event("content_block_delta", index=0, delta={"type": "text_delta", "text": text})


def _anthropic_stream() -> bytes:
    message: dict[str, object] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "tiny",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 0},
    }
    return b"".join(
        (
            _event("message_start", message=message),
            _event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
            _text_delta("Echo:"),
            _text_delta(" hi"),
            _event("content_block_stop", index=0),
            _event(
                "message_delta",
                delta={"stop_reason": "end_turn", "stop_sequence": None},
                usage={"output_tokens": 2},
            ),
            _event("message_stop"),
        )
    )


def _anthropic_events(body: bytes) -> list[dict[str, object]]:
    def answer(_: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    client = anthropic.Anthropic(
        base_url="https://enclave",
        api_key="sk-test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
    )
    with client.messages.stream(
        model="tiny", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        events = [event.model_dump() for event in stream]
        events.append(stream.get_final_message().model_dump())
    return events


def test_anthropic_sdk_reads_the_same_events() -> None:
    plain = _anthropic_stream()
    events = _anthropic_events(plain)
    assert events[-1]["content"] == [{"type": "text", "text": "Echo: hi", "citations": None}]
    assert _anthropic_events(_padded(plain)) == events


def test_the_proxys_decoder_reads_the_same_payloads() -> None:
    plain = (VECTORS / "chat-stream-usage.sse").read_bytes()
    assert SseDecoder().feed(_padded(plain)) == SseDecoder().feed(plain)
