"""The full event list of a streamed response, computed up front (no I/O).

Chat: a role chunk (``{"role": "assistant", "content": ""}``), one chunk per generated token,
the last one carrying ``finish_reason`` and ``stop_reason``, then the usage chunk when
``stream_options.include_usage`` is set, then ``[DONE]``. Tool calls stream the name first
(with ``id``, ``type`` and ``index``), then argument pieces, then an empty delta with the
finish reason. Completions: one chunk per token, usage chunk, ``[DONE]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from enclave_dev.engine._generate import Generation, ToolCallGeneration
from enclave_dev.engine._shapes import (
    DONE,
    ResponseContext,
    chat_chunk,
    completion_chunk,
    sse,
    usage_chunk,
)

__all__ = ["Event", "StreamOptions", "chat_events", "completion_events"]


@dataclass(frozen=True, slots=True)
class Event:
    """One SSE event; ``paced`` events are generated tokens and wait for the pace first."""

    data: bytes
    paced: bool = False


@dataclass(frozen=True, slots=True)
class StreamOptions:
    include_usage: bool = False
    continuous_usage_stats: bool = False


def _count(options: StreamOptions, tokens: int) -> int | None:
    return tokens if options.include_usage and options.continuous_usage_stats else None


def chat_events(
    ctx: ResponseContext,
    outcome: Generation | ToolCallGeneration,
    options: StreamOptions,
    *,
    tool_call_id: str | None = None,
) -> list[Event]:
    role = chat_chunk(
        ctx, {"role": "assistant", "content": ""}, first=True, completion_tokens=_count(options, 0)
    )
    events = [Event(sse(role))]
    if isinstance(outcome, ToolCallGeneration):
        events += _tool_events(ctx, outcome, options, tool_call_id)
    else:
        last = len(outcome.pieces) - 1
        for index, piece in enumerate(outcome.pieces):
            final = index == last
            chunk = chat_chunk(
                ctx,
                {"content": piece},
                finish_reason=outcome.finish_reason if final else None,
                stop_reason=outcome.stop_reason if final else None,
                final=final,
                last=final and not options.include_usage,
                completion_tokens=_count(options, index + 1),
            )
            events.append(Event(sse(chunk), paced=True))
    if options.include_usage:
        usage = usage_chunk(ctx, "chat.completion.chunk", outcome.completion_tokens)
        events.append(Event(sse(usage)))
    events.append(Event(DONE))
    return events


def _tool_events(
    ctx: ResponseContext,
    outcome: ToolCallGeneration,
    options: StreamOptions,
    tool_call_id: str | None,
) -> list[Event]:
    head = {"id": tool_call_id, "type": "function", "index": 0, "function": {"name": outcome.name}}
    deltas: list[dict[str, object]] = [{"tool_calls": [head]}]
    deltas += [
        {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
        for piece in outcome.argument_pieces
    ]
    if outcome.finish_reason != "length":
        deltas.append({})
    events = []
    last = len(deltas) - 1
    for index, delta in enumerate(deltas):
        final = index == last
        chunk = chat_chunk(
            ctx,
            delta,
            finish_reason=outcome.finish_reason if final else None,
            final=final,
            last=final and not options.include_usage,
            completion_tokens=_count(options, index + 1),
        )
        events.append(Event(sse(chunk), paced=True))
    return events


def completion_events(
    ctx: ResponseContext, outcome: Generation, options: StreamOptions
) -> list[Event]:
    events = []
    last = len(outcome.pieces) - 1
    for index, piece in enumerate(outcome.pieces):
        final = index == last
        chunk = completion_chunk(
            ctx,
            piece,
            finish_reason=outcome.finish_reason if final else None,
            stop_reason=outcome.stop_reason if final else None,
            last=final and not options.include_usage,
            completion_tokens=_count(options, index + 1),
        )
        events.append(Event(sse(chunk), paced=True))
    if options.include_usage:
        events.append(Event(sse(usage_chunk(ctx, "text_completion", outcome.completion_tokens))))
    events.append(Event(DONE))
    return events
