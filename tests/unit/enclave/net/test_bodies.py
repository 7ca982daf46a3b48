"""BodyGuard: a body is read whole, in time and within the budget, before the app runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
from starlette.types import Message, Receive, Scope, Send

from enclave.net import BodyBudget, BodyGuard, BodyLimits

LIMITS = BodyLimits(body_limit_bytes=100, timeout_seconds=0.2, budget_bytes=250)


def scope(length: int | None = None) -> Scope:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    return {"type": "http", "method": "POST", "path": "/x", "headers": headers}


class Peer:
    """The client side: body pieces (None = stall forever), and what came back."""

    def __init__(self, pieces: Sequence[bytes | None]) -> None:
        self.pieces = list(pieces)
        self.reads = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if not self.pieces:
            await asyncio.Event().wait()
        piece = self.pieces.pop(0)
        if piece is None:
            await asyncio.Event().wait()
        self.reads += 1
        return {"type": "http.request", "body": piece, "more_body": bool(self.pieces)}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def code(self) -> str:
        code: str = json.loads(self.sent[1]["body"])["error"]["code"]
        return code

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])


class App:
    def __init__(self, hold: asyncio.Event | None = None) -> None:
        self.bodies: list[bytes] = []
        self.calls = 0
        self.hold = hold

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        message = await receive()
        self.bodies.append(message["body"])
        assert message["more_body"] is False
        if self.hold is not None:
            await self.hold.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def test_the_app_gets_the_whole_body_as_one_message() -> None:
    app = App()
    peer = Peer([b"ab", b"cd", b"e"])
    await asyncio.wait_for(BodyGuard(app, LIMITS)(scope(5), peer.receive, peer.send), 5)
    assert app.bodies == [b"abcde"]
    assert peer.status == 200


async def test_a_body_that_does_not_arrive_in_time_is_408_and_the_app_never_runs() -> None:
    app = App()
    peer = Peer([b"ab", None])
    guard = BodyGuard(app, LIMITS)
    await asyncio.wait_for(guard(scope(5), peer.receive, peer.send), 5)
    assert (peer.status, peer.code) == (408, "body_timeout")
    assert peer.headers[b"connection"] == b"close"
    assert app.calls == 0
    assert guard.budget.used == 0


async def test_a_declared_length_over_the_limit_is_413_without_reading() -> None:
    app = App()
    peer = Peer([b"x" * 101])
    await asyncio.wait_for(BodyGuard(app, LIMITS)(scope(101), peer.receive, peer.send), 5)
    assert (peer.status, peer.code) == (413, "body_too_large")
    assert peer.reads == 0
    assert app.calls == 0


@pytest.mark.parametrize("declared", [None, 60], ids=["chunked", "declared"])
async def test_a_body_growing_over_the_limit_is_413(declared: int | None) -> None:
    app = App()
    peer = Peer([b"x" * 60, b"y" * 60])
    guard = BodyGuard(app, LIMITS)
    await asyncio.wait_for(guard(scope(declared), peer.receive, peer.send), 5)
    assert (peer.status, peer.code) == (413, "body_too_large")
    assert app.calls == 0
    assert guard.budget.used == 0


async def test_a_body_that_does_not_fit_the_budget_is_503_without_reading() -> None:
    hold = asyncio.Event()
    guard = BodyGuard(App(hold), LIMITS)
    holders = [Peer([b"x" * 100]) for _ in range(2)]
    tasks = [asyncio.create_task(guard(scope(100), p.receive, p.send)) for p in holders]
    await asyncio.sleep(0.05)
    assert guard.budget.used == 200  # held while their requests run
    late = Peer([b"z" * 60])
    await asyncio.wait_for(guard(scope(60), late.receive, late.send), 5)
    assert (late.status, late.code) == (503, "overloaded")
    assert late.headers[b"retry-after"] == b"1"
    assert b"connection" not in late.headers  # the rest of its body is drained, see connections
    assert late.reads == 0
    hold.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert guard.budget.used == 0
    after = Peer([b"z" * 60])
    await asyncio.wait_for(guard(scope(60), after.receive, after.send), 5)
    assert after.status == 200


async def test_undeclared_bodies_together_stay_within_the_budget() -> None:
    hold = asyncio.Event()
    guard = BodyGuard(App(hold), LIMITS)
    stalled = [Peer([b"x" * 90, None]) for _ in range(2)]
    tasks = [asyncio.create_task(guard(scope(), p.receive, p.send)) for p in stalled]
    await asyncio.sleep(0.05)
    assert guard.budget.used == 180
    third = Peer([b"y" * 40, b"y" * 40])
    await asyncio.wait_for(guard(scope(), third.receive, third.send), 5)
    assert (third.status, third.code) == (503, "overloaded")
    assert guard.budget.used == 180
    await asyncio.wait_for(asyncio.gather(*tasks), 5)  # both time out
    assert [p.status for p in stalled] == [408, 408]
    assert guard.budget.used == 0


async def test_a_client_gone_mid_body_gets_nothing_and_frees_its_share() -> None:
    messages: list[Message] = [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    app = App()
    guard = BodyGuard(app, LIMITS)
    await asyncio.wait_for(guard(scope(10), receive, send), 5)
    assert sent == []
    assert app.calls == 0
    assert guard.budget.used == 0


async def test_after_the_body_the_app_receives_the_connection_messages() -> None:
    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())
        seen.append(await receive())

    messages: list[Message] = [
        {"type": "http.request", "body": b"abc", "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        return None

    await asyncio.wait_for(BodyGuard(app, LIMITS)(scope(3), receive, send), 5)
    assert [m["type"] for m in seen] == ["http.request", "http.disconnect"]


def test_limits_refuse_a_budget_below_the_body_limit() -> None:
    with pytest.raises(ValueError, match="budget"):
        BodyLimits(body_limit_bytes=100, timeout_seconds=1, budget_bytes=99)
    with pytest.raises(RuntimeError):
        BodyBudget(10).give_back(1)
