"""A whole service on this machine, for the demo, tests and benchmarks: the SIMULATED TEE, the
development engine (not a language model), loopback only, every directory under one root.

::

    settings = local_settings(root, load_token=token, engine_flags=["--dev-load-seconds", "1"])
    async with serve_locally(settings) as server:
        url = f"https://127.0.0.1:{server.bound_port}"
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from enclave.server import EnclaveServer
from enclave.settings import EnclaveSettings, load_settings
from enclave_dev.tee import Simulator

__all__ = ["DEV_ENGINE", "local_settings", "serve_locally"]

#: The development engine as an ``engine_command``; its ``--dev-*`` flags may follow.
#: ``-P``: nothing in the working directory can shadow a package (PYTHONPATH still counts).
DEV_ENGINE: tuple[str, ...] = (sys.executable, "-P", "-m", "enclave_dev.engine")


def local_settings(
    root: Path,
    *,
    load_token: str,
    engine_flags: Sequence[str] = (),
    **overrides: object,
) -> EnclaveSettings:
    """Settings for a loopback service on a free port with the simulated TEE; ``overrides``
    are further settings by field name."""
    return load_settings(
        {
            "host": "127.0.0.1",
            "port": 0,
            "tee": "simulated",
            "insecure_allow_simulated_tee": True,
            "models_dir": str(root / "models"),
            "roothash_dir": str(root / "roothash"),
            "state_dir": str(root / "state"),
            "run_dir": str(root / "run"),
            "engine_command": (*DEV_ENGINE, *engine_flags),
            "insecure_dev_engine": True,
            "load_token": load_token,
            "shutdown_grace_seconds": 10,
            **overrides,
        }
    )


@contextlib.asynccontextmanager
async def serve_locally(
    settings: EnclaveSettings,
    *,
    simulator: Simulator | None = None,
    start_timeout: float = 60.0,
) -> AsyncIterator[EnclaveServer]:
    """Run the service in this event loop until the block ends, then shut it down (the
    engine stopped, every process reaped)."""
    server = EnclaveServer(settings, simulator=simulator)
    serving = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + start_timeout
        while server.bound_port is None:
            if serving.done():
                serving.result()  # raises what stopped it
                raise RuntimeError("the service stopped before it listened")
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not start in time")
            await asyncio.sleep(0.05)
        yield server
    finally:
        server.request_shutdown()
        await asyncio.wait_for(serving, 60)
