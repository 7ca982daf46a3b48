"""GPU evidence in the attestation report and behind the RA-TLS certificate: the digests in the
quote's claims bind every GPU's evidence, the GPU nonce binds the session, and a GPU item
missing, altered, or taken from another service is refused."""

from __future__ import annotations

import base64

import httpx
import pytest
from starlette.applications import Starlette

from attestation.collateral import Collateral
from attestation.errors import GpuNotInCcModeError, VerificationError
from attestation.gpu import GpuPolicy, GpuReason, decode_gpu_evidence, gpu_nonce, verify_gpus
from attestation.gpu.evidence import GpuEvidence
from attestation.ratls import RaTlsIssuer, parse_certificate
from attestation.verify import verify_evidence
from enclave.report import RateLimiter, ReportSource, report_routes
from enclave.tls import CertificateManager
from enclave_dev.gpu import GpuSimulator, SimulatedGpuProvider
from enclave_dev.tee import SimulatedQuoteProvider, Simulator
from model_manager.status import ModelStatus

NONCE = bytes(range(32))
OUTCOMES: list[str] = []
STATUS = ModelStatus("idle", None, None, "", 0.0, 0.0, 0)


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator.create()


@pytest.fixture(scope="module")
def gpus() -> GpuSimulator:
    return GpuSimulator(count=2)


class _Refusing:
    name = "nvml"

    async def collect(self, nonce: bytes) -> tuple[GpuEvidence, ...]:
        raise GpuNotInCcModeError("the GPUs are not in confidential-computing mode (canary-7f3a)")


def build(
    sim: Simulator, gpu_provider: object, gpus_limiter: RateLimiter | None = None
) -> tuple[Starlette, CertificateManager]:
    provider = SimulatedQuoteProvider(sim)

    async def quote(report_data: bytes) -> bytes:
        return (await provider.get_quote(report_data)).quote

    manager = CertificateManager(
        RaTlsIssuer(quote, gpu_provider=gpu_provider),  # type: ignore[arg-type]
        ohttp_keys=lambda: b"keys",
        model=lambda: None,
        service_version="0.1.0",
    )
    source = ReportSource(
        manager, provider, lambda: b"keys", lambda: STATUS, "0.1.0", on_outcome=OUTCOMES.append
    )
    routes = report_routes(source, RateLimiter(100, 1000), gpus_limiter)
    return Starlette(routes=routes), manager


async def get(
    app: Starlette, path: str, headers: dict[str, str] | None = None, peer: str = "198.51.100.7"
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=(peer, 1234))
    async with httpx.AsyncClient(transport=transport, base_url="https://enclave.test") as client:
        return await client.get(path, headers=headers)


def items(document: dict[str, object]) -> tuple[GpuEvidence, ...]:
    return tuple(decode_gpu_evidence(base64.b64decode(i)) for i in document["gpu_evidence"])  # type: ignore[attr-defined]


async def test_report_gpu_evidence_is_bound_to_the_challenge(sim: Simulator, gpus: GpuSimulator):
    app, manager = build(sim, SimulatedGpuProvider(gpus))
    await manager.reissue("start")
    document = (await get(app, f"/v1/attestation/report?nonce={NONCE.hex()}")).json()
    verified = verify_evidence(
        bytes.fromhex(document["evidence"]),
        collateral=Collateral.from_json(sim.collateral_json()),
        peer_spki_der=manager.issuer.spki_der,
        nonce=NONCE,
        now=sim.now,
        insecure_root_ca_der=sim.root_ca_der,
    )
    assert verified.claims is not None
    assert verified.claims.gpus is not None
    assert len(verified.claims.gpus) == 2
    served = items(document)
    checked = verify_gpus(
        verified.claims, served, policy=GpuPolicy(required_count=2), insecure_root_der=gpus.root_der
    )
    assert [g.architecture for g in checked] == ["hopper", "hopper"]
    claims = verified.claims
    assert served[0].report[4:36] == gpu_nonce(claims.pubkey_hash, claims.ohttp_keys, NONCE)


async def test_certificate_gpu_evidence_is_served_and_bound(sim: Simulator, gpus: GpuSimulator):
    app, manager = build(sim, SimulatedGpuProvider(gpus))
    issued = await manager.reissue("start")
    document = (await get(app, "/v1/attestation/gpus")).json()
    found = parse_certificate(issued.certificate_der)
    served = items(document)
    assert served == issued.gpu_evidence
    verify_gpus(
        found.claims, served, policy=GpuPolicy(required_count=2), insecure_root_der=gpus.root_der
    )


async def test_missing_altered_or_reordered_gpu_evidence_is_unbound(
    sim: Simulator, gpus: GpuSimulator
):
    _app, manager = build(sim, SimulatedGpuProvider(gpus))
    issued = await manager.reissue("start")
    claims = parse_certificate(issued.certificate_der).claims
    served = issued.gpu_evidence
    altered = GpuEvidence(
        served[0].architecture, served[0].report[:-1] + b"\x00", served[0].cert_chain, "on", True
    )
    for wrong in ((), served[:1], served[::-1], (altered, served[1]), (*served, served[0])):
        with pytest.raises(VerificationError) as info:
            verify_gpus(claims, wrong, insecure_root_der=gpus.root_der)
        assert info.value.reason == GpuReason.EVIDENCE_UNBOUND


async def test_gpu_evidence_swapped_between_two_services_is_refused(sim: Simulator):
    """Two services with their own GPUs: B's (valid, NVIDIA-signed-alike) GPU evidence next to
    A's certificate fails the binding, and so does A's claims with B's digests."""
    gpus = GpuSimulator(count=1)
    _, first = build(sim, SimulatedGpuProvider(gpus))
    _, second = build(sim, SimulatedGpuProvider(gpus))
    a, b = await first.reissue("start"), await second.reissue("start")
    claims_a = parse_certificate(a.certificate_der).claims
    with pytest.raises(VerificationError) as info:
        verify_gpus(claims_a, b.gpu_evidence, insecure_root_der=gpus.root_der)
    assert info.value.reason == GpuReason.EVIDENCE_UNBOUND
    # Even when the digests are made to match, B's reports answer B's GPU nonce.
    forged = claims_a.__class__(
        pubkey_hash=claims_a.pubkey_hash,
        ohttp_keys=claims_a.ohttp_keys,
        service_version=claims_a.service_version,
        gpus=tuple(item.digest for item in b.gpu_evidence),
    )
    with pytest.raises(VerificationError) as info:
        verify_gpus(forged, b.gpu_evidence, insecure_root_der=gpus.root_der)
    assert info.value.reason == GpuReason.NONCE_MISMATCH


async def test_policy_requiring_gpus_refuses_a_service_without_them(sim: Simulator):
    app, manager = build(sim, None)
    issued = await manager.reissue("start")
    claims = parse_certificate(issued.certificate_der).claims
    assert claims.gpus is None
    assert verify_gpus(claims, ()) == ()
    with pytest.raises(VerificationError) as info:
        verify_gpus(claims, (), policy=GpuPolicy(required_count=1))
    assert info.value.reason == GpuReason.EVIDENCE_MISSING
    document = (await get(app, "/v1/attestation/gpus")).json()
    assert document["gpu_evidence"] == []


async def test_gpus_outside_cc_mode_make_the_report_unavailable(sim: Simulator, gpus: GpuSimulator):
    app, manager = build(sim, SimulatedGpuProvider(gpus))
    await manager.reissue("start")
    manager.issuer._gpus = _Refusing()  # type: ignore[assignment]  # the GPUs leave CC mode
    response = await get(app, f"/v1/attestation/report?nonce={NONCE.hex()}")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "gpu_evidence_unavailable"
    assert OUTCOMES[-1] == "gpu_evidence_unavailable"
    assert "canary-7f3a" not in response.text  # the provider's message stays in the log


GPUS = "/v1/attestation/gpus"


async def test_gpu_evidence_is_rate_limited_per_client(sim: Simulator, gpus: GpuSimulator):
    """Regression (issue 20 #10): the route answers ~1,000x its request and had no limit."""
    app, manager = build(sim, SimulatedGpuProvider(gpus), RateLimiter(3, 100, 3, 100))
    await manager.reissue("start")
    codes = [(await get(app, GPUS)).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    refused = await get(app, GPUS)
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert (await get(app, GPUS, peer="203.0.113.9")).status_code == 200  # another client


async def test_gpu_evidence_has_the_certificate_as_etag(sim: Simulator, gpus: GpuSimulator):
    app, manager = build(sim, SimulatedGpuProvider(gpus), RateLimiter(2, 100, 2, 100))
    first = await manager.reissue("start")
    answer = await get(app, GPUS)
    tag = answer.headers["etag"]
    assert tag == f'"{answer.json()["certificate_sha256"]}"'
    assert answer.headers["cache-control"] == "no-cache"
    # Revalidation answers 304 without a body and is not charged: ten of them, then a full one.
    for header in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        unchanged = await get(app, GPUS, {"If-None-Match": header})
        assert unchanged.status_code == 304
        assert unchanged.content == b""
        assert unchanged.headers["etag"] == tag
    for _ in range(6):
        assert (await get(app, GPUS, {"If-None-Match": tag})).status_code == 304
    assert (await get(app, GPUS, {"If-None-Match": '"other"'})).status_code == 200
    # A new certificate is a new tag: the old one gets the full document.
    second = await manager.reissue("model_change")
    assert second.certificate_der != first.certificate_der
    assert (await get(app, GPUS, {"If-None-Match": tag})).status_code == 429  # budget spent
    fresh = await get(app, GPUS, {"If-None-Match": tag}, peer="203.0.113.9")
    assert fresh.status_code == 200
    assert fresh.headers["etag"] != tag
