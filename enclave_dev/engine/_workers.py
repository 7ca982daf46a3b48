"""Child processes standing in for vLLM's EngineCore / worker processes.

They stay in the engine's process group (so a supervisor that signals the group reaps them)
and idle until signalled. If the engine dies without them (``os._exit``, SIGKILL of the parent
only) they linger as orphans for ``ORPHAN_GRACE_SECONDS`` before exiting on their own, so a
supervisor that forgets the group leaves visible orphans while CI still ends up clean.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from enclave_dev.engine._logs import LOGGER_NAME, vlog

__all__ = ["ORPHAN_GRACE_SECONDS", "WorkerGroup", "worker_main"]

ORPHAN_GRACE_SECONDS = 30.0
_POLL_SECONDS = 0.2
_TERMINATE_WAIT_SECONDS = 2.0

logger = logging.getLogger(LOGGER_NAME)


class WorkerGroup:
    """The engine's child processes."""

    def __init__(self, processes: Sequence[subprocess.Popen[bytes]]) -> None:
        self._processes = list(processes)

    @classmethod
    def spawn(cls, count: int) -> WorkerGroup:
        # -P: the working directory cannot shadow a package (PYTHONPATH still counts).
        argv = [sys.executable, "-P", "-m", "enclave_dev.engine._workers", str(os.getpid())]
        processes = [
            # argv is this interpreter and this package's module: no untrusted input.
            subprocess.Popen(argv, stdin=subprocess.DEVNULL, close_fds=True)  # noqa: S603
            for _ in range(count)
        ]
        return cls(processes)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    def first_dead(self) -> tuple[int, int] | None:
        """``(rank, returncode)`` of a worker that has exited, if any."""
        for rank, process in enumerate(self._processes):
            code = process.poll()
            if code is not None:
                return rank, code
        return None

    def terminate(self) -> None:
        """SIGTERM every worker, wait briefly, SIGKILL the rest, reap them all."""
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + _TERMINATE_WAIT_SECONDS
        for process in self._processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        vlog(logger, logging.INFO, "core_client.py:543", "Shut down %d worker(s)", len(self.pids))


def worker_main(argv: Sequence[str]) -> int:
    """Idle until signalled; exit after the orphan grace once the parent is gone."""
    parent = int(argv[0])
    orphaned_at: float | None = None
    try:
        while True:
            time.sleep(_POLL_SECONDS)
            if os.getppid() == parent:
                continue
            orphaned_at = orphaned_at if orphaned_at is not None else time.monotonic()
            if time.monotonic() - orphaned_at >= ORPHAN_GRACE_SECONDS:
                return 0
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
