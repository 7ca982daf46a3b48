"""The reason codes are types (``StrEnum``): the documents list exactly their members, and no
code is raised as a bare string literal (a typo or a new code cannot skip the enum)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from attestation.gpu.verify import GPU_STEPS
from attestation.policy_bundle import BundleReason
from attestation.reasons import GpuReason, Reason
from enclave.client import ClientReason
from enclave.gateway import FAILURE_REASONS, FailureReason

ROOT = Path(__file__).resolve().parents[2]
_CODE = re.compile(r"`([a-z0-9_]+)`")


def _doc(name: str) -> str:
    return (ROOT / "docs" / name).read_text()


def _table_rows(text: str, after: str) -> list[str]:
    """The rows of the first Markdown table after the line ``after`` (header and rule left
    out)."""
    lines = text[text.index(after) :].splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def _first_column(rows: list[str]) -> list[str]:
    return [_CODE.findall(row.split("|")[1])[0] for row in rows]


def test_attestation_reason_table_is_the_enum() -> None:
    codes = _first_column(_table_rows(_doc("attestation.md"), "### Reason codes"))
    assert sorted(codes) == sorted(Reason.ALL)
    assert len(codes) == len(set(codes))


def test_gpu_step_table_is_gpu_steps() -> None:
    rows = _table_rows(_doc("attestation.md"), "### 7.3 Steps and reason codes")
    assert len(rows) == len(GPU_STEPS)
    documented = {code for row in rows for code in _CODE.findall(row.split("|")[3])}
    stepped = {code for _, codes in GPU_STEPS for code in codes}
    assert documented == stepped
    # The evidence-level codes (binding, count, shape) are explained in section 7.4.
    assert all(f"`{code}`" in _doc("attestation.md") for code in GpuReason.ALL - stepped)
    assert stepped <= GpuReason.ALL


def test_client_reason_table_is_the_enum() -> None:
    """The client's own codes; a row may also explain an attestation code it passes on."""
    codes = _first_column(_table_rows(_doc("client.md"), "or one of the client's own"))
    assert set(codes) - Reason.ALL == ClientReason.ALL


def test_policy_bundle_table_is_the_enum() -> None:
    codes = _first_column(_table_rows(_doc("client.md"), "attestation.policy_bundle.BundleReason"))
    assert sorted(codes) == sorted(BundleReason.ALL)


@pytest.mark.parametrize("name", ["service.md", "operations.md"])
def test_gateway_failure_reason_lists_are_the_enum(name: str) -> None:
    line = next(
        line
        for line in _doc(name).splitlines()
        if "enclave_ohttp_failures_total" in line and "`method`" in line
    )
    after = line[line.index("`method`") :]
    assert _CODE.findall(after) == list(FAILURE_REASONS)
    assert list(FAILURE_REASONS) == [reason.value for reason in FailureReason]


#: Raising one of these with a string literal as its reason is refused: use the enum member.
_REASON_RAISERS = frozenset({"AttestationFailed", "VerificationError", "GpuChainError"})


def test_no_reason_is_a_bare_string_literal() -> None:
    offenders = []
    for package in ("attestation", "enclave", "model_manager"):  # not enclave_dev: no product
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Call) and node.args):
                    continue
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                first = node.args[0]
                if (
                    name in _REASON_RAISERS
                    and isinstance(first, ast.Constant)
                    and isinstance(first.value, str)
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {first.value}")
    assert offenders == []
