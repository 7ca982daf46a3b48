"""Stable error codes and fixed client-facing messages for the package's errors.

Exception text never goes to a client; these messages do (status documents, HTTP bodies).
"""

from __future__ import annotations

from model_manager.errors import (
    CatalogError,
    DigestError,
    DigestMismatchError,
    EngineError,
    InvalidModelNameError,
    ModelManagerError,
    TransitionConflictError,
    UnknownModelError,
)

__all__ = ["describe", "error_code"]

# Most specific first.
_CODES: tuple[tuple[type[ModelManagerError], str], ...] = (
    (InvalidModelNameError, "invalid_model_name"),
    (UnknownModelError, "model_not_found"),
    (CatalogError, "catalog_error"),
    (DigestMismatchError, "digest_mismatch"),
    (DigestError, "digest_error"),
    (TransitionConflictError, "transition_in_progress"),
    (EngineError, "engine_error"),
)

MESSAGES = {
    "invalid_model_name": (
        "invalid model name: 1 to 128 ASCII letters, digits, '.', '_' or '-', starting with "
        "a letter or digit, without '..' and not ending in '.'"
    ),
    "model_not_found": "no model of that name",
    "catalog_error": "the model catalog is invalid or refers outside the models directory",
    "digest_mismatch": "the live dm-verity root hash differs from the model's root-hash file",
    "digest_error": "the model digest could not be read or computed",
    "transition_in_progress": "another transition is in progress; poll /v1/models/status",
    "model_not_loaded": "that model is not the one loaded",
    "engine_exited": "the engine exited while loading",
    "engine_load_timeout": "the engine did not become healthy within the load timeout",
    "engine_error": "the engine failed",
    "model_manager_error": "the model manager failed",
}


def error_code(exc: ModelManagerError) -> str:
    """A subclass's own ``code`` attribute wins; otherwise the code of its nearest base."""
    own = getattr(type(exc), "code", None)
    if isinstance(own, str):
        return own
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return "model_manager_error"


def describe(exc: ModelManagerError) -> tuple[str, str]:
    """``(code, message)`` for a client; the message is fixed per code, plus an exit code and
    the engine's own failure reason (chosen under the rule of :mod:`model_manager._reason`)."""
    code = error_code(exc)
    message = MESSAGES.get(code, MESSAGES["model_manager_error"])
    returncode = getattr(exc, "returncode", None)
    if isinstance(returncode, int):
        message = f"{message} (exit code {returncode})"
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        message = f"{message}: {reason}"
    return code, message
