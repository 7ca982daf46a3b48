"""detect_provider: configfs-tsm, then dstack, never simulated unless asked; the simulated one."""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dcap_qvl
import pytest

from attestation.errors import QuoteProviderUnavailableError
from attestation.providers import (
    ConfigfsTsmProvider,
    DstackProvider,
    QuoteProvider,
    detect_provider,
)
from enclave_dev.tee import SIMULATED_TEE_WARNING, SimulatedQuoteProvider, Simulator

REPORT_DATA = bytes(range(64))


@pytest.fixture
def tsm_root(tmp_path: Path) -> Path:
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    return root


@pytest.fixture
def dstack_socket() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="detect-", dir="/tmp"))
    path = directory / "dstack.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    try:
        yield path
    finally:
        listener.close()
        shutil.rmtree(directory)


@pytest.fixture(scope="module")
def simulator() -> Simulator:
    return Simulator.create()


def test_auto_prefers_configfs_tsm(tsm_root: Path, dstack_socket: Path) -> None:
    provider = detect_provider(tsm_root=tsm_root, dstack_socket=dstack_socket)
    assert isinstance(provider, ConfigfsTsmProvider)
    assert provider.name == "configfs-tsm"


def test_auto_falls_back_to_dstack(tmp_path: Path, dstack_socket: Path) -> None:
    provider = detect_provider(tsm_root=tmp_path / "absent", dstack_socket=dstack_socket)
    assert isinstance(provider, DstackProvider)
    assert provider.name == "dstack"


def test_auto_ignores_a_plain_file_where_the_socket_should_be(tmp_path: Path) -> None:
    not_a_socket = tmp_path / "dstack.sock"
    not_a_socket.write_bytes(b"")
    with pytest.raises(QuoteProviderUnavailableError):
        detect_provider(tsm_root=tmp_path / "absent", dstack_socket=not_a_socket)


def test_auto_never_picks_simulated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), pytest.raises(QuoteProviderUnavailableError) as info:
        detect_provider(tsm_root=tmp_path / "absent", dstack_socket=tmp_path / "absent.sock")
    assert "explicitly" in str(info.value)
    assert "SIMULATED" not in caplog.text


def test_explicit_kinds_that_are_absent_are_unavailable(tmp_path: Path) -> None:
    with pytest.raises(QuoteProviderUnavailableError):
        detect_provider("configfs-tsm", tsm_root=tmp_path / "absent")
    with pytest.raises(QuoteProviderUnavailableError):
        detect_provider("dstack", dstack_socket=tmp_path / "absent.sock")


def test_explicit_dstack_skips_configfs(tsm_root: Path, dstack_socket: Path) -> None:
    provider = detect_provider("dstack", tsm_root=tsm_root, dstack_socket=dstack_socket)
    assert isinstance(provider, DstackProvider)


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown"):
        detect_provider("sgx")  # type: ignore[arg-type]


def test_simulated_warns_loudly_every_time(
    simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        SimulatedQuoteProvider(simulator)
        SimulatedQuoteProvider(simulator)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all(r.getMessage() == SIMULATED_TEE_WARNING for r in warnings)
    assert SIMULATED_TEE_WARNING.startswith(
        "SIMULATED TEE: quotes are not rooted in Intel hardware"
    )


async def test_simulated_quote_verifies_against_the_simulator_root_only(
    simulator: Simulator,
) -> None:
    provider: QuoteProvider = SimulatedQuoteProvider(simulator)
    result = await provider.get_quote(REPORT_DATA)
    assert result.provider == "simulated"
    assert result.event_log is None
    verified = dcap_qvl.verify_with_root_ca(
        result.quote, simulator.collateral(), simulator.root_ca_der, simulator.now
    )
    assert verified.status == "UpToDate"
    assert REPORT_DATA.hex() in verified.to_json()
    with pytest.raises(ValueError, match="64 bytes"):
        await provider.get_quote(bytes(63))


def test_the_product_never_makes_the_simulated_provider() -> None:
    """Only the development package (enclave_dev.tee) makes it, through enclave.development."""
    with pytest.raises(ValueError, match="development package"):
        detect_provider("simulated")
