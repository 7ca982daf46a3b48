"""deploy/image/measure.py: MRTD from TDVF firmware (synthetic images built here, and the
distribution's OVMF when installed) and policy fragments from a reference quote (simulated
TDX quotes with an event log that replays to their RTMRs)."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import tomllib
import uuid
from pathlib import Path
from types import ModuleType

import pytest

from attestation.eventlog import parse_dstack_event_log, replay_rtmrs
from attestation.policy import policy_from_mapping
from enclave_dev.tee import SimulatedMeasurements, Simulator
from tests.deploy._repo import DEPLOY, load_script

FOOTER = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
METADATA = uuid.UUID("e47a6535-984a-4798-865e-4685a7bf8ec2").bytes_le
SIZE = 0x10000
DESCRIPTOR_AT = 0x100
# (data_offset, raw_size, gpa, memory_size, type, attributes)
SECTIONS = (
    (0x2000, 0x2000, 0xFFFF0000, 0x2000, 0, 1),  # BFV: added and extended
    (0x1000, 0x1000, 0xFFFE0000, 0x1000, 1, 0),  # CFV: added, not extended
    (0, 0, 0x800000, 0x3000, 3, 0),  # temporary memory: added
    (0, 0, 0x900000, 0x2000, 3, 2),  # PAGE.AUG: neither
)


def firmware(sections: tuple[tuple[int, ...], ...] = SECTIONS) -> bytes:
    image = bytearray(bytes(range(256)) * (SIZE // 256))
    table = struct.pack("<4sIII", b"TDVF", 16 + 32 * len(sections), 1, len(sections))
    table += b"".join(struct.pack("<IIQQII", *s) for s in sections)
    image[DESCRIPTOR_AT : DESCRIPTOR_AT + len(table)] = table
    entry = struct.pack("<I", SIZE - DESCRIPTOR_AT) + struct.pack("<H", 22) + METADATA
    footer = struct.pack("<H", len(entry) + 18) + FOOTER
    guided = entry + footer
    end = SIZE - 32
    image[end - len(guided) : end] = guided
    return bytes(image)


def expected_mrtd(image: bytes, two_pass: bool) -> bytes:
    """The TDX module's MRTD written out as one byte stream (an independent formulation)."""

    def add(gpa: int) -> bytes:
        return b"MEM.PAGE.ADD".ljust(16, b"\0") + gpa.to_bytes(8, "little") + bytes(104)

    def extend(gpa: int, data: bytes) -> bytes:
        return b"MR.EXTEND".ljust(16, b"\0") + gpa.to_bytes(8, "little") + bytes(104) + data

    stream = b""
    for offset, _raw, gpa, size, _kind, attributes in SECTIONS:
        adds = [] if attributes & 2 else [add(gpa + p) for p in range(0, size, 0x1000)]
        extends = []
        if attributes & 1:
            for p in range(0, size, 0x1000):
                extends.append(
                    b"".join(
                        extend(gpa + p + c, image[offset + p + c : offset + p + c + 256])
                        for c in range(0, 0x1000, 256)
                    )
                )
        if two_pass:
            stream += b"".join(adds) + b"".join(extends)
        else:
            for index, page in enumerate(adds):
                stream += page + (extends[index] if extends else b"")
    return hashlib.sha384(stream).digest()


@pytest.fixture(scope="module")
def measure() -> ModuleType:
    return load_script(DEPLOY / "image" / "measure.py", "enclave_measure")


def test_parses_the_tdvf_sections(measure: ModuleType) -> None:
    sections = measure.parse_tdvf(firmware())
    assert [(s.memory_address, s.attributes) for s in sections] == [(s[2], s[5]) for s in SECTIONS]


@pytest.mark.parametrize(("order", "two_pass"), [("single-pass", False), ("two-pass", True)])
def test_mrtd_known_answer(measure: ModuleType, order: str, two_pass: bool) -> None:
    image = firmware()
    assert measure.compute_mrtd(image, order) == expected_mrtd(image, two_pass)


def test_page_orders_differ_and_data_matters(measure: ModuleType) -> None:
    image = firmware()
    single = measure.compute_mrtd(image, "single-pass")
    assert single != measure.compute_mrtd(image, "two-pass")
    flipped = bytearray(image)
    flipped[0x2000 + 5] ^= 1  # inside the measured BFV
    assert measure.compute_mrtd(bytes(flipped), "single-pass") != single
    unmeasured = bytearray(image)
    unmeasured[0x1000 + 5] ^= 1  # inside the CFV, which is added but not extended
    assert measure.compute_mrtd(bytes(unmeasured), "single-pass") == single


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[: SIZE - 48] + bytes(16) + b[SIZE - 32 :], "footer"),
        (lambda b: b.replace(METADATA, bytes(16)), "no TDX metadata"),
        (lambda b: b.replace(b"TDVF", b"XXXX"), "signature"),
        (lambda b: firmware(((0x2000, 0x2000, 0xFFFF0100, 0x2000, 0, 1),)), "page-aligned"),
        (lambda b: firmware(((0xF000, 0x2000, 0xFFFF0000, 0x2000, 0, 1),)), "past the image"),
    ],
)
def test_malformed_firmware_is_refused(measure: ModuleType, mutate: object, message: str) -> None:
    image = mutate(firmware())  # type: ignore[operator]
    with pytest.raises(measure.MeasureError, match=message):
        measure.compute_mrtd(image)


def test_distribution_ovmf_parses(measure: ModuleType) -> None:
    ovmf = Path("/usr/share/ovmf/OVMF.fd")
    if not ovmf.is_file():
        pytest.skip("no /usr/share/ovmf/OVMF.fd (Debian package: ovmf)")
    sections = measure.parse_tdvf(ovmf.read_bytes())
    measured = [s for s in sections if s.attributes & 1]
    assert measured, "the BFV must be measured"
    assert len(measure.compute_mrtd(ovmf.read_bytes())) == 48


Reference = tuple[Path, Path, Path, SimulatedMeasurements]


def _reference(tmp_path: Path, debug: bool = False) -> Reference:
    """A firmware file, a quote whose MRTD is that firmware's and whose RTMRs are the replay
    of a dstack-format event log, and the event log."""
    image = firmware()
    events = [
        {
            "imr": imr,
            "event_type": 0x80000001 + imr,
            "digest": hashlib.sha384(f"event-{imr}-{n}".encode()).hexdigest(),
            "event": f"boot-{imr}-{n}",
            "event_payload": "",
        }
        for imr in range(4)
        for n in range(2)
    ]
    log_text = json.dumps(events)
    rtmrs = replay_rtmrs(parse_dstack_event_log(log_text).events)
    measure = load_script(DEPLOY / "image" / "measure.py", "enclave_measure")
    attributes = bytes([1 if debug else 0]) + bytes(3) + bytes([0x10]) + bytes(3)
    measurements = SimulatedMeasurements(
        mrtd=measure.compute_mrtd(image, "single-pass"), rtmrs=rtmrs, td_attributes=attributes
    )
    quote = Simulator.create(measurements=measurements).quote(bytes(64))
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = (tmp_path / "OVMF.fd", tmp_path / "quote.hex", tmp_path / "events.json")
    paths[0].write_bytes(image)
    paths[1].write_text(quote.hex(), encoding="ascii")
    paths[2].write_text(log_text, encoding="utf-8")
    return (*paths, measurements)


def test_policy_fragment_from_a_reference_quote(
    measure: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fw, quote, log, measurements = _reference(tmp_path)
    code = measure.main(
        ["policy", "--quote", str(quote), "--event-log", str(log), "--event-log-format",
         "dstack", "--firmware", str(fw), "--rtmr3"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "event log replays" in err
    assert "MRTD matches --firmware (single-pass)" in err
    fragment = tomllib.loads(out)
    assert fragment["mrtd"] == [measurements.mrtd.hex()]
    assert [fragment[f"rtmr{i}"] for i in range(4)] == [[r.hex()] for r in measurements.rtmrs]
    policy_from_mapping(fragment)  # the fragment is a valid policy


def test_policy_refuses_a_log_that_does_not_replay(
    measure: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fw, quote, log, _m = _reference(tmp_path)
    events = json.loads(log.read_text(encoding="utf-8"))
    events[0]["digest"] = "00" * 48
    log.write_text(json.dumps(events), encoding="utf-8")
    code = measure.main(
        ["policy", "--quote", str(quote), "--event-log", str(log), "--event-log-format", "dstack"]
    )
    assert code == 1
    assert "VerificationError" in capsys.readouterr().err


def test_policy_refuses_other_firmware_and_debug_tds(
    measure: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fw, quote, _log, _m = _reference(tmp_path)
    other = bytearray(fw.read_bytes())
    other[0x2000] ^= 1
    fw.write_bytes(bytes(other))
    assert measure.main(["policy", "--quote", str(quote), "--firmware", str(fw)]) == 1
    assert "differs from the quote" in capsys.readouterr().err
    _fw, debug_quote, _log, _m = _reference(tmp_path / "debug", debug=True)
    assert measure.main(["policy", "--quote", str(debug_quote)]) == 1
    assert "DEBUG TD" in capsys.readouterr().err


def test_policy_fragment_from_an_attestation_report(
    measure: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from attestation.evidence import Evidence

    _fw, quote, log, measurements = _reference(tmp_path)
    report = {
        "version": 1,
        "evidence": Evidence(bytes.fromhex(quote.read_text()), b"\xa0").encode().hex(),
        "event_log": {
            "format": "dstack",
            "raw": base64.b64encode(log.read_bytes()).decode("ascii"),
        },
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report), encoding="utf-8")
    assert measure.main(["policy", "--report", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "event log replays" in err
    fragment = tomllib.loads(out)
    assert fragment["rtmr2"] == [measurements.rtmrs[2].hex()]
    assert "rtmr3" not in fragment


def test_policy_file_is_the_clients_format_and_pins_the_measurements(
    measure: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """measure.py writes what `enclave verify --save-policy` writes: the same loader reads it,
    it pins MRTD and RTMR0-2 (so the client sends under it), and it carries a note."""
    from attestation.policy import load_policy, pinned_policy, policy_to_toml

    _fw, quote, _log, measurements = _reference(tmp_path)
    out = tmp_path / "policy.toml"
    code = measure.main(["policy", "--quote", str(quote), "--mrconfigid", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    policy = load_policy(out)
    assert policy.pins_measurements
    assert "measure.py" in policy.note
    expected = pinned_policy(
        {"mrtd": measurements.mrtd, **{f"rtmr{i}": measurements.rtmrs[i] for i in range(3)},
         "mrconfigid": measurements.mrconfigid},
        note=policy.note,
    )  # fmt: skip
    assert policy == expected
    assert out.read_text().endswith(policy_to_toml(expected))
