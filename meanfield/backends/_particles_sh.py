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
from .._norms import norms
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
    :func:`meanfield._attention.sh_error_bounds`) and ``relative_velocity_error_bound`` (that bound over the
    largest tangential attention max_j |P_θA_j|, the part that moves the tokens: it bounds the velocities' error
    relative to the fastest token's, the number to compare with ``tol``).  The bound is ~tol relative to the
    attention's own scale (‖V‖ for SA, ‖V‖e^β for USA), not to the velocities: where the tokens' tangential
    attention is e^{-β} of that scale (well-separated tokens at large β) the velocities carry no correct digit.
    Two orthogonal tokens, USA: |P_θA| = 1/2, computed 0.507 at β = 30, 3.4e5 at β = 50, 3.1e286 at β = 700
    (relative bound 56, 3.8e4, 7.3e5); 200 uniform tokens at β = 700: relative bound 1.7e-8, measured 1.4e-13.
    A run warns (MeanfieldWarning, once) at a saved state where the relative bound is ≥ 1 and the bound could move
    a token by over :data:`UNRESOLVED_DRIFT` (0.01 rad) by ``t_final``; SA's bound, of order tol·‖V‖ (1e-11 to 1e-9
    here), would take 10⁷ to 10⁹ time units to move a token by that much.
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

    _span = None            # t_final − t0 of the run (set_run_span), for the warning of _extra_diagnostics
    _warned_unresolved = False

    def check_save_times(self, times) -> None:
        super().check_save_times(times)
        self.set_run_span(times[0], times[-1])

    def set_run_span(self, t0, t_final) -> None:
        """The run goes from ``t0`` to ``t_final``: what the warning of an unresolved velocity measures its drift over.
        :func:`meanfield.simulate` sets it through :meth:`check_save_times`; the hybrid backend sets it for its particle
        phase (from the hand-off, or the particle start, to ``t_final``), which it builds outside that call."""
        self._span = float(t_final) - float(t0)

    def _extra_diagnostics(self, field):
        bound = self.attention_error_bound(field)
        rel = relative_bound(bound, float(np.max(norms(field.tangential))))
        if rel >= 1 and not self._warned_unresolved:        # the speed factors only where the warning may be due
            r = self.y[:, self.d] if self.scheme.has_radius else 1.0
            self.warn_unresolved(self.t, bound, rel, self.min_speed_factor(field, r, self.t))
        return {"lmax": float(self.options["lmax"]),
                "kernel_truncation_error": self._kernel_error,
                "attention_error_bound": bound,
                "relative_velocity_error_bound": rel}

    def min_speed_factor(self, field, r, t) -> float:
        """min_j |s_j| of the scheme's speed factor over the tokens of ``field`` (radii ``r``) at time ``t``; NaN
        where it is undefined (a distributed run's shards call it too); NaN for a scheme without an ODE, and for
        a layered run, which never uses it (nGPT's α(t) need not be defined at t_final, after the last layer)."""
        if not self.scheme.continuous or self.options["time"] != "continuous":
            return float("nan")
        with np.errstate(invalid="ignore", over="ignore"):
            s = self.scheme.speed(r, field.norm, t, self.model)
        return float(np.min(np.abs(np.broadcast_to(s, (len(field.tangential),)))))

    def warn_unresolved(self, t, bound, rel, min_speed) -> None:
        """Warn once per run (a stepper, or a distributed run's probe) where no token's velocity is resolved at time
        ``t`` (``rel`` ≥ 1) and the error ``bound`` could move a token by more than :data:`UNRESOLVED_DRIFT` over
        the run (bound / ``min_speed`` · (t_final − t0), ``min_speed`` = min_j |s_j|)."""
        if self._warned_unresolved or not rel >= 1 or not self._span or not self.scheme.continuous \
                or self.options["time"] != "continuous":
            return
        drift = bound / min_speed * self._span if min_speed > 0 else np.inf
        if not drift >= UNRESOLVED_DRIFT:
            return
        self._warned_unresolved = True
        warn(f"backend='particles-sh': the spectral velocity is not resolved at t={t:.6g}: its error bound "
             f"{bound:.3g} is {rel:.3g} times the largest tangential attention max|P_θA| (relative_velocity_error_bound)"
             f" and could move a token by {drift:.3g} rad by t_final. The bound is relative to the attention's own "
             f"scale{' e^β' if not self.model.softmax else ''}, and these tokens' tangential attention is far below "
             "it (well-separated tokens at large β); use backend='particles' (the direct sum).")

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


#: The drift (radians over the run) from which an unresolved velocity warns: one radian let two orthogonal USA tokens
#: at β = 30 run to t = 0.02 in silence (a possible drift of 0.56 rad; the noisy velocity held rk45 at steps of
#: ~1.8e-7, 740 s against the direct sum's 0.07 s); 0.01 rad is visible in any picture of the tokens, and softmax
#: attention's bound (~1e-11 per unit time) stays below it for 10⁹ time units
UNRESOLVED_DRIFT = 0.01


def relative_bound(bound: float, scale: float) -> float:
    """``bound`` over ``scale`` (max_j |P_θA_j|): 0 for a zero bound, inf where the scale is 0 or not finite."""
    if bound == 0:
        return 0.0
    return float(bound / scale) if 0 < scale < np.inf else float("inf")
