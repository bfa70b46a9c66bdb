"""Zonal (axisymmetric) functions on S^{d-1}, any d ≥ 2: g(⟨x, e⟩) expanded in normalized Gegenbauer polynomials.

P_ℓ^{(d)}(t) = P_ℓ^{(α,α)}(t) / P_ℓ^{(α,α)}(1), α = (d−3)/2 (Jacobi), so P_ℓ^{(d)}(1) = 1; Legendre for d = 3,
Chebyshev for d = 2.  The pushforward of the normalized uniform measure σ to t = ⟨x, e⟩ is
c_d (1−t²)^α dt.  Its quadrature (:class:`ZonalGrid`) is built in O(n) for d ≤ 4 and for large grids
(:func:`_product_rule`: Gauss–Chebyshev for d = 2 and even d ≥ 4, ducc0's Gauss–Legendre for odd d ≥ 3, the
polynomial part of the weight carried by the quadrature weights), else Gauss–Jacobi (the Jacobi matrix's
eigenvalues polished in long double, O(n²)).
Coefficients g_ℓ of g = Σ g_ℓ P_ℓ^{(d)} are g_ℓ = ∫ g P_ℓ dσ / ∫ P_ℓ² dσ.
"""
from __future__ import annotations

from dataclasses import dataclass
import functools

import numpy as np
from .._lazy import LazyModule

special = LazyModule("scipy.special")

from .._validate import dimension, flag, nonneg_int, real_array
from ._checks import check_memory, finite
from ._harmonic_dimension import _harmonic_counts, _log_harmonic_dimension


@dataclass(frozen=True)
class ZonalGrid:
    """Quadrature of the pushforward of σ under x ↦ t = ⟨x, e⟩, for zonal functions on S^{d-1}.

    The weight is (1 − t²)^{(d−3)/2} on [−1, 1], normalized to Σ w = 1; the rule integrates polynomials in t of
    degree ≤ 2n − 1 exactly.  For d ≤ 4, and for d ≥ 5 once n ≥ 20·k, k = ⌊(d − 3)/2⌋, it is a product rule of
    n + k nodes built in O(n) (:func:`_product_rule`); otherwise the n Gauss–Jacobi nodes, O(n²) to build (9 s
    at n = 10⁴), which is why large grids use the product rule.

    Attributes
    ----------
    n : int
        The rule's order, ≥ 1: exact to degree 2n − 1.
    d : int
        Ambient dimension, ≥ 2.
    size : int
        Number of nodes: n, or n + k for the product rule in d ≥ 5.
    rule : {"product", "gauss-jacobi"}
        Which rule.
    t : ndarray, shape (size,)
        The nodes, in (−1, 1), increasing.
    w : ndarray, shape (size,)
        The weights, > 0, summing to 1.
    """

    n: int
    d: int

    def __post_init__(self):
        nonneg_int("n", self.n, minimum=1)
        dimension(self.d)

    @classmethod
    def for_bandlimit(cls, lmax: int, d: int, dealias: bool = True) -> "ZonalGrid":
        """The grid of band limit ``lmax``: ⌊3L/2⌋ + 1 nodes (exact for degree ≤ 3L, so products of two
        degree-L functions are projected alias-free) or L + 1 (``dealias=False``, exact for degree ≤ 2L + 1).

        Parameters
        ----------
        lmax : int
            Band limit L ≥ 0.
        d : int
            Ambient dimension (sphere S^{d-1}), d ≥ 2.
        dealias : bool, optional
            Apply the 3/2 rule (default True).

        Returns
        -------
        ZonalGrid

        Raises
        ------
        TypeError, ValueError
            ``lmax`` is not an integer ≥ 0, ``d`` not an integer ≥ 2, or ``dealias`` is not True or False.
        """
        lmax, dealias = nonneg_int("lmax", lmax), flag("dealias", dealias)     # "no" was read as True
        return cls((3 * lmax) // 2 + 1 if dealias else lmax + 1, d)

    @property
    def rule(self) -> str:
        """"product" (O(n), n + k nodes) or "gauss-jacobi" (O(n²), n nodes)."""
        return "product" if self.d <= 4 or _extra_nodes(self.n, self.d) else "gauss-jacobi"

    @property
    def size(self) -> int:
        """The number of nodes: n, or n + ⌊(d − 3)/2⌋ for the product rule."""
        return self.n + _extra_nodes(self.n, self.d)

    @functools.cached_property
    def _nodes(self):
        check_memory(160.0 * self.size, lambda: f"the quadrature nodes of a {self.size}-node grid",
                     "lower `n` (the band limit).")
        if self.rule == "product":
            return _product_rule(self.size, self.d)
        return _gauss_jacobi(self.n, (self.d - 3) / 2)

    @property
    def t(self) -> np.ndarray:
        return self._nodes[0]

    @property
    def w(self) -> np.ndarray:
        return self._nodes[1]


def _extra_nodes(n: int, d: int) -> int:
    """k = ⌊(d − 3)/2⌋ when the product rule's n + k nodes cost at most 5 % more than Gauss–Jacobi's n, else 0."""
    k = (d - 3) // 2
    return k if d >= 5 and 20 * k <= n else 0


def _product_rule(m: int, d: int):
    """m nodes for the weight (1 − t²)^{(d−3)/2}, exact to degree 2(m − k) − 1, k = ⌊(d − 3)/2⌋, in O(m).

    (1 − t²)^{(d−3)/2} = (1 − t²)^{k}·(1 − t²)^{α₀}, α₀ = −½ (d = 2), 0 (odd d) or ½ (even d ≥ 4): Gauss for
    (1 − t²)^{α₀} (Chebyshev of the first kind, ducc0's Legendre, Chebyshev of the second kind; closed forms or
    O(m), ~1 ulp) with weights multiplied by the polynomial (1 − t²)^k = sin^{2k}θ.
    """
    k = max((d - 3) // 2, 0)
    if d == 2:
        theta = (2 * np.arange(m, 0, -1) - 1) * np.pi / (2 * m)
        w = np.ones(m)
    elif d % 2:
        import ducc0.misc
        theta = np.asarray(ducc0.misc.GL_thetas(m), dtype=float)[::-1]
        w = np.asarray(ducc0.misc.GL_weights(m, 1), dtype=float)[::-1]
    else:
        theta = np.arange(m, 0, -1) * np.pi / (m + 1)
        w = np.sin(theta) ** 2
    w = w * np.sin(theta) ** (2 * k)
    return np.cos(theta), w / w.sum()


def _jacobi_matrix_eigenvalues(n: int, a: float) -> np.ndarray:
    """The n Gauss–Jacobi (a, a) nodes, a > −½, as the eigenvalues of the symmetric tridiagonal Jacobi matrix
    (Golub–Welsch): zero diagonal, off-diagonal √β_k, β_k = k(k + 2λ − 1) / (4(k + λ)(k + λ − 1)), λ = a + ½.

    ``scipy.special.roots_jacobi`` returned NaN for large a (d = 500 at n = 600, d = 1000 at n = 400, d = 4000 at
    n = 200); the matrix has entries in (0, ½] for every a."""
    from scipy.linalg import eigvalsh_tridiagonal

    lam, k = a + 0.5, np.arange(1.0, n)
    off = np.sqrt(k * (k + 2 * lam - 1) / (4 * (k + lam) * (k + lam - 1)))
    return eigvalsh_tridiagonal(np.zeros(n), off)


def _gauss_jacobi(n: int, a: float):
    """Gauss–Jacobi (a, a) nodes and weights normalized to Σ w = 1, a > −½.

    The eigenvalues of the Jacobi matrix (:func:`_jacobi_matrix_eigenvalues`) give good nodes, and weights
    from eigenvectors (scipy's roots_jacobi) have relative errors growing like n³·eps (1e-12 at n = 61, 2e-8 at
    n = 1000), which would cap every zonal transform at that accuracy.  So the nodes get one Newton step in
    long double on the three-term recurrence of P_n^{(a,a)}, and the weights come from
    w_i ∝ 1 / ((1 − x_i²) P_n'(x_i)²).
    """
    x = _jacobi_matrix_eigenvalues(n, a).astype(np.longdouble)
    a = np.longdouble(a)
    for _ in range(2):  # one Newton step, then the derivative at the polished nodes
        p0, p1 = np.ones_like(x), (a + 1) * x
        for k in range(2, n + 1):
            c = 2 * k + 2 * a
            p0, p1 = p1, (((c - 1) * c * (c - 2) * x * p1 - 2 * (k + a - 1) ** 2 * c * p0)
                          / (2 * k * (k + 2 * a) * (c - 2)))
        dp = ((n + a) * p0 - n * x * p1) / (1 - x * x)  # (1 − x²) P_n' = (n + a) P_{n−1} − n x P_n
        x_new = x - p1 / dp
        x, x_old = x_new, x
    w = 1 / ((1 - x_old * x_old) * dp * dp)
    return np.asarray(x, dtype=float), np.asarray(w / w.sum(), dtype=float)


_LOG_LARGEST_DIMENSION = 300 * np.log(10)      # N(d, ℓ) ≤ 1e300: its inverse, a norm, stays a normal float64
_ROUNDING_OF_T = 1e-12      # ⟨x, e⟩ of unit vectors computed in float64 may exceed 1 by a few ulps


def _in_closed_interval(t: np.ndarray) -> np.ndarray:
    """``t`` clipped to [−1, 1] after refusing values beyond rounding: the three-term recurrence extrapolates
    the polynomials outside [−1, 1] (P_30(1.5) = 3.8e11 in d = 3), which is no value of a zonal function."""
    if t.size and np.max(np.abs(t)) > 1.0 + _ROUNDING_OF_T:
        worst = t.flat[np.argmax(np.abs(t))]
        raise ValueError(f"`t` must lie in [-1, 1] (t = ⟨x, e⟩ of unit vectors); got t = {float(worst)!r}.")
    return np.clip(t, -1.0, 1.0)


def gegenbauer(lmax: int, t, d: int) -> np.ndarray:
    """The normalized Gegenbauer polynomials P_ℓ^{(d)}(t), ℓ = 0 … lmax, with P_ℓ^{(d)}(1) = 1.

    Parameters
    ----------
    lmax : int
        Largest degree.
    t : array_like of float
        Arguments in [−1, 1] (t = ⟨x, e⟩).
    d : int
        Ambient dimension, d ≥ 2 (Legendre for d = 3, Chebyshev for d = 2).

    Returns
    -------
    ndarray, shape (lmax + 1,) + t.shape
        P_ℓ^{(d)}(t) (dimensionless).

    Raises
    ------
    TypeError, ValueError
        ``lmax`` is not an integer ≥ 0, ``d`` not an integer ≥ 2, or ``t`` not real numbers in [−1, 1]
        (up to 1e-12 of rounding, which is clipped).
    InsufficientMemoryError
        The (lmax + 1) × t.size table would not fit in the available memory.
    """
    d = dimension(d)
    lmax = nonneg_int("lmax", lmax)
    t = _in_closed_interval(finite("t", real_array("t", t)))
    check_memory(24.0 * (lmax + 1) * max(t.size, 1), lambda: f"P_ℓ(t) for ℓ ≤ {lmax} at {t.size} arguments",
                 "lower `lmax` or evaluate fewer arguments at a time.")
    out = np.empty((lmax + 1,) + t.shape)
    for ell, p in enumerate(_gegenbauer_rows(lmax, t, d)):
        out[ell] = p
    return out


def gegenbauer_norms(lmax: int, d: int) -> np.ndarray:
    """∫ P_ℓ^{(d)}(⟨x,e⟩)² dσ(x) = 1/N(d, ℓ), ℓ = 0 … lmax (σ the normalized uniform measure).

    Parameters
    ----------
    lmax : int
        Largest degree.
    d : int
        Ambient dimension, d ≥ 2.

    Returns
    -------
    ndarray of float, shape (lmax + 1,)
        The squared norms (dimensionless; 1 for ℓ = 0).

    Raises
    ------
    TypeError, ValueError
        ``lmax`` is not an integer ≥ 0, or ``d`` not an integer ≥ 2, or N(d, lmax) > 1e300 (high d: e.g. lmax > 294
        in d = 1000), where the norms leave float64.
    InsufficientMemoryError
        lmax + 1 norms would not fit in the available memory.
    """
    d, lmax = dimension(d), nonneg_int("lmax", lmax)
    check_memory(64.0 * (lmax + 1), lambda: f"the norms of {lmax + 1} degrees", "lower `lmax`.")
    log_n = _log_harmonic_dimension(d, np.arange(lmax + 1))
    if log_n[-1] > _LOG_LARGEST_DIMENSION:
        # 1/N underflowed to 0 (d = 1000, L = 450), and every coefficient divided by it came out inf
        top = int(np.searchsorted(log_n, _LOG_LARGEST_DIMENSION)) - 1       # log N(d, ℓ) increases with ℓ
        raise ValueError(f"`lmax`={lmax} is beyond float64 in d={d}: ∫P_ℓ² dσ = 1/N(d, ℓ) underflows (N(d, ℓ) > "
                         f"1e300) from ℓ = {top + 1}; the largest band limit of zonal functions in d={d} is {top}.")
    return 1.0 / _harmonic_counts(lmax, d)


def zonal_analysis(values: np.ndarray, lmax: int, grid: ZonalGrid) -> np.ndarray:
    """Coefficients g_0 … g_lmax of g = Σ g_ℓ P_ℓ^{(d)} from its values at the grid nodes.

    Exact for degree ≤ 2n − 1 − lmax.  O(lmax · n) work per profile and O(n) memory beyond the result: the P_ℓ
    come one degree at a time from their three-term recurrence (no (lmax + 1) × n table).

    Parameters
    ----------
    values : array_like of float, shape (..., n)
        g at the nodes ``grid.t``; leading axes are batched.
    lmax : int
        Largest degree returned.
    grid : ZonalGrid

    Returns
    -------
    ndarray of float, shape (..., lmax + 1)
        g_ℓ = ∫ g P_ℓ dσ / ∫ P_ℓ² dσ, the layout :func:`zonal_synthesis` takes (units of g).

    Raises
    ------
    ValueError
        ``values`` does not have one entry per node in its last axis or holds NaN or inf, or ``lmax`` is not an
        integer ≥ 0.
    TypeError
        ``grid`` is not a :class:`ZonalGrid`.
    InsufficientMemoryError
        The coefficients would not fit in the available memory.
    """
    if not isinstance(grid, ZonalGrid):
        raise TypeError(f"`grid` must be a meanfield.sphere.ZonalGrid (e.g. ZonalGrid.for_bandlimit(lmax, d)); got "
                        f"{type(grid).__name__}.")
    v = finite("values", real_array("values", values))
    lmax = nonneg_int("lmax", lmax)
    if v.shape[-1:] != (grid.size,):
        raise ValueError(f"`values` must have {grid.size} entries (one per node) in its last axis; got shape {v.shape}.")
    batch = v.size // grid.size
    check_memory(8.0 * (batch + 1) * (lmax + 1 + grid.size), lambda: f"{lmax + 1} coefficients of {batch} profiles",
                 "lower `lmax`.")
    vw = v * grid.w
    out = np.empty(v.shape[:-1] + (lmax + 1,))
    # one BLAS thread: a dot per degree on OpenBLAS's thread team cost milliseconds on a loaded 2-core machine
    # (130 s at L = 2·10⁴, 3·10⁴ nodes, against 10 s); blocks of rows would cost an (L + 1)-row table at small n
    from .._blas import single_threaded_blas

    with single_threaded_blas():
        for ell, p in enumerate(_gegenbauer_rows(lmax, grid.t, grid.d)):
            out[..., ell] = vw @ p
    return out / gegenbauer_norms(lmax, grid.d)


def _gegenbauer_rows(lmax: int, t: np.ndarray, d: int):
    """Yield P_ℓ^{(d)}(t), ℓ = 0 … lmax, each of shape t.shape, by the three-term recurrence

        P_{ℓ+1} = (2(ℓ + λ) t P_ℓ − ℓ P_{ℓ−1}) / (ℓ + 2λ),   λ = (d − 2)/2,  P_0 = 1,  P_1 = t,

    of the Gegenbauer polynomials C_ℓ^λ scaled to P_ℓ(1) = 1 (Chebyshev's 2t T_ℓ − T_{ℓ−1} for d = 2).  The
    recurrence is stable on [−1, 1] and costs O(t.size) per degree, where scipy's ``eval_jacobi`` costs O(ℓ) per
    value (an O(L²·t.size) table: 9 s at L = 1000 on 2001 arguments, against 0.02 s) and overflows its
    normalization in high d (NaN at d = 1000, L = 1000).
    """
    lam = (d - 2) / 2
    p_prev, p = np.ones_like(t), t
    yield p_prev
    if lmax >= 1:
        yield p
    for ell in range(1, lmax):
        p_prev, p = p, (2 * (ell + lam) * t * p - ell * p_prev) / (ell + 2 * lam)
        yield p


#: The rounding of a projected coefficient g_ℓ, in units of eps·√N(d, ℓ)·‖g‖_{L²(σ)}: measured ≤ 1.2 (the analysis of
#: seven profiles, d = 4 … 1000, L = 5 … 100, against the same quadrature in long double), 4 for a margin.
_ROUNDING_UNITS = 4.0


def _rounding_bound(coeffs: np.ndarray, t: np.ndarray, d: int) -> np.ndarray:
    """An estimate of the rounding error of g(t) = Σ_ℓ g_ℓ P_ℓ^{(d)}(t) at ``t`` (clipped to [−1, 1], any shape):

        δ(t) = Σ_ℓ min(|g_ℓ|, 4·eps·√N(d, ℓ)·‖g‖) |P_ℓ^{(d)}(t)|,   ‖g‖² = Σ_ℓ g_ℓ² / N(d, ℓ) = ∫ g² dσ.

    A projection g_ℓ = N(d, ℓ) ∫ g P_ℓ dσ by quadrature rounds each term by ~eps relative, so by Cauchy–Schwarz
    |δg_ℓ| ≲ eps·N(d, ℓ)·‖g‖·‖P_ℓ‖ = eps·√N(d, ℓ)·‖g‖ (‖P_ℓ‖² = 1/N(d, ℓ)); the synthesis adds eps·|g_ℓ| per term.
    A coefficient below that floor is all rounding (or exact, e.g. the zeros of the uniform density), so it counts
    with its own size.  Since |P_ℓ| ≤ 1 = P_ℓ(±1), δ is largest at the poles t = ±1, where P_ℓ is N(d, ℓ)^{1/2} times
    its size where σ has its mass.  Measured against the exact series of e^{βt} (125 cases; long double shares the
    float64 nodes' rounding, so it is no reference): ≤ 1.0·δ at the poles, ≤ 3.4·δ anywhere.
    O(L·t.size).
    """
    size = _rounding_sizes(coeffs, d)
    t = np.clip(np.asarray(t, dtype=float), -1.0, 1.0)
    out = np.zeros(t.shape)
    for a, p in zip(size, _gegenbauer_rows(size.size - 1, t, d)):
        out += a * np.abs(p)
    return out


def _rounding_sizes(coeffs: np.ndarray, d: int) -> np.ndarray:
    """min(|g_ℓ|, 4·eps·√N(d, ℓ)·‖g‖), ℓ = 0 … L: the rounding of each coefficient in :func:`_rounding_bound`
    (δ(±1) is their sum)."""
    c = np.real(np.asarray(coeffs))
    counts = _harmonic_counts(c.size - 1, d)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.minimum(np.abs(c), _ROUNDING_UNITS * np.finfo(float).eps * np.sqrt(counts) * l2_norm(c, d))


def l2_norm(coeffs: np.ndarray, d: int) -> float:
    """‖g‖ = (∫ g² dσ)^{1/2} = (Σ_ℓ g_ℓ² / N(d, ℓ))^{1/2} of g = Σ_ℓ g_ℓ P_ℓ^{(d)} (Parseval; inf beyond float64)."""
    c = np.real(np.asarray(coeffs))
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.sqrt(np.sum(c * c / _harmonic_counts(c.size - 1, d))))


def zonal_synthesis(coeffs: np.ndarray, t, d: int) -> np.ndarray:
    """g(t) = Σ_ℓ g_ℓ P_ℓ^{(d)}(t) at any t in [−1, 1].

    Parameters
    ----------
    coeffs : array_like of float, shape (..., L + 1)
        g_0 … g_L.
    t : array_like of float
        Arguments t = ⟨x, e⟩.
    d : int
        Ambient dimension, d ≥ 2.

    Returns
    -------
    ndarray of float, shape coeffs.shape[:-1] + t.shape
        g(t), in the units of g.

    Raises
    ------
    ValueError
        ``coeffs`` is not an array of finite real numbers of shape (..., L + 1), ``t`` not real numbers in [−1, 1] (up
        to 1e-12 of rounding, which is clipped), or ``d`` not an integer ≥ 2.
    """
    c = finite("coeffs", real_array("coeffs", coeffs))
    if c.ndim == 0 or c.shape[-1] == 0:
        raise ValueError(f"`coeffs` must have shape (..., L + 1) with L ≥ 0 (g_0 … g_L); got shape {c.shape}.")
    d = dimension(d)
    t = _in_closed_interval(finite("t", real_array("t", t)))
    batch = c.shape[:-1]
    check_memory(8.0 * (3 * t.size + (int(np.prod(batch)) + 1) * max(t.size, 1)),
                 lambda: f"g(t) of {int(np.prod(batch))} profiles at {t.size} arguments", "evaluate fewer arguments at a "
                 "time.")
    out = np.zeros(batch + t.shape)
    flat = c.reshape(-1, c.shape[-1])
    for ell, p in enumerate(_gegenbauer_rows(c.shape[-1] - 1, t, d)):    # O(L·t.size): no (L + 1) × t.size table
        out += (flat[:, ell].reshape(batch + (1,) * t.ndim) * p) if batch else flat[0, ell] * p
    return out
