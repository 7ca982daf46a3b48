"""Supervision of the vLLM engine, the model catalog, dm-verity digests and status push.

This package may import ``attestation`` but never ``enclave``.
"""

__all__: list[str] = []
