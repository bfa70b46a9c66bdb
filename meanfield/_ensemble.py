"""Ensembles of independent particle runs: means, standard deviations and confidence intervals per time.

R replicas draw their initial tokens with independent streams (``numpy.random.SeedSequence(seed).spawn(R)``),
run through :func:`meanfield.simulate`, and an observable of every saved state is summarized over the
replicas with Student-t confidence intervals.
"""
from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np
from ._lazy import LazyModule

stats = LazyModule("scipy.stats")

from ._measures import Particles, pair_alignment
from ._simulate import Status, save_times, simulate
from ._validate import nonneg_int


def mean_alignment(particles: Particles) -> float:
    """The mean pairwise alignment Σ_{i≠j} w_i w_j ⟨θ_i, θ_j⟩ / Σ_{i≠j} w_i w_j of weighted tokens.

    Computed in O(n d) through the mean vector m = Σ_i w_i θ_i as (|m|² − Σ_i w_i²) / (1 − Σ_i w_i²);
    the default observable of :func:`ensemble`.  Radii are ignored.  For particles it equals
    ``alignment_statistics(particles).mean_alignment``.

    Parameters
    ----------
    particles : Particles
        Tokens θ_i on S^{d-1}, shape (n, d), with weights w_i summing to 1.

    Returns
    -------
    float
        The mean alignment in [−1, 1]: 1 for a single cluster (and for a single token), about 0 for
        tokens spread uniformly.

    Raises
    ------
    TypeError
        If ``particles`` is not :class:`Particles` (for a Density use :func:`alignment_statistics`).
    """
    if not isinstance(particles, Particles):
        raise TypeError(f"`particles` must be meanfield.Particles; got {type(particles).__name__} (for a "
                        "Density use alignment_statistics).")
    return pair_alignment(particles.weights, particles.positions)


@dataclass(frozen=True)
class EnsembleResult:
    """Summary of R replicas.

    Attributes
    ----------
    times : ndarray, shape (T,)
        The saved times (shared by all replicas).
    values : ndarray, shape (R, T, ...)
        The observable per replica and time (NaN at the save times a replica did not reach; the state where
        it stopped, between save times, is not counted).
    mean, std : ndarray, shape (T, ...)
        Mean and sample standard deviation (ddof = 1) over the replicas that reached each time.
    ci_low, ci_high : ndarray, shape (T, ...)
        The two-sided ``confidence`` interval of the mean, mean ∓ t_{(1+c)/2, k−1} · std/√k.
    count : ndarray, shape (T,)
        Replicas that reached each time (k).
    confidence : float
    seeds : list of numpy.random.SeedSequence
        The replicas' seed sequences (re-run replica i with ``seeds[i]``).
    statuses : list of Status
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

    @property
    def replicas(self) -> int:
        return self.values.shape[0]

    @property
    def success(self) -> bool:
        return all(s is Status.OK for s in self.statuses)


def _initial(sampler_or_n, model, rng):
    if isinstance(sampler_or_n, numbers.Integral) and not isinstance(sampler_or_n, bool):
        return Particles.uniform(int(sampler_or_n), model.d, seed=rng)
    p = sampler_or_n(rng)
    if not isinstance(p, Particles):
        raise TypeError(f"the sampler must return meanfield.Particles; got {type(p).__name__}.")
    return p


def ensemble(model, sampler_or_n, t_final, *, replicas: int, seed=0, observable=None,
             backend: str = "particles", save_every=None, t_eval=None, t0: float = 0.0,
             confidence: float = 0.95, **options) -> EnsembleResult:
    """Run R independent replicas and summarize an observable over them.

    Parameters
    ----------
    model : Model
    sampler_or_n : int or callable
        n: n i.i.d. uniform tokens on S^{d-1} per replica; or ``sampler(rng) -> Particles`` called with
        each replica's ``numpy.random.Generator``, e.g.
        ``lambda rng: mf.Particles.from_density(rho, 1000, seed=rng)``.
    t_final : float
        Final time (> ``t0``).
    replicas : int
        R ≥ 2.
    seed : int or SeedSequence
        Root seed; replica i uses ``SeedSequence(seed).spawn(R)[i]``.
    observable : callable, optional
        ``observable(particles) -> float or array`` on every saved state; default
        :func:`mean_alignment`.
    backend : str
        A particle backend ("particles", "particles-sh").
    save_every, t_eval, t0
        As in :func:`meanfield.simulate`: the replicas start at ``t0`` and keep their states at the same times.
    confidence : float
        Level of the confidence interval, in (0, 1).
    **options
        Backend options.

    Returns
    -------
    EnsembleResult
    """
    replicas = nonneg_int("replicas", replicas, minimum=2)
    if not (isinstance(confidence, numbers.Real) and 0 < confidence < 1):
        raise ValueError(f"`confidence` must be in (0, 1); got confidence={confidence!r}.")
    if observable is None:
        observable = mean_alignment
    elif not callable(observable):
        raise TypeError(f"`observable` must be callable; got {observable!r}.")
    if isinstance(sampler_or_n, numbers.Integral) and not isinstance(sampler_or_n, bool):
        nonneg_int("sampler_or_n", sampler_or_n, minimum=1)
    elif not callable(sampler_or_n):
        raise TypeError(f"`sampler_or_n` must be a token count n ≥ 1 or a callable sampler(rng); got {sampler_or_n!r}.")
    times = save_times(t_final, save_every, t_eval, t0)
    try:
        root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    except (TypeError, ValueError):
        raise TypeError(f"`seed` must be an int ≥ 0 or a numpy SeedSequence; got seed={seed!r}.") from None
    seeds = root.spawn(replicas)

    rows, statuses = [], []
    for ss in seeds:
        rng = np.random.default_rng(ss)
        traj = simulate(model, _initial(sampler_or_n, model, rng), t_final, backend=backend,
                        save_every=save_every, t_eval=t_eval, t0=t0, **options)
        vals = [np.asarray(observable(s), dtype=float) for s in traj.states]
        statuses.append(traj.status)
        rows.append((traj.times, vals))
    shape = rows[0][1][0].shape
    values = np.full((replicas, times.size) + shape, np.nan)
    for i, (ts, vals) in enumerate(rows):
        # by time, not by position: a replica that stopped early ends with its state at the stop, off the grid
        at = np.searchsorted(times, ts)
        on_grid = (at < times.size) & (times[np.minimum(at, times.size - 1)] == ts)
        if on_grid.any():
            values[i, at[on_grid]] = np.stack([v for v, keep in zip(vals, on_grid) if keep])
    count = np.sum(np.all(np.isfinite(values.reshape(replicas, times.size, -1)), axis=2), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # times no replica (or one) reached: NaN
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0, ddof=1)
        half = stats.t.ppf(0.5 + confidence / 2, np.maximum(count - 1, 1)) / np.sqrt(count)
    half = half.reshape((-1,) + (1,) * len(shape)) * std
    return EnsembleResult(times=times, values=values, mean=mean, std=std, ci_low=mean - half, ci_high=mean + half,
                          count=count, confidence=float(confidence), seeds=list(seeds), statuses=statuses)
