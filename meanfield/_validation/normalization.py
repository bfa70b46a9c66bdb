"""Normalization schemes as speed regulation: initial speeds, time-to-ρ and ranking, the Peri-LN/Post-LN
crossover, asymptotic clustering rates; the equiangular ODE against particles, and the mean-field PDE.

Source: Karagodin, Ge, Polyanskiy, Rigollet, *Normalization in attention dynamics* (NeurIPS 2025,
arXiv:2510.22026): normalization acts as speed regulation (the scheme table of docs/model.md, "The
schemes"); Peri-LN and nGPT move tokens faster initially; the schemes differ in how fast tokens collapse.
The paper's own tables were not available to us, so every reference here is an independent computation:

* initial slopes dρ/dt(0) of the symmetric (equiangular) start, β = 5, n = 256: the closed forms
  2/(e^β + n − 1) (Post-, Pre-, Mix-LN, LN-Scaling) and 2/√(e^{2β} + n − 1) (Peri-LN, nGPT), and their
  reference values (docs/validation.md; 4 and 5 significant digits), against the ODE of
  :func:`meanfield.equiangular` and one evaluation of the exact particle velocity;
* time to reach ρ = 0.5, 0.9, 0.99 from ρ0 = 0 (β = 5, n = 64; Mix-LN switches at τ = 2), the ranking it
  implies, and the time at which Post-LN overtakes Peri-LN: the ODE (LSODA, rtol 1e-12) against n = 64
  orthonormal tokens run by ``backend="particles"`` (RK45, rtol 1e-10);
* asymptotic rates, derived from the ODE near ρ = 1 (b → 1/n, so du/dt ≈ −2u/s for u = 1 − ρ):
  u ~ e^{−2t} for Post-LN and nGPT (α = 1; s → 1), u ~ e^{−4√(t+1)} for LN-Scaling (s = √(t+1)),
  u ~ t^{−2} for Pre-, Peri- and Mix-LN (s ~ r ~ t); measured on two successive late windows from the ODE
  and the particles, the windows' finite-time bias (O(u) for the exponential laws, a/t for the polynomial ones:
  2e-4 … 4e-3) extrapolated away (Richardson), to a tenth of that bias;
* the equiangular ODE itself: at β = 0 against its closed form ρ(t) = (e^{2t} − 1)/(e^{2t} + n − 1) (n = 2, 5,
  64; tolerance LSODA's rtol summed over its evaluations), and ρ(1.5) for Post-LN, n = 5, β = 2 against its
  reference value 0.4632182624 (docs/validation.md, 10 decimals) and n = 5 orthonormal tokens
  (``backend="particles"``, RK45 rtol 1e-10; tolerance the sum of the accepted steps' local error bounds,
  steps × rtol);
* the mean-field initial clustering rate of each scheme (the ℓ = 1 growth rate about the uniform measure,
  :func:`meanfield.growth_rate`) against the spectral PDE on S² (ρ = 1 + 10⁻⁶ Y_10, β = 5).  The PDE does
  not reach the asymptotic regime: clusters contract exponentially and each doubling of the band limit
  buys a bounded time (docs/numerics.md, "Limits").
"""
from __future__ import annotations

import numpy as np

from ._common import compare, equiangular_particles, figure_path, pair_gap, plt, quiet, same

NAME = "normalization"
TITLE = "Normalization schemes: speeds, ranking, crossover, asymptotic rates"

BETA = 5.0
N_SLOPE = 256
SCHEMES = ("post-ln", "pre-ln", "mix-ln", "peri-ln", "ngpt", "ln-scaling")
TAU = 2.0
LEVELS = (0.5, 0.9, 0.99)
EXPONENTIAL = {"post-ln": 2.0, "ngpt": 2.0}          # u ~ e^{-rate t}
POLYNOMIAL = {"pre-ln": 2.0, "peri-ln": 2.0, "mix-ln": 2.0}   # u ~ t^{-p}
# Rounding only, in both: the velocity of an equiangular start is one sum over n ≤ 256 tokens (relative rounding
# ≤ n·eps ≈ 6e-14; measured 1.2e-15), and the integrators keep the symmetry exactly in exact arithmetic (measured
# spread ≤ 2.4e-15 over every run here; the inner products stay equal "to 1e-14").  The former 1e-9 and 1e-8
# passed a token-dependent velocity error of 1e-10 (it gave 5e-11 and 7e-11).
SLOPE_TOL = 1e-12         # relative: particle dρ/dt(0) against the closed form
SYMMETRY_TOL = 1e-13      # max spread of 1 − ⟨θ_i, θ_j⟩ over the pairs along a run
LABEL = {"post-ln": "Post-LN", "pre-ln": "Pre-LN", "mix-ln": "Mix-LN", "peri-ln": "Peri-LN", "ngpt": "nGPT",
         "ln-scaling": "LN-Scaling"}


def _kw(scheme):
    return {"tau": TAU} if scheme == "mix-ln" else {}


def _model(scheme, n, beta=BETA):
    from .._model import Model

    return Model(beta, scheme=scheme, d=n, **_kw(scheme))


def _ode_slope(scheme, beta, n, t, rho, r):
    from ..analysis._equiangular import rho_rate

    return rho_rate(scheme, beta, n, t, rho, r, tau=_kw(scheme).get("tau"))


def _initial_slopes(rows):
    from .._simulate import particle_velocity

    n, beta = N_SLOPE, BETA
    post = 2.0 / (np.exp(beta) + n - 1)
    peri = 2.0 / np.sqrt(np.exp(2 * beta) + n - 1)
    rows.append(compare(f"dρ/dt(0), Post-LN, β={beta:g}, n={n}: reference value (4 digits) vs 2/(e^β+n−1)",
                        4.958e-3, post, 0.5e-3 / 4.958, relative=True))
    rows.append(compare(f"dρ/dt(0), Peri-LN and nGPT, β={beta:g}, n={n}: reference value (5 digits) "
                        "vs 2/√(e^2β+n−1)",
                        1.3399e-2, peri, 0.5e-4 / 1.3399, relative=True))
    start = equiangular_particles(n)
    x = start.positions
    off = ~np.eye(n, dtype=bool)
    for s in SCHEMES:
        ref = peri if s in ("peri-ln", "ngpt") else post
        rows.append(compare(f"dρ/dt(0), {LABEL[s]}: equiangular ODE vs closed form", ref,
                            _ode_slope(s, beta, n, 0.0, 0.0, 1.0), 1e-12, relative=True))
        v, _ = particle_velocity(_model(s, n), start)
        d = v @ x.T + x @ v.T
        rows.append(compare(f"dρ/dt(0), {LABEL[s]}: particles (n={n}, exact velocity) vs closed form", ref,
                            float(d[off].mean()), SLOPE_TOL, relative=True))
    return post, peri


def _reference_solution(rows):
    """The equiangular ODE against its β = 0 closed form and the reference value ρ(1.5) (n = 5, β = 2)."""
    from .._simulate import simulate
    from ..analysis import equiangular

    t = np.linspace(0.0, 3.0, 31)
    for n in (2, 5, 64):
        closed = (np.exp(2 * t) - 1) / (np.exp(2 * t) + n - 1)
        # tolerance: LSODA's rtol 1e-12 summed over its ≤ 300 evaluations on [0, 3] (258–309 for these n)
        rows.append(compare(f"ρ(t), β=0, n={n}, t ≤ 3: max |equiangular ODE − (e^2t−1)/(e^2t+n−1)| (LSODA rtol 1e-12)",
                            0.0, float(np.max(np.abs(equiangular("post-ln", 0.0, n, t)[0] - closed))), 3e-10))
    n, beta, t1, rtol = 5, 2.0, 1.5, 1e-10
    rho = float(equiangular("post-ln", beta, n, [t1])[0][0])
    rows.append(compare(f"ρ({t1:g}), Post-LN, β={beta:g}, n={n}: reference value (10 decimals) vs equiangular ODE",
                        0.4632182624, rho, 5e-11))
    traj = simulate(_model("post-ln", n, beta), equiangular_particles(n), t1, backend="particles", rtol=rtol,
                    atol=1e-12)
    steps = len(traj.steps["t"])
    rows.append(compare(f"  particles (n={n} orthonormal tokens) vs equiangular ODE (tolerance {steps} steps × rtol "
                        f"{rtol:g})", rho, 1.0 - pair_gap(traj.final)[0], steps * rtol))


def _crossover(n, beta=BETA):
    """The time t× > 0 at which Post-LN's ρ overtakes Peri-LN's (ODE)."""
    from scipy.optimize import brentq

    from ..analysis import equiangular

    t = np.linspace(0.0, 60.0, 1201)[1:]
    diff = equiangular("peri-ln", beta, n, t)[0] - equiangular("post-ln", beta, n, t)[0]
    k = int(np.argmax(diff < 0))
    def f(s):
        return float(equiangular("peri-ln", beta, n, [s])[0][0] - equiangular("post-ln", beta, n, [s])[0][0])

    return brentq(f, t[k - 1], t[k], xtol=1e-13, rtol=1e-13)


def _windows(scheme, n):
    """Three late times w1 < w2 < w3 for the asymptotic rate, how the rate is read from u on a window, the law's
    name, and q: the ratio of the bias of the window [w2, w3] to that of [w1, w2].

    The bias of a window is the next term of the expansion of u(t): O(u) for the exponential laws (q = u(w2)/u(w1)
    ≈ e^{−6}, taken as 0) and a/t for the polynomial ones (s = r = t + c + o(1); the windows double t, q = 1/2,
    measured 0.4999 on the ODE)."""
    from ..analysis import equiangular_time

    if scheme in EXPONENTIAL:
        t1 = equiangular_time(scheme, BETA, n, 0.999, **_kw(scheme))
        return ((t1, t1 + 3.0, t1 + 6.0), lambda u, t: -np.log(u[1] / u[0]) / (t[1] - t[0]), EXPONENTIAL[scheme],
                "e^{-rate·t}", 0.0)
    if scheme == "ln-scaling":
        t1 = equiangular_time(scheme, BETA, n, 0.999)
        t2 = (np.sqrt(t1 + 1.0) + 1.5) ** 2 - 1.0
        t3 = (np.sqrt(t1 + 1.0) + 3.0) ** 2 - 1.0
        return ((t1, t2, t3), lambda u, t: -np.log(u[1] / u[0]) / (np.sqrt(t[1] + 1) - np.sqrt(t[0] + 1)), 4.0,
                "e^{-rate·√(t+1)}", 0.0)
    return ((1e4, 2e4, 4e4), lambda u, t: -np.log(u[1] / u[0]) / np.log(t[1] / t[0]), POLYNOMIAL[scheme],
            "t^{-rate}", 0.5)


def _rate_row(scheme, label, u, n):
    """The asymptotic rate from u = 1 − ρ at the three times of :func:`_windows`, the windows' bias extrapolated
    away, against the theory; tolerance a tenth of that bias (the next term of the expansion is O(log t/t) or O(u)
    smaller, ≲ 1e-3 of it here: measured ≤ 6e-6 against biases 2e-4 … 4e-3) plus 1e-6 for the rounding of
    u ≥ 6e-9.  The rate of one window against the theory at 0.01 passed a radial law 0.5 % off (Pre-LN: 1.994)."""
    w, rate_of, expected, law, q = _windows(scheme, n)
    rate, bias = _extrapolated_rate(u, w, rate_of, q)
    return compare(f"asymptotic rate, {LABEL[scheme]} (1−ρ ~ {law}): {label} on t∈[{w[0]:.4g}, {w[1]:.4g}], "
                   f"[{w[1]:.4g}, {w[2]:.4g}], window bias {bias:.1e} removed, vs theory", expected, rate,
                   0.1 * bias + 1e-6)


def _extrapolated_rate(u, w, rate_of, q):
    """The rate on [w2, w3] with the bias the two windows show removed (Richardson), and the bias of [w1, w2]."""
    r1, r2 = rate_of(u[:2], w[:2]), rate_of(u[1:], w[1:])
    rate = r2 + (r2 - r1) * q / (1.0 - q)
    return rate, abs(r1 - rate)


def _mean_field_rates(rows):
    """ℓ = 1 growth rate about the uniform measure per scheme: spectral PDE vs mf.growth_rate."""
    from .._measures import Density
    from .._model import Model
    from .._simulate import simulate
    from ..analysis import growth_rate
    from ..sphere import lm_index

    L, eps, T = 6, 1e-6, 0.04
    c = Density.uniform(L).coeffs.copy()
    c[lm_index(L, 1, 0)] = eps
    rho0 = Density(c, L)
    times = np.linspace(0.0, T, 9)
    rates = {}
    for s in SCHEMES:
        with quiet():   # the state has degree ≤ 1 (+ O(ε²)): its attention is exact at any band limit ≥ 1
            traj = simulate(Model(BETA, scheme=s, **_kw(s)), rho0, T, t_eval=times[1:], rtol=1e-10, atol=1e-16,
                            error_norm="elementwise")
        amp = np.array([st.coeffs[lm_index(L, 1, 0)].real for st in traj.states])
        # log-amplitude as a quartic in t (the rate changes in time with the radius): slope at t = 0
        fit = np.polyfit(traj.times, np.log(amp / eps), 4)
        ref = growth_rate(BETA, 1, scheme=s, **_kw(s))
        rates[s] = ref
        rows.append(compare(f"mean-field ℓ=1 rate at t=0, {LABEL[s]}, β={BETA:g}: PDE (S², L={L}) vs growth_rate",
                            ref, fit[-2], 1e-6, relative=True))
    groups = {}
    for s, r in rates.items():
        groups.setdefault(round(r, 10), []).append(LABEL[s])
    order = " > ".join("=".join(sorted(groups[k])) for k in sorted(groups, reverse=True))
    rows.append(same("mean-field initial ranking (ℓ=1 rate): growth_rate vs equiangular initial slopes",
                     order, _slope_order()))
    return rates


def _slope_order():
    post = 2.0 / (np.exp(BETA) + N_SLOPE - 1)
    slopes = {s: _ode_slope(s, BETA, N_SLOPE, 0.0, 0.0, 1.0) for s in SCHEMES}
    groups = {}
    for s, v in slopes.items():
        groups.setdefault(round(v / post, 10), []).append(LABEL[s])
    return " > ".join("=".join(sorted(groups[k])) for k in sorted(groups, reverse=True))


def run(quick: bool, outdir) -> list:
    from .._simulate import simulate
    from ..analysis import equiangular, equiangular_time

    rows = []
    _initial_slopes(rows)
    _reference_solution(rows)

    n = 64
    start = equiangular_particles(n)
    ode_times, par_times, part, curves = {}, {}, {}, {}
    for s in SCHEMES:
        lv = equiangular_time(s, BETA, n, list(LEVELS), **_kw(s))
        w, _, _, _, _ = _windows(s, n)
        t_eval = np.unique(np.concatenate([lv, w, np.geomspace(0.05, w[-1], 24)]))
        with quiet():
            traj = simulate(_model(s, n), start, float(t_eval[-1]), backend="particles", t_eval=t_eval,
                            rtol=1e-10, atol=1e-12)
        gaps = np.array([pair_gap(st)[0] for st in traj.states])
        spread = max(pair_gap(st)[1] for st in traj.states)
        part[s] = dict(zip(np.round(traj.times, 12), gaps))
        curves[s] = (traj.times, gaps)
        ode_times[s], par_times[s] = lv, []
        rows.append(compare(f"{LABEL[s]}: particles stay equiangular (max spread of 1 − ⟨θ_i,θ_j⟩)", 0.0, spread,
                            SYMMETRY_TOL))
        for level, t_ode in zip(LEVELS, lv):
            rho_p = 1.0 - part[s][round(t_ode, 12)]
            rho_o, r_o = equiangular(s, BETA, n, [t_ode], **_kw(s))
            t_p = t_ode - (rho_p - level) / _ode_slope(s, BETA, n, t_ode, rho_o[0], r_o[0])
            par_times[s].append(t_p)
            rows.append(compare(f"t(ρ={level:g}), {LABEL[s]}, β={BETA:g}, n={n}: ODE vs particles", t_ode, t_p, 1e-7,
                                relative=True))
        # asymptotic rate: ODE and particles on the same two late windows (_rate_row)
        w = _windows(s, n)[0]
        u_ode = 1.0 - equiangular(s, BETA, n, list(w), **_kw(s))[0]
        u_par = np.array([part[s][round(wi, 12)] for wi in w])
        rows += [_rate_row(s, "ODE", u_ode, n), _rate_row(s, f"particles (n={n})", u_par, n)]
    for level_i, level in enumerate(LEVELS):
        ode_order = " < ".join(LABEL[s] for s in sorted(SCHEMES, key=lambda s: ode_times[s][level_i]))
        par_order = " < ".join(LABEL[s] for s in sorted(SCHEMES, key=lambda s: par_times[s][level_i]))
        rows.append(same(f"ranking by t(ρ={level:g}), n={n}: ODE vs particles", ode_order, par_order))

    # the Peri-LN / Post-LN crossover
    tx = _crossover(n)
    eps = 1e-3
    te = np.array([0.5 * tx, tx - eps, tx + eps, 2 * tx])
    rho = {}
    for s in ("post-ln", "peri-ln"):
        traj = simulate(_model(s, n), start, float(te[-1]), backend="particles", t_eval=te, rtol=1e-10, atol=1e-12)
        rho[s] = np.array([1.0 - pair_gap(st)[0] for st in traj.states[1:]])
    f = rho["peri-ln"] - rho["post-ln"]
    tx_p = te[1] + (te[2] - te[1]) * f[1] / (f[1] - f[2])
    rows.append(compare(f"Peri-LN/Post-LN crossover time t×, β={BETA:g}, n={n}: ODE vs particles", tx, tx_p, 1e-5,
                        relative=True))
    rows.append(same("Peri-LN ahead at t×/2, Post-LN ahead at 2t× (particles)", "Peri-LN, Post-LN",
                     f"{'Peri-LN' if f[0] > 0 else 'Post-LN'}, {'Post-LN' if f[3] < 0 else 'Peri-LN'}"))
    tx256 = _crossover(N_SLOPE)
    if not quick:
        te = np.array([tx256 - eps, tx256 + eps])
        start256 = equiangular_particles(N_SLOPE)
        for s in ("post-ln", "peri-ln"):
            traj = simulate(_model(s, N_SLOPE), start256, float(te[-1]), backend="particles", t_eval=te,
                            rtol=1e-10, atol=1e-12)
            rho[s] = np.array([1.0 - pair_gap(st)[0] for st in traj.states[1:]])
        f = rho["peri-ln"] - rho["post-ln"]
        tx_p = te[0] + (te[1] - te[0]) * f[0] / (f[0] - f[1])
        rows.append(compare(f"Peri-LN/Post-LN crossover time t×, β={BETA:g}, n={N_SLOPE}: ODE vs particles", tx256,
                            tx_p, 1e-5, relative=True))

    rates = _mean_field_rates(rows)
    _figure(outdir, n, curves, tx, tx256, rates)
    return rows


def _figure(outdir, n, curves, tx, tx256, rates):
    from ..analysis import equiangular

    p = plt()
    fig, ax = p.subplots(1, 3, figsize=(12, 3.5), constrained_layout=True)
    for s in SCHEMES:
        t, gaps = curves[s]
        tt = np.geomspace(0.05, t[-1], 400)
        line, = ax[0].semilogx(tt, equiangular(s, BETA, n, tt, **_kw(s))[0], lw=1, label=LABEL[s])
        ax[0].semilogx(t[1:], 1 - gaps[1:], "o", ms=2.5, color=line.get_color())
        ax[1].loglog(tt, 1 - equiangular(s, BETA, n, tt, **_kw(s))[0], lw=1, color=line.get_color(), label=LABEL[s])
        ax[1].loglog(t[1:], gaps[1:], "o", ms=2.5, color=line.get_color())
    ax[0].set_xlabel("t")
    ax[0].set_ylabel("ρ(t) = ⟨θ_i, θ_j⟩")
    ax[0].set_title(f"equiangular start, β={BETA:g}, n={n}: ODE (lines), particles (dots)", fontsize=8)
    ax[0].legend(fontsize=7)
    ax[1].set_ylim(1e-10, 1.5)
    ax[1].set_xlabel("t")
    ax[1].set_ylabel("1 − ρ(t)")
    ax[1].set_title("asymptotics: e^{-2t} (Post-LN, nGPT), t^{-2} (Pre/Peri/Mix-LN)", fontsize=8)
    for nn, txx in ((n, tx), (N_SLOPE, tx256)):
        tt = np.linspace(0.01, 4 * txx, 400)
        diff = equiangular("peri-ln", BETA, nn, tt)[0] - equiangular("post-ln", BETA, nn, tt)[0]
        line, = ax[2].plot(tt / txx, diff, lw=1, label=f"n = {nn}: t× = {txx:.4g}")
        ax[2].axvline(1.0, color="0.6", lw=0.6)
    ax[2].axhline(0.0, color="k", lw=0.6)
    ax[2].set_xlabel("t / t×")
    ax[2].set_ylabel("ρ_Peri-LN − ρ_Post-LN")
    ax[2].set_title("Peri-LN leads, then Post-LN overtakes (ODE)", fontsize=8)
    ax[2].legend(fontsize=7)
    fig.suptitle("Normalization schemes (Karagodin et al. 2025): equiangular ODE vs particles", fontsize=9)
    fig.savefig(figure_path(outdir, NAME), dpi=90)
    p.close(fig)
