"""scipy's BDF with a Newton iteration that accepts its rounding floor.

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


def scipy_mismatch(bdf_module, step_impl) -> str:
    """Why the installed scipy's BDF is not the one this module stands in for ("" when it is): its ``_step_impl``
    must call ``solve_bdf_system``, with our signature, and the module must define what ours reads.  scipy's private
    internals may change in any release; then the run takes scipy's BDF as it is (with a warning), not an error."""
    ours = inspect.signature(solve_bdf_system)
    theirs = getattr(bdf_module, "solve_bdf_system", None)
    if theirs is None or "solve_bdf_system" not in step_impl.__code__.co_names:
        return "its BDF._step_impl no longer calls solve_bdf_system"
    try:
        if inspect.signature(theirs) != ours:
            return f"its solve_bdf_system{inspect.signature(theirs)} is not solve_bdf_system{ours}"
    except (TypeError, ValueError):
        return "its solve_bdf_system has no signature to compare"
    missing = [name for name in ("NEWTON_MAXITER", "norm") if not hasattr(bdf_module, name)]
    return f"its bdf module lacks {missing}" if missing else ""


def _with_newton(step_impl):
    """scipy's ``BDF._step_impl`` itself, its global ``solve_bdf_system`` bound to this module's (scipy's module is
    left as it is: other users of its BDF in the process keep its iteration)."""
    scope = {**vars(_scipy_bdf), "solve_bdf_system": solve_bdf_system}
    return types.FunctionType(step_impl.__code__, scope, step_impl.__name__, step_impl.__defaults__,
                              step_impl.__closure__)


#: "" where FloorBDF stands in for the installed scipy's BDF; else why not (then FloorBDF is None)
MISMATCH = scipy_mismatch(_scipy_bdf, BDF._step_impl)

if MISMATCH:
    FloorBDF = None
else:
    class FloorBDF(BDF):
        """:class:`scipy.integrate.BDF` whose Newton iteration converges at the rounding floor of its corrections
        (see the module docstring); everything else is scipy's."""
        _step_impl = _with_newton(BDF._step_impl)


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
