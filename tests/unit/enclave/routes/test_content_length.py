"""The inference route's own body reader refuses a bad ``Content-Length`` with the typed 400
(through the gateway the inner request reaches it without the body guard in front)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from tests.unit.enclave.protocol.test_bodies import INVALID, asgi_call, error_code, json_headers
from tests.unit.enclave.routes.conftest import MODEL, Harness

MakeHarness = Callable[..., Awaitable[Harness]]
BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()


async def test_inference_route_refuses(make_harness: MakeHarness) -> None:
    harness = await make_harness()
    await harness.load()
    for value in INVALID:
        status, _, body = await asgi_call(harness.app, json_headers(value), BODY)
        assert (value, status, error_code(body)) == (value, 400, "invalid_content_length")
    status, _, body = await asgi_call(harness.app, json_headers(b"3"), BODY)  # not its length
    assert (status, error_code(body)) == (400, "invalid_content_length")
    status, _, body = await asgi_call(harness.app, json_headers(str(len(BODY)).encode()), BODY)
    assert status == 200
    assert len(harness.engine.requests) == 1
