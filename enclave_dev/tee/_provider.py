"""Quotes from the simulator: structurally real, signed by a simulated Intel-like PKI.

Only ever chosen explicitly; every construction logs a loud warning. The simulator's root is
never trusted by default anywhere, so these quotes verify only where that root is passed in.
"""

from __future__ import annotations

import logging
from typing import Protocol

from attestation.providers._types import ProviderName, QuoteResult, check_report_data

__all__ = ["SIMULATED_TEE_WARNING", "QuoteSimulator", "SimulatedQuoteProvider"]

logger = logging.getLogger(__name__)

SIMULATED_TEE_WARNING = (
    "SIMULATED TEE: quotes are not rooted in Intel hardware and prove nothing about this "
    "machine; they verify only against the simulator's own root CA. Never use this in production."
)


class QuoteSimulator(Protocol):
    """What the provider needs of ``enclave_dev.tee.Simulator``."""

    def quote(self, report_data: bytes) -> bytes: ...


class SimulatedQuoteProvider:
    """Wraps a simulator; chosen only on explicit request."""

    name: ProviderName = "simulated"

    def __init__(self, simulator: QuoteSimulator) -> None:
        logger.warning(SIMULATED_TEE_WARNING)
        self._simulator = simulator

    def __repr__(self) -> str:
        return "SimulatedQuoteProvider()"

    async def get_quote(self, report_data: bytes) -> QuoteResult:
        data = check_report_data(report_data)
        return QuoteResult(quote=self._simulator.quote(data), provider=self.name)
