"""Dimension N(d, ℓ) of the degree-ℓ spherical harmonics on S^{d-1}: the weight of degree ℓ in every zonal
expansion (g_ℓ = N(d, ℓ) ∫ g P_ℓ dσ) and in the Funk–Hecke sums of the kernel.  Three forms, each where it is
accurate: exact counts in d = 2, 3; a product of ratios (relative error ≲ ℓ·eps) up to degree 2²⁰; logs (betaln)
beyond, where N leaves float64 in high d.
"""
from __future__ import annotations

import numpy as np

from .._lazy import LazyModule
from .._validate import dimension, real_array

special = LazyModule("scipy.special")


def harmonic_dimension(d: int, ell) -> np.ndarray:
    """Dimension N(d, ℓ) of the space of degree-ℓ spherical harmonics on S^{d-1} (2ℓ+1 for d = 3).

    Parameters
    ----------
    d : int
        Ambient dimension, d ≥ 2.
    ell : int or array_like
        Degree(s) ℓ ≥ 0.

    Returns
    -------
    ndarray of float, shape of ``ell``
        N(d, ℓ) (exact while below 2⁵³ in d = 2, 3; relative error ≲ ℓ·eps otherwise for ℓ ≤ 2²⁰; by logs beyond,
        log C(ℓ + d − 2, ℓ) from betaln: measured relative error of log N ≤ 1e-10, 2e-16 from ℓ + d ≈ 2³⁰ on; inf
        where it exceeds float64, in very high d).

    Raises
    ------
    TypeError, ValueError
        ``d`` is not an integer ≥ 2, or ``ell`` is not integer degrees ≥ 0.
    """
    d = dimension(d, within="float64")     # a number in the formulas (d → ∞ has a limit), no array's size
    ell = real_array("ell", ell)
    bad = ~(np.isfinite(ell) & (ell >= 0) & (ell == np.floor(ell)))
    if bad.any():
        raise ValueError(f"`ell` must be integer degrees ≥ 0; got ell={float(ell.flat[int(np.argmax(bad))])!r}"
                         + (" among others." if ell.ndim else "."))
    if d <= 3:          # 2ℓ + 1 and 2, at every degree
        return 2 * ell + 1 if d == 3 else np.where(ell == 0, 1.0, 2.0)
    if ell.size and ell.max() <= _COUNT_TABLE_MAX:     # by logs N(1000, 1) was 999.9999999983 (see _harmonic_counts)
        return _harmonic_counts(int(ell.max()), d)[ell.astype(int)]
    with np.errstate(over="ignore"):
        return np.exp(_log_harmonic_dimension(d, ell))


_COUNT_TABLE_MAX = 2 ** 20       # degrees up to which harmonic_dimension builds the table of counts (8 MiB)


#: ℓ + d above which log C(ℓ + d − 2, ℓ) is taken from betaln: the difference of log-gammas loses |log Γ(ℓ + d)|·eps
#: (measured relative error of log N: 1e-9 at ℓ + d ≈ 2²⁴, 7e-5 at 2⁴⁰, and N(3, 2⁶²) came out 1 for 2⁶³ + 1, as
#: ℓ + 2 and ℓ + 1 are the same float there), betaln ≤ 1e-10 from 2²⁰ on (2e-16 from 2³⁰), worse only below
_BETALN_FROM = 2.0 ** 20


def _log_harmonic_dimension(d: int, ell: np.ndarray) -> np.ndarray:
    d = float(d)        # (an integer d beyond int64 made an object array that gammaln refused)
    ell = np.asarray(ell, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.log(2 * ell + d - 2) - np.log(ell + d - 2)
        if d + (ell.max() if ell.size else 0.0) > _BETALN_FROM:
            log_binom = np.where(ell + d > _BETALN_FROM, -np.log(ell + d - 1) - special.betaln(d - 1, ell + 1),
                                 special.gammaln(ell + d - 1) - special.gammaln(ell + 1) - special.gammaln(d - 1))
        else:
            log_binom = special.gammaln(ell + d - 1) - special.gammaln(ell + 1) - special.gammaln(d - 1)
    return np.where(ell == 0, 0.0, ratio + log_binom)


def _harmonic_counts(lmax: int, d: int) -> np.ndarray:
    """N(d, ℓ), ℓ = 0 … lmax, by the product of the ratios N(d, ℓ)/N(d, ℓ − 1) = (2ℓ + d − 2)(ℓ + d − 3) /
    ((2ℓ + d − 4) ℓ): relative error ≲ ℓ·eps (exact 2ℓ + 1 and 2 for d = 3, 2).  exp of the log-gamma form lost
    |log Γ|·eps, ~1e-13 in d = 3 and 2.5e-12 in d = 1000 (N(1000, 1) = 999.9999999983), and every zonal
    coefficient g_ℓ = N(d, ℓ) ∫ g P_ℓ dσ carried that error.  Overflows to inf beyond float64."""
    ell = np.arange(lmax + 1, dtype=float)
    if d <= 3:
        return 2 * ell + 1 if d == 3 else np.where(ell == 0, 1.0, 2.0)
    k = ell[1:]
    with np.errstate(over="ignore"):
        return np.concatenate([[1.0], np.cumprod((2 * k + d - 2) * (k + d - 3) / ((2 * k + d - 4) * k))])
