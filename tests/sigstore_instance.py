"""A private Sigstore instance for tests: the bundles a release workflow would publish.

Keyless signing needs a GitHub Actions OIDC token and the public Fulcio and Rekor, which no
machine here reaches; so the tests sign with their own instance instead: a Fulcio-like root
CA issuing short-lived code-signing certificates with GitHub's identity extensions and an
embedded SCT from a CT log key, and a Rekor-like log key signing the inclusion proof's
checkpoint and the signed entry timestamp of a dsse 0.0.1 entry. Its ``trusted_root.json``
names these keys; sigstore-python verifies the bundles exactly as it verifies public ones
(tests/unit/attestation/test_policy_bundle.py checks public ones too).

Nothing here is the project's code: it is the other side of the verification, test-only.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ISSUER = "https://token.actions.githubusercontent.com"
IN_TOTO = "application/vnd.in-toto+json"
_SCT_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _utf8(text: str) -> bytes:
    raw = text.encode()
    length = bytes([len(raw)]) if len(raw) < 128 else bytes([0x81, len(raw)])
    return b"\x0c" + length + raw


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _u24(data: bytes) -> bytes:
    return struct.pack("!I", len(data))[1:] + data


def github_identity(
    repository: str,
    ref: str = "refs/tags/v1.0.0",
    workflow: str = ".github/workflows/release.yml",
    runner: str = "github-hosted",
) -> dict[str, str]:
    """The Fulcio extensions (OID suffix -> value) and SAN of a GitHub Actions run."""
    uri = f"https://github.com/{repository}/{workflow}@{ref}"
    return {
        "san": uri,
        "8": ISSUER,
        "9": uri,
        "11": runner,
        "12": f"https://github.com/{repository}",
        "14": ref,
    }


@dataclass
class SigstoreInstance:
    now: datetime.datetime = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    )
    ca_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )
    ct_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    log_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def __post_init__(self) -> None:
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test.invalid"),
                x509.NameAttribute(NameOID.COMMON_NAME, "test-fulcio"),
            ]
        )
        public = self.ca_key.public_key()
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - datetime.timedelta(days=30))
            .not_valid_after(self.now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.ca_key, hashes.SHA384())
        )

    # -- the trusted root -------------------------------------------------------------------

    def trusted_root(self) -> dict[str, Any]:
        start = (self.now - datetime.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")

        def log(key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, Any]:
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": _b64(_spki(key)),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": start},
                },
                "logId": {"keyId": _b64(hashlib.sha256(_spki(key)).digest())},
            }

        ca_der = self.ca_cert.public_bytes(serialization.Encoding.DER)
        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(self.log_key, "https://rekor.test.invalid")],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "test.invalid", "commonName": "test-fulcio"},
                    "uri": "https://fulcio.test.invalid",
                    "certChain": {"certificates": [{"rawBytes": _b64(ca_der)}]},
                    "validFor": {"start": start},
                }
            ],
            "ctlogs": [log(self.ct_key, "https://ctfe.test.invalid")],
            "timestampAuthorities": [],
        }

    # -- Fulcio -----------------------------------------------------------------------------

    def _leaf_builder(
        self, key: ec.EllipticCurvePrivateKey, identity: dict[str, str], serial: int
    ) -> x509.CertificateBuilder:
        public = key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.ca_cert.subject)
            .public_key(public)
            .serial_number(serial)
            .not_valid_before(self.now - datetime.timedelta(minutes=1))
            .not_valid_after(self.now + datetime.timedelta(minutes=9))
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity["san"])]),
                critical=True,
            )
        )
        for suffix, value in identity.items():
            if suffix != "san":
                oid = x509.ObjectIdentifier(f"1.3.6.1.4.1.57264.1.{suffix}")
                builder = builder.add_extension(
                    x509.UnrecognizedExtension(oid, _utf8(value)), False
                )
        return builder

    def certificate(
        self, key: ec.EllipticCurvePrivateKey, identity: dict[str, str]
    ) -> x509.Certificate:
        """A Fulcio-style certificate for ``key``, with an embedded precertificate SCT."""
        serial = x509.random_serial_number()
        precert = self._leaf_builder(key, identity, serial).sign(self.ca_key, hashes.SHA384())
        timestamp = int(self.now.timestamp() * 1000)
        issuer_key_hash = hashlib.sha256(_spki(self.ca_key)).digest()
        signed = (
            struct.pack("!BBQH", 0, 0, timestamp, 1)
            + issuer_key_hash
            + _u24(precert.tbs_certificate_bytes)
            + struct.pack("!H", 0)
        )
        signature = _sign(self.ct_key, signed)
        sct = (
            b"\x00"
            + hashlib.sha256(_spki(self.ct_key)).digest()
            + struct.pack("!QH", timestamp, 0)
            + b"\x04\x03"
            + struct.pack("!H", len(signature))
            + signature
        )
        sct_list = struct.pack("!H", len(sct) + 2) + struct.pack("!H", len(sct)) + sct
        value = b"\x04" + bytes([0x81, len(sct_list)] if len(sct_list) >= 128 else [len(sct_list)])
        extension = x509.UnrecognizedExtension(_SCT_OID, value + sct_list)
        builder = self._leaf_builder(key, identity, serial).add_extension(extension, False)
        return builder.sign(self.ca_key, hashes.SHA384())

    # -- signing and Rekor ------------------------------------------------------------------

    def sign_statement(
        self, statement: dict[str, Any] | bytes, identity: dict[str, str]
    ) -> dict[str, Any]:
        """The Sigstore bundle v0.3 a release workflow would publish for ``statement``."""
        payload = statement if isinstance(statement, bytes) else json.dumps(statement).encode()
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.certificate(key, identity)
        pae = b"DSSEv1 %d %s %d %s" % (len(IN_TOTO), IN_TOTO.encode(), len(payload), payload)
        signature = _sign(key, pae)
        envelope = {
            "payload": _b64(payload),
            "payloadType": IN_TOTO,
            "signatures": [{"sig": _b64(signature)}],
        }
        pem = cert.public_bytes(serialization.Encoding.PEM)
        body = {
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(json.dumps(envelope).encode()).hexdigest(),
                },
                "payloadHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(payload).hexdigest(),
                },
                "signatures": [{"signature": _b64(signature), "verifier": _b64(pem)}],
            },
        }
        return {
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": _b64(cert.public_bytes(serialization.Encoding.DER))},
                "tlogEntries": [self._log(rfc8785.dumps(body))],
            },
            "dsseEnvelope": envelope,
        }

    def _log(self, body: bytes) -> dict[str, Any]:
        """Log ``body`` as leaf 1 of a two-leaf tree (a neighbour leaf first) and prove it."""
        log_id = hashlib.sha256(_spki(self.log_key)).digest()
        index = 1
        neighbour = hashlib.sha256(b"\x00neighbour").digest()
        leaf = hashlib.sha256(b"\x00" + body).digest()
        root = hashlib.sha256(b"\x01" + neighbour + leaf).digest()
        size = index + 1
        note = f"rekor.test.invalid - 1\n{size}\n{_b64(root)}\n"
        signature = _b64(log_id[:4] + _sign(self.log_key, note.encode()))
        checkpoint = note + f"\n\u2014 rekor.test.invalid {signature}\n"
        integrated = int(self.now.timestamp())
        promise = rfc8785.dumps(
            {
                "body": _b64(body),
                "integratedTime": integrated,
                "logID": log_id.hex(),
                "logIndex": index,
            }
        )
        return {
            "logIndex": str(index),
            "logId": {"keyId": _b64(log_id)},
            "kindVersion": {"kind": "dsse", "version": "0.0.1"},
            "integratedTime": str(integrated),
            "inclusionPromise": {"signedEntryTimestamp": _b64(_sign(self.log_key, promise))},
            "inclusionProof": {
                "logIndex": str(index),
                "rootHash": _b64(root),
                "treeSize": str(size),
                "hashes": [_b64(neighbour)],
                "checkpoint": {"envelope": checkpoint},
            },
            "canonicalizedBody": _b64(body),
        }
