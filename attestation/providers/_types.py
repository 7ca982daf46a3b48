"""The provider seam: what every quote provider returns and the Protocol it implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from attestation.eventlog import EventLog

__all__ = ["REPORT_DATA_SIZE", "ProviderName", "QuoteProvider", "QuoteResult", "check_report_data"]

REPORT_DATA_SIZE = 64

ProviderName = Literal["configfs-tsm", "dstack", "coco", "simulated"]


@dataclass(frozen=True)
class QuoteResult:
    """A quote over caller-chosen report_data, the provider that made it, and its event log."""

    quote: bytes
    provider: ProviderName
    event_log: EventLog | None = None


class QuoteProvider(Protocol):
    """Produces a TDX quote whose report_data is exactly the 64 bytes passed in."""

    name: ProviderName

    async def get_quote(self, report_data: bytes) -> QuoteResult: ...


def check_report_data(report_data: bytes) -> bytes:
    """Validate the caller's report_data: exactly 64 bytes (a programming error otherwise)."""
    if not isinstance(report_data, bytes | bytearray | memoryview):
        raise TypeError("report_data must be bytes")
    data = bytes(report_data)
    if len(data) != REPORT_DATA_SIZE:
        raise ValueError(f"report_data must be exactly {REPORT_DATA_SIZE} bytes, got {len(data)}")
    return data
