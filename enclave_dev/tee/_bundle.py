"""``write_bundle``: a simulated quote, its collateral and the simulated root, on disk."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from attestation.errors import QuoteProviderError
from enclave_dev.tee._measurements import SimulatedMeasurements
from enclave_dev.tee._simulator import Simulator

__all__ = ["BUNDLE_REPORT_DATA", "SimulationBundle", "write_bundle"]

#: report_data of bundle quotes: SHA-256("enclave-simulator/bundle") || 32 zero bytes,
#: the same shape as evidence report_data (SHA-256 of a claims buffer, then zeros).
BUNDLE_REPORT_DATA = hashlib.sha256(b"enclave-simulator/bundle").digest() + bytes(32)

QUOTE_FILE = "quote.bin"
COLLATERAL_FILE = "collateral.json"
ROOT_CA_PEM_FILE = "root_ca.pem"
ROOT_CA_DER_FILE = "root_ca.der"
README_FILE = "README.md"


@dataclass(frozen=True)
class SimulationBundle:
    """Paths of the files ``write_bundle`` wrote."""

    quote: Path
    collateral: Path
    root_ca_pem: Path
    root_ca_der: Path
    readme: Path


def _readme(simulator: Simulator) -> str:
    m = simulator.measurements
    rtmrs = "\n".join(f"- RTMR{i}: `{r.hex()}`" for i, r in enumerate(m.rtmrs))
    return f"""# SIMULATED TDX attestation bundle

**Everything here is SIMULATED.** The root certificate (`{ROOT_CA_DER_FILE}`,
`{ROOT_CA_PEM_FILE}`) was generated on the fly by `enclave_dev.tee`; it is NOT
Intel's SGX Root CA, its private key existed only in memory and is gone. Never trust
this root for real evidence, never install it in a trust store, never configure a
production verifier with it. Its only use is trying the verifier and demos.

## Files

- `{QUOTE_FILE}`: a TDX quote, version 4, signed by the simulated PKI
- `{COLLATERAL_FILE}`: its collateral (TDX TCB info, TD QE identity, CRLs, issuer chains)
- `{ROOT_CA_DER_FILE}`, `{ROOT_CA_PEM_FILE}`: the SIMULATED root certificate

## Verify

The collateral is valid from an hour before `{simulator.now}` until
`{simulator.collateral_next_update}` (Unix time); pass a `--now` inside that window:

    enclave attest verify-quote --quote {QUOTE_FILE} --collateral {COLLATERAL_FILE} \\
        --root-ca {ROOT_CA_DER_FILE} --now {simulator.now}

Without `--root-ca` the verifier uses Intel's root and rejects this quote, as it must.

## What the quote says

- TCB status: UpToDate; FMSPC `{simulator.fmspc.hex().upper()}`
- MRTD: `{m.mrtd.hex()}`
{rtmrs}
- MRCONFIGID: `{m.mrconfigid.hex()}`
- report_data: `{BUNDLE_REPORT_DATA.hex()}`
"""


def write_bundle(
    out_dir: Path,
    *,
    mrtd: bytes | None = None,
    rtmrs: Sequence[bytes] | None = None,
    now: int | None = None,
) -> SimulationBundle:
    """Write a simulated quote (report_data ``BUNDLE_REPORT_DATA``), its collateral, the
    simulated root (PEM and DER) and a README into ``out_dir`` (created if missing).
    No private key is written."""
    defaults = SimulatedMeasurements()
    if rtmrs is not None:
        given = tuple(rtmrs)
        if len(given) != 4:
            raise ValueError("rtmrs must be a sequence of four 48-byte values")
        rtmr_values = (given[0], given[1], given[2], given[3])
    else:
        rtmr_values = defaults.rtmrs
    measurements = SimulatedMeasurements(
        mrtd=defaults.mrtd if mrtd is None else mrtd,
        rtmrs=rtmr_values,
    )
    simulator = Simulator.create(measurements=measurements, now=now)
    bundle = SimulationBundle(
        quote=out_dir / QUOTE_FILE,
        collateral=out_dir / COLLATERAL_FILE,
        root_ca_pem=out_dir / ROOT_CA_PEM_FILE,
        root_ca_der=out_dir / ROOT_CA_DER_FILE,
        readme=out_dir / README_FILE,
    )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        bundle.quote.write_bytes(simulator.quote(BUNDLE_REPORT_DATA))
        bundle.collateral.write_text(simulator.collateral_json(), encoding="utf-8")
        bundle.root_ca_pem.write_bytes(simulator.root_ca_pem)
        bundle.root_ca_der.write_bytes(simulator.root_ca_der)
        bundle.readme.write_text(_readme(simulator), encoding="utf-8")
    except OSError as exc:
        raise QuoteProviderError(f"cannot write the simulation bundle: {exc.strerror}") from exc
    return bundle
