"""The mutation check for the steps of ``attestation.verify`` that no client attack reaches
(TDX only, not a debug TD, the event log), and the rule that keeps the mutation check true:
every check that ``verify_evidence`` / ``verify_quote`` and the client's ``verify_endpoint``
call has a mutation (here, or in ``tests/integration/client/attacks.py``) whose attack it
stops. A new check without one fails ``test_every_check_has_a_mutation``."""

from __future__ import annotations

import ast
import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from attestation import _dcap
from attestation import verify as _verify
from attestation.collateral import Collateral
from attestation.errors import VerificationError
from attestation.eventlog import Event, EventLog, replay_rtmrs
from attestation.ratls import RaTlsIssuer
from attestation.verify import verify_evidence, verify_quote
from enclave_dev.tee import SimulatedMeasurements, Simulator
from tests.integration.client.attacks import MUTATIONS as CLIENT_MUTATIONS
from tests.unit.attestation import gpu_chains
from tests.vectors import load_bytes, vector_path

ROOT = Path(__file__).resolve().parents[3]
SGX_NOW = 1752919277


@dataclass(frozen=True)
class Case:
    target: str
    reason: str
    attack: Callable[[], object]
    disable: Callable[[pytest.MonkeyPatch], None]
    baseline: Callable[[pytest.MonkeyPatch], None] = lambda monkeypatch: None


def _evidence(sim: Simulator) -> tuple[bytes, bytes]:
    async def quote(report_data: bytes) -> bytes:
        return sim.quote(report_data)

    issuer = RaTlsIssuer(quote)
    claims = issuer.claims(ohttp_keys_body=b"keys", service_version="0.1.0")
    return asyncio.run(issuer.evidence(claims)).encode(), issuer.spki_der


def _sgx_quote() -> object:
    return verify_quote(
        load_bytes("tdx/sgx_quote"),
        collateral=Collateral.load(vector_path("tdx/sgx_quote_collateral.json")),
        now=SGX_NOW,
    )


def _debug_td() -> object:
    sim = Simulator.create(
        measurements=SimulatedMeasurements(td_attributes=bytes.fromhex("0100001000000000"))
    )
    evidence, spki = _evidence(sim)
    return verify_evidence(
        evidence,
        collateral=Collateral.from_json(sim.collateral_json()),
        peer_spki_der=spki,
        now=sim.now,
        insecure_root_ca_der=sim.root_ca_der,
    )


def _tampered_event_log() -> object:
    events = tuple(
        Event(imr=i % 4, event_type=1, digest=hashlib.sha384(bytes([i])).digest()) for i in range(6)
    )
    sim = Simulator.create(measurements=SimulatedMeasurements(rtmrs=replay_rtmrs(events)))
    evidence, spki = _evidence(sim)
    return verify_evidence(
        evidence,
        collateral=Collateral.from_json(sim.collateral_json()),
        peer_spki_der=spki,
        now=sim.now,
        insecure_root_ca_der=sim.root_ca_der,
        event_log=EventLog(events=events[:-1], format="dstack"),  # one event hidden
    )


def _declared_dev_engine() -> object:
    """A service that declares its development engine (the ``insecure`` claim), verified
    under a policy that accepts no such setting (the default)."""
    sim = Simulator.create()

    async def quote(report_data: bytes) -> bytes:
        return sim.quote(report_data)

    issuer = RaTlsIssuer(quote, insecure=("insecure_dev_engine",))
    claims = issuer.claims(ohttp_keys_body=b"keys", service_version="0.1.0")
    evidence = asyncio.run(issuer.evidence(claims)).encode()
    return verify_evidence(
        evidence,
        collateral=Collateral.from_json(sim.collateral_json()),
        peer_spki_der=issuer.spki_der,
        now=sim.now,
        insecure_root_ca_der=sim.root_ca_der,
    )


def _dcap_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """dcap-qvl 0.7 refuses debug TDs itself; take it out of the way to see OUR step 5."""
    monkeypatch.setattr(_dcap, "verify_quote_dcap", lambda *a: _dcap.DcapVerdict("UpToDate", ()))


def _set(name: str, value: object) -> Callable[[pytest.MonkeyPatch], None]:
    return lambda monkeypatch: monkeypatch.setattr(_verify, name, value)


CASES = {
    "step 3: TDX only (an SGX quote)": Case(
        "attestation.verify.check_tdx",
        "not_tdx",
        _sgx_quote,
        _set("check_tdx", lambda quote: quote.body),
    ),
    "step 5: not a debug TD": Case(
        "attestation.verify.check_not_debug",
        "td_debug",
        _debug_td,
        lambda mp: (_dcap_passes(mp), _set("check_not_debug", lambda report: None)(mp)),
        baseline=_dcap_passes,
    ),
    "step 12: a service declaring the development engine": Case(
        "attestation.verify.check_service_settings",
        "service_insecure",
        _declared_dev_engine,
        _set("check_service_settings", lambda claims, accepted: None),
    ),
    "step 9: the event log replays to the RTMRs": Case(
        "attestation.verify.verify_event_log",
        "event_log_mismatch",
        _tampered_event_log,
        _set("verify_event_log", lambda log, rtmrs: None),
    ),
    # The GPU chain (attestation.gpu._certs, steps 3 and 4 of verify_gpu_report).
    "gpu step 3: the chain ends in the pinned root": Case(
        "attestation.gpu._certs.check_root",
        "gpu_root_untrusted",
        gpu_chains.foreign_root,
        gpu_chains.disable("attestation.gpu.verify", "check_root"),
    ),
    "gpu step 4: every issuer is a CA": Case(
        "attestation.gpu._certs._check_issuer_is_ca",
        "gpu_chain_invalid",
        gpu_chains.issued_by_a_leaf,
        gpu_chains.disable("attestation.gpu._certs", "_check_issuer_is_ca"),
    ),
    "gpu step 4: every signature verifies": Case(
        "attestation.gpu._certs._check_signed_by",
        "gpu_chain_invalid",
        gpu_chains.forged_signature,
        gpu_chains.disable("attestation.gpu._certs", "_check_signed_by"),
    ),
    "gpu step 4: every certificate is valid now": Case(
        "attestation.gpu._certs._check_validity",
        "gpu_cert_expired",
        gpu_chains.expired,
        gpu_chains.disable("attestation.gpu._certs", "_check_validity"),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_attack_gets_its_reason(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    case = CASES[name]
    case.baseline(monkeypatch)
    with pytest.raises(VerificationError) as refused:
        case.attack()
    assert refused.value.reason == case.reason


@pytest.mark.parametrize("name", sorted(CASES))
def test_disabling_the_check_lets_its_attack_through(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    case = CASES[name]
    case.disable(monkeypatch)
    try:
        case.attack()
    except VerificationError as exc:
        reason: str | None = exc.reason
    except AttributeError:  # an SGX body reached the TDX-only steps
        reason = None
    else:
        reason = None
    assert reason != case.reason, f"{name}: still refused the same way with the check disabled"


def _called(path: Path, functions: set[str]) -> set[str]:
    """Names called (``f(...)``, ``module.f(...)``, ``self.x.f(...)``) in ``functions``."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in functions:
            for call in ast.walk(node):
                if isinstance(call, ast.Call):
                    func = call.func
                    if isinstance(func, ast.Name):
                        names.add(func.id)
                    elif isinstance(func, ast.Attribute):
                        names.add(func.attr)
    return names


def test_every_check_has_a_mutation() -> None:
    targets = {case.target for case in CASES.values()}
    targets |= {mutation.target for mutation in CLIENT_MUTATIONS.values()}
    checks = {
        f"attestation.verify.{name}"
        for name in _called(
            ROOT / "attestation" / "verify.py",
            {"verify_evidence", "verify_quote", "_verify_platform"},
        )
        if name.startswith("check_") or name == "verify_event_log"
    }
    checks.add("attestation._dcap.verify_quote_dcap")
    client = _called(ROOT / "enclave" / "client" / "_endpoint.py", {"_attest", "_fetch_report"})
    checks |= {
        f"enclave.client._endpoint.{name}"
        for name in client
        if name.startswith("check_") or name in {"usable_key_configs", "_read_capped"}
    }
    assert "verify_evidence" in client  # step 4, disabled through the nonce it passes
    assert len(checks) >= 15  # 11 in attestation.verify, 4 in the client
    assert checks <= targets, sorted(checks - targets)


def test_every_gpu_chain_check_has_a_mutation() -> None:
    """The checks ``check_chain`` makes (``check_root``, and every ``_check_*`` of a link):
    each has a case above whose attack it stops (the issuer-name comparison is repeated by
    cryptography's ``verify_directly_issued_by``, so disabling it alone lets nothing through)."""
    targets = {case.target for case in CASES.values()}
    certs = ROOT / "attestation" / "gpu" / "_certs.py"
    called = _called(certs, {"check_chain", "check_links", "_check_link"})
    checks = {
        f"attestation.gpu._certs.{name}"
        for name in called
        if name.startswith(("check_", "_check_")) and name not in {"check_links", "_check_link"}
    }
    assert len(checks) >= 4
    assert checks <= targets, sorted(checks - targets)
