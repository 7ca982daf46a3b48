"""Collateral for simulated quotes: TDX TCB info, TD QE identity, issuer chains and CRLs.

The JSON documents follow Intel's PCS v4 formats (TCB info version 3 with ``id`` "TDX";
enclave identity version 2 with ``id`` "TD_QE"). Each is signed by the TCB-signing key over
its exact JSON text; the signature is raw ECDSA P-256 r || s, carried as hex in the JSON
collateral file and as bytes in ``dcap_qvl.QuoteCollateralV3``, as dcap-qvl expects.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import dcap_qvl

from enclave_dev.tee._pki import PlatformTcb, SimulatedPki
from enclave_dev.tee._quote import QuotingEnclave, TdxModule, raw_signature

__all__ = ["CollateralDocuments", "TcbStatus", "build_collateral", "rfc3339"]

TcbStatus = Literal["UpToDate", "OutOfDate"]

TCB_EVALUATION_DATA_NUMBER = 17
#: Advisory IDs put on out-of-date TCB levels unless the caller names others. They are
#: made up (no such Intel advisory exists) so that nobody mistakes them for real ones.
DEFAULT_OUT_OF_DATE_ADVISORIES = ("SIM-SA-00001",)
_QE_ATTRIBUTES_MASK = "FBFFFFFFFFFFFFFF0000000000000000"


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class CollateralDocuments:
    """Everything ``dcap_qvl.QuoteCollateralV3`` holds, in its own field names."""

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    tcb_info: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes

    def to_dcap(self) -> dcap_qvl.QuoteCollateralV3:
        return dcap_qvl.QuoteCollateralV3(
            self.pck_crl_issuer_chain,
            self.root_ca_crl,
            self.pck_crl,
            self.tcb_info_issuer_chain,
            self.tcb_info,
            self.tcb_info_signature,
            self.qe_identity_issuer_chain,
            self.qe_identity,
            self.qe_identity_signature,
        )

    def to_json(self) -> str:
        """The layout of ``tests/vectors/tdx/*_collateral.json``: binary fields as hex."""
        document = {
            "pck_crl_issuer_chain": self.pck_crl_issuer_chain,
            "root_ca_crl": self.root_ca_crl.hex(),
            "pck_crl": self.pck_crl.hex(),
            "tcb_info_issuer_chain": self.tcb_info_issuer_chain,
            "tcb_info": self.tcb_info,
            "tcb_info_signature": self.tcb_info_signature.hex(),
            "qe_identity_issuer_chain": self.qe_identity_issuer_chain,
            "qe_identity": self.qe_identity,
            "qe_identity_signature": self.qe_identity_signature.hex(),
        }
        return json.dumps(document, indent=2) + "\n"


def _components(svns: bytes) -> list[dict[str, int]]:
    return [{"svn": svn} for svn in svns]


def _level(
    *,
    cpu_svn: bytes,
    pce_svn: int,
    tee_tcb_svn: bytes,
    status: str,
    date: dt.datetime,
    advisories: Sequence[str],
) -> dict[str, object]:
    level: dict[str, object] = {
        "tcb": {
            "sgxtcbcomponents": _components(cpu_svn),
            "pcesvn": pce_svn,
            "tdxtcbcomponents": _components(tee_tcb_svn),
        },
        "tcbDate": rfc3339(date),
        "tcbStatus": status,
    }
    if advisories:
        level["advisoryIDs"] = list(advisories)
    return level


def _bumped(svns: bytes, index: int) -> bytes:
    out = bytearray(svns)
    out[index] = min(out[index] + 1, 0xFF)
    return bytes(out)


def _lowered(svns: bytes) -> bytes:
    return bytes(max(svn - 1, 0) for svn in svns)


def _tcb_info(
    *,
    tcb: PlatformTcb,
    module: TdxModule,
    status: TcbStatus,
    advisories: Sequence[str],
    issued: dt.datetime,
    next_update: dt.datetime,
) -> dict[str, object]:
    tcb_date = (issued - dt.timedelta(days=30)).replace(hour=0, minute=0, second=0)
    old_date = tcb_date - dt.timedelta(days=365)
    own_svn = module.tee_tcb_svn
    oldest = _level(
        cpu_svn=_lowered(tcb.cpu_svn),
        pce_svn=max(tcb.pce_svn - 1, 0),
        tee_tcb_svn=_lowered(own_svn),
        status="OutOfDate",
        date=old_date,
        advisories=DEFAULT_OUT_OF_DATE_ADVISORIES,
    )
    module_svn = own_svn[0]
    if status == "UpToDate":
        levels = [
            _level(
                cpu_svn=tcb.cpu_svn,
                pce_svn=tcb.pce_svn,
                tee_tcb_svn=own_svn,
                status="UpToDate",
                date=tcb_date,
                advisories=advisories,
            ),
            oldest,
        ]
        module_levels = [{"tcb": {"isvsvn": module_svn}, "tcbStatus": "UpToDate"}]
    else:
        # A newer TDX module exists: only a higher TEE TCB SVN is up to date.
        levels = [
            _level(
                cpu_svn=tcb.cpu_svn,
                pce_svn=tcb.pce_svn,
                tee_tcb_svn=_bumped(own_svn, 0),
                status="UpToDate",
                date=tcb_date,
                advisories=(),
            ),
            _level(
                cpu_svn=tcb.cpu_svn,
                pce_svn=tcb.pce_svn,
                tee_tcb_svn=own_svn,
                status="OutOfDate",
                date=old_date,
                advisories=advisories,
            ),
            oldest,
        ]
        module_levels = [
            {"tcb": {"isvsvn": min(module_svn + 1, 0xFF)}, "tcbStatus": "UpToDate"},
            {"tcb": {"isvsvn": module_svn}, "tcbStatus": "OutOfDate"},
        ]
        if advisories:
            module_levels[1]["advisoryIDs"] = list(advisories)
    for module_level in module_levels:
        module_level["tcbDate"] = rfc3339(tcb_date)
    module_identity = {
        "mrsigner": module.mr_signer_seam.hex().upper(),
        "attributes": module.seam_attributes.hex().upper(),
        "attributesMask": "FFFFFFFFFFFFFFFF",
    }
    return {
        "id": "TDX",
        "version": 3,
        "issueDate": rfc3339(issued),
        "nextUpdate": rfc3339(next_update),
        "fmspc": tcb.fmspc.hex().upper(),
        "pceId": tcb.pce_id.hex().upper(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
        "tdxModule": module_identity,
        "tdxModuleIdentities": [
            {"id": f"TDX_{own_svn[1]:02X}", **module_identity, "tcbLevels": module_levels}
        ],
        "tcbLevels": levels,
    }


def _qe_identity(
    qe: QuotingEnclave, *, issued: dt.datetime, next_update: dt.datetime
) -> dict[str, object]:
    return {
        "id": "TD_QE",
        "version": 2,
        "issueDate": rfc3339(issued),
        "nextUpdate": rfc3339(next_update),
        "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
        "miscselect": qe.misc_select.to_bytes(4, "little").hex().upper(),
        "miscselectMask": "FFFFFFFF",
        "attributes": qe.attributes.hex().upper(),
        "attributesMask": _QE_ATTRIBUTES_MASK,
        "mrsigner": qe.mr_signer.hex().upper(),
        "isvprodid": qe.isv_prod_id,
        "tcbLevels": [
            {
                "tcb": {"isvsvn": qe.isv_svn},
                "tcbDate": rfc3339(
                    (issued - dt.timedelta(days=30)).replace(hour=0, minute=0, second=0)
                ),
                "tcbStatus": "UpToDate",
            }
        ],
    }


def _compact(document: dict[str, object]) -> str:
    return json.dumps(document, separators=(",", ":"))


def build_collateral(
    *,
    pki: SimulatedPki,
    tcb: PlatformTcb,
    module: TdxModule,
    qe: QuotingEnclave,
    status: TcbStatus,
    advisories: Sequence[str],
    issued: dt.datetime,
    next_update: dt.datetime,
) -> CollateralDocuments:
    """Sign TCB info and QE identity valid from ``issued`` to ``next_update``."""
    tcb_info = _compact(
        _tcb_info(
            tcb=tcb,
            module=module,
            status=status,
            advisories=advisories,
            issued=issued,
            next_update=next_update,
        )
    )
    qe_identity = _compact(_qe_identity(qe, issued=issued, next_update=next_update))
    signing_chain = pki.tcb_signing_chain_pem
    return CollateralDocuments(
        pck_crl_issuer_chain=pki.pck_crl_issuer_chain_pem,
        root_ca_crl=pki.root_ca_crl_der,
        pck_crl=pki.pck_crl_der,
        tcb_info_issuer_chain=signing_chain,
        tcb_info=tcb_info,
        tcb_info_signature=raw_signature(pki.tcb_signing_key, tcb_info.encode()),
        qe_identity_issuer_chain=signing_chain,
        qe_identity=qe_identity,
        qe_identity_signature=raw_signature(pki.tcb_signing_key, qe_identity.encode()),
    )
