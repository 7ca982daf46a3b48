"""The connection layer's parts: peer keys, the table, and the protocol's deadlines (which
deadline is armed, and for how long, at each point of a connection's life)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from enclave.net import ConnectionLimits, ConnectionTable, peer_key
from enclave.net._connections import GuardedHttpProtocol

LIMITS = ConnectionLimits(
    max_connections=3,
    max_per_address=2,
    reserved_for_light_peers=0,
    handshake_timeout_seconds=1.0,
    header_timeout_seconds=7.0,
    keep_alive_timeout_seconds=11.0,
    body_timeout_seconds=13.0,
)
REQUEST = b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\n\r\n"


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_peers_are_counted_by_ipv4_address_or_ipv6_64(host: str, key: str) -> None:
    assert peer_key(host) == key


def test_the_table_caps_per_address_and_overall_and_frees_on_release() -> None:
    table = ConnectionTable(LIMITS)
    assert table.admit("a") is None
    assert table.admit("a") is None
    assert table.admit("a") == "max_connections_per_address"
    assert table.admit("b") is None
    assert table.admit("c") == "max_connections"
    table.release("a")
    assert table.admit("c") is None
    assert table.open == 3
    with pytest.raises(RuntimeError):
        table.release("nobody")


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False
        self.aborted = False
        self.written = bytearray()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.7", 5555), "sockname": ("192.0.2.1", 443)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def write(self, data: Any) -> None:
        self.written += data

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


async def answer_at_once(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 413, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def protocol(closed: list[int]) -> tuple[GuardedHttpProtocol, FakeTransport]:
    config = uvicorn.Config(answer_at_once, http="httptools", lifespan="off", log_config=None)
    config.load()
    loop = asyncio.get_running_loop()
    proto = GuardedHttpProtocol(
        config, ServerState(), {}, limits=LIMITS, on_close=lambda: closed.append(1), _loop=loop
    )
    transport = FakeTransport()
    proto.connection_made(transport)
    return proto, transport


def armed_for(handle: asyncio.TimerHandle | None) -> float:
    assert handle is not None
    return handle.when() - asyncio.get_running_loop().time()


async def test_a_new_connection_has_the_header_deadline() -> None:
    proto, _ = protocol([])
    assert armed_for(proto._deadline) == pytest.approx(7.0, abs=0.5)


async def test_the_deadline_ends_with_the_head_and_idle_time_is_the_keep_alive_setting() -> None:
    proto, _ = protocol([])
    proto.data_received(REQUEST + b"abcd")
    assert proto._deadline is None
    await asyncio.sleep(0.05)  # the app answers
    assert armed_for(proto.timeout_keep_alive_task) == pytest.approx(11.0, abs=0.5)


async def test_a_body_answered_early_must_end_within_the_body_timeout() -> None:
    proto, transport = protocol([])
    proto.data_received(REQUEST + b"ab")  # the app answers before the body has ended
    await asyncio.sleep(0.05)
    assert armed_for(proto._deadline) == pytest.approx(13.0, abs=0.5)
    proto.data_received(b"cd")  # the body ended: idle now, and bounded (uvicorn's own idle
    assert armed_for(proto._deadline) == pytest.approx(7.0, abs=0.5)  # timer went on a byte)
    assert not transport.closing


async def test_an_expired_deadline_aborts_and_the_end_is_reported_once() -> None:
    closed: list[int] = []
    proto, transport = protocol(closed)
    assert proto._deadline is not None
    proto._deadline._run()  # what the loop does when it is due
    assert transport.aborted
    proto.connection_lost(None)
    assert closed == [1]


@pytest.mark.parametrize(
    ("head", "code"),
    [
        (b"content-length: -1\r\n", "invalid_content_length"),
        (b"content-length: +5\r\n", "invalid_content_length"),
        (b"content-length: 5,5\r\n", "invalid_content_length"),
        (b"content-length: 5, 6\r\n", "invalid_content_length"),
        (b"content-length: 99999999999999999999\r\n", "invalid_content_length"),
        (b"content-length: 5\r\ncontent-length: 5\r\n", "invalid_content_length"),
        (b"bad header line\r\n", "malformed_request"),
    ],
)
async def test_a_request_the_parser_refuses_gets_the_typed_400(head: bytes, code: str) -> None:
    """On the wire llhttp refuses these before any app; the answer is the API's error shape
    (the same code as every ASGI path gives, enclave.protocol.bodies), never the parser's text,
    and the connection is closed."""
    proto, transport = protocol([])
    proto.data_received(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n" + head + b"\r\nhello")
    answer = bytes(transport.written)
    status, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert status == b"HTTP/1.1 400 Bad Request"
    assert b"content-type: application/json" in headers
    assert b"connection: close" in headers
    assert json.loads(body)["error"]["code"] == code
    assert b"Invalid" not in body
    assert transport.closing
