"""The circle S¹ (d = 2): real Fourier series on an equispaced grid (FFT).

NaN and inf pass through :func:`circle_synthesis`, :func:`circle_analysis` and :func:`circle_derivative` (an
adaptive stepper rejects a trial step by finding them); :func:`circle_evaluate` and :func:`circle_adjoint_points`
refuse them.

Convention: a real field f(φ) = Σ_{|k|≤L} c_k e^{ikφ} is stored by c_0 … c_L (complex, c_{-k} = conj c_k),
c_k = (1/2π) ∫ f e^{-ikφ} dφ, so the mean of f w.r.t. the normalized measure dφ/2π is c_0.  Functions of
points take (..., 2) unit vectors, φ = atan2(x_2, x_1).
"""
from __future__ import annotations

import numpy as np

from .._validate import flag, nonneg_int, real_array
from ._checks import check_memory, complex_array, finite


_EVALUATE_BLOCK_BYTES = 2 ** 25     # the e^{ikφ} table of one block of circle_evaluate
_NUFFT_FROM = 2 ** 16      # n·(L + 1) from which circle_adjoint_points uses the non-uniform FFT
_NUFFT_BLOCK = 4096        # points per transform: ducc0 accumulates its grid sequentially (_nufft_group)
_NUFFT_GROUP = 256         # blocks summed pairwise at once
_NUFFT_EPS = 3e-13         # ducc0's accuracy target (its float64 floor is 2e-13)
_NUFFT_ERROR = 1e-12       # bound on |error of c_k| / Σ_block |w_j| of one block (measured: circle_adjoint_error)


def _grid_points(n) -> int:
    return nonneg_int("n", n, minimum=1)


def _series(coeffs, name: str = "coeffs") -> np.ndarray:
    """Coefficients c_0 … c_L (..., L + 1) as a complex array with at least one coefficient."""
    c = complex_array(name, coeffs)
    if c.ndim == 0 or c.shape[-1] == 0:
        raise ValueError(f"`{name}` must have shape (..., L + 1) with L ≥ 0 (c_0 … c_L); got shape {c.shape}.")
    return c


def circle_grid_size(lmax: int, dealias: bool = True) -> int:
    """Number of equispaced points on S¹ for band limit ``lmax``.

    With ``dealias`` (the 3/2 rule) 3L + 2, rounded up to even (FFT-friendly): products of two
    degree-L series are then alias-free (3L + 1 would do); otherwise 2L + 2.

    Parameters
    ----------
    lmax : int
        Band limit L ≥ 0 (largest Fourier degree |k|).
    dealias : bool, optional
        Use the 3/2 rule (default True).

    Returns
    -------
    int
        The number of points n (even).

    Raises
    ------
    ValueError
        ``lmax`` is not a nonnegative integer.
    """
    lmax, dealias = nonneg_int("lmax", lmax), flag("dealias", dealias)     # "no" was read as True
    n = 3 * lmax + 2 if dealias else 2 * lmax + 2
    return n + (n % 2)


def circle_angles(n: int) -> np.ndarray:
    """The angles φ_j = 2πj/n, j = 0 … n − 1, of the equispaced grid on S¹.

    Parameters
    ----------
    n : int
        Number of points (e.g. :func:`circle_grid_size`).

    Returns
    -------
    ndarray, shape (n,)
        Angles in radians, in [0, 2π), increasing from φ_0 = 0.

    Raises
    ------
    TypeError, ValueError
        ``n`` is not an integer ≥ 1.
    InsufficientMemoryError
        n points would not fit in the available memory.
    """
    n = _grid_points(n)
    check_memory(24.0 * n, lambda: f"the angles of {n} points on S¹", "lower `n`.")
    return 2 * np.pi * np.arange(n) / n


def circle_points(n: int) -> np.ndarray:
    """The points (cos φ_j, sin φ_j) of the equispaced grid on S¹ (the angles of :func:`circle_angles`).

    Parameters
    ----------
    n : int
        Number of points.

    Returns
    -------
    ndarray, shape (n, 2)
        Unit vectors in R², row j at angle φ_j = 2πj/n (radians).

    Raises
    ------
    TypeError, ValueError, InsufficientMemoryError
        As :func:`circle_angles`.
    """
    n = _grid_points(n)
    check_memory(64.0 * n, lambda: f"{n} points on S¹", "lower `n`.")
    phi = circle_angles(n)
    return np.stack([np.cos(phi), np.sin(phi)], axis=-1)


def circle_synthesis(coeffs: np.ndarray, n: int) -> np.ndarray:
    """Values at the n equispaced angles of the real field with coefficients c_0 … c_L.

    Parameters
    ----------
    coeffs : array_like of complex, shape (..., L + 1)
        c_0 … c_L in the module's convention (c_{-k} = conj c_k implied); leading axes are batched.
    n : int
        Number of equispaced points, n > 2L (angles :func:`circle_angles`).

    Returns
    -------
    ndarray of float, shape (..., n)
        f(φ_j) = Σ_{|k|≤L} c_k e^{ikφ_j}, in the units of the field.

    Raises
    ------
    TypeError, ValueError
        ``n`` is not an integer ≥ 1, n ≤ 2L (the grid cannot carry degree L), or ``coeffs`` is not an array of
        numbers of shape (..., L + 1).
    InsufficientMemoryError
        The result would not fit in the available memory.
    """
    n = _grid_points(n)
    c = _series(coeffs)
    lmax = c.shape[-1] - 1
    if 2 * lmax >= n:
        raise ValueError(f"`n`={n} points cannot carry degree lmax={lmax}; need n > 2·lmax.")
    check_memory(32.0 * (c.size // c.shape[-1]) * n, lambda: f"{c.size // c.shape[-1]} series at {n} points on S¹",
                 "lower `n`.")
    full = np.zeros(c.shape[:-1] + (n // 2 + 1,), dtype=complex)
    full[..., : lmax + 1] = c * n
    return np.fft.irfft(full, n=n, axis=-1)


def circle_analysis(values: np.ndarray, lmax: int) -> np.ndarray:
    """The coefficients c_0 … c_lmax of a field sampled at n equispaced angles.

    By the trapezoidal rule, c_k = (1/n) Σ_j f(φ_j) e^{-ikφ_j}: exact for fields of degree < n − lmax.

    Parameters
    ----------
    values : array_like of float, shape (..., n)
        f at the angles of :func:`circle_angles` (n); leading axes are batched.
    lmax : int
        Largest degree returned, 2·lmax < n.

    Returns
    -------
    ndarray of complex, shape (..., lmax + 1)
        c_0 … c_lmax (c_0 is the mean of f for the normalized measure dφ/2π).

    Raises
    ------
    ValueError
        ``lmax`` is not a nonnegative integer, ``values`` is not an array of real numbers of shape (..., n), or
        2·lmax ≥ n.
    """
    lmax = nonneg_int("lmax", lmax)
    v = real_array("values", values)
    if v.ndim == 0:
        raise ValueError(f"`values` must have shape (..., n) (samples at the n angles of circle_angles); got shape "
                         f"{v.shape}.")
    n = v.shape[-1]
    if 2 * lmax >= n:
        raise ValueError(f"`lmax`={lmax} needs more than {2 * lmax} points; got {n}.")
    return np.fft.rfft(v, axis=-1)[..., : lmax + 1] / n


def circle_derivative(coeffs: np.ndarray) -> np.ndarray:
    """Coefficients of the derivative d/dφ: c_k is multiplied by ik.

    Parameters
    ----------
    coeffs : ndarray of complex, shape (..., L + 1)
        c_0 … c_L of f.

    Returns
    -------
    ndarray of complex, shape (..., L + 1)
        The coefficients of df/dφ (per radian).

    Raises
    ------
    ValueError
        ``coeffs`` is not an array of numbers of shape (..., L + 1).
    """
    coeffs = _series(coeffs)
    k = np.arange(coeffs.shape[-1])
    return 1j * k * coeffs


def circle_evaluate(coeffs: np.ndarray, phi) -> np.ndarray:
    """Values of the real field c_0 … c_L at arbitrary angles (direct sum, O(L) per angle, in blocks of angles:
    the memory beyond the result is bounded, whatever L and the number of angles).

    Parameters
    ----------
    coeffs : array_like of complex, shape (L + 1,)
        c_0 … c_L.
    phi : array_like of float, any shape
        Angles in radians (any real value; the field is 2π-periodic).

    Returns
    -------
    ndarray of float, shape of ``phi``
        f(φ) = c_0 + 2 Re Σ_{k=1..L} c_k e^{ikφ}.

    Raises
    ------
    ValueError
        ``coeffs`` is not a 1-D array of finite numbers with at least one entry, or ``phi`` is not finite real
        numbers.
    InsufficientMemoryError
        The values would not fit in the available memory.
    """
    c = _series(coeffs)
    if c.ndim != 1:
        raise ValueError(f"`coeffs` must have shape (L + 1,) (one series); got shape {c.shape}.")
    finite("coeffs", c)
    ph = finite("phi", real_array("phi", phi))
    check_memory(8.0 * ph.size, lambda: f"{ph.size} values on S¹", "evaluate fewer angles at a time.")
    k = np.arange(c.shape[-1])
    wc = np.where(k == 0, 1.0, 2.0) * c
    flat = ph.ravel()
    out = np.empty(flat.size)
    # the table e^{ikφ} a block of angles at a time (≤ 32 MiB): whole, it took 48·n·(L + 1) bytes, so that
    # sample_density on S¹ (which evaluates all its proposals at once) was refused at L = 2000 for 2·10⁵ tokens
    step = max(1, _EVALUATE_BLOCK_BYTES // (48 * c.size))
    for i in range(0, flat.size, step):
        out[i:i + step] = np.real(np.exp(1j * flat[i:i + step, None] * k) @ wc)
    return out.reshape(ph.shape)


def circle_adjoint_points(weights, phi, lmax: int) -> np.ndarray:
    """Fourier coefficients of the weighted Dirac measure Σ_j w_j δ_{φ_j} relative to dφ/2π.

    c_k = Σ_j w_j e^{-ikφ_j}, k = 0 … lmax, so c_0 = Σ_j w_j is the mass, summed pairwise (numpy's reduction)
    to ~1 ulp of Σ|w_j| on every path.  Up to n·(lmax + 1) = 2¹⁶ the whole table e^{-ikφ_j} is summed pairwise
    along the points; beyond, the c_k with k ≥ 1 come from ducc0's type-1 non-uniform FFT, a block of 4096
    points at a time (O(n + (n/4096)·L log L), memory O(L) beyond the input), the blocks summed pairwise: the
    table took 10.7 s and 11.5 GiB at n = 10⁶, L = 256.  :func:`circle_adjoint_error` bounds the error of each
    path.

    Parameters
    ----------
    weights : array_like of float, shape (n,)
        The weights w_j.
    phi : array_like of float, shape (n,)
        The angles φ_j in radians.
    lmax : int
        Largest degree returned.

    Returns
    -------
    ndarray of complex, shape (lmax + 1,)
        c_0 … c_lmax.

    Raises
    ------
    ValueError
        ``lmax`` is not a nonnegative integer, or ``weights`` and ``phi`` are not 1-D arrays of finite real
        numbers of the same length.
    InsufficientMemoryError
        The coefficients of the blocks would not fit in the available memory.
    """
    lmax = nonneg_int("lmax", lmax)
    w = finite("weights", real_array("weights", weights))     # as adjoint_synthesis_points on S² (NaN returned NaN)
    ph = finite("phi", real_array("phi", phi))
    if ph.ndim != 1 or w.shape != ph.shape:
        raise ValueError(f"`weights` and `phi` must be 1-D arrays of the same length (one weight per angle); got "
                         f"shapes {w.shape} and {ph.shape}.")
    if not _uses_nufft(ph.size, lmax):
        k = np.arange(lmax + 1)      # a table of ≤ 2¹⁶ entries (3 MiB)
        return np.sum(np.exp(-1j * k[:, None] * ph[None, :]) * w, axis=-1)
    groups = -(-ph.size // (_NUFFT_BLOCK * _NUFFT_GROUP))
    check_memory(16.0 * (lmax + 1) * (_NUFFT_GROUP + groups + 16), lambda: f"the Fourier coefficients k ≤ {lmax} "
                 f"of {ph.size} angles, a block at a time", "lower `lmax`.")
    out = np.empty((lmax + 1, groups), dtype=complex)
    for g in range(groups):
        a = g * _NUFFT_BLOCK * _NUFFT_GROUP
        out[:, g] = _nufft_group(w[a:a + _NUFFT_BLOCK * _NUFFT_GROUP], ph[a:a + _NUFFT_BLOCK * _NUFFT_GROUP], lmax)
    c = np.sum(out, axis=-1)
    # the mass as the direct path sums it (w_j·(1 + 0j), pairwise): the same bits on both paths
    c[0] = np.sum(w.astype(complex))
    return c


def _uses_nufft(n: int, lmax: int) -> bool:
    return lmax >= 1 and n * (lmax + 1) > _NUFFT_FROM


def _nufft_group(w: np.ndarray, ph: np.ndarray, lmax: int) -> np.ndarray:
    """Σ_j w_j e^{-ikφ_j}, k = 0 … lmax, over ≤ _NUFFT_GROUP blocks of points, one transform each, summed
    pairwise.  ducc0 adds the points into its grid one after the other: one transform of 10⁵ coincident points
    was 3.7e-12·Σ|w_j| off, a block of 4096 4.1e-13 (its kernel's error: 2.8e-13 for a single point)."""
    import ducc0.nufft  # deferred: keeps `import meanfield` fast

    nblocks = -(-ph.size // _NUFFT_BLOCK)
    parts = np.empty((lmax + 1, nblocks), dtype=complex)
    grid = np.empty(2 * lmax + 1, dtype=complex)
    for b in range(nblocks):
        s = slice(b * _NUFFT_BLOCK, (b + 1) * _NUFFT_BLOCK)
        # one thread: the same bits on every call
        ducc0.nufft.nu2u(points=w[s].astype(complex), coord=ph[s, None], forward=True, epsilon=_NUFFT_EPS,
                         nthreads=1, out=grid, fft_order=True)
        parts[:, b] = grid[: lmax + 1]
    return np.sum(parts, axis=-1)


def circle_adjoint_error(n: int, lmax: int, phi_max: float = np.pi) -> np.ndarray:
    """A bound on the error of :func:`circle_adjoint_points`' c_k, relative to Σ_j |w_j|.

    Both paths: the pairwise sums (2 log₂ n + 2 ulps) and the phase kφ_j (|φ_j| ≤ ``phi_max``, to an ulp).  The
    non-uniform FFT (k ≥ 1 beyond 2¹⁶ table entries) adds 1e-12 + 2πk ulps: measured against a long-double sum,
    with coincident points (the worst case: their errors add up) at 61 angles in [-π, π], a block of 4096 points
    was off by at most 4.7e-13 of its Σ|w_j| up to L = 512, and by ≈ πk ulps more at large k (its grid
    coordinates are rounded: 0.9·(1e-12 + πk ulps) at L = 16000).

    Parameters
    ----------
    n : int
        Number of points.
    lmax : int
        Largest degree.
    phi_max : float, optional
        Largest |φ_j| in radians (default π, as from ``arctan2``).

    Returns
    -------
    ndarray of float, shape (lmax + 1,)
        The bound on |error of c_k| / Σ_j |w_j|, k = 0 … lmax.
    """
    n, lmax = nonneg_int("n", n), nonneg_int("lmax", lmax)
    k = np.arange(lmax + 1)
    bound = (2 * np.log2(max(n, 2)) + 2 + float(phi_max) * k) * np.finfo(float).eps
    if _uses_nufft(n, lmax):
        bound[1:] += _NUFFT_ERROR + 2 * np.pi * k[1:] * np.finfo(float).eps
    return bound
