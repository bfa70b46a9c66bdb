"""Linear instability of the uniform measure: growth rates per degree and the most unstable mode, from the
formula, the PDE and particles; the noise floor of the ℓ = 1 mode.

Statement (docs/model.md, "Linear stability of the uniform measure"): a degree-ℓ perturbation of the uniform
measure grows like e^{γ_ℓ t}, γ_ℓ = ℓ(ℓ+d−2) λ_ℓ/β (USA; divided by λ_0 for SA), λ_ℓ the Funk–Hecke
multipliers; the most unstable degree is ℓ* = argmax γ_ℓ (≈ √(2β) for large β).

What is computed:

* :func:`meanfield.growth_rate` against the reference values (docs/validation.md; 6 decimals; d = 2 USA and
  d = 3 SA, β = 1);
* the Funk–Hecke multipliers the rates are made of, :func:`meanfield.funk_hecke` for d = 2 … 5, ℓ ≤ 12,
  β = 1 and 5, against Gauss–Jacobi quadrature of c_d ∫ e^{βt} P_ℓ^{(d)}(t)(1 − t²)^{(d−3)/2} dt;
* the PDE (spectral, S² SA β = 4 at L = 20 and S¹ USA β = 1 at L = 16, band limits at or above the kernel's):
  ρ = 1 + ε Y_ℓ, ε = 1e-7, the log-slope of the degree-ℓ coefficient (least squares over 41 times up to
  min(3/γ_ℓ, 15/γ_max)); tolerance 1e-5 relative (the nonlinearity is O(ε e^{γT}), the time stepping
  rtol 1e-10);
* particles that represent the same perturbed density exactly: tokens at the nodes of a Gauss–Legendre
  grid with weights σ_i (1 + ε Y_ℓ(x_i)) (the grid integrates the kernel's degrees exactly, so the uniform
  weights are a stationary state), moved by ``backend="particles-sh"``; the coefficient is the empirical
  one (:func:`meanfield.particles_coefficients`);
* the most unstable mode at β = 10 (ℓ* = 4): every zonal degree 1..12 seeded with ε = 1e-8, its measured rate
  in the PDE (L = 28) and in grid particles, argmax against :func:`meanfield.most_unstable_mode`, and every
  measured rate against the formula to 1e-5;
* the noise floor of the ℓ = 1 mode (:func:`meanfield.l1_noise_threshold`): for n i.i.d. uniform tokens
  E[n|m_n|²] = 1 exactly and |m_n| ≤ √(χ²_3(0.95)/(3n)) with probability → 0.95 (Monte Carlo, 3 standard
  errors); in the full run, the noise-seeded ℓ = 1 mode of 2·10⁵ i.i.d. tokens (β = 1) grows by e^{γ_1 t}
  (relative tolerance e^β/(λ_0 √n) = Σ_ℓ (2ℓ+1)λ_ℓ/(λ_0 √n): the noise-noise coupling, quadratic in the
  O(n^{-1/2}) fluctuations of the degrees the kernel sees, against the O(n^{-1/2}) ℓ = 1 amplitude).
"""
from __future__ import annotations

import numpy as np

from ._common import compare, figure_path, plt, same

NAME = "linear"
TITLE = "Linear growth rates and the most unstable mode: formula, PDE, particles"

REFERENCE_D2_USA = (0.565159, 0.542991, 0.199516, 0.043794)  # d = 2, β = 1, ℓ = 1..4 (reference values)
REFERENCE_D3_SA = (0.626071, 0.365365, 0.102775, 0.018843)   # d = 3, β = 1, ℓ = 1..4


def _zonal_density(L, eps, ells, d=3):
    from .._measures import Density
    from ..sphere import lm_index

    c = Density.uniform(L, d).coeffs.copy()
    for ell in ells:
        c[lm_index(L, ell, 0) if d == 3 else ell] = eps
    return Density(c, L, d)


def _coef(state, L, ell, d=3):
    from ..sphere import lm_index

    return (state.coeffs[lm_index(L, ell, 0)] if d == 3 else state.coeffs[ell]).real


def _grid_particles(beta, eps, ells):
    """Tokens at Gauss–Legendre nodes with weights σ_i (1 + ε Σ_ℓ Y_ℓ0(x_i)): exact for the kernel's degrees."""
    from .._measures import Particles
    from ..sphere import SphereGrid, kernel_bandlimit, lm_index, ylm

    need = kernel_bandlimit(beta, 1e-13) + max(ells) + 1        # products of kernel and perturbation degrees
    grid = SphereGrid.for_bandlimit(int(np.ceil(need / 3)) + 1, dealias=True)
    x = grid.points.reshape(-1, 3)
    lmax = max(ells)
    Y = ylm(lmax, x)
    pert = sum(Y[:, lm_index(lmax, ell, 0)].real for ell in ells)
    w = grid.weights.ravel() / (4 * np.pi) * (1 + eps * pert)
    return Particles(x, w, normalize=True)


def _funk_hecke_error(d, lmax=12, nodes=40):
    """max over ℓ ≤ lmax and β ∈ {1, 5} of |λ_ℓ − q_ℓ|/λ_0, q_ℓ the Funk–Hecke integral
    c_d ∫ e^{βt} P_ℓ^{(d)}(t)(1 − t²)^{(d−3)/2} dt by Gauss–Jacobi quadrature (P_ℓ^{(d)}(1) = 1: Chebyshev for d = 2,
    normalized Gegenbauer above; c_d is 1/Σ weights).  The rule is exact for degree 79, so its error is the tail
    β^80/80! of e^{βt}, far below rounding; the tolerance 1e-13 is rounding: the 40-term sum and the Bessel ratios
    of funk_hecke, ~10 ulp each (1.6e-14 measured at d = 3, β = 5)."""
    from scipy import special

    from ..sphere import funk_hecke

    t, w = special.roots_jacobi(nodes, (d - 3) / 2, (d - 3) / 2)
    ells = np.arange(lmax + 1)[:, None]
    if d == 2:
        P = special.eval_chebyt(ells, t)
    else:
        P = special.eval_gegenbauer(ells, (d - 2) / 2, t) / special.eval_gegenbauer(ells, (d - 2) / 2, 1.0)
    err = 0.0
    for beta in (1.0, 5.0):
        q = (P * np.exp(beta * t)) @ w / np.sum(w)
        lam = funk_hecke(beta, lmax, d)
        err = max(err, float(np.max(np.abs(lam - q)) / lam[0]))
    return err


def _fit(times, amp, eps):
    return float(np.polyfit(times, np.log(amp / eps), 1)[0])


def run(quick: bool, outdir) -> list:
    from .._model import Model
    from .._sampling import particles_coefficients
    from .._simulate import simulate
    from ..analysis import growth_rate, growth_rates, l1_noise_threshold, most_unstable_mode

    rows, fig = [], {}
    for ell, ref in enumerate(REFERENCE_D2_USA, start=1):
        rows.append(compare(f"γ_{ell}, d=2, USA, β=1: reference value vs growth_rate", ref,
                            growth_rate(1.0, ell, d=2, attention="unnormalized"), 5e-7))
    for ell, ref in enumerate(REFERENCE_D3_SA, start=1):
        rows.append(compare(f"γ_{ell}, d=3, SA, β=1: reference value vs growth_rate", ref, growth_rate(1.0, ell),
                            5e-7))
    # beyond the four degrees of the reference values: every degree the PDE rows below fit, against modified
    # spherical Bessel functions (scipy), independent of the package's multipliers: λ_ℓ/λ_0 = i_ℓ(β)/i_0(β) on S²
    from scipy.special import spherical_in
    for beta in (4.0, 10.0):
        ells = np.arange(1, 13)
        ref = ells * (ells + 1) * spherical_in(ells, beta) / (beta * spherical_in(0, beta))
        ours = growth_rates(beta, 12)[1:]
        rows.append(compare(f"max over ℓ ≤ 12 of |γ_ℓ/γ_ℓ^Bessel − 1|, d=3, SA, β={beta:g}: scipy spherical_in vs "
                            "growth_rates", 0.0, float(np.max(np.abs(ours / ref - 1))), 1e-13))

    # the multipliers themselves, d = 2 … 5: the Funk–Hecke integral by Gauss–Jacobi quadrature
    for d in (2, 3, 4, 5):
        rows.append(compare(f"max over ℓ ≤ 12, β ∈ {{1, 5}} of |λ_ℓ − quadrature|/λ_0, d={d}: Gauss–Jacobi (40 nodes) "
                            "vs funk_hecke", 0.0, _funk_hecke_error(d), 1e-13))

    # PDE, S² SA β = 4, and S¹ USA β = 1; particles on S² with the same perturbation
    eps = 1e-7
    cases = [(3, 4.0, "softmax", 20, range(1, 7 if not quick else 5)), (2, 1.0, "unnormalized", 16, range(1, 5))]
    for d, beta, att, L, ells in cases:
        gmax = max(growth_rates(beta, L, d, att)[1:])
        for ell in ells:
            rate = growth_rate(beta, ell, d, att)
            T = min(3.0 / rate, 15.0 / gmax)
            times = np.linspace(0, T, 41)[1:]
            traj = simulate(Model(beta, attention=att, d=d), _zonal_density(L, eps, [ell], d), T, t_eval=times,
                            rtol=1e-10, atol=1e-20, error_norm="elementwise")
            amp = np.array([_coef(s, L, ell, d) for s in traj.states[1:]])
            name = "S²" if d == 3 else "S¹"
            rows.append(compare(f"γ_{ell}, {name}, {'SA' if att == 'softmax' else 'USA'}, β={beta:g}: PDE (L={L}) vs "
                                "growth_rate", rate, _fit(times, amp, eps), 1e-5, relative=True))
            if d == 3:
                fig.setdefault("pde", []).append((ell, rate, times, amp / eps))
    beta = 4.0
    gmax = max(growth_rates(beta, 16)[1:])
    for ell in range(1, 5):
        rate = growth_rate(beta, ell)
        T = min(3.0 / rate, 15.0 / gmax)
        times = np.linspace(0, T, 21)[1:]
        p0 = _grid_particles(beta, eps, [ell])
        traj = simulate(Model(beta), p0, T, backend="particles-sh", t_eval=times, tol=1e-13, rtol=1e-12, atol=1e-14)
        c0 = _coef_particles(p0, ell, particles_coefficients)
        amp = np.array([_coef_particles(s, ell, particles_coefficients) for s in traj.states[1:]])
        rows.append(compare(f"γ_{ell}, S², SA, β={beta:g}: particles ({p0.n} tokens on a quadrature grid) vs "
                            "growth_rate", rate, _fit(times, amp / c0 * eps, eps), 1e-5, relative=True))
        fig.setdefault("particles", []).append((ell, rate, times, amp / c0))

    # the most unstable mode, β = 10
    beta, ells, eps = 10.0, list(range(1, 13)), 1e-8
    mode = most_unstable_mode(beta)
    brute = int(np.argmax(growth_rates(beta, 40)[1:])) + 1
    rows.append(same(f"most unstable degree, β={beta:g}: most_unstable_mode vs argmax of growth_rate over ℓ ≤ 40",
                     str(brute), str(mode.ell)))
    T = 3.0 / mode.rate
    traj = simulate(Model(beta), _zonal_density(28, eps, ells), T, rtol=1e-10, atol=1e-22, error_norm="elementwise")
    pde_rates = np.array([np.log(_coef(traj.final, 28, ell) / eps) / T for ell in ells])
    p0 = _grid_particles(beta, eps, ells)
    traj = simulate(Model(beta), p0, T, backend="particles-sh", tol=1e-13, rtol=1e-12, atol=1e-14)
    par_rates = np.array([np.log(_coef_particles(traj.final, ell, particles_coefficients)
                                 / _coef_particles(p0, ell, particles_coefficients)) / T for ell in ells])
    exact = growth_rates(beta, max(ells))[1:]
    for label, r in (("PDE", pde_rates), (f"particles ({p0.n} on a grid)", par_rates)):
        rows.append(same(f"most unstable degree, β={beta:g}: most_unstable_mode vs argmax of {label} rates",
                         str(mode.ell), str(ells[int(np.argmax(r))])))
        rows.append(compare(f"max over ℓ ≤ 12 of |γ_ℓ measured − growth_rate|, {label}, β={beta:g}", 0.0,
                            float(np.max(np.abs(r - exact))), 1e-5))
    fig["mode"] = (beta, ells, exact, pde_rates, par_rates, mode)

    # the noise floor of ℓ = 1
    rng = np.random.default_rng(7)
    n, R = 1000, 400 if quick else 2000
    x = rng.standard_normal((R, n, 3))
    x /= np.linalg.norm(x, axis=2, keepdims=True)
    m = x.mean(axis=1)
    nm2 = n * np.sum(m * m, axis=1)
    rows.append(compare(f"E[n|m_n|²] of n={n} i.i.d. uniform tokens: exact 1 vs mean of {R} samples (3 s.e.)", 1.0,
                        float(nm2.mean()), 3 * float(nm2.std(ddof=1)) / np.sqrt(R)))
    thr = l1_noise_threshold(n, 3, quantile=0.95)
    frac = float(np.mean(np.sqrt(nm2 / n) <= thr))
    rows.append(compare(f"P(|m_n| ≤ l1_noise_threshold(n, q=0.95)), n={n}: 0.95 vs {R} samples (3 s.e.)", 0.95, frac,
                        3 * np.sqrt(0.95 * 0.05 / R)))
    if not quick:
        from .._measures import Particles

        beta, n, T = 1.0, 200_000, 2.0
        p0 = Particles.uniform(n, 3, seed=11)
        traj = simulate(Model(beta), p0, T, backend="particles-sh", rtol=1e-8, atol=1e-10)
        m0, m1 = (np.linalg.norm(s.weights @ s.positions) for s in (p0, traj.final))
        rows.append(compare(f"noise-seeded ℓ=1 mode, n={n} i.i.d. tokens, β={beta:g}: |m(T)|/|m(0)| vs e^(γ_1 T), "
                            f"T={T:g}",
                            np.exp(growth_rate(beta, 1) * T), m1 / m0, beta * np.exp(beta) / np.sinh(beta) / np.sqrt(n),
                            relative=True))
    _figure(outdir, fig)
    return rows


def _coef_particles(p, ell, particles_coefficients):
    from ..sphere import lm_index

    return particles_coefficients(p, ell)[lm_index(ell, ell, 0)].real


def _figure(outdir, fig):
    from ..analysis import growth_rates

    p = plt()
    f, ax = p.subplots(1, 2, figsize=(9.5, 3.4), constrained_layout=True)
    for (ell, rate, t, a), (_, _, tp, ap) in zip(fig["pde"], fig["particles"] + [(None,) * 4] * 8):
        line, = ax[0].semilogy(t, a, "-", lw=1, label=f"ℓ = {ell}: PDE")
        if tp is not None:
            ax[0].semilogy(tp, ap, "o", ms=2.5, color=line.get_color())
    ax[0].set_xlabel("t")
    ax[0].set_ylabel("coefficient / ε")
    ax[0].set_title("S², SA, β = 4: PDE (lines), grid particles (dots)", fontsize=8)
    ax[0].legend(fontsize=7, ncol=2)
    beta, ells, exact, pde, par, mode = fig["mode"]
    fine = np.arange(1, 21)
    ax[1].plot(fine, growth_rates(beta, 20)[1:], "-", color="0.4", lw=1, label="growth_rate")
    ax[1].plot(ells, pde, "s", mfc="none", ms=5, label="PDE")
    ax[1].plot(ells, par, "x", ms=5, label="grid particles")
    ax[1].axvline(mode.ell, color="0.7", lw=0.8)
    ax[1].set_xlabel("degree ℓ")
    ax[1].set_ylabel("γ_ℓ")
    ax[1].set_title(f"β = {beta:g}: most unstable degree ℓ* = {mode.ell}", fontsize=8)
    ax[1].legend(fontsize=7)
    f.savefig(figure_path(outdir, NAME), dpi=90)
    p.close(f)
