"""A simulated Intel TDX platform whose quotes the real dcap-qvl verifies.

``Simulator.create()`` generates, in memory, an Intel-like PKI (a SIMULATED root CA, a PCK
Platform CA, a PCK certificate carrying the SGX extension, a TCB-signing certificate and
CRLs), a quoting enclave with an attestation key, and matching collateral (TDX TCB info,
TD QE identity). Its quotes are structurally real TDX v4 quotes::

    sim = Simulator.create()
    quote = sim.quote(report_data)                      # 64 bytes in, quote out
    dcap_qvl.verify_with_root_ca(quote, sim.collateral(), sim.root_ca_der, sim.now)

``tcb="OutOfDate"`` gives collateral under which dcap-qvl reports ``OutOfDate``, so that
status policy can be tested. The simulated root is never Intel's: ``dcap_qvl.verify``
(Intel's root) rejects every simulated quote, and nothing may trust the simulated root by
default. Private keys never leave memory.
"""

from enclave_dev.tee._bundle import BUNDLE_REPORT_DATA, SimulationBundle, write_bundle
from enclave_dev.tee._measurements import (
    DEFAULT_TD_ATTRIBUTES,
    DEFAULT_XFAM,
    SimulatedMeasurements,
    default_measurement,
)
from enclave_dev.tee._provider import SIMULATED_TEE_WARNING, QuoteSimulator, SimulatedQuoteProvider
from enclave_dev.tee._simulator import SIMULATED_FMSPC, Simulator

__all__ = [
    "BUNDLE_REPORT_DATA",
    "DEFAULT_TD_ATTRIBUTES",
    "DEFAULT_XFAM",
    "SIMULATED_FMSPC",
    "SIMULATED_TEE_WARNING",
    "QuoteSimulator",
    "SimulatedMeasurements",
    "SimulatedQuoteProvider",
    "SimulationBundle",
    "Simulator",
    "default_measurement",
    "write_bundle",
]
