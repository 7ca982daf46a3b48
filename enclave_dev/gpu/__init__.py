"""A simulated NVIDIA-like GPU (its signing PKI, attestation reports, OCSP) and its evidence
provider. DEVELOPMENT ONLY (``insecure_allow_simulated_gpu``); its root is never trusted by
default anywhere."""

from enclave_dev.gpu._provider import SimulatedGpuProvider
from enclave_dev.gpu._simulator import SIMULATED_GPU_WARNING, GpuSimulator, simulated_measurements

__all__ = [
    "SIMULATED_GPU_WARNING",
    "GpuSimulator",
    "SimulatedGpuProvider",
    "simulated_measurements",
]
