"""Why an engine failed to start, in one short line taken from its own output: safely.

The rule (docs/model-lifecycle.md, "Why an engine failed"):

1. **When.** Only output an engine process printed *before it first answered* ``/health``
   with 200 is ever considered. Until then no request can have reached it (the service routes
   requests only to a ready engine, and the engine runs with request logging off), so that
   output holds no request content. Once an engine has been healthy, none of its output is
   shown anywhere, ever: a crash after that is reported by exit code or signal alone.
2. **What.** Only lines that are vLLM's own failure reports qualify: a vLLM log line at level
   ``ERROR`` or ``CRITICAL`` (``(EngineCore pid=9) ERROR 12-03 10:21:34 [core.py:708] ...``),
   a Python exception line (``ValueError: ...``, also inside such a log line), or pydantic's
   ``  Value error, ...`` detail line. Traceback bodies (indented: ``File ...`` lines, source
   lines), warnings and everything else never qualify.
3. **Which.** The last qualifying exception line that is not one of vLLM's generic wrappers
   ("Engine core initialization failed. See root cause above", ...); else the last
   qualifying line.
4. **How much.** ANSI escapes and control characters removed, absolute paths replaced by
   ``<path>``, cut to :data:`REASON_MAX_CHARS` characters.

The result goes into the status document's ``error.message`` and the service log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["REASON_MAX_CHARS", "failure_reason"]

#: The longest engine failure reason shown, in characters.
REASON_MAX_CHARS = 300

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# "(EngineCore pid=9) ERROR 12-03 10:21:34 [core.py:708] message" (the prefix is optional).
_VLLM_LINE = re.compile(
    r"^(?:\(\w+(?:-\d+)? pid=\d+\)\s+)?"
    r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) \d\d-\d\d \d\d:\d\d:\d\d \[[\w./-]+:\d+\] ?(.*)$"
)
_PROC_PREFIX = re.compile(r"^\(\w+(?:-\d+)? pid=\d+\)\s+")
_EXCEPTION = re.compile(
    r"^((?:[A-Za-z_][\w.]*)?(?:Error|Exception|Exit|Interrupt|Failure)): (\S.*)$",
)
_VALUE_ERROR = re.compile(r"^\s+(?:Value|Assertion) error, (\S.*)$")
_GENERIC = re.compile(
    r"Engine core initialization failed|EngineCore failed to start|"
    r"See root cause above|See stack trace for root cause|validation errors? for \w+$|"
    r"^Traceback"
)
_PATH = re.compile(r"(?<![\w.:/<])/(?:[^\s'\",;:()\[\]{}]+)")


def _clean(text: str) -> str:
    text = _CONTROL.sub("", _ANSI.sub("", text)).strip()
    text = _PATH.sub("<path>", text)
    if len(text) > REASON_MAX_CHARS:
        text = text[: REASON_MAX_CHARS - 3].rstrip() + "..."
    return text


def _classify(line: str) -> tuple[str, str] | None:
    """``("exception" | "error", text)`` for a qualifying line, else None."""
    line = _ANSI.sub("", line)
    value_error = _VALUE_ERROR.match(line)
    if value_error is not None:
        return "exception", value_error.group(1)
    level = None
    vllm = _VLLM_LINE.match(line)
    if vllm is not None:
        level, line = vllm.group(1), vllm.group(2)
    else:
        line = _PROC_PREFIX.sub("", line)
    exception = _EXCEPTION.match(line.strip())
    if exception is not None:
        return "exception", f"{exception.group(1).rsplit('.', 1)[-1]}: {exception.group(2)}"
    if level in ("ERROR", "CRITICAL") and line.strip() and not line[0].isspace():
        return "error", line  # a traceback's body is indented: never a reason
    return None


def failure_reason(lines: Iterable[str]) -> str | None:
    """The reason an engine gave for failing, from output printed before it was healthy."""
    best: dict[str, str] = {}
    generic: str | None = None
    for line in lines:
        found = _classify(line)
        if found is None:
            continue
        kind, text = found
        if _GENERIC.search(text.strip()):
            generic = text
            continue
        best[kind] = text
    chosen = best.get("exception") or best.get("error") or generic
    if chosen is None:
        return None
    cleaned = _clean(chosen)
    return cleaned or None
