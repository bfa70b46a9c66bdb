"""Case 2: one spectral right-hand side in units of one scalar transform, L = 32..512.

For Post-LN with softmax attention (Q = K = V = I) a right-hand side needs four transforms: synthesis
of ρ, synthesis of Z = K∗ρ, the spin-1 synthesis of ∇Z and the spin-1 adjoint for div(ρv); a spin-1
transform costs about two scalar ones, so the floor is about 6 units.  The unit is one scalar synthesis
on the same 3/2-rule Gauss–Legendre grid, timed in the same run; "minimal" is those four ducc0 calls
alone (no grid arithmetic), also timed in the same run.  Pre-LN (a radius field: 4 more transforms) is
shown for information.  Target: Post-LN ≤ 12 units.
"""
from __future__ import annotations

import numpy as np

from . import _common as C

NAME = "spectral"
TITLE = "2. Spectral right-hand side in units of one scalar transform"
SIZES = (32, 64, 128, 256, 512)
QUICK_SIZES = (32, 64, 128)
BETA = 5.0
TARGET_UNITS = 12.0


def backend(lmax: int, scheme: str = "post-ln", beta: float = BETA):
    """A spectral backend at band limit ``lmax`` on a smooth random density (degree 4; the cost does not depend
    on the data)."""
    import meanfield as mf
    from ..backends._spectral import SpectralBackend

    return SpectralBackend(mf.Model(beta, scheme), mf.Density.random(lmax, seed=0, degree=4, amplitude=0.5))


def transform_calls(be, nthreads: int):
    """Callables on ``be``'s grid: one scalar synthesis (the unit) and the minimal Post-LN transform set."""
    from ..sphere import _sh as sh

    ducc = sh._ducc()
    b = be.basis
    L, g = b.lmax, b.grid
    geo = dict(lmax=L, geometry="GL", nthreads=nthreads)
    a = np.ascontiguousarray(be.y[0, 0][None])
    zc = np.ascontiguousarray(b.conv(be.y[0, 0], be.attention.lam)[None])
    flux = np.ascontiguousarray(np.stack([b.synth(be.y[0, 0])] * 2) * g.weights)

    def unit():
        return ducc.synthesis_2d(alm=a, spin=0, ntheta=g.ntheta, nphi=g.nphi, **geo)

    def minimal():  # the four transforms of a Post-LN SA right-hand side, nothing else
        ducc.synthesis_2d(alm=a, spin=0, ntheta=g.ntheta, nphi=g.nphi, **geo)
        ducc.synthesis_2d(alm=zc, spin=0, ntheta=g.ntheta, nphi=g.nphi, **geo)
        ducc.synthesis_2d(alm=zc, spin=1, mode="DERIV1", ntheta=g.ntheta, nphi=g.nphi, **geo)
        ducc.adjoint_synthesis_2d(map=flux, spin=1, mode="DERIV1", **geo)

    lam = be.attention.lam

    def anchor_loop():  # the anchor's "minimal numpy+ducc0 loop": its three transforms and the numpy between them
        rho = ducc.synthesis_2d(alm=a, spin=0, ntheta=g.ntheta, nphi=g.nphi, **geo)
        c = np.ascontiguousarray(b.conv(a[0], lam)[None])                  # the degree-diagonal kernel
        grad = ducc.synthesis_2d(alm=c, spin=1, mode="DERIV1", ntheta=g.ntheta, nphi=g.nphi, **geo)
        ducc.adjoint_synthesis_2d(map=np.ascontiguousarray(rho * grad * g.weights), spin=1, mode="DERIV1", **geo)

    return unit, minimal, anchor_loop


def _repeats(lmax, quick):
    if lmax <= 64:
        return 15 if quick else 31
    if lmax <= 128:
        return 9 if quick else 15
    return 5 if (quick or lmax >= 512) else 9


def run(quick: bool = False, sizes=None) -> dict:
    from ..sphere import _sh as sh

    sizes = C.sizes_override("sizes", sizes, QUICK_SIZES if quick else SIZES)
    nt = sh.NTHREADS
    rows = []
    for L in sizes:
        post, pre = backend(L, "post-ln"), backend(L, "pre-ln")
        # the unit and the minimal set on the threads the right-hand side's transforms use (one below
        # GRID_THREADS_FROM_L): a 2-thread unit under a 1-thread right-hand side measured the threading, not the cost
        threads = sh._grid_threads(L)
        unit, minimal, _ = transform_calls(post, threads)
        rounds = C.interleaved({"post": lambda: post.rhs(0.0, post.y), "pre": lambda: pre.rhs(0.0, pre.y),
                                "unit": unit, "minimal": minimal}, _repeats(L, quick))
        t = C.medians(rounds)
        g = post.basis.grid
        rows.append(dict(lmax=L, ntheta=g.ntheta, nphi=g.nphi, threads=threads, times_s=t, rounds_s=rounds,
                         post_units=t["post"] / t["unit"], pre_units=t["pre"] / t["unit"],
                         minimal_units=t["minimal"] / t["unit"],
                         post_over_minimal=t["post"] / t["minimal"]))
    worst = max(r["post_units"] for r in rows)
    return dict(case=NAME, title=TITLE, rows=rows, comparisons=[],
                params=dict(beta=BETA, attention="softmax", threads=nt, grid_threads_from_l=sh.GRID_THREADS_FROM_L,
                            sizes=list(sizes)),
                targets=[C.target("Post-LN RHS cost", f"≤ {TARGET_UNITS:g} scalar transforms at every L",
                                  round(worst, 2), worst <= TARGET_UNITS,
                                  f"worst L; minimal four-transform set ≈ "
                                  f"{np.median([r['minimal_units'] for r in rows]):.1f}")])


def report(res: dict, out) -> str:
    rows = [[r["lmax"], f"{r['ntheta']}×{r['nphi']}", r["threads"],
             C.ms(r["times_s"]["unit"]), C.ms(r["times_s"]["minimal"]),
             C.ms(r["times_s"]["post"]), f"{r['post_units']:.2f}", f"{r['minimal_units']:.2f}",
             f"{r['post_over_minimal']:.2f}", C.ms(r["times_s"]["pre"]), f"{r['pre_units']:.2f}"]
            for r in res["rows"]]
    text = [f"β = {res['params']['beta']:g}, softmax attention, Q = K = V = I, meanfield's default threads "
            f"({res['params']['threads']} from L = {res['params']['grid_threads_from_l']}, one below: column 'thr'; "
            "the unit and the minimal set are timed on the same); a smooth random density. Unit = one scalar synthesis "
            "on the same grid; *minimal* = the four ducc0 calls a Post-LN right-hand side cannot avoid (ρ, Z, spin-1 "
            "∇Z, spin-1 divergence), timed alone. "
            "Medians of interleaved repeats.", "",
            C.md_table(["L", "grid", "thr", "unit ms", "minimal ms", "Post-LN RHS ms", "Post-LN units",
                        "minimal units", "Post-LN / minimal", "Pre-LN RHS ms", "Pre-LN units"], rows)]

    def draw(ax):
        ls = [r["lmax"] for r in res["rows"]]
        ax.semilogx(ls, [r["post_units"] for r in res["rows"]], "o-", label="Post-LN RHS")
        ax.semilogx(ls, [r["pre_units"] for r in res["rows"]], "s-", label="Pre-LN RHS (radius field)")
        ax.semilogx(ls, [r["minimal_units"] for r in res["rows"]], "k:", label="minimal four transforms")
        ax.axhline(TARGET_UNITS, color="r", ls="--", lw=1, label=f"target ≤ {TARGET_UNITS:g}")
        ax.set_xticks(ls, [str(x) for x in ls])
        ax.set_ylim(0, max(TARGET_UNITS + 2, max(r["pre_units"] for r in res["rows"]) + 1))
        ax.set_xlabel("band limit L")
        ax.set_ylabel("cost / one scalar synthesis")
        ax.set_title("Spectral right-hand side in scalar-transform units")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    text += ["", f"![RHS cost in transform units]({C.figure(out / 'spectral_rhs.png', draw)})"]
    return "\n".join(text)
