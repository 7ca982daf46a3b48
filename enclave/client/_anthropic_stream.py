"""Streamed chat completion chunks as Anthropic Messages API events (no I/O).

:class:`SseDecoder` cuts the upstream bytes into SSE ``data`` payloads; :class:`AnthropicStream`
turns each payload into Anthropic events: ``message_start`` and a ``ping`` first, then for
each content block ``content_block_start``, ``content_block_delta`` (``text_delta`` or
``input_json_delta``) and ``content_block_stop``, then ``message_delta`` (stop reason and
usage) and ``message_stop`` once ``data: [DONE]`` arrives. An upstream error event, a
payload that is not a chunk, or an upstream that ends (or fails) before ``[DONE]`` becomes
one ``error`` event and nothing after it: a cut stream never looks like a finished one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from enclave.client._anthropic import JsonObject, error_document, sse_event, stop_reason_for

__all__ = ["AnthropicStream", "SseDecoder"]

_DONE = "[DONE]"


class SseDecoder:
    """Incremental server-sent events parser: bytes in, each complete event's ``data`` out."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        events = []
        for raw in lines:
            line = raw.removesuffix(b"\r")
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data).decode("utf-8", errors="replace"))
                    self._data = []
            elif line.startswith(b"data:"):
                self._data.append(line[6:] if line.startswith(b"data: ") else line[5:])
        return events


class AnthropicStream:
    """The translation of one streamed response; feed it payloads, then call :meth:`end`."""

    def __init__(self, *, message_id: str, model: str, stop_sequences: tuple[str, ...]) -> None:
        self._id = message_id
        self._model = model
        self._stops = stop_sequences
        self._started = False
        self._finished = False
        self._blocks = 0
        self._open: str | None = None  # "text" or "tool_use"
        self._tools: dict[int, int] = {}  # OpenAI tool call index -> content block index
        self._finish: object = None
        self._engine_stop: object = None
        self._input_tokens = 0
        self._output_tokens = 0

    @property
    def finished(self) -> bool:
        """True once ``message_stop`` or an ``error`` event was produced."""
        return self._finished

    def feed(self, data: str) -> list[bytes]:
        """The events for one upstream SSE ``data`` payload."""
        if self._finished:
            return []
        if data == _DONE:
            if self._finish is None:
                return self.fail("the engine's stream ended without a finish reason")
            return self._close()
        try:
            chunk = json.loads(data)
        except ValueError:
            return self.fail("the engine sent an event that is not JSON")
        if not isinstance(chunk, dict):
            return self.fail("the engine sent an event that is not an object")
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else None
            return self.fail(message if isinstance(message, str) else "the engine failed")
        events = self._start(chunk)
        self._count(chunk.get("usage"))
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            events += self._choice(choices[0])
        return events

    def end(self) -> list[bytes]:
        """The upstream ended: nothing more if the message stopped, else an ``error`` event."""
        return self.fail("the response stream ended before it was complete")

    def fail(self, message: str) -> list[bytes]:
        """One ``error`` event (unless the stream already finished) and nothing after it."""
        if self._finished:
            return []
        self._finished = True
        return [sse_event("error", error_document("api_error", message))]

    def _start(self, chunk: Mapping[str, object]) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        served = chunk.get("model")
        if isinstance(served, str):
            self._model = served
        usage = chunk.get("usage")
        self._count(usage)
        message: JsonObject = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens, "output_tokens": self._output_tokens},
        }
        return [
            sse_event("message_start", {"type": "message_start", "message": message}),
            sse_event("ping", {"type": "ping"}),
        ]

    def _count(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and not isinstance(prompt, bool):
            self._input_tokens = prompt
        if isinstance(completion, int) and not isinstance(completion, bool):
            self._output_tokens = completion

    def _choice(self, choice: Mapping[str, object]) -> list[bytes]:
        events: list[bytes] = []
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = delta.get("content")
            if isinstance(text, str) and text:
                events += self._text(text)
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, dict):
                        events += self._tool_call(call)
                        if self._finished:
                            return events
        if choice.get("finish_reason") is not None:
            self._finish = choice["finish_reason"]
            self._engine_stop = choice.get("stop_reason")
        return events

    def _open_block(self, kind: str, block: Mapping[str, object]) -> list[bytes]:
        events = self._close_block()
        self._open = kind
        start = {"type": "content_block_start", "index": self._blocks, "content_block": block}
        return [*events, sse_event("content_block_start", start)]

    def _close_block(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        self._blocks += 1
        stop = {"type": "content_block_stop", "index": self._blocks - 1}
        return [sse_event("content_block_stop", stop)]

    def _delta(self, delta: Mapping[str, object]) -> bytes:
        document = {"type": "content_block_delta", "index": self._blocks, "delta": delta}
        return sse_event("content_block_delta", document)

    def _text(self, text: str) -> list[bytes]:
        events = (
            [] if self._open == "text" else self._open_block("text", {"type": "text", "text": ""})
        )
        return [*events, self._delta({"type": "text_delta", "text": text})]

    def _tool_call(self, call: Mapping[str, object]) -> list[bytes]:
        index = call.get("index", 0)
        if not isinstance(index, int):
            return self.fail("the engine sent a tool call without an index")
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        events: list[bytes] = []
        if index not in self._tools:
            name, call_id = function.get("name"), call.get("id")
            if not isinstance(name, str) or not name:
                return self.fail("the engine sent tool arguments before the tool's name")
            block_id = call_id if isinstance(call_id, str) and call_id else f"toolu_{self._id}"
            block = {"type": "tool_use", "id": block_id, "name": name, "input": {}}
            events += self._open_block("tool_use", block)
            self._tools[index] = self._blocks
        elif self._open != "tool_use" or self._tools[index] != self._blocks:
            return self.fail("the engine interleaved tool calls, which cannot be translated")
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            events.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return events

    def _close(self) -> list[bytes]:
        events = self._start({}) + self._close_block()
        stop_reason, stop_sequence = stop_reason_for(
            self._finish, self._engine_stop, self._stops, used_tools=bool(self._tools)
        )
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": {"input_tokens": self._input_tokens, "output_tokens": self._output_tokens},
        }
        self._finished = True
        return [
            *events,
            sse_event("message_delta", delta),
            sse_event("message_stop", {"type": "message_stop"}),
        ]
