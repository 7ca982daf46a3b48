"""``enclave demo`` as a user runs it: one command, no arguments, exit 0, the story told."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_enclave_demo_runs_end_to_end():
    result = subprocess.run(
        [sys.executable, "-m", "enclave", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr + out
    assert "SIMULATED TEE" in out
    assert "SIMULATED GPU" in out
    assert out.count("GPU 0           hopper, driver 550.90.07") == 2  # verified, bound, shown
    assert out.count("TCB status      UpToDate") == 2  # before and after the model load
    digests = re.findall(r"model digest    ([0-9a-f]{64})", out)
    assert len(digests) == 1
    assert f"ready: manifest-sha256 digest {digests[0]}" in out
    assert "Why should a prompt only be readable inside a measured VM?" in out  # the echo
    assert "prompt or answer visible in those bytes: no" in out
    assert "chunks carrying events are whole 256-byte buckets: yes" in out
    assert re.search(r"the one-token chunks \(\d+ of \d+\) are all 274 bytes: equal", out)
    assert out.rstrip().endswith("done.")
    assert "Traceback" not in result.stderr
