"""draft-ietf-ohai-chunked-ohttp-08 "Example", both directions, byte for byte."""

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave.protocol._encap import (
    CHUNKED_REQUEST_LABEL,
    CHUNKED_RESPONSE_LABEL,
    derive_response_keys,
    request_header,
    request_info,
)
from enclave.protocol.chunked import (
    ChunkedRequestDecoder,
    ChunkedRequestEncoder,
    ChunkedResponseDecoder,
)
from enclave.protocol.hpke import (
    KemId,
    Suite,
    dhkem_x25519_encapsulate_with,
    get_kem,
    setup_base_recipient,
)
from enclave.protocol.ohttp import GatewayKey, KeyStore, decode_key_config, encode_key_config
from tests.vectors import load_json

V = load_json("ohttp/chunked-ohttp-08-example.json")
SUITE = Suite.from_ids(0x0020, 0x0001, 0x0001)
REQUEST_PARTS = [bytes.fromhex(part) for part in V["encapsulated_request_parts"]]
RESPONSE_PARTS = [bytes.fromhex(part) for part in V["encapsulated_response_parts"]]


def h(name: str) -> bytes:
    return bytes.fromhex(V[name])


@pytest.fixture
def gateway_key() -> GatewayKey:
    private_key = get_kem(KemId.DHKEM_X25519_HKDF_SHA256).load_private_key(
        h("gateway_x25519_secret_key")
    )
    return GatewayKey(decode_key_config(h("key_config")), private_key)


def client_encoder(gateway_key: GatewayKey) -> ChunkedRequestEncoder:
    encapsulation = dhkem_x25519_encapsulate_with(
        h("client_ephemeral_secret_key"), gateway_key.config.public_key
    )
    assert encapsulation.enc == h("client_ephemeral_public_key")
    return ChunkedRequestEncoder(gateway_key.config, suite=SUITE, encapsulation=encapsulation)


def test_key_config_and_info(gateway_key):
    assert encode_key_config(gateway_key.config) == h("key_config")
    assert request_info(CHUNKED_REQUEST_LABEL, request_header(1, SUITE)) == h("hpke_info")


def test_client_reproduces_the_request_chunks(gateway_key):
    request = h("bhttp_request")
    encoder = client_encoder(gateway_key)
    assert encoder.header == REQUEST_PARTS[0] + REQUEST_PARTS[1]
    assert encoder.seal_chunk(request[:12]) == REQUEST_PARTS[2]
    assert encoder.seal_chunk(request[12:]) == REQUEST_PARTS[3]
    assert encoder.seal_chunk(b"", final=True) == REQUEST_PARTS[4]
    assert encoder.is_finished


def test_gateway_decapsulates_the_request_chunks(gateway_key):
    decoder = ChunkedRequestDecoder(KeyStore([gateway_key]))
    request = h("bhttp_request")
    assert decoder.feed(b"".join(REQUEST_PARTS[:3])) == [request[:12]]
    assert decoder.feed(REQUEST_PARTS[3] + REQUEST_PARTS[4]) == [request[12:]]
    assert not decoder.is_complete
    assert decoder.finish() == b""
    assert decoder.is_complete
    assert (decoder.key_id, decoder.suite, decoder.enc) == (
        1,
        SUITE,
        h("client_ephemeral_public_key"),
    )


def test_gateway_reproduces_the_response_chunks(gateway_key):
    decoder = ChunkedRequestDecoder(KeyStore([gateway_key]))
    decoder.feed(REQUEST_PARTS[0] + REQUEST_PARTS[1])  # the header alone is enough
    encoder = decoder.response_encoder(response_nonce=h("response_nonce"))
    response = h("bhttp_response")
    assert encoder.header == RESPONSE_PARTS[0]
    assert encoder.seal_chunk(response[:1]) == RESPONSE_PARTS[1]
    assert encoder.seal_chunk(response[1:]) == RESPONSE_PARTS[2]
    assert encoder.seal_chunk(b"", final=True) == RESPONSE_PARTS[3]
    assert encoder.is_finished


def test_client_decapsulates_the_response_chunks(gateway_key):
    encoder = client_encoder(gateway_key)
    decoder = encoder.response_decoder()
    response = h("bhttp_response")
    assert decoder.feed(RESPONSE_PARTS[0]) == []
    assert decoder.feed(RESPONSE_PARTS[1] + RESPONSE_PARTS[2] + RESPONSE_PARTS[3]) == [
        response[:1],
        response[1:],
    ]
    assert decoder.finish() == b""
    assert decoder.is_complete


def test_response_key_schedule_and_chunk_nonces(gateway_key):
    enc = h("client_ephemeral_public_key")
    recipient = setup_base_recipient(
        SUITE,
        enc,
        gateway_key.private_key,
        request_info(CHUNKED_REQUEST_LABEL, request_header(1, SUITE)),
    )
    secret = recipient.export(CHUNKED_RESPONSE_LABEL, 16)
    assert secret == h("response_export_secret")
    assert enc + h("response_nonce") == h("response_salt_enc_concat_nonce")
    keys = derive_response_keys(SUITE, secret, enc, h("response_nonce"))
    assert (keys.prk, keys.key, keys.nonce) == (
        h("response_prk"),
        h("response_aead_key"),
        h("response_aead_base_nonce"),
    )
    # Each framed chunk opens with a bare AES-GCM at the listed nonce; only the last has "final".
    aead = AESGCM(keys.key)
    response = h("bhttp_response")
    nonces = [bytes.fromhex(n) for n in V["response_chunk_nonces"]]
    assert aead.decrypt(nonces[0], RESPONSE_PARTS[1][1:], None) == response[:1]
    assert aead.decrypt(nonces[1], RESPONSE_PARTS[2][1:], None) == response[1:]
    assert aead.decrypt(nonces[2], RESPONSE_PARTS[3][1:], b"final") == b""


def test_standalone_response_decoder_matches(gateway_key):
    encoder = client_encoder(gateway_key)
    secret = setup_base_recipient(
        SUITE,
        encoder.enc,
        gateway_key.private_key,
        request_info(CHUNKED_REQUEST_LABEL, request_header(1, SUITE)),
    ).export(CHUNKED_RESPONSE_LABEL, 16)
    decoder = ChunkedResponseDecoder(SUITE, encoder.enc, secret)
    assert decoder.feed(b"".join(RESPONSE_PARTS)) == [b"\x01", b"\x40\xc8"]
    assert decoder.finish() == b""
