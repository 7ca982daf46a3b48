"""Fault switches of the development engine, set by flags and changed at run time.

Chunk counts count the ``data:`` events of one streamed response, ``[DONE]`` included: with
``crash_after_chunks=N`` the client receives exactly N events, then the process exits; the
same N applies to ``stall_after_chunks`` (the stream goes silent, the connection stays open)
and ``error_after_chunks`` (an in-stream error event and ``[DONE]`` follow instead), and to
``hold_after_chunks`` (the stream waits, connection open, until the switch is changed: a test
can then act while a stream is provably open, and release it). A stream with N events or
fewer is not affected.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from model_manager.errors import ModelManagerError

__all__ = ["FaultSwitch", "FaultUpdateError", "Faults"]

_COUNTS = ("crash_after_chunks", "stall_after_chunks", "error_after_chunks", "hold_after_chunks")


class FaultUpdateError(ModelManagerError):
    """A fault update document is invalid (the message is safe to return to the caller)."""


@dataclass(frozen=True, slots=True)
class Faults:
    """The current switches (``None`` means off) and the generation pace."""

    crash_after_chunks: int | None = None
    stall_after_chunks: int | None = None
    error_after_chunks: int | None = None
    hold_after_chunks: int | None = None
    hang_health: bool = False
    tokens_per_second: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "crash_after_chunks": self.crash_after_chunks,
            "stall_after_chunks": self.stall_after_chunks,
            "error_after_chunks": self.error_after_chunks,
            "hold_after_chunks": self.hold_after_chunks,
            "hang_health": self.hang_health,
            "tokens_per_second": self.tokens_per_second,
        }

    def updated(self, changes: Mapping[str, object]) -> Faults:
        """A copy with ``changes`` applied; unknown keys or bad values raise."""
        values: dict[str, object] = {}
        for key, value in changes.items():
            if key in _COUNTS:
                values[key] = _count(key, value)
            elif key == "hang_health":
                if not isinstance(value, bool):
                    raise FaultUpdateError("hang_health must be true or false")
                values[key] = value
            elif key == "tokens_per_second":
                values[key] = _pace(value)
            else:
                raise FaultUpdateError(f"unknown fault {key!r}; known: {', '.join(_known())}")
        return replace(self, **values)  # type: ignore[arg-type]


def _known() -> tuple[str, ...]:
    return (*_COUNTS, "hang_health", "tokens_per_second")


def _count(key: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FaultUpdateError(f"{key} must be a non-negative integer or null")
    return value


def _pace(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultUpdateError("tokens_per_second must be a number >= 0")
    pace = float(value)
    if not math.isfinite(pace) or pace < 0:
        raise FaultUpdateError("tokens_per_second must be a number >= 0")
    return pace


class FaultSwitch:
    """The live switches of one engine process (read on every event, so changes apply at once)."""

    def __init__(self, initial: Faults) -> None:
        self._faults = initial
        self._changed = asyncio.Event()

    @property
    def current(self) -> Faults:
        return self._faults

    def apply(self, changes: Mapping[str, object]) -> Faults:
        self._faults = self._faults.updated(changes)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return self._faults

    async def changed(self) -> None:
        """Return at the next :meth:`apply`."""
        await self._changed.wait()
