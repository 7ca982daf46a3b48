"""The VM shape: what the host decides (CPUs, memory, firmware, devices) and RTMR0 from it.

A shape file (TOML) describes one VM shape a release supports; ``enclave measure`` computes
RTMR0 from it (and MRTD from the firmware)::

    name = "4 vCPUs, 16 GiB, OVMF edk2-stable202502 (Debian 2025.02-8)"
    cpus = 4
    memory = 17179869184                  # bytes
    firmware_version = "edk2-stable202502"
    page_order = "single-pass"            # how the VMM adds TDVF's pages (MRTD)
    mrtd = ["<96 hex>"]                   # only when the firmware file is not given

    [rtmr0]
    # from the firmware (computed when --firmware is given, else required here):
    td_hob = "<96 hex>"                   # SHA-384 of the TD HOB (memory map)
    cfv = "<96 hex>"                      # SHA-384 of the firmware's CFV
    # captured once from QEMU for this shape (CPUs, memory and devices change them):
    acpi_loader = "<96 hex>"              # SHA-384 of fw_cfg etc/table-loader
    acpi_rsdp = "<96 hex>"                # ... etc/acpi/rsdp
    acpi_tables = "<96 hex>"              # ... etc/acpi/tables
    boot_order = "0000"                   # BootOrder's bytes (hex)
    boot_options = ["<96 hex>"]           # SHA-384 of each Boot#### the firmware measures

Unknown keys are an error. The RTMR0 events, in TDVF's order: TD HOB, CFV, the Secure Boot
variables (unset), the separator, the three ACPI blobs, BootOrder, the boot options.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from attestation.measure._boot import secure_boot_events
from attestation.measure._events import MeasuredEvent, separator, sha384
from attestation.measure._tdvf import (
    PAGE_ORDERS,
    MeasureError,
    PageOrder,
    accepted_sections,
    cfv_digest,
    parse_tdvf,
    td_hob,
)

__all__ = ["VmShape", "load_shape", "rtmr0_events"]

_TOP = {"name", "cpus", "memory", "firmware_version", "page_order", "mrtd", "rtmr0"}
_RTMR0 = {
    "td_hob",
    "cfv",
    "acpi_loader",
    "acpi_rsdp",
    "acpi_tables",
    "boot_order",
    "boot_options",
}


@dataclass(frozen=True, slots=True)
class VmShape:
    name: str
    cpus: int
    memory: int
    firmware_version: str
    page_order: PageOrder
    mrtd: tuple[bytes, ...]
    td_hob: bytes | None
    cfv: bytes | None
    acpi_loader: bytes
    acpi_rsdp: bytes
    acpi_tables: bytes
    boot_order: bytes
    boot_options: tuple[bytes, ...]


def _digest(value: object, key: str) -> bytes:
    if not isinstance(value, str):
        raise MeasureError(f"shape: {key} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise MeasureError(f"shape: {key} is not hex: {exc}") from exc
    if len(raw) != 48:
        raise MeasureError(f"shape: {key} must be a SHA-384 digest (96 hex digits)")
    return raw


def _integer(value: object, key: str) -> int:
    if type(value) is not int or value <= 0:
        raise MeasureError(f"shape: {key} must be a positive integer")
    return value


def load_shape(text: str) -> VmShape:
    """Parse a shape file; ``MeasureError`` if it is not one."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MeasureError(f"shape: not TOML: {exc}") from exc
    unknown = set(data) - _TOP
    rtmr0 = data.get("rtmr0", {})
    if not isinstance(rtmr0, dict):
        raise MeasureError("shape: [rtmr0] must be a table")
    unknown |= {f"rtmr0.{key}" for key in set(rtmr0) - _RTMR0}
    if unknown:
        raise MeasureError(f"shape: unknown keys {sorted(unknown)}")
    order = data.get("page_order", "single-pass")
    if order not in PAGE_ORDERS:
        raise MeasureError(f"shape: page_order is one of {PAGE_ORDERS}")
    for key in ("acpi_loader", "acpi_rsdp", "acpi_tables", "boot_order", "boot_options"):
        if key not in rtmr0:
            raise MeasureError(f"shape: [rtmr0] {key} is required (captured for this shape)")
    options = rtmr0["boot_options"]
    if not isinstance(options, list):
        raise MeasureError("shape: boot_options must be a list")
    mrtd = data.get("mrtd", [])
    if not isinstance(mrtd, list):
        raise MeasureError("shape: mrtd must be a list")
    try:
        boot_order = bytes.fromhex(str(rtmr0["boot_order"]))
    except ValueError as exc:
        raise MeasureError(f"shape: boot_order is not hex: {exc}") from exc
    return VmShape(
        name=str(data.get("name", "")),
        cpus=_integer(data.get("cpus"), "cpus"),
        memory=_integer(data.get("memory"), "memory"),
        firmware_version=str(data.get("firmware_version", "")),
        page_order=order,
        mrtd=tuple(_digest(item, "mrtd") for item in mrtd),
        td_hob=_digest(rtmr0["td_hob"], "td_hob") if "td_hob" in rtmr0 else None,
        cfv=_digest(rtmr0["cfv"], "cfv") if "cfv" in rtmr0 else None,
        acpi_loader=_digest(rtmr0["acpi_loader"], "acpi_loader"),
        acpi_rsdp=_digest(rtmr0["acpi_rsdp"], "acpi_rsdp"),
        acpi_tables=_digest(rtmr0["acpi_tables"], "acpi_tables"),
        boot_order=boot_order,
        boot_options=tuple(_digest(item, "boot_options") for item in options),
    )


def rtmr0_events(shape: VmShape, firmware: bytes | None = None) -> tuple[MeasuredEvent, ...]:
    """RTMR0 for ``shape``; the TD HOB and the CFV from ``firmware`` when given (then they
    must agree with the shape file's, if it has them)."""
    hob_digest, cfv = shape.td_hob, shape.cfv
    hob_source = cfv_source = "shape file"
    if firmware is not None:
        accepted, address = accepted_sections(parse_tdvf(firmware))
        computed_hob = sha384(td_hob(accepted, shape.memory, address))
        computed_cfv = cfv_digest(firmware)
        for name, stated, computed in (
            ("td_hob", hob_digest, computed_hob),
            ("cfv", cfv, computed_cfv),
        ):
            if stated is not None and stated != computed:
                raise MeasureError(f"shape: {name} differs from the one computed from the firmware")
        hob_digest, cfv = computed_hob, computed_cfv
        hob_source = cfv_source = "firmware"
    if hob_digest is None or cfv is None:
        raise MeasureError("shape: td_hob and cfv are needed without --firmware")
    memory = f"{shape.memory} bytes"
    return (
        MeasuredEvent(1, f"TD HOB, {memory} ({hob_source})", hob_digest),
        MeasuredEvent(1, f"EV_EFI_PLATFORM_FIRMWARE_BLOB2 CFV ({cfv_source})", cfv),
        *secure_boot_events(),
        MeasuredEvent(1, "EV_SEPARATOR", separator()),
        MeasuredEvent(1, "EV_PLATFORM_CONFIG_FLAGS acpi-loader (captured)", shape.acpi_loader),
        MeasuredEvent(1, "EV_PLATFORM_CONFIG_FLAGS acpi-rsdp (captured)", shape.acpi_rsdp),
        MeasuredEvent(1, "EV_PLATFORM_CONFIG_FLAGS acpi-tables (captured)", shape.acpi_tables),
        MeasuredEvent(
            1, f"EV_EFI_VARIABLE_BOOT BootOrder {shape.boot_order.hex()}", sha384(shape.boot_order)
        ),
        *(
            MeasuredEvent(1, f"EV_EFI_VARIABLE_BOOT boot option {index} (captured)", digest)
            for index, digest in enumerate(shape.boot_options)
        ),
    )
