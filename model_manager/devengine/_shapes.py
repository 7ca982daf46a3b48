"""JSON documents in vLLM 0.11's shapes (key order and null fields included), no I/O.

Streamed chunks follow vLLM's ``model_dump_json(exclude_unset=True)``: only the fields vLLM
sets appear. Non-streamed responses follow ``model_dump()``: every field, nulls included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from model_manager.devengine._generate import Generation, ToolCallGeneration

__all__ = [
    "DONE",
    "ResponseContext",
    "chat_chunk",
    "chat_response",
    "completion_chunk",
    "completion_response",
    "error_body",
    "sse",
    "stream_error_event",
    "usage",
    "usage_chunk",
]

DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class ResponseContext:
    """What every document of one response shares."""

    request_id: str
    created: int
    model: str
    prompt_tokens: int


def sse(document: object) -> bytes:
    """One server-sent event: ``data: <compact JSON>`` and a blank line."""
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def usage(prompt_tokens: int, completion_tokens: int, *, details: bool) -> dict[str, object]:
    document: dict[str, object] = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }
    if details:
        document["prompt_tokens_details"] = None
    return document


def error_body(
    message: str, err_type: str, code: int, param: str | None = None
) -> dict[str, object]:
    """vLLM's ErrorResponse: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


def stream_error_event(message: str, err_type: str, code: int) -> bytes:
    """The in-stream error event; vLLM serialises it with ``json.dumps`` defaults (spaces)."""
    return f"data: {json.dumps(error_body(message, err_type, code))}\n\n".encode()


def chat_chunk(
    ctx: ResponseContext,
    delta: dict[str, object],
    *,
    finish_reason: str | None = None,
    stop_reason: str | None = None,
    final: bool = False,
    completion_tokens: int | None = None,
) -> dict[str, object]:
    """A ``chat.completion.chunk``; ``completion_tokens`` adds continuous usage stats."""
    choice: dict[str, object] = {
        "index": 0,
        "delta": delta,
        "logprobs": None,
        "finish_reason": finish_reason,
    }
    if final:
        choice["stop_reason"] = stop_reason
    chunk: dict[str, object] = {
        "id": ctx.request_id,
        "object": "chat.completion.chunk",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [choice],
    }
    if completion_tokens is not None:
        chunk["usage"] = usage(ctx.prompt_tokens, completion_tokens, details=False)
    return chunk


def completion_chunk(
    ctx: ResponseContext,
    text: str,
    *,
    finish_reason: str | None = None,
    stop_reason: str | None = None,
    completion_tokens: int | None = None,
) -> dict[str, object]:
    """A streamed ``text_completion`` chunk."""
    chunk: dict[str, object] = {
        "id": ctx.request_id,
        "object": "text_completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [
            {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish_reason,
                "stop_reason": stop_reason,
            }
        ],
    }
    if completion_tokens is not None:
        chunk["usage"] = usage(ctx.prompt_tokens, completion_tokens, details=False)
    return chunk


def usage_chunk(ctx: ResponseContext, obj: str, completion_tokens: int) -> dict[str, object]:
    """The final usage chunk of ``stream_options.include_usage`` (``choices`` empty)."""
    return {
        "id": ctx.request_id,
        "object": obj,
        "created": ctx.created,
        "model": ctx.model,
        "choices": [],
        "usage": usage(ctx.prompt_tokens, completion_tokens, details=False),
    }


def _message(content: str | None, tool_calls: list[dict[str, object]]) -> dict[str, object]:
    return {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "tool_calls": tool_calls,
        "reasoning_content": None,
    }


def chat_response(
    ctx: ResponseContext,
    outcome: Generation | ToolCallGeneration,
    *,
    tool_call_id: str | None = None,
    named_or_required: bool = False,
) -> dict[str, object]:
    """A non-streamed ``chat.completion``."""
    if isinstance(outcome, ToolCallGeneration):
        call: dict[str, object] = {
            "id": tool_call_id,
            "type": "function",
            "function": {"name": outcome.name, "arguments": outcome.arguments},
        }
        message = _message("" if named_or_required else None, [call])
        stop_reason = None
    else:
        message = _message(outcome.text, [])
        stop_reason = outcome.stop_reason
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": outcome.finish_reason,
        "stop_reason": stop_reason,
        "token_ids": None,
    }
    return {
        "id": ctx.request_id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": None,
        "usage": usage(ctx.prompt_tokens, outcome.completion_tokens, details=True),
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "kv_transfer_params": None,
    }


def completion_response(ctx: ResponseContext, outcome: Generation) -> dict[str, object]:
    """A non-streamed ``text_completion``."""
    choice = {
        "index": 0,
        "text": outcome.text,
        "logprobs": None,
        "finish_reason": outcome.finish_reason,
        "stop_reason": outcome.stop_reason,
        "token_ids": None,
        "prompt_logprobs": None,
        "prompt_token_ids": None,
    }
    return {
        "id": ctx.request_id,
        "object": "text_completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": None,
        "usage": usage(ctx.prompt_tokens, outcome.completion_tokens, details=True),
        "kv_transfer_params": None,
    }
