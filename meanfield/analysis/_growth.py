"""Linear stability of the uniform measure: growth rates per degree, the most unstable mode, and the
noise level of the ℓ = 1 mode for n i.i.d. tokens."""
from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from .._model import ATTENTIONS, Model
from .._schemes import check_alpha, check_r0, check_tau, get_scheme
from .._validate import choice, dimension, nonneg_int, positive_float
from ..sphere._checks import check_memory
from ..sphere._funk_hecke import _MAX_UNSCALED_BETA as _LOG_FLOAT_MAX
from ..sphere._funk_hecke import check_beta, funk_hecke, multiplier_ratios


class _SpeedModel:
    """What a scheme row reads from a Model to evaluate its speed at the uniform state: α(t) and τ."""

    def __init__(self, alpha, tau):
        self.alpha, self.tau = alpha, tau

    alpha_at = Model.alpha_at       # a callable α is evaluated and checked as the Model does


def _check_alpha(sch, alpha):
    """α > 0, or a callable α(t) (nGPT's step schedule, as :class:`Model` takes it)."""
    return check_alpha(sch, alpha if callable(alpha) else positive_float("alpha", alpha))


def _uniform_speed(sch, norm_per_lam0, r0, alpha, tau, t) -> float:
    """The scheme's speed factor s at the uniform state (radius r0, time t), with ‖A‖ = ⟨x, A⟩ there in units of
    λ_0: ∂_βλ_0/λ_0, SA's ‖A‖ itself; USA's is λ_0 times it, and the schemes that divide by ‖A‖ (Peri-LN,
    nGPT) have s linear in ‖A‖, so their USA rates equal the SA ones."""
    return float(sch.speed(np.asarray(r0), np.asarray(norm_per_lam0), float(t), _SpeedModel(alpha, tau)))


def _zero_rate_degree(beta: float) -> int:
    """A degree beyond which every growth rate is 0.0 in float64, for any d and scheme.

    log(λ_ℓ/λ_0) ≤ −ℓ²/(2(β + ℓ)): λ_ℓ/λ_0 = Π_{k=1..ℓ} I_{ν+k}(β)/I_{ν+k−1}(β) (ν = d/2 − 1 ≥ 0), each factor
    below β/(a + √(a² + β²)) = e^{−asinh(a/β)} with a = ν + k − 1/2 (Amos 1974), and asinh u ≥ u/(1 + u); checked
    against the computed ratios for d = 2 … 500, β = 1e-3 … 1e7.  Past this degree the bound is below −1000, so
    the ratio exp(log λ_ℓ − log λ_0) underflows to 0 (float64 ends near e^−745) and so does the rate, even times
    λ_0 ≤ e^709.78 (USA).  Computing those degrees cost O(lmax) time and memory for zeros (~80 GB at lmax = 10⁹).
    """
    return int(1000 + np.sqrt(1e6 + 2000 * beta)) + 1


def growth_rates(beta, lmax, d=3, attention="softmax", scheme="post-ln", r0=1.0, alpha=1.0, t=0.0,
                 tau=None) -> np.ndarray:
    """Linear growth rates γ_0 … γ_lmax of every degree about the uniform measure (γ_0 = 0: mass).

    The vectorized form of :func:`growth_rate`: ``growth_rates(beta, L)[ell] == growth_rate(beta, ell)``.

    Parameters
    ----------
    beta : float
        Inverse temperature, 0 < β ≤ 1e9.
    lmax : int
        Largest degree, ≥ 1.
    d : int
        Ambient dimension, d ≥ 2 (sphere S^{d-1}).
    attention : {"softmax", "unnormalized"}
    scheme : str
        A continuous scheme of the registry; default "post-ln".
    r0, alpha, t
        Radius of the uniform state, nGPT step α (a number or a callable α(t)) and time of the speed factor, as
        in :func:`growth_rate`.
    tau : float, optional
        The Mix-LN switch time (required for scheme="mix-ln", refused otherwise).

    Returns
    -------
    ndarray, shape (lmax + 1,)
        γ_ℓ in inverse time units (0.0 where they underflow float64: every degree beyond
        1000 + √(10⁶ + 2000β) is set to 0.0 without being computed).

    Raises
    ------
    ValueError
        An invalid parameter (β outside (0, 1e9], where the Funk–Hecke multipliers are computed), a
        layer-map-only scheme, or unnormalized attention with β > 709.78 for a scheme whose speed does not
        divide by ‖A‖ (its rates overflow float64); Peri-LN and nGPT stay finite at any β (e^β cancels), as
        does softmax attention.
    InsufficientMemoryError
        ``lmax`` so large that the result would not fit in the available memory.
    """
    beta = check_beta(beta, allow_zero=False)
    lmax = nonneg_int("lmax", lmax, minimum=1)
    d = dimension(d, within="float64")      # a number in the formulas (d → ∞: the rates have a limit)
    attention = ATTENTIONS[choice("attention", attention, ATTENTIONS)]
    sch = get_scheme(scheme)
    if not sch.continuous:
        raise ValueError(f"`scheme` must be a continuous-time scheme; {sch.name!r} is a layer map only.")
    r0 = check_r0(sch, r0)
    alpha = _check_alpha(sch, alpha)
    t = positive_float("t", t, allow_zero=True)
    tau = check_tau(sch, tau)
    cancels = attention == "softmax" or sch.needs_norm   # e^β cancels (SA: in λ_ℓ/λ_0; Peri-LN, nGPT: in λ_ℓ/‖A‖)
    if not cancels and beta > _LOG_FLOAT_MAX:
        raise ValueError(f"attention='unnormalized' with scheme={sch.name!r} needs β ≤ {_LOG_FLOAT_MAX:.2f}: its "
                         f"rates grow like e^β and overflow float64 above; got beta={beta!r}. (Softmax attention, "
                         "and the schemes that divide by ‖A‖, Peri-LN and nGPT, have no such limit.)")
    top = min(lmax, _zero_rate_degree(beta))                  # the rates beyond are 0.0
    check_memory(8.0 * (lmax + 1) + 200.0 * (top + 1), lambda: f"the growth rates of degrees 0 … {lmax}",
                 "lower `lmax`.")
    ratios, dlog_lam0 = multiplier_ratios(beta, top, d)      # λ_ℓ/λ_0: finite for any β and d (by logs only below float64)
    ell = np.arange(top + 1)
    rates = ell * (ell + (d - 2.0)) * ratios / beta / _uniform_speed(sch, dlog_lam0, r0, alpha, tau, t)
    if top < lmax:
        rates = np.concatenate([rates, np.zeros(lmax - top)])
    if cancels:
        return rates
    return rates * funk_hecke(beta, 0, d)[0]                 # USA: λ_ℓ = λ_0 · λ_ℓ/λ_0


def growth_rate(beta, ell, d=3, attention="softmax", scheme="post-ln", r0=1.0, alpha=1.0, t=0.0, tau=None) -> float:
    """Linear growth rate γ_ℓ of a degree-ℓ perturbation of the uniform measure on S^{d-1}.

    Linearizing ∂_t ρ + div(ρ v[ρ]) = 0 about ρ ≡ 1 (Q = K = V = I) gives ρ = 1 + ε e^{γ_ℓ t} Y_ℓ with

        γ_ℓ = ℓ(ℓ + d − 2) λ_ℓ / (β s)          (unnormalized attention)
        γ_ℓ = ℓ(ℓ + d − 2) λ_ℓ / (β λ_0 s)      (softmax attention),

    λ_ℓ the Funk–Hecke multipliers (normalized measure) and s the scheme's speed factor at the
    uniform state (1 for Post-LN and for Mix-LN until τ; r0 for Pre-LN, QKV-Norm and Mix-LN after τ;
    r0‖A‖ for Peri-LN with ‖A‖ = ∂_βλ_0/λ_0 (SA) or ∂_βλ_0 (USA); ‖A‖/α for nGPT; √(t+1) for
    LN-Scaling), so it is the instantaneous rate at time t.

    Parameters
    ----------
    beta : float
        Inverse temperature, 0 < β ≤ 1e9.
    ell : int
        Degree ℓ ≥ 1 (ℓ = 0 is mass and does not grow).
    d : int
        Ambient dimension, d ≥ 2.
    attention : {"softmax", "unnormalized"}
    scheme : str
        A continuous scheme of the registry; default "post-ln".
    r0 : float
        Radius of the uniform state at time t (> 0).  The radius schemes move it: a run started at radius r0
        has r0 + ‖A‖t at time t under Pre-LN and QKV-Norm, r0 + t under Peri-LN (:func:`l1_noise_time` follows
        it).  ``r0`` ≠ 1 is refused unless the scheme has a radius (as :class:`Model` refuses it).
    alpha : float or callable
        nGPT step α > 0, or a schedule α(t) evaluated at ``t``; ≠ 1 is refused unless scheme="ngpt".
    t : float
        Time ≥ 0 of the speed factor (LN-Scaling's √(t+1), Mix-LN's switch, nGPT's α(t)).
    tau : float, optional
        The Mix-LN switch time (required for scheme="mix-ln", refused otherwise, as in :class:`Model`).

    Returns
    -------
    float
        γ_ℓ in inverse time units (0.0 where it underflows float64, as :func:`growth_rates`).

    Raises
    ------
    ValueError
        As :func:`growth_rates`.
    """
    ell = nonneg_int("ell", ell, minimum=1)
    if ell > _zero_rate_degree(check_beta(beta, allow_zero=False)):
        growth_rates(beta, 1, d, attention, scheme, r0, alpha, t, tau)   # the checks of the other parameters
        return 0.0                                                        # without O(ℓ) work
    return float(growth_rates(beta, ell, d, attention, scheme, r0, alpha, t, tau)[ell])


class UnstableMode(NamedTuple):
    """The fastest-growing degree about the uniform measure (see :func:`most_unstable_mode`).

    Attributes
    ----------
    ell : int
        The degree ℓ* = argmax_ℓ γ_ℓ.
    rate : float
        Its growth rate γ_ℓ* (inverse time units).
    """

    ell: int
    rate: float


def most_unstable_mode(beta, d=3, attention="softmax", scheme="post-ln", r0=1.0, alpha=1.0, t=0.0,
                       tau=None) -> UnstableMode:
    """The most unstable degree ℓ* = argmax_{ℓ ≥ 1} γ_ℓ of the uniform measure, and its rate.

    γ_ℓ is :func:`growth_rate`.  The speed factor of the scheme does not depend on ℓ, so ℓ* is the
    same for every scheme (the rate is not).  ℓ(ℓ + d − 2)λ_ℓ grows then decays super-exponentially
    (λ_ℓ ≈ λ_0 e^{−ℓ²/(2β)} for large β), so ℓ* ≈ √(2β) for large β; the search covers degrees until
    the argmax lies in the first half of the window (doubling it otherwise).  Ties (equal rates to
    rounding) resolve to the smaller degree.

    Parameters
    ----------
    beta, d, attention, scheme, r0, alpha, t, tau
        As in :func:`growth_rate`.

    Returns
    -------
    UnstableMode
        ``(ell, rate)``.
    """
    beta = check_beta(beta, allow_zero=False)
    lmax = max(8, 2 * int(np.ceil(np.sqrt(2 * beta))) + 8)
    while True:
        rates = growth_rates(beta, lmax, d, attention, scheme, r0, alpha, t, tau)
        ell = int(np.argmax(rates[1:])) + 1
        if ell <= lmax // 2:
            return UnstableMode(ell, float(rates[ell]))
        lmax *= 2


def l1_noise_threshold(n, d=3, quantile=None) -> float:
    """The ℓ = 1 amplitude that n i.i.d. uniform tokens carry by chance: the noise floor of the ℓ = 1 mode.

    The ℓ = 1 part of a measure μ on S^{d-1} is its mean vector m = ∫ x dμ(x); a density
    ρ = 1 + d⟨a, x⟩ (w.r.t. the normalized measure) has m = a.  For the empirical measure of n i.i.d.
    uniform tokens, m_n = (1/n) Σ_j θ_j has E|m_n|² = 1/n exactly (E⟨θ_i, θ_j⟩ = δ_ij), and
    n·d·|m_n|² → χ²_d in distribution (central limit theorem; this is the Rayleigh test of uniformity).

    Returned:

    * ``quantile=None``: the RMS amplitude √(E|m_n|²) = 1/√n (exact for every n);
    * ``quantile=q`` in (0, 1): the q-quantile of |m_n| under uniformity, √(χ²_{d}(q) / (d n))
      (asymptotic in n, with an O(1/n) error in the probability).

    A deterministic ℓ = 1 perturbation of amplitude |a| below this threshold is indistinguishable from
    sampling noise (at level q); in the linear regime both grow like e^{γ_1 t} (see
    :func:`l1_noise_time`).

    Parameters
    ----------
    n : int
        Number of tokens, n ≥ 1.
    d : int
        Ambient dimension, d ≥ 2.
    quantile : float, optional
        A probability in (0, 1).

    Returns
    -------
    float
        An amplitude of |m| (dimensionless, in [0, 1]).
    """
    n = nonneg_int("n", n, minimum=1)
    d = dimension(d, within="float64")      # a formula parameter (χ²_d), as in growth_rate
    if quantile is None:
        return float(1.0 / np.sqrt(n))
    if isinstance(quantile, bool) or not isinstance(quantile, numbers.Real) or not 0 < quantile < 1:
        raise ValueError(f"`quantile` must be a probability in (0, 1); got quantile={quantile!r}.")
    from scipy import stats

    # |m_n| ≤ 1 always: the asymptotic quantile exceeds it for very few tokens (1.61 for n = 1)
    return float(min(1.0, np.sqrt(stats.chi2.ppf(float(quantile), float(d)) / (float(d) * n))))


def l1_noise_time(beta, n, amplitude, d=3, attention="softmax", scheme="post-ln", quantile=None, r0=1.0,
                  alpha=1.0, tau=None) -> float:
    """Linear-theory time for the noise-seeded ℓ = 1 mode of n i.i.d. uniform tokens to reach ``amplitude``.

    The mean vector of the linearized dynamics grows as |m(t)| = |m(0)| exp(∫_0^t γ_1(u) du) from the noise
    floor |m(0)| = ε_n = :func:`l1_noise_threshold` (n, d, quantile); the time returned solves
    ∫_0^t γ_1(u) du = ln(amplitude / ε_n), γ_1(u) = :func:`growth_rate` (β, 1, …, t=u) along the uniform state,
    whose radius the scheme moves: r(u) = r0 + ‖A‖u for Pre-LN and QKV-Norm (‖A‖ = ⟨x, A⟩ of the uniform
    state), r0 + u for Peri-LN, r0 until τ and then r0 + ‖A‖(u − τ) for Mix-LN; LN-Scaling's speed is √(u+1).
    For Post-LN and nGPT (constant α) γ_1 is constant and t = ln(amplitude / ε_n) / γ_1.  It is meaningful
    while the dynamics stays linear (amplitude ≪ 1).  Returns 0 when ``amplitude`` ≤ ε_n.

    Parameters
    ----------
    beta : float
        β > 0.
    n : int
        Number of tokens, n ≥ 1.
    amplitude : float
        Target |m|, in (0, 1].
    d, attention, scheme
        As in :func:`growth_rate`.
    quantile : float, optional
        As in :func:`l1_noise_threshold` (default: the RMS noise).
    r0, alpha, tau
        As in :func:`growth_rate`; ``r0`` is the radius at t = 0.

    Returns
    -------
    float
        A time (the unit of the ODE); ``inf`` where the radius schemes' slowing (γ_1 ∝ 1/r(u)) would not reach
        ``amplitude`` before t = e^700.
    """
    amplitude = positive_float("amplitude", amplitude)
    if amplitude > 1:
        raise ValueError(f"`amplitude` must be in (0, 1] (|m| ≤ 1); got amplitude={amplitude!r}.")
    eps = l1_noise_threshold(n, d, quantile)
    gamma = growth_rate(beta, 1, d, attention, scheme, r0, alpha, tau=tau)     # checks every parameter
    phase = np.log(amplitude / eps)
    if phase <= 0:
        return 0.0
    sch = get_scheme(scheme)
    _, dlog_lam0 = multiplier_ratios(beta, 1, d)
    s0 = _uniform_speed(sch, dlog_lam0, r0, alpha, tau, 0.0)
    # the radial law reads the uniform state's ⟨x, A⟩ = ‖A‖: λ_0 times the SA one for USA, except for the schemes
    # that divide by ‖A‖ (Peri-LN: dr/dt = ⟨x, A⟩/‖A‖ = 1 either way; their rates are the SA ones)
    cancels = attention == "softmax" or sch.needs_norm
    radial_norm = dlog_lam0 if cancels else dlog_lam0 * funk_hecke(beta, 0, d)[0]
    return _uniform_clock(sch, dlog_lam0, radial_norm, float(r0), alpha, tau, phase / (gamma * s0))


#: the time up to which :func:`_uniform_clock` integrates
_CLOCK_T_MAX = 1e304

#: float64's smallest normal number: the shortest time scale of a piece's clock
_TINY = float(np.finfo(float).tiny)


def _uniform_clock(sch, norm, radial_norm, r0, alpha, tau, target) -> float:
    """The time t at which ∫_0^t du / s(u) = ``target``, s(u) the scheme's speed factor along the uniform state
    (speed read with ‖A‖ = ``norm``, the radius moved by the radial law with ⟨x, A⟩ = ‖A‖ = ``radial_norm``).

    Each piece between the scheme's switch times (Mix-LN's τ) is integrated on its own clock u = t − t_lo, in
    x = log(1 + u/c) for the state (log r, ψ = ∫ du/s / target), c = min(1, r/|dr/dt|, (1 − ψ)·target·s) at the
    piece's start: the time scales of the radius and of the growth.  r and u grow like e^x and the rates in x stay
    bounded, from r0 = 1e-300 (c = r0/‖A‖) to Pre-LN's t ~ 1e32 at β = 50, and the event's location, found to a few
    ulps of x, is one to a few ulps of t (in x = log(1 + t): 3 % long from r0 = 1e-100, inf from 1e-300; USA Mix-LN
    at β = 41, whose t ~ 3e-15 is reached before τ, 5 % long)."""
    from scipy.integrate import solve_ivp

    model = _SpeedModel(alpha, tau)

    def speed(r, t):
        return _uniform_speed(sch, norm, r, alpha, tau, t)

    def radial(r, t):
        return 0.0 if sch.radial is None else float(sch.radial(np.asarray(radial_norm), np.asarray(radial_norm),
                                                               np.asarray(r), t, model))

    if sch.radial is None and not callable(alpha) and speed(r0, 0.0) == speed(r0, 1.0):   # Post-LN, nGPT
        return float(target * speed(r0, 0.0))
    cuts = [0.0, tau, np.inf] if sch.uses_tau and 0 < tau else [0.0, np.inf]
    y = [np.log(r0), 0.0]
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        first, last = np.nextafter(lo, hi), np.nextafter(min(hi, _CLOCK_T_MAX), lo)
        r = float(np.exp(y[0]))
        rate = abs(radial(r, first))
        c = max(min(1.0, r / rate if rate > 0 else 1.0, (1.0 - y[1]) * target * speed(r, first)), _TINY)

        def rhs(x, state, c=c, lo=lo, first=first, last=last):
            u = _scaled_expm1(c, x)
            t = min(max(lo + u, first), last)                  # strictly inside the piece: the side of a jump
            with np.errstate(over="ignore", under="ignore"):
                r = float(np.exp(state[0]))
            if not 0 < r < np.inf:      # a trial step beyond float64's radii (from r0 = 1e300): NaN rejects it
                return [np.nan, np.nan]
            return [(c + u) * radial(r, t) / r, (c + u) / speed(r, t) / target]

        def reached(_x, state):
            return state[1] - 1.0
        reached.terminal = True

        span = float(np.logaddexp(0.0, np.log(min(hi, _CLOCK_T_MAX) - lo) - np.log(c)))     # log(1 + (hi − lo)/c)
        # the rates in x are ≤ 1 at the start (c is the shorter time scale): a first step of 1e-2 is safe, where
        # scipy's own choice probed a trial step of the size of the span (overflow warnings)
        sol = solve_ivp(rhs, (0.0, span), y, method="DOP853", events=reached, rtol=1e-13, atol=1e-14,
                        first_step=min(1e-2, span))
        if sol.t_events[0].size:
            return float(lo + _scaled_expm1(c, sol.t_events[0][0]))
        y = list(sol.y[:, -1])
    return float("inf")


def _scaled_expm1(c, x) -> float:
    """c·(e^x − 1), finite where e^x alone is not (x up to log(1e304/c), c down to 1e-300)."""
    return float(c * np.expm1(x)) if x < 700 else float(np.exp(x + np.log(c)) - c)
