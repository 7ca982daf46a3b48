"""``enclave proxy run|start|stop|status``: the local plaintext proxy and its daemon.

``run`` verifies the endpoint (exit 1 with the reason if it does not verify), then serves in
the foreground. ``start`` checks everything it can first and prints what is wrong to the
terminal (the listen address, a port already taken, the policy, the relay key variable, a
non-loopback listener), then runs ``run`` as a detached child with its output in a log file,
records it in a PID file, and says "started" only when its own child (matched by a per-start
instance token) answers health with a verified endpoint; otherwise it stops the child and
prints the reason from the log. ``stop`` signals the PID only if that process is an ``enclave
proxy run``, with bounded waits (a zombie counts as stopped). ``status`` prints the process,
the endpoint, the compat mode and the verification state.

Settings (flag, else ``ENCLAVE_PROXY_*`` environment variable, else default): ``--host`` /
``ENCLAVE_PROXY_HOST`` (127.0.0.1), ``--port`` / ``ENCLAVE_PROXY_PORT`` (8787; or ``--listen
HOST:PORT``), ``--compat`` / ``ENCLAVE_PROXY_COMPAT``, ``--body-limit-bytes`` /
``ENCLAVE_PROXY_BODY_LIMIT_BYTES`` (32 MiB), ``--log-level`` / ``ENCLAVE_PROXY_LOG_LEVEL``
(warning), ``--insecure-listen-public`` / ``ENCLAVE_PROXY_INSECURE_LISTEN_PUBLIC``,
``--allowed-host`` / ``ENCLAVE_PROXY_ALLOWED_HOSTS`` (Host names served besides the loopback
ones; comma-separated), ``--allowed-origin`` / ``ENCLAVE_PROXY_ALLOWED_ORIGINS`` (browser
origins served; none by default), ``ENCLAVE_PROXY_TOKEN`` (an access token every request must
carry as ``Authorization: Bearer`` or ``x-api-key``; environment only, never a flag),
``--receipts`` / ``ENCLAVE_PROXY_RECEIPTS`` (a folder where each answer's receipt is kept with
the evidence it was verified against, for ``enclave receipt verify``; none by default),
``--max-connections`` / ``ENCLAVE_PROXY_MAX_CONNECTIONS`` (256: the connection pool to the
endpoint; each streamed answer holds one connection while it streams).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import httpx
import uvicorn
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from enclave.cli._listen import is_loopback, parse_listen
from enclave.cli._verify import (
    InputError,
    _trust_description,
    add_verifier_arguments,
    verifier_from_args,
)
from enclave.client import AsyncOhttpTransport
from enclave.client._proxy import (
    CHALLENGE_HEADER,
    HEALTH_PATH,
    INSTANCE_ENV,
    ProxyOptions,
    build_proxy_app,
    instance_proof,
)
from enclave.client._proxy_errors import refusal_for
from enclave.client._ratls import DEFAULT_MAX_CONNECTIONS
from enclave.client.errors import ClientError

__all__ = ["ProxySettings", "register"]

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.1
_LOG_TAIL_BYTES = 4096


class ProxySettings(BaseSettings):
    """The local proxy's settings (env prefix ``ENCLAVE_PROXY_``)."""

    model_config = SettingsConfigDict(env_prefix="ENCLAVE_PROXY_", extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=1, le=65535)
    compat: Literal["openai", "anthropic", "both"] = "openai"
    body_limit_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    insecure_listen_public: bool = False
    # The door (enclave.client._proxy_guard): Host names besides the loopback ones, browser
    # origins (none by default), and the access token every request then needs.
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = ()
    token: SecretStr | None = Field(default=None, min_length=16)
    # Where each answer's receipt is kept with its evidence (enclave.client._receipts).
    receipts: Path | None = None
    # The pool to the endpoint: each streamed answer holds a connection while it streams.
    max_connections: int = Field(default=DEFAULT_MAX_CONNECTIONS, ge=1, le=100_000)
    # Set by `enclave proxy start` for the daemon it starts, never by hand: the secret the
    # daemon proves it holds (an HMAC over a fresh challenge) to `enclave proxy status`/`stop`.
    instance: SecretStr | None = None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if not origin.startswith(("http://", "https://")) or "/" in origin.split("://")[1]:
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port])")
        return value

    @property
    def token_value(self) -> str | None:
        return None if self.token is None else self.token.get_secret_value()

    @property
    def instance_value(self) -> str | None:
        return None if self.instance is None else self.instance.get_secret_value()

    @property
    def listen(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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
    run = actions.add_parser("run", help="verify the endpoint, then serve in the foreground")
    start = actions.add_parser("start", help="start the proxy as a daemon (verified first)")
    for parser in (run, start):
        parser.add_argument("url", metavar="URL", help="the service's https:// base URL")
        _add_settings_arguments(parser)
        parser.add_argument("--relay", metavar="URL", help="send through this OHTTP relay")
        parser.add_argument(
            "--relay-key-env", metavar="VAR", help="environment variable with the relay API key"
        )
        add_verifier_arguments(parser)
    stop = actions.add_parser("stop", help="stop the daemon")
    for parser in (start, stop):
        parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")
    status = actions.add_parser("status", help="the daemon's process, endpoint and verification")
    for parser in (start, status, stop):
        parser.add_argument("--pid-file", type=Path, default=_state_dir() / "proxy.pid")
    start.add_argument("--log-file", type=Path, default=_state_dir() / "proxy.log")
    status.add_argument("--listen", default=None, metavar="HOST:PORT")
    run.set_defaults(handler=_run)
    start.set_defaults(handler=_start)
    stop.set_defaults(handler=_stop)
    status.set_defaults(handler=_status)


def _add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", metavar="HOST:PORT", help="host and port in one")
    parser.add_argument("--host", help="listen host (ENCLAVE_PROXY_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (ENCLAVE_PROXY_PORT; default 8787)")
    parser.add_argument(
        "--compat",
        choices=("openai", "anthropic", "both"),
        help="API surface (ENCLAVE_PROXY_COMPAT; default openai)",
    )
    parser.add_argument(
        "--body-limit-bytes",
        type=int,
        metavar="N",
        help="largest request body accepted, else 413 (ENCLAVE_PROXY_BODY_LIMIT_BYTES; "
        "default 33554432)",
    )
    parser.add_argument(
        "--log-level",
        dest="proxy_log_level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="the proxy's log level (ENCLAVE_PROXY_LOG_LEVEL; default WARNING)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="connections to the endpoint at most; each streamed answer holds one while it "
        f"streams (ENCLAVE_PROXY_MAX_CONNECTIONS; default {DEFAULT_MAX_CONNECTIONS})",
    )
    parser.add_argument(
        "--allowed-host",
        dest="allowed_hosts",
        action="append",
        metavar="NAME",
        help="also serve requests whose Host is NAME (repeatable; ENCLAVE_PROXY_ALLOWED_HOSTS, "
        "comma-separated; loopback addresses, localhost and *.localhost always are)",
    )
    parser.add_argument(
        "--allowed-origin",
        dest="allowed_origins",
        action="append",
        metavar="ORIGIN",
        help="serve browser requests from ORIGIN, e.g. http://localhost:3000 (repeatable; "
        "ENCLAVE_PROXY_ALLOWED_ORIGINS; default none: any request with an Origin is refused)",
    )
    parser.add_argument(
        "--receipts",
        type=Path,
        metavar="DIR",
        help="keep each answer's receipt in DIR/receipts/<id>.json with the evidence it was "
        "verified against in DIR/evidence/<quote>.json, for `enclave receipt verify` without "
        "the service (ENCLAVE_PROXY_RECEIPTS; default none: checked, kept in memory only)",
    )
    parser.add_argument(
        "--insecure-listen-public",
        action="store_true",
        default=None,
        help="INSECURE: allow a plaintext listener on a non-loopback address (anyone who can "
        "reach it reads prompts and answers in clear)",
    )


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def settings_from_args(args: argparse.Namespace) -> ProxySettings:
    """Flags over ``ENCLAVE_PROXY_*`` over defaults; ``InputError`` says what is wrong."""
    values: dict[str, object] = {
        "host": args.host,
        "port": args.port,
        "compat": args.compat,
        "body_limit_bytes": args.body_limit_bytes,
        "log_level": args.proxy_log_level,
        "insecure_listen_public": args.insecure_listen_public,
        "max_connections": args.max_connections,
        "allowed_hosts": None if args.allowed_hosts is None else tuple(args.allowed_hosts),
        "allowed_origins": None if args.allowed_origins is None else tuple(args.allowed_origins),
        "receipts": args.receipts,
    }
    if args.listen is not None:
        try:
            values["host"], values["port"] = parse_listen(args.listen)
        except ValueError as exc:
            raise InputError(f"--listen: {exc}") from exc
    try:
        given = {key: value for key, value in values.items() if value is not None}
        settings = ProxySettings(**given)  # type: ignore[arg-type] # (env read in __init__)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise InputError(f"invalid proxy settings: {problems}") from exc
    if not is_loopback(settings.host):
        if not settings.insecure_listen_public:
            raise InputError(
                f"{settings.host} is not a loopback address: the proxy serves plaintext, so "
                "anyone who can reach it reads the prompts; use 127.0.0.1, or add "
                "--insecure-listen-public"
            )
        logger.warning("INSECURE: plaintext proxy listening on %s", settings.host)
    return settings


def _checked(args: argparse.Namespace) -> tuple[ProxySettings, dict[str, str]]:
    """Everything that can be checked before anything runs; ``InputError`` otherwise."""
    settings = settings_from_args(args)
    if not args.url.startswith("https://"):
        raise InputError("URL must be https://")
    verifier_from_args(args)  # the policy file: readable, valid, pinning the measurements
    if settings.receipts is not None:
        try:
            for sub in ("receipts", "evidence"):
                (settings.receipts / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise InputError(f"--receipts: cannot use {settings.receipts}: {exc.strerror}") from exc
    relay_headers: dict[str, str] = {}
    if args.relay_key_env:
        key = os.environ.get(args.relay_key_env)
        if not key:
            raise InputError(f"--relay-key-env: the variable {args.relay_key_env} is not set")
        relay_headers["Authorization"] = f"Bearer {key}"
    return settings, relay_headers


def _run(args: argparse.Namespace) -> int:
    try:
        settings, relay_headers = _checked(args)
        verifier = verifier_from_args(args)
    except InputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    logging.getLogger().setLevel(settings.log_level)
    transport = AsyncOhttpTransport(
        args.url,
        verifier,
        relay_url=args.relay,
        relay_headers=relay_headers,
        max_connections=settings.max_connections,
    )
    try:  # verify before serving: a proxy that starts says its endpoint verified
        endpoint = asyncio.run(transport.refresh())
    except (ClientError, httpx.HTTPError) as exc:
        refusal = refusal_for(exc, through_relay=args.relay is not None)
        sys.stderr.write(f"error: {refusal.message}\n")
        return 1
    allowed_hosts = settings.allowed_hosts
    if not is_loopback(settings.host) and settings.host not in ("0.0.0.0", "::"):  # noqa: S104
        allowed_hosts = (*allowed_hosts, settings.host)  # the address it was asked to serve
    anchor, collateral = _trust_description(args)
    options = ProxyOptions(
        body_limit_bytes=settings.body_limit_bytes,
        through_relay=args.relay is not None,
        allowed_hosts=allowed_hosts,
        allowed_origins=settings.allowed_origins,
        token=settings.token_value,
        instance=settings.instance_value,
        receipts_dir=settings.receipts,
        trust_anchor=anchor,
        collateral_source=collateral,
    )
    app = build_proxy_app(transport, compat=settings.compat, options=options)
    logger.warning(
        "proxy for %s (verified, TCB %s) listening on http://%s",
        args.url,
        endpoint.tcb_status,
        settings.listen,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
    return 0


# -- the PID file and the process ----------------------------------------------------------


def _read_pid_file(path: Path) -> tuple[int | None, str | None, str | None]:
    """The PID file holds the PID, the listen address and the instance token, one a line."""
    try:
        lines = path.read_text().split()
    except OSError:
        return None, None, None
    pid = int(lines[0]) if lines and lines[0].isdigit() else None
    listen = lines[1] if len(lines) > 1 else None
    return pid, listen, lines[2] if len(lines) > 2 else None


def _proc_state(pid: int) -> str | None:
    """The process state letter from /proc (``Z``: a zombie), or None where unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0] if ")" in stat else None


def _alive(pid: int) -> bool:
    """Running (a zombie is not: it has exited and only waits to be reaped)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child: reap it
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_state(pid) not in ("Z", "X")


def _is_our_proxy(pid: int) -> bool:
    """Whether ``pid`` runs ``enclave proxy run`` (its command line, from /proc)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"enclave" in argv and b"proxy" in argv and b"run" in argv


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _health(
    listen: str, instance: str | None, token: str | None, timeout: float = 20.0
) -> dict[str, object] | None:
    """The proxy's health, with ``ours``: whether it proved that it holds ``instance`` (an
    HMAC over a fresh challenge; the token itself is never sent or shown). The access
    ``token`` (``ENCLAVE_PROXY_TOKEN``, read through :class:`ProxySettings`), when set, is
    sent as a bearer token."""
    host, port = parse_listen(listen)
    shown = f"[{host}]" if ":" in host else host
    challenge = secrets.token_hex(16)
    headers = {CHALLENGE_HEADER: challenge}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = httpx.get(
            f"http://{shown}:{port}{HEALTH_PATH}", headers=headers, timeout=timeout
        )
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        document = response.json()
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    proof = document.get("instance_proof")
    document["ours"] = (
        instance is not None
        and isinstance(proof, str)
        and hmac.compare_digest(proof, instance_proof(instance, challenge))
    )
    return document


def _run_argv(args: argparse.Namespace, settings: ProxySettings) -> list[str]:
    # -P: the working directory is not put on sys.path, so a directory named like a package
    # there (``~/enclave`` from the README) cannot shadow it; PYTHONPATH is still honoured.
    argv = [sys.executable, "-P", "-m", "enclave", "proxy", "run", args.url]
    argv += ["--listen", settings.listen, "--compat", settings.compat]
    argv += ["--body-limit-bytes", str(settings.body_limit_bytes)]
    argv += ["--log-level", settings.log_level]
    argv += ["--max-connections", str(settings.max_connections)]
    for host in settings.allowed_hosts:
        argv += ["--allowed-host", host]
    for origin in settings.allowed_origins:
        argv += ["--allowed-origin", origin]
    if settings.receipts is not None:
        argv += ["--receipts", str(settings.receipts.resolve())]
    for flag, value in (
        ("--relay", args.relay),
        ("--relay-key-env", args.relay_key_env),
        ("--policy", args.policy),
        ("--policy-bundle", args.policy_bundle),
        ("--policy-trusted-root", args.policy_trusted_root),
        ("--policy-signer", args.policy_signer),
        ("--policy-workflow", args.policy_workflow if args.policy_bundle else None),
        ("--collateral", args.collateral),
        ("--pccs", args.pccs),
        ("--root-ca", args.root_ca),
    ):
        if value is not None:
            argv += [flag, str(value)]
    for flag, on in (
        ("--insecure-simulated-root", args.insecure_simulated_root),
        ("--insecure-any-measurement", args.insecure_any_measurement),
        ("--insecure-listen-public", settings.insecure_listen_public),
    ):
        if on:
            argv.append(flag)
    for name in args.insecure_accept_service or ():
        argv += ["--insecure-accept-service", name]
    return argv


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - _LOG_TAIL_BYTES))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [""])[-1]


def _start(args: argparse.Namespace) -> int:
    try:
        settings, _ = _checked(args)
    except InputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    pid_file: Path = args.pid_file
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    existing, _, _ = _read_pid_file(pid_file)
    if existing is not None and _alive(existing) and _is_our_proxy(existing):
        sys.stderr.write(f"error: a proxy is already running (pid {existing}, {pid_file})\n")
        return 1
    if not _port_free(settings.host, settings.port):
        sys.stderr.write(f"error: {settings.listen} is already in use (another proxy?)\n")
        return 1
    pid_file.unlink(missing_ok=True)  # stale: its process is gone or is not a proxy
    try:  # O_EXCL: of two concurrent starts, only one gets the PID file
        fd = os.open(pid_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        sys.stderr.write(f"error: a proxy is already starting ({pid_file})\n")
        return 1
    instance = secrets.token_hex(16)
    args.log_file.parent.mkdir(parents=True, exist_ok=True)
    with args.log_file.open("ab") as log:
        child = subprocess.Popen(  # noqa: S603 (this interpreter, this module, list argv)
            _run_argv(args, settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env={**os.environ, INSTANCE_ENV: instance},
        )
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{child.pid}\n{settings.listen}\n{instance}\n")
    return _await_start(args, settings, child, instance)


def _await_start(
    args: argparse.Namespace,
    settings: ProxySettings,
    child: subprocess.Popen[bytes],
    instance: str,
) -> int:
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            args.pid_file.unlink(missing_ok=True)
            reason = _log_tail(args.log_file) or f"it exited with status {child.returncode}"
            sys.stderr.write(f"error: the proxy did not start: {reason} (log: {args.log_file})\n")
            return 1
        health = _health(settings.listen, instance, settings.token_value, timeout=2.0)
        if health is not None and health["ours"] is True and health.get("verified") is True:
            sys.stdout.write(
                f"proxy started (pid {child.pid}) on http://{settings.listen} for "
                f"{args.url}: verified, TCB {health.get('tcb_status')}\n"
            )
            return 0
        time.sleep(POLL_SECONDS)
    _terminate(child.pid, 5.0)
    args.pid_file.unlink(missing_ok=True)
    sys.stderr.write(
        f"error: the proxy did not answer verified in {args.timeout}s; see {args.log_file}\n"
    )
    return 1


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM, wait up to ``timeout``, then SIGKILL and wait up to ``timeout`` again. True if
    it had to be killed. Every wait is bounded (a zombie counts as gone)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, timeout)
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(POLL_SECONDS)
    return not _alive(pid)


def _stop(args: argparse.Namespace) -> int:
    pid, _, _ = _read_pid_file(args.pid_file)
    if pid is None or not _alive(pid):
        args.pid_file.unlink(missing_ok=True)
        sys.stdout.write("proxy not running\n")
        return 1
    if not _is_our_proxy(pid):
        args.pid_file.unlink(missing_ok=True)
        sys.stderr.write(
            f"error: pid {pid} in {args.pid_file} is not an enclave proxy; not signalling it "
            "(the stale PID file was removed)\n"
        )
        return 1
    killed = _terminate(pid, args.timeout)
    args.pid_file.unlink(missing_ok=True)
    sys.stdout.write(f"proxy stopped (pid {pid}{', killed' if killed else ''})\n")
    return 0


def _env_token() -> str | None:
    """``ENCLAVE_PROXY_TOKEN`` through :class:`ProxySettings` (None when the environment does
    not make valid proxy settings: then the status check goes without it)."""
    try:
        return ProxySettings().token_value
    except ValidationError:
        return None


def _status(args: argparse.Namespace) -> int:
    pid, recorded, instance = _read_pid_file(args.pid_file)
    listen = args.listen or recorded or "127.0.0.1:8787"
    running = pid is not None and _alive(pid) and _is_our_proxy(pid)
    health = _health(listen, instance, _env_token()) if running else None
    ours = health is not None and (instance is None or health["ours"] is True)
    document: dict[str, object] = {
        "running": running,
        "pid": pid if running else None,
        "listen": listen,
        "http": ours,
    }
    if health is not None and ours:
        for key in ("endpoint", "compat", "verified", "failure", "last_verified", "tcb_status"):
            document[key] = health.get(key)
    sys.stdout.write(json.dumps(document) + "\n")
    return 0 if running and ours and document.get("verified") is True else 1
