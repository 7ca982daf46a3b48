"""Supervision of the vLLM engine, the model catalog, dm-verity digests and status push.

This package may import ``attestation`` but never ``enclave``. Public modules: ``settings``,
``catalog``, ``digests``, ``engine``, ``supervisor``, ``status``, ``lifecycle``, ``endpoints``,
``push`` and ``errors`` (the development engine is ``enclave_dev.engine``, outside every
wheel); the most used names are re-exported here.
docs/model-lifecycle.md is the reference.
"""

from model_manager.catalog import Catalog, ModelSpec, validate_model_name
from model_manager.digests import Digester, ModelDigest, read_roothash
from model_manager.endpoints import build_router, model_routes
from model_manager.engine import EngineEndpoint
from model_manager.lifecycle import ModelManager, TransitionOutcome
from model_manager.push import StatusPusher
from model_manager.settings import ModelManagerSettings
from model_manager.status import ModelStatus

__all__ = [
    "Catalog",
    "Digester",
    "EngineEndpoint",
    "ModelDigest",
    "ModelManager",
    "ModelManagerSettings",
    "ModelSpec",
    "ModelStatus",
    "StatusPusher",
    "TransitionOutcome",
    "build_router",
    "model_routes",
    "read_roothash",
    "validate_model_name",
]
