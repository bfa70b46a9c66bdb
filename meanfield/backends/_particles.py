"""``backend="particles"``: the exact O(N²) attention of weighted tokens, any d ≥ 2 (docs/model.md,
"Tokens and attention").

The reference of every other backend: direct sums over all token pairs (:func:`meanfield.attention_field`),
any Q, K, V (heads summed), SA and USA, QKV-Norm, an optional causal mask, every scheme of
:data:`meanfield.SCHEMES` in continuous time (Runge–Kutta on the sphere) or as its discrete layer map.
"""
from __future__ import annotations

from .._attention import _DirectEvaluator
from .._validate import flag, nonneg_int, unit_vectors
from ._stepper import ParticleStepper


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

    Diagnostics
    -----------
    ``t``, ``mean_alignment`` (Σ_{i≠j} w_i w_j ⟨θ_i, θ_j⟩ / Σ_{i≠j} w_i w_j, O(n)), ``max_speed``
    (max_j |dθ_j/dt|), ``dissipation`` (Σ_j w_j |dθ_j/dt|², as the spectral backend's ∫ρ|v|²dσ),
    ``max_attention`` (max ‖A_j‖), ``energy`` ((1/2β) Σ_h ∬ e^{β⟨q_h, k_h⟩} dμ dμ,
    E_{β,D} with D = QᵀK for one head; absent with ``causal``), and radius statistics.
    """

    name = "particles"

    OPTIONS = {"causal": False, "chunk": None, "threads": None}

    def _configure(self, opts):
        opts["causal"] = flag("causal", opts["causal"])      # np.True_ too (a numpy comparison's result)
        if opts["chunk"] is not None:
            opts["chunk"] = nonneg_int("chunk", opts["chunk"], minimum=1)
        if opts["threads"] is not None:
            opts["threads"] = nonneg_int("threads", opts["threads"], minimum=1)
        return opts

    FIELD_NORMALIZES = True     # unit_vectors below normalizes (and refuses a zero direction) in one pass
    _evaluator = None

    def _field(self, t, theta, full):
        if self._evaluator is None:     # built at the first call: the weights are set after _configure
            o = self.options
            self._evaluator = _DirectEvaluator(self.model, self.weights, causal=o["causal"], chunk=o["chunk"],
                                               nthreads=o["threads"])
        return self._evaluator(unit_vectors("directions", theta), full=full)
