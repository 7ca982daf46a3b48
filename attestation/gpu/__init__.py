"""NVIDIA GPU confidential-computing evidence: parse, verify, bind to the TDX evidence.

- ``attestation.gpu.evidence``: one GPU's evidence as this service carries it, its digest
  (bound into the TDX claims), and the GPU nonce derivation;
- ``attestation.gpu.verify``: the numbered GPU verification steps and their reason codes;
- ``attestation.gpu.policy``: the GPU section of a verification policy;
- ``attestation.gpu.providers``: NVML and simulated collection (import it explicitly).

Sans-IO: reports and chains come in as bytes; nothing here talks to a GPU or the network.
docs/attestation.md ("GPU evidence") has the formats, the steps and every reason code.
"""

from attestation.gpu._certs import (
    ARCHITECTURES,
    NVIDIA_DEVICE_ROOT_PEM,
    Architecture,
    architecture_of,
    certificate_fwid,
    parse_chain,
)
from attestation.gpu._report import GpuReport, GpuReportError, MeasurementBlock, parse_gpu_report
from attestation.gpu.evidence import (
    CcMode,
    GpuEvidence,
    decode_gpu_evidence,
    decode_gpu_evidence_list,
    encode_gpu_evidence_list,
    gpu_nonce,
)
from attestation.gpu.policy import DEFAULT_GPU_POLICY, GpuPolicy, gpu_policy_from_mapping
from attestation.gpu.verify import (
    GPU_STEPS,
    GpuReason,
    VerifiedGpu,
    report_claims,
    verify_gpu,
    verify_gpu_report,
    verify_gpus,
)

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_GPU_POLICY",
    "GPU_STEPS",
    "NVIDIA_DEVICE_ROOT_PEM",
    "Architecture",
    "CcMode",
    "GpuEvidence",
    "GpuPolicy",
    "GpuReason",
    "GpuReport",
    "GpuReportError",
    "MeasurementBlock",
    "VerifiedGpu",
    "architecture_of",
    "certificate_fwid",
    "decode_gpu_evidence",
    "decode_gpu_evidence_list",
    "encode_gpu_evidence_list",
    "gpu_nonce",
    "gpu_policy_from_mapping",
    "parse_chain",
    "parse_gpu_report",
    "report_claims",
    "verify_gpu",
    "verify_gpu_report",
    "verify_gpus",
]
