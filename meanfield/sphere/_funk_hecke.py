"""Funk–Hecke multipliers of the attention kernel exp(β⟨x, y⟩) on S^{d-1}.

This module is the single home of the formula

    λ_ℓ(β, d) = Γ(d/2) (2/β)^{d/2-1} I_{ℓ+d/2-1}(β),

the eigenvalue of  f ↦ ∫ e^{β⟨x,y⟩} f(y) dσ(y)  on spherical harmonics of degree ℓ, with σ the
*normalized* uniform measure on S^{d-1}.  Everything that convolves with the attention kernel calls it.
"""
from __future__ import annotations

import numpy as np
from .._lazy import LazyModule

special = LazyModule("scipy.special")

from .._validate import dimension, flag, nonneg_int, open_fraction, positive_float
from ._checks import check_memory
from ._harmonic_dimension import _log_harmonic_dimension

# scipy's ive returns NaN beyond β = 2^30 − 1/2 ≈ 1.07e9 (AMOS gives up), and the power series needs ~β terms
MAX_BETA = 1e9


def check_beta(beta, allow_zero: bool = True) -> float:
    """β as a float: finite, ≥ 0 (> 0 unless ``allow_zero``) and ≤ :data:`MAX_BETA`, where the multipliers are
    computed (beyond, scipy's Bessel functions return NaN)."""
    beta = positive_float("beta", beta, allow_zero=allow_zero)
    if beta > MAX_BETA:
        raise ValueError(f"`beta` must be ≤ 1e9 for the Funk–Hecke multipliers of e^(βt) (scipy's Bessel function "
                         f"ive, which they are computed from, returns NaN above 2^30 ≈ 1.07e9); got beta={beta!r}.")
    return beta


# bytes per degree of the multiplier computations (peak of their temporaries, measured: 24 B by ive, ~90 B by the
# series or for funk_hecke_dbeta, ~160 B with the harmonic counts of the degree shares)
_BYTES_PER_DEGREE = 96.0
_BYTES_PER_DEGREE_SHARES = 160.0


def _check_degrees(lmax: int, what: str, per_degree: float = _BYTES_PER_DEGREE, how: str = "lower `lmax`.") -> None:
    check_memory(per_degree * (lmax + 1.0), lambda: f"{what} for degrees 0 … {lmax}", how)


def _prefactor_log(beta: float, d: int) -> float:
    """log of Γ(d/2) (2/β)^{d/2-1}."""
    nu = d / 2 - 1
    return special.gammaln(d / 2) + nu * (np.log(2.0) - np.log(beta))    # (2/β overflows for a subnormal β)


def _scaled_multipliers(beta: float, ell: np.ndarray, d: int) -> np.ndarray:
    """e^{-β} λ_ℓ(β, d) for β > 0.

    From ``ive`` for d ≤ 100 where the log of its prefactor Γ(d/2)(2/β)^{d/2-1} is at most 40, and at β > 700
    (β > 1400 in d > 100, unless the series' work is refused) where the prefactor does not overflow (there a
    Bessel function that underflows gives a value below
    float64, as it is); otherwise (the prefactor overflows while ``ive`` underflows at d = 512, β = 1; exp of
    a large exponent loses ~|exponent|·eps; ive loses digits at large orders) from the power series, in which
    the prefactor cancels (see :func:`_bessel_form`).
    """
    pre = _prefactor_log(beta, d)
    if _bessel_form(pre, beta, d, ell.size):
        with np.errstate(under="ignore"):
            return np.exp(pre) * special.ive(ell + d / 2 - 1, beta)
    log_lead, log_sum, lead, mantissa, halvings = _series(beta, ell, d)
    with np.errstate(under="ignore", over="ignore"):
        # lead · sum · e^{-β}, e^{-β} as (e^{-β/2})² with the sum's powers of two applied (exactly) between the
        # halves: a few ulp wherever the partial products stay in the normal range; by logs (~|exponent|·eps)
        # where they do not.  e^{-β} itself is subnormal beyond β ≈ 708, with digits lost (d = 3000, β = 740:
        # 2.6e-3 relative error in every multiplier, β = 720: 2.9e-12); its square root is normal up to β ≈ 1416,
        # and sum·e^{-β/2} ≤ e^{β/2} stays finite.  (With both halves before the powers of two, a sum rescaled
        # past 2^900 underflowed the product: by logs, 9e-14 off at d = 200, β = 1300.)
        product = lead * mantissa
        half = np.exp(-beta / 2)
        first = product * half
        direct = np.ldexp(first, halvings) * half
        by_logs = np.exp(log_lead + log_sum - beta)
    # normal partial products mean normal factors (sum·e^{-β} ≤ 1, I_ν(β) ≤ (β/2)^ν e^β/Γ(ν + 1)): a margin above
    # float64's smallest normal (1e-290 was asked) sent multipliers in [1e-308, 1e-290] by logs, 2e-13 off (d = 7,
    # β = 1e-8)
    tiny = np.finfo(float).tiny
    safe = np.isfinite(product) & (first >= tiny) & np.isfinite(direct) & (direct >= tiny)
    return np.where(safe, direct, by_logs)


def _log_scaled_multipliers(beta: float, ell: np.ndarray, d: int) -> np.ndarray:
    """log(e^{-β} λ_ℓ), finite where e^{-β} λ_ℓ itself is below float64 (for ratios λ_ℓ/λ_0 in high d, where
    harmonic counts N(d, ℓ) beyond float64 multiply them)."""
    pre = _prefactor_log(beta, d)
    if _bessel_form(pre, beta, d):
        with np.errstate(under="ignore", divide="ignore"):
            logs = pre + np.log(special.ive(ell + d / 2 - 1, beta))
        lost = ~np.isfinite(logs)        # ive underflowed: log λ_ℓ < pre − 744 there
        if np.isfinite(logs[0]):
            if lost.any() and np.max(_log_harmonic_dimension(d, ell[lost].astype(float)) + pre - 744.0
                                     - logs[0]) >= -700:
                # only the degrees that underflowed from the series: its log form loses ~β·eps (the log of the
                # sum, ~β, less β), 2e-12 at β = 1e4, which all the ratios carried when every degree came from
                # it, so that λ_1/λ_0 depended on lmax (d = 7, β = 1e4: lmax = 1000 exact, 5000 off by 2e-12)
                log_lead, log_sum, *_ = _series(beta, ell[lost], d)
                logs[lost] = log_lead + log_sum - beta
            return logs                  # (else what underflowed cannot reach a share of 1e-300: d = 3, large β)
    log_lead, log_sum, *_ = _series(beta, ell, d)
    return log_lead + log_sum - beta


# exp(x) of a rounded exponent x has a relative error of ~|x|·eps: beyond 40 (~1e-14) the series is the more
# accurate form (the log prefactor is < 30 for d ≤ 5 at β ≥ 1e-8, but ~570 for d = 256 at β = 1); and ive itself
# loses digits at large orders (measured against 50-digit sums: ≤ 3e-14 up to d = 100, 8e-14 at d = 200 and
# 2e-13 at d = 800, where the series is within 3e-15 for d = 101..2000 and β ≤ 700; at high degree and small β
# it is off by up to 1.5e-13 even at d = 5 (ℓ = 80, β = 0.09, against 30-digit mpmath): the energy bounds allow
# 2e-13 per multiplier, _energy._MULTIPLIER_REL)
_LARGE_PREFACTOR_LOG = 40.0
_BESSEL_MAX_D = 100


def _bessel_form(pre: float, beta: float, d: int, degrees: int | None = None) -> bool:
    """Whether e^{-β}λ_ℓ is taken from ``ive`` (else from the series): low d with a moderate prefactor, or β
    beyond the series' reach with a prefactor that does not overflow.  With the number of ``degrees`` (the
    multipliers themselves, not their logs), d > 100 takes the series up to β = 1400 where its work is allowed:
    ``ive`` at orders ~d/2 lost up to 4e-13 there (d = 800, β = 701; d = 512, β = 1000: 3e-13 in ∂_βλ_0)."""
    if beta > _BESSEL_FROM_BETA:
        if (degrees is not None and d > _BESSEL_MAX_D and beta <= _SERIES_DIRECT_MAX_BETA
                and _series_work(beta, d, degrees) <= _MAX_SERIES_WORK):
            return False
        return pre < 0 or abs(pre) <= _LARGE_PREFACTOR_LOG
    return abs(pre) <= _LARGE_PREFACTOR_LOG and d <= _BESSEL_MAX_D
_BESSEL_FROM_BETA = 700.0   # the series needs ~β terms: beyond this, ive wherever it is representable
#: the series' direct form needs e^{-β/2} in float64's normal range (β < 1416); beyond, its logs lose ~β·eps, no
#: better than ive (for the logs of the multipliers, _log_scaled_multipliers, that holds from β ≈ 700 on)
_SERIES_DIRECT_MAX_BETA = 1400.0
_RESCALE_BITS = 900
_RESCALE = 2.0 ** _RESCALE_BITS     # the running series sum is divided by this (exactly) whenever it exceeds it
_MAX_SERIES_WORK = 1e9     # degree × term evaluations of the power series (~10 s); beyond, refused (not a hang)


def _series_peak(beta: float, d: int) -> float:
    """The terms of degree 0 (the last to converge) peak where k(k + d/2 − 1) = β²/4: that many loop passes at
    least."""
    mu0, z = d / 2, beta * beta / 4
    return 2 * z / (mu0 + np.sqrt(mu0 * mu0 + 4 * z))


def _series_work(beta: float, d: int, degrees: int) -> float:
    return _series_peak(beta, d) * (degrees + 2500)      # a pass costs ~25 µs, 2500 degrees' worth, of overhead


def _series(beta: float, ell: np.ndarray, d: int):
    """λ_ℓ = Π_{j<ℓ} (β/2)/(d/2 + j) · Σ_k (β²/4)^k / (k! (ℓ + d/2)_k) = lead · sum, as
    (log lead, log sum, lead, mantissa, halvings) with sum = mantissa · 2^halvings (lead possibly under- or
    overflowed).

    Products and sums of positive terms by recurrence: a few ulp per factor and per term (no log-gamma
    differences, whose absolute rounding grows with d).  The sum is rescaled by 2^-900, exactly, as it grows
    (it reaches ~e^β).
    """
    top = int(ell.max())
    peak = _series_peak(beta, d)
    if _series_work(beta, d, ell.size) > _MAX_SERIES_WORK:
        raise ValueError(f"the Funk–Hecke multipliers at beta={beta!r}, d={d} need their power series (the Bessel "
                         f"form under- or overflows there) summed to about {peak:.3g} terms for each of {ell.size} "
                         f"degrees, which is refused (beyond ~{_MAX_SERIES_WORK:.0e} term evaluations, tens of "
                         "seconds): lower `beta` or `lmax`.")
    steps = (beta / 2) / (d / 2 + np.arange(top))
    with np.errstate(under="ignore", over="ignore", divide="ignore"):    # a step of a subnormal β can be 0: -inf
        lead = np.concatenate([[1.0], np.cumprod(steps)])[ell]      # (β/2)^ℓ Γ(d/2)/Γ(ℓ + d/2)
        log_lead = np.concatenate([[0.0], np.cumsum(np.log(steps))])[ell]
    mu, z = ell + d / 2, beta * beta / 4
    term, total, halvings = np.ones(ell.shape), np.ones(ell.shape), np.zeros(ell.shape, dtype=int)
    for k in range(1, int(beta) + 60):          # past k ≈ β each term is < 1/4 of the one before
        term = term * (z / (k * (mu + k - 1)))
        total += term
        big = total > _RESCALE
        if big.any():
            term[big] = np.ldexp(term[big], -_RESCALE_BITS)
            total[big] = np.ldexp(total[big], -_RESCALE_BITS)
            halvings[big] += _RESCALE_BITS
        if np.all(term <= 1e-17 * total):
            break
    return log_lead, np.log(total) + halvings * np.log(2.0), lead, total, halvings


_MAX_UNSCALED_BETA = float(np.log(np.finfo(float).max))   # ≈ 709.78: e^β overflows float64 above it


def _check_unscaled(beta, scaled):
    if not scaled and beta > _MAX_UNSCALED_BETA:
        raise ValueError(f"`beta` must be ≤ {_MAX_UNSCALED_BETA:.2f} with scaled=False (the multipliers grow like "
                         f"e^β and overflow float64); got beta={beta!r}. Use scaled=True, which returns e^(-β)·λ_ℓ.")


def funk_hecke(beta, lmax, d=3, scaled=False) -> np.ndarray:
    """Funk–Hecke multipliers λ_0 … λ_lmax of the kernel exp(β⟨x, y⟩).

    Parameters
    ----------
    beta : float
        Inverse temperature, 0 ≤ β ≤ 1e9 (dimensionless).
    lmax : int
        Largest degree ℓ returned, ≥ 0.
    d : int, optional
        Ambient dimension; the sphere is S^{d-1}. ``d >= 2``.
    scaled : bool, optional
        If True return e^{-β} λ_ℓ, which stays finite and accurate for β up to 10⁴ and beyond in low d; in
        high d at large β it can fall below float64 (d = 512, β = 10⁴), which is refused (ValueError): use
        :func:`multiplier_ratios` for λ_ℓ/λ_0.

    Returns
    -------
    ndarray, shape (lmax + 1,)
        λ_ℓ for the normalized uniform measure σ (so λ_0 = ∫ e^{β⟨x,y⟩} dσ(y)).

    Raises
    ------
    ValueError
        β outside [0, 1e9] (or > 709.78 with ``scaled=False``), ``lmax`` or ``d`` invalid, or e^{-β}λ_0 below
        float64's normal range (high d at large β: use :func:`multiplier_ratios`).
    InsufficientMemoryError
        ``lmax`` so large that the computation would not fit in the available memory.

    Notes
    -----
    λ_ℓ = Γ(d/2) (2/β)^{d/2-1} I_{ℓ+d/2-1}(β); for d = 3 this is √(π/(2β)) I_{ℓ+1/2}(β), for d = 2 it is
    I_ℓ(β).  Computed from ``scipy.special.ive``, and in high dimension, where the prefactor overflows and
    the Bessel function underflows, from the power series λ_ℓ = (β/2)^ℓ Γ(d/2)/Γ(ℓ+d/2) ₀F₁(ℓ+d/2; β²/4)
    (the prefactor cancelled), summed by recurrence; only the final unscaling by e^β can overflow, and
    ``scaled=False`` is refused above β ≈ 709.78, where it would.

    Accuracy (relative, against 50-digit sums of that series): ≤ 1e-13 for d = 2, 3, 4, 7, β = 1e-8 … 1e3 and
    every degree whose e^{-β}λ_ℓ exceeds 1e-300 (the worst at high degree and small β, where ``ive`` loses
    digits; a few ulp from the series); below ~1e-305 ``ive`` flushes values to 0.  In d > 100 the series (a few
    ulp) serves up to β = 1400; beyond, ``ive`` at orders ~d/2 reaches 5e-13 (d = 800, β = 1500).
    """
    beta = check_beta(beta)
    lmax = nonneg_int("lmax", lmax)
    d = dimension(d, within="float64")     # a number in the formulas (d → ∞ has a limit), no array's size
    scaled = flag("scaled", scaled)     # "no" and nan were read as True by their truth value
    _check_degrees(lmax, "the Funk–Hecke multipliers")
    ell = np.arange(lmax + 1)
    if beta == 0.0:
        return (ell == 0).astype(float)
    _check_unscaled(beta, scaled)
    scaled_vals = _scaled_multipliers(beta, ell, d)
    _check_representable(scaled_vals[0], beta, d)
    return scaled_vals if scaled else scaled_vals * np.exp(beta)


def _check_representable(scaled_lam0: float, beta: float, d: int) -> None:
    if not scaled_lam0 >= np.finfo(float).tiny:
        raise ValueError(f"e^(-β)·λ_0 at beta={beta!r}, d={d} is below float64's normal range ({scaled_lam0:.3g}); "
                         "the ratios λ_ℓ/λ_0 are finite: meanfield.sphere.multiplier_ratios (and growth_rates, "
                         "kernel_bandlimit use them).")


def funk_hecke_unscaled(beta, lmax, d=3) -> np.ndarray:
    """λ_ℓ without the check of :func:`funk_hecke`: entries beyond float64 come back as inf (for internal
    sums that report an overflowing value as inf)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return funk_hecke(beta, lmax, d, scaled=True) * np.exp(beta)


def funk_hecke_dbeta(beta, lmax, d=3, scaled=False) -> np.ndarray:
    """Derivative ∂λ_ℓ/∂β of the Funk–Hecke multipliers, ℓ = 0 … lmax.

    ∂_β λ_ℓ is the multiplier of the kernel ⟨x,y⟩ e^{β⟨x,y⟩}; it gives the radial part ⟨x, A⟩ of the
    attention vector.  Closed form: Γ(d/2)(2/β)^{d/2-1} [I_{ℓ+d/2}(β) + (ℓ/β) I_{ℓ+d/2-1}(β)]; at β = 0
    only ℓ = 1 is nonzero, with value 1/d.

    Parameters
    ----------
    beta : float
        Inverse temperature, 0 ≤ β ≤ 1e9 (dimensionless).
    lmax : int
        Largest degree ℓ returned, ≥ 0.
    d : int, optional
        Ambient dimension; the sphere is S^{d-1}. ``d >= 2``.
    scaled : bool, optional
        If True return e^{-β} ∂_βλ_ℓ (finite for large β), as ``scaled`` of :func:`funk_hecke`.

    Returns
    -------
    ndarray, shape (lmax + 1,)
        ∂_βλ_ℓ for the normalized uniform measure σ (dimensionless, like λ_ℓ and β).

    Raises
    ------
    ValueError
        β outside [0, 1e9], ``lmax`` or ``d`` invalid; β > 709.78 with ``scaled=False`` (e^β overflows); or
        e^{-β}λ_0 below float64's normal range (high d at large β: use :func:`multiplier_ratios`).
    InsufficientMemoryError
        ``lmax`` so large that the computation would not fit in the available memory.
    """
    beta = check_beta(beta)
    lmax = nonneg_int("lmax", lmax)
    d = dimension(d, within="float64")     # a number in the formulas (d → ∞ has a limit), no array's size
    scaled = flag("scaled", scaled)
    _check_degrees(lmax, "the derivatives of the Funk–Hecke multipliers")
    ell = np.arange(lmax + 1)
    if beta == 0.0:
        # λ_ℓ'(0) = ∫ t P_ℓ dσ: only ℓ = 1 survives, with value 1/d (since ∫ t² dσ = 1/d).
        return np.where(ell == 1, 1.0 / d, 0.0)
    _check_unscaled(beta, scaled)
    _check_representable(_scaled_multipliers(beta, ell[:1], d)[0], beta, d)
    # Γ(d/2)(2/β)^{d/2-1} I_{ℓ+d/2}(β) = (β/d) λ_ℓ(β, d+2) and (ℓ/β) λ_ℓ(β, d) = (ℓ/d) λ_{ℓ-1}(β, d+2): no division
    # by β, which overflowed below β ≈ 5.6e-309 (∂_βλ_1 came out inf or NaN for 1/d), and no λ_ℓ(β, d) that ive
    # flushes to 0 near float64's smallest normal (d = 2, β = 3e-308: ∂_βλ_1 came out 0 for 1/2)
    mu = _scaled_multipliers(beta, ell, d + 2)
    scaled_vals = (beta / d) * mu
    scaled_vals[1:] += (ell[1:] / d) * mu[:-1]
    return scaled_vals if scaled else scaled_vals * np.exp(beta)


def multiplier_ratios(beta: float, lmax: int, d: int = 3) -> tuple[np.ndarray, float]:
    """The ratios λ_ℓ/λ_0 and the logarithmic derivative ∂_βλ_0/λ_0.

    Quotients of the scaled multipliers where they are normal floats (a few ulp beyond theirs), by logs where
    they are not: finite where e^{-β}λ_ℓ itself is below float64 (high d at large β, e.g. d = 512, β = 10⁴),
    where :func:`funk_hecke` refuses (there to ~|log e^{-β}λ_ℓ|·eps).  ∂_βλ_0 = (β/d) λ_0(β, d + 2).

    Parameters
    ----------
    beta : float
        Inverse temperature, 0 < β ≤ 1e9 (dimensionless).
    lmax : int
        Largest degree ℓ returned, ≥ 0.
    d : int, optional
        Ambient dimension (sphere S^{d-1}), d ≥ 2.

    Returns
    -------
    ratios : ndarray, shape (lmax + 1,)
        λ_ℓ/λ_0 for ℓ = 0 … lmax (ratios[0] = 1; dimensionless).
    dlog_lam0 : float
        ∂_βλ_0/λ_0 = ∂_β log λ_0 (dimensionless): the norm ‖A‖ = ⟨x, A⟩ of the softmax attention
        vector at the uniform measure.

    Raises
    ------
    ValueError
        β outside (0, 1e9], or ``lmax`` or ``d`` invalid.
    InsufficientMemoryError
        ``lmax`` so large that the computation would not fit in the available memory.
    """
    beta = check_beta(beta, allow_zero=False)
    lmax = nonneg_int("lmax", lmax)
    d = dimension(d, within="float64")     # a number in the formulas (d → ∞ has a limit), no array's size
    _check_degrees(lmax, "the Funk–Hecke multiplier ratios")
    ell = np.arange(lmax + 1)
    # quotients of the multipliers where they are normal floats, exp of differences of logs only where they are
    # not: the logs (~|log e^{-β}λ_ℓ|, ~β in the series) lost that much times eps, 1e-13 at d = 128, β = 700
    scaled = _normal_or_nan(_scaled_multipliers, beta, ell, d)
    ratios = scaled / scaled[0]
    if np.isnan(ratios).any():
        logs = _log_scaled_multipliers(beta, ell, d)
        ratios = np.where(np.isnan(ratios), np.exp(logs - logs[0]), ratios)
    return ratios, _dlog_lam0(beta, d)


def _normal_or_nan(multipliers, beta: float, ell: np.ndarray, d: int) -> np.ndarray:
    """``multipliers(beta, ell, d)`` with the entries that are not normal floats (0, subnormal, inf) set to NaN."""
    with np.errstate(under="ignore", over="ignore", invalid="ignore"):
        values = multipliers(beta, ell, d)
    return np.where(np.isfinite(values) & (values >= np.finfo(float).tiny), values, np.nan)


def _dlog_lam0(beta: float, d: int) -> float:
    """∂_β log λ_0 = (β/d) λ_0(β, d + 2)/λ_0(β, d), the quotient of the two multipliers where both are normal
    floats (exp of the difference of their logs, ~420 at d = 512, β = 1000, lost 3e-13); by logs where not."""
    zero = np.zeros(1, dtype=int)
    quotient = _normal_or_nan(_scaled_multipliers, beta, zero, d + 2)[0] / _normal_or_nan(_scaled_multipliers, beta,
                                                                                          zero, d)[0]
    if np.isnan(quotient):
        quotient = np.exp(_log_scaled_multipliers(beta, zero, d + 2)[0] - _log_scaled_multipliers(beta, zero, d)[0])
    return (beta / d) * float(quotient)


def _degree_terms(beta: float, top: int, d: int) -> np.ndarray:
    """N(d, ℓ) λ_ℓ / λ_0 for ℓ = 0..top: the share of degree ℓ in e^{βt} (|P_ℓ| ≤ 1), by logs, so that in high d
    a count N beyond float64 times a ratio λ_ℓ/λ_0 below it gives their product, not inf·0 or 0."""
    beta = check_beta(beta, allow_zero=False)
    _check_degrees(top, f"the degree shares N(d,ℓ)λ_ℓ/λ_0 of the kernel at beta={beta!r}", _BYTES_PER_DEGREE_SHARES,
                   "lower `beta` (the shares are summed to degree ~40√β, further in high d) or `lmax`.")
    ell = np.arange(top + 1)
    log_lam = _log_scaled_multipliers(beta, ell, d)
    with np.errstate(over="ignore"):
        return np.exp(_log_harmonic_dimension(d, ell.astype(float)) + log_lam - log_lam[0])


def kernel_bandlimit(beta, tol=1e-12, d=3) -> int:
    """Smallest L with Σ_{ℓ>L} N(d,ℓ) λ_ℓ / λ_0 < tol.

    Because ``|P_ℓ^{(d)}| ≤ 1`` and e^{βt} = Σ_ℓ N(d,ℓ) λ_ℓ P_ℓ^{(d)}(t), truncating the kernel at degree L
    changes it by at most ``tol * λ_0`` uniformly on [-1, 1]: the error bound of every spectral
    convolution with a band limit L, for any measure, Dirac masses included.

    Parameters
    ----------
    beta : float
        Inverse temperature, 0 ≤ β ≤ 1e9.
    tol : float
        Relative kernel truncation tolerance, 0 < tol < 1.
    d : int
        Ambient dimension (sphere S^{d-1}).

    Returns
    -------
    int
        The band limit L (0 for β = 0).

    Raises
    ------
    ValueError
        Invalid β (outside [0, 1e9]), ``tol`` or ``d``, or a kernel that needs degrees beyond 200 000.
    """
    beta = check_beta(beta)
    tol = open_fraction("tol", tol)
    d = dimension(d, within="float64")     # a number in the formulas (d → ∞ has a limit), no array's size
    if beta == 0.0:
        return 0
    start = min(int(beta + 4 * np.sqrt(beta * np.log(1 / tol) + 1) + 4 * np.log(1 / tol) + 30), _MAX_DEGREE)
    terms = _terms_to_negligible(beta, d, start, 1e-3 * tol)
    with np.errstate(over="ignore"):     # in high d the low-degree tails exceed float64 (e^β/λ_0): inf, > tol
        tail = np.cumsum(terms[::-1])[::-1]  # tail[L] = Σ_{ℓ ≥ L}
    tail_after = np.append(tail[1:], 0.0)  # Σ_{ℓ > L}
    return int(np.argmax(tail_after < tol))


_MAX_DEGREE = 200_000


def _terms_to_negligible(beta: float, d: int, top: int, floor: float) -> np.ndarray:
    """The degree shares N(d,ℓ)λ_ℓ/λ_0 for ℓ = 0..L, L ≥ ``top`` doubled until the shares fall below ``floor`` for
    good (the last is below it and decreasing): in high d the shares peak far beyond β (d = 4000, β = 800: the
    sum of shares is e^β/λ_0 ≈ e^720)."""
    while True:
        terms = _degree_terms(beta, top, d)
        if terms[-1] < floor and terms[-1] <= terms[-2]:
            return terms
        if top >= _MAX_DEGREE:
            raise ValueError(f"the kernel e^(βt) at beta={beta!r} on S^{d - 1} needs degrees beyond {_MAX_DEGREE}.")
        top = min(2 * top, _MAX_DEGREE)


def kernel_truncation_error(beta, lmax, d=3) -> float:
    """The bound Σ_{ℓ>lmax} N(d,ℓ) λ_ℓ/λ_0 on the relative sup error of the kernel truncated at lmax.

    Parameters
    ----------
    beta : float
        Inverse temperature, 0 ≤ β ≤ 1e9.
    lmax : int
        Truncation degree L.
    d : int, optional
        Ambient dimension (sphere S^{d-1}), d ≥ 2.

    Returns
    -------
    float
        The bound, relative to λ_0 (dimensionless; 0.0 for β = 0): the truncated kernel differs from
        e^{β⟨x,y⟩} by at most this times λ_0, uniformly.

    Raises
    ------
    ValueError
        Invalid β (outside [0, 1e9]), ``lmax`` or ``d``, or a kernel that needs degrees beyond 200 000.
    InsufficientMemoryError
        The degree shares up to ~40√β (up to ~β in very high d) would not fit in the available memory.
    """
    beta = check_beta(beta)
    lmax = nonneg_int("lmax", lmax)
    d = dimension(d, within="float64")     # a number in the formulas (d → ∞ has a limit), no array's size
    if beta == 0.0:
        return 0.0
    # the shares past lmax are summed until they are negligible, for lmax > _MAX_DEGREE from _MAX_DEGREE on: when
    # they are negligible before lmax the sum is empty, 0.0 (they are < 1e-300 and decrease super-exponentially)
    # for ℓ ≲ β the shares fall like e^{-ℓ²/2β}, below 1e-300 by ℓ ≈ 37√β: a start at ~β would cost ~160 B·β
    # (16 GB at β = 1e8) for nothing; a start too low is doubled by _terms_to_negligible (high d)
    top = min(lmax, _MAX_DEGREE) + int(min(beta, 40 * np.sqrt(beta)) + 6 * np.sqrt(beta + 1) + 60)
    terms = _terms_to_negligible(beta, d, top, 1e-300)
    with np.errstate(over="ignore"):
        return float(np.sum(terms[lmax + 1:]))


def kernel_beta(model, tol: float) -> float:
    """The inverse temperature of the attention kernel that a spectral backend expands in degrees, checked before
    any work: β·c when QᵀK = c·I, else the bound β·max ‖Q‖₂‖K‖₂ of the logits β⟨Qx, Ky⟩ (β for QKV-Norm, whose q
    and k are unit vectors).  It must be ≤ 1e9 (the range of the Funk–Hecke multipliers) and have a kernel band
    limit at ``tol`` (degree ≤ 200 000).  The message names that product and its factors: a small ``beta`` with a
    large Q was refused as "`beta` must be ≤ 1e9 … got beta=1e10".  When the product is β itself (QᵀK = I, or
    QKV-Norm) the band limit's own message, naming `beta`, is the right one."""
    beta = model.beta
    if model.scheme_def.normalize_qkv or (model.isotropic and model.beta_eff == beta):
        kernel_bandlimit(beta, tol, model.d)
        return beta
    if model.isotropic:
        b = model.beta_eff
        what = f"beta·c = {b:.6g} (beta={beta!r}, QᵀK = c·I with c = {b / beta:.6g})"
    else:
        Qs, Ks, _ = model.matrices()
        q, k = max(((np.linalg.norm(q, 2), np.linalg.norm(k, 2)) for q, k in zip(Qs, Ks)), key=lambda p: p[0] * p[1])
        with np.errstate(over="ignore"):
            b = float(beta * q * k)
        head = " of the largest head" if len(Qs) > 1 else ""
        what = f"beta·‖Q‖₂·‖K‖₂ = {b:.6g} (beta={beta!r}, ‖Q‖₂ = {q:.6g}, ‖K‖₂ = {k:.6g}{head})"
    if b > MAX_BETA:
        why = f"must be ≤ {MAX_BETA:g} (the range of its Funk–Hecke multipliers; scipy's Bessel functions: NaN above)"
    else:
        try:
            kernel_bandlimit(b, tol, model.d)
            return b
        except ValueError:
            why = f"is too large: the kernel needs degrees beyond {_MAX_DEGREE} at tol={tol:g}"
    raise ValueError(f"the attention kernel e^(beta⟨Qx, Ky⟩) has the effective inverse temperature {what}, which "
                     f"{why}. Lower `beta` or the scale of `Q` and `K`; backend='particles' has no such limit.")
