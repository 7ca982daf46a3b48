"""The whole GPU path with the simulated GPU: a real service (enclave_dev.local, gpu=simulated, two
GPUs), its report and RA-TLS certificate, the client's RA-TLS and OHTTP transports, and
`enclave verify`. A client that requires GPUs refuses a service without them, GPUs outside
its policy, and GPU evidence it cannot root; it accepts the right ones."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from attestation.gpu import GpuPolicy
from attestation.policy import load_policy
from enclave.cli import main
from enclave.client import (
    AsyncOhttpTransport,
    AsyncRaTlsTransport,
    AttestationFailed,
    attest_endpoint,
    attested_endpoint,
)
from enclave.client._ratls import verified_certificate
from enclave_dev.gpu import SimulatedGpuProvider
from enclave_dev.local import local_settings, serve_locally
from enclave_dev.tee import Simulator
from tests.integration.client.conftest import TOKEN, Running

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclasses.dataclass
class GpuService:
    running: Running
    gpu_root_der: bytes
    gpu_root_pem: Path


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def gpus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GpuService]:
    tmp = tmp_path_factory.mktemp("gpu-server")
    (tmp / "models").mkdir()
    settings = local_settings(
        tmp,
        load_token=TOKEN,
        shutdown_grace_seconds=5,
        gpu="simulated",
        insecure_allow_simulated_gpu=True,
        simulated_gpu_count=2,
    )
    simulator = Simulator.create()
    async with serve_locally(settings, simulator=simulator) as server:
        assert server.bound_port is not None
        provider = server.gpu_provider
        assert isinstance(provider, SimulatedGpuProvider)
        yield GpuService(
            Running(server, simulator, server.bound_port, tmp),
            provider.simulator.root_der,
            tmp / "run" / "simulated-gpu" / "root_ca.pem",
        )


def gpu_policy(service: GpuService, **gpu: object):  # type: ignore[no-untyped-def]
    return service.running.policy(gpu=GpuPolicy(**gpu))  # type: ignore[arg-type]


async def test_endpoint_with_two_gpus_verifies_and_shows_them(gpus: GpuService) -> None:
    verifier = gpus.running.verifier(
        gpu_policy(gpus, required_count=2, architectures=frozenset({"hopper"})),
        insecure_gpu_root_der=gpus.gpu_root_der,
    )
    endpoint = await attest_endpoint(verifier, gpus.running.url)
    assert [gpu.architecture for gpu in endpoint.gpus] == ["hopper", "hopper"]
    assert endpoint.to_json_dict()["gpus"][0]["cc_mode"] == "on"


async def test_ratls_transport_verifies_the_gpus_before_the_first_request(
    gpus: GpuService,
) -> None:
    verifier = gpus.running.verifier(
        gpu_policy(gpus, required_count=2), insecure_gpu_root_der=gpus.gpu_root_der
    )
    transport = AsyncRaTlsTransport(verifier)
    async with httpx.AsyncClient(transport=transport, base_url=gpus.running.url) as client:
        response = await client.get("/v1/models/status")
    assert response.status_code == 200
    connection = verified_certificate(response)
    assert connection is not None
    assert len(connection.gpus) == 2


def _gpus_fetched(service: GpuService) -> float:
    text = service.running.server.service.metrics.render().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('enclave_http_requests_total{route="/v1/attestation/gpus"')
    )


async def test_new_connections_reuse_the_gpus_verified_for_the_certificate(
    gpus: GpuService,
) -> None:
    """The GPU evidence is fetched once per certificate, not once per connection: a pool of
    connections never meets the route's rate limit (gpus_rate_per_client_per_minute)."""
    verifier = gpus.running.verifier(
        gpu_policy(gpus, required_count=2), insecure_gpu_root_der=gpus.gpu_root_der
    )
    before = _gpus_fetched(gpus)
    for _ in range(5):  # a new connection each time
        transport = AsyncRaTlsTransport(verifier)
        async with httpx.AsyncClient(transport=transport, base_url=gpus.running.url) as client:
            response = await client.get("/v1/models/status")
        connection = verified_certificate(response)
        assert connection is not None
        assert len(connection.gpus) == 2
    assert _gpus_fetched(gpus) - before == 1


async def test_ohttp_transport_sends_only_after_the_gpus_verified(gpus: GpuService) -> None:
    verifier = gpus.running.verifier(
        gpu_policy(gpus, required_count=2), insecure_gpu_root_der=gpus.gpu_root_der
    )
    transport = AsyncOhttpTransport(gpus.running.url, verifier)
    async with httpx.AsyncClient(transport=transport, base_url=gpus.running.url) as client:
        response = await client.get("/v1/models/status")
    assert response.status_code == 200
    endpoint = attested_endpoint(response)
    assert endpoint is not None
    assert len(endpoint.gpus) == 2


@pytest.mark.parametrize(
    ("gpu", "reason"),
    [
        ({"required_count": 3}, "gpu_evidence_missing"),
        ({"architectures": frozenset({"blackwell"})}, "gpu_architecture_not_allowed"),
        ({"min_driver_version": "999.0"}, "gpu_driver_too_old"),
        ({"measurements": {2: frozenset({bytes(48)})}}, "gpu_measurement_not_allowed"),
    ],
)
async def test_gpus_outside_the_policy_are_refused_before_any_request(
    gpus: GpuService, gpu: dict[str, object], reason: str
) -> None:
    verifier = gpus.running.verifier(
        gpu_policy(gpus, **gpu), insecure_gpu_root_der=gpus.gpu_root_der
    )
    with pytest.raises(AttestationFailed) as info:
        await attest_endpoint(verifier, gpus.running.url)
    assert info.value.reason == reason
    transport = AsyncRaTlsTransport(verifier)
    async with httpx.AsyncClient(transport=transport, base_url=gpus.running.url) as client:
        with pytest.raises(AttestationFailed) as info:
            await client.post("/v1/models/unload", json={"model": "x"})
    assert info.value.reason == reason


async def test_simulated_gpus_are_not_trusted_by_default(gpus: GpuService) -> None:
    verifier = gpus.running.verifier(gpu_policy(gpus, required_count=2))
    with pytest.raises(AttestationFailed) as info:
        await attest_endpoint(verifier, gpus.running.url)
    assert info.value.reason == "gpu_root_untrusted"


async def test_policy_requiring_gpus_refuses_a_service_without_them(running: Running) -> None:
    """`running` (conftest) is a service with no GPU provider."""
    verifier = running.verifier(running.policy(gpu=GpuPolicy(required_count=1)))
    with pytest.raises(AttestationFailed) as info:
        await attest_endpoint(verifier, running.url)
    assert info.value.reason == "gpu_evidence_missing"
    transport = AsyncRaTlsTransport(verifier)
    async with httpx.AsyncClient(transport=transport, base_url=running.url) as client:
        with pytest.raises(AttestationFailed) as info:
            await client.get("/v1/models/status")
    assert info.value.reason == "gpu_evidence_missing"


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(list(argv))
    return code, out.getvalue()


async def test_enclave_verify_shows_the_gpus_and_saves_them_in_the_policy(
    gpus: GpuService, tmp_path: Path
) -> None:
    server = gpus.running.server
    bundle = server.simulated.bundle_dir  # type: ignore[union-attr]
    assert bundle is not None
    trust = (
        "--collateral",
        str(bundle / "collateral.json"),
        "--root-ca",
        str(bundle / "root_ca.pem"),
        "--gpu-root-ca",
        str(gpus.gpu_root_pem),
        "--insecure-simulated-root",
        *(  # what this simulated service declares in its claims
            arg for name in server.service.insecure for arg in ("--insecure-accept-service", name)
        ),
    )
    saved = tmp_path / "policy.toml"
    code, out = await asyncio.to_thread(
        run_cli, "verify", gpus.running.url, *trust, "--save-policy", str(saved)
    )
    assert code == 0, out
    assert "gpus: 2" in out
    assert "gpu 0: hopper, driver 550.90.07, VBIOS 96.00.9f.00.01" in out
    policy = load_policy(saved)
    assert policy.gpu.required_count == 2
    assert len(policy.gpu.measurements) == 64
    code, out = await asyncio.to_thread(
        run_cli, "verify", gpus.running.url, *trust, "--policy", str(saved), "--json"
    )
    assert code == 0, out
    document = json.loads(out)
    step = next(s for s in document["steps"] if s["step"] == "7")
    assert step["result"] == "ok"
    assert len(document["facts"]["gpus"]) == 2


async def test_proxy_forwards_only_to_an_endpoint_whose_gpus_verify(gpus: GpuService) -> None:
    from enclave.client._proxy import build_proxy_app
    from tests.integration.client.conftest import serve

    async def through_proxy(verifier) -> httpx.Response:  # type: ignore[no-untyped-def]
        transport = AsyncOhttpTransport(gpus.running.url, verifier)
        async with serve(build_proxy_app(transport)) as proxy, httpx.AsyncClient() as client:
            return await client.get(proxy + "/v1/models/status")

    good = gpus.running.verifier(
        gpu_policy(gpus, required_count=2), insecure_gpu_root_der=gpus.gpu_root_der
    )
    assert (await through_proxy(good)).status_code == 200
    wrong = gpus.running.verifier(
        gpu_policy(gpus, required_count=2, min_vbios_version="ff.00.00.00.00"),
        insecure_gpu_root_der=gpus.gpu_root_der,
    )
    refused = await through_proxy(wrong)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "attestation_unverified"


@contextlib.contextmanager
def serving_gpu_evidence(server, evidence):  # type: ignore[no-untyped-def]
    """Make ``server`` serve ``evidence`` as its certificate's GPU evidence (a lying service)."""
    current = server.certificates.current
    server.certificates.current = dataclasses.replace(current, gpu_evidence=evidence)
    try:
        yield
    finally:
        server.certificates.current = current


async def test_gpu_evidence_missing_or_swapped_between_services_is_refused(
    gpus: GpuService, running: Running
) -> None:
    """A service that serves another service's (genuine-looking) GPU evidence, or none, or a
    fresh collection not bound to its certificate, is refused before any request."""
    with_gpus = gpus.running.server
    own = with_gpus.certificates.current.gpu_evidence  # type: ignore[union-attr]
    provider = with_gpus.gpu_provider
    assert isinstance(provider, SimulatedGpuProvider)
    unbound = provider.simulator.evidence(bytes(32))  # same GPUs, another nonce
    cases = [
        (running, own, running.policy(gpu=GpuPolicy(required_count=2))),  # B serves A's GPUs
        (gpus.running, (), gpus.running.policy(gpu=GpuPolicy())),  # A hides its GPUs
        (gpus.running, own[::-1], gpus.running.policy(gpu=GpuPolicy())),  # reordered
        (gpus.running, unbound, gpus.running.policy(gpu=GpuPolicy())),  # not for this cert
    ]
    for service, served, policy in cases:
        verifier = service.verifier(policy, insecure_gpu_root_der=gpus.gpu_root_der)
        with serving_gpu_evidence(service.server, served):
            transport = AsyncRaTlsTransport(verifier)
            async with httpx.AsyncClient(transport=transport, base_url=service.url) as client:
                with pytest.raises(AttestationFailed) as info:
                    await client.get("/v1/models/status")
        assert info.value.reason in ("gpu_evidence_unbound", "gpu_evidence_missing")
        if service is gpus.running:
            assert info.value.reason == "gpu_evidence_unbound"


async def test_report_gpu_evidence_not_bound_to_the_challenge_is_refused(
    gpus: GpuService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 7 on the report: the certificate's GPUs verify, but the report's GPU evidence (the
    fresh, challenge-bound one) is another nonce's: refused."""
    server = gpus.running.server
    issuer = server.certificates.issuer
    provider = server.gpu_provider
    assert isinstance(provider, SimulatedGpuProvider)
    original = issuer.bind_gpus

    async def stale(claims):  # type: ignore[no-untyped-def]
        bound, _ = await original(claims)
        return bound, provider.simulator.evidence(bytes(32))

    monkeypatch.setattr(issuer, "bind_gpus", stale)
    verifier = gpus.running.verifier(
        gpu_policy(gpus, required_count=2), insecure_gpu_root_der=gpus.gpu_root_der
    )
    with pytest.raises(AttestationFailed) as info:
        await attest_endpoint(verifier, gpus.running.url)
    assert info.value.reason == "gpu_evidence_unbound"
    assert info.value.stage == "report"
