"""``enclave models status|load NAME|unload NAME``: the fleet's model lifecycle commands.

They talk to the service over RA-TLS (the same verifier options as ``enclave verify``), so
the load token is only ever sent to an endpoint whose evidence verified. The token comes from
``--token`` or the ``ENCLAVE_LOAD_TOKEN`` (else ``LOAD_TOKEN``) environment variable and is
never printed; load and unload without one stop before connecting and say how to give one.
``load --wait`` shows progress on stderr (a bar redrawn in place on a terminal, plain lines
otherwise; bytes hashed and an ETA while a manifest digest is computed) until the model is
ready (exit 0) or fails (exit 1, with the engine's reason), then prints the final status.
``check DIR`` validates a models directory offline. Exit status: 0 done, 1 refused or failed,
2 unusable input (docs/client.md).

Replicas: give ``--url`` once per replica (or ``--urls-file FILE``, one URL a line) and the
command acts on every replica, each verified on its own RA-TLS connection with the same
policy, concurrently; it prints ``{"replicas": [{"url", "replica_id", "exit", "document",
"errors"}]}`` and exits 0 only if every replica succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import httpx

from enclave.cli._verify import InputError, add_verifier_arguments, verifier_from_args
from enclave.client import AsyncRaTlsTransport, AttestationFailed

__all__ = ["TOKEN_ENV", "TOKEN_ENV_SHORT", "ProgressView", "register", "render_progress"]

TOKEN_ENV = "ENCLAVE_LOAD_TOKEN"  # noqa: S105 (the variable name, not a secret)
TOKEN_ENV_SHORT = "LOAD_TOKEN"  # noqa: S105 (the service reads it too)
POLL_SECONDS = 0.25
BAR_WIDTH = 30


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = subparsers.add_parser(
        "models",
        help="model lifecycle on a service: status, load, unload",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = models.add_subparsers(dest="models_action", metavar="ACTION")
    models.set_defaults(handler=lambda _args: _usage(models))
    check = actions.add_parser(
        "check",
        help="validate a models directory and its models.toml before deploying it",
        description=(
            "Validate DIR as --models-dir: models.toml (TOML syntax, keys, values, forbidden "
            "engine arguments, paths inside DIR) and every model directory. Prints one line "
            "per model. Exit status: 0 every model is valid, 1 a model or the file is invalid, "
            "2 DIR is not a directory."
        ),
    )
    check.add_argument("directory", metavar="DIR", help="the models directory to check")
    check.set_defaults(handler=_check)
    status = actions.add_parser("status", help="print the model status document")
    load = actions.add_parser("load", help="load a model")
    unload = actions.add_parser("unload", help="unload a model")
    load.add_argument("name", metavar="NAME")
    unload.add_argument("name", metavar="NAME")
    load.add_argument(
        "--wait",
        action="store_true",
        help="wait for ready or failure, with progress on stderr (a bar on a terminal, plain "
        "lines otherwise); print the final status, and the engine's reason on failure",
    )
    load.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how long --wait waits (default: %(default)s)",
    )
    for parser in (status, load, unload):
        parser.add_argument(
            "--url",
            action="append",
            default=[],
            help="the service's https:// base URL; repeat it for several replicas",
        )
        parser.add_argument(
            "--urls-file",
            metavar="FILE",
            help="replicas' https:// base URLs, one a line (# comments); with --url too",
        )
        parser.add_argument(
            "--token",
            help=f"load token (default: ${TOKEN_ENV}, else ${TOKEN_ENV_SHORT}; the environment "
            "keeps it out of the process list)",
        )
        add_verifier_arguments(parser)
        parser.set_defaults(handler=_models)


def _check(args: argparse.Namespace) -> int:
    from pathlib import Path  # the server-side catalog, imported only for this command

    from model_manager.catalog import CATALOG_FILE, Catalog
    from model_manager.errors import CatalogError

    directory = Path(args.directory)
    if not directory.is_dir():
        sys.stderr.write(f"error: {directory} is not a directory\n")
        return 2
    try:
        verdicts = Catalog(directory).check()
    except CatalogError as exc:
        sys.stdout.write(f"error  {exc}\n")
        return 1
    width = max([len(v.name) for v in verdicts] + [4])
    for verdict in verdicts:
        if verdict.spec is not None:
            where = "declared" if verdict.declared else "directory only"
            args_text = " ".join(verdict.spec.engine_args()) or "engine defaults"
            sys.stdout.write(f"ok     {verdict.name:<{width}}  ({where}) {args_text}\n")
        else:
            sys.stdout.write(f"error  {verdict.name:<{width}}  {verdict.problem}\n")
    bad = sum(1 for verdict in verdicts if not verdict.ok)
    source = CATALOG_FILE if (directory / CATALOG_FILE).exists() else f"no {CATALOG_FILE}"
    sys.stdout.write(f"{len(verdicts)} models ({source}), {bad} invalid\n")
    return 1 if bad else 0


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - the loop returns


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def render_progress(status: dict[str, object], eta: float | None = None) -> str:
    """One line: the bar, the percentage, the state and message; while a manifest is hashed,
    the bytes hashed of all and (when known) the ETA of the hashing."""
    progress = status.get("proxy_progress")
    fraction = min(max(float(progress), 0.0), 1.0) if isinstance(progress, int | float) else 0.0
    filled = round(fraction * BAR_WIDTH)
    state, message = status.get("proxy_status", "?"), status.get("proxy_message", "")
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    line = f"[{bar}] {fraction * 100:5.1f}% {state}: {message}"
    hashing = _hashing(status)
    if hashing is not None:
        line += f" ({_size(hashing[0])} of {_size(hashing[1])} hashed"
        line += ")" if eta is None else f", ETA {_duration(eta)})"
    return line


def _hashing(status: dict[str, object]) -> tuple[int, int] | None:
    hashing = status.get("hashing")
    if not isinstance(hashing, dict):
        return None
    done, total = hashing.get("done_bytes"), hashing.get("total_bytes")
    if not isinstance(done, int) or not isinstance(total, int) or total <= 0:
        return None
    return done, total


class ProgressView:
    """``load --wait``'s progress on stderr. On a terminal: one line redrawn in place (carriage
    return, clear to the end of the line). Elsewhere (a log, a pipe): a plain line whenever the
    state or message changes or the progress passes another 10 %."""

    def __init__(self, out: TextIO, *, tty: bool, clock: Callable[[], float] = time.monotonic):
        self._out = out
        self._tty = tty
        self._clock = clock
        self._last: tuple[object, ...] | None = None
        self._hash_start: tuple[float, int] | None = None
        self._open = False

    def show(self, status: dict[str, object]) -> None:
        line = render_progress(status, self._eta(status))
        if self._tty:
            self._out.write("\r\x1b[K" + line)
            self._open = True
        else:
            progress = status.get("proxy_progress")
            decile = int(float(progress) * 10) if isinstance(progress, int | float) else 0
            hashing = _hashing(status)
            key = (
                status.get("proxy_status"),
                status.get("proxy_message"),
                decile,
                None if hashing is None else hashing[0] * 10 // hashing[1],
            )
            if key == self._last:
                return
            self._last = key
            self._out.write(line + "\n")
        self._out.flush()

    def close(self) -> None:
        """End the redrawn line (before anything else is printed)."""
        if self._open:
            self._out.write("\n")
            self._out.flush()
            self._open = False

    def _eta(self, status: dict[str, object]) -> float | None:
        hashing = _hashing(status)
        if hashing is None:
            self._hash_start = None
            return None
        done, total = hashing
        now = self._clock()
        if self._hash_start is None or done < self._hash_start[1]:
            self._hash_start = (now, done)
            return None
        started, first = self._hash_start
        if done <= first or now <= started:
            return None
        rate = (done - first) / (now - started)
        return (total - done) / rate


def _urls(args: argparse.Namespace) -> list[str]:
    urls = list(args.url)
    if args.urls_file is not None:
        try:
            text = Path(args.urls_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--urls-file: cannot read {args.urls_file}") from exc
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                urls.append(line)
    if not urls:
        raise InputError(
            "give the service with --url URL (repeat it, or --urls-file, for replicas)"
        )
    for url in urls:
        if not url.startswith("https://"):
            raise InputError("--url must be https:// (the service's RA-TLS base URL)")
    if len(set(urls)) != len(urls):
        raise InputError("a replica URL is given twice")
    return urls


def _models(args: argparse.Namespace) -> int:
    try:
        urls = _urls(args)
        verifier = verifier_from_args(args)
    except InputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    token = args.token or os.environ.get(TOKEN_ENV) or os.environ.get(TOKEN_ENV_SHORT)
    if not token and args.models_action in ("load", "unload"):
        sys.stderr.write(
            f"error: {args.models_action} needs the service's load token: set {TOKEN_ENV} "
            f"(or {TOKEN_ENV_SHORT}) in the environment, or give --token TOKEN (visible to "
            "other users in the process list)\n"
        )
        return 2
    headers = {} if not token else {"Authorization": f"Bearer {token}"}

    def client(url: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=AsyncRaTlsTransport(verifier),
            base_url=url.rstrip("/"),
            headers=headers,
            timeout=30.0,
        )

    if len(urls) > 1:
        return asyncio.run(_act_on_replicas(urls, client, args, sys.stdout, sys.stderr))
    return asyncio.run(_act_reporting(client(urls[0]), args, sys.stdout, sys.stderr))


async def _act_reporting(
    client: httpx.AsyncClient, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    """:func:`_act`, with a failed verification or connection said on ``err`` (exit 1)."""
    try:
        return await _act(client, args, out, err)
    except AttestationFailed as exc:
        err.write(f"error: the endpoint did not verify: {exc.reason}\n")
        return 1
    except httpx.HTTPError as exc:
        err.write(f"error: request failed: {type(exc).__name__}\n")
        return 1


async def _act_on_replicas(
    urls: list[str],
    client: Callable[[str], httpx.AsyncClient],
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
) -> int:
    """The action on every replica at once, each verified on its own; one report."""

    async def one(url: str) -> dict[str, Any]:
        captured_out, captured_err = io.StringIO(), io.StringIO()
        code = await _act_reporting(client(url), args, captured_out, captured_err)
        document: object = None
        if captured_out.getvalue().strip():
            try:
                document = json.loads(captured_out.getvalue())
            except ValueError:
                document = captured_out.getvalue()
        replica_id = document.get("replica_id") if isinstance(document, dict) else None
        errors = [line for line in captured_err.getvalue().splitlines() if line.strip()]
        return {
            "url": url,
            "replica_id": replica_id,
            "exit": code,
            "document": document,
            "errors": [line for line in errors if line.startswith("error")],
        }

    results = await asyncio.gather(*(one(url) for url in urls))
    for result in results:
        state = "ok" if result["exit"] == 0 else "FAILED"
        line = f"{result['url']} ({result['replica_id'] or 'replica id unknown'}): {state}"
        if result["errors"]:
            line += " - " + "; ".join(result["errors"])
        err.write(line + "\n")
    out.write(json.dumps({"replicas": results}, indent=2) + "\n")
    failed = sum(1 for result in results if result["exit"] != 0)
    err.write(f"{len(results) - failed} of {len(results)} replicas succeeded\n")
    return 1 if failed else 0


async def _act(
    client: httpx.AsyncClient, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    async with client:
        if args.models_action == "status":
            response = await client.get("/v1/models/status")
        else:
            response = await client.post(
                f"/v1/models/{args.models_action}", json={"model": args.name}
            )
        document = _document(response)
        if response.status_code >= 400:
            err.write(f"error: {_refusal(response.status_code, document)}\n")
            out.write(json.dumps(document, indent=2) + "\n")
            return 1
        if args.models_action != "load" or not args.wait:
            out.write(json.dumps(document, indent=2) + "\n")
            return 0
        return await _wait(client, args.name, args.timeout, out, err)


def _refusal(status: int, document: object) -> str:
    error = document.get("error") if isinstance(document, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    text = f"the service refused: HTTP {status}"
    if code:
        text += f" {code}"
    if message:
        text += f": {message}"
    if status == 401:
        text += f" (check {TOKEN_ENV} or --token)"
    return text


def _document(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return {"status": response.status_code}


async def _wait(
    client: httpx.AsyncClient, name: str, timeout: float, out: TextIO, err: TextIO
) -> int:
    view = ProgressView(err, tty=err.isatty())
    deadline = time.monotonic() + timeout
    status: object = None
    try:
        while time.monotonic() < deadline:
            status = _document(await client.get("/v1/models/status"))
            if not isinstance(status, dict):
                view.close()
                err.write("error: unexpected status document\n")
                return 1
            view.show(status)
            if status.get("proxy_status") == "ready" and status.get("loaded_model") == name:
                view.close()
                out.write(json.dumps(status, indent=2) + "\n")
                return 0
            if status.get("proxy_status") == "error" and status.get("loaded_model") == name:
                view.close()
                out.write(json.dumps(status, indent=2) + "\n")
                error = status.get("error")
                code = error.get("code") if isinstance(error, dict) else "unknown"
                reason = error.get("message") if isinstance(error, dict) else None
                err.write(f"error: the load of {name} failed: {code}")
                err.write(f": {reason}\n" if reason else "\n")
                return 1
            await asyncio.sleep(POLL_SECONDS)
    finally:
        view.close()
    if isinstance(status, dict):
        out.write(json.dumps(status, indent=2) + "\n")
    err.write(f"error: {name} not ready after {timeout:g} s\n")
    return 1
