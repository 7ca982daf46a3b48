"""Issue 23 point 5: the verification document prints what the verifier recorded as run, not
what it was told. Against the real service: a full verification records every step and the
document says "ok" for each; the same endpoint with any one step taken out of its record (a
verifier that skipped it) prints that step as "not run", never "ok"."""

from __future__ import annotations

import dataclasses

import pytest

from attestation.verify import EvidenceStep
from enclave.client import averify_endpoint
from enclave.client._document import _RAN_BY, OK, verification_document
from enclave.client._endpoint import EndpointStep, VerifiedEndpoint
from tests.integration.client.attacks import pinned
from tests.integration.client.conftest import Running, StaticCollateral

pytestmark = pytest.mark.asyncio(loop_scope="module")


_VERIFIED: dict[int, VerifiedEndpoint] = {}


async def _verified(running: Running) -> VerifiedEndpoint:
    """One verification per service (the report is rate-limited)."""
    if id(running) not in _VERIFIED:
        _VERIFIED[id(running)] = await averify_endpoint(
            running.url,
            pinned(running),
            StaticCollateral(running.simulator),
            insecure_root_ca_der=running.simulator.root_ca_der,
        )
    return _VERIFIED[id(running)]


def _results(running: Running, endpoint: VerifiedEndpoint) -> dict[str, set[str]]:
    document = verification_document(
        running.url, pinned(running), trust_anchor="test", collateral="test", endpoint=endpoint
    )
    results: dict[str, set[str]] = {}
    for step in document.steps:
        results.setdefault(step.number, set()).add(step.result)
    return results


async def test_a_full_verification_records_every_step(running: Running) -> None:
    endpoint = await _verified(running)
    expected = {*EndpointStep, *EvidenceStep} - {EvidenceStep.EVENT_LOG}  # no log is given
    assert set(endpoint.steps) == expected
    assert len(endpoint.steps) == len(expected)  # each once, in the order they ran
    results = _results(running, endpoint)
    assert results.pop("4.9") == {
        "skipped (not used by this client: RTMRs are checked directly in 4.10)"
    }
    assert all(result == {OK} for result in results.values()), results


@pytest.mark.parametrize("removed", sorted({*EndpointStep, *EvidenceStep} - {"event_log"}))
async def test_a_step_missing_from_the_record_is_not_ok(running: Running, removed: str) -> None:
    endpoint = await _verified(running)
    skipped = dataclasses.replace(endpoint, steps=tuple(s for s in endpoint.steps if s != removed))
    results = _results(running, skipped)
    (number,) = [number for number, needs in _RAN_BY.items() if removed in needs]
    assert OK not in results[number]
    assert results[number] == {"not run"}
    assert all(result == {OK} for n, result in results.items() if n not in (number, "4.9"))
