"""OCSP revocation of the device CAs (simulated responses: no real NVIDIA OCSP answers are
available here), the offline folder source and the caching fetcher."""

from __future__ import annotations

import datetime
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from attestation.errors import VerificationError
from attestation.gpu import GpuReason, verify_gpu_report
from attestation.gpu.revocation import CachedOcsp, OfflineOcsp, certificate_key
from enclave_dev.gpu import GpuSimulator

NONCE = bytes(32)


@pytest.fixture(scope="module")
def sim() -> GpuSimulator:
    return GpuSimulator(count=2)


def verify(sim: GpuSimulator, responses: dict[str, bytes], **kwargs: object):  # type: ignore[no-untyped-def]
    return verify_gpu_report(
        sim.report(0, NONCE),
        sim.chain_pem(0),
        nonce=NONCE,
        insecure_root_der=sim.root_der,
        ocsp_responses=responses,
        **kwargs,  # type: ignore[arg-type]
    )


def reason(sim: GpuSimulator, responses: dict[str, bytes], **kwargs: object) -> str:
    with pytest.raises(VerificationError) as info:
        verify(sim, responses, **kwargs)
    return info.value.reason


def test_good_responses_pass(sim: GpuSimulator) -> None:
    assert verify(sim, sim.ocsp_responses(0)).architecture == "hopper"


def test_revoked_ca_is_refused(sim: GpuSimulator) -> None:
    revoked = sim.ocsp_responses(0, status=ocsp.OCSPCertStatus.REVOKED)
    assert reason(sim, revoked) == GpuReason.CERT_REVOKED


def test_unknown_status_is_invalid(sim: GpuSimulator) -> None:
    unknown = sim.ocsp_responses(0, status=ocsp.OCSPCertStatus.UNKNOWN)
    assert reason(sim, unknown) == GpuReason.OCSP_INVALID


def test_missing_response_is_unavailable(sim: GpuSimulator) -> None:
    assert reason(sim, {}) == GpuReason.REVOCATION_UNAVAILABLE


def test_expired_response_is_invalid(sim: GpuSimulator) -> None:
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)
    assert reason(sim, sim.ocsp_responses(0), now=later) == GpuReason.OCSP_INVALID


def test_response_for_another_certificate_or_signer_is_invalid(sim: GpuSimulator) -> None:
    other = GpuSimulator()  # another PKI: its responses name and are signed by other CAs
    (key,) = sim.ocsp_responses(0)
    (foreign,) = other.ocsp_responses(0).values()
    assert reason(sim, {key: foreign}) == GpuReason.OCSP_INVALID
    assert reason(sim, {key: b"\x30\x03\x0a\x01\x00"}) == GpuReason.OCSP_INVALID
    tampered = bytearray(sim.ocsp_responses(0)[key])
    tampered[-5] ^= 0x01  # inside the signature
    assert reason(sim, {key: bytes(tampered)}) == GpuReason.OCSP_INVALID


async def test_offline_folder_source(sim: GpuSimulator, tmp_path: Path) -> None:
    for key, data in sim.ocsp_responses(0).items():
        (tmp_path / f"{key}.ocsp").write_bytes(data)
    chain = x509.load_pem_x509_certificates(sim.chain_pem(0))
    data = await OfflineOcsp(tmp_path).response(chain[1], chain[2])
    assert verify(sim, {certificate_key(chain[1]): data})


async def test_fetcher_posts_a_sha384_request_and_caches_until_next_update(
    sim: GpuSimulator, tmp_path: Path
) -> None:
    chain = x509.load_pem_x509_certificates(sim.chain_pem(0))
    answer = sim.ocsp_responses(0)[certificate_key(chain[1])]
    seen: list[ocsp.OCSPRequest] = []

    def responder(request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"] == "application/ocsp-request"
        seen.append(ocsp.load_der_ocsp_request(request.content))
        return httpx.Response(200, content=answer)

    client = httpx.AsyncClient(transport=httpx.MockTransport(responder))
    source = CachedOcsp("https://ocsp.test/", tmp_path, client=client)
    assert await source.response(chain[1], chain[2]) == answer
    assert await source.response(chain[1], chain[2]) == answer
    assert source.fetches == 1
    assert seen[0].serial_number == chain[1].serial_number
    assert seen[0].hash_algorithm.name == "sha384"
    stale = CachedOcsp(
        "https://ocsp.test/",
        tmp_path,
        client=client,
        clock=lambda: datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3),
    )
    await stale.response(chain[1], chain[2])
    assert stale.fetches == 1  # past nextUpdate: fetched again
    await client.aclose()
