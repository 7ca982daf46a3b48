"""GPU evidence providers behind one Protocol: NVML (real GPUs).

``make_gpu_provider("nvml")`` collects through NVIDIA's maintained bindings (``nvidia-ml-py``,
the ``gpu`` extra). The simulated provider is in the development package
(``enclave_dev.gpu.SimulatedGpuProvider``, in no wheel); the service makes it through
``enclave.development.load("insecure_allow_simulated_gpu")``. There is no auto-detection: a
service that attests GPUs names its provider, and none is the default.
"""

from __future__ import annotations

from typing import Literal

from attestation.gpu.providers._nvml import NvmlGpuProvider
from attestation.gpu.providers._types import GpuProvider, GpuProviderName

__all__ = [
    "GpuProvider",
    "GpuProviderKind",
    "GpuProviderName",
    "NvmlGpuProvider",
    "make_gpu_provider",
]

GpuProviderKind = Literal["none", "nvml", "simulated"]


def make_gpu_provider(kind: GpuProviderKind) -> GpuProvider | None:
    """The provider of ``kind``; ``None`` for ``"none"``; ``"simulated"`` is refused with
    ``ValueError`` (the development package makes that one)."""
    if kind == "none":
        return None
    if kind == "nvml":
        return NvmlGpuProvider()
    if kind == "simulated":
        raise ValueError(
            "the simulated GPU provider is not a product provider: it is made by the "
            "development package (enclave_dev.gpu.SimulatedGpuProvider)"
        )
    raise ValueError(f"unknown GPU provider kind {kind!r}")
