"""Validation of OpenAI request bodies into frozen values (no I/O).

What vLLM rejects is rejected with a 400 ``BadRequestError``; features the development engine
does not imitate (``n`` > 1, logprobs, non-text content, token-id prompts, batched prompts,
``echo``, ``suffix``) are rejected the same way with a message saying so. Sampling parameters
such as ``temperature`` are accepted and have no effect.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from enclave_dev.engine._generate import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    ToolSpec,
    prompt_token_count,
)
from enclave_dev.engine._streams import StreamOptions
from model_manager.errors import ModelManagerError

__all__ = [
    "ChatRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "RequestError",
    "Sampling",
    "ToolChoice",
    "parse_chat",
    "parse_completion",
    "parse_embedding",
]

_UNSUPPORTED = "is not supported by the development engine"
#: vLLM's default ``max_tokens`` for /v1/completions.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


class RequestError(ModelManagerError):
    """A request the engine refuses; the message is returned to the client as vLLM would."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        err_type: str = "BadRequestError",
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.err_type = err_type
        self.param = param


@dataclass(frozen=True, slots=True)
class Sampling:
    max_tokens: int | None
    stop: tuple[str, ...]
    ignore_eos: bool
    include_stop_str_in_output: bool


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: Literal["none", "auto", "required", "named"]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str | None
    user_text: str
    prompt_tokens: int
    sampling: Sampling
    stream: bool
    stream_options: StreamOptions
    tools: tuple[ToolSpec, ...]
    tool_choice: ToolChoice


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    model: str | None
    prompt: str
    prompt_tokens: int
    sampling: Sampling
    stream: bool
    stream_options: StreamOptions


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    model: str | None
    inputs: tuple[str, ...]
    dimensions: int
    encoding_format: Literal["float", "base64"]


def _object(body: object) -> Mapping[str, object]:
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    return body


def _optional_bool(body: Mapping[str, object], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f"`{key}` must be a boolean.", param=key)
    return value


def _optional_int(body: Mapping[str, object], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"`{key}` must be an integer.", param=key)
    return value


def _model(body: Mapping[str, object]) -> str | None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError("`model` must be a string.", param="model")
    return model


def _sampling(body: Mapping[str, object], max_tokens: int | None) -> Sampling:
    if max_tokens is not None and max_tokens < 1:
        raise RequestError(f"max_tokens must be at least 1, got {max_tokens}.", param="max_tokens")
    n = _optional_int(body, "n")
    if n is not None and n != 1:
        raise RequestError(f"`n` other than 1 {_UNSUPPORTED}.", param="n")
    logprobs = body.get("logprobs")
    if logprobs not in (None, False, 0):
        raise RequestError(f"`logprobs` {_UNSUPPORTED}.", param="logprobs")
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise RequestError("`stop` must be a string or a list of strings.", param="stop")
    if any(not s for s in stops):
        raise RequestError("`stop` strings must not be empty.", param="stop")
    return Sampling(
        max_tokens=max_tokens,
        stop=stops,
        ignore_eos=_optional_bool(body, "ignore_eos", False),
        include_stop_str_in_output=_optional_bool(body, "include_stop_str_in_output", False),
    )


def _stream(body: Mapping[str, object]) -> tuple[bool, StreamOptions]:
    stream = _optional_bool(body, "stream", False)
    options = body.get("stream_options")
    if options is None:
        return stream, StreamOptions()
    if not stream:
        raise RequestError(
            "Stream options can only be defined when `stream=True`.", param="stream_options"
        )
    options = _object(options)
    return stream, StreamOptions(
        include_usage=_optional_bool(options, "include_usage", True),
        continuous_usage_stats=_optional_bool(options, "continuous_usage_stats", False),
    )


def _content_text(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError("Message `content` must be a string or a list of parts.")
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            raise RequestError(f"Content parts other than text {_UNSUPPORTED}.")
        text = part.get("text")
        if not isinstance(text, str):
            raise RequestError("A text content part needs a string `text`.")
        texts.append(text)
    return "\n".join(texts)


def _parameter(function: Mapping[str, object]) -> str:
    parameters = function.get("parameters")
    if not isinstance(parameters, dict):
        return "input"
    required = parameters.get("required")
    if isinstance(required, list) and required and isinstance(required[0], str):
        return required[0]
    properties = parameters.get("properties")
    if isinstance(properties, dict) and properties:
        return str(next(iter(properties)))
    return "input"


def _tools(body: Mapping[str, object]) -> tuple[ToolSpec, ...]:
    tools = body.get("tools")
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise RequestError("`tools` must be a list.", param="tools")
    specs = []
    for tool in tools:
        function = _object(tool).get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RequestError("Each tool needs a `function` with a `name`.", param="tools")
        specs.append(ToolSpec(name=function["name"], parameter=_parameter(function)))
    return tuple(specs)


def _tool_choice(body: Mapping[str, object], tools: tuple[ToolSpec, ...]) -> ToolChoice:
    raw = body.get("tool_choice")
    if raw is None:
        return ToolChoice("auto" if tools else "none")
    if raw in ("none", "auto", "required"):
        choice = ToolChoice(raw)
    elif isinstance(raw, dict) and isinstance(raw.get("function"), dict):
        name = raw["function"].get("name")
        if not isinstance(name, str):
            raise RequestError("A named `tool_choice` needs a function name.", param="tool_choice")
        choice = ToolChoice("named", name)
    else:
        raise RequestError("Invalid `tool_choice`.", param="tool_choice")
    if choice.mode in ("named", "required") and not tools:
        raise RequestError("When using `tool_choice`, `tools` must be set.", param="tool_choice")
    if choice.mode == "named" and all(tool.name != choice.name for tool in tools):
        raise RequestError(
            f"Tool '{choice.name}' has not been passed in `tools`.", param="tool_choice"
        )
    return choice


def parse_chat(body: object) -> ChatRequest:
    """Validate a /v1/chat/completions body."""
    document = _object(body)
    messages = document.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("`messages` is required and must be a non-empty list.", param="messages")
    texts, user_text = [], ""
    for message in messages:
        entry = _object(message)
        if not isinstance(entry.get("role"), str):
            raise RequestError("Each message needs a string `role`.", param="messages")
        text = _content_text(entry.get("content"))
        texts.append(text)
        if entry["role"] == "user":
            user_text = text
    completion = _optional_int(document, "max_completion_tokens")
    tools = _tools(document)
    stream, options = _stream(document)
    return ChatRequest(
        model=_model(document),
        user_text=user_text,
        prompt_tokens=prompt_token_count("\n".join(texts)),
        sampling=_sampling(
            document,
            completion if completion is not None else _optional_int(document, "max_tokens"),
        ),
        stream=stream,
        stream_options=options,
        tools=tools,
        tool_choice=_tool_choice(document, tools),
    )


def parse_completion(body: object) -> CompletionRequest:
    """Validate a /v1/completions body."""
    document = _object(body)
    prompt = document.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list):
        raise RequestError(f"Batched or token-id prompts are {_UNSUPPORTED[3:]}.", param="prompt")
    if not isinstance(prompt, str) or not prompt:
        raise RequestError("Either prompt or prompt_embeds must be provided and non-empty.")
    for key in ("echo", "suffix"):
        if document.get(key) not in (None, False, ""):
            raise RequestError(f"`{key}` {_UNSUPPORTED}.", param=key)
    max_tokens = _optional_int(document, "max_tokens")
    stream, options = _stream(document)
    return CompletionRequest(
        model=_model(document),
        prompt=prompt,
        prompt_tokens=prompt_token_count(prompt),
        sampling=_sampling(
            document, COMPLETIONS_DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
        ),
        stream=stream,
        stream_options=options,
    )


def parse_embedding(body: object) -> EmbeddingRequest:
    """Validate a /v1/embeddings body."""
    document = _object(body)
    raw = document.get("input")
    if isinstance(raw, str):
        inputs: tuple[str, ...] = (raw,)
    elif isinstance(raw, list) and raw and all(isinstance(item, str) for item in raw):
        inputs = tuple(raw)
    else:
        raise RequestError(
            f"`input` must be a string or a non-empty list of strings (token ids {_UNSUPPORTED}).",
            param="input",
        )
    dimensions = _optional_int(document, "dimensions")
    if dimensions is None:
        dimensions = DEFAULT_EMBEDDING_DIMENSIONS
    if not 1 <= dimensions <= DEFAULT_EMBEDDING_DIMENSIONS:
        raise RequestError(
            f"`dimensions` must be in 1..{DEFAULT_EMBEDDING_DIMENSIONS}.", param="dimensions"
        )
    encoding = document.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise RequestError(
            "`encoding_format` must be 'float' or 'base64'.", param="encoding_format"
        )
    return EmbeddingRequest(
        model=_model(document),
        inputs=inputs,
        dimensions=dimensions,
        encoding_format=encoding,
    )
