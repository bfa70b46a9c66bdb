"""The particle backends' implicit methods ("bdf", "radau"): one segment of a run by scipy's solver.

The solver carries the unprojected ambient state: the velocity is that of θ/‖θ‖ and tangent, so ‖θ‖ drifts by the
integration error only, and the stepper's state is projected after each step.  Its Jacobian is the backend's closed
form (``ParticleStepper._jacobian``) where it has one, else scipy's finite differences.  A step integrand (the
energy identity of a gradient flow) is one more equation dS/dt = g, solved alongside; nothing depends on S, so its
row of the Jacobian is 0 (a simplified Newton, which still converges).
"""
from __future__ import annotations

import numpy as np

from .._trajectory import Status


def advance_implicit(stepper, a: float, b: float) -> Status:
    """Advance ``stepper`` over the segment [a, b] with its implicit ``method`` (a fresh solver per segment, as the
    explicit pairs start each segment afresh).

    The LU factorizations run on one OpenBLAS thread: between two of them the thread team sleeps, and waking it cost
    up to 160 ms per 300×300 factorization on a loaded two-vCPU machine (1.7 ms on one thread), which made BDF at
    n = 100 slower with the closed-form Jacobian than with finite differences."""
    from .._blas import single_threaded_blas

    with single_threaded_blas():
        return _Segment(stepper, a, b).run()


def _log_rms(x, scale) -> float:
    """log of the RMS norm of x/scale (scipy's ``norm``), finite wherever x is (-inf for x = 0, inf for an inf)."""
    top = np.max(np.abs(x))
    if not top > 0 or not np.isfinite(top):
        return -np.inf if top == 0 else np.inf
    u = (x / top) / scale
    peak = np.max(np.abs(u))
    return float(np.log(top) + np.log(peak) + 0.5 * np.log(np.mean(np.square(u / peak))))


class _Segment:
    def __init__(self, stepper, a, b):
        self.st, self.a, self.b = stepper, a, b
        self.shape, self.size = stepper.y.shape, stepper.y.size
        self.g = stepper.step_integrand
        self.nonfinite = False      # a velocity evaluation was not finite (a failed factorization is then diagnosed)
        self.jacobian_overflow = False      # the closed-form Jacobian was not finite at a finite state (its LU fails)
        self.integral = 0.0         # S at the solver's current step

    def run(self) -> Status:
        st, o = self.st, self.st.options
        st._carried = None
        y0 = st.y.ravel() if self.g is None else np.append(st.y.ravel(), 0.0)
        first = None if st._h is None else min(st._h, self.b - self.a)
        jac = self._jacobian if st._has_jacobian else None
        # independent groups: a block-diagonal Jacobian, factorized sparse (scipy's splu), and with finite differences
        # one evaluation per column of a block (scipy groups the columns of different blocks)
        sparsity = self._block_pattern() if st._jacobian_blocks > 1 else None
        from ._newton import solver_class     # scipy's solvers: imported by the runs that use them
        solver = None
        while solver is None or solver.status == "running":
            if st._out_of_steps():
                return Status.STEP_TOO_SMALL
            t = st.t
            try:
                with np.errstate(over="ignore", invalid="ignore"):      # a blown-up trial: the solver shrinks its step
                    if solver is None:
                        solver = solver_class(st.method)(self._velocity, self.a, y0, self.b, rtol=o["rtol"],
                                                          atol=o["atol"], max_step=o["max_step"], first_step=first,
                                                          jac=jac, jac_sparsity=None if jac else sparsity)
                        if not solver.h_abs >= min(o["min_step"], self.b - self.a):
                            if self.nonfinite:
                                return self._failure(t, f"a non-finite velocity (first step {solver.h_abs:.3g})")
                            h = solver.h_abs if first is not None else self._first_step(y0)
                            if first is None and h >= min(o["min_step"], self.b - self.a) and not self.nonfinite:
                                first, solver = h, None      # scipy's estimate overflowed to 0: start with this one
                                continue
                            return self._first_step_too_small(t, h, y0)
                        continue
                    message = solver.step()
            except (ValueError, np.linalg.LinAlgError) as err:     # a non-finite Jacobian: its LU refuses it
                if not (self.nonfinite or self.jacobian_overflow):
                    raise
                return self._failure(t, str(err))
            if solver.status == "failed":       # the step shrank to nothing: an undefined velocity, or stiffness
                return self._failure(t, message + self._clock_note(solver, t, message))
            status = self._accept(solver, t)
            if status is not None:
                return status
        return Status.OK

    def _velocity(self, t, y):
        st = self.st
        k = st.rhs(st._stage_time(t, self.a, self.b), y[:self.size].reshape(self.shape))
        if not np.isfinite(k).all():
            self.nonfinite = True
        if self.g is None:
            return k.ravel()
        with np.errstate(over="ignore", invalid="ignore"):
            return np.append(k.ravel(), self.g(k, st._stage_log_z))

    def _block_pattern(self):
        """The nonzeros of a Jacobian of independent groups of tokens (csc): its diagonal blocks; the step integral's
        row and column are left out (0, as in the closed form: a simplified Newton)."""
        from scipy import sparse

        blocks = self.st._jacobian_blocks
        block = np.ones((self.size // blocks,) * 2)
        return sparse.block_diag([block] * blocks + ([] if self.g is None else [np.zeros((1, 1))]), format="csc")

    def _jacobian(self, t, y):
        """The closed form (dense, or sparse for independent groups), with the step integral's row and column 0; NaN
        where it fails mid-run (its weights overflow): the factorization then fails and the run stops, diagnosed."""
        m = self.size
        J = self.st._jacobian(t, y[:m].reshape(self.shape))
        if self.st._jacobian_blocks > 1:
            if J is None:
                J = self._block_pattern() * np.nan
            elif y.size > m:
                from scipy import sparse
                J = sparse.block_diag([J, np.zeros((1, 1))], format="csc")
            return J
        if J is None:
            J = np.full((m, m), np.nan)
        elif not np.isfinite(J).all():      # finite weights, derivatives beyond float64 (β e^β near β = 709)
            self.jacobian_overflow = True
        if y.size == m:
            return J
        out = np.zeros((y.size, y.size))
        out[:m, :m] = J
        return out

    def _accept(self, solver, t) -> Status | None:
        """Take the solver's step from ``t`` into the stepper (None), or the status that stops the run."""
        st, o = self.st, self.st.options
        h = solver.t - t
        if h < o["min_step"] and solver.t < self.b:
            st.detail = f"Step {h:.3g} < min_step={o['min_step']:.3g} at t={t:.6g} ({st.method.name})."
            return Status.STEP_TOO_SMALL
        y_new = st._project(solver.y[:self.size].reshape(self.shape))
        if st._bad_state(y_new, solver.t):
            return Status.NON_FINITE
        if self.g is not None:       # this step's part of ∫ g dt
            st._step_integral, self.integral = solver.y[self.size] - self.integral, solver.y[self.size]
        st.y, st.t = y_new, (self.b if solver.status == "finished" else solver.t)
        if solver.status != "finished":     # a segment's last step is clipped to its end: it says nothing of the
            st._h = max(getattr(solver, "h_abs", h), o["min_step"])   # next step (carried, it fell below min_step)
        st._log_step(st.t, h)
        st._notify(h)
        return None

    def _first_step(self, y0) -> float:
        """scipy's estimate of the first step (``select_initial_step``, Hairer, Nørsett & Wanner II.4, with the solver's
        error order: 1 for BDF, 3 for Radau) without its overflow: scipy's RMS norms square the entries, so from
        velocity components of ~1e150 (USA at β ≳ 350) its estimate was 0, and a run stopped at t = 0 with "Step 0"
        even with ``min_step`` lowered below the true estimate.  Here the norms are taken as logarithms of scaled
        vectors; where scipy's do not overflow the two agree to rounding."""
        o = self.st.options
        order = 1 if self.st.method.solver == "BDF" else 3
        span = self.b - self.a
        scale = o["atol"] + np.abs(y0) * o["rtol"]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            f0 = self._velocity(self.a, y0)
            l0, l1 = _log_rms(y0, scale), _log_rms(f0, scale)
            h0 = 1e-6 if min(l0, l1) < np.log(1e-5) else 0.01 * np.exp(l0 - l1)
            h0 = min(h0, span)
            if not h0 > 0:
                return 0.0
            f1 = self._velocity(self.a + h0, y0 + h0 * f0)
            l2 = _log_rms(0.5 * f1 - 0.5 * f0, scale) + np.log(2.0) - np.log(h0)
            if max(l1, l2) <= np.log(1e-15):
                h1 = max(1e-6, h0 * 1e-3)
            else:
                h1 = np.exp((np.log(0.01) - max(l1, l2)) / (order + 1))
        return float(min(100 * h0, h1, span, o["max_step"] or np.inf))

    def _first_step_too_small(self, t, h, y0) -> Status:
        """STEP_TOO_SMALL for a first step below ``min_step``: the velocity changes the state on a time scale shorter
        than ``min_step`` (a limitation of the problem's scale, not an error of the solver)."""
        st = self.st
        with np.errstate(over="ignore", invalid="ignore"):
            speed = float(np.max(np.abs(self._velocity(t, y0)[:self.size])))
        st.detail = (f"Step {h:.3g} < min_step={st.options['min_step']:.3g} at t={t:.6g} ({st.method.name}: its first "
                     f"step), where the largest velocity component is {speed:.3g}: the state changes on time scales "
                     f"too short for steps of min_step to follow (lower `min_step` below {h:.3g} to follow them).")
        return Status.STEP_TOO_SMALL

    def _clock_note(self, solver, t, message) -> str:
        """Why scipy's step fell "below the spacing between numbers" where its floor, ten ulps of t, is above
        ``min_step`` (from t ≈ 450 at the default 1e-12): the clock, not the solver, cannot resolve the steps the
        dynamics asks for there ("" otherwise)."""
        floor = 10 * float(np.spacing(abs(t)))
        if message != getattr(solver, "TOO_SMALL_STEP", None) or not floor > self.st.options["min_step"]:
            return ""
        return (f" (scipy's smallest step at t={t:.6g} is ten ulps of t, {floor:.3g}, above min_step="
                f"{self.st.options['min_step']:.3g}: float64 times cannot resolve steps the dynamics needs this far "
                "from t = 0; where the velocity does not depend on t, a run from this state started at a smaller "
                "t0 can)")

    def _failure(self, t, message) -> Status:
        """NON_FINITE with the stepper's diagnosis when the velocity was undefined at a trial state (a speed factor, a
        null direction, a non-finite field), else STEP_TOO_SMALL with scipy's message."""
        st = self.st
        issue, st._speed_issue = st._speed_issue, None
        issue = issue or st._field_diagnosis()
        if issue:
            st.detail = issue
            return Status.NON_FINITE
        if self.jacobian_overflow and not self.nonfinite:
            message = ("the closed-form Jacobian overflows float64 at a finite state (its entries grow like β e^β: "
                       f"{message})")
        st.detail = f"The {st.method.name!r} solver failed at t={t:.6g}: {message}"
        return Status.STEP_TOO_SMALL
