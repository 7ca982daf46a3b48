"""One source per setting (issue 23 point 7): the connection layer's and the engine client's
limits take their defaults from the settings model, so the two cannot drift apart."""

from __future__ import annotations

from enclave.engine import EngineTimeouts
from enclave.net import ConnectionLimits
from enclave.settings import ServiceSettings

FIELDS = ServiceSettings.model_fields


def _default(name: str) -> object:
    return FIELDS[name].default


def test_connection_limits_default_to_the_settings() -> None:
    assert ConnectionLimits() == ConnectionLimits(
        max_connections=_default("max_connections"),  # type: ignore[arg-type]
        max_per_address=_default("max_connections_per_address"),  # type: ignore[arg-type]
        max_per_prefix=_default("max_connections_per_prefix"),  # type: ignore[arg-type]
        reserved_for_light_peers=_default("connections_reserved_for_light_peers"),  # type: ignore[arg-type]
        light_peer_connections=_default("light_peer_connections"),  # type: ignore[arg-type]
        handshake_timeout_seconds=_default("tls_handshake_timeout_seconds"),  # type: ignore[arg-type]
        header_timeout_seconds=_default("header_timeout_seconds"),  # type: ignore[arg-type]
        keep_alive_timeout_seconds=_default("keep_alive_timeout_seconds"),  # type: ignore[arg-type]
        body_timeout_seconds=_default("body_timeout_seconds"),  # type: ignore[arg-type]
    )


def test_engine_timeouts_default_to_the_settings() -> None:
    assert EngineTimeouts() == EngineTimeouts(
        connect=_default("engine_connect_timeout_seconds"),  # type: ignore[arg-type]
        pool=_default("engine_pool_timeout_seconds"),  # type: ignore[arg-type]
        write=_default("engine_write_timeout_seconds"),  # type: ignore[arg-type]
        read=_default("engine_read_timeout_seconds"),  # type: ignore[arg-type]
    )
