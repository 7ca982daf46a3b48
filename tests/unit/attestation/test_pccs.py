"""The Python PCCS client's pure parts: signed members kept byte for byte, the root CA CRL's
distribution point, and the base URL normalisation."""

from __future__ import annotations

import httpx
import pytest

from attestation._pccs import PccsFetchError, _base_url, _distribution_point, _signed
from tests.vectors import load_json

SAMPLE = load_json("tdx/tdx_quote_collateral.json")


def test_the_signed_member_is_kept_exactly_as_served() -> None:
    inner = '{ "b" : 1,\n "a":[1, 2 ] }'
    body = '{"tcbInfo": ' + inner + ' , "signature":"0aFF"}'
    raw, signature = _signed(httpx.Response(200, content=body.encode()), "tcbInfo")
    assert raw == inner
    assert signature == "0aFF"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"tcbInfo": {}}',  # no signature
        b'{"tcbInfo": {}, "signature": "zz"}',
        b'{"tcbInfo": [], "signature": "00"}',
        b'{"tcbInfo": {}, "signature": "00"} trailing',
        b'{"tcbInfo": {} "signature": "00"}',
        b"\xff",
        b"[" * 5000,
    ],
)
def test_anything_else_is_a_fetch_error(body: bytes) -> None:
    with pytest.raises(PccsFetchError, match="tcbInfo"):
        _signed(httpx.Response(200, content=body), "tcbInfo")


def test_the_root_crl_comes_from_the_roots_distribution_point() -> None:
    url = _distribution_point(SAMPLE["qe_identity_issuer_chain"])
    assert url.startswith("https://certificates.trustedservices.intel.com/")


@pytest.mark.parametrize(
    "url",
    [
        "https://pccs.test",
        "https://pccs.test/",
        "https://pccs.test/sgx/certification/v4",
        "https://pccs.test/tdx/certification/v4/",
    ],
)
def test_base_url(url: str) -> None:
    assert _base_url(url) == "https://pccs.test"
