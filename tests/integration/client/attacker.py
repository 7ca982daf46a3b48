"""An attacker's TD on a genuine platform (the simulator's): its own in-memory RA-TLS key, quotes
the platform really signs, and a real TLS 1.3 listener on loopback whose attestation report it
can bend in any way (another certificate, other key configurations, a replayed nonce, an
endless body...). Every byte a client writes to it is recorded, so a test can prove that no
prompt or token reached it.

The attacker controls its own software, not the platform: its quotes carry its own
measurements (``SimulatedMeasurements``), and it cannot make the platform sign other ones.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from attestation.evidence import Evidence, ModelClaim
from attestation.ratls import RaTlsIssuer
from enclave.protocol._keystore import KeyStore, generate_default_key_configs
from enclave.tls import CertificateManager
from enclave_dev.tee import Simulator

__all__ = ["STARTED", "AttackerTd", "Reply", "new_ohttp_keys", "running_attacker"]

SERVICE_VERSION = "0.1.0"
MAX_HEAD = 64 << 10


@dataclass
class Reply:
    """What the attacker answers: a status, and a body given whole or as pieces (then sent
    chunked, piece by piece, until the client stops reading)."""

    status: int = 200
    body: bytes = b""
    pieces: AsyncIterator[bytes] | None = None
    content_length: int | None = None


ReportFunction = Callable[["AttackerTd", bytes], Awaitable[Reply]]


def new_ohttp_keys() -> bytes:
    """A fresh, valid application/ohttp-keys body (X-Wing and X25519 configurations)."""
    return KeyStore(generate_default_key_configs()).ohttp_keys()


@dataclass
class AttackerTd:
    simulator: Simulator
    ohttp_keys: bytes = field(default_factory=new_ohttp_keys)
    model: ModelClaim | None = None
    received: bytearray = field(default_factory=bytearray)
    sent_bytes: int = 0
    report: ReportFunction | None = None  # None: the honest report

    def __post_init__(self) -> None:
        self.issuer = self.new_issuer()
        self.manager = CertificateManager(
            self.issuer,
            ohttp_keys=lambda: self.ohttp_keys,
            model=lambda: self.model,
            service_version=SERVICE_VERSION,
        )
        self.port = 0

    def new_issuer(self, simulator: Simulator | None = None) -> RaTlsIssuer:
        """An issuer (a TLS key) whose quotes come from ``simulator`` (default: this TD's)."""
        sim = simulator or self.simulator

        async def quote(report_data: bytes) -> bytes:
            return sim.quote(report_data)

        return RaTlsIssuer(quote)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def certificate_pem(self) -> str:
        current = self.manager.current
        if current is None:
            raise RuntimeError("not started")
        return current.certificate_pem.decode("ascii")

    async def evidence(
        self,
        *,
        nonce: bytes | None,
        issuer: RaTlsIssuer | None = None,
        ohttp_keys: bytes | None = None,
        claimed_keys: bool = True,
        service_version: str | None = SERVICE_VERSION,
    ) -> Evidence:
        """Genuine evidence (the platform signs it) over claims of the attacker's choosing."""
        chosen = issuer or self.issuer
        claims = chosen.claims(
            nonce=nonce,
            ohttp_keys_body=(ohttp_keys or self.ohttp_keys) if claimed_keys else None,
            model=self.model,
            service_version=service_version,
        )
        return await chosen.evidence(claims)

    def document(
        self,
        evidence: Evidence,
        *,
        certificate_pem: str | None = None,
        ohttp_keys: bytes | None = None,
    ) -> Reply:
        body = {
            "version": 1,
            "evidence": evidence.encode().hex(),
            "quote_provider": "simulated",
            "certificate_pem": certificate_pem or self.certificate_pem,
            "ohttp_keys": base64.b64encode(ohttp_keys or self.ohttp_keys).decode("ascii"),
            "event_log": None,
        }
        return Reply(body=json.dumps(body).encode())

    async def honest(self, nonce: bytes) -> Reply:
        return self.document(await self.evidence(nonce=nonce))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        self.received += head
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            length = _content_length(head)
            if length:
                self.received += await reader.readexactly(length)
            target = head.split(b" ", 2)[1].decode("ascii", "replace")
            url = urlsplit(target)
            if url.path == "/v1/attestation/report":
                nonce = bytes.fromhex(parse_qs(url.query).get("nonce", [""])[0])
                reply = await (self.report or AttackerTd.honest)(self, nonce)
            else:
                reply = Reply(body=b'{"data": []}')
            await self._send(writer, reply)
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()

    async def _send(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        head = f"HTTP/1.1 {reply.status} X\r\ncontent-type: application/json\r\n"
        head += "connection: close\r\n"
        if reply.pieces is None:
            length = len(reply.body) if reply.content_length is None else reply.content_length
            writer.write(f"{head}content-length: {length}\r\n\r\n".encode() + reply.body)
            await writer.drain()
            self.sent_bytes += len(reply.body)
            return
        writer.write(f"{head}transfer-encoding: chunked\r\n\r\n".encode())
        async for piece in reply.pieces:
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()  # raises once the client has gone
            self.sent_bytes += len(piece)
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


#: Every attacker served, latest last (tests read what it received).
STARTED: list[AttackerTd] = []


@contextlib.asynccontextmanager
async def running_attacker(attacker: AttackerTd) -> AsyncIterator[AttackerTd]:
    """Serve ``attacker`` on a free loopback port (TLS 1.3, its RA-TLS certificate)."""
    del STARTED[:-8]  # keep the last few only
    STARTED.append(attacker)
    await attacker.manager.reissue("start")
    server = await asyncio.start_server(
        attacker._handle, "127.0.0.1", 0, ssl=attacker.manager.ssl_context, limit=MAX_HEAD
    )
    attacker.port = server.sockets[0].getsockname()[1]
    try:
        yield attacker
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
