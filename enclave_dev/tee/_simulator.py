"""The simulator: a simulated platform that signs TDX quotes the real dcap-qvl accepts."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import dcap_qvl
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.errors import QuoteProviderError
from enclave_dev.tee._collateral import (
    DEFAULT_OUT_OF_DATE_ADVISORIES,
    CollateralDocuments,
    TcbStatus,
    build_collateral,
)
from enclave_dev.tee._measurements import SimulatedMeasurements
from enclave_dev.tee._pki import PlatformTcb, SimulatedPki, generate_pki
from enclave_dev.tee._quote import QuotingEnclave, TdxModule, build_quote

__all__ = ["SIMULATED_FMSPC", "Simulator"]

logger = logging.getLogger(__name__)

#: FMSPC of the simulated platform (made up; an offline collateral folder keys on it).
SIMULATED_FMSPC = bytes.fromhex("5131AA000000")
_MIN_NOW = 2 * 86_400  # the PKI is backdated by a day; keep its dates after the epoch
_MAX_VALIDITY_DAYS = 3650  # certificates live ten years; collateral must not outlive them
_COLLATERAL_BACKDATE = dt.timedelta(hours=1)
#: CRLs outlive the TCB info by this much, so that ``nextUpdate`` of the TCB info and QE
#: identity (inclusive in dcap-qvl) is the one end of the window; CRL expiry is exclusive.
_CRL_OVERLAP = dt.timedelta(hours=1)


def _digest(label: str, size: int) -> bytes:
    return hashlib.sha384(f"enclave-simulator/{label}".encode()).digest()[:size]


_CPU_SVN = bytes([3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0])
_PLATFORM = PlatformTcb(
    cpu_svn=_CPU_SVN,
    pce_svn=11,
    pce_id=bytes(2),
    fmspc=SIMULATED_FMSPC,
    ppid=_digest("ppid", 16),
    platform_instance_id=_digest("platform-instance-id", 16),
)
_MODULE = TdxModule(
    tee_tcb_svn=bytes([5, 1, 2]) + bytes(13),
    mr_seam=_digest("mrseam", 48),
)
_QE = QuotingEnclave(
    cpu_svn=_CPU_SVN,
    attributes=bytes([0x11]) + bytes(7) + bytes([0xE7]) + bytes(7),
    mr_enclave=_digest("td-qe/mrenclave", 32),
    mr_signer=_digest("td-qe/mrsigner", 32),
    isv_prod_id=2,
    isv_svn=4,
    header_user_data=_digest("td-qe/qe-id", 16) + bytes(4),
)


@dataclass(frozen=True)
class _Platform:
    """What stays fixed across ``with_measurements``: the PKI, keys and collateral."""

    pki: SimulatedPki
    attestation_key: ec.EllipticCurvePrivateKey = field(repr=False)
    collateral: CollateralDocuments
    now: int
    next_update: int


class Simulator:
    """A simulated TDX platform: an Intel-like PKI (SIMULATED root), a quoting enclave and
    matching collateral, all generated in memory.

    Its quotes verify with ``dcap_qvl.verify_with_root_ca(quote, sim.collateral(),
    sim.root_ca_der, sim.now)``; with Intel's root (``dcap_qvl.verify``) they never do.
    Never trust ``root_ca_der`` for real evidence. Build one with ``Simulator.create``;
    ``with_measurements`` derives another TD on the same platform.
    """

    __slots__ = ("_platform", "measurements")

    def __init__(self, platform: _Platform, measurements: SimulatedMeasurements) -> None:
        self._platform = platform
        self.measurements = measurements

    @classmethod
    def create(
        cls,
        *,
        measurements: SimulatedMeasurements | None = None,
        tcb: TcbStatus = "UpToDate",
        now: int | None = None,
        validity_days: int = 30,
        advisory_ids: Sequence[str] | None = None,
    ) -> Simulator:
        """A fresh simulated platform whose collateral is valid from an hour before ``now``
        (default: the current time) for ``validity_days``.

        ``tcb`` picks the TCB status dcap-qvl will report. ``advisory_ids`` go on the TCB
        level the platform matches; by default none for ``UpToDate`` and
        ``("SIM-SA-00001",)`` for ``OutOfDate``.
        """
        if tcb not in ("UpToDate", "OutOfDate"):
            raise ValueError(f"tcb must be 'UpToDate' or 'OutOfDate', not {tcb!r}")
        if isinstance(validity_days, bool) or not 1 <= validity_days <= _MAX_VALIDITY_DAYS:
            raise ValueError(f"validity_days must be between 1 and {_MAX_VALIDITY_DAYS}")
        moment = int(time.time()) if now is None else now
        if isinstance(moment, bool) or not isinstance(moment, int) or moment < _MIN_NOW:
            raise ValueError("now must be a Unix time in seconds")
        if advisory_ids is None:
            advisories: tuple[str, ...] = (
                () if tcb == "UpToDate" else DEFAULT_OUT_OF_DATE_ADVISORIES
            )
        elif isinstance(advisory_ids, str):
            raise ValueError("advisory_ids must be a sequence of strings, not a string")
        else:
            advisories = tuple(advisory_ids)

        at = dt.datetime.fromtimestamp(moment, dt.UTC)
        until = at + dt.timedelta(days=validity_days)
        try:
            pki = generate_pki(_PLATFORM, now=at, crl_until=until + _CRL_OVERLAP)
            collateral = build_collateral(
                pki=pki,
                tcb=_PLATFORM,
                module=_MODULE,
                qe=_QE,
                status=tcb,
                advisories=advisories,
                issued=at - _COLLATERAL_BACKDATE,
                next_update=until,
            )
            attestation_key = ec.generate_private_key(ec.SECP256R1())
        except UnsupportedAlgorithm as exc:
            raise QuoteProviderError("this cryptography build cannot simulate a PKI") from exc
        logger.info(
            "created a SIMULATED TDX platform (tcb=%s, valid %d days from %d); its root is "
            "not Intel's and must never be trusted for real evidence",
            tcb,
            validity_days,
            moment,
        )
        platform = _Platform(
            pki=pki,
            attestation_key=attestation_key,
            collateral=collateral,
            now=moment,
            next_update=int(until.timestamp()),
        )
        return cls(platform, measurements or SimulatedMeasurements())

    def with_measurements(self, measurements: SimulatedMeasurements) -> Simulator:
        """The same platform (PKI, keys, collateral) running a TD with other measurements."""
        if not isinstance(measurements, SimulatedMeasurements):
            raise ValueError("measurements must be SimulatedMeasurements")
        return Simulator(self._platform, measurements)

    def quote(self, report_data: bytes) -> bytes:
        """A signed TDX v4 quote over this TD's measurements and the caller's 64 bytes."""
        if not isinstance(report_data, bytes | bytearray | memoryview):
            raise ValueError("report_data must be bytes")
        data = bytes(report_data)
        if len(data) != 64:
            raise ValueError(f"report_data must be 64 bytes, not {len(data)}")
        return build_quote(
            measurements=self.measurements,
            report_data=data,
            module=_MODULE,
            qe=_QE,
            attestation_key=self._platform.attestation_key,
            pck_key=self._platform.pki.pck_key,
            pck_chain_pem=self._platform.pki.pck_chain_pem,
        )

    def collateral(self) -> dcap_qvl.QuoteCollateralV3:
        """Collateral for this platform's quotes, as dcap-qvl takes it."""
        return self._platform.collateral.to_dcap()

    def collateral_json(self) -> str:
        """The same collateral in the layout of ``tests/vectors/tdx/*_collateral.json``."""
        return self._platform.collateral.to_json()

    @property
    def root_ca_der(self) -> bytes:
        """The SIMULATED root certificate (DER): pass it explicitly, never trust it."""
        return self._platform.pki.root_der

    @property
    def root_ca_pem(self) -> bytes:
        return self._platform.pki.root_pem

    @property
    def fmspc(self) -> bytes:
        return _PLATFORM.fmspc

    @property
    def now(self) -> int:
        """The Unix time the platform was created for: inside the collateral's window."""
        return self._platform.now

    @property
    def collateral_next_update(self) -> int:
        """Unix time of the collateral's ``nextUpdate``; verification fails after it."""
        return self._platform.next_update

    def __repr__(self) -> str:
        return f"Simulator(now={self.now}, fmspc={self.fmspc.hex().upper()}, SIMULATED)"
