"""The process table, read from /proc: which processes belong to an engine's session.

The engine starts with ``start_new_session=True``, so its session ID and process-group ID are
its own PID and every descendant that does not call setsid() itself stays in that session.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ProcInfo",
    "become_subreaper",
    "read_proc",
    "reap_zombie_children",
    "session_members",
    "signal_session",
]

logger = logging.getLogger(__name__)

PROC = Path("/proc")
_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True, slots=True)
class ProcInfo:
    pid: int
    state: str
    ppid: int
    pgid: int
    sid: int


def read_proc(pid: int, proc: Path = PROC) -> ProcInfo | None:
    """Parse ``/proc/<pid>/stat`` (proc(5)); None if the process is gone."""
    try:
        raw = (proc / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may contain anything, including ")".
    rest = raw[raw.rfind(b")") + 2 :].split()
    if len(rest) < 4:
        return None
    return ProcInfo(pid, rest[0].decode(), int(rest[1]), int(rest[2]), int(rest[3]))


def session_members(sid: int, proc: Path = PROC) -> list[ProcInfo]:
    """Every process (zombies included) whose session is ``sid``, or whose group is ``sid``."""
    members: list[ProcInfo] = []
    try:
        entries = os.listdir(proc)
    except OSError:
        return members
    for entry in entries:
        if not entry.isdigit():
            continue
        info = read_proc(int(entry), proc)
        if info is not None and (info.sid == sid or info.pgid == sid):
            members.append(info)
    return members


def signal_session(sid: int, signum: int, proc: Path = PROC) -> int:
    """Send ``signum`` to the process group ``sid`` and to every live session member.

    Returns how many live (non-zombie) members were found.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signum)
    live = 0
    for info in session_members(sid, proc):
        if info.state == "Z":
            continue
        live += 1
        if info.pgid != sid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(info.pid, signum)
    return live


def reap_zombie_children(sid: int, proc: Path = PROC) -> None:
    """Reap zombies in the session whose parent is this process (when it is a subreaper)."""
    me = os.getpid()
    for info in session_members(sid, proc):
        if info.state == "Z" and info.ppid == me and info.pid != sid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(info.pid, os.WNOHANG)


def become_subreaper(enable: bool = True) -> bool:
    """Make this process the reaper of orphaned descendants (prctl PR_SET_CHILD_SUBREAPER);
    ``enable=False`` gives the role back (tests that set it only for their own scope).

    Without it, an engine worker orphaned by the engine's death is re-parented to PID 1, which
    may not reap it. Returns whether the call succeeded.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        ok = libc.prctl(_PR_SET_CHILD_SUBREAPER, int(enable), 0, 0, 0) == 0
    except (OSError, AttributeError):
        ok = False
    if not ok:
        logger.warning("could not become a child subreaper; orphaned engine workers may linger")
    return bool(ok)
