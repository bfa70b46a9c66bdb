"""Global minimizers of E_{β,D} over probability densities on S¹ (nodal Fourier) and S² (basix FE).

For D ⪰ 0 the kernel e^{β⟨x,Dy⟩} = Σ_k β^k ⟨D^{1/2}x, D^{1/2}y⟩^k / k! is positive semi-definite, so E
is convex on measures and a minimizer is characterized by its first variation φ = δE/δμ:
φ = 2E on supp ρ and φ ≥ 2E off it.  Both discretizations are a quadratic form in nonnegative
nodal values ρ_i with the mass constraint Σ m_i ρ_i = 1,

    min ½ ρᵀKρ   subject to  ρ ≥ 0,  mᵀρ = 1,

with K the matrix of the kernel's variation e^{β⟨x,Dy⟩} − 1 (scaled by e^{−β‖D‖}).  The kernel's constant
part adds (mᵀρ)² = 1 and is left out: kept, it buried the O(β²) part that sets the minimizer at small β under
rounding at 1e-16 of 1 (:func:`meanfield._energy._kernel.scaled_kernel`).  The problem is
solved as the bound-constrained problem min ½ρᵀHρ − mᵀρ, ρ ≥ 0 (its solution is a positive multiple
of the simplex-constrained one) by a primal–dual active-set Newton method on Cholesky factors,
with scipy's BVLS as the fallback.

The kernel operator is smoothing (its eigenvalues decay like the Funk–Hecke λ_ℓ), so the discrete
problem is a first-kind problem: the energy, the potential and the low moments of the minimizer are
determined to rounding, the nodal values in high-frequency directions are not.  Among the
numerically indistinguishable minimizers we return the one closest to uniform: the objective gets the
Tikhonov pull ½τ‖ρ − 1‖²_{L²(σ)} (Gram matrix M), with τ = ``regularization`` · ρᵀKρ at the minimum, its level
in K's units, e^{−β‖D‖}(2βE − 1) (1e-8 of it by default; found by re-solving, see ``_solve``).  How far that (and the
solver) can have left E above the discrete minimum is reported as the duality gap of the convex problem, and the
optimality certificate is evaluated with the exact (unregularized) first variation.
The price is a floor on the nodal values: the rounding of K (~1e-14 of its largest entry) amplified by
1/τ, ~1e-6 by default when the minimum's level is near the kernel's largest values (more for a strongly
anisotropic D), while the energy, the potential and the low moments are exact to ~1e-14.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import linalg, optimize

from .._errors import ConvergenceError
from .._memory import require
from .._measures import Density
from .._validate import nonneg_int, positive_float
from ..sphere import _circle as circ
from ..sphere._sh import NTHREADS
from ._kernel import (check_beta, check_D, check_symmetric, dimension_for, scaled_kernel, spectral_norm,
                      variation_bandlimit)


@dataclass(frozen=True)
class OptimalityCertificate:
    """First-order optimality residuals of a minimizer ρ of a convex energy (D ⪰ 0).

    With φ = δE/δμ evaluated pointwise at the nodes and the level 2E = ∫ φ dμ:

    Attributes
    ----------
    level : float
        2E, the value φ must take on supp ρ.
    support_residual : float
        max over support nodes of |φ − 2E| / 2E (support: ρ_i > 1e-8 · max ρ).
    off_support_violation : float
        max(0, max of (2E − φ)) / 2E over the nodes outside the support (S²), or over a grid 8× finer than
        the nodes, everywhere (S¹: φ ≥ 2E must hold on the whole circle, and a discrete minimizer can miss a
        lower φ between its nodes, e.g. a Dirac mass at an angle between two nodes).
    support_fraction : float
        Fraction of nodes on the support: ρ_i > 1e-8 · max ρ (smaller nodal values are rounding).
    regularization : float
        The Tikhonov weight τ (absolute, same units as the quadratic form).
    regularization_energy : float
        A bound on how far E lies above the minimum of the discrete problem (the "selection bias" of the
        message): the Frank–Wolfe duality gap (ρᵀKρ − min_i (Kρ)_i/m_i)·e^{shift}/β of the convex quadratic
        program, which covers the selection rule's pull and the solver's residual.
    solver : str
        "active-set" (primal–dual active set on Cholesky factors) or "bvls" (scipy fallback).
    iterations : int
    """

    level: float
    support_residual: float
    off_support_violation: float
    support_fraction: float
    regularization: float
    regularization_energy: float
    solver: str
    iterations: int

    def satisfied(self, tol: float = 1e-6) -> bool:
        """True when both residuals are ≤ ``tol`` (relative to 2E), and the level 2E is a positive number.

        Parameters
        ----------
        tol : float
            Bound on ``support_residual`` and ``off_support_violation``.

        Returns
        -------
        bool
        """
        return self.level > 0 and self.support_residual <= tol and self.off_support_violation <= tol

    @property
    def message(self) -> str:
        """One line: the residuals on and off the support, the support fraction, the selection bias, the solver."""
        return (f"δE/δμ = 2E·(1 ± {self.support_residual:.2e}) on the support ({100 * self.support_fraction:.1f}% "
                f"of nodes), ≥ 2E·(1 − {self.off_support_violation:.2e}) off it; selection bias ≤ "
                f"{self.regularization_energy:.2e} in E ({self.solver}, {self.iterations} iteration{'' if self.iterations == 1 else 's'}).")


@dataclass(frozen=True, eq=False, repr=False)
class MinimizingDensity(Density):
    """A :class:`~meanfield.Density` returned by :func:`minimize_energy`, with its energy and certificate.

    The density is the trigonometric interpolant of degree L of the nodal solution; ``nodal_values``
    (shape (2L + 1,), ≥ 0, at the angles 2πi/(2L+1)) are the optimizer's unknowns.  Between the nodes
    the interpolant of a minimizer with partial support can dip below zero (Gibbs): use the nodal
    values, or a larger ``lmax``, for concentrated minimizers.

    Attributes
    ----------
    value : float
        E_{β,D} of the minimizer (dimensionless).
    certificate : OptimalityCertificate
        Its first-order optimality residuals.
    nodal_values : ndarray, shape (2L + 1,)
        ρ (w.r.t. σ) at :attr:`nodes`, ≥ 0.
    """

    value: float = float("nan")
    certificate: OptimalityCertificate | None = None
    nodal_values: np.ndarray | None = field(default=None, repr=False)

    @property
    def nodes(self) -> np.ndarray:
        """The points (cos 2πi/n, sin 2πi/n), n = 2L + 1, of :attr:`nodal_values`: shape (n, 2) (the plot of the nodal
        values and the certificate's first variation were computed at them, but a user had to rebuild them)."""
        return circ.circle_points(2 * self.lmax + 1)

    def __repr__(self):
        return f"MinimizingDensity(lmax={self.lmax}, d={self.d}, value={self.value:.12g})"


# ----------------------------------------------------------------------------------------------
# the quadratic program

def _nonneg_qp(H: np.ndarray, b: np.ndarray, max_iter: int = 100):
    """min ½xᵀHx − bᵀx subject to x ≥ 0, H ≻ 0: primal–dual active set, BVLS fallback.

    Returns (x, iterations, solver).
    """
    n = len(b)
    active = np.zeros(n, dtype=bool)
    seen = set()
    for it in range(1, max_iter + 1):
        free = ~active
        x = np.zeros(n)
        if np.any(free):
            Hff = H[np.ix_(free, free)]
            x[free] = linalg.cho_solve(linalg.cho_factor(Hff, check_finite=False), b[free], check_finite=False)
        lam = H @ x - b
        scale_x = max(float(np.max(np.abs(x))), 1e-300)
        scale_l = max(float(np.max(np.abs(b))), 1e-300)
        new = (free & (x < -1e-13 * scale_x)) | (active & (lam > -1e-13 * scale_l))
        if np.array_equal(new, active):
            return np.maximum(x, 0.0), it, "active-set"
        key = new.tobytes()
        if key in seen:           # cycling: hand over to BVLS
            break
        seen.add(key)
        active = new
    R = linalg.cholesky(H, lower=False, check_finite=False)
    rhs = linalg.solve_triangular(R, b, trans="T", check_finite=False)
    res = optimize.lsq_linear(R, rhs, bounds=(0.0, np.inf), method="bvls", tol=1e-14, max_iter=10 * n)
    if res.status < 1:
        raise ConvergenceError(f"the nonnegative QP did not converge (active set cycled, BVLS: {res.message}).")
    return res.x, it + res.nit, "bvls"


_MAX_LEVEL_SOLVES = 4
_PULL_BISECTIONS = 6


def _solve(K, m, M, regularization):
    """Minimize ½ρᵀKρ + ½τ(ρ − 1)ᵀM(ρ − 1) over ρ ≥ 0, mᵀρ = 1 (M1 = m: the gradient of the pull is τ(Mρ − m)).

    τ = ``regularization`` · ρᵀKρ at the minimizer (2βE in K's units): the pull is measured against the
    minimum's own level.  A first solve pulls relative to the uniform measure's level 1ᵀK1/(Σm)²; when
    the level it finds is lower by more than 2× (a strongly anisotropic D: the uniform measure's level
    can exceed the minimum's by 10⁶, and a pull of that size biases the minimum by percents), it is
    solved again at the level found, until the level settles (a few solves at most).
    """
    one = np.ones(len(m))
    if not np.any(K):                           # D = 0: a constant kernel, every density minimizes; the uniform one
        return one / float(np.sum(m)), 0.0, 0, "constant kernel"
    level = float(one @ K @ one) / float(np.sum(m)) ** 2
    # the level is a weighted mean of K's entries, each rounded to ~eps of the largest: below that it is noise (at
    # β‖D‖ = 1e-200 it was −7.8e-218 or, with exact zeros in odd degrees, +5.7e-219 against entries of ~1e-200)
    noise = _LEVEL_ROUNDING * float(np.max(np.abs(K)))
    if not (level > noise and (regularization == 0 or regularization * level > 0)):
        # a pull τ ∝ level that is ≤ 0 (or underflows to 0) lifts nothing: "raise `regularization`" was no way out
        raise ConvergenceError(
            f"the kernel's variation is lost in rounding (the uniform density's level 1ᵀK1 = {level:.3g} is not above "
            f"the rounding of the kernel matrix's entries, {noise:.3g}, or the pull τ = {regularization * level:.3g} "
            "is not positive: the kernel e^(β⟨x,Dy⟩) − 1 is below float64 "
            "resolution, β‖D‖ ≲ 1e-9): the minimizer tends to its β → 0 limit within O(β‖D‖), so solve at "
            "β‖D‖ ≈ 1e-6 for that limit.")
    if regularization == 0:                     # no pull: one solve, no level to look for
        x, iters, solver = _solve_at(K, m, M, 0.0, regularization)
        return x, 0.0, iters, solver
    solved = None
    for _ in range(_MAX_LEVEL_SOLVES):
        tau = regularization * level
        try:
            x, iters, solver = _solve_at(K, m, M, tau, regularization)
        except ConvergenceError:
            if solved is None:
                solved = _lift_until_solvable(K, m, M, tau, level, regularization)
            return _smallest_solvable_pull(K, m, M, tau, solved, regularization)
        solved = (x, tau, iters, solver)
        found = float(x @ K @ x)
        if not 0 < found < 0.5 * level:   # settled, or a level K cannot resolve (refused by the caller)
            break
        level = found
    return solved


def _lift_until_solvable(K, m, M, tau_singular, level, regularization):
    """The first solve that succeeds when the pull τ_singular is below the rounding of K, raising τ 100-fold up to the
    level itself (a pull as large as the minimum: beyond it the selection rule, not K, would set the density).

    At small β‖D‖ the kernel's variation has degree 1 at ~β‖D‖ and degree ℓ at ~(β‖D‖)^ℓ, so the level-relative
    pull (1e-8 of degree 2's ~(β‖D‖)²) fell below the rounding of the degree-1 entries from β‖D‖ ≈ 1e-8 on, and
    the minimizer was refused as "numerically singular", its advice to raise `regularization` returning the
    uniform density; a pull just above that rounding keeps the second moments the minimizer has."""
    tau = tau_singular
    while 0 < tau < level:          # a pull ≤ 0 (a level lost in rounding, β‖D‖ ~ 1e-200) cannot be lifted
        tau = min(100.0 * tau, level)
        try:
            x, iters, solver = _solve_at(K, m, M, tau, regularization)
        except ConvergenceError:
            continue
        return x, tau, iters, solver
    return (*_solve_at(K, m, M, tau_singular, regularization),)      # raises its error


def _smallest_solvable_pull(K, m, M, tau_singular, solved, regularization):
    """The minimizer at the smallest pull between ``tau_singular`` (below the rounding of K) and the pull of
    ``solved`` that still solves, by bisection in log τ (to a factor ~1.3): the level-relative pull is out
    of reach, and a larger one only raises the selection bias (reported in the certificate)."""
    low, best = np.log(tau_singular), solved
    high = np.log(solved[1])
    for _ in range(_PULL_BISECTIONS):
        tau = float(np.exp(0.5 * (low + high)))
        try:
            x, iters, solver = _solve_at(K, m, M, tau, regularization)
        except ConvergenceError:
            low = np.log(tau)
            continue
        best, high = (x, tau, iters, solver), np.log(tau)
    return best


def _solve_at(K, m, M, tau, regularization):
    H = K + tau * M
    try:
        x, iters, solver = _nonneg_qp(H, m)
    except linalg.LinAlgError:
        advice = ("use `regularization` > 0" if regularization == 0 else
                  "raise `regularization` (the default is 1e-8)")
        raise ConvergenceError("the discrete kernel matrix is numerically singular (the kernel is smoothing, and "
                               f"the pull τ = {tau:.2e} does not lift it); {advice}; got "
                               f"regularization={regularization!r}.") from None
    mass = float(m @ x)
    if not mass > 0:
        raise ConvergenceError("the nonnegative QP returned a zero density.")
    return x / mass, iters, solver


_SUPPORT_FLOOR = 1e-8   # relative nodal value below which a node counts as off the support in the certificate
_MIN_SCALED_LEVEL = 1e-10   # the minimum's level relative to the kernel's largest value, below which it is noise
_LEVEL_ROUNDING = 8 * np.finfo(float).eps     # the uniform level's rounding, relative to the kernel matrix's largest entry


def _energy_of(rho, K, shift, beta) -> float:
    """E of the nodal values ``rho`` (mass 1) from the matrix ``K`` of the kernel's variation e^{β⟨x,Dy⟩} − 1
    scaled by e^{-shift}: E = (1 + e^{shift} ρᵀKρ)/(2β).  Refuses a minimum whose level ρᵀKρ is below the
    resolution of the scaled matrix (its entries are at most 1 − e^{−shift}, where the kernel is largest)."""
    scaled = float(rho @ K @ rho)
    top = float(-np.expm1(-shift))
    if top == 0.0:                              # D = 0: the constant kernel, E = 1/(2β) for every density
        return float(1.0 / (2.0 * beta))
    if not scaled > _MIN_SCALED_LEVEL * top:
        # the advice depends on the end: "lower β‖D‖" was given at β‖D‖ = 1e-10 too, where it is β‖D‖ that is too small
        advice = ("Lower β‖D‖, or use find_stationary(direction='descent') on particles." if shift >= 1 else
                  "At small β‖D‖ the minimizer is set by the kernel's degree-2 part, ~(β‖D‖)² against its degree-1 "
                  "part ~β‖D‖, and it tends to its β → 0 limit within O(β‖D‖): solve at β‖D‖ ≈ 1e-6 for that limit.")
        raise ConvergenceError(
            f"the minimum's kernel level is {scaled / top:.3g} of the kernel's largest variation e^(β‖D‖) − 1 "
            f"(β‖D‖ = {shift:.4g}), below float64 resolution of the discrete problem: its energy would have no "
            f"correct digit. {advice}")
    return float((1.0 + scaled * np.exp(shift)) / (2.0 * beta))


def _duality_gap(rho, K, m, shift, beta, phi, level) -> float:
    """A bound on E(ρ) − min E over the discrete problem {ρ ≥ 0, mᵀρ = 1}: the Frank–Wolfe (duality) gap.

    f(ρ) = ½ρᵀKρ is convex (K ⪰ 0 for D ⪰ 0), so f(ρ*) ≥ f(ρ) + min_{ρ' feasible} ⟨g, ρ' − ρ⟩, g = Kρ.  That linear
    program has the dual max λ subject to g − λm ≥ 0, whose best λ is min_{m_i > 0} g_i/m_i when it is feasible
    (≥ g_i/m_i where m_i < 0, g_i ≥ 0 where m_i = 0): E(ρ) − E* ≤ e^{shift}(ρᵀg − λ)/β.  It covers whatever kept ρ
    from the minimum: the selection rule's pull, and the solver.  (The pull's own size τ‖ρ − 1‖²/(2β), reported
    before, is not a bound: a pull that flattens ρ towards 1 also shrinks ‖ρ − 1‖, and at β = 1e-4, D = diag(1, 2)
    on S¹ the minimum came back 6.5e-6 above the discrete one with a "bias" of 2.0e-6.)

    P2 vertex functions have a slightly negative mass m_i (−1.5e-5 at level 2), and there the dual is infeasible:
    the gap of the continuous problem at the nodes, 2E − min_i φ(x_i) in energy units (``phi`` the first
    variation at the nodes, ``level`` = 2E), is returned instead — the linearization of E over all probability
    measures, sampled at the nodes."""
    g = K @ rho
    pos, neg, zero = m > 0, m < 0, m == 0
    lam = float(np.min(g[pos] / m[pos]))
    if (np.any(neg) and lam < float(np.max(g[neg] / m[neg]))) or np.any(g[zero] < 0):
        return max(float(level - np.min(phi)), 0.0)
    gap = float(rho @ g) - lam
    return max(gap, 0.0) * float(np.exp(shift)) / beta


def _certificate(phi, rho, m, M, K, E, tau, shift, beta, iters, solver, phi_everywhere=None):
    """The certificate from φ at the nodes (and, when given, φ on a fine grid for the off-support test)."""
    level = 2.0 * E
    supp = rho > _SUPPORT_FLOOR * np.max(rho)     # nodal values at rounding level (~1e-18) are off the support
    res_on = float(np.max(np.abs(phi[supp] - level))) / level
    off = phi[~supp] if phi_everywhere is None else phi_everywhere
    res_off = float(max(0.0, np.max(level - off, initial=-np.inf))) / level
    return OptimalityCertificate(float(level), res_on, res_off, float(np.mean(supp)), float(tau * np.exp(shift)),
                                 _duality_gap(rho, K, m, shift, beta, phi, level), solver, iters)


# ----------------------------------------------------------------------------------------------
# S¹: nodal values of a trigonometric polynomial

def _minimize_circle(beta, D, lmax, regularization):
    from ._energy import first_variation

    n = 2 * lmax + 1                                   # nodes; the trigonometric interpolant has degree lmax
    lk = variation_bandlimit(beta * spectral_norm(D), 2)
    N = n + 2 * lk + 2                                 # fine grid: exact for degree lmax + lk
    shift = beta * spectral_norm(D)
    xf = circ.circle_points(N)
    kf = scaled_kernel(beta * (xf @ D) @ xf.T, shift, variation=True) / N ** 2   # the constant part is fixed by
    # the mass (K = K_variation + e^{−shift} m mᵀ), and kept in K it buried the O(β²) part that sets the minimizer
    # interpolation matrix nodes → fine grid (Dirichlet kernel): P = Re(E_fine · F_nodes)
    k = np.arange(-lmax, lmax + 1)
    phin = circ.circle_angles(n)
    P = np.real(np.exp(1j * np.outer(circ.circle_angles(N), k)) @ np.exp(-1j * np.outer(k, phin))) / n
    K = P.T @ kf @ P
    K = 0.5 * (K + K.T)
    m = np.full(n, 1.0 / n)
    M = np.diag(m)                                     # trapezoid = exact L²(σ) Gram matrix of nodal values
    rho, tau, iters, solver = _solve(K, m, M, regularization)
    E = _energy_of(rho, K, shift, beta)
    coeffs = circ.circle_analysis(rho, lmax)
    dens = Density(coeffs, lmax, 2)
    phi = first_variation(dens, beta, D, circ.circle_points(n))
    fine = first_variation(dens, beta, D, circ.circle_points(8 * n))
    cert = _certificate(phi, rho, m, M, K, E, tau, shift, beta, iters, solver, fine)
    return MinimizingDensity(coeffs, lmax, 2, value=E, certificate=cert, nodal_values=rho)


# ----------------------------------------------------------------------------------------------
# S²: basix Lagrange elements

def _minimize_sphere(beta, D, level, degree, quadrature_degree, regularization):
    from ._energy import first_variation
    from ._fem import FEDensity, FESpace, SphereMesh

    space = FESpace(SphereMesh.icosahedral(level), degree, quadrature_degree)
    K, shift = space.kernel_matrix(beta, D, variation=True)
    m = np.array(space.mass)
    M = space.mass_matrix.toarray()
    rho, tau, iters, solver = _solve(K, m, M, regularization)
    E = _energy_of(rho, K, shift, beta)
    dens = FEDensity(space, rho)
    phi = first_variation(dens, beta, D, space.nodes)
    cert = _certificate(phi, rho, m, M, K, E, tau, shift, beta, iters, solver)
    return FEDensity(space, rho, value=E, certificate=cert)


def minimize_energy(beta, D=None, d: int | None = None, *, lmax: int | None = None, level: int | None = None,
                    degree: int | None = None, quadrature_degree: int | None = None,
                    regularization: float = 1e-8):
    """The global minimizer of E_{β,D} over probability densities on S^{d-1}, for D ⪰ 0.

    Parameters
    ----------
    beta : float
        β > 0.
    D : None, float, array_like of shape (d,) (a diagonal) or (d, d)
        Symmetric positive semi-definite interaction matrix (None: identity).  For D with a
        negative eigenvalue the minimizer is a Dirac at its bottom eigenvector, not a density
        (see :func:`classify`), and this function raises.
    d : {2, 3}, optional
        S¹ or S²; default: the size of ``D`` when it is given as d numbers or a (d, d) array, else 3.
    lmax : int, optional
        d = 2: degree L of the trigonometric density; the unknowns are its values at 2L + 1
        equispaced nodes (default 64).
    level : int, optional
        d = 3: refinements of the icosahedron (default 3: 642 vertices).
    degree : {1, 2}, optional
        d = 3: Lagrange degree (default 1).
    quadrature_degree : int, optional
        d = 3: degree of the basix triangle rule, in [2·degree, 30] (default 2·degree + 2).
    regularization : float
        Weight ≥ 0 of the pull ½τ‖ρ − 1‖² towards ρ ≡ 1, relative to the minimum's level ρᵀKρ (the kernel's
        variation e^{β⟨x,Dy⟩} − 1 integrated against it, e^{−β‖D‖}(2βE − 1) in K's units), that selects
        one of the numerically indistinguishable minimizers (see the module notes).  It raises the
        minimum of the discrete problem by at most ``certificate.regularization_energy``, its duality gap
        (reported in the certificate's message; measured on S¹ against the smallest pull that still solves,
        1e-14: 2.7e-11 of 0.1539 at β = 5, D = diag(0.2, 2), within its bound 4.0e-9; 6.8e-11 of 0.7710 at
        β = 1, D = diag(20, 1), within 7.8e-8; against an independent NNLS minimum over 240 points, β = 1e-4,
        D = diag(1, 2): 9e-13, the rounding of E = 5000, within 3.3e-13 + that rounding; the degree L adds its
        own error: 2e-9 at the default L = 64 against 1000 nodes there).  Small β is resolved: the pull is
        relative to the kernel's variation, not to its constant part, and the second moments meet the limit
        β → 0, M_kk ∝ 1/D_k², within O(β) (β = 1e-5 and 1e-8: 0.8, 0.2 for D = diag(1, 2) on S¹; 0.648, 0.233, 0.119
        for D = diag(0.6, 1, 1.4) on S²), down to β‖D‖ ≈ 1e-8; below ≈ 1e-9 the degree-2 part is under 1e-10 of the
        degree-1 part and ConvergenceError says so.
        A smaller value lowers that bias down to where
        the rounding of the kernel matrix makes the problem singular; below that the smallest pull that
        still solves is used (the certificate reports its bias).  0 disables it: the nodal values in
        high-frequency directions are then rounding noise, and beyond small L the kernel matrix is
        numerically singular, which raises ConvergenceError.

    Returns
    -------
    MinimizingDensity (d = 2) or FEDensity (d = 3)
        The minimizer, a density w.r.t. σ with unit mass; ``.value`` is its energy and
        ``.certificate`` the :class:`OptimalityCertificate`.  Both accept ``evaluate(points)``
        and are accepted by :func:`meanfield.energy`.  The nodal values are ≥ 0, but when the support
        is partial the S¹ interpolant rings between the nodes (down to −8 for D = diag(1, 0), where
        the minimizer is two Diracs): use ``nodal_values`` there, or ``evaluate`` only on the support.

    Raises
    ------
    ConvergenceError
        When the discrete problem is singular (see ``regularization``), or when the minimum's kernel level
        is below 1e-10 of the kernel's largest value e^{β‖D‖}: the kernel matrix is scaled by e^{-β‖D‖},
        so such a minimum has no correct digit (e.g. D = diag(40, 0) at β = 1, whose minimum sits e^{-40}
        below; it came back 2.7× too high).  A strongly anisotropic D at large β needs particles there.  At the
        other end, β‖D‖ ≲ 1e-9, the minimum's level (the kernel's degree-2 part) is below 1e-10 of its
        variation too.
    InsufficientMemoryError
        Before any work, when the dense matrices of the discretization (about 8·(6 + threads)·n² bytes
        for n unknowns on S², 64·n_fine² on S¹) exceed the available memory.
    """
    a = minimize_arguments(beta, D, d, lmax=lmax, level=level, degree=degree,
                           quadrature_degree=quadrature_degree, regularization=regularization)
    if a["d"] == 2:
        return _minimize_circle(a["beta"], a["D"], a["lmax"], a["regularization"])
    return _minimize_sphere(a["beta"], a["D"], a["level"], a["degree"], a["quadrature_degree"], a["regularization"])


def minimize_arguments(beta, D=None, d: int | None = None, *, lmax=None, level=None, degree=None, quadrature_degree=None,
                       regularization=1e-8) -> dict:
    """The arguments of :func:`minimize_energy`, checked and with their defaults, without solving anything.

    Returns
    -------
    dict
        beta, D (d, d), d, regularization, and lmax (d = 2) or level, degree, quadrature_degree (d = 3).
    """
    from ._fem import check_degrees, check_level

    beta = check_beta(beta)
    d = dimension_for(D, d)
    if d not in (2, 3):
        raise ValueError(f"`d` must be 2 or 3 for minimize_energy; got d={d}.")
    D = check_symmetric(check_D(D, d, "the argument `d`"), "minimize_energy")
    lam_min = float(np.linalg.eigvalsh(D)[0])
    if lam_min < -1e-12 * max(1.0, spectral_norm(D)):
        raise ValueError(f"`D` must be positive semi-definite for minimize_energy; its smallest eigenvalue is "
                         f"{lam_min:.6g}.  Then the minimizer is the Dirac at the bottom eigenvector with "
                         "E = e^{β λ_min}/(2β) (see meanfield.classify).")
    regularization = positive_float("regularization", regularization, allow_zero=True)
    if d == 2:
        for name, val in (("level", level), ("degree", degree), ("quadrature_degree", quadrature_degree)):
            if val is not None:
                raise ValueError(f"`{name}` applies to d=3 (the FE discretization of S²); got {name}={val!r} with d=2.")
        lmax = 64 if lmax is None else nonneg_int("lmax", lmax, minimum=1)
        fine = 2 * lmax + 3 + 2 * variation_bandlimit(beta * spectral_norm(D), 2)
        require(64.0 * fine ** 2, f"minimize_energy on S¹ with lmax={lmax} (dense matrices of the {fine}-point grid)",
                "lower `lmax`.")        # measured: ~6 arrays of fine² floats at the peak
        return dict(beta=beta, D=D, d=d, lmax=lmax, regularization=regularization)
    if lmax is not None:
        raise ValueError(f"`lmax` applies to d=2 (the Fourier density on S¹); got lmax={lmax!r} with d=3.")
    level = check_level(3 if level is None else level)
    degree, quadrature_degree = check_degrees(1 if degree is None else degree, quadrature_degree)
    ndof = (10 if degree == 1 else 40) * 4 ** level + 2           # vertices (and edge midpoints for degree 2)
    # measured: 4.2 GB at 10242 unknowns; the direct kernel quadrature (FESpace.kernel_matrix "auto", taken
    # when the kernel's degree lk has (lk + 1)² ≥ ndof) adds one dense matrix per thread
    lk = variation_bandlimit(beta * spectral_norm(D), 3)
    per_thread = NTHREADS if (lk + 1) ** 2 >= ndof else 0
    require(8.0 * (6 + per_thread) * ndof ** 2, f"minimize_energy on S² with level={level}, degree={degree} "
            f"(dense matrices of {ndof} unknowns)", "lower `level` or `degree`.")
    return dict(beta=beta, D=D, d=d, level=level, degree=degree, quadrature_degree=quadrature_degree,
                regularization=regularization)
