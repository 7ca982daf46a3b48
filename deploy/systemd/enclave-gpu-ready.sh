#!/usr/bin/env bash
# ExecStart of enclave-gpu-ready.service: refuse to hand the GPUs to the service unless they run
# in confidential-computing (CC) mode and their attestation verifies, then set the GPUs' ready
# state (in CC mode the driver accepts work only after that). The checks are the service's own
# GPU verifier: `enclave attest gpu-ready` (NVML: CC mode on and not DEVTOOLS, every GPU's
# SPDM report for a fresh nonce verified against NVIDIA's pinned device identity root, FWID,
# versions and the [gpu] table of the policy), which sets the ready state only when all pass.
#
# Environment (/etc/enclave/gpu.env):
#   ENCLAVE_GPU_CC_REQUIRED   1 (default): CC mode off, no GPU or a failed attestation is an
#                             error; 0: warn and pass (development only)
#   ENCLAVE_GPU_POLICY        a policy file whose [gpu] table the GPUs must satisfy
#                             (required_count, architectures, versions, measurements); empty:
#                             any number of verified GPUs, at least one
#   ENCLAVE_GPU_OCSP_URL      an OCSP responder (NVIDIA's: https://ocsp.ndis.nvidia.com/) to
#                             check that no device CA is revoked; empty: not checked
#   ENCLAVE_BIN               the enclave program (/opt/enclave/bin/enclave)
set -euo pipefail

required=${ENCLAVE_GPU_CC_REQUIRED:-1}
enclave=${ENCLAVE_BIN:-/opt/enclave/bin/enclave}
policy=${ENCLAVE_GPU_POLICY:-}
ocsp=${ENCLAVE_GPU_OCSP_URL:-}

fail() {
    if [[ $required == 1 ]]; then
        echo "enclave-gpu-ready: $1" >&2
        exit 1
    fi
    echo "enclave-gpu-ready: WARNING (ENCLAVE_GPU_CC_REQUIRED=0): $1" >&2
    exit 0
}

args=(attest gpu-ready)
if [[ -n $policy ]]; then
    args+=(--policy "$policy")
fi
if [[ -n $ocsp ]]; then
    args+=(--ocsp-url "$ocsp")
fi
if ! "$enclave" "${args[@]}"; then
    fail "GPU attestation failed (reason above); the GPUs were not set ready"
fi
echo "enclave-gpu-ready: GPUs in CC mode, attested and ready"
