"""Maximizers of E_{β,D} over probability measures: theorem candidates plus multi-start ascent.

Candidates (see :mod:`meanfield._energy._classify`): the Dirac at a top eigenvector of D and the
antipodal pair at a bottom one.  The ascent maximizes E(x, w) = (1/2β) Σ_jk w_j w_k e^{β⟨x_j, D x_k⟩} over
n weighted particles (x_j = u_j/‖u_j‖, w = softmax(s)) with L-BFGS from random starts; coincident
particles are merged and negligible weights dropped.  The certificate is the global first-order
condition of a maximizer: no Dirac mass can be added with profit, i.e. δE/δμ(x) ≤ 2E for every x
(checked on a dense point set refined by local ascent), with equality and zero gradient on the support.
E is not concave, so the condition is necessary, not sufficient: a local maximizer satisfies it too (with
``candidates=False``, D = diag(−1, 0.3) at β = 1, 3 starts of 2 particles end at the Dirac at e₂, E = 0.6749,
certificate satisfied, below the antipodal pair's cosh(1)/2 = 0.7715).  The theorem candidates, on by default,
and several starts are what make the global maximum likely; ``upper_bound`` proves it where a theorem applies.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from .._measures import Particles
from .._memory import require
from .._validate import flag, nonneg_int, open_fraction, random_generator
from ._classify import classify
from ._kernel import (_LOG_FLOAT_MAX, _scaled_kernel_sums, check_beta, check_D, check_symmetric, dimension_for, pair_energy,
                      spectral_norm, tangent_project)

_MERGE = 1e-4        # particles closer than this (chord) are merged, then the ascent is restarted
_DROP = 1e-6         # weights below this are dropped, likewise
_ROUNDS = 4          # ascent / merge rounds per start


@dataclass(frozen=True)
class MaximizerCertificate:
    """Residuals of the global first-order condition of a maximizer, relative to 2E = ∫ δE/δμ dμ.

    Attributes
    ----------
    excess : float
        max_x δE/δμ(x)/(2E) − 1 over S^{d-1} (≤ 0 up to rounding at a maximizer; > 0 means a
        Dirac added at the argmax raises E).
    support_residual : float
        max over the support of |δE/δμ − 2E|/(2E).
    support_gradient : float
        max over the support of |∇_S δE/δμ| (the stationarity residual, velocity units).
    upper_bound : float or None
        The proven upper bound of the theorem that applies (None in the unproven case).
    """

    excess: float
    support_residual: float
    support_gradient: float
    upper_bound: float | None

    def satisfied(self, tol: float = 1e-8) -> bool:
        """Both residuals ≤ ``tol``: the first-order condition holds (necessary for a maximizer, not sufficient;
        see the module docstring).

        Parameters
        ----------
        tol : float
            Bound on ``excess`` and ``support_residual`` (relative to 2E).

        Returns
        -------
        bool
        """
        return self.excess <= tol and self.support_residual <= tol


@dataclass(frozen=True, eq=False, repr=False)
class MaximizingParticles(Particles):
    """The :class:`~meanfield.Particles` returned by :func:`maximize_energy`, with its energy and evidence.

    Attributes
    ----------
    value : float
        E_{β,D} of this measure.
    kind : str
        "dirac", "antipodal" or "other" (by its support).
    source : str
        "candidate" (a theorem candidate won) or "ascent".
    certificate : MaximizerCertificate
    candidates : dict
        Energies of the theorem candidates {"dirac": …, "antipodal": …}.
    ascent_best : float
        The best energy the multi-start ascent found.
    """

    value: float = float("nan")
    kind: str = "other"
    source: str = "ascent"
    certificate: MaximizerCertificate | None = None
    candidates: dict = field(default_factory=dict)
    ascent_best: float = float("nan")

    @property
    def message(self) -> str:
        """One line: the support kind and source, E, the best ascent, and the certificate's excess."""
        c = self.certificate
        return (f"{self.kind} ({self.source}) with E = {self.value:.12g}; best ascent {self.ascent_best:.12g}; "
                f"max δE/δμ exceeds 2E by {c.excess:.2e}.")

    def __repr__(self):
        return f"MaximizingParticles(kind={self.kind!r}, n={self.n}, d={self.d}, value={self.value:.12g})"


def _objective(beta, D, n, d):
    shift = beta * spectral_norm(D)

    def f(z):
        u = z[: n * d].reshape(n, d)
        s = z[n * d:]
        r = np.linalg.norm(u, axis=1)
        x = u / r[:, None]
        w = np.exp(s - s.max())
        w /= w.sum()
        K = np.exp(beta * (x @ D) @ x.T - shift)
        Kw = K @ w
        E = 0.5 * float(w @ Kw) / beta
        g = w[:, None] * ((K * w[None, :]) @ (x @ D))            # w_j Σ_k w_k K_jk D x_k
        gu = (g - np.einsum("ij,ij->i", g, x)[:, None] * x) / r[:, None]
        phi = Kw / beta
        gs = w * (phi - w @ phi)
        return -E, -np.concatenate([gu.ravel(), gs])

    return f


def _clean(x, w):
    """Merge coincident particles (summing weights), drop negligible ones; returns (x, w)."""
    order = np.argsort(-w)
    x, w = x[order], w[order]
    keep_x, keep_w = [], []
    taken = np.zeros(len(w), dtype=bool)
    dist = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2)   # n ≤ a few dozen: fine
    for i in np.flatnonzero(w >= _DROP):                            # loop over merge groups (few)
        if taken[i]:
            continue
        group = (~taken) & (dist[i] < _MERGE)
        taken |= group
        keep_x.append(x[i])
        keep_w.append(w[group].sum())
    w = np.array(keep_w)
    return np.array(keep_x), w / w.sum()


def _ascend(x, w, beta, D):
    """L-BFGS ascent of E over positions and weights, merging coincident particles and restarting."""
    for _ in range(_ROUNDS):
        n, d = x.shape
        f = _objective(beta, D, n, d)
        z0 = np.concatenate([x.ravel(), np.log(w)])
        res = optimize.minimize(f, z0, jac=True, method="L-BFGS-B",
                                options={"maxiter": 3000, "gtol": 1e-13, "ftol": 1e-16})
        u = res.x[: n * d].reshape(n, d)
        s = res.x[n * d:]
        w = np.exp(s - s.max())
        x, w = _clean(u / np.linalg.norm(u, axis=1)[:, None], w / w.sum())
        if len(w) == n:
            break
    return x, w


def _kind(x, w, tol=1e-6) -> str:
    if len(w) == 1:
        return "dirac"
    if len(w) == 2 and float(x[0] @ x[1]) < -1 + tol and abs(w[0] - w[1]) < tol:
        return "antipodal"
    return "other"


def _probe_points(d, n, rng):
    if d == 2:
        a = 2 * np.pi * np.arange(n) / n
        return np.stack([np.cos(a), np.sin(a)], axis=1)
    if d == 3:                                   # Fibonacci lattice
        i = np.arange(n) + 0.5
        z = 1 - 2 * i / n
        phi = np.pi * (1 + 5 ** 0.5) * i
        rr = np.sqrt(1 - z * z)
        return np.stack([rr * np.cos(phi), rr * np.sin(phi), z], axis=1)
    g = rng.standard_normal((n, d))
    return g / np.linalg.norm(g, axis=1)[:, None]


def _scaled_first_variation(measure, beta, D, points, log_scale):
    """(δE/δμ, |∇_S δE/δμ|) at ``points`` (m, d), both divided by e^{log_scale}, for symmetric D.

    From the kernel sums scaled by each point's largest exponent (:func:`_scaled_kernel_sums`): δE/δμ = Z/β and its
    gradient P_x M reach e^{β‖D‖}, beyond float64 at β‖D‖ ≈ 710 while E itself (÷2β) is still finite; computed
    unscaled they overflowed to inf, and the certificate's polish stopped on inf − inf."""
    sums, shift = _scaled_kernel_sums(points, measure.positions, measure.weights, beta, D, moment=True)
    factor = np.exp(shift - log_scale)
    grad = tangent_project(points, sums[:, 1:]) * factor[:, None]
    return sums[:, 0] * factor / beta, np.linalg.norm(grad, axis=1), grad


def _over_2beta(f, z: float, beta: float) -> float:
    """f(z)/(2β) for f = exp or cosh, in the exponent where f(z) alone overflows but the quotient does not."""
    if abs(z) < _LOG_FLOAT_MAX:
        return float(f(z) / (2 * beta))
    log_f = abs(z) - np.log(2.0) if f is np.cosh else z        # cosh z = e^{|z|}/2 to rounding here
    with np.errstate(over="ignore"):
        return float(np.exp(log_f - np.log(2 * beta)))


def _max_first_variation(measure, beta, D, rng, log_scale, n_probe=4096, n_polish=8):
    """max over S^{d-1} of δE/δμ / e^{log_scale}: dense probes, then local ascent from the best few."""
    d = measure.d
    pts = np.concatenate([_probe_points(d, n_probe, rng), measure.positions, -measure.positions])
    vals = _scaled_first_variation(measure, beta, D, pts, log_scale)[0]
    best = pts[np.argsort(-vals)[:n_polish]]

    top = float(np.max(vals))
    scale = max(abs(top), np.finfo(float).tiny)   # polished in units of the probes' max, so that L-BFGS's squared
                                                  # gradients stay finite

    def negphi(u):
        x = u / np.linalg.norm(u)
        val, _, g = _scaled_first_variation(measure, beta, D, x[None], log_scale)
        return -val[0] / scale, -g[0] / np.linalg.norm(u) / scale

    for x0 in best:                              # a handful of local polishes
        res = optimize.minimize(negphi, x0, jac=True, method="L-BFGS-B", options={"gtol": 1e-14, "ftol": 1e-16})
        top = max(top, -float(res.fun) * scale)
    return top


def maximize_energy(beta, D=None, d: int | None = None, *, n_particles: int = 6, n_starts: int = 24, seed=0,
                    candidates: bool = True, tol: float = 1e-10) -> MaximizingParticles:
    """The maximizer of E_{β,D} over probability measures on S^{d-1}, with its certificate.

    Parameters
    ----------
    beta : float
        β > 0.
    D : None, float, array_like of shape (d,) (a diagonal) or (d, d)
        Symmetric interaction matrix (None: identity).
    d : int, optional
        Ambient dimension (d ≥ 2); default: the size of ``D`` when it is given as d numbers or a (d, d) array,
        else 3.
    n_particles : int
        Particles per ascent start (≥ 1); each has a free position and a free weight.
    n_starts : int
        Random starts of the ascent (≥ 0; 0 with ``candidates=True`` only evaluates the candidates).
    seed : int or None
        Seed of numpy's default_rng for the starts and the probes.
    candidates : bool
        Also evaluate the theorem candidates (Dirac at the top eigenvector, antipodal pair at the
        bottom one) and prefer them when within ``tol`` of the best ascent.
    tol : float
        Relative tolerance for preferring a candidate, in (0, 1): one within ``tol`` of the best ascent's energy is
        returned.  (The ascent merges particles closer than 1e-4 and drops weights below 1e-6, fixed.)

    Returns
    -------
    MaximizingParticles
        The best measure (a :class:`~meanfield.Particles`), with ``value``, ``kind``, ``source``,
        ``certificate``, ``candidates`` and ``ascent_best``.

    Raises
    ------
    ValueError, TypeError
        A bad argument, named; a β at which the maximum of E exceeds float64 (the larger theorem candidate,
        max(e^{βλ_max}, cosh(βλ_min))/(2β), beyond 1.8e308: β·‖D‖ ≳ 710 + ln 2β).
    InsufficientMemoryError
        Before any start, when the pair matrices of ``n_particles`` exceed the available memory.
    """
    a = maximize_arguments(beta, D, d, n_particles=n_particles, n_starts=n_starts, seed=seed,
                           candidates=candidates, tol=tol)
    beta, D, d, n_particles, n_starts, candidates, tol = (a[k] for k in ("beta", "D", "d", "n_particles",
                                                                         "n_starts", "candidates", "tol"))
    rng = random_generator(seed)
    cls = classify(D)
    vmin, vmax = cls.eigenvectors[:, 0], cls.eigenvectors[:, -1]
    cand = {"dirac": (vmax[None, :], np.ones(1)), "antipodal": (np.stack([vmin, -vmin]), np.full(2, 0.5))}
    cand_E = {k: pair_energy(x, w, beta, D) for k, (x, w) in cand.items()}

    best_E, best = -np.inf, None
    for _ in range(n_starts):                    # independent random starts (not a particle loop)
        x = rng.standard_normal((n_particles, d))
        x /= np.linalg.norm(x, axis=1)[:, None]
        w = rng.dirichlet(np.ones(n_particles))
        x, w = _ascend(x, w, beta, D)
        E = pair_energy(x, w, beta, D)
        if E > best_E:
            best_E, best = E, (x, w)

    if candidates:
        k = max(cand_E, key=cand_E.get)
        if best is None or cand_E[k] >= best_E * (1 - tol):
            x, w = cand[k]
            source = "candidate"
        else:
            x, w = best
            source = "ascent"
    else:
        x, w = best
        source = "ascent"
    value = pair_energy(x, w, beta, D)
    p = Particles(x, w)
    # δE/δμ and its gradient in units of e^{β‖D‖}/β ≥ 2E/2: both overflow before E does (β‖D‖ ≳ 709.8)
    log_scale = beta * spectral_norm(D) - np.log(beta)
    level = 2 * np.exp(np.log(value) - log_scale)                  # 2E in those units
    top = _max_first_variation(p, beta, D, rng, log_scale)
    phi_s, grad_s, _ = _scaled_first_variation(p, beta, D, x, log_scale)
    g = float(np.max(grad_s))
    with np.errstate(over="ignore"):          # velocity units (inf only if it is)
        support_gradient = float(np.exp(np.log(g) + log_scale)) if g > 0 else 0.0
    bound = (_over_2beta(np.exp, beta * cls.lambda_max, beta)
             if cls.maximizer_proven and cls.lambda_max >= -cls.lambda_min
             else _over_2beta(np.cosh, beta * cls.lambda_min, beta) if cls.maximizer_proven else None)
    cert = MaximizerCertificate(float(top / level - 1), float(np.max(np.abs(phi_s - level)) / level), support_gradient,
                                None if bound is None else float(bound))
    return MaximizingParticles(x, w, value=value, kind=_kind(x, w), source=source, certificate=cert,
                               candidates={k: float(v) for k, v in cand_E.items()},
                               ascent_best=float(best_E))

def maximize_arguments(beta, D=None, d: int | None = None, *, n_particles=6, n_starts=24, seed=0, candidates=True,
                       tol=1e-10) -> dict:
    """The arguments of :func:`maximize_energy`, checked, without searching anything.

    Returns
    -------
    dict
        beta, D (d, d), d, n_particles, n_starts, seed, candidates, tol.
    """

    beta = check_beta(beta)
    d = dimension_for(D, d)
    D = check_symmetric(check_D(D, d, "the argument `d`"), "maximize_energy")
    lam = np.linalg.eigvalsh(D)
    # log of the larger theorem candidate, e^{βλ_max} or cosh(βλ_min) over 2β: a lower bound on the maximum
    log_max = max(beta * lam[-1], beta * abs(lam[0]) + np.log1p(np.exp(-2 * beta * abs(lam[0]))) - np.log(2.0))
    if log_max - np.log(2 * beta) > _LOG_FLOAT_MAX:
        raise ValueError(f"`beta` is too large for maximize_energy: the maximum of E_β,D is at least "
                         f"e^{log_max - np.log(2 * beta):.6g}, beyond float64 (e^{_LOG_FLOAT_MAX:.2f}); β·max(λ_max, "
                         f"|λ_min|) must stay below about {_LOG_FLOAT_MAX:.0f} + ln(2β); got beta={beta!r} with "
                         f"eigenvalues of D in [{lam[0]:.6g}, {lam[-1]:.6g}].")
    n_particles = nonneg_int("n_particles", n_particles, minimum=1)
    require(32.0 * n_particles ** 2 * max(d, 3), f"maximize_energy with n_particles={n_particles} (pair matrices)",
            "lower `n_particles`.")
    n_starts = nonneg_int("n_starts", n_starts)
    tol = open_fraction("tol", tol)     # ≥ 1 preferred a candidate whatever the ascent found (E·(1 − tol) ≤ 0)
    candidates = flag("candidates", candidates)
    if not candidates and n_starts == 0:
        raise ValueError("`n_starts` must be ≥ 1 when candidates=False (nothing would be searched).")
    random_generator(seed)                       # the seed's own checks
    return dict(beta=beta, D=D, d=d, n_particles=n_particles, n_starts=n_starts, seed=seed,
                candidates=candidates, tol=tol)

