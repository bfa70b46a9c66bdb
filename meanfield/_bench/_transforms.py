"""Case 1: our S² transforms and gradient against pyshtools' default path, L = 64..1024.

For a random real field of band limit L (pyshtools gets the same field as real '4pi' coefficients, its
default convention):

* ``synthesis+analysis``: ours, :func:`meanfield.sphere.synthesis` then :func:`~meanfield.sphere.analysis`
  on the minimal Gauss–Legendre grid (L+1 rings); pyshtools, ``SHCoeffs.expand(grid='GLQ')`` then
  ``SHGrid.expand()`` (L+1 × 2L+1), and the same on its default ``'DH2'`` grid (2L+2 × 4L+4 + 1).
* ``gradient``: ours, :func:`meanfield.sphere.gradient` (one spin-1 synthesis, both components) on the same
  grid; pyshtools, ``SHCoeffs.gradient()``, which only works on DH grids (default 'DH2').

pyshtools runs its default backend (``pyshtools.backends.preferred_backend()``, 'ducc' when ducc0 is
installed) with its default one thread; ours runs ``meanfield.sphere.NTHREADS`` threads (the usable
cores) and, for a like-for-like column, one thread.
"""
from __future__ import annotations

import numpy as np

from . import _common as C

NAME = "transforms"
TITLE = "1. Transforms and gradients against pyshtools"
SIZES = (64, 128, 256, 512, 1024)
QUICK_SIZES = (64, 128)


def _repeats(lmax: int, quick: bool) -> int:
    if lmax <= 128:
        return 5 if quick else 11
    return 3 if quick else (7 if lmax <= 512 else 5)


def _random_alm(lmax: int, seed: int = 0) -> np.ndarray:
    from .. import sphere

    rng = np.random.default_rng(seed)
    ell, m = sphere.lm_arrays(lmax)
    a = (rng.standard_normal(ell.size) + 1j * rng.standard_normal(ell.size)) / (1.0 + ell)
    a[m == 0] = a[m == 0].real
    return a


def _threads(k: int) -> str:
    return f"{k} thread" + ("s" if k != 1 else "")


def _with_threads(threads: int, f):
    def g():
        with C.meanfield_threads(threads):
            return f()
    return g


def _check_same_field(lmax: int) -> float:
    """Max |ours − pyshtools| / max |field| at pyshtools' GLQ nodes: both sides compute the same field."""
    from .. import sphere

    a = _random_alm(lmax)
    grid = sphere.to_shcoeffs(a, lmax).convert(normalization="4pi", csphase=1, kind="real").expand(grid="GLQ")
    th, ph = np.meshgrid(np.radians(90.0 - grid.lats()), np.radians(grid.lons()), indexing="ij")
    ours = sphere.synthesis_points(a, lmax, sphere.angles_to_points(th, ph))
    return float(np.max(np.abs(ours - grid.data)) / np.max(np.abs(grid.data)))


def bench_one(lmax: int, repeats: int) -> dict:
    import pyshtools

    from .. import sphere
    from ..sphere import _sh as sh

    nt = sphere.NTHREADS
    a = _random_alm(lmax)
    grid = sphere.SphereGrid.for_bandlimit(lmax, dealias=False)
    coeffs = sphere.to_shcoeffs(a, lmax).convert(normalization="4pi", csphase=1, kind="real")
    sa = lambda: sphere.analysis(sphere.synthesis(a, lmax, grid), lmax, grid)  # noqa: E731
    gr = lambda: sphere.gradient(a, lmax, grid)  # noqa: E731
    rounds = C.interleaved({
        "ours_sa": _with_threads(nt, sa), "ours1_sa": _with_threads(1, sa),
        "ours_grad": _with_threads(nt, gr), "ours1_grad": _with_threads(1, gr),
        "pysh_glq_sa": lambda: coeffs.expand(grid="GLQ").expand(),
        "pysh_dh2_sa": lambda: coeffs.expand().expand(),
        "pysh_dh2_grad": lambda: coeffs.gradient(),
    }, repeats)
    t = C.medians(rounds)
    glq_shape = list(coeffs.expand(grid="GLQ").data.shape)
    dh2_shape = list(coeffs.expand().data.shape)
    with C.meanfield_threads(nt):       # what "ours" ran on: meanfield's grid transforms use one thread below L = 128
        used = sh._grid_threads(lmax)
    return dict(lmax=lmax, repeats=repeats, our_grid=list(grid.shape), our_threads=used,
                pyshtools_glq_grid=glq_shape, pyshtools_dh2_grid=dh2_shape, times_s=t, rounds_s=rounds,
                agreement_rel=_check_same_field(lmax))


def run(quick: bool = False, sizes=None) -> dict:
    import pyshtools

    from .. import sphere
    from ..sphere import _sh as sh

    sizes = C.sizes_override("sizes", sizes, QUICK_SIZES if quick else SIZES)
    rows = [bench_one(lmax, _repeats(lmax, quick)) for lmax in sizes]
    comps = []
    for r in rows:
        t = r["times_s"]
        for op, o, o1, alt, alt_name in (
                ("synthesis+analysis", "ours_sa", "ours1_sa", "pysh_glq_sa", "pyshtools GLQ expand+expand"),
                ("synthesis+analysis", "ours_sa", "ours1_sa", "pysh_dh2_sa", "pyshtools DH2 expand+expand (default)"),
                ("gradient", "ours_grad", "ours1_grad", "pysh_dh2_grad", "pyshtools DH2 gradient() (default)")):
            comps.append(C.comparison(f"{op}, L = {r['lmax']}", f"meanfield.sphere ({_threads(r['our_threads'])})",
                                      alt_name, t[o], t[alt], lmax=r["lmax"], operation=op,
                                      ours_1thread_s=t[o1], speedup_1thread=t[alt] / t[o1]))
    worst = min(c["speedup"] for c in comps)
    worst1 = min(c["speedup_1thread"] for c in comps)
    return dict(case=NAME, title=TITLE, rows=rows, comparisons=comps,
                params=dict(sizes=list(sizes), pyshtools_backend=pyshtools.backends.preferred_backend(),
                            pyshtools_threads=1, our_threads=sphere.NTHREADS,
                            grid_threads_from_l=sh.GRID_THREADS_FROM_L),
                targets=[C.target("ahead of pyshtools' default path", "speedup > 1 at every L and operation",
                                  round(worst, 3), worst > 1, f"1-thread minimum {worst1:.3g}")])


def report(res: dict, out) -> str:
    rows = []
    for c in res["comparisons"]:
        rows.append([c["lmax"], c["operation"], c["alternative"], C.ms(c["ours_s"]), C.ms(c["ours_1thread_s"]),
                     C.ms(c["alternative_s"]), C.ratio(c["speedup"]), C.ratio(c["speedup_1thread"])])
    p = res["params"]
    text = [f"Ours on meanfield's default threads ({p['our_threads']} from L = {p['grid_threads_from_l']}, one below) "
            "and on 1 thread against pyshtools' default path (backend "
            f"'{p['pyshtools_backend']}', {p['pyshtools_threads']} thread). A random real field of band limit L; "
            "our grid is the minimal Gauss–Legendre grid (L+1 rings), pyshtools' default is DH2 "
            "(2L+2 rings). Medians of interleaved repeats, ms.", "",
            C.md_table(["L", "operation", "pyshtools path", "ours ms", "ours 1 thr ms", "pyshtools ms",
                        "speedup", "speedup 1 thr"], rows), "",
            "Same field on both sides (max relative difference at pyshtools' GLQ nodes): "
            + ", ".join(f"L={r['lmax']}: {r['agreement_rel']:.1e}" for r in res["rows"]) + "."]

    def draw(ax):
        ls = [r["lmax"] for r in res["rows"]]
        for key, label, style in (("ours_sa", "ours: synthesis+analysis", "o-"),
                                  ("ours_grad", "ours: gradient", "s-"),
                                  ("pysh_glq_sa", "pyshtools GLQ: synthesis+analysis", "o--"),
                                  ("pysh_dh2_sa", "pyshtools DH2: synthesis+analysis", "^--"),
                                  ("pysh_dh2_grad", "pyshtools DH2: gradient", "s--")):
            ax.loglog(ls, [r["times_s"][key] for r in res["rows"]], style, label=label)
        ax.set_xlabel("band limit L")
        ax.set_ylabel("seconds (median)")
        ax.set_title("S² transforms: meanfield (ducc0) vs pyshtools default path")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig = C.figure(out / "transforms.png", draw)
    text += ["", f"![transform scaling]({fig})"]
    return "\n".join(text)
