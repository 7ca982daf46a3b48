"""Start the CDH/KBS stand-in (kbs_standin.py, a test fixture) and write key documents."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclave.keybroker import KeyGeneration, encode_key_document

STANDIN = Path(__file__).with_name("kbs_standin.py")
RESOURCE = "default/enclave-ohttp/keys"


def generation(key_ids: tuple[int, int], state: str) -> KeyGeneration:
    return KeyGeneration(key_ids, secrets.token_bytes(32), state)  # type: ignore[arg-type]


@dataclass
class StandIn:
    ports: list[int]
    resource_file: Path
    log: Path

    def url(self, guest: int) -> str:
        return f"http://127.0.0.1:{self.ports[guest]}"

    def publish(self, generations: list[KeyGeneration]) -> None:
        """Replace the resource atomically (the KBS serves the old or the new, never half)."""
        temporary = self.resource_file.with_suffix(".tmp")
        temporary.write_bytes(encode_key_document(generations))
        os.replace(temporary, self.resource_file)

    def requests(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


@contextlib.contextmanager
def kbs_standin(
    tmp: Path, guests: list[str], allowed: list[str], generations: list[KeyGeneration]
) -> Iterator[StandIn]:
    tmp.mkdir(parents=True, exist_ok=True)
    resource = tmp / "keys.json"
    log = tmp / "kbs.log"
    config = {
        "resource_path": RESOURCE,
        "resource_file": str(resource),
        "policy": {"mr_td": allowed},
        "guests": guests,
        "log": str(log),
    }
    (tmp / "kbs.json").write_text(json.dumps(config))
    process = subprocess.Popen(
        [sys.executable, str(STANDIN), str(tmp / "kbs.json")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        stand_in = StandIn(json.loads(process.stdout.readline()), resource, log)
        stand_in.publish(generations)
        yield stand_in
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
