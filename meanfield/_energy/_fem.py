"""Lagrange finite elements (fenics-basix) on a refined icosahedral mesh of S².

Geometry: every flat triangle T = (a, b, c) of the refined icosahedron is mapped onto the sphere by
the radial projection F(ξ) = X(ξ)/‖X(ξ)‖, X(ξ) = a + ξ₁(b − a) + ξ₂(c − a), so the curved triangles
tile S² exactly.  Quadrature uses basix's triangle rule on the reference cell with the exact
Jacobian of the projection,

    dA = (X · n) / ‖X‖³ · |(b − a) × (c − a)| dξ,     n = unit normal of T,

(the solid angle of a flat area element seen from the centre), so constants — the uniform density
included — are represented exactly and the only geometric error is the quadrature error of the
smooth factor dA/dξ.  Basis functions are the basix P1/P2 Lagrange functions pushed forward by F;
their nodes are the mesh vertices (P1) and the projected edge midpoints (P2).  Densities are taken
w.r.t. the normalized measure σ (weights sum to 1 up to the quadrature error).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from .._validate import no_bools, nonneg_int, real_array

_MAX_LEVEL = 7
_UNIT_TOL = 1e-12          # |‖v‖ − 1| allowed for a mesh vertex
_DEGENERATE_DET = 1e-14    # det[a, b, c] at or below which a triangle is degenerate (level 7: ≥ 7e-5)
_KERNEL_TOL = 1e-15        # kernel truncation of the spectral FE energy (tail ≤ this·λ_0, uniformly)
_MOMENTS_EPS = 1e-14       # accuracy of the NUFFT moments (measured ≤ 2e-15·Σ|a| per moment at levels 2–5)
_REFERENCE_STEP = 8        # the error estimate's reference rule: degree q + 8 (see energy_estimate)
_ESTIMATE_SAFETY = 2.0     # |E_q − E| ≤ 2|E_q − E_{q+8}| while the reference's error is ≤ ½ of the rule's


def _icosahedron():
    t = (1 + 5 ** 0.5) / 2
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
                  [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], float)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                  [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
                  [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    return v / np.linalg.norm(v, axis=1)[:, None], f


def _edges(f):
    """Unique edges (sorted vertex pairs) and, per triangle, the index of the edge opposite vertex 0, 1, 2."""
    e = np.sort(np.concatenate([f[:, [1, 2]], f[:, [0, 2]], f[:, [0, 1]]]), axis=1)
    ue, inv = np.unique(e, axis=0, return_inverse=True)
    return ue, inv.reshape(3, len(f)).T


def _refine(v, f):
    ue, opp = _edges(f)
    mid = v[ue[:, 0]] + v[ue[:, 1]]
    mid /= np.linalg.norm(mid, axis=1)[:, None]
    m = opp + len(v)
    a, b, c = f.T
    m0, m1, m2 = m.T
    nf = np.concatenate([np.stack([a, m2, m1], 1), np.stack([m2, b, m0], 1),
                         np.stack([m1, m0, c], 1), np.stack([m0, m1, m2], 1)])
    return np.vstack([v, mid]), nf


def check_level(level) -> int:
    """``level`` of :meth:`SphereMesh.icosahedral`, checked: an integer in [0, 7]."""
    level = nonneg_int("level", level)
    if level > _MAX_LEVEL:
        raise ValueError(f"`level` must be an integer in [0, {_MAX_LEVEL}] (nv = 10·4^level + 2); "
                         f"got level={level}.")
    return level


def check_degrees(degree, quadrature_degree) -> tuple[int, int]:
    """(degree, quadrature degree) of an :class:`FESpace`, checked: 1 or 2, and [2·degree, 30] (default 2·degree + 2).

    The mass matrix ∫ φ_i φ_j dσ integrates products of degree 2·degree: a rule of lower degree makes it singular
    (P2 with degree 1 to 3: the minimizer raised ConvergenceError advising a larger `regularization`, or returned
    nodal values from 0 to 38 where they lie in 0.05–6.6) or far from the true Gram matrix (P1 with degree 1: its
    condition number 112 against 4)."""
    degree = nonneg_int("degree", degree, minimum=1)
    if degree > 2:
        raise ValueError(f"`degree` must be 1 or 2; got degree={degree}.")
    if quadrature_degree is None:
        return degree, 2 * degree + 2
    q = nonneg_int("quadrature_degree", quadrature_degree)
    if not 2 * degree <= q <= 30:
        raise ValueError(f"`quadrature_degree` must be an integer in [{2 * degree}, 30] for degree={degree} (at least "
                         f"2·degree: the mass matrix integrates products of two basis functions); got "
                         f"quadrature_degree={q}.")
    return degree, q


def _checked_vertices(vertices) -> np.ndarray:
    """A SphereMesh's vertices as a float array (nv, 3) of unit vectors; refused by name otherwise."""
    v = real_array("vertices", vertices, allow_bool=False)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 4:
        raise ValueError(f"`vertices` must have shape (nv, 3) with nv ≥ 4 (points of S²); got shape {v.shape}.")
    if not np.all(np.isfinite(v)):
        raise ValueError("`vertices` must be finite; it contains NaN or inf.")
    off = float(np.max(np.abs(np.linalg.norm(v, axis=1) - 1)))
    if off > _UNIT_TOL:
        raise ValueError(f"`vertices` must be unit vectors (to {_UNIT_TOL:g}); got max | ‖v‖ − 1 | = {off:.3g}.")
    return v


def _checked_triangles(triangles, v) -> np.ndarray:
    """A SphereMesh's triangles on the vertices ``v``: integer indices (nt, 3) of non-degenerate triangles,
    counter-clockwise seen from outside, forming a closed surface that tiles S² once; refused by name otherwise."""
    no_bools("triangles", triangles)
    f = np.asarray(triangles)
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError("`triangles` must be an integer array of shape (nt, 3), nt ≥ 1 (vertex indices); got "
                         f"{'shape ' + str(f.shape) if np.issubdtype(f.dtype, np.number) else repr(triangles)}"
                         f"{'' if np.issubdtype(f.dtype, np.integer) else ' of dtype ' + str(f.dtype)}.")
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"`triangles` must hold vertex indices in [0, {len(v) - 1}]; got values in "
                         f"[{f.min()}, {f.max()}].")
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    # det[a, b, c] = ⟨(b − a) × (c − a), a⟩: > 0 for a counter-clockwise triangle seen from outside whose plane
    # misses the centre (the radial projection is then a bijection onto the curved triangle), 0 when degenerate
    det = np.einsum("ij,ij->i", np.cross(b - a, c - a), a)
    bad = np.flatnonzero(~(det > _DEGENERATE_DET))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"`triangles` must be non-degenerate and counter-clockwise seen from outside S² "
                         f"(det[a, b, c] > {_DEGENERATE_DET:g}); {bad.size} of {len(f)} are not, the first "
                         f"triangles[{i}] = {f[i].tolist()} with det = {det[i]:.3g}.")
    # a closed surface: every directed edge once, its reverse once (holes, overlaps and stray triangles fail)
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    forward = np.sort(directed[:, 0].astype(np.int64) * len(v) + directed[:, 1])
    backward = np.sort(directed[:, 1].astype(np.int64) * len(v) + directed[:, 0])
    if np.any(forward[1:] == forward[:-1]) or not np.array_equal(forward, backward):
        raise ValueError("`triangles` must form a closed, consistently oriented surface: every edge shared by "
                         "exactly two triangles, traversed in opposite directions.")
    # ... that covers S² once: the solid angles (Van Oosterom–Strackee) sum to 4π
    omega = 2 * np.arctan2(det, 1 + np.einsum("ij,ij->i", a, b) + np.einsum("ij,ij->i", b, c)
                           + np.einsum("ij,ij->i", c, a))
    total = float(np.sum(omega)) / (4 * np.pi)
    if abs(total - 1) > 1e-9:
        raise ValueError(f"`triangles` must tile S² once; their solid angles sum to {total:.12g}·4π.")
    return f


@dataclass(frozen=True, eq=False)
class SphereMesh:
    """A triangulation of S² by the radially projected refinements of the icosahedron.

    Built by :meth:`icosahedral`; a triangulation of one's own can be passed as ``SphereMesh(vertices,
    triangles, level)`` and is checked on construction.

    Attributes
    ----------
    vertices : ndarray, shape (nv, 3)
        Unit vectors; nv = 10·4^level + 2.
    triangles : ndarray of int, shape (nt, 3)
        Vertex indices, counter-clockwise seen from outside; nt = 20·4^level.
    level : int
        Number of midpoint refinements of the icosahedron.

    Raises
    ------
    ValueError
        ``vertices`` not of shape (nv, 3) or not unit vectors (to 1e-12); ``triangles`` not integer indices of
        shape (nt, 3) into ``vertices``, a triangle degenerate or clockwise seen from outside (or with the centre
        of S² in its plane), or triangles that do not tile S² exactly once (a hole, an overlap, an edge not
        shared by two triangles); ``level`` not an integer ≥ 0.
    TypeError
        ``vertices`` or ``triangles`` hold booleans.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    level: int

    def __post_init__(self):
        # a mesh built by hand is checked here: a degenerate or clockwise triangle gave NaN or negative quadrature
        # weights, a mesh with a hole a total mass below 1, and FESpace and every energy used them silently
        v = _checked_vertices(self.vertices)
        f = _checked_triangles(self.triangles, v)
        level = nonneg_int("level", self.level)
        v, f = v.copy(), f.astype(np.intp, copy=True)
        v.setflags(write=False)
        f.setflags(write=False)
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "triangles", f)
        object.__setattr__(self, "level", level)

    @classmethod
    def icosahedral(cls, level: int) -> "SphereMesh":
        """The icosahedron refined ``level`` times (each triangle split in 4, new vertices projected).

        Parameters
        ----------
        level : int
            Refinements, in [0, 7]: 10·4^level + 2 vertices, 20·4^level triangles.

        Returns
        -------
        SphereMesh
            Vertices of shape (nv, 3) on the unit sphere, triangles oriented outwards.
        """
        level = check_level(level)
        v, f = _icosahedron()
        for _ in range(level):
            v, f = _refine(v, f)
        a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
        flip = np.einsum("ij,ij->i", np.cross(b - a, c - a), a + b + c) < 0
        f[flip] = f[flip][:, [0, 2, 1]]
        return cls(v, f, level)

    @functools.cached_property
    def h(self) -> float:
        """Mesh size: the longest edge (chord length)."""
        ue, _ = _edges(self.triangles)
        return float(np.max(np.linalg.norm(self.vertices[ue[:, 0]] - self.vertices[ue[:, 1]], axis=1)))

    def __repr__(self):
        return f"SphereMesh(level={self.level}, nv={len(self.vertices)}, nt={len(self.triangles)}, h={self.h:.4g})"


def real_harmonics(lmax: int, points) -> np.ndarray:
    """Real spherical harmonics orthonormal w.r.t. σ at unit points (Q, 3): shape (Q, (lmax+1)²).

    Degree-major order; for each ℓ the orders m = −ℓ..ℓ: √(8π) Im Y_ℓ|m| (m < 0), √(4π) Y_ℓ0,
    √(8π) Re Y_ℓm (m > 0) of the complex orthonormal Y_ℓm (scipy's normalized Legendre functions
    ``sph_legendre_p_all``, Condon–Shortley phase, as ``sph_harm_y``).
    """
    from ..sphere._sh import points_to_angles

    th, ph = points_to_angles(points)
    return _real_harmonics_at(lmax, th, ph)


# points per block of the Legendre table: scipy's sph_legendre_p_all returns every order −L..L, (L+1)(2L+1) values per
# point, twice the harmonics wanted
_HARMONICS_BLOCK = 2048


def _real_harmonics_at(lmax: int, theta: np.ndarray, phi: np.ndarray, radial: np.ndarray | None = None) -> np.ndarray:
    """:func:`real_harmonics` at colatitudes θ and longitudes φ (shape (Q,)), by blocks of points; each times
    ``radial[i, ℓ]`` (shape (Q, lmax + 1)) if given, within the block (a table-sized product was 1.2 GB more at
    L = 91).

    scipy's ``sph_legendre_p_all`` gives all degrees and orders per point in one call: 0.85 s for 5408 points at
    L = 50, where ``sph_harm_y`` per entry took 14 s.  The trigonometric factors are taken from a table of cos mφ,
    sin mφ, 0 ≤ m ≤ lmax (the same values): both functions at every entry took 3.1 s of a 3.7 s block of 2046 points
    at L = 91, the table 0.07 s."""
    from scipy.special import sph_legendre_p_all

    ell = np.repeat(np.arange(lmax + 1), 2 * np.arange(lmax + 1) + 1)
    m = np.arange(ell.size) - ell * ell - ell
    scale = np.sqrt(4 * np.pi) * np.where(m == 0, 1.0, np.sqrt(2.0))
    trig_column = np.where(m < 0, lmax + 1 - m, m)                   # into [cos 0..lmax | sin 0..lmax]
    out = np.empty((theta.size, ell.size))
    for lo in range(0, theta.size, _HARMONICS_BLOCK):
        sl = slice(lo, lo + _HARMONICS_BLOCK)
        table = sph_legendre_p_all(lmax, lmax, theta[sl])[0][:, :lmax + 1]         # P̄_ℓm(θ), (ℓ, m ≥ 0, block)
        P = np.moveaxis(table, -1, 0)[:, ell, np.abs(m)]                            # (block, N)
        mphi = phi[sl, None] * np.arange(lmax + 1)[None, :]
        out[sl] = scale * P * np.concatenate([np.cos(mphi), np.sin(mphi)], axis=1)[:, trig_column]
        if radial is not None:
            out[sl] *= radial[sl][:, ell]
    return out


# degrees beyond which the x-rule of kernel_coefficients need not be exact: where the kernel's multipliers are below
# this fraction of λ_0 (their uniform tail, kernel_bandlimit).  Measured against a rule 40 degrees finer (non-symmetric
# D, β‖D‖₂ = 10 and 30, L = 8, 20, 32): max|ΔG|/max|G| = 2e-12 at 1e-8, ≤ 6e-15 at 1e-11, ≤ 1.3e-15 (rounding) from
# 1e-13 on; 1e-15 keeps a factor 100
_COEFFICIENT_RULE_TOL = 1e-15


def kernel_coefficients(beta: float, D: np.ndarray, lmax: int, variation: bool = False):
    """The kernel e^{β⟨x,Dy⟩ − shift} in the real σ-orthonormal harmonics of degree ≤ lmax.

    Returns (G, shift): G_ab = ∬ Y_a(x) e^{β⟨x,Dy⟩ − shift} Y_b(y) dσ dσ, shape ((lmax+1)², (lmax+1)²),
    symmetrized (½(G + Gᵀ): the coefficients of ½(e^{β⟨x,Dy⟩} + e^{β⟨x,Dᵀy⟩}), which any energy ∬ρρK sees for a
    non-symmetric D), and shift = β‖D‖₂.  Diagonal Funk–Hecke multipliers for D = c·I.  Otherwise the y-integral is
    exact by Funk–Hecke, with z = βDᵀx,

        ∫ e^{⟨z,y⟩} Y_b(y) dσ(y) = λ_{ℓ_b}(|z|) Y_b(z/|z|),

    and the x-integral a Gauss–Legendre rule exact to degree lmax + max(lmax + 3, L_k), L_k = the kernel's band
    limit at 1e-15·λ_0 (:func:`_coefficient_grid`): max|ΔG| ≤ 3e-15·max|G| against a finer rule for β‖D‖₂ ≤ 100 at
    L = L_k, and for L < L_k too (where the former product rule, exact to 2L + 3 in each variable, was off by 0.12
    at β‖D‖₂ = 14.6, L = 4); the rule's sums by an FFT over each of its rings and one product per order
    (:func:`_general_coefficients`), O(L⁵): 0.3–0.4 s at L = 37, 7–17 s and 1.5 GB at β‖D‖₂ = 100, L = 91 (loaded
    2-core machine).  With ``variation``, of the kernel less its constant part,
    e^{−shift}(e^{β⟨x,Dy⟩} − 1) (:func:`meanfield._energy._kernel.scaled_kernel`): G_00 lowered by e^{−shift}, by
    λ_0 − 1 in the degree-0 column, without cancellation.
    """
    from ._kernel import isotropic_scale, spectral_norm

    shift = beta * spectral_norm(D)
    ell = np.repeat(np.arange(lmax + 1), 2 * np.arange(lmax + 1) + 1)
    c = isotropic_scale(D)
    if c is not None:
        return np.diag(_isotropic_multipliers(beta * c, lmax, variation)[ell]), shift
    return _general_coefficients(beta, D, lmax, shift, variation), shift


def _general_coefficients(beta: float, D: np.ndarray, lmax: int, shift: float, variation: bool) -> np.ndarray:
    """G of :func:`kernel_coefficients` for any D (the one x-rule, y exact by Funk–Hecke), symmetrized.

    G_ab = Σ_x w Y_a(x) F_b(x) (F of :func:`_transformed_harmonics`) summed ring by ring: on each ring of the tensor
    grid the φ-sums of all columns b by one real FFT (the trigonometric factor of Y_a), then the θ-sums as one matrix
    product per order m with the rings' weighted Legendre values.  O(L⁵) where the product of the two tables was
    O(L⁶): at β‖D‖₂ = 100, L = 91, 7–17 s and a peak of 1.5 GB (RSS) against 156 s and 3.0 GB on a loaded 2-core
    machine (54 s unloaded); at L = 37 0.3–0.4 s against 2.1 s; and faster from L = 2 on (0.8 ms against 1.0 ms;
    L = 8: 6–8 ms against 94–100 ms), so the one path.

    F_b(−x) = (−1)^{ℓ_b} F_b(x) and Y_a(−x) = (−1)^{ℓ_a} Y_a(x), and −x is a node with x (the GL rings symmetric
    about the equator, an even number of longitudes): F is needed on the northern rings only, and the entries of
    odd ℓ_a + ℓ_b vanish exactly, not to rounding (at β‖D‖ = 1e-200 their 1e-217 made the uniform density's level,
    an underflowed ~β², positive)."""
    grid = _coefficient_grid(lmax, shift)
    north = (grid.ntheta + 1) // 2
    ell = np.repeat(np.arange(lmax + 1), 2 * np.arange(lmax + 1) + 1)
    order = np.argsort(ell % 2, kind="stable")            # columns of even degree, then of odd degree
    spectra = _ring_spectra(beta, D, lmax, shift, variation, grid, north, order)
    G = _contract_rings(spectra.view(float), _ring_legendre(lmax, grid, north), lmax, order)
    del spectra                                           # before the transpose's copy of G
    G += G.T
    G *= 0.5
    return G


def _contract_rings(spectra: np.ndarray, legendre: np.ndarray, lmax: int, order: np.ndarray) -> np.ndarray:
    """Σ_rings legendre[|m_a|, ℓ_a] · spectra[|m_a|, ring, b] (cosine or sine part) for ℓ_a ≡ ℓ_b (mod 2), 0 for the
    others: G before its symmetrization.  ``spectra`` as :func:`_ring_spectra`'s, viewed as real (lmax + 1, rings,
    2·(lmax+1)²), its columns in ``order``; ``legendre`` as :func:`_ring_legendre`'s.

    Per parity of ℓ, the columns in blocks (the whole product was twice the size of G), on one BLAS thread: a
    product per order on OpenBLAS's thread team took 2.5 s against 0.08 s on a loaded 2-core machine (L = 91, one
    block)."""
    from .._blas import single_threaded_blas

    ell = np.repeat(np.arange(lmax + 1), 2 * np.arange(lmax + 1) + 1)
    m = np.arange(ell.size) - ell * ell - ell
    G = np.zeros((ell.size, ell.size))
    split = np.count_nonzero(ell % 2 == 0)
    with single_threaded_blas():
        for parity, cols in ((0, order[:split]), (1, order[split:]))[:min(2, lmax + 1)]:
            rows = np.flatnonzero(ell % 2 == parity)
            table = np.ascontiguousarray(legendre[:, parity::2])              # (m, ℓ ≡ parity, ring)
            first = 0 if parity == 0 else split
            step = max(1, _CONTRACTION_BLOCK // table[:, :, 0].size)
            for lo in range(0, cols.size, step):
                hi = min(lo + step, cols.size)
                H = np.matmul(table, spectra[:, :, 2 * (first + lo):2 * (first + hi)])
                H = H.reshape(lmax + 1, -1, hi - lo, 2)                       # (m, ℓ, b, cos | sin)
                G[np.ix_(rows, cols[lo:hi])] = H[np.abs(m[rows]), ell[rows] // 2, :, (m[rows] < 0).astype(int)]
    return G


# points per block of rings of the transformed harmonics F (on the whole grid F was 1.2 GB at L = 91), and entries of
# the θ-contraction's output per block of columns
_RING_BLOCK_POINTS = 512
_CONTRACTION_BLOCK = 2 ** 23


def _ring_spectra(beta, D, lmax, shift, variation, grid, north, order) -> np.ndarray:
    """conj(Σ_φ F_b(θ, φ) e^{−imφ}) for the first ``north`` rings θ of ``grid``, orders 0 ≤ m ≤ lmax and the columns b
    in ``order``: shape (lmax + 1, north, (lmax+1)²), complex; real part the cosine sums, imaginary part the sine
    sums."""
    from scipy.fft import rfft

    out = np.empty((lmax + 1, north, order.size), complex)
    step = max(1, _RING_BLOCK_POINTS // grid.nphi)
    for lo in range(0, north, step):
        hi = min(lo + step, north)
        x = grid.points[lo:hi].reshape(-1, 3)
        F = _transformed_harmonics(beta, x @ D, lmax, shift, variation).reshape(hi - lo, grid.nphi, -1)
        spec = rfft(F, axis=1, overwrite_x=True)[:, :lmax + 1]
        np.conjugate(spec[:, :, order].transpose(1, 0, 2), out=out[:, lo:hi])
    return out


def _ring_legendre(lmax: int, grid, north: int) -> np.ndarray:
    """The θ-factors of the real harmonics (:func:`real_harmonics`) times the ring weights of σ, on the first
    ``north`` rings of ``grid``, each doubled for its mirror ring (the equator's, its own mirror, not): shape
    (lmax + 1 (m), lmax + 1 (ℓ), north)."""
    from scipy.special import sph_legendre_p_all

    w = grid.ring_weights[:north] * 2 / (4 * np.pi)
    if grid.ntheta % 2:
        w[-1] /= 2
    P = sph_legendre_p_all(lmax, lmax, grid.theta[:north])[0][:, :lmax + 1]     # P̄_ℓm(θ), (ℓ, m, ring)
    scale = np.sqrt(4 * np.pi) * np.where(np.arange(lmax + 1) == 0, 1.0, np.sqrt(2.0))
    return P.transpose(1, 0, 2) * (scale[:, None, None] * w[None, None, :])


def _coefficient_grid(lmax: int, shift: float):
    """The Gauss–Legendre grid of :func:`kernel_coefficients`' x-integral: exact to degree lmax + L_k.

    The integrand Y_a(x) ∫ e^{β⟨x,Dy⟩} Y_b(y) dσ(y) has x-degrees ℓ_a + ℓ' with weights of the kernel's multipliers
    λ_ℓ' (β‖D‖₂): beyond L_k their tail is below 1e-15·λ_0 (see :data:`_COEFFICIENT_RULE_TOL`).  And at least
    2L + 3, as the former product rule in each variable: at small β‖D‖ the entries of degree ℓ are ~(β‖D‖)^ℓ, and
    the minimizer reads the degree-2 block at β‖D‖ = 1e-8 (exact to L + L_k only, its second moments came out
    0.49, 0.36, 0.15 for D = diag(0.6, 1, 1.4) instead of 0.648, 0.233, 0.119): the aliased kernel parts of
    degree ≥ L + 4 are below every block.  The longitudes 2·ntheta ≥ degree + 1, an even number: with x its
    antipode −x is a node (:func:`_general_coefficients` uses it)."""
    from ..sphere._funk_hecke import kernel_bandlimit
    from ..sphere._sh import SphereGrid

    degree = lmax + max(lmax + 3, kernel_bandlimit(shift, _COEFFICIENT_RULE_TOL, 3))
    return SphereGrid(degree // 2 + 1, 2 * (degree // 2 + 1))


def _transformed_harmonics(beta: float, u: np.ndarray, lmax: int, shift: float, variation: bool) -> np.ndarray:
    """F_ib = e^{−shift} λ_{ℓ_b}(|z_i|) Y_b(z_i/|z_i|) = ∫ e^{⟨z_i,y⟩ − shift} Y_b(y) dσ(y) (Funk–Hecke) for
    z_i = β u_i, u_i = Dᵀx_i, shape (Q, (lmax+1)²); at u = 0 (a singular D) λ_ℓ(0) = δ_ℓ0 and the direction is
    immaterial.  |z| as β|u|: |βu| squared underflowed to 0 at β = 1e-200."""
    from ..sphere._sh import points_to_angles

    size = np.linalg.norm(u, axis=1)
    zero = size == 0
    th, ph = points_to_angles(np.where(zero[:, None], [0.0, 0.0, 1.0], u))
    return _real_harmonics_at(lmax, th, ph, _radial_multipliers(beta * size, lmax, shift, variation))


def _radial_multipliers(r: np.ndarray, lmax: int, shift: float, variation: bool) -> np.ndarray:
    """e^{−shift} λ_ℓ(r) for radii 0 ≤ r ≤ shift, shape (Q, lmax + 1): the S² Funk–Hecke multipliers of
    :func:`meanfield.sphere.funk_hecke` vectorized over r.  From r ≥ 1 as e^{r}√(π/2r) ive(ℓ+½, r) (≤ 1.5e-13
    relative at high degree, as there), below by the power series (:func:`_small_radius_multipliers`): ive's
    I_{ℓ+½}(r) ~ r^{ℓ+½} underflowed before √(π/2r) scaled it back (λ_1 = 0 for r < 1e-205, where it is r/3),
    λ_0 = sinh(r)/r in closed form (and λ_0 − 1 with ``variation``, as
    :func:`meanfield._energy._kernel.scaled_mean_variation_s2`)."""
    from scipy.special import ive

    small = r < 1.0
    big = np.where(small, 1.0, r)
    grow = np.exp(r - shift)                                  # ≤ 1: r = β|Dᵀx| ≤ β‖D‖₂
    with np.errstate(under="ignore"):
        lam = (grow * np.sqrt(np.pi / (2 * big)))[:, None] * ive(np.arange(lmax + 1) + 0.5, big[:, None])
        lam[small] = np.exp(-shift) * _small_radius_multipliers(r[small], lmax)
    pos = np.where(r > 0, r, 1.0)
    lam[:, 0] = np.where(r > 0, grow * -np.expm1(-2 * pos) / (2 * pos), np.exp(-shift))
    if variation:
        lam[:, 0] = np.where(r > 0, _scaled_variation0(pos, grow, shift), 0.0)
    return lam


def _small_radius_multipliers(r: np.ndarray, lmax: int) -> np.ndarray:
    """λ_ℓ(r) for 0 ≤ r < 1: r^ℓ/(2ℓ+1)!! ₀F₁(ℓ + 3/2; r²/4), the leading factor as a running product (no overflow
    of (2ℓ+1)!!, graceful underflow), the series to 12 terms (remainder < 1e-17 of the first at r < 1)."""
    j = np.arange(1, lmax + 1)
    lead = np.ones((r.size, lmax + 1))
    with np.errstate(under="ignore"):
        lead[:, 1:] = np.cumprod(r[:, None] / (2 * j + 1)[None, :], axis=1)
        q = (r * r / 4)[:, None]
        nu = np.arange(lmax + 1) + 1.5
        term, total = np.ones_like(lead), np.ones_like(lead)
        for k in range(1, 13):                      # the series' terms, each a vector operation over (r, ℓ)
            term = term * q / (k * (nu + k - 1))
            total += term
    return lead * total


def _scaled_variation0(r: np.ndarray, grow: np.ndarray, shift: float) -> np.ndarray:
    """e^{−shift}(sinh(r)/r − 1) for r > 0 without cancellation: Σ_{k≥1} r^{2k}/(2k+1)! below r = 1 (12 terms: the
    remainder is < 1e-17 of the first), e^{r − shift}(1 − e^{−2r})/(2r) − e^{−shift} above."""
    from scipy.special import gammaln

    small = r < 1.0
    k = np.arange(12, 0, -1)
    rs = np.where(small, r, 0.5)
    series = np.sum(np.exp(2 * k[None, :] * np.log(rs)[:, None] - gammaln(2 * k + 2)[None, :]), axis=1)
    return np.where(small, np.exp(-shift) * series, grow * -np.expm1(-2 * r) / (2 * r) - np.exp(-shift))


def _isotropic_multipliers(b: float, lmax: int, variation: bool = False) -> np.ndarray:
    """The scaled Funk–Hecke multipliers e^{−|b|} λ_ℓ(b), ℓ ≤ lmax, of e^{b⟨x,y⟩} for any real b (λ_ℓ(−|b|) =
    (−1)^ℓ λ_ℓ(|b|)); with ``variation`` λ_0 of the kernel less its constant part (see :func:`kernel_coefficients`)."""
    from ..sphere._funk_hecke import funk_hecke
    from ._kernel import scaled_mean_variation_s2

    lam = funk_hecke(abs(b), lmax, 3, scaled=True)
    if b < 0:
        lam = lam * (-1.0) ** np.arange(lmax + 1)
    if variation:
        lam[0] = scaled_mean_variation_s2(abs(b))
    return lam


def _basix():
    import basix  # deferred: basix is only needed by the FE path

    return basix


def _cell_rule(mesh: SphereMesh, xi: np.ndarray, wq: np.ndarray):
    """A reference-triangle rule (ξ (nq, 2), weights (nq,)) carried to every curved triangle of ``mesh`` by the radial
    projection: its nodes on S², shape (nt·nq, 3), and their σ-weights (exact Jacobian), shape (nt·nq,)."""
    v, f = mesh.vertices, mesh.triangles
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    X = a[:, None] + (b - a)[:, None] * xi[None, :, 0, None] + (c - a)[:, None] * xi[None, :, 1, None]
    r = np.linalg.norm(X, axis=2)
    jac = np.einsum("tqi,ti->tq", X, np.cross(b - a, c - a)) / r ** 3     # dA/dξ (reference area 1/2)
    return (X / r[..., None]).reshape(-1, 3), (wq[None, :] * jac / (4 * np.pi)).ravel()


def _reference_rule(q: int):
    """The reference rule of the FE energy's error estimate, (ξ (n, 2), weights (n,)): basix's rule of degree
    q + 8 on the reference triangle, or, where that exceeds 30 (basix's largest), its degree-30 rule on each of the
    four half-size subtriangles (the composite rule's error is ~2^-31 of the degree-30 rule's, far below degree q's)."""
    basix = _basix()
    xi, w = basix.make_quadrature(basix.CellType.triangle, min(q + _REFERENCE_STEP, 30))
    if q + _REFERENCE_STEP <= 30:
        return xi, w
    corners = [0.5 * xi + o for o in ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5))]
    return np.concatenate(corners + [0.5 - 0.5 * xi]), np.tile(0.25 * w, 4)


def _real_moments(a: np.ndarray, points: np.ndarray, lmax: int) -> np.ndarray:
    """u_k = Σ_q a_q Y_k(x_q) for the real σ-orthonormal harmonics of :func:`real_harmonics`, shape ((L+1)²,).

    By the adjoint NUFFT (:func:`meanfield.sphere._sh.adjoint_synthesis_points`), O(Q + L² log L): the table of
    :func:`real_harmonics` at the Q nodes took 23 s at level 5 (Q = 122 880, L = 17), this 0.03 s."""
    from ..sphere import _sh as sh

    alm = sh.adjoint_synthesis_points(a, points, lmax, epsilon=_MOMENTS_EPS)      # Σ a conj(Y_ℓm), m ≥ 0
    ell = np.repeat(np.arange(lmax + 1), 2 * np.arange(lmax + 1) + 1)
    m = np.arange(ell.size) - ell * ell - ell
    c = alm[sh.lm_index(lmax, ell, np.abs(m))]
    # Σ a Y_ℓm = conj(alm): Re for m ≥ 0, −Im for the sine harmonics (m < 0)
    return np.sqrt(4 * np.pi) * np.where(m == 0, c.real, np.sqrt(2.0) * np.where(m > 0, c.real, -c.imag))


def _spectral_energy(points: np.ndarray, a: np.ndarray, beta: float, D: np.ndarray) -> tuple[float, float]:
    """(1/2β) Σ_qr a_q a_r e^{β⟨x_q, D x_r⟩} through the kernel truncated at degree L, and a bound on the error of
    this evaluation against the exact double sum.

    The bound adds: the truncation, tail ≤ tol·λ_0 uniformly for D = c·I (:func:`kernel_bandlimit`) and, for a
    general D, up to (L + 1) times that through the projection in the second variable, on Σ|a|² mass; the moments'
    NUFFT error (ε·Σ|a| per moment, so ‖δu‖ ≤ ε·Σ|a|·(L + 1)) through ‖G‖₂ (≤ its largest row sum); and the
    rounding of uᵀGu and the multipliers (2e-13 relative, as in :mod:`._energy`) on |u|ᵀ|G||u|.  All in units of
    e^{β‖D‖₂}/(2β)."""
    from ..sphere._funk_hecke import funk_hecke, kernel_bandlimit
    from ._kernel import isotropic_scale, spectral_norm

    b = beta * spectral_norm(D)
    lk = max(1, kernel_bandlimit(b, _KERNEL_TOL, 3))
    u = _real_moments(a, points, lk)
    c = isotropic_scale(D)
    if c is not None:       # G is diagonal: a vector (as a dense matrix, 84 GB at β = 600, L = 231)
        g = _isotropic_multipliers(beta * c, lk)[np.repeat(np.arange(lk + 1), 2 * np.arange(lk + 1) + 1)]
        quad, size, norm = float(g @ u ** 2), float(np.abs(g) @ u ** 2), float(np.max(np.abs(g)))
    else:                   # ‖G‖₂ ≤ its largest absolute row sum (symmetric): an SVD took 5 s at L = 42
        G, _ = kernel_coefficients(beta, D, lk)
        quad, size = float(u @ G @ u), float(np.abs(u) @ np.abs(G) @ np.abs(u))
        norm = float(np.max(np.sum(np.abs(G), axis=1)))
    with np.errstate(over="ignore"):
        scale = np.exp(b) / (2.0 * beta)
    l1 = float(np.sum(np.abs(a)))
    du = _MOMENTS_EPS * l1 * (lk + 1)
    tail = (lk + 2) * _KERNEL_TOL * float(funk_hecke(b, 0, 3, scaled=True)[0]) * l1 ** 2
    nufft = norm * (2 * float(np.linalg.norm(u)) * du + du ** 2)
    rounding = (2e-13 + 8 * lk ** 2 * np.finfo(float).eps) * size
    with np.errstate(over="ignore", invalid="ignore"):
        return quad * scale, (tail + nufft + rounding) * scale


def _pair_sum(points: np.ndarray, a: np.ndarray, beta: float, D: np.ndarray) -> tuple[float, float]:
    """The direct pair sum (1/2β) Σ_qr a_q a_r e^{β⟨x_q, D x_r⟩} and its rounding bound (that of the particles' pair
    sum, on the sum of |terms|: the value itself for a ≥ 0, else at most (1/2β)(Σ|a|)² e^{β‖D‖₂})."""
    from ._kernel import pair_rounding
    from ._kernel import pair_energy, spectral_norm

    value = pair_energy(points, a, beta, D)
    if np.all(a >= 0):
        size = abs(value)
    else:
        with np.errstate(over="ignore"):
            size = float(np.sum(np.abs(a))) ** 2 * np.exp(beta * spectral_norm(D)) / (2.0 * beta)
    return value, pair_rounding(size, len(a), 3, beta, D)


def _cheaper_by_pairs(n: int, beta: float, D: np.ndarray) -> bool:
    """Whether the direct pair sum over n atoms is cheaper than :func:`_spectral_energy`, whose kernel coefficients
    for a D ≠ c·I cost ~5e-8 s per unit of the count below, ~2(L + 2)² grid nodes times (L + 1)² harmonics (the
    transformed harmonics on half the nodes dominate the ring transforms: 0.32–0.43 s at L = 37, 7–17 s at L = 91 on
    a loaded 2-core machine, where the former dense product took 2.1 s and 156 s, ~2.5e-7 s per unit at L = 37, and
    the product rule in both variables before it ~2e-6)."""
    from ..sphere._funk_hecke import kernel_bandlimit
    from ._kernel import isotropic_scale, spectral_norm

    if isotropic_scale(D) is not None:
        return False
    lk = max(1, kernel_bandlimit(beta * spectral_norm(D), _KERNEL_TOL, 3))
    return 1e-8 * n ** 2 < 5e-8 * 2 * (lk + 2) ** 2 * (lk + 1) ** 2


def fe_energy_estimate(rho: "FEDensity", beta: float, D: np.ndarray, direct: bool) -> tuple[float, float]:
    """E_{β,D}(ρ_h) of an FE density and an a-posteriori estimate of its error, for :func:`meanfield.energy_estimate`.

    The value is the space's product quadrature of ∬ e^{β⟨x,Dy⟩} ρ_h ρ_h dσ dσ, by the direct pair sum over its
    nodes (``direct``) or the truncated kernel.  ρ_h is exact in its space, so the error is the rule's on the smooth
    integrand of each curved cell: O(h^{q+1}) a priori (measured h^{q+2} for even q: 2^6 per level for the default P1
    rule q = 4, 2^8 for P2's q = 6).  It is estimated by the same energy under the rule of degree q + 8
    (:func:`_reference_rule`), whose own error is smaller by a further factor ~h^8: |E_q − E| ≤ 2|E_q − E_{q+8}| as
    long as the reference's error is at most half the rule's.  Measured over P1/P2, levels 0–3, β ≤ 300, D = I,
    diag(0.6, 1, 1.4), diag(1, 0.5, −0.8), smooth and concentrated ρ: |E_q − E| / |E_q − E_{q+8}| between 0.97
    and 1.19 (the largest on level 0 at β = 300, where the relative error is 2.3).  It is an estimate, not a proof:
    a mesh that does not resolve the kernel's width 1/√(β‖D‖) can fool any two rules.  To it are added the
    evaluations' own errors (truncation, NUFFT, rounding), 3× the value's and 2× the reference's.

    Returns
    -------
    value, bound : float
        E (dimensionless) and the estimate of |value − E(ρ_h)|; inf when the value is not finite.
    """
    pts, a = rho.atoms()
    value, err = _pair_sum(pts, a, beta, D) if direct else _spectral_energy(pts, a, beta, D)
    if not np.isfinite(value):
        return value, float("inf")
    space = rho.space
    ref_pts, ref_a = space._rule_atoms(rho.values, *_reference_rule(space.quadrature_degree))
    ref, ref_err = (_pair_sum if _cheaper_by_pairs(len(ref_a), beta, D) else _spectral_energy)(ref_pts, ref_a, beta, D)
    bound = float(_ESTIMATE_SAFETY * abs(value - ref) + 3 * err + 2 * ref_err)
    bound = bound if np.isfinite(bound) else float("inf")
    if not bound < abs(value):
        from .._errors import warn
        from ._kernel import spectral_norm

        warn(f"E_β,D of the FE density is not determined (value {value:.6g}, estimated error {bound:.3g}): its "
             f"quadrature does not resolve the kernel, of width ~1/√(β‖D‖₂) = "
             f"{1 / np.sqrt(beta * spectral_norm(D)):.3g} against the mesh size h = {space.mesh.h:.3g}. Refine the "
             f"mesh (a higher `level`) or raise `quadrature_degree`.")
    return value, bound


class FESpace:
    """Continuous P1 or P2 Lagrange elements on a :class:`SphereMesh` (exact-projection geometry).

    Parameters
    ----------
    mesh : SphereMesh
    degree : {1, 2}
        Polynomial degree on the reference triangle.
    quadrature_degree : int, optional
        Degree of the basix triangle rule, in [2·degree, 30] (default 2·degree + 2).

    Attributes
    ----------
    nodes : ndarray, shape (ndof, 3)
        Unit-vector positions of the degrees of freedom (vertices, then edge midpoints for P2).
    cell_dofs : ndarray of int, shape (nt, 3 or 6)
        Degrees of freedom of each triangle in basix's local order.
    points : ndarray, shape (nt·nq, 3)
        Quadrature nodes on S².
    weights : ndarray, shape (nt·nq,)
        σ-weights of the quadrature nodes (Σ ≈ 1; exact Jacobian, basix rule).
    basis : scipy.sparse.csr_matrix, shape (nt·nq, ndof)
        Basis function values at the quadrature nodes.
    mass : ndarray, shape (ndof,)
        ∫ φ_i dσ.
    mass_matrix : scipy.sparse.csr_matrix, shape (ndof, ndof)
        ∫ φ_i φ_j dσ (symmetric positive definite).
    """

    def __init__(self, mesh: SphereMesh, degree: int = 1, quadrature_degree: int | None = None):
        if not isinstance(mesh, SphereMesh):
            raise TypeError(f"`mesh` must be a SphereMesh; got {type(mesh).__name__}.")
        degree, q = check_degrees(degree, quadrature_degree)
        basix = _basix()
        self.mesh, self.degree, self.quadrature_degree = mesh, degree, q
        self.element = basix.create_element(basix.ElementFamily.P, basix.CellType.triangle, degree,
                                            basix.LagrangeVariant.equispaced)
        v, f = mesh.vertices, mesh.triangles
        if degree == 1:
            self.nodes, self.cell_dofs = v, np.array(f)
        else:
            # basix local order: vertices 0, 1, 2, then edges (1,2), (0,2), (0,1)
            ue, opp = _edges(f)
            mid = v[ue[:, 0]] + v[ue[:, 1]]
            self.nodes = np.vstack([v, mid / np.linalg.norm(mid, axis=1)[:, None]])
            self.cell_dofs = np.concatenate([f, opp + len(v)], axis=1)
        xi, wq = basix.make_quadrature(basix.CellType.triangle, q)
        self._tab = self.element.tabulate(0, xi)[0, :, :, 0]            # (nq, ndofs_cell)
        self.points, self.weights = _cell_rule(mesh, xi, wq)
        nt, nq = len(f), len(wq)
        k = self.cell_dofs.shape[1]
        rows = np.repeat(np.arange(nt * nq), k)
        cols = np.repeat(self.cell_dofs, nq, axis=0).ravel()
        self.basis = sparse.csr_matrix((np.tile(self._tab, (nt, 1)).ravel(), (rows, cols)),
                                       shape=(nt * nq, len(self.nodes)))
        self.mass = np.asarray(self.basis.T @ self.weights).ravel()
        self.mass_matrix = (self.basis.T @ sparse.diags(self.weights) @ self.basis).tocsr()
        for a_ in (self.nodes, self.cell_dofs, self.points, self.weights, self.mass):
            a_.setflags(write=False)

    @property
    def ndof(self) -> int:
        return len(self.nodes)

    @property
    def d(self) -> int:
        return 3

    def kernel_matrix(self, beta: float, D=None, method: str = "auto", variation: bool = False):
        """K_ij = ∬ φ_i(x) φ_j(y) e^{β⟨x,Dy⟩} dσ dσ, scaled by e^{−shift}.

        Parameters
        ----------
        beta : float
            β > 0.
        D : None, float, array_like of shape (3,) (a diagonal) or (3, 3)
            Interaction matrix (None: identity), as in :func:`meanfield.energy`.
        method : {"auto", "spectral", "direct"}
            "direct": the product quadrature, O((nt·nq)²) kernel evaluations.  "spectral": the kernel
            truncated at degree L (tail ≤ 1e-15·λ_0(β‖D‖₂) in each variable) in a real orthonormal
            harmonic basis, K = A G Aᵀ with A_ik = ∫ φ_i Y_k dσ (the same quadrature) and G the
            kernel's (L+1)² × (L+1)² matrix (diagonal Funk–Hecke multipliers for D = c·I, else exact in y by
            Funk–Hecke and a Gauss–Legendre rule in x: :func:`kernel_coefficients`): O(nt·nq·L² + ndof²·L²).  "auto" takes "spectral" when
            (L+1)² < ndof.
        variation : bool
            The matrix of the kernel less its constant part, e^{β⟨x,Dy⟩} − 1 (so K = K_variation + e^{−shift} m mᵀ,
            m = :attr:`mass`), computed without cancellation (:func:`meanfield._energy._kernel.scaled_kernel`).

        Returns
        -------
        K : ndarray, shape (ndof, ndof)
            e^{−shift} · K (symmetrized), dense.
        shift : float
            β‖D‖₂ (the largest exponent), so the true matrix is e^{shift} K.
        """
        from .._validate import choice, flag
        from ..sphere._funk_hecke import kernel_bandlimit
        from ._kernel import check_beta, check_D, spectral_norm, variation_bandlimit

        choice("method", method, ("auto", "spectral", "direct"))
        variation = flag("variation", variation)         # "yes" was read by its truth value
        beta, D = check_beta(beta), check_D(D, 3)
        b = beta * spectral_norm(D)
        lk = variation_bandlimit(b, 3) if variation else max(1, kernel_bandlimit(b, 1e-15, 3))
        if method == "spectral" or (method == "auto" and (lk + 1) ** 2 < self.ndof):
            A, G, shift = self.kernel_factor(beta, D, lk, variation)
            K = (A @ G) @ A.T
            return 0.5 * (K + K.T), shift
        return self._kernel_direct(beta, D, variation)

    def harmonic_moments(self, lmax: int) -> np.ndarray:
        """The moments A_ik = ∫ φ_i Y_k dσ of the basis against the real σ-orthonormal harmonics.

        Parameters
        ----------
        lmax : int
            Largest degree of the harmonics Y_k.

        Returns
        -------
        ndarray, shape (ndof, (lmax + 1)²)
            By the space's quadrature.
        """
        # lmax = −1 returned an empty table, 1.5 numpy's casting error
        Y = real_harmonics(nonneg_int("lmax", lmax), self.points)
        return np.asarray(self.basis.T @ (self.weights[:, None] * Y))

    def kernel_factor(self, beta: float, D: np.ndarray, lmax: int, variation: bool = False):
        """The factors of the spectral kernel matrix, K ≈ e^{shift} A G Aᵀ (see :meth:`kernel_matrix`).

        Parameters
        ----------
        beta : float
            β > 0.
        D : None, float, array_like of shape (3,) (a diagonal) or (3, 3)
            Interaction matrix (None: identity), as in :meth:`kernel_matrix`.
        lmax : int
            Degree L ≥ 0 of the kernel's truncation.
        variation : bool
            G of the kernel less its constant part (see :meth:`kernel_matrix`).

        Returns
        -------
        A : ndarray, shape (ndof, (L + 1)²)
            :meth:`harmonic_moments`.
        G : ndarray, shape ((L + 1)², (L + 1)²)
            The kernel's coefficients in the real harmonic basis, scaled by e^{−shift}.
        shift : float
            The scaling exponent, β‖D‖₂.

        Raises
        ------
        TypeError, ValueError
            β not finite and > 0, D not of those shapes, ``lmax`` not an integer ≥ 0, ``variation`` not a bool.
        """
        from .._validate import flag
        from ._kernel import check_beta, check_D

        # unchecked, D as a list raised AttributeError ('list' object has no attribute 'size') and β = −1 returned
        # the factors of another kernel
        beta, D, lmax = check_beta(beta), check_D(D, 3), nonneg_int("lmax", lmax)
        G, shift = kernel_coefficients(beta, D, lmax, flag("variation", variation))
        return self.harmonic_moments(lmax), G, shift

    def energy(self, values, beta: float, D=None) -> float:
        """E_{β,D} of the FE function with nodal ``values`` through the truncated kernel (tail ≤ 1e-15·λ_0).

        Cost O(nt·nq + L² log L) for D = c·I: the moments u_k = ∫ ρ Y_k dσ by the space's quadrature (an adjoint
        NUFFT, accurate to ~1e-15 of ∫|ρ| dσ), then (1/2β) uᵀGu; a general D adds G (:func:`kernel_coefficients`,
        FFTs over the rings of its grid and one product per order, O(L⁵): 0.3–0.4 s at L = 37, 7–17 s at L = 91 on
        a loaded 2-core machine, where the former dense product, O(L⁶), took 2.1 s and 156 s).
        :func:`meanfield.energy_estimate` of an :class:`FEDensity` also estimates the quadrature's error.

        Parameters
        ----------
        values : array_like, shape (ndof,)
            Nodal values of ρ (w.r.t. σ), finite.
        beta : float
            β > 0.
        D : None, float, array_like of shape (3,) (a diagonal) or (3, 3)
            Interaction matrix (None: identity), as in :meth:`kernel_matrix`.

        Returns
        -------
        float
            E_{β,D}(ρ) by the space's quadrature (dimensionless).
        """
        from ._kernel import check_beta, check_D

        beta, D = check_beta(beta), check_D(D, 3)
        values = FEDensity(self, values).values          # shape (ndof,), finite
        return _spectral_energy(self.points, self.weights * (self.basis @ values), beta, D)[0]

    def _rule_atoms(self, values, xi, wq):
        """The FE function with nodal ``values`` as atoms of another reference-triangle rule on the same mesh.

        Parameters
        ----------
        values : ndarray, shape (ndof,)
            Nodal values of ρ.
        xi : ndarray, shape (n, 2)
            Nodes of the rule on the reference triangle.
        wq : ndarray, shape (n,)
            Its weights (summing to 1/2, the reference area).

        Returns
        -------
        points : ndarray, shape (nt·n, 3)
            The rule's nodes on S².
        atoms : ndarray, shape (nt·n,)
            σ-weight × ρ at each node.
        """
        points, weights = _cell_rule(self.mesh, xi, wq)
        tab = self.element.tabulate(0, xi)[0, :, :, 0]                   # (n, ndofs_cell)
        return points, weights * (values[self.cell_dofs] @ tab.T).ravel()

    def _kernel_direct(self, beta: float, D: np.ndarray, variation: bool = False):
        from ._kernel import scaled_kernel, spectral_norm

        shift = beta * spectral_norm(D)
        bw = sparse.csr_matrix(self.basis.multiply(self.weights[:, None]))   # (Q, n): σ_q φ_j(x_q)
        bwT = bw.T.tocsr()
        x = self.points
        bdx = np.ascontiguousarray(beta * (x @ D.T).T)
        n, Q = self.ndof, len(x)
        nt, nq = len(self.cell_dofs), Q // len(self.cell_dofs)
        tri_chunk = max(1, 2 ** 21 // (Q * nq))

        def work(starts):
            K = np.zeros((n, n))
            for t0 in starts:                            # chunks of triangles (their quadrature nodes)
                t1 = min(t0 + tri_chunk, nt)
                rows = slice(t0 * nq, t1 * nq)
                e = scaled_kernel(x[rows] @ bdx, shift, variation)    # (c, Q): e^{β⟨x_c, D x_q⟩ − shift}
                t = np.asarray(bwT @ e.T).T              # (c, n): Σ_q e_cq σ_q φ_j(x_q)
                idx = np.unique(self.cell_dofs[t0:t1])
                local = bw[rows][:, idx].toarray()       # (c, |idx|): σ_c φ_i(x_c)
                K[idx] += local.T @ t
            return K

        from ..sphere._sh import NTHREADS
        starts = list(range(0, nt, tri_chunk))
        groups = [starts[i::NTHREADS] for i in range(min(NTHREADS, len(starts)))]
        if len(groups) == 1:
            K = work(groups[0])
        else:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(max_workers=len(groups)) as ex:   # numpy releases the GIL
                K = sum(ex.map(work, groups))
        return 0.5 * (K + K.T), shift

    # -- point location -----------------------------------------------------------------------
    @functools.cached_property
    def _tree(self):
        from scipy.spatial import cKDTree

        v, f = self.mesh.vertices, self.mesh.triangles
        cen = v[f].sum(axis=1)
        return cKDTree(cen / np.linalg.norm(cen, axis=1)[:, None])

    def _ray_coords(self, p, tri):
        """Reference coordinates ξ (…, 2) and the ray parameter t of p·t ∈ plane of triangles ``tri``."""
        v, f = self.mesh.vertices, self.mesh.triangles
        a, b, c = v[f[tri, 0]], v[f[tri, 1]], v[f[tri, 2]]
        e1, e2 = b - a, c - a
        nrm = np.cross(e1, e2)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.einsum("...i,...i->...", a, nrm) / np.einsum("...i,...i->...", p, nrm)
        r = t[..., None] * p - a
        g11, g12, g22 = (np.einsum("...i,...i->...", e1, e1), np.einsum("...i,...i->...", e1, e2),
                         np.einsum("...i,...i->...", e2, e2))
        r1, r2 = np.einsum("...i,...i->...", r, e1), np.einsum("...i,...i->...", r, e2)
        det = g11 * g22 - g12 ** 2
        xi = np.stack([(g22 * r1 - g12 * r2) / det, (g11 * r2 - g12 * r1) / det], axis=-1)
        return xi, t

    def locate(self, points):
        """The triangle that holds the direction of each point, and its coordinates on the reference triangle.

        Parameters
        ----------
        points : array_like, shape (m, 3)
            Nonzero, finite vectors (normalized here, as in :meth:`FEDensity.evaluate`).

        Returns
        -------
        triangles : ndarray of int, shape (m,)
            Row indices into ``mesh.triangles``.
        xi : ndarray, shape (m, 2)
            Reference coordinates, in the unit triangle.

        Raises
        ------
        ValueError
            ``points`` not of shape (m, 3), not finite, or holding a zero vector (no direction).
        """
        from .._measures import _query_points

        # a zero vector was located with ξ = NaN, a NaN met scipy's "'x' must be finite", a single point (3,) numpy's
        # reshape error and a vector of norm 1e300 an IndexError
        p = _query_points(points, 3)
        if p.ndim != 2:
            raise ValueError(f"`points` must have shape (m, 3); got shape {p.shape}.")
        if len(p) == 0:
            return np.zeros(0, dtype=np.intp), np.zeros((0, 2))
        k = min(8, len(self.mesh.triangles))
        _, cand = self._tree.query(p, k=k)
        cand = cand.reshape(len(p), k)
        xi, t = self._ray_coords(p[:, None, :], cand)
        inside = np.minimum(np.minimum(xi[..., 0], xi[..., 1]), 1 - xi[..., 0] - xi[..., 1])
        inside = np.where(t > 0, inside, -np.inf)
        best = np.argmax(inside, axis=1)
        rows = np.arange(len(p))
        tri, xi_best = cand[rows, best], xi[rows, best]
        miss = inside[rows, best] < -1e-9
        if np.any(miss):                                  # rare: fall back to all triangles
            allt = np.arange(len(self.mesh.triangles))
            xi_all, t_all = self._ray_coords(p[miss][:, None, :], allt[None, :])
            ins = np.minimum(np.minimum(xi_all[..., 0], xi_all[..., 1]), 1 - xi_all[..., 0] - xi_all[..., 1])
            ins = np.where(t_all > 0, ins, -np.inf)
            j = np.argmax(ins, axis=1)
            tri[miss] = j
            xi_best[miss] = xi_all[np.arange(len(j)), j]
        return tri, np.clip(xi_best, 0.0, 1.0)

    def interpolate(self, f) -> np.ndarray:
        """The Lagrange interpolant of ``f``: its values at the nodes.

        Parameters
        ----------
        f : callable
            Maps points of shape (..., 3) to values of shape (...,).

        Returns
        -------
        ndarray, shape (ndof,)

        Raises
        ------
        ValueError
            ``f`` returns complex, non-numeric or non-finite values, or not one value per node (a scalar is taken as
            a constant): numpy's reshape error, or NaN values passed on to the FEDensity.
        """
        from .._measures import _values_at
        from .._validate import function_of

        f = function_of("f", f, "f(points)")
        return np.array(_values_at(f, self.nodes, (self.ndof,), "f", "nodes"))

    def __repr__(self):
        return (f"FESpace(P{self.degree}, level={self.mesh.level}, ndof={self.ndof}, "
                f"quadrature_degree={self.quadrature_degree})")


@dataclass(frozen=True, eq=False)
class FEDensity:
    """A density on S² (w.r.t. the normalized measure σ) in a Lagrange :class:`FESpace`.

    Accepted by :func:`meanfield.energy`, :func:`first_variation` and the stationarity tests
    (through its quadrature nodes as atoms).

    Attributes
    ----------
    space : FESpace
    values : ndarray, shape (ndof,)
        Nodal values (≥ 0 for a minimizer; for P2, nonnegative nodal values do not imply ρ ≥ 0
        between nodes).
    value : float
        E_{β,D} of this density, when it was produced by :func:`minimize_energy` (else NaN): the space's quadrature
        value E_q, exactly the energy of the atoms :meth:`atoms`; :func:`meanfield.energy_estimate` estimates its
        error against the energy of the FE function itself.
    certificate : OptimalityCertificate or None
        The optimality residuals, when produced by :func:`minimize_energy`.
    """

    space: FESpace
    values: np.ndarray
    value: float = float("nan")
    certificate: object = field(default=None, repr=False)

    def __post_init__(self):
        if not isinstance(self.space, FESpace):
            raise TypeError(f"`space` must be an FESpace; got {type(self.space).__name__}.")
        v = np.array(real_array("values", self.values, allow_bool=False))   # complex: imaginary parts were dropped
        if v.shape != (self.space.ndof,):
            raise ValueError(f"`values` must have shape ({self.space.ndof},); got {v.shape}.")
        if not np.all(np.isfinite(v)):
            raise ValueError("`values` must be finite; it contains NaN or inf.")
        v.setflags(write=False)
        object.__setattr__(self, "values", v)

    @property
    def d(self) -> int:
        return 3

    def evaluate(self, points) -> np.ndarray:
        """ρ (w.r.t. σ) at the directions of ``points``, as :meth:`meanfield.Density.evaluate`.

        Parameters
        ----------
        points : array_like, shape (..., 3)
            Nonzero, finite vectors (normalized here).

        Returns
        -------
        ndarray, shape (...,)
            The finite-element interpolant at those points.

        Raises
        ------
        ValueError
            ``points`` not of shape (..., 3), not finite, or holding a zero vector (no direction)."""
        from .._measures import _query_points

        # the checks and the normalization of Density.evaluate: a zero vector gave NaN with numpy's warning, a NaN
        # scipy's "'x' must be finite"
        p = _query_points(points, 3)
        flat = p.reshape(-1, 3)
        tri, xi = self.space.locate(flat)
        tab = self.space.element.tabulate(0, xi)[0, :, :, 0]           # (m, ndofs_cell)
        vals = np.einsum("mk,mk->m", tab, self.values[self.space.cell_dofs[tri]])
        return vals.reshape(p.shape[:-1])

    def mass(self) -> float:
        """∫ ρ dσ, by the space's quadrature.

        Returns
        -------
        float
            The mass (dimensionless; σ is the normalized uniform measure, so the uniform ρ = 1 has mass 1).
        """
        return float(self.space.mass @ self.values)

    def atoms(self):
        """The density as weighted quadrature nodes: ∫ f ρ dσ ≈ Σ_q a_q f(x_q).

        Returns
        -------
        points : ndarray, shape (Q, 3)
            The quadrature nodes x_q on S² (unit vectors).
        weights : ndarray, shape (Q,)
            a_q = σ_q ρ(x_q), σ_q the node's quadrature weight (they sum to :meth:`mass`; negative where ρ is).
        """
        return self.space.points, self.space.weights * (self.space.basis @ self.values)

    def to_density(self, lmax: int):
        """The :class:`~meanfield.Density` of degree ≤ lmax with the same moments ∫ ρ conj(Y_ℓm) dσ.

        Parameters
        ----------
        lmax : int
            Band limit L ≥ 0 of the result.

        Returns
        -------
        Density
            On S², its coefficients the moments of ρ by the space's quadrature.
        """
        from .._measures import Density
        from ..sphere import _sh as sh

        lmax = nonneg_int("lmax", lmax)
        pts, a = self.atoms()
        return Density(4 * np.pi * sh.adjoint_synthesis_points(a, pts, lmax), lmax, 3)

    def __repr__(self):
        return (f"FEDensity(P{self.space.degree}, level={self.space.mesh.level}, ndof={self.space.ndof}, "
                f"mass={self.mass():.6g})")
