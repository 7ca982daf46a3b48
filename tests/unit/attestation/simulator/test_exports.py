from __future__ import annotations

import enclave_dev.tee as simulator


def test_public_names_are_exported_and_documented() -> None:
    for name in simulator.__all__:
        member = getattr(simulator, name)
        if callable(member) or isinstance(member, type):
            assert member.__doc__, name
    assert {"Simulator", "SimulatedMeasurements", "SimulationBundle", "write_bundle"} <= set(
        simulator.__all__
    )


def test_simulator_repr_shows_no_key_material() -> None:
    sim = simulator.Simulator.create(now=1_800_000_000)

    assert "SIMULATED" in repr(sim)
    assert "key" not in repr(sim).lower()
