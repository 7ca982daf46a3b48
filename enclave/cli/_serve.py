"""``enclave serve``: run the service (RA-TLS, OHTTP gateway, OpenAI API, model lifecycle).

Every flag overrides the matching ``ENCLAVE_*`` environment variable (see docs/service.md and
docs/operations.md for the full list); unset flags leave the environment's value.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from collections.abc import Callable
from typing import Any

from attestation.errors import AttestationError
from enclave._logging import configure_logging
from enclave.settings import SettingsError, insecure_warnings, load_settings

__all__ = ["register"]

# flag -> (settings field, type, help)
_FLAGS: tuple[tuple[str, str, Any, str], ...] = (
    ("--host", "host", str, "address to listen on (default 0.0.0.0: the CVM's endpoint)"),
    ("--port", "port", int, "TLS port (default 8443)"),
    ("--models-dir", "models_dir", str, "where models live (default /models)"),
    ("--roothash-dir", "roothash_dir", str, "where <model>.roothash files live"),
    ("--state-dir", "state_dir", str, "persistent state (last loaded model)"),
    ("--run-dir", "run_dir", str, "runtime files (engine socket)"),
    ("--vllm-port", "vllm_port", int, "engine port on 127.0.0.1 when --engine-transport tcp"),
    ("--engine-transport", "engine_transport", str, "uds (default) or tcp"),
    ("--load-token", "load_token", str, "bearer token for load/unload (prefer LOAD_TOKEN env)"),
    ("--push-url", "push_url", str, "where status documents are POSTed"),
    ("--push-token", "push_token", str, "bearer token for the push (prefer ENCLAVE_PUSH_TOKEN)"),
    ("--push-interval", "push_interval_seconds", float, "seconds between pushes (default 30)"),
    ("--certificate-lifetime", "certificate_lifetime_seconds", float, "seconds (default 86400)"),
    ("--ohttp-key-rotation", "ohttp_key_rotation_seconds", float, "seconds (default 7 days)"),
    ("--replay-window", "replay_window_seconds", float, "seconds (default 60)"),
    ("--body-limit", "body_limit_bytes", int, "request body limit in bytes (default 32 MiB)"),
    ("--max-concurrent-streams", "max_concurrent_streams", int, "default 256"),
    ("--shutdown-grace", "shutdown_grace_seconds", float, "drain time on SIGTERM (default 30)"),
    ("--load-timeout", "load_timeout_seconds", float, "model load timeout (default 1800)"),
    ("--log-format", "log_format", str, "text (default) or json"),
    ("--service-log-level", "log_level", str, "DEBUG, INFO (default), WARNING, ERROR"),
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the enclave service",
        description=(
            "Run the enclave service: RA-TLS on --port, the OHTTP gateway, the OpenAI API of the "
            "supervised engine and the model lifecycle API. Quotes come from configfs-tsm or the "
            "dstack guest agent (--tee auto), or from the CoCo attestation agent (--tee coco, "
            "chosen explicitly). The simulated TEE proves nothing and is refused "
            "unless --tee simulated and --insecure-allow-simulated-tee are both given."
        ),
    )
    for flag, _, kind, text in _FLAGS:
        parser.add_argument(flag, type=kind, default=None, help=text)
    parser.add_argument(
        "--tee",
        choices=["auto", "configfs-tsm", "dstack", "coco", "simulated"],
        default=None,
        help=(
            "quote provider (default auto: configfs-tsm, then dstack; never coco or simulated; "
            "coco: the CoCo attestation agent on http://127.0.0.1:8006)"
        ),
    )
    parser.add_argument(
        "--engine-command",
        default=None,
        help="the engine program and its leading arguments (default: vllm); split like a shell",
    )
    parser.add_argument(
        "--insecure-allow-simulated-tee",
        action="store_true",
        default=None,
        help="INSECURE: allow --tee simulated (quotes signed by a simulated root)",
    )
    parser.add_argument(
        "--gpu",
        choices=["none", "nvml", "simulated"],
        default=None,
        help="GPU evidence provider (default none; nvml needs the 'gpu' extra)",
    )
    parser.add_argument(
        "--insecure-allow-simulated-gpu",
        action="store_true",
        default=None,
        help="INSECURE: allow --gpu simulated (GPU reports signed by a simulated root)",
    )
    parser.add_argument(
        "--insecure-dev-engine",
        action="store_true",
        default=None,
        help=(
            "INSECURE: allow an --engine-command that runs the development engine (not a "
            "language model; named in /v1/models, the status and the attestation claims)"
        ),
    )
    parser.add_argument(
        "--insecure-dev-mode",
        action="store_true",
        default=None,
        help="INSECURE: development mode (lifecycle API open without a token)",
    )
    parser.add_argument(
        "--restore-on-boot",
        action="store_true",
        default=None,
        help="load the last successfully loaded model at start",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {
        field: getattr(args, flag.lstrip("-").replace("-", "_")) for flag, field, _, _ in _FLAGS
    }
    overrides["tee"] = args.tee
    overrides["insecure_allow_simulated_tee"] = args.insecure_allow_simulated_tee
    overrides["gpu"] = args.gpu
    overrides["insecure_allow_simulated_gpu"] = args.insecure_allow_simulated_gpu
    overrides["insecure_dev_mode"] = args.insecure_dev_mode
    overrides["insecure_dev_engine"] = args.insecure_dev_engine
    overrides["restore_on_boot"] = args.restore_on_boot
    if args.engine_command is not None:
        overrides["engine_command"] = tuple(shlex.split(args.engine_command))
    try:
        settings = load_settings(overrides)
    except SettingsError as exc:
        print(f"enclave serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.service.log_level, settings.service.log_format)
    for line in insecure_warnings(settings):
        print(f"enclave serve: {line}", file=sys.stderr)

    from enclave.server import EnclaveServer  # heavy imports only when serving
    from model_manager.supervisor import become_subreaper

    # Engine workers orphaned by a crashed engine are re-parented here, not to PID 1, so the
    # supervisor can reap every one of them.
    become_subreaper()

    try:
        server = EnclaveServer(settings)
    except Exception as exc:  # provider unavailable, unwritable dirs, ...
        print(f"enclave serve: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(server.serve())
    except AttestationError as exc:  # e.g. the first certificate: GPUs not in CC mode
        print(f"enclave serve: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (uvicorn[standard] brings it): the streaming
    path costs about half as much CPU per event under it (docs/service.md, "Performance")."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency of uvicorn[standard] on Linux
        return None
    return uvloop.new_event_loop
