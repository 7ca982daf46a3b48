"""The Anthropic Messages API translation: requests, non-streamed and streamed answers, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from enclave.client._anthropic import (
    AnthropicRequestError,
    UpstreamShapeError,
    error_type_for_status,
    stop_reason_for,
    to_anthropic_message,
    to_openai_request,
)
from enclave.client._anthropic_stream import AnthropicStream, SseDecoder

TOOL = {
    "name": "get_weather",
    "description": "the weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def request(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "tiny",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hello"}],
    }
    body.update(fields)
    return body


# -- requests ---------------------------------------------------------------------------


def test_minimal_request() -> None:
    translated = to_openai_request(request())
    assert translated.body == {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 16,
    }
    assert translated.stream is False
    assert translated.model == "tiny"


def test_system_sampling_and_stop_sequences() -> None:
    translated = to_openai_request(
        request(
            system=[{"type": "text", "text": "be brief"}, {"type": "text", "text": "be kind"}],
            temperature=0.2,
            top_p=0.9,
            top_k=40,
            stop_sequences=["END", "STOP"],
            metadata={"user_id": "user-1234"},
        )
    )
    body = translated.body
    assert body["messages"][0] == {"role": "system", "content": "be brief\nbe kind"}  # type: ignore[index]
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.2, 0.9, 40)
    assert body["stop"] == ["END", "STOP"]
    assert translated.stop_sequences == ("END", "STOP")
    assert "user-1234" not in json.dumps(body)  # metadata (user ids) is never forwarded
    assert to_openai_request(request(system="plain")).body["messages"][0] == {  # type: ignore[index]
        "role": "system",
        "content": "plain",
    }


def test_stream_asks_for_usage() -> None:
    translated = to_openai_request(request(stream=True))
    assert translated.stream is True
    assert translated.body["stream"] is True
    assert translated.body["stream_options"] == {
        "include_usage": True,
        "continuous_usage_stats": True,
    }


def test_images_become_image_url_parts() -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "what is this?"},
    ]
    body = to_openai_request(request(messages=[{"role": "user", "content": content}])).body
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {"type": "text", "text": "what is this?"},
            ],
        }
    ]


def test_tool_round_trip_history() -> None:
    messages = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "is_error": True,
                    "content": [{"type": "text", "text": "no such city"}],
                },
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    translated = to_openai_request(
        request(
            messages=messages,
            tools=[TOOL],
            tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        )
    )
    body = translated.body
    assert body["messages"] == [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such city"},
        {"role": "user", "content": "thanks"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": TOOL["input_schema"],
                "description": "the weather in a city",
            },
        }
    ]
    assert body["tool_choice"] == "auto"
    assert body["parallel_tool_calls"] is False


def test_prefilled_assistant_turn_is_continued() -> None:
    prefill = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Echo"}]
    body = to_openai_request(request(messages=prefill)).body
    assert body["messages"][-1] == {"role": "assistant", "content": "Echo"}  # type: ignore[index]
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False
    assert "continue_final_message" not in to_openai_request(request()).body


def test_tool_result_images_follow_in_a_user_message() -> None:
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j"},
    }
    result = {
        "type": "tool_result",
        "tool_use_id": "t",
        "content": [{"type": "text", "text": "shot"}, image],
    }
    body = to_openai_request(request(messages=[{"role": "user", "content": [result]}])).body
    assert body["messages"] == [
        {"role": "tool", "tool_call_id": "t", "content": "shot"},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j"}}],
        },
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "any"}, "required"),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
        ),
    ],
)
def test_tool_choice(choice: dict[str, str], expected: object) -> None:
    assert (
        to_openai_request(request(tools=[TOOL], tool_choice=choice)).body["tool_choice"] == expected
    )


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"model": None}, "model"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "document",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}
                ]
            },
            "file",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "text/html", "data": ""},
                            }
                        ],
                    }
                ]
            },
            "media_type",
        ),
        ({"stop_sequences": [""]}, "stop_sequences"),
        ({"temperature": "hot"}, "temperature"),
        ({"stream": "yes"}, "stream"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "custom"),
        ({"tool_choice": {"type": "any"}}, "tools must be given"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice"),
        ({"system": [{"type": "image"}]}, "system"),
    ],
)
def test_invalid_requests_raise(fields: dict[str, object], fragment: str) -> None:
    with pytest.raises(AnthropicRequestError, match=fragment):
        to_openai_request(request(**fields))


def test_error_messages_never_repeat_content() -> None:
    secret = "canary-anthropic-7f2e"
    body = request(
        messages=[
            {"role": "user", "content": [{"type": "text", "text": secret}, {"type": "bogus"}]}
        ]
    )
    with pytest.raises(AnthropicRequestError) as caught:
        to_openai_request(body)
    assert secret not in str(caught.value)


# -- non-streamed answers ---------------------------------------------------------------


def completion(message: dict[str, Any], finish: str, stop_reason: object = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "tiny",
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish, "stop_reason": stop_reason}
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


def test_text_message() -> None:
    body = completion({"role": "assistant", "content": "Echo: hi", "tool_calls": []}, "stop")
    message = to_anthropic_message(body, message_id="msg_1", model="asked", stop_sequences=())
    assert message == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "tiny",
        "content": [{"type": "text", "text": "Echo: hi"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": 3},
    }


def test_tool_use_message_parses_arguments() -> None:
    call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    body = completion({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")
    message = to_anthropic_message(body, message_id="msg_1", model="tiny", stop_sequences=())
    assert message["content"] == [
        {"type": "tool_use", "id": "call_9", "name": "get_weather", "input": {"city": "Oslo"}}
    ]
    assert message["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish", "engine_stop", "used_tools", "expected"),
    [
        ("stop", None, False, ("end_turn", None)),
        ("stop", "END", False, ("stop_sequence", "END")),
        ("stop", "OTHER", False, ("end_turn", None)),
        ("stop", 2, False, ("end_turn", None)),
        ("length", None, False, ("max_tokens", None)),
        ("tool_calls", None, True, ("tool_use", None)),
        ("stop", None, True, ("tool_use", None)),
        ("content_filter", None, False, ("refusal", None)),
        (None, None, False, ("end_turn", None)),
    ],
)
def test_stop_reason_mapping(
    finish: str | None, engine_stop: object, used_tools: bool, expected: tuple[str, str | None]
) -> None:
    assert stop_reason_for(finish, engine_stop, ("END",), used_tools=used_tools) == expected


def test_stop_sequence_message() -> None:
    body = completion({"role": "assistant", "content": "Echo:"}, "stop", "END")
    message = to_anthropic_message(body, message_id="m", model="tiny", stop_sequences=("END",))
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"choices": []},
        {"choices": [{"message": "text"}]},
        {
            "choices": [
                {"message": {"tool_calls": [{"function": {"name": "f", "arguments": "{not json"}}]}}
            ]
        },
        {
            "choices": [
                {"message": {"tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}}
            ]
        },
        {"choices": [{"message": {"tool_calls": [{"function": {"arguments": "{}"}}]}}]},
    ],
)
def test_unusable_answers_raise(body: object) -> None:
    with pytest.raises(UpstreamShapeError):
        to_anthropic_message(body, message_id="m", model="tiny", stop_sequences=())


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (415, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_types(status: int, kind: str) -> None:
    assert error_type_for_status(status) == kind


# -- streamed answers -------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
    if finish is not None:
        choice["stop_reason"] = extra.pop("stop_reason", None)
    document: dict[str, Any] = {"id": "chatcmpl-1", "model": "tiny", "choices": [choice], **extra}
    return json.dumps(document)


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def run(
    payloads: list[str], *, stops: tuple[str, ...] = (), end: bool = True
) -> list[tuple[str, dict[str, Any]]]:
    stream = AnthropicStream(message_id="msg_x", model="asked", stop_sequences=stops)
    raw = [event for payload in payloads for event in stream.feed(payload)]
    if end:
        raw += stream.end()
    events = []
    for event in raw:
        name_line, data_line, blank = event.decode().split("\n", 2)
        assert blank == "\n"
        name = name_line.removeprefix("event: ")
        document = json.loads(data_line.removeprefix("data: "))
        assert document["type"] == name
        events.append((name, document))
    return events


def test_text_stream_event_sequence() -> None:
    events = run(
        [
            chunk({"role": "assistant", "content": ""}, usage=usage(5, 0)),
            chunk({"content": "Echo:"}, usage=usage(5, 1)),
            chunk({"content": " hi"}, "stop", usage=usage(5, 2)),
            json.dumps({"id": "chatcmpl-1", "choices": [], "usage": usage(5, 3)}),
            "[DONE]",
        ]
    )
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["id"] == "msg_x"
    assert start["model"] == "tiny"
    assert start["usage"] == {"input_tokens": 5, "output_tokens": 0}
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert [e["delta"]["text"] for n, e in events if n == "content_block_delta"] == ["Echo:", " hi"]
    assert events[6][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"input_tokens": 5, "output_tokens": 3},
    }


def test_stream_stop_sequence_and_length() -> None:
    stopped = run([chunk({"content": "a"}, "stop", stop_reason="END"), "[DONE]"], stops=("END",))
    assert stopped[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    cut = run([chunk({"content": "a"}, "length"), "[DONE]"])
    assert cut[-2][1]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}


def test_tool_call_stream() -> None:
    head = {"id": "call_1", "type": "function", "index": 0, "function": {"name": "get_weather"}}
    events = run(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Looking."}),
            chunk({"tool_calls": [head]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
            chunk(
                {
                    "tool_calls": [
                        {"id": "call_2", "index": 1, "function": {"name": "f", "arguments": "{}"}}
                    ]
                }
            ),
            chunk({}, "tool_calls"),
            "[DONE]",
        ]
    )
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[5][1] == {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}},
    }
    partial = "".join(
        e["delta"]["partial_json"]
        for n, e in events
        if n == "content_block_delta" and e["index"] == 1
    )
    assert json.loads(partial) == {"city": "Oslo"}
    assert events[9][1]["index"] == 2
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_engine_error_event_becomes_an_error_event() -> None:
    error = json.dumps({"error": {"message": "engine failed", "type": "server_error", "code": 500}})
    events = run([chunk({"content": "a"}), error, "[DONE]"])
    names = [name for name, _ in events]
    assert names[-1] == "error"
    assert "message_stop" not in names
    assert names.count("error") == 1
    assert events[-1][1] == {
        "type": "error",
        "error": {"type": "api_error", "message": "engine failed"},
    }


@pytest.mark.parametrize(
    "payloads",
    [
        [chunk({"content": "a"})],  # cut before the finish
        [chunk({"content": "a"}, "stop")],  # cut after the finish, before [DONE]
        [],  # nothing at all
    ],
)
def test_truncated_stream_ends_in_an_error(payloads: list[str]) -> None:
    names = [name for name, _ in run(payloads)]
    assert names[-1] == "error"
    assert "message_stop" not in names
    assert "message_delta" not in names


@pytest.mark.parametrize(
    "payload",
    [
        "[DONE]",  # no finish reason was seen
        "{not json",
        "[1, 2]",
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),  # no name first
    ],
)
def test_malformed_streams_end_in_an_error(payload: str) -> None:
    names = [name for name, _ in run([chunk({"content": "a"}), payload, "[DONE]"])]
    assert names[-1] == "error"
    assert "message_stop" not in names


def test_interleaved_tool_calls_are_an_error() -> None:
    first = {"id": "a", "index": 0, "function": {"name": "f", "arguments": "{"}}
    second = {"id": "b", "index": 1, "function": {"name": "g", "arguments": "{"}}
    again = {"index": 0, "function": {"arguments": "}"}}
    events = run(
        [
            chunk({"tool_calls": [first]}),
            chunk({"tool_calls": [second]}),
            chunk({"tool_calls": [again]}),
        ]
    )
    assert [name for name, _ in events][-1] == "error"


def test_fail_after_finish_adds_nothing() -> None:
    stream = AnthropicStream(message_id="m", model="tiny", stop_sequences=())
    stream.feed(chunk({"content": "a"}, "stop"))
    assert stream.feed("[DONE]")[-1].startswith(b"event: message_stop")
    assert stream.finished
    assert stream.fail("late") == []
    assert stream.end() == []
    assert stream.feed(chunk({"content": "b"})) == []


def test_sse_decoder_across_arbitrary_cuts() -> None:
    wire = b'data: {"a": 1}\n\n: comment\ndata: [DONE]\r\n\r\n'
    for cut in range(len(wire) + 1):
        decoder = SseDecoder()
        assert decoder.feed(wire[:cut]) + decoder.feed(wire[cut:]) == ['{"a": 1}', "[DONE]"]
    decoder = SseDecoder()
    assert [item for byte in wire for item in decoder.feed(bytes([byte]))] == ['{"a": 1}', "[DONE]"]
