"""``enclave models status|load NAME|unload NAME``: the fleet's model lifecycle commands.

They talk to the service over RA-TLS (the same verifier options as ``enclave verify``), so
the load token is only ever sent to an endpoint whose evidence verified. The token comes from
``--token`` or the ``ENCLAVE_LOAD_TOKEN`` environment variable and is never printed.
``load --wait`` draws a progress bar from ``proxy_progress`` until the model is ready (exit 0)
or fails (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import TextIO

import httpx

from enclave.cli._verify import InputError, add_verifier_arguments, verifier_from_args
from enclave.client import AsyncRaTlsTransport, AttestationFailed

__all__ = ["TOKEN_ENV", "register", "render_progress"]

TOKEN_ENV = "ENCLAVE_LOAD_TOKEN"  # noqa: S105 (the variable name, not a secret)
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
    load.add_argument("--wait", action="store_true", help="wait for ready, with a progress bar")
    load.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS")
    for parser in (status, load, unload):
        parser.add_argument("--url", required=True, help="the service's https:// base URL")
        parser.add_argument("--token", help=f"load token (default: ${TOKEN_ENV})")
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


def render_progress(status: dict[str, object]) -> str:
    progress = status.get("proxy_progress")
    fraction = min(max(float(progress), 0.0), 1.0) if isinstance(progress, int | float) else 0.0
    filled = round(fraction * BAR_WIDTH)
    state, message = status.get("proxy_status", "?"), status.get("proxy_message", "")
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    return f"[{bar}] {fraction * 100:5.1f}% {state}: {message}"


def _models(args: argparse.Namespace) -> int:
    try:
        if not args.url.startswith("https://"):
            raise InputError("--url must be https://")
        verifier = verifier_from_args(args)
    except InputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    token = args.token or os.environ.get(TOKEN_ENV)
    headers = {} if not token else {"Authorization": f"Bearer {token}"}
    client = httpx.AsyncClient(
        transport=AsyncRaTlsTransport(verifier),
        base_url=args.url.rstrip("/"),
        headers=headers,
        timeout=30.0,
    )
    try:
        return asyncio.run(_act(client, args, sys.stdout, sys.stderr))
    except AttestationFailed as exc:
        sys.stderr.write(f"error: the endpoint did not verify: {exc.reason}\n")
        return 1
    except httpx.HTTPError as exc:
        sys.stderr.write(f"error: request failed: {type(exc).__name__}\n")
        return 1


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
        out.write(json.dumps(_document(response), indent=2) + "\n")
        if response.status_code >= 400:
            return 1
        if args.models_action != "load" or not args.wait:
            return 0
        return await _wait(client, args.name, args.timeout, err)


def _document(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return {"status": response.status_code}


async def _wait(client: httpx.AsyncClient, name: str, timeout: float, err: TextIO) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _document(await client.get("/v1/models/status"))
        if not isinstance(status, dict):
            err.write("\nerror: unexpected status document\n")
            return 1
        err.write("\r" + render_progress(status))
        err.flush()
        if status.get("proxy_status") == "ready" and status.get("loaded_model") == name:
            err.write("\n")
            return 0
        if status.get("proxy_status") == "error":
            error = status.get("error")
            code = error.get("code") if isinstance(error, dict) else "unknown"
            err.write(f"\nerror: the load failed ({code})\n")
            return 1
        await asyncio.sleep(POLL_SECONDS)
    err.write(f"\nerror: not ready after {timeout}s\n")
    return 1
