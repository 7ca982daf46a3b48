"""The service's HTTP routes (the OHTTP gateway and the attestation report live elsewhere).

- :mod:`enclave.routes.health`: ``/health``, ``/ready``;
- :mod:`enclave.routes.models`: ``/v1/models``;
- :mod:`enclave.routes.inference`: ``/v1/chat/completions``, ``/v1/completions``,
  ``/v1/embeddings`` passed through to the engine;
- errors: :class:`ApiError` with a stable code, rendered in OpenAI's error shape.
"""

from enclave.routes._errors import ERRORS, ApiError, error_document, error_response
from enclave.routes.health import health_routes, readiness_reason
from enclave.routes.inference import INFERENCE_PATHS, inference_routes
from enclave.routes.models import model_list_routes

__all__ = [
    "ERRORS",
    "INFERENCE_PATHS",
    "ApiError",
    "error_document",
    "error_response",
    "health_routes",
    "inference_routes",
    "model_list_routes",
    "readiness_reason",
]
