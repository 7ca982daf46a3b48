"""``/metrics`` and ``/metrics/engine`` only for an authorised scraper (issue 20 #6): absent from
the main listener without a ``metrics_token``, behind the bearer token with one, and on the
metrics listener's own app. ``enclave serve`` end to end: tests/integration/server/
test_metrics_listener.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from enclave.app import build_metrics_app
from enclave.settings import SettingsError, load_settings
from tests.unit.enclave.routes.conftest import METRICS_AUTH, METRICS_TOKEN, Harness

MakeHarness = Callable[..., Awaitable[Harness]]
PATHS = ("/metrics", "/metrics/engine")


@pytest.mark.parametrize("path", PATHS)
async def test_without_a_token_the_main_listener_serves_no_metrics(
    make_harness: MakeHarness, path: str
) -> None:
    harness = await make_harness()
    response = await harness.client.get(path, headers=METRICS_AUTH)
    assert response.status_code == 404
    assert "enclave_" not in response.text


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Bearer wrong-token-0000000000000000000000"}, "invalid_token"),
        ({"Authorization": f"Basic {METRICS_TOKEN}"}, "invalid_token"),
        ({"Authorization": f"Bearer {METRICS_TOKEN}x"}, "invalid_token"),
        ({"Authorization": "Bearer"}, "invalid_token"),
    ],
)
async def test_an_unauthorised_scrape_is_refused(
    make_harness: MakeHarness, path: str, headers: dict[str, str], code: str
) -> None:
    harness = await make_harness(metrics_token=METRICS_TOKEN)
    response = await harness.client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "enclave_" not in response.text
    assert METRICS_TOKEN not in response.text


async def test_an_authorised_scrape_gets_the_metrics(make_harness: MakeHarness) -> None:
    harness = await make_harness(metrics_token=METRICS_TOKEN)
    response = await harness.client.get("/metrics", headers=METRICS_AUTH)
    assert response.status_code == 200
    assert "enclave_http_requests_total" in response.text
    engine = await harness.client.get("/metrics/engine", headers=METRICS_AUTH)
    assert engine.status_code == 503  # authorised; no model is ready
    assert engine.json()["error"]["code"] == "model_not_ready"


async def test_the_metrics_listener_app_is_open_without_a_token(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness()
    app = build_metrics_app(harness.service)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://metrics"
    ) as client:
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/v1/models")).status_code == 404  # metrics only


async def test_the_metrics_listener_app_needs_the_token_when_set(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(metrics_token=METRICS_TOKEN)
    app = build_metrics_app(harness.service)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://metrics"
    ) as client:
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers=METRICS_AUTH)).status_code == 200


def test_a_metrics_listener_off_loopback_needs_a_token() -> None:
    with pytest.raises(SettingsError, match="metrics_token") as refused:
        load_settings({"metrics_host": "0.0.0.0", "metrics_port": 9100})
    assert "0.0.0.0" not in str(refused.value)
    settings = load_settings(
        {"metrics_host": "0.0.0.0", "metrics_port": 9100, "metrics_token": METRICS_TOKEN}
    )
    assert settings.service.metrics_port == 9100
    assert load_settings({"metrics_host": "::1", "metrics_port": 9100}).service.metrics_port


@pytest.mark.parametrize("token", ["short", "a" * 40, "abababababababababababababababab"])
def test_a_guessable_metrics_token_is_refused(token: str) -> None:
    with pytest.raises(SettingsError, match="metrics token") as refused:
        load_settings({"metrics_token": token})
    assert token not in str(refused.value)
