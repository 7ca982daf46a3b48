"""Interoperable RA-TLS evidence and its claims buffer (sans-IO: bytes in, bytes out).

Evidence (CCC "Interoperable RA-TLS", SGX/TDX evidence formats)::

    evidence      = #6.60000([ quote: bstr, claims-buffer: bstr ])
    claims-buffer = bstr .cbor { "pubkey-hash": bstr .cbor [alg-id, hash],   ; required
                                 ? "nonce": bstr,                            ; challenge mode
                                 ; ours, ignored by other interoperable verifiers:
                                 ? "ohttp-keys": bstr,   ; SHA-256 of the served key configs
                                 ? "model": { "name": tstr, "digest-kind": tstr,
                                              "digest": bstr },
                                 ? "service": { "version": tstr },
                                 ? "gpus": [* bstr],     ; SHA-256 of each GPU's evidence
                                 ? "insecure": [* tstr], ; the service's insecure_* settings
                                 ? "receipt-key": bstr,  ; SHA-256 of the raw Ed25519 public
                                                         ; key that signs answer receipts
                                 * tstr => any }                             ; tolerated
    quote.report_data = SHA-256(claims-buffer) || 32 zero bytes

``alg-id`` is from the IANA named-information registry (1 sha-256, 7 sha-384, 8 sha-512) and
the hash is over the certificate's SubjectPublicKeyInfo DER. The claims buffer is encoded with
RFC 8949 core deterministic encoding (shortest forms, definite lengths, map keys sorted by
their encoded bytes), so the same claims always give the same report_data.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, cast

import cbor2

from attestation._cbor import loads_exact
from attestation.errors import EvidenceError

__all__ = [
    "DIGEST_KINDS",
    "EVIDENCE_CBOR_TAG",
    "HASH_ALGORITHMS",
    "Claims",
    "DigestKind",
    "Evidence",
    "ModelClaim",
    "PubkeyHash",
    "decode_claims",
    "decode_evidence",
    "encode_claims",
    "ohttp_keys_digest",
    "receipt_key_digest",
    "report_data_for",
]

EVIDENCE_CBOR_TAG: Final = 60000
MAX_EVIDENCE_SIZE: Final = 1 << 20
MAX_CLAIMS_SIZE: Final = 64 * 1024
# IANA named-information hash algorithm IDs -> (hashlib name, digest length).
HASH_ALGORITHMS: Final[Mapping[int, tuple[str, int]]] = {
    1: ("sha256", 32),
    7: ("sha384", 48),
    8: ("sha512", 64),
}
DigestKind = Literal["dm-verity", "manifest-sha256"]
DIGEST_KINDS: Final[frozenset[str]] = frozenset({"dm-verity", "manifest-sha256"})

_PUBKEY_HASH: Final = "pubkey-hash"
_NONCE: Final = "nonce"
_OHTTP_KEYS: Final = "ohttp-keys"
_MODEL: Final = "model"
_SERVICE: Final = "service"
_GPUS: Final = "gpus"
_INSECURE: Final = "insecure"
_RECEIPT_KEY: Final = "receipt-key"
_KNOWN: Final = frozenset(
    {_PUBKEY_HASH, _NONCE, _OHTTP_KEYS, _MODEL, _SERVICE, _GPUS, _INSECURE, _RECEIPT_KEY}
)
MAX_GPU_CLAIMS: Final = 16
MAX_INSECURE_CLAIMS: Final = 16
_MAX_INSECURE_NAME: Final = 64


@dataclass(frozen=True, slots=True)
class PubkeyHash:
    """A CoSWID ``hash-entry``: ``[alg-id, hash(SPKI DER)]``."""

    alg_id: int
    value: bytes

    @classmethod
    def of(cls, spki_der: bytes, alg_id: int = 1) -> PubkeyHash:
        if alg_id not in HASH_ALGORITHMS:
            raise EvidenceError(f"unsupported pubkey-hash algorithm id {alg_id}")
        name, _ = HASH_ALGORITHMS[alg_id]
        return cls(alg_id, hashlib.new(name, spki_der).digest())

    def encode(self) -> bytes:
        return cbor2.dumps([self.alg_id, self.value])

    @classmethod
    def decode(cls, data: bytes) -> PubkeyHash:
        entry = loads_exact(data, "pubkey-hash")
        if not (isinstance(entry, list | tuple) and len(entry) == 2):
            raise EvidenceError("pubkey-hash must be a CBOR array [alg-id, hash]")
        alg_id, value = entry
        if type(alg_id) is not int or alg_id not in HASH_ALGORITHMS:
            raise EvidenceError(f"unsupported pubkey-hash algorithm id {alg_id!r}")
        if not isinstance(value, bytes) or len(value) != HASH_ALGORITHMS[alg_id][1]:
            raise EvidenceError("pubkey-hash value has the wrong type or length")
        return cls(alg_id, value)

    def matches(self, spki_der: bytes) -> bool:
        return hmac.compare_digest(PubkeyHash.of(spki_der, self.alg_id).value, self.value)


@dataclass(frozen=True, slots=True)
class ModelClaim:
    name: str
    digest_kind: DigestKind
    digest: bytes

    def __post_init__(self) -> None:
        if self.digest_kind not in DIGEST_KINDS:
            raise EvidenceError(f"unknown model digest kind {self.digest_kind!r}")
        if not self.name or not self.digest:
            raise EvidenceError("a model claim needs a name and a digest")


@dataclass(frozen=True, slots=True)
class Claims:
    """The decoded claims buffer. ``extra`` names claims other implementations added."""

    pubkey_hash: PubkeyHash
    nonce: bytes | None = None
    ohttp_keys: bytes | None = None
    model: ModelClaim | None = None
    service_version: str | None = None
    extra: tuple[str, ...] = field(default=())
    gpus: tuple[bytes, ...] | None = None  # SHA-256 of each GPU's evidence (attestation.gpu)
    #: The service's ``insecure_*`` settings in effect (e.g. ``insecure_dev_engine``: the
    #: engine is the development engine, not a language model); empty in production.
    insecure: tuple[str, ...] = ()
    #: SHA-256 of the raw 32-byte Ed25519 public key the service signs receipts with
    #: (:mod:`attestation.receipt`); None from a service that signs none.
    receipt_key: bytes | None = None

    def to_json_dict(self) -> dict[str, object]:
        """A JSON-friendly view (hex for bytes), for the CLI and the attestation report."""
        return {
            "pubkey-hash": {
                "alg-id": self.pubkey_hash.alg_id,
                "hash": self.pubkey_hash.value.hex(),
            },
            "nonce": self.nonce.hex() if self.nonce is not None else None,
            "ohttp-keys": self.ohttp_keys.hex() if self.ohttp_keys is not None else None,
            "model": None
            if self.model is None
            else {
                "name": self.model.name,
                "digest-kind": self.model.digest_kind,
                "digest": self.model.digest.hex(),
            },
            "service": None if self.service_version is None else {"version": self.service_version},
            "gpus": None if self.gpus is None else [digest.hex() for digest in self.gpus],
            "insecure": list(self.insecure),
            "receipt-key": None if self.receipt_key is None else self.receipt_key.hex(),
            "extra": list(self.extra),
        }


def ohttp_keys_digest(ohttp_keys_body: bytes) -> bytes:
    """The ``ohttp-keys`` claim: SHA-256 of the exact ``application/ohttp-keys`` bytes served."""
    return hashlib.sha256(ohttp_keys_body).digest()


def receipt_key_digest(public_key_raw: bytes) -> bytes:
    """The ``receipt-key`` claim: SHA-256 of the raw 32-byte Ed25519 public key."""
    if len(public_key_raw) != 32:
        raise EvidenceError("an Ed25519 public key is 32 bytes")
    return hashlib.sha256(public_key_raw).digest()


def encode_claims(claims: Claims) -> bytes:
    """Encode claims deterministically (RFC 8949 section 4.2.1). ``extra`` is not re-emitted."""
    entries: dict[str, object] = {_PUBKEY_HASH: claims.pubkey_hash.encode()}
    if claims.nonce is not None:
        entries[_NONCE] = claims.nonce
    if claims.ohttp_keys is not None:
        if len(claims.ohttp_keys) != 32:
            raise EvidenceError("the ohttp-keys claim is a 32-byte SHA-256 digest")
        entries[_OHTTP_KEYS] = claims.ohttp_keys
    if claims.model is not None:
        entries[_MODEL] = _sorted_map(
            {
                "name": claims.model.name,
                "digest-kind": claims.model.digest_kind,
                "digest": claims.model.digest,
            }
        )
    if claims.service_version is not None:
        entries[_SERVICE] = _sorted_map({"version": claims.service_version})
    if claims.gpus is not None:
        if len(claims.gpus) > MAX_GPU_CLAIMS or any(len(d) != 32 for d in claims.gpus):
            raise EvidenceError(f"the gpus claim is at most {MAX_GPU_CLAIMS} SHA-256 digests")
        entries[_GPUS] = list(claims.gpus)
    if claims.insecure:
        entries[_INSECURE] = list(_check_insecure(claims.insecure))
    if claims.receipt_key is not None:
        if len(claims.receipt_key) != 32:
            raise EvidenceError("the receipt-key claim is a 32-byte SHA-256 digest")
        entries[_RECEIPT_KEY] = claims.receipt_key
    buffer: bytes = cbor2.dumps(_sorted_map(entries))
    return buffer


def _sorted_map(entries: dict[str, object]) -> dict[str, object]:
    # Core deterministic encoding: keys in bytewise order of their own encodings. cbor2 keeps
    # insertion order when not asked for its (RFC 7049, length-first) canonical mode.
    return dict(sorted(entries.items(), key=lambda item: cbor2.dumps(item[0])))


def decode_claims(buffer: bytes) -> Claims:
    """Decode a claims buffer, tolerating claims other implementations add."""
    if len(buffer) > MAX_CLAIMS_SIZE:
        raise EvidenceError(f"claims buffer larger than {MAX_CLAIMS_SIZE} bytes")
    decoded = loads_exact(buffer, "claims buffer")
    if not isinstance(decoded, dict) or not all(isinstance(k, str) for k in decoded):
        raise EvidenceError("claims buffer must be a CBOR map with text keys")
    entries = cast(dict[str, object], decoded)
    if _PUBKEY_HASH not in entries:
        raise EvidenceError("claims buffer has no pubkey-hash claim")
    return Claims(
        pubkey_hash=PubkeyHash.decode(_bytes_claim(entries, _PUBKEY_HASH)),
        nonce=_optional_bytes(entries, _NONCE),
        ohttp_keys=_optional_bytes(entries, _OHTTP_KEYS),
        model=_decode_model(entries.get(_MODEL)),
        service_version=_decode_service(entries.get(_SERVICE)),
        gpus=_decode_gpus(entries.get(_GPUS)),
        insecure=_decode_insecure(entries.get(_INSECURE)),
        receipt_key=_decode_receipt_key(entries),
        extra=tuple(sorted(k for k in entries if k not in _KNOWN)),
    )


def _bytes_claim(entries: Mapping[str, object], name: str) -> bytes:
    value = entries[name]
    if not isinstance(value, bytes):
        raise EvidenceError(f"claim {name!r} must be a byte string")
    return value


def _optional_bytes(entries: Mapping[str, object], name: str) -> bytes | None:
    return _bytes_claim(entries, name) if name in entries else None


def _decode_model(value: object) -> ModelClaim | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EvidenceError("claim 'model' must be a map")
    name, kind, digest = value.get("name"), value.get("digest-kind"), value.get("digest")
    if not isinstance(name, str) or not isinstance(kind, str) or not isinstance(digest, bytes):
        raise EvidenceError("claim 'model' needs text name, text digest-kind and bytes digest")
    if kind not in DIGEST_KINDS:
        raise EvidenceError(f"unknown model digest kind {kind!r}")
    return ModelClaim(name=name, digest_kind=cast(DigestKind, kind), digest=digest)


def _decode_service(value: object) -> str | None:
    if value is None:
        return None
    version = value.get("version") if isinstance(value, dict) else None
    if not isinstance(version, str):
        raise EvidenceError("claim 'service' must be a map with a text 'version'")
    return version


def _decode_gpus(value: object) -> tuple[bytes, ...] | None:
    if value is None:
        return None
    if not (
        isinstance(value, list)
        and len(value) <= MAX_GPU_CLAIMS
        and all(isinstance(d, bytes) and len(d) == 32 for d in value)
    ):
        raise EvidenceError(f"claim 'gpus' must be an array of at most {MAX_GPU_CLAIMS} digests")
    return tuple(value)


def _check_insecure(names: tuple[str, ...] | list[object]) -> tuple[str, ...]:
    if not (
        len(names) <= MAX_INSECURE_CLAIMS
        and all(isinstance(n, str) and 0 < len(n) <= _MAX_INSECURE_NAME for n in names)
    ):
        raise EvidenceError(
            f"claim 'insecure' must be at most {MAX_INSECURE_CLAIMS} names of 1 to "
            f"{_MAX_INSECURE_NAME} characters"
        )
    return tuple(sorted(set(names)))  # type: ignore[arg-type]


def _decode_insecure(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise EvidenceError("claim 'insecure' must be an array of text strings")
    return _check_insecure(value)


def _decode_receipt_key(entries: Mapping[str, object]) -> bytes | None:
    value = _optional_bytes(entries, _RECEIPT_KEY)
    if value is not None and len(value) != 32:
        raise EvidenceError("claim 'receipt-key' must be a 32-byte SHA-256 digest")
    return value


def report_data_for(claims_buffer: bytes) -> bytes:
    """The 64-byte report_data a quote must carry for this claims buffer."""
    return hashlib.sha256(claims_buffer).digest() + bytes(32)


@dataclass(frozen=True, slots=True)
class Evidence:
    """``#6.60000([quote, claims-buffer])``, kept as the exact bytes that were received."""

    quote: bytes
    claims_buffer: bytes

    def encode(self) -> bytes:
        encoded: bytes = cbor2.dumps(
            cbor2.CBORTag(EVIDENCE_CBOR_TAG, [self.quote, self.claims_buffer])
        )
        return encoded

    @property
    def claims(self) -> Claims:
        return decode_claims(self.claims_buffer)


def decode_evidence(data: bytes) -> Evidence:
    """Decode evidence; raises :class:`EvidenceError` on anything but tag 60000 [bstr, bstr]."""
    if len(data) > MAX_EVIDENCE_SIZE:
        raise EvidenceError(f"evidence larger than {MAX_EVIDENCE_SIZE} bytes")
    decoded = loads_exact(data, "evidence")
    if not isinstance(decoded, cbor2.CBORTag) or decoded.tag != EVIDENCE_CBOR_TAG:
        raise EvidenceError(f"evidence must be CBOR tag {EVIDENCE_CBOR_TAG}")
    value = decoded.value
    if not (isinstance(value, list | tuple) and len(value) == 2):
        raise EvidenceError("evidence must be a two-entry array [quote, claims-buffer]")
    quote, claims_buffer = value
    if not isinstance(quote, bytes) or not isinstance(claims_buffer, bytes):
        raise EvidenceError("evidence entries must both be byte strings")
    return Evidence(quote=quote, claims_buffer=claims_buffer)
