"""The attestation report: fresh evidence over the caller's nonce that verifies through the
real dcap-qvl (simulated TEE); bad nonces, the rate limit, and the not-yet-attested state."""

from __future__ import annotations

import base64

import httpx
import pytest
from starlette.applications import Starlette

from attestation.collateral import Collateral
from attestation.errors import VerificationError
from attestation.evidence import ModelClaim
from attestation.ratls import RaTlsIssuer
from attestation.verify import verify_evidence
from enclave.report import RateLimiter, ReportSource, report_routes
from enclave.tls import CertificateManager
from enclave_dev.tee import SimulatedQuoteProvider, Simulator
from model_manager.digests import ModelDigest
from model_manager.status import ModelStatus

NONCE = bytes(range(32))
STATUS = ModelStatus("ready", "tiny", ModelDigest("dm-verity", b"\x07" * 32), "", 1.0, 0.0, 3)


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator.create()


def build(
    sim: Simulator, *, issue: bool = True, per_client: int = 100
) -> tuple[Starlette, CertificateManager]:
    provider = SimulatedQuoteProvider(sim)

    async def quote(report_data: bytes) -> bytes:
        return (await provider.get_quote(report_data)).quote

    manager = CertificateManager(
        RaTlsIssuer(quote), ohttp_keys=lambda: b"keys", model=lambda: None, service_version="0.1.0"
    )
    source = ReportSource(manager, provider, lambda: b"keys", lambda: STATUS, "0.1.0")
    app = Starlette(routes=report_routes(source, RateLimiter(per_client, 1000)))
    return app, manager


async def get(app: Starlette, query: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="https://enclave.test") as client:
        return await client.get(f"/v1/attestation/report{query}")


async def test_report_evidence_verifies_with_the_nonce(sim: Simulator):
    app, manager = build(sim)
    await manager.reissue("start")
    response = await get(app, f"?nonce={NONCE.hex()}")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    document = response.json()
    assert document["version"] == 1
    assert document["quote_provider"] == "simulated"
    assert base64.b64decode(document["ohttp_keys"]) == b"keys"
    assert document["model"]["loaded_model"] == "tiny"
    assert manager.current is not None
    assert document["certificate_pem"] == manager.current.certificate_pem.decode()
    collateral = Collateral.from_json(sim.collateral_json())
    verified = verify_evidence(
        bytes.fromhex(document["evidence"]),
        collateral=collateral,
        peer_spki_der=manager.issuer.spki_der,
        nonce=NONCE,
        now=sim.now,
        insecure_root_ca_der=sim.root_ca_der,
    )
    assert verified.claims.nonce == NONCE
    assert verified.model == ModelClaim("tiny", "dm-verity", b"\x07" * 32)
    with pytest.raises(VerificationError) as caught:
        verify_evidence(
            bytes.fromhex(document["evidence"]),
            collateral=collateral,
            peer_spki_der=manager.issuer.spki_der,
            nonce=bytes(32),
            now=sim.now,
            insecure_root_ca_der=sim.root_ca_der,
        )
    assert caught.value.reason == "nonce_mismatch"


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?nonce=",
        "?nonce=zz" + "00" * 31,
        "?nonce=" + "00" * 31,
        "?nonce=" + "00" * 65,
        f"?nonce={NONCE.hex()}&nonce={NONCE.hex()}",
        # Issue 12 point 7: bytes.fromhex skips whitespace, so this was a 1-byte nonce.
        "?nonce=ab" + "%20" * 62,
        "?nonce=" + "00" * 31 + "%200",
        "?nonce=%20" + "00" * 32,
        "?nonce=" + "00" * 32 + "%0A",
        "?nonce=" + "0" * 65,  # odd length
        "?nonce=" + "+" * 64,  # '+' is a space in a query string
    ],
)
async def test_bad_nonces_are_400(sim: Simulator, query: str):
    app, manager = build(sim)
    await manager.reissue("start")
    response = await get(app, query)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "nonce must be 32 to 64 bytes, hex-encoded",
        "type": "invalid_request_error",
        "param": "nonce",
        "code": "invalid_nonce",
    }


async def test_rate_limited_per_client(sim: Simulator):
    app, manager = build(sim, per_client=2)
    await manager.reissue("start")
    responses = [await get(app, f"?nonce={NONCE.hex()}") for _ in range(3)]
    assert [response.status_code for response in responses] == [200, 200, 429]
    refused = responses[-1]
    assert refused.headers["retry-after"] == "30"  # one token of two per minute
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.json()["error"]["code"] == "rate_limited"


async def test_before_the_first_certificate_it_is_503(sim: Simulator):
    app, _ = build(sim)
    response = await get(app, f"?nonce={NONCE.hex()}")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_attested"
    assert response.json()["error"]["type"] == "service_unavailable_error"


def test_rate_limiter_refills_over_a_minute():
    now = [0.0]
    limiter = RateLimiter(per_client=2, global_=100, clock=lambda: now[0])
    assert [limiter.wait("direct:a") for _ in range(3)] == [0.0, 0.0, 30.0]
    assert limiter.wait("direct:b") == 0.0
    now[0] += 30.0  # half a minute: one token back
    assert limiter.wait("direct:a") == 0.0
    assert limiter.wait("direct:a") > 0.0
    assert limiter.wait("relayed:r") == 0.0


def test_a_flood_through_the_gateway_never_spends_the_direct_budget():
    """Issue 12 point 4: relayed requests have no client address and used to fall on the one
    global bucket, so one anonymous client made every report 429."""
    now = [0.0]
    limiter = RateLimiter(10, 60, 30, 60, clock=lambda: now[0])
    relayed = [limiter.wait(f"relayed:{index % 7}") for index in range(500)]
    assert relayed.count(0.0) == 60  # the relayed budget: one minute's worth, then refusals
    assert all(wait >= 1 for wait in relayed[60:])
    assert [limiter.wait(f"direct:198.51.100.{n}") for n in range(60)] == [0.0] * 60
    assert limiter.wait("direct:198.51.100.99") > 0.0  # the direct budget is its own


def test_one_relay_cannot_spend_the_whole_relayed_budget():
    limiter = RateLimiter(10, 60, 30, 60, clock=lambda: 0.0)
    assert [limiter.wait("relayed:flooder") for _ in range(40)].count(0.0) == 30
    assert limiter.wait("relayed:other-relay") == 0.0


def _rare_successes(flooders: int, *, rare: int, every: float = 0.5, seconds: int = 300) -> int:
    """``flooders`` direct addresses asking every ``every`` seconds each (staggered) for
    ``seconds``, while 20 other addresses ask once each, one every 15 s: how many of the 20
    are served. Default limits (10 per client, 60 shared a minute)."""
    now = [0.0]
    limiter = RateLimiter(10, 60, rare=rare, clock=lambda: now[0])
    step = 0.25
    served = 0
    for tick in range(int(seconds / step)):
        now[0] = tick * step
        for n in range(flooders):
            offset = (n * every / flooders) // step * step  # spread over the period
            if (now[0] - offset) % every < step and now[0] >= offset:
                limiter.wait(f"direct:10.{n // 256}.{n % 256}.1")
        if tick % 60 == 30:  # every 15 s, from 7.5 s
            served += limiter.wait(f"direct:198.51.100.{tick // 60}") == 0.0
    return served


@pytest.mark.parametrize("flooders", [16, 256])
def test_a_many_address_flood_does_not_starve_a_client_that_asks_once(flooders: int):
    """Issue 20 point 4: 16 addresses at 2 Hz made every direct report 429 (the shared bucket
    was empty). The reserve for rare clients: 20 of 20 served with 16 or 256 flooding
    addresses; 0 of 20 without it."""
    assert _rare_successes(flooders, rare=0) == 0
    assert _rare_successes(flooders, rare=30) == 20


def test_addresses_that_each_ask_once_a_minute_share_the_reserve():
    """The limit of the design: 256 addresses that each ask just once every 61 s count as rare
    too, and the reserve is shared with them (figures in docs/attestation-report.md)."""
    assert _rare_successes(256, rare=30, every=61.0) >= 1  # 2 of 20 (1 of 20 without it)


def test_the_reserve_is_for_direct_clients_and_bounded():
    now = [0.0]
    limiter = RateLimiter(10, 5, 10, 5, rare=3, clock=lambda: now[0])
    assert [limiter.wait(f"direct:a{n}") for n in range(10)].count(0.0) == 5 + 3
    assert [limiter.wait(f"relayed:r{n}") for n in range(10)].count(0.0) == 5
    assert limiter.wait("direct:a0") > 0.0  # it asked a moment ago: not rare
