"""scipy's BDF with a Newton iteration that accepts its rounding floor, on differences that stand for the step taken.

scipy's ``solve_bdf_system`` declares the simplified Newton iteration of a BDF step diverged as soon as a correction
is not smaller than the one before (rate ≥ 1), however small both are, and the step is then halved.  Where the
velocity's rounding error does not vanish with the velocity, the corrections stop shrinking at c·δf (c = h/α, δf
the rounding of f) in the directions the Newton matrix I − cJ does not damp (J's null directions): in a collapsed
cluster of the USA gradient flow δf ≈ ε e^β in the radial and common directions (|f| = 7.3e-12 at β = 10 with the
20 tokens within 1e-16 of each other, J's other eigenvalues −e^β).  The rate is then the ratio of two rounding
errors, ≥ 1 about half the time whatever h: at rtol = 1e-8 the corrections were 2e-8..1e-6 of the error scale
against a Newton tolerance of 1e-4, 1688 of 2688 Newton solves "diverged", each halving h and resetting the
order's equal-step count, and the steps stayed at 1e-5..1e-3 (STEP_TOO_SMALL at ``max_steps`` in an exact
equilibrium).

The corrections then measure the rounding of the implicit equation itself (c·δf, what an explicit step of the same
h makes: h·δf), which no iteration removes.  scipy's Newton tolerance, tol = max(10ε/rtol, min(0.03, √rtol)) of
the error scale, bounds the iteration error of a contracting iteration; against a floor ∝ h it would cap the step
at h ≈ tol·rtol/(ε e^β) (β = 10: 0.2 at rtol = 1e-8, 4e-4 at rtol = 1e-10), far below what the error test asks.
Here that floor is judged on the error test's scale, with SUNDIALS CVODE's bounds (``cvNlsConvTest`` in
cvode_nls.c: converged when ‖Δ‖·min(1, rate) is within 0.1 of the error test's scale, NLSCOEF; diverging when
‖Δ‖ > RDIV·‖Δ_prev‖, RDIV = 2): a correction that grew by less than RDIV converges when it is itself within
:data:`FLOOR` = 0.1 of the error scale (or within scipy's tolerance, were that larger): a tenth of the tolerance
of the step's error test, which judges the accepted iterate as before.  scipy's tests are kept otherwise (converged
when the geometric bound rate/(1 − rate)·‖Δ‖ is within its tolerance, diverged when the bound of the remaining
iterations is not), so an iteration whose corrections contract is scipy's, bit for bit.

Far from t = 0 the step scipy takes, t + h rounded, is not the h its differences were scaled to:
:class:`_ExactSteps` rescales them to the step taken before each Newton iteration.
"""
from __future__ import annotations

import inspect
import types

import numpy as np
from scipy.integrate import BDF
from scipy.integrate._ivp import bdf as _scipy_bdf

#: CVODE's RDIV: a correction more than this many times the previous one is divergence, whatever its size
RDIV = 2.0
#: CVODE's NLSCOEF: the largest correction (RMS of the error scale atol + rtol·|y|) that ends an iteration whose
#: corrections stopped shrinking, at the rounding floor of the velocity
FLOOR = 0.1


def solve_bdf_system(fun, t_new, y_predict, c, psi, LU, solve_lu, scale, tol):
    """scipy's ``solve_bdf_system`` (same arguments and returns: converged, iterations, y, d) with the rounding
    floor's exit: a correction with 1 ≤ rate < :data:`RDIV` and a norm within max(``tol``, :data:`FLOOR`) converges."""
    maxiter, norm = _scipy_bdf.NEWTON_MAXITER, _scipy_bdf.norm
    d = 0
    y = y_predict.copy()
    dy_norm_old = None
    converged = False
    for k in range(maxiter):
        f = fun(t_new, y)
        if not np.all(np.isfinite(f)):
            break
        dy = solve_lu(LU, c * f - psi - d)
        dy_norm = norm(dy / scale)
        rate = None if dy_norm_old is None else dy_norm / dy_norm_old
        floor = rate is not None and 1 <= rate < RDIV and dy_norm <= max(tol, FLOOR)
        if rate is not None and not floor and (rate >= 1 or rate ** (maxiter - k) / (1 - rate) * dy_norm > tol):
            break
        y += dy
        d += dy
        if floor or dy_norm == 0 or rate is not None and rate / (1 - rate) * dy_norm < tol:
            converged = True
            break
        dy_norm_old = dy_norm
    return converged, k + 1, y, d


class _ExactSteps:
    """The step that BDF's differences stand for, kept equal to the step taken.

    scipy's BDF scales its differences D to a step h (``change_D``), then steps to t_new = t + h, whose sum is
    rounded: the step taken, t_new − t, differs from h by up to half an ulp of t.  The predictor and ψ still stand
    for h while the implicit equation is solved with c = (t_new − t)/α, a formula of the wrong grid whose local error
    is ~ (t_new − t − h)·f, whatever the step: at t ≈ 1711, 1.1e-13 × a velocity of 2450 is ~100 error scales at
    rtol = 1e-10, and the steps shrank to 10 ulps of t (60 000 steps, then "step size less than spacing between
    numbers").  Here every ``change_D`` is followed, and before the Newton iteration D is rescaled to the step taken
    (as scipy itself does for a step clipped to ``t_bound``), the predictor, ψ and the error scale recomputed from it.
    """

    def __init__(self, solver):
        self.solver, self.spacing = solver, solver.h_abs      # BDF's D[1] starts as f·h_abs

    def change_D(self, D, order, factor):
        _scipy_bdf.change_D(D, order, factor)
        self.spacing *= factor

    def solve_bdf_system(self, fun, t_new, y_predict, c, psi, LU, solve_lu, scale, tol):
        s = self.solver
        h = abs(t_new - s.t)        # the step taken: scipy's h = t_new − t, from which it takes c
        if h != self.spacing:
            order, D = s.order, s.D
            self.change_D(D, order, h / self.spacing)
            self.spacing = h
            y_predict = np.sum(D[:order + 1], axis=0)
            psi = np.dot(D[1:order + 1].T, s.gamma[1:order + 1]) / s.alpha[order]
            scale = s.atol + s.rtol * np.abs(y_predict)
        return solve_bdf_system(fun, t_new, y_predict, c, psi, LU, solve_lu, scale, tol)


def scipy_mismatch(bdf_module, step_impl) -> str:
    """Why the installed scipy's BDF is not the one this module stands in for ("" when it is): its ``_step_impl``
    must call ``solve_bdf_system``, with our signature, and the module must define what ours reads.  scipy's private
    internals may change in any release; then the run takes scipy's BDF as it is (with a warning), not an error."""
    ours = inspect.signature(solve_bdf_system)
    theirs = getattr(bdf_module, "solve_bdf_system", None)
    if theirs is None or "solve_bdf_system" not in step_impl.__code__.co_names:
        return "its BDF._step_impl no longer calls solve_bdf_system"
    if "change_D" not in step_impl.__code__.co_names or not hasattr(bdf_module, "change_D"):
        return "its BDF._step_impl no longer rescales its differences by change_D"
    try:
        if inspect.signature(theirs) != ours:
            return f"its solve_bdf_system{inspect.signature(theirs)} is not solve_bdf_system{ours}"
    except (TypeError, ValueError):
        return "its solve_bdf_system has no signature to compare"
    missing = [name for name in ("NEWTON_MAXITER", "norm") if not hasattr(bdf_module, name)]
    if missing:
        return f"its bdf module lacks {missing}"
    unread = [name for name in ("D", "order", "gamma", "alpha") if name not in step_impl.__code__.co_names]
    return f"its BDF._step_impl no longer reads {unread}" if unread else ""


def _with_newton(step_impl, exact):
    """scipy's ``BDF._step_impl`` itself, its globals ``solve_bdf_system`` and ``change_D`` bound to ``exact``'s
    (:class:`_ExactSteps`: this module's Newton iteration on differences rescaled to the step taken); scipy's module
    is left as it is: other users of its BDF in the process keep its iteration."""
    scope = {**vars(_scipy_bdf), "solve_bdf_system": exact.solve_bdf_system, "change_D": exact.change_D}
    return types.FunctionType(step_impl.__code__, scope, step_impl.__name__, step_impl.__defaults__,
                              step_impl.__closure__)


#: "" where FloorBDF stands in for the installed scipy's BDF; else why not (then FloorBDF is None)
MISMATCH = scipy_mismatch(_scipy_bdf, BDF._step_impl)

if MISMATCH:
    FloorBDF = None
else:
    class FloorBDF(BDF):
        """:class:`scipy.integrate.BDF` whose Newton iteration converges at the rounding floor of its corrections
        (see the module docstring) and whose differences stand for the step taken (:class:`_ExactSteps`);
        everything else is scipy's."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._step_impl = types.MethodType(_with_newton(BDF._step_impl, _ExactSteps(self)), self)


def solver_class(method):
    """The scipy solver class of an implicit ``method`` (:class:`meanfield._integrators.ImplicitMethod`), BDF as
    :class:`FloorBDF` where it stands in for the installed scipy's (else scipy's own, with a warning saying why)."""
    if method.solver != "BDF":
        return method.solver_class()
    if FloorBDF is not None:
        return FloorBDF
    import scipy

    from .._errors import warn
    warn(f"method='bdf' runs scipy {scipy.__version__}'s BDF unchanged: {MISMATCH}, so meanfield's Newton exit at "
         "the rounding floor cannot stand in for it (a fully collapsed cluster may then stall with STEP_TOO_SMALL; "
         "docs/numerics.md, stiff particle runs).")
    return method.solver_class()
