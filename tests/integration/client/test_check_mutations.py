"""The mutation check: each named check of the client and of ``attestation.verify`` is
disabled in turn (monkeypatched to do nothing), and the attack that proves it must then no
longer get its answer: the attack is accepted, or (where another check stands behind it)
refused for another reason. If a check could be deleted with its attack still refused the
same way, its test would be proving nothing; this keeps that from happening silently.

The attacks are in ``attacks.py``; ``test_binding_attacks.py`` runs them with every check in
place. ``tests/unit/attestation/test_check_mutations.py`` covers the steps no client attack
reaches (TDX only, debug, event log) and checks that every step has a mutation."""

from __future__ import annotations

import pytest

from enclave.client import AttestationFailed, GatewayRefused
from tests.integration.client.attacker import STARTED
from tests.integration.client.attacks import ATTACKS, BEHAVIOURS, CANARY, MUTATIONS
from tests.integration.client.conftest import Running

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.mark.parametrize("name", sorted(MUTATIONS))
async def test_disabling_the_check_lets_its_attack_through(
    running: Running, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    mutation = MUTATIONS[name]
    mutation.disable(monkeypatch)
    if mutation.attack in BEHAVIOURS:
        attack, expected = BEHAVIOURS[mutation.attack]
        try:
            outcome = await attack(running)
        except GatewayRefused:
            return  # the refused request was not retried
        assert outcome.accepted != expected, f"{name}: the behaviour did not depend on it"
        return
    attack_case = ATTACKS[mutation.attack]
    refused: AttestationFailed | None = None
    try:
        outcome = await attack_case.run(running)
    except AttestationFailed as exc:
        refused = exc
    if refused is not None:
        assert refused.reason != attack_case.reason, (
            f"{name}: still refused with {refused.reason} with the check disabled"
        )
        return
    if mutation.attack.endswith("_gets_the_token"):
        assert CANARY.encode() in STARTED[-1].received  # what the check was keeping out
    if mutation.attack.endswith("_gets_the_prompt"):
        assert b"POST /.well-known/ohttp-gateway" in STARTED[-1].received  # the prompt, sealed
    assert outcome.accepted is not None  # to the attacker's keys


async def test_every_client_attack_is_someones_mutation() -> None:
    """Each binding attack proves a check that some mutation disables (the others are the
    entry conditions: reachability, status, JSON, collateral, an RA-TLS connection, debug)."""
    entry_conditions = {
        "report_refused",
        "report_garbage",
        "report_not_over_ratls",
        "unreachable",
        "collateral_down",
        "debug_td",  # dcap-qvl refuses debug TDs itself; the unit mutation test covers ours
        "no_nonce",  # the same check as replayed_nonce (check_nonce)
    }
    used = {mutation.attack for mutation in MUTATIONS.values()}
    assert set(ATTACKS) | set(BEHAVIOURS) == used | entry_conditions
