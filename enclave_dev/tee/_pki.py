"""A simulated Intel-like SGX/TDX PKI, generated in memory.

The shape follows Intel's provisioning certification PKI, as seen in real PCK chains and
collateral (see ``tests/vectors/tdx``)::

    Simulated SGX Root CA (self-signed, CA, pathlen 1)       -> root CA CRL
    ├── Simulated SGX PCK Platform CA (CA, pathlen 0)          -> PCK CRL
    │   └── Simulated SGX PCK Certificate (leaf, SGX extension)
    └── Simulated SGX TCB Signing (leaf; signs TCB info and QE identity)

Every key is ECDSA P-256 and lives only in this process's memory: nothing here writes a
file. Names say SIMULATED so that no one mistakes these certificates for Intel's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from enclave_dev.tee import _der

__all__ = ["SGX_EXTENSION_OID", "PlatformTcb", "SimulatedPki", "generate_pki", "sgx_extension"]

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_ORGANIZATION = "SIMULATED - not Intel Corporation - never trust"
_CRL_BASE_URL = "https://simulated.invalid/sgx/certification/v4"
_CERT_LIFETIME = dt.timedelta(days=3650)
_BACKDATE = dt.timedelta(days=1)


@dataclass(frozen=True)
class PlatformTcb:
    """What a PCK certificate says about its platform (Intel SGX PCK Certificate spec)."""

    cpu_svn: bytes  # 16 bytes: the 16 SGX TCB component SVNs, in order
    pce_svn: int
    pce_id: bytes  # 2 bytes
    fmspc: bytes  # 6 bytes
    ppid: bytes  # 16 bytes
    platform_instance_id: bytes  # 16 bytes
    sgx_type: int = 1  # 0 Standard, 1 Scalable, 2 Scalable with integrity

    def __post_init__(self) -> None:
        for name, size in (
            ("cpu_svn", 16),
            ("pce_id", 2),
            ("fmspc", 6),
            ("ppid", 16),
            ("platform_instance_id", 16),
        ):
            if len(getattr(self, name)) != size:
                raise ValueError(f"{name} must be {size} bytes")
        if not 0 <= self.pce_svn <= 0xFFFF:
            raise ValueError("pce_svn must fit in 16 bits")


@dataclass(frozen=True)
class SimulatedPki:
    """The certificates, CRLs and (in memory only) keys of one simulated PKI."""

    root_cert: x509.Certificate
    platform_ca_cert: x509.Certificate
    pck_cert: x509.Certificate
    tcb_signing_cert: x509.Certificate
    root_ca_crl_der: bytes
    pck_crl_der: bytes
    pck_key: ec.EllipticCurvePrivateKey = field(repr=False)
    tcb_signing_key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def root_der(self) -> bytes:
        return self.root_cert.public_bytes(serialization.Encoding.DER)

    @property
    def root_pem(self) -> bytes:
        return self.root_cert.public_bytes(serialization.Encoding.PEM)

    def pem_chain(self, *certs: x509.Certificate) -> str:
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)

    @property
    def pck_chain_pem(self) -> str:
        """Leaf first, then the Platform CA and the root, as certification data type 5."""
        return self.pem_chain(self.pck_cert, self.platform_ca_cert, self.root_cert)

    @property
    def tcb_signing_chain_pem(self) -> str:
        return self.pem_chain(self.tcb_signing_cert, self.root_cert)

    @property
    def pck_crl_issuer_chain_pem(self) -> str:
        return self.pem_chain(self.platform_ca_cert, self.root_cert)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
        ]
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=not ca,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _certificate(
    *,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    path_length: int | None,
    crl_url: str,
    extra: x509.UnrecognizedExtension | None = None,
) -> x509.Certificate:
    ca = path_length is not None
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _CERT_LIFETIME)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_key_usage(ca=ca), critical=True)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    )
    if extra is not None:
        builder = builder.add_extension(extra, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _crl(
    issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey, now: dt.datetime, until: dt.datetime
) -> bytes:
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer)
        .last_update(now - dt.timedelta(hours=1))
        .next_update(until)
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.DER)


def sgx_extension(tcb: PlatformTcb) -> x509.UnrecognizedExtension:
    """The SGX extension, laid out as in Intel's PCK certificates (Platform CA flavour)."""
    base = SGX_EXTENSION_OID
    components = [
        _der.oid_value_pair(f"{base}.2.{i + 1}", _der.integer(svn))
        for i, svn in enumerate(tcb.cpu_svn)
    ]
    tcb_seq = _der.sequence(
        *components,
        _der.oid_value_pair(f"{base}.2.17", _der.integer(tcb.pce_svn)),
        _der.oid_value_pair(f"{base}.2.18", _der.octet_string(tcb.cpu_svn)),
    )
    configuration = _der.sequence(
        _der.oid_value_pair(f"{base}.7.1", _der.boolean(False)),  # dynamicPlatform
        _der.oid_value_pair(f"{base}.7.2", _der.boolean(False)),  # cachedKeys
        _der.oid_value_pair(f"{base}.7.3", _der.boolean(False)),  # SMTEnabled
    )
    value = _der.sequence(
        _der.oid_value_pair(f"{base}.1", _der.octet_string(tcb.ppid)),
        _der.oid_value_pair(f"{base}.2", tcb_seq),
        _der.oid_value_pair(f"{base}.3", _der.octet_string(tcb.pce_id)),
        _der.oid_value_pair(f"{base}.4", _der.octet_string(tcb.fmspc)),
        _der.oid_value_pair(f"{base}.5", _der.enumerated(tcb.sgx_type)),
        _der.oid_value_pair(f"{base}.6", _der.octet_string(tcb.platform_instance_id)),
        _der.oid_value_pair(f"{base}.7", configuration),
    )
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(base), value)


def generate_pki(tcb: PlatformTcb, *, now: dt.datetime, crl_until: dt.datetime) -> SimulatedPki:
    """Generate fresh keys, certificates and CRLs valid around ``now``."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    platform_key = ec.generate_private_key(ec.SECP256R1())
    pck_key = ec.generate_private_key(ec.SECP256R1())
    tcb_key = ec.generate_private_key(ec.SECP256R1())

    root_name = _name("SIMULATED SGX Root CA")
    platform_name = _name("SIMULATED SGX PCK Platform CA")
    root_crl_url = f"{_CRL_BASE_URL}/rootcacrl"
    root_cert = _certificate(
        subject=root_name,
        public_key=root_key.public_key(),
        issuer=root_name,
        issuer_key=root_key,
        now=now,
        path_length=1,
        crl_url=root_crl_url,
    )
    platform_cert = _certificate(
        subject=platform_name,
        public_key=platform_key.public_key(),
        issuer=root_name,
        issuer_key=root_key,
        now=now,
        path_length=0,
        crl_url=root_crl_url,
    )
    pck_cert = _certificate(
        subject=_name("SIMULATED SGX PCK Certificate"),
        public_key=pck_key.public_key(),
        issuer=platform_name,
        issuer_key=platform_key,
        now=now,
        path_length=None,
        crl_url=f"{_CRL_BASE_URL}/pckcrl?ca=platform&encoding=der",
        extra=sgx_extension(tcb),
    )
    tcb_signing_cert = _certificate(
        subject=_name("SIMULATED SGX TCB Signing"),
        public_key=tcb_key.public_key(),
        issuer=root_name,
        issuer_key=root_key,
        now=now,
        path_length=None,
        crl_url=root_crl_url,
    )
    return SimulatedPki(
        root_cert=root_cert,
        platform_ca_cert=platform_cert,
        pck_cert=pck_cert,
        tcb_signing_cert=tcb_signing_cert,
        root_ca_crl_der=_crl(root_name, root_key, now, crl_until),
        pck_crl_der=_crl(platform_name, platform_key, now, crl_until),
        pck_key=pck_key,
        tcb_signing_key=tcb_key,
    )
