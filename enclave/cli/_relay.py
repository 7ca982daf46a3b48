"""``enclave relay``: a minimal OHTTP relay in front of a gateway (see enclave/client/_relay.py).

Clients post encapsulated requests to ``http://HOST:PORT/.well-known/ohttp-relay``; the relay
forwards the opaque bytes to ``--gateway`` (the service's ``/.well-known/ohttp-gateway``)
without anything that identifies the client, and streams the answer back.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn

from enclave.cli._listen import parse_listen
from enclave.client._relay import RELAY_PATH, build_relay_app

__all__ = ["register"]

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "relay",
        help="run a minimal OHTTP relay in front of a gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--gateway", required=True, metavar="URL", help="the gateway resource")
    parser.add_argument("--listen", default="127.0.0.1:8788", metavar="HOST:PORT")
    parser.add_argument(
        "--api-key-env", metavar="VAR", help="require this env var's value as a Bearer key"
    )
    parser.add_argument(
        "--insecure-skip-gateway-tls-verify",
        action="store_true",
        help="do not verify the gateway's TLS certificate (the payload stays encrypted)",
    )
    parser.set_defaults(handler=_relay)


def _relay(args: argparse.Namespace) -> int:
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        sys.stderr.write(f"error: --listen: {exc}\n")
        return 2
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            sys.stderr.write(f"error: {args.api_key_env} is not set\n")
            return 2
    app = build_relay_app(
        args.gateway,
        api_key=api_key,
        insecure_skip_tls_verify=args.insecure_skip_gateway_tls_verify,
    )
    logger.warning("OHTTP relay on http://%s:%s%s -> %s", host, port, RELAY_PATH, args.gateway)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0
