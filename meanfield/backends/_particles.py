"""``backend="particles"``: the exact O(N²) attention of weighted tokens, any d ≥ 2 (docs/model.md,
"Tokens and attention").

The reference of every other backend: direct sums over all token pairs (:func:`meanfield.attention_field`),
any Q, K, V (heads summed), SA and USA, QKV-Norm, an optional causal mask, every scheme of
:data:`meanfield.SCHEMES` in continuous time (Runge–Kutta on the sphere) or as its discrete layer map.
"""
from __future__ import annotations

import math

import numpy as np

from .._attention import _DirectEvaluator
from .._measures import Particles, pair_alignment
from .._norms import spectral_norm_bounds
from .._schemes import UNIT_SPEED_ROWS
from .._validate import flag, nonneg_int, unit_vectors
from ._stepper import ParticleStepper


def check_groups(groups: int, initial: Particles) -> None:
    """Refuse ``groups`` that do not split the tokens of ``initial`` into equal blocks of positive mass."""
    n = initial.n
    if n % groups:
        raise ValueError(f"`groups` must divide the number of tokens n={n} (the groups are n/groups consecutive "
                         f"tokens each); got groups={groups}.")
    mass = initial.weights.reshape(groups, -1).sum(axis=1)
    if not np.all(mass > 0):
        k = int(np.flatnonzero(~(mass > 0))[0])
        size = n // groups
        raise ValueError(f"`groups`={groups}: group {k} (tokens {k * size}..{(k + 1) * size - 1}) has no mass (its "
                         "weights sum to 0); each group is a measure of its own and needs a positive mass.")


def group_alignment(weights, theta, groups: int) -> float:
    """Σ_g m_g · mean_alignment(group g): the groups' mean pair alignments weighted by their masses m_g, O(n d)."""
    w = weights.reshape(groups, -1)
    mass = w.sum(axis=1)
    return float(mass @ pair_alignment(w / mass[:, None], theta.reshape(groups, w.shape[1], -1)))


class ParticlesBackend(ParticleStepper):
    """Exact particle dynamics: O(N²·d) per velocity evaluation, memory O(N·chunk).

    Parameters
    ----------
    model : Model
        Any d ≥ 2, Q, K, V, attention, scheme.
    initial : Particles
        Token directions (n, d), weights (n,), radii (n,) (default 1 for schemes with a radius).
    **options
        The integration options of :class:`meanfield.backends._stepper.ParticleStepper` (``time``,
        ``method``, ``step``, ``rtol``, ``atol``, ``first_step``, ``max_step``, ``min_step``) and:

        causal : bool, default False
            Token j attends to tokens k ≤ j only (index order).
        chunk : int, optional
            Target rows per block of the direct sum (default ≈ 2²⁰/n).
        threads : int, optional
            Worker threads over blocks (default: the usable cores).
        groups : int, default 1
            G independent systems run together (replicas): the n tokens are G groups of n/G consecutive tokens,
            each attending only to its own group, with its weights rescaled to mass 1 (``causal`` orders the tokens
            within each group).  One velocity evaluation costs O(n²d/G), and the Runge–Kutta steps are shared: an
            adaptive step is accepted when every group's error is within the tolerance, so each group is integrated
            at least as accurately as on its own (not with the same steps).  :func:`meanfield.ensemble` uses it to
            run its replicas in one batch.  The implicit methods factorize the block-diagonal Jacobian sparse (one
            dense block per group: closed form, or finite differences of n·d/G velocity evaluations).

    Diagnostics
    -----------
    ``t``, ``mean_alignment`` (Σ_{i≠j} w_i w_j ⟨θ_i, θ_j⟩ / Σ_{i≠j} w_i w_j, O(n)), ``max_speed``
    (max_j |dθ_j/dt|), ``dissipation`` (Σ_j w_j |dθ_j/dt|², as the spectral backend's ∫ρ|v|²dσ),
    ``max_attention`` (max ‖A_j‖), ``energy`` ((1/2β) Σ_h ∬ e^{β⟨q_h, k_h⟩} dμ dμ,
    E_{β,D} with D = QᵀK for one head; absent with ``causal``), and radius statistics.  With ``groups``,
    ``mean_alignment``, ``dissipation`` and ``energy`` are the groups' own, averaged with their masses as weights;
    the maxima and radius statistics are over all tokens.
    """

    name = "particles"

    OPTIONS = {"causal": False, "chunk": None, "threads": None, "groups": 1}

    def __init__(self, model, initial, **options):
        super().__init__(model, initial, **options)
        if self.options["groups"] > 1:
            check_groups(self.options["groups"], initial)

    @classmethod
    def _probe(cls, initial, options):
        """One token of each group (checked on all the tokens first): the groups must divide the probe too."""
        groups = options.get("groups", 1)
        if groups is None or groups == 1 or not isinstance(initial, Particles):
            return super()._probe(initial, options)
        check_groups(nonneg_int("groups", groups, minimum=1), initial)
        every = initial.n // groups
        return Particles(initial.positions[::every], None, None if initial.radii is None else initial.radii[::every])

    def _configure(self, opts):
        opts["causal"] = flag("causal", opts["causal"])      # np.True_ too (a numpy comparison's result)
        if opts["chunk"] is not None:
            opts["chunk"] = nonneg_int("chunk", opts["chunk"], minimum=1)
        if opts["threads"] is not None:
            opts["threads"] = nonneg_int("threads", opts["threads"], minimum=1)
        opts["groups"] = nonneg_int("groups", opts["groups"], minimum=1)
        return opts

    @property
    def _has_jacobian(self) -> bool:
        """Post-LN (any heads, causal mask or not; the gradient flow with one head and no mask, USA and SA):
        :meth:`_jacobian` has a closed form."""
        return self.scheme.name == "post-ln"

    def _mean_alignment(self, theta) -> float:
        groups = self.options["groups"]
        return super()._mean_alignment(theta) if groups == 1 else group_alignment(self.weights, theta, groups)

    @property
    def _jacobian_blocks(self) -> int:
        return self.options["groups"]

    def _jacobian(self, t, y):
        """∂(dθ/dt)/∂y, shape (n·d, n·d), where :attr:`_has_jacobian`; None elsewhere, or where the attention weights
        overflow (the implicit solvers then use finite differences, n·d velocity evaluations).  O(n²d³) time,
        O(n²d²) memory: one velocity evaluation costs O(n²d).  With ``groups`` = G: block diagonal, one (n/G·d)²
        block per group (scipy.sparse, csc)."""
        m = self.model
        if not self._has_jacobian or y.shape[1] != self.d:
            return None
        mats, causal = m.matrices(), self.options["causal"]
        groups = self.options["groups"]
        if groups == 1:
            return post_ln_jacobian(y, self.weights, m.beta, *mats, softmax=m.softmax, causal=causal)
        from scipy import sparse

        g = self.n // groups
        w = self.weights.reshape(groups, g)
        blocks = [post_ln_jacobian(y[k * g:(k + 1) * g], w[k] / w[k].sum(), m.beta, *mats, softmax=m.softmax,
                                   causal=causal)
                  for k in range(groups)]
        return None if any(b is None for b in blocks) else sparse.block_diag(blocks, format="csc")

    def _speed_bound(self) -> float:
        """Σ_h ‖V_h‖₂ (bounded above) for Post-LN (unit speed) with softmax attention, whose A_h is a convex combination
        of the values V_h θ_k (of unit θ_k; a token that sees no mass has A = 0), so |dθ/dt| = |P_θ A| ≤ ‖A‖ ≤
        Σ_h ‖V_h‖₂ at every stage (the stages are evaluated at θ/‖θ‖; rounding is far inside the factor 2 the caller
        keeps); inf otherwise.

        ‖V_h‖₂ is bounded by min(‖V_h‖_F, √(‖V_h‖₁‖V_h‖_∞)), O(d²) and exact for multiples of I: its SVD, O(d³) per
        head, took 24-41 s for 12 heads of 768×768 before a run of 20 tokens whose steps cost 2 s, to spare the
        stages an O(n) check.  A looser bound only watches more stages."""
        if self._bound is None:
            m = self.model
            self._bound = math.inf
            if self.scheme.speed in UNIT_SPEED_ROWS and m.softmax and not self.scheme.normalize_qkv:
                self._bound = 1.0 * m.heads if m.V is None else float(np.sum(spectral_norm_bounds(m.matrices()[2])))
        return self._bound

    _bound = None

    FIELD_NORMALIZES = True     # unit_vectors below normalizes (and refuses a zero direction) in one pass
    FIELD_CHECKS_FINITE = True  # … and refuses NaN or inf first (NonFiniteError), from the norms it takes
    _evaluator = None

    def _field(self, t, theta, full):
        if self._evaluator is None:     # built at the first call: the weights are set after _configure
            o = self.options
            self._evaluator = _DirectEvaluator(self.model, self.weights, causal=o["causal"], chunk=o["chunk"],
                                               nthreads=o["threads"], groups=o["groups"])
        # log Z only where it is used: the diagnostics (full) and a step integrand's stages (the softmax flow's)
        return self._evaluator(unit_vectors("directions", theta), full=full,
                               log_z=full or self.step_integrand is not None)


def post_ln_jacobian(y, w, beta, Q, K, V, softmax: bool, causal: bool = False):
    """The Jacobian of the Post-LN velocity v_i = P_i A_i at the ambient state ``y`` (n, d) of the directions
    x_i = y_i/‖y_i‖ (P_i = I − x_i x_iᵀ), A_i = Σ_h A_i^h summed over the heads h, A_i^h = Σ_j c_ij V_h x_j with
    c_ij = w_j e^{s_ij}, s_ij = β⟨Q_h x_i, K_h x_j⟩ (USA), divided by Z_i = Σ_j w_j e^{s_ij} (SA); with ``causal``
    the sums run over j ≤ i.  Q, K, V have shape (heads, d, d).  Returns shape (n·d, n·d), or None where e^{s}
    overflows (USA).

    With g_i = K_hᵀQ_h x_i, h_m = Q_hᵀK_h x_m and Ā_i = A_i^h (SA) or 0 (USA), per head:
    ∂A_i^h/∂x_j = c_ij (V_h + β (V_h x_j − Ā_i) g_iᵀ) + δ_ij β (Σ_m c_im V_h x_m h_mᵀ − Ā_i h̄_iᵀ),
    h̄_i = Σ_m c_im h_m (SA); ∂v_i/∂x_j = P_i ∂A_i/∂x_j − δ_ij (x_i A_iᵀ + ⟨x_i, A_i⟩ I), ∂x_j/∂y_j = P_j/‖y_j‖.
    A row that sees no mass (a causal prefix of massless tokens, SA) has A_i = 0, as in the velocity.
    """
    n, d = y.shape
    r = np.linalg.norm(y, axis=1)
    x = y / r[:, None]
    seen = np.broadcast_to(w > 0, (n, n))
    if causal:
        seen = seen & np.tri(n, dtype=bool)
    T, A = np.zeros((n, n, d, d)), np.zeros((n, d))
    for Qh, Kh, Vh in zip(Q, K, V):
        head = _post_ln_head(x, w, beta, Qh, Kh, Vh, softmax, seen)
        if head is None:
            return None
        T += head[0]
        A += head[1]
    idx = np.arange(n)
    proj = np.eye(d)[None] - x[:, :, None] * x[:, None, :]                   # P_i, (n, d, d)
    J = np.einsum("iac,ijcb->ijab", proj, T)
    J[idx, idx] -= x[:, :, None] * A[:, None, :] + np.einsum("ia,ia->i", x, A)[:, None, None] * np.eye(d)
    J = np.einsum("ijac,jcb->ijab", J, proj / r[:, None, None])
    return J.transpose(0, 2, 1, 3).reshape(n * d, n * d)


def _post_ln_head(x, w, beta, Q, K, V, softmax, seen):
    """One head's ∂A_i/∂x_j, shape (n, n, d, d), and A_i (n, d) at the unit directions ``x``: see
    :func:`post_ln_jacobian`; ``seen`` (n, n) marks the pairs in the sums.  None where e^{s} overflows."""
    n, d = x.shape
    s = np.where(seen, beta * (x @ Q.T) @ (x @ K.T).T, -np.inf)
    if softmax:
        top = s.max(axis=1, keepdims=True)
        s -= np.where(np.isfinite(top), top, 0.0)          # a row that sees no mass keeps its −inf logits
    with np.errstate(over="ignore"):
        c = w[None, :] * np.exp(s)
    if softmax:
        z = c.sum(axis=1, keepdims=True)
        c = np.divide(c, z, out=np.zeros_like(c), where=z > 0)
    if not np.isfinite(c).all():
        return None
    U, g, h = x @ V.T, x @ (K.T @ Q).T, x @ (Q.T @ K).T
    A = c @ U
    D = U[None, :, :] - A[:, None, :] if softmax else np.broadcast_to(U[None, :, :], (n, n, d))
    T = c[:, :, None, None] * (V[None, None] + beta * D[:, :, :, None] * g[:, None, None, :])   # (i, j, a, b)
    own = beta * np.einsum("im,ma,mb->iab", c, U, h)
    if softmax:
        own -= beta * A[:, :, None] * (c @ h)[:, None, :]
    idx = np.arange(n)
    T[idx, idx] += own
    return T, A
