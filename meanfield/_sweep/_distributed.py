"""Distributed particles-sh: the tokens split into shards on dask workers, the coefficients reduced per stage.

The spectral velocity of :func:`meanfield.attention_field_sh` has two halves
(:mod:`meanfield._attention`): the coefficients μ̂_ℓm = Σ_j w_j conj Y_ℓm(θ_j) (one adjoint
non-uniform transform, linear in the tokens) and the field at the tokens from μ̂ (Funk–Hecke
multipliers, non-uniform syntheses).  A shard of tokens lives on one worker (a dask actor) for the
whole run.  At every Runge–Kutta stage each shard sends its partial μ̂ (O(L²) numbers), the driver
adds them and sends the sum back, and each shard evaluates the velocity of its own tokens and forms
its next stage locally.  Only O(L²) numbers per shard and stage cross the network, so N is bounded
by the cluster's memory; the integrator is the particles-sh backend's (its adaptive pairs, whose step's error norm
is the largest of the shards' and accepted or rejected for all; fixed-step RK4), or with
``time="layers"`` its layer map (one reduction per layer), with the same arithmetic, so the result equals
the single-process run to rounding (the sum of the shards' coefficients differs from the one-shot
transform in the last bits).

Under QKV-Norm a token that V maps to 0 has no value: a shard returns the diagnosis instead of its μ̂, so the
run ends as the single-process one does (refused at the start, else ``Status.NON_FINITE`` with the last good
state kept) rather than with an exception out of a worker.
"""
from __future__ import annotations

import contextlib
import re
import time

import numpy as np

from .._integrators import _combine as _stage_sum, first_step_estimate, first_step_guess, next_step
from .._norms import norms as _norms

_SH_OPTIONS = ("tol", "lmax", "epsilon", "threads")
_STEP_OPTIONS = ("method", "time", "rtol", "atol", "first_step", "max_step", "min_step", "max_steps")
# bytes per token that a shard holds while it steps: 530 measured (tracemalloc peak of a Shard's RK4 stages,
# diagnostics and state, N = 4·10⁵, Post-LN and Pre-LN), most of it the spectral velocity's workspace (32 floats)
SHARD_BYTES_PER_TOKEN = 560.0
GATHER_BYTES_PER_TOKEN = 40.0     # a gathered state: position (3 floats), weight and radius


def _shard_class():
    """The worker-side stepper: the particles-sh backend whose field comes from preset coefficients."""
    from .._attention import _workspace
    from ..backends._particles_sh import ParticlesSHBackend

    class ShardStepper(ParticlesSHBackend):
        def _field(self, t, theta, full):
            return self._sh.field(self._mu, theta, full, self._ws, geometry_ready=True)

        def coefficients(self, y):
            """This shard's μ̂ at the state y (its geometry stays in ``self._ws`` for the next field)."""
            theta, _ = self._split(y)
            self._ws = _workspace(self._key, len(theta))
            return self._sh.coefficients(theta, self.weights, self._ws, offset=self._token_offset)

        # The diagnoses of a failed step evaluate the field at the step's start (as in one process); the shard's
        # field is that of its last Runge–Kutta stage (μ̂ and geometry), which gave another dr/dt (−0.391 for
        # −0.586).  _mu_start: the total μ̂ of the current state (Shard sets it when the first stage receives it).
        _mu_start = None

        def _at_start(self):
            self._mu = self._mu_start
            self.coefficients(self.y)           # the geometry of the current state (this shard's μ̂ is not needed)

        def _radius_detail(self, y, t):
            self._at_start()
            return super()._radius_detail(y, t)

        def _field_diagnosis(self):
            self._at_start()
            return super()._field_diagnosis()

    return ShardStepper


_MORE = re.compile(r" \(and (\d+) more( token\(s\))?\)")
_TOKEN = re.compile(r"(?<=[Tt]oken )\d+")
_RADIUS = re.compile(r"A radius reached ≤ 0 at t=\S+ \(token \d+(?: \(and \d+ more\))?: r = ([^)]+)\)")
_NUMBER = re.compile(r"(?<!head )[-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|nan|inf)")     # (a head is part of the kind)


def _shards_detail(details: list) -> str:
    """The shards' diagnoses (non-empty, in token order) as one: the first shard's, its "token j (and K more)" counting
    the tokens of every shard that gives the same diagnosis (the same text but for its numbers), as the one-process
    diagnosis counts all the tokens.  Each shard's message counted its own tokens only: with V = 0 and ten tokens
    on two shards, "token 0 (and 4 more)" for the "(and 9 more)" of one process."""
    # a shard whose tokens only received the NaN of another's failed stage says "Non-finite state at t=…"; one
    # process gives the diagnosis of the stage that failed
    details = [d for d in details if not d.startswith("Non-finite state at t=")] or details
    radii = [_RADIUS.match(d) for d in details]
    if all(radii):      # one process names the most negative radius of all tokens (the first shard's is any)
        details = [d for _, d in sorted(zip((float(m.group(1)) for m in radii), details), key=lambda p: p[0])]
    first = details[0]
    if not _TOKEN.search(first):
        return first

    def kind(d):
        return _NUMBER.sub("#", _MORE.sub("", d))

    def count(d):
        m = _MORE.search(d)
        return 1 + int(m.group(1)) if m else 1
    total = sum(count(d) for d in details if kind(d) == kind(first))
    if total == count(first):
        return first
    if _MORE.search(first):
        return _MORE.sub(lambda m: f" (and {total - 1} more{m.group(2) or ''})", first, count=1)
    if first.startswith("Token "):      # "Token j's radius overflows … within x." names the others at its end
        from ..backends._stepper import _NO_SMALLER_STEP
        head, sep, tail = first.partition("." + _NO_SMALLER_STEP)
        return f"{head} (and {total - 1} more token(s)){sep}{tail}"
    m = _TOKEN.search(first)
    return f"{first[:m.end()]} (and {total - 1} more){first[m.end():]}"


def _vanishing_radii(parts) -> str:
    """The shards' accounts of a radius about to reach 0 ((largest velocity component, smallest radius, account) of
    :meth:`Shard.stall_detail`) as one process gives it: the smallest radius of all named, the tokens of every
    shard counted."""
    from ..backends._stepper import _VANISHING_TAIL

    first = min(parts, key=lambda p: p[1])[2]
    if not first:       # one process tells only of the smallest radius of all
        return ""
    told = [p for p in parts if p[2]]
    total = sum(1 + int(m.group(1)) if (m := _MORE.search(p[2])) else 1 for p in told)
    more = f" (and {total - 1} more token(s))" if total > 1 else ""
    return _MORE.sub("", first).replace(_VANISHING_TAIL, more + _VANISHING_TAIL)


class Shard:
    """A dask actor holding a shard of tokens and its Runge–Kutta stages (the driver only sees μ̂)."""

    def __init__(self, model, data, options, index, offset=0):
        from .._integrators import get_method
        from .._measures import Particles

        cls = _shard_class()
        pos = data["positions"]
        if pos is None:   # generated here: i.i.d. uniform on S² from this shard's seed
            rng = np.random.default_rng(data["seed"])
            pos = rng.standard_normal((data["n"], 3))
            pos /= np.linalg.norm(pos, axis=1, keepdims=True)
            data = {**data, "weights": np.full(data["n"], data["weight"])}
        radii = data.get("radii")
        self.s = cls(model, Particles(pos, None, radii), **options)
        self.s.weights = np.array(data["weights"], dtype=float)
        self.s._key = ("distributed-shard", index)
        self.s._token_offset = int(offset)     # a diagnosis names a token by its index in the run
        layers = self.s.options["time"] == "layers"
        self.tab = None if layers else get_method(self.s.options["method"])
        self.pending = None
        self.watch = [0.0, 0]     # the step's largest stage speed and its token (ParticleStepper._watch_stages)
        self.busy = 0.0   # seconds spent computing in this actor's methods (benchmarks read it)

    # -- one Runge–Kutta step, stage by stage (meanfield._integrators.rk_step's sums, split by stage) --
    def _settle(self):
        """Commit the state of the last successful step (the driver goes on only when every shard succeeded); an
        embedded pair's step also hands over its last stage, the next step's first (first same as last)."""
        if self.pending is not None:
            self.s.y, self.s.t, k_last = self.pending
            if k_last is not None:
                self.k1 = k_last
            self.pending = None

    def _coefficients(self, y, t=None):
        """This shard's μ̂ at y, or (QKV-Norm, a token that V maps to 0) the message naming V and the token: the
        driver ends the run with it, as the single-process stepper does, where an exception would leave the worker.

        A Runge–Kutta stage (at time ``t``) that is not finite, or that sent a token to the origin, has a NaN μ̂: the
        step then fails as in one process (every later stage NaN, the diagnosis that of the stage that failed), where
        the geometry's ZeroVectorError came out of the worker."""
        from .._attention import NullDirectionError
        from .._validate import ZeroVectorError

        try:
            if t is not None and not np.isfinite(y).all():
                return np.full_like(self.s._mu_start, np.nan)
            return self.s.coefficients(y)
        except NullDirectionError as err:
            return str(err)
        except ZeroVectorError:
            if t is None:
                raise
            self.s._speed_issue = self.s._lost_direction(t)
            return np.full_like(self.s._mu_start, np.nan)

    def _rhs(self, mu, t_stage):
        """The stage's velocity of this shard's tokens from the total μ̂ ``mu``; NaN when ``mu`` is (a shard's stage
        failed), as one process's rhs of a NaN stage, keeping the diagnosis of the stage that failed."""
        if not np.isfinite(mu).all():
            return np.full_like(self.yi, np.nan)
        return self.s._watch_stages(self.s.rhs, self.watch)(t_stage, self.yi)

    def start(self):
        """μ̂ of the current state (stage 0 of the next step), or the diagnosis of :meth:`_coefficients`."""
        t0 = time.perf_counter()
        self._settle()
        self.ks, self.yi, self.watch = [], self.s.y, [0.0, 0]
        mu = self._coefficients(self.yi)
        self.busy += time.perf_counter() - t0
        return mu

    def stage(self, mu, t_stage, h, t_next):
        """Velocity of the last stage (at ``t_stage``) from the total μ̂; returns this shard's μ̂ of the next stage, at
        ``t_next`` (or the diagnosis of :meth:`_coefficients`)."""
        t0 = time.perf_counter()
        self._settle()
        s, tab = self.s, self.tab
        s._mu = mu
        if not self.ks:
            s._mu_start = mu        # the first stage is at the current state
        self.ks.append(self._rhs(mu, t_stage))
        i = len(self.ks)
        self.yi = s.y + _stage_sum(tab._terms[0][i], self.ks, h)
        mu = self._coefficients(self.yi, t_next)
        self.busy += time.perf_counter() - t0
        return mu

    def finish(self, mu, t_stage, h, t_new):
        """Last stage and the update: ("", μ̂ of the new state, watch) or (diagnosis, None, watch) for a bad state,
        where watch = [largest stage speed |dθ/dt| of the step, its token in the run] (the driver's resolution check).

        The new state becomes current at the next call unless :meth:`discard` comes first (one
        exchange per stage: the commit needs no round trip of its own).  A new state whose μ̂ is undefined
        (QKV-Norm) is a good state, as for the single-process stepper: its μ̂ is then the diagnosis of
        :meth:`_coefficients`, and the next step cannot start.
        """
        t0 = time.perf_counter()
        s, tab = self.s, self.tab
        s._mu = mu
        self.ks.append(self._rhs(mu, t_stage))
        y_new = s.y + _stage_sum(tab._terms[2], self.ks, h)
        y_new = s._project(y_new)
        self.ks, self.yi = [], None
        watch = [self.watch[0], self.watch[1] + s._token_offset]
        self.watch = [0.0, 0]
        if s._bad_state(y_new, t_new):
            self.busy += time.perf_counter() - t0
            return s.detail, None, watch
        self.pending = (y_new, t_new, None)
        self.ks, self.yi = [], y_new
        mu = self._coefficients(y_new)
        self.busy += time.perf_counter() - t0
        return "", mu, watch

    def layer(self, mu, t, h, t_new):
        """One layer of the scheme's map (``time="layers"``) from the current state, whose total μ̂ is ``mu``:
        as :meth:`finish`, ("", μ̂ of the new state) or (diagnosis, None)."""
        t0 = time.perf_counter()
        self._settle()
        s = self.s
        s._mu = s._mu_start = mu
        y_new = s._layer(t, h)
        if s._bad_state(y_new, t_new):
            self.busy += time.perf_counter() - t0
            return s.detail, None
        self.pending = (y_new, t_new, None)
        mu = self._coefficients(y_new)
        self.busy += time.perf_counter() - t0
        return "", mu

    # -- the embedded pairs (rk45, rk23): the driver accepts or rejects a step on the largest error of all shards --
    def first_stage(self, mu, t):
        """The velocity at the current state (whose total μ̂ is ``mu``; :meth:`start` set its geometry), the first
        stage of an adaptive span, kept as ``k1``.  Returns (d0, d1, finite): this shard's largest scaled |y| and |k1|
        for the initial step estimate (:meth:`ParticleStepper._initial_step`), and whether k1 is finite."""
        t0 = time.perf_counter()
        self._settle()
        s = self.s
        s._mu = s._mu_start = mu
        self.k1 = s.rhs(t, s.y) if np.isfinite(mu).all() else np.full_like(s.y, np.nan)
        o = s.options
        self._scale = o["atol"] + o["rtol"] * np.abs(s.y)
        with np.errstate(over="ignore", invalid="ignore"):
            d0, d1 = np.max(np.abs(s.y) / self._scale), np.max(np.abs(self.k1) / self._scale)
        self.busy += time.perf_counter() - t0
        return float(d0), float(d1), bool(np.isfinite(self.k1).all())

    def probe_step(self, h0, t_probe):
        """μ̂ at y + h0·k1, the initial step estimate's trial point (at time ``t_probe``)."""
        t0 = time.perf_counter()
        self.yi = self.s.y + h0 * self.k1
        mu = self._coefficients(self.yi, t_probe)
        self.busy += time.perf_counter() - t0
        return mu

    def probe_rate(self, mu, t_probe, h0):
        """d2 = max |f(trial point) − k1| / (scale · h0) over this shard: how fast the velocity changes."""
        t0 = time.perf_counter()
        self.s._mu = mu
        f1 = self._rhs(mu, t_probe)
        with np.errstate(over="ignore", invalid="ignore"):
            d2 = float(np.max(np.abs(f1 - self.k1) / self._scale) / h0)
        self.busy += time.perf_counter() - t0
        return d2

    def begin(self, mu, h, t_next):
        """The first stage of a step of ``h`` from the current state (whose total μ̂ is ``mu``): ``k1``, the last stage
        of the step accepted before; returns this shard's μ̂ of the second stage, at ``t_next``."""
        t0 = time.perf_counter()
        self._settle()
        s = self.s
        s._mu_start = mu
        self.ks = [self.k1]
        self.yi = s.y + _stage_sum(self.tab._terms[0][1], self.ks, h)
        mu = self._coefficients(self.yi, t_next)
        self.busy += time.perf_counter() - t0
        return mu

    def finish_embedded(self, mu, t_stage, h, t_new):
        """Last stage of an embedded pair's step: (this shard's error norm, "" or the diagnosis of a bad new state).
        The new state is checked only where the error is accepted here (≤ 1); it becomes current at the next call
        unless :meth:`reject` or :meth:`discard` comes first, and its last stage becomes the next step's first."""
        t0 = time.perf_counter()
        s, tab = self.s, self.tab
        s._mu = mu
        self.ks.append(self._rhs(mu, t_stage))
        y_new = s.y + _stage_sum(tab._terms[2], self.ks, h)
        err = _stage_sum(tab._terms[3], self.ks, h)
        with np.errstate(invalid="ignore"):
            en = s._error_norm(err, s.y, y_new)
        en = en if np.isfinite(en) else np.inf
        k_last, self.ks, self.yi = self.ks[-1], [], None
        detail = ""
        if en <= 1.0:
            y_new = s._project(y_new)
            if s._bad_state(y_new, t_new):
                detail = s.detail
            else:
                self.pending = (y_new, t_new, k_last if tab.fsal else None)
        self.busy += time.perf_counter() - t0
        return en, detail

    def reject(self):
        """Drop the step just tried (its error was too large on some shard); ``k1`` stays the current state's."""
        self.pending = None

    def failure_detail(self, detail, step):
        """This shard's diagnosis of a run whose velocity stopped being finite (the single-process
        :meth:`ParticleStepper._nonfinite`), or ``detail`` when it has none of its own."""
        return self.s._nonfinite(detail, step)

    def stall_detail(self):
        """(largest |velocity component| of the current first stage, smallest radius, the single-process account of
        a radius about to reach 0 or "") for the message of a step below ``min_step``."""
        s = self.s
        radius = float(np.min(s.y[:, s.d])) if s.scheme.has_radius else np.inf
        with np.errstate(invalid="ignore"):
            top = float(np.max(np.abs(self.k1)))
        return top, radius, s._vanishing_radius(self.k1)

    def discard(self):
        """Drop the last step (another shard failed) and return μ̂ of the state before it."""
        self.pending = None
        return self.start()

    # -- saved states and diagnostics --------------------------------------------------------------
    def busy_seconds(self):
        return self.busy

    def ping(self, x=None):
        return x

    def weights(self):
        return np.asarray(self.s.weights)

    def state(self):
        self._settle()
        s = self.s
        theta, r = s._split(s.y)
        radii = r if s.scheme.has_radius else s._radii_passive
        return {"positions": theta, "radii": None if radii is None else np.array(radii)}

    def diagnostic_parts(self, mu, t):
        """Sums, minima and maxima over this shard that the driver combines into the backend's diagnostics;
        ``mu`` None: the attention is undefined at this state (QKV-Norm), and so are the parts that need it."""
        self._settle()
        s = self.s
        theta, r = s._split(s.y)
        w = s.weights
        out = {"w_theta": w @ theta, "w2": float(w @ w)}
        if s.scheme.has_radius:
            out.update(w_r=float(w @ r), min_radius=float(r.min()), max_radius=float(r.max()))
        if mu is None:
            return out
        s._mu = mu
        f = s._field(t, theta, True)
        out["max_attention"] = float(np.max(f.norm))
        out["max_tangential"] = float(np.max(_norms(f.tangential)))
        if s.scheme.continuous and s._layer_alpha_defined(t):       # as one process: α(t_final) of layers may be 0
            with np.errstate(invalid="ignore", divide="ignore"):      # a speed factor 0 reads NaN/inf, as one process
                speed = s.token_speeds(f, r, t)     # as one process (np.linalg.norm's squares overflowed: inf from β ≈ 355)
            out.update(max_speed=float(np.max(speed)), w_speed2=float(w @ np.square(speed)),
                       min_speed_factor=s.min_speed_factor(f, r, t))
        if f.log_z is not None and np.all(np.isfinite(f.log_z)):
            # shifted by the largest log Z, as the backend's energy: e^{log Z} alone overflows from 709.78
            out["z_top"] = top = float(np.max(f.log_z))
            out["z_sum"] = float(np.sum(np.exp(f.log_z - top) @ w))
        out["attention_error_bound"] = s.attention_error_bound(f)
        return out


_NULL_CHECK_ROWS = 1 << 16     # tokens per block of _refuse_null_values: O(block) memory for any N


def _refuse_null_values(model, positions) -> None:
    """Refuse, before a cluster starts, a token whose value QKV-Norm cannot normalize (V maps it to 0), with the
    single-process backend's error naming V and the token (NullDirectionError, a ValueError).  Tokens generated on
    the workers are checked there, by the first μ̂ of the run."""
    from .._attention import _linear_values, _unit_rows

    V, linear = _linear_values(model)
    if linear:       # no normalized values, or a conformal V (invertible); an isotropic kernel's Q and K are invertible
        return
    x = np.asarray(positions)
    for a in range(0, len(x), _NULL_CHECK_ROWS):
        _unit_rows(x[a:a + _NULL_CHECK_ROWS] @ V.T, "V", offset=a)


def _combine(parts, t, model, options):
    """The particles-sh backend's diagnostics from the shards' parts (same keys, same formulas)."""
    out = {"t": t}
    mean = sum(p["w_theta"] for p in parts)
    w2 = sum(p["w2"] for p in parts)
    out["mean_alignment"] = float((mean @ mean - w2) / (1 - w2)) if w2 < 1 else 1.0
    if "w_r" in parts[0]:
        out.update(mean_radius=float(sum(p["w_r"] for p in parts)), min_radius=min(p["min_radius"] for p in parts),
                   max_radius=max(p["max_radius"] for p in parts))
    if "max_attention" not in parts[0]:     # the attention is undefined here (QKV-Norm): as ParticleStepper.diagnostics
        return out
    if "max_speed" in parts[0]:
        out["max_speed"] = max(p["max_speed"] for p in parts)
        out["dissipation"] = float(sum(p["w_speed2"] for p in parts))
    out["max_attention"] = max(p["max_attention"] for p in parts)
    if all("z_sum" in p for p in parts):
        top = max(p["z_top"] for p in parts)
        total = sum(p["z_sum"] * np.exp(p["z_top"] - top) for p in parts)
        out["energy"] = float(np.exp(top - np.log(2 * model.beta)) * total)
    from ..backends._particles_sh import relative_bound
    from ..sphere._funk_hecke import kernel_truncation_error

    bound = max(p["attention_error_bound"] for p in parts)
    out.update(lmax=float(options["lmax"]),
               kernel_truncation_error=kernel_truncation_error(model.beta_eff, int(options["lmax"])),
               attention_error_bound=bound,
               relative_velocity_error_bound=relative_bound(bound, max(p["max_tangential"] for p in parts)))
    return out


def distributed_particles_sh(model, particles, t_final, *, step=None, client=None, workers: int | None = None,
                             shards: int | None = None, save_every=None, t_eval=None, gather: bool = True,
                             seed=0, progress: bool = False, stats: dict | None = None, **options):
    """The particles-sh backend (its adaptive pairs, fixed-step RK4 or layer map) with the tokens sharded over dask
    workers.

    Parameters
    ----------
    model : Model
        As for ``backend="particles-sh"``: d = 3, one head, QᵀK = c·I, any V, any scheme (anGPT, which has
        no ODE, with ``time="layers"``).
    particles : Particles or int
        The initial tokens (split into ``shards`` contiguous blocks and scattered to the workers), or
        a count N: N i.i.d. uniform tokens on S² with weights 1/N generated on the workers (shard k
        from ``numpy.random.SeedSequence(seed).spawn(shards)[k]``), so nothing of size N passes
        through this process.  The tokens depend on ``shards`` (default: the number of workers): give it
        to draw the same tokens on another cluster.
    t_final : float
        Final time.
    step : float, optional
        The RK4 step (as ``step`` of the single-process backend: the steps between saved times are
        uniform and at most ``step``; a step in which a stage moves a token by more than a radian warns once, as
        there; so does a velocity that is not resolved, ``relative_velocity_error_bound`` ≥ 1), or with
        ``time="layers"`` the layer step h (t_final and the save times whole numbers of layers).  Without it (and
        without ``method``) the run takes the adaptive steps of "rk45", as one process does.
    client : distributed.Client, optional
        Default: a new ``LocalCluster`` of ``workers`` processes, one thread each (closed at the end).
    workers : int, optional
        Workers of that local cluster (default: the usable cores).
    shards : int, optional
        Number of shards (default: one per worker); shard k goes to worker k mod workers.
    save_every, t_eval
        Save times, as in :func:`meanfield.simulate`.
    gather : bool
        Collect the tokens at every saved time into ``Trajectory.states`` (False: the states are
        None, only the diagnostics come back; for runs whose tokens do not fit in one process).
    seed : int
        Root seed when ``particles`` is a count.
    progress : bool
        A tqdm bar over simulated time.
    stats : dict, optional
        Filled with the costs of the run: ``wall`` (seconds of the time loop), ``steps``,
        ``step_wall`` (seconds in the steps alone), ``round_trips`` (driver ↔ shards exchanges; in
        the steps alone: ``step_round_trips``, one per stage), ``shard_busy`` (seconds each shard
        computed in the steps), ``n``, ``shards``.  Wall time minus the busiest shard is the distribution overhead.
    **options
        ``tol``, ``lmax``, ``epsilon`` of particles-sh; ``threads`` per shard (default 1: one
        shard per single-threaded worker); ``method`` "rk45" (default without ``step``), "rk23" or "rk4" (default
        with ``step``), with ``rtol``, ``atol``, ``first_step``, ``max_step``, ``min_step`` of the adaptive pairs as
        for one process: a step's error norm is the largest over all shards' tokens, as over all tokens in one
        process, so the same steps are accepted; ``max_steps``; ``time`` "continuous" (the ODE, default) or
        "layers" (the scheme's discrete layer map, one reduction of μ̂ per layer).  The implicit methods are not
        available here (their Jacobian is dense in all the tokens).

    Returns
    -------
    Trajectory
        ``backend="particles-sh"`` with the backend's diagnostics (sums and extrema combined over
        the shards) and ``steps`` (``t``, ``dt``; and ``error``, ``rejected`` for the adaptive pairs); equal to
        ``simulate(..., backend="particles-sh")`` with the same options to rounding (an adaptive run accepts and
        rejects the same steps, their sizes equal to about ε/rtol relative: the error estimate, a difference of
        stages, carries the rounding of the shards' summed μ̂).  Under QKV-Norm a state or Runge–Kutta stage
        where V maps a token to 0 ends the run as there: ``Status.NON_FINITE``, the detail naming V and the
        token, the last good state kept (its diagnostics that need the attention NaN).

    Raises
    ------
    ValueError
        Under QKV-Norm, V maps an initial token to 0 (``NullDirectionError``, naming V and the token by its
        index in ``particles``): Particles before a local cluster starts, generated tokens before the first step.
    InsufficientMemoryError
        Before any work is submitted: the tokens (about ``SHARD_BYTES_PER_TOKEN`` = 560 bytes each while a shard
        steps) do not fit in this machine's available memory for a local cluster, or a worker's shards exceed 80 %
        of its memory limit; or the states gathered at the saved times do not fit in this process.
    TypeError, ValueError
        ``client`` is not a ``distributed.Client``, or not a running one (closed).
    ConnectionError
        A worker holding a shard was lost during the run (it died, or the client was closed): dask actors are not
        resilient, so the run stops; rerun it.
    """
    from .._measures import Particles
    from .._model import Model
    from .._trajectory import Status, Trajectory, save_times
    from ..backends._particles_sh import ParticlesSHBackend
    from ..backends._stepper import ParticleStepper

    if not isinstance(model, Model):
        raise TypeError(f"`model` must be a meanfield.Model; got {type(model).__name__}.")
    valid = _SH_OPTIONS + _STEP_OPTIONS
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for distributed_particles_sh; valid options are "
                        f"{sorted(valid)} (and step, save_every, t_eval, …).")
    opts = {"step": step, "threads": 1, **options}
    from .._integrators import IMPLICIT_METHODS
    if isinstance(opts.get("method"), str) and opts["method"] in IMPLICIT_METHODS:
        raise ValueError(f"distributed_particles_sh takes the explicit methods 'rk45', 'rk23' and 'rk4' (or the "
                         f"scheme's layer map with time='layers'); the implicit method={opts['method']!r} needs a "
                         "dense Jacobian of all the tokens: use simulate(..., backend='particles-sh') for a few "
                         "hundred tokens.")
    # validate the model and the options once, here, before any worker is involved
    from .._attention import sh_support
    from .._errors import UnsupportedModelError
    why = sh_support(model)
    if why is not None:
        raise UnsupportedModelError(f"distributed_particles_sh: {why}")
    probe = ParticlesSHBackend(model, Particles(np.array([[0.0, 0.0, 1.0]])), **opts)
    resolved = dict(probe.options)
    if isinstance(particles, Particles):
        if particles.d != 3:
            raise ValueError(f"`particles` must be on S² (d = 3); got d={particles.d}.")
        _refuse_null_values(model, particles.positions)
        n_total = particles.n
    elif isinstance(particles, (int, np.integer)) and not isinstance(particles, bool) and particles >= 1:
        n_total = int(particles)
    else:
        raise TypeError(f"`particles` must be meanfield.Particles or a token count N ≥ 1; got {particles!r}.")
    # every argument is checked here, before a local cluster is started (and before a run whose end would fail)
    from .._validate import flag, nonneg_int, save_every_count
    from ..backends._stepper import check_fixed_step_count

    save_every_count(t_final, save_every)
    times = save_times(t_final, save_every, t_eval)
    if resolved["time"] == "layers":
        probe.check_save_times(times)       # whole numbers of layers, and not too many
    elif not probe.method.adaptive:
        check_fixed_step_count(resolved, times[0], times[-1], adaptive=False)
        probe.set_run_span(times[0], times[-1])     # its warning of an unresolved velocity measures the drift by it
    if stats is not None and not isinstance(stats, dict):
        raise TypeError(f"`stats` must be a dict (filled with the costs of the run) or None; got stats={stats!r}.")
    if workers is not None:
        workers = nonneg_int("workers", workers, minimum=1)
    if shards is not None:
        shards = nonneg_int("shards", shards, minimum=1)
        if shards > n_total:
            raise ValueError(f"`shards` must be in [1, {n_total}] (the token count); got shards={shards!r}.")
    if not isinstance(particles, Particles) and seed is not None:      # None: fresh entropy, as numpy takes it
        seed = nonneg_int("seed", seed, within="float64")      # a seed, not a count: numpy takes any size
    gather = flag("gather", gather)        # "no" would gather every state
    progress = flag("progress", progress)
    from ._runner import check_client
    check_client(client)
    _check_memory_here(n_total, len(times) if gather else 0, local=client is None)

    with _local_client(client, workers) as c:
        info = _workers(c)
        addrs = sorted(info)
        n_shards = len(addrs) if shards is None else shards
        if not 1 <= n_shards <= n_total:
            raise ValueError(f"`shards` must be in [1, {n_total}] (the token count; default: one per worker, "
                             f"{len(addrs)} here); got shards={shards!r}.")
        bounds = np.linspace(0, n_total, n_shards + 1).astype(int)
        _check_worker_memory(info, addrs, np.diff(bounds), n_total)
        seeds = np.random.SeedSequence(seed).spawn(n_shards)
        futures = []      # referenced until the end: an actor lives as long as its future
        for k in range(n_shards):
            a, b = bounds[k], bounds[k + 1]
            if isinstance(particles, Particles):
                data = {"positions": np.asarray(particles.positions[a:b]),
                        "weights": np.asarray(particles.weights[a:b]),
                        "radii": None if particles.radii is None else np.asarray(particles.radii[a:b])}
                data = c.scatter([data], workers=[addrs[k % len(addrs)]], hash=False)[0]
            else:
                data = {"positions": None, "n": int(b - a), "weight": 1.0 / n_total, "seed": seeds[k]}
            futures.append(c.submit(Shard, model, data, opts, k, int(a), actor=True,
                                    workers=[addrs[k % len(addrs)]]))
        actors = [f.result() for f in futures]
        run = _Driver(actors, probe, resolved, model, gather)
        t0 = time.perf_counter()
        traj = run.integrate(times, progress, Status, Trajectory, ParticleStepper)
        if stats is not None:
            stats.update(wall=time.perf_counter() - t0, step_wall=run.step_wall, steps=len(traj.steps["t"]),
                         round_trips=run.round_trips, step_round_trips=run.step_round_trips,
                         shard_busy=[b - b0 for b, b0 in zip(run._all("busy_seconds"), run.busy0)], n=n_total,
                         shards=n_shards)
        return traj


class _Driver:
    """The RK loop of ParticleStepper._advance_fixed, with each stage's μ̂ reduced over the shards."""

    def __init__(self, actors, probe, options, model, gather):
        self.actors, self.probe, self.options, self.model, self.gather = actors, probe, options, model, gather
        self.tab = probe.method
        self.round_trips = 0
        self.step_round_trips = 0
        self.t = 0.0          # the time of the state the shards hold (for the messages)
        self.h = options.get("first_step")      # an embedded pair's step wanted from the current state on
        self._stage_issue = ""      # why the last rejected stage had no attention (QKV-Norm), for the diagnosis
        self.step_wall = 0.0

    def _all(self, method, *args):
        self.round_trips += 1
        try:
            calls = [getattr(a, method) for a in self.actors]    # RuntimeError: dask has lost an actor's worker
        except RuntimeError as err:
            raise self._lost(err) from err
        try:
            futs = [call(*args) for call in calls]
            return [f.result() for f in futs]
        except OSError as err:      # dask: "Unable to contact Actor's worker" (a worker died, the client closed)
            raise self._lost(err) from err

    def _lost(self, err) -> ConnectionError:
        """The error for a shard's worker that dask can no longer reach: it said only "Unable to contact Actor's worker"
        or "Worker holding Actor was lost", without the run, the time or what to do."""
        return ConnectionError(
            f"distributed_particles_sh lost a worker holding a shard of the tokens at t={self.t:.6g} ({err}): dask "
            "actors are not resilient and the shard's tokens are gone, so the run cannot go on; rerun it (on a "
            "cluster whose workers stay up, with a client that stays open).")

    def _reduce(self, parts):
        """The total μ̂ of the shards' parts, or the first shard's diagnosis (a str) where the attention is
        undefined (QKV-Norm): the shards are in token order, so it names the first such token, as one process does."""
        undefined = [p for p in parts if isinstance(p, str)]
        if undefined:
            return _shards_detail(undefined)
        return sum(parts[1:], parts[0]) if len(parts) > 1 else parts[0]

    def integrate(self, times, progress, Status, Trajectory, ParticleStepper):
        from .._attention import NullDirectionError
        from .._measures import Particles
        from .._simulate import _PROPAGATE, interruption_detail

        t = self.t = float(times[0])
        self.mu = self._reduce(self._all("start"))
        if isinstance(self.mu, str):     # refused before any step, as the single-process backend's first diagnostics
            raise NullDirectionError(self.mu)
        saved_t, states, diags = [], [], []
        self.steps_t, self.steps_dt = [], []
        self.steps_error, self.steps_rejected = [], []
        self.Status = Status

        def keep(t):
            self.t = t
            saved_t.append(t)
            mu = None if isinstance(self.mu, str) else self.mu
            parts = self._all("diagnostic_parts", mu, t)
            diags.append(_combine(parts, t, self.model, self.options))
            self._warn_unresolved(parts, diags[-1], t)
            if self.gather:
                parts = self._all("state")
                pos = np.concatenate([p["positions"] for p in parts])
                radii = None if parts[0]["radii"] is None else np.concatenate([p["radii"] for p in parts])
                states.append(Particles(pos, np.concatenate(self._weights()), radii))
            else:
                states.append(None)

        keep(t)
        self.busy0 = self._all("busy_seconds")     # compute before the steps (the first μ̂), not counted
        status, detail = Status.OK, ""
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=float(times[-1]), unit="t")
        try:
            layers = self.options["time"] == "layers"
            advance = self._advance_layers if layers else (
                self._advance_embedded if self.tab.adaptive else self._advance)
            for t_target in times[1:]:
                # the layers of a stretch are not split at Mix-LN's τ (the layer map reads t), the RK steps are
                spans = [(t, float(t_target))] if layers else ParticleStepper._segments(self.probe, t, float(t_target))
                for a, b in spans:
                    t, status, detail = advance(a, b, ParticleStepper)
                    if status is not Status.OK:
                        break
                if status is not Status.OK:
                    break
                t = float(t_target)
                keep(t)
                if bar is not None:
                    bar.update(t - bar.n)
        except KeyboardInterrupt:
            status, detail = Status.INTERRUPTED, interruption_detail()
        finally:
            if bar is not None:
                bar.close()
        if status is Status.INTERRUPTED and _PROPAGATE.get():
            raise KeyboardInterrupt(detail)          # as simulate() inside propagating_interrupts()
        if status not in (Status.OK, Status.INTERRUPTED) and t > saved_t[-1]:
            keep(t)          # the last good state, as simulate() keeps it
        if status is not Status.OK:
            from .._errors import warn
            warn(f"distributed_particles_sh stopped at t={t:.6g}: {status.message} {detail}")
        keys = diags[0].keys()
        steps = {"t": np.asarray(self.steps_t), "dt": np.asarray(self.steps_dt)}
        if self.tab is not None and self.tab.adaptive:
            steps.update(error=np.asarray(self.steps_error), rejected=np.asarray(self.steps_rejected, dtype=bool))
        return Trajectory(times=np.array(saved_t), states=states,
                          diagnostics={k: np.array([d.get(k, np.nan) for d in diags]) for k in keys},
                          steps=steps, model=self.model,
                          backend="particles-sh", status=status, detail=detail, options=dict(self.options))

    def _warn_unresolved(self, parts, diag, t) -> None:
        """One process's warning of an unresolved spectral velocity (once per run, the probe's flag), on the
        combined bound and the smallest speed factor of all shards."""
        if "min_speed_factor" in parts[0] and "relative_velocity_error_bound" in diag:
            self.probe.warn_unresolved(t, diag["attention_error_bound"], diag["relative_velocity_error_bound"],
                                       float(np.min([p["min_speed_factor"] for p in parts])))

    def _advance_layers(self, a, b, ParticleStepper):
        """The layers of ParticleStepper._advance_layers over [a, b]: (the time reached, "") or (the time of the last
        good state, the diagnosis of the failed layer)."""
        h = self.options["step"]
        for i in range(self.probe._layer_count(a, b)):
            t_step = time.perf_counter()
            ts = self.t = self.probe._layer_time(a + i * h, h)
            if isinstance(self.mu, str):     # the state the last layer reached has no attention: no layer from it
                return ts, self.Status.NON_FINITE, ParticleStepper._undefined_attention(ts, self.mu)
            done = self._all("layer", self.mu, ts, h, a + (i + 1) * h)
            bad = [d for d, _ in done if d]
            if bad:
                self.mu = self._reduce(self._all("discard"))
                return ts, self.Status.NON_FINITE, _shards_detail(bad)
            self.mu = self._reduce([m for _, m in done])
            self.steps_t.append(a + (i + 1) * h)
            self.steps_dt.append(h)
            self.step_wall += time.perf_counter() - t_step
            self.step_round_trips += 1
        return b, self.Status.OK, ""

    def _out_of_steps(self) -> bool:
        limit = self.options["max_steps"]
        return limit is not None and len(self.steps_t) >= limit

    def _advance(self, a, b, ParticleStepper):
        """The fixed steps of ParticleStepper._advance_fixed over [a, b]: (the time reached, Status.OK, "") or (the
        time of the last good state, the status, the diagnosis of the failed step)."""
        n = (b - a) / self.options["step"]
        nsteps = max(1, int(round(n)) if abs(n - round(n)) < 1e-9 * max(1.0, n) else int(np.ceil(n)))
        h = (b - a) / nsteps
        for i in range(nsteps):
            t_step = time.perf_counter()
            ts = self.t = a + i * h
            if isinstance(self.mu, str):     # the state the last step reached has no attention: no step from it
                return ts, self.Status.NON_FINITE, ParticleStepper._undefined_attention(ts, self.mu)
            detail = self._step(ts, h, a, b, ParticleStepper)
            if detail:
                return ts, self.Status.NON_FINITE, detail
            self.steps_t.append(a + (i + 1) * h if i + 1 < nsteps else b)
            self.steps_dt.append(h)
            self.step_wall += time.perf_counter() - t_step
            self.step_round_trips += self.tab.stages
        return b, self.Status.OK, ""

    def _advance_embedded(self, a, b, ParticleStepper):
        """The adaptive steps of ParticleStepper._advance_adaptive over [a, b], each step's error the largest of all
        shards' (the single-process error norm is a max over the tokens): the same steps and arithmetic, so the same
        result to the rounding of the reduced μ̂.  Returns as :meth:`_advance`."""
        o, tab, Status = self.options, self.tab, self.Status
        if isinstance(self.mu, str):
            return a, Status.NON_FINITE, ParticleStepper._undefined_attention(a, self.mu)
        first = self._all("first_stage", self.mu, ParticleStepper._stage_time(a, a, b))
        k1_finite = all(f[2] for f in first)
        if self.h is None:
            self.h = max(self._initial_step(a, b, first, ParticleStepper) if k1_finite else 0.0, o["min_step"])
        h, t = self.h, a
        rejected, en, h_try = False, 0.0, h
        while t < b:
            if self._out_of_steps():
                self.h = h
                return t, Status.STEP_TOO_SMALL, self.probe.step_budget_detail(o["max_steps"], t)
            h = min(h, o["max_step"])
            if h < o["min_step"] or not k1_finite:
                self.h = h
                return t, *self._stalled(t, h, h_try, not k1_finite or (rejected and en == np.inf))
            t_step = time.perf_counter()
            last = t + h >= b - 1e-12 * max(1.0, abs(b))
            h_try = b - t if last else h
            en, detail, mu_last = self._embedded_step(t, h_try, a, b, ParticleStepper)
            if detail:
                self.mu = self._reduce(self._all("discard"))
                return t, Status.NON_FINITE, detail
            if en <= 1.0:
                t = self.t = b if last else t + h_try
                self.mu = mu_last if tab.fsal else self._reduce(self._all("start"))
                if not tab.fsal:
                    self._all("first_stage", self.mu, ParticleStepper._stage_time(t, a, b))
                self.steps_t.append(t)
                self.steps_dt.append(h_try)
                self.steps_error.append(en)
                self.steps_rejected.append(rejected)
                h_next = next_step(h_try, en, tab.error_order)
                if rejected:
                    h_next = min(h_next, h_try)
                h = max(h, h_next) if last else h_next     # a clipped last step says little about the nominal step
                rejected = False
                self.step_wall += time.perf_counter() - t_step
            else:
                self._all("reject")
                h = next_step(h_try, en, tab.error_order) if np.isfinite(en) else 0.2 * h_try
                rejected = True
        self.h = h
        return b, Status.OK, ""

    def _embedded_step(self, t, h, a, b, ParticleStepper):
        """One trial step of an embedded pair from ``t``: (largest error norm of the shards, "" or the diagnosis of a
        bad new state where the step is accepted, the total μ̂ of the last stage)."""
        tab = self.tab

        def stage_time(s):
            return ParticleStepper._stage_time(t + tab.c[s] * h, a, b)

        mu = self._reduce(self._all("begin", self.mu, h, stage_time(1)))
        s = 1
        while s < tab.stages - 1 and not isinstance(mu, str):
            mu = self._reduce(self._all("stage", mu, stage_time(s), h, stage_time(s + 1)))
            s += 1
        self.step_round_trips += tab.stages
        if isinstance(mu, str):     # QKV-Norm's attention is undefined at stage s + 1: as a NaN stage in one process,
            self._stage_issue = ParticleStepper._undefined_attention(stage_time(s), mu)    # the step is rejected
            return np.inf, "", None
        done = self._all("finish_embedded", mu, stage_time(tab.stages - 1), h, t + h)
        en = max(e for e, _ in done)
        bad = [d for _, d in done if d]
        return en, (_shards_detail(bad) if en <= 1.0 and bad else ""), mu

    def _initial_step(self, a, b, first, ParticleStepper):
        """ParticleStepper._initial_step over the shards: the norms are maxima over the tokens."""
        d0, d1 = max(f[0] for f in first), max(f[1] for f in first)
        h0 = min(first_step_guess(d0, d1), b - a)
        t_probe = ParticleStepper._stage_time(a + h0, a, b)
        mu = self._reduce(self._all("probe_step", h0, t_probe))
        if isinstance(mu, str):
            return h0
        d2 = max(self._all("probe_rate", mu, t_probe, h0))
        return first_step_estimate(h0, d1, d2, self.tab.order)

    def _stalled(self, t, h, h_try, nonfinite):
        """(status, detail) of a step below ``min_step``: the velocity's diagnosis when it stopped being finite (the
        first shard's own, else the generic one), else the step and the largest velocity component of all shards."""
        Status = self.Status
        # the current state's μ̂ and geometry, for the diagnoses (the step accepted last becomes current: no discard)
        self.mu = self._reduce(self._all("start"))
        if nonfinite:
            generic = f"Non-finite velocity at t={t:.6g} (down to step {h:.3g})."
            own = [d for d in self._all("failure_detail", generic, h_try) if d != generic]
            if not own and self._stage_issue:
                own = [self._stage_issue]
            return Status.NON_FINITE, _shards_detail(own) if own else generic
        parts = self._all("stall_detail")
        top = max(p[0] for p in parts)
        return Status.STEP_TOO_SMALL, (f"Step {h:.3g} < min_step={self.options['min_step']:.3g} at t={t:.6g}, where "
                                       f"the largest velocity component is {top:.3g}.{_vanishing_radii(parts)}")

    def _step(self, ts, h, a, b, ParticleStepper):
        """One Runge–Kutta step from ``ts`` over the shards: "" (``self.mu`` is then that of the new state, or its
        diagnosis), or why it failed (the shards then stand where they were, ``self.mu`` theirs)."""
        tab = self.tab

        def stage_time(s):
            return ParticleStepper._stage_time(ts + tab.c[s] * h, a, b)

        for s in range(1, tab.stages):
            self.mu = self._reduce(self._all("stage", self.mu, stage_time(s - 1), h, stage_time(s)))
            if isinstance(self.mu, str):     # stage s + 1, at stage_time(s), has no attention (QKV-Norm)
                detail = ParticleStepper._undefined_attention(stage_time(s), self.mu)
                self.mu = self._reduce(self._all("discard"))
                return detail
        done = self._all("finish", self.mu, stage_time(tab.stages - 1), h, ts + h)
        bad = [d for d, _, _ in done if d]
        if bad:
            self.mu = self._reduce(self._all("discard"))
            return _shards_detail(bad)
        self.mu = self._reduce([m for _, m, _ in done])
        if not self.probe._warned_unresolved_step:      # one process's check, on the fastest token of all shards
            speed, token = max((w for _, _, w in done), key=lambda w: w[0])
            self.probe._check_step_resolves(ts, h, speed, token)
        return ""

    def _weights(self):
        if not hasattr(self, "_w"):
            self._w = self._all("weights")
        return self._w


@contextlib.contextmanager
def _local_client(client, workers):
    if client is not None:
        yield client
        return
    from distributed import Client

    from ._local import local_cluster
    from ._runner import _usable_cores
    # a Ctrl-C stops the run here (status INTERRUPTED), not each worker, also while they start
    with local_cluster(workers or _usable_cores()) as cluster, Client(cluster) as c:
        yield c


def _workers(client) -> dict:
    """address → the scheduler's information on that worker (``memory_limit``, …), for every worker."""
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:   # distributed < 2025: every worker is listed
        info = client.scheduler_info()
    if not info["workers"]:
        raise RuntimeError("the dask cluster has no workers.")
    return info["workers"]


def _worker_addresses(client) -> list:
    return sorted(_workers(client))


def _check_memory_here(n_total: int, saves: int, local: bool) -> None:
    """Refuse, before a local cluster starts, tokens that this machine cannot hold: all the shards of a local
    cluster, and the states gathered at ``saves`` saved times (0: ``gather=False``).  A token count was not checked:
    N = 10¹⁵ started the cluster, and each shard then failed to allocate its tokens."""
    from .._memory import require

    gathered = saves * n_total * GATHER_BYTES_PER_TOKEN
    if local:
        states = f", and the states of {saves} saved times" if saves else ""
        require(n_total * SHARD_BYTES_PER_TOKEN + gathered,
                f"distributed_particles_sh with particles={n_total} tokens on a local cluster (about "
                f"{SHARD_BYTES_PER_TOKEN:.0f} bytes per token{states})",
                f"lower `particles` (the token count){', pass gather=False' if saves else ''}, or pass client= a "
                "cluster with more memory.")
    elif saves:
        require(gathered, f"distributed_particles_sh gathering particles={n_total} tokens at {saves} saved times",
                "pass gather=False (the diagnostics only), save fewer times, or lower `particles` (the token count).")


def _check_worker_memory(info: dict, addrs: list, sizes, n_total: int) -> None:
    """Refuse, before any shard is submitted, a worker's shards (shard k goes to worker k mod workers) beyond 80 %
    of its memory limit (the fraction :func:`meanfield._memory.require` allows; dask pauses a worker there)."""
    from .._errors import InsufficientMemoryError

    need = dict.fromkeys(addrs, 0.0)
    for k, size in enumerate(sizes):
        need[addrs[k % len(addrs)]] += float(size) * SHARD_BYTES_PER_TOKEN
    for addr, nbytes in need.items():
        limit = info[addr].get("memory_limit") or 0       # 0 or None: no limit set, nothing to check against
        if limit and nbytes > 0.8 * limit:
            raise InsufficientMemoryError(
                f"distributed_particles_sh with particles={n_total} tokens in {len(sizes)} shards needs about "
                f"{nbytes / 2**30:.2f} GiB on worker {addr} (about {SHARD_BYTES_PER_TOKEN:.0f} bytes per token) but "
                f"its memory limit is {limit / 2**30:.2f} GiB; lower `particles` (the token count), or run on more "
                "workers.")
