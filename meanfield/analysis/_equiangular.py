"""The equiangular (symmetric) solution: n tokens with all pairwise inner products equal.

Take n unit vectors θ_1..θ_n with ⟨θ_i, θ_j⟩ = ρ for all i ≠ j (possible for ρ ∈ [−1/(n−1), 1]; for
ρ = 0 an orthonormal family, d ≥ n), equal radii r and Q = K = V = I.  The attention vector is

    A_i = a θ_i + b S_i,   S_i = Σ_{k≠i} θ_k,
    SA:  a = e^β / D,  b = e^{βρ} / D,  D = e^β + (n−1) e^{βρ};     USA:  a = e^β / n,  b = e^{βρ} / n,

so that, with ⟨S_i, θ_i⟩ = (n−1)ρ, ⟨S_i, θ_j⟩ = 1 + (n−2)ρ and ‖S_i‖² = (n−1)(1 + (n−2)ρ),

    ⟨θ_i, A_i⟩ = a + (n−1) b ρ,
    ‖A_i‖²     = a² + 2(n−1) a b ρ + (n−1)(1 + (n−2)ρ) b²,
    ⟨P_θi A_i, θ_j⟩ = b (1 − ρ)(1 + (n−1)ρ).

Every token sees the same ‖A‖, ⟨θ, A⟩ and r, so the symmetry is preserved and, with s and the radial
law of the scheme (read from :mod:`meanfield._schemes`),

    dρ/dt = (2/s) b (1 − ρ)(1 + (n−1)ρ),     dr/dt = radial(⟨θ, A⟩, ‖A‖, r, t).

For SA this is dρ/dt = (2/s) e^{βρ}(1 − ρ)(1 + (n−1)ρ)/(e^β + (n−1)e^{βρ}), the equation stated with the
reference values (docs/validation.md); at β = 0 its Post-LN solution from ρ = 0 is
ρ(t) = (e^{2t} − 1)/(e^{2t} + n − 1).
"""
from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

from .._errors import ConvergenceError, UnsupportedModelError
from .._model import ATTENTIONS, Model
from .._schemes import check_r0, get_scheme, over_overflowed_speed
from .._validate import (choice, increasing_times, nonneg_int, positive_float, real_array, real_number,
                         relative_tolerance)


def equiangular_attention(beta: float, n: int, rho, attention: str = "softmax"):
    """(a, b, ⟨θ, A⟩, ‖A‖) of the equiangular configuration with inner product ``rho`` (arrays broadcast).

    A_i = a θ_i + b Σ_{k≠i} θ_k; see the module docstring.  SA is evaluated as ratios of
    e^{β(ρ−1)}, so nothing overflows for large β.
    """
    rho = np.asarray(rho, dtype=float)
    q = np.exp(beta * (rho - 1.0))                         # b / a, ≤ 1
    if ATTENTIONS[attention] == "softmax":
        a = 1.0 / (1.0 + (n - 1) * q)
    else:
        a = np.exp(beta) / n * np.ones_like(rho)
    b = a * q
    # a factored out (USA's a = e^β/n squared overflows from β ≈ 355), and written with δ = 1 − q (expm1) and
    # u = 1 + (n−1)ρ, both ≥ 0, as sums of terms ≥ 0: ⟨θ, A⟩/a = δ + q u and ‖A‖²/a² = δ² + q u (2 + (n−2) q).
    # The expanded forms 1 + (n−1)qρ and 1 + 2(n−1)qρ + (n−1)(1 + (n−2)ρ)q² cancel to δ and δ² near the simplex
    # (u → 0) at small β: at β = 1e-8, n = 4 Peri-LN's rate ⟨θ, A⟩/‖A‖, exactly 1 there, came out 0.63.
    delta = -np.expm1(beta * (rho - 1.0))
    u = np.maximum(1.0 + (n - 1) * rho, 0.0)
    radial = a * (delta + q * u)
    norm2 = delta * delta + q * u * (2.0 + (n - 2) * q)
    return a, b, radial, a * np.sqrt(norm2)


def _scheme_model(scheme, beta, alpha, tau, attention):
    # The scheme rows read α(t) and τ from a Model; build one with the same validation.  β = 0 is a
    # valid limit here (Post-LN from ρ = 0: the closed form ρ = (e^{2t} − 1)/(e^{2t} + n − 1)) although a
    # Model needs β > 0: the rows do not use β, so it is set after validation.
    m = Model(beta=beta if beta > 0 else 1.0, scheme=scheme.name, attention=attention, d=3, alpha=alpha, tau=tau)
    if beta == 0:
        object.__setattr__(m, "beta", 0.0)
    return m


# LSODA: near collapse ρ → 1 is a stable equilibrium, where an explicit method is held to O(1) steps by
# stability (DOP853 took 1.0 s to t = 1e4 and would take hours to 1e8); LSODA switches to BDF there
# (0.03 s to 1e8) and was also the more accurate at rtol = 1e-12 (7.7e-12 against 3.0e-11 for DOP853, both
# against DOP853 at 1e-14, six schemes, β = 0.5..8, n = 3..50, t ≤ 30).
_METHOD = "LSODA"


#: LSODA (scipy) raises a smaller rtol to this, with only a UserWarning: refused up front instead
_MIN_RTOL = 100 * np.finfo(float).eps


def _lsoda_rtol(rtol) -> float:
    """rtol in [100 ε, 1) = [2.22e-14, 1): scipy's LSODA replaced rtol = 1e-14 (accepted here) by 2.22e-14."""
    try:
        value = relative_tolerance(rtol)
    except ValueError:
        value = float("nan")    # NaN, ≤ 0 or ≥ 1: the message below, with this function's range
    if not _MIN_RTOL <= value < 1:
        raise ValueError(f"`rtol` must be in [{_MIN_RTOL:.3g}, 1) (scipy's LSODA goes no lower; no accuracy at 1); "
                         f"got rtol={rtol!r}.")
    return value


def _setup(scheme, beta, n, r0, alpha, tau, attention, rho0, rtol=1e-12, atol=1e-14):
    """Validate the common arguments; return (scheme row, model, rhs(t, [ρ, r]), n, ρ0, r0, rtol, atol), the
    tolerances as floats (passed on as given, atol=10**20 reached LSODA as an object array and crashed the
    interpreter with a segmentation fault)."""
    sch = get_scheme(scheme)
    if not sch.continuous:
        raise UnsupportedModelError(f"scheme={sch.name!r} is defined only as a discrete layer map; "
                                    "the equiangular ODE needs a continuous-time scheme.")
    beta = positive_float("beta", beta, allow_zero=True)
    n = nonneg_int("n", n, minimum=2)
    r0 = check_r0(sch, r0)      # as Model and the backends: r0 ≠ 1 is refused for a scheme without a radius
    rho0 = real_number("rho0", rho0)      # float("a") raised "could not convert string to float", naming nothing
    if not (-1.0 / (n - 1) <= rho0 < 1.0):
        raise ValueError(f"`rho0` must be in [−1/(n−1), 1) = [{-1 / (n - 1):.6g}, 1) for n={n}; got rho0={rho0!r}.")
    choice("attention", attention, ATTENTIONS)
    if sch.needs_norm and equiangular_attention(beta, n, rho0, attention)[3] == 0:
        # it stopped with "the equiangular ODE became non-finite at t=0 … a step overshot a collapse", naming USA
        raise ValueError(f"scheme={sch.name!r} divides by ‖A‖, which is 0 at beta=0 from the simplex rho0 = −1/(n−1) "
                         f"(each A_i is the mean of the tokens): its ODE is undefined there; give beta > 0 or "
                         f"rho0 > −1/(n−1); got beta={beta!r}, n={n}, rho0={rho0!r}.")
    rtol, atol = _lsoda_rtol(rtol), positive_float("atol", atol)
    model = _scheme_model(sch, beta, alpha, tau, attention)

    def rhs(time, y):
        # the state is (ρ, log r): with r0 = 1e-150 the Jacobian entry ∂ρ'/∂r ~ ρ'/r overflowed and LSODA never
        # returned; ∂ρ'/∂log r = −ρ' (Pre-LN) stays finite, and atol is then a relative accuracy of r
        rho, log_r = y
        r = np.exp(log_r)
        _, b, radial, norm = equiangular_attention(beta, n, rho, attention)
        s = sch.speed(np.asarray(r), np.asarray(norm), time, model)
        drho = 2.0 * b * (1.0 - rho) * (1.0 + (n - 1) * rho) / s
        if np.isposinf(s):     # Peri-LN's r‖A‖, nGPT's ‖A‖/α beyond float64 (USA near β = 709.78): dρ/dt read 0
            scaled = over_overflowed_speed(sch, np.reshape(2.0 * b * (1.0 - rho) * (1.0 + (n - 1) * rho), (1, 1)),
                                           s, np.reshape(r, 1), np.reshape(norm, 1), time, model)
            drho = drho if scaled is None else scaled[0, 0]
        dr = 0.0 if sch.radial is None else sch.radial(np.asarray(radial), np.asarray(norm), np.asarray(r), time, model)
        return [float(drho), float(dr / r)]

    return sch, model, rhs, n, rho0, r0, rtol, atol


def rho_rate(scheme, beta, n, t, rho, r=1.0, alpha=1.0, tau=None, attention="softmax") -> float:
    """dρ/dt of the equiangular ODE at the state (ρ, r) and time t (the right-hand side :func:`equiangular`
    integrates, whose state is (ρ, log r))."""
    _, _, rhs, *_ = _setup(scheme, beta, n, 1.0, alpha, tau, attention, 0.0)
    return rhs(t, [rho, np.log(r)])[0]


def _cuts(sch, model, t_end):
    """[0, t_end] split at the scheme's switch time (Mix-LN τ), where the velocity jumps."""
    cuts = [0.0]
    if sch.uses_tau and 0.0 < model.tau < t_end:
        cuts.append(model.tau)
    cuts.append(float(t_end))
    return cuts


def _inside(rhs, lo, hi):
    # evaluate strictly inside the piece so a jump at its ends is seen from the correct side
    return lambda time, y: rhs(min(max(time, np.nextafter(lo, hi)), np.nextafter(hi, lo)), y)


_MAX_EVALUATIONS = 1_000_000    # ~10 s; ordinary runs take 10²–10⁴, a collapse from r0 = 1e-150 ~7·10⁴


class _Budget:
    """A right-hand side that stops the integration with a ConvergenceError after _MAX_EVALUATIONS calls."""

    def __init__(self, f, r0):
        self.f, self.r0, self.calls = f, r0, 0

    def __call__(self, time, y):
        self.calls += 1
        if self.calls > _MAX_EVALUATIONS:
            raise ConvergenceError(f"the equiangular ODE took over {_MAX_EVALUATIONS:,} evaluations and stopped at "
                                   f"t={time:.6g}: its time scale is far below the span asked for (with r0={self.r0:g} "
                                   "a Pre-LN-like speed r collapses the tokens in a time ~r0). Ask for a shorter span, "
                                   "or a larger r0 or rtol.")
        with np.errstate(all="ignore"):
            dy = self.f(time, y)
        if not np.all(np.isfinite(dy)):
            # two causes: a radius r0 ≪ 1 (a Pre-LN-like speed 1/r), or USA at large β, whose speed grows like e^{βρ}
            # (β = 100, r0 = 1: ρ crossed (0, 1) in under one ulp of t); "ask for a larger r0" alone misled there
            raise ConvergenceError(f"the equiangular ODE became non-finite at t={time:.6g} (state {list(y)}): a step "
                                   f"overshot a collapse whose time scale is below the integrator's resolution in t "
                                   f"(r0={self.r0:g}; unnormalized attention speeds up like e^(βρ) as ρ → 1). Ask for "
                                   "a larger r0, softmax attention or a smaller β, or a shorter span; "
                                   "equiangular_time gives the time of the collapse.")
        return dy


def _solve(rhs, lo, hi, y0, r0, **kw):
    """solve_ivp on the piece [lo, hi], its first step sized from the initial speed: LSODA's own choice stalled
    at t = 0 when that speed was ~1e150 (r0 = 1e-150), and the budget ends a run that would not finish."""
    f = _Budget(_inside(rhs, lo, hi), r0)
    speed = float(np.max(np.abs(f(lo, y0))))
    first = min(hi - lo, 1e-6 / speed) if speed > 0 and np.isfinite(speed) else None
    return solve_ivp(f, (lo, hi), y0, method=_METHOD, first_step=first, **kw)


def equiangular(scheme, beta, n, t, r0=1.0, alpha=1.0, tau=None, *, attention="softmax", rho0=0.0,
                rtol=1e-12, atol=1e-14):
    """ρ(t) = ⟨θ_i, θ_j⟩ and the common radius r(t) of n tokens started equiangular.

    Parameters
    ----------
    scheme : str
        A continuous scheme of :data:`meanfield.SCHEMES` (anGPT, layer-only, is refused).
    beta : float
        β ≥ 0 (Q = K = V = I).
    n : int
        Number of tokens, n ≥ 2.
    t : array_like, shape (m,)
        Strictly increasing times ≥ 0 at which to return the solution.
    r0 : float
        Initial radius r(0) > 0 (schemes with a radius; the others take only the default 1, as in
        :class:`Model`).
    alpha : float or callable
        nGPT step α_t > 0.
    tau : float, optional
        Mix-LN switch time (required for "mix-ln").
    attention : {"softmax", "unnormalized"}
        SA, or USA (division by the constant n).
    rho0 : float
        Initial inner product, in [−1/(n−1), 1) (0: an orthonormal start).
    rtol, atol : float
        Tolerances of ``scipy.integrate.solve_ivp`` (LSODA, which turns implicit near the collapse
        ρ → 1, so long times cost little); rtol in [2.22e-14, 1) (100 ulp: LSODA goes no lower), atol > 0.
        They apply to the state (ρ, log r): the radius has the relative accuracy of log r's absolute one,
        about atol + rtol·|log r| (7e-10 at rtol = 1e-12 for USA at β = 709, where r reaches e^703).

    Returns
    -------
    rho : ndarray, shape (m,)
        ⟨θ_i, θ_j⟩ at the times t (dimensionless).
    r : ndarray, shape (m,)
        The common radius (constant r0 for schemes without a radius).

    Raises
    ------
    UnsupportedModelError
        For layer-only schemes (anGPT).
    """
    t = increasing_times("t", t)
    if t[0] < 0:
        raise ValueError(f"`t` must be ≥ 0; got t[0]={t[0]!r}.")
    sch, model, rhs, n, rho0, r0, rtol, atol = _setup(scheme, beta, n, r0, alpha, tau, attention, rho0, rtol, atol)

    # integrate piecewise, split at the scheme's switch time (Mix-LN τ), where the velocity jumps
    cuts = _cuts(sch, model, t[-1])
    out = np.empty((2, t.size))
    y0 = [rho0, np.log(r0)]
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        sel = (t >= lo) & ((t < hi) if hi < cuts[-1] else (t <= hi))
        if hi == lo:
            out[:, sel] = np.array(y0)[:, None]
            continue
        te = t[sel]
        last = hi == cuts[-1]
        if not last:
            te = np.append(te, hi)      # the state at the cut starts the next piece
        sol = _solve(rhs, lo, hi, y0, r0, t_eval=te, rtol=rtol, atol=atol)
        if not sol.success:
            raise ConvergenceError(f"equiangular ODE failed on [{lo}, {hi}]: {sol.message}")
        out[:, sel] = sol.y[:, :int(sel.sum())]
        y0 = list(sol.y[:, -1])
    return out[0], np.exp(out[1])


def equiangular_time(scheme, beta, n, rho, r0=1.0, alpha=1.0, tau=None, *, attention="softmax", rho0=0.0,
                     t_max=1e6, rtol=1e-12, atol=1e-14):
    """The first times at which the equiangular inner product ρ(t) reaches the levels ``rho``.

    ρ(t) is that of :func:`equiangular` (same parameters).  It increases monotonically (dρ/dt ≥ 0 on
    [−1/(n−1), 1)), so each level is reached at most once; the crossing is located on the dense output of
    the solver's step that crosses it by Brent's method, and the integration stops at the highest level.

    Parameters
    ----------
    scheme, beta, n, r0, alpha, tau, attention, rho0, rtol, atol
        As in :func:`equiangular`.
    rho : float or array_like
        Levels in (rho0, 1).
    t_max : float
        Give up at this time (> 0): levels not reached by then get ``inf``.

    Returns
    -------
    float or ndarray
        The hitting times (shape of ``rho``).
    """
    sch, model, rhs, n, rho0, r0, rtol, atol = _setup(scheme, beta, n, r0, alpha, tau, attention, rho0, rtol, atol)
    t_max = positive_float("t_max", t_max)
    levels = real_array("rho", rho, allow_bool=False)   # np.asarray(float) raised "could not convert", naming nothing
    flat = np.atleast_1d(levels).ravel()
    if flat.size == 0 or not np.all(np.isfinite(flat)) or np.any(flat <= rho0) or np.any(flat >= 1):
        raise ValueError(f"`rho` must be levels in (rho0, 1) = ({rho0:.6g}, 1); got rho={rho!r}.")
    out = np.full(flat.shape, np.inf)
    y0 = [rho0, np.log(r0)]
    cuts = _cuts(sch, model, t_max)
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        y0, done = _hitting_times(rhs, lo, hi, y0, r0, flat, out, rtol, atol)
        if done:
            break
    return float(out[0]) if levels.ndim == 0 else out.reshape(levels.shape)


def _hitting_times(rhs, lo, hi, y0, r0, levels, out, rtol, atol):
    """Step the ODE on [lo, hi] and set ``out[i]`` to the first time ρ reaches ``levels[i]`` (those still inf);
    return (the state where it stopped, whether every level is reached).

    The steps are taken here rather than by solve_ivp's events, whose root finder needs the dense output to
    change sign over the step: near a USA collapse at large β (speed ~e^{βρ}) ρ crosses most of (0, 1) within a
    step shorter than one ulp of t, and solve_ivp raised "f(a) and f(b) must have different signs" (β ≥ 40).  Here
    such a crossing is at the step's end, which is the hitting time to float64."""
    from scipy.integrate import LSODA
    from scipy.optimize import brentq

    f = _Budget(_inside(rhs, lo, hi), r0)
    speed = float(np.max(np.abs(f(lo, y0))))
    first = min(hi - lo, 1e-6 / speed) if speed > 0 and np.isfinite(speed) else None
    solver = LSODA(f, lo, y0, hi, first_step=first, rtol=rtol, atol=atol)
    top = float(levels.max())
    while solver.status == "running":
        t_old, rho_old = solver.t, float(solver.y[0])
        message = solver.step()
        if solver.status == "failed":
            raise ConvergenceError(f"equiangular ODE failed on [{lo}, {hi}]: {message}")
        t_new, rho_new = solver.t, float(solver.y[0])
        crossed = np.flatnonzero(np.isinf(out) & (levels > rho_old) & (levels <= rho_new))
        dense = solver.dense_output() if crossed.size and t_new > t_old else None
        for i in crossed:
            out[i] = _crossing(dense, t_old, rho_old, t_new, rho_new, float(levels[i]), brentq)
        if rho_new >= top:
            return list(solver.y), True
    return list(solver.y), False


def _crossing(dense, t_old, rho_old, t_new, rho_new, level, brentq) -> float:
    """The time in [t_old, t_new] at which ρ reaches ``level``, ρ(t_old) < level ≤ ρ(t_new): the root of the step's
    dense output, t_new for a step of zero length in float64, and the step's chord where the dense output does
    not bracket the level (it differs from the step's ends by its own error)."""
    if dense is None:
        return float(t_new)
    g_old, g_new = dense(t_old)[0] - level, dense(t_new)[0] - level
    if g_old < 0 < g_new:
        return float(brentq(lambda s: dense(s)[0] - level, t_old, t_new, xtol=1e-14, rtol=4 * np.finfo(float).eps))
    if g_new == 0:
        return float(t_new)
    return float(t_old + (level - rho_old) / (rho_new - rho_old) * (t_new - t_old))

