"""What a sweep records of a trajectory: a registry of observables (name → function of one saved state).

Each observable maps ``(trajectory, i, aligned_tol)`` to a number for the i-th saved state, or None
where it does not apply.  Tests and docs iterate :data:`OBSERVABLES`.

The pair statistics call :mod:`meanfield.analysis` (``aligned_fraction``, which also handles densities) when it
provides it, and otherwise the small particle-only version below (same definition).  ``collapsed_clusters`` calls
:func:`meanfield.particle_clusters` (particles), ``modes`` :func:`meanfield.density_clusters` (densities), and
``clusters`` (kept for the sweep files that name it) is the one of the two that fits the state's type.
"""
from __future__ import annotations

import numpy as np

from .._measures import Density, Particles

OBSERVABLES: dict = {}
_PAIR_CHUNK = 2048


def observable(name, doc):
    def deco(fn):
        fn.name, fn.doc = name, doc
        OBSERVABLES[name] = fn
        return fn
    return deco


@observable("energy", "the run's `energy` diagnostic: E_β = (1/2β)∬e^{β⟨Qx,Ky⟩}dμdμ (for SA and USA alike)")
def _energy(traj, i, tol):
    v = traj.diagnostics.get("energy")
    return None if v is None else float(v[i])


def _analysis(name):
    """``meanfield.analysis.<name>`` when the analysis package provides it, else None."""
    try:
        from .. import analysis
    except ImportError:   # pragma: no cover
        return None
    return getattr(analysis, name, None)


def _per_group(traj, s, fn):
    """``fn(s)``; for a run of backend "particles" with ``groups`` = G > 1 (independent systems, e.g. replicas),
    each group's own value (its tokens, its weights rescaled to mass 1) averaged with the groups' masses as
    weights, as that backend's diagnostics are: the pairs of two groups never interact."""
    grouped = getattr(traj, "backend", None) == "particles"        # (a hand-made record has no backend)
    groups = (getattr(traj, "options", None) or {}).get("groups", 1) if grouped else 1
    if groups == 1 or not isinstance(s, Particles):
        return fn(s)
    w = s.weights.reshape(groups, -1)
    mass = w.sum(axis=1)
    x = s.positions.reshape(groups, w.shape[1], -1)
    values = [fn(Particles._of_checked(x[g], w[g] / mass[g])) for g in range(groups)]
    return None if any(v is None for v in values) else float(mass @ np.asarray(values, float))


def _nodes_of_a_density(traj, s) -> bool:
    """A hybrid run's particles are the weighted nodes that stand for its density after the hand-off: their pair
    statistics are the density's ∬ … dμ dμ, self-pairs included (the token formulas leave them out, which moved
    mean_alignment from 0.0349 to 0.0438 at a coarse S¹ hand-off), as the run's own diagnostic does."""
    return getattr(traj, "backend", None) == "hybrid" and isinstance(s, Particles)


@observable("mean_alignment", "Σ_{i≠j} w_i w_j ⟨θ_i, θ_j⟩ / Σ_{i≠j} w_i w_j (particles); "
                              "|∫x dμ|² (densities, and a hybrid run's nodes, self-pairs included)")
def _mean_alignment(traj, i, tol):
    s = traj.states[i]
    if _nodes_of_a_density(traj, s):
        m = s.weights @ s.positions / s.weights.sum()
        return float(m @ m)
    if isinstance(s, Particles):
        from .._measures import mean_alignment
        return _per_group(traj, s, mean_alignment)
    if isinstance(s, Density):
        m = density_mean(s)
        return float(m @ m)
    return None


@observable("aligned_fraction", "fraction of pairs i ≠ j (weighted) with ⟨θ_i, θ_j⟩ ≥ 1 − aligned_tol "
                                "(particles; densities with meanfield.analysis; a hybrid run's nodes with the "
                                "self-pairs, which are aligned)")
def _aligned_fraction(traj, i, tol):
    s = traj.states[i]
    fn = _analysis("aligned_fraction")
    if fn is not None and isinstance(s, (Particles, Density)):
        value = _per_group(traj, s, lambda p: float(fn(p, tol)))
    elif isinstance(s, Particles):
        value = _per_group(traj, s, lambda p: aligned_fraction(p, tol))
    else:
        return None
    if _nodes_of_a_density(traj, s):     # f over the pairs i ≠ j, mass 1 − Σŵ², plus the self-pairs' Σŵ²
        q = float(np.sum(np.square(s.weights / s.weights.sum())))
        value = value * (1.0 - q) + q
    return value


#: the smallest mass fraction that counts as a cluster, for particles as for densities (density_clusters' default)
CLUSTER_MIN_MASS = 0.01


def _collapsed_count(traj, s, tol):
    """Single-linkage groups at ⟨θ_i, θ_j⟩ ≥ 1 − tol of the tokens of ``s`` holding ≥ 1 % of the mass."""
    from ..analysis import particle_clusters
    return _per_group(traj, s, lambda p: particle_clusters(p, angle=float(np.arccos(1.0 - tol)))
                      .count_above(CLUSTER_MIN_MASS))


def _mode_count(s):
    """Local maxima of the density ``s`` whose steepest-ascent basin holds ≥ 1 % of the mass."""
    from ..analysis import density_clusters
    return density_clusters(s, min_mass=CLUSTER_MIN_MASS).count


@observable("collapsed_clusters", "number of groups of tokens linked by aligned pairs (single linkage at ⟨θ_i, "
                                  "θ_j⟩ ≥ 1 − aligned_tol) holding ≥ 1 % of the mass: particles only (empty for a "
                                  "density)")
def _collapsed_clusters(traj, i, tol):
    s = traj.states[i]
    return _collapsed_count(traj, s, tol) if isinstance(s, Particles) else None


@observable("modes", "number of local maxima of a density whose steepest-ascent basin holds ≥ 1 % of the mass: "
                     "densities only (empty for particles)")
def _modes(traj, i, tol):
    s = traj.states[i]
    return _mode_count(s) if isinstance(s, Density) else None


@observable("clusters", "collapsed_clusters of particles, modes of a density (one column whose meaning follows the "
                        "state's type; name collapsed_clusters or modes to record one meaning)")
def _clusters(traj, i, tol):
    # Without the mass threshold every stray token was a cluster: 20 000 tokens sampled from a smooth density
    # with 3 modes counted 15 at aligned_tol = 1e-3 (and a hybrid run's hand-off to 10⁴ weighted nodes, 491).
    s = traj.states[i]
    if isinstance(s, Particles):
        return _collapsed_count(traj, s, tol)
    if isinstance(s, Density):
        return _mode_count(s)
    return None


@observable("max_speed", "the run's `max_speed` diagnostic (largest token speed)")
def _max_speed(traj, i, tol):
    v = traj.diagnostics.get("max_speed")
    return None if v is None else float(v[i])


def _pair_blocks(x, tol):
    """(start, boolean block of ⟨x_a, x_b⟩ ≥ 1 − tol for rows a of the chunk), O(chunk·n) memory."""
    n = x.shape[0]
    for a in range(0, n, _PAIR_CHUNK):
        yield a, (x[a:a + _PAIR_CHUNK] @ x.T) >= 1.0 - tol


def aligned_fraction(particles: Particles, tol: float) -> float:
    """Σ_{i≠j} w_i w_j 1[⟨θ_i, θ_j⟩ ≥ 1 − tol] / Σ_{i≠j} w_i w_j, chunked: O(n²) time, O(n) memory."""
    x, w = particles.positions, particles.weights
    w2 = float(w @ w)
    if w2 >= 1:
        return 1.0
    total = 0.0
    for a, block in _pair_blocks(x, tol):
        total += float(w[a:a + len(block)] @ (block @ w))
    return (total - w2) / (1.0 - w2)     # the diagonal pairs i = j are always "aligned"


def density_mean(rho: Density) -> np.ndarray:
    """∫ x ρ(x) dσ(x) (σ the normalized measure), by a quadrature exact for the band limit (S¹ and S²)."""
    L = rho.lmax
    nphi = 2 * L + 4
    phi = 2 * np.pi * np.arange(nphi) / nphi
    if rho.d == 2:
        pts = np.stack([np.cos(phi), np.sin(phi)], axis=1)
        return pts.T @ rho.evaluate(pts) / nphi
    t, wt = np.polynomial.legendre.leggauss(L // 2 + 2)        # exact for degree ≤ L + 3 in cos θ
    s = np.sqrt(1 - t ** 2)
    pts = np.stack([np.outer(s, np.cos(phi)), np.outer(s, np.sin(phi)), np.outer(t, np.ones(nphi))], axis=-1)
    pts = pts.reshape(-1, 3)
    weights = np.repeat(wt / 2, nphi) / nphi                    # Σ weights = 1: the normalized measure
    return pts.T @ (weights * rho.evaluate(pts))


def record(traj, observables, at: str, tol: float) -> dict:
    """The observables of ``traj`` at its final state (``at="final"``) or at every saved state (lists)."""
    idx = range(len(traj.times)) if at == "saved" else [len(traj.times) - 1]
    out = {}
    for name in observables:
        vals = [OBSERVABLES[name](traj, i, tol) for i in idx]
        out[name] = vals if at == "saved" else vals[0]
    return out
