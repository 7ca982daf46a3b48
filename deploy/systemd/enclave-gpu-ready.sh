#!/usr/bin/env bash
# ExecStart of enclave-gpu-ready.service: refuse to hand the GPUs to the service unless they run
# in confidential-computing (CC) mode, run the configured GPU attestation, then set the GPUs'
# ready state (in CC mode the driver accepts work only after that).
#
# Environment (/etc/enclave/gpu.env):
#   ENCLAVE_GPU_CC_REQUIRED   1 (default): CC mode off or no GPU is an error; 0: warn and pass
#                             (development only)
#   ENCLAVE_GPU_ATTEST_COMMAND  a command that attests the GPUs and exits 0 only on success,
#                             e.g. NVIDIA's local GPU verifier; split into words, never run
#                             through a shell. Empty: no GPU attestation (logged).
#   NVIDIA_SMI                the nvidia-smi program (nvidia-smi)
set -euo pipefail

required=${ENCLAVE_GPU_CC_REQUIRED:-1}
smi=${NVIDIA_SMI:-nvidia-smi}
attest=${ENCLAVE_GPU_ATTEST_COMMAND:-}

fail() {
    if [[ $required == 1 ]]; then
        echo "enclave-gpu-ready: $1" >&2
        exit 1
    fi
    echo "enclave-gpu-ready: WARNING (ENCLAVE_GPU_CC_REQUIRED=0): $1" >&2
    exit 0
}

if ! command -v "$smi" >/dev/null 2>&1; then
    fail "$smi not found"
fi
if ! status=$("$smi" conf-compute -f 2>&1); then
    fail "cannot query confidential-computing mode: $status"
fi
if [[ $status != *"CC status: ON"* ]]; then
    fail "GPU confidential-computing mode is not on ($status)"
fi

if [[ -n $attest ]]; then
    read -r -a argv <<<"$attest"
    if ! "${argv[@]}"; then
        fail "GPU attestation failed"
    fi
    echo "enclave-gpu-ready: GPU attestation passed"
else
    echo "enclave-gpu-ready: no ENCLAVE_GPU_ATTEST_COMMAND: GPUs not attested locally" >&2
fi

"$smi" conf-compute -srs 1
echo "enclave-gpu-ready: GPUs in CC mode and ready"
