"""The one loader for test vectors (see README.md here for where each file came from)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS_DIR = Path(__file__).resolve().parent


def vector_path(relative: str) -> Path:
    path = VECTORS_DIR / relative
    if not path.is_file():
        raise FileNotFoundError(f"no test vector {relative!r} under {VECTORS_DIR}")
    return path


def load_json(relative: str) -> Any:
    return json.loads(vector_path(relative).read_text())


def load_bytes(relative: str) -> bytes:
    return vector_path(relative).read_bytes()
