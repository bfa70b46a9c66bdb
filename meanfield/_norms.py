"""Vector norms that stay right where the squares leave float64.

Unnormalized attention reaches ‖A‖ ~ e^β, whose square overflows from β ≈ 355, and a stage of a huge
velocity reaches rows of ~1e300; tokens of tiny radius have squares that underflow.  The plain sum of
squares then gives inf or 0 (‖A‖ = inf froze Peri-LN and nGPT; x/inf zeroed a direction).  Every norm
of the package that may meet such values is taken here.
"""
from __future__ import annotations

import numpy as np

try:        # np.einsum without its Python dispatch (~1 µs a call: a fifth of the cost of a few hundred rows' norms)
    from numpy._core.multiarray import c_einsum as einsum
except ImportError:     # numpy < 2
    einsum = np.einsum

TINY_NORM = 1e-146   # below it the squares may have underflowed (their sum is a subnormal or 0)


def norms(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """‖a‖ along ``axis`` for any finite ``a``: entries whose squares overflow or underflow are recomputed
    scaled by their largest component; a norm beyond float64 is inf, a row holding inf or NaN keeps the
    plain sum's inf or NaN.  A 1-D ``a`` gives a scalar."""
    a = np.asarray(a)
    if a.ndim == 1:                                     # one vector: its norm, a scalar
        return norms(a[None])[0]
    with np.errstate(over="ignore", under="ignore"):
        out = np.sqrt(np.sum(np.square(a), axis=axis))
    if out.size and regular(*norm_range(out)):      # the usual case, in two cheap reductions
        return out
    bad = ~(np.isfinite(out) & (out > TINY_NORM))
    if np.any(bad):
        rows = np.moveaxis(a, axis, -1)[bad]
        scale = np.max(np.abs(rows), axis=-1)
        with np.errstate(all="ignore"):       # a norm beyond float64's max is inf, as it should be
            fixed = scale * np.sqrt(np.sum(np.square(rows / scale[:, None]), axis=-1))
        # a zero row stays 0; a row holding inf or NaN keeps the plain sum's inf or NaN
        out[bad] = np.where(scale == 0, 0.0, np.where(np.isfinite(scale), fixed, out[bad]))
    return out


def row_norms(a: np.ndarray) -> np.ndarray:
    """‖row‖ of ``a`` (..., d), of shape (...): the plain sum of squares in one pass (the per-stage hot path),
    and :func:`norms` for the rows whose squares overflow or underflow."""
    nrm, lo, hi = plain_row_norms(a)
    return nrm if regular(lo, hi) else _fix_odd_rows(a, nrm)


def plain_row_norms(a: np.ndarray):
    """(‖row‖ of ``a`` from the plain sum of squares, their smallest, their largest): where :func:`regular` holds for
    the two, they are :func:`row_norms`'s (and ``a`` is finite with no zero row); otherwise :func:`row_norms`
    recomputes the odd ones.  The smallest and largest are NaN where a norm is, and None for no rows."""
    nrm = np.sqrt(einsum("...i,...i->...", a, a))
    return (nrm, None, None) if not nrm.size else (nrm, *norm_range(nrm))


def regular(lo, hi) -> bool:
    """Whether norms from ``lo`` to ``hi`` (:func:`plain_row_norms`) are all finite and > TINY_NORM (a NaN, or None
    for no norms, fails)."""
    return lo is not None and bool(lo > TINY_NORM and hi < np.inf)


def norm_range(values: np.ndarray):
    """(smallest, largest) of the non-empty ``values``, either a NaN where there is one, as min()/max() give them,
    through argmin/argmax and an index: a fraction of min()/max()'s cost on the few hundred values of a step
    (their Python wrappers dominate there)."""
    flat = values if values.ndim == 1 else values.reshape(-1)
    return flat[flat.argmin()], flat[flat.argmax()]


def _fix_odd_rows(a, nrm):
    odd = ~(nrm > TINY_NORM) | ~(nrm < np.inf)
    if np.any(odd):
        nrm = np.array(nrm, dtype=float)
        nrm[odd] = norms(a[odd])
    return nrm


def spectral_norm_bounds(M) -> np.ndarray:
    """Upper bounds of ‖M_h‖₂ for a stack of matrices M, shape (heads, d, d): min(‖M_h‖_F, √(‖M_h‖₁‖M_h‖_∞))
    (Hölder), O(d²) per matrix where the exact norm takes an SVD, O(d³) (4 s for one 768×768 matrix on two cores);
    exact for multiples of I, diagonal matrices and rank one."""
    a = np.abs(M)
    holder = np.sqrt(a.sum(axis=-2).max(axis=-1) * a.sum(axis=-1).max(axis=-1))
    with np.errstate(over="ignore"):        # squares beyond float64: the Hölder bound stays
        frobenius = np.sqrt(einsum("hij,hij->h", M, M))
    return np.minimum(frobenius, holder)
