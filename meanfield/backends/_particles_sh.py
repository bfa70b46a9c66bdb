"""``backend="particles-sh"``: particles on S² with the spectral velocity, O(N + L² log L) per evaluation.

docs/numerics.md, "Particles with a spectral velocity": for QᵀK = c·I the kernel e^{βc⟨x,y⟩} is zonal;
its Funk–Hecke expansion truncated at L = ``kernel_bandlimit(βc, tol)`` is exact to ``tol`` for any
measure, Dirac masses and tight clusters included.  The attention vector comes from one adjoint
non-uniform transform and two or three non-uniform syntheses (:func:`meanfield.attention_field_sh`,
prepared once per run);
the time integration and layer maps are those of the exact backend (shared stepper).
"""
from __future__ import annotations


import numpy as np

from .._attention import _SHEvaluator, sh_bandlimit, sh_error_bounds, sh_support, transform_epsilon
from .._errors import UnsupportedModelError, warn
from .._validate import flag, nonneg_int, open_fraction
from ..sphere._funk_hecke import kernel_bandlimit, kernel_beta, kernel_truncation_error
from ._stepper import ParticleStepper


class ParticlesSHBackend(ParticleStepper):
    """Particles on S² moved by the spectral (truncated Funk–Hecke) attention.

    Parameters
    ----------
    model : Model
        d = 3, one head, QᵀK = c·I with c > 0 (``model.isotropic``), any V, SA or USA, any scheme.
    initial : Particles
        Directions (n, 3), weights, radii.
    **options
        The integration options of :class:`meanfield.backends._stepper.ParticleStepper` and:

        tol : float, default 1e-12
            Kernel truncation tolerance: L = ``kernel_bandlimit(β·c, tol)``.
        lmax : int, optional
            Band limit L, overriding ``tol``.
        epsilon : float, optional
            Accuracy of ducc0's non-uniform transforms in [2e-13, 1); default max(3e-13, tol/10), so
            a looser ``tol`` also makes the transforms cheaper.
        threads : int, optional
            Worker threads over slices of the tokens, each making one-thread ducc0 calls (the adjoint transform
            never uses ducc0's own threads, so a run repeats bit for bit); default: the usable cores.
        causal : bool, default False
            Only False: a causal mask is not a convolution (raises UnsupportedModelError).

    Diagnostics
    -----------
    Those of the exact backend plus ``lmax``, ``kernel_truncation_error`` (Σ_{ℓ>L}(2ℓ+1)λ_ℓ/λ_0, the
    relative sup error of the kernel), ``attention_error_bound`` (a sup bound on |A − A_L| over
    the tokens implied by the truncation and the transforms' ε; see
    :func:`meanfield._attention.sh_error_bounds`) and ``relative_attention_error_bound`` (that bound over
    ``max_attention``, max_j |A_j|: the scale-free number to compare with ``tol``).  Under USA the attention and
    its bound both scale like e^β (at β = 700, 200 uniform tokens: a bound of 2.3e292 on an attention of
    1.0e302, relative 2.2e-10; measured against the direct sum 2.2e-13); under SA A is of order ‖V‖ and the two
    are alike.
    """

    name = "particles-sh"

    FIELD_NORMALIZES = True
    OPTIONS = {"tol": 1e-12, "lmax": None, "epsilon": None, "threads": None, "causal": False}

    def _check_model(self, model):
        why = sh_support(model)
        if why is not None:
            raise UnsupportedModelError(f"backend='particles-sh': {why}")

    def _configure(self, opts):
        if flag("causal", opts["causal"]):        # np.False_ is False too (`is not False` refused it)
            raise UnsupportedModelError("backend='particles-sh' has no causal mask (a causal sum is not a "
                                        "convolution); use backend='particles' with causal=True.")
        opts["tol"] = open_fraction("tol", opts["tol"])
        kernel_beta(self.model, opts["tol"])        # named as β·c: a large Q was refused as `beta`
        explicit = opts["lmax"] is not None
        opts["lmax"] = sh_bandlimit(self.model, opts["tol"], opts["lmax"])
        opts["epsilon"] = transform_epsilon(opts["epsilon"], opts["tol"])
        if opts["threads"] is not None:
            opts["threads"] = nonneg_int("threads", opts["threads"], minimum=1)
        b = self.model.beta_eff
        self._kernel_error = kernel_truncation_error(b, opts["lmax"])
        self._eps = sh_error_bounds(b, opts["lmax"], opts["epsilon"])
        need = kernel_bandlimit(b, opts["tol"])
        if explicit and opts["lmax"] < need:
            warn(f"lmax={opts['lmax']} is below the kernel band limit {need} for tol={opts['tol']:g} at "
                 f"β={b:g}: the attention is exact only to {self._kernel_error:.2e} (relative kernel "
                 f"truncation error at lmax={opts['lmax']}); raise `lmax` or omit it.")
        self._sh = _SHEvaluator(self.model, lmax=opts["lmax"], epsilon=opts["epsilon"], nthreads=opts["threads"])
        return opts

    def _field(self, t, theta, full):
        return self._sh(theta, self.weights, radial=full)

    def _extra_diagnostics(self, field):
        bound = self.attention_error_bound(field)
        return {"lmax": float(self.options["lmax"]),
                "kernel_truncation_error": self._kernel_error,
                "attention_error_bound": bound,
                "relative_attention_error_bound": relative_bound(bound, float(np.max(field.norm)))}

    def attention_error_bound(self, field) -> float:
        """Sup over the tokens of a bound on |A − A_L| from the kernel truncation and the transforms' ε.

        SA: A = V M / Z ⇒ |ΔA| ≤ (‖V‖ ε_M + |A| ε_Z) e^β / (Z − e^β ε_Z); USA: |ΔA| ≤ ‖V‖ ε_M e^β.
        """
        eps_z, eps_m = self._eps
        vnorm = np.linalg.norm(self.model.matrices()[2][0], 2)
        b = self.model.beta_eff
        if not self.model.softmax:
            return float(vnorm * eps_m * np.exp(b))
        z_scaled = np.exp(field.log_z[0] - b)        # e^{-β} Z at the tokens
        denom = z_scaled - eps_z
        if np.any(denom <= 0):
            return float("inf")
        return float(np.max((vnorm * eps_m + field.norm * eps_z) / denom))


def relative_bound(bound: float, max_attention: float) -> float:
    """``bound`` over the attention's scale max_j |A_j|: 0 for a zero bound, inf where the scale is 0 or not finite."""
    if bound == 0:
        return 0.0
    rel = bound / max_attention if 0 < max_attention < np.inf else np.inf
    return float(rel)
