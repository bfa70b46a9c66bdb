"""OpenBLAS thread control for the OpenBLAS libraries numpy and scipy loaded (what threadpoolctl does).

meanfield runs blocks of the exact attention on its own worker threads; each block's matrix products
would start their own OpenBLAS thread team on top, and on a loaded 2-core machine that
oversubscription made an evaluation 2–4× slower (measured: 4.3 s with one BLAS thread, 14–18 s
with two, N = 2·10⁴).  :func:`single_threaded_blas` holds OpenBLAS at one thread while meanfield's
own threads run, and restores the previous count when the last such section ends.  The setting is
process-wide (OpenBLAS has no per-thread count): BLAS calls of other threads in that window run on
one thread too.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading
from pathlib import Path

_SYMBOLS = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
            ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
            ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
            ("openblas_set_num_threads", "openblas_get_num_threads"))


@functools.lru_cache(maxsize=1)
def openblas_libs() -> tuple:
    """(path, set_num_threads, get_num_threads) of each OpenBLAS loaded in this process (Linux; else ())."""
    import numpy  # noqa: F401  (loads numpy's BLAS before the search)

    try:
        with open("/proc/self/maps") as f:
            paths = {parts[-1] for parts in map(str.split, f)
                     if len(parts) >= 6 and "openblas" in parts[-1].lower() and ".so" in parts[-1]}
    except OSError:  # pragma: no cover - non-Linux
        return ()
    libs = []
    for p in sorted(paths):
        if not p.startswith("/"):
            continue
        try:
            lib = ctypes.CDLL(p, mode=os.RTLD_NOLOAD)
        except OSError:
            continue
        for setter, getter in _SYMBOLS:
            if hasattr(lib, setter) and hasattr(lib, getter):
                libs.append((p, getattr(lib, setter), getattr(lib, getter)))
                break
    return tuple(libs)


def blas_info() -> dict:
    """{library file name: thread count} of the OpenBLAS libraries loaded in this process."""
    return {Path(p).name: int(get()) for p, _, get in openblas_libs()}


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Run the block with ``n`` OpenBLAS threads (None: leave as is); restores the previous counts.

    Not re-entrant across threads (the benchmarks' knob); library code uses :func:`single_threaded_blas`.
    """
    if n is None:
        yield
        return
    saved = [(s, int(g())) for _, s, g in openblas_libs()]
    for s, _ in saved:
        s(int(n))
    try:
        yield
    finally:
        for s, k in saved:
            s(k)


_LOCK = threading.Lock()
_ACTIVE = 0
_SAVED: list = []


@contextlib.contextmanager
def single_threaded_blas():
    """One OpenBLAS thread while the block runs; safe when several threads enter it at once (counted)."""
    global _ACTIVE, _SAVED
    with _LOCK:
        if _ACTIVE == 0:
            _SAVED = [(s, int(g())) for _, s, g in openblas_libs()]
            for s, _ in _SAVED:
                s(1)
        _ACTIVE += 1
    try:
        yield
    finally:
        with _LOCK:
            _ACTIVE -= 1
            if _ACTIVE == 0:
                for s, k in _SAVED:
                    s(k)
                _SAVED = []
