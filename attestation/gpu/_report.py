"""NVIDIA GPU attestation reports as NVML returns them (sans-IO: bytes in, values out).

``nvmlDeviceGetConfComputeGpuAttestationReport`` returns the SPDM 1.1 GET_MEASUREMENTS
request the driver sent, immediately followed by the GPU's MEASUREMENTS response::

    request  (37 bytes): SPDMVersion(1) code(1)=0xE0 Param1(1) Param2(1) Nonce(32) SlotID(1)
    response:            SPDMVersion(1) code(1)=0x60 Param1(1) Param2(1)
                         NumberOfBlocks(1) MeasurementRecordLength(3, LE)
                         MeasurementRecord(L1)  Nonce(32)  OpaqueLength(2, LE)
                         OpaqueData(L2)  Signature(96: ECDSA P-384 r || s)

Each measurement block is ``Index(1) MeasurementSpecification(1)=1 (DMTF) Size(2, LE)``
then a DMTF measurement ``ValueType(1) ValueSize(2, LE) Value``. NVIDIA's opaque data is a
list of ``Type(2, LE) Size(2, LE) Value`` fields (driver version, VBIOS version, FWID, ...).

The signature is ECDSA P-384 with SHA-384 over ``request || response`` minus the signature
(the SPDM L1/L2 transcript as NVIDIA's verifier computes it), made with the key of the leaf
certificate of the GPU's device chain. Sources: DMTF DSP0274 (SPDM 1.1) section 10.11, and
the layout documented in NVIDIA's ``nv-local-gpu-verifier`` (``verifier/attestation``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from attestation.errors import GpuReportError

__all__ = [
    "MAX_REPORT_SIZE",
    "NONCE_SIZE",
    "OPAQUE_FIELDS",
    "SIGNATURE_SIZE",
    "GpuReport",
    "GpuReportError",
    "MeasurementBlock",
    "parse_gpu_report",
]

REQUEST_SIZE: Final = 37
NONCE_SIZE: Final = 32
SIGNATURE_SIZE: Final = 96  # ECDSA P-384, r || s
MAX_REPORT_SIZE: Final = 64 * 1024
SPDM_GET_MEASUREMENTS: Final = 0xE0
SPDM_MEASUREMENTS: Final = 0x60
DMTF_MEASUREMENT_SPEC: Final = 1

# NVIDIA's opaque data field types (nv-local-gpu-verifier, OpaqueData.OPAQUE_DATA_TYPES).
OPAQUE_FIELDS: Final[Mapping[int, str]] = MappingProxyType(
    {
        1: "cert_issuer_name",
        2: "cert_authority_key_identifier",
        3: "driver_version",
        4: "gpu_info",
        5: "sku",
        6: "vbios_version",
        7: "manufacturer_id",
        8: "tamper_detection",
        9: "smc",
        10: "vpr",
        11: "nvdec0_status",
        12: "msrscnt",
        13: "cpr_info",
        14: "board_id",
        15: "chip_sku",
        16: "chip_sku_mod",
        17: "project",
        18: "project_sku",
        19: "project_sku_mod",
        20: "fwid",
        21: "protected_pcie_status",
        22: "switch_pdi",
        23: "floorswept_ports",
        24: "position_id",
        25: "lock_switch_status",
        32: "gpu_link_conn",
        33: "sys_enable_status",
        34: "opaque_data_version",
        35: "chip_info",
        36: "feature_flag",
        255: "invalid",
    }
)


@dataclass(frozen=True, slots=True)
class MeasurementBlock:
    index: int  # SPDM measurement index, 1-based as on the wire
    value_type: int  # DMTF DMTFSpecMeasurementValueType
    value: bytes


@dataclass(frozen=True, slots=True)
class GpuReport:
    """A parsed report. ``signed`` is exactly the bytes the signature covers."""

    raw: bytes
    request_version: int
    request_param1: int
    request_param2: int
    request_nonce: bytes
    slot_id: int
    response_version: int
    response_param1: int
    response_param2: int
    blocks: tuple[MeasurementBlock, ...]
    response_nonce: bytes
    opaque: Mapping[int, bytes]  # field type -> raw value (the last one wins; see below)
    signature: bytes
    signed: bytes

    @property
    def measurements(self) -> Mapping[int, bytes]:
        return MappingProxyType({block.index: block.value for block in self.blocks})

    def opaque_text(self, field_type: int) -> str | None:
        value = self.opaque.get(field_type)
        if value is None:
            return None
        return value.split(b"\x00", 1)[0].decode("ascii", "replace").strip()

    @property
    def driver_version(self) -> str | None:
        return self.opaque_text(3)

    @property
    def vbios_version(self) -> str | None:
        """As NVIDIA prints it: ``96.00.9f.00.01`` from the 8-byte little-endian field."""
        value = self.opaque.get(6)
        if value is None or len(value) != 8:
            return None
        digits = value[::-1].hex()  # big-endian hex, 16 digits
        ordered = digits[8:] + digits[6:8]  # low word, then the byte above it
        return ".".join(ordered[i : i + 2] for i in range(0, len(ordered), 2))

    @property
    def fwid(self) -> bytes | None:
        return self.opaque.get(20)

    @property
    def measurement_counts(self) -> tuple[int, ...]:
        value = self.opaque.get(12, b"")
        return tuple(
            int.from_bytes(value[i : i + 4], "little") for i in range(0, len(value) - 3, 4)
        )


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self._data, self._offset, self._what = data, 0, what

    @property
    def offset(self) -> int:
        return self._offset

    def take(self, size: int, field: str) -> bytes:
        end = self._offset + size
        if end > len(self._data):
            raise GpuReportError(f"{self._what} truncated in {field}")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def le(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "little")

    @property
    def remaining(self) -> int:
        return len(self._data) - self._offset


def parse_gpu_report(data: bytes) -> GpuReport:
    """Parse request + response; raise :class:`GpuReportError` on any structural defect."""
    if not isinstance(data, bytes | bytearray):
        raise TypeError("a GPU report is bytes")
    data = bytes(data)
    if len(data) > MAX_REPORT_SIZE:
        raise GpuReportError(f"report larger than {MAX_REPORT_SIZE} bytes")
    if len(data) <= REQUEST_SIZE + SIGNATURE_SIZE:
        raise GpuReportError("report too short for a request, a response and a signature")
    request = _Reader(data[:REQUEST_SIZE], "SPDM request")
    request_version = request.u8("SPDMVersion")
    if request.u8("RequestResponseCode") != SPDM_GET_MEASUREMENTS:
        raise GpuReportError("the request is not SPDM GET_MEASUREMENTS (0xE0)")
    param1, param2 = request.u8("Param1"), request.u8("Param2")
    request_nonce = request.take(NONCE_SIZE, "Nonce")
    slot_id = request.u8("SlotIDParam")

    body = data[REQUEST_SIZE:]
    response = _Reader(body, "SPDM response")
    response_version = response.u8("SPDMVersion")
    if response.u8("RequestResponseCode") != SPDM_MEASUREMENTS:
        raise GpuReportError("the response is not SPDM MEASUREMENTS (0x60)")
    if response_version != request_version:
        raise GpuReportError("request and response SPDM versions differ")
    r_param1, r_param2 = response.u8("Param1"), response.u8("Param2")
    count = response.u8("NumberOfBlocks")
    record = response.take(response.le(3, "MeasurementRecordLength"), "MeasurementRecord")
    blocks = _parse_blocks(record, count)
    response_nonce = response.take(NONCE_SIZE, "Nonce")
    opaque = _parse_opaque(response.take(response.le(2, "OpaqueLength"), "OpaqueData"))
    signed_end = REQUEST_SIZE + response.offset
    signature = response.take(SIGNATURE_SIZE, "Signature")
    # Some drivers (a Hopper in a Confidential Containers guest) hand over the report with
    # zero bytes after the signature. They are not signed and carry nothing: accepted, as
    # NVIDIA's and the Trustee project's verifiers do; any other trailing byte is refused.
    trailing = response.take(response.remaining, "trailing bytes")
    if trailing.count(0) != len(trailing):
        raise GpuReportError(f"{len(trailing)} bytes after the signature, not all zero")
    return GpuReport(
        raw=data,
        request_version=request_version,
        request_param1=param1,
        request_param2=param2,
        request_nonce=request_nonce,
        slot_id=slot_id,
        response_version=response_version,
        response_param1=r_param1,
        response_param2=r_param2,
        blocks=blocks,
        response_nonce=response_nonce,
        opaque=MappingProxyType(opaque),
        signature=signature,
        signed=data[:signed_end],
    )


def _parse_blocks(record: bytes, count: int) -> tuple[MeasurementBlock, ...]:
    reader = _Reader(record, "measurement record")
    blocks: list[MeasurementBlock] = []
    seen: set[int] = set()
    for _ in range(count):
        index = reader.u8("Index")
        if reader.u8("MeasurementSpecification") != DMTF_MEASUREMENT_SPEC:
            raise GpuReportError(f"measurement block {index} is not a DMTF measurement")
        block = _Reader(reader.take(reader.le(2, "MeasurementSize"), "Measurement"), "block")
        value_type = block.u8("DMTFSpecMeasurementValueType")
        value = block.take(block.le(2, "DMTFSpecMeasurementValueSize"), "value")
        if block.remaining:
            raise GpuReportError(f"measurement block {index} has trailing bytes")
        if index in seen:
            raise GpuReportError(f"measurement index {index} appears twice")
        seen.add(index)
        blocks.append(MeasurementBlock(index=index, value_type=value_type, value=value))
    if reader.remaining:
        raise GpuReportError("measurement record longer than its blocks")
    return tuple(blocks)


def _parse_opaque(data: bytes) -> dict[int, bytes]:
    reader = _Reader(data, "opaque data")
    fields: dict[int, bytes] = {}
    while reader.remaining:
        field_type = reader.le(2, "DataType")
        value = reader.take(reader.le(2, "DataSize"), "opaque value")
        if field_type in fields:
            raise GpuReportError(f"opaque field {field_type} appears twice")
        fields[field_type] = value
    return fields
