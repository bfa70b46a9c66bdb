"""Distances between measures on the sphere: negative Sobolev norms and the attention-kernel MMD (S², S¹ in spherical
harmonics; particles and zonal densities on any S^{d-1}), and the Wasserstein distance of the geodesic metric.

Both are computed from coefficients in the :class:`~meanfield.Density` layout (values w.r.t. the
normalized measure σ), so a Density, Particles (their empirical measure) or a mixture compare alike:

    ‖μ − ν‖²_{H^{-s}} = Σ_{ℓ ≥ 0} (1 + ℓ(ℓ + d − 2))^{-s} E_ℓ(μ̂ − ν̂) / |S|,
    MMD²_β(μ, ν)      = ∬ e^{β⟨x,y⟩} d(μ−ν)(x) d(μ−ν)(y) = Σ_ℓ λ_ℓ(β) E_ℓ(μ̂ − ν̂) / |S|,

with E_ℓ the degree power and |S| = 4π on S² (1 on S¹ with its Fourier normalization).  (The ℓ = 0 term
is the difference of the masses: 0 for two probability measures.)  The H^{-s}
norm of a Dirac mass diverges for s ≤ (d−1)/2, so for particles it is taken at a fixed band limit
``lmax``: then E‖μ_N − μ‖² = O(1/N) exactly and distances of N i.i.d. tokens decay like N^{-1/2}.
"""
from __future__ import annotations

import numbers

import numpy as np

from ._measures import NEGATIVITY_TOL as _NEGATIVITY_TOL
from ._measures import Density, Particles, ZonalDensity, conversion_hint
from ._validate import nonneg_int, open_fraction, positive_float
from .sphere._funk_hecke import funk_hecke, kernel_bandlimit


def coefficients(measure, lmax: int) -> np.ndarray:
    """Density-layout coefficients up to ``lmax`` of a Density, Particles or a tuple of species."""
    if isinstance(measure, tuple):
        return sum(coefficients(m, lmax) for m in measure)
    if isinstance(measure, Density):
        return measure.resized(lmax).coeffs
    if isinstance(measure, Particles):
        from ._sampling import particles_coefficients

        return particles_coefficients(measure, lmax)
    raise TypeError(f"cannot take coefficients of {type(measure).__name__}; need a Density or Particles."
                    + conversion_hint(measure))


def _common_dimension(mu, nu) -> set:
    """The dimensions d of the two measures (Density, ZonalDensity, Particles or non-empty tuples of densities)."""
    dims = set()
    for name, m in (("mu", mu), ("nu", nu)):
        parts = m if isinstance(m, tuple) else (m,)
        if not parts or not all(isinstance(p, (Density, ZonalDensity, Particles)) for p in parts):
            raise TypeError(f"`{name}` must be a Density, ZonalDensity, Particles or a non-empty tuple of densities "
                            f"(species); got {name}={m!r}." + (conversion_hint(m) if not isinstance(m, tuple) else ""))
        dims |= {p.d for p in parts}
    return dims


def _dim(mu, nu) -> int:
    """The common d of two measures already passed through :func:`_on_s1_s2` (so a Density has d = 2 or 3, and a
    ZonalDensity d > 3): any d when they are particles and zonal densities."""
    dims = _common_dimension(mu, nu)
    if len(dims) != 1:          # first: "S¹ or S²" misled for two particle measures, which mmd takes in any d
        raise ValueError(f"both measures must live on the same sphere; got d = {sorted(dims)}.")
    return dims.pop()


def _on_s1_s2(measure):
    """A ZonalDensity on S¹ or S² as the Density it is (exactly: g(⟨x, e⟩) of degree ≤ L is a band-limited
    function of degree ≤ L, projected by a quadrature exact to that degree); other measures as they are."""
    if isinstance(measure, tuple):
        return tuple(_on_s1_s2(m) for m in measure)
    if isinstance(measure, ZonalDensity) and measure.d in (2, 3):
        return Density.from_function(measure.evaluate, measure.lmax, measure.d)
    return measure


def _gram(a, b, d: int, lmax: int) -> np.ndarray:
    """⟨a_ℓ, b_ℓ⟩ in L²(σ), ℓ = 0 … lmax, of two measures on S^{d-1} that are Particles or ZonalDensity, by the
    addition theorem: the degree-ℓ part of δ_x is N(d, ℓ) P_ℓ(⟨·, x⟩), and ⟨P_ℓ(⟨·, x⟩), P_ℓ(⟨·, y⟩)⟩ =
    P_ℓ(⟨x, y⟩)/N(d, ℓ) (P_ℓ the Gegenbauer polynomials with P_ℓ(1) = 1)."""
    from .sphere._harmonic_dimension import harmonic_dimension
    from .sphere._zonal import gegenbauer, gegenbauer_norms

    def profile(z):
        return z.resized(lmax).coeffs
    if isinstance(a, Particles) and isinstance(b, ZonalDensity):
        a, b = b, a
    if isinstance(a, ZonalDensity) and isinstance(b, ZonalDensity):
        cos = float(np.clip(a.axis @ b.axis, -1.0, 1.0))
        return profile(a) * profile(b) * gegenbauer_norms(lmax, d) * gegenbauer(lmax, cos, d)
    if isinstance(a, ZonalDensity):
        return profile(a) * (gegenbauer(lmax, np.clip(b.positions @ a.axis, -1.0, 1.0), d) @ b.weights)
    return harmonic_dimension(d, np.arange(lmax + 1)) * _gegenbauer_sums(a, b, d, lmax)


def _gegenbauer_sums(a: Particles, b: Particles, d: int, lmax: int, chunk_elements: int = 2 ** 17) -> np.ndarray:
    """Σ_ij a_i b_j P_ℓ(⟨x_i, y_j⟩), ℓ = 0 … lmax, over the atoms of two empirical measures: O(n·m·lmax).

    Blocks of rows small enough for the cache (~``chunk_elements`` inner products: 1 MB), the three-term
    recurrence in place and each degree contracted at once, where a (lmax + 1)·rows·m table of P_ℓ and an einsum
    over it ran 4–5× slower (4.4 s against 0.93 s for 4000 tokens in d = 5 at lmax = 24); a measure against
    itself by :func:`_pair_blocks`, on half the pairs.
    """
    lam = (d - 2) / 2
    total = np.zeros(lmax + 1)
    for wa, t, wb in _pair_blocks(a, b, chunk_elements):
        np.clip(t, -1.0, 1.0, out=t)
        total[0] += wa.sum() * wb.sum()
        if lmax >= 1:
            total[1] += wa @ (t @ wb)
        prev, cur, buf = np.ones_like(t), t.copy(), np.empty_like(t)
        for ell in range(1, lmax):
            # P_{ℓ+1} = (2(ℓ + λ) t P_ℓ − ℓ P_{ℓ−1}) / (ℓ + 2λ), written over P_{ℓ−1}
            np.multiply(t, cur, out=buf)
            buf *= 2 * (ell + lam) / (ell + 2 * lam)
            prev *= -ell / (ell + 2 * lam)
            prev += buf
            prev, cur = cur, prev
            total[ell + 1] += wa @ (cur @ wb)
    return total


def _degree_power_any_d(mu, nu, d: int, lmax: int) -> np.ndarray:
    """‖(μ − ν)_ℓ‖² in L²(σ), ℓ = 0 … lmax, for particles and zonal densities (tuples: their sums) on S^{d-1}."""
    def gram(x, y):
        return sum(_gram(p, q, d, lmax) for p in _parts(x) for q in _parts(y))
    # the three terms cancel for equal measures: their rounding is clipped at 0
    return np.maximum(gram(mu, mu) - 2 * gram(mu, nu) + gram(nu, nu), 0.0)


def _degree_power_of_difference(mu, nu, d: int, lmax: int) -> np.ndarray:
    """‖(μ − ν)_ℓ‖² in L²(σ), ℓ = 0 … lmax: from spherical-harmonic coefficients on S¹ and S², by the addition
    theorem on S^{d-1}, d > 3."""
    if d > 3:
        return _degree_power_any_d(mu, nu, d, lmax)
    return _degree_power(coefficients(mu, lmax) - coefficients(nu, lmax), d, lmax)


def _degree_power(c, d, lmax):
    if d == 3:
        from .sphere._sh import degree_power

        return degree_power(c, lmax) / (4 * np.pi)
    return np.abs(c) ** 2 * np.where(np.arange(lmax + 1) == 0, 1.0, 2.0)


def _default_lmax(mu, nu):
    ls = [p.lmax for m in (mu, nu) for p in _parts(m) if isinstance(p, (Density, ZonalDensity))]
    if not ls:
        raise ValueError("`lmax` is required when neither measure is a density.")
    return max(ls)


def _equal_particles(a: Particles, b: Particles) -> bool:
    """Whether two empirical measures have the same atoms in the same order (O(N), against the O(N²) sums)."""
    return a is b or (a.n == b.n and np.array_equal(a.positions, b.positions) and np.array_equal(a.weights, b.weights))


def _pair_blocks(a: Particles, b: Particles, chunk_elements: int):
    """Yield (a_I, ⟨x_I, y_J⟩, b_J) for blocks I of ~``chunk_elements`` // M rows, whose sums Σ_{i∈I, j∈J} a_i b_j
    f(⟨x_i, y_j⟩) add up to the double sum of any f.  For equal measures (by value) only the blocks on and above
    the diagonal, the weights of those above doubled (f(⟨x, y⟩) is symmetric): half the pairs.  A copy is read from
    the same arrays, so that it rounds as the original (BLAS rounds alike only at the same memory alignment), and
    ‖μ − copy‖ is 0, not the rounding of three terms (2e-9 for 500 tokens in d = 5)."""
    same = _equal_particles(a, b)
    b = a if same else b
    rows = max(1, chunk_elements // b.n)
    for i in range(0, a.n, rows):
        wa, first = a.weights[i:i + rows], i if same else 0
        wb = b.weights[first:].copy()
        if same:
            wb[len(wa):] *= 2.0
        yield wa, a.positions[i:i + rows] @ b.positions[first:].T, wb


def _mmd_direct(mu, nu, beta: float, d: int) -> float:
    """MMD_β of particles and zonal densities (tuples: their sums) on S^{d-1}, exact: S(μ, μ) − 2S(μ, ν) + S(ν, ν)
    with S the kernel integral of :func:`_kernel_sum` over every pair of parts.  Equal parts give equal sums, so
    equal measures are at 0 (one sum over the atoms of both with weights (w_μ, −w_ν) rounded to ±1e-16·e^β: MMD(μ, μ)
    read up to 8e-8 at β = 5 for half of 20 seeds, d = 6)."""
    def s(x, y):
        return sum(_kernel_sum(p, q, beta, d) for p in _parts(x) for q in _parts(y))
    return _unscale(beta, s(mu, mu) - 2 * s(mu, nu) + s(nu, nu))


def _kernel_sum(a, b, beta: float, d: int, chunk_elements: int = 2 ** 22) -> float:
    """e^{-β} ∬ e^{β⟨x,y⟩} da(x) db(y) of two Particles or ZonalDensity on S^{d-1}: between tokens the direct sum
    over pairs (:func:`_pair_blocks`), O(N·M); with a zonal density Σ_ℓ e^{-β}λ_ℓ ⟨a_ℓ, b_ℓ⟩ (Funk–Hecke), exact
    since the zonal degrees end at its band limit, O(N·L)."""
    if isinstance(a, Particles) and isinstance(b, Particles):
        return sum(float(wa @ np.exp(beta * (t - 1.0)) @ wb) for wa, t, wb in _pair_blocks(a, b, chunk_elements))
    lmax = min(p.lmax for p in (a, b) if isinstance(p, ZonalDensity))
    return float(funk_hecke(beta, lmax, d, scaled=True) @ _gram(a, b, d, lmax))


def _unscale(beta: float, scaled_square: float) -> float:
    """√(e^β · S) for the scaled square S = e^{-β} MMD²: 0 when S ≤ 0 (equal measures; e^{β/2}·0 was NaN from
    β ≈ 1419, where e^{β/2} overflows), inf when the MMD itself exceeds float64."""
    if not scaled_square > 0:
        return 0.0
    log_value = 0.5 * (beta + np.log(scaled_square))
    return float(np.exp(log_value)) if log_value < _LOG_FLOAT_MAX else float("inf")


_LOG_FLOAT_MAX = float(np.log(np.finfo(float).max))


def sobolev_distance(mu, nu, s: float = 1.0, lmax: int | None = None) -> float:
    """‖μ − ν‖ in H^{-s}(S^{d-1}), truncated at degree ``lmax`` (default: the densities' band limit).

        ‖μ − ν‖²_{H^{-s}} = Σ_{ℓ=0}^{lmax} (1 + ℓ(ℓ + d − 2))^{-s} ‖(μ − ν)_ℓ‖²_{L²(σ)},

    (μ − ν)_ℓ the degree-ℓ part of μ − ν as a density w.r.t. the normalized measure σ (the uniform density
    is 1; particles enter as their empirical measure), ℓ(ℓ + d − 2) the eigenvalues of −Δ on S^{d-1}.  This
    is the distance of the comparison figures (``meanfield plot A.h5 B.h5``, s = 1).

    Parameters
    ----------
    mu, nu : Density, ZonalDensity, Particles or tuple of densities (species)
        Measures on the same sphere (a difference of masses counts in full, at degree 0).  On S¹ and S² in
        spherical harmonics (a ZonalDensity as the Density it is), O(N + L²) for N tokens.  On S^{d-1}, d > 3
        (particles and zonal densities, e.g. a particle run against the zonal PDE solution): by the addition
        theorem, Σ_ij w_i w_j N(d, ℓ) P_ℓ(⟨x_i, x_j⟩) for the tokens' own degree-ℓ power, O(N²·L) (4000
        tokens in d = 5 at L = 24: about 0.5 s on one core).
    s : float
        Smoothness index s > 0 of the dual norm.
    lmax : int, optional
        Truncation degree; required when both measures are particles.

    Returns
    -------
    float
        The distance, ≥ 0 (dimensionless, in the units of a density w.r.t. σ).

    Notes
    -----
    In high d the distance of particles is that of their top degree.  A token's own degree-ℓ power is the
    dimension N(d, ℓ) of the degree-ℓ harmonics (≈ d^ℓ/ℓ!), against the weight (1 + ℓ(ℓ + d − 2))^{-s} ≈ (ℓd)^{-s}:
    unless s ≳ ``lmax`` the last degree outweighs the others.  Two independent sets of 500 uniform tokens at
    ``lmax`` = 4, s = 1: 0.079 on S² (43 % from ℓ = 4), 3.5 in d = 64 (92 %), 138 in d = 768 (99.3 %).  It still
    decays like N^{-1/2} (:func:`meanfield.convergence_in_n`), but its value says little about the measures; the
    attention-kernel distance :func:`mmd` (exact in d > 3; 0.084 for the same tokens at β = 1) weighs the degrees
    as the dynamics does.
    """
    s = positive_float("s", s)
    mu, nu = _on_s1_s2(mu), _on_s1_s2(nu)
    d = _dim(mu, nu)
    lmax = nonneg_int("lmax", _default_lmax(mu, nu) if lmax is None else lmax)
    e = _degree_power_of_difference(mu, nu, d, lmax)
    ell = np.arange(lmax + 1)
    w = (1.0 + ell * (ell + d - 2.0)) ** (-s)
    return float(np.sqrt(np.sum(w * e)))


def mmd(mu, nu, beta: float, tol: float = 1e-12, lmax: int | None = None) -> float:
    """Maximum mean discrepancy of μ and ν with the attention kernel e^{β⟨x,y⟩} on S^{d-1}, any d.

    MMD_β(μ, ν)² = ∬ e^{β⟨x,y⟩} d(μ−ν)(x) d(μ−ν)(y), with the kernel itself (not divided by λ_0) and
    the measures as given, computed exactly in spherical harmonics: Σ_ℓ λ_ℓ(β) times the degree-ℓ power
    of μ − ν (λ_ℓ from :func:`funk_hecke`).

    Parameters
    ----------
    mu, nu : Density, ZonalDensity, Particles or tuple of densities (species)
        Measures on the same sphere; particles enter as their empirical measure, a tuple of species as the sum
        of its densities.  On S² (d = 3) and S¹ (d = 2) in spherical harmonics (a ZonalDensity as the Density
        it is).  On S^{d-1}, d > 3, particles and zonal densities exactly, with no kernel truncation: the
        direct double sums over the tokens, O((N + M)²/2) (rounding ~1e-16·e^β, relative to MMD²), and Funk–Hecke
        Σ_ℓ λ_ℓ g_ℓ P_ℓ(⟨x_i, e⟩) wherever a zonal density g enters, O(N·L) (4000 tokens in d = 5 against a
        zonal density: 0.15 s, where the degree-by-degree sums to the kernel's band limit, O(N²·L), took 0.4 s
        at β = 2 and 0.7 s at β = 10; 2.6 s and 5.1 s before them).
    beta : float
        Inverse temperature β > 0 of the kernel.
    tol : float
        Kernel truncation tolerance relative to λ_0, 0 < tol < 1: the result is exact to that bound.
        Sets the default band limit ``kernel_bandlimit(beta, tol, d)`` (d ≤ 3).
    lmax : int, optional
        Truncation degree, overriding the one given by ``tol`` (in d > 3 only where a zonal density enters:
        then Σ_{ℓ ≤ lmax} λ_ℓ ‖(μ − ν)_ℓ‖², the degree powers by the addition theorem, O(N²·lmax)).

    Returns
    -------
    float
        MMD_β(μ, ν) ≥ 0 (dimensionless); 0.0 for equal measures at any β, and ``inf`` when the value
        exceeds float64 (it grows like e^{β/2}: from β ≈ 1419 for measures that differ at low degrees).

    Raises
    ------
    ValueError
        If the measures are not on the same sphere, ``beta`` ≤ 0, ``tol`` outside (0, 1) or ``lmax`` not an
        integer ≥ 0 (checked on every path).
    TypeError
        If a measure is another kind of measure on the sphere (e.g. an FEDensity: its ``to_density``).

    Notes
    -----
    In d > 3, ``tol`` does not apply, nor ``lmax`` between particles alone: the sums are exact.
    """
    beta = positive_float("beta", beta)
    tol = open_fraction("tol", tol)          # checked on every path: the direct sum below does not use them
    if lmax is not None:
        lmax = nonneg_int("lmax", lmax)
    mu, nu = _on_s1_s2(mu), _on_s1_s2(nu)
    d = _dim(mu, nu)
    zonal = any(isinstance(m, ZonalDensity) for m in _parts(mu) + _parts(nu))
    if d > 3 and (lmax is None or not zonal):
        return _mmd_direct(mu, nu, beta, d)
    lmax = kernel_bandlimit(beta, tol, d) if lmax is None else lmax
    e = _degree_power_of_difference(mu, nu, d, lmax)
    # √(Σ λ_ℓ e_ℓ) = e^{β/2} √(Σ e^{-β}λ_ℓ e_ℓ)
    return _unscale(beta, float(np.sum(funk_hecke(beta, lmax, d, scaled=True) * e)))


_MAX_PAIRS = 25_000_000    # n·m for the exact transport: a 200 MB cost matrix; the simplex takes ~O(n³)


def _parts(measure) -> list:
    return list(measure) if isinstance(measure, tuple) else [measure]


def _atoms(name: str, measure, grid_lmax):
    """(points (n, d), masses (n,), total mass) of a measure: particles as they are, a Density through its values
    at the nodes of a Gauss–Legendre grid of band limit ``grid_lmax`` (S²) or 2·grid_lmax + 1 equispaced angles
    (S¹), ringing below zero (down to −1e-6·max) set to 0; the total is the mass before that."""
    parts = measure if isinstance(measure, tuple) else (measure,)
    pts, mass, total = [], [], 0.0
    for m in parts:
        if isinstance(m, Particles):
            pts.append(m.positions)
            mass.append(m.weights)
            total += float(m.weights.sum())
            continue
        L = nonneg_int("grid_lmax", grid_lmax, minimum=1)
        if m.d == 3:
            from .sphere._sh import SphereGrid
            grid = SphereGrid.for_bandlimit(L, dealias=False)
            nodes, w = grid.points.reshape(-1, 3), grid.weights.ravel() / (4 * np.pi)
            values = m.on_grid(grid).ravel() if m.lmax <= L else m.evaluate(nodes)
        else:
            n = 2 * L + 1
            angle = 2 * np.pi * np.arange(n) / n
            nodes, w = np.stack([np.cos(angle), np.sin(angle)], axis=1), np.full(n, 1.0 / n)
            values = m.on_grid(n) if m.lmax <= L else m.evaluate(nodes)
        if values.min() < -_NEGATIVITY_TOL * max(values.max(), 1.0):
            raise ValueError(f"`{name}` is negative at some grid nodes (min {values.min():.3g}): it is not a measure, "
                             "and has no transport distance.")
        atoms = np.maximum(values, 0.0) * w
        if m.lmax > L:
            # a density finer than the grid: its point values at the nodes, whose quadrature is not exact for its
            # degree, so the atoms are scaled to its exact mass (equal measures keep equal masses)
            atoms *= m.mass() / atoms.sum()
        pts.append(nodes)
        mass.append(atoms)
        total += float(values @ w) if m.lmax <= L else m.mass()
    return np.concatenate(pts), np.concatenate(mass), total


def _geodesic_cost(x, y, chunk_elements: int = 2 ** 22):
    """arccos(⟨x_i, y_j⟩) (n, m).  Where |⟨x, y⟩| ≤ 1/2, arccos of the Gram matrix's entry (BLAS), whose slope there is
    at most 2/√3: as accurate as the inner product, as the chords of the differences are.  Near 0 and π, where arccos
    of a rounded inner product errs by ~1e-8, 2·atan2(‖x − y‖, ‖x + y‖) of those pairs only, accurate to a few ulp
    (in chunks of ~``chunk_elements`` entries).  The differences of every pair, O(n·m·d) elementwise, took 20-40 s
    for two sets of 2000 tokens in d = 768, where the simplex takes 1-2 s."""
    cost = np.empty((len(x), len(y)))
    rows = max(1, chunk_elements // max(1, len(y)))
    per = max(1, chunk_elements // max(1, x.shape[1]))
    for r in range(0, len(x), rows):
        g = x[r:r + rows] @ y.T
        block = np.arccos(np.clip(g, -1.0, 1.0))
        i, j = np.nonzero(np.abs(g) > 0.5)
        for s in range(0, i.size, per):         # the pairs near 0 and π, ~chunk_elements coordinates at a time
            a, b = x[r + i[s:s + per]], y[j[s:s + per]]
            block[i[s:s + per], j[s:s + per]] = 2 * np.arctan2(np.linalg.norm(a - b, axis=-1),
                                                               np.linalg.norm(a + b, axis=-1))
        cost[r:r + rows] = block
    return cost


_COST_CAP = 1e6     # the largest cost given to the simplex, relative to the plan's own: its resolution is ~1e-14·max


def _lowest_top(a, b, angles) -> float:
    """A lower bound of the largest angle of every transport plan between a and b: each atom with mass sends it at
    least as far as its nearest atom of the other measure (one pass over the angles); when that is 0, as far as the
    nearest atoms that can hold all of it (:func:`_reach`, a sort of every row)."""
    nearest = max(float(np.max(angles.min(axis=1)[a > 0], initial=0.0)),
                  float(np.max(angles.min(axis=0)[b > 0], initial=0.0)))
    return nearest or max(_reach(a, b, angles), _reach(b, a, angles.T))


def _reach(a, b, angles, chunk_elements: int = 2 ** 22) -> float:
    """max over atoms i with a_i > 0 of the smallest r with Σ_{θ_ij ≤ r} b_j ≥ a_i: 0 when every atom fits on atoms
    at its own place (equal measures on one grid).  Rows in chunks of ~``chunk_elements`` angles."""
    reach = 0.0
    rows = max(1, chunk_elements // len(b))
    for i in range(0, len(a), rows):
        order = np.argsort(angles[i:i + rows], axis=1)
        held = np.cumsum(b[order], axis=1)
        first = np.minimum(np.sum(held < a[i:i + rows, None] * (1 - 1e-12), axis=1), len(b) - 1)
        far = angles[i + np.arange(len(first)), order[np.arange(len(first)), first]]
        reach = max(reach, float(np.max(far[a[i:i + rows] > 0], initial=0.0)))
    return reach


def _optimal_plan(a, b, angles, p):
    """W_p(a, b) of two probability vectors for the cost angles^p, by the network simplex on min((θ/s)^p, cap).

    POT's simplex resolves costs to ~1e-14 of the largest, so costs θ^p far beyond those of the plan made the
    plan's own all "equal": W_50 of two sets of 50 tokens read 1.39, above their bottleneck distance W_∞ = 0.62
    (an upper bound of every W_p), θ^p overflowed from p ≈ 620 (π^p: "Problem infeasible") and two Diracs 0.3 apart
    were at 0.0 from p ≈ 640.  Costs are capped at ``_COST_CAP``: a plan of the capped problem that uses no capped
    entry is optimal for the uncapped one.  The scale s is accepted when the plan uses no capped entry and its
    largest angle θ* has (θ*/s)^p ≥ 1/2 (its costs resolved); otherwise s was too low or too high, and is bisected
    in log s, from a lower bound of θ* (:func:`_lowest_top`) and the largest angle.  For p = 1, 2 the first scale
    is accepted unless θ* exceeds 10⁶ or 10³ times that lower bound.  The value is θ*·(Σ π_ij (θ_ij/θ*)^p)^{1/p}."""
    import ot

    from ._errors import ConvergenceError

    low, high = _lowest_top(a, b, angles), float(angles.max())
    if high == 0.0:
        return 0.0
    scale = low or high
    for _ in range(60):
        with np.errstate(over="ignore", under="ignore"):
            cost = np.minimum((angles / scale) ** p, _COST_CAP)
        plan, log = ot.emd(a, b, cost, numItermax=max(100_000, 50 * (len(a) + len(b)) ** 2), log=True)
        if log.get("result_code", 1) != 1:
            raise ConvergenceError(f"the transport problem was not solved: {log.get('warning')}")
        support = plan > 0
        top = float(angles[support].max())
        if top == 0.0:
            return 0.0
        log_top = p * np.log(top / scale)           # log of the plan's largest cost
        if -np.log(2.0) <= log_top < np.log(_COST_CAP):
            with np.errstate(under="ignore"):
                return top * float(np.sum(plan[support] * (angles[support] / top) ** p)) ** (1.0 / p)
        low, high = (scale, high) if log_top >= np.log(_COST_CAP) else (low, scale)
        scale = np.sqrt(low * high) if low > 0 else top
    raise ConvergenceError(f"the transport plan for p={p:g} did not settle on a scale of its costs in 60 solves; "
                           "a smaller `p` is better conditioned.")


def wasserstein_distance(mu, nu, p: float = 2.0, *, grid_lmax: int | None = None,
                         max_pairs: int = _MAX_PAIRS) -> float:
    """The Wasserstein distance W_p(μ, ν) for the geodesic (great-circle) distance on S^{d-1}.

    W_p(μ, ν)^p = min over couplings π of ∬ arccos(⟨x, y⟩)^p dπ(x, y), solved exactly as a linear
    program on the atoms of the two measures (POT's network simplex, ``ot.emd2``).

    Parameters
    ----------
    mu, nu : Density, ZonalDensity (on S¹ or S²), Particles or tuple of densities
        Measures of equal mass on the same sphere.  Particles are used as they are (any d); a Density
        (S² or S¹; a ZonalDensity as the Density it is) through its values at grid nodes: W_p is then that of the discretized measure, which
        differs from the density's by about the grid spacing (π/(grid_lmax + 1) radians on S²).
    p : float
        Order p ≥ 1, finite.  The simplex is solved on the costs (θ/s)^p at a scale s of the plan's own angles
        (one solve for p of a few units; a few more for large p, e.g. 5–8 at p = 1000), so that W_p of large p
        is right too and tends to the bottleneck distance W_∞.
    grid_lmax : int, optional
        Band limit of the grid of the Densities, ≥ 1, one grid for all of them (default twice the largest
        band limit among them, at least 1): a Gauss–Legendre grid of
        grid_lmax + 1 rings × about 2·grid_lmax + 2 longitudes on S², 2·grid_lmax + 1 equispaced angles on S¹.
        A Density of larger band limit is taken by its values at the nodes, its atoms scaled to its exact
        mass (the grid's quadrature is not exact for its degree).
    max_pairs : int
        Largest n·m for n and m atoms (default 25·10⁶, 200 MB of costs); the simplex takes roughly
        O(n³) time (two sets of 2000 particles: about 2 s here, in d = 3 as in d = 768).

    Returns
    -------
    float
        W_p(μ, ν) in radians.

    Raises
    ------
    ValueError
        Measures on different spheres, of different masses, with more pairs of atoms than ``max_pairs`` (two
        Densities of band limit ≥ 25 at the default grid: pass a smaller ``grid_lmax``, e.g. 24), or a Density that is
        negative at grid nodes beyond −1e-6·max.
    TypeError
        If a measure is not a Density, Particles or tuple of Densities.
    ConvergenceError
        If the network simplex does not reach an optimum.
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"`p` must be a real number ≥ 1; got p={p!r}.")
    if not (np.isfinite(float(p)) and p >= 1):     # p = 0 or inf read "must be finite and > 0", yet 0.5 is refused
        raise ValueError(f"`p` must be ≥ 1 and finite (W_p is a metric for p ≥ 1); got p={p!r}.")
    p = float(p)
    max_pairs = nonneg_int("max_pairs", max_pairs, minimum=1)
    if grid_lmax is not None:       # checked here, not only when a Density needs a grid (particles took any value)
        grid_lmax = nonneg_int("grid_lmax", grid_lmax, minimum=1)
    mu, nu = _on_s1_s2(mu), _on_s1_s2(nu)
    dims = _common_dimension(mu, nu)
    if len(dims) != 1:
        raise ValueError(f"both measures must live on the same sphere; got d = {sorted(dims)}.")
    if any(isinstance(m, ZonalDensity) for m in _parts(mu) + _parts(nu)):
        raise TypeError(f"wasserstein_distance takes a ZonalDensity on S¹ or S² only (it has no grid of atoms on "
                        f"S^{{d-1}} for d = {dims.pop()}); sobolev_distance and mmd compare it in any d.")
    densities = [m for m in _parts(mu) + _parts(nu) if isinstance(m, Density)]
    if grid_lmax is None:      # one grid for every Density: two grids would put a distance between equal measures
        # at least 1: a Density of band limit 0 (the uniform measure) made it 0, refused as if the caller had passed it
        grid_lmax = max(1, 2 * max([m.lmax for m in densities], default=0))
    (x, a, mass_a), (y, b, mass_b) = _atoms("mu", mu, grid_lmax), _atoms("nu", nu, grid_lmax)
    if len(a) * len(b) > max_pairs:
        fix = "subsample the particles" if not densities else (
            f"pass a smaller `grid_lmax` (now {grid_lmax}; a density finer than the grid is taken at its nodes)")
        raise ValueError(f"W_p is solved exactly on {len(a)} × {len(b)} atoms, more pairs than max_pairs={max_pairs} "
                         f"(memory n·m, time ~n³): {fix}, or raise `max_pairs`.")
    if abs(mass_a - mass_b) > 1e-9 * max(mass_a, mass_b):
        raise ValueError(f"the measures must have equal mass; got {mass_a:.12g} and {mass_b:.12g}.")
    return mass_a ** (1.0 / p) * _optimal_plan(a / a.sum(), b / b.sum(), _geodesic_cost(x, y), p)
