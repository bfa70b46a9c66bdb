"""The front door: ``simulate(model, initial, t_final, backend=...)``, ``resume`` and ``particle_velocity``.

The loop over save times, the status bookkeeping and the checkpoints live here once; the result types are
in :mod:`._trajectory`, and a backend is a small object with one job, advancing its state to a requested
time (see :class:`.backends._registry.Backend`).
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ._errors import MeanfieldWarning, warn
from ._measures import Particles
from ._model import Model
from ._integrators import ADAPTIVE_OPTIONS, fixed_steps, refuse_unused
from ._trajectory import Status, Trajectory, save_times
from ._validate import checkpoint_every as _checkpoint_every
from ._validate import flag, positive_float, save_every_count
from .backends._registry import BACKENDS, Backend, get_backend, register_backend

__all__ = ["BACKENDS", "Backend", "MeanfieldWarning", "Status", "Trajectory", "get_backend", "register_backend",
           "resume", "save_times", "simulate"]


# Set by the command line's SIGINT / SIGTERM handler (request_stop), which also raises KeyboardInterrupt: Python
# ignores an exception raised while a finalizer runs, so the run checks this between save times as well.
STOP_REQUESTED = threading.Event()
_STOP_SIGNAL = {"name": None}       # the signal behind STOP_REQUESTED, for the run's detail
# True inside propagating_interrupts(): commands that compare many runs (validate, bench, demo) must stop, not
# read an interrupted run as a result
_PROPAGATE = contextvars.ContextVar("meanfield_propagate_interrupts", default=False)


def request_stop(signum) -> None:
    """Record a stop request: the signal handler of the command line, before it raises KeyboardInterrupt.

    Parameters
    ----------
    signum : int
        The signal received (SIGINT, SIGTERM); its name goes into the interrupted run's detail.
    """
    import signal

    try:
        _STOP_SIGNAL["name"] = signal.Signals(signum).name
    except ValueError:
        _STOP_SIGNAL["name"] = f"signal {signum}"
    STOP_REQUESTED.set()


def clear_stop() -> None:
    """Forget a stop request (the command that received it has ended; later runs in this process run on)."""
    STOP_REQUESTED.clear()
    _STOP_SIGNAL["name"] = None


def interruption_detail() -> str:
    """What stopped an interrupted run: the signal the command line received, else a plain KeyboardInterrupt."""
    name = _STOP_SIGNAL["name"] if STOP_REQUESTED.is_set() else None
    if name == "SIGINT":
        return "Interrupted by SIGINT (Ctrl-C)."
    if name is not None:
        return f"Interrupted by {name}."
    return "Interrupted by KeyboardInterrupt (Ctrl-C, or raised in the program)."


@contextlib.contextmanager
def propagating_interrupts():
    """Inside the block, an interrupted run raises KeyboardInterrupt (after its checkpoint is written) instead of
    returning a trajectory with status INTERRUPTED; a stop requested before a run starts raises before it starts.

    For code that runs many simulations and judges their results (the validation suite, the benchmarks, the
    demo): a run cut short by Ctrl-C or SIGTERM read as a result gave false failures and timings, and each later
    run stopped at its first save time while the command went on to write its report."""
    token = _PROPAGATE.set(True)
    try:
        yield
    finally:
        _PROPAGATE.reset(token)


def stop_if_requested() -> None:
    """Raise KeyboardInterrupt if a stop was requested (a signal whose KeyboardInterrupt was swallowed, e.g.
    raised while a finalizer ran): between the parts of a command that must not go on."""
    if STOP_REQUESTED.is_set():
        raise KeyboardInterrupt


#: With ``checkpoint_every="auto"``: the largest share of a run's wall-clock time its checkpoint writes may take.
#: A write rewrites the whole file (atomically), ~0.7 ms per saved state, so writing after each of 800 saved
#: states made a run of 8 s take 265 s; paced at this share, a write waits until the run has worked
#: (1/share − 1) times as long as the last write took, and the states it would have held go in the next one.
CHECKPOINT_TIME_SHARE = 0.1


def simulate(model: Model, initial, t_final, *, backend: str = "spectral", save_every=None, t_eval=None,
             callback=None, progress: bool = False, checkpoint=None, checkpoint_every: int | str = "auto",
             checkpoint_interval: float | None = 600.0, t0: float = 0.0, metadata: dict | None = None,
             **options) -> Trajectory:
    """Evolve ``initial`` under ``model`` up to ``t_final``.

    Parameters
    ----------
    model : Model
        The dynamics (β, scheme, attention, d, Q, K, V, α, τ).
    initial : Density, ZonalDensity, Particles or list of Density
        The initial measure at time ``t0``; which types each backend accepts is in :doc:`model` (which backend
        handles what).
    t_final : float
        Final time (> t0), in the time unit of the ODE (for ``time="layers"``: depth = layers × step).
    backend : {"spectral", "particles", "particles-sh", "hybrid"}
        See :data:`meanfield.BACKENDS`.
    save_every : float, optional
        Keep the state every ``save_every`` time units (the end is always kept).  With the particle backends each
        saved state costs one more attention evaluation, for its diagnostics: keeping every layer of
        ``time="layers"`` about doubles the run (1500 tokens in d = 256, 12 layers: 4.9 s against 2.8 s keeping
        the last), keeping every RK4 step adds a quarter.
    t_eval : array_like, optional
        Keep the state exactly at these times (dense output), within [t0, t_final]; the run still goes
        to ``t_final``, whose state is always kept.  Exclusive with ``save_every``.
    callback : callable, optional
        ``callback(t, state, diagnostics)`` at every saved time after ``t0`` (the initial state is not passed
        to it: it is ``states[0]`` of the result); returning True stops the run, None or False goes on (any
        other return value is an error).
    progress : bool
        Show a progress bar (tqdm) over simulated time, redrawn every 0.1 s on a terminal or in a notebook and
        every 30 s when stderr is a file (a batch job's log).
    checkpoint : str or Path, optional
        HDF5 file written atomically once the run is validated (its initial state), then after saved
        states (``checkpoint_every``) and at the end (also after an interruption or a failure);
        :func:`resume` continues from it.  A file already there is replaced only by that first write, so
        input that fails validation leaves it untouched.  A SIGTERM (a batch scheduler's stop) that reaches the
        main thread during the run, with SIGTERM's default action in place, stops the run as Ctrl-C does: the
        checkpoint is written (status INTERRUPTED, with its resume point), then the process ends by SIGTERM.
    checkpoint_every : int or "auto"
        With ``checkpoint``: when to rewrite the file, which holds the whole trajectory each time.
        ``"auto"`` (default): after a saved state once the run has worked 9 times as long as the last
        write took (the writes take ≤ :data:`CHECKPOINT_TIME_SHARE` = 10 % of the wall-clock time),
        else at the first step past that moment (with a resume point) or the next saved state: after each
        saved state while the file is small, and a run with thousands of them is not slowed down by
        writes growing with the file.  An integer k ≥ 1: after every k-th saved state exactly (1: after
        each, whatever the writes cost).  The first write (the initial state) and the last (at the end
        or after an early stop) happen whatever its value.  A killed process loses the states since the
        last write.
    checkpoint_interval : float or None
        With ``checkpoint``: seconds of wall-clock time (≥ 0, default 600) after which the file is rewritten
        with the state the run has reached, even between save times (a *resume point*, stored beside the
        saved states, not among them), so a run killed far from its next save time loses at most this much
        work.  An interruption (Ctrl-C, SIGTERM) or an error inside the run stores its resume point too.
        None: only at save times.
    t0 : float
        Initial time, finite and ≥ 0 (schemes such as LN-Scaling, Mix-LN and a time-dependent nGPT α depend on t).
    metadata : dict, optional
        Extra attributes stored in the checkpoint's ``/run`` group (strings, numbers and booleans, or lists and dicts
        of them; the CLI stores the configuration text and the seed) and carried over by :func:`resume`.
    **options
        Backend options (e.g. ``lmax``, ``rtol`` for "spectral"; ``step``, ``time`` for "particles"), every one
        listed with its default in :doc:`backends`.
        Unknown options raise ``TypeError`` naming the valid ones; options the run would ignore (``rtol``,
        ``atol``, ``first_step``, ``max_step``, ``min_step`` with ``method="rk4"`` or ``time="layers"``;
        ``max_step=inf`` counts as unset) raise ``ValueError``.

    Returns
    -------
    Trajectory
        ``times``, ``states``, ``diagnostics``, ``steps``, ``status`` (check ``success``).

    Raises
    ------
    TypeError
        ``model`` is not a :class:`Model`, or an option is unknown to the backend.
    ValueError
        Invalid times (``t0`` < 0, ``t_final`` ≤ ``t0``, save times outside [t0, t_final], both ``save_every`` and
        ``t_eval``), ``checkpoint_every`` < 1, an invalid option value, or an initial density (or one of
        several species) that is negative on the grid beyond ``negativity_tol`` (as given, or once truncated to
        the option ``lmax``).
    UnsupportedModelError
        The backend cannot run this model or this initial measure.

    Notes
    -----
    A Ctrl-C (``KeyboardInterrupt``) during the run ends the run and is not raised: ``simulate`` returns the
    trajectory so far with status ``INTERRUPTED`` (a :class:`MeanfieldWarning` says so), its checkpoint written and
    resumable.  A script that loops over runs therefore goes on to the next run; stop the loop on
    ``traj.status is mf.Status.INTERRUPTED``.
    """
    return _simulate(model, initial, t_final, backend, save_every, t_eval, callback, progress, checkpoint,
                     checkpoint_every, t0, metadata, None, options, checkpoint_interval=checkpoint_interval)


def _simulate(model, initial, t_final, backend, save_every, t_eval, callback, progress, checkpoint, checkpoint_every,
              t0, metadata, prefix, options, keep_state=None, checkpoint_interval=None, point=None,
              setup=None) -> Trajectory:
    """:func:`simulate`; with ``prefix`` (the saved part of a resumed run) the checkpoint holds prefix + this
    part, and so does the returned trajectory.  ``keep_state(i)`` False: the state at save time i is
    dropped (None) once the callback has seen it (runs that need values at many times, few states).
    ``point``: the resume point (past the prefix) that ``initial`` and ``t0`` come from; this part's first
    state is then not a save time, and is left out of the trajectory as a resumed part's first state is.
    ``setup(stepper)``: called with the backend's stepper before the run (the gradient flow sets its integrand)."""
    from ._io import check_output_path, check_run_info
    from .backends._stepper import check_fixed_step_count

    if _PROPAGATE.get():
        stop_if_requested()
    if not isinstance(model, Model):
        raise TypeError(f"`model` must be a meanfield.Model; got {type(model).__name__}.")
    if isinstance(initial, (list, tuple)) and not initial:
        raise ValueError("`initial` must be a measure (Density, ZonalDensity, Particles) or a non-empty list of "
                         f"Densities (species); got initial={initial!r}.")
    save_every_count(t_final, save_every, t0)                   # 1e-300 would allocate the save times forever
    times = save_times(t_final, save_every, t_eval, t0)       # checks t0 ≥ 0 and t_final > t0
    t0 = float(times[0])
    checkpoint_every = _checkpoint_every(checkpoint_every)
    if checkpoint_interval is not None:
        checkpoint_interval = positive_float("checkpoint_interval", checkpoint_interval, allow_zero=True)
    metadata = check_run_info("metadata", metadata, reserved=tuple(sorted(_RUN_KEYS)))
    if checkpoint is not None:
        checkpoint = check_output_path("checkpoint", checkpoint)
    _check_callback(callback)
    flag("progress", progress)          # "no" or 0.0 was read by its truth value
    cls = get_backend(backend)
    defaults = getattr(cls, "option_defaults", None)
    # step=1e-300 with "rk4" or time="layers": refused, not run (nor set up); the steps of a resumed run are counted
    # from its very start, as max_steps counts them
    origin = t0 if prefix is None else float(prefix.times[0])
    check_fixed_step_count({**(defaults() if defaults is not None else {}), **options}, origin, times[-1])
    stepper = cls(model, initial, **options)
    stepper.t = t0
    if setup is not None:
        setup(stepper)
    if point is not None and point.stage is not None and hasattr(stepper, "carry_stage"):
        stepper.carry_stage(t0, point.stage)     # the first stage the uninterrupted run had there
    if point is not None and prefix is not None and hasattr(stepper, "carry_grid_origin"):
        stepper.carry_grid_origin(_grid_origin(prefix, t0))     # fixed steps and layers go on on the same grid
    if prefix is not None and hasattr(stepper, "carry_steps"):
        stepper.carry_steps(prefix.steps)        # run-wide counts (max_steps, filtered_steps) go on from the saved part
    getattr(stepper, "check_save_times", lambda _: None)(times)     # e.g. whole layers, before any work
    check_fixed_step_count(getattr(stepper, "options", {}), origin, times[-1])   # as the backend resolved them
    run = _Run(stepper, model, backend, times, checkpoint, metadata, prefix, point, checkpoint_every, options)
    _check_nonnegative(run.diags[0], getattr(stepper, "options", {}), getattr(stepper, "start_negativity_tol", None),
                       getattr(initial[0] if isinstance(initial, (list, tuple)) else initial, "lmax", None))
    with _terminated_after_checkpoint(checkpoint is not None), _checkpoint_lock(checkpoint):
        bar = _progress_bar(progress, times[-1], t0)
        stepper.on_step = _step_hook(bar, run, checkpoint_interval)
        dropped = None
        try:
            if checkpoint is not None:      # validated: replace what the path held by this run's start, atomically
                run.write(complete=False)
            for i, t_target in enumerate(times[1:], start=1):
                status = stepper.advance(float(t_target))
                if bar is not None:
                    bar.step(stepper.t, None)
                if status is not Status.OK:
                    run.status = status
                    break
                run.keep()
                if STOP_REQUESTED.is_set():       # a SIGTERM whose KeyboardInterrupt a finalizer swallowed
                    raise KeyboardInterrupt
                if run.write_due(i) and i < len(times) - 1:
                    run.write(complete=False)
                if callback is not None and _stop_requested_by(callback(stepper.t, run.states[-1], run.diags[-1]),
                                                               stepper.t):
                    run.status = Status.CALLBACK_STOP
                    break
                if keep_state is not None and not keep_state(i):
                    dropped, run.states[-1] = run.states[-1], None
        except KeyboardInterrupt:
            run.status = Status.INTERRUPTED
            run.cause = interruption_detail()
            run.mark_point()
        except Exception:
            # an error inside the run (a callable α(t) that turns invalid, a callback's bug): the states saved so far
            # go to the checkpoint, resumable once the cause is fixed, and the error is raised
            if checkpoint is not None:
                run.mark_point()
                run.write(complete=False, final=True)
            raise
        finally:
            if bar is not None:
                bar.close()
        # the last good state the backend returned to (e.g. the last resolved one); from a resume point, also that
        # point itself (this part's first state, which the trajectory leaves out as it is not a save time)
        failed = run.status not in (Status.OK, Status.CALLBACK_STOP, Status.INTERRUPTED)
        if failed and (stepper.t > run.times[-1] or (point is not None and len(run.times) == 1)):
            run.keep()
        if run.states[-1] is None:
            run.states[-1] = dropped         # a run always ends with its last state, kept or not
        propagate = run.status is Status.INTERRUPTED and _PROPAGATE.get()
        if run.status not in (Status.OK, Status.CALLBACK_STOP) and not propagate:
            warn(f"simulate stopped at t={stepper.t:.6g}: {run.status.message} {run.detail()}")
        _warn_if_energy_overflowed(run.diags, model)
        if checkpoint is not None:
            run.write(complete=run.status is Status.OK, final=True)
        if propagate:
            raise KeyboardInterrupt(run.cause)
        return run.whole()


def _warn_if_energy_overflowed(diags, model) -> None:
    """The ``energy`` diagnostic grows like e^{β}: beyond float64 it is recorded as inf (the run itself is sound,
    softmax attention having no such limit), which would otherwise pass unremarked in a run reported OK."""
    if any(np.isposinf(d.get("energy", 0.0)) for d in diags):
        warn(f"the `energy` diagnostic exceeds the float64 range at beta={model.beta!r} (E grows like e^β/(2β) "
             "as tokens cluster): recorded as inf. The run's states and other diagnostics are unaffected.")


def _grid_origin(prefix, t_point: float) -> float:
    """Where the stretch a resume point at ``t_point`` interrupted began: the last save time of the saved part, or a
    hybrid run's hand-off to particles after it (its particle phase started counting its steps there)."""
    origin = float(prefix.times[-1])
    handoff = (prefix.run_info or {}).get("handoff") or {}
    t = handoff.get("t")
    return float(t) if t is not None and origin < t <= t_point else origin


def _step_hook(bar, run, interval):
    """The stepper's ``on_step(t, h, **monitors)`` after each accepted step: the progress bar, and the wall-clock
    checkpoint when ``interval`` seconds have passed since the last write (or, with ``checkpoint_every="auto"``,
    when a saved state waits for a write that its pace now allows)."""
    if bar is None and run.path is None:
        return None

    def on_step(t, h, **monitors):
        if run.path is not None:
            run.stepped()          # where a Ctrl-C or an error may take the resume point from (see mark_point)
        if bar is not None:
            bar.step(t, h, **monitors)
        if run.path is None:
            return
        if (interval is not None and time.monotonic() - run.written >= interval) or (
                run.every == "auto" and run.pending and run.paced()):      # saved states a paced write left
            run.write_point()
    return on_step


@contextlib.contextmanager
def _terminated_after_checkpoint(active: bool):
    """SIGTERM (what batch schedulers send) during a checkpointed run of a Python program: its default action ended
    the process at once, and the states since the last write were lost (up to ``checkpoint_interval``, 600 s of
    work) although the docstring promised a checkpoint with a resume point.  Inside the block it stops the run as
    Ctrl-C does (the final checkpoint is written, status INTERRUPTED), then the process ends by SIGTERM as it
    would have.  Only in the main thread and where SIGTERM has its default action (``meanfield run`` has its own
    handler, which returns the run instead)."""
    import signal

    if (not active or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return
    received = []

    def stop(signum, frame):
        received.append(signum)
        request_stop(signum)
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if received:
            clear_stop()
            signal.raise_signal(signal.SIGTERM)      # the checkpoint is on disk: the default action, now


def _checkpoint_lock(checkpoint):
    """``.NAME.lock`` beside the checkpoint while a run writes it: two runs into one ``--output`` replaced each
    other's checkpoint, and the finished result was silently lost."""
    if checkpoint is None:
        return contextlib.nullcontext()
    from ._lockfile import held

    path = Path(checkpoint)
    # beside the file a link names (the file written: see _io._atomic_write), so that two runs into one file through
    # two names are refused too
    real = Path(os.path.realpath(path)) if path.is_symlink() else path
    return held(real.with_name(f".{real.name}.lock"), f"another run is writing {str(path)!r}")


@contextlib.contextmanager
def _signals_deferred(interrupt: bool = True):
    """SIGINT and SIGTERM held while a checkpoint is written (main thread only), then handed to the handler that
    was in place (Python's KeyboardInterrupt, the command line's stop flag, the default action or none): a
    Ctrl-C in the middle of a write left a traceback and the file of the previous checkpoint, losing the states
    since.  After the final write (``interrupt`` False) a KeyboardInterrupt is not raised: the run is done."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            handlers[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
        except (ValueError, OSError):           # pragma: no cover - a platform without the signal
            pass
    try:
        yield
    finally:
        for sig, previous in handlers.items():
            signal.signal(sig, previous)
        for signum in dict.fromkeys(received):  # each signal once, in arrival order
            previous = handlers.get(signum)
            if previous is signal.SIG_DFL:
                signal.raise_signal(signum)     # its default action (SIGTERM ends the process), now the file is whole
            elif callable(previous):
                try:
                    previous(signum, None)
                except KeyboardInterrupt:
                    if interrupt:
                        raise


def _check_callback(callback) -> None:
    """Refuse, before any work, a ``callback`` that is not callable or cannot take ``(t, state, diagnostics)``
    (it would fail only at the first saved time, after the first stretch of the run)."""
    if callback is None:
        return
    if not callable(callback):
        raise TypeError(f"`callback` must be callable as callback(t, state, diagnostics) (or None); got "
                        f"callback={callback!r}.")
    import inspect

    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):       # a builtin or extension without a signature: cannot tell
        return
    try:
        signature.bind(0.0, None, {})
    except TypeError as err:
        raise TypeError(f"`callback` must accept three positional arguments (t, state, diagnostics); "
                        f"callback{signature} does not ({err}).") from None


def _stop_requested_by(answer, t) -> bool:
    """The callback's answer at time ``t``: True stops the run; None or False goes on.  Anything else is refused:
    a callback ending in an expression (``return d["energy"]``, a list's ``append`` chained by ``and``) would
    otherwise stop the run at the first save with no error, if its value happened to be truthy."""
    if answer is None or isinstance(answer, (bool, np.bool_)):
        return bool(answer)
    raise TypeError(f"`callback` must return True (stop the run) or None/False (go on); at t={t:.6g} it returned "
                    f"{answer!r} ({type(answer).__name__}).")


class _Run:
    """The saved part of a run in progress: states, diagnostics, and how to write or resume it."""

    def __init__(self, stepper, model, backend, times, checkpoint, metadata=None, prefix=None, point=None,
                 every: int | str = 1, options: dict | None = None):
        self.stepper, self.model, self.backend = stepper, model, backend
        # the options as given, recorded for a backend without an ``options`` attribute (a third-party one): without
        # them its file said "the backend's defaults" and a resume ran with those
        self.given_options = dict(options or {})
        self.metadata = dict(metadata or {})
        # the saved part of a resumed run: it ends where this part starts (or, resumed from a point, before)
        self.prefix = prefix
        self.save_times, self.path = times, checkpoint
        self.times, self.states, self.diags = [], [], []
        self.status = Status.OK
        self.cause = ""             # what interrupted the run (interruption_detail), before the stepper's detail
        self.keep()
        self.point = point          # the run's state past its last saved one, if any (see mark_point)
        self.point_steps = 0        # this part's step-log length at the point (a resumed run's point: its start)
        self.from_point = point is not None
        self.at_step = None         # (marker, resume options, step count, stage) at the stepper's last step
        self.every = every          # checkpoint_every: k, or "auto" (paced by the time the writes take)
        self.written = time.monotonic()
        self.write_seconds = 0.0    # how long the last write took
        self.pending = False        # a saved state is not on disk yet

    def keep(self):
        # all or nothing: a Ctrl-C inside state() or diagnostics() must not leave a time without its state or
        # diagnostics (a file with n times and n − 1 diagnostics read as complete, shifted by one save)
        t, state, diags = self.stepper.t, self.stepper.state(), self.stepper.diagnostics()
        # how to continue from *this* state (step size, band limit): an interruption between two saves
        # must not hand the resumed run the step size of a later, unsaved state
        resume = getattr(self.stepper, "resume_options", lambda: {})()
        steps = _step_count(self.stepper)
        self.times.append(t)
        self.states.append(state)
        self.diags.append(diags)
        self.resume = resume
        self.kept_steps = steps     # the step log a checkpoint that resumes from this state holds
        self.point = None
        self.pending = True

    def stepped(self):
        """The stepper's ``on_step`` hook: it has just finished a step, and its state, time, step log and
        ``resume_options`` agree.  Recorded with its ``step_marker`` (cheap: no copy of the state)."""
        marker = getattr(self.stepper, "step_marker", None)
        marker = marker() if marker is not None else None
        steps = marker[1] if marker is not None else _step_count(self.stepper)
        stage = getattr(self.stepper, "resume_stage", None)
        self.at_step = (marker, getattr(self.stepper, "resume_options", dict)(), steps,
                        stage() if stage is not None else None)

    def mark_point(self, at_step: bool = False) -> bool:
        """Take the stepper's state as the resume point when it lies strictly between the last saved time and the
        next one; True when it did.  ``at_step``: called from the step hook, where the stepper is between two
        steps.  Otherwise (a Ctrl-C, SIGTERM or an error, which can land half-way through a step: a new state
        with the old time, a step logged in part, a refinement's new basis before its state) only when the
        stepper's ``step_marker`` shows that it has not moved since its last step.  When no new point is taken the
        one already taken since the last saved state (if any) stays, and the checkpoint's step log ends there."""
        if self.path is None or self.at_step is None:
            return False
        marker, resume, steps, stage = self.at_step
        if not at_step:
            now = getattr(self.stepper, "step_marker", None)
            if marker is None or now is None or now() != marker:
                return False
        t = self.stepper.t
        n = len(self.times)
        upcoming = self.save_times[n] if n < len(self.save_times) else np.inf
        # the last *saved* time (this part's first state is not one when it started from a resume point)
        last = self.prefix.times[-1] if self.from_point and n == 1 else self.times[-1]
        tiny = 1e-12 * max(1.0, abs(t))
        if not last + tiny < t < upcoming - tiny:
            # at a save time (kept next), or a backend that went back (the hybrid's hand-off returns to its last
            # resolved state): a point taken before stays valid
            return False
        from ._io import ResumePoint

        self.point, self.point_steps = ResumePoint(t, self.stepper.state(), resume, stage), steps
        return True

    def write_due(self, i: int) -> bool:
        """Whether to write the checkpoint after the ``i``-th saved time (``checkpoint_every``)."""
        if self.path is None:
            return False
        if self.every == "auto":
            return self.paced()
        return i % self.every == 0

    def paced(self) -> bool:
        """With ``checkpoint_every="auto"``: a write now keeps the writes within their share of the wall-clock time."""
        idle = time.monotonic() - self.written
        return idle * CHECKPOINT_TIME_SHARE >= self.write_seconds * (1 - CHECKPOINT_TIME_SHARE)

    def write_point(self):
        """The checkpoint with the state reached now (the wall-clock checkpoints between save times); none at a
        save time, which the run keeps (and writes) next."""
        if self.mark_point(at_step=True):
            self.write(complete=False)

    def trajectory(self) -> Trajectory:
        keys = list(dict.fromkeys(k for d in self.diags for k in d))   # e.g. a hybrid run changes phase
        diagnostics = {k: np.array([d.get(k, np.nan) for d in self.diags], dtype=float) for k in keys}
        # the steps up to where a resumed run starts (the point, or the last kept state): an interrupted run has
        # taken steps past it, perhaps logged in part, that the continuation takes again
        n = self.point_steps if self.point is not None else self.kept_steps
        steps = {k: np.asarray(v[:n]) for k, v in getattr(self.stepper, "step_log", {}).items()}
        return Trajectory(times=np.array(self.times), states=list(self.states), diagnostics=diagnostics,
                          steps=steps, model=self.model, backend=self.backend, status=self.status,
                          detail=self.detail(), options=dict(getattr(self.stepper, "options", self.given_options)))

    def detail(self) -> str:
        """The run's detail: what interrupted it, if anything, then the backend's."""
        return " ".join(x for x in (self.cause, getattr(self.stepper, "detail", "")) if x)

    def whole(self, complete: bool | None = None) -> Trajectory:
        """The run from its very start (the prefix of a resumed run, then this part), with the record its file
        holds beside the states: so a run kept in memory and saved with :func:`save` resumes as exactly as its
        checkpoint would (with the step size of its last state)."""
        own = self.trajectory()
        whole = own if self.prefix is None else _concatenate(self.prefix, own)
        remaining = [t for t in self.save_times if t > self.times[-1] + 1e-12 * max(1.0, abs(t))]
        record = dict(self.metadata, t_final=float(self.save_times[-1]), remaining_times=remaining,
                      resume=self.resume, complete=self.status is Status.OK if complete is None else complete)
        # a hybrid run's hand-off, by this part or by the saved part it continues (which the continuation, starting
        # from the particles, does not know of: a resumed run reported no hand-off at all)
        handoff = getattr(self.stepper, "handoff", None) or (self.prefix.run_info.get("handoff")
                                                             if self.prefix is not None else None)
        if handoff:
            record["handoff"] = handoff
            # `in`, not startswith: an interrupted run's detail starts with the cause ("Interrupted by SIGTERM. Handed
            # off …"), and the hand-off was told twice
            if handoff["detail"] not in whole.detail:
                whole = replace(whole, detail=" ".join(x for x in (handoff["detail"], whole.detail) if x))
        return replace(whole, run_info=record)

    def write(self, complete: bool, final: bool = False):
        """Write the checkpoint (signals deferred until it is on disk).  A periodic write that fails (a full
        disk) is warned about and the run goes on, the previous checkpoint kept; the final one raises."""
        from ._io import save_checkpoint

        try:
            start = time.monotonic()
            with _signals_deferred(interrupt=not final):
                save_checkpoint(self.whole(complete), self.path, self.point)
            self.written = time.monotonic()
            self.write_seconds, self.pending = self.written - start, False
        except (OSError, RuntimeError) as err:       # h5py reports a full disk as RuntimeError
            message = (f"could not write the checkpoint {self.path} at t={self.times[-1]:.6g}: {err}. The file keeps "
                       "its previous checkpoint")
            if final:
                raise OSError(f"{message} (resumable with `--resume`).") from err
            warn(f"{message}; the run goes on and tries again at the next checkpoint.")


def resume(path, *, t_final=None, save_every=None, callback=None, progress: bool = False,
           checkpoint_every: int | str = "auto",
           checkpoint_interval: float | None = 600.0, alpha=None, options: dict | None = None) -> Trajectory:
    """Continue the run whose checkpoint is ``path`` to its ``t_final`` (or beyond); returns the whole trajectory.

    The continuation starts from the last saved state with the integrator's step size as it was, so a run
    killed and resumed gives the same result as an uninterrupted one (to rounding).  A checkpoint written
    between save times (``checkpoint_interval``, an interruption, an error) also holds the state the run had
    reached, its *resume point*: the continuation then starts there.  It saves the states
    at the save times the checkpoint had not reached yet, with the backend, options and metadata of the
    original run.  Run-wide counts go on from the step log of the saved part, as in a run never interrupted:
    ``max_steps`` bounds the steps of the whole run, and the diagnostic ``filtered_steps`` counts its filtered steps.
    Warnings are not: the checkpoint keeps no record of them, and a warning given once per run (a fixed step that
    does not resolve the motion, particles-sh's unresolved velocity) is given again by a continuation that meets its
    condition again, once (the session that resumes may not have seen the first, and it concerns the stretch run now).

    Parameters
    ----------
    path : str or Path
        A checkpoint written by :func:`simulate` (``checkpoint=``) or ``meanfield run --output``.  It
        is rewritten atomically with the whole trajectory during the continuation and when it ends (at
        ``t_final``, or early), still resumable if the run did not finish.  A complete file is returned
        as it is, unchanged, unless ``t_final`` asks for more.
    t_final : float, optional
        Run on to this time instead of the stored ``t_final`` (it must not be earlier): a finished run is
        extended, in the same file.  The file's ``t_final`` becomes this one.
    save_every : float, optional
        Spacing of the saved states beyond the stored ``t_final`` (default: the largest spacing of the
        run's save times, those it has not reached yet included).  Only with ``t_final``.
    callback : callable, optional
        ``callback(t, state, diagnostics)`` at every newly saved time; returning True stops the run, None or
        False goes on (any other return value is an error).
    progress : bool
        Show a progress bar (tqdm) over simulated time, redrawn every 0.1 s on a terminal or in a notebook and
        every 30 s when stderr is a file (a batch job's log).
    checkpoint_every : int or "auto"
        When to rewrite ``path`` (atomically, with the whole trajectory so far) after newly saved states, as
        in :func:`simulate`: "auto" (default) paces the writes to ≤ 10 % of the wall-clock time, an integer k
        writes after every k-th one.
    checkpoint_interval : float or None
        Seconds of wall-clock time between rewrites of ``path`` with a resume point, as in :func:`simulate`.
    alpha : float or callable, optional
        The nGPT/anGPT step α_t, required when the original run used a callable α (see :func:`load`).
    options : dict, optional
        Backend options that replace the stored ones from the continuation on, checked by the backend as
        in :func:`simulate`: e.g. ``{"lmax_max": 512}`` after a spectral run stopped with RESOLUTION_LOST at
        its ``lmax_max``, or a larger ``max_steps`` (the budget of the whole run, its saved part included) after one
        stopped by it; None sets an option back to the backend's default.  The continuation then differs
        from what the original options would have given; the file records the new options.

    Returns
    -------
    Trajectory
        The saved states from the original start to the end of the continuation (``status`` tells how
        the continuation ended).

    Raises
    ------
    ResultFileError
        When ``path`` is missing, damaged or not a meanfield result file (see :func:`load`).
    TypeError
        ``options`` is not a dict of names, or names an option the backend does not have (listed with the valid
        ones, as :func:`simulate` refuses an unknown keyword).
    ValueError
        ``t_final`` before the stored one, ``save_every`` without ``t_final``, or an ``options`` value the backend
        refuses (e.g. ``lmax_max`` below the band limit the run has reached).
    """
    from ._io import load, read_resume_point, run_info

    # checked here too: a complete file is returned before the continuation would check them
    _checkpoint_every(checkpoint_every)
    if checkpoint_interval is not None:
        positive_float("checkpoint_interval", checkpoint_interval, allow_zero=True)
    _check_callback(callback)
    flag("progress", progress)
    info = run_info(path)
    if "t_final" not in info:
        raise ValueError(f"`path` {str(path)!r} holds no run of meanfield.simulate (no t_final in its record: an "
                         "energy or ensemble result, or a file saved without a run); resume continues simulate runs.")
    done = load(path, alpha=alpha)
    stored_final = float(info["t_final"])
    remaining = [] if info["complete"] else list(info.get("remaining_times", []))
    end = stored_final
    if t_final is not None:
        end = positive_float("t_final", t_final)
        if end < stored_final * (1 - 1e-12):
            raise ValueError(f"`t_final` must be ≥ the stored t_final={stored_final:g} (the states up to it are "
                             f"in the file); got t_final={t_final!r}.")
        remaining += list(_extension_times(np.concatenate([done.times, remaining]), stored_final, end, save_every))
    elif save_every is not None:
        raise ValueError("`save_every` sets the save times of an extension: give `t_final` with it.")
    point = read_resume_point(path)
    if point is not None and not (float(done.times[-1]) < point.t < (remaining[0] if remaining else -np.inf)):
        point = None           # (a file edited by hand) the continuation starts from the last saved state
    # the run's options, with the step size (and band limit) of the state it continues from
    stored = _merged(done.options, info.get("resume", {}) if point is None else point.resume)
    # what the continuation runs (a hybrid run's resume point may be past its hand-off to particles)
    reached = done if point is None else replace(done, states=[*done.states[:-1], point.state])
    overrides = _option_overrides(options, reached, stored)
    if not remaining:
        if overrides:
            raise ValueError(f"`options` apply to a continuation, and the run in {str(path)!r} is complete: give "
                             "`t_final` (--t-final) to extend it with them.")
        return done
    options = _resumable(_merged(stored, overrides))
    if "r0" not in overrides:       # the state it continues from carries its radius field: the stored r0 (the
        options.pop("r0", None)     # run's initial radius) only warned "`r0` is not used" at every resume
    if overrides and point is not None:      # the stored first stage is the old options' velocity (e.g. lmax)
        point = replace(point, stage=None)
    if overrides:           # recorded as the run's options (the saved part ran with the old ones: see the docstring),
        # without those the continuation drops (a particle phase switched to rk4 keeps no rtol)
        done = replace(done, options=_resumable(_merged(done.options, overrides)))
    metadata = {k: v for k, v in info.items() if k not in _RUN_KEYS}
    start, t0 = (done.final, float(done.times[-1])) if point is None else (point.state, point.t)
    done = replace(done, steps=_steps_until(done.steps, t0))
    return _simulate(done.model, start, end, done.backend, None, remaining, callback, progress, path,
                     checkpoint_every, t0, metadata, done, options, checkpoint_interval=checkpoint_interval,
                     point=point)


def _step_count(stepper) -> int:
    return len(getattr(stepper, "step_log", {}).get("t", ()))


def _steps_until(steps: dict, t: float) -> dict:
    """The step log up to time ``t``, where a continuation starts: a file written by an interrupted run of an
    earlier version logs steps past its last saved state, which the continuation takes again."""
    ts = np.asarray(steps.get("t", []), dtype=float)
    past = np.flatnonzero(ts > t + 1e-12 * max(1.0, abs(t)))
    n = min([int(past[0]) if past.size else ts.size] + [len(v) for v in steps.values()])
    if all(len(v) == n for v in steps.values()):
        return steps
    return {k: np.asarray(v)[:n] for k, v in steps.items()}


def _merged(options: dict, extra: dict) -> dict:
    """``{**options, **extra}``, with a hybrid run's ``particle_options`` merged key by key (an override of one
    particle option keeps the others, and the stored step size of the particle phase).  An override None removes
    the option, so the backend takes its default (as a new run does; None as a value was refused: "`rtol` must be
    a real number")."""
    out = {**options, **extra}
    a, b = options.get("particle_options"), extra.get("particle_options")
    if isinstance(b, dict):     # (stored None: the particle backend's defaults, which a None override keeps)
        out["particle_options"] = {k: v for k, v in {**(a if isinstance(a, dict) else {}), **b}.items()
                                   if not (k in b and v is None)}
    return {k: v for k, v in out.items() if not (k in extra and v is None)}


def _option_overrides(options, done: Trajectory, stored: dict) -> dict:
    """``resume``'s ``options``, checked against the run: names of its backend, none that the continuation would
    ignore (adaptive options of a fixed-step run; a hybrid run past its hand-off takes only ``particle_options``,
    merged into the stored ones by :func:`_merged`).  Their values are the backend's to check."""
    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise TypeError(f"`options` must be a dict of backend option names to values; got {options!r}.")
    backend = done.backend
    defaults = getattr(get_backend(backend), "option_defaults", None)
    known = set(defaults()) if defaults is not None else None
    unknown = sorted(set(options) - known) if known is not None else []
    if unknown:
        # a TypeError, as simulate's for an unknown keyword (resume(options={'foo': 1}) raised ValueError)
        raise TypeError(f"`options`: unknown option(s) {unknown} for backend={backend!r}; valid: {sorted(known)}.")
    options = dict(options)
    if backend == "hybrid" and isinstance(done.final, Particles):
        spectral = sorted(set(options) - {"particle_options"})
        if spectral:
            raise ValueError(f"`options` {spectral} would be ignored: this hybrid run has handed off to particles, "
                             "and continues with them; change their options through `particle_options`.")
    checks = [(_merged(stored, options), options, "")]
    po = options.get("particle_options")
    if isinstance(po, dict):        # the particle phase of a hybrid run has its own step rule
        checks.append(({**(stored.get("particle_options") or {}), **po}, po, " (particle_options)"))
    for merged, given, where in checks:
        why = fixed_steps(merged)
        if why:
            try:
                refuse_unused(given, ADAPTIVE_OPTIONS, why)
            except ValueError as err:
                raise ValueError(f"`options`{where}: {err}") from None
    if defaults is not None:    # None: the backend's default, recorded as such (unless the continuation drops it)
        fixed = fixed_steps(_merged(stored, options))
        for k in [k for k, v in options.items() if v is None and not (fixed and k in ADAPTIVE_OPTIONS)]:
            options[k] = defaults()[k]
    return options


def _resumable(options: dict) -> dict:
    """Stored options as a continuation takes them: those a fixed-step run would refuse as unused dropped (the
    stored options are all of them, defaults included), the stored step capped as the run would take it
    next; the same inside a hybrid run's ``particle_options``."""
    options = dict(options)
    if fixed_steps(options):
        options = {k: v for k, v in options.items() if k not in ADAPTIVE_OPTIONS}
    if options.get("first_step") is not None:
        top = options.get("max_step") or np.inf
        options["first_step"] = min(max(options["first_step"], options.get("min_step", 0.0)), top)
    if isinstance(options.get("particle_options"), dict):
        options["particle_options"] = _resumable(options["particle_options"])
    return options


def _extension_times(times, stored_final, end, save_every) -> np.ndarray:
    """Save times in (stored_final, end]: every ``save_every`` (default the largest spacing of ``times``, the stored
    times and those the run has not reached yet), and ``end``."""
    if end <= stored_final:
        return np.array([])
    if save_every is None:       # the run's spacing: the largest gap (a last one may be short, or an early stop
        # splits one: the save times still to come keep the gaps after it, 0.22 was taken for a spacing of 1)
        save_every = float(np.max(np.diff(times))) if len(times) > 1 else end - stored_final
    save_every_count(end, save_every, stored_final)
    return save_times(end, save_every, None, stored_final)[1:]


def _check_nonnegative(diags: dict, options: dict, start_tol=None, initial_lmax=None) -> None:
    """Refuse an initial density that is negative on the grid (beyond the backend's ``start_tol``, by default its
    ``negativity_tol``; the hybrid's is looser than its monitor's); when the option ``lmax`` truncated it
    (``initial_lmax``: the density's own band limit), say so: the truncation made it negative, and the message
    named only `initial`."""
    from .backends._spectral import start_bound as _bound

    low, given = diags.get("min_rho"), options.get("negativity_tol")
    tol = given if start_tol is None else start_tol
    lmax = diags.get("lmax")
    if (low is not None and tol is not None and low < -tol and initial_lmax is not None and lmax is not None
            and lmax < initial_lmax):
        raise ValueError(f"`lmax` must keep the initial density nonnegative: lmax={int(lmax)} truncates it (its band "
                         f"limit is {int(initial_lmax)}) to a density whose minimum on the grid is {low:.3g} < "
                         f"{_bound(tol, given)}. Raise `lmax` (up to {int(initial_lmax)}), or leave it unset.")
    if low is not None and tol is not None and low < -tol:
        raise ValueError(f"`initial` must be a nonnegative density; its minimum on the grid is {low:.3g} < "
                         f"{_bound(tol, given)}. Fix the initial density (if this is ringing of a sharp "
                         "profile, project it at a higher band limit).")


_RUN_KEYS = {"t_final", "remaining_times", "resume", "options", "complete", "handoff"}


def _concatenate(a: Trajectory, b: Trajectory) -> Trajectory:
    """``a`` then ``b`` (which starts at ``a``'s last state); a key one of them lacks (e.g. the two phases
    of a hybrid run) is NaN there, except the ``t`` diagnostic, which is the save times (a spectral run saved
    before spectral runs recorded it, resumed now)."""
    def column(table, k, n):
        return np.asarray(table[k]) if k in table else np.full(n, np.nan)

    def diagnostic(traj, k):
        if k == "t" and k not in traj.diagnostics:
            return np.asarray(traj.times, dtype=float)
        return column(traj.diagnostics, k, len(traj.times))

    diagnostics = {k: np.concatenate([diagnostic(a, k), diagnostic(b, k)[1:]])
                   for k in dict.fromkeys([*a.diagnostics, *b.diagnostics])}
    sa, sb = len(a.steps.get("t", [])), len(b.steps.get("t", []))
    steps = {k: np.concatenate([column(a.steps, k, sa), column(b.steps, k, sb)])
             for k in dict.fromkeys([*a.steps, *b.steps])}
    return Trajectory(times=np.concatenate([a.times, b.times[1:]]), states=a.states + b.states[1:],
                      diagnostics=diagnostics, steps=steps, model=a.model, backend=a.backend, status=b.status,
                      detail=b.detail, options=a.options)


def _progress_bar(progress, total, t0=0.0):
    if not progress:
        return None
    return _Progress(total, t0)


# seconds between progress lines written to a file: a batch job's log (stderr not a terminal) got a line every 0.1 s
# (~1 kB/s, ~36 MB over a 10-hour run)
BATCH_LOG_INTERVAL = 30.0


def _progress_interval(bar_class) -> float:
    """tqdm's ``mininterval``: its default 0.1 s on a terminal or in a notebook (a widget), else
    :data:`BATCH_LOG_INTERVAL`."""
    isatty = getattr(sys.stderr, "isatty", None)
    terminal = bool(isatty and isatty())
    notebook = any(c.__module__ == "tqdm.notebook" for c in bar_class.__mro__)
    return 0.1 if terminal or notebook else BATCH_LOG_INTERVAL


class _Progress:
    """tqdm over simulated time; the postfix shows the step size and, for spectral runs, L and the tail energy."""

    def __init__(self, total, t0):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=float(total), initial=float(t0), unit="t", dynamic_ncols=True,
                        mininterval=_progress_interval(tqdm),
                        bar_format="{l_bar}{bar}| t={n:.4g}/{total:.4g} [{elapsed}<{remaining}{postfix}]")

    def step(self, t, dt, **monitors):
        self.bar.update(t - self.bar.n)
        if dt is not None:
            post = {"dt": f"{dt:.2e}"}
            post.update({k: (f"{v:.1e}" if isinstance(v, float) else v) for k, v in monitors.items()})
            self.bar.set_postfix(post, refresh=False)

    def close(self):
        self.bar.close()


#: the backends that move tokens (:func:`particle_velocity`, :func:`meanfield.ensemble`); "hybrid" starts from a density
PARTICLE_BACKENDS = ("particles", "particles-sh")


def particle_backend(value, where: str) -> str:
    """``value`` after checking it names a particle backend: "spectral" failed later on its Particles with "needs a
    Density", and "hybrid" in particle_velocity with an AttributeError."""
    if not (isinstance(value, str) and value in PARTICLE_BACKENDS):
        raise ValueError(f"`backend` must be one of {list(PARTICLE_BACKENDS)} for {where}; got backend={value!r}.")
    return value


def particle_velocity(model, particles, t: float = 0.0, *, backend: str = "particles", **options):
    """The scheme's velocity of ``particles`` at time ``t``: one right-hand-side evaluation of a particle backend.

    Parameters
    ----------
    model : Model
        The dynamics (β, scheme, attention, Q, K, V, α, τ); its ``d`` must be that of ``particles``.
    particles : Particles
        Directions (n, d), weights, radii.
    t : float
        Time (enters LN-Scaling, nGPT's α(t), Mix-LN's switch).
    backend : {"particles", "particles-sh"}
        The exact O(N²) attention (any d) or the spectral one on S² (isotropic kernels).
    **options
        Backend options (e.g. ``chunk``, ``causal`` for "particles"; ``tol``, ``lmax`` for "particles-sh").

    Returns
    -------
    dtheta : ndarray, shape (n, d)
        dθ_j/dt = P_θ A_j / s_j.
    dr : ndarray, shape (n,) or None
        dr_j/dt for schemes with a radius.

    Raises
    ------
    ValueError
        ``backend`` is not "particles" or "particles-sh", or the velocity is undefined: a token's speed factor is 0
        (Peri-LN and nGPT divide by ‖A_j‖, which is 0 for a token that sees only zero-weight tokens, e.g. first
        under a causal mask, or with V = 0); the message names the token.  (It used to return NaN for every token.)
    """
    t = positive_float("t", t, allow_zero=True)       # LN-Scaling's √(t+1) at t = −5 was NaN for every token
    backend = particle_backend(backend, "particle_velocity (the velocity of tokens)")
    return get_backend(backend)(model, particles, **options).velocity(t)
