"""The Anthropic Messages API over the enclave's OpenAI chat completions API (no I/O).

:func:`to_openai_request` turns a ``POST /v1/messages`` body into a ``/v1/chat/completions``
body; :func:`to_anthropic_message` turns the non-streamed answer back into a ``message``
(the streamed one: ``_anthropic_stream``). docs/client.md (section 4) lists what is
translated, what is dropped and why. Error messages name fields and block types, never
message content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from enclave.client.errors import ClientError
from enclave.protocol.api import anthropic_error_document, anthropic_error_type

__all__ = [
    "AnthropicRequestError",
    "TranslatedRequest",
    "UpstreamShapeError",
    "error_document",
    "error_type_for_status",
    "sse_event",
    "stop_reason_for",
    "to_anthropic_message",
    "to_openai_request",
]

#: Sampling fields passed through as they are (vLLM accepts ``top_k`` as an extra).
_SAMPLING = ("temperature", "top_p", "top_k")
#: Blocks dropped from the history: the engine cannot verify another model's thinking.
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
_MEDIA = re.compile(r"image/[a-z0-9.+-]{1,64}")
_FINISH = {"length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


class AnthropicRequestError(ClientError):
    """A Messages API request this proxy cannot translate; answered 400, nothing is sent."""


class UpstreamShapeError(ClientError):
    """The endpoint's answer is not the OpenAI shape the translation needs."""


JsonObject = dict[str, object]


def _blocks(content: object, where: str) -> list[Mapping[str, object]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise AnthropicRequestError(f"{where}: content must be a string or a list of blocks")
    for index, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise AnthropicRequestError(f"{where}[{index}]: a block needs a string type")
    return content


def _text(block: Mapping[str, object], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise AnthropicRequestError(f"{where}: a text block needs a string text")
    return text


def _image(block: Mapping[str, object], where: str) -> JsonObject:
    """An image block as an OpenAI ``image_url`` part (base64 as a data URL, url as is)."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise AnthropicRequestError(f"{where}: an image block needs a source")
    kind = source.get("type")
    if kind == "base64":
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not _MEDIA.fullmatch(media) or not isinstance(data, str):
            raise AnthropicRequestError(f"{where}: a base64 image needs media_type and data")
        url = f"data:{media};base64,{data}"
    elif kind == "url":
        given = source.get("url")
        if not isinstance(given, str) or not given.startswith(("https://", "http://")):
            raise AnthropicRequestError(f"{where}: a url image needs an http(s) url")
        url = given
    else:
        raise AnthropicRequestError(f"{where}: image source type {kind!r} is not supported")
    return {"type": "image_url", "image_url": {"url": url}}


def system_text(system: object) -> str | None:
    """``system`` (a string or text blocks) as one system message text, or None."""
    if system is None:
        return None
    blocks = _blocks(system, "system")
    if any(block["type"] != "text" for block in blocks):
        raise AnthropicRequestError("system: only text blocks are supported")
    return "\n".join(_text(block, "system") for block in blocks)


def _parts(blocks: list[Mapping[str, object]], where: str) -> list[JsonObject]:
    parts: list[JsonObject] = []
    for index, block in enumerate(blocks):
        kind, at = block["type"], f"{where}[{index}]"
        if kind == "text":
            parts.append({"type": "text", "text": _text(block, at)})
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind not in _DROPPED_BLOCKS:
            raise AnthropicRequestError(f"{at}: block type {kind!r} is not supported here")
    return parts


def _compact(parts: list[JsonObject]) -> str | list[JsonObject]:
    """Text-only parts as one string (what every engine accepts), else the part list."""
    if all(part["type"] == "text" for part in parts):
        return "\n".join(str(part["text"]) for part in parts)
    return parts


def _tool_result(block: Mapping[str, object], where: str) -> tuple[JsonObject, list[JsonObject]]:
    """A ``tool`` message, and the result's images (sent after it in a user message)."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise AnthropicRequestError(f"{where}: a tool_result needs a tool_use_id")
    content = block.get("content")
    parts = _parts(_blocks("" if content is None else content, where), where)
    text = "\n".join(str(part["text"]) for part in parts if part["type"] == "text")
    if block.get("is_error") is True:
        text = "Error: " + text
    images = [part for part in parts if part["type"] != "text"]
    return {"role": "tool", "tool_call_id": call_id, "content": text}, images


def _user(blocks: list[Mapping[str, object]], where: str) -> list[JsonObject]:
    results = [(i, b) for i, b in enumerate(blocks) if b["type"] == "tool_result"]
    rest = [b for b in blocks if b["type"] != "tool_result"]
    messages: list[JsonObject] = []
    images: list[JsonObject] = []
    for index, block in results:
        message, found = _tool_result(block, f"{where}[{index}]")
        messages.append(message)
        images += found
    parts = images + _parts(rest, where)
    if parts or not messages:
        messages.append({"role": "user", "content": _compact(parts)})
    return messages


def _assistant(blocks: list[Mapping[str, object]], where: str) -> JsonObject:
    texts: list[str] = []
    calls: list[JsonObject] = []
    for index, block in enumerate(blocks):
        kind, at = block["type"], f"{where}[{index}]"
        if kind == "text":
            texts.append(_text(block, at))
        elif kind == "tool_use":
            call_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
            if not (isinstance(call_id, str) and isinstance(name, str)):
                raise AnthropicRequestError(f"{at}: a tool_use needs an id and a name")
            if not isinstance(arguments, dict):
                raise AnthropicRequestError(f"{at}: a tool_use input must be an object")
            function = {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}
            calls.append({"id": call_id, "type": "function", "function": function})
        elif kind not in _DROPPED_BLOCKS:
            raise AnthropicRequestError(f"{at}: block type {kind!r} is not supported here")
    text = "".join(texts) if texts or not calls else None
    message: JsonObject = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = calls
    return message


def convert_messages(messages: object) -> list[JsonObject]:
    """Anthropic ``messages`` as OpenAI chat messages."""
    if not isinstance(messages, list) or not messages:
        raise AnthropicRequestError("messages: a non-empty list is required")
    out: list[JsonObject] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise AnthropicRequestError(f"{where}: must be an object")
        blocks = _blocks(message.get("content"), f"{where}.content")
        role = message.get("role")
        if role == "user":
            out += _user(blocks, f"{where}.content")
        elif role == "assistant":
            out.append(_assistant(blocks, f"{where}.content"))
        else:
            raise AnthropicRequestError(f"{where}: role must be user or assistant")
    return out


def convert_tools(tools: object) -> list[JsonObject]:
    """Custom tools as OpenAI function tools (``input_schema`` -> ``parameters``)."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise AnthropicRequestError("tools: must be a list")
    out: list[JsonObject] = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
            raise AnthropicRequestError(f"{where}: only custom tools are supported")
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not name or not isinstance(schema, dict):
            raise AnthropicRequestError(f"{where}: a tool needs a name and an input_schema")
        function: JsonObject = {"name": name, "parameters": schema}
        description = tool.get("description")
        if isinstance(description, str):
            function["description"] = description
        out.append({"type": "function", "function": function})
    return out


def convert_tool_choice(choice: object, *, has_tools: bool) -> JsonObject:
    """``tool_choice`` as OpenAI fields (``tool_choice``, ``parallel_tool_calls``)."""
    if choice is None:
        return {}
    if not isinstance(choice, dict):
        raise AnthropicRequestError("tool_choice: must be an object")
    kind = choice.get("type")
    out: JsonObject = {}
    if kind in ("auto", "none"):
        out["tool_choice"] = kind
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise AnthropicRequestError(
            "tool_choice: type must be auto, any, tool (with a name) or none"
        )
    if kind in ("any", "tool") and not has_tools:
        raise AnthropicRequestError("tool_choice: tools must be given")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False
    return out


@dataclass(frozen=True, slots=True)
class TranslatedRequest:
    """The chat completions body, and what the answer's translation needs to know."""

    body: JsonObject
    model: str
    stream: bool
    stop_sequences: tuple[str, ...]


def _number(body: Mapping[str, object], key: str) -> float | int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AnthropicRequestError(f"{key}: must be a number")
    return value


def _stop_sequences(body: Mapping[str, object]) -> tuple[str, ...]:
    raw = body.get("stop_sequences")
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, str) and item for item in raw):
        raise AnthropicRequestError("stop_sequences: must be a list of non-empty strings")
    return tuple(raw)


def to_openai_request(body: object) -> TranslatedRequest:
    """Translate a Messages API body; raises :class:`AnthropicRequestError`."""
    if not isinstance(body, dict):
        raise AnthropicRequestError("the body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise AnthropicRequestError("model: a string is required")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise AnthropicRequestError("max_tokens: a positive integer is required")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise AnthropicRequestError("stream: must be a boolean")
    stops = _stop_sequences(body)
    messages = convert_messages(body.get("messages"))
    system = system_text(body.get("system"))
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    out: JsonObject = {"model": model, "messages": messages, "max_tokens": max_tokens}
    if messages[-1]["role"] == "assistant" and "tool_calls" not in messages[-1]:
        # A prefilled answer: vLLM continues it instead of starting a new turn.
        out["continue_final_message"] = True
        out["add_generation_prompt"] = False
    for key in _SAMPLING:
        value = _number(body, key)
        if value is not None:
            out[key] = value
    if stops:
        out["stop"] = list(stops)
    tools = convert_tools(body.get("tools"))
    if tools:
        out["tools"] = tools
    out.update(convert_tool_choice(body.get("tool_choice"), has_tools=bool(tools)))
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
    return TranslatedRequest(out, model, stream, stops)


def stop_reason_for(
    finish_reason: object, engine_stop: object, stops: tuple[str, ...], *, used_tools: bool
) -> tuple[str, str | None]:
    """Anthropic's ``(stop_reason, stop_sequence)`` for an OpenAI ``finish_reason``.

    vLLM names the matched stop string in ``stop_reason``; a named tool choice finishes with
    ``"stop"`` although it called a tool.
    """
    if finish_reason == "stop" and isinstance(engine_stop, str) and engine_stop in stops:
        return "stop_sequence", engine_stop
    if used_tools and finish_reason in ("stop", "tool_calls"):
        return "tool_use", None
    if isinstance(finish_reason, str) and finish_reason in _FINISH:
        return _FINISH[finish_reason], None
    return "end_turn", None


def _object(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise UpstreamShapeError(f"{what} is not an object")
    return value


def _tokens(usage: object, key: str) -> int:
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _tool_input(arguments: object) -> JsonObject:
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except ValueError as exc:
        raise UpstreamShapeError("tool call arguments are not JSON") from exc
    if not isinstance(parsed, dict):
        raise UpstreamShapeError("tool call arguments are not a JSON object")
    return parsed


def to_anthropic_message(
    body: object, *, message_id: str, model: str, stop_sequences: tuple[str, ...]
) -> JsonObject:
    """The ``message`` for a non-streamed chat completion; raises :class:`UpstreamShapeError`."""
    document = _object(body, "the response")
    choices = document.get("choices")
    if not isinstance(choices, list) or not choices:
        raise UpstreamShapeError("the response has no choices")
    choice = _object(choices[0], "a choice")
    message = _object(choice.get("message"), "the message")
    content: list[JsonObject] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise UpstreamShapeError("tool_calls is not a list")
    for raw in calls:
        call = _object(raw, "a tool call")
        function = _object(call.get("function"), "a tool call's function")
        name = function.get("name")
        if not isinstance(name, str):
            raise UpstreamShapeError("a tool call has no name")
        call_id = call.get("id")
        content.append(
            {
                "type": "tool_use",
                "id": call_id if isinstance(call_id, str) and call_id else f"toolu_{message_id}",
                "name": name,
                "input": _tool_input(function.get("arguments")),
            }
        )
    stop_reason, stop_sequence = stop_reason_for(
        choice.get("finish_reason"),
        choice.get("stop_reason"),
        stop_sequences,
        used_tools=bool(calls),
    )
    usage = document.get("usage")
    served = document.get("model")
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": served if isinstance(served, str) else model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": _tokens(usage, "prompt_tokens"),
            "output_tokens": _tokens(usage, "completion_tokens"),
        },
    }


#: Anthropic's error shape is built in the one place error bodies are
#: (:mod:`enclave.protocol.api`); these are its names here.
error_type_for_status = anthropic_error_type
error_document = anthropic_error_document


def sse_event(name: str, document: Mapping[str, object]) -> bytes:
    """One Anthropic server-sent event: ``event: <name>`` and ``data: <compact JSON>``."""
    data = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return f"event: {name}\ndata: {data}\n\n".encode()
