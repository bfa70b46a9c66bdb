"""The interaction energy E_{β,D}(μ) = (1/2β) ∬ e^{β⟨x, D y⟩} dμ(x) dμ(y) and its first variation.

Evaluation paths (one per measure type; the Funk–Hecke multipliers are those of docs/numerics.md):

* ``Density`` with D = c·I: Parseval with the Funk–Hecke multipliers λ_ℓ(βc) (exact; for a density
  ρ with orthonormal coefficients ρ̂ on S², ∬ e^{b⟨x,y⟩} ρρ dσdσ = Σ_ℓ λ_ℓ(b) E_ℓ/(4π), E_ℓ = Σ_m|ρ̂_ℓm|²;
  on S¹ it is Σ_k I_|k|(b) |c_k|²).  A negative c uses λ_ℓ(−b) = (−1)^ℓ λ_ℓ(b).
* ``Density`` with a general D: a Gauss–Legendre (S²) or equispaced (S¹) grid that integrates
  ρ(x) e^{β⟨x,Dy⟩} exactly up to the kernel's truncation tolerance, then the O(N_grid²) pair sum.
* the uniform measure (any D, any d): the closed-form series of :func:`uniform_energy`.
* ``Particles``: the exact pair sum (chunked, any d), or for D = c·I on S² / S¹ the O(N) spectral
  sum (adjoint non-uniform transform + Funk–Hecke) with the error bound of the kernel truncation.
* ``FEDensity`` (:mod:`meanfield._energy._fem`): its own quadrature nodes as atoms, with an a-posteriori estimate
  of the quadrature's error from a rule of degree q + 8.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from scipy import special

from .._errors import warn
from .._measures import Density, Particles, ZonalDensity, conversion_hint
from .._validate import choice, nonneg_int, open_fraction, real_array
from ..sphere import _circle as circ
from ..sphere import _sh as sh
from ..sphere._funk_hecke import funk_hecke, funk_hecke_unscaled, kernel_bandlimit, kernel_truncation_error
from ._kernel import (_LOG_FLOAT_MAX, _scaled_kernel_sums, check_beta, check_D, check_pair_work, dimension_for,
                      isotropic_scale, kernel_sums, pair_energy, pair_rounding, spectral_norm, tangent_project)

METHODS = ("auto", "exact", "pairs", "spectral", "quadrature")
_GRID_TOL = 1e-15          # kernel truncation behind the quadrature grids of a Density
_NUFFT_EPS = 1e-13
_SPECTRAL_MIN_N = 4000     # "auto" switches particles on S²/S¹ with D = cI to the O(N) path above this
# "auto" leaves a spectral sum whose rounding bound exceeds this fraction of its value for a positive method
# (D = c·I with c < 0: λ_ℓ alternate in sign and cancel for a concentrated measure)
_AUTO_ROUNDING = 1e-10


# relative error of each Funk–Hecke multiplier λ_ℓ: scipy's ``ive`` at half-integer orders is off by up to
# 2.5e-14 at β = 20 (d = 3, every ℓ) and by 1.5e-13 at high orders (d = 5, ℓ = 80, β = 0.09), measured against
# 30-digit mpmath over d ≤ 100, ℓ ≤ 80, β ≤ 700; a Funk–Hecke sum inherits it in every term
_MULTIPLIER_REL = 2e-13


def _rounding(terms, beta: float) -> float:
    """A bound on the float64 error of (1/2β) Σ terms, terms_ℓ = λ_ℓ·(power of degree ℓ): a few ulps of Σ |terms|
    for the sum (it cancels when the terms alternate, as λ_ℓ(−|b|) = (−1)^ℓ λ_ℓ(|b|) do), plus the error of the
    multipliers λ_ℓ themselves (:data:`_MULTIPLIER_REL` of each term)."""
    return (8 * np.finfo(float).eps + _MULTIPLIER_REL) * float(np.sum(np.abs(terms))) / (2.0 * beta)
_FE_FACTOR_MIN = 10000     # "auto" evaluates FE energies through the truncated kernel above this many nodes


@dataclass(frozen=True)
class EnergyEstimate:
    """An energy value with the bound on its error and the method that produced it.

    Attributes
    ----------
    value : float
        E_{β,D}(μ) (dimensionless; the energy has the prefactor 1/(2β)).
    error_bound : float
        A bound on |value − E| from the method (kernel truncation, quadrature) and the rounding of its sums; 0.0
        for the closed forms (exact to rounding), inf when ``value`` is inf (beyond float64).  For an FE density
        (method "quadrature") an a-posteriori estimate rather than a proof: twice the difference from a rule of
        degree q + 8 (measured at 1.7–2.1 times the error where that exceeds the rounding), plus the evaluations'
        rounding.
    method : str
        "exact", "closed-form", "pairs", "spectral" or "quadrature".
    """

    value: float
    error_bound: float
    method: str

    def __post_init__(self):
        # plain floats (the sums produce numpy scalars, whose repr is np.float64(…))
        object.__setattr__(self, "value", float(self.value))
        # an energy beyond float64 has no error bound: the pair sum and the closed form reported 0.0 with value inf,
        # where energy_estimate documents inf (as the quadrature path returned)
        object.__setattr__(self, "error_bound", float("inf") if np.isinf(self.value) else float(self.error_bound))

    def __float__(self):
        return float(self.value)


# ----------------------------------------------------------------------------------------------
# the uniform measure, closed form

def uniform_energy(beta, D=None, d: int | None = None) -> float:
    """E_{β,D}(σ) for the normalized uniform measure σ on S^{d-1}, any real D (not only symmetric).

    Parameters
    ----------
    beta : float
        β > 0.
    D : None, float, array_like of shape (d,) (a diagonal) or (d, d)
        Interaction matrix (None: identity, a scalar c: c·I).
    d : int, optional
        Ambient dimension (d ≥ 2); default: the size of ``D`` when it is given as d numbers or a (d, d) array,
        else 3 (as :func:`minimize_energy` and :func:`maximize_energy`).

    Returns
    -------
    float
        (1/2β) E_{x,y∼σ} e^{β xᵀDy}.

    Notes
    -----
    E depends on D only through its singular values s_i (σ is O(d)-invariant).  Integrating x first,
    E_x e^{β⟨x, Dy⟩} = ₀F₁(; d/2; β²‖Dy‖²/4); with a_i = s_i² and (y_i²) ~ Dirichlet(½, …, ½),

        2β E = Σ_k (β²/4)^k h_k / ((d/2)_k)²,   h_k = [t^k] Π_i (1 − a_i t)^{−1/2},

    a series of positive terms (no cancellation; evaluated in log scale).  The term ratio is at most
    (βs_max)²/(4(k+1)²), so ⌊βs_max⌋ + 80 terms leave a tail below 4^{-80}.  For d ≤ 100 and βs_max > 1500
    the energy exceeds the float64 range (it is at least that of the rank-one D = s_max e₁e₁ᵀ, ~e^z z^{1−d})
    and ``inf`` is returned; in higher d the series is summed up to βs_max = 5000 (O((βs_max)²) work, ~3 s), where
    the energy can still be finite (d = 4096, β = 1600: 3.27e123), and ``inf`` is returned when it overflows.  Special cases: D = I gives 2βE = λ_0 = Γ(d/2)(2/β)^{d/2−1}I_{d/2−1}(β)
    (sinh β/β on S²); d = 2, D = diag(d1, d2) gives 2βE = I_0(β(d1+d2)/2) I_0(β(d1−d2)/2).
    """
    beta = check_beta(beta)
    d = dimension_for(D, d)
    s = _singular_values(D, d)
    smax = float(s.max()) if s.size else 0.0
    if smax == 0.0:
        return 1.0 / (2.0 * beta)
    a = (s / smax) ** 2
    z = beta * smax
    if z > 1500.0 and d <= _CONVOLUTION_MAX_D:
        return float("inf")
    if z > _Z_MAX_HIGH_D:
        raise ValueError(f"β·s_max = {z:.6g} (β times the largest singular value of `D`) must be ≤ {_Z_MAX_HIGH_D:g} "
                         f"for the uniform energy in d = {d} (its series needs ~(β s_max)² operations); got beta={beta!r}.")
    K = int(z) + 80
    if d <= _CONVOLUTION_MAX_D:
        return _uniform_energy_by_convolution(a, z, d, K) / (2.0 * beta)
    g = _isotropy_factors(a, d, K)
    # 2βE = Σ_k u_k g_k with u_k = (z²/4)^k / (k! (d/2)_k), the ₀F₁ terms, by their ratios (positive, no
    # cancellation), the running sum rescaled as it grows toward e^z
    u, total, log_scale = 1.0, 0.0, 0.0
    for k in range(K + 1):
        if k:
            u *= z * z / (4.0 * k * (d / 2.0 + k - 1))
        total += u * g[k]
        if total > _RESCALE:
            u, total, log_scale = u / _RESCALE, total / _RESCALE, log_scale + np.log(_RESCALE)
    if log_scale == 0.0:                 # no rescaling: divide (e^{−log 2β} is off by |log 2β|·ε, 3e-14 at β = 1e-300)
        return float(total / (2.0 * beta))
    with np.errstate(over="ignore"):
        return float(np.exp(np.log(total) + log_scale - np.log(2.0 * beta)))


_RESCALE = 2.0 ** 900
_Z_MAX_HIGH_D = 5e3      # ~3 s of O(K²) work in high d
# h_k ≤ (d/2)_k/k! ≤ 1e96 for d ≤ 100 at z ≤ 1500: the direct product of the d series fits in float64 there
# (and is 10–40× faster than the recurrence of _isotropy_factors, which high d needs)
_CONVOLUTION_MAX_D = 100


def _uniform_energy_by_convolution(a: np.ndarray, z: float, d: int, K: int) -> float:
    """2βE = Σ_k (z²/4)^k h_k / ((d/2)_k)², h_k = [t^k] Π_i (1 − a_i t)^{−1/2} by d convolutions (low d)."""
    j = np.arange(K + 1)
    base = np.exp(special.gammaln(j + 0.5) - special.gammaln(0.5) - special.gammaln(j + 1.0))  # (1/2)_j/j!
    h = np.zeros(K + 1)
    h[0] = 1.0
    for ai in a:                     # one series product per dimension (d factors, not a particle loop)
        with np.errstate(under="ignore"):
            h = np.convolve(h, base * ai ** j)[: K + 1]
    with np.errstate(divide="ignore"):
        # j·log(z²/4) with the j = 0 term exactly 0: z² underflows for z ≲ 1e-154 (β = 1e-300), and 0·log 0 was NaN
        log_q = 2.0 * np.log(z) - np.log(4.0)
        logt = (np.concatenate([[0.0], j[1:] * log_q]) + np.log(h)
                - 2.0 * (special.gammaln(d / 2.0 + j) - special.gammaln(d / 2.0)))
    top = float(np.max(logt))
    with np.errstate(over="ignore"):
        return float(np.exp(top) * np.sum(np.exp(logt - top)))


def _singular_values(D, d: int) -> np.ndarray:
    """The singular values of the interaction matrix given as :func:`check_D` takes it, without forming a d × d
    identity or diagonal (and its O(d³) SVD) when D is None, a scalar or a diagonal: d = 4096 took 38 s."""
    if D is None:
        return np.ones(d)
    if isinstance(D, numbers.Real) and not isinstance(D, bool):
        return np.full(d, abs(float(check_D(D, 2)[0, 0])))     # the scalar, checked
    if np.ndim(D) == 1 and not np.iscomplexobj(D):
        diagonal = np.asarray(D, dtype=float) if np.shape(D) == (d,) else None
        if diagonal is not None and np.all(np.isfinite(diagonal)):
            return np.abs(diagonal)
    return np.linalg.svd(check_D(D, d, "the argument `d`"), compute_uv=False)


def _isotropy_factors(a: np.ndarray, d: int, K: int) -> np.ndarray:
    """g_k = h_k / c_k ∈ (0, 1], k = 0..K, for h_k = [t^k] Π_i (1 − a_i t)^{−1/2} (a_i ≤ 1) and c_k = (d/2)_k/k!,
    its value when every a_i = 1 (D ∝ an orthogonal matrix: g ≡ 1).

    From log Π_i (1 − a_i t)^{−1/2} = ½ Σ_m p_m t^m/m (p_m = Σ_i a_i^m): k h_k = ½ Σ_{m≤k} p_m h_{k−m}, divided
    by c_k so that nothing overflows in high d (h_k reaches 10³²² at d = 1000, β = 500).  O(K² + dK).
    """
    m = np.arange(1, K + 1)
    values, counts = np.unique(a, return_counts=True)                     # D = c·I: one value, not d
    with np.errstate(under="ignore"):
        p = (values[None, :] ** m[:, None]) @ counts                       # p_m = Σ_i a_i^m, m = 1..K
    g = np.empty(K + 1)
    g[0] = 1.0
    for k in range(1, K + 1):
        i = np.arange(1, k + 1)
        with np.errstate(under="ignore"):
            ratio = np.cumprod((k - i + 1.0) / (d / 2.0 + k - i))          # c_{k−m}/c_k, m = 1..k (each ≤ 1)
        g[k] = float(np.dot(p[:k], ratio * g[k - 1::-1])) / (2.0 * k)
    return g


# ----------------------------------------------------------------------------------------------
# atoms: a discrete representation exact for the energy

def _is_fe(measure) -> bool:
    from ._fem import FEDensity
    return isinstance(measure, FEDensity)


def _measure_dim(measure, accepted: str = "Particles, Density or FEDensity") -> int:
    """``measure.d``; ``accepted``: the types the caller takes, for the message (energy() takes ZonalDensity too, and
    its message left it out)."""
    if isinstance(measure, (Particles, Density)) or _is_fe(measure):
        return measure.d
    raise TypeError(f"`measure` must be a meanfield {accepted}; "
                    f"got {type(measure).__name__}." + conversion_hint(measure))


def _density_nodes(rho: Density, beta: float, D: np.ndarray):
    """(points, σ-weights, nodal values of ρ) of the grid that integrates ρ(x) e^{β⟨x,Dy⟩} exactly up to the
    kernel tolerance."""
    lk = kernel_bandlimit(beta * spectral_norm(D), _GRID_TOL, rho.d)
    deg = rho.lmax + lk
    if rho.d == 3:
        # Gauss–Legendre in θ (exact to degree 2·ntheta − 1) × trapezoid in φ (exact for |m| < nphi)
        ntheta = max((deg + 2) // 2, rho.lmax + 1)
        nphi = max(deg + 1, 2 * rho.lmax + 2)
        _check_grid_work(ntheta * (nphi + nphi % 2), beta, D)
        grid = sh.SphereGrid(ntheta, nphi + nphi % 2)
        return grid.points.reshape(-1, 3), (grid.weights / (4 * np.pi)).ravel(), rho.on_grid(grid).ravel()
    n = max(deg + 1, 2 * rho.lmax + 1)                      # trapezoid exact for degree < n
    _check_grid_work(n, beta, D)
    pts = circ.circle_points(n)
    return pts, np.full(n, 1.0 / n), rho.evaluate(pts)


_MAX_GRID_PAIRS = 1e10   # kernel pairs of the quadrature grid: ~3 min of pair sum (measured: 1.9e9 pairs in 37 s)


def _check_grid_work(nodes: int, beta: float, D: np.ndarray) -> None:
    """Refuse, before the grid is built, a quadrature whose O(nodes²) pair sum would run for hours: the grid
    grows like (β‖D‖)^{d−1} (β = 1e6 asked for 1.5e8 nodes: an O(n³) Gauss–Legendre rule, then 2e16 pairs)."""
    if float(nodes) ** 2 > _MAX_GRID_PAIRS:
        raise ValueError(f"`beta`·‖D‖₂ = {beta * spectral_norm(D):.6g} is too large for the grid quadrature of a Density "
                         f"with a general D: the kernel needs {nodes} nodes, {float(nodes) ** 2:.3g} pairs (at most "
                         f"{_MAX_GRID_PAIRS:g}); got beta={beta!r}. Sample the density (meanfield.sample_density) and "
                         "use Particles, or use D = c·I (the exact Funk–Hecke sum).")


_PEAK_NODES = 1024       # nodes per side of the lower bound's pair sum near the kernel's peak (~1e6 pairs, ~20 ms)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest ``scores`` (all of them when there are no more)."""
    return np.arange(len(scores)) if len(scores) <= k else np.argpartition(-scores, k)[:k]


def _log_pair_sum_lower(pts, w, beta: float, D: np.ndarray, k: int = _PEAK_NODES) -> float:
    """log of a lower bound on S = Σ_ij w_i w_j e^{β⟨x_i, D x_j⟩} (−inf when it finds none), from O(k²) pairs.

    The pairs of the ``k`` nodes of positive weight where the kernel can be largest as targets (by
    log w_i + β‖Dᵀx_i‖) and as sources (by log w_j + β‖D x_j‖) are positive terms of S (the kernel is
    positive); the pairs with a negative weight subtract at most Σ_{w_j<0} |w_j| (e^{β‖Dx_j‖} + e^{β‖Dᵀx_j‖})
    Σ_{w_i>0} w_i, and the other positive pairs are left out.  Everything is summed in log scale.
    """
    pos, neg = w > 0, w < 0
    if not np.any(pos):
        return -np.inf
    x, log_a = pts[pos], np.log(w[pos])
    rows = _top(log_a + beta * np.linalg.norm(x @ D, axis=1), k)        # x_iᵀD = (Dᵀx_i)ᵀ
    cols = _top(log_a + beta * np.linalg.norm(x @ D.T, axis=1), k)      # rows D x_j
    z, shift = _scaled_kernel_sums(x[rows], x[cols], w[pos][cols], beta, D)
    with np.errstate(divide="ignore"):
        lower = float(special.logsumexp(log_a[rows] + np.log(z[:, 0]) + shift))
    if not np.any(neg):
        return lower
    y, log_b = pts[neg], np.log(-w[neg])
    cross = float(np.log(np.sum(w[pos])) + special.logsumexp(np.concatenate(
        [log_b + beta * np.linalg.norm(y @ D.T, axis=1), log_b + beta * np.linalg.norm(y @ D, axis=1)])))
    return lower + float(np.log1p(-np.exp(cross - lower))) if cross < lower else -np.inf


def _overflows(pts, w, beta: float, D: np.ndarray) -> bool:
    """Whether the grid's pair sum (1/2β) Σ_ij w_i w_j e^{β⟨x_i, D x_j⟩}, and E itself, certainly exceed float64.

    Decided before the O(nodes²) sum, which at β‖D‖ = 800 ran for 15–50 s only to return inf: from the lower
    bound of :func:`_log_pair_sum_lower`, less the grid's error 2·tol·λ_0(β‖D‖)·(Σ|w|)² (λ_0(b) ≤ e^b), with a
    factor 2 to spare for the rounding of either sum.  Where the bound falls short (E near the float64 limit, or
    negative weights where the kernel is large) the full sum decides, as before.
    """
    b = beta * spectral_norm(D)
    with np.errstate(divide="ignore"):
        log_l1 = float(np.log(np.sum(np.abs(w))))
    if b + 2 * log_l1 - np.log(2 * beta) <= _LOG_FLOAT_MAX:      # |S| ≤ e^b (Σ|w|)²: surely finite
        return False
    lower = _log_pair_sum_lower(pts, w, beta, D)
    log_err = np.log(2 * _GRID_TOL) + b + 2 * log_l1
    if not lower > log_err:
        return False
    lower += float(np.log1p(-np.exp(log_err - lower)))
    return bool(lower - np.log(2 * beta) > _LOG_FLOAT_MAX + np.log(2.0))


def _grid_bound(beta: float, D: np.ndarray, d: int) -> float:
    """The kernel-tolerance error of the grid of :func:`_density_nodes`, per unit |mass|²."""
    b = beta * spectral_norm(D)
    return 2 * _GRID_TOL * funk_hecke_unscaled(b, 0, d)[0] if b > 0 else 0.0


def _grid_error(beta: float, D: np.ndarray, d: int, l1: float) -> float:
    """The bound :func:`_grid_bound` on the energy of atoms of total |weight| ``l1``: 2·tol·λ_0·l1²/(2β), by logs
    where λ_0 alone overflows (β‖D‖ = 720 made the bound of a finite E = 1.3e304 inf, and E "not determined")."""
    bound = _grid_bound(beta, D, d) * l1 ** 2 / (2 * beta)
    if np.isfinite(bound) or l1 == 0:
        return bound
    b = beta * spectral_norm(D)
    log_bound = np.log(2 * _GRID_TOL * l1 ** 2 / (2 * beta)) + b + np.log(funk_hecke(b, 0, d, scaled=True)[0])
    with np.errstate(over="ignore"):
        return float(np.exp(log_bound))


def _density_atoms(rho: Density, beta: float, D: np.ndarray):
    """Grid points and σ-weights·ρ that integrate ρ(x) e^{β⟨x,Dy⟩} exactly up to the kernel tolerance."""
    pts, sigma, values = _density_nodes(rho, beta, D)
    return pts, sigma * values, _grid_bound(beta, D, rho.d)


def _value_rounding(rho: Density, pts, sigma, w, beta: float, D: np.ndarray) -> float:
    """The part of the quadrature's error that comes from the rounding of ρ's nodal values, when D is
    indefinite: the kernel can then be e^{β‖D‖} between two nodes where ρ is tiny and large, and an absolute
    error δ of the tiny value is amplified by it.  (For D ⪰ 0, K_ij ≤ √(K_ii K_jj): no such amplification.)
    δ = 16ε·Σ_ℓ √(E_ℓ (2ℓ+1)/4π) (a bound on Σ|ρ̂_ℓm Y_ℓm|; on S¹ Σ|ρ̂_k|), and
    |ΔE| ≤ (δ/β) Σ_i σ_i Σ_j |w_j| K_ij, one more pass of the pair sum over the nodes ``pts`` (σ-weights
    ``sigma``, atoms ``w`` = σ·ρ)."""
    sym = 0.5 * (D + D.T)
    if np.linalg.eigvalsh(sym)[0] >= 0:
        return 0.0
    p = rho.power()
    ell = np.arange(rho.lmax + 1)
    size = (float(np.sum(np.sqrt(p * (2 * ell + 1) / (4 * np.pi)))) if rho.d == 3
            else float(np.sum(np.sqrt(p * np.where(ell == 0, 1.0, 2.0)))))
    delta = 16 * np.finfo(float).eps * size
    return float(delta * sigma @ kernel_sums(pts, pts, np.abs(w), beta, D) / beta)


def atoms(measure, beta: float, D: np.ndarray):
    """(points (n, d), weights (n,), quadrature error bound per unit |mass|²) of a measure."""
    if isinstance(measure, Particles):
        return measure.positions, measure.weights, 0.0
    if isinstance(measure, Density):
        return _density_atoms(measure, beta, D)
    if _is_fe(measure):
        pts, w = measure.atoms()
        return pts, w, float("nan")
    raise TypeError("`measure` must be a meanfield Particles, Density or FEDensity; "
                    f"got {type(measure).__name__}." + conversion_hint(measure))


# ----------------------------------------------------------------------------------------------
# the energy

def _multipliers(b: float, lmax: int, d: int) -> np.ndarray:
    """Funk–Hecke multipliers of e^{b⟨x,y⟩} for any real b: λ_ℓ(−|b|) = (−1)^ℓ λ_ℓ(|b|)."""
    lam = funk_hecke_unscaled(abs(b), lmax, d)
    if b < 0:
        lam = lam * (-1.0) ** np.arange(lmax + 1)
    return lam


def _exact_sum(lam, power, beta: float) -> EnergyEstimate:
    """(1/2β) Σ_ℓ λ_ℓ·power_ℓ, a Funk–Hecke (Parseval) sum, exact but for its rounding (warned about if it has no
    digit).  A degree without power contributes 0 whatever its λ_ℓ: beyond float64 (β ≳ 710) λ_ℓ = inf, and
    inf·0 made the energy of ZonalDensity.uniform NaN, warned about as "an indefinite D" with D = I."""
    with np.errstate(invalid="ignore"):
        terms = np.where(power != 0, lam * power, 0.0)
    return _undetermined_warning(EnergyEstimate(float(np.sum(terms)) / (2.0 * beta), _rounding(terms, beta),
                                                "exact"))


def _density_spectral(rho: Density, beta: float, c: float) -> EnergyEstimate:
    return _exact_sum(_multipliers(beta * c, rho.lmax, rho.d), rho.power() / (4 * np.pi if rho.d == 3 else 1.0),
                      beta)


def _zonal_estimate(rho: ZonalDensity, beta: float, D: np.ndarray, method: str) -> EnergyEstimate:
    """E of an axisymmetric density ρ = Σ g_ℓ P_ℓ(⟨x, e⟩) on any S^{d-1}.

    D = c·I: Funk–Hecke, ∫ e^{βc⟨x,y⟩} P_ℓ(⟨y,e⟩) dσ(y) = λ_ℓ P_ℓ(⟨x,e⟩) and ∫ P_ℓ² dσ = 1/N_ℓ(d), so
    E = (1/2β) Σ_ℓ λ_ℓ g_ℓ² / N_ℓ exactly.  Other D on S¹/S²: the same density as a band-limited
    :class:`Density` (exact: a degree-ℓ polynomial of ⟨x, e⟩ has band limit ℓ) and its quadrature.
    """
    from ..sphere._zonal import gegenbauer_norms

    if method in ("pairs", "spectral"):
        raise ValueError(f"`method`={method!r} is for Particles; densities take 'auto', 'exact' or 'quadrature'.")
    c = isotropic_scale(D)
    if c is not None and method != "quadrature":
        return _exact_sum(_multipliers(beta * c, rho.lmax, rho.d), rho.coeffs ** 2 * gegenbauer_norms(rho.lmax, rho.d),
                          beta)
    if rho.d not in (2, 3):
        raise ValueError(f"the energy of a ZonalDensity on S^{rho.d - 1} needs D = c·I (the kernel is then zonal "
                         f"too); got a D that is not a multiple of the identity (or method={method!r}). "
                         "Sample it (meanfield.sample_density) and use Particles.")
    if method == "exact":
        raise ValueError("`method`='exact' needs D = c·I; use 'quadrature' for a general D.")
    as_density = Density.from_function(rho.evaluate, rho.lmax, d=rho.d)
    return energy_estimate(as_density, beta, D, method="quadrature")


def _particles_spectral(p: Particles, beta: float, c: float, lmax, tol):
    b = beta * c
    d = p.d
    if lmax is None:
        lmax = max(1, kernel_bandlimit(abs(b), tol, d))
    lmax = nonneg_int("lmax", lmax, minimum=1)
    lam = _multipliers(b, lmax, d)
    if d == 3:
        mu = sh.adjoint_synthesis_points(p.weights, p.positions, lmax, epsilon=_NUFFT_EPS)
        power = 4 * np.pi * sh.degree_power(mu, lmax)
        nufft = 2 * _NUFFT_EPS * abs(lam[0]) * float(power.sum())
    else:
        phi = np.arctan2(p.positions[:, 1], p.positions[:, 0])
        ck = circ.circle_adjoint_points(p.weights, phi, lmax)
        k = np.arange(lmax + 1)
        factor = np.where(k == 0, 1.0, 2.0)
        power = np.abs(ck) ** 2 * factor
        # the error of each c_k: rounding, and the non-uniform FFT's beyond 2¹⁶ table entries (|φ_j| ≤ π from atan2)
        eps_c = circ.circle_adjoint_error(len(phi), lmax) * float(np.sum(np.abs(p.weights)))
        nufft = float(np.sum(np.abs(lam) * factor * (2 * np.abs(ck) + eps_c) * eps_c))     # |c + δ|² − |c|²
    value = float(lam @ power) / (2.0 * beta)
    lam0 = funk_hecke_unscaled(abs(b), 0, d)[0]
    bound = (lam0 * kernel_truncation_error(abs(b), lmax, d) + nufft) / (2.0 * beta) + _rounding(lam * power, beta)
    return EnergyEstimate(value, bound, "spectral")


def _cancels(est: EnergyEstimate) -> bool:
    """The spectral sum lost its accuracy to cancellation: "auto" uses a sum of positive terms instead."""
    return not est.value > 0 or est.error_bound > _AUTO_ROUNDING * est.value


def _undetermined_warning(est: EnergyEstimate) -> EnergyEstimate:
    """``est``, with a warning when its bound leaves no correct digit (an indefinite D and a concentrated
    density: the alternating spectral sum cancels, and the quadrature amplifies the rounding of ρ's values)."""
    if np.isinf(est.value):
        # an overflow (energy() says so), not a loss of digits: this warning blamed "an indefinite D" for a positive
        # definite one at β‖D‖ ≳ 709
        return est
    if not est.error_bound < abs(est.value):
        if est.method == "spectral":
            why = ("the truncated spectral sum of the particles: below the kernel's band limit (raise `lmax`), or, with "
                   "an indefinite D (e.g. c·I, c < 0), an alternating sum that cancels. Use method='pairs'")
        else:
            why = ("with an indefinite D (e.g. c·I, c < 0) the kernel is largest where the density is smallest, and the "
                   "rounding of the density's small values is amplified by it. Evaluate it on particles sampled from "
                   "the density (method='pairs'), or with a smaller β‖D‖")
        warn(f"E_β,D is not determined in float64 (value {est.value:.6g}, error bound "
             f"{est.error_bound:.3g}): {why}.")
    return est


def energy_estimate(measure, beta, D=None, *, method: str = "auto", lmax: int | None = None,
                    tol: float = 1e-13) -> EnergyEstimate:
    """E_{β,D}(μ) with an error bound.

    Parameters
    ----------
    measure : Particles, Density, ZonalDensity or FEDensity
        μ on S^{d-1} (only directions enter), as in :func:`energy`.
    beta : float
        Inverse temperature β > 0.
    D : None, float, array_like of shape (d,) (a diagonal) or (d, d)
        Interaction matrix (None: the identity; a scalar c: c·I).
    method : {"auto", "exact", "pairs", "spectral", "quadrature"}
        As in :func:`energy`: "pairs" and "spectral" for Particles, "exact" and "quadrature" for
        densities.
    lmax : int, optional
        Band limit ≥ 1 of the spectral particle sum (default: from ``tol``); checked on every path.
    tol : float
        Kernel truncation tolerance of the spectral particle sum, in (0, 1); checked on every path.

    Returns
    -------
    EnergyEstimate
        ``value`` (dimensionless), ``error_bound`` (same units; 0.0 for the closed forms, an a-posteriori estimate
        for FE quadrature (see :class:`EnergyEstimate`), inf with a value inf: beyond float64) and the ``method``
        used ("exact", "closed-form", "pairs", "spectral", "quadrature").

    Raises
    ------
    TypeError
        ``measure`` is not one of the types above.
    ValueError
        An invalid β, D, ``tol`` or ``lmax``, or a ``method`` that does not apply to the measure (e.g.
        "spectral" with a D ≠ c·I or d ∉ {2, 3}, "exact" with a general D).
    InsufficientMemoryError
        The pair sum over the particles would not fit in memory.

    Warns
    -----
    MeanfieldWarning
        The pair sum over the particles is expected to take more than a minute (with its estimate); the
        value has no correct digit (its bound exceeds it).
    """
    # tol and lmax checked on every path, as documented (lmax=-1 or "a", tol=2 passed unseen where unused)
    tol = open_fraction("tol", tol)
    if lmax is not None:
        lmax = nonneg_int("lmax", lmax, minimum=1)
    if isinstance(measure, ZonalDensity):
        return _zonal_estimate(measure, check_beta(beta), check_D(D, measure.d), choice("method", method, METHODS))
    d = _measure_dim(measure, "Particles, Density, ZonalDensity or FEDensity")
    beta = check_beta(beta)
    D = check_D(D, d)
    choice("method", method, METHODS)
    c = isotropic_scale(D)

    if isinstance(measure, Particles):
        if method in ("exact", "quadrature"):
            raise ValueError(f"`method`={method!r} is for densities; Particles take 'auto', 'pairs' or 'spectral'.")
        spectral_ok = c is not None and d in (2, 3)
        if method == "spectral" and not spectral_ok:
            raise ValueError("`method`='spectral' needs D = c·I and d ∈ {2, 3}; "
                             f"got d={d} and {'an isotropic' if c is not None else 'a non-isotropic'} D. "
                             "Use method='pairs'.")
        if method == "spectral" or (method == "auto" and spectral_ok and measure.n > _SPECTRAL_MIN_N):
            est = _particles_spectral(measure, beta, c, lmax, tol)
            if method == "spectral":
                return _undetermined_warning(est)
            if not _cancels(est):
                return est
        check_pair_work("measure", measure.n, d, "the energy's pair sum", advice=(
            " With D = c·I on S² or S¹, method='spectral' is O(N)." if spectral_ok and method == "pairs" else ""))
        value = pair_energy(measure.positions, measure.weights, beta, D)
        return EnergyEstimate(value, pair_rounding(value, measure.n, d, beta, D), "pairs")

    if method in ("pairs", "spectral"):         # an FE density was offered 'exact', which it then refused
        takes = ("densities take 'auto', 'exact' or 'quadrature'" if isinstance(measure, Density) else
                 "FE densities take 'auto' or 'quadrature'")
        raise ValueError(f"`method`={method!r} is for Particles; {takes}.")
    if isinstance(measure, Density):
        if method in ("auto", "exact"):
            if not np.any(measure.coeffs[1:]):
                return EnergyEstimate(measure.mass() ** 2 * uniform_energy(beta, D, d), 0.0, "closed-form")
            if c is not None:
                return _density_spectral(measure, beta, c)
            if method == "exact":
                raise ValueError("`method`='exact' needs D = c·I (or the uniform density); use 'quadrature'.")
        pts, sigma, values = _density_nodes(measure, beta, D)        # the grid and the synthesis, once
        w = sigma * values
        if _overflows(pts, w, beta, D):          # inf, as the pair sum would return, without it
            return EnergyEstimate(float("inf"), float("inf"), "quadrature")
        l1 = float(np.sum(np.abs(w)))
        bound = _grid_error(beta, D, d, l1) + _value_rounding(measure, pts, sigma, w, beta, D)
        return _undetermined_warning(EnergyEstimate(pair_energy(pts, w, beta, D), bound, "quadrature"))
    # FE density: its quadrature nodes as atoms (direct pair sum), or through the truncated kernel
    if method == "exact":
        raise ValueError("`method`='exact' is not available for an FE density; use 'auto' or 'quadrature'.")
    from ._fem import fe_energy_estimate

    # the bound was NaN: now the a-posteriori estimate of the quadrature's error against a rule of degree q + 8
    direct = not (method == "auto" and len(measure.space.weights) > _FE_FACTOR_MIN)
    return EnergyEstimate(*fe_energy_estimate(measure, beta, D, direct), "quadrature")   # warns if undetermined


def energy(measure, beta, D=None, *, method: str = "auto", lmax: int | None = None, tol: float = 1e-13) -> float:
    """The interaction energy E_{β,D}(μ) = (1/2β) ∬ e^{β⟨x, D y⟩} dμ(x) dμ(y).

    Parameters
    ----------
    measure : Particles, Density, ZonalDensity or FEDensity
        μ on S^{d-1}.  Only directions enter (radii are ignored).  A density need not have unit
        mass: E is quadratic in μ.  A ZonalDensity on S^{d-1}, d ≥ 4, needs D = c·I.
    beta : float
        Inverse temperature β > 0.
    D : None, float, array_like of shape (d,) (a diagonal) or (d, d)
        Interaction matrix D = QᵀK (None: the identity; a scalar c: c·I).  Need not be symmetric.
    method : {"auto", "exact", "pairs", "spectral", "quadrature"}
        "auto" picks: uniform density → closed form; Density with D = c·I → Parseval ("exact");
        Density with general D → grid quadrature; Particles → the direct pair sum, or the O(N)
        spectral sum on S²/S¹ for D = c·I and more than 4000 particles, unless that sum cancels
        (c < 0 on a concentrated measure: its rounding bound above 1e-10 of its value), where the pair
        sum of positive terms is used.  The bounds of :func:`energy_estimate` for the spectral sums and the
        quadrature include the rounding of their sums (and the spectral ones the 2e-13 relative accuracy of the
        multipliers λ_ℓ), and so does the pair sum's (whose exponents' rounding grows with β‖D‖: a few ulps at
        β‖D‖ ≈ 1, 62 ulps at β = 200); the closed forms report 0 (exact to rounding); an energy whose
        bound exceeds its value (a concentrated density with an indefinite D at
        large β) is warned about.  An energy beyond float64 is returned as inf with a warning; for a density
        with a general D a lower bound from the grid pairs near the kernel's peak shows it before the
        quadrature's O(nodes²) pair sum (β‖D‖ = 800: 0.1 s instead of 15–50 s).
    lmax : int, optional
        Band limit of the spectral particle sum (default: from ``tol``).
    tol : float
        Kernel truncation tolerance of the spectral particle sum, in (0, 1).

    Returns
    -------
    float
        E_{β,D}(μ) (dimensionless).  :func:`energy_estimate` also returns the error bound.

    Examples
    --------
    >>> import meanfield as mf, numpy as np
    >>> round(mf.energy(mf.Particles([[0, 0, 1.0]]), 2.0), 6)       # a Dirac: e^β/(2β)
    1.847264
    """
    value = float(energy_estimate(measure, beta, D, method=method, lmax=lmax, tol=tol).value)
    if np.isinf(value):
        warn(f"E_(β,D) exceeds the float64 range at beta={beta!r} (it grows like e^β): returned inf.")
    return value


# ----------------------------------------------------------------------------------------------
# first variation and its spherical gradient

def _targets(measure, points, d):
    if points is None:
        if isinstance(measure, Particles):
            return measure.positions
        if _is_fe(measure):
            return measure.space.nodes
        raise ValueError("`points` is required for a Density or ZonalDensity (the first variation is a function on "
                         "S^{d-1}).")
    p = real_array("points", points, allow_bool=False)    # complex (imaginary part dropped) and True/False passed
    if p.ndim < 1 or p.shape[-1] != d:
        raise ValueError(f"`points` must have shape (..., {d}); got shape {p.shape}.")
    if not np.all(np.isfinite(p)):
        raise ValueError("`points` must be finite; it contains NaN or inf.")
    nrm = np.linalg.norm(p.reshape(-1, d), axis=1)
    if nrm.size and np.max(np.abs(nrm - 1)) > 1e-8:     # δE/δμ is a function on the sphere
        raise ValueError(f"`points` must be unit vectors (max | ‖x‖ − 1 | = {np.max(np.abs(nrm - 1)):.3g}).")
    return p


def _check_particle_sums(measure, m: int, passes: int, what: str) -> None:
    """:func:`check_pair_work` of sums over the particles of ``measure`` at m targets (a density's grid is bounded
    by :func:`_check_grid_work`, an FE density's nodes by its mesh)."""
    if isinstance(measure, Particles):
        check_pair_work("measure", measure.n, measure.d, what, m=m, passes=passes)


def first_variation(measure, beta, D=None, points=None) -> np.ndarray:
    """δE/δμ(x) = (1/2β) ∫ (e^{β⟨x,Dy⟩} + e^{β⟨y,Dx⟩}) dμ(y)  (= (1/β)∫ e^{β⟨x,Dy⟩}dμ(y) for D = Dᵀ).

    Parameters
    ----------
    measure : Particles, Density, ZonalDensity or FEDensity
        μ (a ZonalDensity needs D = c·I: δE/δμ is then zonal, computed exactly by Funk–Hecke).
    beta : float
        β > 0.
    D : None, float, array_like of shape (d,) (a diagonal) or (d, d)
        Interaction matrix (None: identity).
    points : array_like, shape (..., d), optional
        Unit vectors where to evaluate (default: the particle positions, or the FE nodes; required for a
        Density or ZonalDensity).

    Returns
    -------
    ndarray, shape (...)
        The first variation at ``points``; along μ, ∫ δE/δμ dμ = 2E.
    """
    if isinstance(measure, ZonalDensity):
        return _zonal_first_variation(measure, beta, D, points)
    d = _measure_dim(measure)
    beta = check_beta(beta)
    D = check_D(D, d)
    x = _targets(measure, points, d)
    y, a, _ = atoms(measure, beta, D)
    flat = x.reshape(-1, d)
    symmetric = np.array_equal(D, D.T)
    _check_particle_sums(measure, len(flat), 1 if symmetric else 2, "the first variation")
    z = kernel_sums(flat, y, a, beta, D)
    if not symmetric:
        z = 0.5 * (z + kernel_sums(flat, y, a, beta, D.T))
    return (z / beta).reshape(x.shape[:-1])


def first_variation_gradient(measure, beta, D=None, points=None) -> np.ndarray:
    """The spherical gradient ∇_S δE/δμ at unit ``points``: P_x ∫ e^{β⟨x,Dy⟩} D y dμ(y) for D = Dᵀ.

    For symmetric D this is the USA velocity with Q = I, K = V = D: the Wasserstein gradient-ascent
    field of E (:doc:`model`, the gradient-flow case).  A non-symmetric D gives ½P_x∫(e^{β⟨x,Dy⟩}Dy + e^{β⟨x,Dᵀy⟩}Dᵀy)dμ.

    Parameters
    ----------
    measure : Particles, Density, ZonalDensity or FEDensity
        μ on S^{d-1} (a ZonalDensity needs D = c·I).
    beta : float
        Inverse temperature β > 0.
    D : None, float, array_like of shape (d,) (a diagonal) or (d, d)
        Interaction matrix (None: identity).
    points : array_like, shape (..., d), optional
        Unit vectors where to evaluate (default: the particle positions, or the FE nodes; required for
        a Density or ZonalDensity).

    Returns
    -------
    ndarray, shape (..., d)
        Tangent vectors at ``points`` (ambient components; per radian of arc on the unit sphere).

    Raises
    ------
    ValueError
        ``points`` missing for a Density, not of shape (..., d), not finite or not unit vectors; an
        invalid β or D.
    TypeError
        ``measure`` is not one of the types above.
    """
    if isinstance(measure, ZonalDensity):
        return _zonal_first_variation(measure, beta, D, points, gradient=True)
    d = _measure_dim(measure)
    x = _targets(measure, points, d)
    flat = x.reshape(-1, d)
    return tangent_project(flat, first_variation_moment(measure, beta, D, flat)).reshape(x.shape)


def _zonal_first_variation(rho: ZonalDensity, beta, D, points, gradient: bool = False) -> np.ndarray:
    """δE/δμ (or its spherical gradient) of an axisymmetric density on any S^{d-1}, D = c·I: by Funk–Hecke it is
    zonal, h(⟨x, e⟩) = (1/β) Σ_ℓ λ_ℓ(βc) g_ℓ P_ℓ(⟨x, e⟩), of the density's own degree (exact), and
    ∇_S h(⟨x, e⟩) = h'(t)(e − t x) with P_ℓ' = ℓ(ℓ + d − 2)/(d − 1) P_{ℓ−1}^{(d+2)}.  energy() and stationary() took a
    ZonalDensity, and these raised "`measure` must be a meanfield Particles, Density or FEDensity"."""
    from ..sphere import _zonal as zon

    beta = check_beta(beta)
    c = isotropic_scale(check_D(D, rho.d))
    if c is None:
        raise ValueError(f"`D` must be c·I for the first variation of a ZonalDensity on S^{rho.d - 1} (the kernel is "
                         "then zonal, and so is δE/δμ); got a D that is not a multiple of the identity.")
    x = _targets(rho, points, rho.d)
    flat = x.reshape(-1, rho.d)
    t = np.clip(flat @ rho.axis, -1.0, 1.0)
    with np.errstate(over="ignore", invalid="ignore"):     # beyond float64 (β|c| ≳ 700): inf, as the energy
        h = _multipliers(beta * c, rho.lmax, rho.d) * rho.coeffs / beta
    if not gradient:
        return ZonalDensity(h, rho.lmax, rho.d, rho.axis).evaluate_profile(t).reshape(x.shape[:-1])
    if rho.lmax == 0:
        return np.zeros_like(x)
    ell = np.arange(1, rho.lmax + 1)[:, None]
    slope = h[1:] @ (ell * (ell + rho.d - 2) / (rho.d - 1) * zon.gegenbauer(rho.lmax - 1, t, rho.d + 2))
    return (slope[:, None] * (rho.axis[None, :] - t[:, None] * flat)).reshape(x.shape)


def first_variation_moment(measure, beta, D, points) -> np.ndarray:
    """(m, d): the ambient vector ∫ e^{β⟨x,Dy⟩} D y dμ(y) (symmetrized for a non-symmetric D) at the unit
    ``points`` (m, d), whose tangential part is :func:`first_variation_gradient`."""
    d = _measure_dim(measure)
    beta = check_beta(beta)
    D = check_D(D, d)
    y, a, _ = atoms(measure, beta, D)
    symmetric = np.array_equal(D, D.T)
    _check_particle_sums(measure, len(points), 1 if symmetric else 2, "the gradient of the first variation")
    _, m = kernel_sums(points, y, a, beta, D, moment=True)
    if not symmetric:
        _, m2 = kernel_sums(points, y, a, beta, D.T, moment=True)
        m = 0.5 * (m + m2)
    return m


# the spectral velocity's scale e^{βc} stays within float64 with room for its squares below this (as _NO_SHIFT)
_SPECTRAL_DISSIPATION_MAX_BC = 300.0


def _spectral_dissipation_applies(measure, beta, D) -> bool:
    """The O(N) dissipation (of the gradient and of the softmax flow) and stationarity test apply: particles on S²,
    more than the energy's spectral threshold, D = c·I, c > 0 (the kernel of backend="particles-sh"), βc ≤ 300."""
    if not (isinstance(measure, Particles) and measure.d == 3 and measure.n > _SPECTRAL_MIN_N):
        return False
    c = isotropic_scale(D)
    return c is not None and c > 0 and beta * c <= _SPECTRAL_DISSIPATION_MAX_BC
