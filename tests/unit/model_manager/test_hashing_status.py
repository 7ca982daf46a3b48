"""The status document says how many bytes a manifest digest has hashed, while it hashes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from model_manager.catalog import ModelSpec
from model_manager.digests import ModelDigest
from model_manager.lifecycle import ModelManager

from ._fakes import FakeEngines
from .conftest import SettingsFactory

WAIT = 10.0


class SlowDigester:
    def __init__(self) -> None:
        self.halfway = asyncio.Event()
        self.resume = asyncio.Event()

    async def digest(
        self,
        spec: ModelSpec,
        progress: Callable[[float], None] | None = None,
        *,
        on_bytes: Callable[[int, int], None] | None = None,
    ) -> ModelDigest:
        assert on_bytes is not None
        on_bytes(0, 4000)
        on_bytes(2000, 4000)
        self.halfway.set()
        await self.resume.wait()
        on_bytes(4000, 4000)
        return ModelDigest("manifest-sha256", b"\x11" * 32)


async def test_hashing_bytes_while_hashing_and_none_after(make_settings: SettingsFactory) -> None:
    digester = SlowDigester()
    manager = ModelManager(make_settings(), digester=digester, engine_factory=FakeEngines())  # type: ignore[arg-type]
    await manager.start()
    try:
        assert manager.status().to_document()["hashing"] is None
        manager.load("tiny")
        async with asyncio.timeout(WAIT):
            await digester.halfway.wait()
        assert manager.status().to_document()["hashing"] == {
            "done_bytes": 2000,
            "total_bytes": 4000,
        }
        digester.resume.set()
        ready = await manager.wait_status("ready", timeout=WAIT)
        assert ready.hashing is None
    finally:
        await manager.aclose()
