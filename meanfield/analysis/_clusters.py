"""Clusters of a measure on the sphere: single linkage for particles, ascent basins for densities.

**Particles.** Two tokens are linked when their angle is at most ``angle`` (⟨θ_i, θ_j⟩ ≥ cos(angle),
i.e. chord |θ_i − θ_j| ≤ r = 2 sin(angle/2)); the clusters are the connected components of that graph
(single linkage cut at ``angle``).  They are computed exactly without enumerating the O(n²) linked pairs
of a collapsed configuration:

1. *leaders*: in index order, every token not yet assigned becomes a leader and takes all unassigned
   tokens within chord r/2 (a ball query).  Members of a group are within r of each other, so
   a group lies inside one cluster; leaders are more than r/2 apart, so a ball of radius 1.5r holds a
   bounded number of them (a packing bound);
2. *links between groups*: a token can be linked to group B only if it lies within 1.5r of B's leader;
   for every such (token, group) candidate the distance to the nearest member of B is checked
   (a brute-force block for small groups, a neighbour query among B's members otherwise), group by group;
3. connected components of the group graph (``scipy.sparse.csgraph``).

The neighbour queries use a KD-tree up to d = 6 and row blocks of the Gram matrix above
(:mod:`meanfield.analysis._neighbours`), where a tree no longer prunes.

**Densities** (S² and S¹).  The density is evaluated on a fine grid; every node points to its
neighbour of steepest rise per unit length (itself where none rises; on S² the 8 neighbours of the
Gauss–Legendre grid, across the pole for the polar rings), and pointer jumping sends every node to the
local maximum its steepest-ascent path ends at.  A cluster is a local maximum whose basin holds mass
≥ ``min_mass`` (basins of Gibbs ripples of a band-limited density carry almost no mass and are dropped) and whose
prominence exceeds 1e-8 of max |ρ|: the drop from its peak to the highest saddle on a path to a higher maximum (for the
highest, to the lowest value).  A less prominent maximum is none: its basin joins the maximum it merges into, so a
density flat to rounding (the uniform density, with or without noise of 1e-15) has no cluster: 0, not 1, as no point
of it is more of a maximum than another; and a plateau flat to rounding is one cluster.  Adjacent maxima with equal
values to rounding (a plateau, e.g. the polar ring of a density peaked at a pole) are one maximum, centred at the
mean of its nodes (at its highest node where that mean is short: a ring around a great circle); centres
are accurate to the grid spacing.  On S², adjacent maxima with no valley between them (ρ along the arc
joining them stays within 1 % of the lower one: the grid nodes along a ring or ridge maximum) are one
maximum too (:func:`_join_ridge_maxima`).
With ``level`` only the nodes where ρ ≥ level count towards the masses (the background is excluded).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._measures import Density, Particles, conversion_hint
from .._validate import nonneg_int, positive_float, shown
from .._values import ComparedByValue
from ._neighbours import BLOCK_ELEMENTS, index

_PAIRS = 1 << 22          # above this many pairs within r/2, leaders are chosen greedily
_TIE = 1e-10             # relative difference of density values treated as a tie (rounding)
_DEPTH = 1e-8            # a maximum counts when its prominence is above this much of max |ρ|
_SMALL = 64               # groups up to this size are checked with all (token, member) pairs at once


@dataclass(frozen=True, eq=False)
class Clusters(ComparedByValue):
    """Clusters of a measure, sorted by decreasing mass.

    Attributes
    ----------
    labels : ndarray of int
        Cluster index of every token (particles) or grid node (densities, see ``nodes``); −1 for
        grid nodes outside every kept cluster.
    centers : ndarray, shape (k, d)
        Unit vectors: the normalized weighted mean of each cluster's tokens (particles; the plain mean for a
        cluster of zero-weight tokens, a member token where the mean vanishes) or the location of its
        maximum (densities).
    masses : ndarray, shape (k,)
        The mass of each cluster (weights of its tokens, or ∫ ρ dσ over its basin); for particles
        they sum to 1.
    sizes : ndarray, shape (k,)
        Tokens (particles) or grid nodes (densities) per cluster.
    nodes : ndarray, shape (..., d), or None
        The evaluation grid of a density (``labels`` has its leading shape); None for particles.
    """

    labels: np.ndarray
    centers: np.ndarray
    masses: np.ndarray
    sizes: np.ndarray
    nodes: np.ndarray | None = field(default=None, repr=False)

    @property
    def count(self) -> int:
        """The number of clusters k (for particles, clusters of zero-weight tokens only included: see
        :meth:`count_above`)."""
        return int(self.masses.size)

    def count_above(self, min_mass: float) -> int:
        """The number of clusters of mass ≥ ``min_mass``.

        Parameters
        ----------
        min_mass : float
            Threshold ≥ 0, in the units of ``masses`` (for particles a fraction of the total weight 1).

        Returns
        -------
        int
        """
        return int(np.sum(self.masses >= positive_float("min_mass", min_mass, allow_zero=True)))

    def __repr__(self):
        shown = ", ".join(f"{m:.3g}" for m in self.masses[:6]) + (", …" if self.count > 6 else "")
        return f"Clusters(count={self.count}, masses=[{shown}])"


def _in_range(name: str, value, ok, allowed: str) -> float:
    """``value`` as a float, refused with its whole range (NaN or a negative value was told only "finite and >= 0")."""
    try:
        v = positive_float(name, value, allow_zero=True)       # a TypeError (not a number) goes through
    except ValueError:
        v = math.nan
    if not ok(v):
        raise ValueError(f"`{name}` must be in {allowed}; got {name}={shown(value)}.")
    return v


def _check_angle(angle) -> float:
    return _in_range("angle", angle, lambda v: 0 < v <= np.pi, "(0, π] (radians)")


def _check_min_mass(min_mass) -> float:
    return _in_range("min_mass", min_mass, lambda v: 0 <= v <= 1, "[0, 1]")


def _leaders(idx, x, h):
    """Group tokens around leaders: leaders pairwise > h apart, every token within h of its leader.

    Dispersed tokens (few pairs within h): a maximal independent set of the h-graph by Luby's
    vectorized rounds (fixed-seed priorities).  Collapsed tokens (many pairs): greedy, one ball query
    per leader (leaders are then few), a few queries at a time.  Returns (group index of every token, token index of every leader).
    """
    n = len(x)
    rng = np.random.default_rng(0)
    sample = rng.choice(n, size=min(n, 256), replace=False)
    estimate = n * float(np.mean(idx.counts(sample, h)))
    group = np.full(n, -1)
    if estimate > _PAIRS:
        # greedy in index order; the balls of the next few unassigned tokens are queried together (one Gram
        # block), and a token taken by an earlier leader of its batch is skipped
        leaders, batch = [], max(1, BLOCK_ELEMENTS // n)
        for lo in range(0, n, 4096):
            cands = lo + np.flatnonzero(group[lo:lo + 4096] < 0)
            while cands.size:
                now = cands[:batch]
                for i, ball in zip(now, idx.balls(now, h)):
                    if group[i] < 0:
                        group[ball[group[ball] < 0]] = len(leaders)
                        group[i] = len(leaders)
                        leaders.append(i)
                cands = cands[batch:][group[cands[batch:]] < 0]
        return group, np.array(leaders, dtype=int)
    pairs = idx.pairs(h)
    a, b = np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])
    prio = rng.permutation(n)
    status = np.zeros(n, dtype=np.int8)                   # 0 undecided, 1 leader, 2 covered
    while np.any(status == 0):
        und = status == 0
        live = und[a] & und[b]
        best = np.full(n, -1)
        np.maximum.at(best, a[live], prio[b[live]])
        new = und & (prio > best)                          # local priority maxima: never adjacent
        status[new] = 1
        status[b[new[a] & (status[b] == 0)]] = 2
    lead = np.flatnonzero(status == 1)
    ids = np.full(n, n)
    ids[lead] = np.arange(lead.size)
    edge = (status[a] == 2) & (status[b] == 1)
    best = np.full(n, n)
    np.minimum.at(best, a[edge], ids[b[edge]])
    group = np.where(status == 1, ids, best)
    return group, lead


def _components(x, r):
    """Labels of the connected components of the graph |x_i − x_j| ≤ r (exact; see the module docstring)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    idx = index(x)
    group, leaders = _leaders(idx, x, 0.5 * r)
    ng = leaders.size
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(ng + 1))
    gsize = np.diff(starts)
    # candidate (group g, token p ∉ g): p within 1.5 r of g's leader (a link to g needs it)
    grp, tok, near = idx.around(leaders, 1.5 * r, r)
    keep = grp != group[tok]
    grp, tok, near = grp[keep], tok[keep], near[keep]

    def components(a, b):
        graph = coo_matrix((np.ones(a.size), (a, b)), shape=(ng, ng))
        return connected_components(graph, directed=False)[1]

    # links to a leader itself are certain; only the rest needs the members, and only across components
    a_parts, b_parts = [group[tok[near]]], [grp[near]]
    comp = components(a_parts[0], b_parts[0])
    rest = ~near & (comp[group[tok]] != comp[grp])
    grp, tok = grp[rest], tok[rest]
    small = gsize[grp] <= _SMALL
    if np.any(small):                                      # all (token, member) pairs at once
        g, t = grp[small], tok[small]
        rep = gsize[g]
        offs = np.arange(rep.sum()) - np.repeat(np.cumsum(rep) - rep, rep)
        mem = order[np.repeat(starts[g], rep) + offs]
        te = np.repeat(t, rep)
        diff = x[te] - x[mem]
        hit = np.einsum("ij,ij->i", diff, diff) <= r * r
        a_parts.append(group[te[hit]])
        b_parts.append(np.repeat(g, rep)[hit])
    for g in np.unique(grp[~small]):                       # large groups (collapsed clusters): few
        t = tok[~small][grp[~small] == g]
        hit = idx.nearest(order[starts[g]:starts[g + 1]], t, r) <= r
        a_parts.append(group[t[hit]])
        b_parts.append(np.full(int(hit.sum()), g))
    return components(np.concatenate(a_parts), np.concatenate(b_parts))[group]


def _summarize(labels, x, w):
    """Relabel by decreasing mass; weighted-mean centers (the heaviest token if the mean vanishes)."""
    k = int(labels.max()) + 1
    masses = np.bincount(labels, weights=w, minlength=k)
    sizes = np.bincount(labels, minlength=k)
    sums = np.stack([np.bincount(labels, weights=w * x[:, j], minlength=k) for j in range(x.shape[1])], axis=1)
    order = np.lexsort((np.arange(k), -masses))
    rank = np.empty(k, dtype=int)
    rank[order] = np.arange(k)
    # a cluster of zero-weight tokens only has no weighted mean (all its sums are 0): its center is the plain
    # mean of its tokens, as documented (it was the first token's position)
    massless = masses == 0
    if np.any(massless):
        plain = np.stack([np.bincount(labels, weights=x[:, j], minlength=k) for j in range(x.shape[1])], axis=1)
        sums[massless] = plain[massless]
    norms = np.linalg.norm(sums, axis=1)
    centers = np.empty_like(sums)
    ok = norms > 1e-12 * np.where(massless, sizes, np.maximum(masses, 1e-300))
    centers[ok] = sums[ok] / norms[ok, None]
    for c in np.flatnonzero(~ok):                       # degenerate (e.g. antipodal) clusters: rare
        members = np.flatnonzero(labels == c)
        centers[c] = x[members[np.argmax(w[members])]]
    return rank[labels], centers[order], masses[order], sizes[order]


def particle_clusters(particles, angle: float = 0.1) -> Clusters:
    """Single-linkage clusters of tokens at angular threshold ``angle`` (exact connected components).

    Parameters
    ----------
    particles : Particles
        Tokens on S^{d-1}, any d.
    angle : float
        Linkage threshold in radians, in (0, π]: θ_i and θ_j are linked when
        arccos⟨θ_i, θ_j⟩ ≤ angle; clusters are the connected components (chains of links).

    Returns
    -------
    Clusters
        ``labels`` per token, ``centers``, ``masses`` (summed weights), ``sizes`` (token counts),
        sorted by decreasing mass.

    Notes
    -----
    Zero-weight tokens (test particles, padding, quadrature nodes where ρ = 0) are tokens like any other: they
    link chains, and where they stand alone they form clusters of mass 0, last in the order (centered on their
    plain mean).  ``count`` includes those; ``count_above(min_mass)`` with any ``min_mass`` > 0 counts only the
    clusters that carry mass.

    Exact, and O(n log n) for clustered configurations in low dimension (see the module docstring): the
    O(n²) linked pairs of a collapsed cluster are never enumerated.  Above d = 6 the neighbour queries are
    blocks of the Gram matrix, O(n² d) for dispersed tokens (2·10⁴ tokens in d = 64: ~5 s of CPU, where
    a KD-tree took 24 s).
    """
    if not isinstance(particles, Particles):
        raise TypeError(f"`particles` must be meanfield.Particles; got {type(particles).__name__}."
                        + conversion_hint(particles))
    angle = _check_angle(angle)
    x, w = particles.positions, particles.weights
    if angle == np.pi:
        # every pair is linked (arccos ≤ π); the chord of a rounded antipodal pair reads 2(1 + ε) > 2 and split
        # 2 of 200 random pairs (x, −x) into two clusters
        labels = np.zeros(len(x), dtype=int)
    else:
        labels = _components(x, 2.0 * np.sin(0.5 * angle))
    labels, centers, masses, sizes = _summarize(labels, x, w)
    return Clusters(labels, centers, masses, sizes)


# ----------------------------------------------------------------------------------------------
# densities

def _sphere_grid(density, lmax):
    from ..sphere._sh import SphereGrid, synthesis

    grid = SphereGrid.for_bandlimit(lmax, dealias=True)
    vals = synthesis(density.resized(min(density.lmax, lmax)).coeffs, min(density.lmax, lmax), grid)
    nt, nphi = grid.shape
    i, j = np.meshgrid(np.arange(nt), np.arange(nphi), indexing="ij")
    idx = np.arange(nt * nphi).reshape(nt, nphi)
    neigh = []
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            ii, jj = i + di, j + dj
            over = (ii < 0) | (ii >= nt)                   # across a pole: same ring, opposite longitude
            ii = np.where(ii < 0, 0, np.where(ii >= nt, nt - 1, ii))
            jj = np.where(over, jj + nphi // 2, jj) % nphi
            neigh.append(idx[ii, jj])
    return grid.points, vals, grid.weights / (4 * np.pi), np.stack(neigh, axis=-1)


def _circle_grid(density, n):
    from ..sphere._circle import circle_points, circle_synthesis

    vals = circle_synthesis(density.coeffs, n)
    idx = np.arange(n)
    neigh = np.stack([(idx - 1) % n, idx, (idx + 1) % n], axis=-1)
    return circle_points(n), vals, np.full(n, 1.0 / n), neigh


#: peak bytes per grid node of :func:`density_clusters` (measured with tracemalloc: 606–654 on S², 273 on S¹)
_BYTES_PER_NODE = {3: 700.0, 2: 300.0}


def _check_grid_memory(d, res):
    """Refuse a ``resolution`` whose grid and neighbour tables would not fit, before any of them is allocated
    (resolution=3000 ran 78 s and then failed in numpy's "Unable to allocate 935. MiB" under an 8 GB limit)."""
    from ..sphere._checks import check_memory
    from ..sphere._sh import SphereGrid

    nodes = math.prod(SphereGrid.for_bandlimit(res).shape) if d == 3 else 8 * res + 8
    check_memory(_BYTES_PER_NODE[d] * nodes, lambda: f"the clusters of a density on a grid of {nodes} nodes "
                 f"(resolution={res})", "lower `resolution`.")


def density_clusters(density, min_mass: float = 0.01, level: float | None = None, *,
                     resolution: int | None = None) -> Clusters:
    """Clusters of a density on S² or S¹: local maxima whose steepest-ascent basin has mass ≥ ``min_mass``.

    Parameters
    ----------
    density : Density
        A density on S² (d = 3) or S¹ (d = 2), values w.r.t. the normalized measure σ.
    min_mass : float
        Smallest basin mass that counts as a cluster, in [0, 1] (default 0.01; 0 keeps every local
        maximum, Gibbs ripples included).
    level : float, optional
        Only grid nodes with ρ ≥ ``level`` count towards the masses (and get a label); default: all
        nodes, so the basin masses sum to the total mass (the signed ∫ρ: a Gibbs ripple basin of a
        band-limited density whose lobes dip below 0 carries its net, ~0, mass and is dropped).
    resolution : int, optional
        Band limit of the evaluation grid (S²: a Gauss–Legendre grid for that degree; S¹: 8·(resolution + 1)
        equispaced points); default max(2·lmax, 32).  Below the density's ``lmax`` the density is truncated
        to degree ``resolution`` first, so its clusters are those of the truncated density.

    Returns
    -------
    Clusters
        ``labels`` on the evaluation grid (``nodes``; −1 outside the kept clusters), ``centers`` (the
        grid maximum; for a plateau of tied nodes their normalized mean, or its highest node where that mean is
        short), ``masses`` (∫ ρ dσ over each basin), ``sizes`` (grid nodes), sorted by
        decreasing mass.

    Notes
    -----
    A maximum that is not a point (a ring, a ridge) is one cluster on S²: its grid nodes, each a discrete
    maximum, are joined where ρ along the arc between them does not dip (module docstring).  A maximum whose
    prominence (the drop to the highest saddle towards a higher maximum; for the highest, to the minimum of ρ) is
    at most 1e-8 of max |ρ| is not a cluster, and its basin counts towards the maximum it merges into: a density
    flat to rounding (e.g. the uniform density) has 0 clusters, a plateau flat to rounding is one cluster, and a
    shelf flat to rounding on the flank of a peak (no dip between them) belongs to that peak's cluster.
    """
    if not isinstance(density, Density):
        raise TypeError(f"`density` must be a meanfield.Density (S² or S¹); got {type(density).__name__}."
                        + conversion_hint(density))
    min_mass = _check_min_mass(min_mass)
    if level is not None:
        if isinstance(level, bool) or not isinstance(level, (int, float, np.floating, np.integer)) \
                or not np.isfinite(level):
            raise ValueError(f"`level` must be a finite number (a density value); got level={level!r}.")
        level = float(level)
    res = nonneg_int("resolution", max(2 * density.lmax, 32) if resolution is None else resolution, minimum=1)
    _check_grid_memory(density.d, res)
    if density.d == 3:
        nodes, vals, wts, neigh = _sphere_grid(density, res)
    else:
        nodes, vals, wts, neigh = _circle_grid(density, 8 * res + 8)
    shape = vals.shape
    v, w = vals.ravel(), wts.ravel()
    nb = neigh.reshape(v.size, -1)
    tol = _TIE * float(np.max(np.abs(v)))
    idx = np.arange(v.size)
    parent = _steepest_neighbour(nodes.reshape(v.size, -1), v, nb)
    parent = np.where(v[parent] > v + tol, parent, idx)           # ties (to rounding) stay: plateaus
    while True:                                                    # pointer jumping: O(log path) rounds
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            break
        parent = nxt
    # a plateau maximum (e.g. the polar ring of a density peaked at the pole) is one maximum: merge
    # adjacent maxima whose values agree to rounding
    top = parent == idx
    a = np.repeat(idx, nb.shape[1])
    b = nb.ravel()
    link = top[a] & top[b] & (np.abs(v[a] - v[b]) <= tol)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    _, peak_comp = connected_components(coo_matrix((np.ones(int(link.sum())), (a[link], b[link])),
                                                   shape=(v.size, v.size)), directed=False)
    basin = peak_comp[parent]                                       # one id per merged maximum
    counted = np.ones(v.size, bool) if level is None else v >= level
    # signed: with the positive part only, the ripple basins of five Diracs at L = 40 weighed 0.01–0.03 each
    # (45 clusters, masses summing to 2.0); signed, they carry ~0 and the five clusters sum to 1
    mass_node = np.where(counted, v * w, 0.0)
    pts = nodes.reshape(-1, nodes.shape[-1])
    _, basin = np.unique(basin, return_inverse=True)
    if density.d == 3:
        basin = _join_ridge_maxima(density.resized(min(density.lmax, res)), pts, v, nb, basin, top)
        _, basin = np.unique(basin, return_inverse=True)
    k = int(basin.max()) + 1
    peak_val = np.full(k, -np.inf)
    np.maximum.at(peak_val, basin[top], v[top])
    # a maximum less prominent than 1e-8 of max |ρ| is not a cluster (none of a density flat to rounding is), and its
    # basin joins the maximum it merges into
    floor = _DEPTH * float(np.max(np.abs(v)))
    owner, prominence = _prominence(v, nb, basin, peak_val, floor)
    basin = owner[basin]
    masses = np.bincount(basin, weights=mass_node, minlength=k)
    sizes = np.bincount(basin[counted], minlength=k)
    top &= v >= peak_val[basin] - tol                              # the maxima at the peak of their basin, to ties
    sums = np.zeros((k, pts.shape[1]))
    np.add.at(sums, basin[top], pts[top])
    ok = (prominence > floor) & (masses >= min_mass) & (sizes > 0)
    keep = np.flatnonzero(ok)
    order = keep[np.lexsort((keep, -masses[keep]))]
    rank = np.full(k, -1)
    rank[order] = np.arange(order.size)
    labels = np.where(counted, rank[basin], -1).reshape(shape)
    return Clusters(labels, _plateau_centers(pts, v, top, basin, peak_val, sums)[order], masses[order], sizes[order],
                    nodes)


#: adjacent maxima are one when ρ along the arc between them stays above the lower one to this relative drop: the
#: arc between grid nodes near a ridge runs off it by up to a grid spacing (0.14 % below the flat part of the ring
#: exp(−20x²) at L = 40, where 1e-3 left that part a cluster of its own); a valley of a few % separates clusters
_RIDGE = 1e-2


def _join_ridge_maxima(density, pts, v, nb, basin, maxima):
    """Basin ids with adjacent maxima joined where the density along the great-circle arc between their peak nodes
    stays above the lower peak (to a relative :data:`_RIDGE`, 1 %): no valley separates them.

    A maximum that is not a point (a ring, a ridge) is sampled by grid nodes at varying distances from it, and each
    node nearer than its neighbours was a maximum of its own: the ring exp(−20⟨x, e⟩²), e = (0.6, 0, 0.8), at L = 30
    gave 56 clusters of mass 0.011–0.044.  The arc is sampled every π/(4(L + 1)), a quarter of the band limit's
    shortest wavelength.  Only maxima that rise above their basin (by :data:`_DEPTH`; not the ties of a flat
    background) take part, and the joins are made from the highest arc down, each only while the arc stays above the
    lower of the two groups' peaks (a spurious maximum on the ridge between two clusters joins one of them, not both).
    """
    k = int(basin.max()) + 1
    tops = np.flatnonzero(maxima)                                      # a basin's highest node is one of them
    order = tops[np.lexsort((-v[tops], basin[tops]))]
    peak = order[np.searchsorted(basin[order], np.arange(k))]
    low = np.full(k, np.inf)
    np.minimum.at(low, basin, v)
    top = v[peak]
    vmax = float(np.max(np.abs(v)))
    edges = []
    for column in nb.T:                                                # the edges between basins: their borders
        other = basin[column]
        cross = basin < other
        edges.append(np.stack([basin[cross], other[cross]], axis=1))
    pairs = np.unique(np.concatenate(edges), axis=0)
    risen = top - low > _DEPTH * vmax
    pairs = pairs[risen[pairs[:, 0]] & risen[pairs[:, 1]]]
    xp, xq = pts[peak[pairs[:, 0]]], pts[peak[pairs[:, 1]]]
    arc = np.arccos(np.clip(np.einsum("ij,ij->i", xp, xq), -1.0, 1.0))
    near = arc < 3.0                                                   # an antipodal pair has no single arc
    pairs, xp, xq, arc = pairs[near], xp[near], xq[near], arc[near]
    if pairs.size == 0:
        return basin
    count = np.ceil(arc / (np.pi / (4 * (density.lmax + 1)))).astype(int) + 1    # samples per arc, ends included
    from ..sphere._checks import check_memory

    check_memory(64.0 * float(count.sum()), lambda: f"ρ along {int(count.sum())} points of the arcs between adjacent "
                 "maxima", "lower `resolution` (it truncates the density: fewer ripple maxima).")
    owner = np.repeat(np.arange(pairs.shape[0]), count)
    frac = (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)) / np.repeat(count - 1, count)
    path = (1.0 - frac)[:, None] * xp[owner] + frac[:, None] * xq[owner]     # normalized by evaluate: on the arc
    lowest = np.full(pairs.shape[0], np.inf)
    np.minimum.at(lowest, owner, density.evaluate(path))
    cand = np.flatnonzero(lowest >= np.minimum(top[pairs[:, 0]], top[pairs[:, 1]]) * (1 - _RIDGE))
    group, group_top = np.arange(k), top.copy()

    def find(i):
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    for c in cand[np.argsort(-lowest[cand], kind="stable")]:        # the joins: few (ridge maxima)
        i, j = find(pairs[c, 0]), find(pairs[c, 1])
        if i != j and lowest[c] >= min(group_top[i], group_top[j]) * (1 - _RIDGE):
            group[j], group_top[i] = i, max(group_top[i], group_top[j])
    while True:                                                        # every basin to its group's root
        nxt = group[group]
        if np.array_equal(nxt, group):
            return group[basin]
        group = nxt


def _prominence(v, nb, basin, peak, floor):
    """(owner, prominence): the basin that each basin joins, and the prominence of each basin's maximum: its peak less
    the highest saddle on a path to a higher maximum (the highest maximum: less the lowest value), from the basins
    merged across their borders from the highest saddle down (0-dimensional persistence; a border's saddle is its
    highest min(ρ_a, ρ_b) over adjacent nodes a, b).  A maximum whose prominence is at most ``floor`` is no maximum
    of its own: its basin is owned by the maximum it merges into.

    The depth of a basin below its maximum (the former criterion) counted a node on a slope that the tie tolerance
    made a maximum, next to a plateau flat to rounding: its basin reached down the slope (a cluster of mass 0.005,
    3e-8 below the plateau of ρ ∝ 1 − ((1 − ⟨x, e⟩)/2)⁴⁰); its prominence is that of a tie."""
    k = peak.size
    a, b = np.repeat(np.arange(v.size), nb.shape[1]), nb.ravel()
    cross = basin[a] != basin[b]
    lo, hi = np.minimum(basin[a[cross]], basin[b[cross]]), np.maximum(basin[a[cross]], basin[b[cross]])
    saddle = np.minimum(v[a[cross]], v[b[cross]])
    order = np.lexsort((-saddle, lo * k + hi))                      # per border: its highest saddle first
    key = (lo * k + hi)[order]
    first = order[np.r_[True, key[1:] != key[:-1]]] if key.size else order
    lo, hi, saddle = lo[first], hi[first], saddle[first]
    prominence = np.full(k, np.nan)
    root, best, owner = np.arange(k), np.arange(k), np.arange(k)    # best: the highest maximum of each merged set

    def find(parent, i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for c in np.argsort(-saddle, kind="stable"):                    # the borders: one per pair of adjacent basins
        i, j = find(root, lo[c]), find(root, hi[c])
        if i != j:
            if peak[best[j]] > peak[best[i]]:
                i, j = j, i
            prominence[best[j]] = peak[best[j]] - saddle[c]          # the lower maximum ends here
            if prominence[best[j]] <= floor:
                owner[find(owner, best[j])] = find(owner, best[i])
            root[j] = i
    alone = np.isnan(prominence)
    prominence[alone] = peak[alone] - float(np.min(v))
    while True:                                                        # every basin to its owner's root
        nxt = owner[owner]
        if np.array_equal(nxt, owner):
            return owner, prominence
        owner = nxt


def _steepest_neighbour(pts, v, nb):
    """The neighbour of every node with the largest rise per unit length (v[j] − v[i])/|x_j − x_i| (the node itself
    where none rises).

    By the rise alone (argmax of v over the neighbours) the stencil's uneven lengths steered the ascent: across the pole
    of the Gauss–Legendre grid (neighbours ~2× farther than along the first ring) two bumps straddling it, at
    colatitude 0.15 on either side, got basins of 0.68 and 0.32 instead of 0.5 each."""
    best, parent = np.zeros(v.size), np.arange(v.size)
    for column in nb.T:
        length = np.linalg.norm(pts[column] - pts, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(length > 0, (v[column] - v) / length, 0.0)
        better = slope > best
        best[better], parent[better] = slope[better], column[better]
    return parent


def _plateau_centers(pts, v, top, basin, peak_val, sums):
    """The centre of each maximum: the normalized mean of its plateau's nodes (the pole of a polar-ring plateau), or,
    where that mean is short (|mean| < 1/2: a plateau around a great circle, e.g. the ring maximum of
    ρ = exp(−κ⟨x, e⟩²)), its highest node: the normalized mean pointed away from the ring, at the density's minimum."""
    tops = np.flatnonzero(top)
    best = tops[v[tops] == peak_val[basin[tops]]]
    first = np.full(sums.shape[0], -1)
    ids, at = np.unique(basin[best], return_index=True)
    first[ids] = best[at]
    norms = np.linalg.norm(sums, axis=1)
    mean_length = norms / np.maximum(np.bincount(basin[tops], minlength=sums.shape[0]), 1)
    short = mean_length < 0.5
    centers = sums / np.where(norms > 0, norms, 1.0)[:, None]
    centers[short] = pts[first[short]]
    return centers


def cluster_count(measure, **options) -> int:
    """The number of clusters of Particles (:func:`particle_clusters`) or a Density (:func:`density_clusters`).

    Parameters
    ----------
    measure : Particles or Density
        Tokens on any S^{d-1}, or a density on S² or S¹.
    **options
        Passed to the function of the measure's type: ``angle`` (radians, default 0.1) for particles;
        ``min_mass`` (default 0.01), ``level``, ``resolution`` for densities.

    Returns
    -------
    int
        The number of clusters, ``Clusters.count``.

    Raises
    ------
    TypeError
        If ``measure`` is neither Particles nor a Density, or an option does not belong to its type.
    """
    for kind, clusters in ((Particles, particle_clusters), (Density, density_clusters)):
        if isinstance(measure, kind):
            _check_cluster_options(options, kind.__name__, clusters)
            return clusters(measure, **options).count
    raise TypeError(f"`measure` must be meanfield.Particles or meanfield.Density; got {type(measure).__name__}."
                    + conversion_hint(measure))


def _check_cluster_options(options: dict, kind: str, clusters) -> None:
    """Options of the other measure type are named as such (Python's "unexpected keyword argument" named neither)."""
    import inspect

    valid = list(inspect.signature(clusters).parameters)[1:]      # after the measure
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"option(s) {unknown} do not apply to {kind} (cluster_count passes them to "
                        f"{clusters.__name__}); valid: {valid}.")


@dataclass(frozen=True, eq=False)
class ClusterHistory(ComparedByValue):
    """The clusters of every saved state of a run (see :func:`cluster_history`).

    ``==`` compares by value, arrays entry by entry (the generated comparison raised "The truth value of an array …
    is ambiguous"); unhashable.

    Attributes
    ----------
    times : ndarray, shape (k,)
        The run's saved times.
    counts : ndarray of int, shape (k,)
        The number of clusters (of mass ≥ ``min_mass``) of the state saved at each time.
    clusters : tuple of Clusters
        The clusters of each saved state as :func:`particle_clusters` or :func:`density_clusters` found them (for
        particles all of them, whatever ``min_mass``): their masses, centres and labels.
    min_mass : float or None
        The smallest mass a cluster needs to be counted; None: every cluster of a particle state, and those of
        mass ≥ 0.01 of a density state (:func:`density_clusters`'s default).
    """

    times: np.ndarray
    counts: np.ndarray
    clusters: tuple = field(repr=False)
    min_mass: float | None = None

    @property
    def merges(self) -> np.ndarray:
        """The saved-time intervals in which the count fell, one row (t_before, t_after) each, shape (m, 2).

        A merger is located to the spacing of the saved states (``save_every``): save densely enough to time it.
        """
        drop = np.flatnonzero(np.diff(self.counts) < 0)
        return np.stack([self.times[drop], self.times[drop + 1]], axis=1)

    @property
    def lost(self) -> np.ndarray:
        """The number of clusters lost in each interval of :attr:`merges` (several mergers can share one): ints,
        shape (m,)."""
        return -np.diff(self.counts)[np.diff(self.counts) < 0]

    def __repr__(self):
        return (f"ClusterHistory({self.times.size} states, t = {self.times[0]:.4g} … {self.times[-1]:.4g}, "
                f"counts {int(self.counts[0])} → {int(self.counts[-1])}, {len(self.lost)} interval(s) with mergers)")


def _state_hint(state) -> str:
    """What to do with a saved state cluster_history cannot cluster (appended to its TypeError)."""
    if isinstance(state, (tuple, list)):
        return (" A run of several species saves one Density per species: cluster each species' state with "
                "meanfield.cluster_count(traj.states[i][k]), or the sum of their densities.")
    if type(state).__name__ == "ZonalDensity":
        return (" A ZonalDensity (the zonal solver on S^{d-1}) is symmetric about its axis: its clusters are caps or "
                "bands of its profile, which this function does not find; cluster samples of it "
                "(meanfield.sample_density(state, n)) or read the profile itself.")
    return ""


def cluster_history(trajectory, angle: float = 0.1, min_mass: float | None = None, **options) -> ClusterHistory:
    """The cluster count of every saved state of a run, and the saved-time intervals in which clusters merged.

    Parameters
    ----------
    trajectory : Trajectory
        A run whose states are Particles (any d) or Densities on S² or S¹ (a hybrid run: both).
    angle : float
        Linkage threshold of :func:`particle_clusters` in radians, in (0, π] (particle states).
    min_mass : float, optional
        Count only the clusters of mass ≥ ``min_mass``, in [0, 1].  Default: every cluster of a particle state
        (as :func:`cluster_count`), and :func:`density_clusters`'s default 0.01 for a density state.
    **options
        ``level`` and ``resolution`` of :func:`density_clusters` (density states).

    Returns
    -------
    ClusterHistory
        ``times``, ``counts`` and the ``clusters`` of each saved state; ``merges`` gives the intervals between saved
        states in which the count fell and ``lost`` how many clusters each lost.

    Raises
    ------
    TypeError
        ``trajectory`` is not a Trajectory, an option is not ``level`` or ``resolution``, or a state is neither
        Particles nor a Density.
    ValueError
        ``trajectory`` holds no state (or not one per time), ``angle`` is outside (0, π] or ``min_mass`` outside
        [0, 1] (NaN included).

    Notes
    -----
    The count of a particle state counts single-linkage clusters: a token left between clusters, or a cluster still
    forming, counts as a cluster of its own until it joins one; ``min_mass`` (e.g. 0.01) leaves such stragglers out.
    """
    from .._trajectory import Trajectory

    if not isinstance(trajectory, Trajectory):
        raise TypeError(f"`trajectory` must be a meanfield.Trajectory (the result of simulate or resume); got "
                        f"{type(trajectory).__name__}.")
    if len(trajectory.states) == 0 or len(trajectory.states) != len(trajectory.times):
        raise ValueError(f"`trajectory` must hold at least one saved state, one per saved time; got "
                         f"{len(trajectory.states)} states at {len(trajectory.times)} times.")
    angle = _check_angle(angle)
    if min_mass is not None:
        min_mass = _check_min_mass(min_mass)
    density_options = {"min_mass": 0.01 if min_mass is None else min_mass, **options}
    _check_cluster_options(density_options, "Density states", density_clusters)
    for i, state in enumerate(trajectory.states):      # all refused before any clustering
        if not isinstance(state, (Particles, Density)):
            raise TypeError(f"the states of `trajectory` must be meanfield.Particles or meanfield.Density; state {i} "
                            f"(t={trajectory.times[i]:.6g}) is {type(state).__name__}.{_state_hint(state)}")
    found = []
    for state in trajectory.states:                     # one clustering per saved state: few, each vectorized
        if isinstance(state, Particles):
            found.append(particle_clusters(state, angle=angle))
        else:
            found.append(density_clusters(state, **density_options))
    counts = np.array([c.count_above(min_mass or 0.0) for c in found], dtype=int)
    return ClusterHistory(np.asarray(trajectory.times, dtype=float), counts, tuple(found), min_mass)
