"""The generating endpoints: chat completions, completions, embeddings.

Length checks follow vLLM: prompt tokens must be below ``max_model_len``, and prompt plus
``max_tokens`` must fit in it; without ``max_tokens`` a chat request may use the rest.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from enclave_dev.engine._generate import (
    Generation,
    ToolCallGeneration,
    choose_tool,
    expected_embedding,
    generate_text,
    generate_tool_call,
    prompt_token_count,
)
from enclave_dev.engine._logs import LOGGER_NAME, vlog
from enclave_dev.engine._requests import (
    RequestError,
    Sampling,
    parse_chat,
    parse_completion,
    parse_embedding,
)
from enclave_dev.engine._shapes import ResponseContext, chat_response, completion_response
from enclave_dev.engine._sse import EventStream
from enclave_dev.engine._streams import chat_events, completion_events

if TYPE_CHECKING:
    from enclave_dev.engine._app import EngineState

__all__ = ["chat", "completion", "embedding"]

logger = logging.getLogger(LOGGER_NAME)


def _budget(state: EngineState, prompt_tokens: int, max_tokens: int | None) -> int:
    limit = state.info.max_model_len
    if prompt_tokens >= limit:
        raise RequestError(
            f"This model's maximum context length is {limit} tokens. However, your request "
            f"has {prompt_tokens} input tokens. Please reduce the length of the input messages.",
            param="input_tokens",
        )
    if max_tokens is None:
        return limit - prompt_tokens
    if prompt_tokens + max_tokens > limit:
        raise RequestError(
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's "
            f"maximum context length is {limit} tokens and your request has {prompt_tokens} "
            f"input tokens ({max_tokens} > {limit} - {prompt_tokens}).",
            param="max_tokens",
        )
    return max_tokens


def _text(prompt: str, sampling: Sampling, max_tokens: int) -> Generation:
    return generate_text(
        prompt,
        max_tokens=max_tokens,
        stop=sampling.stop,
        ignore_eos=sampling.ignore_eos,
        include_stop_str_in_output=sampling.include_stop_str_in_output,
    )


def _start(
    state: EngineState, request_id: str, prompt_tokens: int, max_tokens: int, stream: bool
) -> None:
    if state.config.enable_log_requests:
        vlog(
            logger,
            logging.INFO,
            "logger.py:39",
            "Received request %s: prompt_tokens=%d, max_tokens=%d, stream=%s (content not logged)",
            request_id,
            prompt_tokens,
            max_tokens,
            stream,
        )
    state.metrics.started(prompt_tokens)


def _on_end(state: EngineState, outcome: Generation | ToolCallGeneration) -> Callable[[bool], None]:
    def end(completed: bool) -> None:
        tokens = outcome.completion_tokens if completed else 0
        state.metrics.finished(tokens, outcome.finish_reason if completed else None)

    return end


async def _pace(state: EngineState, tokens: int) -> None:
    pace = state.faults.current.tokens_per_second
    if pace > 0:
        await asyncio.sleep(tokens / pace)


async def chat(state: EngineState, request: Request, body: object) -> Response:
    parsed = parse_chat(body)
    model = state.resolve_model(parsed.model)
    max_tokens = _budget(state, parsed.prompt_tokens, parsed.sampling.max_tokens)
    choice = parsed.tool_choice
    if choice.mode == "auto" and parsed.tools and not state.config.enable_auto_tool_choice:
        raise RequestError(
            '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
        )
    tool = choose_tool(parsed.tools, choice.mode, choice.name, parsed.user_text)
    outcome: Generation | ToolCallGeneration
    if tool is not None:
        named = choice.mode == "named"
        outcome = generate_tool_call(tool, parsed.user_text, max_tokens=max_tokens, named=named)
        call_id: str | None = f"chatcmpl-tool-{secrets.token_hex(16)}"
    else:
        outcome = _text(parsed.user_text, parsed.sampling, max_tokens)
        call_id = None
    request_id = state.request_id(request, "chatcmpl-")
    ctx = ResponseContext(request_id, int(time.time()), model, parsed.prompt_tokens)
    _start(state, request_id, parsed.prompt_tokens, max_tokens, parsed.stream)
    end = _on_end(state, outcome)
    if parsed.stream:
        events = chat_events(ctx, outcome, parsed.stream_options, tool_call_id=call_id)
        return EventStream(request_id, events, state.faults, end)
    try:
        await _pace(state, outcome.completion_tokens)
    except BaseException:
        end(False)
        raise
    end(True)
    document = chat_response(
        ctx,
        outcome,
        tool_call_id=call_id,
        named_or_required=choice.mode in ("named", "required"),
    )
    return JSONResponse(document)


async def completion(state: EngineState, request: Request, body: object) -> Response:
    parsed = parse_completion(body)
    model = state.resolve_model(parsed.model)
    max_tokens = _budget(state, parsed.prompt_tokens, parsed.sampling.max_tokens)
    outcome = _text(parsed.prompt, parsed.sampling, max_tokens)
    request_id = state.request_id(request, "cmpl-")
    ctx = ResponseContext(request_id, int(time.time()), model, parsed.prompt_tokens)
    _start(state, request_id, parsed.prompt_tokens, max_tokens, parsed.stream)
    end = _on_end(state, outcome)
    if parsed.stream:
        events = completion_events(ctx, outcome, parsed.stream_options)
        return EventStream(request_id, events, state.faults, end)
    try:
        await _pace(state, outcome.completion_tokens)
    except BaseException:
        end(False)
        raise
    end(True)
    return JSONResponse(completion_response(ctx, outcome))


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


async def embedding(state: EngineState, request: Request, body: object) -> Response:
    parsed = parse_embedding(body)
    model = state.resolve_model(parsed.model)
    counts = [prompt_token_count(text) for text in parsed.inputs]
    limit = state.info.max_model_len
    for count in counts:
        if count > limit:
            raise RequestError(
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {count} tokens in the input for embedding generation. Please "
                "reduce the length of the input.",
                param="input_tokens",
            )
    request_id = state.request_id(request, "embd-")
    total = sum(counts)
    _start(state, request_id, total, 0, False)
    data = [
        {
            "index": index,
            "object": "embedding",
            "embedding": _encode(
                expected_embedding(text, parsed.dimensions), parsed.encoding_format
            ),
        }
        for index, text in enumerate(parsed.inputs)
    ]
    state.metrics.finished(0, "stop")
    document = {
        "id": request_id,
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": data,
        "usage": {
            "prompt_tokens": total,
            "total_tokens": total,
            "completion_tokens": 0,
            "prompt_tokens_details": None,
        },
    }
    return JSONResponse(document)
