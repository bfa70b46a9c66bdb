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

Writing dρ/dt = κ (1 − ρ), κ = (2/s) b (1 + (n−1)ρ) is the rate at which 1 − ρ decays.  Under USA it grows like
e^{βρ} (Post-LN: κ → 2e^β as ρ → 1), so at large β the collapse crosses most of (0, 1) within one ulp of t (from
ρ ≈ 0.4 at β = 100), which no integration in t resolves.  The ODE is therefore integrated in t while it can be,
and, once 1/κ falls below 2^30 ulps of t or 1 − ρ below 1e-3, in the arc length σ, dσ = (1 + κ + |d log r/dt|) dt,
of the state (s, log r, t) with s = −log(1 − ρ): every rate there is in [−1, 1], the collapse is a stretch of
σ ~ 40, and 1 − ρ = e^{−s} keeps a relative accuracy in the tail (in ρ its error was absolute, ~atol: ρ > 1).  When
ρ rounds to 1 in float64 (1 − ρ < 2^-54; ρ never decreases), or a step in t reaches 1 while 1/κ is below 2^30 ulps
of t, the integration goes on in t from ρ = 1 exactly, an equilibrium, with the radius alone.  Each piece between
the scheme's switch times (Mix-LN: [0, τ] and [τ, ∞)) runs on its own clock t − τ, whose ulps are those of t for the
first piece and finer near τ for the next: there USA's Pre-LN radius leaves r0 at the rate e^β/r0, a layer of width
~r0 e^{−β}, below one ulp of τ from β ≈ 37 (r0 = 1, τ = 0.5).
"""
from __future__ import annotations

import numpy as np
from scipy.integrate import LSODA

from .._errors import ConvergenceError, UnsupportedModelError, warn
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
# against DOP853 at 1e-14, six schemes, β = 0.5..8, n = 3..50, t ≤ 30).  It is stepped here (scipy's LSODA class)
# so that the integration can change its independent variable mid-way (:func:`_steps`).


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


#: log of float64's largest value (709.78): a radius whose log passes it is beyond float64
_LOG_MAX = float(np.log(np.finfo(float).max))

#: float64's smallest normal number (2.2e-308), the smallest r0 taken
_TINY = float(np.finfo(float).tiny)


def _times_exp(x, e):
    """x·e^e, taken as sign(x)·e^{log|x| + e}: finite where e^e alone underflows or overflows and the product does
    not."""
    x = float(x)
    if x == 0 or not np.isfinite(x):
        return x * np.exp(e) if x != 0 else 0.0
    return float(np.copysign(np.exp(np.log(abs(x)) + e), x))


def _setup(scheme, beta, n, r0, alpha, tau, attention, rho0, rtol=1e-12, atol=1e-14):
    """Validate the common arguments; return (scheme row, model, (rhs(t, [ρ, log r]), rates(t, ρ, log r)), n, ρ0, r0,
    rtol, atol), rates being (κ, d log r/dt) with dρ/dt = κ(1 − ρ), the
    tolerances as floats (passed on as given, atol=10**20 reached LSODA as an object array and crashed the
    interpreter with a segmentation fault)."""
    sch = get_scheme(scheme)
    if not sch.continuous:
        raise UnsupportedModelError(f"scheme={sch.name!r} is defined only as a discrete layer map; "
                                    "the equiangular ODE needs a continuous-time scheme.")
    beta = positive_float("beta", beta, allow_zero=True)
    n = nonneg_int("n", n, minimum=2)
    r0 = check_r0(sch, r0)      # as Model and the backends: r0 ≠ 1 is refused for a scheme without a radius
    if r0 < _TINY:
        # r = e^{log r} is subnormal there, with fewer than 53 bits, and the rates ~1/r0 of Pre-, Peri- and Mix-LN pass
        # float64 (it stopped at the first step naming "unnormalized attention near beta = 709.78" for SA)
        raise ValueError(f"`r0` must be ≥ {_TINY!r} (float64's smallest normal number) for the equiangular ODE; "
                         f"got r0={r0!r}.")
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

    def parts(time, rho, log_r, r=None):
        r = np.exp(log_r) if r is None else r
        _, b, radial, norm = equiangular_attention(beta, n, rho, attention)
        s = sch.speed(np.asarray(r), np.asarray(norm), time, model)
        dr = 0.0 if sch.radial is None else sch.radial(np.asarray(radial), np.asarray(norm), np.asarray(r), time, model)
        return r, b, norm, s, dr

    def over_s(v, s, r, norm, time):
        # v / s; Peri-LN's r‖A‖, nGPT's ‖A‖/α overflow float64 (USA near β = 709.78) where v / s is finite: it read 0
        out = v / s
        if np.isposinf(s):
            scaled = over_overflowed_speed(sch, np.reshape(v, (1, 1)), s, np.reshape(r, 1), np.reshape(norm, 1),
                                           time, model)
            out = out if scaled is None else scaled[0, 0]
        return out

    def beyond(time, rho, log_r):
        """(b/s, d log r/dt) where r = e^{log r} is beyond float64 (log r > :data:`_LOG_MAX`).

        Read from the rows at r = 1 and 2: every row with a radius has a speed s ∝ r^k, k = 0 or 1, and a radial law
        free of r, so b/s = (b/s)(1)·e^{−k log r} and d log r/dt = (dr/dt)(1)·e^{−log r}, products taken in logs
        (e^{−log r} alone underflows where (dr/dt)(1) ~ e^β keeps the product finite).  Evaluated at r = inf the
        rows gave b/s = 0 and d log r/dt = 0: ρ and r froze (Pre-LN USA β = 709.7: ρ stopped at 8.5775e-306)."""
        _, b, norm, s1, dr1 = parts(time, rho, 0.0, 1.0)
        _, _, _, s2, dr2 = parts(time, rho, 0.0, 2.0)
        power = 1 if s2 == 2 * s1 else 0 if s2 == s1 else None
        if power is None or dr2 != dr1:
            raise ConvergenceError(f"the equiangular radius passed float64 (log r = {log_r:.6g} at t={time:.6g}) for "
                                   f"scheme={sch.name!r}, whose speed or radial law does not scale with r as the "
                                   "ODE continues it there (s ∝ r or 1, radial law free of r).")
        return _times_exp(over_s(b, s1, 1.0, norm, time), -power * log_r), _times_exp(dr1, -log_r)

    def rhs(time, y):
        # the state is (ρ, log r): with r0 = 1e-150 the Jacobian entry ∂ρ'/∂r ~ ρ'/r overflowed and LSODA never
        # returned; ∂ρ'/∂log r = −ρ' (Pre-LN) stays finite, and atol is then a relative accuracy of r
        rho, log_r = y
        if log_r > _LOG_MAX:
            b_over_s, dlog_r = beyond(time, rho, log_r)
            return [float(2.0 * b_over_s * (1.0 - rho) * (1.0 + (n - 1) * rho)), float(dlog_r)]
        r, b, norm, s, dr = parts(time, rho, log_r)
        drho = over_s(2.0 * b * (1.0 - rho) * (1.0 + (n - 1) * rho), s, r, norm, time)
        if np.isposinf(dr / r) and np.isfinite(dr) and rho <= 1.0:
            # it read "non-finite … a step overshot a collapse" (Mix-LN after τ, USA β = 709, r0 = 1e-3)
            raise ConvergenceError(f"the equiangular radius's rate d log r/dt = (dr/dt)/r overflows float64 at "
                                   f"t={time:.6g} (dr/dt = {float(dr):.4g}, r = {float(r):.4g}, r0={r0:g}: unnormalized "
                                   "attention moves r at ~e^beta, so the rate ~e^beta/r passes 1.8e308 as beta nears "
                                   "709.78 or as r shrinks). Ask for a smaller beta or a larger r0.")
        return [float(drho), float(dr / r)]

    def rates(time, rho, log_r):
        """(κ, d log r/dt) with dρ/dt = κ (1 − ρ): κ, finite at ρ = 1, is the rate at which 1 − ρ decays."""
        if log_r > _LOG_MAX:
            b_over_s, dlog_r = beyond(time, rho, log_r)
            return float(2.0 * b_over_s * (1.0 + (n - 1) * rho)), float(dlog_r)
        r, b, norm, s, dr = parts(time, rho, log_r)
        # b / s first: 2b(1 + (n−1)ρ) itself overflows where s does (Peri-LN, USA β = 709.7), and inf/inf read NaN
        return float(2.0 * over_s(b, s, r, norm, time) * (1.0 + (n - 1) * rho)), float(dr / r)

    return sch, model, (rhs, rates), n, rho0, r0, rtol, atol


def rho_rate(scheme, beta, n, t, rho, r=1.0, alpha=1.0, tau=None, attention="softmax") -> float:
    """dρ/dt of the equiangular ODE at the state (ρ, r) and time t (the right-hand side :func:`equiangular`
    integrates, whose state is (ρ, log r))."""
    _, _, (rhs, _), *_ = _setup(scheme, beta, n, 1.0, alpha, tau, attention, 0.0)
    return rhs(t, [rho, np.log(r)])[0]


def _cuts(sch, model, t_end):
    """[0, t_end] split at the scheme's switch time (Mix-LN τ), where the velocity jumps."""
    cuts = [0.0]
    if sch.uses_tau and 0.0 < model.tau < t_end:
        cuts.append(model.tau)
    cuts.append(float(t_end))
    return cuts


def _inside(rhs, lo, hi):
    """rhs on the piece [lo, hi] as a function of the piece's own clock x = t − lo.

    Evaluated strictly inside the piece, so that a jump at its ends is seen from the correct side.  The clock starts
    at 0 so that its ulps are those of x, not of lo: after Mix-LN's τ a USA radius moves at e^β/r0 (dr/dt = e^β at
    ρ = 1), a layer of width r0 e^{−β} far below one ulp of τ, in which LSODA took 95 steps of zero length in t
    (τ + h = τ) and log r came out 3.06 too high at the next float after τ (β = 50, r0 = 2); in x it is resolved."""
    first, last = np.nextafter(lo, hi), np.nextafter(hi, lo)
    return lambda x, y: rhs(min(max(lo + x, first), last), y)


_MAX_EVALUATIONS = 1_000_000    # ~10 s; ordinary runs take 10²–10⁴, a collapse from r0 = 1e-150 ~7·10⁴, 1e-300 ~1.3·10⁵


class _Budget:
    """A right-hand side that stops the integration with a ConvergenceError after _MAX_EVALUATIONS calls.

    ``clock(x, y)`` is the time t at the solver's abscissa x and state y (x itself, or the state's t in σ)."""

    def __init__(self, f, r0, clock=lambda x, y: x):
        self.f, self.r0, self.clock, self.calls = f, r0, clock, 0

    def __call__(self, x, y):
        self.calls += 1
        if self.calls > _MAX_EVALUATIONS:
            raise ConvergenceError(f"the equiangular ODE took over {_MAX_EVALUATIONS:,} evaluations and stopped at "
                                   f"t={self.clock(x, y):.6g}: its time scale is far below the span asked for (with "
                                   f"r0={self.r0:g} a Pre-LN-like speed r collapses the tokens in a time ~r0). Ask for "
                                   "a shorter span, or a larger r0 or rtol.")
        with np.errstate(all="ignore"):
            dy = self.f(x, y)
        if not np.all(np.isfinite(dy)):
            raise ConvergenceError(f"the equiangular ODE became non-finite at t={self.clock(x, y):.6g} (state "
                                   f"{list(y)}): a step overshot a collapse whose time scale is below the "
                                   f"integrator's resolution in t (r0={self.r0:g}; a Pre-LN-like speed 1/r collapses "
                                   "the tokens in a time ~r0). Ask for a larger r0 or a shorter span; "
                                   "equiangular_time gives the time of the collapse.")
        return dy


def _jacobian(f):
    """∂f/∂y of the state (ρ, log r) by forward differences of relative size √ε (backward in ρ where ρ + h passes 1).

    Given to LSODA in place of its own difference quotients, whose increment is 1000·|h|·ε·n·max_i |f_i|/w_i
    (w_i = rtol·|y_i| + atol): the rates ~1/r0 of Pre-LN from r0 = 1e-297 (SA, β = 2, n = 5, default tolerances;
    1e-295 ran) make that norm overflow, the increment is inf, and LSODA's first stiff step (after ~95 steps) asked
    for the rate at ρ = inf ("became non-finite at t=6.56e-298").  These increments depend on y alone; the Jacobian only steers the corrector's
    Newton iteration, the error control is LSODA's."""
    def jac(x, y):
        y = np.asarray(y, dtype=float)
        f0, out = np.asarray(f(x, y), dtype=float), np.empty((y.size, y.size))
        for j in range(y.size):     # two columns
            h = np.sqrt(np.finfo(float).eps) * max(abs(y[j]), 1.0)
            h = -h if j == 0 and y[0] + h > 1.0 else h
            shifted = y.copy()
            shifted[j] += h
            out[:, j] = (np.asarray(f(x, shifted), dtype=float) - f0) / (shifted[j] - y[j])
        return out
    return jac


def _first_step(f, lo, hi, y0):
    """The first step, sized from the initial speed: LSODA's own choice stalled at t = 0 when that speed was ~1e150
    (r0 = 1e-150)."""
    speed = float(np.max(np.abs(f(lo, y0))))
    return min(hi - lo, 1e-6 / speed) if speed > 0 and np.isfinite(speed) else None


#: κ·|t| (κ the rate of 1 − ρ, dρ/dt = κ(1 − ρ)) from which the integration in t hands over to the one in σ: 1/κ
#: is then below 2^30 ulps of t.  LSODA's steps there are ~4e-4/κ (rtol 1e-12), 2^19 ulps; at USA β = 100 it went
#: on to steps of 1 ulp at ρ ≈ 0.3 and then overshot ρ = 1 (ρ = 2131 at t = 0.0243, non-finite), at β = 700 from
#: ρ ≈ 0.05.  Cases that never reach it (softmax attention, κ ≤ 2 for Post-LN, until t ≈ 2e6) keep their path.
_SWITCH = 2.0 ** -30 / np.finfo(float).eps

#: 1 − ρ below which the integration goes on in σ, whose state s = −log(1 − ρ) keeps 1 − ρ to a relative accuracy: in ρ
#: itself atol bounded its absolute error, and the tail of Post-LN (SA, β = 2, n = 5) read ρ(20) = 1 + 1.2e-13 > 1 and
#: ρ(40) = 1 − 4.4e-15 < ρ(20), where 1 − ρ ~ e^{−2t}, 1e-17 and 2e-35, round to ρ = 1
_TAIL = 1e-3

def _in_the_tail(t, y, rtol) -> bool:
    """Whether 1 − ρ is below :data:`_TAIL` at the state y = (ρ, log r), and σ's time, weighted by rtol·t alone
    (:func:`_arc_steps`), has a normal weight there: from r0 = 1e-300 (Pre-LN) the tail starts at t ~ 7e-299, where
    rtol·t is subnormal and LSODA stopped ("Unexpected istate")."""
    return bool(y[0] > 1.0 - _TAIL and rtol * abs(t) > 2.0 ** 20 * _TINY)


#: σ bound given to LSODA in σ (the loop ends when t reaches the piece's end or ρ rounds to 1)
_SIGMA_MAX = 1e300


def _outruns_the_clock(rates, t, y) -> bool:
    """Whether 1/κ at the state y = (ρ, log r) and time t is below 2^30 ulps of t (:data:`_SWITCH`), ``rates(t, y)``
    and t on the piece's clock (:func:`_inside`)."""
    with np.errstate(all="ignore"):
        kappa, _ = rates(t, (float(y[0]), float(y[1])))
    return bool(kappa * abs(t) >= _SWITCH)


class _TimeStep:
    """One LSODA step in the piece's clock x = t − lo (:func:`_inside`; ``t_old``, ``t_new`` and every time here are
    on that clock).  ``at(times)`` is (ρ, log r) at times in [t_old, t_new] from the step's dense output,
    ``time_of(level)`` the time ρ reaches a level in (ρ_old, ρ_new].  Read it before the solver steps again."""

    def __init__(self, solver, t_old, y_old):
        self.solver, self.t_old, self.t_new, self.y_new = solver, t_old, solver.t, solver.y
        self.rho_old, self.rho_new = float(y_old[0]), float(solver.y[0])
        self.log_r_old, self.log_r_new = float(y_old[1]), float(solver.y[1])

    def at(self, times):
        return self.solver.dense_output()(times)

    def time_of(self, level):
        dense = self.solver.dense_output() if self.t_new > self.t_old else None
        return _crossing(dense, self.t_old, self.rho_old, self.t_new, self.rho_new, level)

    def time_of_log_r(self, level):
        """The time log r reaches a level in (log r_old, log r_new] (log r never decreases: ⟨θ, A⟩ ≥ 0)."""
        dense = self.solver.dense_output() if self.t_new > self.t_old else None
        return _crossing(dense, self.t_old, self.log_r_old, self.t_new, self.log_r_new, level, 1)

    def end(self, hi):
        return list(self.y_new)      # the step ends at hi


class _ArcStep:
    """One LSODA step in σ of z = (s, log r, x), s = −log(1 − ρ), x = t − lo; as :class:`_TimeStep`, x located on
    the dense output (t_new ≥ hi − lo may pass the piece's end)."""

    def __init__(self, solver, z_old):
        self.dense, self.z_old, self.z_new = solver.dense_output(), z_old, solver.y
        self.sigma_old, self.sigma_new = solver.t_old, solver.t
        self.t_old, self.t_new = float(z_old[2]), float(solver.y[2])
        self.rho_old, self.rho_new = -np.expm1(-z_old[0]), -np.expm1(-solver.y[0])
        self.log_r_old, self.log_r_new = float(z_old[1]), float(solver.y[1])

    def _state(self, sigma):
        z = self.dense(np.asarray(sigma, dtype=float))
        return np.array([-np.expm1(-z[0]), z[1]]), z[2]

    def at(self, times):
        sigma = [_crossing(self.dense, self.sigma_old, self.t_old, self.sigma_new, self.t_new, float(time), 2)
                 for time in times]
        return self._state(sigma)[0]

    def time_of(self, level):
        sigma = _crossing(self.dense, self.sigma_old, self.z_old[0], self.sigma_new, self.z_new[0],
                          -np.log1p(-level), 0)
        return float(np.clip(self._state(sigma)[1], self.t_old, self.t_new))

    def time_of_log_r(self, level):
        sigma = _crossing(self.dense, self.sigma_old, self.log_r_old, self.sigma_new, self.log_r_new, level, 1)
        return float(np.clip(self._state(sigma)[1], self.t_old, self.t_new))

    def end(self, hi):
        return list(self.at([hi])[:, 0])


def _steps(rhs, rates, lo, hi, y0, r0, rtol, atol):
    """The steps of the ODE on the piece [lo, hi] from the state y0 = (ρ, log r) at lo, the last one ending at or
    past hi; their times are on the piece's clock x = t − lo (:func:`_inside`), written t below.

    In t (LSODA, as :func:`scipy.integrate.solve_ivp` steps it) until the collapse outruns the clock
    (:data:`_SWITCH`); then in σ, dσ = (1 + κ + |d log r/dt|) dt, of z = (s, log r, t) with s = −log(1 − ρ), whose
    rates ds/dσ = κ/(1 + κ + |·|) etc. are all in [−1, 1] however fast the collapse: a USA collapse at large β, which
    crosses (0, 1) within one ulp of t, is there a step of σ ~ 40 while t moves by ~e^{−β}.  When ρ rounds to 1 in
    float64 (s ≥ 54 ln 2; ρ never decreases), or a step in t reaches ρ ≥ 1 while the collapse outruns the clock,
    the rest is integrated in t from ρ = 1 exactly, an equilibrium of the right-hand side: the radius alone."""
    span = hi - lo
    f = _Budget(_inside(rhs, lo, hi), r0, clock=lambda x, y: lo + x)
    piece_rates = _inside(lambda time, y: rates(time, *y), lo, hi)
    start, y = 0.0, list(y0)
    while True:
        solver = LSODA(f, start, y, span, first_step=_first_step(f, start, span, y), rtol=rtol, atol=atol,
                       jac=_jacobian(f))
        while solver.status == "running":
            t_old, y_old = solver.t, solver.y
            message = solver.step()
            if solver.status == "failed":
                raise ConvergenceError(f"equiangular ODE failed on [{lo}, {hi}]: {message}")
            yield _TimeStep(solver, t_old, y_old)
            if solver.status != "running":
                return
            if y[0] < 1.0 and (_in_the_tail(solver.t, solver.y, rtol)
                               or _outruns_the_clock(piece_rates, solver.t, solver.y)):
                break
        else:
            return
        if solver.y[0] >= 1.0:
            # collapsed: ρ = 1 is kept exactly by a fresh start (USA β = 100 from ρ0 = 0.9 reached ρ = 1 near t = 1e-40;
            # LSODA's history then carried ρ to 1 + 7e-15 at t = 5e-17, where κ = 5e43 made the next step diverge:
            # non-finite at t = 2.9e-16)
            start, y = solver.t, [1.0, float(solver.y[1])]
            continue
        tail = yield from _arc_steps(piece_rates, solver.t, solver.y, lo, hi, r0, rtol, atol)
        if tail is None:
            return
        start, y = tail


def _arc_steps(rates, t0, y0, lo, hi, r0, rtol, atol):
    """:func:`_steps` in σ from the state y0 at t0, ``rates(x, (ρ, log r))`` and every time on the piece's clock
    x = t − lo; return (x, [1, log r]) where ρ rounds to 1 before hi, else None."""

    def arc(_, z):
        s, log_r, time = z
        kappa, dlog_r = rates(time, (-np.expm1(-s), log_r))
        if np.isposinf(kappa):      # 2κ ~ 2e^β overflows from β = 709.09 (USA): dt/dσ ~ 1/κ is then below any ulp
            return [1.0, 0.0 if np.isfinite(dlog_r) else np.nan, 0.0]
        lam = 1.0 + kappa + abs(dlog_r)
        return [kappa / lam, dlog_r / lam, 1.0 / lam]

    f = _Budget(arc, r0, clock=lambda sigma, z: lo + z[2])
    z0 = [-np.log1p(-float(y0[0])), float(y0[1]), float(t0)]
    # t ≥ t0 > 0 (κ·|t| ≥ _SWITCH) gets a purely relative tolerance: atol on it ended the collapse from ρ0 = 0.5 at
    # USA β = 50 (t ~ 1e-12) 1.7e-8 early
    solver = LSODA(f, 0.0, z0, _SIGMA_MAX, first_step=_first_step(f, 0.0, _SIGMA_MAX, z0), rtol=rtol,
                   atol=[atol, atol, 0.0])
    while solver.status == "running":
        z_old = solver.y
        message = solver.step()
        if solver.status == "failed":
            raise ConvergenceError(f"equiangular ODE failed on [{lo}, {hi}] (in σ, from t={lo + t0:.6g}): {message}")
        step = _ArcStep(solver, z_old)
        yield step
        if step.t_new >= hi - lo:
            return None
        if step.rho_new == 1.0:
            return step.t_new, [1.0, float(step.z_new[1])]
    raise ConvergenceError(f"equiangular ODE did not reach t={hi} in σ ≤ {_SIGMA_MAX:g} (from t={lo + t0:.6g}).")


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
        Initial radius r(0) ≥ 2.2250738585072014e-308, float64's smallest normal number (schemes with a radius; the
        others take only the default 1, as in :class:`Model`).  Pre-, Peri- and Mix-LN (after τ) move ρ and log r
        at rates ~1/r, so from r0 ≪ 1 their solution is spread over the decades of t from ~r0 on: each costs a few
        hundred evaluations at rtol = 1e-12 (1.3·10⁵ in all from r0 = 1e-300, a few seconds).
    alpha : float or callable
        nGPT step α_t > 0.
    tau : float, optional
        Mix-LN switch time (required for "mix-ln").
    attention : {"softmax", "unnormalized"}
        SA, or USA (division by the constant n).
    rho0 : float
        Initial inner product, in [−1/(n−1), 1) (0: an orthonormal start).
    rtol, atol : float
        Tolerances of scipy's LSODA (which turns implicit near the collapse ρ → 1, so long times cost
        little); rtol in [2.22e-14, 1) (100 ulp: LSODA goes no lower), atol > 0.  They apply to the state
        (ρ, log r): the radius has the relative accuracy of log r's absolute one, about atol + rtol·|log r|
        (7e-10 at rtol = 1e-12 for USA at β = 709, where r reaches e^703).  In the arc length of a fast
        collapse (Notes) they apply to s = −log(1 − ρ), log r, and rtol alone to t.

    Returns
    -------
    rho : ndarray, shape (m,)
        ⟨θ_i, θ_j⟩ at the times t (dimensionless).  1 exactly once 1 − ρ < 2^-54 (float64 holds no closer value):
        a USA collapse at large β (1 − ρ decays at the rate 2e^β for Post-LN) gives 1 from just after its time on.
    r : ndarray, shape (m,)
        The common radius (constant r0 for schemes without a radius).  ``inf`` from the time it passes float64's
        largest value 1.8e308 on (USA at β near 709.78: Pre-LN's r ≈ e^β t/n, Mix-LN's r0 + e^β (t − τ) after a
        collapse); the integration goes on in log r, so ρ stays correct there (Pre-LN's ρ moves with log r).

    Warns
    -----
    MeanfieldWarning
        Once, naming the time at which r leaves float64, when some returned r is ``inf``.

    Raises
    ------
    UnsupportedModelError
        For layer-only schemes (anGPT).
    ConvergenceError
        When the integration cannot go on (over 10⁶ evaluations: the ODE's time scale far below the span asked for;
        d log r/dt beyond float64, USA near β = 709.78 with r < 1).

    Notes
    -----
    Where ρ moves faster than t can resolve (USA at large β: the collapse crosses (0.4, 1) within one ulp of t at
    β = 100), ρ(t) is a step of width below one ulp, and its value at a time within the step is only as good as the
    time: the errors are those of the hitting times, ~1e-11·t at rtol = 1e-12 (module docstring: the integration
    then runs in an arc length in which the collapse is resolved).
    """
    t = increasing_times("t", t)
    if t[0] < 0:
        raise ValueError(f"`t` must be ≥ 0; got t[0]={t[0]!r}.")
    sch, model, (rhs, rates), n, rho0, r0, rtol, atol = _setup(scheme, beta, n, r0, alpha, tau, attention, rho0,
                                                               rtol, atol)

    # integrate piecewise, split at the scheme's switch time (Mix-LN τ), where the velocity jumps
    cuts = _cuts(sch, model, t[-1])
    out = np.empty((2, t.size))
    y0, t_out = [rho0, np.log(r0)], None       # t_out: the time r leaves float64
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        sel = (t >= lo) & ((t < hi) if hi < cuts[-1] else (t <= hi))
        if hi == lo:
            out[:, sel] = np.array(y0)[:, None]
            continue
        te = t[sel]
        last = hi == cuts[-1]
        if not last:
            te = np.append(te, hi)      # the state at the cut starts the next piece
        # at lo itself the state is y0 (a first step below one ulp of lo, USA Pre-LN after Mix-LN's τ, ended at lo
        # when the steps were taken in t, and its end was returned there: r(τ) = 2.000002 for r0 = 2 at β = 100)
        vals, done = np.empty((2, te.size)), int(np.searchsorted(te, lo, side="right"))
        vals[:, :done] = np.reshape(y0, (2, 1))
        xe = te - lo        # the steps' clock (_inside); exact from lo to 2·lo, else rounded as t itself is
        for step in _steps(rhs, rates, lo, hi, y0, r0, rtol, atol):
            if t_out is None and step.log_r_old <= _LOG_MAX < step.log_r_new:
                t_out = lo + step.time_of_log_r(_LOG_MAX)
            upto = int(np.searchsorted(xe, step.t_new, side="right"))      # as solve_ivp's t_eval
            if upto > done:
                vals[:, done:upto] = step.at(xe[done:upto])
                done = upto
        out[:, sel] = vals[:, :int(sel.sum())]
        y0 = list(vals[:, -1])
    with np.errstate(over="ignore"):
        r = np.exp(out[1])
    if np.any(np.isposinf(r)):
        t_out = t[np.isposinf(r)][0] if t_out is None else t_out
        warn(f"the equiangular radius leaves float64 (r > {np.finfo(float).max:.4g}) at t={t_out:.10g} and is "
             f"returned as inf from there on (log r reaches {out[1].max():.10g}); rho is integrated on with log r.")
    return out[0], r


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
    sch, model, (rhs, rates), n, rho0, r0, rtol, atol = _setup(scheme, beta, n, r0, alpha, tau, attention, rho0,
                                                               rtol, atol)
    t_max = positive_float("t_max", t_max)
    levels = real_array("rho", rho, allow_bool=False)   # np.asarray(float) raised "could not convert", naming nothing
    flat = np.atleast_1d(levels).ravel()
    if flat.size == 0 or not np.all(np.isfinite(flat)) or np.any(flat <= rho0) or np.any(flat >= 1):
        raise ValueError(f"`rho` must be levels in (rho0, 1) = ({rho0:.6g}, 1); got rho={rho!r}.")
    out = np.full(flat.shape, np.inf)
    y0 = [rho0, np.log(r0)]
    cuts = _cuts(sch, model, t_max)
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        y0, done = _hitting_times(rhs, rates, lo, hi, y0, r0, flat, out, rtol, atol)
        if done:
            break
    return float(out[0]) if levels.ndim == 0 else out.reshape(levels.shape)


def _hitting_times(rhs, rates, lo, hi, y0, r0, levels, out, rtol, atol):
    """Step the ODE on [lo, hi] (:func:`_steps`) and set ``out[i]`` to the first time ρ reaches ``levels[i]`` (those
    still inf); return (the state at hi, whether every level is reached).

    The steps are taken here rather than by solve_ivp's events, whose root finder needs the dense output to
    change sign over the step: near a USA collapse at large β (speed ~e^{βρ}) ρ crosses most of (0, 1) within a
    step shorter than one ulp of t, and solve_ivp raised "f(a) and f(b) must have different signs" (β ≥ 40)."""
    top, step = float(levels.max()), None
    for step in _steps(rhs, rates, lo, hi, y0, r0, rtol, atol):
        crossed = np.flatnonzero(np.isinf(out) & (levels > step.rho_old) & (levels <= step.rho_new))
        for i in crossed:
            out[i] = lo + step.time_of(float(levels[i]))
        if step.rho_new >= top:
            return None, True
    return step.end(hi - lo), False


def _crossing(dense, x_old, g_old, x_new, g_new, level, k=0) -> float:
    """The abscissa in [x_old, x_new] at which component ``k`` of the step's solution, g_old < level ≤ g_new at its
    ends, reaches ``level``: the root of the step's dense output, x_new for a step of zero length in float64, and the
    step's chord where the dense output does not bracket the level (it differs from the step's ends by its own
    error)."""
    from scipy.optimize import brentq

    if dense is None:
        return float(x_new)
    d_old, d_new = dense(x_old)[k] - level, dense(x_new)[k] - level
    if d_old < 0 < d_new:
        # relative only: xtol = 1e-14 ended the search at once for a hitting time of 5e-41 (1.4e-4 off)
        return float(brentq(lambda x: dense(x)[k] - level, x_old, x_new, xtol=np.finfo(float).tiny,
                            rtol=4 * np.finfo(float).eps))
    if d_new == 0:
        return float(x_new)
    return float(x_old + (level - g_old) / (g_new - g_old) * (x_new - x_old))
