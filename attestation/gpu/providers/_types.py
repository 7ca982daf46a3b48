"""The GPU provider seam."""

from __future__ import annotations

from typing import Literal, Protocol

from attestation.gpu.evidence import GpuEvidence

__all__ = ["GpuProvider", "GpuProviderName"]

GpuProviderName = Literal["nvml", "simulated"]


class GpuProvider(Protocol):
    """Collects every GPU's evidence for one 32-byte nonce, in NVML index order."""

    name: GpuProviderName

    async def collect(self, nonce: bytes) -> tuple[GpuEvidence, ...]: ...
