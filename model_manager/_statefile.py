"""The persisted lifecycle state: the last successfully loaded model, as JSON, written atomically.

File ``<state-dir>/model-state.json``::

    {"version": 1, "model": "<name>" | null, "digest_kind": ..., "digest": "<hex>" | null,
     "saved_at": <unix seconds>}

``model`` is set when a load reaches ``ready`` and cleared by an explicit unload; a crash
leaves it, so a restart of the service can restore it (``restore_on_boot``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from model_manager._files import atomic_write
from model_manager.catalog import validate_model_name
from model_manager.digests import ModelDigest
from model_manager.errors import InvalidModelNameError

__all__ = ["STATE_FILE", "StateFile"]

logger = logging.getLogger(__name__)

STATE_FILE = "model-state.json"
_MAX_BYTES = 1 << 16


class StateFile:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE

    def save(self, model: str | None, digest: ModelDigest | None) -> None:
        """Record the model (or none); a write failure is logged, never raised."""
        document = {
            "version": 1,
            "model": model,
            "digest_kind": None if digest is None else digest.kind,
            "digest": None if digest is None else digest.hex,
            "saved_at": int(time.time()),
        }
        try:
            atomic_write(self.path, json.dumps(document).encode())
        except OSError as exc:
            logger.warning("lifecycle state not saved: %s", type(exc).__name__)

    def load_model(self) -> str | None:
        """The recorded model name, or None (no file, unreadable, or invalid: logged)."""
        try:
            with self.path.open("rb") as handle:
                raw = handle.read(_MAX_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("lifecycle state unreadable: %s", type(exc).__name__)
            return None
        try:
            document = json.loads(raw)
            if not isinstance(document, dict) or document.get("version") != 1:
                raise ValueError("unknown state version")
            model = document.get("model")
            return None if model is None else validate_model_name(model)
        except (ValueError, InvalidModelNameError) as exc:
            logger.warning("lifecycle state invalid (%s); not restoring", type(exc).__name__)
            return None
