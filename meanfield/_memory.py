"""Memory estimates made before large allocations, so a request that cannot fit is refused up front."""
from __future__ import annotations

import contextlib
import contextvars
import os

from ._errors import InsufficientMemoryError as InsufficientMemoryError


def available_bytes() -> int:
    """MemAvailable of /proc/meminfo (Linux), else the physical memory, else 8 GiB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


_UNCHECKED = contextvars.ContextVar("meanfield_memory_unchecked", default=False)


@contextlib.contextmanager
def unchecked():
    """Skip :func:`require` in this block: a dry check of a run's options on the machine that reads a sweep, whose
    memory is not the workers'."""
    token = _UNCHECKED.set(True)
    try:
        yield
    finally:
        _UNCHECKED.reset(token)


def require(nbytes: float, what: str, how_to_reduce: str, fraction: float = 0.8) -> None:
    """Raise :class:`InsufficientMemoryError` if ``nbytes`` exceeds ``fraction`` of the available memory."""
    if _UNCHECKED.get():
        return
    avail = available_bytes()
    if nbytes > fraction * avail:
        raise InsufficientMemoryError(
            f"{what} needs about {nbytes / 2**30:.2f} GiB but only {avail / 2**30:.2f} GiB are available; "
            f"{how_to_reduce}")


def fits(nbytes: float, fraction: float = 0.25) -> bool:
    """Whether ``nbytes`` is below ``fraction`` of the available memory (for optional caches)."""
    return nbytes <= fraction * available_bytes()
