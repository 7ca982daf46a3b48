"""``enclave demo --engine vllm`` as a user runs it: the same demo on real vLLM, saying plainly
that the model's weights are random."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import VENV

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_enclave_demo_on_real_vllm(tiny_model: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "enclave", "demo", "--engine", "vllm", "--vllm-venv", str(VENV)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-3000:] + out
    assert "REAL vLLM, with a tiny model whose weights are RANDOM" in out
    digests = re.findall(r"model digest    ([0-9a-f]{64})", out)
    assert len(digests) == 1
    assert f"ready: manifest-sha256 digest {digests[0]}" in out
    assert "prompt or answer visible in those bytes: no" in out
    assert out.rstrip().endswith("done.")
    assert "Traceback" not in result.stderr
