"""Fixed-radius neighbour queries among unit vectors: a KD-tree in low dimension, Gram blocks above.

A KD-tree prunes well only in low dimension: for the single-linkage clusters of 2·10⁴ dispersed tokens
scipy's tree took 24.2 s of CPU in d = 64 and 8.6 s in d = 16, row blocks of the Gram matrix (BLAS)
4.8 s and 2.1 s (one thread each, measured; half of them in tight clusters: 7.8 against 3.3 s in d = 64;
in d = 8 the two are within 1.5× of each other either way).  Both indexes give the same answers: the chord of a pair
is |x − y|, and a Gram entry decides it only when ⟨x, y⟩ is farther than ``_BAND`` from the threshold
1 − h²/2; pairs inside that band are decided on the chord computed from the differences, as the tree
computes it.
"""
from __future__ import annotations

import numpy as np

TREE_MAX_D = 6             # a KD-tree up to this dimension, Gram blocks above
BLOCK_ELEMENTS = 1 << 20   # Gram entries per block (8 MB of float64)
_BAND = 1e-12              # |⟨x, y⟩ − (1 − h²/2)| below this: decided on the chord (rounding of ⟨x, y⟩ ≈ 1e-16·d)


def index(x: np.ndarray):
    """The neighbour index of the unit vectors ``x`` (n, d): :class:`TreeIndex` for d ≤ 6, else :class:`GramIndex`."""
    return TreeIndex(x) if x.shape[1] <= TREE_MAX_D else GramIndex(x)


def chord2(a, b) -> np.ndarray:
    """|a_k − b_k|² of the rows, rounded as scipy's KD-tree rounds it (``sqeuclidean_distance_double``: four running
    sums over blocks of four coordinates, added in order, then the remaining coordinates in order), so that a pair at
    the threshold is decided, to the last bit, as the tree decides it (compared with h·h, the tree's r²).  √ of an
    einsum against h put the pair on the other side for 1 in 3 of the pairs of 5 uniform tokens at
    δ = 1 − ⟨θ_i, θ_j⟩, and an einsum against r² linked a pair at the threshold in d = 8 that the tree does not."""
    d = a.shape[1]
    blocks = d - d % 4
    acc = [np.zeros(len(a)) for _ in range(4)]
    for k in range(blocks):                      # loops over coordinates, not tokens
        acc[k % 4] += (a[:, k] - b[:, k]) ** 2
    total = ((acc[0] + acc[1]) + acc[2]) + acc[3]
    for k in range(blocks, d):
        total += (a[:, k] - b[:, k]) ** 2
    return total


class TreeIndex:
    """Queries answered by scipy's KD-tree (unbalanced and non-compact: scipy's default took 26 s on 10⁵
    collapsed tokens, this one 0.04 s)."""

    def __init__(self, x):
        from scipy.spatial import cKDTree

        self.x = x
        self.tree = cKDTree(x, balanced_tree=False, compact_nodes=False)

    def counts(self, rows, h) -> np.ndarray:
        """How many tokens lie within chord ``h`` of each token ``rows`` (itself included)."""
        return np.asarray(self.tree.query_ball_point(self.x[rows], h, return_length=True))

    def balls(self, rows, h) -> list[np.ndarray]:
        """For each token ``rows``: the tokens within chord ``h`` of it (itself included), in no particular order."""
        found = self.tree.query_ball_point(self.x[rows], h, return_sorted=False)
        return [np.asarray(b, dtype=int) for b in found]

    def pairs(self, h) -> np.ndarray:
        """(m, 2) index pairs i < j with |x_i − x_j| ≤ h."""
        return self.tree.query_pairs(h, output_type="ndarray").reshape(-1, 2)

    def around(self, rows, h, inner):
        """(k, j, near): every token j within chord ``h`` of token ``rows[k]``, and whether within ``inner`` ≤ h."""
        from scipy.spatial import cKDTree

        cand = cKDTree(self.x[rows]).sparse_distance_matrix(self.tree, h, output_type="ndarray")
        return cand["i"].astype(int), cand["j"].astype(int), cand["v"] <= inner

    def nearest(self, members, queries, r) -> np.ndarray:
        """For each token ``queries``: its chord to the nearest of ``members`` if ≤ r, else inf."""
        from scipy.spatial import cKDTree

        d, _ = cKDTree(self.x[members]).query(self.x[queries], k=1, distance_upper_bound=r * (1 + 1e-12))
        return np.where(d <= r, d, np.inf)


class GramIndex:
    """The same queries by row blocks of the Gram matrix: O(rows · n · d) time, O(block) memory."""

    def __init__(self, x):
        self.x = x

    def _within(self, rows, h, upper=False):
        """(a, b, g): pairs (rows[a], b) with chord ≤ h and their ⟨x, y⟩ (``upper``: rows are all tokens, a < b)."""
        x = self.x
        thr = 1.0 - 0.5 * h * h
        chunk = max(1, BLOCK_ELEMENTS // len(x))
        parts = []
        for lo in range(0, len(rows), chunk):
            r = rows[lo:lo + chunk]
            c0 = lo + 1 if upper else 0                      # pairs a < b: columns after the block's first row
            g = x[r] @ x[c0:].T
            flat = np.flatnonzero(g >= thr - _BAND)          # (2-D nonzero is ~10× slower)
            a, b = np.divmod(flat, g.shape[1])
            b += c0
            gab = g.ravel()[flat]
            keep = self._decide(r[a], b, gab, thr, h) & ((b > a + lo) if upper else True)
            parts.append((a[keep] + lo, b[keep], gab[keep]))
        if not parts:
            return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
        return tuple(np.concatenate(p) for p in zip(*parts))

    def _decide(self, i, j, g, thr, h) -> np.ndarray:
        """chord(i, j) ≤ h for pairs whose ⟨x_i, x_j⟩ = g: by g away from the threshold, by the chord near it."""
        inside = g >= thr + _BAND
        unsure = np.flatnonzero(~inside & (g >= thr - _BAND))
        step = max(1, BLOCK_ELEMENTS // self.x.shape[1])       # the differences in blocks of ~8 MB
        for lo in range(0, unsure.size, step):
            u = unsure[lo:lo + step]
            inside[u] = chord2(self.x[i[u]], self.x[j[u]]) <= h * h
        return inside

    def counts(self, rows, h) -> np.ndarray:
        a, _, _ = self._within(np.asarray(rows), h)
        return np.bincount(a, minlength=len(rows))

    def balls(self, rows, h) -> list[np.ndarray]:
        a, b, _ = self._within(np.asarray(rows), h)           # a ascends: the blocks are read row by row
        return np.split(b, np.searchsorted(a, np.arange(1, len(rows))))

    def pairs(self, h) -> np.ndarray:
        a, b, _ = self._within(np.arange(len(self.x)), h, upper=True)
        return np.stack([a, b], axis=1)

    def around(self, rows, h, inner):
        rows = np.asarray(rows)
        a, b, g = self._within(rows, h)
        return a, b, self._decide(rows[a], b, g, 1.0 - 0.5 * inner * inner, inner)

    def nearest(self, members, queries, r) -> np.ndarray:
        # squared chords from vectors centred on a member: the members lie within r of it and the candidate
        # queries within ~2r, so the expansion |a|² + |b|² − 2⟨a, b⟩ errs by ~ε r², where ⟨x, y⟩ itself (all
        # entries 1.0 to rounding at chords ~1e-8) could not rank them; the chord of the nearest is then
        # computed from the difference, as the tree does
        x, members, queries = self.x, np.asarray(members), np.asarray(queries)
        centre = x[members[0]]
        target = x[members] - centre
        t2 = np.einsum("ij,ij->i", target, target)
        chunk = max(1, BLOCK_ELEMENTS // max(len(members), 1))
        best = np.empty(len(queries))
        for lo in range(0, len(queries), chunk):
            q = queries[lo:lo + chunk]
            a = x[q] - centre
            d2 = np.einsum("ij,ij->i", a, a)[:, None] + t2[None, :] - 2.0 * (a @ target.T)
            j = np.argmin(d2, axis=1)
            diff = x[q] - x[members[j]]
            best[lo:lo + chunk] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        return np.where(best <= r, best, np.inf)
