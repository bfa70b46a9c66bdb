"""``backend="hybrid"``: the spectral solver while it is resolved, weighted particles after.

Clusters shrink (like e^{-t} for Post-LN) until no fixed band limit resolves them.  The hybrid
backend runs the Eulerian solver with a strict resolution monitor; when it fires, the last resolved
density ρ is handed to weighted particles placed at the quadrature nodes x_j of its grid, with weights
w_j = σ_j ρ(x_j) (σ_j the node's quadrature weight) and radii r(x_j).  Because the Gauss–Legendre
rule is exact for the degrees involved, the particles carry exactly the density's mass and low
moments; they then survive the collapse to Dirac masses (particles-sh on S² for isotropic kernels,
the exact O(N²) backend otherwise).
"""
from __future__ import annotations

import warnings

import numpy as np

from .._errors import MeanfieldWarning, UnsupportedModelError
from .._integrators import IMPLICIT_METHODS
from .._measures import Density, Particles, ZonalDensity, conversion_hint
from .._memory import require, unchecked
from .._model import Model
from .._trajectory import Status
from .._validate import check_options, nonneg_int
from ._registry import BACKENDS
from ._spectral import _OPTIONS as _SPECTRAL_OPTIONS
from ._spectral import SpectralBackend, _memory_estimate, monitor_thresholds, start_negativity_tol

_OPTIONS = {**{k: v for k, v in _SPECTRAL_OPTIONS.items() if k != "on_resolution_loss"},
            "tail_tol": 1e-6, "negativity_tol": 1e-10, "lmax_max": None, "particle_backend": "auto",
            "particle_options": None, "oversample": 2}


def density_to_particles(basis, y, oversample: int = 1) -> tuple[Particles, float]:
    """Weighted particles at quadrature nodes carrying the species in ``y`` (K, nfield, ncoef) of ``basis``.

    The nodes are those of the grid for band limit ``oversample``·L (the density is band-limited, so
    its values there are exact; more nodes make the particle method's error smaller).  Returns the
    particles and the mass of negative nodal values that had to be clipped (≥ 0).
    """
    if oversample > 1:
        fine = type(basis)(basis.lmax * oversample)
        y = np.stack([[basis.resize(c, fine.lmax) for c in sp] for sp in y])
        basis = fine
    points = basis.points.reshape(-1, basis.d)
    sigma = np.broadcast_to(basis.weights, basis.points.shape[:-1]).reshape(-1)
    pos, w, r = [], [], []
    for species in y:
        rho = basis.synth(species[0]).reshape(-1)
        pos.append(points)
        w.append(sigma * rho)
        r.append(basis.synth(species[1]).reshape(-1) if species.shape[0] > 1 else None)
    w = np.concatenate(w)
    clipped = float(np.abs(w[w < 0]).sum())
    w = np.where(w > 0, w, 0.0)
    keep = w > 0
    radii = None if r[0] is None else np.concatenate(r)[keep]
    return Particles(np.concatenate(pos)[keep], w[keep] / w[keep].sum(), radii), clipped


class _SpectralPhase(SpectralBackend):
    """The hybrid's spectral phase: its monitor hands off instead of ending the run, so a start that
    backend="spectral" accepts (min ρ ≥ −1e-6 on the grid) is accepted under the stricter ``negativity_tol`` too,
    and handed to particles at the first step."""

    HANDS_OFF = True


def _same(a, b) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return False


class HybridBackend:
    """Spectral while resolved, then weighted particles (quadrature nodes) to the end.

    Accepts a :class:`~meanfield.Density` (d = 2, 3) or a list of Densities (species), or
    :class:`~meanfield.Particles` (then it is the particle phase from the start, e.g. on resume: the options of the
    spectral phase are checked, not used; the particle phase takes ``particle_options``).

    Options
    -------
    All options of ``backend="spectral"`` except ``on_resolution_loss`` (always a hand-off); the
    monitor is stricter by default (``tail_tol=1e-6``, ``negativity_tol=1e-10``) so the density handed
    over is resolved.  The starting density is checked as backend="spectral" checks it by default (min ρ ≥ −1e-6 on
    the grid, or −``negativity_tol`` if that is looser): a start between −1e-6 and −``negativity_tol`` is handed to
    particles at the first step (its negative nodal mass clipped and reported).  ``lmax_max`` (default None: hand
    off at the starting band limit) lets the spectral phase refine first, by ``refine_factor`` each time the tail
    passes ``tail_warn``, up to ``lmax_max``; it hands off when the monitor fires at ``lmax_max``.
    ``particle_backend`` is "auto" (particles-sh on S² for isotropic kernels, else the exact "particles"),
    "particles-sh" or "particles";
    ``particle_options`` is a dict passed to it (default: adaptive rk45 with its default tolerances),
    checked by that backend when the run starts; its ``max_steps`` counts the particle steps of the whole run, a
    resumed run's earlier ones included (as the hybrid's ``max_steps`` counts the spectral ones).  After the hand-off ``mean_alignment`` is |∫x dμ|²
    (self-pairs included, the particles standing for the density), continuous with the spectral phase.
    ``oversample`` (default 2) places the particles on the grid of band limit ``oversample``·L:
    (oversample)² times more particles on S² (oversample times more on S¹), a smaller particle error.

    The particle phase warns as its backend run alone does (a fixed ``step`` in ``particle_options`` that does not
    resolve the motion; particles-sh's unresolved velocity, its drift measured from the hand-off to ``t_final``).

    Accuracy: the particles carry the density's low moments exactly at hand-off; afterwards the particle
    method's error grows as the flow map roughens.  Measured (β = 5, Post-LN, ``Density.random(32, seed=2,
    amplitude=0.7)``, H^{-1} distance at L = 32 to a refined spectral solution at t = 3): from L = 32,
    2.3e-3 (oversample 1), 2.3e-4 (2), 5.7e-5 (3); from L = 48 with oversample 2, 2.0e-6.
    """

    name = "hybrid"

    @classmethod
    def validate_options(cls, model, initial, options: dict, times=None) -> dict:
        """The hybrid's own options (particle backend and its options, ``oversample``, the monitor) checked by its
        ``__init__`` on two probe tokens (the particle phase from the start), then the options of its spectral
        phase as :meth:`__init__` passes them, by :meth:`SpectralBackend.validate_options`."""
        zonal = isinstance(initial, ZonalDensity) or (isinstance(initial, (list, tuple)) and initial
                                                      and isinstance(initial[0], ZonalDensity))
        if zonal or isinstance(initial, Particles):
            probe = initial if zonal else Particles(initial.positions[:2], None,
                                                    None if initial.radii is None else initial.radii[:2])
        else:
            probe = Particles.uniform(2, getattr(model, "d", 3), seed=0)
        opts = dict(cls(model, probe, **options).options)     # a zonal start is refused here, before any work
        if isinstance(initial, Particles):
            return opts
        spectral = {k: v for k, v in opts.items()
                    if k in _SPECTRAL_OPTIONS and k not in ("on_resolution_loss", "lmax_max")
                    and (k in options or not _same(v, _SPECTRAL_OPTIONS[k]))}
        if opts["lmax_max"] is None:
            spectral["on_resolution_loss"] = "stop"
        else:
            spectral.update(on_resolution_loss="refine", lmax_max=opts["lmax_max"])
        _SpectralPhase.validate_options(model, initial, spectral)
        return opts

    @classmethod
    def option_defaults(cls) -> dict:
        """{option name: default} of this backend."""
        return dict(_OPTIONS)

    def __init__(self, model: Model, initial, **options):
        opts = check_options("hybrid", options, _OPTIONS)
        self.model = model
        self.particle_backend = self._choose_particle_backend(model, opts["particle_backend"])
        self.particle_options = self._checked_particle_options(model, opts["particle_options"])
        if isinstance(initial, ZonalDensity) or (isinstance(initial, (list, tuple)) and initial
                                                 and isinstance(initial[0], ZonalDensity)):
            raise UnsupportedModelError("backend='hybrid' needs a Density on S¹ or S² (zonal densities in d > 3 "
                                        "have no particle counterpart here).")
        monitor_thresholds(opts, options)
        # the spectral phase gets what the user set and the hybrid's own defaults (its stricter monitor), not
        # defaults it shares with "spectral": given, those would read as set (rtol with rk4 is refused)
        spectral_opts = {k: v for k, v in opts.items() if k in _SPECTRAL_OPTIONS and k not in ("on_resolution_loss", "lmax_max")
                         and (k in options or not _same(v, _SPECTRAL_OPTIONS[k]))}
        if opts["lmax_max"] is None:
            policy = "stop"
        else:
            policy, spectral_opts["lmax_max"] = "refine", opts["lmax_max"]
        opts["oversample"] = nonneg_int("oversample", opts["oversample"], minimum=1)    # numpy integers too
        if not isinstance(initial, Particles):
            self._check_initial(initial)
            self._check_handoff_memory(model, initial, opts)
        self.options = opts
        self._handoff_detail = ""
        #: the hand-off's record (t, particle_backend, n_particles, lmax, clipped_mass, detail), None before it;
        #: :func:`meanfield.simulate` keeps it in ``Trajectory.run_info["handoff"]``, across a resume
        self.handoff = None
        self.handoff_time = None
        self.clipped_mass = 0.0
        self._particles = None
        self._spectral = None
        if isinstance(initial, Particles):
            self._check_unused_spectral_options(model, initial, policy, spectral_opts)
            self._start_particles(initial, 0.0)
        else:
            self._spectral = _SpectralPhase(model, initial, on_resolution_loss=policy, **spectral_opts)
            self._spectral.loss_advice = {}          # a loss of resolution is the hand-off, not a failure
        self._t = 0.0
        #: the most negative value a starting density may take on the grid, negated: as backend="spectral" by
        #: default (1e-6), though the monitor's negativity_tol is stricter (a start between hands off at once)
        self.start_negativity_tol = start_negativity_tol(opts["negativity_tol"], hands_off=True)

    @staticmethod
    def _check_unused_spectral_options(model, initial, policy, spectral_opts) -> None:
        """A particle start runs no spectral phase, but the options of that phase are checked all the same (method='foo'
        or rtol=5 were taken in silence): on the uniform density of band limit 1, which every lmax and lmax_max ≥ 1
        fits, with what the spectral backend would warn about that stand-in density silenced."""
        if initial.d not in (2, 3):
            return
        with warnings.catch_warnings(), unchecked():      # nor does the memory of a phase that never runs count
            warnings.simplefilter("ignore", MeanfieldWarning)
            SpectralBackend.validate_options(model, Density.uniform(1, initial.d),
                                             {**spectral_opts, "on_resolution_loss": policy})

    @staticmethod
    def _check_initial(initial) -> None:
        """A Density (or a list of them) or Particles; the memory check below reads the densities' band limit."""
        species = list(initial) if isinstance(initial, (list, tuple)) else [initial]
        if not species or not all(isinstance(s, Density) for s in species):
            raise TypeError("backend='hybrid' needs `initial` to be a Density, a list of them, or meanfield.Particles; "
                            f"got {[type(s).__name__ for s in species] if species else initial!r}."
                            + (conversion_hint(species[0]) if species else ""))

    @staticmethod
    def _check_handoff_memory(model, initial, opts) -> None:
        """Refuse, before the spectral phase, a hand-off whose particles (the nodes of the grid of band limit
        ``oversample``·L, L up to ``lmax_max``) cannot fit: it allocated them only at the hand-off, hours in."""
        species = list(initial) if isinstance(initial, (list, tuple)) else [initial]
        for key in ("lmax", "lmax_max"):     # read here before the spectral phase checks them: named as it names them
            if opts[key] is not None:
                opts[key] = nonneg_int(key, opts[key], minimum=1)
        top = opts["lmax_max"] or opts["lmax"] or species[0].lmax
        fine = top * opts["oversample"]
        need, nodes = _memory_estimate(fine, model.d, False, len(species), model.scheme_def.has_radius)
        require(need, f"the hand-off to particles on the grid of band limit oversample·L = {opts['oversample']}·{top} "
                      f"({nodes} tokens)", "lower `oversample` (or `lmax_max`).")

    @staticmethod
    def _choose_particle_backend(model, name):
        if name == "auto":
            return "particles-sh" if (model.d == 3 and model.isotropic and model.heads == 1) else "particles"
        if name not in ("particles", "particles-sh"):
            raise ValueError(f"`particle_backend` must be 'auto', 'particles' or 'particles-sh'; got {name!r}.")
        return name

    def _checked_particle_options(self, model, options) -> dict:
        """``particle_options`` as a dict, checked now by the particle backend on two probe tokens (not at the
        hand-off, after the spectral phase has run).  The particle backend is first tried on the model alone: a
        model it cannot move is the fault of ``particle_backend``, not of ``particle_options``."""
        probe = Particles.uniform(2, model.d, seed=0)
        try:
            BACKENDS[self.particle_backend](model, probe)
        except UnsupportedModelError as err:
            raise UnsupportedModelError(f"particle_backend={self.particle_backend!r} cannot run the particle phase of "
                                        f"this model: {err}  In the hybrid that is particle_backend='particles' (or "
                                        "'auto', which chooses the backend that can).") from None
        if options is None:
            return {}
        if not isinstance(options, dict):
            raise TypeError(f"`particle_options` must be a dict of {self.particle_backend} options; got "
                            f"particle_options={options!r}.")
        if options.get("time", "continuous") != "continuous":
            raise ValueError(f"`particle_options` time={options['time']!r}: the particle phase starts at the hand-off "
                             "time, which no layer grid fixed in advance contains; the hybrid integrates the ODE "
                             "(time='continuous').  For layer maps, hand off by hand (docs: numerics, limits).")
        if options.get("groups", 1) != 1:
            raise ValueError(f"`particle_options` groups={options['groups']!r}: the hand-off makes the particles of one "
                             "measure, not independent groups (groups runs replicas together with backend='particles').")
        if options.get("method") in IMPLICIT_METHODS:
            raise ValueError(f"`particle_options` method={options['method']!r}: the hand-off makes thousands of weighted "
                             "particles, and an implicit method's dense Jacobian of (n·d)² entries is for a few hundred "
                             "tokens; use 'rk45' (or backend='particles' with the implicit method on Particles).")
        try:
            BACKENDS[self.particle_backend](model, probe, **options)
        except (TypeError, ValueError, UnsupportedModelError) as err:
            raise type(err)(f"`particle_options` for the particle phase ({self.particle_backend}): {err}") from None
        if options.get("causal") is True or options.get("causal") is np.True_:     # accepted by backend='particles'
            raise UnsupportedModelError(
                "`particle_options` causal=True: the hybrid's particles are the quadrature nodes of a density, which "
                "have no token order to mask by (and its spectral phase has no causal mask); use causal=False, or "
                "backend='particles' on Particles in token order.")
        return dict(options)

    # time is owned by the active phase
    @property
    def t(self):
        active = self._particles or self._spectral
        return active.t

    @t.setter
    def t(self, value):
        (self._particles or self._spectral).t = float(value)

    @property
    def phase(self) -> str:
        return "particles" if self._particles is not None else "spectral"

    _t_final = None         # the run's t_final (check_save_times), for the particle phase's warnings

    def check_save_times(self, times) -> None:
        """Keep the run's ``t_final``, which the particle phase needs and does not see (it is built at the hand-off):
        particles-sh warns of an unresolved velocity by how far its error bound could move a token by ``t_final``
        (``relative_velocity_error_bound``).  The fixed steps of ``particle_options`` are counted by
        :func:`meanfield.simulate` (:func:`~meanfield.backends._stepper.check_fixed_step_count`)."""
        self._t_final = float(times[-1])
        self._give_run_span()

    def _give_run_span(self) -> None:
        """The particle phase's span: from where it starts (the hand-off, or a Particles start) to ``t_final``."""
        set_span = getattr(self._particles, "set_run_span", None)
        if set_span is not None and self._t_final is not None:
            set_span(self._particles.t, self._t_final)

    def _start_particles(self, particles, t):
        self._particles = BACKENDS[self.particle_backend](self.model, particles, **self.particle_options)
        self._particles.t = t
        self._give_run_span()
        self._particles.on_step = self.on_step
        self._particles.STEP_BUDGET = ("particle_options['max_steps']", "the particle phase's steps of the whole run")
        # the particles stand for a density: ∬⟨x,y⟩dμdμ = |m|², self-pairs included, as the spectral phase
        # reports it (the token formula leaves them out: a jump of ~Σw² at the hand-off)
        self._particles.ALIGNMENT_SELF_PAIRS = True

    def advance(self, t_target: float) -> Status:
        if self._particles is None:
            status = self._spectral.advance(t_target)
            if status is not Status.RESOLUTION_LOST:
                return status
            self._hand_off()
        return self._particles.advance(t_target)

    def _hand_off(self):
        sp = self._spectral
        particles, clipped = density_to_particles(sp.basis, sp.y, self.options["oversample"])
        self.handoff_time, self.clipped_mass = sp.t, clipped
        self._log_spectral = {k: list(v) for k, v in sp.step_log.items()}
        self._handoff_detail = (f"Handed off to {self.particle_backend} at t={sp.t:.6g} with {particles.n} weighted particles "
                                f"(lmax={sp.basis.lmax}; clipped negative mass {clipped:.2e}). "
                                f"Spectral monitor: {sp.detail}")
        self.handoff = dict(t=float(sp.t), particle_backend=self.particle_backend, n_particles=int(particles.n),
                            lmax=int(sp.basis.lmax), clipped_mass=float(clipped), detail=self._handoff_detail)
        self._start_particles(particles, sp.t)

    @property
    def detail(self) -> str:
        """What the run reports beside its status (``Trajectory.detail``): the hand-off (time, particles, the monitor's
        numbers), then the active phase's own detail, e.g. why it stopped (a failure of either phase was reported
        with no cause, or with the hand-off's only)."""
        active = self._particles if self._particles is not None else self._spectral
        return " ".join(x for x in (self._handoff_detail, active.detail) if x)

    def state(self):
        return self._particles.state() if self._particles is not None else self._spectral.state()

    @property
    def on_step(self):
        """The step hook of :func:`meanfield.simulate` (progress, wall-clock checkpoints): handed to the phase
        that runs, and to the particles at the hand-off."""
        return self.__dict__.get("_on_step")

    @on_step.setter
    def on_step(self, hook):
        self.__dict__["_on_step"] = hook
        for phase in (self._spectral, self._particles):
            if phase is not None:
                phase.on_step = hook

    def diagnostics(self) -> dict:
        if self._particles is None:
            return {**self._spectral.diagnostics(), "phase": 0.0}     # `t` included, as the particle phase's
        d = self._particles.diagnostics()
        w = self._particles.weights
        d.update(phase=1.0, mass=float(w.sum()), mass_error=float(w.sum() - 1.0), n_particles=float(len(w)))
        return d

    @property
    def step_log(self) -> dict:
        spec = self._log_spectral if self._particles is not None and self._spectral is not None else (
            self._spectral.step_log if self._spectral is not None else {"t": [], "dt": []})
        n_spec = len(spec["t"])
        part = self._particles.step_log if self._particles is not None else {"t": [], "dt": []}
        n_part = len(part["t"])
        # a quantity both phases log (t, dt, mean_alignment) runs on; the others are NaN where a phase lacks them
        out = {k: list(spec.get(k, [np.nan] * n_spec)) + list(part.get(k, [np.nan] * n_part))
               for k in dict.fromkeys([*spec, *part])}
        out["phase"] = [0] * n_spec + [1] * n_part
        return out

    def resume_stage(self):
        """The particle phase's (see :meth:`ParticleStepper.resume_stage`); None in the spectral phase."""
        return self._particles.resume_stage() if self._particles is not None else None

    def carry_stage(self, t: float, stage) -> None:
        if self._particles is not None:
            self._particles.carry_stage(t, stage)

    def carry_grid_origin(self, t_saved: float) -> None:
        """The particle phase's (see :meth:`ParticleStepper.carry_grid_origin`): its fixed steps go on on the grid of the
        uninterrupted run, counted from ``t_saved`` (a save time, or the hand-off after it); nothing in the spectral
        phase, whose fixed steps are counted from the state reached."""
        if self._particles is not None:
            self._particles.carry_grid_origin(t_saved)

    def carry_steps(self, steps: dict) -> None:
        """The steps of the saved part of a resumed run (its step log, ``phase`` 0 spectral, 1 particle), each
        counted by the phase that took them: a run resumed before its hand-off counts its spectral steps towards
        ``max_steps`` (see :meth:`SpectralBackend.carry_steps`), one resumed after it its particle steps towards
        the ``max_steps`` of ``particle_options``.  Both budgets so cover the whole run, and a resumed run stops
        where the uninterrupted one would."""
        if self._particles is None:
            self._spectral.carry_steps(steps)
            return
        phase = steps.get("phase", ())
        self._particles.carry_steps({"t": [t for t, p in zip(steps.get("t", ()), phase) if p == 1]})

    def step_marker(self) -> tuple:
        """The active phase's (see :meth:`ParticleStepper.step_marker`), its step count that of the whole log."""
        if self._particles is None:
            return self._spectral.step_marker()
        t, n, *ids = self._particles.step_marker()
        before = len(self._log_spectral["t"]) if self._spectral is not None else 0
        return (t, before + n, id(self._particles), *ids)

    def resume_options(self) -> dict:
        """The spectral phase's (step size, band limit); after the hand-off, the particle phase's step size, inside
        ``particle_options`` (a resumed hybrid starts from the particles)."""
        if self._particles is None:
            return self._spectral.resume_options()
        return {"particle_options": {**self.particle_options, **self._particles.resume_options()}}
