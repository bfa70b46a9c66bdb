"""The front door: ``simulate(model, initial, t_final, backend=...)`` and its result object.

The loop over save times, the status bookkeeping and the result live here once; a backend is a small
object with one job, advancing its state to a requested time (see :class:`Backend`).
"""
from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ._model import Model
from ._validate import positive_float

BACKENDS: dict[str, type] = {}


class MeanfieldWarning(UserWarning):
    """A run ended early or used an option that changes the answer (e.g. a filter)."""


def register_backend(name: str):
    """Class decorator adding a backend to :data:`BACKENDS` under ``name``."""
    def deco(cls):
        cls.name = name
        BACKENDS[name] = cls
        return cls
    return deco


def get_backend(name: str) -> type:
    _load_backends()
    try:
        return BACKENDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"`backend` must be one of {sorted(BACKENDS)}; got backend={name!r}.") from None


def _load_backends():
    # Backends register themselves on import; importing them here keeps `import meanfield` light.
    from . import backends  # noqa: F401


class Status(enum.Enum):
    """How a run ended; the value is the message shown to the user."""

    OK = "Reached t_final."
    RESOLUTION_LOST = ("Spectral resolution lost: the tail-energy fraction or the negativity of the density "
                       "exceeded the policy threshold; the last resolved state is kept. Raise `lmax`, use "
                       "on_resolution_loss='refine' or backend='hybrid'.")
    NON_FINITE = "The state became NaN or infinite; the last finite state is kept. Reduce the step size."
    STEP_TOO_SMALL = "The adaptive step size fell below `min_step`; the dynamics is too stiff or singular here."
    MASS_DRIFT = "Mass drifted beyond `mass_tol`; reduce `rtol` or raise `lmax`."
    INTERRUPTED = "Interrupted by the user (KeyboardInterrupt); the last saved state is kept."
    CALLBACK_STOP = "Stopped by the callback."

    @property
    def message(self) -> str:
        return self.value


class Backend(Protocol):
    """What :func:`simulate` needs of a backend.

    ``__init__(model, initial, **options)`` validates everything before any work (unknown options
    raise ``TypeError``); ``t`` is the current time; ``advance(t_target)`` integrates to exactly
    ``t_target`` and returns a :class:`Status` (with ``detail`` set to a diagnosis when not OK);
    ``state()`` returns an independent copy of the current state (a Density, Particles, …);
    ``diagnostics()`` returns scalar diagnostics of the current state; ``step_log`` is a dict of
    per-step lists (at least ``t`` and ``dt``).
    """

    name: str
    t: float
    detail: str
    step_log: dict

    def advance(self, t_target: float) -> Status: ...
    def state(self) -> Any: ...
    def diagnostics(self) -> dict: ...


@dataclass(frozen=True)
class Trajectory:
    """The result of :func:`simulate`.

    Attributes
    ----------
    times : ndarray, shape (n_saved,)
        Times of the saved states.
    states : list
        The saved states (Density, Particles, …), one per time.
    diagnostics : dict of str → ndarray, shape (n_saved,)
        Scalar diagnostics at the saved times (mass error, energy, tail energy, …).
    steps : dict of str → ndarray, shape (n_steps,)
        Per-step records of the integrator (time, step size, and the backend's monitors).
    model : Model
    backend : str
    status : Status
        How the run ended; ``status.message`` explains it, ``detail`` adds the numbers.
    options : dict
        The backend options the run used (after defaults).
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

    @property
    def success(self) -> bool:
        return self.status is Status.OK

    @property
    def message(self) -> str:
        return self.status.message + (f" {self.detail}" if self.detail else "")

    @property
    def final(self):
        """The last saved state."""
        return self.states[-1]

    def __len__(self):
        return len(self.times)

    def __repr__(self):
        return (f"Trajectory(backend={self.backend!r}, scheme={self.model.scheme!r}, n_saved={len(self.times)}, "
                f"t=[{self.times[0]:g}, {self.times[-1]:g}], status={self.status.name})")


def save_times(t_final, save_every=None, t_eval=None, t0=0.0) -> np.ndarray:
    """The times at which states are kept: t0, every ``save_every``, and t_final (or ``t_eval``)."""
    t_final = positive_float("t_final", t_final)
    if t_eval is not None:
        if save_every is not None:
            raise ValueError("Give either `save_every` or `t_eval`, not both.")
        te = np.asarray(t_eval, dtype=float)
        if te.ndim != 1 or te.size == 0 or not np.all(np.isfinite(te)):
            raise ValueError(f"`t_eval` must be a non-empty finite 1-D array; got {t_eval!r}.")
        if np.any(np.diff(te) <= 0) or te[0] < t0 or te[-1] > t_final:
            raise ValueError(f"`t_eval` must be strictly increasing within [{t0}, {t_final}]; got {t_eval!r}.")
        return te if te[0] == t0 else np.concatenate([[t0], te])
    if save_every is None:
        return np.array([t0, t_final])
    save_every = positive_float("save_every", save_every)
    n = int(np.floor((t_final - t0) / save_every + 1e-9))
    ts = t0 + save_every * np.arange(n + 1)
    if t_final - ts[-1] > 1e-9 * save_every:
        ts = np.append(ts, t_final)
    else:
        ts[-1] = t_final
    return ts


def simulate(model: Model, initial, t_final, *, backend: str = "spectral", save_every=None, t_eval=None,
             callback=None, progress: bool = False, **options) -> Trajectory:
    """Evolve ``initial`` under ``model`` up to ``t_final``.

    Parameters
    ----------
    model : Model
        The dynamics (β, scheme, attention, d, Q, K, V, α, τ).
    initial : Density or Particles
        The initial measure; which types a backend accepts is in its docstring.
    t_final : float
        Final time (> 0), in the time unit of the ODE (for ``time="layers"``: depth = layers × step).
    backend : {"spectral", "particles", "particles-sh", "hybrid"}
        See :data:`meanfield.BACKENDS`.
    save_every : float, optional
        Keep the state every ``save_every`` time units (the end is always kept).
    t_eval : array_like, optional
        Keep the state exactly at these times (dense output); exclusive with ``save_every``.
    callback : callable, optional
        ``callback(t, state, diagnostics)`` at every saved time; returning True stops the run.
    progress : bool
        Show a progress bar (tqdm).
    **options
        Backend options (e.g. ``lmax``, ``rtol`` for "spectral"; ``step``, ``time`` for "particles").
        Unknown options raise ``TypeError`` naming the valid ones.

    Returns
    -------
    Trajectory
        ``times``, ``states``, ``diagnostics``, ``status`` (check ``success``).
    """
    if not isinstance(model, Model):
        raise TypeError(f"`model` must be a meanfield.Model; got {type(model).__name__}.")
    times = save_times(t_final, save_every, t_eval)
    stepper = get_backend(backend)(model, initial, **options)
    kept_times, states, diags = [stepper.t], [stepper.state()], [stepper.diagnostics()]
    status = Status.OK
    bar = _progress_bar(progress, times[-1])
    try:
        for t_target in times[1:]:
            status = stepper.advance(float(t_target))
            if bar is not None:
                bar.update(stepper.t - bar.n)
            if status is not Status.OK:
                break
            kept_times.append(stepper.t)
            states.append(stepper.state())
            diags.append(stepper.diagnostics())
            if callback is not None and callback(stepper.t, states[-1], diags[-1]):
                status = Status.CALLBACK_STOP
                break
    except KeyboardInterrupt:
        status = Status.INTERRUPTED
    finally:
        if bar is not None:
            bar.close()
    if status not in (Status.OK, Status.CALLBACK_STOP, Status.INTERRUPTED) and stepper.t > kept_times[-1]:
        # keep the last good state the backend returned to (e.g. the last resolved one)
        kept_times.append(stepper.t)
        states.append(stepper.state())
        diags.append(stepper.diagnostics())
    detail = getattr(stepper, "detail", "")
    if status not in (Status.OK, Status.CALLBACK_STOP):
        warnings.warn(f"simulate stopped at t={stepper.t:.6g}: {status.message} {detail}", MeanfieldWarning,
                      stacklevel=2)
    keys = diags[0].keys()
    diagnostics = {k: np.array([d.get(k, np.nan) for d in diags]) for k in keys}
    steps = {k: np.asarray(v) for k, v in getattr(stepper, "step_log", {}).items()}
    return Trajectory(times=np.array(kept_times), states=states, diagnostics=diagnostics, steps=steps,
                      model=model, backend=backend, status=status, detail=detail,
                      options=dict(getattr(stepper, "options", options)))


def _progress_bar(progress, total):
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=float(total), unit="t", bar_format="{l_bar}{bar}| t={n:.3g}/{total:.3g} [{elapsed}<{remaining}]")
