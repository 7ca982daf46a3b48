"""The root of the ``enclave`` package's exceptions.

Every exception this package defines for its callers derives from :class:`EnclaveError`, so
``except EnclaveError`` catches any of them and nothing else; each keeps its other bases
(``AttestationFailed`` is still an ``httpx.ConnectError``, ``SettingsError`` a
``ValueError``)::

    EnclaveError
    ├── enclave.protocol.errors.ProtocolError     the sans-IO protocol core (and its
    │                                             subclasses: decryption, framing, keys, bodies)
    ├── enclave.client.errors.ClientError         the client library and the local proxy
    ├── enclave.engine.errors.EngineError         a request to the engine failed
    ├── enclave.routes._errors.ApiError           a refusal with a stable API error code
    ├── enclave.settings.SettingsError            settings that cannot be used
    ├── enclave.gateway.ReplayCacheFullError      the replay cache is full
    ├── enclave.gateway.ReplayStoreUnavailableError   the shared replay store did not answer
    ├── enclave.keybroker.KeyUnavailableError     the key broker released no OHTTP key
    └── enclave.development.DevelopmentMissingError   a development part (enclave_dev) asked
                                                  for in a production install

The attestation package has its own root (``attestation.errors.AttestationError``) and the
model manager its own (``model_manager.errors.ModelManagerError``): neither may import this
package (docs/design.md, "House rules").
"""

from __future__ import annotations

__all__ = ["EnclaveError"]


class EnclaveError(Exception):
    """Root of every exception the enclave package defines for its callers."""
