"""The engine hop's errors, translated at this one boundary from OS and parser errors.

    EngineError                  the engine could not be reached or failed mid-response
    ├── EngineTimeoutError       connect, pool, write or read took longer than allowed
    └── EngineProtocolError      the engine's bytes are not a valid HTTP/1.1 response

Messages are fixed texts; they never carry request or response content.
"""

from __future__ import annotations

from enclave.errors import EnclaveError

__all__ = ["EngineError", "EngineProtocolError", "EngineTimeoutError"]


class EngineError(EnclaveError):
    """The engine could not be reached, or its response failed before it was complete."""


class EngineTimeoutError(EngineError):
    """A connect, pool, write or read deadline passed."""


class EngineProtocolError(EngineError):
    """The engine's response is not valid HTTP/1.1."""
