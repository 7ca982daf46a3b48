"""Quote providers behind one Protocol: configfs-tsm, the dstack guest agent and the CoCo
attestation agent.

``detect_provider("auto")`` looks for, in this order, a usable configfs-tsm report directory
and the dstack guest agent's socket, and raises ``QuoteProviderUnavailableError`` when neither
is there. It never falls back to the simulator, which is not here at all: the simulated
provider is in the development package (``enclave_dev.tee``, in no wheel), and the service
makes it through ``enclave.development.load("insecure_allow_simulated_tee")``.

``"coco"`` (the Confidential Containers attestation agent's REST API on loopback) is explicit
only: nothing on the file system tells a container that it runs in a CoCo pod, only a TCP
port that any local process could also listen on, and probing it would cost every start a
connection attempt; docs/attestation-providers.md says more.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from attestation.errors import QuoteProviderUnavailableError
from attestation.providers._coco import DEFAULT_COCO_AA_URL, CocoAttestationAgentProvider
from attestation.providers._configfs_tsm import (
    DEFAULT_TSM_REPORT_ROOT,
    TDX_TSM_PROVIDER,
    ConfigfsTsmProvider,
    OsTsmFileOps,
    TsmFileOps,
    tsm_report_root_usable,
)
from attestation.providers._dstack import DEFAULT_DSTACK_SOCKET, DstackProvider
from attestation.providers._types import (
    REPORT_DATA_SIZE,
    ProviderName,
    QuoteProvider,
    QuoteResult,
)

__all__ = [
    "DEFAULT_COCO_AA_URL",
    "DEFAULT_DSTACK_SOCKET",
    "DEFAULT_TSM_REPORT_ROOT",
    "REPORT_DATA_SIZE",
    "TDX_TSM_PROVIDER",
    "CocoAttestationAgentProvider",
    "ConfigfsTsmProvider",
    "DstackProvider",
    "OsTsmFileOps",
    "ProviderKind",
    "ProviderName",
    "QuoteProvider",
    "QuoteResult",
    "TsmFileOps",
    "detect_provider",
]

logger = logging.getLogger(__name__)

ProviderKind = Literal["auto", "configfs-tsm", "dstack", "coco", "simulated"]

DEFAULT_TIMEOUT_S = 30.0


def detect_provider(
    kind: ProviderKind = "auto",
    *,
    tsm_root: Path = DEFAULT_TSM_REPORT_ROOT,
    dstack_socket: Path = DEFAULT_DSTACK_SOCKET,
    coco_url: str = DEFAULT_COCO_AA_URL,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> QuoteProvider:
    """The provider of ``kind``; ``"auto"``: configfs-tsm, then dstack, never coco or simulated.

    ``coco`` is made without contacting the agent (``coco_url``, loopback only); an agent that
    is not there shows as ``QuoteProviderUnavailableError`` at the first quote. An explicit
    ``configfs-tsm`` or ``dstack`` that is not present on this machine raises
    ``QuoteProviderUnavailableError``. ``simulated`` is refused with ``ValueError``: that
    provider is made by the development package (``enclave_dev.tee.SimulatedQuoteProvider``).
    """
    if kind == "simulated":
        raise ValueError(
            "the simulated quote provider is not a product provider: it is made by the "
            "development package (enclave_dev.tee.SimulatedQuoteProvider)"
        )
    if kind == "coco":
        logger.info("quote provider: CoCo attestation agent at %s", coco_url)
        return CocoAttestationAgentProvider(coco_url, timeout=timeout)
    if kind in ("auto", "configfs-tsm"):
        if tsm_report_root_usable(tsm_root):
            logger.info("quote provider: configfs-tsm at %s", tsm_root)
            return ConfigfsTsmProvider(tsm_root, timeout=timeout)
        if kind == "configfs-tsm":
            raise QuoteProviderUnavailableError(f"no usable configfs-tsm directory at {tsm_root}")
    if kind in ("auto", "dstack"):
        if dstack_socket.is_socket():
            logger.info("quote provider: dstack guest agent at %s", dstack_socket)
            return DstackProvider(dstack_socket, timeout=timeout)
        if kind == "dstack":
            raise QuoteProviderUnavailableError(f"no dstack agent socket at {dstack_socket}")
    if kind != "auto":
        raise ValueError(f"unknown quote provider kind {kind!r}")
    raise QuoteProviderUnavailableError(
        f"no TEE quote provider found (configfs-tsm at {tsm_root}, dstack at {dstack_socket}); "
        "the simulated provider must be chosen explicitly"
    )
