"""The enclave-side service for confidential LLM inference.

Subpackages:

- ``enclave.protocol``: the sans-IO protocol core shared by server and client (HPKE, X-Wing,
  Binary HTTP, Oblivious HTTP and its chunked form).
- ``enclave.cli``: the ``enclave`` command.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
