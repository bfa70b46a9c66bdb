"""What a run returns: its :class:`Status` and its :class:`Trajectory`, and the save times of a run."""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

import numpy as np

from ._model import Model
from ._validate import positive_float, real_array
from ._values import same_values


class Status(enum.Enum):
    """How a run ended; the value is the message shown to the user."""

    OK = "Reached t_final."
    RESOLUTION_LOST = ("Spectral resolution lost: the tail-energy fraction or the negativity of the density "
                       "exceeded the policy threshold; the last resolved state is kept (what to change: see the "
                       "detail).")
    NON_FINITE = ("The state became NaN or infinite; the last finite state is kept. The detail gives the cause; "
                  "unless it names another, reduce the step size.")
    STEP_TOO_SMALL = ("The adaptive step size fell below `min_step` (the dynamics is too stiff or singular here), or "
                      "`max_steps` steps were taken; the detail says which.")
    MASS_DRIFT = "Mass drifted beyond `mass_tol`; reduce `rtol` or raise `lmax`."
    INTERRUPTED = "Interrupted by Ctrl-C or a signal (the detail says which); the last saved state is kept."
    CALLBACK_STOP = "Stopped by the callback."
    INCOMPLETE = ("The checkpoint of a run that has not finished (still running, or killed): its last saved "
                  "state. Continue it with meanfield.resume(path) or `meanfield run CONFIG --output PATH --resume`.")

    @property
    def message(self) -> str:
        return self.value


@dataclass(frozen=True, eq=False)
class Trajectory:
    """The result of :func:`simulate`.

    Attributes
    ----------
    times : ndarray, shape (n_saved,)
        Times of the saved states, in the time unit of the ODE (a run that stopped early ends with the time of
        the state it kept, which need not be a save time).
    states : list, length n_saved
        The saved states, one per time: a :class:`~meanfield.Density` or :class:`~meanfield.ZonalDensity`
        (``"spectral"``), a tuple of them (one per species), or :class:`~meanfield.Particles`.
    diagnostics : dict of str → ndarray, shape (n_saved,)
        Scalar diagnostics at the saved times.  Of every backend: ``t`` (the time of the state).  Of the
        spectral backend: ``mass`` (∫ρ dσ, σ the normalized uniform measure: 1 for a probability density) and
        ``mass_error`` (its change since t0), ``min_rho``
        (the smallest value of ρ on the grid; uniform density = 1), ``tail_fraction`` (the spectral energy
        above degree ⌊2L/3⌋ over the total, in [0, 1]), ``energy`` (E_β, NaN for an anisotropic kernel),
        ``max_speed`` (the largest |v| on the grid), ``dissipation`` (∫ρ|v|² dσ), ``lmax`` (the band limit
        L), ``filtered_steps``, ``mean_alignment`` (|∫x dμ|²) and, with a radius, ``mean_radius``; see
        :doc:`numerics`.  Those of the particle backends (``mean_alignment`` over the pairs i ≠ j, ``max_speed``,
        ``dissipation``, ``max_attention``, ``energy``, the radius statistics, and the error bounds of
        "particles-sh") and of the hybrid's two phases are listed in :doc:`backends`.
    steps : dict of str → ndarray, shape (n_steps,)
        Per-step records of the integrator, one entry per accepted step: ``t`` (the time the step reached),
        ``dt`` (its size), ``rejected`` (trial steps rejected before it: with the adaptive methods, and in every
        spectral run, whose fixed steps record 0), and the backend's monitors.
    model : Model
    backend : str
    status : Status
        How the run ended; ``status.message`` explains it, ``detail`` adds the numbers.
    options : dict
        The backend options the run used (after defaults).
    run_info : dict
        What the run's file records beside the states (filled by :func:`meanfield.load`, and by
        :func:`meanfield.simulate` for a run in memory): ``t_final`` of the run, ``remaining_times`` and
        ``resume`` options (the step size of the last state), the CLI's ``config`` text and ``seed``,
        ``complete``, and for a hybrid run past its hand-off ``handoff`` (``t``, ``particle_backend``,
        ``n_particles``, ``lmax``, ``clipped_mass``, ``detail``: kept by a resumed run, which starts from the
        particles).  :func:`meanfield.save` writes it back, so a saved run resumes as its checkpoint would.

    Notes
    -----
    :meth:`at` returns the state saved at a given time.  ``==`` compares every field by value, arrays entry by entry
    (NaN equal to NaN) and states by their fields, so a run equals the :func:`meanfield.load` of its file (the
    generated comparison raised "The truth value of an array with more than one element is ambiguous").  A Trajectory
    is not hashable.
    """

    times: np.ndarray
    states: list
    diagnostics: dict
    steps: dict
    model: Model
    backend: str
    status: Status
    detail: str = ""
    options: dict = field(default_factory=dict)
    run_info: dict = field(default_factory=dict, repr=False)

    @property
    def success(self) -> bool:
        """Whether the run reached ``t_final`` (status OK)."""
        return self.status is Status.OK

    @property
    def message(self) -> str:
        """How the run ended: the status's message followed by ``detail`` (its numbers, what to change)."""
        return self.status.message + (f" {self.detail}" if self.detail else "")

    @property
    def final(self):
        """The last saved state."""
        return self.states[-1]

    def at(self, t):
        """The saved state at time ``t``: states are kept at the save times only and are not interpolated.

        Parameters
        ----------
        t : float
            One of :attr:`times`, to 1e-9 of the run's time scale (the largest of |t| and the saved times), so
            ``at(0.3)`` finds the state saved at 0.30000000000000004.

        Returns
        -------
        Density, ZonalDensity, tuple of them (species) or Particles

        Raises
        ------
        ValueError
            ``t`` is not a saved time; the message gives the saved times around it (to keep a time, pass it in
            ``t_eval`` to :func:`meanfield.simulate`).
        """
        t = positive_float("t", t, allow_zero=True)
        i = int(np.argmin(np.abs(self.times - t)))
        # relative to the run's own time scale: an absolute 1e-9 took t = 5e-10 for the state at 0 of a run to 1e-6
        if abs(self.times[i] - t) > 1e-9 * max(abs(t), float(np.max(np.abs(self.times)))):
            j = int(np.searchsorted(self.times, t))
            near = " and ".join(f"{x:g}" for x in self.times[max(j - 1, 0): j + 1])
            raise ValueError(f"`t` must be a saved time of the trajectory (states are not interpolated); got t={t!r}, "
                             f"the saved times around it are {near} (of {len(self.times)} in [{self.times[0]:g}, "
                             f"{self.times[-1]:g}]). Keep the states you need with `t_eval` in simulate.")
        return self.states[i]

    def __len__(self):
        return len(self.times)

    def __eq__(self, other):
        if not isinstance(other, Trajectory):
            return NotImplemented
        return (self.backend == other.backend and self.status is other.status and self.detail == other.detail
                and self.model == other.model and len(self.states) == len(other.states)
                and all(same_values(getattr(self, f.name), getattr(other, f.name))
                        for f in dataclasses.fields(self) if f.name not in ("backend", "status", "detail", "model")))

    __hash__ = None

    def __repr__(self):
        return (f"Trajectory(backend={self.backend!r}, scheme={self.model.scheme!r}, n_saved={len(self.times)}, "
                f"t=[{self.times[0]:g}, {self.times[-1]:g}], status={self.status.name})")


def save_times(t_final, save_every=None, t_eval=None, t0=0.0) -> np.ndarray:
    """The times at which states are kept: t0, every ``save_every`` (or the ``t_eval``), and t_final."""
    t0 = positive_float("t0", t0, allow_zero=True)
    t_final = positive_float("t_final", t_final)
    if t_final <= t0:
        raise ValueError(f"`t_final` must be > t0={t0}; got t_final={t_final!r}.")
    if t_eval is not None:
        if save_every is not None:
            raise ValueError("Give either `save_every` or `t_eval`, not both.")
        te = real_array("t_eval", t_eval, allow_bool=False)     # [0.5, True] was read as [0.5, 1.0]
        if te.ndim != 1 or te.size == 0 or not np.all(np.isfinite(te)):
            raise ValueError(f"`t_eval` must be a non-empty finite 1-D array; got {t_eval!r}.")
        if np.any(np.diff(te) <= 0) or te[0] < t0 or te[-1] > t_final:
            raise ValueError(f"`t_eval` must be strictly increasing within [{t0}, {t_final}]; got {t_eval!r}.")
        if t_final - te[-1] > 1e-9 * max(1.0, t_final):   # the end is always kept, as with save_every
            te = np.append(te, t_final)
        else:
            te = np.append(te[:-1], t_final)    # a last time a rounding error short of t_final is t_final
        return te if te[0] == t0 else np.concatenate([[t0], te])
    if save_every is None:
        return np.array([t0, t_final])
    save_every = positive_float("save_every", save_every)
    n = int(np.floor((t_final - t0) / save_every + 1e-9))
    ts = t0 + save_every * np.arange(n + 1)
    # a span shorter than 1e-9·save_every still keeps t0 and t_final (t0 was replaced by t_final: one state, the
    # initial one, labelled t_final)
    if t_final - ts[-1] > 1e-9 * save_every or n == 0:
        ts = np.append(ts, t_final)
    else:
        ts[-1] = t_final
    return ts
