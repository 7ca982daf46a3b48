"""TDX event logs: parse them, replay RTMR0-3 from them, and check them against a quote.

Two formats are understood:

* dstack's JSON event log (what the dstack guest agent's ``GetQuote`` returns as the string
  ``event_log``): a list of objects with ``imr`` (0..3, zero-based: RTMR0..3), ``event_type``,
  ``digest`` (hex SHA-384), ``event`` (a name) and ``event_payload`` (hex).
* the CCEL log area (``/sys/firmware/acpi/tables/data/CCEL``): a TCG2 crypto-agile event log,
  one ``TCG_PCR_EVENT`` header carrying the ``Spec ID Event03`` structure, then
  ``TCG_PCR_EVENT2`` records with ``TPML_DIGEST_VALUES``. Their "PCR index" is the CC
  measurement-register index of UEFI 2.10 section 38.4.1: 0 is MRTD, 1..4 are RTMR0..3.

Replay: every RTMR starts at 48 zero bytes and each event extends it:
``rtmr = SHA-384(rtmr || digest)``. MRTD is built by the TDX module, not by extends, so CCEL
records for MR index 0 are not events here; ``EV_NO_ACTION`` records are never extended (TCG
PC Client firmware profile) and are dropped too. Every :class:`Event` in an :class:`EventLog`
therefore contributes to the replay, and nothing the replay does not bind is exposed.

dstack runtime events (``event_type`` 0x08000001, extended into RTMR3 by the guest agent)
carry a name and payload whose digest is defined by dstack: SHA-384 over
``event_type (u32 LE) || ":" || name || ":" || payload`` (version 1) or over the canonical JSON
``{"event":..,"event_type":134217729,"payload":"<hex>","version":2}`` (version 2). The parser
recomputes it and refuses an entry whose digest does not commit to its name and payload, so a
policy may read the names and payloads of runtime events. For other events only the digest is
bound; their payload is informational.

Malformed logs raise :class:`~attestation.errors.EvidenceError`; a log whose replay differs
from the quote's RTMRs raises :class:`~attestation.errors.VerificationError` with reason
``event_log_mismatch``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from attestation.errors import EvidenceError, VerificationError
from attestation.reasons import Reason

__all__ = [
    "DSTACK_RUNTIME_EVENT_TYPE",
    "EV_NO_ACTION",
    "MAX_EVENTS",
    "MAX_EVENT_DATA_BYTES",
    "MAX_LOG_BYTES",
    "RTMR_COUNT",
    "RTMR_SIZE",
    "Event",
    "EventLog",
    "parse_ccel",
    "parse_dstack_event_log",
    "replay_rtmrs",
    "runtime_event_digest",
    "verify_event_log",
]

RTMR_COUNT = 4
RTMR_SIZE = 48  # SHA-384
EV_NO_ACTION = 0x3
DSTACK_RUNTIME_EVENT_TYPE = 0x08000001

# Named limits: a log larger than these is refused as malformed rather than processed.
MAX_LOG_BYTES = 16 * 1024 * 1024
MAX_EVENTS = 65_536
MAX_EVENT_DATA_BYTES = 1024 * 1024

_U32_MAX = 0xFFFFFFFF
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


@dataclass(frozen=True)
class Event:
    """One measurement extended into an RTMR.

    ``imr`` is 0..3 for RTMR0..3; ``digest`` is the 48-byte SHA-384 value that was extended;
    ``event`` is a name (dstack runtime events; empty otherwise); ``payload`` the event data.
    """

    imr: int
    event_type: int
    digest: bytes
    event: str = ""
    payload: bytes = b""

    def __post_init__(self) -> None:
        if isinstance(self.imr, bool) or not isinstance(self.imr, int):
            raise EvidenceError("event imr must be an integer")
        if not 0 <= self.imr < RTMR_COUNT:
            raise EvidenceError(f"event imr {self.imr} is not an RTMR index (0..3)")
        if isinstance(self.event_type, bool) or not isinstance(self.event_type, int):
            raise EvidenceError("event type must be an integer")
        if not 0 <= self.event_type <= _U32_MAX:
            raise EvidenceError("event type does not fit in 32 bits")
        if not isinstance(self.digest, bytes) or len(self.digest) != RTMR_SIZE:
            raise EvidenceError("event digest must be 48 bytes (SHA-384)")
        if not isinstance(self.event, str) or not isinstance(self.payload, bytes):
            raise EvidenceError("event name must be str and payload bytes")


@dataclass(frozen=True)
class EventLog:
    """A parsed event log. ``raw`` keeps the bytes it was parsed from, to serve them again."""

    events: tuple[Event, ...]
    format: Literal["dstack", "ccel"]
    raw: bytes = field(default=b"", repr=False, compare=False)

    def replay(self) -> tuple[bytes, bytes, bytes, bytes]:
        """The RTMR0..3 values this log replays to."""
        return replay_rtmrs(self.events)

    def named(self, name: str) -> tuple[Event, ...]:
        """The events called ``name`` (dstack runtime events such as ``compose-hash``)."""
        return tuple(e for e in self.events if e.event == name)


def replay_rtmrs(events: Iterable[Event]) -> tuple[bytes, bytes, bytes, bytes]:
    """Replay ``events`` from zeroed registers: ``rtmr = SHA-384(rtmr || digest)``."""
    rtmrs = [bytes(RTMR_SIZE)] * RTMR_COUNT
    for event in events:
        rtmrs[event.imr] = hashlib.sha384(rtmrs[event.imr] + event.digest).digest()
    return rtmrs[0], rtmrs[1], rtmrs[2], rtmrs[3]


def verify_event_log(log: EventLog, rtmrs: Sequence[bytes]) -> None:
    """Require ``log`` to replay to exactly ``rtmrs`` (RTMR0..3 taken from a verified quote).

    Raises ``VerificationError(Reason.EVENT_LOG_MISMATCH, ...)`` naming every register that differs.
    """
    if len(rtmrs) != RTMR_COUNT or any(len(r) != RTMR_SIZE for r in rtmrs):
        raise ValueError("rtmrs must be four 48-byte values (RTMR0..3)")
    replayed = log.replay()
    differing = [
        f"RTMR{i}"
        for i, (ours, theirs) in enumerate(zip(replayed, rtmrs, strict=True))
        if not hmac.compare_digest(ours, bytes(theirs))
    ]
    if differing:
        raise VerificationError(
            Reason.EVENT_LOG_MISMATCH,
            f"replayed {', '.join(differing)} differ from the quote",
        )


def runtime_event_digest(name: str, payload: bytes, version: int = 1) -> bytes:
    """The SHA-384 digest dstack extends into RTMR3 for a runtime event (version 1 or 2)."""
    if version == 1:
        try:
            encoded_name = name.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EvidenceError("runtime event name is not valid UTF-8") from exc
        preimage = (
            struct.pack("<I", DSTACK_RUNTIME_EVENT_TYPE) + b":" + encoded_name + b":" + payload
        )
    elif version == 2:
        canonical = json.dumps(
            {
                "event": name,
                "event_type": DSTACK_RUNTIME_EVENT_TYPE,
                "payload": payload.hex(),
                "version": 2,
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        try:
            preimage = canonical.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EvidenceError("runtime event name is not valid UTF-8") from exc
    else:
        raise EvidenceError(f"unknown dstack event log version {version}")
    return hashlib.sha384(preimage).digest()


# --- dstack JSON ---------------------------------------------------------------------------


def parse_dstack_event_log(data: str | bytes) -> EventLog:
    """Parse dstack's JSON event log (the ``event_log`` string of a ``GetQuote`` reply)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_LOG_BYTES:
        raise EvidenceError("event log exceeds MAX_LOG_BYTES")
    try:
        decoded = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EvidenceError("event log is not valid JSON") from exc
    if not isinstance(decoded, list):
        raise EvidenceError("event log must be a JSON array")
    if len(decoded) > MAX_EVENTS:
        raise EvidenceError("event log exceeds MAX_EVENTS")
    events = tuple(_dstack_event(i, item) for i, item in enumerate(decoded))
    return EventLog(events=events, format="dstack", raw=raw)


def _dstack_event(index: int, item: object) -> Event:
    if not isinstance(item, dict):
        raise EvidenceError(f"event {index} is not a JSON object")
    imr = _json_int(item, "imr", index)
    event_type = _json_int(item, "event_type", index)
    name = item.get("event", "")
    if not isinstance(name, str):
        raise EvidenceError(f"event {index}: 'event' must be a string")
    payload = _json_hex(item, "event_payload", index)
    digest = _json_hex(item, "digest", index)
    if event_type == DSTACK_RUNTIME_EVENT_TYPE:
        digest = _checked_runtime_digest(index, item, name, payload, digest)
    elif len(digest) != RTMR_SIZE:
        raise EvidenceError(f"event {index}: digest must be 48 bytes (SHA-384)")
    if not 0 <= imr < RTMR_COUNT:
        raise EvidenceError(f"event {index}: imr {imr} is not an RTMR index (0..3)")
    return Event(imr=imr, event_type=event_type, digest=digest, event=name, payload=payload)


def _checked_runtime_digest(
    index: int, item: dict[str, object], name: str, payload: bytes, digest: bytes
) -> bytes:
    version = item.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version not in (1, 2):
        raise EvidenceError(f"event {index}: unknown event log version")
    if not digest:  # dstack strips the digest of runtime events; it is derivable
        return runtime_event_digest(name, payload, version)
    candidates = (runtime_event_digest(name, payload, 1), runtime_event_digest(name, payload, 2))
    if not any(hmac.compare_digest(digest, c) for c in candidates):
        raise EvidenceError(f"event {index}: digest does not commit to its name and payload")
    return digest


def _json_int(item: dict[str, object], key: str, index: int) -> int:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise EvidenceError(f"event {index}: {key!r} must be an integer")
    if not 0 <= value <= _U32_MAX:
        raise EvidenceError(f"event {index}: {key!r} does not fit in 32 bits")
    return value


def _json_hex(item: dict[str, object], key: str, index: int) -> bytes:
    value = item.get(key, "")
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise EvidenceError(f"event {index}: {key!r} must be a hex string")
    if len(value) > 2 * MAX_EVENT_DATA_BYTES:
        raise EvidenceError(f"event {index}: {key!r} exceeds MAX_EVENT_DATA_BYTES")
    return bytes.fromhex(value)


# --- CCEL / TCG2 crypto-agile binary log -----------------------------------------------------

_SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
_TPM_ALG_SHA384 = 0x000C
_KNOWN_DIGEST_SIZES = {0x0004: 20, 0x000B: 32, 0x000C: 48, 0x000D: 64, 0x0012: 32}
_MAX_ALGORITHMS = 16
_MRTD_INDEX = 0
_TERMINATOR = _U32_MAX


class _Reader:
    """Bounds-checked little-endian reads; running off the end is an EvidenceError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.remaining:
            raise EvidenceError(f"CCEL truncated in {what}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        value: int = struct.unpack("<H", self.take(2, what))[0]
        return value

    def u32(self, what: str) -> int:
        value: int = struct.unpack("<I", self.take(4, what))[0]
        return value


def parse_ccel(data: bytes) -> EventLog:
    """Parse a CCEL log area (TCG2 crypto-agile format) into the events that extend RTMRs."""
    raw = bytes(data)
    if len(raw) > MAX_LOG_BYTES:
        raise EvidenceError("event log exceeds MAX_LOG_BYTES")
    reader = _Reader(raw)
    sizes = _parse_spec_id_header(reader)
    events: list[Event] = []
    records = 0
    while not _at_end(reader):
        records += 1
        if records > MAX_EVENTS:
            raise EvidenceError("event log exceeds MAX_EVENTS")
        event = _parse_pcr_event2(reader, sizes)
        if event is not None:
            events.append(event)
    return EventLog(events=tuple(events), format="ccel", raw=raw)


def _at_end(reader: _Reader) -> bool:
    """The log ends at the data's end, at a 0xFFFFFFFF index, or where only zero fill remains."""
    if reader.remaining == 0:
        return True
    if reader.remaining >= 4:
        (index,) = struct.unpack_from("<I", reader.data, reader.pos)
        if index == _TERMINATOR:
            return True
    return not any(reader.data[reader.pos :])


def _parse_spec_id_header(reader: _Reader) -> dict[int, int]:
    """Read the TCG_PCR_EVENT header; return the algorithm-id -> digest-size table it declares."""
    reader.u32("header index")
    if reader.u32("header type") != EV_NO_ACTION:
        raise EvidenceError("CCEL header is not an EV_NO_ACTION event")
    reader.take(20, "header digest")
    size = reader.u32("header size")
    if size > MAX_EVENT_DATA_BYTES:
        raise EvidenceError("CCEL header exceeds MAX_EVENT_DATA_BYTES")
    spec = _Reader(reader.take(size, "header event"))
    if spec.take(16, "spec id signature") != _SPEC_ID_SIGNATURE:
        raise EvidenceError("CCEL header is not a 'Spec ID Event03' (not crypto-agile)")
    spec.take(4 + 4, "spec id platform class and version")  # class, minor, major, errata, uintn
    count = spec.u32("spec id algorithm count")
    if not 1 <= count <= _MAX_ALGORITHMS:
        raise EvidenceError(f"CCEL declares {count} digest algorithms")
    sizes: dict[int, int] = {}
    for _ in range(count):
        alg, digest_size = spec.u16("algorithm id"), spec.u16("digest size")
        known = _KNOWN_DIGEST_SIZES.get(alg)
        if alg in sizes or digest_size == 0 or (known is not None and known != digest_size):
            raise EvidenceError(f"CCEL declares algorithm {alg:#06x} inconsistently")
        sizes[alg] = digest_size
    spec.take(spec.u8("vendor info size"), "vendor info")
    if _TPM_ALG_SHA384 not in sizes:
        raise EvidenceError("CCEL does not carry SHA-384 digests")
    return sizes


def _parse_pcr_event2(reader: _Reader, sizes: dict[int, int]) -> Event | None:
    mr_index = reader.u32("event index")
    event_type = reader.u32("event type")
    count = reader.u32("digest count")
    if count > len(sizes):
        raise EvidenceError(f"CCEL event has {count} digests for {len(sizes)} algorithms")
    digests: dict[int, bytes] = {}
    for _ in range(count):
        alg = reader.u16("digest algorithm")
        if alg not in sizes or alg in digests:
            raise EvidenceError(f"CCEL event digest algorithm {alg:#06x} is undeclared or repeated")
        digests[alg] = reader.take(sizes[alg], "digest")
    size = reader.u32("event size")
    if size > MAX_EVENT_DATA_BYTES:
        raise EvidenceError("CCEL event exceeds MAX_EVENT_DATA_BYTES")
    payload = reader.take(size, "event data")
    if event_type == EV_NO_ACTION or mr_index == _MRTD_INDEX:
        return None  # never extended into an RTMR
    if not 1 <= mr_index <= RTMR_COUNT:
        raise EvidenceError(f"CCEL event MR index {mr_index} is not MRTD or RTMR0..3")
    digest = digests.get(_TPM_ALG_SHA384)
    if digest is None:
        raise EvidenceError("CCEL event has no SHA-384 digest")
    return Event(imr=mr_index - 1, event_type=event_type, digest=digest, payload=payload)
