"""Chunked OHTTP: every mutation of the draft's example raises the one right typed error."""

import pytest

from enclave.protocol._encap import CHUNKED_REQUEST_LABEL, request_header, request_info
from enclave.protocol._varint import encode_varint
from enclave.protocol.chunked import (
    DEFAULT_MAX_CHUNK_SIZE,
    ChunkedRequestDecoder,
    ChunkedRequestEncoder,
    ChunkedResponseDecoder,
)
from enclave.protocol.errors import (
    DecryptError,
    MalformedMessageError,
    ProtocolError,
    TruncatedMessageError,
    UnknownKeyIdError,
    UnsupportedSuiteError,
)
from enclave.protocol.hpke import (
    KemId,
    Suite,
    dhkem_x25519_encapsulate_with,
    get_kem,
    setup_base_sender,
)
from enclave.protocol.ohttp import GatewayKey, KeyStore, decode_key_config
from tests.vectors import load_json

V = load_json("ohttp/chunked-ohttp-08-example.json")
SUITE = Suite.from_ids(0x0020, 0x0001, 0x0001)
HDR, ENC, C1, C2, FINAL = (bytes.fromhex(p) for p in V["encapsulated_request_parts"])
R_NONCE, R1, R2, R_FINAL = (bytes.fromhex(p) for p in V["encapsulated_response_parts"])
REQUEST = HDR + ENC + C1 + C2 + FINAL
RESPONSE = R_NONCE + R1 + R2 + R_FINAL

_KEY = GatewayKey(
    decode_key_config(bytes.fromhex(V["key_config"])),
    get_kem(KemId.DHKEM_X25519_HKDF_SHA256).load_private_key(
        bytes.fromhex(V["gateway_x25519_secret_key"])
    ),
)
STORE = KeyStore([_KEY])


def decode_request(data: bytes, **kwargs) -> bytes:
    decoder = ChunkedRequestDecoder(STORE, **kwargs)
    out = b"".join(decoder.feed(data))
    return out + decoder.finish()


def response_decoder() -> ChunkedResponseDecoder:
    encapsulation = dhkem_x25519_encapsulate_with(
        bytes.fromhex(V["client_ephemeral_secret_key"]), _KEY.config.public_key
    )
    return ChunkedRequestEncoder(
        _KEY.config, suite=SUITE, encapsulation=encapsulation
    ).response_decoder()


def decode_response(data: bytes) -> bytes:
    decoder = response_decoder()
    out = b"".join(decoder.feed(data))
    return out + decoder.finish()


def flipped(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def sealed_regions(chunks: list[bytes]) -> list[int]:
    """Bit positions of the sealed bytes (not the length prefixes) after the prefix."""
    bits: list[int] = []
    at = 0
    for chunk in chunks:
        bits += range(8 * (at + 1), 8 * (at + len(chunk)))
        at += len(chunk)
    return bits


def test_the_example_decodes():
    assert decode_request(REQUEST) == bytes.fromhex(V["bhttp_request"])
    assert decode_response(RESPONSE) == bytes.fromhex(V["bhttp_response"])


def test_bit_flips_in_enc_and_sealed_chunks_are_decrypt_errors():
    prefix = len(HDR)
    for bit in range(8 * prefix, 8 * (prefix + len(ENC))):
        with pytest.raises(DecryptError):
            decode_request(flipped(REQUEST, bit))
    offset = 8 * len(HDR + ENC)
    for bit in sealed_regions([C1, C2, FINAL]):
        with pytest.raises(DecryptError):
            decode_request(flipped(REQUEST, offset + bit))
    offset = 8 * len(R_NONCE)
    for bit in [*range(offset), *(offset + b for b in sealed_regions([R1, R2, R_FINAL]))]:
        with pytest.raises(DecryptError):
            decode_response(flipped(RESPONSE, bit))


def test_bit_flips_in_the_header():
    for bit in range(8):
        with pytest.raises(UnknownKeyIdError):
            decode_request(flipped(REQUEST, bit))
    for bit in range(8, 56):
        mutated = flipped(REQUEST, bit)
        expected = DecryptError if mutated[5:7] == b"\x00\x03" else UnsupportedSuiteError
        with pytest.raises(expected):
            decode_request(mutated)


def test_every_truncation_of_the_request_fails():
    final_start = len(REQUEST) - len(FINAL) + 1  # after the zero length
    for end in range(len(REQUEST)):
        if end < final_start or end - final_start < 16:
            expected: type[ProtocolError] = TruncatedMessageError
        else:
            expected = DecryptError
        with pytest.raises(expected):
            decode_request(REQUEST[:end])


def test_every_truncation_of_the_response_fails():
    final_start = len(RESPONSE) - len(R_FINAL) + 1
    for end in range(len(RESPONSE)):
        expected = TruncatedMessageError if end - final_start < 16 else DecryptError
        with pytest.raises(expected):
            decode_response(RESPONSE[:end])


@pytest.mark.parametrize(
    "chunks",
    [
        [C2, C1, FINAL],  # reordered
        [C1, C1, C2, FINAL],  # duplicated
        [C2, FINAL],  # dropped
        [C1, b"\x00" + C2[1:]],  # a non-final chunk presented as the final one
    ],
)
def test_reordered_duplicated_dropped_or_relabelled_request_chunks(chunks):
    with pytest.raises(DecryptError):
        decode_request(HDR + ENC + b"".join(chunks))


def test_an_empty_final_request_chunk_relabelled_as_non_final_is_refused_unopened():
    # The example's final chunk carries no plaintext (its sealed form is just the tag), so
    # relabelled as a non-final chunk it is an empty non-final chunk: refused before any AEAD.
    assert len(FINAL) - 1 == 16
    relabelled = encode_varint(len(FINAL) - 1) + FINAL[1:]
    with pytest.raises(MalformedMessageError):
        decode_request(HDR + ENC + C1 + C2 + relabelled + FINAL)


@pytest.mark.parametrize(
    "chunks",
    [[R2, R1, R_FINAL], [R1, R1, R2, R_FINAL], [R2, R_FINAL], [R1, b"\x00" + R2[1:]]],
)
def test_reordered_duplicated_dropped_or_relabelled_response_chunks(chunks):
    with pytest.raises(DecryptError):
        decode_response(R_NONCE + b"".join(chunks))


def test_missing_final_chunk_is_truncation_even_when_every_chunk_decrypts():
    decoder = ChunkedRequestDecoder(STORE)
    assert decoder.feed(HDR + ENC + C1 + C2) != []
    with pytest.raises(TruncatedMessageError):
        decoder.finish()
    assert not decoder.is_complete
    response = response_decoder()
    assert response.feed(R_NONCE + R1 + R2) != []
    with pytest.raises(TruncatedMessageError):
        response.finish()


def test_empty_non_final_chunk_is_malformed():
    # Sealed by a correct HPKE context, so only the rule itself can reject it.
    header = request_header(1, SUITE)
    enc, sender = setup_base_sender(
        SUITE, _KEY.config.public_key, request_info(CHUNKED_REQUEST_LABEL, header)
    )
    empty = sender.seal(b"", b"")
    final = sender.seal(b"final", b"x")
    with pytest.raises(MalformedMessageError, match="no plaintext"):
        decode_request(header + enc + encode_varint(len(empty)) + empty + b"\x00" + final)


def test_encoders_refuse_an_empty_non_final_chunk_and_data_after_the_final_one():
    encoder = ChunkedRequestEncoder(_KEY.config)
    with pytest.raises(ValueError, match="must carry data"):
        encoder.seal_chunk(b"")
    encoder.seal_chunk(b"", final=True)
    with pytest.raises(ValueError, match="already ended"):
        encoder.seal_chunk(b"x")
    response = ChunkedRequestDecoder(STORE)
    response.feed(encoder.header)
    out = response.response_encoder()
    with pytest.raises(ValueError, match="must carry data"):
        out.seal_chunk(b"")
    out.seal_chunk(b"end", final=True)
    with pytest.raises(ValueError, match="already ended"):
        out.seal_chunk(b"x", final=True)


@pytest.mark.parametrize(
    "length", [bytes.fromhex("ffffffffffffffff"), bytes.fromhex("c000000000004011")]
)
def test_oversized_lengths_are_malformed(length):
    with pytest.raises(MalformedMessageError, match="maximum chunk size"):
        decode_request(HDR + ENC + length)
    with pytest.raises(MalformedMessageError, match="maximum chunk size"):
        decode_response(R_NONCE + length)


def test_chunk_size_limit_is_configurable_and_at_least_16_kib():
    big = b"b" * (DEFAULT_MAX_CHUNK_SIZE + 1)
    encoder = ChunkedRequestEncoder(_KEY.config, max_chunk_size=2 * DEFAULT_MAX_CHUNK_SIZE)
    wire = encoder.header + encoder.seal_chunk(big) + encoder.seal_chunk(b"", final=True)
    with pytest.raises(MalformedMessageError, match="maximum chunk size"):
        decode_request(wire)
    assert decode_request(wire, max_chunk_size=2 * DEFAULT_MAX_CHUNK_SIZE) == big
    with pytest.raises(ValueError, match="at least"):
        ChunkedRequestDecoder(STORE, max_chunk_size=DEFAULT_MAX_CHUNK_SIZE - 1)


def test_a_full_16_kib_chunk_is_accepted_and_larger_input_is_split():
    encoder = ChunkedRequestEncoder(_KEY.config)
    exact = encoder.seal_chunk(b"a" * DEFAULT_MAX_CHUNK_SIZE)
    split = encoder.seal_chunk(b"c" * (2 * DEFAULT_MAX_CHUNK_SIZE + 1), final=True)
    decoder = ChunkedRequestDecoder(STORE)
    pieces = decoder.feed(encoder.header + exact + split)
    assert [len(p) for p in pieces] == [DEFAULT_MAX_CHUNK_SIZE] * 3
    assert decoder.finish() == b"c"


def test_trailing_bytes_after_the_final_chunk():
    # The final chunk runs to the end of the stream (draft section 4), so bytes appended to a
    # message become part of its final chunk, which then fails to authenticate.
    with pytest.raises(DecryptError):
        decode_request(REQUEST + b"\x00")
    with pytest.raises(DecryptError):
        decode_response(RESPONSE + b"\x00")
    # Bytes arriving after the end of the stream was declared are malformed.
    decoder = ChunkedRequestDecoder(STORE)
    decoder.feed(REQUEST)
    decoder.finish()
    with pytest.raises(MalformedMessageError, match="after the end"):
        decoder.feed(b"\x00")


def test_unknown_key_id_is_reported_from_the_first_byte():
    decoder = ChunkedRequestDecoder(STORE)
    with pytest.raises(UnknownKeyIdError) as info:
        decoder.feed(b"\x02" + HDR[1:])
    assert info.value.key_id == 2


@pytest.mark.parametrize(
    "header",
    [
        bytes.fromhex("01647a00010001"),  # the key's KEM is X25519
        bytes.fromhex("01002000010002"),  # AES-256-GCM is not offered by this config
        bytes.fromhex("01002000010099"),  # no such AEAD
        bytes.fromhex("01002000020001"),  # no such KDF here
    ],
)
def test_wrong_suite(header):
    with pytest.raises(UnsupportedSuiteError):
        ChunkedRequestDecoder(STORE).feed(header)


def test_a_failed_decoder_stays_failed():
    decoder = ChunkedRequestDecoder(STORE)
    with pytest.raises(DecryptError):
        decoder.feed(HDR + ENC + C2)
    with pytest.raises(MalformedMessageError, match="already failed"):
        decoder.feed(C1)
    with pytest.raises(MalformedMessageError, match="already failed"):
        decoder.finish()


def test_response_encoder_needs_the_header_first():
    with pytest.raises(ValueError, match="header"):
        ChunkedRequestDecoder(STORE).response_encoder()
