"""GPU evidence providers behind one Protocol: NVML (real GPUs) and simulated.

``make_gpu_provider("nvml")`` collects through NVIDIA's maintained bindings (``nvidia-ml-py``,
the ``gpu`` extra); ``make_gpu_provider("simulated")`` wraps an
``attestation.gpu.simulator.GpuSimulator`` and says so loudly every time one is made. There is
no auto-detection: a service that attests GPUs names its provider, and none is the default.
"""

from __future__ import annotations

from typing import Literal

from attestation.gpu.providers._nvml import NvmlGpuProvider
from attestation.gpu.providers._simulated import SimulatedGpuProvider
from attestation.gpu.providers._types import GpuProvider, GpuProviderName

__all__ = [
    "GpuProvider",
    "GpuProviderKind",
    "GpuProviderName",
    "NvmlGpuProvider",
    "SimulatedGpuProvider",
    "make_gpu_provider",
]

GpuProviderKind = Literal["none", "nvml", "simulated"]


def make_gpu_provider(kind: GpuProviderKind, *, simulated_count: int = 1) -> GpuProvider | None:
    """The provider of ``kind``; ``None`` for ``"none"``."""
    if kind == "none":
        return None
    if kind == "nvml":
        return NvmlGpuProvider()
    if kind == "simulated":
        from attestation.gpu.simulator import GpuSimulator  # imported only when asked for

        return SimulatedGpuProvider(GpuSimulator(count=simulated_count))
    raise ValueError(f"unknown GPU provider kind {kind!r}")
