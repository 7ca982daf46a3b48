"""The quote parser, cross-checked field by field against dcap-qvl on the real quotes."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import dcap_qvl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.errors import QuoteParseError
from attestation.quote import (
    TEE_TYPE_SGX,
    TEE_TYPE_TDX,
    BodyType,
    SgxReport,
    TdReport,
    parse_quote,
)
from tests.vectors import load_bytes, load_json

CASES = {case["quote"]: case for case in load_json("tdx/MANIFEST.json")["cases"]}
TDX_QUOTES = ["tdx_quote", "tdx_quote_outdated"]

_TD_FIELDS = [
    ("tee_tcb_svn", "tee_tcb_svn"),
    ("mr_seam", "mr_seam"),
    ("mr_signer_seam", "mr_signer_seam"),
    ("seam_attributes", "seam_attributes"),
    ("td_attributes", "td_attributes"),
    ("xfam", "xfam"),
    ("mr_td", "mr_td"),
    ("mr_config_id", "mr_config_id"),
    ("mr_owner", "mr_owner"),
    ("mr_owner_config", "mr_owner_config"),
    ("rtmr0", "rt_mr0"),
    ("rtmr1", "rt_mr1"),
    ("rtmr2", "rt_mr2"),
    ("rtmr3", "rt_mr3"),
    ("report_data", "report_data"),
]


@pytest.mark.parametrize("name", ["tdx_quote", "tdx_quote_outdated", "sgx_quote"])
def test_header_matches_dcap_qvl(name: str) -> None:
    raw = load_bytes(f"tdx/{name}")
    ours = parse_quote(raw).header
    theirs = dcap_qvl.parse_quote(raw).header
    assert ours.version == theirs.version == CASES[name]["parsed"]["quote_version"]
    assert ours.attestation_key_type == theirs.attestation_key_type
    assert ours.tee_type == theirs.tee_type == int(CASES[name]["parsed"]["tee_type"], 16)
    assert ours.qe_svn == theirs.qe_svn
    assert ours.pce_svn == theirs.pce_svn
    assert ours.qe_vendor_id == bytes(theirs.qe_vendor_id)
    assert ours.user_data == bytes(theirs.user_data)


@pytest.mark.parametrize("name", TDX_QUOTES)
def test_td_report_matches_dcap_qvl_and_manifest(name: str) -> None:
    raw = load_bytes(f"tdx/{name}")
    quote = parse_quote(raw)
    report = quote.td_report
    theirs: Any = dcap_qvl.parse_quote(raw).report
    for ours_name, their_name in _TD_FIELDS:
        assert getattr(report, ours_name) == bytes(getattr(theirs, their_name)), ours_name
    expected = CASES[name]["parsed"]
    assert report.mr_td.hex() == expected["mr_td"]
    assert report.rtmr0.hex() == expected["rt_mr0"]
    assert report.rtmr3.hex() == expected["rt_mr3"]
    assert report.mr_config_id.hex() == expected["mr_config_id"]
    assert report.tee_tcb_svn.hex() == expected["tee_tcb_svn"]
    assert report.report_data.hex() == expected["report_data"]
    assert quote.is_tdx
    assert not report.debug


def test_v4_quote_is_td10_without_td15_fields() -> None:
    quote = parse_quote(load_bytes("tdx/tdx_quote"))
    assert quote.body_type is BodyType.TD10
    assert quote.td_report.tee_tcb_svn2 is None
    assert quote.td_report.mr_service_td is None
    # The sample is zero-padded after its signature data; the padding is ignored.
    assert quote.signed_length + 4 + quote.signature_data_length < 5006


def test_v5_quote_has_td15_fields_matching_dcap_qvl() -> None:
    raw = load_bytes("tdx/tdx_quote_outdated")
    quote = parse_quote(raw)
    theirs: Any = dcap_qvl.parse_quote(raw).report
    assert quote.body_type is BodyType.TD15
    assert quote.td_report.tee_tcb_svn2 == bytes(theirs.tee_tcb_svn2)
    assert quote.td_report.mr_service_td == bytes(theirs.mr_service_td)
    assert quote.signed_length + 4 + quote.signature_data_length == len(raw)


def test_sgx_quote_is_recognised_as_sgx() -> None:
    raw = load_bytes("tdx/sgx_quote")
    quote = parse_quote(raw)
    theirs: Any = dcap_qvl.parse_quote(raw).report
    assert quote.tee_type == TEE_TYPE_SGX
    assert not quote.is_tdx
    assert isinstance(quote.body, SgxReport)
    assert quote.body.mr_enclave.hex() == CASES["sgx_quote"]["parsed"]["mr_enclave"]
    assert quote.body.mr_signer == bytes(theirs.mr_signer)
    assert quote.report_data == bytes(theirs.report_data)
    with pytest.raises(QuoteParseError, match="not a TDX quote"):
        _ = quote.td_report


def test_debug_bit_is_bit_zero_of_td_attributes() -> None:
    raw = bytearray(load_bytes("tdx/tdx_quote"))
    raw[48 + 16 + 48 + 48 + 8] |= 0x01
    assert parse_quote(bytes(raw)).td_report.debug
    raw[48 + 16 + 48 + 48 + 8] = 0x02  # another attribute bit is not DEBUG
    assert not parse_quote(bytes(raw)).td_report.debug


def _v5(body_type: int, body: bytes, tee_type: int = TEE_TYPE_TDX) -> bytes:
    header = struct.pack("<HHIHH", 5, 2, tee_type, 0, 0) + bytes(36)
    return header + struct.pack("<HI", body_type, len(body)) + body + struct.pack("<I", 0)


def test_v5_td10_body_parses() -> None:
    quote = parse_quote(_v5(2, bytes(584)))
    assert quote.body_type is BodyType.TD10
    assert isinstance(quote.body, TdReport)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated"),
        (bytes(47), "truncated"),
        (struct.pack("<HHI", 2, 2, 0x81) + bytes(40), "version 2"),
        (struct.pack("<HHI", 4, 9, 0x81) + bytes(40), "attestation key type"),
        (struct.pack("<HHI", 4, 2, 0x7F) + bytes(40), "TEE type"),
        (struct.pack("<HHI", 3, 2, 0x81) + bytes(40), "v3 quote must be an SGX"),
        (_v5(4, bytes(700)), "body type 4"),
        (_v5(3, bytes(584)), "must be 648 bytes"),
        (_v5(1, bytes(384)), "contradicts TEE type"),
        (_v5(2, bytes(584))[:-2], "signature data length"),
        (_v5(2, bytes(584))[:-4] + struct.pack("<I", 10), "signature data"),
        (_v5(2, bytes(584))[:-4] + struct.pack("<I", 1 << 30), "exceeds"),
    ],
)
def test_malformed_quotes_raise_quote_parse_error(data: bytes, message: str) -> None:
    with pytest.raises(QuoteParseError, match=message):
        parse_quote(data)


def test_non_bytes_is_refused() -> None:
    with pytest.raises(QuoteParseError):
        parse_quote("not bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["tdx_quote", "tdx_quote_outdated", "sgx_quote"])
def test_every_truncation_of_a_real_quote_raises_only_quote_parse_error(name: str) -> None:
    raw = load_bytes(f"tdx/{name}")
    parsed = parse_quote(raw)
    needed = parsed.signed_length + 4 + parsed.signature_data_length
    for cut in range(0, needed, 7):
        with pytest.raises(QuoteParseError):
            parse_quote(raw[:cut])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes_only_raise_quote_parse_error(data: bytes) -> None:
    with contextlib.suppress(QuoteParseError):
        parse_quote(data)


_REAL = load_bytes("tdx/tdx_quote_outdated")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 1100), st.integers(0, 255), st.integers(0, 1200))
def test_fuzz_mutated_real_quote_only_raises_quote_parse_error(
    position: int, value: int, cut: int
) -> None:
    data = bytearray(_REAL)
    data[position] = value
    try:
        quote = parse_quote(bytes(data[: len(data) - cut]))
    except QuoteParseError:
        return
    assert quote.tee_type in (TEE_TYPE_SGX, TEE_TYPE_TDX)
