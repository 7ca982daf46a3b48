"""RFC 9458 Appendix A, both directions, byte for byte, with every intermediate value."""

import pytest

from enclave.protocol._encap import (
    REQUEST_LABEL,
    RESPONSE_LABEL,
    derive_response_keys,
    request_header,
    request_info,
)
from enclave.protocol.hpke import (
    KemId,
    Suite,
    dhkem_x25519_encapsulate_with,
    get_kem,
    setup_base_recipient,
)
from enclave.protocol.ohttp import (
    GatewayKey,
    KeyStore,
    SymmetricAlgorithms,
    decapsulate_request,
    decode_key_config,
    encapsulate_request,
    encode_key_config,
)
from tests.vectors import load_json

V = load_json("ohttp/rfc9458-appendix-a.json")
SUITE = Suite.from_ids(0x0020, 0x0001, 0x0001)


def h(name: str) -> bytes:
    return bytes.fromhex(V[name])


@pytest.fixture
def gateway_key() -> GatewayKey:
    private_key = get_kem(KemId.DHKEM_X25519_HKDF_SHA256).load_private_key(
        h("gateway_x25519_secret_key")
    )
    return GatewayKey(decode_key_config(h("key_config")), private_key)


def test_key_config_decodes_and_re_encodes(gateway_key):
    config = gateway_key.config
    assert config.key_id == 1
    assert config.kem_id == KemId.DHKEM_X25519_HKDF_SHA256
    assert config.symmetric == (SymmetricAlgorithms(1, 1), SymmetricAlgorithms(1, 3))
    assert encode_key_config(config) == h("key_config")
    assert config.public_key == gateway_key.private_key.public_key_bytes()


def test_hpke_info():
    assert request_info(REQUEST_LABEL, request_header(1, SUITE)) == h("hpke_info")


def test_client_reproduces_the_encapsulated_request(gateway_key):
    encapsulation = dhkem_x25519_encapsulate_with(
        h("client_ephemeral_secret_key"), gateway_key.config.public_key
    )
    assert encapsulation.enc == h("client_ephemeral_public_key")
    encapsulated, context = encapsulate_request(
        gateway_key.config, h("bhttp_request"), suite=SUITE, encapsulation=encapsulation
    )
    assert encapsulated == h("encapsulated_request")
    assert context.enc == h("client_ephemeral_public_key")


def test_client_defaults_to_the_first_offered_suite(gateway_key):
    encapsulation = dhkem_x25519_encapsulate_with(
        h("client_ephemeral_secret_key"), gateway_key.config.public_key
    )
    encapsulated, _ = encapsulate_request(
        gateway_key.config, h("bhttp_request"), encapsulation=encapsulation
    )
    assert encapsulated == h("encapsulated_request")


def test_gateway_decapsulates_the_request_and_reproduces_the_response(gateway_key):
    request, context = decapsulate_request(KeyStore([gateway_key]), h("encapsulated_request"))
    assert request == h("bhttp_request")
    assert (context.key_id, context.suite, context.enc) == (
        1,
        SUITE,
        h("client_ephemeral_public_key"),
    )
    response = context.encapsulate_response(h("bhttp_response"), response_nonce=h("response_nonce"))
    assert response == h("encapsulated_response")


def test_response_key_schedule_intermediates(gateway_key):
    enc = h("client_ephemeral_public_key")
    recipient = setup_base_recipient(
        SUITE, enc, gateway_key.private_key, request_info(REQUEST_LABEL, request_header(1, SUITE))
    )
    secret = recipient.export(RESPONSE_LABEL, 16)
    assert secret == h("response_export_secret")
    assert enc + h("response_nonce") == h("response_salt_enc_concat_nonce")
    keys = derive_response_keys(SUITE, secret, enc, h("response_nonce"))
    assert keys.prk == h("response_prk")
    assert keys.key == h("response_aead_key")
    assert keys.nonce == h("response_aead_nonce")


def test_client_decapsulates_the_response(gateway_key):
    encapsulation = dhkem_x25519_encapsulate_with(
        h("client_ephemeral_secret_key"), gateway_key.config.public_key
    )
    _, context = encapsulate_request(
        gateway_key.config, h("bhttp_request"), suite=SUITE, encapsulation=encapsulation
    )
    assert context.decapsulate_response(h("encapsulated_response")) == h("bhttp_response")


def test_random_response_nonces_differ_and_both_open(gateway_key):
    encapsulation = dhkem_x25519_encapsulate_with(
        h("client_ephemeral_secret_key"), gateway_key.config.public_key
    )
    _, client = encapsulate_request(
        gateway_key.config, h("bhttp_request"), suite=SUITE, encapsulation=encapsulation
    )
    _, server = decapsulate_request(KeyStore([gateway_key]), h("encapsulated_request"))
    first = server.encapsulate_response(b"one")
    second = server.encapsulate_response(b"one")
    assert first[:16] != second[:16]
    assert client.decapsulate_response(first) == client.decapsulate_response(second) == b"one"
