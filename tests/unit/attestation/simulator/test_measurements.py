from __future__ import annotations

import pytest

from enclave_dev.tee import SimulatedMeasurements


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mrtd": b"\x00" * 47},
        {"mrconfigid": b"\x00" * 49},
        {"mrowner": "00" * 48},
        {"mrownerconfig": b""},
        {"rtmrs": (b"\x00" * 48,) * 3},
        {"rtmrs": (b"\x00" * 48, b"\x00" * 48, b"\x00" * 48, b"\x00" * 47)},
        {"td_attributes": b"\x00" * 7},
        {"xfam": b"\x00" * 9},
    ],
)
def test_wrong_sizes_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"bytes|registers"):
        SimulatedMeasurements(**kwargs)  # type: ignore[arg-type]


def test_debug_is_bit_zero_of_td_attributes() -> None:
    assert SimulatedMeasurements(td_attributes=bytes.fromhex("0100001000000000")).debug
    assert not SimulatedMeasurements(td_attributes=bytes.fromhex("0200001000000000")).debug


def test_measurements_are_frozen() -> None:
    m = SimulatedMeasurements()
    with pytest.raises(AttributeError):
        m.mrtd = b"\x00" * 48  # type: ignore[misc]
