"""``GET /v1/models``: OpenAI's model list, holding the ready model (or nothing).

Each entry adds ``digest`` (lowercase hex), ``digest_kind`` (``dm-verity`` or
``manifest-sha256``), ``insecure`` (the service's ``insecure_*`` settings in effect, e.g.
``insecure_dev_engine``: the model is served by the development engine, which is not a language
model) and ``confidential`` (true only when ``insecure`` is empty) to OpenAI's ``id``,
``object``, ``created`` and ``owned_by``. ``created`` is when the model became ready.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from enclave.service import Service

__all__ = ["MODELS_PATH", "OWNED_BY", "model_list_routes"]

MODELS_PATH = "/v1/models"
OWNED_BY = "enclave"


def model_list_routes(service: Service) -> list[BaseRoute]:
    async def models(_: Request) -> Response:
        status = service.ready_model()
        data: list[dict[str, object]] = []
        if status is not None:
            data.append(
                {
                    "id": status.loaded_model,
                    "object": "model",
                    "created": int(status.since),
                    "owned_by": OWNED_BY,
                    "digest": None if status.digest is None else status.digest.hex,
                    "digest_kind": status.digest_kind,
                    "insecure": list(service.insecure),
                    "confidential": not service.insecure,
                }
            )
        return JSONResponse({"object": "list", "data": data}, headers={"Cache-Control": "no-store"})

    return [Route(MODELS_PATH, models, methods=["GET"])]
