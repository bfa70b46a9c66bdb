"""Eulerian discretizations that the spectral backend runs on: S² harmonics, S¹ Fourier, zonal Gegenbauer.

Each basis offers the same small set of operations on coefficient arrays ``c`` (last axis = the
coefficients of one field) and on values at its quadrature nodes ("grid", last axes = grid shape):
``synth``, ``analyze`` (an L² projection by quadrature, alias-free for quadratic products),
``conv`` (a degree-diagonal multiplier, e.g. Funk–Hecke), ``grad`` (tangent components at the nodes),
``div`` (coefficients of the divergence of a tangent field, with zero mass exactly), ``power``
(degree spectrum), ``integrate`` (∫ · dσ, σ the normalized uniform measure) and ``inner`` (∫ f g dσ of
two grid fields, without their product as a temporary).  Tangent fields are
arrays of shape (ncomp,) + grid shape, components along an orthonormal tangent frame.
"""
from __future__ import annotations

import numpy as np

from ..sphere import _circle as circ
from ..sphere import _sh as sh
from ..sphere import _zonal as zon

_FOUR_PI = 4 * np.pi


def workspace(basis, name: str, shape: tuple, dtype=float) -> np.ndarray:
    """A scratch array ``name`` of ``shape`` and ``dtype`` kept on ``basis`` between calls.

    Fresh large temporaries are mmap'd and page-faulted on every call (a third of a right-hand side at
    L ≈ 100); the right-hand side writes its grid fields into these instead (same values).
    """
    ws = basis.__dict__.setdefault("_workspace", {})
    a = ws.get(name)
    if a is None or a.shape != shape or a.dtype != dtype:
        a = ws[name] = np.empty(shape, dtype)
    return a


def _into(values, out):
    if out is None:
        return values
    out[...] = values
    return out


class S2Basis:
    """Orthonormal spherical harmonics on S² with a 3/2-rule Gauss–Legendre grid (ducc0)."""

    d = 3
    ncomp = 2
    has_ambient = True

    def __init__(self, lmax: int):
        self.lmax = lmax
        self.grid = sh.SphereGrid.for_bandlimit(lmax, dealias=True)
        self.ell, self.m = sh.lm_arrays(lmax)
        self.ncoef = sh.nalm(lmax)
        self.weights = self.grid.weights / _FOUR_PI          # σ-weights of the nodes, Σ = 1
        self.ring_weights = self.grid.ring_weights / _FOUR_PI  # (ntheta,): the same, constant along each ring
        self.points = self.grid.points                         # (ntheta, nphi, 3)
        th, ph = np.meshgrid(self.grid.theta, self.grid.phi, indexing="ij")
        self.frame = np.stack(sh.tangent_basis(th, ph))        # (2, ntheta, nphi, 3): e_θ, e_φ

    def synth(self, c, out=None):
        return sh.synthesis(c, self.lmax, self.grid, out=out)

    def analyze(self, v, lmax=None):
        return sh.analysis(v, self.lmax if lmax is None else lmax, self.grid)

    def conv(self, c, per_degree):
        return c * per_degree[self.ell]

    def grad(self, c, out=None):
        return sh.gradient(c, self.lmax, self.grid, out=out)

    def div(self, f):
        return sh.divergence(f, self.lmax, self.grid)

    def power(self, c):
        return sh.degree_power(c, self.lmax)

    def integrate(self, v):
        return np.sum(v * self.weights, axis=(-2, -1))

    def inner(self, f, g):
        # ring sums, then the ring weights: one pass over the grid (einsum: not a BLAS dot, which threads)
        return np.einsum("ij,ij->i", f, g) @ self.ring_weights

    def mass(self, c):
        return c[..., 0].real / np.sqrt(_FOUR_PI)

    def pair(self, a, b):
        """∫ f g dσ from coefficients (Parseval)."""
        w = np.where(self.m == 0, 1.0, 2.0)
        return np.sum(w * (a * np.conj(b)).real, axis=-1) / _FOUR_PI

    def uniform(self):
        c = np.zeros(self.ncoef, complex)
        c[0] = np.sqrt(_FOUR_PI)
        return c

    def resize(self, c, lmax):
        return sh.resize(c, self.lmax, lmax)

    def tangent_components(self, vec):
        """Ambient vectors (grid, 3) → tangent components (2, grid)."""
        return np.einsum("kijd,ijd->kij", self.frame, vec)

    def energy_weights(self, lam):
        """E_β-weights: ∬ e^{β⟨x,y⟩}ρρ dσdσ = Σ_c w_c |c|² (per coefficient)."""
        return lam[self.ell] * np.where(self.m == 0, 1.0, 2.0) / _FOUR_PI


class _SeriesBasis:
    """Shared by the one-index expansions (Fourier on S¹, Gegenbauer): coefficient k = 0..L, c_0 = mass."""

    def uniform(self):
        c = np.zeros(self.ncoef, complex)
        c[0] = 1.0
        return c

    def resize(self, c, lmax):
        out = np.zeros(c.shape[:-1] + (lmax + 1,), complex)
        k = min(lmax, self.lmax) + 1
        out[..., :k] = c[..., :k]
        return out


class CircleBasis(_SeriesBasis):
    """Fourier series on S¹ with 3L+2 equispaced nodes (FFT)."""

    d = 2
    ncomp = 1
    has_ambient = True

    def __init__(self, lmax: int):
        self.lmax = lmax
        self.n = circ.circle_grid_size(lmax)
        self.ell = np.arange(lmax + 1)
        self.ncoef = lmax + 1
        self.weights = np.full(self.n, 1.0 / self.n)
        self.points = circ.circle_points(self.n)
        phi = circ.circle_angles(self.n)
        self.frame = np.stack([-np.sin(phi), np.cos(phi)], axis=-1)[None]   # (1, n, 2): e_φ

    def synth(self, c, out=None):
        return _into(circ.circle_synthesis(c, self.n), out)

    def analyze(self, v, lmax=None):
        return circ.circle_analysis(v, self.lmax if lmax is None else lmax)

    def conv(self, c, per_degree):
        return c * per_degree[: self.ncoef]

    def grad(self, c, out=None):
        return _into(self.synth(circ.circle_derivative(c))[None], out)

    def div(self, f):
        return circ.circle_derivative(self.analyze(f[0]))

    def power(self, c):
        return np.abs(c) ** 2 * np.where(self.ell == 0, 1.0, 2.0)

    def integrate(self, v):
        return np.mean(v, axis=-1)

    def inner(self, f, g):
        return np.einsum("i,i->", f, g) / self.n

    def mass(self, c):
        return c[..., 0].real

    def pair(self, a, b):
        w = np.where(self.ell == 0, 1.0, 2.0)
        return np.sum(w * (a * np.conj(b)).real, axis=-1)

    def tangent_components(self, vec):
        return np.einsum("kid,id->ki", self.frame, vec)

    def energy_weights(self, lam):
        return lam[: self.ncoef] * np.where(self.ell == 0, 1.0, 2.0)


class ZonalBasis(_SeriesBasis):
    """Zonal functions g(⟨x, e⟩) on S^{d-1}, any d ≥ 2, in normalized Gegenbauer polynomials.

    Nodes are the points t_i of :class:`meanfield.sphere.ZonalGrid` with σ-weights; the one tangent component is along the unit
    vector pointing towards the pole e (the direction of ∇_S t, |∇_S t| = √(1 − t²)).
    """

    ncomp = 1
    has_ambient = False

    def __init__(self, lmax: int, d: int):
        self.lmax, self.d = lmax, d
        self.grid = zon.ZonalGrid.for_bandlimit(lmax, d, dealias=True)
        self.t, self.weights = self.grid.t, self.grid.w
        self.ell = np.arange(lmax + 1)
        self.ncoef = lmax + 1
        self.norms = zon.gegenbauer_norms(lmax, d)
        self.P = zon.gegenbauer(lmax, self.t, d)                        # (L+1, n)
        self.dP = self._derivative_values()                              # (L+1, n): √(1−t²) P_ℓ'(t)

    def _derivative_values(self):
        # P_ℓ^{(d)}' = ℓ(ℓ + d − 2)/(d − 1) · P_{ℓ−1}^{(d+2)} (d/dt C_ℓ^λ = 2λ C_{ℓ−1}^{λ+1} and the normalization
        # P(1) = 1), by the O(L·n) recurrence: scipy's eval_jacobi costs O(ℓ) per value, an O(L²·n) table
        # (0.7 s at L = 400, d = 5)
        out = np.zeros((self.ncoef, self.t.size))
        if self.lmax >= 1:
            ell = self.ell[1:, None]
            out[1:] = ell * (ell + self.d - 2) / (self.d - 1) * zon.gegenbauer(self.lmax - 1, self.t, self.d + 2)
        return out * np.sqrt((1 - self.t) * (1 + self.t))[None, :]

    def synth(self, c, out=None):
        return _into(np.real(c) @ self.P, out)

    def min_beyond_rounding(self, c, v, cap=0.0) -> float:
        """The minimum over the nodes of ``v`` = synth(c) with each negative value raised by its rounding estimate
        (:func:`meanfield.sphere._zonal._rounding_bound`; to at most ``cap``, None for no cap).  In high d the nodes
        near the poles carry rounding ~eps·√N(d, ℓ)·‖g‖: e^{5t} on S^999 at L = 40 was −2443 at t = 0.42 (exact
        8.4, weight 3e-44), and the run refused that initial density as negative."""
        delta = zon._rounding_sizes(c, self.d) @ np.abs(self.P)
        raised = v + delta if cap is None else np.minimum(v + delta, cap)
        return float(np.min(np.where(v < 0, raised, v)))

    def analyze(self, v, lmax=None):
        return (np.asarray(v) * self.weights) @ self.P.T / self.norms

    def conv(self, c, per_degree):
        return c * per_degree[: self.ncoef]

    def grad(self, c, out=None):
        return _into((np.real(c) @ self.dP)[None], out)

    def div(self, f):
        # weak form: ∫ P_ℓ div F dσ = −∫ ∇P_ℓ · F dσ; ℓ = 0 vanishes identically.
        return -(f[0] * self.weights) @ self.dP.T / self.norms

    def power(self, c):
        return np.abs(c) ** 2 * self.norms

    def integrate(self, v):
        return np.sum(v * self.weights, axis=-1)

    def inner(self, f, g):
        return np.einsum("i,i,i->", f, g, self.weights)

    def mass(self, c):
        return np.real(c[..., 0])

    def pair(self, a, b):
        return np.sum(self.norms * np.real(a * np.conj(b)), axis=-1)

    def energy_weights(self, lam):
        return lam[: self.ncoef] * self.norms
