"""The mean-field PDE against particles: the distance between N i.i.d. tokens and the PDE solution decays
like N^{-1/2}, for every sphere scheme (and the radius schemes Pre-LN and Peri-LN in the full run).

Statement (propagation of chaos): if θ_1..θ_N are i.i.d. from ρ_0 and move by the particle dynamics, their
empirical measure μ_N(t) approaches the PDE solution ρ(t) at the Monte Carlo rate,
E‖μ_N(t) − ρ(t)‖ = O(N^{-1/2}), in a negative Sobolev norm taken at a fixed band limit.

What is computed: ρ_0 = 1 + 0.5 z + 0.3 xy on S², β = 2, Q = K = V = I, SA, t = 1.  The PDE by the spectral
backend (L = 24; its own error, measured against L = 36, must stay below 1e-5, i.e. < 0.1 % of the
particle distances); particles by ``backend="particles-sh"`` (kernel
exact to 1e-12, RK45 rtol 1e-7, far below the sampling error); the distance
‖·‖_{H^{-1}} at degree 16 (:func:`meanfield.sobolev_distance`), root-mean-square over R independent
samples per N.  References: the exponent −1/2 (tolerance 0.1, about 3 standard errors of the fitted
slope for these R), and at t = 0 the exact value

    N·E‖μ_N − ρ_0‖²_{H^{-1}} = Σ_{ℓ=1}^{16} (1 + ℓ(ℓ+1))^{-1} [(2ℓ + 1) − E_ℓ(ρ_0)/(4π)]

(addition theorem; E_ℓ the degree power of ρ_0), compared with the pooled sample mean within 3 standard
errors of that mean.

The exponent alone cannot see a bias of the PDE (a 10 % error in the spectral backend's speed left it within
0.1), so each scheme is also checked deterministically: particles at the nodes of a 48 × 96 Gauss–Legendre rule
with weights ρ_0(x_q) w_q / 4π carry the same measure exactly for every degree the kernel sees at t = 0; at
t = 1 their distance to the PDE is the rule's error on the pushed-forward measure plus the PDE's own.  That is
spectrally small where the flow stays smooth (Post-LN, LN-Scaling, Pre-LN: ~1e-11; Peri-LN 5e-5 → 2e-8 from 24
to 48 rings) but algebraic for nGPT, whose unit-speed clustering compresses the flow map (4.3e-4, 1.5e-4,
5.8e-5 at 24, 36, 48 rings): its tolerance adds the distance between the particles of the 36- and 48-ring rules
at t = 1 (9.3e-5: the error of the 36-ring rule less that of the 48-ring one, above the latter as the errors more
than halve), to the others' ``2·PDE_TOL``.  A 3 % speed error moves the distance by 4.7e-3 (Post-LN), 9.2e-3
(nGPT), 3.5e-3 (LN-Scaling), and leaves the exponents within 0.1.
"""
from __future__ import annotations

import numpy as np

from ._common import compare, figure_path, plt, quiet

NAME = "convergence"
TITLE = "PDE vs particles: convergence in N for each sphere scheme"

BETA, T, L, L_DIST = 2.0, 1.0, 24, 16
PDE_TOL = 1e-5          # the PDE's own error must be < 0.1 % of the smallest particle distance measured (~1e-2)
QUAD_RINGS = 48
ALGEBRAIC = ("ngpt",)  # schemes whose rule error is algebraic: estimated by a coarser rule (module docstring)
COARSE_RINGS = 36
LABEL = {"post-ln": "Post-LN", "ngpt": "nGPT", "ln-scaling": "LN-Scaling", "pre-ln": "Pre-LN", "peri-ln": "Peri-LN"}


def _initial():
    from .._measures import Density

    return Density.from_function(lambda x: 1 + 0.5 * x[..., 2] + 0.3 * x[..., 0] * x[..., 1], L)


def _exact_t0(rho0):
    from ..sphere import degree_power

    ell = np.arange(1, L_DIST + 1)
    e = degree_power(rho0.resized(L_DIST).coeffs, L_DIST)[1:] / (4 * np.pi)
    return float(np.sum((2 * ell + 1 - e) / (1.0 + ell * (ell + 1))))


def _quadrature_particles(rho0, model, rings=QUAD_RINGS):
    """Particles at Gauss–Legendre nodes carrying ρ_0 σ exactly (radius 1 for the schemes that have one)."""
    from .._measures import Particles
    from ..sphere import SphereGrid

    grid = SphereGrid(rings, 2 * rings)
    x = grid.points.reshape(-1, 3)
    w = grid.weights.reshape(-1) / (4 * np.pi) * rho0.evaluate(x)
    return Particles(x, w, radii=np.ones(len(x)) if model.scheme_def.has_radius else None)


def run(quick: bool, outdir) -> list:
    from .._compare import sobolev_distance
    from .._model import Model
    from .._sampling import sample_density
    from .._simulate import simulate

    schemes = ("post-ln", "ngpt", "ln-scaling") + (() if quick else ("pre-ln", "peri-ln"))
    Ns = (500, 2000, 8000) if quick else (500, 2000, 8000, 32000)
    R = 6 if quick else 10
    rho0 = _initial()
    rows, curves, t0 = [], {}, []
    seeds = np.random.SeedSequence(2024).spawn(len(Ns) * R)
    samples = [[sample_density(rho0, N, seed=np.random.default_rng(seeds[i * R + k])) for k in range(R)]
               for i, N in enumerate(Ns)]
    for i, N in enumerate(Ns):
        t0 += [N * sobolev_distance(p, rho0, s=1.0, lmax=L_DIST) ** 2 for p in samples[i]]
    for s in schemes:
        model = Model(BETA, scheme=s)
        with quiet():
            pde = simulate(model, rho0, T, lmax=L, rtol=1e-10)
            fine = simulate(model, rho0, T, lmax=int(1.5 * L), rtol=1e-10)
        ok = pde.success and fine.success
        rows.append(compare(f"{LABEL[s]}: PDE at t={T:g}, H^-1 distance L={L} vs L={int(1.5 * L)} (its own error)", 0.0,
                            sobolev_distance(pde.final, fine.final, s=1.0, lmax=L_DIST) if ok else np.inf, PDE_TOL))
        quad = simulate(model, _quadrature_particles(rho0, model), T, backend="particles-sh", rtol=1e-10, atol=1e-12)
        tol = 2 * PDE_TOL
        if s in ALGEBRAIC:      # + the rule's error, estimated by the distance to a coarser rule's particles
            coarse = simulate(model, _quadrature_particles(rho0, model, COARSE_RINGS), T, backend="particles-sh",
                              rtol=1e-10, atol=1e-12)
            tol += sobolev_distance(coarse.final, quad.final, s=1.0, lmax=L_DIST)
        rows.append(compare(f"{LABEL[s]}: PDE (L={L}) vs particles from a {QUAD_RINGS}×{2 * QUAD_RINGS} quadrature "
                            f"rule at t={T:g}, H^-1 distance (deterministic)", 0.0,
                            sobolev_distance(quad.final, pde.final, s=1.0, lmax=L_DIST) if ok else np.inf,
                            tol))
        rms = []
        for i, N in enumerate(Ns):
            d = [sobolev_distance(simulate(model, p, T, backend="particles-sh", rtol=1e-7, atol=1e-9).final,
                                  pde.final, s=1.0, lmax=L_DIST) for p in samples[i]]
            rms.append(float(np.sqrt(np.mean(np.square(d)))))
        slope = np.polyfit(np.log(Ns), np.log(rms), 1)[0]
        curves[s] = rms
        rows.append(compare(f"{LABEL[s]}: exponent p of RMS ‖μ_N(t) − ρ(t)‖_H^-1 ~ N^p, t={T:g}, N={Ns[0]}..{Ns[-1]}, "
                            f"R={R}", -0.5, slope, 0.1))
    c0 = _exact_t0(rho0)
    se = float(np.std(t0, ddof=1) / np.sqrt(len(t0)))
    rows.append(compare(f"t=0: N·E‖μ_N − ρ_0‖²_H^-1, exact (addition theorem) vs mean of {len(t0)} samples "
                        "(tolerance 3 s.e.)", c0, float(np.mean(t0)), 3 * se))
    _figure(outdir, Ns, curves, t0, R, c0)
    return rows


def _figure(outdir, Ns, curves, t0, R, c0):
    p = plt()
    fig, ax = p.subplots(figsize=(5.2, 3.6), constrained_layout=True)
    Ns = np.asarray(Ns, dtype=float)
    for s, rms in curves.items():
        ax.loglog(Ns, rms, "o-", ms=4, lw=1, label=f"{LABEL[s]}, t = {T:g}")
    t0 = np.asarray(t0).reshape(len(Ns), R)
    ax.loglog(Ns, np.sqrt(np.mean(t0 / Ns[:, None], axis=1)), "k^", ms=4, label="t = 0 (samples)")
    ax.loglog(Ns, np.sqrt(c0 / Ns), "k--", lw=0.8, label="t = 0 exact: √(C/N)")
    ax.set_xlabel("N (tokens)")
    ax.set_ylabel("RMS H^-1 distance to the PDE")
    ax.set_title(f"particles → mean field, β = {BETA:g}, S², R = {R} samples per N", fontsize=8)
    ax.legend(fontsize=7)
    fig.savefig(figure_path(outdir, NAME), dpi=90)
    p.close(fig)
