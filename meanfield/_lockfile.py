"""A lock file (host and pid) held while a process writes an output: a sweep folder, a run's checkpoint.

Two sweeps into one folder left the sweep.toml of one beside the table of the other; two runs into one
``--output`` replaced each other's checkpoint, and the finished one was lost.  A lock whose process is gone
(killed) is taken over.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from ._errors import MeanfieldError

_HELD: set = set()      # the locks this process holds now: one naming our pid but not listed here is a leftover


@contextlib.contextmanager
def held(path: Path, busy: str):
    """Hold the lock file ``path`` for the duration of the block.

    Parameters
    ----------
    path : Path
        The lock file (created exclusively; removed at the end).
    busy : str
        The start of the error message when another live process holds it, e.g. "another sweep is running in 'DIR'".

    Raises
    ------
    MeanfieldError
        When a live process on this host (or any process on another host) holds the lock.
    """
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = path.read_text(errors="replace").split()
            if _stale(path, holder, socket.gethostname()):
                path.unlink(missing_ok=True)          # a killed process's lock
                continue
            raise MeanfieldError(f"{busy} (lock held by {' '.join(holder) or '?'}, {str(path)!r}); wait for it, use "
                                 "another --output, or delete the lock if that process is gone.") from None
        try:
            with os.fdopen(fd, "w") as f:
                f.write(me)
        except BaseException:                          # a lock we could not fill is not left behind
            path.unlink(missing_ok=True)
            raise
        break
    key = _key(path)
    _HELD.add(key)
    try:
        yield
    finally:
        _HELD.discard(key)
        path.unlink(missing_ok=True)


def _key(path: Path) -> str:
    return str(Path(path).resolve())


def _stale(path: Path, holder: list, host: str) -> bool:
    """A lock nobody holds: this host's, and its process gone (or this very process without holding it: a pid
    reused, as pid 1 in a container); or unreadable (empty: its writer died before writing) and older than a few seconds."""
    if len(holder) != 2 or not holder[1].isdigit():
        try:
            return time.time() - path.stat().st_mtime > 5.0
        except OSError:
            return True
    pid = int(holder[1])
    if holder[0] != host:
        return False
    if pid == os.getpid():            # ours: held by another run of this process (a thread), or a leftover
        return _key(path) not in _HELD
    return not pid_alive(pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):       # no such process, or no valid pid at all
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and only waits to be reaped (Linux: state Z in /proc): signal 0 still reaches it,
    and a killed run whose parent (a job driver, a container's init) has not called wait() yet held its lock."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:                          # no /proc (macOS, Windows), or it exited meanwhile
        return False
    return stat[stat.rfind(b")") + 2:][:1] in (b"Z", b"X")     # the state follows the parenthesized name
