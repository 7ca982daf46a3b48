""".github/workflows/release.yml: what clients require of the signer holds for the workflow
(a v* tag, a GitHub-hosted runner, an OIDC token, the policy signed by sign-policy.py). It
cannot run here (no GitHub OIDC); this checks its shape."""

from __future__ import annotations

from typing import Any

import yaml

from tests.deploy._repo import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def _workflow() -> dict[Any, Any]:
    document: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return document


def test_runs_only_for_release_tags_with_an_oidc_token() -> None:
    workflow = _workflow()
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers == {"push": {"tags": ["v*"]}}
    assert workflow["permissions"]["id-token"] == "write"


def test_signs_on_a_github_hosted_runner_with_the_release_script() -> None:
    job = _workflow()["jobs"]["release"]
    assert job["runs-on"].startswith("ubuntu-")  # GitHub-hosted, not self-hosted
    scripts = "\n".join(step.get("run", "") for step in job["steps"])
    assert "enclave measure uki" in scripts
    assert "deploy/release/sign-policy.py sign" in scripts
    assert "--version" in scripts
