"""TDX quotes, quote providers, evidence claims, RA-TLS certificates and DCAP verification.

This package imports neither ``enclave`` nor ``model_manager``.
"""

__all__: list[str] = []
