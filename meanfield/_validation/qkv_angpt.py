"""QKV-Norm against Pre-LN, and anGPT's exact layer map against nGPT.

Source: the scheme table of Karagodin, Ge, Polyanskiy, Rigollet (2025) as written in docs/model.md ("The
schemes") and meanfield/_schemes.py (QKV-Norm: Pre-LN with normalized queries, keys and values; anGPT: the
layer map h ← ν(a)((1 − a)h + a N(Attn(N(h)))), a = αh, ν(a) = 1/√(a² + (1 − a)²)).  No paper figure is
reproduced; the statements checked are consequences of those definitions, each computed two independent ways:

* Q = K = V = I: QKV-Norm and Pre-LN are the same dynamics (particles and PDE agree to rounding);
* Q = K = cI, V = vI (c² = 2, v = 1.5): Pre-LN sees the kernel at βc² and values scaled by v, so its initial
  ℓ = 1 rate is v·γ_1(βc²); QKV-Norm normalizes q, k and v away and keeps γ_1(β) (and its particles follow
  Pre-LN with Q = K = V = I exactly).  Rates from the PDE (ρ = 1 + 10⁻⁶ Y_10) and from grid particles;
* (full run) a non-orthogonal Q = diag(1, 0.5, 1): the mean alignment |m|² at t = 2 from ρ_0 = 1 + 0.5z +
  0.3xy under Pre-LN and QKV-Norm, the PDE (kernel quadrature) against the mean over R samples of N = 1000
  exact particles (same samples for both schemes), within 3 standard errors;
* anGPT: at unit radius one anGPT layer moves directions exactly as one nGPT layer; expanding the map in
  h gives dθ/dt = α P_θ A/(r‖A‖), dr/dt = α⟨θ, A⟩/‖A‖, i.e. Peri-LN's ODE at time αt, so (α = 1)
  anGPT's layers converge to the Peri-LN equiangular ODE with order 1 in h, while nGPT's converge to the
  nGPT ODE (the fitted order over h = 0.1 … 0.025 or 0.0125 is compared with 1 to 0.15, the size of the
  O(h²) terms there); and anGPT clusters more slowly than nGPT once its radius has grown.
"""
from __future__ import annotations

import numpy as np

from ._common import compare, equiangular_particles, figure_path, pair_gap, plt, quiet, same

NAME = "qkv_angpt"
TITLE = "QKV-Norm vs Pre-LN; anGPT's layer map vs nGPT"

BETA = 2.0
C2, V = 2.0, 1.5
LABEL = {"pre-ln": "Pre-LN", "qkv-norm": "QKV-Norm"}


def _identity_case(rows):
    from .._measures import Density, Particles
    from .._model import Model
    from .._simulate import simulate

    p = Particles.uniform(200, 3, seed=3)
    a, b = (simulate(Model(BETA, scheme=s), p, 3.0, backend="particles", rtol=1e-10).final
            for s in ("pre-ln", "qkv-norm"))
    rows.append(compare("Q=K=V=I, 200 particles, t=3: max |θ_QKV − θ_Pre| + max |r_QKV − r_Pre|", 0.0,
                        float(np.max(np.abs(a.positions - b.positions)) + np.max(np.abs(a.radii - b.radii))), 1e-12))
    rho0 = Density.from_function(lambda x: 1 + 0.5 * x[..., 2], 16)
    a, b = (simulate(Model(BETA, scheme=s), rho0, 2.0, rtol=1e-10).final for s in ("pre-ln", "qkv-norm"))
    rows.append(compare("Q=K=V=I, PDE (S², L=16), t=2: max |coefficient difference| (density and radius)", 0.0,
                        float(np.max(np.abs(a.coeffs - b.coeffs)) + np.max(np.abs(a.radius - b.radius))), 1e-12))


def _scaled_case(rows):
    from .._measures import Density
    from .._model import Model
    from .._sampling import particles_coefficients
    from .._simulate import simulate
    from ..analysis import growth_rate
    from ..sphere import lm_index
    from .linear import _grid_particles

    c = np.sqrt(C2)
    L, eps, T = 6, 1e-6, 0.04
    coeffs = Density.uniform(L).coeffs.copy()
    coeffs[lm_index(L, 1, 0)] = eps
    rho0 = Density(coeffs, L)
    times = np.linspace(0, T, 9)
    p0 = _grid_particles(BETA * C2, eps, [1])
    expected = {"pre-ln": V * growth_rate(BETA * C2, 1, scheme="pre-ln"),
                "qkv-norm": growth_rate(BETA, 1, scheme="qkv-norm")}
    measured = {}
    for s in ("pre-ln", "qkv-norm"):
        model = Model(BETA, scheme=s, Q=c * np.eye(3), K=c * np.eye(3), V=V * np.eye(3))
        with quiet():   # degree ≤ 1 (+ O(ε²)): the attention is exact at this band limit
            traj = simulate(model, rho0, T, t_eval=times[1:], rtol=1e-10, atol=1e-16, error_norm="elementwise")
        amp = np.array([st.coeffs[lm_index(L, 1, 0)].real for st in traj.states])
        rate = measured[s] = np.polyfit(traj.times, np.log(amp / eps), 4)[-2]
        name = "Pre-LN: v·γ_1(βc²)" if s == "pre-ln" else "QKV-Norm: γ_1(β)"
        rows.append(compare(f"Q=K=cI (c²={C2:g}), V={V:g}·I, β={BETA:g}: initial ℓ=1 rate, {name} vs PDE",
                            expected[s], rate, 1e-6, relative=True))
        traj = simulate(model, p0, T, backend="particles-sh", t_eval=times[1:], tol=1e-13, rtol=1e-12, atol=1e-14)
        c0 = particles_coefficients(p0, 1)[lm_index(1, 1, 0)].real
        amp = np.array([particles_coefficients(st, 1)[lm_index(1, 1, 0)].real for st in traj.states]) / c0
        rate = np.polyfit(traj.times, np.log(amp), 4)[-2]
        rows.append(compare(f"  same, grid particles ({p0.n} tokens)", expected[s], rate, 1e-6, relative=True))
    faster = lambda r: "Pre-LN" if r["pre-ln"] > r["qkv-norm"] else "QKV-Norm"  # noqa: E731
    rows.append(same("Q=K=cI, V=vI: faster initial clustering, formulas (v·γ_1(βc²) vs γ_1(β)) vs PDE rates",
                     faster(expected), faster(measured)))
    # QKV-Norm with scaled matrices is exactly Pre-LN with identities (particles)
    from .._measures import Particles

    p = Particles.uniform(100, 3, seed=5)
    a = simulate(Model(BETA, scheme="qkv-norm", Q=c * np.eye(3), K=c * np.eye(3), V=V * np.eye(3)), p, 2.0,
                 backend="particles", rtol=1e-10).final
    b = simulate(Model(BETA, scheme="pre-ln"), p, 2.0, backend="particles", rtol=1e-10).final
    rows.append(compare("QKV-Norm with Q=K=cI, V=vI vs Pre-LN with Q=K=V=I, 100 particles, t=2: max |Δθ| + max |Δr|",
                        0.0, float(np.max(np.abs(a.positions - b.positions)) + np.max(np.abs(a.radii - b.radii))),
                        1e-12))
    return expected


def _general_q(rows):
    from .._measures import mean_alignment
    from .._measures import Density
    from .._model import Model
    from .._sampling import sample_density
    from .._simulate import simulate
    from ..analysis import alignment_statistics

    Q = np.diag([1.0, 0.5, 1.0])
    rho0 = Density.from_function(lambda x: 1 + 0.5 * x[..., 2] + 0.3 * x[..., 0] * x[..., 1], 16)
    N, R, T = 1000, 8, 2.0
    samples = [sample_density(rho0, N, seed=100 + k) for k in range(R)]
    pde, par = {}, {}
    for s in ("pre-ln", "qkv-norm"):
        model = Model(BETA, scheme=s, Q=Q)
        pde[s] = alignment_statistics(simulate(model, rho0, T, rtol=1e-9).final, 0.1).mean_alignment
        par[s] = np.array([mean_alignment(simulate(model, p, T, backend="particles", rtol=1e-7, atol=1e-9).final)
                           for p in samples])
        se = float(np.std(par[s], ddof=1) / np.sqrt(R))
        rows.append(compare(f"Q=diag(1,0.5,1), β={BETA:g}, {LABEL[s]}: mean alignment at t={T:g}, PDE vs "
                            f"{R}×{N} particles (3 s.e.)", pde[s], float(par[s].mean()), 3 * se))
    diff = par["qkv-norm"] - par["pre-ln"]
    se = float(np.std(diff, ddof=1) / np.sqrt(R))
    rows.append(compare("  difference QKV-Norm − Pre-LN: PDE vs particles (same samples, 3 s.e.)",
                        pde["qkv-norm"] - pde["pre-ln"], float(diff.mean()), 3 * se))
    faster = lambda a, b: "Pre-LN" if a > b else "QKV-Norm"  # noqa: E731
    rows.append(same("  faster clustering with Q=diag(1,0.5,1): PDE vs particles",
                     faster(pde["pre-ln"], pde["qkv-norm"]), faster(par["pre-ln"].mean(), par["qkv-norm"].mean())))


def _angpt(rows, quick):
    from .._model import Model
    from .._schemes import get_scheme
    from .._simulate import simulate
    from ..analysis import equiangular

    # one layer at unit radius: anGPT and nGPT move directions identically
    rng = np.random.default_rng(9)
    x = rng.standard_normal((16, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    model = Model(BETA, scheme="ngpt", d=8)
    from .._attention import attention_field

    attn = lambda y: attention_field(model, y / np.linalg.norm(y, axis=1, keepdims=True), None).A  # noqa: E731
    h = 0.1
    a = get_scheme("angpt").layer(x, attn, h, 0.0, model)
    b = get_scheme("ngpt").layer(x, attn, h, 0.0, model)
    rows.append(compare(f"one layer at unit radius (h={h:g}): max |N(anGPT) − nGPT|", 0.0,
                        float(np.max(np.abs(a / np.linalg.norm(a, axis=1, keepdims=True) - b))), 1e-14))
    # layer maps → ODEs, order 1 in h
    n, T, beta = 16, 4.0, 5.0
    start = equiangular_particles(n)
    steps = (0.1, 0.05, 0.025) if quick else (0.1, 0.05, 0.025, 0.0125)
    refs = {"angpt": equiangular("peri-ln", beta, n, [T]), "ngpt": equiangular("ngpt", beta, n, [T])}
    errors, finals = {}, {}
    for s in ("angpt", "ngpt"):
        rho_ref = refs[s][0][0]
        errs = []
        for h in steps:
            st = simulate(Model(beta, scheme=s, d=n), start, T, backend="particles", time="layers", step=h).final
            errs.append(abs(1.0 - pair_gap(st)[0] - rho_ref))
            finals[(s, h)] = 1.0 - pair_gap(st)[0]
        order = np.polyfit(np.log(steps), np.log(errs), 1)[0]
        errors[s] = errs
        target = "Peri-LN" if s == "angpt" else "nGPT"
        rows.append(compare(f"{'anGPT' if s == 'angpt' else 'nGPT'} layer map → {target} equiangular ODE "
                            f"(β={beta:g}, n={n}, t={T:g}): observed order in h", 1.0, order, 0.15))
    rho_ngpt, rho_peri = refs["ngpt"][0][0], refs["angpt"][0][0]
    h = steps[-1]
    rows.append(same(f"ρ(t={T:g}): nGPT ahead of anGPT, ODE limits vs layer maps at h={h:g}",
                     "nGPT" if rho_ngpt > rho_peri else "anGPT",
                     "nGPT" if finals[("ngpt", h)] > finals[("angpt", h)] else "anGPT"))
    return steps, errors


def run(quick: bool, outdir) -> list:
    rows = []
    _identity_case(rows)
    expected = _scaled_case(rows)
    if not quick:
        _general_q(rows)
    steps, errors = _angpt(rows, quick)
    _figure(outdir, expected, steps, errors)
    return rows


def _figure(outdir, expected, steps, errors):
    from ..analysis import equiangular

    p = plt()
    fig, ax = p.subplots(1, 2, figsize=(9.5, 3.4), constrained_layout=True)
    t = np.linspace(0, 30, 300)
    for s, label in (("ngpt", "nGPT ODE"), ("peri-ln", "Peri-LN ODE = anGPT limit (α = 1)"),
                     ("post-ln", "Post-LN ODE")):
        ax[0].plot(t, equiangular(s, 5.0, 16, t)[0], lw=1, label=label)
    ax[0].set_xlabel("t")
    ax[0].set_ylabel("ρ(t)")
    ax[0].set_title("equiangular start, β = 5, n = 16", fontsize=8)
    ax[0].legend(fontsize=7)
    for s, label in (("angpt", "anGPT layers vs Peri-LN ODE"), ("ngpt", "nGPT layers vs nGPT ODE")):
        ax[1].loglog(steps, errors[s], "o-", ms=4, lw=1, label=label)
    ax[1].loglog(steps, np.array(steps) * errors["angpt"][0] / steps[0], "k--", lw=0.7, label="order 1")
    ax[1].set_xlabel("layer step h")
    ax[1].set_ylabel("|ρ_layers(t=4) − ρ_ODE(t=4)|")
    ax[1].set_title("layer maps converge to their ODE limits", fontsize=8)
    ax[1].legend(fontsize=7)
    fig.suptitle(f"QKV-Norm vs Pre-LN (initial ℓ=1 rates: Pre-LN {expected['pre-ln']:.4f}, "
                 f"QKV-Norm {expected['qkv-norm']:.4f} with Q=K=√2·I, V=1.5·I); anGPT vs nGPT", fontsize=9)
    fig.savefig(figure_path(outdir, NAME), dpi=90)
    p.close(fig)
