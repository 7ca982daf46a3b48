"""How the engine is started and reached: its argv, its environment, its loopback endpoint.

The default command is ``vllm serve <dir> --served-model-name <name>`` listening on a Unix
socket (``--uds``) or on ``127.0.0.1:<vllm_port>``, with request logging off
(``--no-enable-log-requests``: vLLM's ``--enable-log-requests`` is a BooleanOptionalAction and
the old ``--disable-log-requests`` was removed in vLLM 0.12), then the catalog's arguments.
``engine_command`` replaces the program (``vllm``) for tests and development.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from model_manager.catalog import ModelSpec
from model_manager.settings import DEFAULT_ENGINE_ENV_ALLOWLIST, ModelManagerSettings

__all__ = [
    "LOOPBACK_HOST",
    "EngineEndpoint",
    "engine_argv",
    "engine_endpoint",
    "engine_environment",
]

LOOPBACK_HOST = "127.0.0.1"
#: Always passed through when set, besides the allow-list.
_BASE_ENV = ("PATH", "HOME", "LANG")
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, slots=True)
class EngineEndpoint:
    """Where the engine listens: a Unix socket, or a loopback TCP port."""

    uds: Path | None
    host: str = LOOPBACK_HOST
    port: int = 8001

    @property
    def base_url(self) -> str:
        """The base URL for requests (the host part is nominal over a Unix socket)."""
        return "http://localhost" if self.uds is not None else f"http://{self.host}:{self.port}"

    def listen_args(self) -> list[str]:
        if self.uds is not None:
            return ["--uds", str(self.uds)]
        return ["--host", self.host, "--port", str(self.port)]

    def client(self, timeout: httpx.Timeout | float | None = None) -> httpx.AsyncClient:
        """A new AsyncClient bound to the engine (the caller closes it)."""
        transport = httpx.AsyncHTTPTransport(uds=str(self.uds) if self.uds is not None else None)
        return httpx.AsyncClient(
            transport=transport,
            base_url=self.base_url,
            timeout=timeout if timeout is not None else httpx.Timeout(30.0, read=None),
            trust_env=False,
        )


def engine_endpoint(settings: ModelManagerSettings) -> EngineEndpoint:
    if settings.engine_transport == "uds":
        return EngineEndpoint(uds=settings.engine_socket_path())
    return EngineEndpoint(uds=None, host=LOOPBACK_HOST, port=settings.vllm_port)


def engine_argv(settings: ModelManagerSettings, spec: ModelSpec) -> list[str]:
    """The full argv of the engine for ``spec`` (never run through a shell)."""
    return [
        *settings.engine_command,
        "serve",
        str(spec.path),
        "--served-model-name",
        spec.name,
        *engine_endpoint(settings).listen_args(),
        "--no-enable-log-requests",
        *spec.engine_args(),
    ]


def engine_environment(
    settings: ModelManagerSettings, environ: Mapping[str, str]
) -> dict[str, str]:
    """A clean environment: PATH, HOME, LANG and the allow-listed names (``*`` = prefix)."""
    patterns = DEFAULT_ENGINE_ENV_ALLOWLIST + settings.engine_env_allowlist
    env = {name: environ[name] for name in _BASE_ENV if name in environ}
    env.setdefault("PATH", _DEFAULT_PATH)
    env.setdefault("LANG", "C.UTF-8")
    for name, value in environ.items():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            env[name] = value
    env["PYTHONUNBUFFERED"] = "1"
    return env
