"""Resolution loss of the spectral solver under Post-LN clustering (numbers and figure of numerics.md).

β = 5, softmax attention, Q = K = V = I on S², initial density ρ0 = 1 + 0.5 z + 0.3 xy (mass 1).

1. on_resolution_loss="stop" at fixed L = 16, 32, 64, 128: the time at which the monitor stops the run.
2. on_resolution_loss="refine" from L = 16 (factor 1.5, lmax_max = 256): the band limit against time.

Run:  python docs/scripts/resolution.py   (writes docs/images/resolution.png, prints the table)
"""
import time
import warnings
from pathlib import Path

import numpy as np

import meanfield as mf
from meanfield import plot

IMAGES = Path(__file__).resolve().parents[1] / "images"
BETA = 5.0


def initial(L):
    return mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 2] + 0.3 * x[..., 0] * x[..., 1], L)


def main():
    model = mf.Model(BETA, "post-ln")
    warnings.simplefilter("ignore", mf.MeanfieldWarning)
    stops = {}
    print("fixed L, on_resolution_loss='stop'")
    print(f"{'L':>4s} {'t_stop':>8s} {'steps':>6s} {'wall/s':>7s}")
    for L in (16, 32, 64, 128):
        t0 = time.perf_counter()
        tr = mf.simulate(model, initial(L), 12.0)
        wall = time.perf_counter() - t0
        stops[L] = tr
        print(f"{L:4d} {tr.times[-1]:8.3f} {len(tr.steps['t']):6d} {wall:7.1f}   {tr.status.name}: {tr.detail}")
    t0 = time.perf_counter()
    ref = mf.simulate(model, initial(16), 10.0, on_resolution_loss="refine", lmax_max=256)
    wall = time.perf_counter() - t0
    t, lmax = ref.steps["t"], ref.steps["lmax"]
    print(f"\nrefine from L = 16 (×1.5, lmax_max = 256): status {ref.status.name} at t = {ref.times[-1]:.3f}, "
          f"{len(t)} steps, {wall:.1f} s, max |mass error| {np.max(np.abs(ref.steps['mass_error'])):.1e}")
    print(f"  {ref.detail}")
    print("  L reached at t:")
    for L in np.unique(lmax):
        print(f"    L = {int(L):4d} from t = {t[np.argmax(lmax == L)]:.3f}")

    plt = plot._plt()
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.0), constrained_layout=True)
    for L, tr in stops.items():
        axes[0].semilogy(tr.steps["t"], tr.steps["tail"], label=f"L = {L}")
    axes[0].axhline(1e-6, color="0.5", ls=":", lw=1)
    axes[0].axhline(1e-4, color="0.5", ls="--", lw=1)
    axes[0].set_xlabel("t")
    axes[0].set_title("tail fraction E_tail, fixed L (stops at 1e-4)", fontsize=9)
    axes[0].legend(fontsize=8)
    axes[1].step(t, lmax, where="post")
    axes[1].set_yscale("log", base=2)
    axes[1].set_xlabel("t")
    axes[1].set_title("band limit under on_resolution_loss='refine'", fontsize=9)
    fig.suptitle(f"Post-LN, β = {BETA:g}, SA, S²: resolution loss", fontsize=10)
    IMAGES.mkdir(exist_ok=True)
    fig.savefig(IMAGES / "resolution.png", dpi=90)
    print(f"\nwrote {IMAGES / 'resolution.png'}")


if __name__ == "__main__":
    main()
