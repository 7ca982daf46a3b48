"""verify_quote / verify_evidence: real quotes at their MANIFEST verdicts, and every step
failing closed when its input is mutated (real quotes where they reach, else the simulator)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from attestation.checks import Reason, check_not_debug
from attestation.collateral import Collateral
from attestation.errors import VerificationError
from attestation.eventlog import Event, EventLog, replay_rtmrs
from attestation.evidence import Evidence, ModelClaim, encode_claims
from attestation.policy import Policy, pinned_policy
from attestation.quote import parse_quote
from attestation.ratls import RaTlsIssuer, parse_certificate
from attestation.verify import VerifiedEvidence, verify_evidence, verify_quote
from enclave_dev.tee import SimulatedMeasurements, Simulator
from tests.vectors import load_bytes, load_json, vector_path

CASES = {case["quote"]: case for case in load_json("tdx/MANIFEST.json")["cases"]}
NOW = {"tdx_quote": 1752919234, "tdx_quote_outdated": 1774003274, "sgx_quote": 1752919277}
MODEL = ModelClaim("llama", "dm-verity", b"\x42" * 32)


def _collateral(name: str) -> Collateral:
    return Collateral.load(vector_path(f"tdx/{name}_collateral.json"))


def _reason(call: Callable[[], object]) -> str:
    with pytest.raises(VerificationError) as exc:
        call()
    assert exc.value.reason in Reason.ALL
    return exc.value.reason


# --- the real quotes -------------------------------------------------------------------


def test_tdx_quote_is_up_to_date() -> None:
    verified = verify_quote(
        load_bytes("tdx/tdx_quote"), collateral=_collateral("tdx_quote"), now=NOW["tdx_quote"]
    )
    expected = CASES["tdx_quote"]
    assert verified.status == expected["expected"]["status"] == "UpToDate"
    assert list(verified.advisory_ids) == expected["expected"]["advisory_ids"]
    assert verified.tee_type == 0x81
    assert verified.quote_version == 4
    assert verified.measurements.mrtd.hex() == expected["parsed"]["mr_td"]
    assert verified.measurements.rtmr2.hex() == expected["parsed"]["rt_mr2"]
    assert verified.report_data.hex() == expected["parsed"]["report_data"]
    assert verified.claims is None


def test_tdx_quote_outdated_fails_with_the_dcap_qvl_error() -> None:
    with pytest.raises(VerificationError) as exc:
        verify_quote(
            load_bytes("tdx/tdx_quote_outdated"),
            collateral=_collateral("tdx_quote_outdated"),
            now=NOW["tdx_quote_outdated"],
        )
    assert exc.value.reason == "tcb_level_unknown"
    assert "No matching TCB level found" in exc.value.detail
    assert isinstance(exc.value.__cause__, ValueError)


@pytest.mark.parametrize(
    "policy",
    [Policy(), Policy(allowed_tcb_statuses=frozenset({"ConfigurationAndSWHardeningNeeded"}))],
)
def test_sgx_quote_is_refused_as_not_tdx(policy: Policy) -> None:
    reason = _reason(
        lambda: verify_quote(
            load_bytes("tdx/sgx_quote"),
            collateral=_collateral("sgx_quote"),
            policy=policy,
            now=NOW["sgx_quote"],
        )
    )
    assert reason == "not_tdx"


def _verify_mutated(mutate: Callable[[bytearray], None], now: int = NOW["tdx_quote"]) -> str:
    raw = bytearray(load_bytes("tdx/tdx_quote"))
    mutate(raw)
    return _reason(lambda: verify_quote(bytes(raw), collateral=_collateral("tdx_quote"), now=now))


def _flip(offset: int) -> Callable[[bytearray], None]:
    def mutate(raw: bytearray) -> None:
        raw[offset] ^= 0x01

    return mutate


MRTD_OFFSET = 48 + 16 + 48 + 48 + 8 + 8 + 8
TD_ATTRIBUTES_OFFSET = 48 + 16 + 48 + 48 + 8
SIGNATURE_OFFSET = 48 + 584 + 4


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (MRTD_OFFSET + 5, "quote_signature_invalid"),  # the body
        (48 + 584 - 1, "quote_signature_invalid"),  # report_data
        (
            TD_ATTRIBUTES_OFFSET,
            "quote_signature_invalid",
        ),  # the debug bit (signed, like all of the body)
        (SIGNATURE_OFFSET + 3, "quote_signature_invalid"),  # the quote signature
        (SIGNATURE_OFFSET + 64 + 10, "quote_signature_invalid"),  # the attestation key
        (SIGNATURE_OFFSET + 128 + 10, "quote_signature_invalid"),  # the QE report
    ],
)
def test_flipped_byte_in_the_real_quote_fails_closed(offset: int, reason: str) -> None:
    assert _verify_mutated(_flip(offset)) == reason


@pytest.mark.parametrize("delta", [200, 1500])
def test_flipped_byte_in_the_certificate_chain_fails_closed(delta: int) -> None:
    start = load_bytes("tdx/tdx_quote").find(b"-----BEGIN CERTIFICATE-----")
    assert _verify_mutated(_flip(start + delta)) == "cert_chain_invalid"


def test_truncated_quote_is_malformed() -> None:
    reason = _reason(
        lambda: verify_quote(
            load_bytes("tdx/tdx_quote")[:600], collateral=_collateral("tdx_quote"), now=1
        )
    )
    assert reason == "quote_malformed"


def test_collateral_past_next_update_is_expired() -> None:
    collateral = _collateral("tdx_quote")
    assert _verify_mutated(lambda raw: None, now=collateral.next_update + 1) == (
        "collateral_expired"
    )


def test_collateral_not_yet_issued() -> None:
    assert _verify_mutated(lambda raw: None, now=1_700_000_000) == "collateral_not_yet_valid"


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("mrtd", "mrtd_not_allowed"),
        ("rtmr0", "rtmr_not_allowed"),
        ("rtmr3", "rtmr_not_allowed"),
        ("mrconfigid", "mrconfigid_not_allowed"),
    ],
)
def test_measurement_not_in_the_allow_list(field: str, reason: str) -> None:
    quote = load_bytes("tdx/tdx_quote")
    other = Policy(**{field: frozenset({b"\x01" * 48})})  # type: ignore[arg-type]
    assert (
        _reason(
            lambda: verify_quote(
                quote, collateral=_collateral("tdx_quote"), policy=other, now=NOW["tdx_quote"]
            )
        )
        == reason
    )
    report = parse_quote(quote).td_report
    actual = {
        "mrtd": report.mr_td,
        "rtmr0": report.rtmr0,
        "rtmr3": report.rtmr3,
        "mrconfigid": report.mr_config_id,
    }[field]
    allowed = Policy(**{field: frozenset({b"\x01" * 48, actual})})  # type: ignore[arg-type]
    verify_quote(quote, collateral=_collateral("tdx_quote"), policy=allowed, now=NOW["tdx_quote"])


def test_check_not_debug_refuses_the_debug_bit() -> None:
    raw = bytearray(load_bytes("tdx/tdx_quote"))
    check_not_debug(parse_quote(bytes(raw)).td_report)
    raw[TD_ATTRIBUTES_OFFSET] |= 0x01
    assert _reason(lambda: check_not_debug(parse_quote(bytes(raw)).td_report)) == "td_debug"


# --- the simulator, end to end ----------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator.create()


@pytest.fixture(scope="module")
def sim_collateral(sim: Simulator) -> Collateral:
    return Collateral.from_json(sim.collateral_json())


def _issue(sim: Simulator, **claims: object) -> tuple[Evidence, bytes, RaTlsIssuer]:
    async def quote(report_data: bytes) -> bytes:
        return sim.quote(report_data)

    issuer = RaTlsIssuer(quote)
    nonce = claims.pop("nonce", None)
    built = issuer.claims(
        nonce=nonce,  # type: ignore[arg-type]
        ohttp_keys_body=claims.pop("ohttp_keys_body", b"ohttp key configs"),  # type: ignore[arg-type]
        service_version=claims.pop("service_version", "0.1.0"),  # type: ignore[arg-type]
        model=claims.pop("model", MODEL),  # type: ignore[arg-type]
    )
    evidence = asyncio.run(issuer.evidence(built))
    return evidence, issuer.spki_der, issuer


def _verify(
    sim: Simulator,
    collateral: Collateral,
    evidence: Evidence | bytes,
    spki: bytes,
    **kwargs: object,
) -> VerifiedEvidence:
    return verify_evidence(
        evidence,
        collateral=collateral,
        peer_spki_der=spki,
        now=sim.now,
        insecure_root_ca_der=sim.root_ca_der,
        **kwargs,  # type: ignore[arg-type]
    )


def test_simulated_evidence_verifies(sim: Simulator, sim_collateral: Collateral) -> None:
    evidence, spki, _ = _issue(sim)
    verified = _verify(sim, sim_collateral, evidence.encode(), spki)
    assert verified.status == "UpToDate"
    assert verified.model == MODEL
    assert verified.claims is not None
    assert verified.claims.service_version == "0.1.0"
    assert verified.measurements.mrtd == sim.measurements.mrtd
    assert verified.measurements.rtmrs == sim.measurements.rtmrs


async def test_simulated_certificate_round_trip(sim: Simulator, sim_collateral: Collateral) -> None:
    async def quote(report_data: bytes) -> bytes:
        return sim.quote(report_data)

    issued = await RaTlsIssuer(quote).issue(ohttp_keys_body=b"k", service_version="1", model=MODEL)
    found = parse_certificate(issued.certificate_pem)
    verified = _verify(sim, sim_collateral, found.evidence, found.spki_der)
    assert verified.model == MODEL


def test_simulated_quote_is_refused_under_the_intel_root(
    sim: Simulator, sim_collateral: Collateral
) -> None:
    evidence, spki, _ = _issue(sim)
    reason = _reason(
        lambda: verify_evidence(
            evidence, collateral=sim_collateral, peer_spki_der=spki, now=sim.now
        )
    )
    assert reason == "cert_chain_invalid"


def test_mutated_claims_break_the_report_data_binding(
    sim: Simulator, sim_collateral: Collateral
) -> None:
    evidence, spki, issuer = _issue(sim)
    other = encode_claims(issuer.claims(ohttp_keys_body=b"other keys", service_version="0.1.0"))
    forged = Evidence(quote=evidence.quote, claims_buffer=other)
    assert _reason(lambda: _verify(sim, sim_collateral, forged, spki)) == "report_data_mismatch"


def test_flipped_byte_anywhere_in_the_claims_buffer_fails_closed(
    sim: Simulator, sim_collateral: Collateral
) -> None:
    evidence, spki, _ = _issue(sim)
    for position in range(len(evidence.claims_buffer)):
        buffer = bytearray(evidence.claims_buffer)
        buffer[position] ^= 0x01
        forged = Evidence(quote=evidence.quote, claims_buffer=bytes(buffer))
        with pytest.raises(VerificationError) as exc:
            _verify(sim, sim_collateral, forged, spki)
        assert exc.value.reason in {"evidence_malformed", "report_data_mismatch"}


def test_wrong_spki_fails(sim: Simulator, sim_collateral: Collateral) -> None:
    evidence, _, _ = _issue(sim)
    other_spki = RaTlsIssuer(lambda rd: asyncio.sleep(0, b"")).spki_der
    assert (
        _reason(lambda: _verify(sim, sim_collateral, evidence, other_spki))
        == "pubkey_hash_mismatch"
    )


def test_nonce_round_trip_and_failures(sim: Simulator, sim_collateral: Collateral) -> None:
    nonce = b"\x07" * 32
    evidence, spki, _ = _issue(sim, nonce=nonce)
    assert _verify(sim, sim_collateral, evidence, spki, nonce=nonce).claims is not None
    wrong = b"\x08" * 32
    assert _reason(lambda: _verify(sim, sim_collateral, evidence, spki, nonce=wrong)) == (
        "nonce_mismatch"
    )
    without, spki2, _ = _issue(sim)
    assert _reason(lambda: _verify(sim, sim_collateral, without, spki2, nonce=nonce)) == (
        "nonce_missing"
    )
    demanding = Policy(require_nonce=True)
    assert _reason(lambda: _verify(sim, sim_collateral, without, spki2, policy=demanding)) == (
        "nonce_missing"
    )


def test_debug_td_is_refused(sim: Simulator, sim_collateral: Collateral) -> None:
    debug = sim.with_measurements(
        SimulatedMeasurements(td_attributes=bytes.fromhex("0100001000000000"))
    )
    evidence, spki, _ = _issue(debug)
    assert _reason(lambda: _verify(debug, sim_collateral, evidence, spki)) == "td_debug"


def test_measurement_policy_on_simulated_evidence(
    sim: Simulator, sim_collateral: Collateral
) -> None:
    evidence, spki, _ = _issue(sim)
    allowed = Policy(mrtd=frozenset({sim.measurements.mrtd}))
    _verify(sim, sim_collateral, evidence, spki, policy=allowed)
    other = sim.with_measurements(SimulatedMeasurements(mrtd=b"\x05" * 48))
    evidence2, spki2, _ = _issue(other)
    assert _reason(lambda: _verify(other, sim_collateral, evidence2, spki2, policy=allowed)) == (
        "mrtd_not_allowed"
    )


def test_model_policy(sim: Simulator, sim_collateral: Collateral) -> None:
    evidence, spki, _ = _issue(sim)
    _verify(
        sim,
        sim_collateral,
        evidence,
        spki,
        policy=Policy(allowed_model_digests=frozenset({MODEL.digest})),
    )
    refusing = Policy(allowed_model_digests=frozenset({b"\x00" * 32}))
    assert _reason(lambda: _verify(sim, sim_collateral, evidence, spki, policy=refusing)) == (
        "model_not_allowed"
    )
    no_model, spki2, _ = _issue(sim, model=None)
    assert _verify(sim, sim_collateral, no_model, spki2).model is None
    assert (
        _reason(
            lambda: _verify(sim, sim_collateral, no_model, spki2, policy=Policy(require_model=True))
        )
        == "model_missing"
    )


def test_our_claims_are_required_by_default(sim: Simulator, sim_collateral: Collateral) -> None:
    evidence, spki, _ = _issue(sim, ohttp_keys_body=None, service_version=None)
    assert _reason(lambda: _verify(sim, sim_collateral, evidence, spki)) == "claims_incomplete"
    lenient = Policy(require_enclave_claims=False)
    _verify(sim, sim_collateral, evidence, spki, policy=lenient)


def test_out_of_date_tcb_status_policy() -> None:
    sim = Simulator.create(tcb="OutOfDate")
    collateral = Collateral.from_json(sim.collateral_json())
    evidence, spki, _ = _issue(sim)
    assert _reason(lambda: _verify(sim, collateral, evidence, spki)) == "tcb_status_not_allowed"
    status_only = Policy(allowed_tcb_statuses=frozenset({"UpToDate", "OutOfDate"}))
    assert _reason(lambda: _verify(sim, collateral, evidence, spki, policy=status_only)) == (
        "advisory_not_allowed"
    )
    verdict = _verify(
        sim,
        collateral,
        evidence,
        spki,
        policy=status_only.__class__(
            allowed_tcb_statuses=frozenset({"OutOfDate"}),
            allowed_advisory_ids=frozenset({"SIM-SA-00001"}),
        ),
    )
    assert verdict.status == "OutOfDate"
    assert verdict.advisory_ids == ("SIM-SA-00001",)


def test_simulated_collateral_expired(sim: Simulator, sim_collateral: Collateral) -> None:
    evidence, spki, _ = _issue(sim)
    reason = _reason(
        lambda: verify_evidence(
            evidence,
            collateral=sim_collateral,
            peer_spki_der=spki,
            now=sim_collateral.next_update + 1,
            insecure_root_ca_der=sim.root_ca_der,
        )
    )
    assert reason == "collateral_expired"


def test_event_log_must_replay_to_the_rtmrs(sim: Simulator, sim_collateral: Collateral) -> None:
    events = tuple(
        Event(imr=i % 4, event_type=1, digest=hashlib.sha384(bytes([i])).digest()) for i in range(6)
    )
    log = EventLog(events=events, format="dstack")
    measured = sim.with_measurements(SimulatedMeasurements(rtmrs=replay_rtmrs(events)))
    evidence, spki, _ = _issue(measured)
    assert _verify(measured, sim_collateral, evidence, spki, event_log=log).event_log == log
    tampered = EventLog(events=events[:-1], format="dstack")
    assert _reason(
        lambda: _verify(measured, sim_collateral, evidence, spki, event_log=tampered)
    ) == ("event_log_mismatch")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00not cbor", "evidence_malformed"),
        (Evidence(quote=b"short", claims_buffer=b"\xa0").encode(), "evidence_malformed"),
    ],
)
def test_malformed_evidence(
    sim: Simulator, sim_collateral: Collateral, data: bytes, reason: str
) -> None:
    assert _reason(lambda: _verify(sim, sim_collateral, data, b"spki")) == reason


def test_malformed_quote_inside_evidence(sim: Simulator, sim_collateral: Collateral) -> None:
    evidence, spki, _ = _issue(sim)
    broken = Evidence(quote=evidence.quote[:100], claims_buffer=evidence.claims_buffer)
    assert _reason(lambda: _verify(sim, sim_collateral, broken, spki)) == "quote_malformed"


def test_every_reason_code_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[3] / "docs" / "attestation.md").read_text()
    missing = [code for code in Reason.ALL if f"`{code}`" not in docs]
    assert not missing
    declared = {v for k, v in vars(Reason).items() if k.isupper() and isinstance(v, str)}
    assert declared == Reason.ALL


# --- insecure options: named in the result, a warning on EVERY verification ------------


def test_insecure_options_warn_on_every_verification_and_are_named(
    sim: Simulator, sim_collateral: Collateral, caplog: pytest.LogCaptureFixture
) -> None:
    # (dcap-qvl itself refuses debug TDs, so insecure_allow_debug cannot make one pass; it
    # still warns and is named on every verification it is set for.)
    evidence, spki, _ = _issue(sim)
    policy = Policy(insecure_allow_debug=True, insecure_any_measurement=True)
    with caplog.at_level(logging.WARNING, logger="attestation.verify"):
        for _ in range(3):
            verified = _verify(sim, sim_collateral, evidence, spki, policy=policy)
    assert verified.insecure == (
        "insecure_root_ca_der",
        "insecure_allow_debug",
        "insecure_any_measurement",
    )
    assert not verified.measurements_pinned
    for name in verified.insecure:
        assert caplog.text.count(f"INSECURE: verifying with {name}") == 3


def test_a_pinned_policy_is_reported_as_pinned(
    sim: Simulator, sim_collateral: Collateral, caplog: pytest.LogCaptureFixture
) -> None:
    evidence, spki, _ = _issue(sim)
    pinned = pinned_policy(sim.measurements.registers())
    verified = _verify(sim, sim_collateral, evidence, spki, policy=pinned)
    assert verified.measurements_pinned
    assert verified.insecure == ("insecure_root_ca_der",)
    unpinned = _verify(sim, sim_collateral, evidence, spki)
    assert not unpinned.measurements_pinned
    quote_only = verify_quote(
        evidence.quote,
        collateral=sim_collateral,
        policy=pinned,
        now=sim.now,
        insecure_root_ca_der=sim.root_ca_der,
    )
    assert quote_only.measurements_pinned
    assert quote_only.insecure == ("insecure_root_ca_der",)


def test_collateral_for_another_tee_is_an_unrecognised_dcap_failure() -> None:
    """A real TDX quote checked with the SGX quote's collateral (an SGX QE identity): dcap-qvl
    refuses it with a message no specific code matches, so the fallback code, never success."""
    reason = _reason(
        lambda: verify_quote(
            load_bytes("tdx/tdx_quote"), collateral=_collateral("sgx_quote"), now=NOW["tdx_quote"]
        )
    )
    assert reason == "dcap_verification_failed"
