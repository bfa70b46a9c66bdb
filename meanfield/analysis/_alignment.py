"""Pairwise alignment of tokens: mean alignment, the fraction of aligned pairs, and its (β, t) phase diagram.

For a measure μ on S^{d-1} and a tolerance δ ∈ (0, 2]:

* mean alignment  M = ∬_{x≠y} ⟨x, y⟩ dμ dμ / ∬_{x≠y} dμ dμ; for particles Σ_{i≠j} w_i w_j ⟨θ_i, θ_j⟩ /
  Σ_{i≠j} w_i w_j = (|m|² − Σ w_i²)/(1 − Σ w_i²) with the mean vector m = Σ w_i θ_i, O(n); for a density
  (no atoms) M = |m|², m = ∫ x ρ dσ;
* aligned fraction  F_δ = the same average of 1[⟨x, y⟩ ≥ 1 − δ].  Particles: an exact pair count, in low
  dimension by the angles sorted once on S¹ (O(n log n)) or a KD-tree dual-tree count (of the pairs apart,
  through −θ, when δ > 1), else in row blocks of the Gram matrix (memory O(chunk·n), time O(n² d) with BLAS);
  a pair at the threshold to rounding is decided on its chord, the same way by each.  Density on S² or S¹: the
  indicator is a zonal kernel, so F_δ = Σ_ℓ f_ℓ E_ℓ(ρ) with its Funk–Hecke multipliers
  f_ℓ = ½∫_{1−δ}^1 P_ℓ(t) dt = (P_{ℓ−1}(1−δ) − P_{ℓ+1}(1−δ)) / (2(2ℓ+1)) on S² (f_0 = δ/2),
  f_k = sin(k a)/(π k) with a = arccos(1 − δ) on S¹ (f_0 = a/π); exact for a band-limited ρ (evaluated in forms
  that keep full relative accuracy as δ → 0, :func:`_cap_multipliers`).  For
  i.i.d. tokens of a density ρ the particle value converges to the density value (pairs i ≠ j).
"""
from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from .._measures import Density, Particles, conversion_hint, pair_alignment
from .._validate import choice, nonneg_int, positive_float, real_array


class AlignmentStatistics(NamedTuple):
    """Pairwise alignment of a measure (see :func:`alignment_statistics`).

    Attributes
    ----------
    mean_alignment : float
        Mean of ⟨x, y⟩ over pairs of distinct tokens (1 for one cluster, 0 on average for uniform tokens).
    aligned_fraction : float
        Fraction of pairs of distinct tokens with ⟨x, y⟩ ≥ 1 − δ.
    delta : float
        The tolerance δ.
    """

    mean_alignment: float
    aligned_fraction: float
    delta: float


def _check_delta(delta) -> float:
    delta = positive_float("delta", delta)
    if delta > 2:
        raise ValueError(f"`delta` must be in (0, 2] (⟨x, y⟩ ≥ 1 − δ ≥ −1); got delta={delta!r}.")
    return delta


METHODS = ("auto", "tree", "direct")


def _pair_fraction(x, w, delta, method, chunk):
    """Σ_{i≠j} w_i w_j 1[⟨θ_i, θ_j⟩ ≥ 1 − δ] / Σ_{i≠j} w_i w_j, counted exactly."""
    n, d = x.shape
    w2 = float(w @ w)
    if w2 >= 1 or delta >= 2:
        # δ = 2: ⟨θ_i, θ_j⟩ ≥ −1 holds for every pair, but a rounded antipodal pair reads −1 − 2e-16 (chord
        # 2 + 4e-16; more with positions unit only to 1e-10) and was missed: 0.99984 for 500 antipodal pairs
        return 1.0
    if method == "auto":
        from ._neighbours import TREE_MAX_D
        method = "tree" if d <= TREE_MAX_D else "direct"
    equal = bool(np.all(w == w[0]))
    if method == "tree":
        total, apart = _tree_counts(x, w, delta, equal)
    else:
        total, apart = _gram_count(x, w, delta, chunk, equal), None
    if not equal and apart is not None and apart < 0.5 * (1.0 - w2):
        # most pairs aligned: 1 − (pairs apart), each term summed without cancellation: none is exactly 1
        return float(max(1.0 - apart / (1.0 - w2), 0.0))
    if total is None:
        total = n * n - apart if equal else float(np.sum(w)) ** 2 - apart
    # the diagonal ⟨θ_i, θ_i⟩ = 1 ≥ 1 − δ is always counted; remove it.  Equal weights: in integers, so that no
    # aligned pair gives exactly 0 (w·w and the count/n² round differently with the BLAS kernel: 3e-17 on AVX-512)
    if equal:
        return (total - n) / (n * (n - 1))
    # Unequal weights: the weighted sum and w·w round apart (1.5e-17 with no aligned pair); an excess within the
    # sums' rounding bound, n·ε of the total, is no aligned pair
    excess, bound = total - w2, n * np.finfo(float).eps * total
    if excess <= bound:
        return 0.0
    if (1.0 - w2) - excess <= bound:
        # and a deficit within it is no pair apart (the Gram count; the tree's counts the pairs apart on their own)
        return 1.0
    return min(excess / (1.0 - w2), 1.0)


def _margin(x) -> float:
    """A margin in ⟨θ_i, θ_j⟩ beyond which every rule agrees: a pair whose exact cos of the angle between θ_i/|θ_i| and
    θ_j/|θ_j| is farther than this from 1 − δ has ⟨θ_i, θ_j⟩ computed farther than :data:`_neighbours._BAND` from it,
    and its chord on the same side of √(2δ), for positions unit to η = max |‖θ‖² − 1| (≤ 2e-10) and any rounding."""
    from ._neighbours import _BAND

    eta = float(np.max(np.abs(np.einsum("ij,ij->i", x, x) - 1.0)))
    return 2.0 * _BAND + 4.0 * eta + 1e-14


def _tree_counts(x, w, delta, equal):
    """(aligned, apart) for ``method="tree"``: Σ w_i w_j over the aligned ordered pairs (i = j included) and over the
    pairs apart, either of them None where not counted (integers for equal weights).

    S¹: both from the angles sorted once (:func:`_circle_counts`).  Elsewhere a dual-tree count, of the pairs apart
    when δ > 1 (most pairs aligned): as pairs (θ_i, −θ_j) within chord √(2(2 − δ)), a smaller radius."""
    from scipy.spatial import cKDTree

    margin = _margin(x)
    if x.shape[1] == 2 and margin < 1e-3 * delta:
        # (below, 1 − δ ± margin reach 1 and every pair of a collapsed cluster would be decided one by one)
        return _circle_counts(x, w, delta, margin, equal)
    # an unbalanced, non-compact tree: scipy's default took 26 s to count the pairs of 10⁵ collapsed tokens
    # (three tight clusters), this one 0.01 s, the same count
    tree = cKDTree(x, balanced_tree=False, compact_nodes=False)
    if delta > 1:
        apart = _antipodal_apart(tree, x, w, delta, margin, equal)
        if apart is not None:
            return None, apart
    # chord |θ_i − θ_j| ≤ √(2δ)  ⇔  ⟨θ_i, θ_j⟩ ≥ 1 − δ; the dual-tree count includes i = j
    r = np.sqrt(2.0 * delta)
    if equal:
        return int(tree.count_neighbors(tree, r)), None
    # the pairs apart in a bin of their own (chords in (r, 3]), summed without cancellation
    total, apart = tree.count_neighbors(tree, [r, 3.0], weights=(np.array(w), np.array(w)), cumulative=False)
    return float(total), float(apart)


def _antipodal_apart(tree, x, w, delta, margin, equal):
    """Σ w_i w_j over the pairs apart, counted as the pairs (−θ_i, θ_j) within chord √(2(2 − δ − margin))
    (|θ_i + θ_j|² = 2 + 2⟨θ_i, θ_j⟩), or None when a pair of positive weight lies within the margin of the threshold
    (its side is then decided on the chord |θ_i − θ_j|, which this count does not see)."""
    from scipy.spatial import cKDTree

    lo, hi = 2.0 * (2.0 - delta - margin), 2.0 * (2.0 - delta + margin)
    if lo <= 0:
        return None
    anti = cKDTree(-x, balanced_tree=False, compact_nodes=False)
    radii = np.sqrt([lo, hi])
    if equal:
        inner, outer = anti.count_neighbors(tree, radii)
        return int(inner) if inner == outer else None
    inner, shell = anti.count_neighbors(tree, radii, weights=(np.array(w), np.array(w)), cumulative=False)
    return float(inner) if shell == 0 else None


def _circle_counts(x, w, delta, margin, equal):
    """(aligned, apart) on S¹ from the angles sorted once, O(n log n) at every δ.

    A pair whose angle is below arccos(1 − δ + margin) is aligned, above arccos(1 − δ − margin) apart (see
    :func:`_margin`; the angles from atan2 err by ~1e-15, inside the margin); token i's pairs of each kind are a
    contiguous run of the sorted angles (repeated at ±2π), summed by prefix sums.  The few in between are decided
    as the Gram count decides them (:meth:`_neighbours.GramIndex._decide`), so the counts are the same."""
    from ._neighbours import GramIndex

    n = len(x)
    thr = 1.0 - delta
    phi = np.arctan2(x[:, 1], x[:, 0])
    order = np.argsort(phi, kind="stable")
    xs, ps, ws = x[order], phi[order], w[order]
    ext = np.concatenate([ps - 2 * np.pi, ps, ps + 2 * np.pi])
    cum = np.concatenate([[0], np.cumsum(np.ones(3 * n, dtype=np.int64) if equal else np.tile(ws, 3))])
    if thr + margin < 1:
        t_in = np.arccos(thr + margin)
        lo, hi = np.searchsorted(ext, ps - t_in), np.searchsorted(ext, ps + t_in, side="right")
        hi = np.minimum(hi, lo + n)
    else:                                                  # no pair is surely aligned
        lo = hi = np.searchsorted(ext, ps)
    t_out = np.arccos(thr - margin) if thr - margin > -1 else np.inf
    right = np.minimum(np.searchsorted(ext, ps + t_out, side="right"), lo + n)
    left = np.maximum(np.searchsorted(ext, ps - t_out), right - n)
    # surely aligned: [lo, hi); surely apart: [right, left + n); in between: [left, lo) and [hi, right)
    if equal:
        aligned, apart = int(np.sum(hi - lo)), int(np.sum(left + n - right))
    else:
        aligned, apart = float(ws @ (cum[hi] - cum[lo])), float(ws @ (cum[left + n] - cum[right]))
    gram, h = GramIndex(xs), np.sqrt(2.0 * delta)
    for i, j in _runs(np.r_[left, hi], np.r_[lo - left, right - hi], n):
        i %= n
        hit = gram._decide(i, j, np.einsum("ij,ij->i", xs[i], xs[j]), thr, h)
        if equal:
            aligned, apart = aligned + int(np.count_nonzero(hit)), apart + int(np.count_nonzero(~hit))
        else:
            aligned += float(ws[i[hit]] @ ws[j[hit]])
            apart += float(ws[i[~hit]] @ ws[j[~hit]])
    return aligned, apart


def _runs(start, count, n):
    """The pairs (k, (start_k + t) mod n), t < count_k, in blocks of about :data:`_neighbours.BLOCK_ELEMENTS`."""
    from ._neighbours import BLOCK_ELEMENTS

    rows = np.flatnonzero(count)
    if rows.size == 0:
        return
    ends = np.cumsum(count[rows])
    for rr in np.split(rows, np.searchsorted(ends, np.arange(BLOCK_ELEMENTS, ends[-1], BLOCK_ELEMENTS), side="right")):
        if rr.size:
            cc = count[rr]
            offsets = np.arange(cc.sum()) - np.repeat(np.cumsum(cc) - cc, cc)
            yield np.repeat(rr, cc), (np.repeat(start[rr], cc) + offsets) % n


def _gram_count(x, w, delta, chunk, equal):
    """Σ_{i,j} w_i w_j 1[|θ_i − θ_j| ≤ √(2δ)] (i = j included) by row blocks of the Gram matrix, decided as the tree
    decides: by ⟨θ_i, θ_j⟩ away from 1 − δ, by the chord within :data:`_neighbours._BAND` of it.

    ⟨θ_i, θ_j⟩ ≥ 1 − δ read from the Gram entries alone missed pairs at the threshold that the tree counts (the
    orthogonal pairs of a rotated octahedron at δ = 1: 0.4 against 0.8) and counted every pair of a cluster of
    width 1e-9 at δ = 1e-20, where 1 − δ rounds to 1 (1.0 against 0.0)."""
    from ._neighbours import _BAND, GramIndex

    n = len(x)
    gram, h, thr = GramIndex(x), np.sqrt(2.0 * delta), 1.0 - delta
    chunk = chunk or max(1, (1 << 22) // max(n, 1))
    total = 0 if equal else 0.0
    for lo in range(0, n, chunk):
        g = x[lo:lo + chunk] @ x.T
        inside = g >= thr + _BAND
        count = int(np.count_nonzero(inside))
        total += count if equal else float(w[lo:lo + chunk] @ (inside.astype(float) @ w))
        near = g >= thr - _BAND
        if np.count_nonzero(near) > count:                                 # pairs in the band: rare
            rows, cols = np.divmod(np.flatnonzero(near & ~inside), n)
            hit = gram._decide(lo + rows, cols, g[rows, cols], thr, h)
            total += int(np.count_nonzero(hit)) if equal else float(w[lo + rows[hit]] @ w[cols[hit]])
    return total


def _cap_multipliers(delta, lmax, d):
    """Funk–Hecke multipliers f_ℓ of the cap indicator 1[⟨x, y⟩ ≥ 1 − δ] (normalized measure), S² or S¹.

    Written without differences of nearby numbers: on S², ½∫_{1−δ}^1 P_ℓ = (1 − x0²) P_ℓ'(x0)/(2ℓ(ℓ + 1)) with
    P_ℓ' = (ℓ + 1)/2 · P^{(1,1)}_{ℓ−1} and 1 − x0² = δ(2 − δ); on S¹ the half-angle a = 2 asin(√(δ/2)).  The forms
    (P_{ℓ−1}(x0) − P_{ℓ+1}(x0))/(2(2ℓ+1)) and arccos(1 − δ) lose log10(1/δ) digits: 2e-5 of f_ℓ at δ = 1e-12."""
    from scipy import special

    ell = np.arange(1, lmax + 1)
    if d == 3:
        rest = delta * (2.0 - delta) * special.eval_jacobi(ell - 1, 1, 1, 1.0 - delta) / (4.0 * ell)
        return np.concatenate([[delta / 2], rest])
    a = 2.0 * np.arcsin(np.sqrt(delta / 2.0))
    return np.concatenate([[a / np.pi], np.sin(ell * a) / (np.pi * ell)])


def _density_stats(rho: Density, delta):
    from .._compare import _degree_power

    mass = rho.mass()
    if not mass > 0:
        raise ValueError(f"`measure` must have positive mass; got mass={mass!r}.")
    c = rho.coeffs / mass
    e = _degree_power(c, rho.d, rho.lmax)                 # ∬ K ρρ dσdσ = Σ_ℓ f_ℓ e_ℓ for a zonal K
    frac = float(np.sum(_cap_multipliers(delta, rho.lmax, rho.d) * e))
    if not 0.0 <= frac <= 1.0:
        # a band-limited density that dips below 0 (the Gibbs ripples of a concentrated one) is not a measure:
        # its series can leave [0, 1] (1.25 for a Dirac at L = 20)
        from .._errors import warn
        warn(f"the aligned fraction of this density's series is {frac:.4g}, outside [0, 1]: the density is negative "
             "somewhere (under-resolved clusters); clipped. Raise lmax or use particles.")
        frac = min(max(frac, 0.0), 1.0)
    if rho.d == 3:
        # the ℓ = 1 power is 3|m|²: ∬⟨x,y⟩ρρ has Funk–Hecke multiplier 1/3 at ℓ = 1 (0 elsewhere)
        mean = float(e[1] / 3.0) if rho.lmax >= 1 else 0.0
    else:
        mean = float(e[1] / 2.0) if rho.lmax >= 1 else 0.0   # S¹: multiplier 1/2 at k = 1
    return mean, frac


def alignment_statistics(measure, delta: float = 0.01, *, method: str = "auto",
                         chunk: int | None = None) -> AlignmentStatistics:
    """Mean alignment and fraction of aligned pairs (⟨x, y⟩ ≥ 1 − δ) of particles or a density.

    Parameters
    ----------
    measure : Particles or Density
        Particles on any S^{d-1} (pairs of distinct tokens, weighted by w_i w_j), or a Density on S² or
        S¹ (the mean-field limit: pairs drawn from ρ ⊗ ρ).
    delta : float
        Alignment tolerance δ in (0, 2]: ⟨x, y⟩ ≥ 1 − δ means an angle ≤ arccos(1 − δ).
    method : {"auto", "tree", "direct"}
        Particles: how the aligned pairs are counted, both exactly.  "tree": on S¹ the angles sorted once
        (O(n log n) at every δ); else a dual-tree count (``scipy.spatial.cKDTree.count_neighbors`` at chord
        √(2δ), or of the pairs apart at chord √(2(2 − δ)) from −θ when δ > 1), fast in low dimension (on S² its
        cost grows like n^1.5 towards δ = 1: ~10 s for 10⁵ tokens); "direct": row blocks of the Gram matrix
        (BLAS), O(n² d) time and O(chunk · n) memory, better in high dimension.  "auto": "tree" for d ≤ 6, else
        "direct".  Both decide a pair by its chord |θ_i − θ_j|, its squares summed as scipy's tree sums them, against
        2δ rounded as √(2δ)², where ⟨θ_i, θ_j⟩ is within rounding (1e-12) of 1 − δ, so they count the same pairs,
        at the threshold (δ = 1 − ⟨θ_i, θ_j⟩ of a pair) and for δ down to the smallest chords.
    chunk : int, optional
        Rows per Gram block of ``method="direct"`` (default ≈ 4·10⁶ / n).

    Returns
    -------
    AlignmentStatistics
        ``(mean_alignment, aligned_fraction, delta)``.

    Notes
    -----
    Particles: the mean alignment is O(n) through the mean vector; the aligned fraction is an exact
    pair count (its cost grows with the number of aligned pairs for "tree", like n² d for "direct").
    Density: both are exact series in the coefficients (see the module docstring); the uniform density
    gives (0, δ/2) on S².  Particles with no weighted pair of distinct tokens (one token, or every weight on
    one) give (1, 1): one cluster.
    """
    delta = _check_delta(delta)
    # checked for every measure: a Density took method="fast" and chunk="x" without a word, and an array as
    # `method` raised numpy's "truth value of an array is ambiguous"
    choice("method", method, METHODS)
    if chunk is not None:
        chunk = nonneg_int("chunk", chunk, minimum=1)
    if isinstance(measure, Particles):
        x, w = measure.positions, measure.weights
        frac = float(_pair_fraction(x, w, delta, method, chunk))
        # (|m|² − Σw²)/(1 − Σw²) rounds past ±1 (1 + 4e-16 for tokens at one point with some weights 0)
        return AlignmentStatistics(min(max(pair_alignment(w, x), -1.0), 1.0), frac, delta)
    if isinstance(measure, Density):
        mean, frac = _density_stats(measure, delta)
        return AlignmentStatistics(mean, frac, delta)
    raise TypeError(f"`measure` must be meanfield.Particles or meanfield.Density; got {type(measure).__name__}."
                    + conversion_hint(measure))


def aligned_fraction(measure, delta: float = 0.01, *, method: str = "auto", chunk: int | None = None) -> float:
    """The fraction of pairs of distinct tokens with ⟨x, y⟩ ≥ 1 − δ, F_δ, of particles or a density.

    The ``aligned_fraction`` field of :func:`alignment_statistics`, which describes the methods.

    Parameters
    ----------
    measure : Particles or Density
        Particles on any S^{d-1} (pairs i ≠ j weighted by w_i w_j), or a Density on S² or S¹ (pairs
        drawn from ρ ⊗ ρ; an exact series in its coefficients).
    delta : float
        Alignment tolerance δ in (0, 2]: a pair counts when its angle is ≤ arccos(1 − δ).
    method : {"auto", "tree", "direct"}
        How the aligned pairs of particles are counted (exactly, either way); ignored for a Density.
    chunk : int, optional
        Rows per Gram block of ``method="direct"``.

    Returns
    -------
    float
        F_δ in [0, 1] (δ/2 for the uniform density on S²).

    Raises
    ------
    ValueError
        If ``delta`` is not in (0, 2], ``method`` is unknown, or a Density has no positive mass.
    TypeError
        If ``measure`` is neither Particles nor a Density.
    """
    return alignment_statistics(measure, delta, method=method, chunk=chunk).aligned_fraction


def alignment_phase_diagram(betas, times, *, n: int = 256, d: int = 3, delta: float = 0.01,
                            scheme: str = "post-ln", attention: str = "softmax", alpha=1.0, tau=None,
                            replicas: int = 1, seed=0, backend: str = "particles", initial=None,
                            **options) -> np.ndarray:
    """The fraction of aligned pairs F_δ(β, t) of particles started from the same tokens, on a (β, t) grid.

    For every β one run of :func:`meanfield.simulate` saves the states at all ``times`` (so the cost is
    one trajectory per β and replica), and F_δ of each saved state is counted exactly
    (:func:`aligned_fraction`).  Every β starts from the same initial tokens (common random numbers:
    replica k draws ``Particles.uniform(n, d, seed=SeedSequence(seed).spawn(replicas)[k])``), so
    differences between rows are not sampling noise.

    Parameters
    ----------
    betas : array_like, shape (B,)
        Inverse temperatures β > 0.
    times : array_like, shape (T,)
        Strictly increasing times ≥ 0 (0 gives the initial state).
    n : int
        Tokens per run (n ≥ 2), i.i.d. uniform on S^{d-1} unless ``initial`` is given.
    d : int
        Ambient dimension.
    delta : float
        Alignment tolerance δ in (0, 2].
    scheme, attention : str
        As in :class:`meanfield.Model` (Q = K = V = I).
    alpha : float or callable
        The nGPT step α_t, as in :class:`meanfield.Model` (only scheme="ngpt" takes α ≠ 1).
    tau : float, optional
        The Mix-LN switch time, as in :class:`meanfield.Model` (required for scheme="mix-ln", refused otherwise).
    replicas : int
        Independent initial draws averaged (≥ 1).
    seed : None, int or SeedSequence
        Root seed of the initial draws.
    backend : str
        A particle backend of :func:`meanfield.simulate`.
    initial : Particles, optional
        Start every run from these tokens instead (then ``n``, ``d``, ``replicas`` and ``seed`` are not
        used).
    **options
        Backend options (e.g. ``rtol``, or ``time="layers", step=h`` for the layer maps).

    Returns
    -------
    ndarray, shape (B, T)
        F_δ(β_i, t_j), averaged over the replicas.
    """
    from .._model import Model
    from .._simulate import simulate

    b = np.atleast_1d(real_array("betas", betas, allow_bool=False))   # not np.asarray: its error named nothing
    if b.ndim != 1 or b.size == 0 or not np.all(np.isfinite(b)) or np.any(b <= 0):
        raise ValueError(f"`betas` must be a non-empty 1-D array of finite β > 0; got betas={betas!r}.")
    t = np.atleast_1d(real_array("times", times, allow_bool=False))
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)) or t[0] < 0 or np.any(np.diff(t) <= 0):
        raise ValueError(f"`times` must be a strictly increasing 1-D array of times ≥ 0; got times={times!r}.")
    if t[-1] <= 0:
        raise ValueError(f"`times` must reach a time > 0; got times={times!r}.")
    delta = _check_delta(delta)
    if initial is not None:
        if not isinstance(initial, Particles):
            raise TypeError(f"`initial` must be meanfield.Particles; got {type(initial).__name__}.")
        d = initial.d
    # every Model before any run, so that a bad scheme, alpha or tau is named first (Mix-LN could not be run at all:
    # its required `tau` had no way in, and `alpha` reached the backend as an unknown option)
    models = [Model(float(beta), scheme=scheme, attention=attention, d=d, alpha=alpha, tau=tau) for beta in b]
    if initial is not None:
        starts = [initial]
    else:
        n = nonneg_int("n", n, minimum=2)
        replicas = nonneg_int("replicas", replicas, minimum=1)
        if isinstance(seed, np.random.SeedSequence):     # a copy: spawn() advances the caller's object
            root = np.random.SeedSequence(seed.entropy, spawn_key=seed.spawn_key, pool_size=seed.pool_size,
                                          n_children_spawned=seed.n_children_spawned)
        elif seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)):
            root = np.random.SeedSequence(seed)
        else:
            raise TypeError(f"`seed` must be None, an int or a numpy SeedSequence; got seed={seed!r}.")
        starts = [Particles.uniform(n, d, seed=np.random.default_rng(s)) for s in root.spawn(replicas)]
    out = np.zeros((b.size, t.size))
    t_eval = t[t > 0]
    for i, (beta, model) in enumerate(zip(b, models)):
        for p in starts:
            traj = simulate(model, p, float(t[-1]), backend=backend, t_eval=t_eval, **options)
            if not traj.success:
                from .._errors import ConvergenceError

                raise ConvergenceError(f"the run at beta={beta:g} ended early: {traj.message}")
            states = traj.states if t[0] == 0 else traj.states[1:]
            out[i] += [aligned_fraction(s, delta) for s in states]
    return out / len(starts)
