"""``python -m enclave.workers --channel-fd N``: one data-plane worker, started by its owner."""

from __future__ import annotations

import argparse
import asyncio

from enclave.cli._serve import _loop_factory
from enclave.workers._worker import run_worker


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m enclave.workers",
        description="a data-plane worker of enclave serve (started by its owner process only)",
    )
    parser.add_argument("--channel-fd", type=int, required=True, help="the owner's socketpair end")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(run_worker(args.channel_fd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
