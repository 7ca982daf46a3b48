"""Binary HTTP values: whole messages and the events of the incremental decoders."""

from __future__ import annotations

from dataclasses import dataclass

from enclave.protocol._bhttp_fields import (
    Field,
    final_status_problem,
    informational_status_problem,
)

__all__ = [
    "BodyChunk",
    "InformationalHead",
    "InformationalResponse",
    "MessageEnd",
    "Request",
    "RequestEvent",
    "RequestHead",
    "Response",
    "ResponseEvent",
    "ResponseHead",
    "Trailers",
]


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request. Field names are lowercased when encoded."""

    method: bytes
    scheme: bytes
    authority: bytes
    path: bytes
    headers: tuple[Field, ...] = ()
    content: bytes = b""
    trailers: tuple[Field, ...] = ()


@dataclass(frozen=True, slots=True)
class InformationalResponse:
    """An interim (1xx) response that precedes the final one."""

    status: int
    headers: tuple[Field, ...] = ()

    def __post_init__(self) -> None:
        problem = informational_status_problem(self.status)
        if problem is not None:
            raise ValueError(problem)


@dataclass(frozen=True, slots=True)
class Response:
    """A final HTTP response (200..599) with any informational responses before it."""

    status: int
    headers: tuple[Field, ...] = ()
    content: bytes = b""
    trailers: tuple[Field, ...] = ()
    informational: tuple[InformationalResponse, ...] = ()

    def __post_init__(self) -> None:
        problem = final_status_problem(self.status)
        if problem is not None:
            raise ValueError(problem)


@dataclass(frozen=True, slots=True)
class RequestHead:
    """Request control data and header section, complete."""

    method: bytes
    scheme: bytes
    authority: bytes
    path: bytes
    headers: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class InformationalHead:
    """One informational (1xx) response, complete."""

    status: int
    headers: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """Final status code and header section, complete."""

    status: int
    headers: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class BodyChunk:
    """Content bytes, never empty. Boundaries carry no meaning (RFC 9292 section 6)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Trailers:
    """The trailer section, complete (possibly empty). Always precedes ``MessageEnd``."""

    fields: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class MessageEnd:
    """The message is complete; only zero padding may follow."""


RequestEvent = RequestHead | BodyChunk | Trailers | MessageEnd
ResponseEvent = InformationalHead | ResponseHead | BodyChunk | Trailers | MessageEnd
