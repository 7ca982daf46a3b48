"""RFC 9458 encapsulation: mutated inputs raise the one right typed error; random input raises
only ProtocolError subclasses; arbitrary bodies round-trip under every default suite."""

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.protocol.errors import (
    DecryptError,
    ProtocolError,
    TruncatedMessageError,
    UnknownKeyIdError,
    UnsupportedSuiteError,
)
from enclave.protocol.hpke import KemId, Suite, dhkem_x25519_encapsulate_with, get_kem
from enclave.protocol.ohttp import (
    ClientRequestContext,
    GatewayKey,
    KeyStore,
    decapsulate_request,
    decode_key_config,
    decode_key_configs,
    encapsulate_request,
    generate_default_key_configs,
)
from tests.vectors import load_json

V = load_json("ohttp/rfc9458-appendix-a.json")
REQUEST = bytes.fromhex(V["encapsulated_request"])
RESPONSE = bytes.fromhex(V["encapsulated_response"])
SUITE = Suite.from_ids(0x0020, 0x0001, 0x0001)
HEADER, ENC_END = 7, 7 + 32

_KEY = GatewayKey(
    decode_key_config(bytes.fromhex(V["key_config"])),
    get_kem(KemId.DHKEM_X25519_HKDF_SHA256).load_private_key(
        bytes.fromhex(V["gateway_x25519_secret_key"])
    ),
)
STORE = KeyStore([_KEY])
DEFAULT_STORE = KeyStore(generate_default_key_configs())
OTHER_STORE = KeyStore(generate_default_key_configs((7, 8)))  # key IDs STORE does not hold


def flipped(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def client_context() -> ClientRequestContext:
    encapsulation = dhkem_x25519_encapsulate_with(
        bytes.fromhex(V["client_ephemeral_secret_key"]), _KEY.config.public_key
    )
    return encapsulate_request(
        _KEY.config, bytes.fromhex(V["bhttp_request"]), encapsulation=encapsulation
    )[1]


def test_every_bit_flip_in_enc_or_ciphertext_is_a_decrypt_error():
    for bit in range(8 * HEADER, 8 * len(REQUEST)):
        with pytest.raises(DecryptError):
            decapsulate_request(STORE, flipped(REQUEST, bit))


def test_bit_flips_in_the_header():
    for bit in range(8):
        with pytest.raises(UnknownKeyIdError):
            decapsulate_request(STORE, flipped(REQUEST, bit))
    for bit in range(8, 8 * HEADER):
        mutated = flipped(REQUEST, bit)
        # AEAD 0x0001 -> 0x0003 is offered too: the header is bound into the HPKE info
        expected = DecryptError if mutated[5:7] == b"\x00\x03" else UnsupportedSuiteError
        with pytest.raises(expected):
            decapsulate_request(STORE, mutated)


def test_every_truncation_fails():
    for end in range(len(REQUEST)):
        expected = TruncatedMessageError if end < ENC_END + 16 else DecryptError
        with pytest.raises(expected):
            decapsulate_request(STORE, REQUEST[:end])


def test_trailing_bytes_change_the_ciphertext():
    with pytest.raises(DecryptError):
        decapsulate_request(STORE, REQUEST + b"\x00")


def test_response_bit_flips_and_truncations():
    context = client_context()
    for bit in range(8 * len(RESPONSE)):
        with pytest.raises(DecryptError):
            context.decapsulate_response(flipped(RESPONSE, bit))
    for end in range(len(RESPONSE)):
        expected = TruncatedMessageError if end < 32 else DecryptError
        with pytest.raises(expected):
            context.decapsulate_response(RESPONSE[:end])


def test_client_refuses_a_suite_the_config_does_not_offer():
    with pytest.raises(UnsupportedSuiteError):
        encapsulate_request(_KEY.config, b"x", suite=Suite.from_ids(0x0020, 1, 2))
    with pytest.raises(UnsupportedSuiteError):
        encapsulate_request(_KEY.config, b"x", suite=Suite.from_ids(0x647A, 1, 1))


def test_request_to_a_config_of_another_store_is_an_unknown_key():
    encapsulated, _ = encapsulate_request(OTHER_STORE.active_configs[0], b"x")
    with pytest.raises(UnknownKeyIdError):
        decapsulate_request(STORE, encapsulated)


def test_request_naming_a_held_key_id_with_another_kem_is_unsupported():
    # DEFAULT_STORE's X-Wing key has ID 1, which STORE holds as an X25519 key.
    encapsulated, _ = encapsulate_request(DEFAULT_STORE.active_configs[0], b"x")
    with pytest.raises(UnsupportedSuiteError):
        decapsulate_request(STORE, encapsulated)


@pytest.mark.parametrize("config_index", [0, 1])
@given(body=st.binary(max_size=2048), data=st.data())
@settings(max_examples=25, deadline=None)
def test_round_trip_under_every_default_suite(config_index, body, data):
    config = DEFAULT_STORE.active_configs[config_index]
    suite = data.draw(st.sampled_from(config.suites()))
    encapsulated, client = encapsulate_request(config, body, suite=suite)
    request, server = decapsulate_request(DEFAULT_STORE, encapsulated)
    assert request == body
    assert server.suite == suite
    assert client.decapsulate_response(server.encapsulate_response(body[::-1])) == body[::-1]


_valid_headers = st.sampled_from([REQUEST[:HEADER], REQUEST[:ENC_END]])


@given(st.one_of(st.binary(max_size=200), st.builds(bytes.__add__, _valid_headers, st.binary())))
def test_random_requests_raise_only_protocol_errors(data):
    with pytest.raises(ProtocolError):
        decapsulate_request(STORE, data)


@given(st.binary(max_size=200))
def test_random_responses_raise_only_protocol_errors(data):
    with pytest.raises(ProtocolError):
        client_context().decapsulate_response(data)


@given(st.binary(max_size=300))
def test_random_key_config_lists_raise_only_protocol_errors(data):
    try:
        configs = decode_key_configs(data)
    except ProtocolError:
        return
    assert configs


@given(st.binary(max_size=1300))
def test_random_key_configs_raise_only_protocol_errors(data):
    with contextlib.suppress(ProtocolError):
        decode_key_config(data)
