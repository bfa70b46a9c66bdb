"""What every benchmark case shares: timing, the machine's description, BLAS threads, anchors, plots.

Timing rules: every comparison is measured in the same run, contenders are timed round-robin
(one turn of each per round, after a warm-up call) so that background load on a shared machine hits all
of them alike, and the figure kept is the median of the rounds.  A turn is one call, or for functions of a
few milliseconds a batch of consecutive calls (timeit's ``number``; :func:`calls_per_turn`), so that a fast
function is timed warm, as a run calls it, not cold right after a contender that took seconds.  ``speedup`` is always
(alternative time) / (our time): > 1 means we are faster.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from .._blas import blas_info, blas_threads  # noqa: F401  (re-exported for the cases)


def usable_cores() -> int:
    """Cores this process may run on (``os.sched_getaffinity``), not the host's hardware count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return [float("nan")] * 3


def cpu_counters() -> list[float] | None:
    """The host's cumulative CPU times (the ``cpu`` line of /proc/stat: user, nice, system, idle, iowait, irq,
    softirq, steal, ...), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            return [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):  # pragma: no cover - non-Linux
        return None


def steal_share(before, after) -> float | None:
    """The share of CPU time the hypervisor gave to other guests between two :func:`cpu_counters` readings
    (/proc/stat's *steal*): on a virtual machine whose vCPUs are shared, the part of "2 cores" this run did
    not get, which makes two threads gain less than 2×.  None where unknown."""
    if before is None or after is None or len(before) < 8 or len(after) < 8:
        return None
    delta = [b - a for a, b in zip(before, after)]
    total = sum(delta[:8])          # guest times (fields 9, 10) are already counted in user and nice
    return round(delta[7] / total, 3) if total > 0 else None


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------
# timing

def interleaved(funcs: dict, repeats: int, warmup: bool = True, cpu: dict | None = None,
                calls: dict | None = None) -> dict[str, list[float]]:
    """Wall times per call of ``repeats`` rounds of every callable, one turn of each per round (round-robin).

    ``calls[name]`` (default 1) is the number of consecutive calls in a turn of ``name``; its time is the
    turn's wall time divided by it.  With a dict ``cpu``, also fills ``cpu[name]`` with the CPU times per
    call of the calling thread (``time.thread_time``): the work of single-threaded code, insensitive to
    time-slicing on a loaded machine.
    """
    if warmup:
        for f in funcs.values():
            f()
    calls = calls or {}
    times = {k: [] for k in funcs}
    if cpu is not None:
        cpu.update({k: [] for k in funcs})
    for _ in range(repeats):
        for k, f in funcs.items():
            number = calls.get(k, 1)
            c0, t0 = time.thread_time(), time.perf_counter()
            for _ in range(number):
                f()
            times[k].append((time.perf_counter() - t0) / number)
            if cpu is not None:
                cpu[k].append((time.thread_time() - c0) / number)
    return times


def calls_per_turn(seconds: float, turn_s: float = 0.05) -> int:
    """Consecutive calls of a function taking ``seconds`` per call that fill a turn of ~``turn_s`` seconds."""
    return max(1, int(turn_s / max(seconds, 1e-9)))


def median(ts) -> float:
    return float(np.median(ts))


def medians(times: dict) -> dict[str, float]:
    return {k: median(v) for k, v in times.items()}


def timed(f):
    """(result, wall seconds, CPU seconds of this process, all threads) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = f()
    return out, time.perf_counter() - w0, time.process_time() - c0


def completed(trajectory, what: str):
    """``trajectory`` if its run reached ``t_final``; else RuntimeError naming ``what``, the time and the status.

    A run that stopped early (``max_steps``, a non-finite state, ...) returns its last state: its error against a
    reference at ``t_final`` and its time would be those of a shorter run, so a case must not measure it.
    """
    if not trajectory.success:
        raise RuntimeError(f"{what} stopped at t = {float(trajectory.times[-1]):.6g} before t_final: "
                           f"{trajectory.message}")
    return trajectory


def sizes_override(name: str, value, default) -> tuple:
    """A case's size override ``value`` as a tuple, ``default`` when it is None; an empty one is refused naming it (it
    ran the defaults silently, sizes to 10⁶ on a full run, where ``x or default`` read it, or raised "min() arg is an
    empty sequence" from the targets where ``x if x is not None`` did)."""
    if value is None:
        return tuple(default)
    value = tuple(value)
    if not value:
        raise ValueError(f"`{name}` is empty: give at least one size, or leave it out (None) for the defaults.")
    return value


def count_override(name: str, value, default: int) -> int:
    """A case's count override (``rounds``, ``n``, ``lmax``, …): ``default`` when it is None, else an integer ≥ 1
    refused by name otherwise: ``x or default`` read 0 as "the default" (rounds=0 timed the full 5 rounds, n=0 in the
    sweep case ran N = 10⁶ on a full run)."""
    from .._validate import nonneg_int

    return default if value is None else nonneg_int(name, value, minimum=1)


def seconds_override(name: str, value, default: float) -> float:
    """A case's time budget override: ``default`` when it is None, else a finite number of seconds > 0 (0 read as
    the default, as :func:`count_override` says)."""
    from .._validate import positive_float

    return default if value is None else positive_float(name, value)


def comparison(what: str, ours: str, alternative: str, ours_s: float, alternative_s: float, **extra) -> dict:
    """One same-run comparison record: the times, the contenders and ``speedup`` = alternative / ours."""
    return dict(what=what, ours=ours, alternative=alternative, ours_s=float(ours_s),
                alternative_s=float(alternative_s), speedup=float(alternative_s) / float(ours_s), **extra)


def target(name: str, goal: str, value, met, note: str = "") -> dict:
    """A target of the issue and whether this run meets it (``met`` None: not checked in this run)."""
    return dict(name=name, goal=goal, value=value, met=None if met is None else bool(met), note=note)


def slope(xs, ys) -> float:
    """Least-squares slope of log y against log x (a scaling exponent)."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


# ----------------------------------------------------------------------------------------------
# threads (OpenBLAS's are set through meanfield._blas)

@contextlib.contextmanager
def meanfield_threads(n: int):
    """Run the block with meanfield's transforms (``meanfield.sphere._sh.NTHREADS``) on ``n`` threads."""
    from ..sphere import _sh

    saved = _sh.NTHREADS
    _sh.NTHREADS = int(n)
    try:
        yield
    finally:
        _sh.NTHREADS = saved


# ----------------------------------------------------------------------------------------------
# the machine

def machine() -> dict:
    import ducc0
    import scipy

    import meanfield
    from ..sphere import _sh

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:  # pragma: no cover
        pass
    versions = dict(meanfield=meanfield.__version__, python=platform.python_version(), numpy=np.__version__,
                    scipy=scipy.__version__, ducc0=ducc0.__version__)
    try:
        import pyshtools

        versions["pyshtools"] = pyshtools.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        mem_gb = None
    return dict(cpu=cpu, platform=platform.platform(), usable_cores=usable_cores(), cpu_count=os.cpu_count(),
                meanfield_threads=_sh.NTHREADS, blas_threads=blas_info(), memory_gb=mem_gb, versions=versions)


# ----------------------------------------------------------------------------------------------
# anchors: figures measured by others (references, never same-run ratios)

def anchor(name: str) -> tuple[dict | None, str | None]:
    """(data, path) of ``<name>.json`` from $MEANFIELD_ANCHORS or the checkout's ../shared/anchors."""
    here = Path(__file__).resolve().parents[2]          # the repository root of a checkout
    candidates = []
    if os.environ.get("MEANFIELD_ANCHORS"):
        candidates.append(Path(os.environ["MEANFIELD_ANCHORS"]))
    candidates += [here.parent / "shared" / "anchors", here / "shared" / "anchors"]
    for d in candidates:
        p = d / f"{name}.json"
        if p.is_file():
            return json.loads(p.read_text()), str(p)
    return None, None


# ----------------------------------------------------------------------------------------------
# plots and tables

def figure(path: Path, draw, size=(6.4, 4.2)) -> str:
    """Draw with ``draw(ax)`` on a fresh Agg figure and save it to ``path`` (PNG); returns the file name."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, layout="constrained")
    try:
        draw(ax)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path.name


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def ms(s) -> str:
    """Seconds as milliseconds with 3 significant digits."""
    if s is None or not np.isfinite(s):
        return "—"
    v = 1e3 * s
    return f"{v:.3g}" if v < 1000 else f"{v:.0f}"


def sec(s) -> str:
    if s is None or not np.isfinite(s):
        return "—"
    return f"{s:.3g}"


def ratio(x) -> str:
    if x is None or not np.isfinite(x):
        return "—"
    return f"{x:.3g}×" if x < 100 else f"{x:.0f}×"


def at_equal_error(ours: list[dict], theirs: list[dict], error: str, cost: str = "cpu_s"):
    """(our run, their run) for an equal-error comparison from measured points only, or None.

    Their most accurate run against our cheapest run that is at least as accurate (no interpolation,
    no extrapolation: if none of ours is as accurate, there is no comparison).
    """
    if not ours or not theirs:
        return None
    best = min(theirs, key=lambda r: r[error])
    ok = [r for r in ours if r[error] <= best[error]]
    if not ok:
        return None
    return min(ok, key=lambda r: r[cost]), best
