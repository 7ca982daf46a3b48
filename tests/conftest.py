"""Session-wide test settings.

``data_plane_workers`` defaults to one worker per core less one: on a machine with more cores
than this project's 2-core builders, every ``enclave serve`` a test starts (in-process or as a
process) would otherwise run as an owner and several workers, which only the workers' own tests
(tests/integration/server/test_workers.py, ``--data-plane-workers 2``) mean to exercise. The
environment variable is the setting's; a flag given by a test still wins, and settings tests
that clear ``ENCLAVE_*`` see the real default.
"""

from __future__ import annotations

import os

os.environ.setdefault("ENCLAVE_DATA_PLANE_WORKERS", "1")
