"""Load progress from vLLM's log lines, as a monotonically non-decreasing 0.0..1.0.

vLLM prints (format ``%(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d] %(message)s``, each
line prefixed by its process: ``(APIServer pid=N)``, ``(EngineCore pid=N)``, ``(Worker pid=N)``;
``EngineCore_DP0`` before 0.2x). The milestones, in the order vLLM 0.32 prints them (both the CPU
and the GPU model runner; docs/model-lifecycle.md has a whole recorded CPU log, and
tests/vectors/vllm/load-cpu.log is it):

====================================================================  ======================
line (the part matched)                                               progress once seen
====================================================================  ======================
``non-default args: {...}`` (API server parsed its arguments)         0.02
``Resolved architecture: LlamaForCausalLM`` (model config read)       0.04
``Initializing a V1 LLM engine (v0.32.0) with config: ...``           0.06
``Starting to load model /models/x...`` (worker)                      0.10 (shards start)
``Loading safetensors checkpoint shards:  50% Completed | 1/2 [...]``  0.10 .. 0.70 by shard
``Loading weights took 0.02 seconds``                                 0.70 (shards done)
``Model loading took 14.99 GiB memory and 2.3 seconds`` (GPU only)     0.74
``Available KV cache memory: 60.1 GiB`` (GPU) /
``CPU KV cache size: 1,048,576 tokens, ...`` (``GPU KV cache size``)  0.78
``Graph capturing finished in 12 secs, took 0.5 GiB`` (GPU, no eager)  0.86
``init engine (profile, create kv cache, warmup model) took 4.27 s``  0.90
``Starting vLLM server on unix:/run/...`` (``Starting vLLM API
server 0 on http://...`` before 0.2x)                                 0.95
``Application startup complete.`` (uvicorn)                           0.98
====================================================================  ======================

Older releases wrote ``Model loading took X GiB and Y seconds`` and ``init engine ... took
X seconds``; both spellings match. Shards may also be ``pt`` or ``np_cache`` checkpoint shards.
A line that matches nothing changes nothing; a milestone can only raise the value (a second
progress bar, a draft model's, never lowers it). ``/health`` answering 200 is 1.0, set by the
supervisor, never by a log line.
"""

from __future__ import annotations

import re

__all__ = ["ProgressParser"]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SHARDS = re.compile(
    r"Loading \w+ checkpoint shards:\s*(\d{1,3})% Completed \|\s*(\d+)/(\d+)",
)

#: Progress at the start of weight loading and when every shard is read.
SHARDS_START = 0.10
SHARDS_DONE = 0.70

# (pattern, progress once the line is seen); the first match counts.
_MILESTONES: tuple[tuple[re.Pattern[str], float], ...] = (
    (re.compile(r"\] non-default args: "), 0.02),
    (re.compile(r"\] Resolved architecture: "), 0.04),
    (re.compile(r"\] Initializing a V1 LLM engine \(v"), 0.06),
    (re.compile(r"Starting to load model |Loading model from scratch"), SHARDS_START),
    (re.compile(r"Loading weights took [\d.]+ seconds"), SHARDS_DONE),
    (re.compile(r"Model loading took [\d.]+ GiB"), 0.74),
    (re.compile(r"Available KV cache memory: |\] [A-Z]+ KV cache size: [\d,]+ tokens"), 0.78),
    (re.compile(r"Graph capturing finished in "), 0.86),
    (re.compile(r"init engine \(.*\) took [\d.]+ s"), 0.90),
    (re.compile(r"Starting vLLM (API )?server (\d+ )?on "), 0.95),
    (re.compile(r"Application startup complete"), 0.98),
)

#: The highest value a log line can produce: only a healthy /health makes it 1.0.
MAX_FROM_LOGS = 0.98


class ProgressParser:
    """Feed it log lines; :attr:`value` never decreases."""

    def __init__(self) -> None:
        self._value = 0.0

    @property
    def value(self) -> float:
        return self._value

    def feed(self, line: str) -> float:
        """Update from one log line and return the current value."""
        text = _ANSI.sub("", line)
        shard = _SHARDS.search(text)
        if shard is not None:
            done, total = int(shard.group(2)), int(shard.group(3))
            if total > 0 and 0 <= done <= total:
                span = SHARDS_DONE - SHARDS_START
                self._raise_to(SHARDS_START + span * done / total)
            return self._value
        for pattern, value in _MILESTONES:
            if pattern.search(text) is not None:
                self._raise_to(value)
                break
        return self._value

    def complete(self) -> None:
        """The engine reported healthy."""
        self._value = 1.0

    def _raise_to(self, value: float) -> None:
        self._value = max(self._value, min(value, MAX_FROM_LOGS))
