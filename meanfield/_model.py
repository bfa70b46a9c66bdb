"""The frozen, validated description of one attention dynamics."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ._errors import warn
from ._schemes import Scheme, check_alpha, check_tau, get_scheme
from .sphere._funk_hecke import _MAX_UNSCALED_BETA as _LOG_FLOAT_MAX
from ._validate import choice, dimension, function_of, matrix, positive_float

ATTENTIONS = {"softmax": "softmax", "sa": "softmax", "unnormalized": "unnormalized", "usa": "unnormalized"}


@dataclass(frozen=True)
class Model:
    """Self-attention dynamics of tokens on S^{d-1} under one normalization scheme.

    Parameters
    ----------
    beta : float
        Inverse temperature β > 0 of the attention kernel exp(β⟨Qθ_j, Kθ_k⟩).
    scheme : str
        One of :data:`meanfield.SCHEMES` ("post-ln", "pre-ln", "mix-ln", "peri-ln", "ngpt",
        "ln-scaling", "qkv-norm", "angpt").
    attention : {"softmax", "unnormalized"}
        SA (weights divided by Z) or USA (divided by the constant token count; 1 in mean field).
        "sa" and "usa" are accepted aliases.  USA's weights e^(β⟨Qx, Ky⟩) are not shifted: with
        QᵀK = c·I it needs β·c ≤ 709.78 (e^(βc) overflows float64 above).  An anisotropic kernel with
        :attr:`logit_bound` β·‖QᵀK‖ beyond that is warned about: backend="spectral" refuses it, and a
        particle run stops NON_FINITE, with the overflowing token named, once a token's weights overflow.
        Far below that bound a token's own term e^(βc)·Vθ outweighs the others' by e^(βc(1−ρ)) (ρ = ⟨θ, θ'⟩ of
        the nearest other token).  With V ∝ I it is radial: backend="particles" sums the rows it dominates again
        without it, so the tangential velocity P_θA keeps its relative precision (two orthogonal tokens in a generic
        frame, Post-LN USA, rk45, rtol = 1e-10, t = 0.02: relative error of ρ(t) 7e-10 at β = 25, 2e-9 at β = 40).
        backend="particles-sh" cannot: its transforms' error is relative to the whole kernel sum, ~ε·e^(βc), so
        USA keeps only ~16 − βc(1−ρ)/2.3 digits of such a velocity (the same run: 1.7e-4 at β = 25, 1.4e-2 at
        β = 30; at β = 33 it stops STEP_TOO_SMALL).
    d : int
        Ambient dimension, d ≥ 2; tokens live on S^{d-1}.
    Q, K, V : array_like, shape (d, d) or (heads, d, d) with heads ≥ 1, optional
        Query, key and value matrices; None means the identity.  A leading axis gives several heads
        whose attention vectors are summed (the output projection is absorbed into V: V = W_O @ W_V).  A head of
        dimension k < d is given zero-padded, ``Q[h, :k] = W_Q`` and ``K[h, :k] = W_K``: only ⟨Qθ, Kθ'⟩ enters, and
        backend="particles" skips the rows zero in Q or K (its logits then cost O(n²k)).
    alpha : float or callable, optional
        nGPT / anGPT step size α_t > 0, a constant or a function of t (refused, unless 1, for the
        other schemes).
    tau : float, optional
        Mix-LN switch time τ ≥ 0 (required for "mix-ln", refused for the others).
    """

    beta: float
    scheme: str = "post-ln"
    attention: str = "softmax"
    d: int = 3
    Q: np.ndarray | None = field(default=None, repr=False)
    K: np.ndarray | None = field(default=None, repr=False)
    V: np.ndarray | None = field(default=None, repr=False)
    alpha: float | Callable = 1.0
    tau: float | None = None

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        set_("beta", positive_float("beta", self.beta))
        scheme = get_scheme(self.scheme)
        set_("scheme", scheme.name)
        set_("attention", ATTENTIONS[choice("attention", self.attention, ATTENTIONS)])
        set_("d", dimension(self.d))
        for name in ("Q", "K", "V"):
            set_(name, matrix(name, getattr(self, name), self.d))
        heads = {getattr(self, n).shape[0] for n in "QKV" if getattr(self, n) is not None
                 and getattr(self, n).ndim == 3}
        if len(heads) > 1:
            raise ValueError(f"`Q`, `K`, `V` must have the same number of heads; got {sorted(heads)}.")
        if not callable(self.alpha):
            set_("alpha", positive_float("alpha", self.alpha))
        else:       # alpha(t, s) failed with Python's TypeError at the first step, mid-run
            function_of("alpha", self.alpha, "alpha(t) (t the time)")
        check_alpha(scheme, self.alpha)
        set_("tau", check_tau(scheme, self.tau))
        set_("_kernel_scale_value", self._compute_kernel_scale())   # Q, K are read-only: computed once
        if not self.softmax:
            self._check_usa_range()

    def __eq__(self, other):
        """Equal parameters, Q, K and V compared entry by entry (the generated comparison raised "The truth value of
        an array with more than one element is ambiguous" for any model with a matrix)."""
        if not isinstance(other, Model):
            return NotImplemented
        mine, theirs = ([getattr(m, n) for n in "QKV"] for m in (self, other))
        return ((self.beta, self.scheme, self.attention, self.d, self.alpha, self.tau)
                == (other.beta, other.scheme, other.attention, other.d, other.alpha, other.tau)
                and all((a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
                        for a, b in zip(mine, theirs)))

    def __hash__(self):
        return hash((self.beta, self.scheme, self.attention, self.d, self.alpha, self.tau,
                     *(None if m is None else (m.shape, m.tobytes()) for m in (self.Q, self.K, self.V))))

    def _check_usa_range(self):
        """USA is not normalized: its weights e^(β⟨Qx, Ky⟩) must fit in float64 (softmax's are shifted)."""
        if self.isotropic:
            if self.beta_eff > _LOG_FLOAT_MAX:
                raise ValueError(f"attention='unnormalized' needs β·c ≤ {_LOG_FLOAT_MAX:.2f} (QᵀK = c·I); got β·c = "
                                 f"{self.beta_eff:g}: a token's own term e^(β·c) overflows float64, and so does its "
                                 "velocity (USA's speed grows like e^β). Softmax attention has no such limit.")
            return
        if self._logit_bound_above() > _LOG_FLOAT_MAX and self.logit_bound > _LOG_FLOAT_MAX:
            warn(f"attention='unnormalized' with β·‖QᵀK‖ = {self.logit_bound:g} > {_LOG_FLOAT_MAX:.2f}: "
                 "attention weights e^(β⟨Qx, Ky⟩) can overflow float64 (backend='spectral' refuses it; a "
                 "particle run stops NON_FINITE, diagnosed, when a token's weights overflow); softmax "
                 "attention has no such limit.")

    def _logit_bound_above(self) -> float:
        """An upper bound of :attr:`logit_bound` in O(heads·d²): β·max_h b(Q_h)·b(K_h), b(M) ≥ ‖M‖₂ of
        :func:`._norms.spectral_norm_bounds` (1 for the identity).  The exact bound takes an SVD of each Q_hᵀK_h, O(d³):
        Model(attention="unnormalized") with 12 heads of 768×768 took 24 s to find that nothing overflows."""
        from ._norms import spectral_norm_bounds

        if self.scheme_def.normalize_qkv:
            return float(self.beta)
        Qs, Ks, _ = self.matrices()
        q = np.ones(self.heads) if self.Q is None else spectral_norm_bounds(Qs)
        k = np.ones(self.heads) if self.K is None else spectral_norm_bounds(Ks)
        return float(self.beta * np.max(q * k))

    @property
    def logit_bound(self) -> float:
        """The largest attention logit β⟨Qx, Ky⟩ over unit x, y and the heads: β·max_h ‖Q_hᵀK_h‖₂ (β for QKV-Norm,
        whose q and k are unit vectors).  USA's weights e^(logit) overflow float64 above 709.78."""
        if self.scheme_def.normalize_qkv:
            return float(self.beta)
        if self.heads == 1:
            m = self._qk_product()
            return float(self.beta * (np.abs(m).max() if m.ndim == 1 else np.linalg.norm(m, 2)))
        Qs, Ks, _ = self.matrices()
        return float(self.beta * max(np.linalg.norm(q.T @ k, 2) for q, k in zip(Qs, Ks)))

    @property
    def scheme_def(self) -> Scheme:
        """The :class:`Scheme` row of this model."""
        return get_scheme(self.scheme)

    @property
    def heads(self) -> int:
        """The number of attention heads (an int ≥ 1).

        The length of the leading axis of whichever of Q, K, V has shape (heads, d, d) (they must
        agree); 1 when every matrix is None or of shape (d, d).  A (d, d) matrix, or None (the identity),
        is shared by all heads (see :meth:`matrices`).
        """
        return max((getattr(self, n).shape[0] for n in "QKV"
                    if getattr(self, n) is not None and getattr(self, n).ndim == 3), default=1)

    @property
    def softmax(self) -> bool:
        """True for softmax attention (SA), False for unnormalized attention (USA).

        With SA the attention weights e^{β⟨Qθ_j, Kθ_k⟩} are divided by the partition function
        Z_j = ∫ e^{β⟨Qθ_j, Ky⟩} dμ(y); with USA by the constant token count (1 in mean field).  Set by
        ``attention`` ("softmax"/"sa" or "unnormalized"/"usa").
        """
        return self.attention == "softmax"

    @property
    def isotropic(self) -> bool:
        """True when QᵀK = c·I with c > 0 for a single head, so the kernel is zonal (spectral fast path).

        β is then replaced by the effective β·c (see :attr:`beta_eff`).  For QKV-Norm, which normalizes queries and
        keys, Q and K must also be multiples of orthogonal matrices (else the normalized kernel is not zonal), and the
        effective β is β itself."""
        return self._kernel_scale() is not None

    @property
    def beta_eff(self) -> float:
        """The inverse temperature of the zonal kernel: β·c for QᵀK = c·I (β for QKV-Norm, whose unit queries and keys
        cancel c); raises ``ValueError`` if the kernel is not isotropic (:attr:`isotropic`)."""
        c = self._kernel_scale()
        if c is None:
            raise ValueError("`beta_eff` needs QᵀK = c·I (an isotropic kernel).")
        return self.beta * c

    def _kernel_scale(self):
        return self._kernel_scale_value

    def _compute_kernel_scale(self):
        if self.heads != 1:
            return None
        if self.Q is None and self.K is None:       # QᵀK = I, without the two length-d arrays of ones (Model(d=2**40)
            return 1.0                              # raised numpy's "Unable to allocate 8.00 TiB" when constructed)
        q, k = _structured(self.Q, self.d), _structured(self.K, self.d)
        if self.scheme_def.normalize_qkv and not (_is_orthogonal_multiple(q) and _is_orthogonal_multiple(k)):
            return None
        m = _transposed_product(q, k)
        c = m[0] if m.ndim == 1 else m[0, 0]
        if c > 0 and _is_multiple_of_identity(m, c, 1e-14 * abs(c)):
            return 1.0 if self.scheme_def.normalize_qkv else float(c)
        return None

    def _qk_product(self) -> np.ndarray:
        """QᵀK of a single head: its diagonal, shape (d,), when Q and K are None or diagonal, else shape (d, d)."""
        return _transposed_product(_structured(self.Q, self.d), _structured(self.K, self.d))

    def alpha_at(self, t) -> float:
        """α_t, the nGPT/anGPT step at time t.

        Parameters
        ----------
        t : float
            Time (in the model's time units; layers count h per layer).

        Returns
        -------
        float
            ``alpha(t)`` for a callable α (checked to be finite and > 0), else the constant α.

        Raises
        ------
        ValueError
            If a callable α returns something that is not a finite real number > 0.
        """
        if callable(self.alpha):
            value = self.alpha(t)
            try:
                if isinstance(value, (str, bytes, bool, np.bool_)):     # float("0.5") and float(True) would pass
                    raise TypeError
                a = float(value)
            except (TypeError, ValueError):     # "x" or an array: Python's message named neither alpha nor t
                raise ValueError(f"`alpha(t)` must return a real number; got alpha({float(t)!r})={value!r}.") from None
            if not (np.isfinite(a) and a > 0):
                raise ValueError(f"`alpha(t)` must be finite and > 0; got alpha({float(t)!r})={a!r}.")
            return a
        return self.alpha

    def __repr__(self) -> str:
        alpha = self.alpha if not callable(self.alpha) else getattr(self.alpha, "__name__", "callable")
        given = "".join(f", {name}={_matrix_summary(getattr(self, name))}" for name in "QKV"
                        if getattr(self, name) is not None)
        return (f"Model(beta={self.beta!r}, scheme={self.scheme!r}, attention={self.attention!r}, d={self.d}"
                f"{given}, alpha={alpha!r}, tau={self.tau!r})")

    def matrices(self):
        """The query, key and value matrices of every head.

        Returns
        -------
        tuple of 3 ndarray, each of shape (heads, d, d)
            (Q, K, V), the identity where a matrix is None and a (d, d) matrix repeated over the heads (read-only
            broadcast views: copy before writing).
        """
        eye = np.eye(self.d)[None]
        out = []
        for name in "QKV":
            m = getattr(self, name)
            m = eye if m is None else (m[None] if m.ndim == 2 else m)
            out.append(np.broadcast_to(m, (self.heads, self.d, self.d)))
        return tuple(out)


def _matrix_summary(m) -> str:
    """A short text for a Q, K or V matrix: c·I, diag([…]), the full matrix (d ≤ 4), or its shape."""
    if m.ndim == 3:
        return f"<{m.shape[0]} heads of {m.shape[1]}×{m.shape[2]}>"
    fmt = lambda a: np.array2string(a, precision=4, separator=", ", suppress_small=True)  # noqa: E731
    off_diagonal = m - np.diag(np.diag(m))
    if not off_diagonal.any():
        c = m[0, 0]
        return f"{c:g}·I" if np.all(np.diag(m) == c) else f"diag({fmt(np.diag(m))})"
    return fmt(m).replace("\n", "") if len(m) <= 4 else f"<{m.shape[0]}×{m.shape[1]} matrix>"


def _structured(m, d: int) -> np.ndarray:
    """A single head's Q or K as its diagonal, shape (d,), when it is None (the identity) or diagonal, else as the
    (d, d) matrix.  Finding the diagonal costs O(d²); it saves the O(d³) products of :func:`_transposed_product`."""
    if m is None:
        return np.ones(d)
    m = m.reshape(d, d)
    diagonal = np.diag(m).copy()
    return diagonal if np.count_nonzero(m) == np.count_nonzero(diagonal) else m


def _transposed_product(q, k) -> np.ndarray:
    """qᵀk for q, k each a diagonal (shape (d,)) or a (d, d) matrix; a diagonal (d,) when both are.

    A diagonal factor scales rows or columns instead of entering a matrix product: each entry of the O(d³)
    product has one nonzero term, so the result is the same, at O(d²) cost or O(d) for two diagonals
    (Model(d=8192) spent 24 s multiplying identities).
    """
    if q.ndim == 1:
        return q * k if k.ndim == 1 else q[:, None] * k
    return q.T * k if k.ndim == 1 else q.T @ k


def _is_multiple_of_identity(m, c, atol) -> bool:
    """Whether ``m`` (a diagonal of shape (d,) or a (d, d) matrix) is within ``atol`` of c·I, entry by entry."""
    if m.ndim == 1:
        return bool(np.all(np.abs(m - c) <= atol))
    return bool(np.allclose(m, c * np.eye(len(m)), rtol=0, atol=atol))


def _is_orthogonal_multiple(m):
    """Whether mᵀm = c·I (``m`` a diagonal of shape (d,) or a (d, d) matrix)."""
    g = m * m if m.ndim == 1 else m.T @ m
    g00 = g[0] if m.ndim == 1 else g[0, 0]
    return _is_multiple_of_identity(g, g00, 1e-14 * abs(g00))
