"""Dimension N(d, ℓ) of the degree-ℓ spherical harmonics on S^{d-1}: the weight of degree ℓ in every zonal
expansion (g_ℓ = N(d, ℓ) ∫ g P_ℓ dσ) and in the Funk–Hecke sums of the kernel.  Four forms, each where it is
accurate: exact counts in d = 2, 3; a product of d − 2 factors (relative error ≲ d·eps) for d ≤ 64; above, a
running product of ratios (≲ ℓ·eps) up to degree 2²⁰ and logs (betaln) beyond, where N leaves float64.
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
        N(d, ℓ) (exact while below 2⁵³ in d = 2, 3; relative error ≲ d·eps for 4 ≤ d ≤ 64; for d > 64 ≲ ℓ·eps for
        ℓ ≤ 2²⁰ and by logs beyond, log C(ℓ + d − 2, ℓ) from betaln: measured relative error of log N ≤ 1e-10,
        2e-16 from ℓ + d ≈ 2³⁰ on; inf where it exceeds float64, in very high d).

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
    if d <= _PRODUCT_MAX_D:
        # by logs (any degree beyond 2²⁰ sent all of them there) N(4, 2²⁰) was 1.2e-9 off, N(7, 3·10⁶) 3.8e-9
        with np.errstate(over="ignore"):
            return _product_counts(d, ell)
    # each degree by its own form: one degree beyond the table sent every degree by logs
    out = np.empty(ell.shape)
    in_table = ell <= _COUNT_TABLE_MAX            # by logs N(1000, 1) was 999.9999999983 (see _harmonic_counts)
    if in_table.any():
        out[in_table] = _harmonic_counts(int(ell[in_table].max()), d)[ell[in_table].astype(int)]
    if not in_table.all():
        beyond = ell[~in_table]
        with np.errstate(over="ignore"):
            out[~in_table] = np.exp(_log_harmonic_dimension(d, beyond))
    return out


_PRODUCT_MAX_D = 64     # dimensions whose counts are a product of d − 2 factors (≲ d·eps relative, at any degree)


def _product_counts(d: int, ell: np.ndarray) -> np.ndarray:
    """N(d, ℓ) = C(ℓ + d − 2, d − 2)·(2ℓ + d − 2)/(ℓ + d − 2), the binomial as C(ℓ + j, j) = C(ℓ + j − 1, j − 1)·(ℓ + j)/j,
    multiplied before it is divided: integers at every step, so exact while each product stays below 2⁵³ (N(7, 1) = 7,
    not 7 − 1 ulp); a count below 2⁵³ whose last product, C·(2ℓ + d − 2), is above it is within d·eps, not exact
    (N(4, 341365) = 116530745956 comes out 116530745956.00002).
    Where that order overflows (within a factor 2(ℓ + d) of float64's largest) the factors are taken as ratios
    ≥ 1, which overflow only with the count."""
    with np.errstate(over="ignore", invalid="ignore"):
        c = np.ones_like(ell)
        for j in range(1, d - 1):
            c = c * (ell + j) / j
        exact = c * (2 * ell + d - 2) / (ell + d - 2)
    if np.all(np.isfinite(exact)):
        return exact
    ratios = (2 * ell + d - 2) / (ell + d - 2)
    for j in range(1, d - 1):
        ratios = ratios * ((ell + j) / j)
    return np.where(np.isfinite(exact), exact, ratios)


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
    coefficient g_ℓ = N(d, ℓ) ∫ g P_ℓ dσ carried that error.  For 4 ≤ d ≤ 64 the direct product of d − 2
    factors (:func:`_product_counts`, ≲ d·eps).  Overflows to inf beyond float64."""
    ell = np.arange(lmax + 1, dtype=float)
    if d <= 3:
        return 2 * ell + 1 if d == 3 else np.where(ell == 0, 1.0, 2.0)
    if d <= _PRODUCT_MAX_D:     # the running product reached 1.8e-12 at ℓ = 2²⁰ in d = 4 (3e-13 at 10⁵)
        with np.errstate(over="ignore"):
            return _product_counts(d, ell)
    k = ell[1:]
    with np.errstate(over="ignore"):
        return np.concatenate([[1.0], np.cumprod((2 * k + d - 2) * (k + d - 3) / ((2 * k + d - 4) * k))])
