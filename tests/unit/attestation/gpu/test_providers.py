"""GPU providers: the simulated GPU (explicit, loud, verifiable only against its own root) and
the NVML provider, driven through pynvml's real ctypes structures with a fake library, and
through the real pynvml where no NVIDIA library is installed (this machine)."""

from __future__ import annotations

import ctypes
import types

import pynvml
import pytest

from attestation.errors import (
    GpuNotInCcModeError,
    GpuProviderError,
    GpuProviderUnavailableError,
    VerificationError,
)
from attestation.gpu import GpuReason, verify_gpu
from attestation.gpu.providers import NvmlGpuProvider, make_gpu_provider
from enclave_dev.gpu import SIMULATED_GPU_WARNING, GpuSimulator, SimulatedGpuProvider

NONCE = bytes(range(32))


async def test_simulated_provider_warns_and_verifies_only_against_its_root(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(ValueError, match="development package"):
        make_gpu_provider("simulated")  # the product never makes it
    provider = SimulatedGpuProvider(GpuSimulator(count=2))
    assert SIMULATED_GPU_WARNING in caplog.text
    evidence = await provider.collect(NONCE)
    assert len(evidence) == 2
    root = provider.simulator.root_der
    for item in evidence:
        verified = verify_gpu(item, nonce=NONCE, insecure_root_der=root)
        assert verified.architecture == "hopper"
        assert len(verified.measurements) == 64
        with pytest.raises(VerificationError) as info:
            verify_gpu(item, nonce=NONCE)  # the pinned NVIDIA root never trusts it
        assert info.value.reason == GpuReason.ROOT_UNTRUSTED


def test_no_provider_is_the_default() -> None:
    assert make_gpu_provider("none") is None


def test_simulated_blackwell_fwid_is_read_from_dice_tcb_info() -> None:
    simulator = GpuSimulator(architecture="blackwell")
    verified = verify_gpu(
        simulator.evidence(NONCE)[0], nonce=NONCE, insecure_root_der=simulator.root_der
    )
    assert verified.architecture == "blackwell"


class _FakeLibrary:
    """pynvml's functions over a simulator, returning pynvml's own ctypes structures."""

    def __init__(self, simulator: GpuSimulator, *, cc_feature: int = 1, devtools: int = 0):
        self.simulator, self.cc_feature, self.devtools = simulator, cc_feature, devtools
        self.shutdowns = 0
        self.ready_set: list[int] = []

    def module(self) -> types.ModuleType:
        fake = types.ModuleType("pynvml_fake")
        for name in dir(pynvml):
            if name.startswith("NVML_") or name.startswith("NVMLError"):
                setattr(fake, name, getattr(pynvml, name))
        fake.nvmlInit = lambda: None  # type: ignore[attr-defined]
        fake.nvmlShutdown = self._shutdown  # type: ignore[attr-defined]
        fake.nvmlSystemGetConfComputeState = self._state  # type: ignore[attr-defined]
        fake.nvmlSystemGetConfComputeGpusReadyState = lambda: 1  # type: ignore[attr-defined]
        fake.nvmlSystemSetConfComputeGpusReadyState = self.ready_set.append  # type: ignore[attr-defined]
        fake.nvmlDeviceGetCount = lambda: self.simulator.count  # type: ignore[attr-defined]
        fake.nvmlDeviceGetHandleByIndex = lambda index: index  # type: ignore[attr-defined]
        fake.nvmlDeviceGetArchitecture = lambda handle: pynvml.NVML_DEVICE_ARCH_HOPPER  # type: ignore[attr-defined]
        fake.nvmlDeviceGetConfComputeGpuCertificate = self._certificate  # type: ignore[attr-defined]
        fake.nvmlDeviceGetConfComputeGpuAttestationReport = self._report  # type: ignore[attr-defined]
        return fake

    def _shutdown(self) -> None:
        self.shutdowns += 1

    def _state(self) -> pynvml.c_nvmlConfComputeSystemState_t:
        return pynvml.c_nvmlConfComputeSystemState_t(2, self.cc_feature, self.devtools)

    def _certificate(self, handle: int) -> pynvml.c_nvmlConfComputeGpuCertificate_t:
        pem = self.simulator.chain_pem(handle)
        cert = pynvml.c_nvmlConfComputeGpuCertificate_t()
        cert.attestationCertChainSize = len(pem)
        ctypes.memmove(cert.attestationCertChain, pem, len(pem))
        return cert

    def _report(self, handle: int, nonce: bytes) -> pynvml.c_nvmlConfComputeGpuAttestationReport_t:
        raw = self.simulator.report(handle, bytes(nonce))
        report = pynvml.c_nvmlConfComputeGpuAttestationReport_t()
        report.attestationReportSize = len(raw)
        ctypes.memmove(report.attestationReport, raw, len(raw))
        return report


async def test_nvml_provider_collects_verifiable_evidence() -> None:
    simulator = GpuSimulator(count=2)
    library = _FakeLibrary(simulator)
    evidence = await NvmlGpuProvider(nvml=library.module()).collect(NONCE)
    assert [item.cc_mode for item in evidence] == ["on", "on"]
    for item in evidence:
        assert verify_gpu(item, nonce=NONCE, insecure_root_der=simulator.root_der).fwid
    assert library.shutdowns == 1


async def test_nvml_provider_refuses_gpus_outside_cc_mode_and_says_so() -> None:
    library = _FakeLibrary(GpuSimulator(), cc_feature=0)
    with pytest.raises(GpuNotInCcModeError) as info:
        await NvmlGpuProvider(nvml=library.module()).collect(NONCE)
    assert "not in confidential-computing mode" in str(info.value)
    assert "ccFeature=0" in str(info.value)
    assert library.shutdowns == 1


async def test_nvml_not_supported_is_reported_as_not_in_cc_mode() -> None:
    library = _FakeLibrary(GpuSimulator())
    module = library.module()

    def not_supported() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    module.nvmlSystemGetConfComputeState = not_supported  # type: ignore[attr-defined]
    with pytest.raises(GpuNotInCcModeError) as info:
        await NvmlGpuProvider(nvml=module).collect(NONCE)
    assert "not in confidential-computing mode (NVML answered Not Supported)" in str(info.value)


async def test_nvml_devtools_is_collected_as_such_and_refused_by_verifiers() -> None:
    simulator = GpuSimulator()
    library = _FakeLibrary(simulator, devtools=1)
    (item,) = await NvmlGpuProvider(nvml=library.module()).collect(NONCE)
    assert item.cc_mode == "devtools"
    with pytest.raises(VerificationError) as info:
        verify_gpu(item, nonce=NONCE, insecure_root_der=simulator.root_der)
    assert info.value.reason == GpuReason.DEVTOOLS


async def test_real_pynvml_without_the_nvidia_library_is_unavailable() -> None:
    # This machine has no NVIDIA driver: pynvml's nvmlInit raises LibraryNotFound.
    with pytest.raises(GpuProviderUnavailableError) as info:
        await NvmlGpuProvider().collect(NONCE)
    assert "NVML could not start" in str(info.value)
    assert isinstance(info.value, GpuProviderError)
