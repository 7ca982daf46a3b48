"""The command line of the development engine: vLLM's ``serve`` flags plus ``--dev-*`` flags."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from enclave_dev.engine._faults import Faults

__all__ = [
    "DEFAULT_TOKENS_PER_SECOND",
    "NOT_A_LANGUAGE_MODEL",
    "EngineConfig",
    "build_parser",
    "parse_config",
]

NOT_A_LANGUAGE_MODEL = (
    "enclave development engine: deterministic text derived from the prompt; not a language model"
)
DEFAULT_TOKENS_PER_SECOND = 50.0
DEFAULT_PORT = 8000
DEFAULT_HOST = "127.0.0.1"
_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
_DESCRIPTION = (
    "A stand-in for vLLM's OpenAI-compatible server, for development and tests. It is NOT a "
    "language model: every completion is deterministic text derived from the prompt "
    "(see docs/model-lifecycle.md). It accepts vLLM's `serve` flags and adds --dev-* fault "
    "switches, which may also come before `serve` (as in the supervisor's --engine-command)."
)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything the engine was started with."""

    model_dir: Path
    served_names: tuple[str, ...]
    uds: Path | None
    host: str
    port: int
    max_model_len: int | None
    tensor_parallel_size: int
    gpu_memory_utilization: float
    dtype: str
    quantization: str | None
    enable_auto_tool_choice: bool
    tool_call_parser: str | None
    chat_template: str | None
    enable_log_requests: bool
    disable_log_stats: bool
    access_log: bool
    load_seconds: float
    fail_at_start: bool
    workers: int
    faults: Faults
    non_default_args: tuple[tuple[str, object], ...] = ()
    #: vLLM flags this engine does not imitate (accepted and ignored, as a catalog may pass
    #: any of vLLM's many tuning flags); logged at start.
    ignored_args: tuple[str, ...] = ()

    @property
    def listen_address(self) -> str:
        if self.uds is not None:
            return f"unix:{self.uds}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number >= 0")
    return value


def _human_int(text: str) -> int:
    """vLLM-style lengths: ``4096``, ``32k`` (x1000), ``32K`` (x1024), ``1m`` / ``1M``."""
    multipliers = {"k": 1000, "K": 1024, "m": 1000**2, "M": 1024**2}
    if text and text[-1] in multipliers:
        value = int(float(text[:-1]) * multipliers[text[-1]])
    else:
        value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _add_vllm_flags(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("model_tag", metavar="MODEL_DIR", help="the model directory")
    serve.add_argument("--served-model-name", nargs="+", default=None)
    serve.add_argument("--uds", default=None, help="listen on this Unix socket")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--tensor-parallel-size", "-tp", type=_positive_int, default=1)
    serve.add_argument("--max-model-len", type=_human_int, default=None)
    serve.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    serve.add_argument("--dtype", choices=_DTYPES, default="auto")
    serve.add_argument("--quantization", "-q", default=None)
    serve.add_argument("--enable-auto-tool-choice", action="store_true")
    serve.add_argument("--tool-call-parser", default=None)
    serve.add_argument("--chat-template", default=None)
    serve.add_argument(
        "--enable-log-requests", action=argparse.BooleanOptionalAction, default=False
    )
    serve.add_argument("--disable-log-requests", action="store_true", help="deprecated")
    serve.add_argument("--disable-log-stats", action="store_true")
    serve.add_argument("--disable-uvicorn-access-log", action="store_true")


def _add_dev_flags(serve: argparse.ArgumentParser) -> None:
    dev = serve.add_argument_group("development engine only")
    dev.add_argument("--dev-load-seconds", type=_non_negative_float, default=1.0)
    dev.add_argument("--dev-fail-at-start", action="store_true")
    dev.add_argument("--dev-crash-after-chunks", type=_non_negative_int, default=None)
    dev.add_argument("--dev-hang-health", action="store_true")
    dev.add_argument("--dev-stall-after-chunks", type=_non_negative_int, default=None)
    dev.add_argument("--dev-error-after-chunks", type=_non_negative_int, default=None)
    dev.add_argument(
        "--dev-tokens-per-second",
        type=_non_negative_float,
        default=DEFAULT_TOKENS_PER_SECOND,
        help="generation pace; 0 means as fast as possible",
    )
    dev.add_argument("--dev-workers", type=_non_negative_int, default=1)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser. Unknown vLLM flags are ignored (and logged); an unknown
    ``--dev-*`` flag is a usage error (exit status 2)."""
    parser = argparse.ArgumentParser(
        prog="python -m enclave_dev.engine", description=_DESCRIPTION, allow_abbrev=False
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="serve")
    serve = commands.add_parser(
        "serve",
        help="serve a model directory (NOT a language model)",
        description=_DESCRIPTION,
        allow_abbrev=False,
    )
    _add_vllm_flags(serve)
    _add_dev_flags(serve)
    return parser


def _serve_first(argv: Sequence[str]) -> list[str]:
    """Move words given before ``serve`` after it, so ``--dev-*`` flags can sit in the
    supervisor's engine command (``python -m enclave_dev.engine --dev-load-seconds 1``)."""
    words = list(argv)
    if words and words[0] != "serve" and "serve" in words:
        at = words.index("serve")
        return ["serve", *words[at + 1 :], *words[:at]]
    return words


def parse_config(argv: Sequence[str] | None = None) -> EngineConfig:
    """Parse argv (``serve <dir> ...``); usage errors exit with status 2."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(_serve_first(sys.argv[1:] if argv is None else argv))
    if any(word.startswith("--dev-") for word in unknown):
        parser.error(f"unknown development flag: {' '.join(unknown)}")
    if args.command is None:
        parser.error("the command is required: serve")
    if args.enable_auto_tool_choice and not args.tool_call_parser:
        parser.error("--enable-auto-tool-choice requires --tool-call-parser")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be in 0..65535")
    defaults = vars(parser.parse_args(["serve", args.model_tag]))
    changed = tuple(
        (key, value)
        for key, value in vars(args).items()
        if key != "command" and (key == "model_tag" or value != defaults.get(key))
    )
    names = tuple(args.served_model_name or [args.model_tag])
    if any(not name for name in names):
        parser.error("--served-model-name must not be empty")
    faults = Faults(
        crash_after_chunks=args.dev_crash_after_chunks,
        stall_after_chunks=args.dev_stall_after_chunks,
        error_after_chunks=args.dev_error_after_chunks,
        hang_health=args.dev_hang_health,
        tokens_per_second=args.dev_tokens_per_second,
    )
    return EngineConfig(
        ignored_args=tuple(unknown),
        model_dir=Path(args.model_tag),
        served_names=names,
        uds=Path(args.uds) if args.uds else None,
        host=args.host or DEFAULT_HOST,
        port=args.port,
        max_model_len=args.max_model_len,
        tensor_parallel_size=args.tensor_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
        dtype=args.dtype,
        quantization=args.quantization,
        enable_auto_tool_choice=args.enable_auto_tool_choice,
        tool_call_parser=args.tool_call_parser,
        chat_template=args.chat_template,
        enable_log_requests=args.enable_log_requests and not args.disable_log_requests,
        disable_log_stats=args.disable_log_stats,
        access_log=not args.disable_uvicorn_access_log,
        load_seconds=args.dev_load_seconds,
        fail_at_start=args.dev_fail_at_start,
        workers=args.dev_workers,
        faults=faults,
        non_default_args=changed,
    )
