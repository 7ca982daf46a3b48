"""Expected TDX measurements from source: MRTD, RTMR0 (the VM shape), RTMR1/RTMR2 (the image).

``enclave measure`` (enclave/cli/_measure.py) is the command; this package does the
computation, every event kept so a mismatch can be read register by register:

- :mod:`._tdvf`: the firmware (TDVF metadata, MRTD, the TD HOB, the CFV);
- :mod:`._pe`: PE images and their Authenticode digest;
- :mod:`._events`: the EFI CC mapping of PCRs to RTMRs and the fixed event digests;
- :mod:`._boot`: RTMR1/RTMR2 of a direct kernel boot and of a UKI booted from disk;
- :mod:`._shape`: the VM shape file and RTMR0.
"""

from attestation.measure._boot import (
    ACPI_DATA_SIZE,
    UKI_SECTIONS,
    direct_kernel_digest_events,
    direct_kernel_events,
    firmware_boot_events,
    qemu_patched_kernel,
    secure_boot_events,
    uki_events,
)
from attestation.measure._events import MeasuredEvent, register_of_pcr, replay
from attestation.measure._pe import PeImage, authenticode_digest, parse_pe
from attestation.measure._shape import VmShape, load_shape, rtmr0_events
from attestation.measure._tdvf import (
    PAGE_ORDERS,
    MeasureError,
    PageOrder,
    TdvfSection,
    accepted_sections,
    cfv_digest,
    compute_mrtd,
    parse_tdvf,
    td_hob,
)

__all__ = [
    "ACPI_DATA_SIZE",
    "PAGE_ORDERS",
    "UKI_SECTIONS",
    "MeasureError",
    "MeasuredEvent",
    "PageOrder",
    "PeImage",
    "TdvfSection",
    "VmShape",
    "accepted_sections",
    "authenticode_digest",
    "cfv_digest",
    "compute_mrtd",
    "direct_kernel_digest_events",
    "direct_kernel_events",
    "firmware_boot_events",
    "load_shape",
    "parse_pe",
    "parse_tdvf",
    "qemu_patched_kernel",
    "register_of_pcr",
    "replay",
    "rtmr0_events",
    "secure_boot_events",
    "td_hob",
    "uki_events",
]
