"""OHTTP keys from the key broker: the key document, the derivation every replica shares,
generations applied to the key store (rotation with overlap), and the CDH resource API
through the stand-in (released to a guest in the policy, refused to one that is not)."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

import pytest

from enclave.keybroker import (
    KEY_DOCUMENT_FORMAT,
    CdhKeySource,
    KeyUnavailableError,
    apply_generations,
    check_cdh_url,
    derive_generation_keys,
    encode_key_document,
    parse_key_document,
)
from enclave.protocol.ohttp import KeyStore, decode_key_configs
from tests.integration.replicas._kbs import RESOURCE, generation, kbs_standin

GOOD = "aa" * 48
BAD = "bb" * 48


def test_every_replica_derives_the_same_key_configuration() -> None:
    current = generation((1, 2), "current")
    document = encode_key_document([current, generation((3, 4), "next")])
    first, second = KeyStore(), KeyStore()
    assert apply_generations(first, parse_key_document(document))
    assert apply_generations(second, parse_key_document(document))
    assert first.ohttp_keys() == second.ohttp_keys() != b""
    assert [c.key_id for c in decode_key_configs(first.ohttp_keys())] == [1, 2]
    assert sorted(first.key_ids) == [1, 2, 3, 4]  # next: accepted, not advertised
    assert not apply_generations(first, parse_key_document(document))  # unchanged
    xwing, x25519 = derive_generation_keys(current)
    assert (xwing.config.key_id, x25519.config.key_id) == (1, 2)
    other = derive_generation_keys(generation((1, 2), "current"))
    assert other[0].config.public_key != xwing.config.public_key  # the seed decides


def test_rotation_overlaps_two_generations() -> None:
    old, new = generation((1, 2), "current"), generation((3, 4), "next")
    store = KeyStore()
    apply_generations(store, [old, new])
    before = store.ohttp_keys()
    flipped = [
        dataclasses.replace(old, state="previous"),
        dataclasses.replace(new, state="current"),
    ]
    held = store.lookup(3)
    assert apply_generations(store, flipped)
    assert store.ohttp_keys() != before
    assert [c.key_id for c in store.active_configs] == [3, 4]
    assert store.lookup(3) is held  # an unchanged key is kept as it is
    assert sorted(store.key_ids) == [1, 2, 3, 4]
    assert apply_generations(store, [flipped[1]])
    assert sorted(store.key_ids) == [3, 4]


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        json.dumps({"format": "other", "keys": []}).encode(),
        json.dumps({"format": KEY_DOCUMENT_FORMAT, "keys": []}).encode(),
        json.dumps(
            {
                "format": KEY_DOCUMENT_FORMAT,
                "keys": [{"key_ids": [1, 2], "seed": "AAAA", "state": "current"}],
            }
        ).encode(),  # seed too short
        json.dumps(
            {
                "format": KEY_DOCUMENT_FORMAT,
                "keys": [
                    {"key_ids": [1, 2], "seed": base64.b64encode(bytes(32)).decode(), "state": s}
                    for s in ("next", "previous")
                ],
            }
        ).encode(),  # no current generation
        json.dumps(
            {
                "format": KEY_DOCUMENT_FORMAT,
                "keys": [
                    {"key_ids": [1, 2], "seed": base64.b64encode(bytes(32)).decode(), "state": s}
                    for s in ("current", "next")
                ],
            }
        ).encode(),  # a key ID twice
    ],
)
def test_malformed_documents_are_refused(document: bytes) -> None:
    with pytest.raises(KeyUnavailableError):
        parse_key_document(document)


def test_the_cdh_url_must_be_loopback() -> None:
    for url in ("http://10.0.0.1:8006", "http://localhost:8006", "https://127.0.0.1", "x"):
        with pytest.raises(ValueError, match="ohttp_key_cdh_url"):
            check_cdh_url(url)
    assert check_cdh_url("http://127.0.0.1:8006") == "http://127.0.0.1:8006"


async def test_the_stand_in_releases_only_to_guests_in_its_policy(tmp_path: Path) -> None:
    published = [generation((7, 8), "current")]
    with kbs_standin(tmp_path, [GOOD, BAD], [GOOD], published) as stand_in:
        released = await CdhKeySource(stand_in.url(0), RESOURCE).fetch()
        assert [g.key_ids for g in released] == [(7, 8)]
        assert released[0].seed == published[0].seed
        with pytest.raises(KeyUnavailableError, match="did not release"):
            await CdhKeySource(stand_in.url(1), RESOURCE).fetch()
        with pytest.raises(KeyUnavailableError, match="did not release"):
            await CdhKeySource(stand_in.url(0), "default/other/keys").fetch()
        assert [(r["guest"], r["released"]) for r in stand_in.requests()] == [
            (0, True),
            (1, False),
        ]
    with pytest.raises(KeyUnavailableError, match="did not answer"):
        await CdhKeySource(stand_in.url(0), RESOURCE, timeout=2).fetch()
