"""The layer-normalization schemes: one registry, one row of data per scheme (docs/model.md, "The schemes").

Every scheme is the same ODE shape for a token x = r θ (θ on S^{d-1}, r > 0) under the attention
vector A (computed from directions only):

    dθ/dt = P_θ A / s(r, ‖A‖, t),     dr/dt = radial(⟨θ, A⟩, ‖A‖, r, t),

plus a discrete residual-layer map of step h that tends to that ODE as h → 0.  This module is the
only place where the speed factors, radial laws and layer maps are written down; every backend
reads them from here.  Arguments are numpy arrays that broadcast against each other (one value per
token or grid point); ``model`` supplies α(t) and τ.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ._norms import norms

SCHEMES: dict[str, "Scheme"] = {}


def over_overflowed_speed(scheme, v, s, r, a_norm, t, model):
    """v / s per token (``v`` of shape (n, k), ``s`` the speed factor s(r, ‖A‖, t) of ``scheme`` at ``r`` and
    ``a_norm``) where s overflowed float64 for some tokens although the ratio is finite; None where it is undefined
    (s is 0 or NaN, ‖A‖ not finite, or s not proportional to ‖A‖).

    Peri-LN's s = r‖A‖ and nGPT's ‖A‖/α pass 1.8e308 under unnormalized attention near β = 709.78 (‖A‖ ~ e^β;
    Peri-LN with r = 2 from β ≈ 709.1), where P_θA/s ~ 1/r is of order one.  For those tokens ‖A‖ = m·2^e
    (``np.frexp``) and the ratio is computed as (v·2^−e) / s(r, m): exact scalings by a power of two, taken only
    where s(r, 2m) = 2·s(r, m) (a speed factor proportional to ‖A‖; any other row stays undefined there).  Tokens
    whose s is finite are divided as v / s, bit for bit."""
    n = len(v)
    s = np.broadcast_to(s, (n,))
    over = np.isposinf(s)
    if np.ndim(a_norm) == 0 or not np.all(over | (np.isfinite(s) & (s != 0))):
        return None
    a = np.broadcast_to(a_norm, (n,))[over]
    if not np.all(np.isfinite(a) & (a > 0)):
        return None
    m, e = np.frexp(a)                                  # ‖A‖ = m·2^e, m in [0.5, 1)
    rr = np.broadcast_to(r, (n,))[over]
    with np.errstate(over="ignore", invalid="ignore"):
        s1 = np.broadcast_to(scheme.speed(rr, m, t, model), m.shape)
        s2 = np.broadcast_to(scheme.speed(rr, 2 * m, t, model), m.shape)
    if not np.all(np.isfinite(s1) & (s1 != 0) & (s2 == 2 * s1)):
        return None
    out = np.empty_like(v)
    fine = ~over
    out[fine] = v[fine] / s[fine][:, None]
    out[over] = np.ldexp(v[over], -e[:, None]) / s1[:, None]
    return out


def normalize(x: np.ndarray) -> np.ndarray:
    """N(x) = x / ‖x‖ along the last axis."""
    return x / norms(x)[..., None]


@dataclass(frozen=True)
class Scheme:
    """One row of the scheme table.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"peri-ln"``.
    has_radius : bool
        Whether the state carries a radius r (sphere × radius) or lives on the sphere.
    speed : callable (r, a_norm, t, model) -> s
        Speed factor s; the direction moves with P_θ A / s.  ``None`` for layer-only schemes.
    radial : callable (radial_a, a_norm, r, t, model) -> dr/dt
        Radial law, ``radial_a = ⟨θ, A⟩``.  ``None`` when the radius does not move.
    layer : callable (x, attn, h, t, model) -> x_new
        Discrete residual layer of step h; ``x`` has shape (n, d) (ambient, radius included for
        schemes with a radius, unit vectors otherwise) and ``attn(y)`` returns A of shape (n, d)
        computed from the directions of ``y``.
    needs_norm : bool
        The speed or the radial law uses ‖A‖, so the radial part ⟨θ, A⟩ must be computed even without
        a radius (Peri-LN, nGPT).  Lets sphere-only schemes skip that work.
    layer_normalizes_attention : bool
        The layer map divides the attention by ‖A‖ (Peri-LN, nGPT, anGPT), so a zero A stops a layered run
        with that diagnosis.
    continuous : bool
        False for schemes defined only as a layer map (anGPT).
    normalize_qkv : bool
        Queries, keys and values are normalized (QKV-Norm).
    uses_alpha : bool
        The scheme takes the step α (``Model(alpha=...)``: nGPT, anGPT); other schemes refuse α ≠ 1.
    uses_tau : bool
        The scheme needs the switch time τ (``Model(tau=...)``: Mix-LN); other schemes refuse it.
    reference : str
        Where the row comes from.
    description : str
        One line: the layer map, speed and radial law in words (the registry table of the documentation).
    """

    name: str
    has_radius: bool
    speed: Callable | None
    radial: Callable | None
    layer: Callable
    needs_norm: bool = False
    layer_normalizes_attention: bool = False
    continuous: bool = True
    normalize_qkv: bool = False
    uses_alpha: bool = False
    uses_tau: bool = False
    reference: str = ""
    description: str = field(default="", compare=False)


def register(scheme: Scheme) -> Scheme:
    SCHEMES[scheme.name] = scheme
    return scheme


def get_scheme(name) -> Scheme:
    """The registered :class:`Scheme` called ``name``.

    Parameters
    ----------
    name : str or Scheme
        A key of :data:`SCHEMES` (e.g. ``"peri-ln"``); a Scheme is returned as it is.

    Returns
    -------
    Scheme
        The registry row: speed factor, radial law, layer map and flags.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the registered ones.
    """
    if isinstance(name, Scheme):
        return name
    try:
        return SCHEMES[name]
    except (KeyError, TypeError):
        raise ValueError(f"`scheme` must be one of {sorted(SCHEMES)}; got scheme={name!r}. (A user's scheme is "
                         "registered with meanfield.register_scheme; on the command line, by a module named with "
                         "`meanfield --import MODULE`.)") from None


def _ones(*arrays):
    if len(arrays) == 1:        # (the speed factors' usual call, once per velocity evaluation)
        return np.ones(np.shape(arrays[0]))
    return np.ones(np.broadcast(*[np.asarray(a) for a in arrays]).shape)


def _after_switch(t, model) -> bool:
    return model.tau is not None and t > model.tau


_KARAGODIN = "Karagodin, Ge, Polyanskiy, Rigollet (2025), Normalization in attention dynamics, Table 1"

register(Scheme(
    name="post-ln", has_radius=False,
    speed=lambda r, a_norm, t, model: _ones(a_norm),
    radial=None,
    layer=lambda x, attn, h, t, model: normalize(x + h * attn(x)),
    reference=_KARAGODIN,
    description="Post-LN: x ← N(x + h Attn(x)); unit speed on the sphere."))

register(Scheme(
    name="pre-ln", has_radius=True,
    speed=lambda r, a_norm, t, model: r * _ones(a_norm),
    radial=lambda radial_a, a_norm, r, t, model: radial_a,
    layer=lambda x, attn, h, t, model: x + h * attn(normalize(x)),
    reference=_KARAGODIN,
    description="Pre-LN: x ← x + h Attn(N(x)); speed 1/r, the radius grows by ⟨θ, A⟩."))

register(Scheme(
    name="mix-ln", has_radius=True,
    speed=lambda r, a_norm, t, model: (r * _ones(a_norm)) if _after_switch(t, model) else _ones(r, a_norm),
    radial=lambda radial_a, a_norm, r, t, model: (radial_a if _after_switch(t, model)
                                                  else np.zeros(np.shape(radial_a))),
    # before τ: the radius ‖x‖ (by norms: np.linalg.norm's square overflowed from r ≈ 1.3e154) is kept, and attn is
    # given the directions, as the other layers give it (attn(x) with r = 1e160 stopped on a "zero vector")
    layer=lambda x, attn, h, t, model: (x + h * attn(normalize(x)) if _after_switch(t, model)
                                        else norms(x)[..., None] * normalize(normalize(x) + h * attn(normalize(x)))),
    uses_tau=True, reference=_KARAGODIN,
    description="Mix-LN: Post-LN for t ≤ τ, Pre-LN after (the radius is frozen until τ)."))

register(Scheme(
    name="peri-ln", has_radius=True,
    speed=lambda r, a_norm, t, model: r * a_norm,
    radial=lambda radial_a, a_norm, r, t, model: radial_a / a_norm,
    layer=lambda x, attn, h, t, model: x + h * normalize(attn(normalize(x))),
    needs_norm=True, layer_normalizes_attention=True, reference=_KARAGODIN,
    description="Peri-LN: x ← x + h N(Attn(N(x))); speed 1/(r‖A‖), radial rate ⟨θ, A⟩/‖A‖."))

def _ngpt_layer(x, attn, h, t, model):
    return normalize(x + alpha_step_weight("ngpt", model, t, h) * (normalize(attn(x)) - x))


register(Scheme(
    name="ngpt", has_radius=False,
    speed=lambda r, a_norm, t, model: a_norm / model.alpha_at(t),
    radial=None,
    layer=_ngpt_layer,
    needs_norm=True, layer_normalizes_attention=True, uses_alpha=True,
    reference="Loshchilov et al. (2024), nGPT; " + _KARAGODIN,
    description="nGPT: x ← N(x + hα(N(Attn(x)) − x)); speed α_t/‖A‖."))

register(Scheme(
    name="ln-scaling", has_radius=False,
    speed=lambda r, a_norm, t, model: np.sqrt(t + 1.0) * _ones(a_norm),
    radial=None,
    layer=lambda x, attn, h, t, model: normalize(x + h * attn(x) / np.sqrt(t + 1.0)),
    reference="Sun et al. (2025), the curse of depth (LayerNorm scaling); " + _KARAGODIN,
    description="LN-Scaling: speed 1/√(t+1) on the sphere."))

# QKV-Norm is the Pre-LN row with normalized queries, keys and values (the attention changes, not the row).
register(replace(
    SCHEMES["pre-ln"], name="qkv-norm", normalize_qkv=True,
    description="QKV-Norm: Pre-LN with normalized queries, keys and values "
                "(w ∝ exp(β⟨Q̂θ_j, K̂θ_k⟩), values Vθ_k/‖Vθ_k‖)."))


#: The speed factors and radial laws above whose use of the magnitudes ‖A‖ and ⟨θ, A⟩ (a NaN there gives NaN, or
#: never enters) is the same at every t and for every model, so the particle stepper probes it once
#: (:func:`meanfield.backends._stepper.scheme_uses_magnitude`).  Not Mix-LN's (it uses ⟨θ, A⟩ after τ only) nor
#: LN-Scaling's (√(t + 1) is NaN before t = −1); a row added later, or a custom one, is probed at every t unless
#: it is listed here.
TIME_FREE_ROWS = frozenset([SCHEMES["post-ln"].speed, SCHEMES["pre-ln"].speed, SCHEMES["pre-ln"].radial,
                            SCHEMES["peri-ln"].speed, SCHEMES["peri-ln"].radial, SCHEMES["ngpt"].speed])


#: The speed factors above that are 1 for every r, ‖A‖, t and model (Post-LN's): the particle stepper neither calls
#: them nor divides by them (:meth:`meanfield.backends._stepper.ParticleStepper.rhs`), the same bits as dividing by 1.
UNIT_SPEED_ROWS = frozenset([SCHEMES["post-ln"].speed])


#: The layer map each α-scheme's layer weight a = α_t·h interpolates with: (1 − a)·x + a·N(Attn), a > 1 extrapolates
_WEIGHTED_LAYERS = {"angpt": "h ← ν(a)((1−a)h + a·N(Attn(N(h))))", "ngpt": "x ← N((1−a)x + a·N(Attn(x)))"}


def alpha_step_weight(name, model, t, h) -> float:
    """The layer weight a = α_t·h of scheme ``name`` (nGPT or anGPT), checked to be in (0, 1].

    Both layers move the stream towards the normalized attention output by the fraction a (a = 1 replaces it):
    nGPT's x ← N(x + a(N(Attn(x)) − x)) = N((1−a)x + a N(Attn(x))), anGPT's h ← ν(a)((1−a)h + a N(Attn(N(h)))).
    With a > 1 the weight (1 − a) of the stream is negative and the layer extrapolates beyond N(Attn) (a = 2
    gives N(2N(Attn) − x)), which is no such layer.  A constant α is checked before any work
    (:class:`meanfield.backends._stepper.ParticleStepper`); a callable α(t) at each layer (a ValueError then ends
    the run there, as an α(t) ≤ 0 does).

    Raises
    ------
    ValueError
        a = α_t·h > 1; the message names `alpha`, `step` and the range.
    """
    alpha = model.alpha_at(t)
    a = alpha * h
    if not a <= 1.0 + 1e-12:      # the rounding of step = 1/α (1.0000000000000002) is a = 1
        given = f"alpha({float(t)!r})={alpha!r}" if callable(model.alpha) else f"alpha={alpha!r}"
        raise ValueError(f"scheme={name!r} needs the layer weight a = alpha·step in (0, 1] (the layer "
                         f"{_WEIGHTED_LAYERS[name]} interpolates between the stream and N(Attn), a > 1 "
                         f"extrapolates); got {given}, step={h!r}: a = {a:.6g}. Lower `step` or `alpha`.")
    return a


def angpt_weight(model, t, h) -> float:
    """anGPT's layer weight a = α_t·h, checked to be in (0, 1] (:func:`alpha_step_weight`)."""
    return alpha_step_weight("angpt", model, t, h)


def _angpt_layer(x, attn, h, t, model):
    a = angpt_weight(model, t, h)
    nu = 1.0 / np.sqrt(a * a + (1.0 - a) ** 2)
    return nu * ((1.0 - a) * x + a * normalize(attn(normalize(x))))


register(Scheme(
    name="angpt", has_radius=True, speed=None, radial=None, layer=_angpt_layer,
    continuous=False, layer_normalizes_attention=True, uses_alpha=True, reference=_KARAGODIN,
    description="anGPT: exact layer map h ← ν(a)((1−a)h + a N(Attn(N(h)))), a = α·step, "
                "ν(a) = 1/√(a² + (1−a)²); layer-discrete only."))


#: The schemes defined in this module, which :func:`register_scheme` does not replace.
BUILTIN_SCHEMES = frozenset(SCHEMES)


def check_alpha(scheme: Scheme, alpha):
    """α as given; refused unless the scheme uses it (nGPT, anGPT) or it is the default 1."""
    if not scheme.uses_alpha and (callable(alpha) or alpha != 1.0):
        users = sorted(name for name, row in SCHEMES.items() if row.uses_alpha)
        raise ValueError(f"`alpha` is only used by scheme={' or '.join(map(repr, users))}; got alpha={alpha!r} "
                         f"with scheme={scheme.name!r}.")
    return alpha


def check_tau(scheme: Scheme, tau):
    """τ ≥ 0 as a float: required by Mix-LN, refused by every other scheme."""
    from ._validate import positive_float
    if scheme.uses_tau:
        if tau is None:
            raise ValueError(f"`tau` (the Mix-LN switch time, τ ≥ 0) is required for scheme={scheme.name!r}.")
        return positive_float("tau", tau, allow_zero=True)
    if tau is not None:
        raise ValueError(f"`tau` is only used by scheme='mix-ln'; got tau={tau!r} with scheme={scheme.name!r}.")
    return None


def check_r0(scheme: Scheme, r0) -> float:
    """The initial radius r0 > 0; refused unless the scheme has a radius or it is the default 1."""
    from ._validate import positive_float
    r0 = positive_float("r0", r0)
    if not scheme.has_radius and r0 != 1.0:
        users = sorted(name for name, row in SCHEMES.items() if row.has_radius)
        raise ValueError(f"`r0` is only used by the schemes with a radius ({', '.join(users)}); got r0={r0!r} "
                         f"with scheme={scheme.name!r}.")
    return r0
