"""The listening socket (bound only once loading is done) and the uvicorn server.

A Unix socket is created with mode 0600 (umask 077 while binding); a stale socket file at
the path is replaced, any other file there is an error. TCP binds with SO_REUSEADDR.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from enclave_dev.engine._config import EngineConfig
from enclave_dev.engine._loading import EngineStartError

__all__ = ["GRACEFUL_SHUTDOWN_SECONDS", "bind_socket", "make_server", "remove_socket_file"]

#: How long open responses may run after SIGTERM before they are cancelled.
GRACEFUL_SHUTDOWN_SECONDS = 5.0
_BACKLOG = 2048


def _bind_unix(path: Path) -> socket.socket:
    if path.is_symlink() or path.exists():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise EngineStartError(f"{path} exists and is not a socket")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o077)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(previous)
    return sock


def _bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def bind_socket(config: EngineConfig) -> socket.socket:
    """Bind and listen on the configured address."""
    try:
        sock = _bind_unix(config.uds) if config.uds else _bind_tcp(config.host, config.port)
    except OSError as exc:
        raise EngineStartError(f"cannot listen on {config.listen_address}: {exc}") from exc
    sock.listen(_BACKLOG)
    sock.setblocking(False)
    return sock


def remove_socket_file(config: EngineConfig) -> None:
    if config.uds is not None:
        try:
            if stat.S_ISSOCK(config.uds.lstat().st_mode):
                config.uds.unlink()
        except FileNotFoundError:
            return


def make_server(app: ASGIApp) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_SECONDS),
    )
    return uvicorn.Server(config)
