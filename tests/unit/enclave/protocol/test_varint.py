import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave.protocol._varint import VARINT_MAX, decode_varint, encode_varint
from enclave.protocol.errors import TruncatedMessageError


@pytest.mark.parametrize(
    ("encoded", "value"),
    [  # RFC 9000 appendix A.1 examples
        ("c2197c5eff14e88c", 151288809941952652),
        ("9d7f3e7d", 494878333),
        ("7bbd", 15293),
        ("25", 37),
        ("4025", 37),
    ],
)
def test_rfc9000_examples_decode(encoded: str, value: int) -> None:
    data = bytes.fromhex(encoded)
    assert decode_varint(data) == (value, len(data))


def test_encoder_uses_the_shortest_form() -> None:
    assert encode_varint(37) == b"\x25"
    assert encode_varint(15293) == bytes.fromhex("7bbd")


@given(st.integers(min_value=0, max_value=VARINT_MAX))
def test_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded + b"rest") == (value, len(encoded))


@pytest.mark.parametrize("value", [-1, VARINT_MAX + 1])
def test_out_of_range_values_are_refused(value: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_varint(value)


@pytest.mark.parametrize("data", [b"", b"\x40", b"\x80\x00\x00", b"\xc0" + b"\x00" * 6])
def test_truncated_varints_raise(data: bytes) -> None:
    with pytest.raises(TruncatedMessageError):
        decode_varint(data)


def test_the_short_table_matches_the_general_encoder_at_every_boundary() -> None:
    from enclave.protocol._varint import SHORT_VARINTS, _encode

    assert len(SHORT_VARINTS) == 4096
    assert all(SHORT_VARINTS[value] == _encode(value) for value in range(4096))
    for value in (63, 64, 4095, 4096, 16383, 16384):
        assert decode_varint(encode_varint(value)) == (value, len(_encode(value)))
