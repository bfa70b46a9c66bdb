"""The interaction energy of the gradient-flow case: energies, minimizing densities, four-particle minimizers,
the maximizer switch, and the outcomes of the attention flow for D = diag(dd, 1).

Source: Burger, Kabri, Korolev, Roith, Weigand, *Analysis of mean-field models arising from self-attention
dynamics in transformer architectures with layer normalization*, Phil. Trans. R. Soc. A 383 (2025)
20240233 (arXiv:2501.03096): for D = QᵀK symmetric and USA attention the dynamics is the Wasserstein
gradient ascent of E_{β,D}(μ) = (1/2β)∬ e^{β⟨x,Dy⟩} dμdμ; minimizers and maximizers are classified by the
sign structure of D.  The paper's figures were not available to us; the references are closed forms,
the reference values of docs/validation.md (derived independently: independent solvers agree to the digits
shown) and, for the flow outcomes, an independent integrator:

* E_{β=2} of the uniform measure on S¹ and S², a Dirac and an antipodal pair (reference values, 6 decimals)
  and the anisotropic uniform energy on S¹ (12 decimals), by :func:`meanfield.energy`;
* the gradient-flow identity dE/dt = ∫|v|² dμ (USA, D = I) along the spectral PDE: E(T) − E(0) against the
  recorded dissipation integrated in time, the residual of order 4 in the RK4 step (tolerance 0.25 in the
  order: the O(h) correction of the error expansion);
* minimizing densities (:func:`meanfield.minimize_energy`): D = I gives the uniform measure (its closed-form
  energy; S¹ Fourier nodes and S² basix FE); D = diag(1, 1 + ε) on S¹, β = 1: the cos 2θ coefficient at
  ε = 0.05 (reference value 0.10167) and its slope at ε → 0 against βI_1(β)/(2I_2(β)) (central difference at
  ε = ±1e-3, O(ε²)); the optimality certificate (K_D∗ρ constant on the support);
* four particles, D = diag(1, 0.5), β = 1: the descent (:func:`meanfield.find_stationary`) from a square
  ends at the rectangle (±a, ±b), a² the root of d1 tanh(βd1a²) = d2 tanh(βd2b²) (brentq) and
  E = cosh(βd1a²)cosh(βd2b²)/(2β); the reference values give 8 and 10 decimals;
* maximizers by multi-start ascent alone (``candidates=False``): D = diag(0.5, 1) → the Dirac on e2 with
  e/2, D = −I → the antipodal pair with cosh(1)/2 (d = 2, β = 1); for D = diag(−1, dd) the ascent's winner
  switches from the antipodal pair to the Dirac at dd* = ln cosh 1 (the two candidate energies cross there),
  located by bisection on dd (the quick run checks the winners at dd* ∓ 0.02);
* D = diag(dd, 1) on S¹, β = 1: R runs of the attention flow (the ascent, :func:`meanfield.find_stationary`
  until max |v| ≤ 1e-8 on the support, at most t = 600) from n = 8 i.i.d. uniform tokens, classified by their
  final clusters (:func:`meanfield.particle_clusters`, "k@e1" / "k@e2": k clusters on that axis) and by the
  Hessian of E in the tokens' angles (a strict saddle has a positive eigenvalue).  Reference for the
  outcome statistics: the same runs integrated independently (scipy ``solve_ivp``, DOP853, on the angle ODE
  φ̇_j = ∂E/∂φ_j / w_j, stopped when max |φ̇| ≤ 1e-8);
  reference for the number of runs ending at a strict saddle: 0 (generic initial data avoid strict
  saddles: the centre-stable manifold theorem); each final energy against its cluster formula
  Σ_ab m_a m_b e^{β⟨c_a, D c_b⟩}/(2β).
"""
from __future__ import annotations

import numpy as np

from ._common import compare, figure_path, plt, quiet, same

NAME = "energy"
TITLE = "Burger et al.: energies, minimizers, maximizer switch, flow outcomes for D = diag(dd, 1)"


def _energies(rows):
    from scipy import special

    from .._measures import Density, Particles
    from .._energy import energy

    b = 2.0
    e1 = np.eye(3)[0]
    cases = [("uniform on S¹", Density.uniform(8, d=2), 0.569896, special.i0(b) / (2 * b)),
             ("uniform on S²", Density.uniform(8), 0.453358, np.sinh(b) / (2 * b * b)),
             ("Dirac", Particles(e1[None]), 1.847264, np.exp(b) / (2 * b)),
             ("antipodal pair", Particles(np.stack([e1, -e1])), 0.940549, np.cosh(b) / (2 * b))]
    for label, measure, ref, closed in cases:
        rows.append(compare(f"E_β=2, {label}: reference value (6 decimals) vs closed form", ref, closed, 5e-7))
        rows.append(compare(f"E_β=2, {label}: mf.energy vs closed form", closed, energy(measure, b), 1e-13,
                            relative=True))
    rows.append(compare("E, β=1, D=diag(1, 0.3), uniform on S¹: reference value (12 decimals) vs mf.energy",
                        0.571327045227, energy(Density.uniform(16, d=2), 1.0, np.diag([1.0, 0.3])), 5e-13))


def _energy_identity(rows):
    """dE/dt = ∫|v|² dμ along the USA flow (the gradient-flow structure): E(T) − E(0) against the dissipation
    integrated in time, the spectral PDE by RK4 at steps 2h and h; the residual is the time discretization's,
    O(h⁴) (RK4, Simpson's rule), so its observed order is compared with 4."""
    from scipy import integrate

    from .._measures import Density
    from .._model import Model
    from .._simulate import simulate

    beta, T, L = 2.0, 0.5, 16
    rho0 = Density.from_function(lambda x: 1 + 0.5 * x[..., 2] + 0.3 * x[..., 0] * x[..., 1], L)
    residual = []
    for h in (0.025, 0.0125):         # an even number of steps: Simpson's rule keeps its O(h⁴)
        tr = simulate(Model(beta, attention="unnormalized"), rho0, T, method="rk4", step=h)
        t = np.r_[0.0, tr.steps["t"]]
        e = np.r_[tr.diagnostics["energy"][0], tr.steps["energy"]]
        diss = np.r_[tr.diagnostics["dissipation"][0], tr.steps["dissipation"]]
        gained = integrate.simpson(diss, x=t)
        residual.append(abs((e[-1] - e[0]) - gained) / gained)
    # the next term of the error expansion is O(h) relative to the leading one: ≲ 0.1 in the order at h = 0.025
    rows.append(compare(f"energy identity, USA, β={beta:g}, PDE (L={L}) to t={T:g}: order in h of |ΔE − ∫∫|v|²dμdt|/ΔE "
                        f"(RK4 h=0.025, 0.0125; residual {residual[1]:.1e} at h=0.0125)", 4.0,
                        np.log2(residual[0] / residual[1]), 0.25))


def _minimizers(rows, quick):
    from scipy import special

    from .._energy import minimize_energy

    b = 2.0
    r = minimize_energy(b, None, d=2)
    rows.append(compare("min E, D=I, S¹, β=2 (Fourier nodes): uniform I_0(β)/(2β) vs minimize_energy",
                        special.i0(b) / (2 * b), r.value, 1e-12, relative=True))
    r3 = minimize_energy(b, None, d=3, level=2 if quick else 3)
    rows.append(compare("min E, D=I, S², β=2 (basix FE): uniform sinh β/(2β²) vs minimize_energy",
                        np.sinh(b) / (2 * b * b), r3.value, 1e-10, relative=True))
    b = 1.0
    r = minimize_energy(b, np.diag([1.0, 1.05]), d=2)
    c2 = 2 * r.coeffs[2].real                            # ρ = 1 + c2 cos 2θ + … w.r.t. σ
    rows.append(compare("minimizer on S¹, β=1, D=diag(1, 1.05): cos 2θ coefficient, reference value vs ours",
                        0.10167, c2, 5e-6))
    rows.append(compare("  its optimality: max |K_D∗ρ − 2E|/2E on the support (certificate)", 0.0,
                        r.certificate.support_residual, 1e-8))
    h = 1e-3
    cp, cm = (2 * minimize_energy(b, np.diag([1.0, 1.0 + s]), d=2).coeffs[2].real for s in (h, -h))
    slope = (cp - cm) / (2 * h)
    rows.append(compare("minimizer on S¹, β=1: d c2/dε at ε=0, βI_1(β)/(2I_2(β)) vs central difference (ε=±1e-3)",
                        b * special.iv(1, b) / (2 * special.iv(2, b)), slope, 1e-5, relative=True))
    return c2


def _four_particles(rows):
    from scipy.optimize import brentq

    from .._energy import find_stationary
    from .._measures import Particles

    b, d1, d2 = 1.0, 1.0, 0.5
    a2 = brentq(lambda a: d1 * np.tanh(b * d1 * a) - d2 * np.tanh(b * d2 * (1 - a)), 1e-12, 1 - 1e-12, xtol=1e-16)
    E = np.cosh(b * d1 * a2) * np.cosh(b * d2 * (1 - a2)) / (2 * b)
    rows.append(compare("four particles, β=1, D=diag(1, 0.5): a², reference value (8 decimals) vs the root",
                        0.19370612, a2, 5e-9))
    rows.append(compare("  E, reference value (10 decimals) vs cosh(βd1a²)cosh(βd2b²)/(2β)", 0.5513701486, E,
                        5e-11))
    square = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]) / np.sqrt(2)
    res = find_stationary(Particles(square), b, np.diag([d1, d2]), direction="descent", tol=1e-11, t_max=1e3,
                          check_every=5.0)
    x = res.state.positions
    rows.append(compare("  descent from a square: a² (mean x1²) vs the root", a2, float(np.mean(x[:, 0] ** 2)), 1e-9))
    rows.append(compare("  descent from a square: E vs the closed form", E, res.energy, 1e-12, relative=True))
    rows.append(compare("  descent from a square: rectangle (max | |x1|² − a² |)", 0.0,
                        float(np.max(np.abs(x[:, 0] ** 2 - a2))), 1e-9))
    return x


def _maximizers(rows, quick):
    from .._energy import maximize_energy

    b = 1.0
    r = maximize_energy(b, np.diag([0.5, 1.0]), d=2, candidates=False, n_starts=4, seed=1)
    rows.append(same("maximizer, β=1, D=diag(0.5, 1): theorem (Dirac at e2) vs ascent only", "dirac", r.kind))
    rows.append(compare("  its energy: e/2 vs ascent", np.e / 2, r.value, 1e-10, relative=True))
    r = maximize_energy(b, -np.eye(2), d=2, candidates=False, n_starts=4, seed=1)
    rows.append(same("maximizer, β=1, D=−I: theorem (antipodal pair) vs ascent only", "antipodal", r.kind))
    rows.append(compare("  its energy: cosh(1)/2 vs ascent", np.cosh(1.0) / 2, r.value, 1e-10, relative=True))
    dd_star = np.log(np.cosh(1.0))
    kinds = {}
    if quick:                      # the winner just below and just above the switch
        for dd in (dd_star - 0.02, dd_star + 0.02):
            kinds[dd] = maximize_energy(b, np.diag([-1.0, dd]), d=2, candidates=False, n_starts=4, seed=2).kind
        rows.append(same("maximizer for D=diag(−1, dd), β=1, dd = ln cosh 1 ∓ 0.02: theorem candidates vs ascent only",
                         "antipodal, dirac", ", ".join(kinds.values())))
        return kinds
    lo, hi = 0.0, 1.0
    for _ in range(10):
        mid = 0.5 * (lo + hi)
        k = maximize_energy(b, np.diag([-1.0, mid]), d=2, candidates=False, n_starts=4, seed=2).kind
        kinds[mid] = k
        if k == "dirac":
            hi = mid
        else:
            lo = mid
    rows.append(compare(f"maximizer switch for D=diag(−1, dd), β=1: ln cosh 1 vs ascent bisection ({len(kinds)} steps)",
                        dd_star, 0.5 * (lo + hi), 0.5 * (hi - lo)))
    return kinds


# ----------------------------------------------------------------------------------------------
# flow outcomes for D = diag(dd, 1)

def _grad_angles(phi, w, beta, D):
    x = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    tau = np.stack([-np.sin(phi), np.cos(phi)], axis=1)
    K = np.exp(beta * (x @ D) @ x.T)
    return w * np.einsum("jk,jk->j", K * w[None, :], tau @ D @ x.T)      # ∂E/∂φ_j


def _hessian_max(phi, w, beta, D, h=1e-6):
    n = len(phi)
    H = np.empty((n, n))
    for j in range(n):                                      # n ≤ 16: columns by central differences
        e = np.zeros(n)
        e[j] = h
        H[:, j] = (_grad_angles(phi + e, w, beta, D) - _grad_angles(phi - e, w, beta, D)) / (2 * h)
    return float(np.max(np.linalg.eigvalsh(0.5 * (H + H.T))))


def _label(x, w, beta, D):
    """('k@axis', 'max' or 'saddle', energy from the clusters) of a final state."""
    from .._measures import Particles
    from ..analysis import particle_clusters

    cl = particle_clusters(Particles(x, w), angle=1e-3)
    axes = []
    for c in cl.centers:
        axes.append("e2" if abs(c[1]) > 1 - 1e-6 else "e1" if abs(c[0]) > 1 - 1e-6 else "other")
    axis = axes[0] if len(set(axes)) == 1 else "mixed"
    E = float(cl.masses @ np.exp(beta * (cl.centers @ D) @ cl.centers.T) @ cl.masses) / (2 * beta)
    phi = np.arctan2(x[:, 1], x[:, 0])
    kind = "saddle" if _hessian_max(phi, w, beta, D) > 1e-6 else "max"
    return f"{cl.count}@{axis}", kind, E


def _histogram(labels):
    keys = sorted(set(labels))
    return ", ".join(f"{k}: {labels.count(k)}" for k in keys)


def _outcomes(rows, quick):
    from scipy.integrate import solve_ivp

    from .._energy import find_stationary
    from .._measures import Particles

    beta, n, tol, t_max = 1.0, 8, 1e-8, 600.0
    dds = (-2.0, 0.5) if quick else (-2.0, -1.2, -0.5, 0.5, 0.9)
    R = 5 if quick else 24
    stats = {}
    for dd in dds:
        D = np.diag([dd, 1.0])
        ours, ref, saddles, moving, e_err = [], [], 0, 0, 0.0
        for r in range(R):
            p0 = Particles.uniform(n, 2, seed=1000 + r)
            with quiet():
                res = find_stationary(p0, beta, D, tol=tol, t_max=t_max, check_every=10.0, rtol=1e-9, atol=1e-11)
            x, w = res.state.positions, res.state.weights
            lab, kind, E = _label(x, w, beta, D)
            if not res.converged:
                kind, moving = "not stationary", moving + 1
            saddles += kind == "saddle"
            e_err = max(e_err, abs(res.energy - E))
            ours.append(f"{lab} ({kind})")
            # the independent integrator: the angle ODE, stopped when max |φ̇| ≤ tol
            phi0 = np.arctan2(p0.positions[:, 1], p0.positions[:, 0])
            rhs = lambda t, f: _grad_angles(f, p0.weights, beta, D) / p0.weights  # noqa: E731
            still = lambda t, f: float(np.max(np.abs(rhs(t, f)))) - tol             # noqa: E731
            still.terminal = True
            sol = solve_ivp(rhs, (0, t_max), phi0, method="DOP853", rtol=1e-10, atol=1e-12, events=still)
            xs = np.stack([np.cos(sol.y[:, -1]), np.sin(sol.y[:, -1])], axis=1)
            lab_s, kind_s, _ = _label(xs, p0.weights, beta, D)
            ref.append(f"{lab_s} ({kind_s if sol.status == 1 else 'not stationary'})")
        mismatched = sum(a != b for a, b in zip(ours, ref))
        rows.append(same(f"D=diag({dd:g}, 1), β=1, {R} runs of n={n}: outcomes, scipy angle ODE vs mf.find_stationary",
                         _histogram(ref), _histogram(ours)))
        rows.append(compare("  runs classified differently by the two integrators", 0, mismatched, 0))
        rows.append(compare(f"  runs ending at a strict saddle (positive Hessian eigenvalue; {moving} not stationary "
                            f"by t={t_max:g})", 0, saddles, 0))
        rows.append(compare("  max |E(final) − Σ m_a m_b e^{β⟨c_a,Dc_b⟩}/(2β)| over the runs", 0.0, e_err, 1e-8))
        stats[dd] = ours
    return stats


def run(quick: bool, outdir) -> list:
    rows = []
    _energies(rows)
    _energy_identity(rows)
    c2 = _minimizers(rows, quick)
    x4 = _four_particles(rows)
    _maximizers(rows, quick)
    stats = _outcomes(rows, quick)
    _figure(outdir, c2, x4, stats)
    return rows


def _figure(outdir, c2, x4, stats):
    from .._energy import minimize_energy

    p = plt()
    fig, ax = p.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
    r = minimize_energy(1.0, np.diag([1.0, 1.05]), d=2)
    th = np.linspace(0, 2 * np.pi, 400)
    ax[0].plot(th, r.evaluate(np.stack([np.cos(th), np.sin(th)], axis=1)), lw=1, label="minimizer, D=diag(1, 1.05)")
    ax[0].plot(th, 1 + c2 * np.cos(2 * th), "--", lw=0.8, label=f"1 + {c2:.5f} cos 2θ")
    ax[0].set_xlabel("θ")
    ax[0].set_ylabel("ρ (uniform = 1)")
    ax[0].set_title("minimizing density on S¹, β = 1", fontsize=8)
    ax[0].legend(fontsize=7)
    ax[1].add_patch(p.Circle((0, 0), 1, fill=False, color="0.6", lw=0.8))
    sq = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]) / np.sqrt(2)
    ax[1].plot(sq[:, 0], sq[:, 1], "o", mfc="none", color="0.5", label="start (square)")
    ax[1].plot(x4[:, 0], x4[:, 1], "o", color="C3", label="descent: rectangle")
    ax[1].set_aspect("equal")
    ax[1].set_title("four particles, D = diag(1, 0.5), β = 1", fontsize=8)
    ax[1].legend(fontsize=7, loc="lower right")
    labels = sorted({lab for v in stats.values() for lab in v})
    dds = sorted(stats)
    bottom = np.zeros(len(dds))
    for lab in labels:
        frac = np.array([stats[dd].count(lab) / len(stats[dd]) for dd in dds])
        ax[2].bar(range(len(dds)), frac, bottom=bottom, label=lab)
        bottom += frac
    ax[2].set_xticks(range(len(dds)), [f"{dd:g}" for dd in dds])
    ax[2].set_xlabel("dd in D = diag(dd, 1)")
    ax[2].set_ylabel("fraction of runs")
    ax[2].set_title("attention flow (ascent) outcomes, n = 8, β = 1: k@axis = k clusters on it", fontsize=8)
    ax[2].legend(fontsize=6)
    fig.suptitle("Interaction energy (Burger et al. 2025)", fontsize=9)
    fig.savefig(figure_path(outdir, NAME), dpi=90)
    p.close(fig)
