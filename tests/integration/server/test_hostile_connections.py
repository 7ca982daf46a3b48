"""Hostile clients at the connection level, against the real service (uvicorn, RA-TLS,
loopback): idle and half-open connections end at their deadlines, and connections are capped
overall and per peer address while other clients still get through (issue 12, point 2)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from enclave_dev.local import local_settings, serve_locally
from enclave_dev.tee import Simulator
from tests.integration.server._raw import RawClient
from tests.integration.server.conftest import TOKEN, Running

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

HANDSHAKE_TIMEOUT = 3.0
HEADER_TIMEOUT = 3.0
KEEP_ALIVE = 2.0
PER_ADDRESS = 4
MAX_CONNECTIONS = 10
CLOSED_WITHIN = 20.0  # a bound on the wait, far above every deadline above


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    tmp = tmp_path_factory.mktemp("hostile-connections")
    settings = local_settings(
        tmp,
        load_token=TOKEN,
        tls_handshake_timeout_seconds=HANDSHAKE_TIMEOUT,
        header_timeout_seconds=HEADER_TIMEOUT,
        keep_alive_timeout_seconds=KEEP_ALIVE,
        max_connections_per_address=PER_ADDRESS,
        max_connections=MAX_CONNECTIONS,
        body_timeout_seconds=120,
    )
    simulator = Simulator.create()
    async with serve_locally(settings, simulator=simulator) as server:
        assert server.bound_port is not None
        yield Running(server, simulator, server.bound_port, tmp)


async def health(port: int, source: str) -> int:
    transport = httpx.AsyncHTTPTransport(verify=False, local_address=source)
    async with httpx.AsyncClient(transport=transport, timeout=30) as client:
        return (await client.get(f"https://127.0.0.1:{port}/health")).status_code


async def refused(port: int, source: str) -> bool:
    """Whether a TLS connection from ``source`` is refused (closed before or in the
    handshake, or before any answer)."""
    try:
        client = await RawClient.open(port, source)
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, OSError):
        return True
    try:
        await client.send(b"GET /health HTTP/1.1\r\nhost: enclave\r\n\r\n")
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            status, _, _ = await client.response(timeout=10)
            return status != 200
        return True
    finally:
        await client.aclose()


async def holding(port: int, source: str) -> RawClient:
    """A connection kept busy in its request body (the body timeout here is long)."""
    client = await RawClient.open(port, source)
    await client.head("/v1/chat/completions", "application/json", 1000)
    await client.send(b" ")
    return client


async def test_a_connection_that_never_starts_tls_is_closed_at_the_handshake_deadline(
    running: Running,
):
    client = await RawClient.open(running.port, tls=False)
    try:
        assert await client.closed_by_server(timeout=CLOSED_WITHIN)
    finally:
        await client.aclose()


async def test_a_tls_connection_that_sends_nothing_is_closed_at_the_header_deadline(
    running: Running,
):
    client = await RawClient.open(running.port)
    try:
        assert await client.closed_by_server(timeout=CLOSED_WITHIN)
    finally:
        await client.aclose()


async def test_headers_sent_a_byte_at_a_time_are_cut_at_the_header_deadline(running: Running):
    client = await RawClient.open(running.port)
    head = b"GET /health HTTP/1.1\r\nhost: enclave\r\nx-pad: " + b"a" * 1000
    answer = asyncio.create_task(client.reader.read(65536))
    try:
        async with asyncio.timeout(CLOSED_WITHIN):
            for byte in head:  # 1000+ bytes at 10 per second: never done in time
                if answer.done():
                    break
                with contextlib.suppress(ConnectionError):
                    await client.send(bytes([byte]))
                await asyncio.wait({answer}, timeout=0.1)
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            assert await answer == b""  # closed, with no answer
        assert answer.done()
    finally:
        answer.cancel()
        await client.aclose()


async def test_an_idle_keep_alive_connection_is_closed(running: Running):
    client = await RawClient.open(running.port)
    try:
        await client.send(b"GET /health HTTP/1.1\r\nhost: enclave\r\n\r\n")
        assert (await client.response(timeout=10))[0] == 200
        await client.send(b"GET /health HTTP/1.1\r\nhost: enclave\r\n\r\n")
        assert (await client.response(timeout=10))[0] == 200  # kept alive between requests
        assert await client.closed_by_server(timeout=CLOSED_WITHIN)
    finally:
        await client.aclose()


async def test_stray_line_ends_do_not_keep_a_connection_open(running: Running):
    client = await RawClient.open(running.port)
    try:
        await client.send(b"GET /health HTTP/1.1\r\nhost: enclave\r\n\r\n")
        assert (await client.response(timeout=10))[0] == 200
        closed = asyncio.create_task(client.closed_by_server(timeout=CLOSED_WITHIN))
        while not closed.done():  # a blank line now and then begins no request
            with contextlib.suppress(ConnectionError):
                await client.send(b"\r\n")
            await asyncio.wait({closed}, timeout=0.5)
        assert closed.result()
    finally:
        await client.aclose()


async def test_the_per_address_cap_refuses_the_excess_while_others_get_through(
    running: Running,
):
    held = [await holding(running.port, "127.0.0.2") for _ in range(PER_ADDRESS)]
    try:
        assert await refused(running.port, "127.0.0.2")
        assert await health(running.port, "127.0.0.3") == 200
        await held.pop().aclose()  # a connection that ends frees its place
        async with asyncio.timeout(CLOSED_WITHIN):
            while await refused(running.port, "127.0.0.2"):
                await asyncio.sleep(0.1)
    finally:
        for client in held:
            await client.aclose()


async def test_connections_still_in_their_handshake_count(running: Running):
    silent = [
        await RawClient.open(running.port, "127.0.0.4", tls=False) for _ in range(PER_ADDRESS)
    ]
    try:
        assert await refused(running.port, "127.0.0.4")
    finally:
        for client in silent:
            await client.aclose()


async def test_the_overall_cap_refuses_every_address(running: Running):
    held = []
    try:
        for index in range(MAX_CONNECTIONS):
            held.append(await holding(running.port, f"127.0.1.{index // PER_ADDRESS + 1}"))
        assert await refused(running.port, "127.0.2.1")
    finally:
        for client in held:
            await client.aclose()
    async with asyncio.timeout(CLOSED_WITHIN):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if await health(running.port, "127.0.2.1") == 200:
                    break
            await asyncio.sleep(0.1)
