"""GPU evidence through NVML, with NVIDIA's maintained bindings (``nvidia-ml-py``/``pynvml``).

Per collection: ``nvmlInit``; the system CC state (``nvmlSystemGetConfComputeState``: CC
feature, DEVTOOLS mode) and the GPUs-ready state; then for every GPU its architecture, the
attestation certificate chain (``nvmlDeviceGetConfComputeGpuCertificate``, PEM) and the
attestation report for the nonce (``nvmlDeviceGetConfComputeGpuAttestationReport``);
``nvmlShutdown``. The calls block, so they run in a worker thread under a timeout.

A GPU that is not in CC mode cannot produce this evidence: that is refused with
:class:`GpuNotInCcModeError`, whose message says so and quotes NVML's answer. A GPU in
DEVTOOLS mode is collected as ``cc-mode = "devtools"`` and a warning is logged; verifiers
refuse it (``gpu_devtools``) unless their policy says ``insecure_allow_devtools``.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from types import ModuleType
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attestation.errors import GpuNotInCcModeError, GpuProviderError, GpuProviderUnavailableError
from attestation.gpu._certs import Architecture
from attestation.gpu.evidence import CcMode, GpuEvidence
from attestation.gpu.providers._types import GpuProviderName

__all__ = ["NvmlGpuProvider"]

logger = logging.getLogger(__name__)

DEFAULT_NVML_TIMEOUT_S: Final = 60.0
_ARCHITECTURES: Final[dict[int, Architecture]] = {9: "hopper", 10: "blackwell"}
_NOT_IN_CC_MODE: Final = (
    "the GPUs are not in confidential-computing mode ({answer}); GPU attestation needs CC mode "
    "on (nvidia-smi conf-compute -scc on, in a confidential VM) and the GPUs-ready state set"
)


class NvmlGpuProvider:
    """Collects through ``pynvml``; ``nvml`` replaces the module (tests)."""

    name: GpuProviderName = "nvml"

    def __init__(
        self, *, nvml: ModuleType | None = None, timeout: float = DEFAULT_NVML_TIMEOUT_S
    ) -> None:
        self._nvml = nvml
        self._timeout = timeout

    def __repr__(self) -> str:
        return "NvmlGpuProvider()"

    async def collect(self, nonce: bytes) -> tuple[GpuEvidence, ...]:
        if len(nonce) != 32:
            raise ValueError("a GPU nonce is 32 bytes")
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._collect, nonce), self._timeout)
        except TimeoutError as exc:
            raise GpuProviderError(f"NVML did not answer within {self._timeout:g} s") from exc

    async def set_ready(self) -> None:
        """Set the CC GPUs-ready state (the driver accepts work in CC mode only after it)."""
        await asyncio.wait_for(asyncio.to_thread(self._set_ready), self._timeout)

    def _set_ready(self) -> None:
        nvml = self._module()
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise GpuProviderUnavailableError(f"NVML could not start: {exc}") from exc
        try:
            nvml.nvmlSystemSetConfComputeGpusReadyState(nvml.NVML_CC_ACCEPTING_CLIENT_REQUESTS_TRUE)
        except nvml.NVMLError as exc:
            raise GpuProviderError(f"NVML could not set the GPUs ready: {exc}") from exc
        finally:
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError:
                logger.warning("nvmlShutdown failed")

    def _module(self) -> ModuleType:
        if self._nvml is not None:
            return self._nvml
        try:
            return importlib.import_module("pynvml")
        except ImportError as exc:
            raise GpuProviderUnavailableError(
                "NVIDIA's NVML bindings (nvidia-ml-py, a dependency of this package) are not "
                "installed"
            ) from exc

    def _collect(self, nonce: bytes) -> tuple[GpuEvidence, ...]:
        nvml = self._module()
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise GpuProviderUnavailableError(f"NVML could not start: {exc}") from exc
        try:
            return self._collect_all(nvml, nonce)
        except nvml.NVMLError as exc:
            if getattr(exc, "value", None) == nvml.NVML_ERROR_NOT_SUPPORTED:
                answer = f"NVML answered {exc!s}"
                raise GpuNotInCcModeError(_NOT_IN_CC_MODE.format(answer=answer)) from exc
            raise GpuProviderError(f"NVML failed: {exc}") from exc
        finally:
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError:
                logger.warning("nvmlShutdown failed")

    def _collect_all(self, nvml: Any, nonce: bytes) -> tuple[GpuEvidence, ...]:
        state = nvml.nvmlSystemGetConfComputeState()
        if state.ccFeature != nvml.NVML_CC_SYSTEM_FEATURE_ENABLED:
            answer = f"nvmlSystemGetConfComputeState: ccFeature={state.ccFeature} (disabled)"
            raise GpuNotInCcModeError(_NOT_IN_CC_MODE.format(answer=answer))
        cc_mode: CcMode = "on"
        if state.devToolsMode != nvml.NVML_CC_SYSTEM_DEVTOOLS_MODE_OFF:
            logger.warning("the GPUs are in CC DEVTOOLS mode: verifiers will refuse them")
            cc_mode = "devtools"
        ready = (
            nvml.nvmlSystemGetConfComputeGpusReadyState()
            == nvml.NVML_CC_ACCEPTING_CLIENT_REQUESTS_TRUE
        )
        count = nvml.nvmlDeviceGetCount()
        items = []
        for index in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            code = nvml.nvmlDeviceGetArchitecture(handle)
            architecture = _ARCHITECTURES.get(code)
            if architecture is None:
                raise GpuProviderError(f"GPU {index}: architecture {code} has no CC attestation")
            certificate = nvml.nvmlDeviceGetConfComputeGpuCertificate(handle)
            chain_pem = bytes(certificate.attestationCertChain)[
                : certificate.attestationCertChainSize
            ]
            report = nvml.nvmlDeviceGetConfComputeGpuAttestationReport(handle, nonce)
            raw = bytes(report.attestationReport)[: report.attestationReportSize]
            items.append(
                GpuEvidence(
                    architecture=architecture,
                    report=raw,
                    cert_chain=_der_chain(chain_pem, index),
                    cc_mode=cc_mode,
                    ready=ready,
                )
            )
        logger.info("collected GPU evidence from %d GPU(s), cc-mode %s", count, cc_mode)
        return tuple(items)


def _der_chain(pem: bytes, index: int) -> tuple[bytes, ...]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise GpuProviderError(f"GPU {index}: NVML returned no PEM certificate chain") from exc
    return tuple(c.public_bytes(serialization.Encoding.DER) for c in certs)
