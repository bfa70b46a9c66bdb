"""Tutorial figure: a particle simulation against the mean-field PDE, and its N^{-1/2} convergence.

Post-LN, β = 4, softmax, on S²: the smooth random density of examples/post_ln_s2.toml evolved by the
spectral solver (refining its band limit as clusters form) and by N i.i.d. tokens sampled from it
(particles-sh, RK4, step 0.05), N = 10³, 10⁴, 10⁵, three seeds each.  The H⁻¹ distance between the
particles and the PDE at t = 0, 1, 2 (at the band limit 32 of the initial density) is averaged over the
seeds and its slope in N fitted.

Run:  python docs/scripts/pde_vs_particles.py   (writes docs/images/pde_vs_particles.png)
"""
import warnings
from pathlib import Path

import numpy as np

import meanfield as mf
from meanfield import plot

IMAGES = Path(__file__).resolve().parents[1] / "images"
NS, SEEDS, TIMES = (1_000, 10_000, 100_000), (0, 1, 2), (0.0, 1.0, 2.0)


def main():
    model = mf.Model(4.0)
    rho0 = mf.Density.random(32, seed=1, degree=3, amplitude=1.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        pde = mf.simulate(model, rho0, TIMES[-1], t_eval=TIMES[1:], on_resolution_loss="refine", lmax_max=128)
    print(f"PDE: {pde.message} L: {int(pde.diagnostics['lmax'][0])} → {int(pde.diagnostics['lmax'][-1])}")
    dist, runs = {}, {}
    for n in NS:
        rows = []
        for seed in SEEDS:
            tokens = mf.sample_density(rho0, n, seed=seed)
            tr = mf.simulate(model, tokens, TIMES[-1], t_eval=TIMES[1:], backend="particles-sh", step=0.05)
            t, d, _ = plot.comparison_distances(pde, tr)
            rows.append(d)
            runs.setdefault(n, tr)
        dist[n] = np.mean(rows, axis=0)
    print("mean H^-1 distance at t =", ", ".join(f"{t:g}" for t in TIMES))
    for n in NS:
        print(f"  N = {n:>7,}: " + ", ".join(f"{v:.2e}" for v in dist[n]))
    for k, t in enumerate(TIMES):
        slope = np.polyfit(np.log(NS), np.log([dist[n][k] for n in NS]), 1)[0]
        print(f"  fitted exponent at t = {t:g}: {slope:.3f}")
    fig = plot.comparison_figure([pde, runs[100_000]], labels=["spectral PDE", "particles-sh, N = 10⁵"], panels=3)
    fig.savefig(IMAGES / "pde_vs_particles.png", dpi=80)
    print(f"wrote {IMAGES / 'pde_vs_particles.png'}")


if __name__ == "__main__":
    main()
