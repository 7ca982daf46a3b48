"""``enclave serve``: run the service (RA-TLS, OHTTP gateway, OpenAI API, model lifecycle).

Every flag overrides the matching ``ENCLAVE_*`` environment variable (see docs/service.md and
docs/operations.md for the full list); unset flags leave the environment's value.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from attestation.errors import AttestationError
from enclave._logging import configure_logging
from enclave.settings import SettingsError, insecure_settings, load_settings

if TYPE_CHECKING:
    from enclave.server import EnclaveServer

__all__ = ["register", "verify_command"]

# flag -> (settings field, type, help). The default, the choices and the environment variable
# are added to each help from the settings models (_describe).
_FLAGS: tuple[tuple[str, str, Any, str], ...] = (
    ("--host", "host", str, "address to listen on (0.0.0.0: every interface of the CVM)"),
    ("--port", "port", int, "TLS port"),
    ("--models-dir", "models_dir", str, "where models live"),
    ("--roothash-dir", "roothash_dir", str, "where <model>.roothash files live"),
    ("--state-dir", "state_dir", str, "persistent state (last loaded model)"),
    ("--run-dir", "run_dir", str, "runtime files (engine socket, simulated TEE material)"),
    ("--vllm-port", "vllm_port", int, "engine port on 127.0.0.1 when --engine-transport tcp"),
    ("--engine-transport", "engine_transport", str, "how the service reaches the engine"),
    ("--load-token", "load_token", str, "bearer token for load/unload (prefer the environment)"),
    ("--push-url", "push_url", str, "where status documents are POSTed"),
    ("--push-token", "push_token", str, "bearer token for the push (prefer the environment)"),
    ("--push-interval", "push_interval_seconds", float, "seconds between status pushes"),
    ("--certificate-lifetime", "certificate_lifetime_seconds", float, "seconds"),
    ("--ohttp-key-rotation", "ohttp_key_rotation_seconds", float, "seconds"),
    ("--replay-window", "replay_window_seconds", float, "seconds"),
    (
        "--replay-store",
        "replay_store",
        str,
        "the replay set: memory, or a redis:// URL shared by every replica (password: "
        "$ENCLAVE_REPLAY_STORE_PASSWORD)",
    ),
    (
        "--ohttp-key-source",
        "ohttp_key_source",
        str,
        "where the OHTTP keys come from: local (generated here), cdh (the CoCo "
        "confidential-data-hub, released by the Trustee KBS) or dstack (dstack's KMS)",
    ),
    ("--ohttp-key-cdh-url", "ohttp_key_cdh_url", str, "the confidential-data-hub API origin"),
    ("--ohttp-key-resource", "ohttp_key_resource", str, "the KBS resource <repo>/<type>/<tag>"),
    ("--ohttp-key-refresh", "ohttp_key_refresh_seconds", float, "key broker refetch, seconds"),
    ("--replica-id", "replica_id", str, "this replica's id in the status documents"),
    ("--body-limit", "body_limit_bytes", int, "request body limit in bytes"),
    ("--max-concurrent-streams", "max_concurrent_streams", int, "inference requests at once"),
    ("--shutdown-grace", "shutdown_grace_seconds", float, "drain time on SIGTERM, seconds"),
    ("--load-timeout", "load_timeout_seconds", float, "model load timeout, seconds"),
    (
        "--data-plane-workers",
        "data_plane_workers",
        int,
        "data-plane worker processes on the port, each with its own TLS listener, relay, "
        "gateway and engine client, next to one owner of the keys, certificates and lifecycle "
        "(1: one process serves everything; 0: one per core less one, at least 1)",
    ),
    (
        "--stream-padding-bytes",
        "stream_padding_bytes",
        int,
        "pad every streamed event, OHTTP chunk and answer to a multiple of this many bytes, "
        "so sizes say nothing of token lengths (0 needs --insecure-no-stream-padding)",
    ),
    (
        "--stream-cadence-ms",
        "stream_cadence_ms",
        int,
        "send streamed pieces only every this many milliseconds (what arrived coalesced, an "
        "empty padded piece when nothing did), so timing says nothing of token boundaries",
    ),
    ("--log-format", "log_format", str, "the service log's format"),
    ("--service-log-level", "log_level", str.upper, "the service log's level (any case)"),
)
_FIELD_OF_DEST = {flag.lstrip("-").replace("-", "_"): field for flag, field, _, _ in _FLAGS}
_SECRET_FIELDS = frozenset({"load_token", "push_token"})


def _settings_fields() -> dict[str, Any]:
    from enclave.settings import ServiceSettings
    from model_manager import ModelManagerSettings

    return {**ModelManagerSettings.model_fields, **ServiceSettings.model_fields}


def _env_names(field: str) -> str:
    names = [f"ENCLAVE_{field.upper()}"]
    if field == "load_token":
        names.append("LOAD_TOKEN")
    return " or ".join(f"${name}" for name in names)


def _describe(parser: argparse.ArgumentParser) -> None:
    """End each option's help with its choices, its default and its environment variable."""
    fields = _settings_fields()
    for action in parser._actions:
        field = _FIELD_OF_DEST.get(action.dest, action.dest)
        info = fields.get(field)
        if info is None or not action.option_strings:
            continue
        parts = []
        choices = typing.get_args(info.annotation)
        if action.choices is None and choices and all(isinstance(c, str) for c in choices):
            parts.append("choices: " + ", ".join(choices))
        default = info.default
        if isinstance(default, bool):
            parts.append("default: " + ("on" if default else "off"))
        elif isinstance(default, tuple):
            parts.append("default: " + (shlex.join(default) or "none"))
        elif default is not None and field not in _SECRET_FIELDS:
            parts.append(f"default: {default}")
        else:
            parts.append("default: unset")
        parts.append("env " + _env_names(field))
        action.help = f"{action.help} ({'; '.join(parts)})".replace("%", "%%")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the enclave service",
        description=(
            "Run the enclave service: RA-TLS on --port, the OHTTP gateway, the OpenAI API of the "
            "supervised engine and the model lifecycle API. Quotes come from configfs-tsm or the "
            "dstack guest agent (--tee auto), or from the CoCo attestation agent (--tee coco, "
            "chosen explicitly). The simulated TEE proves nothing and is refused "
            "unless --tee simulated and --insecure-allow-simulated-tee are both given. "
            "Every option is also an environment variable (named in its help); a flag "
            "overrides the variable. Settings without a flag are variables only: "
            + ", ".join(sorted(f"ENCLAVE_{name.upper()}" for name in _flagless_fields()))
            + " (docs/operations.md, 'Settings reference')."
        ),
    )
    for flag, _, kind, text in _FLAGS:
        parser.add_argument(flag, type=kind, default=None, help=text)
    parser.add_argument(
        "--tee",
        choices=["auto", "configfs-tsm", "dstack", "coco", "simulated"],
        default=None,
        help=(
            "quote provider (auto: configfs-tsm, then dstack; never coco or simulated; "
            "coco: the CoCo attestation agent on http://127.0.0.1:8006)"
        ),
    )
    parser.add_argument(
        "--engine-command",
        default=None,
        help="the engine program and its leading arguments, split like a shell",
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
        help="GPU evidence provider (nvml needs the 'gpu' extra)",
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
        "--insecure-no-stream-padding",
        action="store_true",
        default=None,
        help="INSECURE: no size padding (an observer reads each token's length from the sizes)",
    )
    parser.add_argument(
        "--restore-on-boot",
        action="store_true",
        default=None,
        help="load the last successfully loaded model at start",
    )
    _describe(parser)
    parser.set_defaults(handler=run)


def _flagless_fields() -> list[str]:
    flagged = {*_FIELD_OF_DEST.values()}
    flagged |= {"tee", "engine_command", "gpu", "restore_on_boot"}
    flagged |= {name for name in _settings_fields() if name.startswith("insecure_")}
    return [name for name in _settings_fields() if name not in flagged]


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
    overrides["insecure_no_stream_padding"] = args.insecure_no_stream_padding
    overrides["restore_on_boot"] = args.restore_on_boot
    if args.engine_command is not None:
        overrides["engine_command"] = tuple(shlex.split(args.engine_command))
    try:
        settings = load_settings(overrides)
    except SettingsError as exc:
        print(f"enclave serve: {exc}", file=sys.stderr)
        return 2
    # The service logs each insecure setting once at start (enclave.service).
    configure_logging(settings.service.log_level, settings.service.log_format)

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
            runner.run(_serve_and_announce(server))
    except AttestationError as exc:  # e.g. the first certificate: GPUs not in CC mode
        print(f"enclave serve: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve_and_announce(server: EnclaveServer) -> None:
    """Serve; with the simulated TEE, print the ``enclave verify`` command that works against it
    once the port is bound."""
    serving = asyncio.ensure_future(server.serve())
    if server.simulated is not None and server.simulated.bundle_dir is not None:
        while server.bound_port is None and not serving.done():
            await asyncio.sleep(0.05)
        if server.bound_port is not None:
            sys.stderr.write(verify_hint(server, server.bound_port))
            sys.stderr.flush()
    await serving


def verify_command(server: EnclaveServer, port: int) -> list[str]:
    """``enclave verify`` with the simulated TEE's root and collateral (and the simulated GPU
    root, when there is one): the exact command that verifies this service."""
    if server.simulated is None or server.simulated.bundle_dir is None:
        raise ValueError("the service has no simulated TEE material to verify against")
    bundle = server.simulated.bundle_dir
    host = server.settings.service.host
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - the wildcard: connect on loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    command = [
        "enclave", "verify", f"https://{host}:{port}",
        "--collateral", str(bundle / "collateral.json"),
        "--root-ca", str(bundle / "root_ca.pem"),
    ]  # fmt: skip
    if server.gpu_provider is not None and server.gpu_provider.name == "simulated":
        gpu_root = server.settings.model_manager.run_dir / "simulated-gpu" / "root_ca.pem"
        command += ["--gpu-root-ca", str(gpu_root)]
    # The insecure settings this service declares in its claims, which a verifier refuses
    # unless told (--insecure-simulated-root already accepts the simulated TEE).
    for name in insecure_settings(server.settings):
        if name != "insecure_allow_simulated_tee":
            command += ["--insecure-accept-service", name]
    return [*command, "--insecure-simulated-root"]


def verify_hint(server: EnclaveServer, port: int) -> str:
    return (
        "enclave serve: SIMULATED TEE: verify this service with\n"
        f"    {shlex.join(verify_command(server, port))}\n"
        "  then keep the measurements it printed: add --save-policy FILE, and give --policy "
        "FILE with the same options to enclave models and enclave proxy\n"
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (uvicorn[standard] brings it): the streaming
    path costs about half as much CPU per event under it (docs/service.md, "Performance")."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency of uvicorn[standard] on Linux
        return None
    return uvloop.new_event_loop
