"""Attacks on the GPU certificate chain checks (``attestation.gpu._certs``), for the mutation
check: each builds a simulated GPU whose chain has one defect and verifies its report, so it
raises ``VerificationError`` with the check's reason, and verifies (or fails some other way)
once that check is disabled."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.gpu import verify_gpu_report
from enclave_dev.gpu import GpuSimulator
from enclave_dev.gpu import _simulator as _sim

NONCE = bytes(range(32))


def disable(module: str, name: str) -> Callable[[pytest.MonkeyPatch], None]:
    """Replace ``module.name`` (a check) by one that passes everything."""
    return lambda monkeypatch: monkeypatch.setattr(f"{module}.{name}", lambda *a, **k: None)


def _pem(chain: tuple[x509.Certificate, ...]) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in chain)


def _verify(sim: GpuSimulator, *, root: bool = True, now: dt.datetime | None = None) -> object:
    return verify_gpu_report(
        sim.report(0, NONCE),
        sim.chain_pem(0),
        nonce=NONCE,
        now=now,
        insecure_root_der=sim.root_der if root else None,
    )


def foreign_root() -> object:
    """A chain to a root that is not the pinned one (here the simulated root, not trusted)."""
    return _verify(GpuSimulator(), root=False)


def issued_by_a_leaf() -> object:
    """The report's signing certificate issued by a certificate that is not a CA."""
    sim = GpuSimulator()
    now = dt.datetime.now(dt.UTC)
    not_ca_key = ec.generate_private_key(ec.SECP384R1())
    not_ca = _sim._issue(
        "SIMULATED GH100 not a CA", not_ca_key, sim._root, sim._root_key, ca=False, now=now
    )
    device = sim._devices[0]
    leaf_key = ec.generate_private_key(ec.SECP384R1())
    leaf = _sim._issue(
        "SIMULATED GH100 GSP FMC LF 0",
        leaf_key,
        not_ca,
        not_ca_key,
        ca=False,
        now=now,
        extra=(_sim._fwid_extension("hopper", device.fwid),),
    )
    sim._devices[0] = _sim._Device(key=leaf_key, chain=(leaf, not_ca, sim._root), fwid=device.fwid)
    return _verify(sim)


def forged_signature() -> object:
    """A signing certificate naming the real issuer, signed by another key."""
    sim = GpuSimulator()
    device = sim._devices[0]
    ica = device.chain[1]
    leaf_key = ec.generate_private_key(ec.SECP384R1())
    leaf = _sim._issue(
        "SIMULATED GH100 GSP FMC LF 0",
        leaf_key,
        ica,
        ec.generate_private_key(ec.SECP384R1()),
        ca=False,
        now=dt.datetime.now(dt.UTC),
        extra=(_sim._fwid_extension("hopper", device.fwid),),
    )
    sim._devices[0] = _sim._Device(key=leaf_key, chain=(leaf, ica, sim._root), fwid=device.fwid)
    return _verify(sim)


def expired() -> object:
    """A chain checked at a time before its certificates are valid."""
    return _verify(GpuSimulator(), now=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
