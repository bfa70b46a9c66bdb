"""Convergence studies as one call each: particles → mean field in the number of tokens N, and the spectral
solver in the band limit L.

* :func:`convergence_in_n`: N i.i.d. tokens drawn from a density, evolved by a particle backend, against the
  spectral solution from the same density; the H^{-s} distance at a fixed band limit has E‖μ_N − μ‖² = O(1/N),
  so it decays like N^{-1/2}: the fitted slope of log distance against log N, with its standard error and a 95 %
  confidence interval from the replicas.
* :func:`convergence_in_l`: the spectral solution at increasing band limits against the finest one; a smooth
  solution converges faster than any power of L, and the fitted decay per degree is reported.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._compare import sobolev_distance
from ._measures import Density, Particles, ZonalDensity
from ._validate import nonneg_int, positive_float, seed_error


@dataclass(frozen=True)
class ConvergenceResult:
    """The outcome of :func:`convergence_in_n` or :func:`convergence_in_l`.

    Attributes
    ----------
    sizes : ndarray, shape (k,)
        The token counts N (``convergence_in_n``) or band limits L (``convergence_in_l``).
    distances : ndarray, shape (replicas, k) or (k,)
        ‖μ − μ_ref‖ in H^{-s} for every replica and size (``convergence_in_l``: one per L).
    mean : ndarray, shape (k,)
        The distance averaged over the replicas (the distances themselves for ``convergence_in_l``).
    slope : float
        ``convergence_in_n``: the least-squares slope of log distance against log N over the k·replicas points
        (the line through the geometric means of the replicas; expect −1/2).  ``convergence_in_l``: the slope of
        log distance against L (the log-decay per degree, negative when converging).  NaN with a single point
        (two band limits), and when a distance is exactly 0, which has no logarithm (e.g. a stationary density,
        the same at every L).
    slope_stderr : float
        Its standard error from the scatter of the points about the line, k·replicas − 2 degrees of freedom
        (NaN with none: one replica at two N, or two band limits).  The replicas are independent draws and
        log distance has an N-independent spread (√N(μ_N − μ) has a limit law), so for ``convergence_in_n`` this
        is the sampling error of the slope; the distances of ``convergence_in_l`` are not random, and there it only
        says how far they are from an exponential decay.
    reference : Trajectory
        The reference run (the spectral solution; the finest band limit for ``convergence_in_l``).
    dof : int
        The degrees of freedom of ``slope_stderr``: k·replicas − 2 (k − 2 for ``convergence_in_l``).
    slope_ci : tuple of float
        ``convergence_in_n``: the 95 % confidence interval of the slope, slope ± t·stderr with Student's t
        quantile for ``dof`` degrees of freedom (12.7 at one, 2.0 at 60; ± 1.96·stderr at dof = 1 covered the true
        slope 70 % of the time).  (NaN, NaN) without degrees of freedom, and for ``convergence_in_l``, whose
        distances are not a sample.
    message : str
        A one-line summary, "slope … ± … (95 % CI low..high, k dof) over N_min..N_max" (a property; no interval
        when there is none).
    """

    sizes: np.ndarray
    distances: np.ndarray
    mean: np.ndarray
    slope: float
    slope_stderr: float
    reference: object
    dof: int = 0
    slope_ci: tuple = (float("nan"), float("nan"))

    @property
    def message(self) -> str:
        """A one-line summary: the slope, its standard error (and 95 % confidence interval) and the sizes."""
        ci = (f" (95 % CI {self.slope_ci[0]:.4g}..{self.slope_ci[1]:.4g}, {self.dof} dof)"
              if np.all(np.isfinite(self.slope_ci)) else "")
        return f"slope {self.slope:.4g} ± {self.slope_stderr:.2g}{ci} over {self.sizes[0]}..{self.sizes[-1]}"


def _fit(x, distances, confidence: float | None = 0.95):
    """(slope, standard error, degrees of freedom, confidence interval) of the least-squares line through
    (x, log distance) over every replica (rows of ``distances``, shape (replicas, k) or (k,)).

    The standard error is the textbook one, from the residuals with k·replicas − 2 degrees of freedom, and the
    interval uses Student's t quantile for them (``confidence=None``: no interval).  Fitting the logs of the
    replica means threw the replicas away: two N gave no error at all, and three gave one from a single degree of
    freedom, quoted as ± one standard error.  NaN without degrees of freedom, and everything NaN when a distance
    is 0 (its log is −inf; numpy warned "divide by zero encountered in log")."""
    from scipy import stats

    nan = float("nan")
    y = np.atleast_2d(np.asarray(distances, dtype=float))
    if len(x) < 2 or not np.all(y > 0):
        return nan, nan, 0, (nan, nan)
    x = np.broadcast_to(np.asarray(x, dtype=float), y.shape).ravel()
    y = np.log(y).ravel()
    dx = x - x.mean()
    slope = float(dx @ (y - y.mean()) / (dx @ dx))
    dof = y.size - 2
    if dof < 1:
        return slope, nan, 0, (nan, nan)
    residual = y - y.mean() - slope * dx
    stderr = float(np.sqrt(residual @ residual / dof / (dx @ dx)))
    if confidence is None:
        return slope, stderr, dof, (nan, nan)
    half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * stderr
    return slope, stderr, dof, (slope - half, slope + half)


def _sizes(name, values, minimum):
    sizes = np.array([nonneg_int(name, v, minimum=minimum) for v in np.atleast_1d(values).tolist()])
    if sizes.size < 2 or np.any(np.diff(sizes) <= 0):
        raise ValueError(f"`{name}` must be at least two strictly increasing integers; got {name}={values!r}.")
    return sizes


def _root_seed(seed) -> np.random.SeedSequence:
    """``seed`` as a new SeedSequence (a given one is copied: spawn() would advance the caller's object); numpy's
    own errors ("SeedSequence expects int or sequence of ints", "expected non-negative integer") named nothing."""
    if isinstance(seed, np.random.SeedSequence):
        return np.random.SeedSequence(seed.entropy, spawn_key=seed.spawn_key, pool_size=seed.pool_size,
                                      n_children_spawned=seed.n_children_spawned)
    accepted = "None, an int ≥ 0 (or a sequence of them) or a numpy SeedSequence"
    if isinstance(seed, bool):
        raise seed_error(seed, accepted)
    try:
        return np.random.SeedSequence(seed)
    except (TypeError, ValueError):
        raise seed_error(seed, accepted) from None


def _check_run(traj, what):
    if not traj.success:
        from ._errors import ConvergenceError
        raise ConvergenceError(f"the {what} did not reach t_final: {traj.message}")
    return traj


def _particle_backend(model) -> str:
    """The default particle backend: "particles-sh" where it applies (S², one head, QᵀK = c·I), else the exact
    "particles" (any d: a zonal density on S^{d-1}, d > 3)."""
    return "particles-sh" if model.d == 3 and model.isotropic and model.heads == 1 else "particles"


def _check_reference(reference, model, density, t_final) -> None:
    """A given reference must be the spectral run of this model from this density to t_final: another kind of
    object raised AttributeError ('Density' object has no attribute 'times'), and the run of another model or
    initial density was compared silently (its distances do not decay: a slope near 0 reported as the result)."""
    from ._trajectory import Trajectory

    if not isinstance(reference, Trajectory):
        raise TypeError(f"`reference` must be a meanfield.Trajectory (the spectral run from `density`); got "
                        f"{type(reference).__name__}.")
    kind = type(density)
    if not all(isinstance(state, kind) for state in (reference.states[0], reference.final)):
        raise TypeError(f"`reference` must be a spectral run whose states are {kind.__name__}s, as `density`; its "
                        f"states are {type(reference.final).__name__} (backend={reference.backend!r}).")
    if reference.model != model:
        raise ValueError(f"`reference` was run with another model ({reference.model!r}); the particles run "
                         f"{model!r}.")
    start = reference.states[0]
    L = max(start.lmax, density.lmax)
    gap = float(np.max(np.abs(start.resized(L).coeffs - density.resized(L).coeffs)))
    same_axis = kind is Density or (start.d == density.d and np.allclose(start.axis, density.axis, rtol=0, atol=1e-15))
    # the spectral backend saves its initial state as given (zero-padded to a larger lmax): equal up to rounding
    if start.d != density.d or not same_axis or gap > 1e-12 * max(1.0, float(np.max(np.abs(density.coeffs)))):
        raise ValueError(f"`reference` must start from `density`; its initial state differs from it (largest "
                         f"coefficient difference {gap:.3g}).")
    if not np.isclose(reference.times[-1], t_final, rtol=1e-12, atol=0):
        raise ValueError(f"`reference` must end at t_final={t_final:g}; it ends at t={reference.times[-1]:g}.")


def convergence_in_n(model, density, t_final, ns, *, replicas: int = 3, seed=0, s: float = 1.0,
                     lmax: int | None = None, backend: str | None = None, reference=None,
                     particle_options: dict | None = None, **spectral_options) -> ConvergenceResult:
    """Particles → mean field: the H^{-s} distance at ``t_final`` between N i.i.d. tokens and the PDE solution.

    Parameters
    ----------
    model : Model
    density : Density or ZonalDensity
        The initial probability density; the tokens are drawn from it (:func:`meanfield.sample_density`).  A
        ZonalDensity gives the study on S^{d-1} for any d (the zonal spectral solver against exact particles;
        the distance by the addition theorem, O(N²·L) per token set: see :func:`meanfield.sobolev_distance`).
    t_final : float
        The time of the comparison (> 0).
    ns : sequence of int
        Token counts N, strictly increasing.
    replicas : int
        Independent samples per N (≥ 1): the sample of replica r at the j-th N is drawn with
        ``SeedSequence(seed).spawn(replicas)[r].spawn(len(ns))[j]`` (independent across N and replicas).
    seed : None, int or SeedSequence
        Root seed (an int ≥ 0, or a sequence of them; a SeedSequence is copied, not advanced).
    s : float
        Index of the H^{-s} norm (> 0), where E‖μ_N − μ‖² = O(1/N) holds exactly at a fixed band limit,
        so the expected slope is −1/2 for any s.
    lmax : int, optional
        The band limit of the distance (default: the reference's final band limit).
    backend : str, optional
        The particle backend, "particles-sh" or "particles"; default "particles-sh" where it applies (S², one
        head, QᵀK = c·I), else "particles".
    reference : Trajectory, optional
        The spectral solution of ``model`` from ``density``, ending at ``t_final`` (default: computed here with
        ``spectral_options``, which are refused together with it); a run of another model, from another
        initial state or of another backend is refused.
    particle_options : dict, optional
        Options of the particle runs (default: ``{"step": 0.05}``, RK4; given, they replace it).
    **spectral_options
        Options of the spectral reference run (e.g. ``rtol``).

    Returns
    -------
    ConvergenceResult
        ``sizes`` = N, ``distances`` (replicas, k), ``slope`` of log distance against log N over every replica
        (expect −0.5), its ``slope_stderr`` and 95 % ``slope_ci`` (k·replicas − 2 degrees of freedom: one
        replica at two N has none).

    Raises
    ------
    TypeError
        ``density`` not a Density or ZonalDensity, ``seed`` of another type, spectral options given with a ``reference``, or a
        ``reference`` that is not a spectral Trajectory.
    ValueError
        Fewer than two or non-increasing ``ns``, ``replicas`` < 1, ``lmax`` < 1, a negative ``seed``, a ``backend``
        other than "particles" and "particles-sh", or a ``reference`` of another model, from another initial state
        or that does not end at ``t_final``.  Invalid ``particle_options`` are refused (TypeError or ValueError) before any run.
    ConvergenceError
        If the reference or a particle run does not reach ``t_final``.
    """
    from ._sampling import sample_density
    from ._simulate import particle_backend, simulate
    from .backends._registry import get_backend

    if not isinstance(density, (Density, ZonalDensity)):
        raise TypeError(f"`density` must be a meanfield.Density or ZonalDensity; got {type(density).__name__}.")
    if density.d != model.d:      # else the check of the particle options named `initial`, which the caller never passed
        raise ValueError(f"`density` has d={density.d} but the model has d={model.d}.")
    t_final = positive_float("t_final", t_final)
    ns = _sizes("ns", ns, 1)
    backend = particle_backend(_particle_backend(model) if backend is None else backend, "convergence_in_n")
    replicas = nonneg_int("replicas", replicas, minimum=1)
    s = positive_float("s", s)
    if lmax is not None:                        # it was checked only after the reference run
        lmax = nonneg_int("lmax", lmax, minimum=1)
    root = _root_seed(seed)                     # before the reference run
    particle_options = dict(particle_options) if particle_options else {"step": 0.05}
    # before the reference run, which can take minutes: backend="hybrid" or a misspelt option failed only after it,
    # the hybrid with "method='rk45' chooses its own steps" (the default step=0.05 given to its spectral phase)
    get_backend(backend).validate_options(model, Particles.uniform(2, density.d, seed=0), particle_options,
                                          times=np.array([0.0, t_final]))
    if reference is None:
        reference = simulate(model, density, t_final, **spectral_options)
    elif spectral_options:
        raise TypeError(f"spectral options {sorted(spectral_options)} set the reference run; a `reference` is "
                        "already given.")
    else:
        _check_reference(reference, model, density, t_final)
    ref = _check_run(reference, "spectral reference run").final
    lmax = ref.lmax if lmax is None else lmax
    streams = [replica.spawn(ns.size) for replica in root.spawn(replicas)]
    dist = np.empty((replicas, ns.size))
    for j, n in enumerate(ns):
        for r in range(replicas):
            tokens = sample_density(density, int(n), seed=np.random.default_rng(streams[r][j]))
            run = _check_run(simulate(model, tokens, t_final, backend=backend, **particle_options), f"particle run N={n}")
            dist[r, j] = sobolev_distance(run.final, ref, s, lmax=lmax)
    slope, err, dof, ci = _fit(np.log(ns), dist)
    return ConvergenceResult(ns, dist, dist.mean(axis=0), slope, err, reference, dof, ci)


def convergence_in_l(model, density, t_final, lmaxes, *, s: float = 1.0, **spectral_options) -> ConvergenceResult:
    """The spectral solver in the band limit: the H^{-s} distance at ``t_final`` of the run at each L to the
    run at the largest L (the reference).

    Parameters
    ----------
    model : Model
    density : Density or ZonalDensity
        The initial density (resized to each band limit; a ZonalDensity on S^{d-1}, any d).
    t_final : float
        The time of the comparison (> 0).
    lmaxes : sequence of int
        Band limits, strictly increasing; the last is the reference.
    s : float
        Index of the H^{-s} norm (> 0), taken at the reference's band limit.
    **spectral_options
        Options of every spectral run (e.g. ``rtol``; keep it well below the distances studied).  The
        resolution monitor does not stop these runs (default ``tail_warn = tail_tol = 1``,
        ``negativity_tol = 1e6``): the error of an under-resolved band limit is what is measured.

    Returns
    -------
    ConvergenceResult
        ``sizes`` = the band limits but the last, ``distances`` = ``mean`` to the reference, ``slope`` of
        log distance against L (negative: a smooth solution converges exponentially in L).
    """
    from ._simulate import simulate

    if not isinstance(density, (Density, ZonalDensity)):
        raise TypeError(f"`density` must be a meanfield.Density or ZonalDensity; got {type(density).__name__}.")
    t_final = positive_float("t_final", t_final)
    lmaxes = _sizes("lmaxes", lmaxes, 1)
    s = positive_float("s", s)
    if "lmax" in spectral_options:         # it overrode every L: the distances all read 0
        raise ValueError("`lmax` is what convergence_in_l varies (through `lmaxes`); drop it from the options.")
    options = {"tail_warn": 1.0, "tail_tol": 1.0, "negativity_tol": 1e6, **spectral_options}
    runs = [_check_run(simulate(model, density.resized(int(L)), t_final, **options), f"spectral run L={L}")
            for L in lmaxes]
    ref = runs[-1].final
    dist = np.array([sobolev_distance(r.final, ref, s, lmax=int(lmaxes[-1])) for r in runs[:-1]])
    slope, err, dof, _ = _fit(lmaxes[:-1].astype(float), dist, confidence=None)
    return ConvergenceResult(lmaxes[:-1], dist, dist, slope, err, runs[-1], dof)
