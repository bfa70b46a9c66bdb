"""The attention vector of a weighted empirical measure, at arbitrary targets.

For tokens θ_k ∈ S^{d-1} with weights w_k (Σ w_k = 1) and a target direction x,

    A(x) = Σ_heads Σ_k w_k e^{β⟨q(x), k(θ_k)⟩} v(θ_k) / Z(x)        (SA, "softmax")
    A(x) = Σ_heads Σ_k w_k e^{β⟨q(x), k(θ_k)⟩} v(θ_k)               (USA, "unnormalized")

with q = Qx, k = Kθ, v = Vθ (QKV-Norm: each normalized to unit length) and
Z(x) = Σ_k w_k e^{β⟨q(x), k(θ_k)⟩}.  With equal weights 1/n this is the attention of docs/model.md
("Tokens and attention") exactly (SA) and its division by the constant n (USA).

Two evaluators with one return type, :class:`AttentionField`:

* :func:`attention_field`: the direct sum, O(N·M·d) for N sources and M targets, any d, any Q, K, V
  (heads summed), optional causal mask; chunked over targets so memory is O(chunk·N), threaded.
* :func:`attention_field_sh`: S² (d = 3) with QᵀK = c·I, through the kernel's truncated Funk–Hecke
  expansion and ducc0's non-uniform transforms (docs/numerics.md, "Particles with a spectral
  velocity"), O(N + M + L² log L), error ≤ the reported kernel truncation bound.

The velocity of a scheme is built from these fields by the particle backends
(:mod:`meanfield.backends._stepper`); the energy module and the tests call them directly.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from typing import NamedTuple

import numpy as np

from . import _threads
from ._blas import single_threaded_blas
from ._errors import UnsupportedModelError, warn
from ._norms import einsum, norm_range, norms
from ._validate import ZeroVectorError, flag, nonneg_int, open_fraction, real_array, unit_vectors

#: ``a.max(axis=…)`` without the Python wrapper of ndarray.max (the same reduction, the same bits)
_row_max = np.maximum.reduce

_CHUNK_ELEMENTS = 2 ** 20  # default chunk: ~8 MB of float64 logits per worker
_MEMORY_CHECK_FLOOR = 2 ** 26  # requests below 64 MiB are not checked against the available memory (hot path)


def _check_memory(nbytes: float, what: str, how_to_reduce: str) -> None:
    """Refuse a request beyond the available memory (InsufficientMemoryError) before allocating it."""
    if nbytes > _MEMORY_CHECK_FLOOR:
        from ._memory import require
        require(nbytes, what, how_to_reduce)


class AttentionField(NamedTuple):
    """The attention vector and its parts at M target directions.

    Attributes
    ----------
    A : ndarray, shape (M, d), or None
        Ambient attention vector (summed over heads).  None when only the tangential part was asked for.
    tangential : ndarray, shape (M, d)
        P_x A = A − ⟨x, A⟩ x.
    radial : ndarray, shape (M,), or None
        ⟨x, A⟩.
    norm : ndarray, shape (M,), or None
        ‖A‖.
    log_z : ndarray, shape (heads, M), or None
        log Z_h(x) = log Σ_k w_k e^{β⟨q_h(x), k_h(θ_k)⟩} per head (dimensionless); the energy-like
        quantity (1/2β) Σ_j w_j Z(θ_j) of the state is built from it.
    """

    A: np.ndarray | None
    tangential: np.ndarray
    radial: np.ndarray | None
    norm: np.ndarray | None
    log_z: np.ndarray | None


# ----------------------------------------------------------------------------------------------
# input checks shared by both evaluators

def _check_points(name, x, d):
    """``x`` as an (n, d) float array of unit vectors: only directions enter attention, so nonzero vectors are
    normalized (rows already of unit norm to rounding are left bit for bit as they are)."""
    x = real_array(name, x, allow_bool=False)      # numpy read [[True, False, False]] as a unit vector
    if x.ndim != 2 or x.shape[1] != d or x.shape[0] < 1:
        raise ValueError(f"`{name}` must have shape (n, {d}) with n ≥ 1 (the model's d={d}); got shape {x.shape}.")
    return unit_vectors(name, x)


def _check_inputs(model, directions, weights, targets, need_mass=True):
    from ._model import Model
    if not isinstance(model, Model):
        raise TypeError(f"`model` must be a meanfield.Model; got {type(model).__name__}.")
    x = _check_points("directions", directions, model.d)
    n = x.shape[0]
    if weights is None:
        w = np.full(n, 1.0 / n)
    else:
        w = real_array("weights", weights, allow_bool=False)     # [True, False] read as 1, 0; "a" as numpy's error
        if w.shape != (n,):
            raise ValueError(f"`weights` must have shape ({n},); got shape {w.shape}.")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("`weights` must be finite and ≥ 0.")
        if need_mass and not w.sum() > 0:        # the softmax of no mass is 0/0 (NaN); the direct sum read A = 0
            raise ValueError("`weights` must have a positive sum (the attention of no mass is undefined).")
    y = x if targets is None else _check_points("targets", targets, model.d)
    return x, w, y


def _finish(A, y, log_z, full=True, A_tan=None):
    """The field from the ambient A; ``A_tan``: A with the radial own terms left out of the rows that
    :func:`_own_term_dominated` found (the tangential part is taken from it), or None (from A)."""
    radial = einsum("ij,ij->i", A, y)
    if A_tan is None:
        tangential = A - radial[:, None] * y
    else:
        tangential = A_tan - einsum("ij,ij->i", A_tan, y)[:, None] * y
    if not full:
        return AttentionField(None, tangential, None, None, log_z)
    return AttentionField(A, tangential, radial, norms(A), log_z)


class NullDirectionError(ZeroVectorError):
    """QKV-Norm: Q, K or V maps a direction to the zero vector (the direction is on its null space), where the
    normalized query, key or value, and so the attention, is undefined.  The message names the matrix and the
    token."""


_UNDERFLOW_NORM = 1e-150    # below it ‖a‖² loses precision as a subnormal, and from ~1e-162 underflows to 0


def _unit_rows(a, name, points="token", head=None, heads=1, offset=0):
    """The rows of ``a`` (the queries, keys or values Mθ of matrix ``name``; row i is point ``offset`` + i)
    normalized; a zero row is refused (:class:`NullDirectionError`)."""
    nrm = np.linalg.norm(a, axis=-1, keepdims=True)
    small = np.flatnonzero(nrm[:, 0] < _UNDERFLOW_NORM)
    if small.size:      # a row of 1e-170s has a direction, but its norm underflowed to 0: scale it to its largest entry
        top = np.max(np.abs(a[small]), axis=-1, keepdims=True)
        nrm[small] = top * np.linalg.norm(a[small] / np.where(top > 0, top, 1.0), axis=-1, keepdims=True)
    if np.any(nrm == 0):
        zero = np.flatnonzero(nrm[:, 0] == 0)
        more = f" (and {zero.size - 1} more)" if zero.size > 1 else ""
        which = f" of head {head}" if heads > 1 else ""
        raise NullDirectionError(f"scheme='qkv-norm' normalizes {name}θ, so `{name}`{which} must map every direction "
                                 f"to a nonzero vector (e.g. an invertible `{name}`); it maps {points} "
                                 f"{offset + int(zero[0])}{more} to 0.")
    return a / nrm


# ----------------------------------------------------------------------------------------------
# direct O(N·M) evaluation

# A token's own term e^{β⟨q_i, k_i⟩} w_i v_i is radial when its value v_i is ∝ θ_i (V a multiple of the identity).
# Summed into A, it leaves the others' tangential part to the rounding of A − ⟨A, θ⟩θ, an absolute error ε·|A|: where
# the own term carries nearly all of a row's weight (an isolated token at large β) that is the whole tangential part
# (USA, β = 40: two tokens froze, with status OK).  Such rows are summed again without their own term.  The others keep
# the summation order they share: nearly coincident tokens then round alike and their relative (stiff) motion stays
# exact; with every row summed apart, BDF could not pass a cluster merger (100000 steps against 5468).
_OWN_TERM_SHARE = 1.0 - 1.0 / 16    # the rows summed again: own term above this share of the row's sum (error ≤ 16ε)


def _own_term_dominated(logits, rhs, s, start):
    """(group, row) indices of the rows of a block of exponentiated logits (groups, rows, ncols) whose own term
    (row k's in column ``start`` + k; weights in ``rhs[..., -1]``) is above _OWN_TERM_SHARE of their sum ``s``;
    None when there are none (the usual case: views and three array operations)."""
    own = np.diagonal(logits, offset=start, axis1=1, axis2=2) * rhs[:, start:start + s.shape[1], -1]
    dominated = own > _OWN_TERM_SHARE * s
    return np.nonzero(dominated) if dominated.any() else None


def _sum_without_own_term(logits, rhs, start, gi, ri):
    """(k, d): Σ_{j≠i} E_ij w_j v_j of the rows (gi, ri) of the block: their sums again, own column left out."""
    d = rhs.shape[-1] - 1
    if logits.shape[0] == 1:
        E = logits[0, ri]
        E[np.arange(ri.size), start + ri] = 0.0
        return E @ rhs[0, :, :d]
    groups, which = np.unique(gi, return_inverse=True)
    E = logits[groups]
    np.einsum("gii->gi", E[:, :, start:])[...] = 0.0
    return (E @ rhs[groups, :, :d])[which, ri]


def _head_products(model, Q, K, V):
    """(Qᵀ, Kᵀ, Vᵀ) of one head, the right factors of the products θ Mᵀ; None for a matrix the model leaves None.

    A matrix left None is the identity: its O(n·d²) product (most of the time at large d) is skipped.  A row i that
    is zero in Q or in K adds exact zeros (Qθ)_i (Kθ')_i to every logit ⟨Qθ, Kθ'⟩; for QKV-Norm, whose norms ‖Qθ‖,
    ‖Kθ'‖ read every nonzero row, only a row zero in both.  Those rows are dropped, so that a head of dimension k < d
    zero-padded to (d, d) (K may be left the identity) costs O(n²k) for its logits and O(n·d·k) for its queries and
    keys, not O(n²d) and O(n·d²) (n = 2000, d = 768, 12 heads of k = 64 on two cores: one velocity 5–6 s instead of
    13–14 s; the value sums Σ_k w_k e^(…) Vθ_k stay O(n²d) for a dense V).  One row is kept where none would be (a
    zero Q: every logit 0), as the blocks need a query dimension.
    """
    QT, KT, VT = (None if given is None else M.T for given, M in ((model.Q, Q), (model.K, K), (model.V, V)))
    if QT is not None or KT is not None:        # (Q and K are the identity where the model leaves them None)
        q_rows, k_rows = Q.any(axis=1), K.any(axis=1)
        used = (q_rows | k_rows) if model.scheme_def.normalize_qkv else (q_rows & k_rows)
        if not used.all():
            used[np.argmax(used)] = True        # (index 0 when none is used)
            QT, KT = Q[used].T, K[used].T
    return QT, KT, VT


def _value_is_radial(VT) -> bool:
    """Whether a head's value Vθ lies along θ (V = None or a multiple of I), and so, in self-attention, its own term."""
    return VT is None or np.array_equal(VT, VT[0, 0] * np.eye(VT.shape[0]))


def attention_field(model, directions, weights=None, targets=None, *, causal: bool = False,
                    chunk: int | None = None, threads: int | None = None,
                    nthreads: int | None = None) -> AttentionField:
    """Exact attention vector of the weighted tokens ``directions`` at ``targets``, by the direct sum.

    Parameters
    ----------
    model : Model
        Supplies β, the attention ("softmax"/"unnormalized"), Q, K, V (heads summed) and whether the
        scheme normalizes queries, keys and values (QKV-Norm).
    directions : array_like, shape (N, d)
        Source token directions θ_k (nonzero; normalized here: only directions enter attention).
    weights : array_like, shape (N,), optional
        Nonnegative weights w_k (default 1/N).  SA divides by Σ_k w_k e^{…}; USA does not divide, so
        with w_k = 1/n it is USA's division by the constant n (:doc:`model`).
    targets : array_like, shape (M, d), optional
        Query directions x (nonzero; normalized here); default the sources themselves.
    causal : bool
        Token j attends only to k ≤ j (index order).  Requires ``targets=None``.  SA normalizes over
        the visible tokens; USA keeps the plain weights (with w_k = 1/n: still the constant n).
    chunk : int, optional
        Rows of targets processed at once; memory is O(chunk·N·threads) float64.  Default
        ≈ 2²⁰/N (about 8 MB per worker).
    threads : int, optional
        Blocks evaluated at once on meanfield's worker threads (numpy releases the GIL); 1 runs them
        sequentially.  Default: the usable cores.  (The particle backends' option of the same name.)
    nthreads : int, optional
        Deprecated: the old name of ``threads`` (a DeprecationWarning; both at once are refused).

    Returns
    -------
    AttentionField
        ``A`` (M, d), ``tangential`` (M, d), ``radial`` (M,), ``norm`` (M,), ``log_z`` (heads, M).

    Raises
    ------
    ValueError
        Invalid input; with QKV-Norm, a Q, K or V that maps a token (or target) direction to 0, where its normalized
        query, key or value is undefined (:class:`NullDirectionError`, naming the matrix and the token).

    Notes
    -----
    SA uses the log-sum-exp shift (the row maximum of the logits of the tokens with nonzero weight), so nothing
    overflows for any β, and the terms that carry the mass do not underflow (zero-weight tokens do not set it).
    USA returns e^{max}·(shifted sum), which overflows only where the true value does.  A target
    whose visible sources all have zero weight gets A = 0 (SA) and log Z = −inf.
    """
    x, w, y = _check_inputs(model, directions, weights, targets)
    causal = flag("causal", causal)                 # "no" was read as True
    if causal and targets is not None:
        raise ValueError("`causal=True` needs `targets=None` (the mask is defined by token order).")
    if chunk is not None:
        chunk = nonneg_int("chunk", chunk, minimum=1)
    threads = thread_count(threads, nthreads)
    return _DirectEvaluator(model, w, causal=causal, chunk=chunk, nthreads=threads)(x, None if targets is None else y)


def thread_count(threads, nthreads=None) -> int | None:
    """``threads`` checked (an integer ≥ 1, or None: the usable cores), or ``nthreads``, its old name, with a
    DeprecationWarning: the backends' option was ``threads`` and these functions' ``nthreads`` (ducc0's name)."""
    name = "threads"
    if nthreads is not None:
        if threads is not None:
            raise TypeError("give `threads` only: `nthreads` is its deprecated old name.")
        warn("`nthreads` is deprecated; call it `threads` (the particle backends' option of the same name).",
             DeprecationWarning)
        threads, name = nthreads, "nthreads"
    return None if threads is None else nonneg_int(name, threads, minimum=1)


#: Below this size N·M·(d + 1) (tokens, targets, the products' third dimension) an evaluation does not take
#: :func:`single_threaded_blas`: OpenBLAS runs a product m·n·k below 65 536 (its SMP_THRESHOLD_MIN, times a build's
#: GEMM_MULTITHREAD_THRESHOLD ≥ 1) on one thread by itself, and the section's lock and thread-count calls (~5 µs) were
#: a quarter of a 20-token stage (~22 µs)
_SERIAL_BLAS_SIZE = 1 << 16


class _DirectEvaluator:
    """The direct sum of one model over tokens of fixed weights: everything that does not depend on the token
    positions (the matrices, the zero-weight tokens, the weight column), built once.

    Calls do only the arithmetic, on inputs already checked (unit rows, shapes): the particle backend evaluates
    it several times per step, and for the few hundred tokens of a hand-written script the checks of
    :func:`attention_field` cost more than the sum itself.  ``chunk`` and ``nthreads`` are checked by the caller.

    ``groups`` = G > 1: the tokens are G independent systems of n/G consecutive tokens (replicas run together), each
    attending only to its own, with its weights rescaled to mass 1 (checked by the caller: G divides n, every group
    has mass).  The sum is then G batched (n/G)² blocks, O(n²/G) instead of O(n²), for the field at the tokens only.
    """

    def __init__(self, model, weights, *, causal=False, chunk=None, nthreads=None, groups=1):
        self.groups = groups
        if groups > 1:
            weights = weights / np.repeat(weights.reshape(groups, -1).sum(axis=1), weights.size // groups)
        self.model, self.w, self.causal, self.chunk = model, weights, causal, chunk
        self.nthreads = _threads.NTHREADS if nthreads is None else nthreads
        Qs, Ks, Vs = model.matrices()
        self.heads = [_head_products(model, Qs[h], Ks[h], Vs[h]) for h in range(model.heads)]
        # The shift is the largest logit among the tokens with mass.  A zero-weight token (a test particle,
        # padding, a quadrature node where ρ = 0) contributes nothing; had its logit set the shift, the terms of
        # the tokens that carry the mass could underflow (β = 400: a token antipodal to all of them got A = 0
        # instead of their mean).
        self.massless = np.flatnonzero(weights == 0)
        self.massless_cols = (weights == 0).reshape(groups, -1)    # per group, its own columns
        self.normalize_qkv, self.softmax = model.scheme_def.normalize_qkv, model.softmax
        # _one_block's case: one head, softmax, no mask, every token with mass (a few hundred tokens' usual call)
        self.plain = model.heads == 1 and self.softmax and not causal and not self.massless.size and groups == 1
        self.w_col = weights[:, None]
        self.w_max = float(weights.max()) if weights.size else 0.0
        self.radial_own = [_value_is_radial(VT) for _, _, VT in self.heads]
        self._block_plans = {}
        self._one_block_n = None    # the token count whose field at the tokens is _one_block's, checks passed

    def _blocks(self, m, n):
        """The (group slice, row slice) of each block, and its rows and columns: row chunks of the one system, or
        whole groups, as many as fill a chunk (kept per (m, n): a run asks for the same ones at every stage)."""
        key = (m, n)
        if key not in self._block_plans:
            self._block_plans[key] = self._plan_blocks(m, n)
        return self._block_plans[key]

    def _plan_blocks(self, m, n):
        G = self.groups
        if G == 1:
            chunk = self.chunk or max(8, min(m, _CHUNK_ELEMENTS // max(n, 1)))
            return [(slice(0, 1), slice(a, min(a + chunk, m))) for a in range(0, m, chunk)], min(chunk, m), n
        g = n // G
        per = max(1, (self.chunk or _CHUNK_ELEMENTS // g) // g)     # groups per block: ~`chunk` rows
        return [(slice(a, min(a + per, G)), slice(0, g)) for a in range(0, G, per)], min(per, G) * g, g

    def __call__(self, x, y=None, full=True, log_z=True) -> AttentionField:
        """The field of the tokens ``x`` (N, d; unit rows) at ``y`` (M, d; unit rows; default the tokens).
        ``log_z=False``: with ``full=False``, ``log_z`` may be left None (the stepper's stages do not use it)."""
        # one OpenBLAS thread for every block, not only for blocks on worker threads: the products are thin (inner or
        # outer dimension d + 1), and a BLAS thread team woken for each made one block (N = 1000) 2.7x slower and a
        # serial loop of blocks (N = 3000, threads=1) 7.5x slower on a loaded two-vCPU machine; the bits then no longer
        # depend on the BLAS thread count (threads=1 and 2 differed by 3e-16 at N = 3000)
        n, d = x.shape
        if n * (n if y is None else len(y)) * (d + 1) < _SERIAL_BLAS_SIZE:
            return self._evaluate(x, y, full, log_z)        # OpenBLAS runs these on one thread anyway
        with single_threaded_blas():
            return self._evaluate(x, y, full, log_z)

    def _evaluate(self, x, y, full, log_z) -> AttentionField:
        if y is None and self.plain and x.shape[0] == self._one_block_n:     # the plan below, made for these sizes
            field = self._one_block(x, x, None, full, log_z)
            if field is not None:
                return field
        model, w, causal, G = self.model, self.w, self.causal, self.groups
        n, d = x.shape
        targets = y
        y = x if y is None else y
        m = y.shape[0]
        blocks, rows, cols = self._blocks(m, n)
        nthreads = self.nthreads
        # blocks of (rows × cols) logits in flight, one per thread, plus the (N, d) and (M, d) arrays
        nbytes = 8.0 * (min(nthreads, len(blocks)) * rows * cols + (3 * d + 2) * n + 3 * d * m)
        if nbytes > _MEMORY_CHECK_FLOOR:        # (the message is written only then: this is the hot path)
            _check_memory(nbytes, f"the exact attention of N={n} tokens at M={m} targets (chunk={rows}, "
                          f"threads={nthreads})",
                          "lower `chunk` or the thread count `threads`, or on S² use "
                          "backend='particles-sh' (memory O(N)).")
        beta, massless, softmax = model.beta, self.massless, self.softmax
        if self.plain and len(blocks) == 1:
            if targets is None and nbytes <= _MEMORY_CHECK_FLOOR:     # (above it, the check is made at each call)
                self._one_block_n = n
            field = self._one_block(x, y, targets, full, log_z)
            if field is not None:
                return field
        A = np.zeros((m, d)) if len(self.heads) > 1 else None
        log_z = np.empty((len(self.heads), m))
        heads = []      # per head: its A, and its A with the radial own terms of _own_term_dominated rows left out
        for h, (QT, KT, VT) in enumerate(self.heads):
            q = y if QT is None else y @ QT
            k = x if KT is None else x @ KT
            v = x if VT is None else x @ VT
            if self.normalize_qkv:
                where = dict(head=h, heads=len(self.heads))
                q = _unit_rows(q, "Q", "token" if targets is None else "target", **where)
                k, v = _unit_rows(k, "K", **where), _unit_rows(v, "V", **where)
            # per group: queries (G, M/G, d), keys (G, d, N/G), [w v | w] (G, N/G, d+1)
            q3 = q.reshape(G, -1, q.shape[1])
            kT3 = np.ascontiguousarray((beta * k).reshape(G, -1, k.shape[1]).transpose(0, 2, 1))
            rhs3 = np.concatenate([w[:, None] * v, w[:, None]], axis=1).reshape(G, -1, d + 1)
            Ah = np.empty((m, d))
            Ah3, log_z3 = Ah.reshape(G, -1, d), log_z[h].reshape(G, -1)
            own_radial, fixes = targets is None and self.radial_own[h], []

            def block(gs, rs, q3=q3, kT3=kT3, rhs3=rhs3, Ah3=Ah3, log_z3=log_z3, own_radial=own_radial, fixes=fixes):
                ncols = rs.stop if causal else cols          # causal: no column beyond the block's last row
                logits = q3[gs, rs] @ kT3[gs, :, :ncols]          # (groups, rows, ncols)
                if causal:
                    logits[..., np.arange(ncols)[None, :] > np.arange(rs.start, rs.stop)[:, None]] = -np.inf
                if massless.size:       # a zero-weight token has no say in the shift (see `massless`)
                    logits[np.broadcast_to(self.massless_cols[gs, None, :ncols], logits.shape)] = -np.inf
                mx = logits.max(axis=-1)
                if causal or massless.size:
                    mx[mx == -np.inf] = 0.0         # a row that sees no mass: its sums are 0 (A = 0, log Z = −inf)
                logits -= mx[..., None]
                np.exp(logits, out=logits)
                acc = logits @ rhs3[gs, :ncols]                  # (groups, rows, d+1)
                s = acc[..., d]
                dominated = _own_term_dominated(logits, rhs3[gs, :ncols], s, rs.start) if own_radial else None
                if dominated is not None:                        # (row k's own column is rs.start + k)
                    gi, ri = dominated
                    others = _sum_without_own_term(logits, rhs3[gs, :ncols], rs.start, gi, ri)
                    scale = 1 / s[gi, ri] if softmax else np.exp(mx[gi, ri])
                    fixes.append(((gs.start + gi) * (m // G) + rs.start + ri, others * scale[:, None]))
                if softmax and 0 < s.min() and s.max() < np.inf:   # every row sees mass: the branch below, unguarded
                    log_z3[gs, rs] = mx + np.log(s)
                    Ah3[gs, rs] = acc[..., :d] / s[..., None]
                    return
                with np.errstate(divide="ignore", invalid="ignore"):
                    log_z3[gs, rs] = mx + np.log(s)
                    if softmax:
                        Ah3[gs, rs] = np.where(s[..., None] > 0, acc[..., :d] / s[..., None], 0.0)
                    else:
                        Ah3[gs, rs] = acc[..., :d] * np.exp(mx)[..., None]

            if nthreads == 1 or len(blocks) == 1:
                for gs, rs in blocks:
                    block(gs, rs)
            else:   # at most `nthreads` blocks at once (memory O(nthreads·chunk·N)), each on one BLAS thread
                with single_threaded_blas():
                    _run_block_groups(lambda b: block(*b),
                                      [blocks[i::nthreads] for i in range(min(nthreads, len(blocks)))])
            heads.append((Ah, _with_rows(Ah, fixes)))
            if A is None:
                A = Ah
            else:
                A += Ah
        return _finish(A, y, log_z, full, _tangential_source(heads))


    _rhs = _rhs_values = None

    def _rhs_buffer(self, d):
        """The (N, d + 1) array [w v | w] of :meth:`_one_block`, its weight column written once, and its first d
        columns, where the values are written at each call (a concatenation of two new arrays was a tenth of a few
        tokens' call).  Read only within the call that wrote it: an evaluator belongs to one stepper, whose stages
        run one at a time."""
        rhs = self._rhs
        if rhs is None or rhs.shape[1] != d + 1:
            rhs = self._rhs = np.empty((self.w.size, d + 1))
            rhs[:, d] = self.w
            self._rhs_values = rhs[:, :d]
        return rhs, self._rhs_values

    def _one_block(self, x, y, targets, full, log_z=True):
        """The general path's arithmetic when it is one block of one head with softmax, no mask and no massless
        token, written out (no closure, slices, scratch arrays or error-state switches: the same operations on the
        same arrays, so the same bits, but for the rows that :func:`_own_term_dominated` sums again: divided by their
        weight sum here, multiplied by its reciprocal there, a rounding apart, ~1e-17); None when a row's weight sum
        is not finite and > 0 (the general path, with its guards, takes over).  ``log_z`` False and not ``full``: log
        Z is left None."""
        QT, KT, VT = self.heads[0]
        q = y if QT is None else y @ QT
        k = x if KT is None else x @ KT
        v = x if VT is None else x @ VT
        if self.normalize_qkv:
            q = _unit_rows(q, "Q", "token" if targets is None else "target", head=0, heads=1)
            k, v = _unit_rows(k, "K", head=0, heads=1), _unit_rows(v, "V", head=0, heads=1)
        logits = q @ np.multiply(k.T, self.model.beta, order="C")     # (β k)ᵀ contiguous, in one pass
        mx = _row_max(logits, axis=1)
        logits -= mx[:, None]
        np.exp(logits, out=logits)
        d = x.shape[1]
        rhs, values = self._rhs_buffer(d)
        np.multiply(self.w_col, v, out=values)
        acc = logits @ rhs
        s = acc[:, d]
        lo, hi = norm_range(s)
        if not (0 < lo and hi < np.inf):
            return None
        A, A_tan = acc[:, :d] / s[:, None], None
        # (the test of _own_term_dominated, written out: for a hundred tokens it is ~8% of the call).  An own term
        # e^(logit − max) w_i ≤ w_i: no row can pass it where the largest weight is within the share of every sum
        if targets is None and self.radial_own[0] and not self.w_max <= _OWN_TERM_SHARE * lo and (
                logits.diagonal() * self.w > _OWN_TERM_SHARE * s).any():
            gi, ri = _own_term_dominated(logits[None], rhs[None], s[None], 0)
            A_tan = _with_rows(A, [(ri, _sum_without_own_term(logits[None], rhs[None], 0, gi, ri) / s[ri, None])])
        return _finish(A, y, (mx + np.log(s))[None] if full or log_z else None, full, A_tan)


def _with_rows(A, fixes):
    """A copy of ``A`` with the rows of each (rows, values) in ``fixes`` replaced; ``A`` itself when there are none."""
    if not fixes:
        return A
    out = A.copy()
    for rows, values in fixes:
        out[rows] = values
    return out


def _tangential_source(heads):
    """Σ_h A_h with the own-term-free rows, summed in the order of A (None when no head has such rows)."""
    if all(a is a_tan for a, a_tan in heads):
        return None
    if len(heads) == 1:
        return heads[0][1]              # already _with_rows' own copy
    total = heads[0][1].copy()
    for _, a_tan in heads[1:]:
        total += a_tan
    return total


def _run_block_groups(block, groups) -> None:
    """``block(a)`` for every start of every group, one group per worker thread.  When the caller is interrupted
    (Ctrl-C, SIGTERM) or a block fails, the workers stop at their next block: each had half of an N² sum queued,
    and a run that had reported "interrupted" went on computing for minutes (the interpreter waits for them)."""
    stop = threading.Event()

    def run(group):
        for a in group:
            if stop.is_set():
                return
            block(a)

    futures = []
    try:
        futures += [_threads.executor().submit(run, g) for g in groups]
        concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)   # any group's failure
        for f in sorted(futures, key=lambda f: not (f.done() and f.exception() is not None)):
            f.result()                          # a failed group first: the others are stopped, not waited for
    except BaseException:
        stop.set()
        concurrent.futures.wait([f for f in futures if not f.cancel()])   # the blocks running now: one each
        raise


# ----------------------------------------------------------------------------------------------
# spectral evaluation on S²

def sh_support(model) -> str | None:
    """Why :func:`attention_field_sh` cannot handle ``model`` (None when it can)."""
    if model.d != 3:
        return f"the spectral velocity needs d = 3 (tokens on S²); got d={model.d}. Use backend='particles'."
    if model.heads != 1:
        return (f"the spectral velocity needs a single head; got {model.heads} heads. "
                "Use backend='particles'.")
    if not model.isotropic:
        c = _repulsive_scale(model)
        if c is not None:       # zonal, but the multipliers are built for β·c > 0 ("not zonal" said the opposite)
            return (f"QᵀK = c·I with c = {c:g} ≤ 0: the kernel exp(β⟨Qx, Ky⟩) = exp({model.beta * c:g}⟨x, y⟩) is zonal "
                    "but not attracting (β·c ≤ 0), which the spectral velocity does not support. "
                    "Use backend='particles'.")
        why = ("with QKV-Norm, Q and K must be multiples of orthogonal matrices with QᵀK ∝ I"
               if model.scheme_def.normalize_qkv else "QᵀK must be c·I with c > 0")
        return (f"the kernel exp(β⟨Qx, Ky⟩) is not zonal ({why}), so it has no Funk–Hecke expansion. "
                "Use backend='particles'.")
    return None


def _repulsive_scale(model) -> float | None:
    """c when a single head's QᵀK is c·I with c ≤ 0 (outside QKV-Norm), else None."""
    if model.heads != 1 or model.scheme_def.normalize_qkv:
        return None
    m = model._qk_product()
    c = float(m[0] if m.ndim == 1 else m[0, 0])
    from ._model import _is_multiple_of_identity
    return c if c <= 0 and _is_multiple_of_identity(m, c, 1e-14 * max(abs(c), 1e-300)) else None


def _linear_values(model):
    """(V_eff, linear): values are V_eff·θ (linear) unless QKV-Norm normalizes a non-conformal V."""
    V = model.matrices()[2][0]
    if not model.scheme_def.normalize_qkv:
        return np.array(V), True
    g = V.T @ V
    c2 = g[0, 0]
    if c2 > 0 and np.allclose(g, c2 * np.eye(3), rtol=0, atol=1e-14 * c2):
        return np.array(V) / np.sqrt(c2), True   # ‖Vθ‖ = √c2 for every unit θ
    return np.array(V), False


def sh_bandlimit(model, tol: float = 1e-12, lmax: int | None = None) -> int:
    """The band limit L of the spectral velocity: ``lmax`` if given, else kernel_bandlimit(β·c, tol)."""
    from .sphere._funk_hecke import kernel_bandlimit
    if lmax is not None:
        return nonneg_int("lmax", lmax, minimum=1)
    return max(1, kernel_bandlimit(model.beta_eff, open_fraction("tol", tol)))


def sh_error_bounds(beta_eff: float, lmax: int, epsilon: float = 0.0) -> tuple[float, float]:
    """Sup bounds (ε_Z, ε_M), per unit mass and relative to e^{β}, of the kernel truncation at ``lmax``
    (and, with ``epsilon`` > 0, of the non-uniform transforms).

    ε_Z bounds |Z − Z_L| for Z(x) = ∫ e^{β⟨x,y⟩} dμ; ε_M bounds |M − M_L| for the moment
    M(x) = ∫ e^{β⟨x,y⟩} y dμ = ∇_S Z/β + x ∫ ⟨x,y⟩ e^{β⟨x,y⟩} dμ, using |P_ℓ| ≤ 1,
    |∂_θ P_ℓ(cos θ)| ≤ √(ℓ(ℓ+1)) and Σ_m |Y_ℓm|² = (2ℓ+1)/4π.  Both are scaled by e^{-β} (the
    convention of ``funk_hecke(..., scaled=True)``).

    The transforms' part takes ducc0's ``epsilon`` as the error of each transform per unit ℓ¹ norm of
    its input (the usual form of a non-uniform FFT's error; ducc0 states ε as its accuracy target, so
    this part is an estimate).  The adjoint's and the synthesis' errors both reach Z through
    Σ_m |Y_ℓm| ≤ (2ℓ+1)/√(4π): 2√(4π) ε Σ_{ℓ≤L} (2ℓ+1) λ_ℓ, and likewise for M with the weights of ε_M.
    """
    from .sphere._funk_hecke import funk_hecke, funk_hecke_dbeta
    top = lmax + int(beta_eff + 6 * np.sqrt(beta_eff + 1) + 60)
    ell = np.arange(top + 1)
    lam = funk_hecke(beta_eff, top, 3, scaled=True)
    dlam = funk_hecke_dbeta(beta_eff, top, 3, scaled=True)
    z_terms = (2 * ell + 1) * lam
    m_terms = (2 * ell + 1) * (lam * np.sqrt(ell * (ell + 1.0)) / beta_eff + np.abs(dlam))
    tail = ell > lmax
    transforms = 2 * np.sqrt(4 * np.pi) * epsilon
    eps_z = float(np.sum(z_terms[tail]) + transforms * np.sum(z_terms[~tail]))
    eps_m = float(np.sum(m_terms[tail]) + transforms * np.sum(m_terms[~tail]))
    return eps_z, eps_m


_EPSILON_FLOOR = 3e-13   # the transforms' accuracy at the default tol = 1e-12 (ducc0's float64 floor is 2e-13)


def transform_epsilon(epsilon: float | None, tol: float = 1e-12) -> float:
    """The accuracy of ducc0's non-uniform transforms: ``epsilon``, or from ``tol`` when None.

    The default max(3e-13, tol/10) keeps the transforms' error a tenth of the kernel tolerance, so a
    looser ``tol`` also buys narrower interpolation kernels (measured velocity errors against the
    exact sum: ≤ 0.9·tol for tol = 1e-4..1e-12, β = 1..20, clustered, uniform and antipodal tokens).
    """
    if epsilon is None:
        return max(_EPSILON_FLOOR, open_fraction("tol", tol) / 10)
    from .sphere._sh import check_epsilon
    return check_epsilon(epsilon, floor=2e-13)


_LOCAL = threading.local()
_WORKSPACE_CACHE_MAX = 200_000   # keep per-thread scratch arrays between calls only up to this many points


class _Workspace:
    """Scratch arrays for n points, reused across calls (fresh temporaries of ≥128 kB are mmap'd by
    glibc and page-faulted on every call: at n = 2·10⁴ that was a third of the evaluation).
    Slices of it are filled by different worker threads; it belongs to the calling thread."""

    def __init__(self, n):
        self.n = n
        self.loc = np.empty((n, 2))
        self.xt = np.empty((3, n))
        self.rho, self.t, self.t2 = np.empty(n), np.empty(n), np.empty(n)
        self.e_theta, self.e_phi = np.empty((3, n)), np.empty((2, n))
        self.g, self.g_phi = np.empty((2, n)), np.empty((2, n))
        self.b = np.empty(n, dtype=bool)
        self.z, self.rad, self.grad = np.empty((1, n)), np.empty((1, n)), np.empty((2, n))


def _workspace(key, n) -> _Workspace:
    cache = getattr(_LOCAL, "workspaces", None)
    if cache is None:
        cache = _LOCAL.workspaces = {}
    ws = cache.get(key)
    if ws is None or ws.n != n:
        _check_memory(8.0 * 32 * n, f"the spectral velocity's arrays for N={n} tokens",
                      "lower the number of tokens.")
        ws = _Workspace(n)
        cache[key] = ws if n <= _WORKSPACE_CACHE_MAX else None
    return ws


def _forget_workspace(ws: _Workspace) -> None:
    """Drop ``ws`` from this thread's cache (after an interrupted call whose worker may still write into it)."""
    cache = getattr(_LOCAL, "workspaces", {})
    for key in [k for k, v in cache.items() if v is ws]:
        del cache[key]


@contextlib.contextmanager
def _forgotten_on_error(ws: _Workspace):
    """On any exception (a Ctrl-C included), drop ``ws`` from this thread's cache before it propagates: a worker
    whose wait was cut short may still write into it."""
    try:
        yield
    except BaseException:
        _forget_workspace(ws)
        raise


def _fill_geometry(ws: _Workspace, points, sl) -> None:
    """ducc0 locations and the tangent frame of the directions ``points[sl]``, into ``ws``.

    Fills ``xt`` (the points divided by their norms, transposed: the stepper's off-sphere Runge–Kutta
    stages are normalized here, on the worker threads), ``loc`` (colatitude θ ∈ [0, π], longitude
    φ ∈ [0, 2π]), ``rho`` = sin θ, and the frame ``e_theta`` = (z cos φ, z sin φ, −ρ),
    ``e_phi`` = (−sin φ, cos φ) (its z-component is 0), with cos φ, sin φ = x/ρ, y/ρ (at the poles, of
    the φ that ducc0 is given).

    Both angles come from atan of a ratio, without quadrant branches (numpy's arctan2 is ~2.5× slower
    than arctan): θ = π/2 − atan(z/ρ) and φ = π/2 − atan(x/y), +π when y has its sign bit set
    (y = −0 gives 2π, y = +0 gives 0 or π).  Each is exact to an absolute ulp of π/2, also at the
    poles and on the axes, where the ratios are ±inf or ±0 (for points of norm above ~1e-150, whose
    squares do not underflow: the stepper's stages are near the unit sphere, the public functions
    normalize).  On two threads a slice costs ~1.6× its one-thread time: the GIL changes hands at every
    numpy call (measured: fewer calls, or the arctangents of one thread beside the frame of the other,
    did not help).
    """
    xt, loc, rho, t, t2 = ws.xt[:, sl], ws.loc[sl], ws.rho[sl], ws.t[sl], ws.t2[sl]
    np.copyto(xt, points[sl].T)
    np.multiply(xt[0], xt[0], out=rho)
    np.multiply(xt[1], xt[1], out=t)
    rho += t                                                 # x² + y²
    np.multiply(xt[2], xt[2], out=t)
    t += rho
    np.sqrt(t, out=t)                                        # ‖x‖
    if t.size and not (t.min() > 1e-146 and t.max() < np.inf):     # squares that underflowed or overflowed
        return _fill_geometry_scaled(ws, points, sl)
    xt /= t                                                  # unit vectors
    np.sqrt(rho, out=rho)
    rho /= t                                                 # ρ = sin θ
    theta, phi, b = loc[:, 0], loc[:, 1], ws.b[sl]
    e_theta, e_phi = ws.e_theta[:, sl], ws.e_phi[:, sl]
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(xt[2], rho, out=t)
        np.arctan(t, out=t)
        np.subtract(np.pi / 2, t, out=theta)
        np.divide(xt[0], xt[1], out=t)
        np.arctan(t, out=t)
        np.signbit(xt[1], out=b)
        np.multiply(b, np.pi, out=t2)
        t2 += np.pi / 2
        np.subtract(t2, t, out=phi)
        np.divide(xt[1::-1], rho, out=e_phi)                 # (sin φ, cos φ) for now
    if not rho.all():                                        # on the polar axis: any φ, with its own frame
        idx = np.flatnonzero(rho == 0)
        phi[idx] = np.where(np.isnan(phi[idx]), 0.0, phi[idx])
        e_phi[:, idx] = np.sin(phi[idx]), np.cos(phi[idx])
    np.multiply(e_phi[::-1], xt[2], out=e_theta[:2])
    np.negative(rho, out=e_theta[2])
    np.negative(e_phi[0], out=e_phi[0])


def _fill_geometry_scaled(ws: _Workspace, points, sl) -> None:
    """:func:`_fill_geometry` for points some of whose squares underflow or overflow (a Runge–Kutta stage of a huge
    USA velocity reaches ~1e300, where ‖x‖ = inf gave ducc0 a NaN colatitude): each row divided by its largest
    entry first.  A zero row has no direction (:class:`ZeroVectorError`, which the stepper diagnoses)."""
    p = np.asarray(points[sl])
    top = np.max(np.abs(p), axis=1)
    if not np.all(top > 0):
        raise ZeroVectorError("a token's direction was lost (its position is the zero vector).")
    scaled = np.empty_like(points)
    scaled[sl] = p / top[:, None]
    _fill_geometry(ws, scaled, sl)


def _tangent_ambient(ws, sl, grad, scale, out) -> None:
    """out (3, m) = scale · (g_θ e_θ + g_φ e_φ) for ``grad`` = (g_θ, g_φ) (2, m) at the points ``sl`` of ``ws``."""
    g, tmp = ws.g[:, sl], ws.g_phi[:, sl]
    np.multiply(grad, scale, out=g)
    np.multiply(ws.e_theta[:, sl], g[0], out=out)
    np.multiply(ws.e_phi[:, sl], g[1], out=tmp)
    out[:2] += tmp


class _SHEvaluator:
    """The spectral attention of one model at one band limit: everything that does not depend on the tokens.

    Built once per run by the particles-sh backend (and per call by the public functions below); the
    token-dependent work is split into slices of points, each a one-thread ducc0 call, run on up to
    ``nthreads`` worker threads (ducc0's own threads gain little below ~10⁶ points; slices gain ~1.6× on 2
    cores).  The coefficients of the slices add up (the adjoint transform is linear).  The slices depend on
    the number of points and the band limit only, so the result is the same bits for every ``nthreads``.
    """

    def __init__(self, model, tol: float = 1e-12, lmax: int | None = None, epsilon: float | None = None,
                 nthreads: int | None = None):
        from .sphere._funk_hecke import funk_hecke, funk_hecke_dbeta
        from .sphere._sh import _ducc, lm_arrays

        why = sh_support(model)
        if why is not None:
            raise UnsupportedModelError(why)
        L = self.L = sh_bandlimit(model, tol, lmax)
        _check_memory(256.0 * (L + 2) ** 2, f"the spectral velocity at band limit L={L} (coefficients, ducc0 grids)",
                      "lower `lmax` (or raise `tol`).")
        self.epsilon = transform_epsilon(epsilon, tol)
        self.nthreads = _threads.NTHREADS if nthreads is None else nonneg_int("nthreads", nthreads, minimum=1)
        self.beta, self.softmax = model.beta_eff, model.softmax
        self.V, self.linear = _linear_values(model)
        scalar_v = self.linear and np.array_equal(self.V, self.V[0, 0] * np.eye(3))
        self.v_scalar = float(self.V[0, 0]) if scalar_v else None
        ell = lm_arrays(L)[0]
        self.lam = 4 * np.pi * funk_hecke(self.beta, L, 3, scaled=True)[ell]          # e^{-β}·4πλ_ℓ
        self.dlam = 4 * np.pi * funk_hecke_dbeta(self.beta, L, 3, scaled=True)[ell]   # e^{-β}·4π∂_βλ_ℓ
        self.shape = (1 if self.linear else 4, ell.size)
        self._ducc = _ducc()

    def _plan(self, n):
        """The slices of ``n`` points for every transform, each a one-thread ducc0 call: two (≥ 5000 points each),
        or one per 125 000 points beyond 2.5·10⁵ (up to 32: :func:`_threads.reproducible_parts`), when the points
        outweigh the O(L²) grid work each slice repeats, else one.

        Not one per thread: the bits of ducc0's transforms depend on how the points are cut, and a run must not
        depend on ``threads``.  The adjoint's sum over slices is added in their order, and ducc0 picks its
        kernel (oversampling, support) from the points and the threads of each call, which changed the bits
        of the syntheses too (tested on ducc0 0.42 at L = 21–120).  ducc0's own threads are not used: they
        also enter that choice, and its adjoint adds its threads' points in arrival order."""
        parts = _threads.reproducible_parts(n) if n >= 16 * (self.L + 1) ** 2 else 1
        return _threads.slices(n, parts)

    def _synth(self, alm, loc, out, spin=0):
        kw = dict(mode="DERIV1") if spin else {}
        return self._ducc.synthesis_general(alm=alm, spin=spin, loc=loc, map=out, lmax=self.L,
                                            epsilon=self.epsilon, nthreads=1, **kw)

    def coefficients(self, x, w, ws: _Workspace | None = None, offset: int = 0) -> np.ndarray:
        """(k, nalm): μ̂_ℓm = Σ_j w_j conj Y_ℓm(θ_j) (and of w_j v_i(θ_j) for nonlinear values).

        ``x`` (N, 3): nonzero directions θ_j ‖x_j‖ (normalized here).  Leaves the geometry of ``x`` in
        the workspace ``ws`` (default: this thread's "sources" scratch), which :meth:`field` can reuse.
        ``offset``: the index of ``x[0]`` among all the tokens (a shard's), as a refused value names it."""
        n = x.shape[0]
        ws = ws or _workspace("sources", n)
        with _forgotten_on_error(ws):
            return _threads.ordered_sum(_threads.map_slices(
                lambda sl: self._coefficients_part(ws, x, w, sl, offset), self._plan(n), self.nthreads))

    def _coefficients_part(self, ws, x, w, sl, offset=0):
        """The coefficients of the tokens ``sl`` (filling their geometry in ``ws``); token j is ``offset`` + j."""
        def adjoint(vals, loc):
            return self._ducc.adjoint_synthesis_general(map=np.ascontiguousarray(vals[None]), spin=0, loc=loc,
                                                        lmax=self.L, epsilon=self.epsilon, nthreads=1)

        _fill_geometry(ws, x, sl)
        loc = ws.loc[sl]
        mu = adjoint(w[sl], loc)
        if self.linear:
            return mu
        vals = _unit_rows(x[sl] @ self.V.T, "V", offset=offset + (sl.start or 0))     # a zero value: refused, not NaN
        return np.concatenate([mu] + [adjoint(w[sl] * vals[:, i], loc) for i in range(3)])

    def field(self, coeffs, y, radial=True, ws: _Workspace | None = None, geometry_ready=False) -> AttentionField:
        """The attention field at the directions ``y`` (M, 3; nonzero, normalized here) from :meth:`coefficients`.

        ``ws``: scratch arrays for M points (default: this thread's "targets" scratch); with
        ``geometry_ready`` it already holds the geometry of ``y`` (the workspace :meth:`coefficients` filled).
        """
        n = y.shape[0]
        ws = ws or _workspace("targets", n)
        job = _FieldJob(self, coeffs, n, radial)
        with _forgotten_on_error(ws):
            _threads.map_slices(lambda sl: job.part(ws, y, sl, geometry_ready), self._plan(n), self.nthreads)
        return job.finish(ws)

    def __call__(self, x, w, y=None, radial=True) -> AttentionField:
        """The attention field of the tokens (x, w) at ``y`` (default: at the tokens)."""
        ws = _workspace("sources", x.shape[0])     # held here: above the cache size it is not kept per thread
        if y is None:
            field = self._self_field(x, w, radial, ws)
            if field is not None:
                return field
        coeffs = self.coefficients(x, w, ws)
        if y is None:
            return self.field(coeffs, x, radial, ws, geometry_ready=True)
        return self.field(coeffs, y, radial)

    def _self_field(self, x, w, radial, ws) -> AttentionField | None:
        """The field of the tokens at themselves in one parallel region of two slices, or None where it does
        not apply (one slice or one thread, more than two slices, or called from a worker).

        Each thread transforms its slice, waits for the other at a barrier (whose action adds the two
        coefficient sets in slice order and prepares the syntheses), then synthesizes at its slice: one
        hand-off to a worker instead of two, and no serial work between the phases.  The same bits as
        :meth:`coefficients` followed by :meth:`field`.  Two slices only: a worker then never waits for
        another queued task, so a pool busy with other calls delays but cannot deadlock it.
        """
        n = x.shape[0]
        slices = self._plan(n)
        if len(slices) != 2 or self.nthreads < 2 or _threads.on_worker():
            return None
        mus, job = [None, None], []
        barrier = threading.Barrier(2, action=lambda: job.append(
            _FieldJob(self, _threads.ordered_sum(mus), n, radial)))
        # the worker's task, once queued, either starts before this thread gives up (which then waits for it) or
        # sees the call cancelled and leaves the scratch arrays alone: a Ctrl-C anywhere here, even inside
        # submit(), must neither leave it waiting at the barrier nor let it write into the next call's arrays
        lock, state, done = threading.Lock(), {"started": False, "cancelled": False}, threading.Event()

        def run(i):
            try:
                mus[i] = self._coefficients_part(ws, x, w, slices[i])
                barrier.wait()
            except BaseException:
                barrier.abort()                      # the other thread must not wait for this one
                raise
            job[0].part(ws, x, slices[i], True)

        def worker_task():
            with lock:
                if state["cancelled"]:
                    return
                state["started"] = True
            try:
                run(1)
            finally:
                done.set()

        try:
            worker = _threads.executor().submit(worker_task)
            run(0)
            worker.result()
        except BaseException as err:
            # first: a worker still running (a second Ctrl-C can cut the wait below short) then writes only into
            # arrays that no later call of this thread uses
            _forget_workspace(ws)
            barrier.abort()                          # a worker already waiting is released, a later one fails fast
            with lock:
                state["cancelled"] = True
                started = state["started"]
            if started:
                done.wait()
            # the worker's own failure is the cause when this thread only saw the barrier break
            other = worker.exception() if started and isinstance(err, threading.BrokenBarrierError) else None
            raise (other if other is not None else err)
        return job[0].finish(ws)


class _FieldJob:
    """The syntheses of one :meth:`_SHEvaluator.field` call: its multiplied coefficients and output arrays."""

    def __init__(self, ev: _SHEvaluator, coeffs, n, radial):
        self.ev, self.n = ev, n
        self.z_alm = coeffs[:1] * ev.lam
        self.tangential_only = not radial and ev.v_scalar is not None
        self.out = np.empty((3, n))      # tangential (fast path), the moment M, or the nonlinear numerators
        self.log_z = None if self.tangential_only else np.empty((1, n))
        self.r_alm = coeffs[:1] * ev.dlam if ev.linear and not self.tangential_only else None
        self.n_alms = [coeffs[1 + i][None] * ev.lam for i in range(3)] if not ev.linear else None

    def part(self, ws, y, sl, geometry_ready):
        ev, b, out, log_z = self.ev, self.ev.beta, self.out, self.log_z
        if not geometry_ready:
            _fill_geometry(ws, y, sl)
        loc = ws.loc[sl]
        z = ev._synth(self.z_alm, loc, ws.z[:, sl])[0]                               # e^{-β} Z
        if log_z is not None:       # the stepper's fast path skips it: a log costs ~10 ns per token
            with np.errstate(divide="ignore"):
                np.log(z, out=log_z[0, sl])
            log_z[0, sl] += b
        if not ev.linear:
            for i in range(3):
                ev._synth(self.n_alms[i], loc, out[i:i + 1, sl])
            return
        grad = ev._synth(self.z_alm, loc, ws.grad[:, sl], spin=1)            # (∂_θ Z, ∂_φ Z / sin θ), scaled
        if self.tangential_only:
            # V = v·I, tangential part only: A_tan = v ∇_S Z / (β Z) (SA) or v ∇_S Z / β (USA)
            scale = (np.divide(ev.v_scalar / b, z, out=ws.rad[0, sl]) if ev.softmax
                     else ev.v_scalar * np.exp(b) / b)
            _tangent_ambient(ws, sl, grad, scale, out[:, sl])
            return
        _tangent_ambient(ws, sl, grad, 1.0 / b, out[:, sl])
        rad = ev._synth(self.r_alm, loc, ws.rad[:, sl])                           # ∫⟨x,y⟩e^{β⟨x,y⟩}dμ, scaled
        out[:, sl] += rad * ws.xt[:, sl]                                          # M = ∇_S Z/β + R x

    def finish(self, ws) -> AttentionField:
        ev, out, b = self.ev, self.out, self.ev.beta
        z = ws.z[0]
        if self.tangential_only:
            return AttentionField(None, out.T, None, None, self.log_z)
        num = (ev.V @ out).T if ev.linear else out.T
        A = num / z[:, None] if ev.softmax else num * np.exp(b)
        return _finish(A, ws.xt.T, self.log_z)


def attention_field_sh(model, directions, weights=None, targets=None, *, tol: float = 1e-12,
                       lmax: int | None = None, epsilon: float | None = None, radial: bool = True,
                       threads: int | None = None, nthreads: int | None = None) -> AttentionField:
    """Attention vector on S² for QᵀK = c·I through the truncated Funk–Hecke expansion of the kernel.

    One adjoint non-uniform transform gives μ̂_ℓm = Σ_k w_k conj(Y_ℓm(θ_k)); multiplying by 4πλ_ℓ
    (λ_ℓ = ``funk_hecke(β·c, L)``, normalized measure) gives Z = K∗μ, by 4π∂_βλ_ℓ the radial moment
    R(x) = ∫⟨x,y⟩e^{β⟨x,y⟩}dμ(y).  Non-uniform syntheses (spin 0, and spin 1 for ∇_S Z) at the
    targets give the moment M = ∇_S Z/β + R x = ∫ e^{β⟨x,y⟩} y dμ(y), and A = V M / Z (SA) or V M
    (USA).  QKV-Norm with a V that is not a multiple of an orthogonal matrix has nonlinear values
    v(y) = Vy/‖Vy‖: then Z and the three N_i = K∗(v_i μ) are convolved (4 adjoint transforms).

    Parameters
    ----------
    model : Model
        d = 3, one head, QᵀK = c·I with c > 0 (``model.isotropic``); any V.
    directions : array_like, shape (N, 3)
        Source token directions (nonzero; normalized here).
    weights : array_like, shape (N,), optional
        Nonnegative weights (default 1/N).
    targets : array_like, shape (M, 3), optional
        Query directions (nonzero; normalized here); default the sources.
    tol : float
        Kernel truncation tolerance in (0, 1): L = ``kernel_bandlimit(β·c, tol)``.
    lmax : int, optional
        Band limit L ≥ 1, overriding ``tol``.
    epsilon : float, optional
        Accuracy of ducc0's non-uniform transforms in [2e-13, 1); default max(3e-13, tol/10)
        (:func:`transform_epsilon`).
    radial : bool
        If False and V is a multiple of the identity (the fast path), skip the radial synthesis:
        only ``tangential`` is returned; ``A``, ``radial``, ``norm`` and ``log_z`` are None.
    threads : int, optional
        Threads running the slices of points (one-thread ducc0 calls; two slices below 3.75·10⁵ points, one per
        125 000 beyond, up to 32); default the usable cores.  The result is the same bits for every value.
    nthreads : int, optional
        Deprecated: the old name of ``threads`` (a DeprecationWarning; both at once are refused).

    Returns
    -------
    AttentionField
        As :func:`attention_field`; ``log_z`` has shape (1, M) (None on the fast path, ``radial=False``).

    Raises
    ------
    UnsupportedModelError
        When d ≠ 3, several heads, or QᵀK is not c·I (:func:`sh_support` gives the reason).

    Notes
    -----
    The error is set by the kernel truncation and the transforms' ``epsilon``, independent of how
    concentrated the measure is: per unit mass |Z − Z_L| ≤ e^β ε_Z and |M − M_L| ≤ e^β ε_M
    (:func:`sh_error_bounds`).
    """
    radial = flag("radial", radial)     # radial=None returned A = None as radial=False does
    threads = thread_count(threads, nthreads)
    x, w, y = _check_inputs(model, directions, weights, targets)
    ev = _SHEvaluator(model, tol, lmax, epsilon, threads)
    return ev(x, w, None if targets is None else y, radial)


# The two halves of attention_field_sh.  The coefficients are linear in the weights, so the
# coefficients of a union of token sets are the sums of theirs: a sharded (distributed) run adds the
# shards' coefficients and evaluates the field at each shard's own targets (meanfield._sweep).

def sh_coefficients(model, directions, weights=None, *, tol: float = 1e-12, lmax: int | None = None,
                    epsilon: float | None = None, threads: int | None = None,
                    nthreads: int | None = None) -> np.ndarray:
    """The spherical-harmonic coefficients of the weighted tokens that :func:`attention_field_sh` convolves.

    Returns ``mu`` of shape (k, nalm) (ducc0 order, band limit L as in :func:`attention_field_sh`):
    row 0 is μ̂_ℓm = Σ_j w_j conj Y_ℓm(θ_j); with QKV-Norm and a V that is not a multiple of an
    orthogonal matrix, rows 1..3 are those of the weights w_j v_i(θ_j).  Linear in ``weights``: the
    sum over disjoint token sets (weights of the whole measure) is the coefficients of their union.
    ``threads`` (``nthreads``, deprecated) as for :func:`attention_field_sh`.
    """
    threads = thread_count(threads, nthreads)
    x, w, _ = _check_inputs(model, directions, weights, None, need_mass=False)   # linear: a shard may weigh 0
    return _SHEvaluator(model, tol, lmax, epsilon, threads).coefficients(x, w)


def attention_field_from_coefficients(model, coefficients, targets, *, tol: float = 1e-12,
                                      lmax: int | None = None, epsilon: float | None = None, radial: bool = True,
                                      threads: int | None = None, nthreads: int | None = None) -> AttentionField:
    """:func:`attention_field_sh` at ``targets`` from the coefficients of :func:`sh_coefficients`.

    ``attention_field_from_coefficients(model, sh_coefficients(model, x, w), y)`` equals
    ``attention_field_sh(model, x, w, y)`` (same options) exactly.
    """
    from ._model import Model
    if not isinstance(model, Model):
        raise TypeError(f"`model` must be a meanfield.Model; got {type(model).__name__}.")
    radial = flag("radial", radial)
    threads = thread_count(threads, nthreads)
    ev = _SHEvaluator(model, tol, lmax, epsilon, threads)
    y = _check_points("targets", targets, 3)
    c = np.asarray(coefficients)
    if c.shape != ev.shape:
        raise ValueError(f"`coefficients` must have shape {ev.shape} for lmax={ev.L}; got shape {c.shape}.")
    return ev.field(c, y, radial)
