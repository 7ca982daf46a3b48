"""The deterministic output rules of the development engine (pure functions, no I/O).

Text: the token sequence for a prompt text ``P`` is ``"Echo:"``, the first 8 hex digits of
SHA-256(UTF-8 of ``P``), then the whitespace-separated words of ``P``; every token after the
first carries one leading space. The natural end is followed by one end-of-sequence token
(empty text, counted in ``completion_tokens`` as vLLM counts EOS). ``ignore_eos`` cycles the
sequence until ``max_tokens``.

Prompt tokens: the number of whitespace-separated words of the prompt.

Embeddings: SHAKE-256 of a fixed label and the UTF-8 input gives ``dimensions`` signed 16-bit
integers, scaled to unit L2 norm.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEFAULT_EMBEDDING_DIMENSIONS",
    "ECHO_PREFIX",
    "Generation",
    "ToolCallGeneration",
    "ToolSpec",
    "choose_tool",
    "expected_completion",
    "expected_embedding",
    "generate_text",
    "generate_tool_call",
    "prompt_tag",
    "prompt_token_count",
    "tool_arguments",
]

ECHO_PREFIX = "Echo:"
TAG_HEX_DIGITS = 8
DEFAULT_EMBEDDING_DIMENSIONS = 384
_EMBEDDING_LABEL = b"enclave-devengine-embedding\x00"
_PIECE = re.compile(r"\S+\s*")

FinishReason = Literal["stop", "length", "tool_calls"]


def prompt_token_count(text: str) -> int:
    """Prompt tokens as the development engine counts them: whitespace-separated words."""
    return len(text.split())


def prompt_tag(text: str) -> str:
    """The first 8 hex digits of SHA-256 of the UTF-8 prompt text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:TAG_HEX_DIGITS]


def _sequence(prompt_text: str) -> list[str]:
    return [ECHO_PREFIX, prompt_tag(prompt_text), *prompt_text.split()]


def expected_completion(
    prompt_text: str, max_tokens: int | None = None, *, ignore_eos: bool = False
) -> list[str]:
    """The text tokens generated for ``prompt_text``, at most ``max_tokens`` of them.

    Without ``ignore_eos`` the list stops at the natural end (the end-of-sequence token,
    which has no text, is not in the list). With ``ignore_eos`` the sequence repeats and
    ``max_tokens`` is required.
    """
    if max_tokens is not None and max_tokens < 0:
        raise ValueError("max_tokens must be >= 0")
    sequence = _sequence(prompt_text)
    if ignore_eos:
        if max_tokens is None:
            raise ValueError("ignore_eos needs max_tokens")
        count = max_tokens
    else:
        count = len(sequence) if max_tokens is None else min(len(sequence), max_tokens)
    return [("" if i == 0 else " ") + sequence[i % len(sequence)] for i in range(count)]


@dataclass(frozen=True, slots=True)
class Generation:
    """One generated text: per-token text deltas and why it ended.

    ``pieces`` has one entry per generated token (EOS included, as ``""``), so
    ``len(pieces)`` is ``completion_tokens`` and ``"".join(pieces)`` is the text.
    """

    pieces: tuple[str, ...]
    finish_reason: FinishReason
    stop_reason: str | None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def completion_tokens(self) -> int:
        return len(self.pieces)


def _first_stop(text: str, stop: Sequence[str]) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for candidate in stop:
        index = text.find(candidate)
        if index >= 0 and (best is None or index < best[0]):
            best = (index, candidate)
    return best


def generate_text(
    prompt_text: str,
    *,
    max_tokens: int,
    stop: Sequence[str] = (),
    ignore_eos: bool = False,
    include_stop_str_in_output: bool = False,
) -> Generation:
    """Generate as vLLM would finish: stop string, then ``max_tokens``, then EOS.

    A stop string ends generation at the token that completes it; the text is cut before
    it (or after it with ``include_stop_str_in_output``) and ``stop_reason`` names it.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    if any(not s for s in stop):
        raise ValueError("stop strings must be non-empty")
    tokens = expected_completion(prompt_text, max_tokens, ignore_eos=ignore_eos)
    text = ""
    bounds: list[int] = []
    for token in tokens:
        text += token
        bounds.append(len(text))
        hit = _first_stop(text, stop)
        if hit is not None:
            index, matched = hit
            cut = index + len(matched) if include_stop_str_in_output else index
            return Generation(_split(text[:cut], bounds), "stop", matched)
    pieces = _split(text, bounds)
    if len(tokens) < max_tokens:
        return Generation((*pieces, ""), "stop", None)
    return Generation(pieces, "length", None)


def _split(text: str, bounds: Sequence[int]) -> tuple[str, ...]:
    pieces: list[str] = []
    start = 0
    for end in bounds:
        clipped = min(end, len(text))
        pieces.append(text[min(start, clipped) : clipped])
        start = end
    return tuple(pieces)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function tool offered by the request."""

    name: str
    parameter: str


def tool_arguments(parameter: str, user_text: str) -> str:
    """The JSON arguments of a tool call: ``{parameter: whitespace-normalised user text}``."""
    return json.dumps({parameter: " ".join(user_text.split())}, ensure_ascii=False)


def choose_tool(
    tools: Sequence[ToolSpec], choice: str, named: str | None, user_text: str
) -> ToolSpec | None:
    """Which tool is called, if any.

    ``named`` (a named tool_choice) wins; otherwise the first tool whose name occurs in the
    last user message (case-insensitive) is called for ``auto`` and ``required``; ``required``
    falls back to the first tool; ``none`` never calls a tool.
    """
    if named is not None:
        return next((tool for tool in tools if tool.name == named), None)
    if choice == "none" or not tools:
        return None
    lowered = user_text.lower()
    mentioned = next((tool for tool in tools if tool.name.lower() in lowered), None)
    if mentioned is not None:
        return mentioned
    return tools[0] if choice == "required" else None


@dataclass(frozen=True, slots=True)
class ToolCallGeneration:
    """A generated tool call: the name token, argument pieces (one per token), the ending."""

    name: str
    argument_pieces: tuple[str, ...]
    finish_reason: FinishReason
    completion_tokens: int

    @property
    def arguments(self) -> str:
        return "".join(self.argument_pieces)


def generate_tool_call(
    tool: ToolSpec, user_text: str, *, max_tokens: int, named: bool
) -> ToolCallGeneration:
    """The call of ``tool``: one token for the name, one per argument piece, then EOS.

    ``finish_reason`` is ``stop`` for a named tool_choice and ``tool_calls`` otherwise (as
    vLLM reports them), or ``length`` when ``max_tokens`` cuts the arguments.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    pieces = tuple(_PIECE.findall(tool_arguments(tool.parameter, user_text)))
    budget = max_tokens - 1
    if len(pieces) > budget:
        return ToolCallGeneration(tool.name, pieces[:budget], "length", max_tokens)
    if len(pieces) == budget:
        return ToolCallGeneration(tool.name, pieces, "length", max_tokens)
    finish: FinishReason = "stop" if named else "tool_calls"
    return ToolCallGeneration(tool.name, pieces, finish, len(pieces) + 2)


def expected_embedding(text: str, dimensions: int = DEFAULT_EMBEDDING_DIMENSIONS) -> list[float]:
    """The unit-norm embedding of ``text`` with ``dimensions`` components."""
    if not 1 <= dimensions <= DEFAULT_EMBEDDING_DIMENSIONS:
        raise ValueError(f"dimensions must be in 1..{DEFAULT_EMBEDDING_DIMENSIONS}")
    raw = hashlib.shake_256(_EMBEDDING_LABEL + text.encode("utf-8")).digest(2 * dimensions)
    values = [int.from_bytes(raw[i : i + 2], "big", signed=True) for i in range(0, len(raw), 2)]
    norm = math.sqrt(sum(v * v for v in values))
    if norm == 0.0:
        return [1.0] + [0.0] * (dimensions - 1)
    return [v / norm for v in values]
