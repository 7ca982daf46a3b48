"""``enclave attest verify-gpu``: verify one GPU's evidence as NVML returns it.
``enclave attest gpu-ready``: the boot gate: collect every GPU's evidence through NVML, verify
it with the same steps, and only then set the CC GPUs-ready state."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import re
import sys
from pathlib import Path
from typing import cast

from cryptography import x509

from attestation.errors import AttestationError, VerificationError
from attestation.gpu import (
    DEFAULT_GPU_POLICY,
    GPU_STEPS,
    Architecture,
    CcMode,
    GpuPolicy,
    VerifiedGpu,
    parse_chain,
    parse_gpu_report,
    verify_gpu_report,
)
from attestation.gpu.providers import NvmlGpuProvider
from attestation.gpu.revocation import (
    NVIDIA_OCSP_URL,
    CachedOcsp,
    OcspSource,
    OfflineOcsp,
    certificate_key,
    checked_positions,
)
from attestation.policy import load_policy
from attestation.reasons import GpuReason
from enclave.cli._attest import _emit, _InputError, _read, _read_root

__all__ = ["gpu_gate", "register_gpu"]

_NONCE = re.compile(r"(?:0x)?([0-9a-fA-F]{64})")
_HEX_TEXT = re.compile(rb"(?:0x)?((?:[0-9a-fA-F]{2})+)")

_VERIFY_GPU_HELP = """\
Verify one NVIDIA GPU's attestation report against its device certificate chain and the
nonce it was requested with, and print the architecture, FWID, driver and VBIOS versions,
the number of measurements and each step's result (docs/attestation.md, section 7). Exit
status 0 only when every step passes.

--report holds the report as NVML returns it (SPDM GET_MEASUREMENTS request + response), as
hex text or raw bytes; --cert-chain the device chain as PEM, leaf first. The trust anchor is
NVIDIA's device identity root, pinned in the package, unless --root-ca names another (the
simulated GPU's; never trust that one for real evidence). The SPDM report does not carry the
CC mode: pass what NVML reports with --cc-mode (and --ready) to run that step too.
"""


def register_gpu(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verify = commands.add_parser(
        "verify-gpu",
        help="verify an NVIDIA GPU attestation report and certificate chain",
        description=_VERIFY_GPU_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("--report", required=True, type=Path, metavar="FILE", help="report")
    verify.add_argument(
        "--cert-chain", required=True, type=Path, metavar="FILE", help="chain, PEM, leaf first"
    )
    verify.add_argument("--nonce", required=True, metavar="HEX", help="the 32-byte nonce, hex")
    verify.add_argument("--arch", choices=("hopper", "blackwell"), help="expected architecture")
    verify.add_argument("--cc-mode", choices=("on", "off", "devtools"), help="NVML's CC mode")
    verify.add_argument(
        "--ready", action="store_true", help="NVML reports the CC GPUs-ready state set"
    )
    verify.add_argument("--min-driver", metavar="VERSION", help="minimum driver version")
    verify.add_argument("--min-vbios", metavar="VERSION", help="minimum VBIOS version")
    verify.add_argument("--now", type=int, metavar="UNIX", help="verification time")
    verify.add_argument("--root-ca", type=Path, metavar="FILE", help="root CA (DER or PEM)")
    _add_ocsp_arguments(verify)
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(handler=_verify_gpu)

    ready = commands.add_parser(
        "gpu-ready",
        help="boot gate: attest the local GPUs through NVML, then set them ready",
        description=_GPU_READY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ready.add_argument(
        "--policy", type=Path, metavar="FILE", help="policy whose [gpu] table applies"
    )
    ready.add_argument(
        "--no-set-ready", action="store_true", help="verify only; leave the ready state alone"
    )
    _add_ocsp_arguments(ready)
    ready.set_defaults(handler=_gpu_ready)


_GPU_READY_HELP = """\
The boot gate (deploy/systemd/enclave-gpu-ready.sh runs it before the service starts). Through
NVML: the GPUs must be in confidential-computing mode (not DEVTOOLS); every GPU's attestation
report, requested with a fresh random nonce, must verify against NVIDIA's pinned device
identity root with the steps of `enclave attest verify-gpu` and the [gpu] table of --policy
(count, architectures, versions, measurements); only then is the CC GPUs-ready state set (the
driver accepts work in CC mode only after it). Exit status 0 when every GPU verified (and the
state was set), 1 otherwise, with the reason on standard error.
"""


async def gpu_gate(
    provider: NvmlGpuProvider,
    policy: GpuPolicy,
    *,
    set_ready: bool = True,
    insecure_root_der: bytes | None = None,
    ocsp: OcspSource | None = None,
) -> tuple[VerifiedGpu, ...]:
    """Collect, verify every GPU (CC state included, readiness not yet; with ``ocsp``, the
    device CAs' revocation too), then set ready."""
    nonce = os.urandom(32)
    evidence = await provider.collect(nonce)
    if len(evidence) < max(policy.required_count, 1):
        raise VerificationError(
            GpuReason.EVIDENCE_MISSING,
            f"{len(evidence)} GPU(s); the policy requires {max(policy.required_count, 1)}",
        )
    verified = []
    for item in evidence:
        responses = None
        if ocsp is not None:
            certs = tuple(x509.load_der_x509_certificate(der) for der in item.cert_chain)
            responses = await _gather_ocsp(ocsp, certs)
        verified.append(
            verify_gpu_report(
                item.report,
                item.cert_chain,
                nonce=nonce,
                architecture=item.architecture,
                policy=policy,
                cc_mode=item.cc_mode,
                ready=None,  # this gate is what sets it
                insecure_root_der=insecure_root_der,
                ocsp_responses=responses,
            )
        )
    if set_ready:
        await provider.set_ready()
    return tuple(verified)


async def _gather_ocsp(source: OcspSource, certs: tuple[x509.Certificate, ...]) -> dict[str, bytes]:
    """The responses ``source`` has for the checked chain positions (a missing one is left
    out, so the check reports it as ``gpu_revocation_unavailable``)."""
    responses: dict[str, bytes] = {}
    for position in checked_positions(certs):
        try:
            data = await source.response(certs[position], certs[position + 1])
        except AttestationError as exc:
            print(f"enclave attest: OCSP: {exc}", file=sys.stderr)
            continue
        responses[certificate_key(certs[position])] = data
    return responses


def _ocsp_source(args: argparse.Namespace) -> OcspSource | None:
    if args.ocsp_dir is not None:
        return OfflineOcsp(args.ocsp_dir)
    if args.ocsp_url is not None:
        return CachedOcsp(args.ocsp_url, args.ocsp_cache)
    return None


def _add_ocsp_arguments(parser: argparse.ArgumentParser) -> None:
    revocation = parser.add_mutually_exclusive_group()
    revocation.add_argument(
        "--ocsp-dir",
        type=Path,
        metavar="DIR",
        help="check revocation with OCSP responses from DIR (<sha256 of cert DER>.ocsp)",
    )
    revocation.add_argument(
        "--ocsp-url",
        metavar="URL",
        help=f"check revocation online (NVIDIA's responder: {NVIDIA_OCSP_URL})",
    )
    parser.add_argument(
        "--ocsp-cache", type=Path, metavar="DIR", help="cache for --ocsp-url answers"
    )


def _gpu_ready(args: argparse.Namespace) -> int:
    try:
        policy = DEFAULT_GPU_POLICY if args.policy is None else load_policy(args.policy).gpu
        verified = asyncio.run(
            gpu_gate(
                NvmlGpuProvider(),
                policy,
                set_ready=not args.no_set_ready,
                ocsp=_ocsp_source(args),
            )
        )
    except VerificationError as exc:
        print(f"enclave attest gpu-ready: GPU evidence refused: {exc}", file=sys.stderr)
        return 1
    except AttestationError as exc:
        print(f"enclave attest gpu-ready: {exc}", file=sys.stderr)
        return 1
    for index, gpu in enumerate(verified):
        print(
            f"GPU {index}: {gpu.architecture}, driver {gpu.driver_version}, VBIOS "
            f"{gpu.vbios_version}, FWID {gpu.fwid.hex()}, {len(gpu.measurements)} "
            f"measurements, CC mode {gpu.cc_mode}: verified"
        )
    print("GPUs ready" if not args.no_set_ready else "GPUs verified (ready state not set)")
    return 0


def _ocsp_responses(args: argparse.Namespace, chain: bytes) -> dict[str, bytes] | None:
    source = _ocsp_source(args)
    if source is None:
        return None
    try:
        certs = parse_chain(chain)
    except AttestationError:
        return {}  # the chain steps report it
    return asyncio.run(_gather_ocsp(source, certs))


def _report_bytes(path: Path) -> bytes:
    data = _read(path, "report")
    match = _HEX_TEXT.fullmatch(data.strip())
    return bytes.fromhex(match.group(1).decode()) if match else data


def _nonce(value: str) -> bytes:
    match = _NONCE.fullmatch(value.strip())
    if match is None:
        raise _InputError("--nonce must be 32 bytes of hex (64 digits)")
    return bytes.fromhex(match.group(1))


def _steps(passed: list[int], failed: str | None, cc_given: bool) -> list[dict[str, object]]:
    steps: list[dict[str, object]] = []
    pending_failure = failed
    for number, (name, _) in enumerate(GPU_STEPS, start=1):
        if number in passed:
            result = "pass"
        elif number == 9 and not cc_given:
            result = "not run (no --cc-mode: the SPDM report does not carry it)"
        elif pending_failure is not None:
            result, pending_failure = f"FAIL ({pending_failure})", None
        else:
            result = "not run"
        steps.append({"step": number, "name": name, "result": result})
    return steps


def _fields(verified: VerifiedGpu | None, report: bytes) -> dict[str, object]:
    if verified is not None:
        return {
            "architecture": verified.architecture,
            "fwid": verified.fwid.hex(),
            "driver_version": verified.driver_version,
            "vbios_version": verified.vbios_version,
            "measurements": len(verified.measurements),
        }
    try:
        parsed = parse_gpu_report(report)
    except AttestationError:
        return {}
    return {
        "architecture": None,
        "fwid": None if parsed.fwid is None else parsed.fwid.hex(),
        "driver_version": parsed.driver_version,
        "vbios_version": parsed.vbios_version,
        "measurements": len(parsed.blocks),
    }


def _verify_gpu(args: argparse.Namespace) -> int:
    try:
        report = _report_bytes(args.report)
        chain = _read(args.cert_chain, "certificate chain")
        nonce = _nonce(args.nonce)
        root = _read_root(args.root_ca)
        ocsp_responses = _ocsp_responses(args, chain)
        policy = DEFAULT_GPU_POLICY
        if args.min_driver is not None or args.min_vbios is not None:
            policy = GpuPolicy(min_driver_version=args.min_driver, min_vbios_version=args.min_vbios)
    except (AttestationError, _InputError) as exc:
        _emit({"verified": False, "reason": "input_error", "detail": str(exc)}, args.json)
        return 1
    now = None if args.now is None else datetime.datetime.fromtimestamp(args.now, tz=datetime.UTC)
    passed: list[int] = []
    verified: VerifiedGpu | None = None
    failure: VerificationError | None = None
    try:
        verified = verify_gpu_report(
            report,
            chain,
            nonce=nonce,
            architecture=cast(Architecture | None, args.arch),
            policy=policy,
            cc_mode=cast(CcMode | None, args.cc_mode),
            ready=args.ready if args.cc_mode is not None else None,
            now=now,
            insecure_root_der=root,
            passed=passed,
            ocsp_responses=ocsp_responses,
        )
    except VerificationError as exc:
        failure = exc
    result: dict[str, object] = {"verified": failure is None, **_fields(verified, report)}
    if failure is not None:
        result.update(reason=failure.reason, detail=failure.detail)
    steps = _steps(passed, None if failure is None else failure.reason, args.cc_mode is not None)
    if args.json:
        result["steps"] = steps
    else:
        result["steps"] = {f"{s['step']:>2}. {s['name']}": s["result"] for s in steps}
    _emit(result, args.json)
    return 0 if failure is None else 1
