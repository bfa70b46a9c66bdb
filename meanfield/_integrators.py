"""Explicit Runge–Kutta methods as data (Butcher tableaux) and one adaptive stepper.

A method is a tableau: nodes ``c``, matrix ``a``, weights ``b`` and, for embedded pairs, the weights
``b_err`` of the difference between the two solutions (used for error control).  ``METHODS`` is the
registry; tests iterate it and measure each method's observed order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tableau:
    name: str
    order: int
    c: np.ndarray
    a: np.ndarray
    b: np.ndarray
    b_err: np.ndarray | None = None   # b − b̂ of the embedded pair; None for fixed-step methods
    error_order: int | None = None    # order of the embedded solution
    fsal: bool = False

    def __post_init__(self):
        # The arrays are read-only, so the terms that rk_step reads from them (below) cannot go stale.
        for name in ("c", "a", "b", "b_err"):
            value = getattr(self, name)
            if value is not None:
                value = np.array(value)
                value.setflags(write=False)
                object.__setattr__(self, name, value)
        # rk_step's terms, taken from the arrays once: (coefficient, stage) with the nonzero coefficients, in the
        # order (and as the numpy scalars) the sums over the tableau read them
        a, s = self.a, len(self.b)
        object.__setattr__(self, "_terms", (
            tuple(tuple((a[i, j], j) for j in range(i) if a[i, j] != 0) for i in range(s)),
            tuple(self.c[i] for i in range(s)),
            tuple((bj, j) for j, bj in enumerate(self.b) if bj != 0),
            None if self.b_err is None else tuple((ej, j) for j, ej in enumerate(self.b_err) if ej != 0)))

    @property
    def stages(self) -> int:
        return len(self.b)

    @property
    def adaptive(self) -> bool:
        return self.b_err is not None


METHODS: dict[str, Tableau] = {}


def _register(t: Tableau) -> Tableau:
    METHODS[t.name] = t
    return t


_register(Tableau("rk4", 4, np.array([0, 0.5, 0.5, 1.0]),
                  np.array([[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1.0, 0]]),
                  np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6])))

_register(Tableau(
    "rk23", 3, np.array([0, 1 / 2, 3 / 4, 1.0]),
    np.array([[0, 0, 0, 0], [1 / 2, 0, 0, 0], [0, 3 / 4, 0, 0], [2 / 9, 1 / 3, 4 / 9, 0]]),
    np.array([2 / 9, 1 / 3, 4 / 9, 0]),
    b_err=np.array([2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8]), error_order=2, fsal=True))

# Dormand–Prince 5(4), the pair of scipy's RK45.
_DP_A = np.array([
    [0, 0, 0, 0, 0, 0, 0],
    [1 / 5, 0, 0, 0, 0, 0, 0],
    [3 / 40, 9 / 40, 0, 0, 0, 0, 0],
    [44 / 45, -56 / 15, 32 / 9, 0, 0, 0, 0],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0, 0, 0],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0, 0],
    [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0]])
_DP_B = np.array([35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0])
_DP_BHAT = np.array([5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40])
_register(Tableau("rk45", 5, np.array([0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1]), _DP_A, _DP_B,
                  b_err=_DP_B - _DP_BHAT, error_order=4, fsal=True))


@dataclass(frozen=True)
class ImplicitMethod:
    """A stiff (implicit) integrator of scipy behind the particle backends' ``method`` option.

    ``solver`` is the name of a :class:`scipy.integrate.OdeSolver` class (imported when a run starts: importing
    meanfield does not import scipy.integrate).  Its Jacobian is the backend's closed form where it has one
    (``ParticleStepper._jacobian``: the exact backend's Post-LN, any heads, causal or not), else estimated by finite
    differences, n·d velocity evaluations each (n tokens in dimension d): meant for a few hundred tokens whose
    dynamics is stiff (USA attention and the gradient flow at large β, clusters that collapse fast and attract
    slowly).  The particle backends run BDF and Radau as scipy's with one more exit of their Newton iterations, at
    the rounding floor of the corrections (:func:`meanfield.backends._newton.solver_class`)."""
    name: str
    order: int
    solver: str
    adaptive: bool = True       # it chooses its own steps under rtol/atol
    implicit: bool = True

    def solver_class(self):
        from scipy import integrate
        return getattr(integrate, self.solver)


#: The implicit methods of the particle backends (not of the spectral backend, whose state is too large for a
#: dense Jacobian): Radau IIA of order 5 and the variable-order BDF (1 to 5) of scipy.
IMPLICIT_METHODS: dict[str, ImplicitMethod] = {
    "radau": ImplicitMethod("radau", 5, "Radau"),
    "bdf": ImplicitMethod("bdf", 5, "BDF"),
}

#: scipy's implicit solvers raise rtol below this to it, with a warning: refused up front instead
IMPLICIT_MIN_RTOL = 100 * np.finfo(float).eps


def get_method(name) -> Tableau:
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"`method` must be one of {sorted(METHODS)}; got method={name!r}.") from None


def rk_step(tab: Tableau, f, t: float, y: np.ndarray, h: float, k0: np.ndarray | None = None):
    """One step of ``tab`` from (t, y) with step h.

    Returns ``(y_new, err, k_last)``: the new state, the embedded error estimate (None for fixed-step
    methods) and the last stage (reusable as the next first stage for FSAL pairs).
    """
    rows, c, b, b_err = tab._terms
    ks = [f(t, y) if k0 is None else k0]
    for i in range(1, len(rows)):
        yi = y + _combine(rows[i], ks, h)
        ks.append(f(t + c[i] * h, yi))
    y_new = y + _combine(b, ks, h)
    err = None if b_err is None else _combine(b_err, ks, h)
    return y_new, err, ks[-1]


def _combine(terms, ks, h):
    """h·Σ coefficient·k over ``terms`` ((coefficient, stage index) pairs), formed as Σ (h·coefficient)·k and summed
    as the builtin ``sum`` does (from the integer 0, left to right): the same bits as
    ``sum((h * a[i, j]) * ks[j] for j … if a[i, j] != 0)`` with no generator and no tableau lookups per step (a step
    of a few tokens is mostly such bookkeeping).

    The step h scales each coefficient before it meets a stage: a stage near float64's largest value (USA attention
    at β close to 709.78, where a token's dr/dt ≈ e^β) times a coefficient of Dormand–Prince's tableau (up to 11.6
    in size) overflowed, though the step's increments h·k are far from it, and rk45 stopped at t = 0 with a
    "non-finite velocity" where rk4 ran."""
    acc = 0
    for coef, j in terms:
        acc = acc + (h * coef) * ks[j]
    return acc


def l2_norm(a: np.ndarray) -> float:
    """‖a‖₂ over all entries of a real or complex array, without BLAS.

    ``np.linalg.norm`` takes a BLAS dot, which OpenBLAS runs on its thread team from ~10⁴ entries; between two
    steps the team sleeps, and waking it cost 21 ms of CPU time (56 ms wall) per error norm at L = 170 on a
    loaded two-vCPU machine, against 0.17 ms here: a quarter of the step.
    """
    flat = np.ascontiguousarray(a).reshape(-1)
    if np.iscomplexobj(flat):
        flat = flat.view(flat.real.dtype)
    return float(np.sqrt(np.einsum("i,i->", flat, flat)))


def error_norm(err: np.ndarray, y: np.ndarray, y_new: np.ndarray, rtol: float, atol: float) -> float:
    """RMS of err / (atol + rtol · max(|y|, |y_new|)) (scipy's norm)."""
    scale = atol + rtol * np.maximum(np.abs(y), np.abs(y_new))
    return float(np.sqrt(np.mean(np.abs(err / scale) ** 2)))


def next_step(h: float, norm: float, error_order: int, safety: float = 0.9, min_factor: float = 0.2,
              max_factor: float = 5.0) -> float:
    """Step-size update of an embedded pair from the error norm of the last step."""
    if norm == 0.0:
        return h * max_factor
    return h * min(max_factor, max(min_factor, safety * norm ** (-1.0 / (error_order + 1))))


def first_step_guess(d0: float, d1: float) -> float:
    """The trial step h0 of the initial step estimate (Hairer, Nørsett & Wanner 1993, II.4, as scipy's
    select_initial_step) from the scaled norms d0 = ‖y0‖ and d1 = ‖f(t0, y0)‖."""
    return 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1


def first_step_estimate(h0: float, d1: float, d2: float, order: int) -> float:
    """The initial step from the trial step ``h0``, d1 = ‖f(t0, y0)‖ and d2 = ‖f(t0 + h0, y0 + h0 f0) − f0‖ / h0
    (scaled norms; the same reference as :func:`first_step_guess`)."""
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
    return min(100 * h0, h1)


ADAPTIVE_OPTIONS = ("rtol", "atol", "first_step", "max_step", "min_step")


def fixed_steps(options: dict) -> str | None:
    """Why a run with these options takes fixed steps ("time='layers'…", "method='rk4'…"), or None (adaptive, or a
    third-party backend's own method name): then the options of the adaptive pairs would be ignored."""
    if options.get("time") == "layers":
        return "time='layers' applies the layer map once per `step`"
    method = options.get("method")
    if isinstance(method, str) and method in METHODS and not METHODS[method].adaptive:
        return f"method={method!r} takes fixed steps of `step`"
    return None


def refuse_unused(given: dict, names, why: str) -> None:
    """Refuse the options among ``names`` that the user set (to anything but None, or ∞ for ``max_step``, which
    mean unset): they would be ignored."""
    unused = [k for k in names if given.get(k) is not None and not (k == "max_step" and given[k] == np.inf)]
    if unused:
        raise ValueError(f"option(s) {unused} would be ignored: {why}.")


def check_step_options(opts: dict, method: Tableau, given: dict | None = None) -> dict:
    """Validate the step-size options of a run with ``method`` (in place; returns ``opts``).

    ``step`` (fixed-step methods, required there, refused by the adaptive pairs, which choose their own),
    ``first_step``, ``max_step`` (None or ∞: unbounded) and ``min_step`` > 0 with
    min_step ≤ first_step ≤ max_step, ``rtol`` in [1e-14, 1) and ``atol`` > 0.  Of the options the user
    ``given``, those of the adaptive pairs are refused with a fixed-step method (it would ignore them).
    """
    from ._validate import max_step_value, positive_float, relative_tolerance

    for key in ("step", "first_step"):
        if opts.get(key) is not None:
            opts[key] = positive_float(key, opts[key])
    opts["max_step"] = np.inf if opts.get("max_step") is None else max_step_value(opts["max_step"])
    opts["min_step"] = positive_float("min_step", opts["min_step"])
    opts["atol"] = positive_float("atol", opts["atol"])
    opts["rtol"] = relative_tolerance(opts["rtol"])
    if not method.adaptive and opts.get("step") is None:
        raise ValueError(f"method={method.name!r} has a fixed step: give `step` > 0.")
    if not method.adaptive:
        refuse_unused(given or {}, ADAPTIVE_OPTIONS, f"method={method.name!r} takes fixed steps of `step`; "
                      "tolerances and step bounds belong to the adaptive methods ('rk45', 'rk23')")
    if method.adaptive and opts.get("step") is not None:
        raise ValueError(f"method={method.name!r} chooses its own steps; use `first_step`/`max_step`, not `step` "
                         "(or a fixed-step method such as method='rk4' with `step`).")
    if method.adaptive:
        top = opts["max_step"]
        if opts["min_step"] > top:
            raise ValueError(f"`min_step` must be ≤ `max_step`; got min_step={opts['min_step']!r} > "
                             f"max_step={opts['max_step']!r}.")
        first = opts.get("first_step")
        if first is not None and not opts["min_step"] <= first <= top:
            raise ValueError(f"`first_step` must be in [min_step, max_step] = [{opts['min_step']:g}, {top:g}]; "
                             f"got first_step={first!r}.")
    return opts
