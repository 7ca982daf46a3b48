"""No silent trust, end to end: `enclave verify` shows unpinned measurements and saves them as a
policy (trust on first use, made explicit), the commands and transports that send something
refuse a policy that does not pin the measurements, and --insecure-any-measurement is named
and warned about on every verification."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from pathlib import Path

import httpx
import pytest

from attestation.policy import Policy, load_policy, policy_to_toml
from enclave.cli import main
from enclave.client import (
    AsyncOhttpTransport,
    AsyncRaTlsTransport,
    MeasurementsNotPinned,
    OhttpTransport,
    RaTlsTransport,
    attested_endpoint,
)
from tests.integration.client.conftest import Running

pytestmark = pytest.mark.asyncio(loop_scope="module")


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def trust(running: Running, accept: tuple[str, ...] = ("insecure_dev_engine",)) -> tuple[str, ...]:
    """The simulated TEE's root and collateral; the service runs the development engine and
    says so, which a policy accepts only by name (--insecure-accept-service)."""
    bundle = running.server.simulated.bundle_dir  # type: ignore[union-attr]
    assert bundle is not None
    accepted = [arg for name in accept for arg in ("--insecure-accept-service", name)]
    return (
        "--collateral",
        str(bundle / "collateral.json"),
        "--root-ca",
        str(bundle / "root_ca.pem"),
        "--insecure-simulated-root",
        *accepted,
    )


async def test_verify_without_policy_says_not_pinned_and_saves_a_policy(
    running: Running, tmp_path: Path
) -> None:
    saved = tmp_path / "policy.toml"
    code, out, _ = await asyncio.to_thread(
        run_cli, "verify", running.url, *trust(running), "--save-policy", str(saved)
    )
    assert code == 0, out
    # The verification document: every numbered step, what against what, the result.
    for number in ("1", "2", "3", "4.1", "4.2", "4.6", "4.7", "4.8", "4.10", "4.11", "5", "6"):
        assert f"\n  {number:<5} " in out, number
    mrtd = running.simulator.measurements.mrtd.hex()
    assert f"checked: mrtd = {mrtd}" in out
    assert out.count("NOT PINNED") >= 6  # MRTD, RTMR0-3, MRCONFIGID, and the warning
    assert "WARNING: the measurements above are NOT PINNED" in out
    assert "WARNING: verified with insecure_root_ca_der (INSECURE)" in out
    assert f"written to {saved}" in out
    # The saved policy pins exactly the measurements just seen, with a note.
    policy = load_policy(saved)
    assert policy.pins_measurements
    assert policy == running.policy(note=policy.note)
    assert running.url in policy.note
    assert saved.read_text().startswith("# Measurement policy written by `enclave verify")
    # Never overwritten silently.
    code, out, _ = await asyncio.to_thread(
        run_cli, "verify", running.url, *trust(running), "--save-policy", str(saved)
    )
    assert code == 1
    assert "not overwriting" in out

    # Verified again under the saved policy: pinned, every step ok, as JSON too.
    code, out, _ = await asyncio.to_thread(
        run_cli, "verify", running.url, *trust(running), "--policy", str(saved), "--json"
    )
    assert code == 0, out
    document = json.loads(out)
    assert document["verified"] is True
    assert document["measurements_pinned"] is True
    results = {(s["step"], s["title"]): s["result"] for s in document["steps"]}
    assert results[("4.10", "measurement MRTD")] == "ok"
    assert results[("4.10", "measurement RTMR2")] == "ok"
    assert results[("4.9", "event log")].startswith("skipped")
    assert all(result == "ok" for (step, _), result in results.items() if step != "4.9"), results
    checked = {s["step"] + s["title"]: s for s in document["steps"]}
    assert (
        document["facts"]["spki_sha256"] in checked["4.7pubkey-hash binds the TLS key"]["against"]
    )


async def test_a_failed_verification_marks_its_step(running: Running, tmp_path: Path) -> None:
    policy = tmp_path / "wrong.toml"
    policy.write_text(policy_to_toml(running.policy(rtmr2=frozenset({b"\x22" * 48}))))
    code, out, _ = await asyncio.to_thread(
        run_cli, "verify", running.url, *trust(running), "--policy", str(policy), "--json"
    )
    assert code == 1
    document = json.loads(out)
    assert document["reason"] == "rtmr_not_allowed"
    steps = document["steps"]
    # The connection's certificate is verified first (in the TLS layer): step 1 fails and
    # nothing after it ran.
    assert steps[0]["result"] == "FAIL (rtmr_not_allowed)"
    assert {step["result"] for step in steps[1:]} == {"not run"}


@pytest.mark.parametrize(
    "command",
    [
        ("models", "status", "--url"),
        ("models", "load", "tiny", "--token", "secret-token", "--url"),
    ],
)
async def test_models_commands_refuse_an_unpinned_policy(
    running: Running, tmp_path: Path, command: tuple[str, ...]
) -> None:
    code, out, err = await asyncio.to_thread(run_cli, *command, running.url, *trust(running))
    assert code == 2
    assert "does not pin mrtd, rtmr0, rtmr1, rtmr2" in err
    assert "enclave verify URL --save-policy" in err
    assert "secret-token" not in out + err
    partial = tmp_path / "partial.toml"  # MRTD alone is not enough
    partial.write_text(policy_to_toml(Policy(mrtd=running.policy().mrtd)))
    code, _, err = await asyncio.to_thread(
        run_cli, *command, running.url, *trust(running), "--policy", str(partial)
    )
    assert code == 2
    assert "does not pin rtmr0, rtmr1, rtmr2" in err


async def test_models_status_works_with_a_pinned_policy_or_insecure_any_measurement(
    running: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(policy_to_toml(running.policy()))
    code, out, err = await asyncio.to_thread(
        run_cli, "models", "status", "--url", running.url, *trust(running), "--policy", str(policy)
    )
    assert code == 0, err
    assert json.loads(out)["loaded_model"] == "tiny"
    with caplog.at_level(logging.WARNING, logger="attestation.verify"):
        code, out, err = await asyncio.to_thread(
            run_cli,
            "models",
            "status",
            "--url",
            running.url,
            *trust(running),
            "--insecure-any-measurement",
        )
    assert code == 0, err
    assert "INSECURE: verifying with insecure_any_measurement" in caplog.text


async def test_transports_refuse_an_unpinned_verifier(running: Running) -> None:
    unpinned = running.verifier(Policy())
    for build in (
        lambda: RaTlsTransport(unpinned),
        lambda: AsyncRaTlsTransport(unpinned),
        lambda: OhttpTransport(running.url, unpinned),
        lambda: AsyncOhttpTransport(running.url, unpinned),
        lambda: AsyncOhttpTransport(running.url, unpinned, relay_url="http://127.0.0.1:9/r"),
    ):
        with pytest.raises(MeasurementsNotPinned, match="--save-policy"):
            build()
    assert unpinned.verifications == 0  # refused before any connection


async def test_insecure_any_measurement_is_named_and_warns_on_every_verification(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    verifier = running.verifier(
        Policy(
            insecure_any_measurement=True,
            insecure_accept_service=running.policy().insecure_accept_service,
        )
    )
    transport = AsyncOhttpTransport(running.url, verifier)
    with caplog.at_level(logging.WARNING, logger="attestation.verify"):
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(running.url + "/v1/models")
            await transport.refresh()
    endpoint = attested_endpoint(response)
    assert endpoint is not None
    assert not endpoint.measurements_pinned
    assert "insecure_any_measurement" in endpoint.insecure
    assert endpoint.to_json_dict()["insecure"] == list(endpoint.insecure)
    # certificate + report, then the refresh's report: one warning per verification
    warnings = caplog.text.count("INSECURE: verifying with insecure_any_measurement")
    assert warnings == verifier.verifications >= 3
