"""Between densities and particles: i.i.d. samples of a density, coefficients of an empirical measure.

* :func:`sample_density` draws n i.i.d. tokens from a :class:`Density` (S², S¹) or a
  :class:`ZonalDensity` (any S^{d-1}) by rejection against uniform proposals, vectorized in batches;
  the bound is the density's maximum on a fine grid with a margin, and a proposal that exceeds it
  restarts the draw with a larger bound (so the samples are exact, never biased by a low bound).
* :func:`particles_coefficients` gives the coefficients, in the :class:`Density` layout and
  normalization (values w.r.t. the normalized measure σ), of the measure Σ_j w_j δ_{θ_j}.
"""
from __future__ import annotations

import numpy as np

from ._measures import Density, Particles, ZonalDensity, conversion_hint
from ._memory import require
from ._validate import nonneg_int, random_generator
from .sphere._zonal import gegenbauer_norms, zonal_synthesis

_MARGIN = 1.05          # bound = margin × (max on the fine grid)
_NEG_TOL = 1e-8         # relative negativity that is treated as rounding (clipped to 0)


def _uniform_sphere(rng, m, d):
    x = rng.standard_normal((m, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _evaluator(density):
    """(values(points), fine-grid values, d) for the supported density types."""
    if isinstance(density, ZonalDensity):
        t, g = _zonal_fine_grid(density)

        def values(points):     # the proposals: refused where no digit is correct (never reached in high d)
            tt = np.clip(points @ density.axis, -1.0, 1.0)
            v = zonal_synthesis(density.coeffs, tt, density.d)
            density._check_rounding(tt, v, warn_too=False)
            return v
        return values, g[_resolved(density, t, g)], density.d
    if isinstance(density, Density):
        if density.d == 3:
            from .sphere._sh import SphereGrid
            fine = density.on_grid(SphereGrid.for_bandlimit(4 * density.lmax + 8))
        else:
            from .sphere._circle import circle_synthesis
            fine = circle_synthesis(density.coeffs, 16 * density.lmax + 64)
        return density.evaluate, np.ravel(fine), density.d
    raise TypeError(f"`density` must be a meanfield.Density or ZonalDensity; got {type(density).__name__}."
                    + conversion_hint(density))


def _zonal_fine_grid(density):
    """(t, g(t)) on the fine grid of a ZonalDensity, without the rounding check of evaluate_profile (see _resolved)."""
    t = np.cos(np.linspace(0.0, np.pi, 16 * density.lmax + 65))
    return t, zonal_synthesis(density.coeffs, t, density.d)


def _resolved(density, t, g):
    """Where g(t) is good to 1e-3 of max(|g|, ‖g‖) by its rounding estimate.  In high d the values near the poles
    are rounding (e^{5t} on S^999 at L = 100: −4e55 at t = 1), and sampling refused the density as negative there
    ("min -4.18e+55 against max 1.87e+19"), or would have drawn ~1e19 proposals per token."""
    norm = np.sqrt(np.sum(density.coeffs ** 2 * gegenbauer_norms(density.lmax, density.d)))
    return density.rounding_error(t) <= 1e-3 * np.maximum(np.abs(g), norm)


def _radii(density, points):
    if density.radius is None:
        return None
    if isinstance(density, ZonalDensity):
        from .sphere._zonal import zonal_synthesis
        return zonal_synthesis(density.radius, np.clip(points @ density.axis, -1.0, 1.0), density.d)
    return density.evaluate_radius(points)


def sample_density(density, n: int, seed=0, *, batch: int | None = None) -> Particles:
    """n i.i.d. tokens from the probability density ``density`` (equal weights 1/n).

    Parameters
    ----------
    density : Density, ZonalDensity, or list or tuple of them
        Values w.r.t. the normalized measure σ; need not have unit mass (it is normalized), must be
        ≥ 0 up to rounding (min ≥ −1e-8·max on a fine grid; tiny negative values count as 0).  A list
        is a mixture of species (as ``initial`` of :func:`meanfield.simulate`): each species gets a
        number of tokens proportional to its mass (at least one), drawn from it with its radius field,
        and weights such that each species keeps its share of the total mass (the weights sum to 1).
    n : int
        Number of samples, n ≥ 1 (≥ the number of species).
    seed : None, int, SeedSequence or numpy.random.Generator
        Randomness (``numpy.random.default_rng(seed)``); default 0, so that a call without a seed draws the same
        tokens every time, as :meth:`Particles.uniform <meanfield.Particles.uniform>`, :meth:`Density.random
        <meanfield.Density.random>` and configuration files do (None: fresh entropy on each call).
    batch : int, optional
        Proposals per round (default: enough for the remaining samples at the expected acceptance).

    Returns
    -------
    Particles
        Positions (n, d); radii from the density's radius field when it has one.

    Notes
    -----
    Rejection sampling: propose x uniform on S^{d-1}, accept with probability ρ(x)/M.  M is 1.05 times
    the maximum of ρ on a grid several times finer than its band limit (for a ZonalDensity, where its values are
    good to 1e-3 by :meth:`~meanfield.ZonalDensity.rounding_error`: in high d those near the poles are rounding,
    which no uniform proposal reaches, and a proposal there is refused with ValueError); if a proposal has ρ(x) > M
    the draw restarts with M = 1.1·ρ(x), so the accepted samples follow ρ exactly.  The expected
    number of proposals is n·M/mass.  A ZonalDensity g(⟨x, e⟩) on S^{d-1}, d > 3, whose mass sits where σ has
    little (concentrated g in high d: e^{10(t−1)} on S^19 has M/mass ≈ 2400) is drawn the same way in
    t = ⟨x, e⟩ instead, from its law ∝ g(t)(1 − t²)^{(d−3)/2} with uniform t proposals (about 6 per token
    there), then x = t e + √(1 − t²) u with u uniform about the axis; this is used when it needs less than
    half the proposals.
    """
    n = nonneg_int("n", n, minimum=1)
    rng = random_generator(seed)
    if isinstance(density, (list, tuple)):
        return _sample_species(list(density), n, rng, batch)
    evaluate, fine, d = _evaluator(density)
    top = float(np.max(fine))
    if not top > 0:
        raise ValueError(f"`density` has no positive values (max {top:.3g} on a fine grid); cannot sample it.")
    low = float(np.min(fine))
    if low < -_NEG_TOL * top:
        raise ValueError(f"`density` takes negative values (min {low:.3g} against max {top:.3g} on a fine grid); "
                         "only a nonnegative density can be sampled.")
    mass = float(density.mass())
    if not mass > 0:
        raise ValueError(f"`density` must have positive mass; got mass={mass!r}.")
    if batch is not None:
        batch = nonneg_int("batch", batch, minimum=1)
    bound = _MARGIN * top
    propose, width = (lambda m: _uniform_sphere(rng, m, d)), d
    if isinstance(density, ZonalDensity):
        along = _zonal_proposal(density, rng, bound / mass)
        if along is not None:
            propose, evaluate, bound, mass, width = (*along, 1)
    m0 = batch or int(np.ceil(1.2 * n * bound / mass)) + 16      # proposals of the first round
    require(8.0 * (m0 * (2 * width + 3) + 3 * n * d), f"sampling n={n} tokens on S^{d - 1}",
            "lower `n` (or pass a smaller `batch`).")
    while True:
        chunks, got, restart = [], 0, False
        while got < n:
            m = batch or int(np.ceil(1.2 * (n - got) * bound / mass)) + 16
            x = propose(m)
            v = evaluate(x)
            if np.max(v) > bound:          # the grid maximum was too low: restart with a safe bound
                bound = 1.1 * float(np.max(v))
                restart = True
                break
            keep = rng.random(m) * bound < v
            chunks.append(x[keep])
            got += int(keep.sum())
        if not restart:
            break
    x = np.concatenate(chunks)[:n]
    if width == 1:                          # accepted t = ⟨x, e⟩: the directions about the axis are uniform
        x = _around_axis(x, density.axis, rng)
    return Particles(x, None, _radii(density, x), normalize=True)


def _zonal_proposal(density, rng, ratio: float):
    """(propose(m), evaluate(t), bound, mass) of rejection sampling of t = ⟨x, e⟩ from its law ∝ h(t) dt on
    [−1, 1], h(t) = g(t)(1 − t²)^{(d−3)/2}, with uniform t proposals; None when that does not accept clearly more
    often than uniform directions, which accept mass/max g (``ratio`` = bound/mass).

    In high d a concentrated g has its mass where σ has almost none: e^{10(t−1)} on S^19 has max g / mass = 2266,
    so 50 000 tokens needed 1.1e8 proposals of 20 numbers (refused as 46 GiB), where h/max h accepts 1 in 6.  For
    d = 2 the weight is unbounded at t = ±1 (no uniform-t bound exists) and for d = 3 it is 1 (the same draw)."""
    d = density.d
    if d <= 3:
        return None
    t, g = _zonal_fine_grid(density)
    power = (d - 3) / 2

    def h(tt):              # g's rounding near the poles is multiplied by (1 − t²)^p: checked on the fine grid
        with np.errstate(under="ignore"):
            return zonal_synthesis(density.coeffs, tt, d) * (1.0 - tt * tt) ** power
    with np.errstate(under="ignore"):
        weight = (1.0 - t * t) ** power
    fine = g * weight
    if np.max(density.rounding_error(t) * weight) > 1e-3 * np.max(fine):
        return None
    bound = _MARGIN * float(np.max(fine))
    # ∫ h dt = mass · ∫ (1 − t²)^p dt, ∫_{-1}^{1} (1 − t²)^p dt = B(1/2, p + 1), by logs (it underflows in high d)
    from scipy.special import betaln
    mass_t = float(density.mass()) * np.exp(betaln(0.5, power + 1.0))
    if not (bound > 0 and 2 * bound / mass_t < ratio / 2):       # a clear gain, else the draw (and stream) stays
        return None
    return (lambda m: rng.uniform(-1.0, 1.0, m)), h, bound, mass_t / 2      # proposals uniform: density 1/2


def _around_axis(t: np.ndarray, axis: np.ndarray, rng) -> np.ndarray:
    """Unit vectors x = t e + √(1 − t²) u, u uniform on the unit sphere of e^⊥ (the law of x given ⟨x, e⟩ = t
    under a zonal density)."""
    u = rng.standard_normal((t.size, axis.size))
    u -= np.outer(u @ axis, axis)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return t[:, None] * axis + np.sqrt(np.clip(1.0 - t * t, 0.0, None))[:, None] * u


def _sample_species(species: list, n: int, rng, batch) -> Particles:
    """:func:`sample_density` of a mixture: tokens per species by largest remainder of n·(mass share), ≥ 1 each."""
    if not species or not all(isinstance(s, (Density, ZonalDensity)) for s in species):
        raise TypeError("`density` as a list must hold Density or ZonalDensity species (at least one); got "
                        f"{[type(s).__name__ for s in species] or 'an empty list'}.")
    if len({s.d for s in species}) != 1:
        raise ValueError(f"the species must live on one sphere; got d = {sorted({s.d for s in species})}.")
    masses = np.array([float(s.mass()) for s in species])
    if not np.all(masses > 0):
        raise ValueError(f"every species must have positive mass; got masses {masses.tolist()}.")
    if n < len(species):
        raise ValueError(f"`n` must be ≥ the number of species ({len(species)}), one token each at least; got n={n}.")
    share = masses / masses.sum()
    counts = np.maximum(1, np.floor(share * n).astype(int))
    while counts.sum() < n:                       # largest remainders first
        counts[np.argmax(share * n - counts)] += 1
    while counts.sum() > n:                       # the minimum of one token overshot: take from the largest
        counts[np.argmax(np.where(counts > 1, counts - share * n, -np.inf))] -= 1
    parts = [sample_density(s, int(k), rng, batch=batch) for s, k in zip(species, counts)]
    radii = None
    if any(p.radii is not None for p in parts):
        radii = np.concatenate([p.radii if p.radii is not None else np.ones(p.n) for p in parts])
    weights = np.concatenate([np.full(k, w / k) for k, w in zip(counts, share)])
    return Particles(np.concatenate([p.positions for p in parts]), weights, radii)


def particles_coefficients(particles: Particles, lmax: int) -> np.ndarray:
    """Coefficients of the empirical measure Σ_j w_j δ_{θ_j} in the :class:`Density` layout.

    Parameters
    ----------
    particles : Particles
        d = 3 (S²) or d = 2 (S¹).
    lmax : int
        Band limit L ≥ 0.

    Returns
    -------
    ndarray, complex
        d = 3: shape (nalm(L),), 4π Σ_j w_j conj(Y_ℓm(θ_j)) (orthonormal Y_ℓm; ρ̂_00 = √(4π) for unit
        mass), by one adjoint non-uniform transform, O(n + L² log L).  d = 2: shape (L + 1,),
        c_k = Σ_j w_j e^{−ikφ_j} (c_0 = 1), O(n + L log L) beyond small n·L, to within
        :func:`meanfield.sphere.circle_adjoint_error` · Σ_j |w_j|.  Wrap with ``Density.from_coefficients(c, L, d)``; the
        series of a Dirac sum does not converge, so use it through smooth functionals (H^{-s}
        distances, low modes).
    """
    if not isinstance(particles, Particles):
        raise TypeError(f"`particles` must be meanfield.Particles; got {type(particles).__name__}.")
    lmax = nonneg_int("lmax", lmax)
    if particles.d == 3:
        from .sphere._sh import adjoint_synthesis_points
        return 4 * np.pi * adjoint_synthesis_points(particles.weights, particles.positions, lmax)
    if particles.d == 2:
        from .sphere._circle import circle_adjoint_points
        p = particles.positions
        return circle_adjoint_points(particles.weights, np.arctan2(p[:, 1], p[:, 0]), lmax)
    raise ValueError(f"`particles` must live on S² (d=3) or S¹ (d=2) for spherical-harmonic/Fourier "
                     f"coefficients; got d={particles.d}.")
