"""Process plumbing: children that die with their parent, so a kill -9 leaves no orphan holding files;
whether a process of this host still runs (a claim's lander, a process waiting for the warehouse file)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def pid_alive(pid: int) -> bool:
    """True while the process runs (on this host); a zombie counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not zombie(pid)


def zombie(pid: int) -> bool:
    """A process killed but not yet reaped: still signallable, yet dead. A lander killed with its serve
    (kill -9) is reaped by init, which here took ~1.3 s; a serve restarted sooner kept its claim as
    live, and the claim's bodies waited for the lease to end (60 s) to land."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:  # no /proc (not Linux), or gone meanwhile
        return False
    # "pid (command) state ...": the command may itself hold ") ", so the state follows the last one.
    state = stat[stat.rfind(b")") + 2 :][:1]
    return state in (b"Z", b"X")
