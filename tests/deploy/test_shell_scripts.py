"""shellcheck on every shell script of the repository."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.deploy._repo import ROOT, shell_scripts


def test_discovery_finds_the_deploy_scripts() -> None:
    found = {path.relative_to(ROOT).as_posix() for path in shell_scripts()}
    expected = {
        "deploy/systemd/enclave-prestart.sh",
        "deploy/systemd/enclave-gpu-ready.sh",
        "deploy/image/build-image.sh",
        "deploy/image/mkosi.postinst.chroot",
        "deploy/verity/open-model-image.sh",
        "scripts/test",
        ".ci/run",
    }
    assert expected <= found


@pytest.mark.skipif(
    shutil.which("shellcheck") is None,
    reason="shellcheck is not installed (Debian package: shellcheck)",
)
def test_shellcheck_passes_on_every_script() -> None:
    scripts = [str(path) for path in shell_scripts()]
    result = subprocess.run(
        ["shellcheck", "--severity=style", "--external-sources", *scripts],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
