"""One ``Content-Length`` parser (RFC 9110 section 8.6: ``1*DIGIT``) and one body reader, on
every path a body takes: the body guard in front of the served app, the inference route behind
it, the OHTTP gateway's outer request, the gateway's inner request, and the local proxy. Each
refuses the same values with the typed 400 ``invalid_content_length``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enclave.client._proxy import build_proxy_app
from enclave.net import BodyGuard, BodyLimits
from enclave.protocol import bhttp
from enclave.protocol.bodies import (
    BodyIncompleteError,
    BodyTooLargeError,
    InvalidContentLengthError,
    content_length,
    read_body,
)
from tests.unit.enclave.gateway.conftest import (
    call,
    chunked_body,
    inner_request,
    make_setup,
    now,
    whole_body,
)

#: The brief's values and their relatives: sign, space, list, too many digits, non-ASCII digit.
INVALID: tuple[bytes, ...] = (
    b"-1",
    b"+5",
    b" 5",
    b"5 ",
    b"5,5",
    b"5, 6",
    b"99999999999999999999",
    b"",
    b"0x10",
    b"5_0",
    "\u00b2".encode("latin-1"),  # SUPERSCRIPT TWO: str.isdigit() says yes, int() says no
    "\u0665".encode(),  # ARABIC-INDIC DIGIT FIVE, in UTF-8
)
BODY = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}).encode()


def test_parser_takes_digits_only() -> None:
    assert content_length([]) is None
    assert content_length([(b"content-type", b"x")]) is None
    assert content_length([(b"content-length", b"0")]) == 0
    assert content_length([(b"Content-Length", b"0042")]) == 42
    assert content_length([(b"content-length", b"9" * 16)]) == 10**16 - 1
    # Given twice: the same value is one value; two values are none.
    assert content_length([(b"content-length", b"5"), (b"content-length", b"5")]) == 5
    with pytest.raises(InvalidContentLengthError):
        content_length([(b"content-length", b"5"), (b"content-length", b"6")])
    for value in (*INVALID, b"9" * 17):
        with pytest.raises(InvalidContentLengthError):
            content_length([(b"content-length", value)])


def _messages(*pieces: bytes) -> Receive:
    queue: list[Message] = [
        {"type": "http.request", "body": piece, "more_body": index < len(pieces) - 1}
        for index, piece in enumerate(pieces)
    ]

    async def receive() -> Message:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    return receive


async def test_reader_counts_limits_and_holds_the_declared_length() -> None:
    assert await read_body(_messages(b"ab", b"cd"), 4) == b"abcd"
    assert await read_body(_messages(b"abcd"), 4, declared=4) == b"abcd"
    with pytest.raises(BodyTooLargeError):
        await read_body(_messages(b"ab", b"cde"), 4)
    with pytest.raises(BodyTooLargeError):  # declared over the limit: refused before a read
        await read_body(_messages(), 4, declared=5)
    with pytest.raises(InvalidContentLengthError):  # more than declared
        await read_body(_messages(b"abc"), 10, declared=2)
    more: list[Message] = [{"type": "http.request", "body": b"abc", "more_body": True}]

    async def then_nothing() -> Message:
        return more.pop() if more else {"type": "http.disconnect"}

    with pytest.raises(InvalidContentLengthError):  # ... refused as soon as it passes it
        await read_body(then_nothing, 10, declared=2)
    with pytest.raises(InvalidContentLengthError):  # less than declared
        await read_body(_messages(b"a"), 10, declared=2)

    async def gone() -> Message:
        return {"type": "http.disconnect"}

    with pytest.raises(BodyIncompleteError):
        await read_body(gone, 4)


async def asgi_call(
    app: ASGIApp,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    path: str = "/v1/chat/completions",
) -> tuple[int, dict[bytes, bytes], bytes]:
    out: dict[str, Any] = {"body": b""}
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8080"), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            out["status"], out["headers"] = message["status"], dict(message["headers"])
        else:
            out["body"] += message.get("body", b"")

    send_: Send = send
    await app(scope, _messages(body), send_)
    return out["status"], out["headers"], out["body"]


def error_code(body: bytes) -> str:
    return str(json.loads(body)["error"]["code"])


def json_headers(value: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", value)]


@pytest.mark.parametrize("value", INVALID)
async def test_body_guard_refuses(value: bytes) -> None:
    reached: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(True)

    guard = BodyGuard(app, BodyLimits(1024, 5.0, 4096))
    status, headers, body = await asgi_call(guard, json_headers(value), BODY)
    assert (status, error_code(body)) == (400, "invalid_content_length")
    assert headers[b"connection"] == b"close"
    assert reached == []
    assert guard.budget.used == 0


async def test_body_guard_lets_a_valid_length_through() -> None:
    seen: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = BodyGuard(app, BodyLimits(1024, 5.0, 4096))
    status, _, _ = await asgi_call(guard, json_headers(str(len(BODY)).encode()), BODY)
    assert (status, seen) == (204, [BODY])


@pytest.mark.parametrize("value", [*INVALID, b"1"])  # "1": not the body's length
async def test_gateway_outer_request_refuses(value: bytes) -> None:
    setup = make_setup()
    body, _ = chunked_body(setup.xwing, inner_request(payload={"events": 1}, date=now()))
    out = await call(setup.app, body, headers=((b"content-length", value),))
    assert (out.status, error_code(out.body)) == (400, "invalid_content_length")
    assert b"retry-after" not in out.headers
    assert setup.recorder.failures == ["content_length"]


#: Binary HTTP carries no field value with surrounding whitespace (its decoder refuses one).
@pytest.mark.parametrize("value", [*(v for v in INVALID if v.strip() == v), b"1"])
async def test_gateway_inner_request_refuses(value: bytes) -> None:
    """A whole (RFC 9458) inner request whose Content-Length is not 1*DIGIT or not the
    length of its content: an encapsulated 400 from the gateway."""
    setup = make_setup()
    request = inner_request(
        payload={"stream": False}, date=now(), extra_headers=((b"content-length", value),)
    )
    body, context = whole_body(setup.xwing, request)
    out = await call(setup.app, body, content_type=b"message/ohttp-req")
    assert out.status == 200
    inner = bhttp.decode_response(context.decapsulate_response(out.body))
    assert (inner.status, error_code(inner.content)) == (400, "invalid_content_length")
    assert setup.recorder.failures == ["content_length"]  # the gateway's, not the inner app's


async def test_gateway_inner_request_with_its_own_length_passes() -> None:
    setup = make_setup()
    content = json.dumps({"stream": False}).encode()
    request = inner_request(
        payload={"stream": False},
        date=now(),
        extra_headers=((b"content-length", str(len(content)).encode()),),
    )
    body, context = whole_body(setup.xwing, request)
    out = await call(setup.app, body, content_type=b"message/ohttp-req")
    inner = bhttp.decode_response(context.decapsulate_response(out.body))
    assert inner.status == 200
    assert setup.recorder.failures == []


class _NoUpstream:
    """The proxy's transport: a refused body never reaches it."""

    url = "https://endpoint.invalid"

    async def handle_async_request(self, request: object) -> object:
        raise AssertionError("the proxy sent a request it should have refused")

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("value", INVALID)
async def test_proxy_refuses(value: bytes) -> None:
    openai = build_proxy_app(_NoUpstream())  # type: ignore[arg-type]
    status, _, body = await asgi_call(openai, json_headers(value), BODY)
    assert (status, error_code(body)) == (400, "invalid_content_length")
    anthropic = build_proxy_app(_NoUpstream(), compat="anthropic")  # type: ignore[arg-type]
    status, _, body = await asgi_call(anthropic, json_headers(value), BODY, path="/v1/messages")
    assert status == 400
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
