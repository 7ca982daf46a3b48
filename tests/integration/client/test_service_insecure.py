"""Nothing fake passes as real (issue 13 part 3): a service running the development engine and
the simulated TEE says so in its attestation claims, /v1/models and its status document, and a
client policy refuses it by default (service_insecure) unless it accepts those settings by
name; the CLI's --insecure-accept-service does that and is named in the result."""

from __future__ import annotations

import asyncio
import json

import pytest

from attestation.checks import Reason
from enclave.client import AsyncOhttpTransport, AttestationFailed, attest_endpoint
from tests.integration.client.conftest import Running
from tests.integration.client.test_policy_workflow import run_cli, trust

pytestmark = pytest.mark.asyncio(loop_scope="module")

DECLARED = ("insecure_allow_simulated_tee", "insecure_dev_engine")


async def test_the_service_declares_its_insecure_settings_everywhere(running: Running) -> None:
    assert running.server.service.insecure == DECLARED
    endpoint = await attest_endpoint(running.verifier(), running.url)
    assert endpoint.service_insecure == DECLARED  # from the claims the quote binds
    await running.load_model()
    async with running.plain_client() as client:
        (model,) = (await client.get("/v1/models")).json()["data"]
        status = (await client.get("/v1/models/status")).json()
    assert model["insecure"] == list(DECLARED)
    assert model["confidential"] is False
    assert status["insecure"] == list(DECLARED)


async def test_a_policy_refuses_a_declared_dev_engine_by_default(running: Running) -> None:
    verifier = running.verifier(running.policy(insecure_accept_service=frozenset()))
    with pytest.raises(AttestationFailed) as refused:
        await attest_endpoint(verifier, running.url)
    assert refused.value.reason == Reason.SERVICE_INSECURE
    assert "insecure_dev_engine" in str(refused.value)
    # Accepting the simulated TEE alone is not enough.
    only_tee = running.policy(insecure_accept_service=frozenset({DECLARED[0]}))
    with pytest.raises(AttestationFailed) as again:
        await attest_endpoint(running.verifier(only_tee), running.url)
    assert again.value.reason == Reason.SERVICE_INSECURE


async def test_the_transport_sends_nothing_to_a_refused_service(running: Running) -> None:
    import httpx

    verifier = running.verifier(running.policy(insecure_accept_service=frozenset()))
    transport = AsyncOhttpTransport(running.url, verifier)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(AttestationFailed, match="insecure_dev_engine"):
            await client.post(running.url + "/v1/models/load", json={"model": "tiny"})


async def test_the_cli_refuses_it_unless_told_to_accept_it(running: Running) -> None:
    # --insecure-simulated-root accepts the simulated TEE; the dev engine needs its own name.
    code, out, _ = await asyncio.to_thread(
        run_cli, "verify", running.url, *trust(running, accept=()), "--json"
    )
    document = json.loads(out)
    assert code == 1
    assert document["reason"] == "service_insecure"
    assert "insecure_dev_engine" in document["detail"]
    code, out, _ = await asyncio.to_thread(
        run_cli,
        "verify",
        running.url,
        *trust(running, accept=()),
        "--insecure-accept-service",
        "insecure_dev_engine",
        "--json",
    )
    document = json.loads(out)
    assert code == 0, out
    assert "insecure_accept_service" in document["insecure"]
