"""Renaming a finished temporary file into place so that it survives a crash of the machine, not only of the process.

``os.replace`` alone is atomic for other processes, but after a power loss some file systems can show the new
name with no data (the rename reached the disk before the file's blocks).  The file is flushed to disk before
the rename, and the folder after it.
"""
from __future__ import annotations

import os
from pathlib import Path


def _fsync_path(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:       # a folder cannot be opened for fsync on some systems (Windows): best effort
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:   # a folder's fsync is refused by some file systems (EINVAL): the file's is not optional
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
    _fsync_path(tmp)
    os.replace(tmp, path)
    _fsync_path(path.parent, directory=True)
