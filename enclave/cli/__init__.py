"""The ``enclave`` command line.

Each subcommand lives in its own ``_<name>.py`` module exposing ``register(subparsers)``; this
module only builds the parser from them and dispatches. A subcommand's handler returns the
process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from enclave import __version__

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]

# Subcommand modules, in the order `enclave --help` lists them.
_SUBCOMMAND_MODULES: tuple[str, ...] = (
    "_demo",
    "_serve",
    "_attest",
    "_verify",
    "_proxy",
    "_relay",
    "_models",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enclave",
        description=(
            "Confidential LLM inference inside an Intel TDX VM: RA-TLS, attestation, "
            "end-to-end encrypted (Oblivious HTTP) requests and a supervised vLLM engine."
        ),
    )
    parser.add_argument("--version", action="version", version=f"enclave {__version__}")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level for the command's diagnostics (default: WARNING)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        module = importlib.import_module(f"enclave.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    return handler(args)
