"""The service's settings: one pydantic-settings model per package, composed here.

- :class:`ServiceSettings` (this package): listening address, TEE choice, certificate and OHTTP
  key lifetimes, replay protection, request limits, engine timeouts, logging, rate limits.
- :class:`model_manager.ModelManagerSettings` (unchanged): catalog, digests, engine, lifecycle
  API, status push. It reads ``ENCLAVE_*`` and ``LOAD_TOKEN`` itself.

Both read the environment with the prefix ``ENCLAVE_``; :func:`load_settings` is called once at
the entry point, command-line values take precedence over the environment, and the result is
passed down. No other module reads the environment. Validation failures raise
:class:`SettingsError`, whose message names the fields but never echoes a value (a value may be
a token).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from attestation.gpu.providers import GpuProviderKind
from attestation.providers import ProviderKind
from enclave import development
from enclave.errors import EnclaveError
from enclave.gateway import GatewayLimits, check_redis_url
from enclave.keybroker import check_cdh_url, check_resource_path
from enclave.protocol.chunked import MIN_CHUNK_SIZE
from enclave.protocol.padding import DEFAULT_BUCKET
from model_manager import ModelManagerSettings
from model_manager.settings import MIN_LOAD_TOKEN_CHARS, MIN_LOAD_TOKEN_DISTINCT_CHARS

__all__ = [
    "EnclaveSettings",
    "ServiceSettings",
    "SettingsError",
    "TeeChoice",
    "data_plane_workers",
    "insecure_settings",
    "insecure_warnings",
    "load_settings",
]

logger = logging.getLogger(__name__)

#: The choices of ``tee`` and ``gpu``: the provider kinds attestation defines (one definition).
TeeChoice = ProviderKind
GpuChoice = GpuProviderKind
#: The gateway's defaults are its own (one definition); the settings take them from there.
_GATEWAY = GatewayLimits()
_SIMULATED_REFUSAL = (
    "tee=simulated signs quotes with a simulated Intel-like root that no verifier trusts by "
    "default: the evidence would prove nothing about this machine. It is for tests and demos "
    "only; set insecure_allow_simulated_tee (--insecure-allow-simulated-tee) to use it anyway"
)


_SIMULATOR_MISSING = (
    f"tee=simulated: {development.MISSING} (the simulator is in enclave_dev, which no wheel "
    "contains); install from a source checkout with: pip install -e '.[dev]'"
)


class SettingsError(EnclaveError, ValueError):
    """The configuration is invalid. The message names fields and problems, never values."""


class ServiceSettings(BaseSettings):
    """The service's own settings (env prefix ``ENCLAVE_``)."""

    model_config = SettingsConfigDict(env_prefix="ENCLAVE_", extra="forbid", frozen=True)

    # Listening. The CVM's only network door is this service, so it listens on every
    # interface of the guest by default; the engine itself listens on loopback or a socket.
    host: str = "0.0.0.0"  # noqa: S104 - the service is the CVM's public endpoint
    port: int = Field(default=8443, ge=0, le=65535)

    # Attestation and RA-TLS.
    tee: TeeChoice = "auto"
    insecure_allow_simulated_tee: bool = False
    certificate_lifetime_seconds: float = Field(default=24 * 3600.0, ge=60)
    emit_model_digest_extension: bool = False
    # Attestation reports: direct clients (per address, all together) and requests through
    # the OHTTP gateway (per outer peer, all together) have separate budgets
    # (docs/attestation-report.md).
    report_rate_per_client_per_minute: int = Field(default=10, ge=1)
    report_rate_global_per_minute: int = Field(default=60, ge=1)
    report_rate_relayed_per_peer_per_minute: int = Field(default=30, ge=1)
    report_rate_relayed_global_per_minute: int = Field(default=60, ge=1)
    # A reserve of direct reports for rare clients (no report asked from their address, IPv6
    # /64, in the last minute), used when the direct shared budget is spent: a flood from many
    # addresses that keep asking cannot starve a client that asks once. 0 turns it off.
    report_rate_rare_per_minute: int = Field(default=30, ge=0)
    # The GPU evidence route (/v1/attestation/gpus) has a budget of its own, kept the same way:
    # per client address (or, through the OHTTP gateway, per outer peer) and all together.
    # Answers with the current ETag (304) are not charged.
    gpus_rate_per_client_per_minute: int = Field(default=30, ge=1)
    gpus_rate_global_per_minute: int = Field(default=300, ge=1)

    # Failed load-token attempts on the lifecycle API (per peer address, IPv6 per /64, or per
    # relay through the OHTTP gateway; and all together), before 429 too_many_token_failures.
    # Only failures are charged; the right token is never held back by the shared budget.
    load_token_failures_per_peer_per_minute: int = Field(default=10, ge=1)
    load_token_failures_global_per_minute: int = Field(default=30, ge=1)

    # OHTTP keys and the gateway.
    ohttp_key_rotation_seconds: float = Field(default=7 * 24 * 3600.0, ge=60)
    ohttp_key_overlap_seconds: float = Field(default=24 * 3600.0, ge=0)
    replay_window_seconds: float = Field(default=_GATEWAY.replay_window_seconds, gt=0, le=3600)
    replay_cache_size: int = Field(default=_GATEWAY.replay_cache_size, ge=1)
    max_chunk_size: int = Field(default=_GATEWAY.max_chunk_size, ge=MIN_CHUNK_SIZE)

    # Requests and streams.
    body_limit_bytes: int = Field(default=_GATEWAY.body_limit_bytes, ge=1024)
    max_concurrent_streams: int = Field(default=_GATEWAY.max_concurrent_requests, ge=1, le=100_000)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)

    # Connections and request bodies: what an unauthenticated client can hold. A body must
    # arrive whole within the body timeout before any work starts; the bodies of all requests
    # in flight together stay under the budget. Connections are capped overall and per peer
    # address (an IPv6 peer counts by its /64, and also by its /56), the last places (at most
    # an eighth of max_connections) are kept for peers (IPv4 address, IPv6 /56) holding fewer
    # than light_peer_connections, and max_connections is lowered at start to fit the
    # process's RLIMIT_NOFILE (with a warning); a TLS handshake, the request head, and the idle
    # time between two requests of a keep-alive connection each have a deadline.
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    body_memory_budget_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    max_connections: int = Field(default=2048, ge=1)
    max_connections_per_address: int = Field(default=256, ge=1)
    max_connections_per_prefix: int = Field(default=512, ge=1)
    connections_reserved_for_light_peers: int = Field(default=256, ge=0)
    light_peer_connections: int = Field(default=8, ge=1)
    tls_handshake_timeout_seconds: float = Field(default=10.0, gt=0)
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    keep_alive_timeout_seconds: float = Field(default=5.0, gt=0)

    # Engine requests (the pooled client to vLLM). A read timeout bounds the silence between
    # two chunks of a response, not its total length.
    engine_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    engine_read_timeout_seconds: float = Field(default=600.0, gt=0)
    engine_write_timeout_seconds: float = Field(default=60.0, gt=0)
    engine_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    # A streamed response with no event for this long is stalled and ended with an error
    # event; before its first event (prefill of a long prompt, a queue) it may wait longer.
    engine_stall_timeout_seconds: float = Field(default=60.0, gt=0)
    engine_first_token_timeout_seconds: float = Field(default=300.0, gt=0)

    # GPU evidence (docs/attestation.md section 7): none, NVML (real GPUs in CC mode), or the
    # simulated GPU, which needs insecure_allow_simulated_gpu like the simulated TEE.
    gpu: GpuChoice = "none"
    insecure_allow_simulated_gpu: bool = False
    simulated_gpu_count: int = Field(default=1, ge=1, le=16)

    # Metrics (docs/service.md, "Metrics"): closed by default. /metrics and /metrics/engine are
    # served on the main listener only to a bearer of metrics_token, and on a separate plain
    # HTTP listener (metrics_host:metrics_port, off unless metrics_port is set) to anyone who
    # reaches it, or to a bearer of metrics_token when one is set. A metrics listener on an
    # address that is not loopback needs metrics_token.
    metrics_token: SecretStr | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)

    # Sizes and timing (issue 19, docs/threat-model.md "Sizes and timing"): every streamed
    # piece (SSE event group, OHTTP chunk) and every non-streamed answer is padded to a
    # multiple of stream_padding_bytes. 0 turns padding off and needs
    # insecure_no_stream_padding, which also turns it off. stream_cadence_ms (off by default)
    # sends streamed pieces only at that fixed cadence, an empty padded piece when nothing came.
    stream_padding_bytes: int = Field(default=DEFAULT_BUCKET, ge=0, le=65536)
    insecure_no_stream_padding: bool = False
    stream_cadence_ms: int | None = Field(default=None, ge=5, le=10_000)
    # Replicas (docs/operations.md, "Replicas"): several services behind one load balancer.
    # The replay set: "memory" (this process; one replica) or a Redis URL shared by every
    # replica (redis://host:port/db, rediss:// for TLS, unix:///path), whose password comes
    # from ENCLAVE_REPLAY_STORE_PASSWORD, never from the URL. Redis holds a keyed hash of each
    # accepted enc under the prefix for the replay window; unreachable -> OHTTP refused (503).
    replay_store: str = "memory"
    replay_store_password: SecretStr | None = None
    replay_store_prefix: str = Field(default="enclave:replay:", min_length=1, max_length=64)
    replay_store_timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    # Where the OHTTP keys come from: "local" (generated and rotated here), "cdh" (the key
    # document from the CoCo confidential-data-hub resource API, released by the Trustee KBS
    # to attested guests only: ohttp_key_cdh_url + /cdh/resource/ + ohttp_key_resource) or
    # "dstack" (derived by dstack's KMS through the guest agent's GetKey at
    # ohttp_key_dstack_socket, path ohttp_key_dstack_path/<epoch of ohttp_key_rotation_seconds>).
    # Refetched every ohttp_key_refresh_seconds (a rotation at the broker reaches every
    # replica within it); until a first key is released, retried every 5 s and OHTTP refused.
    ohttp_key_source: Literal["local", "cdh", "dstack"] = "local"
    ohttp_key_cdh_url: str = "http://127.0.0.1:8006"
    ohttp_key_resource: str = "default/enclave-ohttp/keys"
    ohttp_key_dstack_socket: str = "/var/run/dstack.sock"
    ohttp_key_dstack_path: str = Field(default="enclave/ohttp", min_length=1, max_length=200)
    ohttp_key_refresh_seconds: float = Field(default=300.0, ge=1)

    # Data-plane workers (docs/service.md, "More than one core"). 1: one process serves
    # everything (as before). N > 1: N worker processes accept on the port (SO_REUSEPORT), each
    # with the TLS listener, the relay, the gateway and its own engine client; one owner keeps
    # the lifecycle, the keys and certificates, the management API, and pushes every change to
    # them. 0: one per core less one for the owner, at least 1.
    data_plane_workers: int = Field(default=0, ge=0, le=256)

    # Logging.
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token_is_a_secret(cls, value: SecretStr | None) -> SecretStr | None:
        """Refuse a guessable token, as for the load token. The message never shows the value."""
        if value is None:
            return value
        token = value.get_secret_value()
        if len(token) < MIN_LOAD_TOKEN_CHARS or len(set(token)) < MIN_LOAD_TOKEN_DISTINCT_CHARS:
            raise ValueError(
                f"the metrics token is too guessable: use at least {MIN_LOAD_TOKEN_CHARS} random "
                f"characters, {MIN_LOAD_TOKEN_DISTINCT_CHARS} of them different "
                "(e.g. openssl rand -hex 32)"
            )
        return value

    @field_validator("replay_store")
    @classmethod
    def _replay_store_is_memory_or_redis(cls, value: str) -> str:
        return value if value == "memory" else check_redis_url(value)

    @field_validator("ohttp_key_cdh_url")
    @classmethod
    def _cdh_url_is_loopback(cls, value: str) -> str:
        return check_cdh_url(value)

    @field_validator("ohttp_key_resource")
    @classmethod
    def _resource_is_a_kbs_path(cls, value: str) -> str:
        return check_resource_path(value)

    @model_validator(mode="after")
    def _checks(self) -> ServiceSettings:
        if self.tee == "simulated" and not self.insecure_allow_simulated_tee:
            raise ValueError(_SIMULATED_REFUSAL)
        if self.gpu == "simulated" and not self.insecure_allow_simulated_gpu:
            raise ValueError(
                "gpu=simulated signs GPU reports with a simulated NVIDIA-like root that no "
                "verifier trusts by default; set insecure_allow_simulated_gpu to use it anyway"
            )
        if self.tee == "simulated" and not development.available("insecure_allow_simulated_tee"):
            raise ValueError(_SIMULATOR_MISSING)
        if self.ohttp_key_overlap_seconds >= self.ohttp_key_rotation_seconds:
            raise ValueError("ohttp_key_overlap_seconds must be below ohttp_key_rotation_seconds")
        if self.max_chunk_size > self.body_limit_bytes:
            raise ValueError("max_chunk_size may not exceed body_limit_bytes")
        if self.body_memory_budget_bytes < self.body_limit_bytes:
            raise ValueError("body_memory_budget_bytes may not be below body_limit_bytes")
        if self.max_connections_per_address > self.max_connections:
            raise ValueError("max_connections_per_address may not exceed max_connections")
        if (
            self.metrics_port is not None
            and self.metrics_token is None
            and not _is_loopback(self.metrics_host)
        ):
            raise ValueError(
                "a metrics listener on an address that is not loopback needs metrics_token"
            )
        if self.stream_padding_bytes == 0 and not self.insecure_no_stream_padding:
            raise ValueError(
                "stream_padding_bytes=0 turns size padding off, so an observer reads every "
                "token's length from the ciphertext; set insecure_no_stream_padding to do so"
            )
        return self

    @property
    def padding_bucket(self) -> int:
        """The bucket every padded piece is rounded up to; 0 when padding is off."""
        return 0 if self.insecure_no_stream_padding else self.stream_padding_bytes


def data_plane_workers(settings: ServiceSettings) -> int:
    """How many data-plane worker processes ``settings`` asks for (1: the single process); 0
    resolves to one per core less one for the owner, at least 1."""
    if settings.data_plane_workers > 0:
        return settings.data_plane_workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max((cores or 1) - 1, 1)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True, slots=True)
class EnclaveSettings:
    """Every package's settings, loaded once at the entry point and passed down."""

    service: ServiceSettings
    model_manager: ModelManagerSettings

    @property
    def gateway(self) -> GatewayLimits:
        """The OHTTP gateway's limits, from the service settings."""
        service = self.service
        return GatewayLimits(
            body_limit_bytes=service.body_limit_bytes,
            max_chunk_size=service.max_chunk_size,
            replay_window_seconds=service.replay_window_seconds,
            replay_cache_size=service.replay_cache_size,
            max_concurrent_requests=service.max_concurrent_streams,
            padding=service.padding_bucket,
        )


def load_settings(cli_overrides: Mapping[str, object] | None = None) -> EnclaveSettings:
    """Read the environment, apply ``cli_overrides`` (field names; ``None`` values are flags
    that were not given and are skipped) and validate. Raises :class:`SettingsError`."""
    service_fields = set(ServiceSettings.model_fields)
    manager_fields = set(ModelManagerSettings.model_fields)
    service_values: dict[str, object] = {}
    manager_values: dict[str, object] = {}
    for key, value in (cli_overrides or {}).items():
        if value is None:
            continue
        if key in service_fields:
            service_values[key] = value
        elif key in manager_fields:
            manager_values[key] = value
        else:
            raise SettingsError(f"unknown setting {key!r}")
    try:
        service = ServiceSettings.model_validate(service_values)
        manager = ModelManagerSettings.model_validate(manager_values)
    except ValidationError as exc:
        # ``from None``: the ValidationError holds the input values, and a traceback of it
        # would print a token; the message below names the fields only.
        raise SettingsError(_describe(exc)) from None
    return EnclaveSettings(service=service, model_manager=manager)


def insecure_settings(settings: EnclaveSettings) -> tuple[str, ...]:
    """The names of the ``insecure_*`` settings that are on, sorted: every field so named of
    every package's settings (one added later is declared with no change here), whether or not
    another setting makes it take effect. The service declares them in ``/v1/models``, the
    status document and its attestation claims (``insecure``), so a client policy can refuse
    such a service (it does by default: tests/unit/test_insecure_settings.py holds both)."""
    names = set(settings.model_manager.insecure_names())
    service = settings.service
    names.update(
        name
        for name in type(service).model_fields
        if name.startswith("insecure_") and getattr(service, name)
    )
    return tuple(sorted(names))


#: What the service logs at start for an insecure setting (others: "INSECURE: <name> is on").
_WARNINGS: dict[str, str] = {
    "insecure_allow_simulated_tee": (
        "INSECURE: the simulated TEE is allowed (insecure_allow_simulated_tee); its quotes are "
        "signed by a simulated root and prove nothing about this machine"
    ),
    "insecure_allow_simulated_gpu": (
        "INSECURE: the simulated GPU is allowed (insecure_allow_simulated_gpu); its reports "
        "are signed by a simulated root and prove nothing about this machine's GPUs"
    ),
    "insecure_no_stream_padding": (
        "INSECURE: size padding is off (insecure_no_stream_padding): the length of every "
        "streamed token and of every answer can be read from the ciphertext"
    ),
    "insecure_dev_mode": "INSECURE: development mode is on (lifecycle API may be open)",
    "insecure_dev_engine": (
        "INSECURE: the development engine is in use; it is NOT a language model (its "
        "answers are generated text patterns), and the service says so in /v1/models, "
        "its status and its attestation claims"
    ),
}


def insecure_warnings(settings: EnclaveSettings) -> list[str]:
    """One line per security-weakening setting in use; the service logs each at start."""
    return [_WARNINGS.get(name, f"INSECURE: {name} is on") for name in insecure_settings(settings)]


def _describe(exc: ValidationError) -> str:
    """The errors without their input values (``str(exc)`` would echo them, tokens too)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(item) for item in error["loc"]) or "settings"
        parts.append(f"{where}: {error['msg']}")
    return "invalid settings: " + "; ".join(parts)
