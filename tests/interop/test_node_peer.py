"""Chunked OHTTP against an independent Node.js peer (tests/interop/node/chunked_ohttp_peer.mjs):
HPKE from @hpke/core with the X25519 and X-Wing KEMs, Binary HTTP from bhttp-js, and chunk
framing written there from the draft. Both roles, both default key configurations."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from enclave.protocol.bhttp import Request as BhttpRequest
from enclave.protocol.bhttp import (
    StreamingRequestEncoder,
    StreamingResponseEncoder,
    decode_request,
    decode_response,
    encode_request,
)
from enclave.protocol.chunked import ChunkedRequestDecoder, ChunkedRequestEncoder
from enclave.protocol.errors import DecryptError, TruncatedMessageError
from enclave.protocol.hpke import AeadId, KdfId, KemId, Suite
from enclave.protocol.ohttp import KeyStore, decode_key_config, generate_default_key_configs

pytestmark = pytest.mark.interop

NODE_DIR = Path(__file__).resolve().parent / "node"
PEER = NODE_DIR / "chunked_ohttp_peer.mjs"
TIMEOUT = 60.0

if not (NODE_DIR / "node_modules").is_dir():
    if os.environ.get("CI"):
        pytest.fail("CI must install the Node peers (npm ci in tests/interop/node)", pytrace=False)
    pytest.skip(
        "tests/interop/node/node_modules is absent: run `npm ci` there (CI does)",
        allow_module_level=True,
    )


class NodePeer:
    """One peer process speaking newline-delimited JSON; every read has a timeout."""

    def __init__(self, mode: str) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.fail("node_modules is installed but the `node` executable is not on PATH")
        self._process = subprocess.Popen(
            [node, str(PEER), mode],
            cwd=NODE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read_lines, daemon=True)
        self._reader.start()

    def _read_lines(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put("")

    def send(self, message: dict[str, Any]) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(message) + "\n")
        self._process.stdin.flush()

    def receive(self) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail(f"the Node peer gave no answer within {TIMEOUT} s")
        if not line:
            pytest.fail(f"the Node peer exited: {self._stderr()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def receive_ok(self) -> dict[str, Any]:
        answer = self.receive()
        if "error" in answer:
            pytest.fail(f"the Node peer failed: {answer['error']} {self._stderr()}")
        return answer

    def _stderr(self) -> str:
        self.close()
        assert self._process.stderr is not None
        return self._process.stderr.read()

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait(timeout=TIMEOUT)

    def __enter__(self) -> NodePeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        for stream in (self._process.stdin, self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()


STORE = KeyStore(generate_default_key_configs())
SSE_EVENTS = [
    f'data: {{"choices":[{{"delta":{{"content":"token {i}"}}}}]}}\n\n'.encode() for i in range(40)
] + [b"data: [DONE]\n\n"]
CLIENT_CASES = [
    (KemId.X_WING, AeadId.AES_256_GCM),
    (KemId.X_WING, AeadId.CHACHA20_POLY1305),
    (KemId.DHKEM_X25519_HKDF_SHA256, AeadId.AES_128_GCM),
    (KemId.DHKEM_X25519_HKDF_SHA256, AeadId.AES_256_GCM),
    (KemId.DHKEM_X25519_HKDF_SHA256, AeadId.CHACHA20_POLY1305),
]
CASE_IDS = [f"{kem.name}-{aead.name}" for kem, aead in CLIENT_CASES]


def node_client_request(peer: NodePeer, kem: KemId, aead: AeadId, body: bytes) -> bytes:
    peer.send(
        {
            "key_configs": STORE.ohttp_keys().hex(),
            "kem_id": int(kem),
            "aead_id": int(aead),
            "request": {
                "method": "POST",
                "url": "https://enclave.example/v1/chat/completions",
                "headers": [["content-type", "application/json"], ["x-request-id", "interop-1"]],
                "body": body.hex(),
            },
            "chunk_size": 700,
        }
    )
    return bytes.fromhex(peer.receive_ok()["encapsulated"])


def gateway_open(wire: bytes) -> tuple[bytes, ChunkedRequestDecoder]:
    decoder = ChunkedRequestDecoder(STORE)
    plain = b""
    for at in range(0, len(wire), 333):  # arrival in pieces unrelated to the chunking
        plain += b"".join(decoder.feed(wire[at : at + 333]))
    plain += decoder.finish()
    return plain, decoder


@pytest.mark.parametrize(("kem", "aead"), CLIENT_CASES, ids=CASE_IDS)
def test_node_client_to_our_gateway(kem, aead):
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 3000}]})
    with NodePeer("client") as peer:
        wire = node_client_request(peer, kem, aead, body.encode())
        bhttp, decoder = gateway_open(wire)
        assert decoder.suite == Suite.from_ids(kem, KdfId.HKDF_SHA256, aead)
        assert decoder.key_id == STORE.active_configs[kem != KemId.X_WING].key_id

        request = decode_request(bhttp)
        assert (request.method, request.scheme, request.authority, request.path) == (
            b"POST",
            b"https",
            b"enclave.example",
            b"/v1/chat/completions",
        )
        assert (b"x-request-id", b"interop-1") in request.headers
        assert request.content == body.encode()

        # Stream the response the way the service does: one seal per SSE event.
        encoder = decoder.response_encoder()
        inner = StreamingResponseEncoder()
        out = [
            encoder.header,
            encoder.seal_chunk(inner.head(200, [(b"content-type", b"text/event-stream")])),
        ]
        out += [encoder.seal_chunk(inner.body(event)) for event in SSE_EVENTS]
        out.append(encoder.seal_chunk(inner.end(), final=True))
        peer.send({"response": b"".join(out).hex()})
        answer = peer.receive_ok()
    assert answer["status"] == 200
    assert ["content-type", "text/event-stream"] in answer["headers"]
    assert bytes.fromhex(answer["body"]) == b"".join(SSE_EVENTS)
    assert answer["chunks"] == len(SSE_EVENTS) + 2


def test_node_client_detects_a_truncated_response():
    with NodePeer("client") as peer:
        wire = node_client_request(peer, KemId.X_WING, AeadId.AES_256_GCM, b"{}")
        _, decoder = gateway_open(wire)
        encoder = decoder.response_encoder()
        inner = StreamingResponseEncoder()
        cut = (
            encoder.header + encoder.seal_chunk(inner.head(200)) + encoder.seal_chunk(b"\x05hello")
        )
        peer.send({"response": cut.hex()})
        assert "no final chunk" in peer.receive()["error"]


def test_tampered_node_request_is_a_decrypt_error():
    with NodePeer("client") as peer:
        wire = bytearray(node_client_request(peer, KemId.X_WING, AeadId.AES_256_GCM, b"{}"))
    wire[-1] ^= 1
    with pytest.raises(DecryptError):
        gateway_open(bytes(wire))
    with pytest.raises(TruncatedMessageError):
        gateway_open(bytes(wire[: 7 + 1120 + 5]))


GATEWAY_CASES = [
    (KemId.X_WING, AeadId.AES_256_GCM, False),
    (KemId.X_WING, AeadId.CHACHA20_POLY1305, True),
    (KemId.DHKEM_X25519_HKDF_SHA256, AeadId.AES_128_GCM, True),
]


@pytest.mark.parametrize(
    ("kem", "aead", "streamed"),
    GATEWAY_CASES,
    ids=[f"{k.name}-{a.name}-{'streamed' if s else 'known'}" for k, a, s in GATEWAY_CASES],
)
def test_our_client_to_node_gateway(kem, aead, streamed):
    content = b'{"input": "' + b"y" * 5000 + b'"}'
    with NodePeer("gateway") as peer:
        peer.send({"kem_id": int(kem), "key_id": 42})
        config = decode_key_config(bytes.fromhex(peer.receive_ok()["key_config"]))
        assert config.key_id == 42
        encoder = ChunkedRequestEncoder(config, suite=Suite.from_ids(kem, KdfId.HKDF_SHA256, aead))
        if streamed:
            inner = StreamingRequestEncoder()
            head = inner.head(
                b"POST",
                b"https",
                b"node.example",
                b"/v1/embeddings",
                [(b"content-type", b"application/json")],
            )
            parts = [head, inner.body(content[:2000]), inner.body(content[2000:])]
            wire = encoder.header + b"".join(encoder.seal_chunk(p) for p in parts)
            wire += encoder.seal_chunk(inner.end(), final=True)
        else:
            bhttp = encode_request(
                BhttpRequest(
                    b"POST",
                    b"https",
                    b"node.example",
                    b"/v1/embeddings",
                    ((b"content-type", b"application/json"),),
                    content,
                )
            )
            wire = (
                encoder.header
                + encoder.seal_chunk(bhttp[:1000])
                + encoder.seal_chunk(bhttp[1000:], final=True)
            )
        peer.send(
            {
                "encapsulated": wire.hex(),
                "response": {
                    "status": 201,
                    "headers": [["x-served-by", "node"]],
                    "body": b"created".hex(),
                },
                "chunk_size": 3,
            }
        )
        answer = peer.receive_ok()
    assert answer["request"]["method"] == "POST"
    assert answer["request"]["url"] == "https://node.example/v1/embeddings"
    assert ["content-type", "application/json"] in answer["request"]["headers"]
    assert bytes.fromhex(answer["request"]["body"]) == content

    decoder = encoder.response_decoder()
    wire_back = bytes.fromhex(answer["encapsulated_response"])
    plain = b"".join(decoder.feed(wire_back)) + decoder.finish()
    response = decode_response(plain)
    assert response.status == 201
    assert (b"x-served-by", b"node") in response.headers
    assert response.content == b"created"
