"""Our S² transforms and gradient against pyshtools' default path, timed in the same run.

Cases, for a random real field of band limit L (pyshtools gets the same field as real '4pi' coefficients,
its default convention):

* ``synthesis+analysis`` — ours: :func:`meanfield.sphere.synthesis` then :func:`analysis` on the minimal
  Gauss–Legendre grid (L+1 rings × 2L+2); pyshtools: ``SHCoeffs.expand(grid='GLQ')`` then
  ``SHGrid.expand()`` (L+1 × 2L+1), and the same on its default ``'DH2'`` grid (2L+2 × 4L+4, plus the
  extended row and column).
* ``gradient`` — ours: :func:`meanfield.sphere.gradient` (spin-1 synthesis, both components) on the same
  L+1-ring grid; pyshtools: ``SHCoeffs.gradient()``, which only works on DH grids (default 'DH2').

pyshtools runs its default backend (``pyshtools.backends.preferred_backend()``, 'ducc' when ducc0 is
installed) with its default one thread; ours runs ``meanfield.sphere.NTHREADS`` threads (the usable
cores) and, for a like-for-like column, one thread.  Times are medians of repeats after one warm-up call,
timed round-robin so that background load on a shared machine hits every contender alike.
``speedup`` = pyshtools time / our time (> 1: we are faster).

    python -m benchmarks transforms [--quick] [--output DIR]
    python benchmarks/bench_transforms.py [--quick] [--output DIR]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

NAME = "transforms"
SIZES = (64, 128, 256, 512)
QUICK_SIZES = (64, 128)


def _interleaved_medians(funcs: dict, repeats: int) -> dict:
    """Median wall time of each callable, timed round-robin (one call of each per round, after a warm-up).

    Interleaving exposes every contender to the same background load on a shared machine.
    """
    for f in funcs.values():
        f()  # warm-up: plans, caches, lazy imports
    times = {k: [] for k in funcs}
    for _ in range(repeats):
        for k, f in funcs.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def _repeats(lmax: int, quick: bool) -> int:
    return (5 if quick else 11) if lmax <= 128 else (3 if quick else 7)


def _random_alm(lmax: int, seed: int = 0) -> np.ndarray:
    from meanfield import sphere

    rng = np.random.default_rng(seed)
    ell, m = sphere.lm_arrays(lmax)
    a = (rng.standard_normal(ell.size) + 1j * rng.standard_normal(ell.size)) / (1.0 + ell)
    a[m == 0] = a[m == 0].real
    return a


def _with_threads(threads: int, f):
    """``f`` run with meanfield's transforms on ``threads`` threads."""
    from meanfield.sphere import _sh

    def g():
        saved = _sh.NTHREADS
        _sh.NTHREADS = threads
        try:
            return f()
        finally:
            _sh.NTHREADS = saved
    return g


def _check_same_field(lmax: int) -> float:
    """Max |ours − pyshtools| / max |field| at pyshtools' GLQ nodes: both sides compute the same field."""
    from meanfield import sphere

    a = _random_alm(lmax)
    grid = sphere.to_shcoeffs(a, lmax).convert(normalization="4pi", csphase=1, kind="real").expand(grid="GLQ")
    th, ph = np.meshgrid(np.radians(90.0 - grid.lats()), np.radians(grid.lons()), indexing="ij")
    ours = sphere.synthesis_points(a, lmax, sphere.angles_to_points(th, ph))
    return float(np.max(np.abs(ours - grid.data)) / np.max(np.abs(grid.data)))


def bench_one(lmax: int, repeats: int) -> dict:
    import pyshtools

    from meanfield import sphere

    nt = sphere.NTHREADS
    a = _random_alm(lmax)
    grid = sphere.SphereGrid.for_bandlimit(lmax, dealias=False)
    coeffs = sphere.to_shcoeffs(a, lmax).convert(normalization="4pi", csphase=1, kind="real")
    sa = lambda: sphere.analysis(sphere.synthesis(a, lmax, grid), lmax, grid)  # noqa: E731
    gr = lambda: sphere.gradient(a, lmax, grid)  # noqa: E731
    t = _interleaved_medians({
        "ours_sa": _with_threads(nt, sa), "ours1_sa": _with_threads(1, sa),
        "ours_grad": _with_threads(nt, gr), "ours1_grad": _with_threads(1, gr),
        "pysh_glq_sa": lambda: coeffs.expand(grid="GLQ").expand(),
        "pysh_dh2_sa": lambda: coeffs.expand().expand(),
        "pysh_dh2_grad": lambda: coeffs.gradient(),
    }, repeats)
    pysh = dict(backend=pyshtools.backends.preferred_backend(), threads=1,
                glq_grid=list(coeffs.expand(grid="GLQ").data.shape), dh2_grid=list(coeffs.expand().data.shape),
                glq_synthesis_analysis_s=t["pysh_glq_sa"], dh2_synthesis_analysis_s=t["pysh_dh2_sa"],
                dh2_gradient_s=t["pysh_dh2_grad"])
    ours = dict(threads=nt, grid=list(grid.shape), synthesis_analysis_s=t["ours_sa"], gradient_s=t["ours_grad"])
    ours1 = dict(threads=1, grid=list(grid.shape), synthesis_analysis_s=t["ours1_sa"], gradient_s=t["ours1_grad"])

    def speedups(o):
        return dict(synthesis_analysis_glq=pysh["glq_synthesis_analysis_s"] / o["synthesis_analysis_s"],
                    synthesis_analysis_dh2=pysh["dh2_synthesis_analysis_s"] / o["synthesis_analysis_s"],
                    gradient_dh2=pysh["dh2_gradient_s"] / o["gradient_s"])
    return dict(lmax=lmax, repeats=repeats, ours=ours, ours_1thread=ours1, pyshtools=pysh,
                agreement_rel=_check_same_field(lmax), speedup=speedups(ours), speedup_1thread=speedups(ours1))


def run(quick: bool = False) -> dict:
    import ducc0
    import pyshtools

    from meanfield import sphere

    load_before = os.getloadavg()
    rows = [bench_one(lmax, _repeats(lmax, quick)) for lmax in (QUICK_SIZES if quick else SIZES)]
    return dict(
        case=NAME, quick=quick, date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        our_threads=sphere.NTHREADS, loadavg_before=load_before, loadavg_after=os.getloadavg(),
        python=platform.python_version(), machine=platform.machine(),
        versions=dict(ducc0=ducc0.__version__, pyshtools=pyshtools.__version__, numpy=np.__version__),
        pyshtools_backend=pyshtools.backends.preferred_backend(), rows=rows)


def table(res: dict) -> str:
    """Markdown table of a :func:`run` result."""
    t = res["our_threads"]
    lines = [f"S² transforms, ours ({t} thread{'s' if t > 1 else ''}; and 1 thread) against pyshtools "
             f"{res['versions']['pyshtools']} default path (backend '{res['pyshtools_backend']}', 1 thread); "
             f"ducc0 {res['versions']['ducc0']}, {res['cores']} usable core(s), load average "
             f"{res['loadavg_before'][0]:.2f} → {res['loadavg_after'][0]:.2f}. Medians of interleaved repeats, ms.",
             "",
             "| L | operation | our grid | pyshtools grid | ours | ours 1 thr | pyshtools | speedup | speedup 1 thr |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        o, o1, p = r["ours"], r["ours_1thread"], r["pyshtools"]
        og = "×".join(map(str, o["grid"]))
        cases = [("synthesis+analysis", "glq", "GLQ " + "×".join(map(str, p["glq_grid"])),
                  o["synthesis_analysis_s"], o1["synthesis_analysis_s"], p["glq_synthesis_analysis_s"]),
                 ("synthesis+analysis", "dh2", "DH2 " + "×".join(map(str, p["dh2_grid"])),
                  o["synthesis_analysis_s"], o1["synthesis_analysis_s"], p["dh2_synthesis_analysis_s"]),
                 ("gradient", "dh2", "DH2 " + "×".join(map(str, p["dh2_grid"])),
                  o["gradient_s"], o1["gradient_s"], p["dh2_gradient_s"])]
        for op, key, pg, to, to1, tp in cases:
            lines.append(f"| {r['lmax']} | {op} | GL {og} | {pg} | {1e3 * to:.3f} | {1e3 * to1:.3f} | "
                         f"{1e3 * tp:.3f} | {tp / to:.2f} | {tp / to1:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"L in {QUICK_SIZES} instead of {SIZES}")
    ap.add_argument("--output", default=None, help=f"folder for {NAME}.json")
    args = ap.parse_args(argv)
    res = run(args.quick)
    print(table(res))
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{NAME}.json").write_text(json.dumps(res, indent=1))
        print(f"\nwrote {out / (NAME + '.json')}")
    return res


if __name__ == "__main__":
    main()
