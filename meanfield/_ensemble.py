"""Ensembles of independent particle runs: means, standard deviations and confidence intervals per time.

R replicas draw their initial tokens with independent streams (``numpy.random.SeedSequence(seed).spawn(R)``),
run through :func:`meanfield.simulate`, and an observable of every saved state is summarized over the
replicas with Student-t or bootstrap (BCa) confidence intervals.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
from ._lazy import LazyModule

stats = LazyModule("scipy.stats")

from ._errors import warn
from ._measures import Particles, conversion_hint, mean_alignment
from ._model import Model
from ._simulate import Status, particle_backend, save_times, simulate
from ._ensemble_result import INTERVALS, EnsembleResult, _name
from ._validate import flag, nonneg_int, save_every_count, seed_error

#: Resamples per bootstrap interval (scipy's default).
BOOTSTRAP_RESAMPLES = 9999
#: Bound on the floats one ``scipy.stats.bootstrap`` call holds (resamples × replicas × columns): the times and
#: components are split into blocks under it (128 MB; one block for a few hundred times of 10 replicas).
_BOOTSTRAP_FLOATS = 2 ** 24


def _bootstrap_min_replicas(confidence: float) -> int:
    """The fewest replicas k with 1 − 2^{1−k} ≥ ``confidence``: below it a BCa interval cannot reach its level.

    A bootstrap percentile or BCa interval of the mean lies between the smallest and the largest of the k values
    (its ends are quantiles of resample means), and k values of a symmetric continuous distribution all fall on
    one side of its mean with probability 2^{1−k} (more often for a skewed one): then the interval misses.
    """
    k = 2
    while 2.0 ** (1 - k) > 1 - confidence:
        k += 1
    return k


#: bytes a replica holds before any run besides its tokens: its SeedSequence (~380), generator and Particles
#: (tracemalloc: 1290 per replica of 4 tokens in d = 3, of which 128 are the tokens' positions and weights)
_REPLICA_BYTES = 1200.0


def _check_replica_memory(replicas: int, sampler_or_n, d: int) -> None:
    """Refuse, before any seed is spawned, replicas whose seeds and initial tokens cannot be held (all are drawn
    before the first run): replicas=10**12 spawned SeedSequences until it held 15 GB, with no message."""
    from ._memory import require

    n = sampler_or_n if isinstance(sampler_or_n, numbers.Integral) else 0      # a sampler's count is not known yet
    require(replicas * (_REPLICA_BYTES + 8.0 * n * (d + 1)),
            f"ensemble(replicas={replicas}{f', n={n}, d={d}' if n else ''}) (every replica's seed and initial tokens)",
            "lower `replicas`" + (" or `n`." if n else "."))


#: peak bytes per float of the values array, from the replicas' values to the statistics (tracemalloc: 4.4×, the
#: values, their rows before stacking, the counted copy and nanstd's temporaries)
_VALUES_COPIES = 4.5


def _check_values_memory(replicas: int, times: int, shape: tuple) -> None:
    """Refuse, before any run, an observable whose values over the replicas and times cannot be held: they were
    allocated after every run, so a run of hours ended in a MemoryError."""
    from ._memory import require

    require(_VALUES_COPIES * 8.0 * replicas * times * int(np.prod(shape)),
            f"ensemble(replicas={replicas}) of an observable of shape {shape} at {times} times (its values and "
            "their statistics)", "lower `replicas`, save fewer times (`save_every`, `t_eval`), or return fewer values "
            "from `observable`.")


def _initial(sampler_or_n, model, rng):
    if isinstance(sampler_or_n, numbers.Integral) and not isinstance(sampler_or_n, bool):
        return Particles.uniform(int(sampler_or_n), model.d, seed=rng)
    p = sampler_or_n(rng)
    if not isinstance(p, Particles):
        raise TypeError(f"the sampler must return meanfield.Particles; got {type(p).__name__}." + conversion_hint(p))
    return p


def _check_initials(initials, model) -> None:
    """Refuse, before any run, replicas whose tokens are not on the model's sphere (naming the first), and warn of
    replicas that are all the same tokens: a sampler that ignores its generator (``seed=0`` inside it) gave R copies
    of one run, and a zero-width interval that claimed the mean exactly, silently."""
    for i, p in enumerate(initials):
        if p.d != model.d:
            raise ValueError(f"the sampler returned tokens in d={p.d} for replica {i}; the model has d={model.d} "
                             "(every replica's tokens must be on the model's sphere).")
    first = initials[0]

    def same(p):
        return (p.n == first.n and np.array_equal(p.positions, first.positions)
                and np.array_equal(p.weights, first.weights)
                and (p.radii is None) == (first.radii is None) and (p.radii is None or np.array_equal(p.radii,
                                                                                                       first.radii)))
    if all(same(p) for p in initials[1:]):
        # warned, not refused: a sampler of a few outcomes (configurations drawn from a list) can repeat one by chance
        warn(f"ensemble: the sampler returned the same tokens for all {len(initials)} replicas; if it does not draw "
             "them with the generator it is given (a fixed seed inside it instead of seed=rng), the replicas are "
             "copies of one run and their interval has zero width.")


def _unbatchable(initials, backend, options, explicit_request: bool = False) -> str:
    """Why the replicas cannot run as one grouped run of the exact backend, or (unless ``explicit_request``, the
    user's batch=True) should not by default; "" when they can."""
    from ._integrators import IMPLICIT_METHODS

    if backend != "particles":
        return f"only backend='particles' runs replicas together (got backend={backend!r})"
    groups, method = options.get("groups", 1), options.get("method")
    if not (isinstance(groups, numbers.Integral) and not isinstance(groups, bool) and groups == 1):
        return "the backend option `groups` is the batching itself"     # (a bad value is refused by the backend)
    if isinstance(method, str) and method in IMPLICIT_METHODS and not explicit_request:
        return (f"method={method!r} steps as the stiffest replica needs, and batched it was no faster "
                "(batch=True runs it batched)")
    if options.get("callback") is not None:
        return "a `callback` sees the state of one run, which would be all the replicas' tokens at once"
    counts = [p.n for p in initials]
    padded = len(counts) * max(counts) ** 2 / sum(n * n for n in counts)
    if padded > _MAX_PADDING and not explicit_request:
        return (f"the replicas' token counts ({min(counts)}–{max(counts)}) differ too much: padded to {max(counts)} "
                f"tokens each, the batch would sum {padded:.3g}× their token pairs (batch=True pads them anyway)")
    if len({p.radii is None for p in initials}) > 1:
        return "some replicas have radii and others not"
    return ""


#: batched by default while padding the replicas to the largest token count costs at most this factor in token
#: pairs (the O(n²) sums); a few replicas of 20 tokens among 10 cost less batched than one by one
_MAX_PADDING = 2.0


def _padded(initials, n: int) -> Particles:
    """The replicas as one set of R·n tokens, replica i in rows i·n … (i+1)·n − 1 with its mass 1/R.  A replica of
    fewer tokens is padded with massless copies of its last token: they have no say in any token's attention (the
    backend drops zero weights from the sums), and without a causal mask each moves exactly as the token it
    copies, so the shared adaptive steps see no new error."""
    def copies_of_last(a, p):
        return np.concatenate([a, np.repeat(a[-1:], n - p.n, axis=0)])

    return Particles(np.concatenate([copies_of_last(p.positions, p) for p in initials]),
                     np.concatenate([np.append(p.weights, np.zeros(n - p.n)) for p in initials]) / len(initials),
                     None if initials[0].radii is None else np.concatenate([copies_of_last(p.radii, p)
                                                                            for p in initials]))


#: how a batched run may stop that one replica can cause: the replicas are then run one by one
_REPLICA_FAILURES = (Status.NON_FINITE, Status.STEP_TOO_SMALL)


def _run_batched(model, initials, t_final, run, observable, shape):
    """The replicas as one run of the exact backend with ``groups`` = R: per replica (times, values), the
    statuses, and the backend options of the run; None when the run stopped where one replica may have stopped it
    (not by spending ``max_steps``, the budget of the whole batch, and with no checkpoint holding the run)."""
    R, n = len(initials), max(p.n for p in initials)
    joint = _padded(initials, n)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traj = _resumed(model, joint, t_final, R, run)
        if traj is None:
            traj = simulate(model, joint, t_final, **{**run, "groups": R})      # (groups=1 given: the default)
    budget = run.get("max_steps")
    spent = budget is not None and traj.status is Status.STEP_TOO_SMALL and len(traj.steps["t"]) >= budget
    if traj.status in _REPLICA_FAILURES and run.get("checkpoint") is None and not spent:
        warn(f"ensemble: the batched run of the {R} replicas stopped at t={traj.times[-1]:.6g} ({traj.message}); "
             "they are run one by one instead, so that each goes as far as it can (batch=False skips the batched "
             "attempt).")
        return None
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    rows = []
    for i, p in enumerate(initials):
        part = slice(i * n, i * n + p.n)
        vals = [_observed(observable, Particles._of_checked(s.positions[part], p.weights,
                                                            None if s.radii is None else s.radii[part]), shape)
                for s in traj.states]
        rows.append((traj.times, vals))
    return rows, [traj.status] * R, {**traj.options, "groups": 1}     # a replica's own groups (batching needs 1)


#: the options of :func:`simulate` that are not the backend's (the rest of an ensemble's ``run`` is)
_RUN_OPTIONS = ("backend", "save_every", "t_eval", "t0", "callback", "progress", "checkpoint", "checkpoint_every",
                "checkpoint_interval", "metadata")


def _resumed(model, joint, t_final, R, run):
    """The batched run continued from ``run["checkpoint"]`` when that file holds it (written by an earlier call with
    the same arguments: complete, or killed; or complete to an earlier ``t_final`` with the same ``save_every``,
    then extended); None when there is no file there (the run starts afresh).  A file that
    holds another run is refused, naming what differs, rather than overwritten."""
    from ._io import ResultFileError, check_output_path, load, run_info
    from ._simulate import resume
    from ._trajectory import Trajectory
    from .backends._registry import get_backend

    if run.get("checkpoint") is None:
        return None
    path = check_output_path("checkpoint", run["checkpoint"])      # a folder, a file that is not HDF5: refused
    if not path.is_file() or path.stat().st_size == 0:
        return None
    alpha = model.alpha if callable(model.alpha) else None
    try:
        done, info = load(path, alpha=alpha), run_info(path)
    except (ResultFileError, ValueError) as err:
        raise ValueError(f"`checkpoint` {str(path)!r} cannot be resumed by this ensemble: {err} (delete it or "
                         "choose another path).") from None
    if not isinstance(done, Trajectory) or "t_final" not in info:
        raise ValueError(f"`checkpoint` {str(path)!r} holds no run of meanfield.simulate (an energy or ensemble result "
                         "saved by meanfield.save, or a file saved without a run): delete it or choose another path.")
    times = save_times(t_final, run["save_every"], run["t_eval"], run["t0"])
    # (a run that stopped early is stored incomplete, with the save times it did not reach: resume tries them again)
    planned = np.asarray(done.times if info["complete"] else [*done.times, *info.get("remaining_times", [])], float)
    backend_options = {k: v for k, v in run.items() if k not in _RUN_OPTIONS}
    # a finished run whose save times begin this call's (same save_every, a later t_final): extended, as mf.resume does
    extend = bool(info["complete"] and run["t_eval"] is None and run["save_every"] is not None
                  and planned.size < times.size and np.array_equal(planned, times[:planned.size]))
    m, first = done.model, done.states[0]
    radii = joint.radii if joint.radii is not None or not model.scheme_def.has_radius else np.ones(joint.n)
    differs = [what for what, same in (
        ("the backend", done.backend == "particles"),
        ("the model", isinstance(first, Particles) and
         (m.beta, m.scheme, m.attention, m.d, m.tau) == (model.beta, model.scheme, model.attention, model.d, model.tau)
         and (callable(model.alpha) or m.alpha == model.alpha)
         and all(np.array_equal(a, b) for a, b in zip(m.matrices(), model.matrices()))),
        ("the replicas or their initial tokens", isinstance(first, Particles) and first.n == joint.n and
         np.array_equal(first.positions, joint.positions) and np.array_equal(first.weights, joint.weights) and
         (first.radii is None) == (radii is None) and (radii is None or np.array_equal(first.radii, radii))),
        ("the save times (t0, t_final, save_every, t_eval)", np.array_equal(planned, times) or extend),
    ) if not same]
    if not differs:
        wanted = get_backend("particles").validate_options(model, joint, {**backend_options, "groups": R})
        differs += [f"the option {k}={wanted[k]!r} (stored: {done.options.get(k)!r})" for k in wanted
                    if done.options.get(k) != wanted[k]]
    if differs:
        raise ValueError(f"`checkpoint` {str(path)!r} holds another run than this ensemble's (different: "
                         f"{'; '.join(differs)}): it resumes only the batched run of the same arguments; delete the "
                         "file or choose another path.")
    more = dict(t_final=float(times[-1]), save_every=run["save_every"]) if extend else {}
    return resume(path, progress=run.get("progress", False), checkpoint_every=run.get("checkpoint_every", "auto"),
                  checkpoint_interval=run.get("checkpoint_interval", 600.0), alpha=alpha, **more)


def _warn_survivors(statuses, reached, times) -> None:
    """One warning for the ensemble when replicas stopped early (each replica's own warning says why it stopped):
    from the first time one did not reach, the statistics are over the replicas still running, a selected subset
    whenever stopping depends on the trajectory.  An interrupted ensemble is not warned about again."""
    stopped = [s is not Status.OK and s is not Status.INTERRUPTED for s in statuses]
    if not any(stopped):
        return
    first = times[int(np.argmax(~reached.all(axis=0)))]
    warn(f"ensemble: {sum(stopped)} of {len(statuses)} replicas stopped before t_final={times[-1]:g} (`statuses`); "
         f"from t={first:g} on, mean, std and the interval are over the replicas that reached each time (`count`), "
         "which biases them where stopping depends on the trajectory.")


def _observed(observable, state, shape=None) -> np.ndarray:
    """``observable(state)`` as a float array, refused naming ``observable`` unless it is a real number or an array
    of them (of ``shape``, when given: that of the first value)."""
    value = observable(state)
    try:
        arr = np.asarray(value)
    except ValueError:      # a ragged list: numpy's "inhomogeneous shape" named no parameter
        raise TypeError(f"`observable` must return a real number or an array of real numbers of one shape; got "
                        f"{value!r}.") from None
    if arr.dtype.kind not in "biuf":        # None became NaN (read as 'not reached'), a str or complex a bare error
        raise TypeError(f"`observable` must return a real number or an array of real numbers; got {value!r} "
                        f"(type {type(value).__name__}).")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"`observable` must return values of one shape; it returned shape {shape} at the first "
                         f"state and {arr.shape} later.")
    return arr.astype(float)


def ensemble(model, sampler_or_n, t_final, *, replicas: int, seed=0, observable=None,
             backend: str = "particles", save_every=None, t_eval=None, t0: float = 0.0,
             confidence: float = 0.95, interval: str = "t", batch: bool | None = None,
             **options) -> EnsembleResult:
    """Run R independent replicas and summarize an observable over them.

    Parameters
    ----------
    model : Model
        The dynamics every replica runs (its ``d`` is that of the tokens).
    sampler_or_n : int or callable
        n: n i.i.d. uniform tokens on S^{d-1} per replica; or ``sampler(rng) -> Particles`` called with
        each replica's ``numpy.random.Generator``, e.g.
        ``lambda rng: mf.Particles.from_density(rho, 1000, seed=rng)``.  The seed reproduces the replicas when the
        sampler draws from that generator only (not from numpy's global state, nor ``seed=None``); one that
        returns the same tokens for every replica is warned about.
    t_final : float
        Final time (> ``t0``).
    replicas : int
        R ≥ 2.
    seed : int or SeedSequence
        Root seed: an int ≥ 0 (replica i uses ``SeedSequence(seed).spawn(R)[i]``, so the same seed gives
        the same replicas, and a larger R the same first initial tokens), or a SeedSequence, which is spawned
        from: its next R children, so the same object passed again gives new, independent replicas.  With
        ``interval="bootstrap"`` one more child, the next after the replicas', seeds the resampling.  (What
        ``numpy.random.SeedSequence`` takes besides is accepted too: a list of ints, or None for fresh entropy
        from the system, which the result's ``seeds`` record: :meth:`EnsembleResult.rerun_arguments` gives it
        back.)  The first replicas of a larger R have the same values bit for bit when run one by one; batched,
        they share their steps with the other replicas: with fixed steps their values agree to rounding (4e-17
        measured), with an adaptive method to the tolerance (8e-14 at the default rtol, 12 tokens, β = 4, R = 3
        against 7).
    observable : callable, optional
        ``observable(particles) -> float or array`` (real, of one shape) on every saved state; default
        :func:`mean_alignment`.  It is first called on replica 0's initial tokens, before any run.  A value
        that is not finite (NaN, ±inf) is warned about and counts as a time the replica did not reach.
    backend : str
        A particle backend ("particles", "particles-sh").
    save_every, t_eval, t0
        As in :func:`meanfield.simulate`: the replicas start at ``t0`` and keep their states at the same times.
    confidence : float
        Level of the confidence interval, in (0, 1).
    interval : {"t", "bootstrap"}
        The confidence interval of the mean: "t", Student t (mean ∓ t quantile · std/√k); "bootstrap", the
        bias-corrected and accelerated (BCa) bootstrap interval of ``scipy.stats.bootstrap`` with
        9999 resamples, drawn with a generator seeded from ``seed`` (reproducible; see
        ``EnsembleResult.bootstrap_seed``).  "bootstrap" needs R ≥ 1 + log₂(1/(1 − ``confidence``))
        replicas (6 at 95 %, 4 at 80 %, 8 at 99 %); it covered the mean no better than "t" in any case
        measured, and much worse for R ≤ 10: see Notes for when to use it.
    batch : bool, optional
        Run the R replicas together, as one run of backend "particles" with ``groups=R`` (each replica's tokens
        attend only to each other): one velocity evaluation for all of them, which for small n is much faster
        than R runs (their cost is per-step bookkeeping, not the O(n²) sum; see Notes).  The replicas then share
        their Runge–Kutta steps: an adaptive step is accepted when every replica's error is within the tolerance,
        so each is integrated at least as accurately as on its own, but not with the same steps (the values agree
        with ``batch=False`` to the tolerance; with fixed steps, ``step`` or ``time="layers"``, to rounding).  A
        batched run that stops early where one replica can stop it (a non-finite state, a step too small) is
        warned about, and the replicas are run one by one instead, each as far as it goes (not when it spent
        ``max_steps``: that budget bounds the batch's shared steps, and every replica stops there).  ``checkpoint`` (a
        :func:`meanfield.simulate` option) saves the batched run (then no fallback: every replica stops where it
        stopped), and a later call with the same arguments and file resumes it: a killed run goes on from its last
        checkpoint, a complete one is read back without running, and one complete to an earlier ``t_final`` with the
        same ``save_every`` is extended to this one; a file that holds another run (other model,
        replicas, initial tokens, save times or options) is refused, not overwritten.  Default: batched for
        backend "particles" with an explicit method and no ``callback`` when the replicas have the same use of
        radii and token counts close enough: a replica of fewer tokens is padded with massless copies of its last
        token (no say in the attention; without a causal mask they move as the token they copy), by default only
        while that costs at most 2× the replicas' own token pairs; ``batch=True`` refuses the other cases, ``batch=False`` runs the replicas one
        after another.  The implicit methods ("bdf", "radau") run batched only with ``batch=True`` (they factorize
        the batch's block-diagonal Jacobian sparse): they step as the stiffest replica needs, and the batch was no
        faster (10 replicas of 20 tokens, USA, β = 10, to t = 2, "bdf": 12.5 s batched, 11.0 s one by one).
    **options
        Backend options.

    Returns
    -------
    EnsembleResult
        The statistics, with what produced them (model, backend, options, times, the observable's and the
        sampler's names); :func:`meanfield.save` writes it to an HDF5 file, :func:`meanfield.load` reads it back.

    Raises
    ------
    TypeError, ValueError
        Invalid input, before any run: ``replicas`` < 2, ``confidence`` outside (0, 1), ``interval`` not "t"
        or "bootstrap", "bootstrap" with fewer replicas than its minimum, ``seed`` not an int ≥ 0 or a
        SeedSequence, a ``backend`` other than "particles" and "particles-sh", a token count < 1, an observable
        that is not callable or does not return real numbers, invalid times or backend options, a ``checkpoint``
        file that holds another run.

    Notes
    -----
    The Student-t interval covers the mean with probability ``confidence`` when the replicas' values are
    normally distributed, for any R ≥ 2, and approximately otherwise.  The BCa interval adjusts its ends to
    the skewness of the values, but that correction is asymptotic: the interval lies within the range of the
    R values, and its width comes from the spread of resample means (the variance with divisor R, not R − 1,
    and no widening like the t quantile's), so at small R it is too narrow.

    Measured coverage of the two intervals (β = 2, Post-LN, n = 20 uniform tokens, ``method="rk4"``,
    ``step=0.1``, t ∈ {0, 0.5, 1}; each ensemble summarized by both; 1000–1500 ensembles per row, binomial
    standard deviation 0.006–0.007 at 95 %, 0.010 at 80 %; ranges over the three times, which share their
    ensembles).  The true mean is 0 for the mean z-coordinate of the tokens (by symmetry; nearly normal
    values) and for :func:`mean_alignment` at t = 0 (skewed: a scaled χ² there, skewness 1.2–1.5 at the three
    times), else the mean of all 80 000 replicas:

    ========  ====  ===========  ===========  ===========  ===========
    level     R     z, "t"       z, BCa       align, "t"   align, BCa
    ========  ====  ===========  ===========  ===========  ===========
    80 %      4     0.811–0.812  0.657–0.663  0.762–0.767  0.625–0.647
    95 %      6     0.949–0.952  0.865–0.866  0.905–0.913  0.845–0.851
    95 %      10    0.951–0.954  0.903–0.905  0.915–0.918  0.886–0.887
    95 %      20    0.945–0.946  0.919–0.921  0.930–0.932  0.925–0.926
    95 %      30    0.946–0.947  0.933–0.935  0.926–0.931  0.918–0.923
    ========  ====  ===========  ===========  ===========  ===========

    A direct sampling of the t = 0 values (10 000–20 000 ensembles, standard deviation 0.0015–0.003) agrees
    with every row within 1.6 standard deviations and goes further: at 95 % with R = 50, "t" 0.947 and 0.942,
    BCa 0.940 and 0.938 (z, alignment); with R = 100, 0.952 and 0.944 against 0.947 and 0.944; at 80 % with
    R = 10, 0.800 and 0.778 against 0.749 and 0.737.  An earlier measurement of the t interval alone
    (1000–1500 ensembles): for the z-coordinate 0.942–0.946 at 95 % with R = 10, 0.951–0.955 with R = 2,
    0.791–0.799 at 80 % with R = 3; for the alignment 0.927–0.933 at 95 % with R = 10 or 2 (the direct
    sampling gives 0.919 ± 0.002 at R = 10), 0.73–0.74 at 80 % with R = 3.

    Which to use: "t", the default, for the two-sided interval.  It covered at least as often as BCa in
    every case above: near the level for the nearly normal observable at any R, below it for the skewed one
    (0.92 at 95 % with R = 10, 0.93 with 20–30, 0.94 with 50–100), where BCa is lower still up to R = 30
    (0.89 at R = 10) and equal from about R = 50.  A skewed observable needs more replicas with either
    interval.  "bootstrap" for a skewed observable with R ≳ 50 when the side of a miss matters: its two ends
    then miss about equally often (mean_alignment at R = 100: the interval lies above the mean 2.7 % and
    below it 2.9 % of the time, against 1.6 % and 4.0 % for "t"; at R = 50, 2.7 % and 3.5 % against 1.1 %
    and 4.7 %), so its upper end is the better bound.

    Batched replicas (``batch``), measured on the 2-vCPU development machine: 100 replicas of 20 tokens, Post-LN,
    β = 4, to t = 10 with a state every 1: ``method="rk4", step=0.05`` took 11.2 s one by one and 0.59 s batched
    (values equal to 2e-15); the default rk45 took 14.2–16.3 s one by one and 1.4–1.6 s batched (the shared steps
    follow the hardest replica; values within 2e-11).  Backend "particles-sh" runs its replicas one by one, and
    batching them would gain little: 32 replicas of 2000 tokens (β = 4, ``method="rk4", step=0.05``, to t = 2) took
    0.18 s per replica, as one run alone (0.13–0.20 s; under load 0.43–0.48 s against 0.42–0.46 s), and 85–90 %
    of a run is its spectral evaluations, whose non-uniform transforms take one replica's tokens per call (each
    replica has its own coefficients), so one stepper for all the replicas could save at most the other 10–15 %
    (``docs/scripts/ensembles.py`` measures it).
    """
    if not isinstance(model, Model):       # n tokens are drawn on the model's sphere before simulate would check it
        raise TypeError(f"`model` must be a meanfield.Model; got {type(model).__name__}.")
    replicas = nonneg_int("replicas", replicas, minimum=2)
    backend = particle_backend(backend, "ensemble (replicas of token runs)")
    if not (isinstance(confidence, numbers.Real) and 0 < confidence < 1):
        raise ValueError(f"`confidence` must be in (0, 1); got confidence={confidence!r}.")
    if not (isinstance(interval, str) and interval in INTERVALS):
        raise ValueError(f"`interval` must be one of {', '.join(map(repr, INTERVALS))}; got interval={interval!r}.")
    if interval == "bootstrap" and replicas < (least := _bootstrap_min_replicas(confidence)):
        raise ValueError(f"`interval`='bootstrap' needs `replicas` >= {least} at confidence={confidence!r}: a BCa "
                         "interval lies within the range of the R values, which misses the mean of a symmetric "
                         f"distribution with probability 2^(1-R) = {2.0 ** (1 - replicas):.3g} > 1 - confidence; got "
                         f"replicas={replicas} (use interval='t' or more replicas).")
    if observable is None:
        observable = mean_alignment
    elif not callable(observable):
        raise TypeError(f"`observable` must be callable; got {observable!r}.")
    if isinstance(sampler_or_n, numbers.Integral) and not isinstance(sampler_or_n, bool):
        nonneg_int("sampler_or_n", sampler_or_n, minimum=1)
    elif not callable(sampler_or_n):
        raise TypeError(f"`sampler_or_n` must be a token count n ≥ 1 or a callable sampler(rng); got {sampler_or_n!r}.")
    save_every_count(t_final, save_every, t0)       # 1e-300 would allocate the save times without end
    times = save_times(t_final, save_every, t_eval, t0)
    try:
        if isinstance(seed, bool):          # SeedSequence(True) is SeedSequence(1)
            raise TypeError
        root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    except (TypeError, ValueError):
        raise seed_error(seed, "an int ≥ 0 or a numpy SeedSequence") from None
    if batch is not None:
        batch = flag("batch", batch)
    _check_replica_memory(replicas, sampler_or_n, model.d)
    seeds = root.spawn(replicas)
    boot_seed = root.spawn(1)[0] if interval == "bootstrap" else None     # "t" leaves a SeedSequence as it was

    initials = [_initial(sampler_or_n, model, np.random.default_rng(ss)) for ss in seeds]
    _check_initials(initials, model)
    shape = _observed(observable, initials[0]).shape      # a bad observable is refused before any run
    _check_values_memory(replicas, times.size, shape)
    why_not = _unbatchable(initials, backend, options, explicit_request=bool(batch))
    if batch and why_not:
        raise ValueError(f"`batch`=True: {why_not}; use batch=False.")
    if batch is None:
        batch = not why_not
    if options.get("checkpoint") is not None and not batch:
        raise ValueError(f"`checkpoint` saves one run, and these replicas are not run as one ({why_not or 'batch=False'}"
                         "): as R runs they would overwrite each other's file; use batch=True, or no checkpoint.")
    run = dict(backend=backend, save_every=save_every, t_eval=t_eval, t0=t0, **options)
    batched = _run_batched(model, initials, t_final, run, observable, shape) if batch else None
    if batched is not None:
        rows, statuses, resolved = batched
    else:
        rows, statuses, resolved = [], [], None
        for initial in initials:
            if statuses and statuses[-1] is Status.INTERRUPTED:      # Ctrl-C stops the ensemble, not one replica
                rows.append((np.empty(0), []))
                statuses.append(Status.INTERRUPTED)
                continue
            traj = simulate(model, initial, t_final, **run)
            resolved = dict(traj.options) if resolved is None else resolved
            statuses.append(traj.status)
            rows.append((traj.times, [_observed(observable, s, shape) for s in traj.states]))
    values = np.full((replicas, times.size) + shape, np.nan)
    reached = np.zeros((replicas, times.size), bool)
    for i, (ts, vals) in enumerate(rows):
        # by time, not by position: a replica that stopped early ends with its state at the stop, off the grid
        at = np.searchsorted(times, ts)
        on_grid = (at < times.size) & (times[np.minimum(at, times.size - 1)] == ts)
        if on_grid.any():
            values[i, at[on_grid]] = np.stack([v for v, keep in zip(vals, on_grid) if keep])
            reached[i, at[on_grid]] = True
    # a replica is counted at a time when every component is finite: mean, std and the interval of every
    # component are over the same k replicas (per-component NaN skipping used k from another set)
    counted = np.all(np.isfinite(values.reshape(replicas, times.size, -1)), axis=2)
    bad = reached & ~counted
    if bad.any():
        i, j = np.argwhere(bad)[0]
        warn(f"ensemble: the observable is not finite at {int(bad.sum())} (replica, time) pair(s), e.g. replica {i} "
             f"at t={times[j]:g} ({values[i, j]!r}); those replicas are left out of mean, std and the interval at "
             "those times (see `count`).")
    _warn_survivors(statuses, reached, times)
    kept = np.where(counted.reshape(counted.shape + (1,) * len(shape)), values, np.nan)
    count = counted.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # times no replica (or one) reached: NaN
        mean = np.nanmean(kept, axis=0)
        std = np.nanstd(kept, axis=0, ddof=1)
        # equal values: their mean and std exactly (the rounding of the sum left the mean an ulp off the value and
        # an interval of a few 1e-17 that missed it)
        low, high = np.nanmin(kept, axis=0), np.nanmax(kept, axis=0)
        half = stats.t.ppf(0.5 + confidence / 2, np.maximum(count - 1, 1)) / np.sqrt(count)
    same = low == high
    mean = np.where(same, low, mean)
    std = np.where(same & (count >= 2).reshape((-1,) + (1,) * len(shape)), 0.0, std)
    half = half.reshape((-1,) + (1,) * len(shape)) * std
    if interval == "t":
        ci_low, ci_high = mean - half, mean + half
    else:
        ci_low, ci_high = _bca(kept, counted, confidence, np.random.default_rng(boot_seed))
        enough = (count >= _bootstrap_min_replicas(confidence)).reshape((-1,) + (1,) * len(shape))
        ci_low, ci_high = np.where(same & enough, low, ci_low), np.where(same & enough, low, ci_high)
        failed = enough & ~(np.isfinite(ci_low) & np.isfinite(ci_high))
        if failed.any():
            j = np.argwhere(failed)[0]
            warn(f"ensemble: the BCa interval could not be computed at {int(failed.sum())} (time, component) pair(s), "
                 f"e.g. t={times[j[0]]:g} with values in [{float(low[tuple(j)])!r}, {float(high[tuple(j)])!r}] (a "
                 "spread of a few ulps, or values whose jackknife cubes underflow or overflow); it is NaN there "
                 "(rescale the observable or use interval='t').")
    return EnsembleResult(times=times, values=values, mean=mean, std=std, ci_low=ci_low, ci_high=ci_high,
                          count=count, confidence=float(confidence), seeds=list(seeds), statuses=statuses,
                          interval=interval, bootstrap_seed=boot_seed, model=model, backend=backend,
                          options=resolved, t0=float(times[0]), t_final=float(times[-1]),
                          observable=_name(observable), sampler=_name(sampler_or_n), batched=batched is not None)


def _replica_mean(x, axis):
    """The mean along ``axis`` summed in order, the statistic of the bootstrap: each column gets the same bits
    whatever the array's shape (``np.mean`` sums in an order that depends on it, and the BCa bias correction
    counts resample means equal to the sample mean, so an ulp moved an interval end by 1e-4 of its width)."""
    x = np.moveaxis(x, axis, 0)
    total = x[0].copy()
    for row in x[1:]:
        total += row
    return total / x.shape[0]


def _bca(kept, counted, confidence, rng):
    """BCa intervals of the mean of ``kept`` (R, T, ...) over the replicas ``counted`` (R, T) at each time.

    One vectorized ``scipy.stats.bootstrap`` call over every time and component with the same count k (all of
    them, unless replicas stopped early or gave non-finite values), split into blocks only to bound the memory;
    NaN where k is below the minimum, and where all k values are equal (the caller puts the value there).
    """
    R, T = counted.shape
    flat = kept.reshape(R, T, -1)
    low, high = np.full(flat.shape[1:], np.nan), np.full(flat.shape[1:], np.nan)
    count = counted.sum(axis=0)
    order = np.argsort(~counted, axis=0, kind="stable")     # at each time the counted replicas first, in order
    for k in np.unique(count[count >= _bootstrap_min_replicas(confidence)]):
        at = np.flatnonzero(count == k)
        data = np.take_along_axis(flat[:, at], order[:k, at, None], axis=0)          # (k, times, components)
        data = np.ascontiguousarray(np.moveaxis(data, 0, -1)).reshape(-1, k)         # (columns, k)
        lo, hi = np.empty(data.shape[0]), np.empty(data.shape[0])
        block = max(1, _BOOTSTRAP_FLOATS // (BOOTSTRAP_RESAMPLES * (k + 2)))
        for b in range(0, data.shape[0], block):
            with warnings.catch_warnings():     # all k values equal: NaN with a DegenerateDataWarning; the caller
                warnings.simplefilter("ignore", stats.DegenerateDataWarning)     # puts the value there
                warnings.simplefilter("ignore", RuntimeWarning)
                res = stats.bootstrap((data[b:b + block],), _replica_mean, n_resamples=BOOTSTRAP_RESAMPLES, axis=-1,
                                      vectorized=True, confidence_level=confidence, method="BCa", rng=rng)
            lo[b:b + block], hi[b:b + block] = res.confidence_interval
        low[at], high[at] = lo.reshape(at.size, -1), hi.reshape(at.size, -1)
    return low.reshape(kept.shape[1:]), high.reshape(kept.shape[1:])


