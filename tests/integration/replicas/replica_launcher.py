"""TEST FIXTURE: start several ``enclave serve`` processes on ONE simulated TDX platform.

Real replicas on TDX machines share Intel's root of trust: one verifier (one root, one policy
pinning measurements) verifies every one of them. Each ``enclave serve --tee simulated``
creates a simulated platform of its own (a fresh simulated root), so separate processes could
not be verified with one root. This launcher creates one platform, then forks one child per
replica; each child runs the real entry point, ``enclave.cli.main(["serve", ...])``, with
``Simulator.create`` answering that platform (with the replica's own measurements, so a
replica can be given measurements that no policy pins). Nothing else is changed.

Usage: ``python replica_launcher.py CONFIG.json``; CONFIG::

    {"bundle_dir": "/tmp/x/platform",
     "replicas": [{"argv": ["--port", "1234", ...], "env": {"ENCLAVE_X": "y"},
                   "log": "/tmp/x/r0.log", "mrtd": "<hex>" | null}, ...]}

Writes the platform's root (``root_ca.der``) and collateral (``collateral.json``) into
``bundle_dir``, prints ``{"pids": [...]}`` on stdout, and on SIGTERM stops every replica with
SIGTERM (each stops its engine) and waits for them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any


def _child(platform: Any, replica: dict[str, Any]) -> None:
    from enclave.cli import main
    from enclave_dev.tee import SimulatedMeasurements, Simulator

    log = os.open(replica["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.environ.update(replica.get("env", {}))
    simulator = platform
    if replica.get("mrtd"):
        simulator = platform.with_measurements(
            SimulatedMeasurements(mrtd=bytes.fromhex(replica["mrtd"]))
        )

    def shared_platform(cls: type[Simulator], **_: object) -> Simulator:
        return simulator

    Simulator.create = classmethod(shared_platform)  # type: ignore[method-assign, assignment]
    code = main(["serve", *replica["argv"]])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    # Imported once here, before forking: the replicas start without importing it all again.
    import enclave.cli
    import enclave.server  # noqa: F401
    from enclave_dev.tee import Simulator

    platform = Simulator.create()
    bundle = Path(config["bundle_dir"])
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "root_ca.der").write_bytes(platform.root_ca_der)
    (bundle / "collateral.json").write_text(platform.collateral_json())
    pids = []
    for replica in config["replicas"]:
        pid = os.fork()
        if pid == 0:
            try:
                _child(platform, replica)
            finally:
                os._exit(70)
        pids.append(pid)

    def stop(signum: int, frame: FrameType | None) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 40
        for pid in pids:
            while time.monotonic() < deadline:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(json.dumps({"pids": pids}), flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
