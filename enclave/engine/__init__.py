"""The engine hop: the service's HTTP/1.1 client of the engine (vLLM) it supervises."""

from enclave.engine._client import EngineClient, EngineResponse, EngineTimeouts
from enclave.engine._types import EngineClientProtocol, EngineResponseProtocol
from enclave.engine.errors import EngineError, EngineProtocolError, EngineTimeoutError

__all__ = [
    "EngineClient",
    "EngineClientProtocol",
    "EngineError",
    "EngineProtocolError",
    "EngineResponse",
    "EngineResponseProtocol",
    "EngineTimeoutError",
    "EngineTimeouts",
]
