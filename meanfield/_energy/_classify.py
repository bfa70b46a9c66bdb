"""Which extremal theorem applies to a symmetric D, and what the extremizers of E_{β,D} are.

The classification follows the sign structure of D (Burger, Kabri, Korolev, Roith, Weigand,
"Analysis of mean-field models arising from self-attention dynamics in transformer architectures with
layer normalization", Phil. Trans. R. Soc. A 383 (2025) 20240233: maximizers for positive definite D,
minimizers for positive (semi-)definite D, maximizers for negative definite and indefinite D).  The
statements below are the ones derived and checked here; each carries a one-line reason or says that
it is only verified numerically (λ_1 ≤ … ≤ λ_d the eigenvalues, v_min, v_max unit eigenvectors):

* upper bound: E(μ) ≤ e^{β max_{x,y}⟨x,Dy⟩}/(2β) = e^{β ρ(D)}/(2β), ρ(D) = max|λ_i|; a Dirac at v_max
  attains it when λ_max = ρ(D)  → **maximizer: δ_{v_max}** (proven).
* lower bound (Jensen): E(μ) ≥ e^{β mᵀDm}/(2β) ≥ e^{β min(λ_min, 0)}/(2β), m = ∫x dμ, |m| ≤ 1
  → for λ_min < 0 **minimizer: δ_{v_min}**, E = e^{βλ_min}/(2β) (proven).
* D ⪰ 0: e^{β⟨x,Dy⟩} = Σ_k β^k⟨D^{½}x, D^{½}y⟩^k/k! is a positive semi-definite kernel, so E is convex and
  E ≥ 1/(2β) with equality iff μ(ker D) = 1.  Singular D → **minimizers: every measure on ker D ∩ S^{d−1}**
  (proven); D ≻ 0 → a unique minimizer, uniform iff D = c·I (proven), otherwise computed by
  :func:`minimize_energy`.
* D ⪯ 0: E(μ) ≤ E(μ_s) for the symmetrization μ_s = ½(μ + μ(−·)), since the kernel splits into
  cosh − sinh(β⟨x, (−D)y⟩) with a positive semi-definite sinh part, and E(μ_s) ≤ cosh(βλ_min)/(2β)
  → **maximizer: the antipodal pair ½(δ_{v_min} + δ_{−v_min})** (proven).
* indefinite with |λ_min| > λ_max: the maximizer is the better of δ_{v_max} (e^{βλ_max}/(2β)) and the
  antipodal pair at v_min (cosh(βλ_min)/(2β)) — **verified numerically only** (multi-start ascent of
  :func:`maximize_energy`; for D = diag(−1, dd), β = 1 the switch is at dd* = ln cosh 1).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._validate import open_fraction
from ._kernel import check_beta, check_D, check_symmetric

KINDS = ("zero", "positive definite", "positive semi-definite", "indefinite", "negative semi-definite",
         "negative definite")


@dataclass(frozen=True)
class Classification:
    """The sign structure of a symmetric D and the extremizers of E_{β,D} it implies.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    eigenvalues : ndarray, shape (d,)
        Ascending.
    eigenvectors : ndarray, shape (d, d)
        Columns, matching ``eigenvalues``.
    maximizer : str
        The maximizers of E over probability measures.
    maximizer_proven : bool
        False when only verified numerically.
    minimizer : str
        The minimizers.
    minimizer_proven : bool
    """

    kind: str
    eigenvalues: np.ndarray = field(repr=False)
    eigenvectors: np.ndarray = field(repr=False)
    maximizer: str
    maximizer_proven: bool
    minimizer: str
    minimizer_proven: bool

    @property
    def lambda_min(self) -> float:
        return float(self.eigenvalues[0])

    @property
    def lambda_max(self) -> float:
        return float(self.eigenvalues[-1])

    def max_value(self, beta) -> float:
        """max E_{β,D} over probability measures (the best theorem candidate when not proven).

        Parameters
        ----------
        beta : float
            β > 0.

        Returns
        -------
        float
            max(e^{β λ_max}, cosh(β λ_min)) / (2β): the Dirac on the top eigenvector or the antipodal pair on
            the bottom one.
        """
        beta = check_beta(beta)
        # in logs, divided by 2β before the exponential: e^{βλ_max} alone overflowed from βλ_max = 709.78, and the
        # maximum, e^{βλ_max}/(2β), read inf up to ≈ 717 (β = 710, D = I: inf for 1.57e305), with numpy's warning
        z = abs(beta * self.lambda_min)
        top = max(beta * self.lambda_max, z + np.log1p(np.exp(-2.0 * z)) - np.log(2.0))      # log cosh z
        with np.errstate(over="ignore"):
            return float(np.exp(top - np.log(2.0 * beta)))

    def min_value(self, beta) -> float | None:
        """min E_{β,D} over probability measures, where it has a closed form.

        Parameters
        ----------
        beta : float
            β > 0.

        Returns
        -------
        float or None
            e^{β min(λ_min, 0)}/(2β) unless D ≻ 0; for D = c·I, c > 0, the energy of the uniform measure;
            None for any other D ≻ 0 (use :func:`minimize_energy`).
        """
        beta = check_beta(beta)
        if self.kind == "positive definite" and not np.allclose(self.eigenvalues, self.eigenvalues[0], rtol=1e-14,
                                                                   atol=0):
            return None
        if self.kind == "positive definite":       # D = cI: the uniform measure
            from ._energy import uniform_energy
            return uniform_energy(beta, np.diag(self.eigenvalues), len(self.eigenvalues))
        return float(np.exp(beta * min(self.lambda_min, 0.0))) / (2 * beta)

    @property
    def message(self) -> str:
        tag = lambda ok: "proven" if ok else "verified numerically only"  # noqa: E731
        ev = ", ".join(f"{x:.6g}" for x in self.eigenvalues)
        return (f"D is {self.kind} (eigenvalues {ev}).\n"
                f"  maximizers: {self.maximizer} [{tag(self.maximizer_proven)}]\n"
                f"  minimizers: {self.minimizer} [{tag(self.minimizer_proven)}]")

    def __str__(self):
        return self.message


def classify(D, tol: float = 1e-12) -> Classification:
    """Classify a symmetric interaction matrix D and state the extremizers of E_{β,D}.

    Parameters
    ----------
    D : array_like, shape (d, d) or (d,)
        Symmetric interaction matrix (d ≥ 2), or its diagonal (d numbers), as the energy functions take it.
    tol : float
        Eigenvalues with |λ| ≤ tol·max|λ| count as zero, 0 < tol < 1.

    Returns
    -------
    Classification
        ``kind``, eigen-decomposition, ``maximizer`` / ``minimizer`` descriptions with ``*_proven``
        flags, ``max_value(beta)``, ``min_value(beta)`` and a readable ``message``.

    Examples
    --------
    >>> import meanfield as mf
    >>> mf.classify([[-1.0, 0.0], [0.0, 0.5]]).kind
    'indefinite'
    """
    a = np.asarray(D) if isinstance(D, np.ndarray) else np.array(D)
    square = a.ndim == 2 and a.shape[0] == a.shape[1]
    if not (square or a.ndim == 1) or a.shape[0] < 2:
        raise ValueError(f"`D` must be a square matrix of shape (d, d) or its diagonal of d numbers, d ≥ 2 (a scalar "
                         f"c·I has no d here: pass c·np.eye(d)); got shape {a.shape}.")
    a = check_D(D, a.shape[0])          # real, finite, entries ≤ 1e100; d numbers: the diagonal
    tol = open_fraction("tol", tol)
    a = check_symmetric(a, "classify")
    lam, vec = np.linalg.eigh(a)
    scale = float(np.max(np.abs(lam)))
    zero = np.abs(lam) <= tol * scale if scale > 0 else np.ones_like(lam, dtype=bool)
    pos, neg = (lam > 0) & ~zero, (lam < 0) & ~zero
    if scale == 0 or np.all(zero):
        kind = "zero"
    elif not np.any(neg):
        kind = "positive definite" if not np.any(zero) else "positive semi-definite"
    elif not np.any(pos):
        kind = "negative definite" if not np.any(zero) else "negative semi-definite"
    else:
        kind = "indefinite"
    lmin, lmax = float(lam[0]), float(lam[-1])
    top = "the Dirac mass at a unit top eigenvector v_max (E = e^{βλ_max}/(2β))"
    anti = "the antipodal pair ½(δ_v + δ_{−v}) at a unit bottom eigenvector v (E = cosh(βλ_min)/(2β))"
    bottom = "the Dirac mass at a unit bottom eigenvector v_min (E = e^{βλ_min}/(2β))"
    if kind == "zero":
        mx = mn = "every probability measure (E ≡ 1/(2β))"
        return Classification(kind, lam, vec, mx, True, mn, True)
    if kind in ("negative definite", "negative semi-definite"):
        mx, mx_ok = anti, True
    elif lmax >= -lmin:
        mx, mx_ok = top, True
    else:
        mx = (f"the better of {top} and {anti}: the Dirac for β λ_max > ln cosh(β λ_min), "
              "the antipodal pair below")
        mx_ok = False
    if kind == "positive definite":
        if np.allclose(lam, lam[0], rtol=1e-14, atol=0):
            mn = "the uniform measure σ (E = λ_0(β c)/(2β), Funk–Hecke)"
        else:
            mn = ("a unique density (E convex, kernel strictly positive definite), not uniform since D ≠ c·I; "
                  "compute it with minimize_energy")
        mn_ok = True
    elif kind == "positive semi-definite":
        mn, mn_ok = "every probability measure supported on ker D ∩ S^{d−1} (E = 1/(2β))", True
    else:
        mn, mn_ok = bottom, True
    return Classification(kind, lam, vec, mx, mx_ok, mn, mn_ok)
