"""Time integration shared by the particle backends: Runge–Kutta on the sphere and the layer maps.

A particle backend supplies one method, ``_field(t, theta, full) -> AttentionField`` (the attention
vector at its own tokens; ``theta`` is normalized unless the backend sets ``FIELD_NORMALIZES``, and
the field is then that of θ/‖θ‖); everything else lives here once:

* the scheme's ODE (docs/model.md, "The schemes"; read from :mod:`meanfield._schemes`): dθ/dt = P_θ A / s,
  dr/dt = radial law;
* the explicit Runge–Kutta methods of :data:`meanfield._integrators.METHODS` (classical RK4 with a
  fixed step; the embedded pairs "rk45" (Dormand–Prince 5(4)) and "rk23" with error control), in
  ambient coordinates with the directions projected back to the sphere after every step (the
  right-hand side is evaluated at θ/‖θ‖, so it is a smooth extension off the sphere and the
  methods keep their order);
* the discrete layer maps (``time="layers"``) of every scheme, including anGPT.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .._attention import NullDirectionError
from .._errors import UnsupportedModelError
from .._integrators import (ADAPTIVE_OPTIONS, IMPLICIT_METHODS, IMPLICIT_MIN_RTOL, METHODS, check_step_options,
                             first_step_estimate, first_step_guess, get_method, next_step, refuse_unused, rk_step)
from .._measures import Particles, conversion_hint, pair_alignment
from .._model import Model
from .._norms import einsum, norm_range, norms, plain_row_norms, regular, row_norms
from .._schemes import (TIME_FREE_ROWS, UNIT_SPEED_ROWS, _angpt_layer, _ngpt_layer, alpha_step_weight,
                        over_overflowed_speed)
from .._trajectory import Status
from .._validate import NonFiniteError, ZeroVectorError, nonneg_int, positive_float
from ..sphere._funk_hecke import _MAX_UNSCALED_BETA as _LOG_FLOAT_MAX
from .._validate import check_options

TIMES = ("continuous", "layers")
_NO_SMALLER_STEP = " A smaller step does not help."
_VANISHING_TAIL = ", where dθ/dt = P_θA/s blows up (s ∝ r); no step size gets past that time."
_ZERO_ATTENTION = ("the token attends to nothing (all the tokens it sees have zero weight, e.g. a padding token "
                   "first under a causal mask, or V = 0); a token of zero weight moves no other token, so padding can "
                   "be left out of the Particles (the rows of nonzero weight) with no change to the rest")


def scheme_uses_magnitude(scheme, t, model) -> bool:
    """Whether ‖A‖ or ⟨θ, A⟩ enter the scheme's speed or radial law at time t.

    Probed by calling the scheme's row with NaN magnitudes (the table stays the only place where the
    formulas are written): a NaN in the result means the value is used.  The answer for a speed factor and a radial
    law of :data:`meanfield._schemes.TIME_FREE_ROWS` (the same at every t, for every model) is probed once and
    kept; any other row (Mix-LN's, LN-Scaling's, a custom row) is probed at every call, at its t.
    """
    key = (scheme.speed, scheme.radial)
    if key[0] in TIME_FREE_ROWS and (key[1] is None or key[1] in TIME_FREE_ROWS):
        used = _MAGNITUDE_USE.get(key)
        if used is None:
            used = _MAGNITUDE_USE[key] = _probe_magnitude(scheme, t, model)
        return used
    return _probe_magnitude(scheme, t, model)


_MAGNITUDE_USE: dict = {}     # (speed, radial) of TIME_FREE_ROWS → scheme_uses_magnitude's answer


def _probe_magnitude(scheme, t, model) -> bool:
    nan, one = np.array([np.nan]), np.ones(1)
    with np.errstate(all="ignore"):
        used = bool(np.isnan(scheme.speed(one, nan, t, model)).any())
        if scheme.radial is not None:
            used |= bool(np.isnan(scheme.radial(nan, nan, one, t, model)).any())
    return used


#: ``a.all(axis=None)`` without ndarray.all's Python wrapper (the same reduction)
_all_true = np.logical_and.reduce

def _all(a) -> bool:
    """``np.all(a)``, without its Python wrapper for a numpy array or scalar (a scheme row may return either)."""
    return a.all() if isinstance(a, (np.ndarray, np.generic)) else np.all(a)


def _speed_kind(s) -> tuple:
    """(every value of the speed factor ``s`` is 1, every one is finite and nonzero), for a scalar or an array; an
    array's through the range of s and of |s| (argmin/argmax), which a NaN fails, instead of five array passes."""
    if isinstance(s, np.ndarray) and s.size:
        lo, hi = norm_range(s)
        if lo == 1.0 and hi == 1.0:
            return True, True
        lo, hi = norm_range(np.abs(s))
        return False, bool(lo > 0 and hi < np.inf)
    unit = _all(s == 1.0)
    return unit, unit or _all(np.isfinite(s) & (s != 0))


def _column(v, n):
    """The per-token values ``v`` (a scalar, or shape (n,)) as an (n, 1) column."""
    if isinstance(v, np.ndarray) and v.shape == (n,):
        return v[:, None]
    return np.reshape(np.broadcast_to(v, (n,)), (-1, 1))


COMMON_OPTIONS = {"time": "continuous", "method": None, "step": None, "rtol": 1e-10, "atol": 1e-12,
                  "first_step": None, "max_step": None, "min_step": 1e-12, "max_steps": None}

#: Above this many unknowns (tokens × (d + radius)) an implicit method warns about its cost; one LU factorization
#: of that size took ~0.6 s on one core of the 2-vCPU development machine
IMPLICIT_WARN_UNKNOWNS, _LU_SECONDS_AT_WARN = 3000, 0.6

#: The most fixed steps (``step`` with "rk4", or layers of ``time="layers"``) a run may take where the backend
#: sets no ``max_steps`` of its own: the spectral backend's default ``max_steps``.
MAX_FIXED_STEPS = 10_000_000


def _takes_fixed_steps(opts: dict) -> bool:
    """Whether a run with these options takes fixed steps of ``step``: the layer map, "rk4", or a particle backend's
    ``step`` without ``method`` (which means "rk4")."""
    from .._integrators import fixed_steps

    if fixed_steps(opts) is not None:
        return True
    return opts.get("step") is not None and opts.get("method") is None and opts.get("time", "continuous") == "continuous"


def check_fixed_step_count(options, t0, t_final, *, adaptive: bool = True) -> None:
    """Refuse, before any work, a fixed ``step`` that needs more steps from ``t0`` to ``t_final`` than the run may
    take (the backend's ``max_steps``, else :data:`MAX_FIXED_STEPS`): ``step=1e-300`` would otherwise run without
    end (or, with ``max_steps``, stop after 10⁷ steps far from ``t_final``).  Also checks a hybrid run's
    ``particle_options`` against :data:`MAX_FIXED_STEPS` over the whole run, but not against a ``max_steps`` of
    their own: the particle phase spans only the part of the run after the hand-off, unknown in advance, and its
    budget ends it in any case.  Values of the wrong type are left to the backend's own checks.  ``adaptive=False``:
    the caller has no adaptive method to suggest instead."""
    import numbers

    for where, opts in (("", options), ("particle_options: ", (options or {}).get("particle_options"))):
        if not isinstance(opts, dict) or not _takes_fixed_steps(opts):
            continue
        step, limit = opts.get("step"), opts.get("max_steps")
        own = isinstance(limit, numbers.Integral) and not isinstance(limit, bool) and limit >= 1
        if own and where:
            continue
        limit = int(limit) if own else MAX_FIXED_STEPS
        if isinstance(step, bool) or not isinstance(step, numbers.Real) or not np.isfinite(step) or step <= 0:
            continue
        span = float(t_final) - float(t0)
        with np.errstate(over="ignore"):
            count = span / float(step)
        if count <= limit * (1 + 1e-9):          # a whole number of steps up to rounding (0.2/0.02 = 10.000…02)
            continue
        what = "layers" if opts.get("time") == "layers" else "steps"
        bound = f"max_steps={limit}" if own else f"the limit of {limit} fixed {what} per run"
        advice = "raise `max_steps` or `step`" if own else "raise `step`" + (
            ", or use an adaptive method (rk45)" if adaptive else "")
        if what == "layers":
            advice = "raise `step` (fewer, longer layers)"
        raise ValueError(f"{where}`step` must be ≥ (t_final − t0)/{limit} = {span / limit:.6g} ({bound}); got "
                         f"step={step!r}, which takes {count:.3g} {what} from t0={float(t0):g} to "
                         f"t_final={float(t_final):g}: {advice}.")


class ParticleStepper:
    """Base class of the particle backends (see :class:`meanfield.backends._registry.Backend`).

    Subclasses set ``OPTIONS`` (their own options and defaults), may override ``_check_model``
    and ``_configure``, and implement ``_field(t, theta, full)``.

    Common options
    --------------
    time : {"continuous", "layers"}
        Integrate the ODE of the scheme, or apply its discrete layer map (``step`` = layer step h;
        t_final − t0 and the gaps between save times must be whole numbers of layers, so ``step`` ≤ t_final − t0;
        layer k sits at t0 + k·h).
    method : {"rk4", "rk23", "rk45", "bdf", "radau"}, optional
        Runge–Kutta method (:data:`meanfield._integrators.METHODS`), or one of scipy's implicit solvers
        (:data:`meanfield._integrators.IMPLICIT_METHODS`) for stiff runs of a few hundred tokens (USA or the
        gradient flow at large β; the Jacobian in closed form where the backend has it, :meth:`_jacobian`, else by
        finite differences, n·d velocity evaluations).  Default: "rk4" when ``step`` is given, else "rk45".
    step : float, optional
        Fixed step of "rk4", or the layer step h of ``time="layers"``.  The steps of one
        ``advance`` are uniform and at most ``step`` (equal to it when the interval is a multiple).  A "rk4" step in
        which a stage moves a token by more than :attr:`UNRESOLVED_STEP_ANGLE` (1 rad) warns, once per run (per
        stepper: a resumed run that meets it again warns again, see :func:`meanfield.resume`).
    rtol, atol : float
        Tolerances of the embedded pairs (rtol in [1e-14, 1)): the max over all components of |err| / (atol + rtol·|y|) is kept ≤ 1
        (a max norm, stricter than scipy's RMS norm, so no particle is left behind).  The implicit methods use
        scipy's RMS norm, rtol in [2.22e-14, 1).
    first_step, max_step : float, optional
        Initial and largest step of the embedded pairs (default: estimated, and raised to ``min_step``; unbounded).
    min_step : float
        The embedded pairs stop with ``Status.STEP_TOO_SMALL`` below this step.
    max_steps : int, optional
        The most steps (or layers) of the whole run, a resumed run's earlier ones included (default: no bound
        but :data:`MAX_FIXED_STEPS` for fixed steps): the run stops with ``Status.STEP_TOO_SMALL`` once it has
        taken them, its detail saying so.  Bounds the cost of a stiff adaptive run (a gradient flow at large β
        takes ~5000 steps per unit time).

    Under QKV-Norm with a singular Q, K or V the attention is undefined at a token that the matrix maps to 0: at
    the start that is an error (ValueError, from the first diagnostics, before any work); a run that reaches such a
    state stops there with ``Status.NON_FINITE``, the detail naming the matrix and the token, and the diagnostics
    that need the attention (``max_speed``, ``energy``, …) left out of that state's (NaN in the Trajectory).
    """

    OPTIONS: dict = {}
    name = "particle-stepper"

    @classmethod
    def option_defaults(cls) -> dict:
        """{option name: default} of this backend (the common stepping options and its own)."""
        return {**COMMON_OPTIONS, **cls.OPTIONS}

    @classmethod
    def validate_options(cls, model, initial, options: dict, times=None) -> dict:
        """Check ``options`` (names and values) for ``model`` and ``initial`` as a run would, without running it:
        the backend is built on a probe of at most two of the tokens (its cost does not grow with their number),
        and with the save ``times`` (t0 … t_final) the layer grid and the number of fixed steps are checked too.
        Returns the options as the run would use them (defaults filled in)."""
        stepper = cls(model, cls._probe(initial, options), **options)
        if times is not None:
            stepper.check_save_times(times)
        return dict(stepper.options)

    @classmethod
    def _probe(cls, initial, options: dict):
        """The tokens :meth:`validate_options` builds the backend on: at most two of ``initial``."""
        if isinstance(initial, Particles) and initial.n > 2:
            return Particles(initial.positions[:2], None, None if initial.radii is None else initial.radii[:2])
        return initial

    def __init__(self, model: Model, initial, **options):
        opts = check_options(self.name, options, self.option_defaults())
        if not isinstance(model, Model):
            raise TypeError(f"`model` must be a meanfield.Model; got {type(model).__name__}.")
        if not isinstance(initial, Particles):
            # the positions of a hand-written particle script are an (n, d) array: say how to wrap them
            wrap = "" if not isinstance(initial, (np.ndarray, list)) else (
                " An array of token positions, shape (n, d), becomes meanfield.Particles(positions) (weights 1/n; "
                "normalize=True projects vectors that are not unit).")
            raise TypeError(f"backend={self.name!r} needs `initial` to be meanfield.Particles; "
                            f"got {type(initial).__name__} (sample a Density with Particles.from_density, or use "
                            "backend='spectral', which evolves a Density)." + wrap + conversion_hint(initial))
        if initial.d != model.d:
            raise ValueError(f"`initial` has d={initial.d} but the model has d={model.d} (a model on the tokens' "
                             f"sphere: mf.Model(..., d={initial.d})).")
        self.model = model
        self.scheme = model.scheme_def
        self._check_model(model)
        opts = self._check_common(opts, options)
        opts = self._configure(opts)
        self.options = opts

        self.weights = np.array(initial.weights)
        self.n, self.d = initial.n, initial.d
        has_r = self.scheme.has_radius
        r = initial.radii if initial.radii is not None else np.ones(self.n)
        self._radii_passive = None if has_r else (None if initial.radii is None else np.array(initial.radii))
        self.y = np.concatenate([initial.positions, r[:, None]], axis=1) if has_r else np.array(initial.positions)
        self.t = 0.0
        self.detail = ""
        self.step_log = {"t": [], "dt": [], "mean_alignment": []}
        if self.method is not None and self.method.adaptive and not self._implicit:    # scipy's steps report neither
            self.step_log.update({"error": [], "rejected": []})
        if self._implicit:
            self._check_implicit_memory()
        self._h = opts["first_step"]
        self._stage = None      # f(t, y) of the state reached inside a segment (the next step's FSAL first stage)
        self._carried = None    # (t, stage) handed over by a resume point: see carry_stage
        self._grid_origin = None    # the save time before a resume point: see carry_grid_origin

    # -- options ------------------------------------------------------------------------------------
    def _check_model(self, model):
        pass

    def _configure(self, opts: dict) -> dict:
        return opts

    def _check_common(self, opts, given):
        if opts["max_steps"] is not None:
            opts["max_steps"] = nonneg_int("max_steps", opts["max_steps"], minimum=1)
        time = opts["time"]
        if time not in TIMES:
            raise ValueError(f"`time` must be one of {list(TIMES)}; got time={time!r}.")
        if time == "layers":
            if opts["step"] is None:
                raise ValueError("time='layers' needs `step` (the layer step h > 0).")
            opts["step"] = positive_float("step", opts["step"])
            if opts["method"] is not None:
                raise ValueError("`method` applies to time='continuous' only; time='layers' applies the "
                                 f"scheme's layer map (got method={opts['method']!r}).")
            refuse_unused(given, ADAPTIVE_OPTIONS, "time='layers' applies the scheme's layer map once per `step`")
            weighted = {_angpt_layer: "angpt", _ngpt_layer: "ngpt"}.get(self.scheme.layer)
            if weighted is not None and not callable(self.model.alpha):
                alpha_step_weight(weighted, self.model, 0.0, opts["step"])     # a = α·step ≤ 1, before any work
            self.method = None
            return opts
        if not self.scheme.continuous:
            raise UnsupportedModelError(
                f"scheme={self.scheme.name!r} is defined only as a discrete layer map (no continuous-time "
                "ODE); use time='layers' with step=h.")
        method = opts["method"] or ("rk4" if opts["step"] is not None else "rk45")
        if isinstance(method, str) and method in IMPLICIT_METHODS:
            self.method = IMPLICIT_METHODS[method]
        elif isinstance(method, str) and method in METHODS:
            self.method = get_method(method)
        else:
            raise ValueError(f"`method` must be one of {sorted(METHODS) + sorted(IMPLICIT_METHODS)} (the implicit "
                             f"'radau' and 'bdf' for stiff runs of a few hundred tokens); got method={method!r}.")
        opts["method"] = method
        rtol = opts["rtol"]     # the implicit range first: 1e-15, NaN or 1 were told [1e-14, 1), then 1e-14 refused
        if self._implicit and isinstance(rtol, numbers.Real) and not isinstance(rtol, bool) \
                and not IMPLICIT_MIN_RTOL <= rtol < 1:
            raise ValueError(f"`rtol` must be in [{IMPLICIT_MIN_RTOL:.3g}, 1) with method={method!r} (scipy's implicit "
                             f"solvers go no lower; no accuracy at 1); got rtol={rtol!r}.")
        return check_step_options(opts, self.method, given)

    @property
    def _implicit(self) -> bool:
        return getattr(self.method, "implicit", False)

    #: dense (n·d')² arrays an implicit solver holds: the Jacobian, its copy, and the LU factors (Radau's complex
    #: one counts twice), d' = d (+1 with a radius)
    IMPLICIT_MATRICES = 5

    def _check_implicit_memory(self) -> None:
        """Refuse, before any work, tokens whose dense Jacobian the implicit solver cannot hold."""
        from .._memory import require

        blocks = self._jacobian_blocks
        size = self.y.size // blocks          # unknowns of one diagonal block of the Jacobian (all, without groups)
        what = f"{self.n} tokens" if blocks == 1 else f"each of the {blocks} groups of {self.n // blocks} tokens"
        require(self.IMPLICIT_MATRICES * 8.0 * size ** 2 * blocks,
                f"method={self.method.name!r} for {what} (dense Jacobians and factorizations of {size}² "
                f"entries; their cost grows like {size}³ per factorization)",
                "use 'rk45' (the implicit methods are for a few hundred tokens), or fewer tokens.")
        if size > IMPLICIT_WARN_UNKNOWNS:
            from .._errors import warn
            seconds = _LU_SECONDS_AT_WARN * (size / IMPLICIT_WARN_UNKNOWNS) ** 3 * blocks
            warn(f"method={self.method.name!r} for {what}: {size} unknowns, each LU factorization about "
                 f"{seconds:.2g} s on one core (0.6 s at 3000 measured on 2 vCPUs) and a stiff run makes hundreds; "
                 "the implicit methods are for a few hundred tokens ('rk45' otherwise).")

    # -- the physics --------------------------------------------------------------------------------
    def _field(self, t, theta, full: bool):
        raise NotImplementedError

    # True when _field normalizes the directions itself (the spectral velocity does it on its threads)
    FIELD_NORMALIZES = False
    # True when _field, given directions with a NaN or inf, raises NonFiniteError before any other work
    FIELD_CHECKS_FINITE = False

    def _directions(self, y, normalize=True):
        theta = y[:, :self.d]
        return theta / row_norms(theta)[:, None] if normalize else theta

    def _split(self, y, normalize=True):
        r = y[:, self.d] if self.scheme.has_radius else np.ones(len(y))
        return self._directions(y, normalize), r

    def rhs(self, t, y):
        """The scheme's ODE at the (possibly off-sphere) state y: same shape as y."""
        # a blown-up stage: NaN for the step control, not an error; a field that checks its directions finds it
        # in the norms it takes anyway (NonFiniteError, below), so a state of directions only is not read twice
        checked = not (self.FIELD_CHECKS_FINITE and y.shape[1] == self.d)
        if checked and not _all_true(np.isfinite(y), axis=None):
            return np.full_like(y, np.nan)
        n = len(y)
        theta = y if not checked and self.FIELD_NORMALIZES else self._directions(y, normalize=not self.FIELD_NORMALIZES)
        # without a radius r ≡ 1, and unused magnitudes are NaN: scalars broadcast through the scheme's row
        # (no per-token arrays of ones on the hot path)
        r = y[:, self.d] if self.scheme.has_radius else 1.0
        full = scheme_uses_magnitude(self.scheme, t, self.model)
        unit = self.scheme.speed in UNIT_SPEED_ROWS
        with np.errstate(over="ignore", invalid="ignore"):     # a non-finite field is diagnosed, not warned about
            try:
                f = self._field(t, theta, full)
                self._stage_log_z = f.log_z      # for a step integrand that needs Z (the softmax flow's)
            except NonFiniteError:
                if checked:         # not the stage's directions: they were finite
                    raise
                return np.full_like(y, np.nan)
            except NullDirectionError as err:       # (a ZeroVectorError) QKV-Norm: a token on a null direction
                self._speed_issue = self._undefined_attention(t, err)
                return np.full_like(y, np.nan)
            except ZeroVectorError:       # a stage that lost a token's direction blew up as a non-finite one does
                self._speed_issue = self._lost_direction(t)
                return np.full_like(y, np.nan)
            a_norm = f.norm if full else np.nan
            s = 1.0 if unit else self.scheme.speed(r, a_norm, t, self.model)
        # dividing by a unit speed is the identity, bit for bit: skip the (n, d) pass; s divides the velocity where
        # every value is finite and nonzero (s < 0: r < 0, below)
        unit, divides = (True, True) if unit else _speed_kind(s)
        if not divides:
            dtheta = self._over_overflowed_speed(f.tangential, s, r, a_norm, t)
            if dtheta is None:
                self._speed_issue = self._speed_diagnosis(s, a_norm, t, n)
                return np.full_like(y, np.nan)
        else:
            dtheta = f.tangential if unit else f.tangential / _column(s, n)
        self._speed_issue = None        # a rejected trial stage's diagnosis does not outlive it
        if not self.scheme.has_radius:
            return dtheta
        radial = f.radial if full else np.nan
        dr = self.scheme.radial(radial, a_norm, r, t, self.model) if self.scheme.radial is not None else 0 * r
        return np.concatenate([dtheta, _column(dr, n)], axis=1)

    def _over_overflowed_speed(self, v, s, r, a_norm, t):
        """:func:`meanfield._schemes.over_overflowed_speed` for this stepper's scheme and model."""
        return over_overflowed_speed(self.scheme, v, s, r, a_norm, t, self.model)

    _speed_issue = None
    #: the run's index of this stepper's first token, added to the token indices that its diagnoses name (a shard of
    #: meanfield.distributed_particles_sh holds a slice of the run's tokens)
    _token_offset = 0
    _layer_radius = None    # ‖x_new‖ of the last layer (its radius, for the diagnosis of one that overflowed)

    @staticmethod
    def _lost_direction(t) -> str:
        """The diagnosis of a Runge–Kutta stage at time ``t`` that sent a token to the origin."""
        return (f"A Runge–Kutta stage at t={t:.6g} sends a token to the origin (its direction is lost): the step is "
                "too large for the velocities.")

    @staticmethod
    def _undefined_attention(t, err: NullDirectionError) -> str:
        """The diagnosis of a run stopped where QKV-Norm's attention is undefined (``err`` names the matrix and the
        token that it maps to 0)."""
        return f"The attention is undefined at t={round(t, 12):.6g}: {err}"

    def _speed_diagnosis(self, s, a_norm, t, n) -> str:
        s = np.broadcast_to(s, (n,))
        bad = np.flatnonzero(~(np.isfinite(s) & (s != 0)))
        j = int(bad[0])
        why = f" There ‖A_j‖ = 0: {_ZERO_ATTENTION}, and the scheme divides by ‖A‖." if (
            np.ndim(a_norm) and a_norm[j] == 0) else ""
        return (f"The speed factor of scheme={self.scheme.name!r} is {s[j]:.3g} for token "
                f"{j + self._token_offset}"
                f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''} at t={round(t, 12):.6g}, so dθ/dt = P_θA/s is "
                f"undefined.{why}{_NO_SMALLER_STEP}")

    def _nonfinite(self, detail: str, step: float | None = None) -> str:
        """The diagnosis of a non-finite state: the speed factor's or the attention field's, when either was the
        cause; a radius that the radial law drives past float64's largest value within ``step`` (the step that
        failed); otherwise ``detail`` (a blown-up trial stage, which a smaller step can avoid)."""
        issue, self._speed_issue = self._speed_issue, None
        return issue or self._field_diagnosis() or self._radius_overflow(step) or detail

    def _radius_overflow(self, step) -> str:
        """Why a run with a radius failed, when a radius of the current (finite) state passes float64's largest
        value within ``step`` at its rate dr/dt (unnormalized attention at β near 709.78: Pre-LN's dr/dt = ⟨θ, A⟩
        ≈ e^β/n, so r reaches 1.8e308 at a finite time); "" otherwise.  The run stopped with "Non-finite state" or
        "Non-finite velocity", which named neither the radius nor its cause."""
        if step is None or not self.scheme.has_radius or not np.isfinite(self.y).all():
            return ""
        d = self.d
        r = self.y[:, d]
        if self.options["time"] == "layers":      # no rate: the layer's new radius itself (‖x_new‖ = inf)
            over = np.flatnonzero(np.isposinf(self._layer_radius)) if self._layer_radius is not None else []
            if not len(over):
                return ""
            j = int(over[np.argmax(r[over])])
            return (f"Token {j + self._token_offset}'s radius overflows float64 in the layer from t={self.t:.6g} "
                    f"(r = {r[j]:.4g} before it)"
                    f"{f' (and {len(over) - 1} more token(s))' if len(over) > 1 else ''}.{_NO_SMALLER_STEP}"
                    + (" With attention='unnormalized' the attention grows like e^β: lower β, or use "
                       "attention='softmax'." if not self.model.softmax else ""))
        with np.errstate(all="ignore"):
            rate = self.rhs(self.t, self.y)[:, d]
            reach = r + step * rate
        self._speed_issue = None
        over = np.flatnonzero(np.isfinite(rate) & (rate > 0) & ~np.isfinite(reach))
        if not over.size:
            return ""
        j = int(over[np.argmax(r[over])])
        with np.errstate(over="ignore"):
            left = (np.finfo(float).max - r[j]) / rate[j]
        return (f"Token {j + self._token_offset}'s radius overflows float64 at t={self.t:.6g}: r = {r[j]:.4g}, "
                f"growing at dr/dt = "
                f"{rate[j]:.4g} by the scheme's radial law, passes {np.finfo(float).max:.4g} within {left:.3g}"
                f"{f' (and {over.size - 1} more token(s))' if over.size > 1 else ''}.{_NO_SMALLER_STEP}"
                + (" With attention='unnormalized' dr/dt grows like e^β: lower β, or use attention='softmax'."
                   if not self.model.softmax else ""))

    def _field_diagnosis(self) -> str | None:
        """Why the attention field is not finite at the current (finite) state, or None when it is finite.

        Called only once a run has failed: it evaluates the field once more at the last finite state."""
        if not np.all(np.isfinite(self.y)):
            return None
        with np.errstate(all="ignore"):
            f = self._field(self.t, self._directions(self.y), True)
            bad = np.flatnonzero(~np.all(np.isfinite(f.A), axis=1))
        log_z = (None if f.log_z is None or self.model.softmax       # (heads, n) → the largest head's, per token
                 else np.max(np.where(np.isnan(f.log_z), -np.inf, f.log_z), axis=0))
        if log_z is not None and log_z.max() > _LOG_FLOAT_MAX:     # USA's Z is e^(log Z) and its A about as large
            over = np.flatnonzero(log_z > _LOG_FLOAT_MAX)
            j = int(np.argmax(log_z))
            return (f"attention='unnormalized': the attention overflows float64 for {over.size} token(s) at "
                    f"t={round(self.t, 12):.6g}: token {j + self._token_offset}'s weight sum Σ_k w_k "
                    f"e^(β⟨q, k_k⟩) is e^{log_z[j]:.6g}, "
                    f"beyond e^{_LOG_FLOAT_MAX:.2f}. A smaller step does not help; attention='softmax' has no such "
                    "limit, or lower β or the norms of Q and K.")
        if not bad.size:
            return None
        more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
        return (f"The attention field is not finite for token {int(bad[0]) + self._token_offset}{more} at "
                f"t={round(self.t, 12):.6g}, "
                "although the positions are finite. A smaller step does not help.")

    def velocity(self, t: float | None = None):
        """The scheme's velocity at the current state (time ``t``, default the current time).

        Returns
        -------
        dtheta : ndarray, shape (n, d)
            dθ_j/dt = P_θ A_j / s_j (tangent vectors; unit of 1/time).
        dr : ndarray, shape (n,) or None
            dr_j/dt for schemes with a radius, else None.

        Raises
        ------
        ValueError
            A token's speed factor is 0 or not finite (Peri-LN and nGPT divide by ‖A_j‖, which is 0 for a token
            that sees no mass, or with V = 0): the velocity is undefined, and the message says which token.
        """
        if not self.scheme.continuous:
            raise UnsupportedModelError(f"scheme={self.scheme.name!r} has no continuous-time velocity.")
        t = self.t if t is None else float(t)
        v = self.rhs(t, self.y)
        if self._speed_issue is not None:       # the rhs is NaN for every token: say why instead of returning it
            issue, self._speed_issue = self._speed_issue, None
            raise ValueError(issue.removesuffix(_NO_SMALLER_STEP))
        return (v[:, :self.d], v[:, self.d]) if self.scheme.has_radius else (v, None)

    # -- Backend protocol -------------------------------------------------------------------------
    def state(self) -> Particles:
        # the directions as the stepper holds them (projected after each step): normalized again they differ by
        # rounding, and a run resumed from this state took other steps (error estimates ~1e-7 apart)
        theta, r = self._split(self.y, normalize=False)
        radii = r.copy() if self.scheme.has_radius else self._radii_passive
        return Particles(theta.copy(), self.weights.copy(), None if radii is None else radii.copy())

    #: mean_alignment counts the self-pairs, |Σ w θ|², as for a density (the hybrid's particle phase stands for one)
    ALIGNMENT_SELF_PAIRS = False

    def _mean_alignment(self, theta) -> float:
        """:func:`meanfield.mean_alignment` of the tokens (or |Σ w θ|² with ALIGNMENT_SELF_PAIRS)."""
        if self.ALIGNMENT_SELF_PAIRS:
            mean = self.weights @ theta
            return float(mean @ mean)
        w = self.weights
        if self._squares_of is not w:       # Σ w², once per run (the weights are replaced, never changed in place)
            self._squares_of, self._squares = w, float(w @ w)
        return pair_alignment(w, theta, squares=self._squares)

    _squares_of = _squares = None

    _steps_before = 0     # steps of the saved part of a resumed run (carry_steps)

    #: how a run stopped by its step budget names it: (the option to raise, the steps it counts); a hybrid run's
    #: particle phase names its own, lest the advice point at the hybrid's ``max_steps`` (its spectral phase's)
    STEP_BUDGET = ("max_steps", "the steps of the whole run")

    def carry_steps(self, steps: dict) -> None:
        """The steps of the part of the run before its resume point (its step log): ``max_steps`` bounds the
        steps of the whole run."""
        self._steps_before = len(steps.get("t", ()))

    def _out_of_steps(self) -> bool:
        """Whether the run has taken its ``max_steps`` (then the detail says so)."""
        limit = self.options["max_steps"]
        if limit is None or self._steps_before + len(self.step_log["t"]) < limit:
            return False
        self.detail = self.step_budget_detail(limit, self.t)
        return True

    def step_budget_detail(self, limit: int, t: float) -> str:
        """Why a run stopped at time ``t`` after its ``max_steps`` = ``limit`` steps."""
        name, counted = self.STEP_BUDGET
        return (f"{name}={limit} steps taken by t={t:.6g} ({counted}, a resumed run's earlier ones included; not the "
                f"step size: raise `{name}`).")

    def _log_step(self, t, h) -> None:
        if self.step_integrand is not None:
            self.integral += np.nan if self._step_integral is None else self._step_integral
            self._step_integral = None
        self.step_log["t"].append(t)
        self.step_log["dt"].append(h)
        self.step_log["mean_alignment"].append(self._mean_alignment(self._directions(self.y)))

    def diagnostics(self) -> dict:
        theta, r = self._split(self.y)
        w = self.weights
        out = {"t": self.t, "mean_alignment": self._mean_alignment(theta)}
        if self.scheme.has_radius:
            out.update(mean_radius=float(w @ r), min_radius=float(r.min()), max_radius=float(r.max()))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):    # beyond float64 reads inf
            try:
                f = self._field(self.t, theta, True)
            except NullDirectionError:
                # QKV-Norm with a token on a null direction of Q, K or V: refused at the start (the first diagnostics
                # of a run come before any work); a run that reached it stopped there, with no attention to report
                if not self.step_log["t"]:
                    raise
                return out
            if self.scheme.continuous and self._layer_alpha_defined(self.t):
                speed = self.token_speeds(f, r, self.t)
                out["max_speed"] = float(np.max(speed))
                # Σ_j w_j |dθ_j/dt|², the spectral backend's ∫ρ|v|²dσ: continuous across a hybrid run's hand-off
                out["dissipation"] = float(w @ np.square(speed))
            out["max_attention"] = float(np.max(f.norm))
            if f.log_z is not None and not self.options.get("causal") and np.all(np.isfinite(f.log_z)):
                # (1/2β) Σ_h ∬ e^{β⟨q_h(x), k_h(y)⟩} dμ dμ: E_{β,D} with D = QᵀK for one head.
                # Shifted by the largest log Z: e^{log Z} alone overflows from 709.78, the energy from ~716.
                top = float(np.max(f.log_z))
                out["energy"] = float(np.exp(top - np.log(2 * self.model.beta)) * np.sum(np.exp(f.log_z - top) @ w))
            out.update(self._extra_diagnostics(f))
        return out

    def _layer_alpha_defined(self, t) -> bool:
        """Whether a layered run's α(t) is defined at ``t``, where the ODE speed of the diagnostics needs it (nGPT's
        s = ‖A‖/α_t).  The layers use α at t0, t0 + h, …, t_final − h only: a schedule α(t) = 1 − t is 0 at t_final = 1,
        and the speed there raised its ValueError after the last layer, losing the run.  The speed (``max_speed``,
        ``dissipation``) is then left out of that state's diagnostics (NaN in the Trajectory)."""
        if self.options["time"] != "layers" or not callable(self.model.alpha) or not self.scheme.uses_alpha:
            return True
        try:
            self.model.alpha_at(t)
        except ValueError:
            return False
        return True

    def token_speeds(self, f, r, t):
        """|dθ_j/dt| = |P_θA_j| / |s_j| of the field ``f`` at radii ``r`` and time ``t`` (the diagnostics' speeds; a
        distributed run's shards call it too).  Norms beyond float64's squares are taken scaled, and a speed factor
        that overflowed float64 with a finite ratio (Peri-LN, nGPT near β = 709.78) is divided out scaled (it read 0)."""
        s = self.scheme.speed(r, f.norm, t, self.model)
        speed = norms(f.tangential) / np.abs(s)
        if not _all(np.isfinite(s)):
            scaled = self._over_overflowed_speed(norms(f.tangential)[:, None], np.abs(s), r, f.norm, t)
            speed = speed if scaled is None else scaled[:, 0]
        return speed

    def _extra_diagnostics(self, field) -> dict:
        return {}

    def resume_options(self) -> dict:
        """Options that let a new backend continue exactly where this one stands (checkpoints)."""
        return {"first_step": self._h} if self.method is not None and self.method.adaptive else {}

    def resume_stage(self):
        """The first stage of the next adaptive step (the last stage of the step that reached this state, first
        same as last), when it is not recomputed at the next step: with it, a run resumed here takes exactly the
        steps of the uninterrupted one.  (Recomputed at the projected state it differs by rounding, and the error
        estimates by ~1e-7 relative: the step sizes drifted by ~1e-8.)"""
        return self._stage

    def carry_stage(self, t: float, stage) -> None:
        """Start the next adaptive segment, from time ``t``, with ``stage`` (a resume point's
        :meth:`resume_stage`) as its first stage; ignored unless the stepper stands at ``t`` with a state of
        that shape."""
        stage = np.asarray(stage)
        if t == self.t and stage.shape == self.y.shape and self.method is not None and self.method.adaptive:
            self._carried = (float(t), stage)

    def carry_grid_origin(self, t_saved: float) -> None:
        """The run resumes from a point between save times, ``t_saved`` being the last save time before it: the
        fixed steps (and layers) of the stretch the point interrupted sit on the uninterrupted run's grid, counted
        from ``t_saved`` (or Mix-LN's τ), not from the point.  Counted from the point, the remaining steps came out
        (b − p)/n instead of (b − a)/n and their times p + i·h instead of a + (k + i)·h, a few ulps apart: a
        time-dependent model (LN-Scaling, nGPT's α(t)) resumed mid-stretch ended 1.3e-15 to 5.5e-15 off the
        uninterrupted run.  An adaptive run keeps nothing (its steps start from the resume point's own step size)."""
        if _takes_fixed_steps(self.options):
            self._grid_origin = float(t_saved)

    def _take_grid_origin(self, a: float, cut: float | None = None) -> float:
        """Where the fixed-step grid of a stretch starting at ``a`` begins: the carried save time (or ``cut``, a
        switch time between it and ``a``) on the first stretch after a resume point, else ``a``."""
        origin, self._grid_origin = self._grid_origin, None
        if origin is None or not origin < a:
            return a
        return cut if cut is not None and origin < cut <= a else origin

    @staticmethod
    def _grid_index(origin: float, a: float, h: float) -> int | None:
        """k with origin + k·h == a exactly (the uninterrupted run's time after k steps), or None."""
        k = int(round((a - origin) / h))
        return k if origin + k * h == a else None

    def step_marker(self) -> tuple:
        """(t, steps logged, state identity): it changes with each step (the state array is replaced, never
        changed in place), so a run interrupted in the middle of a step can tell that the stepper is no longer
        where its last ``on_step`` left it (:meth:`meanfield._simulate._Run.mark_point`)."""
        return (self.t, len(self.step_log["t"]), id(self.y))

    def advance(self, t_target: float) -> Status:
        t_target = float(t_target)
        if t_target < self.t:
            raise ValueError(f"`t_target`={t_target} is before the current time t={self.t}.")
        if self.options["time"] == "layers":
            return self._advance_layers(t_target)
        for a, b in self._segments(self.t, t_target):
            if self._implicit:
                status = self._advance_implicit(a, b)
            else:
                status = self._advance_fixed(a, b) if not self.method.adaptive else self._advance_adaptive(a, b)
            if status is not Status.OK:
                return status
        self.t = t_target
        return Status.OK

    def _segments(self, t0, t1):
        """[t0, t1] split at the scheme's switch times (Mix-LN τ), where the velocity jumps."""
        cuts = [t0]
        if self.scheme.uses_tau and t0 < self.model.tau < t1:
            cuts.append(self.model.tau)
        cuts.append(t1)
        return [(cuts[i], cuts[i + 1]) for i in range(len(cuts) - 1) if cuts[i + 1] > cuts[i]]

    @staticmethod
    def _stage_time(t, a, b):
        # Keep stage times strictly inside the segment so a velocity that jumps at a segment end
        # (Mix-LN at τ) is always evaluated on the segment's own side.
        return min(max(t, math.nextafter(a, b)), math.nextafter(b, a))

    def _rk_step(self, t, h, y, a, b, k1=None, watch=None):
        """One Runge–Kutta step; with ``watch`` (a list), the largest stage speed and its token are kept in it
        (:meth:`_watch_stages`)."""
        lo, hi = math.nextafter(a, b), math.nextafter(b, a)     # _stage_time's bounds (np.nextafter's ufunc: ~1 µs)
        if self.step_integrand is None:
            def f(tt, yy):
                return self.rhs(min(max(tt, lo), hi), yy)
            return rk_step(self.method, f if watch is None else self._watch_stages(f, watch), t, y, h, k1)
        g = self.step_integrand
        values = [] if k1 is None else [self._first_stage_value(k1, min(max(t, lo), hi), y)]

        def f(tt, yy):
            k = self.rhs(min(max(tt, lo), hi), yy)
            with np.errstate(over="ignore", invalid="ignore"):  # a blown-up trial stage (|k|² = inf): its step fails
                values.append(g(k, self._stage_log_z))
            return k
        out = rk_step(self.method, f if watch is None else self._watch_stages(f, watch), t, y, h, k1)
        # the next step's first stage is this one's (a rejected step) or its last (first same as last)
        self._stage_values = ((k1, values[0]), (out[2], values[-1]))
        # the step's own quadrature of ∫ g dt, as for an extra equation dS/dt = g (inf − inf: the step fails)
        with np.errstate(over="ignore", invalid="ignore"):
            self._step_integral = h * sum(bj * v for bj, v in zip(self.method.b, values) if bj != 0)
        return out

    def _first_stage_value(self, k1, t, y) -> float:
        """The step integrand at a first stage computed outside the step: kept from the step that computed it, or
        from the segment's start (:meth:`_segment_first_stage`); else (a resume point's carried stage) its Z is
        computed again at the state."""
        for k, value in self._stage_values:
            if k is k1:
                return value
        self.rhs(t, y)
        with np.errstate(over="ignore", invalid="ignore"):
            return self.step_integrand(k1, self._stage_log_z)

    def _segment_first_stage(self, t, y):
        """The velocity at a segment's start (and, with a step integrand, its value there)."""
        k1 = self.rhs(t, y)
        if self.step_integrand is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                self._stage_values = ((k1, self.step_integrand(k1, self._stage_log_z)),)
        return k1

    #: ``g(stage, log_z)`` → float, or None: when set, each accepted Runge–Kutta step adds h Σ_i b_i g(k_i, log Z_i)
    #: over its stages k_i (the velocities dy/dt; log Z_i the attention's log-normalizer at that stage, shape
    #: (heads, n), or None where the backend does not compute it) to :attr:`integral`: ∫ g dt integrated by the
    #: method itself, with its order and its step control (the gradient flow's energy identity integrates ∫|v|²dμ
    #: so, the softmax flow's ∫ Z|u|²dμ).  An implicit method solves dS/dt = g as one more equation instead.  A layer
    #: step has no stages: it sets :attr:`integral` to NaN.
    step_integrand = None
    integral = 0.0
    _step_integral = None
    _stage_log_z = None
    _stage_values = ()

    def _project(self, y):
        return self._projected(y)[0]

    def _projected(self, y):
        """(``y`` with its directions projected to the sphere, whether it is known to pass :meth:`_bad_state`): every
        direction's norm finite and > TINY_NORM (so every direction finite, and finite once divided) and every
        radius finite and > 0, read from ranges the projection takes anyway."""
        d = self.d
        nrm, lo, hi = plain_row_norms(y if y.shape[1] == d else y[:, :d])
        if not regular(lo, hi):     # a zero row becomes NaN (the non-finite state is diagnosed); squares beyond float64
            with np.errstate(invalid="ignore"):
                return self._divided(y, row_norms(y[:, :d])), False
        if y.shape[1] == d:         # every norm finite and > 0 (the usual case): no NaN to silence
            return y / nrm[:, None], True
        lo, hi = norm_range(y[:, d])
        return self._divided(y, nrm), bool(lo > 0 and hi < np.inf)

    def _divided(self, y, nrm):
        """The state ``y`` with its directions divided by ``nrm``."""
        if y.shape[1] == self.d:     # no radius column: one division, no copy
            return y / nrm[:, None]
        y = y.copy()
        y[:, :self.d] /= nrm[:, None]
        return y

    def _bad_state(self, y, t) -> bool:
        """Whether the step that ends at ``y`` (time ``t``) from ``self.y`` failed; sets the detail."""
        if not np.isfinite(y).all():
            self.detail = self._nonfinite(f"Non-finite state at t={t:.6g}.", t - self.t)
            return True
        if self.scheme.has_radius and (y[:, self.d] <= 0).any():
            self.detail = self._radius_detail(y, t)
            return True
        return False

    def _radius_detail(self, y, t) -> str:
        """Which radius crossed 0, and how fast it was falling at the start of the failed step (``self.y``)."""
        d, j = self.d, int(np.argmin(y[:, self.d]))
        count = int(np.count_nonzero(y[:, d] <= 0))
        more = f" (and {count - 1} more)" if count > 1 else ""
        text = f"A radius reached ≤ 0 at t={t:.6g} (token {j + self._token_offset}{more}: r = {y[j, d]:.3g})."
        if self.options["time"] == "layers":
            return text
        r = float(self.y[j, d])
        with np.errstate(all="ignore"):
            rate = float(self.rhs(self.t, self.y)[j, d])
        if not rate < 0:
            return text
        return (f"{text} Before the step it was r = {r:.3g}, falling at dr/dt = {rate:.3g}: at that rate it reaches "
                f"0 within {r / -rate:.3g}. A smaller step follows it closer to 0; if dr/dt stays negative, the "
                "scheme's radial law drives this radius to 0 and no step size gets past that time.")

    def _vanishing_radius(self, k1) -> str:
        """Why the steps shrank, when a radius is about to reach 0 (the speed factor s ∝ r of every scheme with a
        radius then sends dθ/dt = P_θA/s to infinity); "" otherwise."""
        if not self.scheme.has_radius:
            return ""
        d = self.d
        j = int(np.argmin(self.y[:, d]))
        radii = self.y[:, d]
        with np.errstate(all="ignore"):
            rates = (k1 if k1 is not None else self.rhs(self.t, self.y))[:, d]
            vanishing = (rates < 0) & (radii < -1e-6 * rates)       # r / −dr/dt < 1e-6, without dividing
        r, rate = float(radii[j]), float(rates[j])
        if not vanishing[j]:
            return ""
        count = int(np.count_nonzero(vanishing))
        more = f" (and {count - 1} more token(s))" if count > 1 else ""
        return (f" Token {j + self._token_offset}'s radius is r = {r:.3g}, falling at dr/dt = {rate:.3g}: the scheme's "
                f"radial law drives it to 0 within {r / -rate:.3g}{more}{_VANISHING_TAIL}")

    def _advance_fixed(self, a, b):
        origin = self._take_grid_origin(a, self.model.tau if self.scheme.uses_tau else None)
        nsteps, h = self._fixed_steps(origin, b)
        first = self._grid_index(origin, a, h) if origin < a else 0
        if first is None:       # not on the grid (another `step`): the steps of [a, b] itself
            nsteps, h = self._fixed_steps(a, b)
            origin, first = a, 0
        a = origin
        unwatched = h * self._speed_bound() <= 0.5 * self.UNRESOLVED_STEP_ANGLE    # no stage can move a token 1 rad
        for i in range(first, nsteps):
            if self._out_of_steps():
                return Status.STEP_TOO_SMALL
            t = a + i * h
            watch = None if self._warned_unresolved_step or unwatched else [0.0, 0]
            y_new, _, _ = self._rk_step(t, h, self.y, a, b, watch=watch)
            y_new, good = self._projected(y_new)
            if not good and self._bad_state(y_new, t + h):
                self.t = t
                return Status.NON_FINITE
            if watch is not None:       # a step that failed has its own diagnosis
                self._check_step_resolves(t, h, *watch)
            self.y = y_new
            self.t = a + (i + 1) * h if i + 1 < nsteps else b
            self._log_step(self.t, h)
            self._notify(h)
        return Status.OK

    def _fixed_steps(self, a, b) -> tuple:
        """(n, h): the fixed steps of [a, b], n = (b − a)/``step`` rounded up (to the nearest where it is whole up to
        rounding), h = (b − a)/n."""
        n = (b - a) / self.options["step"]
        nsteps = max(1, int(round(n)) if abs(n - round(n)) < 1e-9 * max(1.0, n) else int(np.ceil(n)))
        return nsteps, (b - a) / nsteps

    #: A fixed Runge–Kutta step in which some stage moves a token by more than this angle (h·|dθ/dt|, radians) warns
    #: (:meth:`_check_step_resolves`).  One radian is where a step is unresolved whatever the field: a straight step
    #: of length 1 leaves the sphere by a factor √2 and the projection shortens its arc to π/4, and classical RK4 on
    #: a plain rotation at h·ω = 1 already loses 0.6% of the amplitude and 5.6e-3 rad of phase per step (its
    #: stability limit is h·ω = 2√2).  It is a floor, not an accuracy test (a field that varies on an angular scale
    #: 1/β needs h·|v| ≪ 1/β); it catches the runs whose results are garbage (USA at β = 700, 200 tokens,
    #: step 1e-4: h·|v| = 1.4e296, the two particle backends 1.9 apart, Status OK).
    UNRESOLVED_STEP_ANGLE = 1.0
    _warned_unresolved_step = False

    def _speed_bound(self) -> float:
        """An upper bound of |dθ/dt| at every Runge–Kutta stage, where the backend knows one before the run (a fixed
        step ``h`` with ``h·bound`` ≤ half of :attr:`UNRESOLVED_STEP_ANGLE` then skips watching the stages, whose
        check cannot fire); inf here."""
        return math.inf

    def _watch_stages(self, f, watch):
        """``f`` that also keeps in ``watch`` = [largest |dθ/dt| so far, its token] over the stages it returns: the
        velocities the step computes anyway, O(n·d) per stage, their bits untouched."""
        d = self.d

        def watched(tt, yy):
            k = f(tt, yy)
            v = k[:, :d] if k.shape[1] > d else k
            sq = einsum("ij,ij->i", v, v)       # (einsum raises no floating-point warnings: no errstate)
            if not sq.size:
                return k
            j = int(sq.argmax())
            top = float(sq[j])
            if top < math.inf:
                speed = math.sqrt(top)
            else:       # squares beyond float64 (USA near β = 709.78: rows of ~1e300) or a NaN row: scaled norms
                with np.errstate(over="ignore", invalid="ignore"):
                    rows = np.nan_to_num(row_norms(v), nan=0.0, posinf=np.inf)
                j = int(rows.argmax())
                speed = float(rows[j])
            if speed > watch[0]:
                watch[:] = [speed, j]
            return k
        return watched

    def _check_step_resolves(self, t, h, speed, j) -> None:
        """Warn (MeanfieldWarning, once per run) where a fixed Runge–Kutta step of ``h`` from time ``t`` has a stage
        whose velocity |dθ/dt| = ``speed`` (token ``j``) moves the token by more than :attr:`UNRESOLVED_STEP_ANGLE`
        radians.  The layer maps (``time="layers"``) are not checked: a layer of step h is the model itself (a
        residual layer; h = 1 is one transformer layer per unit time), not an approximation of the ODE that a
        smaller h would make right, and h‖A‖ > 1 is a regime of the model (docs/model.md, the layer maps).  An
        infinite speed is left to the run's own diagnosis (a non-finite state)."""
        move = h * speed
        if not (math.isfinite(move) and move > self.UNRESOLVED_STEP_ANGLE):
            return
        from .._errors import warn
        self._warned_unresolved_step = True
        warn(f"backend={self.name!r}: the fixed step h={h:.3g} (method={self.method.name!r}, step="
             f"{self.options['step']!r}) does not resolve the motion at t={t:.6g}: in the step from there token "
             f"{j + self._token_offset} moves h·|dθ/dt| = {move:.3g} rad (|dθ/dt| = {speed:.3g} at a Runge–Kutta "
             f"stage), more than {self.UNRESOLVED_STEP_ANGLE:g} rad, and the results are not accurate. Use a smaller "
             f"`step` (well below 1/|dθ/dt| = {1 / speed:.3g}), or an adaptive method (method='rk45', the default "
             "without `step`).")

    def _error_norm(self, err, y, y_new):
        # max |err| / (atol + rtol·max(|y|, |y_new|)), computed in place (the same operations, the same bits)
        scale = np.maximum(np.abs(y), np.abs(y_new))
        scale *= self.options["rtol"]
        scale += self.options["atol"]
        ratio = np.abs(err)
        ratio /= scale
        return float(norm_range(ratio)[1])       # (its max, NaN where there is one, without max()'s wrapper)

    def _initial_step(self, a, b, f0):
        # Hairer, Nørsett & Wanner (1993), II.4 (as scipy's select_initial_step), max norm.  The caller raises the
        # estimate to min_step.  Its norms |f|/(atol + rtol|y|) overflow only where |f0| passes ~1.8e298 at the
        # default tolerances (USA near β = 709.78, dr/dt ≈ e^β/2): d1 = inf makes h0 = 0 and the estimate 0, where
        # the scaled one is below (0.01/1.8e308)^(1/(order+1)) ≈ 1e-52 anyway: either way the run starts at
        # min_step (USA Pre-LN, two orthogonal tokens: 0 at β = 700, 1.0e-130 at β = 300; both runs then reach
        # r = 1 + t e^β/2 to 2e-16 in 19 steps from min_step = 1e-12).
        o = self.options
        y0 = self.y
        scale = o["atol"] + o["rtol"] * np.abs(y0)
        with np.errstate(over="ignore", invalid="ignore"):    # a non-finite f0 stops the run, diagnosed
            d0, d1 = np.max(np.abs(y0) / scale), np.max(np.abs(f0) / scale)
        h0 = min(first_step_guess(d0, d1), b - a)
        f1 = self.rhs(self._stage_time(a + h0, a, b), y0 + h0 * f0)
        with np.errstate(over="ignore", invalid="ignore"):
            d2 = np.max(np.abs(f1 - f0) / scale) / h0
        return first_step_estimate(h0, d1, d2, self.method.order)

    def _advance_adaptive(self, a, b):
        o, tab = self.options, self.method
        max_step = o["max_step"] or np.inf
        carried, self._carried = self._carried, None
        if carried is not None and carried[0] == a == self.t:
            k1 = carried[1]     # a resume point's: the uninterrupted run had it from the step that reached a
        else:
            k1 = self._segment_first_stage(self._stage_time(a, a, b), self.y)   # fresh at every segment start
        h = self._h if self._h is not None else max(self._initial_step(a, b, k1), o["min_step"])
        t = a
        rejected, en, h_try = False, 0.0, h
        while t < b:
            if self._out_of_steps():
                self.t, self._h = t, h
                return Status.STEP_TOO_SMALL
            h = min(h, max_step)
            bad_k1 = k1 is not None and not _all_true(np.isfinite(k1), axis=None)
            if h < o["min_step"] or bad_k1:
                self.t = t
                if bad_k1 or (rejected and en == np.inf):
                    self.detail = self._nonfinite(f"Non-finite velocity at t={t:.6g} (down to step {h:.3g}).",
                                                  h_try)    # the step that failed
                    return Status.NON_FINITE
                speed = "" if k1 is None else f", where the largest velocity component is {np.max(np.abs(k1)):.3g}"
                self.detail = f"Step {h:.3g} < min_step={o['min_step']:.3g} at t={t:.6g}{speed}." + \
                    self._vanishing_radius(k1)
                return Status.STEP_TOO_SMALL
            last = t + h >= b - 1e-12 * max(1.0, abs(b))
            h_try = b - t if last else h
            y_new, err, k_last = self._rk_step(t, h_try, self.y, a, b, k1)
            with np.errstate(invalid="ignore"):
                en = self._error_norm(err, self.y, y_new)
            if not math.isfinite(en):
                en = np.inf
            if en <= 1.0:
                y_new, good = self._projected(y_new)
                if not good and self._bad_state(y_new, t + h_try):
                    self.t = t
                    return Status.NON_FINITE
                self.y = y_new
                t = b if last else t + h_try
                self.t = t
                self._log_step(t, h_try)
                self.step_log["error"].append(en)
                self.step_log["rejected"].append(rejected)
                # first-same-as-last: the last stage is f(t + h, y_new) and the right-hand side depends
                # on θ/‖θ‖ only, so it is exact at the projected state too
                k1 = k_last if tab.fsal else None
                self._stage = None if last else k1      # a segment's end: the next segment starts afresh
                h_next = next_step(h_try, en, tab.error_order)
                if rejected:
                    h_next = min(h_next, h_try)
                # a clipped last step says little about the nominal step: never shrink h because of it
                h = max(h, h_next) if last else h_next
                rejected = False
                self._h = h            # the step wanted from this state on: a checkpoint here resumes with it
                self._notify(h_try)
            else:
                h = next_step(h_try, en, tab.error_order) if math.isfinite(en) else 0.2 * h_try
                rejected = True
        self._h = h
        return Status.OK

    def _advance_implicit(self, a, b):
        from ._implicit import advance_implicit     # scipy's solvers: imported by the runs that use them
        return advance_implicit(self, a, b)

    #: whether :meth:`_jacobian` has a closed form for this model (asked once per implicit segment, without building it)
    _has_jacobian = False

    #: independent diagonal blocks of the Jacobian (groups of tokens that do not interact), of equal size
    _jacobian_blocks = 1

    def _jacobian(self, t, y):
        """∂(dy/dt)/∂y at the state ``y`` as a dense (y.size, y.size) array, or None (the implicit solvers then
        estimate it by finite differences).  A backend overrides it where it has the closed form."""
        return None

    def _notify(self, h):
        """Report an accepted step to a progress hook set by :func:`meanfield.simulate` (if any)."""
        if getattr(self, "on_step", None) is not None:
            self.on_step(self.t, h)

    # -- layer maps -------------------------------------------------------------------------------
    def check_save_times(self, times) -> None:
        """Refuse, before any work, save times that the layer map cannot stop at (not whole layers), and a fixed
        ``step`` that would take more than :data:`MAX_FIXED_STEPS` steps to ``t_final``."""
        check_fixed_step_count(self.options, times[0], times[-1])
        if self.options["time"] != "layers":
            return
        for a, b in zip(times[:-1], times[1:]):
            self._layer_count(a, b)

    def _layer_count(self, t0, t_target) -> int:
        h = self.options["step"]
        n = (t_target - t0) / h
        nl = int(round(n))
        # the slack covers the rounding of the count (0.3/0.1 = 2.9999999999999996) and of the times themselves
        # (t0 = 1e8), both in layers: a slack of 1e-9 layers however short the span let step = 1e10 (or t_final =
        # 1e-12 with step = 0.1) pass as 0 layers, returning the initial state with status OK
        if abs(n - nl) > 1e-9 * n + 1e-12 * (abs(t0) + abs(t_target)) / h:
            # the step in full and the count to 12 digits: a near miss (a float32 step 0.10000000149…) printed
            # as "step=0.1 … is 10 layers" contradicted the refusal
            longer = (f" `step` must be at most {float(t_target) - float(t0):.12g}, the span it is to cover (one "
                      "layer or more)." if nl == 0 else "")
            raise ValueError(f"time='layers': t_final and the save times must be whole numbers of layers of "
                             f"step={h!r}; {float(t_target):.12g} − {float(t0):.12g} is {n:.12g} layers "
                             f"({nl} layers end at {float(t0) + nl * h:.17g}).{longer}")
        return nl

    def _layer_time(self, t, h):
        """A layer's time, snapped onto the scheme's switch time (Mix-LN τ) when it is τ up to rounding: the
        layer at t = τ is on the "t ≤ τ" side however t was accumulated (3·0.1 > 0.3 in floating point)."""
        tau = self.model.tau
        if self.scheme.uses_tau and abs(t - tau) <= 1e-9 * h:
            return tau
        return t

    def _advance_layers(self, t_target):
        h = self.options["step"]
        nl = self._layer_count(self.t, t_target)
        start, first = self.t, 0    # layer i of this stretch at start + i·h: the run's t0 need not be a multiple of h
        origin = self._take_grid_origin(self.t)
        k = self._grid_index(origin, self.t, h)
        if k is not None and k > 0:
            start, first = origin, k
        for i in range(first, first + nl):
            if self._out_of_steps():
                return Status.STEP_TOO_SMALL
            t = self._layer_time(start + i * h, h)
            y_new = self._layer(t, h)
            if self._bad_state(y_new, t + h):
                self.t = t
                return Status.NON_FINITE
            self.y = y_new
            self.t = start + (i + 1) * h
            self._log_step(self.t, h)
            self._notify(h)
        self.t = t_target
        return Status.OK

    def _layer(self, t, h):
        """The state after one layer of the scheme's map from the current state at time ``t`` (non-finite where the
        layer failed: :meth:`_bad_state` diagnoses it)."""
        has_r = self.scheme.has_radius
        theta, r = self._split(self.y)
        x = theta * r[:, None] if has_r else theta

        def attn(z):
            try:
                A = self._field(t, z / np.linalg.norm(z, axis=1, keepdims=True), True).A
            except NullDirectionError as err:        # a NaN layer, diagnosed
                self._speed_issue = self._undefined_attention(t, err)
                return np.full_like(z, np.nan)
            if self.scheme.layer_normalizes_attention:      # a zero A has no direction
                zero = np.flatnonzero(~np.any(A, axis=1))
                if zero.size:
                    self._speed_issue = (f"The layer map of scheme={self.scheme.name!r} normalizes the attention, "
                                         f"but ‖A_j‖ = 0 for token {zero[0] + self._token_offset}"
                                         f"{f' (and {zero.size - 1} more)' if zero.size > 1 else ''} at "
                                         f"t={t:.6g}: {_ZERO_ATTENTION}. A smaller step does not help.")
            return A

        with np.errstate(over="ignore", invalid="ignore"):      # a non-finite layer is diagnosed by _bad_state
            x_new = self.scheme.layer(x, attn, h, t, self.model)
            rad = self._layer_radius = norms(x_new)
            return (np.concatenate([x_new / rad[:, None], rad[:, None]], axis=1) if has_r
                    else x_new / rad[:, None])
