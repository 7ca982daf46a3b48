"""Event logs: dstack JSON and CCEL parsing, RTMR replay, and the check against a quote."""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.errors import EvidenceError, VerificationError
from attestation.eventlog import (
    DSTACK_RUNTIME_EVENT_TYPE,
    EV_NO_ACTION,
    Event,
    EventLog,
    parse_ccel,
    parse_dstack_event_log,
    replay_rtmrs,
    runtime_event_digest,
    verify_event_log,
)

ZERO48 = bytes(48)
# Known answers computed with `openssl dgst -sha384`, not with the code under test.
SHA384_OF_96_ZEROS = bytes.fromhex(
    "f57bb7ed82c6ae4a29e6c9879338c592c7d42a39135583e8ccbe3940f2344b0e"
    "b6eb8503db0ffd6a39ddd00cd07d8317"
)
SHA384_ABC = bytes.fromhex(
    "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
    "8086072ba1e7cc2358baeca134c825a7"
)
EXTEND_ZERO_WITH_SHA384_ABC = bytes.fromhex(
    "93732e3733514a841c982cfa75ea76ab55fe011acb9cd980ef4523913c65be1b"
    "0998e04d77f8c174f81a82151619ca40"
)
# sha384(01 00 00 08 ":app-id:" de ad be ef)
RUNTIME_V1_APP_ID = bytes.fromhex(
    "67b4be4efed0893cfa2bb1d35dca209ad8348b4c97f980807bcde8b9a0f26398"
    "dd0923d6eccb5aa2096d98046da8740f"
)
# sha384('{"event":"compose-hash","event_type":134217729,"payload":"abcd","version":2}')
RUNTIME_V2_COMPOSE_HASH = bytes.fromhex(
    "11f83e5a93c47732e3945a0157a1d22f96ca06cbf6ffb7b2170164f5cbae0612"
    "174f74c4809203e126743e0ed06d7c1f"
)

SHA256, SHA384 = 0x000B, 0x000C


def _extend(register: bytes, digest: bytes) -> bytes:
    return hashlib.sha384(register + digest).digest()


# --- replay --------------------------------------------------------------------------------


def test_replay_of_nothing_is_zero() -> None:
    assert replay_rtmrs([]) == (ZERO48, ZERO48, ZERO48, ZERO48)


def test_replay_known_answers() -> None:
    events = [
        Event(imr=0, event_type=1, digest=ZERO48),
        Event(imr=2, event_type=1, digest=SHA384_ABC),
    ]
    assert replay_rtmrs(events) == (
        SHA384_OF_96_ZEROS,
        ZERO48,
        EXTEND_ZERO_WITH_SHA384_ABC,
        ZERO48,
    )


def test_replay_depends_on_order() -> None:
    a = Event(imr=3, event_type=1, digest=ZERO48)
    b = Event(imr=3, event_type=1, digest=SHA384_ABC)
    assert replay_rtmrs([a, b])[3] != replay_rtmrs([b, a])[3]
    assert replay_rtmrs([a, b])[3] == _extend(_extend(ZERO48, ZERO48), SHA384_ABC)


@pytest.mark.parametrize(
    ("imr", "digest"), [(-1, ZERO48), (4, ZERO48), (0, bytes(47)), (0, bytes(64))]
)
def test_event_refuses_bad_fields(imr: int, digest: bytes) -> None:
    with pytest.raises(EvidenceError):
        Event(imr=imr, event_type=1, digest=digest)


# --- dstack JSON ---------------------------------------------------------------------------


def _dstack_entry(
    imr: int, digest: bytes, event_type: int = 1, **extra: object
) -> dict[str, object]:
    entry: dict[str, object] = {
        "imr": imr,
        "event_type": event_type,
        "digest": digest.hex(),
        "event": "",
        "event_payload": "",
    }
    entry.update(extra)
    return entry


def _runtime_entry(name: str, payload: bytes, digest: bytes | None = None) -> dict[str, object]:
    digest = runtime_event_digest(name, payload) if digest is None else digest
    return {
        "imr": 3,
        "event_type": DSTACK_RUNTIME_EVENT_TYPE,
        "digest": digest.hex(),
        "event": name,
        "event_payload": payload.hex(),
    }


def _sample_dstack_log() -> list[dict[str, object]]:
    return [
        _dstack_entry(0, ZERO48, event_payload="0102"),
        _dstack_entry(1, SHA384_ABC),
        _dstack_entry(0, SHA384_ABC, event_type=0x80000001),
        _runtime_entry("app-id", bytes.fromhex("deadbeef")),
        _runtime_entry("compose-hash", b"\x11" * 32),
    ]


def test_runtime_event_digest_known_answers() -> None:
    assert runtime_event_digest("app-id", bytes.fromhex("deadbeef")) == RUNTIME_V1_APP_ID
    assert runtime_event_digest("compose-hash", b"\xab\xcd", 2) == RUNTIME_V2_COMPOSE_HASH


def test_parse_dstack_log_and_replay() -> None:
    text = json.dumps(_sample_dstack_log())
    log = parse_dstack_event_log(text)
    assert log.format == "dstack"
    assert log.raw == text.encode()
    assert [e.imr for e in log.events] == [0, 1, 0, 3, 3]
    assert log.events[0].payload == b"\x01\x02"
    rtmr3 = _extend(
        _extend(ZERO48, RUNTIME_V1_APP_ID), runtime_event_digest("compose-hash", b"\x11" * 32)
    )
    assert log.replay() == (
        _extend(SHA384_OF_96_ZEROS, SHA384_ABC),
        EXTEND_ZERO_WITH_SHA384_ABC,
        ZERO48,
        rtmr3,
    )
    verify_event_log(log, log.replay())
    assert [e.payload for e in log.named("compose-hash")] == [b"\x11" * 32]


def test_parse_dstack_log_accepts_bytes_and_extra_fields() -> None:
    entries = _sample_dstack_log()
    entries[0]["preimage"] = None
    entries[1]["hash_input"] = "00"
    log = parse_dstack_event_log(json.dumps(entries).encode())
    assert len(log.events) == 5


def test_stripped_runtime_digest_is_recomputed() -> None:
    v1 = _runtime_entry("app-id", bytes.fromhex("deadbeef"))
    v1["digest"] = ""
    v2 = _runtime_entry("compose-hash", b"\xab\xcd")
    v2["digest"] = ""
    v2["version"] = 2
    log = parse_dstack_event_log(json.dumps([v1, v2]))
    assert [e.digest for e in log.events] == [RUNTIME_V1_APP_ID, RUNTIME_V2_COMPOSE_HASH]


def test_runtime_v2_digest_accepted() -> None:
    entry = _runtime_entry("compose-hash", b"\xab\xcd", digest=RUNTIME_V2_COMPOSE_HASH)
    log = parse_dstack_event_log(json.dumps([entry]))
    assert log.events[0].digest == RUNTIME_V2_COMPOSE_HASH


def test_runtime_event_whose_payload_was_swapped_is_refused() -> None:
    entry = _runtime_entry("compose-hash", b"\x11" * 32)
    entry["event_payload"] = (b"\x22" * 32).hex()
    with pytest.raises(EvidenceError, match="does not commit"):
        parse_dstack_event_log(json.dumps([entry]))


def test_runtime_event_whose_name_was_swapped_is_refused() -> None:
    entry = _runtime_entry("app-id", b"\x11")
    entry["event"] = "instance-id"
    with pytest.raises(EvidenceError, match="does not commit"):
        parse_dstack_event_log(json.dumps([entry]))


def test_mutated_digest_fails_verification() -> None:
    entries = _sample_dstack_log()
    genuine = parse_dstack_event_log(json.dumps(entries)).replay()
    flipped = bytearray(SHA384_ABC)
    flipped[0] ^= 0x01
    entries[1]["digest"] = bytes(flipped).hex()
    with pytest.raises(VerificationError) as info:
        verify_event_log(parse_dstack_event_log(json.dumps(entries)), genuine)
    assert info.value.reason == "event_log_mismatch"
    assert "RTMR1" in info.value.detail
    assert "RTMR0" not in info.value.detail


def test_removed_event_fails_verification() -> None:
    entries = _sample_dstack_log()
    genuine = parse_dstack_event_log(json.dumps(entries)).replay()
    with pytest.raises(VerificationError) as info:
        verify_event_log(parse_dstack_event_log(json.dumps(entries[:-1])), genuine)
    assert info.value.reason == "event_log_mismatch"
    assert "RTMR3" in info.value.detail


def test_verify_requires_four_48_byte_registers() -> None:
    log = parse_dstack_event_log("[]")
    with pytest.raises(ValueError, match="four"):
        verify_event_log(log, (ZERO48,) * 3)
    with pytest.raises(ValueError, match="four"):
        verify_event_log(log, (ZERO48, ZERO48, ZERO48, bytes(32)))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "{}",
        "[1]",
        '[{"imr": 0}]',
        '[{"imr": "0", "event_type": 1, "digest": ""}]',
        '[{"imr": true, "event_type": 1, "digest": ""}]',
        '[{"imr": 4, "event_type": 1, "digest": "' + "00" * 48 + '"}]',
        '[{"imr": 0, "event_type": -1, "digest": "' + "00" * 48 + '"}]',
        '[{"imr": 0, "event_type": 1, "digest": "' + "00" * 47 + '"}]',
        '[{"imr": 0, "event_type": 1, "digest": "zz"}]',
        '[{"imr": 0, "event_type": 1, "digest": "0 0"}]',
        '[{"imr": 0, "event_type": 1, "digest": "' + "00" * 48 + '", "event": 5}]',
        '[{"imr": 0, "event_type": 1, "digest": "' + "00" * 48 + '", "event_payload": "abc"}]',
        '[{"imr": 3, "event_type": 134217729, "digest": "", "event": "x", "version": 3}]',
        '[{"imr": 3, "event_type": 134217729, "digest": "", "event": "x", "version": true}]',
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_malformed_dstack_logs_raise_evidence_error(text: str) -> None:
    with pytest.raises(EvidenceError):
        parse_dstack_event_log(text)


def test_non_utf8_dstack_log_raises_evidence_error() -> None:
    with pytest.raises(EvidenceError):
        parse_dstack_event_log(b"\xff\xfe[]")
    with pytest.raises(EvidenceError):
        parse_dstack_event_log("[\ud800]")


# --- CCEL binary ---------------------------------------------------------------------------


def _spec_id_header(algorithms: list[tuple[int, int]]) -> bytes:
    spec = b"Spec ID Event03\x00" + struct.pack("<IBBBB", 0, 0, 2, 0, 2)
    spec += struct.pack("<I", len(algorithms))
    spec += b"".join(struct.pack("<HH", alg, size) for alg, size in algorithms)
    spec += b"\x00"  # no vendor info
    return struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(spec)) + spec


def _pcr_event2(
    mr_index: int, event_type: int, digests: list[tuple[int, bytes]], data: bytes
) -> bytes:
    out = struct.pack("<III", mr_index, event_type, len(digests))
    out += b"".join(struct.pack("<H", alg) + d for alg, d in digests)
    return out + struct.pack("<I", len(data)) + data


BOTH = [(SHA256, 32), (SHA384, 48)]


def _sample_ccel(padding: bytes = b"") -> bytes:
    return (
        _spec_id_header(BOTH)
        + _pcr_event2(0, 0x8, [(SHA256, bytes(32)), (SHA384, b"\x07" * 48)], b"mrtd event")
        + _pcr_event2(1, 0x80000008, [(SHA256, bytes(32)), (SHA384, ZERO48)], b"firmware")
        + _pcr_event2(2, EV_NO_ACTION, [], b"not extended")
        + _pcr_event2(3, 0xD, [(SHA384, SHA384_ABC), (SHA256, b"\x01" * 32)], b"kernel")
        + _pcr_event2(4, DSTACK_RUNTIME_EVENT_TYPE, [(SHA384, SHA384_ABC)], b"runtime")
        + padding
    )


@pytest.mark.parametrize("padding", [b"", b"\xff" * 64, b"\x00" * 64, b"\xff\xff\xff\xff"])
def test_parse_ccel_maps_mr_index_to_rtmr(padding: bytes) -> None:
    data = _sample_ccel(padding)
    log = parse_ccel(data)
    assert log.format == "ccel"
    assert log.raw == data
    # MR index 0 (MRTD) and EV_NO_ACTION are not extended into RTMRs.
    assert [(e.imr, e.event_type, e.payload) for e in log.events] == [
        (0, 0x80000008, b"firmware"),
        (2, 0xD, b"kernel"),
        (3, DSTACK_RUNTIME_EVENT_TYPE, b"runtime"),
    ]
    assert log.replay() == (
        SHA384_OF_96_ZEROS,
        ZERO48,
        EXTEND_ZERO_WITH_SHA384_ABC,
        EXTEND_ZERO_WITH_SHA384_ABC,
    )
    verify_event_log(log, log.replay())


def test_ccel_sha384_only() -> None:
    data = _spec_id_header([(SHA384, 48)]) + _pcr_event2(2, 1, [(SHA384, ZERO48)], b"")
    assert parse_ccel(data).replay()[1] == SHA384_OF_96_ZEROS


def test_ccel_mutated_digest_fails_verification() -> None:
    data = bytearray(_sample_ccel())
    genuine = parse_ccel(bytes(data)).replay()
    at = bytes(data).index(SHA384_ABC)
    data[at] ^= 0x80
    with pytest.raises(VerificationError) as info:
        verify_event_log(parse_ccel(bytes(data)), genuine)
    assert info.value.reason == "event_log_mismatch"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "truncated"),
        (_spec_id_header(BOTH)[:-3], "truncated"),
        (_spec_id_header([(SHA256, 32)]), "SHA-384"),
        (_spec_id_header([(SHA384, 32)]), "inconsistently"),
        (_spec_id_header([(SHA384, 48), (SHA384, 48)]), "inconsistently"),
        (_spec_id_header([]), "algorithms"),
        (struct.pack("<II", 0, 1) + _spec_id_header(BOTH)[8:], "EV_NO_ACTION"),
        (_spec_id_header(BOTH).replace(b"Event03", b"Event02"), "Spec ID"),
        (_spec_id_header(BOTH) + _pcr_event2(5, 1, [(SHA384, ZERO48)], b""), "MR index"),
        (_spec_id_header(BOTH) + _pcr_event2(1, 1, [(SHA256, bytes(32))], b""), "no SHA-384"),
        (_spec_id_header(BOTH) + _pcr_event2(1, 1, [(0x0004, bytes(20))], b""), "undeclared"),
        (
            _spec_id_header(BOTH) + _pcr_event2(1, 1, [(SHA384, ZERO48), (SHA384, ZERO48)], b""),
            "repeated",
        ),
        (_spec_id_header(BOTH) + _pcr_event2(1, 1, [(SHA384, ZERO48)], b"abc")[:-1], "truncated"),
        (_spec_id_header(BOTH) + struct.pack("<III", 1, 1, 9), "digests"),
        (_spec_id_header(BOTH) + b"\x01\x00", "truncated"),
    ],
)
def test_malformed_ccel_raises_evidence_error(data: bytes, match: str) -> None:
    with pytest.raises(EvidenceError, match=match):
        parse_ccel(data)


def test_ccel_event_size_limit() -> None:
    data = _spec_id_header(BOTH) + struct.pack("<III", 1, 1, 1) + struct.pack("<H", SHA384)
    data += ZERO48 + struct.pack("<I", 0xFFFFFFF0)
    with pytest.raises(EvidenceError, match="MAX_EVENT_DATA_BYTES"):
        parse_ccel(data)


# --- fuzz: only EvidenceError may escape ---------------------------------------------------

_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.binary(max_size=512))
def test_fuzz_ccel_random_bytes(data: bytes) -> None:
    with contextlib.suppress(EvidenceError):
        parse_ccel(data)


@_FUZZ
@given(st.data())
def test_fuzz_ccel_mutations(data: st.DataObject) -> None:
    blob = bytearray(_sample_ccel())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    with contextlib.suppress(EvidenceError):
        parse_ccel(bytes(blob[:cut]))


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["00" * 48, "", "zz", "0x00"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["imr", "event_type", "digest", "event", "event_payload", "version", "x"]
            ),
            children,
            max_size=7,
        )
    ),
    max_leaves=20,
)


@_FUZZ
@given(_json_values)
def test_fuzz_dstack_json_structures(value: object) -> None:
    with contextlib.suppress(EvidenceError):
        parse_dstack_event_log(json.dumps(value))


@_FUZZ
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_fuzz_dstack_random_input(data: str | bytes) -> None:
    with contextlib.suppress(EvidenceError):
        parse_dstack_event_log(data)


def test_event_log_is_a_frozen_value() -> None:
    log = EventLog(events=(), format="dstack")
    with pytest.raises(AttributeError):
        log.events = ()  # type: ignore[misc]
