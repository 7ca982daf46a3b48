"""Fuzz every decoder that reads bytes from outside: ten thousand seeded cases each (see
``_corpus``). Only the package's own typed error may come out: ``ProtocolError`` from the
OHTTP / Binary HTTP / chunked core, ``AttestationError`` from evidence, claims, quotes,
certificates and event logs, ``ValueError`` from the HTTP-date parser. Anything else (an
``IndexError``, a ``RecursionError``, ``struct.error``...) would be a 500 or a crash in the
service, and fails here with the input that caused it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from attestation.errors import AttestationError
from attestation.eventlog import parse_ccel, parse_dstack_event_log
from attestation.evidence import (
    Claims,
    ModelClaim,
    PubkeyHash,
    decode_claims,
    decode_evidence,
    encode_claims,
)
from attestation.quote import parse_quote
from attestation.ratls import RaTlsIssuer, parse_certificate
from enclave.gateway._httpdate import parse_http_date
from enclave.protocol import bhttp
from enclave.protocol.chunked import ChunkedRequestDecoder, ChunkedRequestEncoder
from enclave.protocol.errors import ProtocolError
from enclave.protocol.ohttp import (
    KeyStore,
    decapsulate_request,
    decode_key_config,
    decode_key_configs,
    encapsulate_request,
    encode_key_configs,
    generate_default_key_configs,
)
from enclave_dev.tee import Simulator
from tests.fuzz._corpus import CASES, run_cases
from tests.unit.attestation.test_eventlog import _sample_ccel, _sample_dstack_log
from tests.vectors import load_bytes

STORE = KeyStore(generate_default_key_configs())
CONFIGS = STORE.active_configs


def _requests() -> list[bhttp.Request]:
    return [
        bhttp.Request(
            b"POST",
            b"https",
            b"enclave",
            b"/v1/chat/completions",
            ((b"content-type", b"application/json"), (b"date", b"Sun, 06 Nov 1994 08:49:37 GMT")),
            b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}',
        ),
        bhttp.Request(b"GET", b"https", b"enclave", b"/v1/models", (), b""),
    ]


def _bhttp_request_seeds() -> list[bytes]:
    return [bhttp.encode_request(r, indeterminate=i) for r in _requests() for i in (False, True)]


def _bhttp_response_seeds() -> list[bytes]:
    response = bhttp.Response(
        200, ((b"content-type", b"text/event-stream"),), b"data: {}\n\ndata: [DONE]\n\n"
    )
    stream = bhttp.StreamingResponseEncoder()
    streamed = stream.head(200, ((b"x", b"y"),)) + stream.body(b"data: 1\n\n") + stream.end()
    return [bhttp.encode_response(response), streamed]


def _ohttp_seeds() -> list[bytes]:
    encoded = bhttp.encode_request(_requests()[0])
    return [encapsulate_request(config, encoded)[0] for config in CONFIGS]


def _chunked_seeds() -> list[bytes]:
    seeds = []
    for config in CONFIGS:
        encoder = ChunkedRequestEncoder(config)
        encoded = bhttp.encode_request(_requests()[0], indeterminate=True)
        seeds.append(
            encoder.header
            + encoder.seal_chunk(encoded[:30])
            + encoder.seal_chunk(encoded[30:], final=True)
        )
    return seeds


def _feed_chunked(data: bytes) -> None:
    """Odd-length inputs arrive in pieces of 1 to 29 bytes, even-length ones whole."""
    decoder = ChunkedRequestDecoder(STORE)
    step = len(data) % 29 + 1 if len(data) % 2 else max(len(data), 1)
    for at in range(0, len(data), step):
        decoder.feed(data[at : at + step])
    decoder.finish()


def _simulated() -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Quotes, evidence and certificates from the simulated TEE."""
    simulator = Simulator.create()

    async def quote(report_data: bytes) -> bytes:
        return simulator.quote(report_data)

    issuer = RaTlsIssuer(quote)
    model = ModelClaim("tiny", "dm-verity", b"\x07" * 32)
    issued = asyncio.run(
        issuer.issue(ohttp_keys_body=b"keys", model=model, service_version="0.1.0")
    )
    claims = issuer.claims(nonce=b"\x01" * 32, ohttp_keys_body=b"keys", model=model)
    evidence = asyncio.run(issuer.evidence(claims))
    quotes = [evidence.quote, load_bytes("tdx/tdx_quote"), load_bytes("tdx/sgx_quote")]
    return quotes, [evidence.encode()], [issued.certificate_der]


QUOTES, EVIDENCE, CERTIFICATES = _simulated()
CLAIMS = [
    encode_claims(Claims(PubkeyHash.of(b"spki"))),
    encode_claims(
        Claims(
            PubkeyHash.of(b"spki"),
            nonce=b"\x02" * 48,
            ohttp_keys=b"\x03" * 32,
            model=ModelClaim("m", "manifest-sha256", b"\x04" * 32),
            service_version="1.2.3",
        )
    ),
]
DSTACK = [json.dumps(_sample_dstack_log()).encode()]


Target = Callable[[bytes], object]
TARGETS: dict[str, tuple[Target, list[bytes], tuple[type[BaseException], ...]]] = {
    "bhttp-request": (bhttp.decode_request, _bhttp_request_seeds(), (ProtocolError,)),
    "bhttp-response": (bhttp.decode_response, _bhttp_response_seeds(), (ProtocolError,)),
    "ohttp-request": (lambda d: decapsulate_request(STORE, d), _ohttp_seeds(), (ProtocolError,)),
    "chunked-request": (_feed_chunked, _chunked_seeds(), (ProtocolError,)),
    "key-configs": (decode_key_configs, [encode_key_configs(CONFIGS)], (ProtocolError,)),
    "key-config": (
        decode_key_config,
        [encode_key_configs(CONFIGS[:1])[2:]],
        (ProtocolError,),
    ),
    "evidence-cbor": (decode_evidence, EVIDENCE, (AttestationError,)),
    "claims-cbor": (decode_claims, CLAIMS, (AttestationError,)),
    "tdx-quote": (parse_quote, QUOTES, (AttestationError,)),
    "ratls-certificate": (parse_certificate, CERTIFICATES, (AttestationError,)),
    "dstack-event-log": (parse_dstack_event_log, DSTACK, (AttestationError,)),
    "ccel-event-log": (
        parse_ccel,
        [_sample_ccel(), _sample_ccel(b"\xff" * 16)],
        (AttestationError,),
    ),
    "http-date": (
        lambda d: parse_http_date(d.decode("latin-1"), 1.79e9),
        [
            b"Sun, 06 Nov 1994 08:49:37 GMT",
            b"Sunday, 06-Nov-94 08:49:37 GMT",
            b"Sun Nov  6 08:49:37 1994",
        ],
        (ValueError,),
    ),
}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_only_typed_errors_come_out(name: str) -> None:
    target, seeds, allowed = TARGETS[name]
    outcomes = run_cases(name, target, seeds, allowed)
    assert sum(outcomes.values()) == CASES
