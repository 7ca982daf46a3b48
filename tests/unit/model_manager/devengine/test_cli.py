"""The development engine's command line: vLLM's flags as the supervisor passes them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from enclave_dev.engine._config import build_parser, parse_config
from model_manager.catalog import ModelSpec
from model_manager.engine import engine_argv
from model_manager.settings import ModelManagerSettings

VECTORS = Path(__file__).resolve().parents[3] / "vectors" / "vllm"


def test_help_says_plainly_it_is_not_a_language_model() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "enclave_dev.engine", "--help"],
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
        engine_command=("python3", "-m", "enclave_dev.engine", "--dev-load-seconds", "0.1"),
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


def milestones(lines: list[str]) -> set[float]:
    from model_manager._progress import ProgressParser

    parser = ProgressParser()
    return {parser.feed(line) for line in lines}


def test_a_failed_start_prints_vllm_032s_lines_and_reason(tmp_path: Path) -> None:
    """The failing start has real vLLM 0.32's shape (load-refused-bad-weights.log): the
    service's reason rule picks the root cause, not the API server's generic wrapper."""
    from model_manager._reason import failure_reason

    model = tmp_path / "tiny"
    model.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "enclave_dev.engine", "serve", str(model),
         "--port", "0", "--dev-fail-at-start"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert any(
        "(EngineCore pid=" in line and "EngineCore failed to start." in line for line in lines
    )
    assert failure_reason(lines) == (
        "RuntimeError: development engine: start failure requested by --dev-fail-at-start"
    )
    recorded = VECTORS / "load-refused-bad-weights.log"
    assert failure_reason(recorded.read_text().splitlines()).startswith("SafetensorError: ")


def test_a_start_prints_vllm_032s_milestones(tmp_path: Path) -> None:
    """Every progress milestone of real vLLM 0.32's CPU log (load-cpu.log) is printed by the
    development engine too (which also prints the GPU runner's two lines)."""
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    process = subprocess.Popen(
        [sys.executable, "-m", "enclave_dev.engine", "serve", str(model),
         "--uds", str(tmp_path / "s.sock"), "--dev-load-seconds", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if "Application startup complete" in line or len(lines) > 200:
                break
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
    real = milestones((VECTORS / "load-cpu.log").read_text().splitlines())
    assert real <= milestones(lines)
    assert {0.74, 0.78} <= milestones(lines)  # "Model loading took", "Available KV cache"
