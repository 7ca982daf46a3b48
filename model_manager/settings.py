"""Settings of the model manager: one pydantic-settings model, env prefix ``ENCLAVE_``.

Every limit has a name and a default. Secrets are ``SecretStr``. The load token is also read
from ``LOAD_TOKEN`` (DESIGN.md). The service composes this model into its own settings; no
module of this package reads the environment by itself.
"""

from __future__ import annotations

import importlib.util
import re
import secrets
import shlex
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, HttpUrl, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "DEFAULT_ENGINE_ENV_ALLOWLIST",
    "DEV_ENGINE_MODULE",
    "MIN_LOAD_TOKEN_CHARS",
    "MIN_LOAD_TOKEN_DISTINCT_CHARS",
    "ModelManagerSettings",
    "replica_id_of",
    "runs_dev_engine",
]

#: Environment variables passed from the service to the engine besides PATH, HOME and LANG.
#: A trailing ``*`` is a prefix match.
DEFAULT_ENGINE_ENV_ALLOWLIST: tuple[str, ...] = (
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TMPDIR",
    "TZ",
    "VLLM_*",
    "NCCL_*",
)

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "[::1]", "localhost"})

#: A load token shorter than this, or made of fewer different characters, is refused at start:
#: it would not be a secret (``openssl rand -hex 32`` makes a good one).
MIN_LOAD_TOKEN_CHARS = 32
MIN_LOAD_TOKEN_DISTINCT_CHARS = 8

#: The development engine's module (``python -m enclave_dev.engine``).
DEV_ENGINE_MODULE = "enclave_dev.engine"
_DEV_ENGINE_REFUSAL = (
    "engine_command runs the development engine, which is not a language model; set "
    "insecure_dev_engine (--insecure-dev-engine) to use it anyway (tests and demos only)"
)
_DEV_ENGINE_MISSING = (
    "engine_command runs the development engine, which is not part of this installation "
    "(the development package is not installed: this is a production install); install from "
    "a source checkout with: "
    "pip install -e '.[dev]'"
)


def _dev_engine_installed() -> bool:
    """Whether the development package's engine is importable here (it is in no wheel; this
    package may not import ``enclave``, so this is ``enclave.development.available`` again)."""
    try:
        return importlib.util.find_spec(DEV_ENGINE_MODULE) is not None
    except ModuleNotFoundError:  # enclave_dev itself is absent: a production install
        return False


def runs_dev_engine(command: tuple[str, ...]) -> bool:
    """Whether ``command`` starts the development engine (as a module or by its path)."""
    path_form = DEV_ENGINE_MODULE.replace(".", "/")
    return any(
        word == DEV_ENGINE_MODULE or path_form in word.replace("\\", "/") for word in command
    )


class ModelManagerSettings(BaseSettings):
    """Configuration of catalog, digests, engine supervision, lifecycle API and status push."""

    model_config = SettingsConfigDict(
        env_prefix="ENCLAVE_",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
    )

    # Catalog and digests.
    models_dir: Path = Path("/models")
    roothash_dir: Path = Path("/etc/enclave/roothash")
    require_verity: bool = False
    state_dir: Path = Path("/var/lib/enclave")
    run_dir: Path = Path("/run/enclave")
    digest_cache_on_disk: bool = True
    dmsetup_command: str = "dmsetup"
    veritysetup_command: str = "veritysetup"
    digest_command_timeout_seconds: float = Field(default=10.0, gt=0)

    # Engine.
    engine_command: Annotated[tuple[str, ...], NoDecode] = ("vllm",)
    # The development engine (enclave_dev.engine, not a language model) only with this;
    # it is then named in /v1/models, the status document and the attestation claims.
    insecure_dev_engine: bool = False
    engine_transport: Literal["uds", "tcp"] = "uds"
    engine_socket: Path | None = None
    vllm_port: int = Field(default=8001, ge=1, le=65535)
    engine_env_allowlist: Annotated[tuple[str, ...], NoDecode] = ()
    load_timeout_seconds: float = Field(default=1800.0, gt=0)
    stop_grace_seconds: float = Field(default=30.0, ge=0)
    kill_wait_seconds: float = Field(default=10.0, gt=0)
    health_poll_initial_seconds: float = Field(default=0.1, gt=0)
    health_poll_max_seconds: float = Field(default=2.0, gt=0)
    health_request_timeout_seconds: float = Field(default=5.0, gt=0)
    restart_limit: int = Field(default=3, ge=0)
    restart_window_seconds: float = Field(default=3600.0, gt=0)
    restart_backoff_initial_seconds: float = Field(default=2.0, ge=0)
    restart_backoff_max_seconds: float = Field(default=60.0, ge=0)
    log_tail_lines: int = Field(default=200, ge=1, le=100_000)
    log_line_max_chars: int = Field(default=4096, ge=80)

    # Lifecycle.
    restore_on_boot: bool = False
    hook_timeout_seconds: float = Field(default=60.0, gt=0)

    # Lifecycle API.
    load_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("load_token", "ENCLAVE_LOAD_TOKEN", "LOAD_TOKEN"),
    )
    insecure_dev_mode: bool = False
    control_body_limit_bytes: int = Field(default=4096, ge=64)

    # Status push.
    push_url: HttpUrl | None = None
    push_token: SecretStr | None = None
    push_interval_seconds: float = Field(default=30.0, gt=0)
    push_jitter_fraction: float = Field(default=0.1, ge=0, le=1)
    push_timeout_seconds: float = Field(default=10.0, gt=0)
    # One push from connecting to the last byte of the answer read, however slowly the
    # receiver trickles; and how much of the answer is read (the rest is not: the status
    # code decides, the connection is closed).
    push_deadline_seconds: float = Field(default=30.0, gt=0)
    push_max_answer_bytes: int = Field(default=64 * 1024, ge=0)
    push_backoff_initial_seconds: float = Field(default=1.0, gt=0)
    push_backoff_max_seconds: float = Field(default=300.0, gt=0)
    push_queue_size: int = Field(default=64, ge=1, le=10_000)
    instance_id: str | None = Field(default=None, min_length=1, max_length=256)

    # Which replica this is when several serve behind one load balancer: in every status
    # document (GET /v1/models/status and each push) as replica_id. Unset: the host name and
    # a random suffix chosen at start (a new one at every start).
    replica_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")

    @field_validator("engine_command", "engine_env_allowlist", mode="before")
    @classmethod
    def _split_words(cls, value: object) -> object:
        """Accept a shell-style string (split with shlex, never run by a shell) or a list."""
        if isinstance(value, str):
            return tuple(shlex.split(value))
        return value

    @field_validator("engine_command")
    @classmethod
    def _command_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or not value[0]:
            raise ValueError("engine_command needs at least a program")
        return value

    @field_validator("load_token", "push_token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("a token may not be empty")
        return value

    @field_validator("load_token")
    @classmethod
    def _load_token_is_a_secret(cls, value: SecretStr | None) -> SecretStr | None:
        """Refuse a guessable token. The message never shows the value."""
        if value is None:
            return value
        token = value.get_secret_value()
        if len(token) < MIN_LOAD_TOKEN_CHARS:
            raise ValueError(
                f"the load token is too short to be a secret: use at least "
                f"{MIN_LOAD_TOKEN_CHARS} random characters (e.g. openssl rand -hex 32)"
            )
        if len(set(token)) < MIN_LOAD_TOKEN_DISTINCT_CHARS:
            raise ValueError(
                f"the load token has too little entropy: fewer than "
                f"{MIN_LOAD_TOKEN_DISTINCT_CHARS} different characters (e.g. openssl rand -hex 32)"
            )
        return value

    @model_validator(mode="after")
    def _dev_engine_declared(self) -> ModelManagerSettings:
        if runs_dev_engine(self.engine_command):
            if not self.insecure_dev_engine:
                raise ValueError(_DEV_ENGINE_REFUSAL)
            if not _dev_engine_installed():
                raise ValueError(_DEV_ENGINE_MISSING)
        return self

    @model_validator(mode="after")
    def _push_url_protected(self) -> ModelManagerSettings:
        """The push carries a bearer token: plain http only to loopback or in dev mode."""
        url = self.push_url
        if (
            url is not None
            and url.scheme != "https"
            and url.host not in _LOOPBACK_HOSTS
            and not self.insecure_dev_mode
        ):
            raise ValueError("push_url must use https (http only to loopback, or in dev mode)")
        return self

    @property
    def effective_replica_id(self) -> str:
        """``replica_id``, else the host name with this process's random suffix."""
        return replica_id_of(self)

    def insecure_names(self) -> tuple[str, ...]:
        """The ``insecure_*`` settings of this package that are on (every field so named: one
        added later is declared without a change here)."""
        return tuple(
            name
            for name in type(self).model_fields
            if name.startswith("insecure_") and getattr(self, name)
        )

    def engine_socket_path(self) -> Path:
        """The engine's Unix socket: ``engine_socket``, else ``<run_dir>/engine.sock``."""
        if self.engine_socket is not None:
            return self.engine_socket
        return self.run_dir / "engine.sock"


#: Chosen once per process: the default replica id stays the same for its whole life.
_REPLICA_SUFFIX = secrets.token_hex(3)


def replica_id_of(settings: ModelManagerSettings) -> str:
    """The replica id the status documents carry: the setting, else ``<host>-<6 hex>``."""
    if settings.replica_id is not None:
        return settings.replica_id
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:50].strip(".-") or "replica"
    return f"{host}-{_REPLICA_SUFFIX}"
