"""Log lines in vLLM's formats, written to stderr.

As vLLM 0.32 prints them (tests/vectors/vllm/load-cpu.log): its own lines look like
``(APIServer pid=7) INFO 12-03 10:20:34 [entry.py:140] ...`` (``EngineCore`` and ``Worker``
for the other processes); uvicorn's are bare, ``INFO:     Application startup complete.``;
tqdm bars are bare. The ``[file:line]`` tags name the vLLM 0.32 module that prints the line.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TextIO

__all__ = [
    "ACCESS_LOGGER_NAME",
    "ENGINE_CORE",
    "LOGGER_NAME",
    "RAW_LOGGER_NAME",
    "WORKER",
    "configure_logging",
    "progress_line",
    "vlog",
]

LOGGER_NAME = "enclave_dev.engine"
RAW_LOGGER_NAME = "enclave_dev.engine.raw"
ACCESS_LOGGER_NAME = "enclave_dev.engine.access"
API_SERVER = "APIServer"
ENGINE_CORE = "EngineCore"
WORKER = "Worker"
_DATE_FORMAT = "%m-%d %H:%M:%S"


class _VllmFormatter(logging.Formatter):
    """vLLM's ``%(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d] %(message)s`` + prefix."""

    def format(self, record: logging.LogRecord) -> str:
        proc = getattr(record, "vllm_proc", API_SERVER)
        pid = getattr(record, "vllm_pid", None) or os.getpid()
        source = getattr(record, "vllm_src", None) or f"{record.filename}:{record.lineno}"
        stamp = time.strftime(_DATE_FORMAT, time.localtime(record.created))
        head = f"({proc} pid={pid}) {record.levelname} {stamp} [{source}] "
        return "\n".join(head + line for line in record.getMessage().split("\n"))


class _UvicornFormatter(logging.Formatter):
    """uvicorn's ``%(levelprefix)s %(message)s`` (vLLM 0.32 leaves these lines bare)."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = (record.levelname + ":").ljust(9)
        return f"{prefix} {record.getMessage()}"


def _handler(stream: TextIO, formatter: logging.Formatter) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    return handler


def configure_logging(stream: TextIO | None = None) -> None:
    """Route the engine's, the progress bars' and uvicorn's records to ``stream`` (stderr)."""
    out = stream if stream is not None else sys.stderr
    plan: tuple[tuple[str, logging.Formatter], ...] = (
        (LOGGER_NAME, _VllmFormatter()),
        (RAW_LOGGER_NAME, logging.Formatter("%(message)s")),
        ("uvicorn.error", _UvicornFormatter()),
        (ACCESS_LOGGER_NAME, _UvicornFormatter()),
    )
    for name, formatter in plan:
        target = logging.getLogger(name)
        target.handlers[:] = [_handler(out, formatter)]
        target.setLevel(logging.INFO)
        target.propagate = False
    logging.getLogger("uvicorn.access").disabled = True


def vlog(
    logger: logging.Logger,
    level: int,
    source: str,
    message: str,
    *args: object,
    proc: str = API_SERVER,
    pid: int | None = None,
) -> None:
    """Log ``message % args`` tagged as vLLM's ``source`` (``file.py:line``) in ``proc``."""
    extra = {"vllm_src": source, "vllm_proc": proc, "vllm_pid": pid}
    logger.log(level, message, *args, extra=extra)


def _interval(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def progress_line(desc: str, done: int, total: int, elapsed: float) -> str:
    """A tqdm line in vLLM's bar format: ``desc:  50% Completed | 2/4 [00:01<00:01,  1.98it/s]``."""
    if total < 1 or not 0 <= done <= total:
        raise ValueError("progress needs 0 <= done <= total and total >= 1")
    percent = f"{100 * done / total:3.0f}%"
    if done == 0 or elapsed <= 0:
        remaining, rate_text = "?", "?it/s"
    else:
        rate = done / elapsed
        remaining = _interval((total - done) / rate)
        rate_text = f"{rate:5.2f}it/s" if rate >= 1 else f"{1 / rate:5.2f}s/it"
    timing = f"[{_interval(elapsed)}<{remaining}, {rate_text}]"
    return f"{desc}: {percent} Completed | {done}/{total} {timing}"
