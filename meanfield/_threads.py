"""The worker threads shared by the point transforms and the direct attention sums.

numpy and ducc0 release the GIL, so one pool of ``NTHREADS`` threads runs slices of the points at the
same time.  Sums over slices are added in slice order, so a result does not depend on which thread
finishes first: the same input gives the same bits on every call (ducc0's own threads in a non-uniform
*adjoint* transform add into a shared grid in arrival order, which does not; its grid adjoint
``adjoint_synthesis_2d`` on several threads was also seen to differ by an ulp between calls).
"""
from __future__ import annotations

import concurrent.futures
import os
import threading
from concurrent.futures import ThreadPoolExecutor

try:  # the machine's usable cores, not the hardware count of a shared host
    NTHREADS = len(os.sched_getaffinity(0))
except AttributeError:  # pragma: no cover - non-Linux
    NTHREADS = os.cpu_count() or 1

THREAD_PREFIX = "meanfield-attn"
MIN_PART = 5000   # points per thread below which splitting a non-uniform transform does not pay (measured)
# the slices of a large non-uniform transform: a number set by the point count, not one per thread, because ducc0's
# result depends on the slicing (the order of the adjoint's sum; the kernel its cost model picks from the points and
# threads of a call), so a result would depend on the thread count.  Two up to 2.5·10⁵ points (the most that pays on
# the 2-core machine measured); beyond, one per POINTS_PER_SLICE points up to MAX_REPRODUCIBLE_SLICES, so that a
# machine of more cores still splits a large call (on 2 cores 10⁶ points took about as long in 2, 4 or 8 slices)
REPRODUCIBLE_SLICES = 2
POINTS_PER_SLICE = 125_000
MAX_REPRODUCIBLE_SLICES = 32


def reproducible_parts(n: int) -> int:
    """The number of slices of a transform of ``n`` points (above the size where slicing pays): a function of ``n``
    only, so that the bits of the result do not depend on the threads that run the slices."""
    return max(REPRODUCIBLE_SLICES, min(MAX_REPRODUCIBLE_SLICES, n // POINTS_PER_SLICE))

_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def executor() -> ThreadPoolExecutor:
    """The process-wide pool of ``NTHREADS`` workers (created on first use).

    Returns
    -------
    concurrent.futures.ThreadPoolExecutor
        The same pool on every call; its threads are named ``meanfield-attn…``.
    """
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=max(1, NTHREADS), thread_name_prefix=THREAD_PREFIX)
        return _EXECUTOR


def slices(n: int, nthreads: int, min_part: int = MIN_PART) -> list[slice]:
    """Up to ``nthreads`` slices of range(n) with ≥ ``min_part`` points each (one slice per thread).

    Parameters
    ----------
    n : int
        Number of points.
    nthreads : int
        Largest number of slices.
    min_part : int, optional
        Fewest points per slice (default ``MIN_PART`` = 5000); below 2·min_part points there is one slice.

    Returns
    -------
    list of slice
        max(1, min(nthreads, n // min_part)) contiguous slices covering range(n) in order.
    """
    parts = max(1, min(nthreads, n // min_part))
    return [slice(i * n // parts, (i + 1) * n // parts) for i in range(parts)]


def on_worker() -> bool:
    """Whether this is one of the pool's threads (which must not wait on the pool: it could deadlock).

    Returns
    -------
    bool
    """
    return threading.current_thread().name.startswith(THREAD_PREFIX)


def map_slices(fn, parts: list[slice], nthreads: int | None = None) -> list:
    """[fn(s) for s in parts]: the first on this thread, the others on the workers at the same time.

    All run on this thread, one after the other, when there is one slice, when ``nthreads`` is 1, or when
    it is a worker itself; the slices, and so the bits of a sum over them, are the same either way.

    Parameters
    ----------
    fn : callable
        ``fn(slice)`` → a result.
    parts : list of slice
        From :func:`slices`.
    nthreads : int, optional
        1: run every slice on this thread (the caller's ``threads`` = 1); default, or more: one thread per slice.

    Returns
    -------
    list
        The results, in the order of ``parts``.
    """
    if len(parts) == 1 or nthreads == 1 or on_worker():
        return [fn(p) for p in parts]
    futures = [executor().submit(fn, s) for s in parts[1:]]
    try:
        return [fn(parts[0])] + [f.result() for f in futures]
    except BaseException:
        # the other slices write into the caller's arrays: those not started are cancelled (a cancelled future
        # counts as done only once a worker dequeues it: not waited for), the running ones waited for
        concurrent.futures.wait([f for f in futures if not f.cancel()])
        raise


def ordered_sum(results: list):
    """Σ results, added in list order (so the bits do not depend on thread timing).

    Parameters
    ----------
    results : list
        Nonempty list of numbers or arrays of one shape.

    Returns
    -------
    object
        The sum, of the type of the elements.
    """
    total = results[0]
    for r in results[1:]:
        total = total + r
    return total
