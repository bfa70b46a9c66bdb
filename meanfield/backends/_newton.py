"""scipy's BDF and Radau with a Newton iteration that accepts its rounding floor (BDF: on differences that stand for
the step taken).

scipy's ``solve_bdf_system`` and ``solve_collocation_system`` declare the simplified Newton iteration of an implicit
step diverged as soon as a correction is not smaller than the one before (rate ≥ 1), or shrinks too slowly to meet
the tolerance within the iterations left, however small the corrections are, and the step is then halved.  Where the
velocity's rounding error does not vanish with the velocity, the corrections stop shrinking at c·δf (c = h/α for
BDF, ~h for Radau; δf the rounding of f) in the directions the Newton matrix does not damp (J's null directions): in
a collapsed cluster of the USA gradient flow δf ≈ ε e^β in the radial and common directions (|f| = 7.3e-12 at β = 10
with the 20 tokens within 1e-16 of each other, J's other eigenvalues −e^β).  The rate is then the ratio of two
rounding errors, ≥ 1 or close to it about half the time whatever h: at rtol = 1e-8 BDF's corrections were 2e-8..1e-6
of the error scale against a Newton tolerance of 1e-4, 1688 of 2688 Newton solves "diverged", each halving h and
resetting the order's equal-step count, and the steps stayed at 1e-5..1e-3 (STEP_TOO_SMALL at ``max_steps`` in an
exact equilibrium).  Radau at β = 15 (20 tokens within 1e-15) called 10 522 of 15 522 solves diverged (5310 with
1 ≤ rate < 2, 5212 with a rate < 1 too slow for scipy's test, all with corrections ≤ 0.1 of the error scale): 5000
steps reached t = 34.5 (median step 3.5e-4).

The corrections then measure the rounding of the implicit equation itself (c·δf, what an explicit step of the same
h makes: h·δf), which no iteration removes.  scipy's Newton tolerance, tol = max(10ε/rtol, min(0.03, √rtol)) of
the error scale, bounds the iteration error of a contracting iteration; against a floor ∝ h it would cap the step
at h ≈ tol·rtol/(ε e^β) (β = 10: 0.2 at rtol = 1e-8, 4e-4 at rtol = 1e-10), far below what the error test asks.
Here that floor is judged on the error test's scale, with SUNDIALS CVODE's bounds (``cvNlsConvTest`` in
cvode_nls.c: converged when ‖Δ‖·min(1, rate) is within 0.1 of the error test's scale, NLSCOEF; diverging when
‖Δ‖ > RDIV·‖Δ_prev‖, RDIV = 2): where scipy's test would end the iteration as diverged, a correction that grew by
less than RDIV (or shrank too slowly) converges when it is itself within :data:`FLOOR` = 0.1 of the error scale (or
within scipy's tolerance, were that larger): a tenth of the tolerance of the step's error test, which judges the
accepted iterate as before (:func:`newton_exit`).  scipy's tests are kept otherwise (converged when the geometric
bound rate/(1 − rate)·‖Δ‖ is within its tolerance), so an iteration that scipy's tests end as converged, or continue,
is scipy's, bit for bit.

Far from t = 0 the step scipy's BDF takes, t + h rounded, is not the h its differences were scaled to:
:class:`_ExactSteps` rescales them to the step taken before each Newton iteration (Radau, a one-step method, takes
its step from t_new − t throughout).
"""
from __future__ import annotations

import inspect
import types

import numpy as np
from scipy.integrate import BDF, Radau
from scipy.integrate._ivp import bdf as _scipy_bdf
from scipy.integrate._ivp import radau as _scipy_radau

#: CVODE's RDIV: a correction more than this many times the previous one is divergence, whatever its size
RDIV = 2.0
#: CVODE's NLSCOEF: the largest correction (RMS of the error scale atol + rtol·|y|) that ends an iteration whose
#: corrections stopped shrinking, at the rounding floor of the velocity
FLOOR = 0.1


def newton_exit(k, maxiter, rate, norm, tol):
    """The verdict on the ``k``-th correction (of ``maxiter``) of scipy's simplified Newton iteration, RMS ``norm`` on
    the error scale, ``rate`` its ratio to the previous one (None for the first): False if it diverged (the correction
    is not taken), True if the iteration converged with it, None to iterate on.  scipy's tests, in its own words,
    except that what they call diverged converges at the rounding floor: rate < :data:`RDIV` and ``norm`` within
    max(``tol``, :data:`FLOOR`)."""
    if rate is not None and (rate >= 1 or rate ** (maxiter - k) / (1 - rate) * norm > tol):
        return bool(rate < RDIV and norm <= max(tol, FLOOR))      # numpy's bools are not False
    if norm == 0 or rate is not None and rate / (1 - rate) * norm < tol:
        return True
    return None


def solve_bdf_system(fun, t_new, y_predict, c, psi, LU, solve_lu, scale, tol):
    """scipy's ``solve_bdf_system`` (same arguments and returns: converged, iterations, y, d) with the rounding
    floor's exit (:func:`newton_exit`)."""
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
        verdict = newton_exit(k, maxiter, rate, dy_norm, tol)
        if verdict is False:
            break
        y += dy
        d += dy
        if verdict:
            converged = True
            break
        dy_norm_old = dy_norm
    return converged, k + 1, y, d


def solve_collocation_system(fun, t, y, h, Z0, scale, tol, LU_real, LU_complex, solve_lu):
    """scipy's ``solve_collocation_system`` of Radau IIA (same arguments and returns: converged, iterations, Z, rate)
    with the rounding floor's exit (:func:`newton_exit`)."""
    R = _scipy_radau
    maxiter = R.NEWTON_MAXITER
    M_real, M_complex = R.MU_REAL / h, R.MU_COMPLEX / h
    W = R.TI.dot(Z0)
    Z = Z0
    F = np.empty((3, y.shape[0]))
    ch = h * R.C
    dW_norm_old = None
    dW = np.empty_like(W)
    converged = False
    rate = None
    for k in range(maxiter):
        for i in range(3):
            F[i] = fun(t + ch[i], y + Z[i])
        if not np.all(np.isfinite(F)):
            break
        dW[0] = solve_lu(LU_real, F.T.dot(R.TI_REAL) - M_real * W[0])
        dW_complex = solve_lu(LU_complex, F.T.dot(R.TI_COMPLEX) - M_complex * (W[1] + 1j * W[2]))
        dW[1] = dW_complex.real
        dW[2] = dW_complex.imag
        dW_norm = R.norm(dW / scale)
        if dW_norm_old is not None:
            rate = dW_norm / dW_norm_old
        verdict = newton_exit(k, maxiter, rate, dW_norm, tol)
        if verdict is False:
            break
        W += dW
        Z = R.T.dot(W)
        if verdict:
            converged = True
            break
        dW_norm_old = dW_norm
    return converged, k + 1, Z, rate


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


def _mismatch(module, step_impl, name, ours, reads, step_reads=()) -> str:
    """Why the installed scipy's solver is not the one this module stands in for ("" when it is): its ``_step_impl``
    must call ``name`` from ``module``, with the signature of ``ours``, ``module`` must define ``reads`` and
    ``_step_impl`` read ``step_reads``.  scipy's private internals may change in any release; then the run takes
    scipy's solver as it is (with a warning), not an error."""
    theirs = getattr(module, name, None)
    if theirs is None or name not in step_impl.__code__.co_names:
        return f"its _step_impl no longer calls {name}"
    try:
        if inspect.signature(theirs) != inspect.signature(ours):
            return f"its {name}{inspect.signature(theirs)} is not {name}{inspect.signature(ours)}"
    except (TypeError, ValueError):
        return f"its {name} has no signature to compare"
    missing = [r for r in reads if not hasattr(module, r)]
    if missing:
        return f"its module of {name} lacks {missing}"
    unread = [r for r in step_reads if r not in step_impl.__code__.co_names]
    return f"its _step_impl no longer reads {unread}" if unread else ""


def scipy_mismatch(bdf_module, step_impl) -> str:
    """Why the installed scipy's BDF is not the one :class:`FloorBDF` stands in for ("" when it is): as
    :func:`_mismatch`, and its ``_step_impl`` must rescale its differences by ``change_D``."""
    if "change_D" not in step_impl.__code__.co_names or not hasattr(bdf_module, "change_D"):
        return "its BDF._step_impl no longer rescales its differences by change_D"
    why = _mismatch(bdf_module, step_impl, "solve_bdf_system", solve_bdf_system, ("NEWTON_MAXITER", "norm"),
                    ("D", "order", "gamma", "alpha"))
    return why.replace("its _step_impl", "its BDF._step_impl")


def radau_mismatch(radau_module, step_impl) -> str:
    """Why the installed scipy's Radau is not the one :class:`FloorRadau` stands in for ("" when it is)."""
    why = _mismatch(radau_module, step_impl, "solve_collocation_system", solve_collocation_system,
                    ("NEWTON_MAXITER", "norm", "MU_REAL", "MU_COMPLEX", "T", "TI", "TI_REAL", "TI_COMPLEX", "C"))
    return why.replace("its _step_impl", "its Radau._step_impl")


def _rebound(step_impl, module, **names):
    """scipy's ``_step_impl`` itself, the globals ``names`` of its ``module`` bound to this module's; scipy's module is
    left as it is: other users of its solvers in the process keep its iteration."""
    return types.FunctionType(step_impl.__code__, {**vars(module), **names}, step_impl.__name__,
                              step_impl.__defaults__, step_impl.__closure__)


#: "" where FloorBDF stands in for the installed scipy's BDF; else why not (then FloorBDF is None)
MISMATCH = scipy_mismatch(_scipy_bdf, BDF._step_impl)
#: "" where FloorRadau stands in for the installed scipy's Radau; else why not (then FloorRadau is None)
RADAU_MISMATCH = radau_mismatch(_scipy_radau, Radau._step_impl)

if MISMATCH:
    FloorBDF = None
else:
    class FloorBDF(BDF):
        """:class:`scipy.integrate.BDF` whose Newton iteration converges at the rounding floor of its corrections
        (see the module docstring) and whose differences stand for the step taken (:class:`_ExactSteps`);
        everything else is scipy's."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            exact = _ExactSteps(self)
            self._step_impl = types.MethodType(_rebound(BDF._step_impl, _scipy_bdf, change_D=exact.change_D,
                                                        solve_bdf_system=exact.solve_bdf_system), self)

if RADAU_MISMATCH:
    FloorRadau = None
else:
    class FloorRadau(Radau):
        """:class:`scipy.integrate.Radau` whose Newton iteration converges at the rounding floor of its corrections
        (see the module docstring); everything else is scipy's."""

        _step_impl = _rebound(Radau._step_impl, _scipy_radau, solve_collocation_system=solve_collocation_system)


def solver_class(method):
    """The scipy solver class of an implicit ``method`` (:class:`meanfield._integrators.ImplicitMethod`): BDF and
    Radau as :class:`FloorBDF` and :class:`FloorRadau` where they stand in for the installed scipy's (else scipy's
    own, with a warning saying why)."""
    ours, why = {"BDF": (FloorBDF, MISMATCH), "Radau": (FloorRadau, RADAU_MISMATCH)}.get(method.solver, (None, ""))
    if ours is not None:
        return ours
    if why:
        import scipy

        from .._errors import warn
        warn(f"method={method.name!r} runs scipy {scipy.__version__}'s {method.solver} unchanged: {why}, so "
             "meanfield's Newton exit at the rounding floor cannot stand in for it (a fully collapsed cluster may "
             "then stall with STEP_TOO_SMALL; docs/numerics.md, stiff particle runs).")
    return method.solver_class()
