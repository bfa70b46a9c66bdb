"""Renaming a finished temporary file into place so that it survives a crash of the machine, not only of the process.

``os.replace`` alone is atomic for other processes, but after a power loss some file systems can show the new
name with no data (the rename reached the disk before the file's blocks).  The file is flushed to disk before
the rename, and the folder after it.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

# what a folder's fsync may answer where folders cannot be synced (Windows, some network file systems)
_FOLDER_UNSUPPORTED = {errno.EINVAL, errno.EBADF, errno.EACCES, errno.EPERM, errno.EISDIR,
                       getattr(errno, "ENOTSUP", errno.EINVAL), getattr(errno, "EOPNOTSUPP", errno.EINVAL)}


def _flush_to_disk(fd: int) -> None:
    try:
        import fcntl
        full = getattr(fcntl, "F_FULLFSYNC", None)     # macOS: fsync reaches the drive's cache only
    except ImportError:                                  # pragma: no cover - Windows
        full = None
    if full is not None:
        try:
            fcntl.fcntl(fd, full)
            return
        except OSError:                                  # pragma: no cover - a file system without it
            pass
    os.fsync(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)      # writable: Windows' fsync (_commit) refuses a read-only descriptor
    try:
        _flush_to_disk(fd)
    finally:
        os.close(fd)


def _fsync_folder(path: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):                   # Windows: a folder cannot be opened, nor synced
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        if err.errno in _FOLDER_UNSUPPORTED:
            return
        raise
    try:
        _flush_to_disk(fd)
    except OSError as err:
        if err.errno not in _FOLDER_UNSUPPORTED:         # EIO is a real failure; EINVAL a folder that cannot sync
            raise
    finally:
        os.close(fd)


def replace_durably(tmp, path) -> None:
    """``os.replace(tmp, path)``, with the data of ``tmp`` on disk before the rename and the rename after it.

    Parameters
    ----------
    tmp : str or Path
        A closed, complete file in the folder of ``path``.
    path : str or Path
        Its final name (an existing file is replaced).
    """
    tmp, path = Path(tmp), Path(path)
    _fsync_file(tmp)
    os.replace(tmp, path)
    _fsync_folder(path.parent)
