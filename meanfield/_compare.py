"""Distances between measures on S² and S¹: negative Sobolev norms and the attention-kernel MMD.

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

import numpy as np

from ._measures import Density, Particles, conversion_hint
from ._validate import nonneg_int, positive_float
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


def _dim(mu, nu) -> int:
    for name, m in (("mu", mu), ("nu", nu)):
        parts = m if isinstance(m, tuple) else (m,)
        if not parts or not all(isinstance(p, (Density, Particles)) for p in parts):
            raise TypeError(f"`{name}` must be a Density, Particles or a non-empty tuple of Densities; got "
                            f"{name}={m!r}." + (conversion_hint(m) if not isinstance(m, tuple) else ""))
    dims = {(m[0] if isinstance(m, tuple) else m).d for m in (mu, nu)}
    if len(dims) != 1 or not dims <= {2, 3}:
        raise ValueError(f"both measures must live on the same S¹ or S² (d = 2 or 3); got d = {sorted(dims)}.")
    return dims.pop()


def _degree_power(c, d, lmax):
    if d == 3:
        from .sphere._sh import degree_power

        return degree_power(c, lmax) / (4 * np.pi)
    return np.abs(c) ** 2 * np.where(np.arange(lmax + 1) == 0, 1.0, 2.0)


def _default_lmax(mu, nu):
    ls = [m.lmax for m in (mu, nu) if isinstance(m, Density)]
    if not ls:
        raise ValueError("`lmax` is required when neither measure is a Density.")
    return max(ls)


def sobolev_distance(mu, nu, s: float = 1.0, lmax: int | None = None) -> float:
    """‖μ − ν‖ in H^{-s}(S^{d-1}), d = 2 or 3, truncated at degree ``lmax`` (default: the Densities' band limit).

    Parameters
    ----------
    mu, nu : Density, Particles or tuple of Density
        Measures on the same sphere (a difference of masses counts in full, at degree 0).
    s : float
        Smoothness index s > 0 of the dual norm.
    lmax : int, optional
        Truncation degree; required when both measures are particles.
    """
    s = positive_float("s", s)
    d = _dim(mu, nu)
    lmax = nonneg_int("lmax", _default_lmax(mu, nu) if lmax is None else lmax)
    e = _degree_power(coefficients(mu, lmax) - coefficients(nu, lmax), d, lmax)
    ell = np.arange(lmax + 1)
    w = (1.0 + ell * (ell + d - 2.0)) ** (-s)
    return float(np.sqrt(np.sum(w * e)))


def mmd(mu, nu, beta: float, tol: float = 1e-12, lmax: int | None = None) -> float:
    """Maximum mean discrepancy of μ and ν with the attention kernel e^{β⟨x,y⟩} on S² or S¹.

    MMD_β(μ, ν)² = ∬ e^{β⟨x,y⟩} d(μ−ν)(x) d(μ−ν)(y), with the kernel itself (not divided by λ_0) and
    the measures as given, computed exactly in spherical harmonics: Σ_ℓ λ_ℓ(β) times the degree-ℓ power
    of μ − ν (λ_ℓ from :func:`funk_hecke`).

    Parameters
    ----------
    mu, nu : Density, Particles or tuple of Density
        Measures on the same sphere, S² (d = 3) or S¹ (d = 2); particles enter as their empirical
        measure, a tuple of species as the sum of its Densities.
    beta : float
        Inverse temperature β > 0 of the kernel.
    tol : float
        Kernel truncation tolerance relative to λ_0, 0 < tol < 1: the result is exact to that bound.
        Sets the default band limit ``kernel_bandlimit(beta, tol, d)``.
    lmax : int, optional
        Truncation degree, overriding the one given by ``tol``.

    Returns
    -------
    float
        MMD_β(μ, ν) ≥ 0 (dimensionless).

    Raises
    ------
    ValueError
        If the measures are not on the same S¹ or S², or ``beta`` ≤ 0.
    TypeError
        If a measure is another kind of measure on the sphere (e.g. a ZonalDensity or an FEDensity).
    """
    beta = positive_float("beta", beta)
    d = _dim(mu, nu)
    lmax = kernel_bandlimit(beta, tol, d) if lmax is None else nonneg_int("lmax", lmax)
    e = _degree_power(coefficients(mu, lmax) - coefficients(nu, lmax), d, lmax)
    # √(Σ λ_ℓ e_ℓ) = e^{β/2} √(Σ e^{-β}λ_ℓ e_ℓ): finite up to β ≈ 1400
    return float(np.exp(beta / 2) * np.sqrt(max(np.sum(funk_hecke(beta, lmax, d, scaled=True) * e), 0.0)))
