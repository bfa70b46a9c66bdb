"""Linear stability of the uniform measure: the growth rate of each spherical-harmonic degree."""
from __future__ import annotations

import numpy as np

from .._model import ATTENTIONS
from .._schemes import get_scheme
from .._validate import choice, dimension, nonneg_int, positive_float
from ..sphere._funk_hecke import funk_hecke, funk_hecke_dbeta


def growth_rate(beta, ell, d=3, attention="softmax", scheme="post-ln", r0=1.0, alpha=1.0, t=0.0) -> float:
    """Linear growth rate γ_ℓ of a degree-ℓ perturbation of the uniform measure on S^{d-1}.

    Linearizing ∂_t ρ + div(ρ v[ρ]) = 0 about ρ ≡ 1 (Q = K = V = I) gives ρ = 1 + ε e^{γ_ℓ t} Y_ℓ with

        γ_ℓ = ℓ(ℓ + d − 2) λ_ℓ / (β s)          (unnormalized attention)
        γ_ℓ = ℓ(ℓ + d − 2) λ_ℓ / (β λ_0 s)      (softmax attention),

    λ_ℓ the Funk–Hecke multipliers (normalized measure) and s the scheme's speed factor at the
    uniform state (1 for Post-LN; r0 for Pre-LN; r0‖A‖ for Peri-LN with ‖A‖ = ∂_βλ_0/λ_0 (SA) or
    ∂_βλ_0 (USA); ‖A‖/α for nGPT; √(t+1) for LN-Scaling), so it is the instantaneous rate at time t.

    Parameters
    ----------
    beta : float
        Inverse temperature β > 0.
    ell : int
        Degree ℓ ≥ 1 (ℓ = 0 is mass and does not grow).
    d : int
        Ambient dimension, d ≥ 2.
    attention : {"softmax", "unnormalized"}
    scheme : str
        A continuous scheme of the registry; default "post-ln".
    r0, alpha, t : float
        Radius of the uniform state, nGPT step α and time, where the speed factor needs them.

    Returns
    -------
    float
        γ_ℓ in inverse time units.
    """
    beta = positive_float("beta", beta)
    ell = nonneg_int("ell", ell, minimum=1)
    d = dimension(d)
    attention = ATTENTIONS[choice("attention", attention, ATTENTIONS)]
    sch = get_scheme(scheme)
    if not sch.continuous:
        raise ValueError(f"`scheme` must be a continuous-time scheme; {sch.name!r} is a layer map only.")
    lam = funk_hecke(beta, ell, d, scaled=True)
    softmax = attention == "softmax"
    rate = ell * (ell + d - 2) * lam[ell] / beta / (lam[0] if softmax else np.exp(-beta))
    radial = funk_hecke_dbeta(beta, 0, d, scaled=True)[0] / (lam[0] if softmax else np.exp(-beta))

    class _M:  # the scheme's speed only needs α(t) and τ
        tau = None

        @staticmethod
        def alpha_at(_t):
            return positive_float("alpha", alpha)

    s = float(sch.speed(np.asarray(positive_float("r0", r0)), np.asarray(radial), float(t), _M))
    return float(rate / s)
