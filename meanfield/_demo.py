"""The README demo: Post-LN against Peri-LN from the same token distribution on S² (spectral solver)."""
from __future__ import annotations

import time

import numpy as np


def run_demo(output="demo.png", lmax=48, beta=4.0, t_final=3.0, quiet=False):
    """Run Post-LN and Peri-LN, print their table (unless ``quiet``) and write the figure ``output``.

    Returns
    -------
    dict
        scheme → Trajectory.

    Raises
    ------
    KeyboardInterrupt
        Ctrl-C or SIGTERM during a run: the other run is not started, no table is printed and no figure written.
    """
    import meanfield as mf
    from meanfield import plot
    from ._simulate import propagating_interrupts

    # degree ≤ lmax (Density.random refuses more): --lmax 1 or 2, which a --lmax check accepts, gets a coarser field
    initial = mf.Density.random(lmax, seed=1, degree=min(3, lmax), amplitude=1.2)
    rows, snaps = [], {}
    times = np.linspace(0.0, t_final, 3)
    for scheme in ("post-ln", "peri-ln"):
        t0 = time.perf_counter()
        with propagating_interrupts():
            traj = mf.simulate(mf.Model(beta, scheme), initial, t_final, t_eval=times[1:],
                               on_resolution_loss="refine", lmax_max=4 * lmax)
        elapsed = time.perf_counter() - t0
        snaps[scheme] = traj
        d = traj.diagnostics
        rows.append((scheme, traj.status.name, len(traj.steps["t"]), int(d["lmax"][-1]), d["energy"][-1],
                     d["mass_error"][-1], d["tail_fraction"][-1], elapsed))
    if not quiet:
        print(f"meanfield demo: β = {beta}, SA attention, Q = K = V = I, band limit L = {lmax} (refined on demand)")
        w = max(8, *(len(r[1]) for r in rows))             # RESOLUTION_LOST is 15 characters
        print(f"{'scheme':9s} {'status':{w}s} {'steps':>6s} {'L_end':>6s} {'E_β(t_end)':>11s} {'mass err':>9s} "
              f"{'tail':>9s} {'time/s':>7s}")
        for r in rows:
            print(f"{r[0]:9s} {r[1]:{w}s} {r[2]:6d} {r[3]:6d} {r[4]:11.6f} {r[5]:9.1e} {r[6]:9.1e} {r[7]:7.2f}")
    plt = plot._plt()
    fig = plt.figure(figsize=(10, 5.4), constrained_layout=True)
    for i, (scheme, traj) in enumerate(snaps.items()):
        for j, (t, st) in enumerate(zip(traj.times, traj.states)):
            ax = fig.add_subplot(2, 3, 3 * i + j + 1, projection="mollweide")
            plot.density_map(st, ax=ax, title=f"{scheme}, t = {t:g}, max ρ = {st.on_grid().max():.3g}")
    fig.suptitle(f"Token density on S² (β = {beta}): {_verdict(snaps)}", fontsize=10)
    _save_whole(fig, output)
    plt.close(fig)
    if not quiet:
        print(f"figure written to {output}")
    return snaps



def _verdict(runs) -> str:
    """What the two runs show, for the figure's title: which one clustered more by t_final (its energy E_β, which
    grows as tokens cluster), or that a run ended early (then the two are not compared)."""
    early = [s for s, traj in runs.items() if not traj.success]
    if early:
        return " and ".join(_NAMES[s] for s in early) + " ended early (see the table)"
    post, peri = (runs[s].diagnostics["energy"][-1] for s in ("post-ln", "peri-ln"))
    if post == peri:
        return "Post-LN and Peri-LN end at the same energy"
    faster, slower = ("Post-LN", "Peri-LN") if post > peri else ("Peri-LN", "Post-LN")
    return f"{faster} clusters faster than {slower}"


_NAMES = {"post-ln": "Post-LN", "peri-ln": "Peri-LN"}


def _save_whole(fig, output) -> None:
    """Save ``fig`` to ``output`` through a temporary file: a Ctrl-C during the write leaves the previous figure."""
    import os
    from pathlib import Path

    import matplotlib

    path = Path(output)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        # the format from the final name (the temporary one's suffix is not a format)
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".").lower() or matplotlib.rcParams["savefig.format"])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
