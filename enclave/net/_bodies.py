"""Request bodies are read whole, within a deadline and a shared memory budget, before any
part of the service sees the request.

:class:`BodyGuard` is the outermost ASGI layer of the served app. For every HTTP request:

1. a ``Content-Length`` that is not ``1*DIGIT`` (:mod:`enclave.protocol.bodies`) is refused
   with 400 ``invalid_content_length`` (and the connection closed: its framing is unknown); a
   declared one over the per-request limit is refused at once (413 ``body_too_large``), and
   one that does not fit the budget left (503 ``overloaded``), both without reading a byte
   of the body;
2. the body is read to its end, each piece taken from the budget as it arrives; the whole body
   must arrive within ``timeout_seconds`` (else 408 ``body_timeout``), stay under the
   per-request limit (413) and fit the budget (503);
3. only then is the app called, with the whole body as one message, so a stream slot, a
   gateway in-flight count or an engine request is taken only for work that is ready to run.
   The body's share of the budget is returned when the app returns (the app holds the body,
   or copies of it, until then).

A 408 closes the connection (``Connection: close``): a body that did not arrive costs nothing
afterwards. A 413 or 503 leaves it open so that a client still sending can read the answer;
the connection layer (``enclave.net``'s protocol) discards the rest of that body and closes
the connection if it has not ended within the body timeout. A client that disconnects while
sending gets no answer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enclave.protocol.bodies import (
    BodyIncompleteError,
    BodyTooLargeError,
    InvalidContentLengthError,
    content_length,
    read_body,
)
from enclave.routes._errors import error_response

__all__ = ["BodyBudget", "BodyGuard", "BodyLimits"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """The per-request limit, the whole-body deadline and the budget of all bodies in flight."""

    body_limit_bytes: int
    timeout_seconds: float
    budget_bytes: int

    def __post_init__(self) -> None:
        if self.body_limit_bytes < 1 or self.timeout_seconds <= 0:
            raise ValueError("the body limit and timeout must be positive")
        if self.budget_bytes < self.body_limit_bytes:
            raise ValueError("the budget may not be below the per-request body limit")


class BodyBudget:
    """Bytes of request bodies held at once, across all requests."""

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("the budget must be positive")
        self._total = total
        self._used = 0

    @property
    def total(self) -> int:
        return self._total

    @property
    def used(self) -> int:
        return self._used

    def fits(self, size: int) -> bool:
        return self._used + size <= self._total

    def try_take(self, size: int) -> bool:
        if not self.fits(size):
            return False
        self._used += size
        return True

    def give_back(self, size: int) -> None:
        if size > self._used:
            raise RuntimeError("more given back than taken")
        self._used -= size


class _RefusedError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class BodyGuard:
    """ASGI middleware: the whole body, in time and within the budget, before ``app`` runs."""

    def __init__(self, app: ASGIApp, limits: BodyLimits, budget: BodyBudget | None = None) -> None:
        self.app = app
        self.limits = limits
        self.budget = budget or BodyBudget(limits.budget_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        taken = 0

        def take(size: int) -> None:  # read_body has checked the per-request limit
            nonlocal taken
            if not self.budget.try_take(size):
                raise _RefusedError("overloaded")
            taken += size

        try:
            try:
                declared = self._check_declared(scope)
                async with asyncio.timeout(self.limits.timeout_seconds):
                    body = await read_body(
                        receive, self.limits.body_limit_bytes, declared=declared, take=take
                    )
            except TimeoutError:
                await _refuse(scope, send, "body_timeout")
                return
            except _RefusedError as refused:
                await _refuse(scope, send, refused.code)
                return
            except BodyTooLargeError:
                await _refuse(scope, send, "body_too_large")
                return
            except InvalidContentLengthError:
                await _refuse(scope, send, "invalid_content_length")
                return
            except BodyIncompleteError:
                return
            replayed = _replay(body, receive)
            del body  # the app holds it from here, and only as long as it needs it
            await self.app(scope, replayed, send)
        finally:
            self.budget.give_back(taken)

    def _check_declared(self, scope: Scope) -> int | None:
        declared = content_length(scope["headers"])
        if declared is None:
            return None
        if declared > self.limits.body_limit_bytes:
            raise BodyTooLargeError
        if not self.budget.fits(declared):
            raise _RefusedError("overloaded")
        return declared


def _replay(body: bytes, receive: Receive) -> Receive:
    """The app's ``receive``: the whole body once, then the connection's own messages (so a
    disconnect still reaches a streaming response)."""
    held: list[bytes] = [body]

    async def replayed() -> Message:
        if held:
            return {"type": "http.request", "body": held.pop(), "more_body": False}
        return await receive()

    return replayed


async def _refuse(scope: Scope, send: Send, code: str) -> None:
    logger.info("request refused before its body: %s", code)
    headers: dict[str, str] = {}
    if code in ("body_timeout", "invalid_content_length"):
        headers["Connection"] = "close"
    if code == "overloaded":
        headers["Retry-After"] = "1"
    response = error_response(code, headers=headers)

    async def nothing() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, nothing, send)
