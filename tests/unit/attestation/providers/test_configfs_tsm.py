"""The configfs-tsm provider against a fake report directory driven by a "kernel" thread."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestation.errors import QuoteProviderError, QuoteProviderUnavailableError
from attestation.providers import ConfigfsTsmProvider, OsTsmFileOps, QuoteResult
from tests.unit.attestation.providers._fake_tsm import FakeTsmKernel, fake_quote

REPORT_DATA = bytes(range(64))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "tsm" / "report"


def _provider(kernel: FakeTsmKernel, **kwargs: float) -> ConfigfsTsmProvider:
    options: dict[str, float] = {"timeout": 10.0, "busy_backoff": 0.001} | kwargs
    return ConfigfsTsmProvider(
        kernel.root,
        file_ops=kernel,
        timeout=options["timeout"],
        busy_backoff=options["busy_backoff"],
        max_race_retries=int(options.get("max_race_retries", 3)),
    )


def _entries(root: Path) -> list[str]:
    return sorted(os.listdir(root))


@pytest.fixture
def kernel(root: Path) -> Iterator[FakeTsmKernel]:
    with FakeTsmKernel(root) as k:
        yield k


async def test_quote_round_trip(kernel: FakeTsmKernel) -> None:
    result = await _provider(kernel).get_quote(REPORT_DATA)
    assert result == QuoteResult(quote=fake_quote(REPORT_DATA), provider="configfs-tsm")
    assert kernel.inblobs == [REPORT_DATA]
    assert _entries(kernel.root) == []  # the entry was removed


async def test_each_quote_uses_a_fresh_entry(kernel: FakeTsmKernel) -> None:
    provider = _provider(kernel)
    first = await provider.get_quote(REPORT_DATA)
    second = await provider.get_quote(bytes(64))
    assert first.quote != second.quote
    assert len(set(kernel.entries_made)) == 2
    assert _entries(kernel.root) == []


async def test_report_data_must_be_64_bytes(kernel: FakeTsmKernel) -> None:
    provider = _provider(kernel)
    for bad in (b"", bytes(63), bytes(65)):
        with pytest.raises(ValueError, match="64 bytes"):
            await provider.get_quote(bad)
    with pytest.raises(TypeError):
        await provider.get_quote("00" * 64)  # type: ignore[arg-type]
    assert kernel.entries_made == []


async def test_one_racing_writer_is_retried(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with FakeTsmKernel(root, racing_writes=1) as kernel, caplog.at_level(logging.WARNING):
        result = await _provider(kernel).get_quote(REPORT_DATA)
    assert result.quote == fake_quote(REPORT_DATA)
    assert len(kernel.entries_made) == 2
    assert "generation race" in caplog.text
    assert _entries(root) == []


async def test_persistent_racing_writer_is_an_error(root: Path) -> None:
    kernel = FakeTsmKernel(root, racing_writes=100)
    with kernel, pytest.raises(QuoteProviderError, match="raced"):
        await _provider(kernel, max_race_retries=2).get_quote(REPORT_DATA)
    assert len(kernel.entries_made) == 3
    assert _entries(root) == []


async def test_generation_moving_during_outblob_read_is_a_race(root: Path) -> None:
    with FakeTsmKernel(root, racing_reads=1) as kernel:
        result = await _provider(kernel).get_quote(REPORT_DATA)
    assert result.quote == fake_quote(REPORT_DATA)
    assert len(kernel.entries_made) == 2


async def test_ebusy_backs_off_and_succeeds(root: Path) -> None:
    with FakeTsmKernel(root, busy_reads=3) as kernel:
        result = await _provider(kernel).get_quote(REPORT_DATA)
    assert result.quote == fake_quote(REPORT_DATA)
    assert kernel.busy_reads == 0
    assert _entries(root) == []


async def test_ebusy_until_the_timeout_is_an_error(root: Path) -> None:
    kernel = FakeTsmKernel(root, busy_reads=10**9)
    # The deadline may fall while backing off ("busy") or while awaiting the kernel ("timed out").
    with kernel, pytest.raises(QuoteProviderError, match=r"busy|timed out"):
        await _provider(kernel, timeout=0.5, busy_backoff=0.01).get_quote(REPORT_DATA)
    assert kernel.busy_reads < 10**9  # it did meet EBUSY
    assert _entries(root) == []


async def test_kernel_that_never_answers_times_out(root: Path) -> None:
    kernel = FakeTsmKernel(root, respond=False)
    with kernel, pytest.raises(QuoteProviderError, match="timed out"):
        await _provider(kernel, timeout=0.2).get_quote(REPORT_DATA)
    assert _entries(root) == []


async def test_wrong_provider_is_refused(root: Path) -> None:
    kernel = FakeTsmKernel(root, provider="sev_guest")
    with kernel, pytest.raises(QuoteProviderError, match="sev_guest"):
        await _provider(kernel).get_quote(REPORT_DATA)
    assert kernel.inblobs == []  # refused before asking for a report
    assert _entries(root) == []


async def test_empty_outblob_is_an_error(root: Path) -> None:
    kernel = FakeTsmKernel(root, quote=lambda _: b"")
    with kernel, pytest.raises(QuoteProviderError, match="empty outblob"):
        await _provider(kernel).get_quote(REPORT_DATA)


async def test_missing_directory_is_unavailable(tmp_path: Path) -> None:
    provider = ConfigfsTsmProvider(tmp_path / "absent", timeout=1.0)
    with pytest.raises(QuoteProviderUnavailableError):
        await provider.get_quote(REPORT_DATA)


async def test_plain_directory_without_configfs_attributes_is_an_error(tmp_path: Path) -> None:
    # A plain directory is not configfs: mkdir makes no attributes, so there is no provider.
    provider = ConfigfsTsmProvider(tmp_path, timeout=1.0)
    with pytest.raises(QuoteProviderError, match="read provider"):
        await provider.get_quote(REPORT_DATA)
    assert _entries(tmp_path) == []


async def test_garbled_generation_is_an_error(root: Path) -> None:
    class Garbled(FakeTsmKernel):
        def read(self, path: Path) -> bytes:
            if path.name == "generation":
                return b"not-a-number\n"
            return super().read(path)

    with Garbled(root) as kernel, pytest.raises(QuoteProviderError, match="generation"):
        await _provider(kernel).get_quote(REPORT_DATA)


async def test_other_os_errors_are_not_retried(root: Path) -> None:
    class Broken(FakeTsmKernel):
        def write(self, path: Path, data: bytes) -> None:
            raise OSError(errno.EIO, "I/O error")

    with Broken(root) as kernel, pytest.raises(QuoteProviderError, match="EIO"):
        await _provider(kernel).get_quote(REPORT_DATA)
    assert len(kernel.entries_made) == 1


def test_os_file_ops_round_trip(tmp_path: Path) -> None:
    ops = OsTsmFileOps()
    entry = tmp_path / "entry"
    ops.make_entry(entry)
    (entry / "inblob").write_bytes(b"")
    ops.write(entry / "inblob", b"abc")
    assert ops.read(entry / "inblob") == b"abc"
    (entry / "inblob").unlink()
    ops.remove_entry(entry)
    assert not entry.exists()


@pytest.mark.parametrize(
    "kwargs", [{"timeout": 0.0}, {"busy_backoff": -1.0}, {"max_race_retries": -1}]
)
def test_constructor_validates(tmp_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        ConfigfsTsmProvider(tmp_path, **kwargs)  # type: ignore[arg-type]
