"""The lifecycle routes: authorisation, bodies, names and status codes."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from enclave.routes import error_response
from model_manager._errorcodes import MESSAGES
from model_manager.endpoints import LOAD_PATH, STATUS_PATH, UNLOAD_PATH, build_router, model_routes
from model_manager.lifecycle import ModelManager
from model_manager.settings import ModelManagerSettings

from ._fakes import FakeEngines
from .conftest import SettingsFactory

TOKEN = "tok-3f9d1c0a7b-e5826b4f9c0d17a3e8"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT = 10.0

Client = Callable[..., Any]


@asynccontextmanager
async def serving(
    settings: ModelManagerSettings, engines: FakeEngines
) -> AsyncIterator[tuple[httpx.AsyncClient, ModelManager]]:
    manager = ModelManager(settings, engine_factory=engines)
    await manager.start()
    app = Starlette(routes=model_routes(manager, settings, error_response))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            yield client, manager
    finally:
        await manager.aclose()


@pytest.fixture
async def api(
    make_settings: SettingsFactory,
) -> AsyncIterator[tuple[httpx.AsyncClient, ModelManager, FakeEngines]]:
    engines = FakeEngines()
    async with serving(make_settings(load_token=TOKEN), engines) as (client, manager):
        yield client, manager, engines


async def test_status_document_fields(
    api: tuple[httpx.AsyncClient, ModelManager, FakeEngines],
) -> None:
    client, _, _ = api
    response = await client.get(STATUS_PATH)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    replica_id = response.json()["replica_id"]
    assert re.fullmatch(r"[A-Za-z0-9.-]+-[0-9a-f]{6}", replica_id)  # host name, start suffix
    assert response.json() | {"since": None, "replica_id": None} == {
        "replica_id": None,
        "loaded_model": None,
        "loaded_model_digest": None,
        "digest_kind": None,
        "proxy_status": "idle",
        "proxy_message": "no model loaded",
        "proxy_progress": 0.0,
        "since": None,
        "error": None,
        "restarts": 0,
        "generation": 0,
        "hashing": None,
        "insecure": [],
    }
    assert response.json()["since"].endswith("Z")


async def test_load_202_then_200_then_unload(
    api: tuple[httpx.AsyncClient, ModelManager, FakeEngines],
) -> None:
    client, manager, _ = api
    response = await client.post(LOAD_PATH, json={"model": "tiny"}, headers=AUTH)
    assert response.status_code == 202
    assert response.headers["location"] == STATUS_PATH
    assert response.json()["proxy_status"] == "loading"
    await manager.wait_status("ready", timeout=WAIT)
    ready = (await client.get(STATUS_PATH)).json()
    assert ready["proxy_status"] == "ready"
    assert ready["loaded_model"] == "tiny"
    assert ready["digest_kind"] == "manifest-sha256"
    assert len(ready["loaded_model_digest"]) == 64
    assert ready["proxy_progress"] == 1.0
    again = await client.post(LOAD_PATH, json={"model": "tiny"}, headers=AUTH)
    assert again.status_code == 200
    response = await client.post(UNLOAD_PATH, json={"model": "tiny"}, headers=AUTH)
    assert response.status_code == 202
    await manager.wait_status("idle", timeout=WAIT)
    response = await client.post(UNLOAD_PATH, json={"model": "tiny"}, headers=AUTH)
    assert response.status_code == 200


async def test_conflicting_load_is_409(
    api: tuple[httpx.AsyncClient, ModelManager, FakeEngines],
) -> None:
    import asyncio

    client, manager, engines = api
    engines.gate = asyncio.Event()
    assert (await client.post(LOAD_PATH, json={"model": "tiny"}, headers=AUTH)).status_code == 202
    for name in ("tiny", "other"):
        response = await client.post(LOAD_PATH, json={"model": name}, headers=AUTH)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "transition_in_progress"
    response = await client.post(UNLOAD_PATH, json={"model": "other"}, headers=AUTH)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "model_not_loaded"
    engines.gate.set()
    await manager.wait_status("ready", timeout=WAIT)


async def test_unknown_model_is_404(
    api: tuple[httpx.AsyncClient, ModelManager, FakeEngines],
) -> None:
    client, manager, _ = api
    for path in (LOAD_PATH, UNLOAD_PATH):
        response = await client.post(path, json={"model": "missing"}, headers=AUTH)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"
    assert manager.status().proxy_status == "idle"


BAD_NAMES = [
    "",
    ".",
    "..",
    "../tiny",
    "tiny/..",
    "a/b",
    "a\\b",
    "/etc",
    ".hidden",
    "tiny.",
    "a..b",
    "-rf",
    "x" * 129,
    "tïny",
    "tiny\u2024",
    "tiny\x00",
    "tiny ",
    " tiny",
    "tiny\n",
]


@pytest.mark.parametrize("path", [LOAD_PATH, UNLOAD_PATH])
@pytest.mark.parametrize("name", BAD_NAMES)
async def test_every_bad_name_is_400(
    api: tuple[httpx.AsyncClient, ModelManager, FakeEngines], path: str, name: str
) -> None:
    client, manager, engines = api
    response = await client.post(path, json={"model": name}, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_model_name"
    assert response.json()["error"]["message"] == MESSAGES["invalid_model_name"]  # no echo
    assert manager.status().generation == 0
    assert engines.made == []


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"not json", "application/json", 400, "invalid_json"),
        (b"\xff\xfe", "application/json", 400, "invalid_json"),
        (b"", "application/json", 400, "invalid_json"),
        (b'["tiny"]', "application/json", 400, "invalid_body"),
        (b'"tiny"', "application/json", 400, "invalid_body"),
        (b"{}", "application/json", 400, "invalid_body"),
        (b'{"model": null}', "application/json", 400, "invalid_body"),
        (b'{"model": 7}', "application/json", 400, "invalid_body"),
        (b'{"model": ["tiny"]}', "application/json", 400, "invalid_body"),
        (b'{"model": "tiny", "force": true}', "application/json", 400, "invalid_body"),
        (b'{"model": "tiny", "model": "other"}', "application/json", 400, "invalid_json"),
        (b'{"model": "tiny"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"model": "tiny"}', "", 415, "unsupported_media_type"),
        (b'{"model": "' + b"a" * 5000 + b'"}', "application/json", 413, "body_too_large"),
    ],
)
async def test_every_bad_body_is_refused(
    api: tuple[httpx.AsyncClient, ModelManager, FakeEngines],
    content: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    client, manager, engines = api
    headers = dict(AUTH)
    if content_type:
        headers["Content-Type"] = content_type
    for path in (LOAD_PATH, UNLOAD_PATH):
        response = await client.post(path, content=content, headers=headers)
        assert response.status_code == status
        assert response.json()["error"]["code"] == code
    assert manager.status().generation == 0
    assert engines.made == []


async def test_chunked_body_over_the_limit_is_413(
    api: tuple[httpx.AsyncClient, ModelManager, FakeEngines],
) -> None:
    client, _, _ = api

    async def body() -> AsyncIterator[bytes]:
        yield b'{"model": "'
        for _ in range(10):
            yield b"a" * 1000
        yield b'"}'

    headers = AUTH | {"Content-Type": "application/json"}
    response = await client.post(LOAD_PATH, content=body(), headers=headers)
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Bearer wrong"}, "invalid_token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "invalid_token"),
        ({"Authorization": f"Basic {TOKEN}"}, "invalid_token"),
        ({"Authorization": "Bearer "}, "invalid_token"),
        ({"Authorization": TOKEN}, "invalid_token"),
    ],
)
async def test_token_missing_or_wrong_is_401(
    api: tuple[httpx.AsyncClient, ModelManager, FakeEngines],
    headers: dict[str, str],
    code: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, manager, _ = api
    with caplog.at_level(logging.DEBUG):
        for path in (LOAD_PATH, UNLOAD_PATH):
            response = await client.post(path, json={"model": "tiny"}, headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == code
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert manager.status().generation == 0
    assert TOKEN not in caplog.text


async def test_the_token_is_checked_before_the_body(
    api: tuple[httpx.AsyncClient, ModelManager, FakeEngines],
) -> None:
    client, _, _ = api
    response = await client.post(LOAD_PATH, content=b"garbage")
    assert response.status_code == 401


async def test_without_a_token_control_is_closed(make_settings: SettingsFactory) -> None:
    async with serving(make_settings(), FakeEngines()) as (client, manager):
        response = await client.post(LOAD_PATH, json={"model": "tiny"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "load_token_not_configured"
        assert (await client.get(STATUS_PATH)).status_code == 200
        assert manager.status().generation == 0


async def test_dev_mode_without_a_token_is_open_and_warns(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(make_settings(insecure_dev_mode=True), FakeEngines()) as (client, manager):
        with caplog.at_level(logging.WARNING, logger="model_manager.endpoints"):
            response = await client.post(LOAD_PATH, json={"model": "tiny"})
        assert response.status_code == 202
        assert "INSECURE" in caplog.text
        await manager.wait_status("ready", timeout=WAIT)


async def test_dev_mode_with_a_token_still_requires_it(make_settings: SettingsFactory) -> None:
    settings = make_settings(insecure_dev_mode=True, load_token=TOKEN)
    async with serving(settings, FakeEngines()) as (client, _):
        response = await client.post(LOAD_PATH, json={"model": "tiny"})
        assert response.status_code == 401


async def test_wrong_method_is_405(
    api: tuple[httpx.AsyncClient, ModelManager, FakeEngines],
) -> None:
    client, _, _ = api
    assert (await client.get(LOAD_PATH, headers=AUTH)).status_code == 405
    assert (await client.post(STATUS_PATH, headers=AUTH)).status_code == 405


async def test_build_router_is_a_mountable_app(make_settings: SettingsFactory) -> None:
    settings = make_settings(load_token=TOKEN)
    manager = ModelManager(settings, engine_factory=FakeEngines())
    transport = httpx.ASGITransport(app=build_router(manager, settings, error_response))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        assert (await client.get(STATUS_PATH)).json()["proxy_status"] == "idle"


async def test_an_invalid_name_never_reaches_the_log(
    api: tuple[httpx.AsyncClient, ModelManager, FakeEngines], caplog: pytest.LogCaptureFixture
) -> None:
    client, _, _ = api
    forged = "x\nINFO forged log line"
    with caplog.at_level(logging.DEBUG):
        response = await client.post(LOAD_PATH, json={"model": forged}, headers=AUTH)
    assert response.status_code == 400
    assert "forged" not in caplog.text


async def test_a_bad_catalog_entry_is_named_to_the_token_holder_and_blocks_only_itself(
    api: tuple[httpx.AsyncClient, ModelManager, FakeEngines],
    models_dir: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, manager, _ = api
    (models_dir / "models.toml").write_text(
        '[models.typo]\npath = "tiny"\nmax_model_lenght = 4096\n'
        '[models.sneaky]\npath = "tiny"\nextra_args = ["--enable-log-requests"]\n'
    )
    with caplog.at_level(logging.INFO, logger="model_manager.endpoints"):
        response = await client.post(LOAD_PATH, json={"model": "typo"}, headers=AUTH)
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "catalog_error"
    assert error["message"].endswith(": [models.typo] unknown key 'max_model_lenght'")
    assert "[models.typo] unknown key 'max_model_lenght'" in caplog.text
    response = await client.post(LOAD_PATH, json={"model": "sneaky"}, headers=AUTH)
    assert (
        "[models.sneaky] extra_args: --enable-log-requests" in response.json()["error"]["message"]
    )
    # The healthy model (a directory without an entry) still loads.
    response = await client.post(LOAD_PATH, json={"model": "tiny"}, headers=AUTH)
    assert response.status_code == 202
    await manager.wait_status("ready", timeout=WAIT)
    # Without the token, nothing about the catalog is said.
    response = await client.post(LOAD_PATH, json={"model": "typo"})
    assert response.status_code == 401
    assert "typo" not in response.text
