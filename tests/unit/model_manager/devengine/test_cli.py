"""The development engine's command line: vLLM's flags as the supervisor passes them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from model_manager.catalog import ModelSpec
from model_manager.devengine._config import build_parser, parse_config
from model_manager.engine import engine_argv
from model_manager.settings import ModelManagerSettings


def test_help_says_plainly_it_is_not_a_language_model() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "model_manager.devengine", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "NOT a" in done.stdout
    assert "language model" in done.stdout
    assert "NOT a language model" in build_parser().format_help().replace("\n", " ")


def test_accepts_every_flag_the_supervisor_passes(tmp_path: Path) -> None:
    settings = ModelManagerSettings(
        engine_command=("python3", "-m", "model_manager.devengine", "--dev-load-seconds", "0.1"),
        insecure_dev_engine=True,
        run_dir=tmp_path,
    )
    spec = ModelSpec(
        name="tiny",
        path=tmp_path,
        tensor_parallel_size=2,
        max_model_len=4096,
        gpu_memory_utilization=0.85,
        dtype="bfloat16",
        quantization="fp8",
        tool_call_parser="hermes",
        chat_template=tmp_path / "t.jinja",
        extra_args=("--enable-prefix-caching", "--max-num-seqs", "8"),
    )
    argv = engine_argv(settings, spec)[3:]  # what follows the program
    config = parse_config(argv)
    assert config.served_names == ("tiny",)
    assert config.uds == tmp_path / "engine.sock"
    assert config.load_seconds == 0.1
    assert (config.tensor_parallel_size, config.max_model_len) == (2, 4096)
    assert (config.dtype, config.quantization) == ("bfloat16", "fp8")
    assert config.enable_auto_tool_choice
    assert config.tool_call_parser == "hermes"
    assert not config.enable_log_requests
    assert config.ignored_args == ("--enable-prefix-caching", "--max-num-seqs", "8")


def test_tcp_listen_flags(tmp_path: Path) -> None:
    config = parse_config(["serve", str(tmp_path), "--host", "127.0.0.1", "--port", "8123"])
    assert config.listen_address == "http://127.0.0.1:8123"
    assert config.served_names == (str(tmp_path),)


@pytest.mark.parametrize(
    "argv",
    [
        ["serve"],
        ["serve", "/m", "--dev-no-such-switch"],
        ["serve", "/m", "--dev-crash-after-chunks", "-1"],
        ["serve", "/m", "--dtype", "int3"],
        ["serve", "/m", "--enable-auto-tool-choice"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_config(argv)
    assert info.value.code == 2
