"""RTMR1 and RTMR2 for the two ways the image boots, and RTMR0 from the VM shape.

**Direct kernel boot** (QEMU ``-kernel/-initrd/-append`` with TDVF, as dstack and Kata boot):
QEMU patches the kernel's setup header before handing it over (loader type, heap end, command
line address, the initrd's address and size: :func:`qemu_patched_kernel`), TDVF's kernel
loader runs it as an EFI application and measures:

* RTMR1 (PCR 4, 5): the patched kernel's Authenticode SHA-384 (zero-padded to 8 bytes),
  "Calling EFI Application from Boot Option", the separator, and the two ExitBootServices
  actions;
* RTMR2 (PCR 8, 9): the command line (UTF-16LE with its NUL), then the initrd (SHA-384).

**A UKI booted from disk** by the firmware (systemd-stub): the firmware measures the UKI's
Authenticode digest (PCR 4 -> RTMR1) when it loads it from the ESP, and the kernel's when
systemd-stub (>= 253) hands its ``.linux`` section to LoadImage; systemd-stub measures every
UKI section it uses into PCR 11 (-> RTMR2), in its fixed order, each as two EV_IPL events: the
section name with its NUL, then the section's bytes (VirtualSize).

**RTMR0** is the firmware's and the VMM's (:class:`attestation.measure.VmShape`): the TD HOB
(memory map), the CFV (firmware configuration), the Secure Boot variables, the separator, the
three ACPI blobs QEMU generates for this VM shape (CPUs, memory, devices), BootOrder and the
boot options.
"""

from __future__ import annotations

import hashlib

from attestation.measure._events import (
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    MeasuredEvent,
    efi_variable,
    sha384,
    utf16_cmdline,
)
from attestation.measure._pe import authenticode_digest, parse_pe
from attestation.measure._tdvf import LOW_MEMORY_SPLIT, MeasureError

__all__ = [
    "ACPI_DATA_SIZE",
    "UKI_SECTIONS",
    "direct_kernel_digest_events",
    "direct_kernel_events",
    "firmware_boot_events",
    "qemu_patched_kernel",
    "secure_boot_events",
    "uki_events",
]

#: QEMU's ACPI data reservation below the top of low memory for a TDX guest (bytes).
ACPI_DATA_SIZE = 0x28000
#: The sections systemd-stub (254) measures into PCR 11, in the order it measures them
#: (``.pcrsig`` is not measured: it signs the result).
UKI_SECTIONS = (
    ".linux",
    ".osrel",
    ".cmdline",
    ".initrd",
    ".splash",
    ".dtb",
    ".uname",
    ".sbat",
    ".pcrpkey",
)
_CALLING = "Calling EFI Application from Boot Option"
_EXIT_BOOT_SERVICES = ("Exit Boot Services Invocation", "Exit Boot Services Returned with Success")


def _setup_u16(kernel: bytearray, offset: int) -> int:
    return int.from_bytes(kernel[offset : offset + 2], "little")


def _setup_u32(kernel: bytearray, offset: int) -> int:
    return int.from_bytes(kernel[offset : offset + 4], "little")


def _put_u32(kernel: bytearray, offset: int, value: int) -> None:
    kernel[offset : offset + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")


def qemu_patched_kernel(
    kernel: bytes, initrd_size: int, memory_size: int, acpi_data_size: int = ACPI_DATA_SIZE
) -> bytes:
    """The kernel image as QEMU leaves it for the firmware (Linux x86 boot protocol setup
    header, Documentation/arch/x86/boot.rst): QEMU's loader type, the heap end and command
    line address for the protocol version, and the initrd's address (placed at the top of the
    memory it may use, 4 KiB aligned) and size."""
    if len(kernel) < 0x1000:
        raise MeasureError("the kernel image is too short to be a bzImage")
    image = bytearray(kernel)
    protocol = _setup_u16(image, 0x206)
    high = protocol >= 0x200 and image[0x211] & 0x01
    real_address, cmdline_address = (0x10000, 0x20000) if high else (0x90000, 0x9A000)
    if protocol >= 0x200:
        image[0x210] = 0xB0  # type_of_loader: QEMU
    if protocol >= 0x201:
        image[0x211] |= 0x80  # CAN_USE_HEAP
        heap_end = cmdline_address - real_address - 0x200
        image[0x224:0x226] = heap_end.to_bytes(2, "little")  # heap_end_ptr
    if protocol >= 0x202:
        _put_u32(image, 0x228, cmdline_address)  # cmd_line_ptr
    else:
        image[0x20:0x22] = (0xA33F).to_bytes(2, "little")
        image[0x22:0x24] = (cmdline_address - real_address).to_bytes(2, "little")
    if initrd_size:
        if protocol < 0x200:
            raise MeasureError("the kernel's boot protocol is too old for an initrd")
        if protocol >= 0x20C and _setup_u16(image, 0x236) & 0x40:  # XLF_CAN_BE_LOADED_ABOVE_4G
            initrd_max = 0xFFFFFFFF
        elif protocol >= 0x203:
            initrd_max = _setup_u32(image, 0x22C) or 0x37FFFFFF
        else:
            initrd_max = 0x37FFFFFF
        low_memory = 0x80000000 if memory_size >= LOW_MEMORY_SPLIT else LOW_MEMORY_SPLIT
        below_4g = min(memory_size, low_memory)
        if acpi_data_size >= below_4g:
            raise MeasureError("the ACPI data does not fit in the guest's memory")
        initrd_max = min(initrd_max, below_4g - acpi_data_size - 1)
        if initrd_size >= initrd_max:
            raise MeasureError("the initrd does not fit below the kernel's initrd limit")
        _put_u32(image, 0x218, (initrd_max - initrd_size) & ~0xFFF)  # ramdisk_image
        _put_u32(image, 0x21C, initrd_size)  # ramdisk_size
    return bytes(image)


def firmware_boot_events(
    application: list[MeasuredEvent],
    algorithm: str = "sha384",
    *,
    loaded_before_boot_manager: bool = False,
) -> tuple[MeasuredEvent, ...]:
    """RTMR1 as the firmware extends it around the EFI applications it runs: at ReadyToBoot
    "Calling EFI Application from Boot Option" and the separator, then the applications the
    boot option loads, and at ExitBootServices its two actions. A kernel QEMU hands over for
    a direct boot is loaded (and measured) before ReadyToBoot
    (``loaded_before_boot_manager``). Every boot option that fails before the one that boots
    adds "Returning from EFI Application from Boot Option" and another "Calling ...": a shape
    must boot its first option."""

    def digest(data: bytes) -> bytes:
        return hashlib.new(algorithm, data).digest()

    ready_to_boot = (
        MeasuredEvent(4, f"EV_EFI_ACTION {_CALLING!r}", digest(_CALLING.encode())),
        MeasuredEvent(4, "EV_SEPARATOR", digest(bytes(4))),
    )
    exit_boot_services = tuple(
        MeasuredEvent(5, f"EV_EFI_ACTION {text!r}", digest(text.encode()))
        for text in _EXIT_BOOT_SERVICES
    )
    if loaded_before_boot_manager:
        return (*application, *ready_to_boot, *exit_boot_services)
    return (*ready_to_boot, *application, *exit_boot_services)


def direct_kernel_events(
    kernel: bytes,
    initrd: bytes,
    cmdline: str,
    memory_size: int,
    acpi_data_size: int = ACPI_DATA_SIZE,
) -> tuple[MeasuredEvent, ...]:
    """RTMR1 and RTMR2 of a direct kernel boot."""
    patched = qemu_patched_kernel(kernel, len(initrd), memory_size, acpi_data_size)
    return direct_kernel_digest_events(
        authenticode_digest(patched, "sha384", pad_to=8),
        utf16_cmdline(cmdline),
        sha384(initrd),
        cmdline=repr(cmdline),
        initrd=f"{len(initrd)} bytes",
    )


def direct_kernel_digest_events(
    kernel_authenticode: bytes,
    cmdline_digest: bytes,
    initrd_digest: bytes,
    *,
    cmdline: str = "(digest given)",
    initrd: str = "(digest given)",
) -> tuple[MeasuredEvent, ...]:
    """The same events from the three digests (as an image's published measurement gives
    them, without the files)."""
    kernel_event = MeasuredEvent(
        4,
        "EV_EFI_BOOT_SERVICES_APPLICATION kernel (QEMU-patched setup header), Authenticode",
        kernel_authenticode,
    )
    return (
        *firmware_boot_events([kernel_event], loaded_before_boot_manager=True),
        MeasuredEvent(8, f"EV_EVENT_TAG kernel command line {cmdline}", cmdline_digest),
        MeasuredEvent(9, f"EV_EVENT_TAG initrd {initrd}", initrd_digest),
    )


def uki_events(
    uki: bytes, *, kernel_measures_initrd: bool = False, algorithm: str = "sha384"
) -> tuple[MeasuredEvent, ...]:
    """RTMR1 and RTMR2 of a UKI booted from disk by the firmware (systemd-stub).

    ``kernel_measures_initrd``: the kernel's EFI stub also measures the command line it was
    given (LoadOptions: UTF-16LE with its NUL) and the initrd into PCR 9 (-> RTMR2), as Linux
    does through TCG2 and, in newer kernels than Debian 12's 6.1, through the CC protocol too.
    ``algorithm``: the digest (``sha256`` compares with a TPM's SHA-256 bank)."""

    def digest(data: bytes) -> bytes:
        return hashlib.new(algorithm, data).digest()

    image = parse_pe(uki)
    linux = image.section(".linux")
    if linux is None:
        raise MeasureError("not a UKI: no .linux section")
    loaded = [
        MeasuredEvent(
            4,
            "EV_EFI_BOOT_SERVICES_APPLICATION UKI, Authenticode",
            authenticode_digest(uki, algorithm),
        ),
        MeasuredEvent(
            4,
            "EV_EFI_BOOT_SERVICES_APPLICATION .linux (kernel) via LoadImage, Authenticode",
            authenticode_digest(linux, algorithm),
        ),
    ]
    stub: list[MeasuredEvent] = []
    for name in UKI_SECTIONS:
        data = image.section(name)
        if data is None:
            continue
        stub.append(MeasuredEvent(11, f"EV_IPL section name {name}", digest(name.encode() + b"\0")))
        stub.append(MeasuredEvent(11, f"EV_IPL section {name} ({len(data)} bytes)", digest(data)))
    cmdline, initrd = image.section(".cmdline"), image.section(".initrd")
    if kernel_measures_initrd and cmdline is not None:
        options = cmdline.decode("utf-8", "replace").encode("utf-16-le") + b"\0\0"
        stub.append(MeasuredEvent(9, "EV_EVENT_TAG LOADED_IMAGE::LoadOptions", digest(options)))
    if kernel_measures_initrd and initrd is not None:
        stub.append(MeasuredEvent(9, "EV_EVENT_TAG Linux initrd", digest(initrd)))
    return (*firmware_boot_events(loaded, algorithm), *stub)


def secure_boot_events() -> tuple[MeasuredEvent, ...]:
    """The Secure Boot configuration TDVF measures (PCR 7): the five variables, here unset
    (Secure Boot off, nothing enrolled), as OVMF's TDX builds ship."""
    variables = (
        (EFI_GLOBAL_VARIABLE, "SecureBoot"),
        (EFI_GLOBAL_VARIABLE, "PK"),
        (EFI_GLOBAL_VARIABLE, "KEK"),
        (EFI_IMAGE_SECURITY_DATABASE, "db"),
        (EFI_IMAGE_SECURITY_DATABASE, "dbx"),
    )
    return tuple(
        MeasuredEvent(7, f"EV_EFI_VARIABLE_DRIVER_CONFIG {name} (unset)", efi_variable(guid, name))
        for guid, name in variables
    )
