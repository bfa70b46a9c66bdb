"""Shared pieces of the energy module: input checks, the kernel e^{β⟨x, Dy⟩}, and its sums over atoms.

Every measure the energy module handles is reduced to *atoms* (points y_k, weights a_k) for which
∫ f dμ = Σ_k a_k f(y_k) is exact (Particles) or exact to a stated quadrature error (a band-limited
Density on a grid fine enough for the kernel, an FE density on its quadrature nodes).  The sums

    Z(x) = Σ_k a_k e^{β⟨x, D y_k⟩},      M(x) = Σ_k a_k e^{β⟨x, D y_k⟩} D y_k

at target points x are evaluated in chunks (memory O(chunk · n_atoms)); each target's exponents are shifted by
their largest once it exceeds 300 in magnitude, so nothing overflows before the final scaling.  Sums over
particles are O(N²): :func:`check_pair_work` refuses them up front where their memory would not fit and warns,
with the expected time, where they would run for more than a minute.
"""
from __future__ import annotations

import contextlib
import contextvars
import numbers

import numpy as np

from .._errors import warn
from .._validate import _as_float, choice, dimension, no_bools, positive_float

_CHUNK_ELEMENTS = 2 ** 21  # ~16 MB of float64 kernel values per chunk
_NO_SHIFT = 300.0          # exponents up to this need no overflow shift


# ----------------------------------------------------------------------------------------------
# input checks (messages name the parameter, the allowed range and the value)

_HUGE = 1e100   # β and the entries of D beyond this: the logits β⟨x, Dy⟩ and their differences leave float64


def check_beta(beta) -> float:
    """β must be finite and > 0 (the energy has the prefactor 1/(2β)), and ≤ 1e100."""
    beta = positive_float("beta", beta)
    if beta > _HUGE:
        raise ValueError(f"`beta` must be ≤ {_HUGE:g} (the logits β⟨x, Dy⟩ and their differences must fit in "
                         f"float64); got beta={beta!r}.")
    return beta


def dimension_for(D, d) -> int:
    """``d`` checked, or for d=None the size of a D given as d numbers or a (d, d) array, else 3 (as the
    ``[energy]`` table of a configuration file reads it: a 2 × 2 D without d was refused as "not (3, 3)")."""
    if d is not None:
        return dimension(d)
    try:
        shape = np.shape(D) if D is not None and not isinstance(D, (str, bytes)) else ()
    except ValueError:          # ragged: check_D names it
        shape = ()
    if len(shape) in (1, 2) and shape[0] >= 2 and shape == shape[:1] * len(shape):
        return int(shape[0])
    return 3


def check_D(D, d: int, where: str | None = None) -> np.ndarray:
    """The interaction matrix as a (d, d) float array: None → I, a real scalar c → c·I, d numbers → diag.

    ``where``: what d is, for the message (default: "the measure's dimension d")."""
    d = dimension(d)
    if D is None:
        return np.eye(d)
    if isinstance(D, numbers.Real) and not isinstance(D, bool):
        c = _as_float(D)        # np.float32(2): abs(D) > 1e100 cast 1e100 to float32 ("overflow encountered in cast")
        if not np.isfinite(c) or abs(c) > _HUGE:
            raise ValueError(f"`D` must be finite, of magnitude ≤ {_HUGE:g}; got D={D!r}.")
        return c * np.eye(d)
    allowed = (f"`D` must be None, a real scalar, {d} numbers (a diagonal) or an array of shape ({d}, {d}) "
               f"({where or 'the measure' + chr(39) + 's dimension d'}={d})")
    no_bools("D", D)                    # [true, false] in a configuration was read as diag(1, 0)
    # ragged nested lists (np.iscomplexobj(D) raised numpy's error), strings, objects
    try:
        a = np.asarray(D)
        complex_ = np.iscomplexobj(a)
        a = a if complex_ else np.asarray(a, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{allowed}; got {D!r}, which is not a rectangular array of real numbers.") from None
    if complex_:                        # numpy would drop the imaginary part with only a ComplexWarning
        raise ValueError(f"{allowed}; got a complex D.")
    if a.shape == (d,):
        a = np.diag(a)                  # the diagonal, as in the [energy] table of a configuration file
    if a.shape != (d, d):
        raise ValueError(f"{allowed}; got shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise ValueError("`D` must be finite; it contains NaN or inf.")
    if a.size and np.max(np.abs(a)) > _HUGE:
        raise ValueError(f"`D` must have entries ≤ {_HUGE:g} in magnitude (the logits β⟨x, Dy⟩ must fit in float64); "
                         f"got max |D_ij| = {np.max(np.abs(a)):.3g}.")
    return a.copy()


def check_symmetric(D: np.ndarray, purpose: str) -> np.ndarray:
    """Refuse a non-symmetric D where the gradient-flow structure (or an eigen-decomposition) is needed."""
    asym = float(np.max(np.abs(D - D.T)))
    if asym > 1e-12 * max(1.0, float(np.max(np.abs(D)))):
        raise ValueError(f"`D` must be symmetric for {purpose}; got max|D − Dᵀ| = {asym:.3g}. "
                         "(E depends on D only through D and Dᵀ jointly; the gradient-flow and "
                         "extremal theory need D = Dᵀ.)")
    return 0.5 * (D + D.T)


def isotropic_scale(D: np.ndarray) -> float | None:
    """c when D = c·I (to 1e-14 relative; c may be ≤ 0), else None."""
    c = float(D[0, 0])
    scale = max(abs(c), float(np.max(np.abs(D))), 1e-300)
    if np.max(np.abs(D - c * np.eye(len(D)))) <= 1e-14 * scale:
        return c
    return None


def variation_bandlimit(b: float, d: int, tol: float = 1e-15) -> int:
    """The degree L ≥ 1 at which the kernel e^{b⟨x,y⟩} is truncated when its variation e^{b⟨x,y⟩} − 1 is what matters
    (the minimizers work with it): its tail beyond L below ``tol`` of the variation, not of λ_0.

    The variation is (λ_0 − 1)/λ_0 ≈ b²/(2d) of the kernel for small b (E_σ⟨x,y⟩² = 1/d).  Truncated at ``tol``·λ_0,
    its degree 2 (≈ b²/(2d), which sets the minimizer's second moments) fell below the tolerance from b ≈ 4e-8: the
    truncation then stopped at degree 1, and minimize_energy on S² returned second moments 0.34, 0.33, 0.34 for
    D = diag(0.6, 1, 1.4) at β = 3e-8 instead of 0.648, 0.233, 0.119 (and refused β = 1e-8 on S¹ as singular)."""
    from ..sphere._funk_hecke import kernel_bandlimit

    b = abs(float(b))
    if b == 0.0:
        return 1
    relative = min(1.0, b * b / (2.0 * d))
    return max(1, kernel_bandlimit(b, max(tol * relative, 1e-300), d))


def spectral_norm(D: np.ndarray) -> float:
    """‖D‖₂ = max over unit x, y of ⟨x, D y⟩ (the largest singular value)."""
    return float(np.linalg.norm(D, 2)) if D.size else 0.0


# ----------------------------------------------------------------------------------------------
# kernel sums

def kernel_sums(targets, points, weights, beta: float, D: np.ndarray, *, moment: bool = False,
                chunk: int | None = None):
    """Z(x) = Σ_k a_k e^{β⟨x, D y_k⟩} and optionally M(x) = Σ_k a_k e^{β⟨x, D y_k⟩} D y_k.

    Parameters
    ----------
    targets : ndarray, shape (m, d)
        Points x (need not be unit vectors).
    points : ndarray, shape (n, d)
        Atom positions y_k.
    weights : ndarray, shape (n,)
        Atom weights a_k (any real numbers).
    beta : float
        β > 0.
    D : ndarray, shape (d, d)
        The interaction matrix.
    moment : bool
        Also return M.

    Returns
    -------
    Z : ndarray, shape (m,)
    M : ndarray, shape (m, d)  (only with ``moment=True``)
    """
    out, shift = _scaled_kernel_sums(targets, points, weights, beta, D, moment, chunk)
    _unscale(out, shift)
    if moment:
        return out[:, 0], out[:, 1:]
    return out[:, 0]


def _chunk_rows(m: int, n: int) -> int:
    """Target rows per block of :func:`_scaled_kernel_sums`: ~2²¹ kernel values (16 MB), at least one row."""
    return max(1, min(m, _CHUNK_ELEMENTS // max(n, 1)))


def _scaled_kernel_sums(targets, points, weights, beta, D, moment=False, chunk=None):
    """(sums (m, 1 or 1 + d), shifts (m,)): :func:`kernel_sums` of each target divided by e^{shift}, the shift
    its largest exponent β⟨x, D y_k⟩ (0 when that is within ±300, where e^0 = 1 is exact): the largest term of a
    row is 1, so a sum neither overflows nor underflows unless its own value does."""
    x = np.asarray(targets, dtype=float)
    y = np.asarray(points, dtype=float)
    a = np.asarray(weights, dtype=float)
    m, n = x.shape[0], y.shape[0]
    dy = y @ D.T                                       # rows D y_k
    rhs = np.concatenate([a[:, None], a[:, None] * dy], axis=1) if moment else a[:, None]
    bdyT = np.ascontiguousarray(beta * dy.T)           # (d, n)
    chunk = _chunk_rows(m, n) if chunk is None else chunk
    out, shift = np.empty((m, rhs.shape[1])), np.zeros(m)
    for s in range(0, m, chunk):                       # chunks of targets, not particles
        e = x[s:s + chunk] @ bdyT
        top = e.max(axis=1) if n else np.zeros(len(e))
        rows = np.where(np.abs(top) > _NO_SHIFT, top, 0.0)
        e -= rows[:, None]
        np.exp(e, out=e)
        out[s:s + chunk] = e @ rhs
        shift[s:s + chunk] = rows
    return out, shift


_LOG_FLOAT_MAX = float(np.log(np.finfo(float).max))   # 709.78


def _unscale(out, shift) -> None:
    """out *= e^{shift} row-wise, in place.  A row whose e^{shift} alone overflows (shift > 709.78) is multiplied by
    e^{shift/2} twice: its scaled sum is at most Σ|a_k| (1/n for particles), and the product is finite whenever the
    row's value is (e^{shift} → inf made Z = inf at β‖D‖ = 720 for a Z of 10³⁰³)."""
    big = shift > _LOG_FLOAT_MAX
    out[~big] *= np.exp(shift[~big])[:, None]
    if np.any(big):
        half = np.exp(0.5 * shift[big])[:, None]
        with np.errstate(over="ignore"):
            out[big] = out[big] * half * half


def pair_energy(points, weights, beta: float, D: np.ndarray) -> float:
    """(1/2β) Σ_jk a_j a_k e^{β⟨y_j, D y_k⟩}, chunked, any d (the direct O(n²) sum)."""
    a = np.asarray(weights, dtype=float)
    z, shift = _scaled_kernel_sums(points, points, a, beta, D)
    with np.errstate(over="ignore", invalid="ignore"):
        # divided by 2β, not multiplied by e^{−log 2β}: that carries the rounding of log 2β, |log 2β|·ε relative
        # (3e-14 at β = 1e-300, beyond the quadrature's stated bound; the pair sum is exact to a few ulps)
        value = float(a @ (z[:, 0] * (np.exp(shift) / (2.0 * beta))))   # (÷2β last overflowed a finite E, β > ½)
    if np.isfinite(value):
        return value
    # e^{shift}/(2β) of a row overflowed although the row, weighted by a_i ~ 1/n, may not (β‖D‖ = 720 returned inf
    # for E = 10³⁰⁴), or rows of both signs did (inf − inf): scale by the largest shift, which is applied in halves
    top = float(np.max(shift))
    with np.errstate(over="ignore"):        # an E beyond float64 is inf, and energy() says so in its own words
        half = np.exp(0.5 * (top - np.log(2.0 * beta)))
        return float(float(a @ (z[:, 0] * np.exp(shift - top))) * half * half)


def scaled_kernel(exponent, shift: float, variation: bool = False) -> np.ndarray:
    """e^{exponent − shift}, or with ``variation`` the kernel's variation about its constant part,
    e^{−shift}(e^{exponent} − 1), without cancellation.

    At small β the kernel e^{β⟨x,Dy⟩} is 1 + O(β) and its minimizers are told apart at O(β²): e^{e − shift}
    rounds that to 1e-16 of 1 (β = 1e-4: eight digits left, and the minimizer's pull, relative to the
    level, flattened it).  expm1 where |exponent| < 1; the difference of exponentials elsewhere, where it does not
    cancel and e^{exponent} alone could overflow.

    Parameters
    ----------
    exponent : ndarray
        β⟨x, D y⟩ (dimensionless).
    shift : float
        The scaling exponent (β‖D‖₂), so that the values are ≤ 1.
    variation : bool
        Subtract the constant part e^{−shift}.

    Returns
    -------
    ndarray, the shape of ``exponent``
    """
    e = np.asarray(exponent, dtype=float)
    if not variation:
        return np.exp(e - shift)
    small = np.abs(e) < 1.0
    with np.errstate(under="ignore"):
        return np.where(small, np.exp(-shift) * np.expm1(np.where(small, e, 0.0)), np.exp(e - shift) - np.exp(-shift))


def scaled_mean_variation_s2(b: float) -> float:
    """The degree-0 Funk–Hecke multiplier of :func:`scaled_kernel`'s variation on S²: e^{−b}(λ_0(b) − 1) =
    e^{−b}(sinh(b)/b − 1), without cancellation (Σ_{k≥1} b^{2k}/(2k+1)! for b < 1)."""
    if b >= 1.0:
        return float(-np.expm1(-2.0 * b) / (2.0 * b) - np.exp(-b))
    k = np.arange(1, 13)
    from scipy.special import gammaln

    terms = np.exp(2 * k * np.log(b) - gammaln(2 * k + 2)) if b > 0 else np.zeros(1)
    return float(np.exp(-b) * np.sum(terms[::-1]))


def tangent_project(x, v):
    """P_x v = v − ⟨x, v⟩ x row-wise for unit x (shapes (m, d))."""
    return v - np.einsum("ij,ij->i", x, v)[:, None] * x


# ----------------------------------------------------------------------------------------------
# the cost of the direct sums over particles, checked before they start

# one target–atom pair of kernel_sums, measured on 2 idle cores: 3.2 ns at d = 3, 6–8 ns at d = 64, 12–18 ns at
# d = 256 (2.5–3× that while other work shared the cores): the estimate is the idle, lower figure
_NS_PER_PAIR, _NS_PER_PAIR_PER_DIM = 3.0, 0.05
_SLOW_SECONDS = 60.0           # expected work beyond this is warned about, with its figure
_ANNOUNCED = contextvars.ContextVar("meanfield_pair_work_announced", default=False)


def pair_seconds(pairs: float, d: int) -> float:
    """The expected time of direct kernel sums over ``pairs`` target–atom pairs in dimension d (the measured rate)."""
    return pairs * (_NS_PER_PAIR + _NS_PER_PAIR_PER_DIM * d) * 1e-9


def kernel_sum_bytes(m: int, n: int, d: int) -> float:
    """Peak memory of :func:`kernel_sums` with the moment, m targets and n atoms: one block of kernel values
    (:func:`_chunk_rows`), D y_k, its transpose and the right-hand side (n·(3d + 2)), the sums (m·(d + 2))."""
    return 8.0 * (_chunk_rows(m, n) * n + (3 * d + 2) * n + (d + 2) * m)


@contextlib.contextmanager
def announced():
    """Within: no warning about slow direct sums (a caller warned once about all of them, e.g. a flow's)."""
    token = _ANNOUNCED.set(True)
    try:
        yield
    finally:
        _ANNOUNCED.reset(token)


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.2g} {unit}"
    return f"{seconds:.2g} s"


def check_pair_work(name: str, n: int, d: int, what: str, *, m: int | None = None, passes: float = 1.0,
                    extra_bytes_per_atom: float = 0.0, advice: str = "") -> None:
    """Before direct sums over the N = ``n`` particles of the argument ``name``: refuse them when their memory
    would not fit (:class:`~meanfield.InsufficientMemoryError`, with the largest N that fits), and warn, with the
    expected time, when they would run longer than a minute.

    Parameters
    ----------
    name : str
        The argument that holds the particles, named in the messages.
    n, d : int
        The particles and their dimension.
    what : str
        The work, for the messages ("the energy's pair sum", ...).
    m : int, optional
        Targets of each sum (default n: every particle).
    passes : float
        Sums of m·n pairs the work takes.
    extra_bytes_per_atom : float
        Memory per particle held besides a sum's (an integrator's stages).
    advice : str
        An alternative, appended to the messages.
    """
    m = n if m is None else m
    _check_pair_memory(name, n, d, m, what, extra_bytes_per_atom, advice)
    seconds = passes * pair_seconds(float(m) * n, d)
    if seconds <= _SLOW_SECONDS or _ANNOUNCED.get():
        return
    fits = n * (np.sqrt(_SLOW_SECONDS / seconds) if m == n else _SLOW_SECONDS / seconds)
    rate = 1.0 / pair_seconds(1.0, d)
    sums = f"{passes:.3g} direct sum{'s' if passes != 1 else ''}"
    warn(f"{what} over the N={n} particles of `{name}`: {sums} over {m}×{n} = {float(m) * n:.3g} pairs, expected "
         f"~{_duration(seconds)} (at the ~{rate:.2g} pairs/s measured on 2 idle cores for d={d}; the work grows like "
         f"N{'²' if m == n else ''}). N ≤ {int(fits)} would take under {_duration(_SLOW_SECONDS)}.{advice}")


def _check_pair_memory(name, n, d, m, what, extra_bytes_per_atom, advice) -> None:
    from .._attention import _MEMORY_CHECK_FLOOR
    from .._memory import available_bytes, require

    nbytes = kernel_sum_bytes(m, n, d) + extra_bytes_per_atom * n
    if nbytes <= _MEMORY_CHECK_FLOOR:          # as the exact attention: small requests are not checked
        return
    # the block is at most 2²¹ values or one row of n, and m grows with n: bytes ≤ 16 MB + n·per_atom
    per_atom = 8.0 * (3 * d + 3 + (d + 2) * m / n) + extra_bytes_per_atom
    largest = max(0, int((0.8 * available_bytes() - 8.0 * _CHUNK_ELEMENTS) / per_atom))
    require(nbytes, f"{what} over the N={n} particles of `{name}` (d={d})",
            f"`{name}` may hold at most about N={largest} particles here.{advice}")


# ----------------------------------------------------------------------------------------------
# shared by the gradient flow and the stationarity test

DIRECTIONS = ("ascent", "descent")
# the velocity field followed: "gradient" the Wasserstein gradient field ±∇_S δE/δμ (USA attention), "softmax" the
# same field divided by Z(x) = ∫ e^{β⟨x,Dy⟩}dμ(y) = β δE/δμ(x) > 0 (SA attention): the same zeros, E still monotone
FLOWS = ("gradient", "softmax")


def flow_model(beta, D, d: int, direction: str = "ascent", flow: str = "gradient"):
    """The :class:`~meanfield.Model` whose velocity is ±∇_S δE/δμ: USA, Post-LN, Q = I, K = D, V = ±D.

    ``flow="softmax"``: the same Model with SA (softmax) attention, whose velocity is ±∇_S δE/δμ / Z,
    Z(x) = ∫ e^{β⟨x,Dy⟩} dμ(y) (:func:`find_stationary`)."""
    from .._model import Model

    choice("direction", direction, DIRECTIONS)
    choice("flow", flow, FLOWS)
    D = check_symmetric(check_D(D, d), "the gradient flow")
    return Model(check_beta(beta), scheme="post-ln", attention="unnormalized" if flow == "gradient" else "softmax",
                 d=d, K=D, V=D if direction == "ascent" else -D)


def zonal_padded(rho, b: float):
    """(the zonal basis, the profile of the ZonalDensity ``rho`` zero-padded to it) at a band limit that also holds
    the kernel e^{b t} to 1e-13: the velocity and the stationarity test of a ZonalDensity are computed on it."""
    from ..backends._bases import ZonalBasis
    from ..sphere._funk_hecke import kernel_bandlimit

    lmax = max(rho.lmax, kernel_bandlimit(abs(b), 1e-13, rho.d) if b != 0 else 1)
    g = np.zeros(lmax + 1)
    g[:rho.lmax + 1] = rho.coeffs
    return ZonalBasis(lmax, rho.d), g


def pair_rounding(value: float, n: int, d: int, beta: float, D: np.ndarray) -> float:
    """A bound on the float64 error of the pair sum (1/2β) Σ_jk a_j a_k e^{β⟨y_j, D y_k⟩} (positive terms).

    Each exponent β⟨y_j, D y_k⟩ is rounded by at most (2d + 2)·u·β‖D‖_F in absolute terms, which e^{·} turns into a
    relative error of its term (β‖D‖ ulps: 62 ulps measured at β = 200 against a long-double sum, 1 at β = 1); the
    exponentials, the shifts and the divisions add a few ulps, and the two sums of n positive terms at most n ulps
    each.  The pair sum reported 0.0 ("exact to rounding"), below its error from β ≈ 5 on, and 33 ulps for 5000
    coincident particles at β = 1."""
    eps = np.finfo(float).eps
    return eps * ((2 * d + 4) * beta * float(np.linalg.norm(D)) + 2 * n + 6) * abs(value)
