"""``enclave models check DIR`` as a user runs it: one line per model, what is wrong and
where, and the exit status (0 valid, 1 invalid, 2 not a directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def enclave(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "enclave", *args],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip


def models(tmp_path: Path, toml: str | None) -> Path:
    root = tmp_path / "models"
    for name in ("tiny", "other"):
        (root / name).mkdir(parents=True)
        (root / name / "config.json").write_text("{}")
    if toml is not None:
        (root / "models.toml").write_text(toml)
    return root


def test_a_valid_catalog_exits_zero_and_lists_every_model(tmp_path: Path) -> None:
    root = models(tmp_path, '[models.chat]\npath = "tiny"\nmax_model_len = 64\n')
    result = enclave("models", "check", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("ok") and "chat" in line and "--max-model-len 64" in line for line in lines
    )
    assert any(
        line.startswith("ok") and "other" in line and "directory only" in line for line in lines
    )
    assert lines[-1] == "3 models (models.toml), 0 invalid"


def test_bad_entries_are_each_named_with_their_problem_and_exit_one(tmp_path: Path) -> None:
    root = models(
        tmp_path,
        '[models.typo]\npath = "tiny"\ntensor_paralel_size = 2\n'
        '[models.loud]\npath = "tiny"\nextra_args = ["--enable-log-outputs"]\n'
        '[models.away]\npath = "../../etc"\n'
        '[models.good]\npath = "tiny"\n',
    )
    result = enclave("models", "check", str(root))
    assert result.returncode == 1
    out = result.stdout
    assert "[models.typo] unknown key 'tensor_paralel_size'" in out
    assert "[models.loud] extra_args: --enable-log-outputs is not allowed" in out
    assert "[models.away] path escapes the models directory" in out
    assert any(line.startswith("ok") and " good " in line for line in out.splitlines())
    assert out.splitlines()[-1] == "6 models (models.toml), 3 invalid"
    assert "Traceback" not in result.stderr


def test_broken_toml_says_where(tmp_path: Path) -> None:
    root = models(tmp_path, '[models.tiny]\nmax_model_len = 64\ndtype = "bfloat16\n')
    result = enclave("models", "check", str(root))
    assert result.returncode == 1
    assert "models.toml is not valid TOML" in result.stdout
    assert "line 3" in result.stdout


def test_not_a_directory_exits_two(tmp_path: Path) -> None:
    result = enclave("models", "check", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert "is not a directory" in result.stderr
