"""Errors of the model manager.

The hierarchy::

    ModelManagerError             root of everything raised by model_manager
    ├── InvalidModelNameError     a name that fails validation (checked before any file access)
    ├── UnknownModelError         a valid name with no model under the models directory
    ├── CatalogError              models.toml is invalid
    ├── DigestError               the digest could not be read or computed
    │   └── DigestMismatchError   the live dm-verity device disagrees with the root-hash file
    ├── TransitionConflictError   another transition is in progress
    └── EngineError               the engine failed to start, exited, or timed out
"""

from __future__ import annotations

__all__ = [
    "CatalogError",
    "DigestError",
    "DigestMismatchError",
    "EngineError",
    "InvalidModelNameError",
    "ModelManagerError",
    "TransitionConflictError",
    "UnknownModelError",
]


class ModelManagerError(Exception):
    """Root of every error raised by the model manager."""


class InvalidModelNameError(ModelManagerError):
    """The model name fails validation."""


class UnknownModelError(ModelManagerError):
    """No model of that name exists."""


class CatalogError(ModelManagerError):
    """The catalog (models.toml) is invalid."""


class DigestError(ModelManagerError):
    """A model digest could not be read or computed."""


class DigestMismatchError(DigestError):
    """The live dm-verity root hash differs from the root-hash file."""


class TransitionConflictError(ModelManagerError):
    """A conflicting lifecycle transition is in progress."""


class EngineError(ModelManagerError):
    """The engine failed to start, exited unexpectedly, or timed out."""
