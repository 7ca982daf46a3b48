"""Key configurations, the application/ohttp-keys list, the gateway key store and rotation."""

import struct

import pytest

from enclave.protocol.errors import (
    MalformedMessageError,
    TruncatedMessageError,
    UnknownKeyIdError,
    UnsupportedSuiteError,
)
from enclave.protocol.hpke import AeadId, KdfId, KemId, Suite, get_kem
from enclave.protocol.ohttp import (
    DEFAULT_X25519_SYMMETRIC,
    DEFAULT_XWING_SYMMETRIC,
    GatewayKey,
    KeyConfig,
    KeyStore,
    SymmetricAlgorithms,
    decapsulate_request,
    decode_key_config,
    decode_key_configs,
    encapsulate_request,
    encode_key_config,
    encode_key_configs,
    generate_default_key_configs,
    generate_key,
)
from tests.vectors import load_json

RFC_CONFIG = bytes.fromhex(load_json("ohttp/rfc9458-appendix-a.json")["key_config"])


def test_defaults_are_xwing_then_x25519_with_the_designed_suites():
    xwing, x25519 = generate_default_key_configs()
    assert xwing.config.kem_id == KemId.X_WING
    assert xwing.config.symmetric == (
        SymmetricAlgorithms(KdfId.HKDF_SHA256, AeadId.AES_256_GCM),
        SymmetricAlgorithms(KdfId.HKDF_SHA256, AeadId.CHACHA20_POLY1305),
    )
    assert x25519.config.kem_id == KemId.DHKEM_X25519_HKDF_SHA256
    assert [pair.aead_id for pair in x25519.config.symmetric] == [1, 2, 3]
    assert xwing.config.key_id != x25519.config.key_id
    assert len(xwing.config.public_key) == get_kem(KemId.X_WING).n_pk
    assert xwing.config.suites()[0] == Suite.from_ids(0x647A, 1, 2)


def test_defaults_need_two_distinct_ids():
    with pytest.raises(ValueError, match="distinct"):
        generate_default_key_configs((3, 3))


def test_list_encoding_has_two_byte_length_prefixes_and_round_trips():
    keys = generate_default_key_configs()
    encoded = encode_key_configs([key.config for key in keys])
    first = encode_key_config(keys[0].config)
    assert encoded[:2] == struct.pack(">H", len(first))
    assert encoded[2 : 2 + len(first)] == first
    assert decode_key_configs(encoded) == tuple(key.config for key in keys)


def test_list_skips_configs_with_an_unknown_kem():
    unknown = bytes([9]) + struct.pack(">H", 0x0010) + b"\x04" * 65 + bytes.fromhex("000400010001")
    data = (
        struct.pack(">H", len(unknown)) + unknown + struct.pack(">H", len(RFC_CONFIG)) + RFC_CONFIG
    )
    assert decode_key_configs(data) == (decode_key_config(RFC_CONFIG),)
    with pytest.raises(UnsupportedSuiteError):
        decode_key_config(unknown)


def test_unknown_symmetric_algorithms_are_kept_but_not_offered_as_suites():
    config = decode_key_config(RFC_CONFIG[:-10] + bytes.fromhex("000c000100010001009900010001"))
    assert SymmetricAlgorithms(1, 0x99) in config.symmetric
    assert [suite.aead_id for suite in config.suites()] == [1, 1]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", UnsupportedSuiteError),
        (b"\x00", TruncatedMessageError),
        (b"\x00\x10" + RFC_CONFIG[:10], TruncatedMessageError),
        (struct.pack(">H", len(RFC_CONFIG)) + RFC_CONFIG + b"\x00", TruncatedMessageError),
    ],
)
def test_list_defects(data, error):
    with pytest.raises(error):
        decode_key_configs(data)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (RFC_CONFIG + b"\x00", MalformedMessageError),
        (RFC_CONFIG[:-1], TruncatedMessageError),
        (RFC_CONFIG[:20], TruncatedMessageError),
        (RFC_CONFIG[:-10] + b"\x00\x00", MalformedMessageError),  # no algorithm pair
        (RFC_CONFIG[:-10] + b"\x00\x06" + b"\x00" * 6, MalformedMessageError),  # not 4n
    ],
)
def test_config_defects(data, error):
    with pytest.raises(error):
        decode_key_config(data)


def test_config_validates_its_fields():
    config = decode_key_config(RFC_CONFIG)
    with pytest.raises(ValueError, match="public key"):
        KeyConfig(1, KemId.X_WING, config.public_key, config.symmetric)
    with pytest.raises(ValueError, match="key ID"):
        KeyConfig(256, config.kem_id, config.public_key, config.symmetric)
    with pytest.raises(ValueError, match="symmetric"):
        KeyConfig(1, config.kem_id, config.public_key, ())


def test_gateway_key_must_match_its_config():
    a = generate_key(1, KemId.DHKEM_X25519_HKDF_SHA256, DEFAULT_X25519_SYMMETRIC)
    b = generate_key(1, KemId.DHKEM_X25519_HKDF_SHA256, DEFAULT_X25519_SYMMETRIC)
    with pytest.raises(ValueError, match="does not match"):
        GatewayKey(a.config, b.private_key)
    xwing = generate_key(1, KemId.X_WING, DEFAULT_XWING_SYMMETRIC)
    with pytest.raises(ValueError, match="different KEMs"):
        GatewayKey(a.config, xwing.private_key)
    assert "private_key" not in repr(a)


def test_store_serves_active_configs_in_order_and_rejects_duplicate_ids():
    keys = generate_default_key_configs((7, 8))
    store = KeyStore(keys)
    assert store.ohttp_keys() == encode_key_configs([key.config for key in keys])
    assert store.active_configs == tuple(key.config for key in keys)
    with pytest.raises(ValueError, match="already held"):
        store.add(generate_key(7, KemId.X_WING, DEFAULT_XWING_SYMMETRIC))
    with pytest.raises(UnknownKeyIdError) as info:
        store.lookup(9)
    assert info.value.key_id == 9


def test_rotation_keeps_the_old_keys_working_until_removed():
    store = KeyStore(generate_default_key_configs((1, 2)))
    old_config = store.active_configs[0]
    encapsulated, _ = encapsulate_request(old_config, b"before rotation")

    fresh = store.rotate_defaults()
    new_ids = {key.config.key_id for key in fresh}
    assert new_ids.isdisjoint({1, 2})
    assert set(store.retired_key_ids) == {1, 2}
    assert decode_key_configs(store.ohttp_keys()) == tuple(key.config for key in fresh)
    # overlap: a request to the retired key is still accepted
    assert decapsulate_request(store, encapsulated)[0] == b"before rotation"

    store.remove(1)
    with pytest.raises(UnknownKeyIdError):
        decapsulate_request(store, encapsulated)
    assert sorted(store.key_ids) == sorted({2, *new_ids})


def test_retire_and_rotate_explicitly():
    first = generate_key(5, KemId.DHKEM_X25519_HKDF_SHA256, DEFAULT_X25519_SYMMETRIC)
    store = KeyStore([first])
    second = generate_key(6, KemId.DHKEM_X25519_HKDF_SHA256, DEFAULT_X25519_SYMMETRIC)
    assert store.rotate([second]) == (5,)
    assert store.active_configs == (second.config,)
    store.retire(6)
    assert store.ohttp_keys() == b""
    assert store.lookup(6) is second
    with pytest.raises(UnknownKeyIdError):
        store.retire(77)
    with pytest.raises(UnknownKeyIdError):
        store.remove(77)
    with pytest.raises(ValueError, match="at least one"):
        store.rotate([])


def test_free_key_ids_go_round_robin_and_skip_held_ones():
    store = KeyStore([generate_key(254, KemId.DHKEM_X25519_HKDF_SHA256, DEFAULT_X25519_SYMMETRIC)])
    assert store.free_key_ids(3) == (255, 0, 1)
    store.add(generate_key(0, KemId.DHKEM_X25519_HKDF_SHA256, DEFAULT_X25519_SYMMETRIC))
    assert store.free_key_ids(2) == (1, 2)
    with pytest.raises(ValueError, match="free key IDs"):
        store.free_key_ids(255)
