"""Load progress from vLLM's log lines, as a monotonically non-decreasing 0.0..1.0.

vLLM prints (format ``%(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d] %(message)s``,
newer versions prefix ``(APIServer pid=N)`` or ``(EngineCore_DP0 pid=N)``):

- tqdm with ``bar_format="{desc}: {percentage:3.0f}% Completed | {n_fmt}/{total_fmt} [...]"``:
  ``Loading safetensors checkpoint shards:  50% Completed | 2/4 [00:01<00:01,  1.98it/s]``
  (also ``pt`` / ``np_cache`` checkpoint shards);
- ``Loading weights took 1.23 seconds``;
- ``Model loading took 14.99 GiB and 2.3 seconds`` (``... GiB memory and ...`` in newer ones);
- ``init engine (profile, create kv cache, warmup model) took 20.1 seconds``;
- ``Starting vLLM API server 0 on http://...``;
- ``Application startup complete.``

Milestones map to fixed points; shards fill the range between loading start and weights done.
``/health`` answering 200 is 1.0, set by the supervisor, never by a log line.
"""

from __future__ import annotations

import re

__all__ = ["ProgressParser"]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SHARDS = re.compile(
    r"Loading \w+ checkpoint shards:\s*(\d{1,3})% Completed \|\s*(\d+)/(\d+)",
)

#: Progress at the start of weight loading and when every shard is read.
SHARDS_START = 0.05
SHARDS_DONE = 0.80

# (pattern, progress once the line is seen), checked in order.
_MILESTONES: tuple[tuple[re.Pattern[str], float], ...] = (
    (re.compile(r"Starting to load model|Loading model from scratch"), SHARDS_START),
    (re.compile(r"Loading weights took [\d.]+ seconds"), SHARDS_DONE),
    (re.compile(r"Model loading took [\d.]+ GiB"), 0.85),
    (re.compile(r"init engine \(.*\) took [\d.]+ seconds"), 0.92),
    (re.compile(r"Starting vLLM API server"), 0.95),
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
