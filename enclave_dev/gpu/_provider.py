"""Evidence from the GPU simulator: chosen only explicitly; every construction warns loudly."""

from __future__ import annotations

import logging

from attestation.gpu.evidence import GpuEvidence
from attestation.gpu.providers._types import GpuProviderName
from enclave_dev.gpu._simulator import SIMULATED_GPU_WARNING, GpuSimulator

__all__ = ["SimulatedGpuProvider"]

logger = logging.getLogger(__name__)


class SimulatedGpuProvider:
    name: GpuProviderName = "simulated"

    def __init__(self, simulator: GpuSimulator) -> None:
        logger.warning(SIMULATED_GPU_WARNING)
        self.simulator = simulator

    def __repr__(self) -> str:
        return f"SimulatedGpuProvider(count={self.simulator.count})"

    async def collect(self, nonce: bytes) -> tuple[GpuEvidence, ...]:
        if len(nonce) != 32:
            raise ValueError("a GPU nonce is 32 bytes")
        return self.simulator.evidence(nonce)
