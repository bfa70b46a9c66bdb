"""The result of :func:`meanfield.ensemble` and its consistency check: below the ensemble runner and the result files,
which both use it (the runner builds it, :mod:`meanfield._io` writes and reads it)."""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field, fields

import numpy as np

from ._model import Model
from ._trajectory import Status
from ._values import same_values

#: The confidence intervals of :func:`ensemble` (``interval=``).
INTERVALS = ("t", "bootstrap")


@dataclass(frozen=True, eq=False)
class EnsembleResult:
    """Summary of R replicas.

    Attributes
    ----------
    times : ndarray, shape (T,)
        The saved times (shared by all replicas).
    values : ndarray, shape (R, T, ...)
        The observable per replica and time as it returned it; NaN at the save times a replica did not reach
        (the state where it stopped, between save times, is not counted).
    mean, std : ndarray, shape (T, ...)
        Mean and sample standard deviation (ddof = 1) over the k replicas counted at each time (``count``).
        Where those k values are all equal, ``mean`` is that value and ``std`` is 0 exactly (a conserved
        quantity's interval is then the point itself, not one that misses it by rounding).
    ci_low, ci_high : ndarray, shape (T, ...)
        The two-sided ``confidence`` interval of the mean, by ``interval``: "t", mean ∓ t_{(1+c)/2, k−1} ·
        std/√k (Student t: exact for normally distributed values, approximate otherwise), NaN where k < 2;
        "bootstrap", the BCa interval of ``scipy.stats.bootstrap`` over the k values, NaN where k is below the
        minimum for ``confidence`` (see :func:`ensemble`).  Where the k values are all equal, both are that value.
        The intervals are pointwise: each covers its own time's mean with probability ``confidence``; the band over
        all the times covers the whole mean curve less often unless the values at different times are strongly
        correlated (the mean z-coordinate of 20 tokens, β = 2, R = 10, 9 times in [0, 2], 1000 ensembles: 0.954–0.957
        at each time, 0.951 for all nine at once).
    count : ndarray, shape (T,)
        The number k of replicas counted at each time: those that reached it with a finite observable (every
        component finite, for an array observable; a non-finite value is warned about and leaves the
        replica out of every component at that time).
    confidence : float
    seeds : list of numpy.random.SeedSequence
        The replicas' seed sequences: replica i's initial tokens are drawn with
        ``numpy.random.default_rng(seeds[i])``, so the sampler re-run with that generator gives them again.
    statuses : list of Status
        How each replica's run ended.  A Ctrl-C (KeyboardInterrupt) stops the whole ensemble: the replicas
        interrupted, and those run one by one that had not started (no values), are INTERRUPTED.
    interval : str
        Which interval ``ci_low``, ``ci_high`` are: "t" or "bootstrap".
    bootstrap_seed : numpy.random.SeedSequence or None
        For "bootstrap", the seed sequence of the resampling: the intervals are ``scipy.stats.bootstrap`` with
        ``rng=numpy.random.default_rng(bootstrap_seed)``; None for "t".
    model : Model or None
        The dynamics every replica ran.
    backend : str or None
        The particle backend of the runs ("particles" or "particles-sh").
    options : dict
        The backend options each replica ran with, after defaults, as a :class:`~meanfield.Trajectory`'s
        ``options`` (those of replica 0's run; with ``batched``, ``groups`` is the 1 of a replica alone).  Not all
        are accepted back as given (``rtol`` with a fixed-step method is refused as ignored): to run the
        ensemble again use :meth:`rerun_arguments`.
    t0, t_final : float or None
        The start and end times of the runs (``times[0]`` and ``times[-1]``).
    observable : str or None
        What ``values`` are: the observable's ``__name__`` ("mean_alignment" for the default), or its repr.
    sampler : int, str or None
        How each replica's initial tokens were drawn: n (an int) for n i.i.d. uniform tokens, else the
        sampler's ``__name__`` (or repr).
    batched : bool or None
        Whether the replicas ran together as one run with ``groups`` = R (their adaptive steps shared).

    Notes
    -----
    The provenance fields (``model`` … ``batched``) are None (``options`` empty) for a result built by hand; a
    result of :func:`ensemble` fills them.  :func:`meanfield.save` writes a result to an HDF5 file and
    :func:`meanfield.load` reads it back equal: ``==`` compares every field by value (arrays entry by entry, NaN
    equal to NaN; seed sequences by their ``state``).  A callable backend option is stored as its name only, as
    in a trajectory's file.  An EnsembleResult is not hashable.
    """

    times: np.ndarray
    values: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    count: np.ndarray
    confidence: float
    seeds: list = field(repr=False)
    statuses: list = field(repr=False)
    interval: str = "t"
    bootstrap_seed: np.random.SeedSequence | None = field(default=None, repr=False)
    model: Model | None = None
    backend: str | None = None
    options: dict = field(default_factory=dict, repr=False)
    t0: float | None = field(default=None, repr=False)
    t_final: float | None = field(default=None, repr=False)
    observable: str | None = None
    sampler: int | str | None = field(default=None, repr=False)
    batched: bool | None = field(default=None, repr=False)

    @property
    def replicas(self) -> int:
        """The number R of replicas run."""
        return self.values.shape[0]

    @property
    def success(self) -> bool:
        """Whether every replica reached ``t_final`` (all statuses OK)."""
        return all(s is Status.OK for s in self.statuses)

    def rerun_arguments(self, observable=None, sampler=None) -> dict:
        """The arguments of :func:`meanfield.ensemble` that run this ensemble again: ``mf.ensemble(**kw)`` with
        ``kw = result.rerun_arguments()`` gives a result equal (``==``, bit for bit) to this one, on the same
        machine and version, for a result read back by :func:`meanfield.load` too.

        The recorded ``options`` are those after defaults, not all of which the run accepts back (``rtol`` with a
        fixed-step method: refused as ignored); they are given back as the run took them.  The root seed comes
        back from the replicas' seed sequences (an int seed as that int), the save times as ``t_eval``, and
        ``batch`` as the replicas ran (one by one after a batched attempt that stopped early: one by one).

        Parameters
        ----------
        observable : callable, optional
            The observable, needed unless it was the default :func:`mean_alignment` (a file holds its name only);
            its ``__name__`` must be the recorded one.
        sampler : callable, optional
            The sampler, needed when the initial tokens came from one (not from a token count); its ``__name__``
            must be the recorded one.

        Returns
        -------
        dict
            ``model``, ``sampler_or_n``, ``t_final``, ``replicas``, ``seed``, ``observable``, ``backend``,
            ``t_eval``, ``t0``, ``confidence``, ``interval``, ``batch`` and the backend options.

        Raises
        ------
        ValueError
            The result records no run (built by hand: ``model`` None), its seeds are not consecutive children of
            one seed sequence, or a callable the run needs is missing or named otherwise.
        TypeError
            ``observable`` or ``sampler`` is not callable.
        """
        from ._measures import mean_alignment
        from ._integrators import ADAPTIVE_OPTIONS, fixed_steps

        if self.model is None or self.t0 is None or self.sampler is None or self.observable is None:
            raise ValueError("this EnsembleResult records no run of meanfield.ensemble (built by hand: its model, "
                             "t0, sampler or observable is None): there is nothing to run again.")
        fixed = fixed_steps(self.options)
        options = {k: v for k, v in self.options.items() if not (fixed and k in ADAPTIVE_OPTIONS)}
        return dict(model=self.model, sampler_or_n=self._rerun_callable("sampler", sampler, None),
                    t_final=float(self.times[-1]), replicas=self.replicas, seed=self._root_seed(),
                    observable=self._rerun_callable("observable", observable, mean_alignment),
                    backend=self.backend or "particles", t_eval=np.array(self.times, float), t0=float(self.times[0]),
                    confidence=self.confidence, interval=self.interval,
                    batch=None if self.batched is None else bool(self.batched), **options)

    def _rerun_callable(self, name, given, default):
        """The ``sampler`` (a recorded token count as itself) or ``observable`` of a rerun: ``given``, checked against
        the recorded name, else ``default`` when that is what was recorded."""

        recorded = getattr(self, name)
        if given is None:
            if name == "sampler" and not isinstance(recorded, str):
                return int(recorded)
            if default is not None and recorded == _name(default):
                return default
            raise ValueError(f"this ensemble's {name} was {recorded!r}, which a result holds by name only: give it, "
                             f"rerun_arguments({name}=...).")
        if not callable(given):
            raise TypeError(f"`{name}` must be callable; got {given!r}.")
        if _name(given) != recorded:
            raise ValueError(f"`{name}` must be the recorded {recorded!r}; got {_name(given)!r}.")
        return given

    def _root_seed(self):
        """The ``seed`` that spawns ``seeds`` (and ``bootstrap_seed``, the next child) again: an int when they are the
        first children of ``SeedSequence(int)``, else a SeedSequence that has spawned as many children before."""
        states = [s.state for s in [*self.seeds, *([] if self.bootstrap_seed is None else [self.bootstrap_seed])]]
        for st in states:       # an entropy given as a numpy array (seed=np.array([1, 2])) compares as a list
            st["entropy"] = np.asarray(st["entropy"], dtype=object).tolist()
        first = states[0]
        key, k0 = tuple(first["spawn_key"][:-1]), first["spawn_key"][-1] if first["spawn_key"] else None
        if k0 is None or any(st["entropy"] != first["entropy"] or st["pool_size"] != first["pool_size"]
                             or tuple(st["spawn_key"]) != (*key, k0 + i) for i, st in enumerate(states)):
            raise ValueError("this EnsembleResult's `seeds` (and `bootstrap_seed`) are not consecutive children of "
                             "one SeedSequence, as meanfield.ensemble spawns them: no seed gives them again.")
        entropy = first["entropy"]
        if not key and k0 == 0 and isinstance(entropy, numbers.Integral) \
                and first["pool_size"] == np.random.SeedSequence(0).pool_size:
            return int(entropy)
        return np.random.SeedSequence(entropy, spawn_key=key, pool_size=first["pool_size"], n_children_spawned=k0)

    def __eq__(self, other):
        if not isinstance(other, EnsembleResult):
            return NotImplemented
        # SeedSequence has no value equality (a sequence read back from a file was never == the one written)
        seeds = [[getattr(s, "state", s) for s in [*r.seeds, r.bootstrap_seed]] for r in (self, other)]
        return (same_values(seeds[0], seeds[1]) and list(self.statuses) == list(other.statuses)
                and all(same_values(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)
                        if f.name not in ("seeds", "statuses", "bootstrap_seed")))

    __hash__ = None


def check_result(result: EnsembleResult) -> None:
    """Refuse an EnsembleResult whose fields do not fit together (one built by hand), naming the field and what it
    must be, before anything is written: R replicas and T times fix every shape."""
    def fail(error, name, must, got):
        raise error(f"EnsembleResult.{name} must be {must}; got {got}.")

    def real(name, kinds="iuf"):
        a = np.asarray(getattr(result, name))
        if a.dtype.kind not in kinds:
            fail(TypeError, name, "an array of " + ("integers" if kinds == "iu" else "real numbers"),
                 f"dtype {a.dtype}")
        return a

    times = real("times")
    if times.ndim != 1 or times.size == 0:
        fail(ValueError, "times", "a non-empty 1-D array", f"shape {times.shape}")
    T, values = times.size, real("values")
    if values.ndim < 2 or values.shape[0] == 0 or values.shape[1] != T:
        fail(ValueError, "values", f"of shape (R, T, ...) with R >= 1 and T = {T} (len(times))",
             f"shape {values.shape}")
    R, per_time = values.shape[0], values.shape[1:]
    for name in ("mean", "std", "ci_low", "ci_high"):
        if real(name).shape != per_time:
            fail(ValueError, name, f"of shape {per_time} (values.shape[1:]: T times × the observable's shape)",
                 f"shape {np.shape(getattr(result, name))}")
    count = real("count", "iu")
    if count.shape != (T,) or np.any(count < 0) or np.any(count > R):
        fail(ValueError, "count", f"of shape ({T},) with values in [0, R={R}]",
             f"shape {count.shape}, values in [{count.min(initial=0)}, {count.max(initial=0)}]")
    for name, kind, what in (("seeds", np.random.SeedSequence, "numpy SeedSequences"), ("statuses", Status,
                                                                                         "meanfield.Status values")):
        items = getattr(result, name)
        if not isinstance(items, (list, tuple)) or len(items) != R or not all(isinstance(x, kind) for x in items):
            fail(TypeError if isinstance(items, (list, tuple)) and len(items) == R else ValueError, name,
                 f"a list of R={R} {what} (one per replica)", repr(items)[:200])
    if not (isinstance(result.confidence, numbers.Real) and 0 < result.confidence < 1):
        fail(ValueError, "confidence", "in (0, 1)", repr(result.confidence))
    if result.interval not in INTERVALS:
        fail(ValueError, "interval", f"one of {', '.join(map(repr, INTERVALS))}", repr(result.interval))
    for name, ok, must in (
            ("bootstrap_seed", (np.random.SeedSequence,), "a numpy SeedSequence or None"),
            ("model", (Model,), "a meanfield.Model or None"), ("backend", (str,), "a str or None"),
            ("observable", (str,), "a str or None"), ("sampler", (numbers.Integral, str), "an int, a str or None"),
            ("batched", (bool, np.bool_), "a bool or None"), ("t0", (numbers.Real,), "a finite number or None"),
            ("t_final", (numbers.Real,), "a finite number or None")):
        v = getattr(result, name)
        if v is not None and (not isinstance(v, ok) or isinstance(v, numbers.Real) and not np.isfinite(v)
                              or name in ("t0", "t_final", "sampler") and isinstance(v, (bool, np.bool_))):
            fail(TypeError, name, must, repr(v))
    if not isinstance(result.options, dict) or not all(isinstance(k, str) for k in result.options):
        fail(TypeError, "options", "a dict of backend option names to values", repr(result.options)[:200])


def _name(f) -> int | str:
    """A token count as itself, a callable (observable, sampler) by its ``__name__``, else its repr: what a file can
    hold of it."""
    if isinstance(f, numbers.Integral) and not isinstance(f, bool):
        return int(f)
    name = getattr(f, "__name__", None)
    return name if isinstance(name, str) else repr(f)
