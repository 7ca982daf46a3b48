"""Process-wide logging setup for ``enclave serve``: text or one JSON object per line.

Both forms stamp each line with an RFC 3339 time in UTC with its zone
(``2026-12-03T10:40:00.123+00:00``). The JSON form has ``time``, ``level``, ``logger``,
``message`` and, when the line carries them, the structured fields of :data:`STRUCTURED_FIELDS`
(request id, route label, status, duration, bytes in and out, model, generation, reason code,
load time and digest); nothing else of a record is passed on, and an exception is reduced to
its type name (its text may quote input).
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Literal

__all__ = ["ACCESS_FIELDS", "STRUCTURED_FIELDS", "configure_logging", "log_time"]

#: Every field an access record (``enclave.routes._access``) may hold.
ACCESS_FIELDS: tuple[str, ...] = (
    "request_id",
    "method",
    "route",
    "status",
    "duration_ms",
    "bytes_in",
    "bytes_out",
    "model",
    "generation",
    "reason",
)
#: The ``extra`` fields a log line may carry into the JSON form: the access record's fields,
#: then those of the model lines.
STRUCTURED_FIELDS: tuple[str, ...] = (*ACCESS_FIELDS, "load_seconds", "digest_kind", "digest")


def log_time(created: float) -> str:
    """RFC 3339 in UTC with the zone, to the millisecond."""
    stamp = datetime.datetime.fromtimestamp(created, datetime.UTC)
    return stamp.isoformat(timespec="milliseconds")


class _TextFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return log_time(record.created)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": log_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in STRUCTURED_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__  # never the text: it may quote input
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: Literal["text", "json"]) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for chatty in ("httpx", "httpcore"):  # one line per engine request; the service logs its own
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
