from __future__ import annotations

import pytest

from enclave_dev.tee import Simulator

#: A fixed creation time (2027-01-15T08:00:00Z) so that no test depends on the clock.
NOW = 1_800_000_000


@pytest.fixture(scope="module")
def simulator() -> Simulator:
    return Simulator.create(now=NOW)


@pytest.fixture(scope="module")
def outdated() -> Simulator:
    return Simulator.create(now=NOW, tcb="OutOfDate")


@pytest.fixture
def report_data() -> bytes:
    return bytes(range(64))
