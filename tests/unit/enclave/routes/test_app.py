"""The app's other routes, error shapes and the error boundary."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from enclave.app import build_app
from tests.unit.enclave.routes.conftest import METRICS_AUTH, METRICS_TOKEN, MODEL, Harness

MakeHarness = Callable[..., Awaitable[Harness]]
SECRET = "exception-text-d41d8cd9"


async def test_health_is_always_ok(make_harness: MakeHarness) -> None:
    harness = await make_harness()
    response = await harness.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_follows_the_model_and_the_checks(make_harness: MakeHarness) -> None:
    harness = await make_harness()
    response = await harness.client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "reason": "model_not_ready"}
    await harness.load()
    assert (await harness.client.get("/ready")).json() == {"ready": True}
    issued: list[bool] = []
    harness.service.readiness_checks.append(lambda: None if issued else "no_certificate")
    response = await harness.client.get("/ready")
    assert response.status_code == 503
    assert response.json()["reason"] == "no_certificate"
    issued.append(True)
    assert (await harness.client.get("/ready")).status_code == 200


async def test_models_lists_the_ready_model_with_its_digest(make_harness: MakeHarness) -> None:
    harness = await make_harness()
    assert (await harness.client.get("/v1/models")).json() == {"object": "list", "data": []}
    await harness.load()
    data = (await harness.client.get("/v1/models")).json()["data"]
    status = harness.service.manager.status()
    assert status.digest is not None
    assert data == [
        {
            "id": MODEL,
            "object": "model",
            "created": int(status.since),
            "owned_by": "enclave",
            "digest": status.digest.hex,
            "digest_kind": "manifest-sha256",
            "insecure": list(harness.service.insecure),
            "confidential": not harness.service.insecure,
        }
    ]
    await harness.unload()
    assert (await harness.client.get("/v1/models")).json()["data"] == []


async def test_lifecycle_routes_are_mounted(make_harness: MakeHarness) -> None:
    harness = await make_harness()
    status = await harness.client.get("/v1/models/status")
    assert status.json()["proxy_status"] == "idle"
    loaded = await harness.client.post("/v1/models/load", json={"model": MODEL})
    assert loaded.status_code == 202
    await harness.service.manager.wait_status("ready", timeout=5)
    assert (await harness.client.get("/v1/models/status")).json()["proxy_status"] == "ready"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/no/such/route", 404, "not_found"),
        ("GET", "/v1/chat/completions", 405, "method_not_allowed"),
    ],
)
async def test_unknown_routes_and_methods_use_the_openai_shape(
    make_harness: MakeHarness, method: str, path: str, status: int, code: str
) -> None:
    harness = await make_harness()
    response = await harness.client.request(method, path)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_unhandled_exception_is_an_opaque_500(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    harness = await make_harness()

    async def boom(_: Request) -> Response:
        raise RuntimeError(SECRET)

    app = build_app(harness.service, extra_routes=[Route("/boom", boom)])
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://enclave.test"
    ) as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "message": "internal error",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    assert SECRET not in caplog.text
    assert "RuntimeError" in caplog.text
    assert 'route="/boom",status="500"' in harness.service.metrics.render().decode()


async def test_metrics_come_from_the_service_registry(make_harness: MakeHarness) -> None:
    harness = await make_harness(metrics_token=METRICS_TOKEN)
    await harness.client.get("/health")
    await harness.client.get("/not-a-route-9e1f")
    response = await harness.client.get("/metrics", headers=METRICS_AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'enclave_http_requests_total{route="/health",status="200"} 1.0' in text
    assert 'enclave_http_requests_total{route="unmatched",status="404"} 1.0' in text
    assert "not-a-route-9e1f" not in text
    assert 'enclave_model_state{state="idle"} 1.0' in text
    assert "python_gc_objects_collected_total" not in text  # not the global registry
