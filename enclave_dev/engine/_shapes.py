"""JSON documents in vLLM 0.32's shapes (key order and null fields included), no I/O.

Taken from real vLLM 0.32.0 output (tests/vectors/vllm, checked by
tests/unit/enclave_dev/engine/test_shapes.py). Streamed chunks follow vLLM's
``model_dump_json(exclude_unset=True)``: only the fields vLLM sets appear: the first chat chunk
adds ``prompt_token_ids`` and ``prompt_text``, later ones ``token_ids`` per choice, completion
chunks ``stop_reason``, ``prompt_token_ids`` and ``token_ids``, and the last chunk of a stream
(the usage chunk when there is one) ``system_fingerprint``. Non-streamed responses follow
``model_dump()``: every field, nulls included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from enclave_dev.engine._generate import Generation, ToolCallGeneration
from enclave_dev.engine._loading import ENGINE_VERSION

__all__ = [
    "DONE",
    "SYSTEM_FINGERPRINT",
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
#: vLLM's is ``vllm-<version>-<8 hex digits of its build>``.
SYSTEM_FINGERPRINT = f"vllm-{ENGINE_VERSION}-00000000"


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
        document["completion_tokens_details"] = None
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
    first: bool = False,
    last: bool = False,
    completion_tokens: int | None = None,
) -> dict[str, object]:
    """A ``chat.completion.chunk``: ``first`` is the role chunk, ``final`` the one with the
    finish reason, ``last`` the stream's last chunk; ``completion_tokens`` adds continuous
    usage stats."""
    choice: dict[str, object] = {
        "index": 0,
        "delta": delta,
        "logprobs": None,
        "finish_reason": finish_reason,
    }
    if final:
        choice["stop_reason"] = stop_reason
    if not first:
        choice["token_ids"] = None
    chunk: dict[str, object] = {
        "id": ctx.request_id,
        "object": "chat.completion.chunk",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [choice],
    }
    if first:
        chunk["prompt_token_ids"] = None
        chunk["prompt_text"] = None
    if completion_tokens is not None:
        chunk["usage"] = usage(ctx.prompt_tokens, completion_tokens, details=False)
    if last:
        chunk["system_fingerprint"] = SYSTEM_FINGERPRINT
    return chunk


def completion_chunk(
    ctx: ResponseContext,
    text: str,
    *,
    finish_reason: str | None = None,
    stop_reason: str | None = None,
    last: bool = False,
    completion_tokens: int | None = None,
) -> dict[str, object]:
    """A streamed ``text_completion`` chunk (``last``: the stream's last chunk)."""
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
                "prompt_token_ids": None,
                "token_ids": None,
            }
        ],
    }
    if completion_tokens is not None:
        chunk["usage"] = usage(ctx.prompt_tokens, completion_tokens, details=False)
    if last:
        chunk["system_fingerprint"] = SYSTEM_FINGERPRINT
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
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def _message(content: str | None, tool_calls: list[dict[str, object]]) -> dict[str, object]:
    message: dict[str, object] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    }
    if tool_calls:  # vLLM 0.32 leaves an empty list out
        message["tool_calls"] = tool_calls
    message["reasoning"] = None
    return message


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
        "routed_experts": None,
    }
    return {
        "id": ctx.request_id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "usage": usage(ctx.prompt_tokens, outcome.completion_tokens, details=True),
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "prompt_text": None,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
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
        "routed_experts": None,
    }
    return {
        "id": ctx.request_id,
        "object": "text_completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "usage": usage(ctx.prompt_tokens, outcome.completion_tokens, details=True),
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }
