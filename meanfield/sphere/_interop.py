"""pyshtools interop, rotations and plotting grids for S² coefficients.

Normalization mapping: meanfield's coefficients are pyshtools' *complex, 'ortho', csphase = −1*
coefficients for m ≥ 0 (``SHCoeffs.coeffs[0, ℓ, m]``); the m < 0 half is ``coeffs[1, ℓ, |m|] =
(−1)^m conj(a_ℓm)`` for a real field.  Any other pyshtools convention ('4pi', 'schmidt', 'unnorm',
real kind, csphase = 1) is converted by pyshtools itself in :func:`from_shcoeffs`.
"""
from __future__ import annotations

import sys

import numpy as np

from .._validate import nonneg_int, real_array, real_number
from . import _sh as sh
from ._checks import check_memory, complex_array, finite


def to_shcoeffs(alm: np.ndarray, lmax: int):
    """A ``pyshtools.SHCoeffs`` (complex, 'ortho', csphase = −1) holding the real field ``alm``.

    Parameters
    ----------
    alm : array_like of complex, shape (nalm(lmax),)
        meanfield coefficients of a real field (the imaginary parts of the a_ℓ0, which :func:`synthesis` ignores,
        are dropped).
    lmax : int
        Their band limit L.

    Returns
    -------
    pyshtools.SHCoeffs
        Complex coefficients of shape (2, L + 1, L + 1), the m < 0 half filled from the m ≥ 0 one.  Its
        ``spectrum()`` is :func:`degree_power` / 4π (pyshtools' power is per unit of normalized area).

    Raises
    ------
    ValueError
        ``lmax`` is not an integer ≥ 0, or ``alm`` does not have shape (nalm(lmax),) or holds NaN or inf.
    InsufficientMemoryError
        The (2, L + 1, L + 1) array would not fit in the available memory.
    """
    lmax = nonneg_int("lmax", lmax)
    check_memory(48.0 * (lmax + 1) ** 2, lambda: f"pyshtools coefficients of band limit lmax={lmax}", "lower `lmax`.")
    import pyshtools  # deferred: pyshtools takes seconds to import

    ell, m = sh.lm_arrays(lmax)
    alm = complex_array("alm", alm)         # strings raised "complex() arg is a malformed string" from the copy below
    if alm.shape != ell.shape:
        raise ValueError(f"`alm` must have shape ({ell.size},) for lmax={lmax}; got shape {alm.shape}.")
    finite("alm", alm)                      # pyshtools would carry NaN into every expansion and spectrum
    # the field of alm has the real parts of the a_ℓ0 (ducc0's transforms drop their imaginary parts): passed on,
    # an imaginary a_ℓ0 made pyshtools expand a complex field 0.21 away from synthesis (a_10 = 1 + 0.5j)
    alm = np.where(m == 0, alm.real, alm)
    arr = np.zeros((2, lmax + 1, lmax + 1), dtype=complex)
    arr[0, ell, m] = alm
    arr[1, ell, m] = (-1.0) ** m * np.conj(alm)
    return pyshtools.SHCoeffs.from_array(arr, normalization="ortho", csphase=-1)


def from_shcoeffs(coeffs) -> tuple[np.ndarray, int]:
    """(alm, lmax) in meanfield's layout from any ``pyshtools.SHCoeffs`` of a real field.

    Normalization first, kind second: pyshtools 4.14's real → complex conversion of 'unnorm'
    coefficients scales m > 0 by √2 (its own ``expand`` then disagrees), while it is right from 'ortho'.

    Parameters
    ----------
    coeffs : pyshtools.SHCoeffs
        Any normalization, kind and csphase.

    Returns
    -------
    alm : ndarray of complex, shape (nalm(lmax),)
        The coefficients (orthonormal, Condon–Shortley phase, m ≥ 0, ducc0 order).
    lmax : int
        The band limit of ``coeffs``.

    Raises
    ------
    TypeError
        ``coeffs`` is not a ``pyshtools.SHCoeffs``.
    ValueError
        ``coeffs`` holds NaN or inf, or describes a complex field (complex kind whose m < 0 half is not
        (−1)^m conj(a_ℓm) in the 'ortho', csphase = −1 convention, to 1e-12 relative).
    """
    pysh = sys.modules.get("pyshtools")     # an SHCoeffs exists only once pyshtools is imported
    if pysh is None or not isinstance(coeffs, pysh.SHCoeffs):
        raise TypeError(f"`coeffs` must be a pyshtools.SHCoeffs (e.g. from to_shcoeffs); got {type(coeffs).__name__}.")
    c = coeffs.convert(normalization="ortho", csphase=-1, kind=coeffs.kind).convert(kind="complex")
    lmax = c.lmax
    ell, m = sh.lm_arrays(lmax)
    alm, negative = finite("coeffs", c.coeffs[0, ell, m]), c.coeffs[1, ell, m]
    # a complex field's m < 0 half is not (−1)^m conj(a_ℓm): keeping the m ≥ 0 half described another field
    # (pyshtools' SHCoeffs.from_random(..., kind="complex") was taken without a word)
    mismatch = np.where(m == 0, np.abs(alm.imag), np.abs(negative - (-1.0) ** m * np.conj(alm)))
    scale = float(np.max(np.abs(alm), initial=0.0))
    if np.any(mismatch > _REAL_FIELD_TOL * scale):
        raise ValueError("`coeffs` must describe a real field (complex 'ortho' coefficients with c[1, ℓ, m] = "
                         f"(−1)^m conj(c[0, ℓ, m]) and c[0, ℓ, 0] real); these differ by up to "
                         f"{float(np.max(mismatch)) / scale:.3g} relative: a complex field, which meanfield's "
                         "coefficients cannot hold (expand its real and imaginary parts separately).")
    return np.ascontiguousarray(alm.real * (m == 0) + alm * (m > 0)), lmax


_REAL_FIELD_TOL = 1e-12    # the rounding that pyshtools' conversions leave in the m < 0 half of a real field (0 seen)


def rotation_matrix(alpha: float, beta: float, gamma: float) -> np.ndarray:
    """R = R_z(alpha) R_y(beta) R_z(gamma) (active, right-handed).

    Parameters
    ----------
    alpha, beta, gamma : float
        Euler angles (z-y-z), in radians.

    Returns
    -------
    ndarray, shape (3, 3)
        The rotation matrix.

    Raises
    ------
    TypeError, ValueError
        An angle is not a finite real number.
    """
    alpha, beta, gamma = real_number("alpha", alpha), real_number("beta", beta), real_number("gamma", gamma)

    def rz(a):
        c, s = np.cos(a), np.sin(a)
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])

    c, s = np.cos(beta), np.sin(beta)
    ry = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return rz(alpha) @ ry @ rz(gamma)


def _zyz_angles(r: np.ndarray):
    """Euler angles (α, β, γ) with R = R_z(α) R_y(β) R_z(γ).

    β and α come from the image of e_z (R's last column) via atan2, γ from the remainder
    R_y(β)ᵀ R_z(α)ᵀ R, which fixes e_z.  Accurate to rounding for every R, including β near 0 or π,
    where arccos(R₂₂) would lose half the digits and α, γ separately are ill-determined.
    """
    s = np.hypot(r[0, 2], r[1, 2])
    beta = np.arctan2(s, r[2, 2])
    alpha = np.arctan2(r[1, 2], r[0, 2]) if s > 0 else 0.0
    ca, sa, cb, sb = np.cos(alpha), np.sin(alpha), np.cos(beta), np.sin(beta)
    rest = (np.array([[cb, 0, -sb], [0, 1, 0], [sb, 0, cb]])
            @ np.array([[ca, sa, 0], [-sa, ca, 0], [0, 0, 1]]) @ r)
    return alpha, beta, np.arctan2(rest[1, 0], rest[0, 0])


def rotate(alm: np.ndarray, lmax: int, rotation) -> np.ndarray:
    """Coefficients of f∘R⁻¹ (the field carried along by the rotation R).

    Uses ducc0's Wigner-matrix rotation (no stored tables).  With R = :func:`rotation_matrix` (α, β, γ) this is
    pyshtools' ``SHCoeffs.rotate(α, β, γ, degrees=False, body=True)``; its default ``body=False`` turns the
    frame instead and gives f∘R, i.e. ``rotate(alm, lmax, R.T)``.

    Parameters
    ----------
    alm : array_like of complex, shape (nalm(lmax),) or (k, nalm(lmax))
        Coefficients of f (or of k fields, each rotated), finite.
    lmax : int
        Their band limit L.
    rotation : array_like, shape (3, 3)
        A proper rotation matrix R (e.g. :func:`rotation_matrix`).

    Returns
    -------
    ndarray of complex, shape of ``alm``
        The coefficients of the rotated field (same band limit).

    Raises
    ------
    ValueError
        ``rotation`` is not a proper 3×3 rotation (R Rᵀ = I to 1e-12, det R = 1), or ``alm`` does not
        hold nalm(lmax) coefficients in its last axis, has more than two axes or holds NaN or inf, or ``lmax``
        is not an integer ≥ 0.
    """
    lmax = nonneg_int("lmax", lmax)
    r = real_array("rotation", rotation)
    if r.shape != (3, 3) or not np.allclose(r @ r.T, np.eye(3), atol=1e-12) or np.linalg.det(r) < 0:
        raise ValueError("`rotation` must be a proper 3×3 rotation matrix (R Rᵀ = I, det R = 1).")
    a = finite("alm", sh._as2d(alm, lmax))
    if a.ndim > 2:      # ducc0 failed with "Assertion failure alm: array has too many dimensions"
        raise ValueError(f"`alm` must have shape ({sh.nalm(lmax)},) or (k, {sh.nalm(lmax)}) (k fields); got shape "
                         f"{a.shape}.")
    alpha, beta, gamma = _zyz_angles(r)
    return sh._ducc().rotate_alm(a, lmax, gamma, beta, alpha, nthreads=sh.NTHREADS)


def mollweide_grid(alm: np.ndarray, lmax: int, nlat: int | None = None):
    """Values on a regular longitude–latitude grid, ready for a Mollweide ``pcolormesh``.

    Parameters
    ----------
    alm : array_like of complex, shape (nalm(lmax),)
        Coefficients of a real field.
    lmax : int
        Their band limit L.
    nlat : int, optional
        Number of latitudes (default max(2L + 2, 90)); there are 2·nlat longitudes.

    Returns
    -------
    lon : ndarray, shape (2·nlat,)
        Longitudes in radians, in [−π, π).
    lat : ndarray, shape (nlat,)
        Latitudes in radians (cell centres), in (−π/2, π/2), ascending.
    values : ndarray, shape (nlat, 2·nlat)
        The field at (lat, lon), in its own units.

    Raises
    ------
    TypeError, ValueError
        ``lmax`` is not an integer ≥ 0, ``nlat`` not an integer ≥ 1, or ``alm`` is not one set of nalm(lmax)
        coefficients or holds NaN or inf.
    InsufficientMemoryError
        The grid would not fit in the available memory.
    """
    lmax = nonneg_int("lmax", lmax)
    nlat = max(2 * lmax + 2, 90) if nlat is None else nonneg_int("nlat", nlat, minimum=1)
    nlon = 2 * nlat
    a = sh._one_field(alm, lmax, check_finite=True)
    check_memory(8.0 * nlat * nlon * 3 + 32.0 * nlat * (lmax + 1), lambda: f"a {nlat}×{nlon} plotting grid",
                 "lower `nlat`.")
    vals = sh._ducc().synthesis_2d(alm=a[None], spin=0, lmax=lmax,
                                   geometry="F1", ntheta=nlat, nphi=nlon, phi0=-np.pi, nthreads=sh.NTHREADS)[0]
    theta = (np.arange(nlat) + 0.5) * np.pi / nlat
    lon = -np.pi + 2 * np.pi * np.arange(nlon) / nlon
    return lon, (np.pi / 2 - theta)[::-1], vals[::-1]
