"""Cost of one spectral right-hand side in units of one scalar transform, measured in the same run.

For Post-LN with softmax attention (Q = K = V = I) one right-hand side is: synthesis of ρ, synthesis
of Z = K∗ρ, spin-1 synthesis of ∇Z and the spin-1 adjoint for div(ρv): about 6 scalar-transform units.
The unit is one scalar synthesis on the same 3/2-rule Gauss–Legendre grid.  Also reports the cost per
Runge–Kutta stage next to the Dedalus v3 figures of ../shared/anchors/dedalus_sphere.json (measured on
this machine kind by the anchor's authors, one thread: a cross-run reference, not a same-run ratio).

    python benchmarks/bench_spectral.py [--quick] [--output DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def _median_time(f, repeats):
    f()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _anchor():
    here = Path(__file__).resolve().parents[1]
    for p in (here.parent / "shared" / "anchors" / "dedalus_sphere.json",):
        if p.exists():
            return json.loads(p.read_text())
    return None


def run(quick=False, threads=None, scheme="post-ln"):
    import meanfield as mf
    from meanfield.backends._spectral import SpectralBackend
    from meanfield.sphere import _sh as sh

    if threads is not None:
        sh.NTHREADS = threads
    sizes = [32, 64, 128] if quick else [32, 64, 128, 256, 512]
    repeats = 5 if quick else 11
    rows = []
    for L in sizes:
        backend = SpectralBackend(mf.Model(5.0, scheme), mf.Density.random(L, seed=0, degree=4))
        y, grid = backend.y, backend.basis.grid
        t_rhs = _median_time(lambda: backend.rhs(0.0, y), repeats)
        t_syn = _median_time(lambda: sh.synthesis(y[0, 0], L, grid), repeats)
        rows.append(dict(lmax=L, ntheta=grid.ntheta, nphi=grid.nphi, rhs_s=t_rhs, synthesis_s=t_syn,
                         rhs_in_transforms=t_rhs / t_syn))
    return dict(case="spectral_rhs_cost", scheme=scheme, attention="softmax", threads=sh.NTHREADS,
                cores=len(os.sched_getaffinity(0)), target_transforms=12, rows=rows)


def dedalus_comparison(quick=False):
    """Our Post-LN RK stage at Nθ of the anchor's rows, one thread, against the anchor's Dedalus stage."""
    import meanfield as mf
    from meanfield.backends._spectral import SpectralBackend
    from meanfield.sphere import _sh as sh

    anchor = _anchor()
    if anchor is None:
        return None
    saved = sh.NTHREADS
    sh.NTHREADS = 1
    out = []
    try:
        for row in anchor["rows"]:
            ntheta = row["ntheta"]
            if quick and ntheta > 128:
                continue
            L = (2 * (ntheta - 1)) // 3          # our 3/2-rule grid for L has ⌊3L/2⌋+1 ≈ ntheta rings
            backend = SpectralBackend(mf.Model(5.0), mf.Density.random(L, seed=0, degree=4))
            t_stage = _median_time(lambda: backend.rhs(0.0, backend.y), 7)
            out.append(dict(anchor_ntheta=ntheta, our_lmax=L, our_ntheta=backend.basis.grid.ntheta,
                            our_stage_s=t_stage, dedalus_rk443_stage_s=row["dedalus_rk443_stage_s"],
                            minimal_ducc0_rhs_s=row["ducc0_rhs_s"],
                            ahead_of_dedalus=row["dedalus_rk443_stage_s"] / t_stage,
                            over_minimal_loop=t_stage / row["ducc0_rhs_s"]))
    finally:
        sh.NTHREADS = saved
    return dict(case="dedalus_reference", note="anchor measured by others on this machine kind; a reference, "
                "not a same-run ratio", rows=out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--output", default=None, help="folder for spectral.json")
    args = ap.parse_args(argv)
    res = dict(rhs=run(args.quick), dedalus=dedalus_comparison(args.quick))
    print(f"spectral RHS (Post-LN, SA) in units of one scalar synthesis; {res['rhs']['threads']} thread(s)")
    print("| L | grid | RHS ms | synthesis ms | RHS / synthesis |")
    print("|---|---|---|---|---|")
    for r in res["rhs"]["rows"]:
        print(f"| {r['lmax']} | {r['ntheta']}×{r['nphi']} | {1e3 * r['rhs_s']:.2f} | {1e3 * r['synthesis_s']:.3f} | "
              f"{r['rhs_in_transforms']:.2f} |")
    if res["dedalus"]:
        print("\nPost-LN stage, one thread, against the Dedalus v3 anchor (reference from this machine kind)")
        print("| Nθ | our L | our stage ms | Dedalus RK443 stage ms | ahead of Dedalus | over minimal loop |")
        print("|---|---|---|---|---|---|")
        for r in res["dedalus"]["rows"]:
            print(f"| {r['anchor_ntheta']} | {r['our_lmax']} | {1e3 * r['our_stage_s']:.2f} | "
                  f"{1e3 * r['dedalus_rk443_stage_s']:.2f} | {r['ahead_of_dedalus']:.1f}× | {r['over_minimal_loop']:.2f}× |")
    if args.output:
        Path(args.output).mkdir(parents=True, exist_ok=True)
        Path(args.output, "spectral.json").write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
