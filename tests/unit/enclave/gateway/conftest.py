"""A small inner app and an outer ASGI driver for the gateway tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from enclave.gateway import GatewayLimits, OhttpGateway, gateway_routes
from enclave.protocol import bhttp
from enclave.protocol.chunked import ChunkedRequestEncoder, ChunkedResponseDecoder
from enclave.protocol.ohttp import (
    ClientRequestContext,
    KeyConfig,
    KeyStore,
    encapsulate_request,
    generate_default_key_configs,
)

CANARY = "canary-7c1e0f3b-prompt"


@dataclass
class InnerState:
    produced: int = 0
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    seen_client: object = "unset"
    seen_authorization: bytes | None = None


def build_inner_app(state: InnerState) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        state.seen_client = request.scope.get("client")
        state.seen_authorization = request.headers.get("authorization", "").encode() or None
        count = int(body.get("events", 3))
        mode = body.get("mode", "ok")

        async def events() -> AsyncIterator[bytes]:
            try:
                for index in range(count):
                    if mode == "fail" and index == 2:
                        raise RuntimeError(f"engine exploded near {CANARY}")
                    state.produced += 1
                    event = {"index": index, "echo": body.get("prompt", "")}
                    yield b"data: " + json.dumps(event).encode() + b"\n\n"
                    await asyncio.sleep(0)
                yield b"data: [DONE]\n\n"
            except asyncio.CancelledError:
                state.cancelled.set()
                raise

        if body.get("stream", True):
            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse({"echo": body.get("prompt", ""), "n": count})

    async def plain_fail(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"part one;"
            raise RuntimeError("broken")

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    async def crash(request: Request) -> Response:
        raise RuntimeError(f"crash before start {CANARY}")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": []})

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", plain_fail, methods=["POST"]),
        Route("/v1/embeddings", crash, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/internal/secret", models, methods=["GET"]),
    ]
    return Starlette(routes=routes)


class Recorder:
    """Counts what the gateway reports."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.chunks = 0
        self.served: list[bool] = []

    def failure(self, reason: str) -> None:
        self.failures.append(reason)

    def chunk_sealed(self) -> None:
        self.chunks += 1

    def request_served(self, chunked: bool) -> None:
        self.served.append(chunked)


@dataclass
class Setup:
    store: KeyStore
    gateway: OhttpGateway
    app: Starlette
    state: InnerState
    recorder: Recorder

    @property
    def xwing(self) -> KeyConfig:
        return self.store.active_configs[0]

    @property
    def x25519(self) -> KeyConfig:
        return self.store.active_configs[1]


def make_setup(**limits: Any) -> Setup:
    store = KeyStore(generate_default_key_configs())
    recorder = Recorder()
    gateway = OhttpGateway(store, limits=GatewayLimits(**limits), observer=recorder)
    state = InnerState()
    inner = build_inner_app(state)
    outer = Starlette(routes=[*gateway_routes(gateway), *inner.routes])
    gateway.set_app(outer)
    return Setup(store, gateway, outer, state, recorder)


@pytest.fixture
def setup() -> Setup:
    return make_setup()


def inner_request(
    path: str = "/v1/chat/completions",
    payload: dict[str, Any] | None = None,
    *,
    method: bytes = b"POST",
    date: float | None = None,
    extra_headers: tuple[tuple[bytes, bytes], ...] = (),
) -> bhttp.Request:
    headers: tuple[tuple[bytes, bytes], ...] = ((b"content-type", b"application/json"),)
    if date is not None:
        headers += ((b"date", formatdate(date, usegmt=True).encode()),)
    return bhttp.Request(
        method,
        b"https",
        b"enclave.test",
        path.encode(),
        headers=headers + extra_headers,
        content=json.dumps(payload or {}).encode() if method == b"POST" else b"",
    )


def chunked_body(config: KeyConfig, request: bhttp.Request) -> tuple[bytes, ChunkedResponseDecoder]:
    encoder = ChunkedRequestEncoder(config)
    encoded = bhttp.encode_request(request, indeterminate=True)
    body = (
        encoder.header
        + encoder.seal_chunk(encoded[:40])
        + encoder.seal_chunk(encoded[40:], final=True)
    )
    return body, encoder.response_decoder()


def whole_body(config: KeyConfig, request: bhttp.Request) -> tuple[bytes, ClientRequestContext]:
    return encapsulate_request(config, bhttp.encode_request(request))


@dataclass
class Outer:
    status: int
    headers: dict[bytes, bytes]
    bodies: list[bytes]

    @property
    def body(self) -> bytes:
        return b"".join(self.bodies)


async def call(
    app: Starlette,
    body: bytes,
    *,
    content_type: bytes = b"message/ohttp-chunked-req",
    method: str = "POST",
    path: str = "/.well-known/ohttp-gateway",
    headers: tuple[tuple[bytes, bytes], ...] = (),
    pieces: int = 1,
    disconnect_after_bodies: int | None = None,
    send_gate: asyncio.Event | None = None,
    gate_after_bodies: int = 0,
) -> Outer:
    """Drive the ASGI app as a server would; optionally disconnect after N body messages, or
    hold every send after the first ``gate_after_bodies`` body messages until ``send_gate``
    is set (as a client that stops reading makes the server's ``send`` wait)."""
    step = max(1, -(-len(body) // pieces))
    parts = [body[at : at + step] for at in range(0, len(body), step)] or [b""]
    incoming = [
        {"type": "http.request", "body": part, "more_body": index < len(parts) - 1}
        for index, part in enumerate(parts)
    ]
    disconnect = asyncio.Event()
    out = Outer(0, {}, [])

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        gated = message["type"] == "http.response.body" and len(out.bodies) >= gate_after_bodies
        if send_gate is not None and gated:
            await send_gate.wait()
        if message["type"] == "http.response.start":
            out.status = message["status"]
            out.headers = dict(message["headers"])
        elif message["type"] == "http.response.body":
            out.bodies.append(message.get("body", b""))
            if disconnect_after_bodies is not None and len(out.bodies) >= disconnect_after_bodies:
                disconnect.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", content_type), *headers],
        "client": ("203.0.113.9", 40000),
        "server": ("127.0.0.1", 8443),
    }
    await app(scope, receive, send)
    return out


def now() -> float:
    return time.time()
