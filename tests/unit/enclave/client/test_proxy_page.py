"""The proxy page without a service (the browser test is tests/integration/client/
test_proxy_page.py): served in every compat mode (Anthropic mode's catch-all does not take
it), FAILED with the reason when the endpoint cannot be reached, NOT PINNED under a policy that
pins nothing, and every value escaped."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from attestation.collateral import Collateral
from attestation.policy import DEFAULT_POLICY
from enclave.client import AsyncOhttpTransport, Verifier
from enclave.client._document import verification_document
from enclave.client._proxy import ProxyOptions, build_proxy_app
from enclave.client._proxy_page import render_page
from enclave.client._receipts import KeptReceipt
from enclave.client.errors import AttestationFailed


class _NoCollateral:
    async def get_collateral(self, quote: bytes) -> Collateral:
        raise AssertionError("never reached: nothing answers")


@pytest.mark.parametrize("compat", ["openai", "anthropic", "both"])
async def test_the_page_says_failed_when_nothing_answers(compat: str) -> None:
    policy = dataclasses.replace(DEFAULT_POLICY, insecure_any_measurement=True)
    transport = AsyncOhttpTransport("https://127.0.0.1:9", Verifier(_NoCollateral(), policy=policy))
    app = build_proxy_app(
        transport, compat=compat, options=ProxyOptions(recheck_timeout_seconds=5.0)
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8787"
    ) as client:
        page = await client.get("/proxy/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "FAILED: upstream_unreachable" in page.text
    assert "NOT PINNED" in page.text
    assert "<script" not in page.text


def test_every_value_is_escaped() -> None:
    hostile = "<img src=x onerror=alert(1)>"
    failure = AttestationFailed("mrtd_not_allowed", hostile)
    document = verification_document(
        hostile, DEFAULT_POLICY, trust_anchor=hostile, collateral=hostile, failure=failure
    )
    text = render_page(
        url=hostile,
        compat="openai",
        policy=DEFAULT_POLICY,
        document=document,
        endpoint=None,
        failure="mrtd_not_allowed",
        last_checked=None,
        receipts=[KeptReceipt(hostile, hostile, 0.0, False, hostile, hostile, None)],
        receipts_dir=hostile,
    )
    assert "<img" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
