"""Tutorial figure: Post-LN against Pre-LN on S², and Pre-LN with two species of different radius.

β = 4, softmax attention, Q = K = V = I; the same smooth random initial density (L = 24, seed 3).
Runs (spectral backend, on_resolution_loss="refine"):

* Post-LN;
* Pre-LN with one species of radius r0 = 1;
* Pre-LN with two species: ρ0 (1 + z)/2 at radius 1 and ρ0 (1 − z)/2 at radius 2 (masses sum to 1).

Run:  python docs/scripts/radius_species.py   (writes docs/images/radius_species.png)
"""
import time
import warnings
from pathlib import Path

import numpy as np

import meanfield as mf
from meanfield import plot
from meanfield.sphere import SphereGrid, synthesis

IMAGES = Path(__file__).resolve().parents[1] / "images"
BETA, L, T = 4.0, 24, 3.0
OPTS = dict(save_every=0.25, on_resolution_loss="refine", lmax_max=192)


def species_mean_radius(state):
    """∫ρ_i r_i dσ / ∫ρ_i dσ for each species of a state (a Density or a tuple of them)."""
    out = []
    for s in (state if isinstance(state, tuple) else (state,)):
        grid = SphereGrid.for_bandlimit(s.lmax)
        rho, r = synthesis(s.coeffs, s.lmax, grid), synthesis(s.radius, s.lmax, grid)
        out.append(grid.integrate(rho * r) / grid.integrate(rho))
    return out


def total(state):
    if isinstance(state, tuple):
        return mf.Density(sum(s.coeffs for s in state), state[0].lmax)
    return state


def main():
    warnings.simplefilter("ignore", mf.MeanfieldWarning)
    rho0 = mf.Density.random(L, seed=3, degree=3)
    north = mf.Density.from_function(lambda x: rho0.evaluate(x) * (1 + x[..., 2]) / 2, L, radius=1.0)
    south = mf.Density.from_function(lambda x: rho0.evaluate(x) * (1 - x[..., 2]) / 2, L, radius=2.0)
    print(f"species masses {north.mass():.15f} + {south.mass():.15f} = {north.mass() + south.mass():.15f}")
    runs = {}
    for label, scheme, initial, extra in (("Post-LN", "post-ln", rho0, {}),
                                          ("Pre-LN, r0 = 1", "pre-ln", rho0, dict(r0=1.0)),
                                          ("Pre-LN, 2 species", "pre-ln", [north, south], {})):
        t0 = time.perf_counter()
        runs[label] = tr = mf.simulate(mf.Model(BETA, scheme), initial, T, **OPTS, **extra)
        d = tr.diagnostics
        print(f"{label:26s} {tr.status.name:16s} t_end {tr.times[-1]:.2f}  L_end {int(d['lmax'][-1]):4d}  "
              f"E_β {d['energy'][0]:.6f} -> {d['energy'][-1]:.6f}  max|mass err| {np.max(np.abs(d['mass_error'])):.1e}"
              f"  {time.perf_counter() - t0:.1f} s")
    langevin = 1 / np.tanh(BETA) - 1 / BETA     # ⟨θ, A⟩ on the uniform state (SA, d = 3)
    sp = runs["Pre-LN, 2 species"]
    radii = np.array([species_mean_radius(s) for s in sp.states])
    one = np.array([species_mean_radius(s)[0] for s in runs["Pre-LN, r0 = 1"].states])
    for name, tr, r in (("r0 = 1", runs["Pre-LN, r0 = 1"], one), ("species 1", sp, radii[:, 0]),
                        ("species 2", sp, radii[:, 1])):
        slope = np.polyfit(tr.times, r, 1)[0]
        print(f"mean radius, {name:9s}: {r[0]:.4f} -> {r[-1]:.4f} at t = {tr.times[-1]:.2f}; mean slope {slope:.4f} "
              f"(uniform-state rate coth β − 1/β = {langevin:.4f})")

    plt = plot._plt()
    fig = plt.figure(figsize=(9.6, 5.4), constrained_layout=True)
    grid = fig.add_gridspec(2, 3)
    for j, (label, tr) in enumerate(runs.items()):
        ax = fig.add_subplot(grid[0, j], projection="mollweide")
        rho = total(tr.final)
        plot.density_map(rho, ax=ax, title=f"{label}, t = {tr.times[-1]:g}, max ρ = {rho.on_grid().max():.3g}")
    ax = fig.add_subplot(grid[1, 0])
    for label, tr in runs.items():
        ax.plot(tr.times, tr.diagnostics["energy"], label=label)
    ax.set_xlabel("t")
    ax.set_title("interaction energy E_β", fontsize=9)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[1, 1])
    ax.plot(runs["Pre-LN, r0 = 1"].times, one, label="Pre-LN, r0 = 1")
    ax.plot(sp.times, radii[:, 0], label="species 1 (r0 = 1)")
    ax.plot(sp.times, radii[:, 1], label="species 2 (r0 = 2)")
    for r0 in (1.0, 2.0):
        ax.plot(sp.times, r0 + langevin * sp.times, ":", color="0.4", lw=1)
    ax.set_xlabel("t")
    ax.set_title("mean radius (dotted: r0 + (coth β − 1/β) t)", fontsize=9)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[1, 2])
    for label, tr in runs.items():
        ax.semilogy(tr.times, tr.diagnostics["max_speed"], label=label)
    ax.set_xlabel("t")
    ax.set_title("max |v| on the grid", fontsize=9)
    fig.suptitle(f"Post-LN vs Pre-LN on S², β = {BETA:g}, SA: the radius slows Pre-LN tokens (speed 1/r)",
                 fontsize=10)
    IMAGES.mkdir(exist_ok=True)
    fig.savefig(IMAGES / "radius_species.png", dpi=90)
    print(f"wrote {IMAGES / 'radius_species.png'}")


if __name__ == "__main__":
    main()
