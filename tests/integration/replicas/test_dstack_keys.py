"""OHTTP keys from dstack's KMS through the guest agent's GetKey (a fake agent on a Unix
socket, standing in for /var/run/dstack.sock): every replica of one app derives the same
generations; epochs of the rotation period give previous/current/next; a refusal is
KeyUnavailableError."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from enclave.keybroker import DstackKeySource, KeyUnavailableError

PERIOD = 3600.0


class FakeAgent:
    """GetKey: HMAC(app root key, path) as hex, like the KMS-derived app key; refuses when told."""

    def __init__(self, root: bytes) -> None:
        self.root = root
        self.refuse = False
        self.paths: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = json.loads(await reader.readexactly(length))
        self.paths.append(request["path"])
        if self.refuse:
            status, body = b"500 Internal Server Error", b'{"error": "app not authorized"}'
        else:
            key = hmac.new(self.root, request["path"].encode(), hashlib.sha256).hexdigest()
            status, body = b"200 OK", json.dumps({"key": key, "signature_chain": []}).encode()
        writer.write(
            b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[tuple[FakeAgent, Path]]:
    fake = FakeAgent(b"app-root-key-" + bytes(19))
    path = tmp_path / "dstack.sock"
    server = await asyncio.start_unix_server(fake.handle, path=str(path))
    try:
        yield fake, path
    finally:
        server.close()
        await server.wait_closed()


async def test_replicas_of_one_app_derive_the_same_generations(
    agent: tuple[FakeAgent, Path],
) -> None:
    fake, socket_path = agent
    now = 100 * PERIOD + 5
    first = await DstackKeySource(socket_path, "enclave/ohttp", PERIOD, clock=lambda: now).fetch()
    second = await DstackKeySource(socket_path, "enclave/ohttp", PERIOD, clock=lambda: now).fetch()
    assert first == second
    assert [(g.state, g.key_ids) for g in first] == [
        ("previous", (198, 199)),
        ("current", (200, 201)),
        ("next", (202, 203)),
    ]
    assert fake.paths[:3] == ["enclave/ohttp/99", "enclave/ohttp/100", "enclave/ohttp/101"]
    later = await DstackKeySource(
        socket_path, "enclave/ohttp", PERIOD, clock=lambda: now + PERIOD
    ).fetch()
    assert later[0].seed == first[1].seed  # the old current is the new previous
    assert later[1].seed == first[2].seed


async def test_a_refusal_or_no_agent_is_key_unavailable(
    agent: tuple[FakeAgent, Path], tmp_path: Path
) -> None:
    fake, socket_path = agent
    fake.refuse = True
    with pytest.raises(KeyUnavailableError, match="did not release"):
        await DstackKeySource(socket_path, "enclave/ohttp", PERIOD).fetch()
    with pytest.raises(KeyUnavailableError, match="no dstack agent socket"):
        await DstackKeySource(tmp_path / "absent.sock", "enclave/ohttp", PERIOD).fetch()
