"""Data-plane workers (``data_plane_workers`` > 1): N processes serve the port, one owns the rest.

:mod:`enclave.workers._owner` is the owner's side (start, feed, restart the workers; answer
their replay admissions and forwarded management requests; one metrics exposition),
:mod:`enclave.workers._worker` a worker's, :mod:`enclave.workers._channel` the socketpair
between them. docs/service.md ("More than one core") describes the split.
"""

from __future__ import annotations

from enclave.workers._owner import OwnerReplaySet, WorkerPool

__all__ = ["OwnerReplaySet", "WorkerPool"]
