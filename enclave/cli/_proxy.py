"""``enclave proxy run|start|stop|status``: the local plaintext proxy and its daemon.

``run`` serves in the foreground. ``start`` runs the same command as a detached child with
its output in a log file, records its PID in a PID file (refusing when a live proxy already
holds it), and polls the proxy's health route until it answers. ``stop`` sends SIGTERM,
waits, then SIGKILL. ``status`` checks both the process and the HTTP health route.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import uvicorn

from enclave.cli._verify import InputError, add_verifier_arguments, verifier_from_args
from enclave.client import AsyncOhttpTransport
from enclave.client._proxy import HEALTH_PATH, build_proxy_app

__all__ = ["register"]

logger = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:8787"
POLL_SECONDS = 0.1


def _state_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or str(Path.home() / ".cache")
    return Path(base) / "enclave"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    proxy = subparsers.add_parser(
        "proxy",
        help="local plaintext OpenAI/Anthropic-compatible proxy to an attested endpoint over OHTTP",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = proxy.add_subparsers(dest="proxy_action", metavar="ACTION")
    proxy.set_defaults(handler=lambda _args: _usage(proxy))
    run = actions.add_parser("run", help="serve in the foreground")
    start = actions.add_parser("start", help="start the proxy as a daemon")
    for parser in (run, start):
        parser.add_argument("url", metavar="URL", help="the service's https:// base URL")
        parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT")
        parser.add_argument("--compat", choices=("openai", "anthropic", "both"), default="openai")
        parser.add_argument("--relay", metavar="URL", help="send through this OHTTP relay")
        parser.add_argument(
            "--relay-key-env", metavar="VAR", help="environment variable with the relay API key"
        )
        add_verifier_arguments(parser)
    for parser in (start, actions.add_parser("stop", help="stop the daemon")):
        parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
    status = actions.add_parser("status", help="is the daemon running and answering?")
    for parser in (start, status, actions.choices["stop"]):
        parser.add_argument("--pid-file", type=Path, default=_state_dir() / "proxy.pid")
    start.add_argument("--log-file", type=Path, default=_state_dir() / "proxy.log")
    status.add_argument("--listen", default=None, metavar="HOST:PORT")
    run.set_defaults(handler=_run)
    start.set_defaults(handler=_start)
    actions.choices["stop"].set_defaults(handler=_stop)
    status.set_defaults(handler=_status)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--listen must be HOST:PORT, not {listen!r}")
    return host, int(port)


def _run(args: argparse.Namespace) -> int:
    try:
        host, port = _host_port(args.listen)
        if not args.url.startswith("https://"):
            raise InputError("URL must be https://")
        verifier = verifier_from_args(args)
    except InputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    relay_headers = {}
    if args.relay_key_env:
        key = os.environ.get(args.relay_key_env)
        if not key:
            sys.stderr.write(f"error: {args.relay_key_env} is not set\n")
            return 2
        relay_headers["Authorization"] = f"Bearer {key}"
    transport = AsyncOhttpTransport(
        args.url, verifier, relay_url=args.relay, relay_headers=relay_headers
    )
    app = build_proxy_app(transport, compat=args.compat)
    logger.warning("proxy for %s listening on http://%s:%d", args.url, host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0


def _read_pid_file(path: Path) -> tuple[int | None, str | None]:
    """The PID file holds the PID and the listen address, one per line."""
    try:
        lines = path.read_text().split()
    except OSError:
        return None, None
    pid = int(lines[0]) if lines and lines[0].isdigit() else None
    return pid, lines[1] if len(lines) > 1 else None


def _read_pid(path: Path) -> int | None:
    return _read_pid_file(path)[0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _healthy(listen: str) -> bool:
    host, port = _host_port(listen)
    try:
        response = httpx.get(f"http://{host}:{port}{HEALTH_PATH}", timeout=2.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _run_argv(args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, "-m", "enclave", "proxy", "run", args.url, "--listen", args.listen]
    argv += ["--compat", args.compat]
    for flag, value in (
        ("--relay", args.relay),
        ("--relay-key-env", args.relay_key_env),
        ("--policy", args.policy),
        ("--collateral", args.collateral),
        ("--pccs", args.pccs),
        ("--root-ca", args.root_ca),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if args.insecure_simulated_root:
        argv.append("--insecure-simulated-root")
    if args.insecure_any_measurement:
        argv.append("--insecure-any-measurement")
    for name in args.insecure_accept_service or ():
        argv += ["--insecure-accept-service", name]
    return argv


def _start(args: argparse.Namespace) -> int:
    try:
        _host_port(args.listen)
        verifier_from_args(args)  # refuse an unpinned policy here, not in the daemon's log
    except InputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    pid_file: Path = args.pid_file
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    existing = _read_pid(pid_file)
    if existing is not None and _alive(existing):
        sys.stderr.write(f"error: a proxy is already running (pid {existing}, {pid_file})\n")
        return 1
    pid_file.unlink(missing_ok=True)
    try:  # O_EXCL: of two concurrent starts, only one gets the PID file
        fd = os.open(pid_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        sys.stderr.write(f"error: a proxy is already starting ({pid_file})\n")
        return 1
    args.log_file.parent.mkdir(parents=True, exist_ok=True)
    with args.log_file.open("ab") as log:
        child = subprocess.Popen(  # noqa: S603 (this interpreter, this module, list argv)
            _run_argv(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{child.pid}\n{args.listen}\n")
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            pid_file.unlink(missing_ok=True)
            sys.stderr.write(f"error: the proxy exited ({child.returncode}); see {args.log_file}\n")
            return 1
        if _healthy(args.listen):
            sys.stdout.write(f"proxy started (pid {child.pid}) on http://{args.listen}\n")
            return 0
        time.sleep(POLL_SECONDS)
    _terminate(child.pid, args.timeout)
    pid_file.unlink(missing_ok=True)
    sys.stderr.write(f"error: the proxy did not answer in {args.timeout}s; see {args.log_file}\n")
    return 1


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM, wait up to ``timeout``, then SIGKILL. True if it had to be killed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return False
        time.sleep(POLL_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(POLL_SECONDS)
    return True


def _stop(args: argparse.Namespace) -> int:
    pid = _read_pid(args.pid_file)
    if pid is None or not _alive(pid):
        args.pid_file.unlink(missing_ok=True)
        sys.stdout.write("proxy not running\n")
        return 1
    killed = _terminate(pid, args.timeout)
    args.pid_file.unlink(missing_ok=True)
    sys.stdout.write(f"proxy stopped (pid {pid}{', killed' if killed else ''})\n")
    return 0


def _status(args: argparse.Namespace) -> int:
    pid, recorded = _read_pid_file(args.pid_file)
    listen = args.listen or recorded or DEFAULT_LISTEN
    running = pid is not None and _alive(pid)
    healthy = running and _healthy(listen)
    document = {"running": running, "pid": pid if running else None, "http": healthy}
    sys.stdout.write(json.dumps(document) + "\n")
    return 0 if running and healthy else 1
