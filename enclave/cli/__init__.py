"""The ``enclave`` command line.

Each subcommand lives in its own ``_<name>.py`` module exposing ``register(subparsers)``; this
module only builds the parser from them and dispatches. A subcommand's handler returns the
process exit code, the same for every command (docs/client.md, "Exit status"):

    0    success
    1    the operation failed: verification, a refusal by the service, a failed load, an
         invalid catalog, a network error
    2    unusable input: bad arguments, an unreadable or invalid file, a missing token
    130  interrupted (Ctrl-C)

``--log-level`` (case-insensitive) is accepted before or after the subcommand. Every option's
help ends with its default and, where there are any, its choices.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from enclave import __version__

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "LOG_LEVELS",
    "build_parser",
    "main",
]

Handler = Callable[[argparse.Namespace], int]

LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _DefaultsAndChoices(argparse.HelpFormatter):
    """Ends every option's help with its default and its choices (when it does not say them)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.help is argparse.SUPPRESS or not action.option_strings:
            return action.help
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            return action.help
        if action.choices is not None and "choices" not in text:
            text += " (choices: " + ", ".join(str(c) for c in action.choices) + ")"
        if "default" not in text and not action.required:
            if isinstance(action, argparse._StoreTrueAction):
                text += " (default: off)"
            elif action.default is None or action.default is argparse.SUPPRESS:
                text += " (default: none)"
            else:
                text += " (default: %(default)s)"
        return text


class _OncePerMessage(logging.Filter):
    """A command prints each distinct warning once, however often the library repeats it
    (an insecure option warns on every use: a command may use it several times)."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.getMessage())
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


def _configure_logging(level: str) -> None:
    """``logging.basicConfig`` (nothing when the root logger has handlers already), with each
    distinct warning printed once."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_OncePerMessage())
    root.addHandler(handler)
    root.setLevel(level)


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"invalid level {value!r} (choose from {', '.join(LOG_LEVELS)}, any case)"
        )
    return level


def _add_log_level(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--log-level",
        type=_log_level,
        default=default,
        metavar="LEVEL",
        help="logging level for the command's diagnostics, any case (default: WARNING; "
        "choices: " + ", ".join(LOG_LEVELS) + ")",
    )


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found.append(child)
                found.extend(_subparsers(child))
    return found


def _finish(parser: argparse.ArgumentParser) -> None:
    """Every (sub)parser: the help formatter, and ``--log-level`` after the subcommand too."""
    for child in [parser, *_subparsers(parser)]:
        base = child.formatter_class
        if isinstance(base, type) and not issubclass(base, _DefaultsAndChoices):
            formatter: Any = type("Formatter", (_DefaultsAndChoices, base), {})
            child.formatter_class = formatter
        for action in child._actions:
            if action.option_strings and action.help is None:
                action.help = action.dest.replace("_", " ")  # so its default is shown
        if child is not parser and "--log-level" not in child._option_string_actions:
            # SUPPRESS: given only after the subcommand does it override the one before it.
            _add_log_level(child, argparse.SUPPRESS)


# Subcommand modules, in the order `enclave --help` lists them.
_SUBCOMMAND_MODULES: tuple[str, ...] = (
    "_demo",
    "_serve",
    "_attest",
    "_verify",
    "_receipt",
    "_proxy",
    "_relay",
    "_models",
    "_ohttp_keys",
    "_measure",
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
    _add_log_level(parser, "WARNING")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        module = importlib.import_module(f"enclave.cli.{name}")
        module.register(subparsers)
    _finish(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _configure_logging(args.log_level)
    try:
        return handler(args)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
