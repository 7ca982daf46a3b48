"""``verify_endpoint``: the RA-TLS certificate and a nonce-fresh attestation report, fetched
over the same verified connection, checked together.

Steps (each failure raises ``AttestationFailed`` with a stable ``reason``):

1. open a TLS 1.3 connection; the certificate's evidence verifies in the TLS layer
   (``AsyncRaTlsTransport``) before any request byte is written;
2. over that connection, ``GET /v1/attestation/report?nonce=<32 random bytes, hex>``;
   The report is read with a size cap (``MAX_REPORT_BYTES``, ``report_too_large``) enforced
   while it streams in, so an endpoint cannot make the client buffer an endless body;
3. the report's certificate holds the connection's key (``report_certificate_mismatch``);
4. the report's evidence verifies with our nonce, bound to the connection's key;
5. the served ``application/ohttp-keys`` bytes hash to the ``ohttp-keys`` claim
   (``ohttp_keys_mismatch``);
6. at least one key configuration is one this client can encrypt to (``ohttp_keys_unusable``);
7. the report's GPU evidence is exactly what the evidence's ``gpus`` claim binds, requested
   with the GPU nonce of those claims, and each GPU passes the GPU steps and the policy's
   ``[gpu]`` table (``gpu_*`` codes, docs/attestation.md section 7); a policy that requires
   GPUs refuses a report without them.

Verifying needs no pinned policy (``enclave verify`` shows unpinned measurements so they can be
saved), but the result says whether they were pinned; the transports, which send requests,
refuse a policy that does not pin them. A failure's ``stage`` says whether it happened while
verifying the connection's certificate (``"certificate"``) or the report (``"report"``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from enum import StrEnum

import httpx

from attestation.collateral import CollateralSource
from attestation.errors import AttestationError
from attestation.evidence import Claims, ModelClaim
from attestation.gpu import VerifiedGpu
from attestation.policy import Policy
from attestation.ratls import parse_certificate
from attestation.verify import EvidenceStep, Measurements
from enclave.client._neterrors import describe_connection_error
from enclave.client._ratls import AsyncRaTlsTransport, verified_certificate
from enclave.client._verifier import Verifier, run_sync
from enclave.client.errors import AttestationFailed, ClientReason
from enclave.protocol.api import REPORT_PATH
from enclave.protocol.errors import ProtocolError
from enclave.protocol.ohttp import KeyConfig, decode_key_configs

__all__ = [
    "MAX_REPORT_BYTES",
    "REPORT_PATH",
    "VerifiedEndpoint",
    "attest_endpoint",
    "averify_endpoint",
    "check_ohttp_keys",
    "check_receipt_key",
    "check_report_certificate",
    "preferred_key_configs",
    "usable_key_configs",
    "verify_endpoint",
]

NONCE_BYTES = 32
#: The largest attestation report the client reads (the service's are a few KiB).
MAX_REPORT_BYTES = 4 << 20
XWING_KEM_ID = 0x647A


@dataclass(frozen=True, slots=True)
class VerifiedEndpoint:
    """What ``verify_endpoint`` proved about a service endpoint."""

    url: str
    tcb_status: str
    advisory_ids: tuple[str, ...]
    measurements: Measurements
    model: ModelClaim | None
    service_version: str | None
    spki_sha256: bytes
    certificate_quote_sha256: bytes
    ohttp_keys: bytes
    key_configs: tuple[KeyConfig, ...]
    quote_provider: str
    verified_at: float
    #: Whether the policy pinned MRTD and RTMR0-2; False: any TDX VM would have passed.
    measurements_pinned: bool = False
    #: The ``insecure_*`` options the verification ran under.
    insecure: tuple[str, ...] = ()
    #: The service's own ``insecure_*`` settings (its ``insecure`` claim), which the policy
    #: accepted (``insecure_accept_service``); empty for a production service.
    service_insecure: tuple[str, ...] = ()
    nonce: bytes = field(default=b"", repr=False)
    report_data: bytes = field(default=b"", repr=False)
    #: Every GPU's verified evidence (step 7), in NVML index order; empty without GPUs.
    gpus: tuple[VerifiedGpu, ...] = ()
    #: The ``receipt-key`` claim (SHA-256 of the raw Ed25519 key that signs the service's
    #: answer receipts), the same in the certificate and the report (``receipt_key_mismatch``
    #: otherwise); None from a service that signs none.
    receipt_key_sha256: bytes | None = None
    #: The connection's RA-TLS certificate and the collateral it verified with: what a
    #: receipt naming its quote is verified against later (``enclave receipt verify``).
    certificate_der: bytes = field(default=b"", repr=False)
    collateral_json: str | None = field(default=None, repr=False)
    #: The steps that ran and passed, in order (``EndpointStep`` and ``EvidenceStep`` values):
    #: what the verification document prints as "ok".
    steps: tuple[str, ...] = field(default=(), repr=False)

    @property
    def model_digest_hex(self) -> str | None:
        return None if self.model is None else self.model.digest.hex()

    def to_json_dict(self) -> dict[str, object]:
        m = self.measurements
        return {
            "verified": True,
            "url": self.url,
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "measurements_pinned": self.measurements_pinned,
            "insecure": list(self.insecure),
            "service_insecure": list(self.service_insecure),
            "mrtd": m.mrtd.hex(),
            "rtmr0": m.rtmr0.hex(),
            "rtmr1": m.rtmr1.hex(),
            "rtmr2": m.rtmr2.hex(),
            "rtmr3": m.rtmr3.hex(),
            "mrconfigid": m.mrconfigid.hex(),
            "model": None
            if self.model is None
            else {
                "name": self.model.name,
                "digest_kind": self.model.digest_kind,
                "digest": self.model.digest.hex(),
            },
            "service_version": self.service_version,
            "spki_sha256": self.spki_sha256.hex(),
            "ohttp_keys_sha256": hashlib.sha256(self.ohttp_keys).hexdigest(),
            "receipt_key_sha256": None
            if self.receipt_key_sha256 is None
            else self.receipt_key_sha256.hex(),
            "ohttp_key_configs": [
                {"key_id": c.key_id, "kem_id": int(c.kem_id)} for c in self.key_configs
            ],
            "quote_provider": self.quote_provider,
            "gpus": [
                {
                    "architecture": gpu.architecture,
                    "fwid": gpu.fwid.hex(),
                    "driver_version": gpu.driver_version,
                    "vbios_version": gpu.vbios_version,
                    "measurements": len(gpu.measurements),
                    "cc_mode": gpu.cc_mode,
                }
                for gpu in self.gpus
            ],
        }


def preferred_key_configs(configs: tuple[KeyConfig, ...]) -> tuple[KeyConfig, ...]:
    """Configurations this client can use, X-Wing (post-quantum) first."""
    usable = [config for config in configs if config.suites()]
    return tuple(sorted(usable, key=lambda config: config.kem_id != XWING_KEM_ID))


def check_report_certificate(report_spki_der: bytes, connection_spki_der: bytes) -> None:
    """Step 3: the report's certificate holds the key the TLS handshake proved."""
    if not hmac.compare_digest(report_spki_der, connection_spki_der):
        raise AttestationFailed(
            ClientReason.REPORT_CERTIFICATE_MISMATCH,
            "the report's certificate is not the connection's",
        )


def check_ohttp_keys(claims: Claims | None, ohttp_keys: bytes) -> None:
    """Step 5: the served key configurations are the ones the evidence binds."""
    claimed = None if claims is None else claims.ohttp_keys
    if claimed is None or not hmac.compare_digest(hashlib.sha256(ohttp_keys).digest(), claimed):
        raise AttestationFailed(
            ClientReason.OHTTP_KEYS_MISMATCH,
            "the served key configurations are not the attested ones",
        )


def usable_key_configs(ohttp_keys: bytes) -> tuple[KeyConfig, ...]:
    """Step 6: the configurations this client can encrypt to (X-Wing first), at least one."""
    try:
        configs = preferred_key_configs(decode_key_configs(ohttp_keys))
    except ProtocolError as exc:
        raise AttestationFailed(ClientReason.OHTTP_KEYS_UNUSABLE, type(exc).__name__) from exc
    if not configs:
        raise AttestationFailed(ClientReason.OHTTP_KEYS_UNUSABLE, "no supported key configuration")
    return configs


def _field(document: object, name: str) -> object:
    if not isinstance(document, dict) or name not in document:
        raise AttestationFailed(ClientReason.REPORT_MALFORMED, f"the report has no {name!r}")
    return document[name]


def _text(document: object, name: str) -> str:
    value = _field(document, name)
    if not isinstance(value, str):
        raise AttestationFailed(ClientReason.REPORT_MALFORMED, f"{name!r} is not a string")
    return value


class _ReportTransport(AsyncRaTlsTransport):
    """The RA-TLS transport ``attest_endpoint`` fetches the public report with: it sends only
    a random nonce, so it needs no pinned policy (the result says whether one was pinned)."""

    def _require_policy(self, verifier: Verifier) -> None:
        return None


async def _read_capped(response: httpx.Response) -> bytes:
    """The report body, refused as soon as it passes MAX_REPORT_BYTES (never buffered whole)."""
    if verified_certificate(response) is None:
        raise AttestationFailed(ClientReason.NOT_VERIFIED, "the report did not come over RA-TLS")
    if response.status_code == 429:  # the report's rate limit: say so, and when to retry
        retry_after = response.headers.get("retry-after", "")
        raise AttestationFailed(
            ClientReason.REPORT_RATE_LIMITED, retry_after if retry_after.isdigit() else ""
        )
    if response.status_code != 200:
        raise AttestationFailed(ClientReason.REPORT_UNAVAILABLE, f"status {response.status_code}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REPORT_BYTES:
        raise AttestationFailed(ClientReason.REPORT_TOO_LARGE, f"declared {declared} bytes")
    body = bytearray()
    async for piece in response.aiter_bytes():
        body += piece
        if len(body) > MAX_REPORT_BYTES:
            raise AttestationFailed(
                ClientReason.REPORT_TOO_LARGE, f"more than {MAX_REPORT_BYTES} bytes"
            )
    return bytes(body)


async def _fetch_report(
    session: httpx.AsyncClient, url: str, nonce: bytes, ran: list[str]
) -> tuple[httpx.Response, bytes]:
    request = session.build_request("GET", url, params={"nonce": nonce.hex()})
    try:
        response = await session.send(request, stream=True)
    except AttestationFailed as exc:  # raised in the TLS layer: the certificate failed
        exc.stage = exc.stage or "certificate"
        raise
    except httpx.HTTPError as exc:
        raise AttestationFailed(
            ClientReason.ENDPOINT_UNREACHABLE, describe_connection_error(exc)
        ) from exc
    if verified_certificate(response) is not None:  # 1. passed, in the TLS layer
        ran.append(EndpointStep.CERTIFICATE)
    try:
        return response, await _read_capped(response)
    except AttestationFailed:
        raise
    except httpx.HTTPError as exc:
        raise AttestationFailed(
            ClientReason.ENDPOINT_UNREACHABLE, describe_connection_error(exc)
        ) from exc
    finally:
        await response.aclose()


class EndpointStep(StrEnum):
    """The steps of :func:`attest_endpoint` outside the evidence check (whose steps are
    ``attestation.verify.EvidenceStep``); ``VerifiedEndpoint.steps`` and
    ``AttestationFailed.steps`` name those that ran and passed, in order."""

    CERTIFICATE = "certificate"  # 1: the RA-TLS certificate, in the TLS layer
    REPORT = "report"  # 2
    REPORT_CERTIFICATE = "report_certificate"  # 3
    OHTTP_KEYS = "ohttp_keys"  # 5
    KEY_CONFIG = "key_config"  # 6
    GPUS = "gpus"  # 7
    RECEIPT_KEY = "receipt_key"  # 8


async def attest_endpoint(
    verifier: Verifier, url: str, client: httpx.AsyncClient | None = None
) -> VerifiedEndpoint:
    """Verify ``url`` (the service's base URL) with ``verifier``; see the module steps."""
    ran: list[str] = []
    try:
        return await _attest(verifier, url.rstrip("/"), client, ran)
    except AttestationFailed as exc:
        exc.stage = exc.stage or "report"
        exc.steps = tuple(ran)
        raise


async def _attest(
    verifier: Verifier, base: str, client: httpx.AsyncClient | None, ran: list[str]
) -> VerifiedEndpoint:
    nonce = os.urandom(NONCE_BYTES)
    own = client is None
    session = client or httpx.AsyncClient(
        transport=_ReportTransport(verifier, max_connections=1), timeout=30.0
    )
    try:
        # 1-2. The certificate verifies in the TLS layer; the report comes over that connection.
        response, body = await _fetch_report(session, base + REPORT_PATH, nonce, ran)
    finally:
        if own:
            await session.aclose()
    connection = verified_certificate(response)
    if connection is None:  # checked while streaming; kept for the type checker
        raise AttestationFailed(ClientReason.NOT_VERIFIED, "the report did not come over RA-TLS")
    try:
        document = json.loads(body)
        evidence = bytes.fromhex(_text(document, "evidence"))
        ohttp_keys = base64.b64decode(_text(document, "ohttp_keys"), validate=True)
        report_certificate = parse_certificate(_text(document, "certificate_pem").encode())
    except AttestationFailed:
        raise
    except (ValueError, binascii.Error, AttestationError) as exc:
        raise AttestationFailed(ClientReason.REPORT_MALFORMED, type(exc).__name__) from exc
    ran.append(EndpointStep.REPORT)
    provider = document.get("quote_provider")
    # 3. The report's certificate holds the key the handshake proved.
    check_report_certificate(report_certificate.spki_der, connection.spki_der)
    ran.append(EndpointStep.REPORT_CERTIFICATE)
    # 4. Fresh evidence, our nonce, the connection's key (its steps recorded as they pass).
    evidence_steps: list[EvidenceStep] = []
    try:
        verified = await verifier.verify_evidence(
            evidence, spki_der=connection.spki_der, nonce=nonce, record=evidence_steps
        )
    finally:
        ran.extend(evidence_steps)
    claims = verified.claims
    # 5. The key configurations are the attested ones.
    check_ohttp_keys(claims, ohttp_keys)
    ran.append(EndpointStep.OHTTP_KEYS)
    # 6. Something to encrypt to.
    configs = usable_key_configs(ohttp_keys)
    ran.append(EndpointStep.KEY_CONFIG)
    # 7. The GPUs: bound to these claims and allowed by the policy.
    gpus = verifier.verify_gpus(claims, document.get("gpu_evidence"))
    ran.append(EndpointStep.GPUS)
    # 8. The receipt key is the one the certificate names.
    receipt_key = check_receipt_key(claims, connection.receipt_key_sha256)
    ran.append(EndpointStep.RECEIPT_KEY)
    return VerifiedEndpoint(
        url=base,
        tcb_status=verified.status,
        advisory_ids=verified.advisory_ids,
        measurements=verified.measurements,
        model=verified.model,
        service_version=None if claims is None else claims.service_version,
        spki_sha256=connection.spki_sha256,
        certificate_quote_sha256=connection.quote_sha256,
        ohttp_keys=ohttp_keys,
        key_configs=configs,
        quote_provider=provider if isinstance(provider, str) else "unknown",
        verified_at=verifier.clock(),
        measurements_pinned=verified.measurements_pinned,
        insecure=verified.insecure,
        service_insecure=() if claims is None else claims.insecure,
        nonce=nonce,
        report_data=verified.report_data,
        gpus=gpus,
        receipt_key_sha256=receipt_key,
        certificate_der=connection.certificate_der,
        collateral_json=connection.collateral_json,
        steps=tuple(ran),
    )


def check_receipt_key(claims: Claims | None, certificate_claim: bytes | None) -> bytes | None:
    """The report and the certificate name the same receipt key (``receipt_key_mismatch``)."""
    claimed = None if claims is None else claims.receipt_key
    if claimed != certificate_claim or (
        claimed is not None
        and certificate_claim is not None
        and not hmac.compare_digest(claimed, certificate_claim)
    ):
        raise AttestationFailed(
            ClientReason.RECEIPT_KEY_MISMATCH,
            "the report and the certificate name different receipt keys",
        )
    return claimed


async def averify_endpoint(
    url: str,
    policy: Policy,
    collateral_source: CollateralSource,
    *,
    insecure_root_ca_der: bytes | None = None,
    now: int | None = None,
) -> VerifiedEndpoint:
    """Async :func:`verify_endpoint`."""
    verifier = Verifier(
        collateral_source, policy=policy, insecure_root_ca_der=insecure_root_ca_der, now=now
    )
    return await attest_endpoint(verifier, url)


def verify_endpoint(
    url: str,
    policy: Policy,
    collateral_source: CollateralSource,
    *,
    insecure_root_ca_der: bytes | None = None,
    now: int | None = None,
) -> VerifiedEndpoint:
    """Verify a service endpoint: its RA-TLS certificate and a nonce-fresh report, checked
    together; return what was proved (``measurements_pinned`` says whether ``policy`` pinned
    the measurements), or raise ``AttestationFailed``. ``insecure_root_ca_der`` replaces
    Intel's root and warns on every verification."""
    return run_sync(
        averify_endpoint(
            url, policy, collateral_source, insecure_root_ca_der=insecure_root_ca_der, now=now
        )
    )
