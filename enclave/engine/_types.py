"""The seam between the relay and the engine hop's client (tests put a scripted engine here)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

__all__ = ["EngineClientProtocol", "EngineResponseProtocol"]


class EngineResponseProtocol(Protocol):
    """A response whose head has arrived."""

    @property
    def status(self) -> int: ...

    def header(self, name: str) -> str | None:
        """A response header by its lower-case name."""
        ...

    async def read(self, timeout: float | None = None) -> bytes:
        """Every body byte received so far, at least one, waiting up to ``timeout`` (``None``:
        the client's read timeout); ``b""`` at the end. Raises ``EngineTimeoutError`` when
        nothing came in time, ``EngineError`` when the response failed."""
        ...

    async def aclose(self) -> None: ...


class EngineClientProtocol(Protocol):
    async def post(
        self, path: str, body: bytes, headers: Iterable[tuple[str, str]]
    ) -> EngineResponseProtocol: ...

    async def aclose(self) -> None: ...
