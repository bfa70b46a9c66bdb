"""Tests of meanfield.sphere._funk_hecke: the multipliers λ_ℓ(β, d) of exp(β⟨x, y⟩) and the band limit.

Independent answers: adaptive quadrature (scipy ``quad`` with the algebraic Jacobi weight) of the
Funk–Hecke integral
    λ_ℓ = c_d ∫_{-1}^{1} e^{βt} P_ℓ^{(d)}(t) (1−t²)^{(d−3)/2} dt,   c_d = Γ(d/2) / (√π Γ((d−1)/2)),
with P_ℓ^{(d)} the Gegenbauer polynomial normalized to 1 at t = 1 (Chebyshev for d = 2), evaluated by
``scipy.special.eval_gegenbauer`` / ``eval_chebyt``; the Hankel asymptotic series of I_ν for large β;
finite differences in β; the combinatorial count of harmonics.
"""
import math
import warnings

import numpy as np
import pytest
from scipy import integrate, special

import meanfield as mf
from meanfield import sphere as s


def gegenbauer_normalized(ell, d, t):
    if d == 2:
        return special.eval_chebyt(ell, t)
    lam = (d - 2) / 2
    return special.eval_gegenbauer(ell, lam, t) / special.eval_gegenbauer(ell, lam, 1.0)


def c_d(d):
    return math.gamma(d / 2) / (math.sqrt(math.pi) * math.gamma((d - 1) / 2))


def fh_quadrature(beta, ell, d, power=0, epsabs=0.0):
    """e^{-β} c_d ∫ t^power e^{βt} P_ℓ(t) (1−t²)^α dt and quad's error estimate (scaled by e^{-β}).

    For large ℓ the integrand changes sign and the integral is much smaller than ∫|integrand| ≈ λ_0:
    pass ``epsabs`` ≈ eps·λ_0, the accuracy any double-precision quadrature can reach there.
    """
    a = (d - 3) / 2
    with warnings.catch_warnings():
        # "roundoff error is detected": quad has reached the rounding floor we ask for; its estimate stays usable
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        val, err = integrate.quad(lambda t: t ** power * np.exp(beta * (t - 1)) * gegenbauer_normalized(ell, d, t),
                                  -1, 1, weight="alg", wvar=(a, a), epsabs=epsabs / c_d(d), epsrel=2e-14, limit=400)
    return c_d(d) * val, c_d(d) * err


def fh_quadrature_large_beta(beta, ell, d, cut=80.0):
    """e^{-β} λ_ℓ for large β, with s = β(1 − t): c_d ∫_0^cut e^{-s} P_ℓ(1−s/β) (s/β)^α (2−s/β)^α ds/β.

    The s^α end-point singularity is carried by quad's algebraic weight; e^{-80} ends the integral.
    """
    a = (d - 3) / 2
    f = lambda x: (np.exp(-x) * gegenbauer_normalized(ell, d, 1 - x / beta)  # noqa: E731
                   * beta ** (-a) * (2 - x / beta) ** a / beta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        val, _ = integrate.quad(f, 0, cut, weight="alg", wvar=(a, 0), epsabs=0, epsrel=2e-14, limit=400)
    return c_d(d) * val


def ive_hankel(nu, z, terms=60):
    """e^{-z} I_ν(z) by the Hankel asymptotic series (large z), summed up to its smallest term.

    Σ_k (−1)^k a_k(ν) z^{-k} / √(2πz), a_k = Π_{j≤k} (4ν² − (2j−1)²) / (k! 8^k); it terminates for
    half-integer ν (odd d), and for integer ν at z ≥ 10³, ν ≤ 42 its smallest term is below 1e-17.
    """
    mu = 4.0 * nu * nu
    total, term = 1.0, 1.0
    for k in range(1, terms):
        new = -term * (mu - (2 * k - 1) ** 2) / (k * 8.0 * z)
        if new == 0.0 or abs(new) > abs(term):
            break
        term = new
        total += term
    return total / math.sqrt(2 * math.pi * z)


# ------------------------------------------------------------------------------------------------
# closed forms

def test_low_dimensional_closed_forms():
    beta = 1.7
    ell = np.arange(8)
    np.testing.assert_allclose(s.funk_hecke(beta, 7, d=2), special.iv(ell, beta), rtol=1e-14)
    sph_i = np.sqrt(np.pi / (2 * beta)) * special.iv(ell + 0.5, beta)
    np.testing.assert_allclose(s.funk_hecke(beta, 7, d=3), sph_i, rtol=1e-14)
    np.testing.assert_allclose(s.funk_hecke(beta, 0, d=3)[0], np.sinh(beta) / beta, rtol=1e-14)
    np.testing.assert_allclose(s.funk_hecke(beta, 1, d=3)[1],
                               (beta * np.cosh(beta) - np.sinh(beta)) / beta ** 2, rtol=1e-14)
    # the top-level export is the same function
    assert mf.funk_hecke is s.funk_hecke


def fh_series(beta, ell, d, derivative=False, as_decimal=False):
    """λ_ℓ = Σ_k (β/2)^{ℓ+2k} Γ(d/2) / (k! Γ(ℓ+k+d/2)) (or its β-derivative), in 40-digit decimal arithmetic."""
    from decimal import Decimal, localcontext
    with localcontext() as ctx:
        ctx.prec = 40
        half_beta, half_d = Decimal(repr(beta)) / 2, Decimal(d) / 2
        lead = Decimal(1)
        for j in range(ell):
            lead *= half_beta / (half_d + j)
        total, term, k = Decimal(0), lead, 0
        while True:
            total += term * ((ell + 2 * k) / (2 * half_beta) if derivative else 1)
            if term < Decimal("1e-35") * total:
                return total if as_decimal else float(total)
            k += 1
            term *= half_beta * half_beta / (k * (half_d + ell + k - 1))


@pytest.mark.parametrize("d", [64, 128, 256, 512, 2048])
@pytest.mark.parametrize("beta", [1e-8, 0.1, 1.0, 10.0, 50.0])
def test_high_dimensions_match_the_power_series(d, beta):
    # e^{-β}-free check in high d, where (2/β)^{d/2-1} overflows while I_{ℓ+d/2-1}(β) underflows (they gave NaN
    # from d ≈ 80 at β = 1e-8 and d = 512 at β ≤ 10); the series converges fast for β ≪ d
    lam, dlam = s.funk_hecke(beta, 8, d), s.funk_hecke_dbeta(beta, 8, d)
    for ell in range(9):
        assert lam[ell] == pytest.approx(fh_series(beta, ell, d), rel=1e-13, abs=0), ell
        assert dlam[ell] == pytest.approx(fh_series(beta, ell, d, derivative=True), rel=1e-13, abs=0), ell
    assert np.all(np.isfinite(mf.growth_rates(beta, 8, d=d)))


@pytest.mark.parametrize("beta, d", [(1.0, 2048), (10.0, 512), (50.0, 2048), (100.0, 1000), (700.0, 1000),
                                     (1000.0, 1000), (800.0, 4000)])
def test_high_dimensional_band_limit_against_exact_counts(beta, d):
    # N(d, ℓ) beyond float64 times λ_ℓ below it gave inf·0 = NaN in the tail sums (the band limit was garbage)
    L = s.kernel_bandlimit(beta, 1e-12, d)

    def share(ell):           # N(d, ℓ) λ_ℓ / λ_0 with the exact integer count
        count = math.comb(ell + d - 1, d - 1) - (math.comb(ell + d - 3, d - 1) if ell >= 2 else 0)
        return float(count * fh_series(beta, ell, d, as_decimal=True) / lam0)
    lam0 = fh_series(beta, 0, d, as_decimal=True)
    tail = [share(ell) for ell in range(L, L + 60)]
    assert sum(tail[1:]) < 1e-12 <= sum(tail)
    assert s.kernel_truncation_error(beta, L, d) == pytest.approx(sum(tail[1:]), rel=1e-6)


@pytest.mark.parametrize("beta, d", [(699.0, 1000), (700.0, 1000), (1000.0, 1000), (300.0, 100)])
def test_high_dimensional_ratios_at_large_beta(beta, d):
    # e^{-β}λ_ℓ underflowed on the way (lead·e^{-β} first): 70 % off from ℓ = 46 at β = 700, d = 1000, then 0
    lam = s.funk_hecke(beta, 60, d, scaled=True)
    ref0 = fh_series(beta, 0, d)
    for ell in (1, 10, 46, 60):
        assert lam[ell] / lam[0] == pytest.approx(fh_series(beta, ell, d) / ref0, rel=1e-12), ell


def test_high_dimensional_multipliers_match_gauss_jacobi_quadrature():
    # an independent second check of the low degrees: Gauss–Jacobi nodes of the weight (1−t²)^{(d−3)/2}
    d, beta = 512, 3.0
    t, w = special.roots_jacobi(80, (d - 3) / 2, (d - 3) / 2)
    lam = s.funk_hecke(beta, 3, d)
    for ell in range(4):
        q = np.sum(w * np.exp(beta * t) * gegenbauer_normalized(ell, d, t)) / np.sum(w)
        assert lam[ell] == pytest.approx(q, rel=1e-11), ell


@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("beta", [0.5, 5.0, 50.0])
def test_funk_hecke_matches_quadrature(d, beta):
    lmax = 12
    lam = s.funk_hecke(beta, lmax, d, scaled=True)
    np.testing.assert_allclose(s.funk_hecke(beta, lmax, d), lam * np.exp(beta), rtol=1e-14)
    floor = 1e-16 * fh_quadrature(beta, 0, d)[0]
    for ell in range(lmax + 1):
        q, err = fh_quadrature(beta, ell, d, epsabs=floor)
        # relative 1e-13 where λ_ℓ is not tiny; ~10 eps·λ_0 absolutely (sign-changing integrand)
        assert abs(lam[ell] - q) <= 1e-13 * abs(q) + 10 * err + 10 * floor, (ell, lam[ell], q, err)


@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
def test_funk_hecke_at_beta_zero(d):
    np.testing.assert_array_equal(s.funk_hecke(0.0, 5, d), [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(s.funk_hecke(0, 5, d, scaled=True), [1, 0, 0, 0, 0, 0])
    # continuity at β → 0
    np.testing.assert_allclose(s.funk_hecke(1e-9, 3, d), [1, 0, 0, 0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("beta", [1e3, 1e4])
def test_scaled_is_finite_and_accurate_for_large_beta(d, beta):
    lmax = 40
    lam = s.funk_hecke(beta, lmax, d, scaled=True)
    assert np.all(np.isfinite(lam)) and np.all(lam > 0) and np.all(np.diff(lam) < 0)
    # route 1: Hankel series of e^{-β} I_ν(β) (terminating for odd d), no scipy Bessel function
    nu = d / 2 - 1
    pre = math.gamma(d / 2) * (2 / beta) ** nu
    hankel = np.array([pre * ive_hankel(ell + nu, beta) for ell in range(lmax + 1)])
    np.testing.assert_allclose(lam, hankel, rtol=1e-13)
    # route 2: quadrature after s = β(1 − t)
    for ell in (0, 1, 7, 40):
        np.testing.assert_allclose(lam[ell], fh_quadrature_large_beta(beta, ell, d), rtol=1e-12)
    # the leading large-β behaviour of the ratio: 1 − ℓ(ℓ+d−2)/(2β) + O(β⁻²)
    ell = np.arange(4)
    np.testing.assert_allclose(lam[:4] / lam[0], 1 - ell * (ell + d - 2) / (2 * beta), rtol=0,
                               atol=(ell * (ell + d)).max() ** 2 / beta ** 2)


# ------------------------------------------------------------------------------------------------
# ∂λ/∂β

@pytest.mark.parametrize("d", [2, 3, 4, 6])
@pytest.mark.parametrize("beta", [0.5, 5.0, 50.0])
def test_dbeta_matches_finite_differences_and_quadrature(d, beta):
    lmax = 10
    dl = s.funk_hecke_dbeta(beta, lmax, d, scaled=True)
    np.testing.assert_allclose(s.funk_hecke_dbeta(beta, lmax, d), dl * np.exp(beta), rtol=1e-14)
    # five-point stencil on e^{-β₀}λ(β): λ^{(5)} ~ λ, so truncation ~h⁴/30 ≈ 3e-14, rounding ~eps/h ≈ 2e-13
    h = 1e-3
    lam = lambda b: s.funk_hecke(b, lmax, d) * np.exp(-beta)  # noqa: E731
    fd = (8 * (lam(beta + h) - lam(beta - h)) - (lam(beta + 2 * h) - lam(beta - 2 * h))) / (12 * h)
    np.testing.assert_allclose(dl, fd, rtol=1e-8, atol=1e-12 * dl[0])
    # ∂_β λ_ℓ is the multiplier of t e^{βt}
    floor = 1e-16 * fh_quadrature(beta, 0, d)[0]
    for ell in range(lmax + 1):
        q, err = fh_quadrature(beta, ell, d, power=1, epsabs=floor)
        assert abs(dl[ell] - q) <= 1e-13 * abs(q) + 10 * err + 10 * floor, (ell, dl[ell], q)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_dbeta_at_beta_zero(d):
    got = s.funk_hecke_dbeta(0.0, 4, d)
    expected = [fh_quadrature(0.0, ell, d, power=1, epsabs=1e-17)[0] for ell in range(5)]
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)
    assert got[1] == pytest.approx(1 / d, rel=1e-15, abs=0)
    np.testing.assert_allclose(s.funk_hecke_dbeta(1e-9, 4, d), got, rtol=0, atol=1e-8)


# ------------------------------------------------------------------------------------------------
# harmonic dimensions and the kernel band limit

@pytest.mark.parametrize("d", [2, 3, 4, 5, 6, 9])
def test_harmonic_dimension_is_the_combinatorial_count(d):
    ell = np.arange(30)
    # N(d, ℓ) = C(ℓ+d−1, d−1) − C(ℓ+d−3, d−1)
    exact = [math.comb(k + d - 1, d - 1) - (math.comb(k + d - 3, d - 1) if k + d - 3 >= 0 else 0) for k in ell]
    np.testing.assert_allclose(s.harmonic_dimension(d, ell), exact, rtol=1e-12)
    if d == 3:
        np.testing.assert_allclose(s.harmonic_dimension(3, ell), 2 * ell + 1, rtol=1e-13)


def test_harmonic_dimension_and_band_limit_at_huge_degree_or_dimension():
    # the log-gamma difference lost |log Γ(ℓ + d)|·eps: N(3, 2⁶²) was 1.0 (ℓ + 2 and ℓ + 1 are one float there),
    # N(4, 2⁴⁰) 1.20845e24 for 1.20893e24, and in d = 2⁶² the kernel's degree shares vanished:
    # kernel_truncation_error(1, 3, d=2⁶²) was 2.2e-75 and kernel_bandlimit(1, d=2⁶²) 0; d = 10³⁰ raised gammaln's
    # TypeError (an object array).  As d → ∞ the shares tend to β^ℓ/ℓ!, the tail past L to Σ_{ℓ>L} 1/ℓ! at β = 1
    np.testing.assert_allclose(s.harmonic_dimension(3, [2**30, 2**62]), [2.0**31 + 1, 2.0**63], rtol=1e-13)
    np.testing.assert_allclose(s.harmonic_dimension(4, 2**40), float((2**40 + 1) ** 2), rtol=1e-13)
    assert s.harmonic_dimension(2, 2**50) == 2.0
    for d in (2**62, 10**30):
        tails = [s.kernel_truncation_error(1.0, L, d) for L in (3, 8, 13)]
        exact = [sum(1 / math.factorial(k) for k in range(L + 1, 40)) for L in (3, 8, 13)]
        np.testing.assert_allclose(tails, exact, rtol=1e-12)
        assert s.kernel_bandlimit(1.0, 1e-12, d) == 14      # 1/14! = 1.1e-11 > 1e-12 > Σ_{ℓ>14} 1/ℓ! = 7.6e-13


@pytest.mark.parametrize("beta, tol, expected", [(5.0, 1e-6, 14), (5.0, 1e-12, 21), (50.0, 1e-6, 44),
                                                 (50.0, 1e-12, 59)])
def test_kernel_bandlimit_documented_values(beta, tol, expected):
    assert s.kernel_bandlimit(beta, tol) == expected
    assert mf.kernel_bandlimit(beta, tol, d=3) == expected


@pytest.mark.parametrize("d", [2, 3, 4, 6])
@pytest.mark.parametrize("beta", [0.3, 5.0, 50.0, 500.0])
@pytest.mark.parametrize("tol", [1e-6, 1e-12])
def test_truncated_kernel_sup_error_is_below_tol(d, beta, tol):
    L = s.kernel_bandlimit(beta, tol, d)
    top = L + int(4 * np.sqrt(beta) + 60)
    lam = s.funk_hecke(beta, top, d, scaled=True)
    ell = np.arange(top + 1)
    t = np.concatenate([np.linspace(-1, 1, 401), [1.0]])
    p = np.stack([gegenbauer_normalized(k, d, t) for k in ell])
    terms = (s.harmonic_dimension(d, ell) * lam)[:, None] * p
    # the series itself reproduces the kernel: e^{β(t−1)} = Σ N(d,ℓ) e^{−β}λ_ℓ P_ℓ(t)
    np.testing.assert_allclose(terms.sum(axis=0), np.exp(beta * (t - 1)), rtol=0, atol=1e-14)
    # the truncation error at L is the tail; its sup over t (attained at t = 1) is below tol·λ_0
    tail = terms[L + 1:].sum(axis=0)
    assert np.max(np.abs(tail)) < tol * lam[0]
    assert np.max(np.abs(tail)) == pytest.approx(tail[-1], rel=1e-12)
    # and L is the smallest such degree
    if L > 0:
        assert terms[L:, -1].sum() >= tol * lam[0]
    err = s.kernel_truncation_error(beta, L, d)
    assert err < tol <= s.kernel_truncation_error(beta, L - 1, d) if L > 0 else err < tol
    np.testing.assert_allclose(err, tail[-1] / lam[0], rtol=1e-8, atol=1e-17)


def test_kernel_bandlimit_edge_cases():
    assert s.kernel_bandlimit(0.0) == 0
    assert s.kernel_truncation_error(0.0, 3) == 0.0
    # the estimate of docs/numerics.md ("Band limits"): L ≈ √(2β ln(1/ε)) + a few (the few grow slowly with β)
    for beta in (5.0, 50.0, 500.0):
        est = np.sqrt(2 * beta * np.log(1e12))
        assert est <= s.kernel_bandlimit(beta, 1e-12) <= 1.15 * est + 3


# ------------------------------------------------------------------------------------------------
# the reference values (docs/validation.md): linear growth rates of mode ℓ about the uniform state

def test_reference_growth_rates():
    # USA: γ_ℓ = ℓ(ℓ+d−2) λ_ℓ / β ; SA: divided by λ_0
    ell = np.arange(1, 5)
    lam2 = s.funk_hecke(1.0, 4, d=2)
    np.testing.assert_allclose(ell * ell * lam2[1:] / 1.0, [0.565159, 0.542991, 0.199516, 0.043794],
                               rtol=0, atol=5e-7)
    lam3 = s.funk_hecke(1.0, 4, d=3)
    np.testing.assert_allclose(ell * (ell + 1) * lam3[1:] / lam3[0] / 1.0,
                               [0.626071, 0.365365, 0.102775, 0.018843], rtol=0, atol=5e-7)


# ------------------------------------------------------------------------------------------------
# bad inputs

@pytest.mark.parametrize("call, match", [
    (lambda: s.funk_hecke(-1.0, 4), "`beta`"),
    (lambda: s.funk_hecke(np.nan, 4), "`beta`"),
    (lambda: s.funk_hecke(np.inf, 4), "`beta`"),
    (lambda: s.funk_hecke(1.0, -1), "`lmax`"),
    (lambda: s.funk_hecke(1.0, 4, d=1), "`d`"),
    (lambda: s.funk_hecke_dbeta(-1.0, 4), "`beta`"),
    (lambda: s.funk_hecke_dbeta(1.0, -2), "`lmax`"),
    (lambda: s.funk_hecke_dbeta(1.0, 4, d=0), "`d`"),
    (lambda: s.harmonic_dimension(1, 3), "`d`"),
    (lambda: s.kernel_bandlimit(-5.0), "`beta`"),
    (lambda: s.kernel_bandlimit(5.0, tol=0.0), "`tol`"),
    (lambda: s.kernel_bandlimit(5.0, tol=1.0), "`tol`"),
    (lambda: s.kernel_bandlimit(5.0, tol=1e-6, d=1), "`d`"),
    (lambda: s.kernel_truncation_error(5.0, -1), "`lmax`"),
])
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: s.funk_hecke("5", 4), "`beta`"),
    (lambda: s.funk_hecke(5.0, 4.0), "`lmax`"),
    (lambda: s.funk_hecke(5.0, 4, d=3.0), "`d`"),
    # `scaled` was read by its truth value: "no" and nan returned e^(-β)λ_ℓ, an array raised numpy's "truth value
    # of an array is ambiguous"
    (lambda: s.funk_hecke(5.0, 4, scaled="no"), "`scaled`"),
    (lambda: s.funk_hecke(5.0, 4, scaled=np.nan), "`scaled`"),
    (lambda: s.funk_hecke(5.0, 4, scaled=np.array([1, 0])), "`scaled`"),
    (lambda: s.funk_hecke_dbeta(5.0, 4, scaled="no"), "`scaled`"),
])
def test_wrong_types_raise_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_large_beta_band_limits_take_the_legitimate_underflow_of_high_degrees():
    # far beyond the band limit e^{-β}λ_ℓ underflows to 0 in float64, which is its value there (not a failure)
    assert 500 < s.kernel_bandlimit(5000.0, 1e-12) < 700
    assert 0 <= s.kernel_truncation_error(1e4, 2000) < 1e-80
    with pytest.raises(ValueError, match=r"e\^\(-β\)·λ_0 at beta=800.0, d=4000 is below float64's normal range"):
        s.funk_hecke(800.0, 3, 4000, scaled=True)                            # ≈ 4e-314: subnormal digits


@pytest.mark.parametrize("beta, d", [(1e4, 512), (2000.0, 1000), (5.0, 3)])
def test_ratios_and_growth_rates_stay_finite_where_the_scaled_multipliers_underflow(beta, d):
    # e^{-β}λ_ℓ = 0 at d = 512, β = 1e4: growth_rates was NaN (0/0); λ_1/λ_0 = I_{ν+1}(β)/I_ν(β), ν = d/2 − 1
    ratios, dlog = s.multiplier_ratios(beta, 2, d)
    nu = d / 2 - 1
    assert ratios[1] == pytest.approx(special.ive(nu + 1, beta) / special.ive(nu, beta), rel=1e-12)
    assert dlog == pytest.approx(special.ive(nu + 1, beta) / special.ive(nu, beta), rel=1e-12)  # ∂λ_0/λ_0 = λ_1/λ_0
    rates = mf.growth_rates(beta, 2, d=d)
    assert rates[1] == pytest.approx((d - 1) * ratios[1] / beta, rel=1e-13)


# ------------------------------------------------------------------------------------------------
# the range of β, sizes and degrees: clear errors, no NaN, no hang, no OverflowError

@pytest.mark.parametrize("call", [
    lambda: s.funk_hecke(1e308, 3, scaled=True),        # NaN through a misleading "below float64's normal range"
    lambda: s.funk_hecke_dbeta(1.1e9, 3, scaled=True),
    lambda: s.multiplier_ratios(1e308, 3),              # NaN ratios (growth_rates returned NaN)
    lambda: s.multiplier_ratios(1e10, 3),               # a hang: the power series loop over ~β terms
    lambda: s.kernel_bandlimit(1e308),                  # OverflowError: cannot convert float infinity to integer
    lambda: s.kernel_truncation_error(1e10, 3),
])
def test_beta_beyond_the_computed_range_is_refused_naming_it(call):
    with pytest.raises(ValueError, match=r"`beta` must be ≤ 1e9 .*got beta="):
        call()


def test_the_largest_beta_is_computed():
    # d = 3: λ_ℓ = √(π/2β) I_{ℓ+1/2}(β), so e^{-β}λ_0 = (1 − e^{-2β})/(2β) and λ_1/λ_0 = coth β − 1/β
    beta = 1e9
    assert s.funk_hecke(beta, 2, scaled=True)[0] == pytest.approx(1 / (2 * beta), rel=1e-12)
    ratios, dlog = s.multiplier_ratios(beta, 2)
    assert ratios[1] == pytest.approx(1 - 1 / beta, rel=1e-14) and dlog == pytest.approx(1 - 1 / beta, rel=1e-14)
    with pytest.raises(ValueError, match="needs degrees beyond 200000"):
        s.kernel_bandlimit(beta)                        # a clear limit, not an array of ~β degrees


def test_huge_degree_requests_are_refused_or_answered_without_their_cost():
    for call in (lambda: s.funk_hecke(1.0, 10**12), lambda: s.funk_hecke_dbeta(1.0, 10**12),
                 lambda: s.multiplier_ratios(1.0, 10**12)):
        with pytest.raises(mf.InsufficientMemoryError, match="lower `lmax`"):
            call()
    assert s.kernel_truncation_error(1.0, 10**9) == 0.0   # allocated ~10⁹ degrees (killed for memory)
    # its shares were summed to degree ~β (16 GB at β = 1e8, refused at 1e9); they vanish past ~37√β. The shares
    # sum to e^β/λ_0 = β e^β/sinh β ≈ 2β, and those of ℓ ≤ 10 to Σ(2ℓ+1) = 121 (to O(ℓ²/β))
    assert s.kernel_truncation_error(1e8, 10) == pytest.approx(2e8 - 121, rel=1e-12)
    # in very high d the multipliers need the power series, ~β²/(2d) terms: refused rather than minutes of work
    with pytest.raises(ValueError, match=r"power series .* lower `beta` or `lmax`"):
        s.funk_hecke(1e7, 2, d=3 * 10**7, scaled=True)


@pytest.mark.parametrize("beta, lmax", [(1e5, 100), (1e5, 2000), (3e4, 1500)])
def test_truncation_error_at_large_beta_against_scipy_bessel_shares(beta, lmax):
    # d = 3: the share of degree ℓ is (2ℓ+1) I_{ℓ+1/2}(β)/I_{1/2}(β), summed here far past where it underflows
    ell = np.arange(40_000)
    shares = (2 * ell + 1) * special.ive(ell + 0.5, beta) / special.ive(0.5, beta)
    assert s.kernel_truncation_error(beta, lmax) == pytest.approx(shares[lmax + 1:].sum(), rel=1e-12)


@pytest.mark.parametrize("ell, exc, match", [
    (-1, ValueError, r"`ell` must be integer degrees ≥ 0; got ell=-1.0\."),   # returned NaN
    ([1, 1.5], ValueError, "`ell` must be integer degrees ≥ 0; got ell=1.5 among others"),  # returned 4.0
    (np.nan, ValueError, "`ell`"),
    ("a", ValueError, "`ell` must be numbers"),
])
def test_harmonic_dimension_checks_degrees(ell, exc, match):
    with pytest.raises(exc, match=match):
        s.harmonic_dimension(3, ell)
    np.testing.assert_allclose(s.harmonic_dimension(3, [0, 1, 2.0]), [1.0, 3.0, 5.0], rtol=1e-14)


def test_kernel_beta_of_an_anisotropic_kernel_is_beta_times_both_spectral_norms():
    # the logits β⟨Qx, Ky⟩ are bounded by β‖Q‖₂‖K‖₂: ‖Q‖₂ = 2, ‖K‖₂ = 3 gives 6β, and K scaled by 1e9 makes it
    # 6e9 > 1e9, refused naming the product.  β‖Q‖₂ alone (K's norm dropped) passed every test, whose large
    # anisotropic kernels came from Q
    from meanfield.sphere._funk_hecke import kernel_beta
    Q, K = np.diag([2.0, 2.0, 1.0]), np.diag([3.0, 1.0, 1.0])
    assert kernel_beta(mf.Model(1.5, Q=Q, K=K), 1e-12) == pytest.approx(9.0, rel=1e-15)
    with pytest.raises(ValueError, match=r"beta·‖Q‖₂·‖K‖₂ = 6e\+09 \(beta=1.0, ‖Q‖₂ = 2, ‖K‖₂ = 3e\+09\)"):
        kernel_beta(mf.Model(1.0, Q=Q, K=1e9 * K), 1e-12)


@pytest.mark.parametrize("d", [7, 20])
def test_low_degree_ratios_do_not_depend_on_lmax_where_high_degrees_underflow(d):
    # β = 1e4: ive underflows past ℓ ≈ 3700, where the shares can still matter, so those degrees come from the
    # power series.  All of them did, and its log form (log of a sum ~e^β, less β) loses ~β·eps: λ_1/λ_0 was off
    # by 2e-12 at lmax = 5000 and exact at lmax = 1000.  Closed forms: λ_ℓ/λ_0 = I_{ℓ+ν}(β)/I_ν(β), ν = d/2 − 1,
    # and ∂_β log λ_0 = I_{d/2}(β)/I_{d/2−1}(β)
    beta, nu, ell = 1e4, d / 2 - 1, np.arange(11)
    expected = special.ive(ell + nu, beta) / special.ive(nu, beta)
    for lmax in (1000, 5000):
        ratios, dlog = s.multiplier_ratios(beta, lmax, d)
        np.testing.assert_allclose(ratios[:11], expected, rtol=2e-14, atol=0)
        assert dlog == pytest.approx(special.ive(d / 2, beta) / special.ive(nu, beta), rel=2e-14, abs=0)


@pytest.mark.parametrize("d", [2, 3, 4, 7])
@pytest.mark.parametrize("beta", [1e-310, 3e-308, 1e-300])
def test_dbeta_at_tiny_beta_is_its_limit_without_overflow(d, beta):
    # ∂_βλ_ℓ → (β/d, 1/d, 2β/(d(d + 2)), …) as β → 0.  The form (ℓ/β)λ_ℓ overflowed below β ≈ 5.6e-309 (∂_βλ_1 = inf,
    # NaN at 5e-324) and met λ_1 flushed to 0 by ive near the smallest normal (d = 2, β = 3e-308: ∂_βλ_1 = 0 for ½)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = s.funk_hecke_dbeta(beta, 4, d)
        assert s.funk_hecke_dbeta(beta, 4, d, scaled=True)[1] == pytest.approx(1 / d, rel=1e-15, abs=0)
    assert got[1] == pytest.approx(1 / d, rel=1e-15, abs=0)
    np.testing.assert_allclose(got[[0, 2]], [beta / d, 2 * beta / (d * (d + 2))], rtol=1e-6)   # (subnormals)
    assert got[3] == got[4] == 0.0                                                          # β² and β³ underflow


def _exact_series(beta, lmax, d, digits=40):
    """e^{-β}λ_ℓ and e^{-β}∂_βλ_ℓ, ℓ ≤ lmax, from λ_ℓ = Π_{j<ℓ} (β/2)/(d/2 + j) Σ_k (β²/4)^k/(k!(ℓ + d/2)_k) (positive
    terms, ∂_β of the k-th is (ℓ + 2k)/β times it) in ``digits``-digit decimal arithmetic."""
    from decimal import Decimal, localcontext
    with localcontext() as ctx:
        ctx.prec = digits + 10
        b, half = Decimal(repr(beta)), Decimal(d) / 2
        z, scale, lead, out = b * b / 4, (-b).exp(), Decimal(1), []
        for ell in range(lmax + 1):
            lead = lead * (b / 2) / (half + ell - 1) if ell else lead
            term = total = Decimal(1)
            deriv, k = Decimal(ell), 0
            while k <= beta or term > total * Decimal(10) ** -digits:
                k += 1
                term = term * z / (k * (ell + half + k - 1))
                total, deriv = total + term, deriv + (ell + 2 * k) * term
            out.append((float(lead * total * scale), float(lead * deriv / b * scale)))
    return np.array(out).T


@pytest.mark.parametrize("d", [2, 3, 4, 7])
@pytest.mark.parametrize("beta", [1e-8, 1e-3, 1.0, 30.0, 300.0, 1000.0])
def test_scaled_multipliers_and_derivatives_against_the_exact_series(d, beta):
    # 50-digit sums of the power series (no Bessel function): the claimed accuracy is 2e-13 per multiplier
    # (_energy._MULTIPLIER_REL); measured ≤ 9.6e-14, at high degree and small β, where ive loses digits
    lam, dlam = _exact_series(beta, 40, d)
    normal = lam > 1e-300       # (scipy's ive flushes values below ~1e-305 to 0: AMOS's underflow limit)
    np.testing.assert_allclose(s.funk_hecke(beta, 40, d, scaled=True)[normal], lam[normal], rtol=2e-13, atol=0)
    np.testing.assert_allclose(s.funk_hecke_dbeta(beta, 40, d, scaled=True)[normal], dlam[normal], rtol=2e-13, atol=0)


@pytest.mark.parametrize("beta", [720.0, 740.0])
def test_high_dimensional_series_beyond_beta_708_against_the_exact_series(beta):
    # d = 3000 takes the power series (the Bessel prefactor overflows), which multiplied its sum by e^{-β}: a
    # subnormal number beyond β ≈ 708, with digits lost: every multiplier was off by 2.9e-12 (β = 720) and by
    # 2.6e-3 (β = 740)
    lam, dlam = _exact_series(beta, 3, 3000)
    np.testing.assert_allclose(s.funk_hecke(beta, 3, 3000, scaled=True), lam, rtol=1e-14, atol=0)
    np.testing.assert_allclose(s.funk_hecke_dbeta(beta, 3, 3000, scaled=True), dlam, rtol=1e-14, atol=0)


@pytest.mark.parametrize("d", [4, 5, 7, 50, 64])
def test_harmonic_dimension_is_exact_at_any_degree_in_moderate_dimension(d):
    # Python's exact binomials: N(d, ℓ) = C(ℓ + d − 1, d − 1) − C(ℓ + d − 3, d − 1).  Beyond degree 2²⁰ the counts
    # came by logs, 1.2e-9 off (d = 4, ℓ = 2²⁰ + 1 next to larger degrees), 3.8e-9 (d = 7, ℓ = 3·10⁶), and one such
    # degree sent the others in the array there too (N(4, 10⁵) exact alone, 9e-11 off next to 10⁷); the running
    # product of ratios reached 1.8e-12 at ℓ = 2²⁰ in d = 4
    ell = [0, 1, 2, 17, 10**5, 2**20, 2**20 + 1, 3 * 10**6, 10**7, 10**9, 10**12]
    exact = [math.comb(k + d - 1, d - 1) - (math.comb(k + d - 3, d - 1) if k >= 2 else 0) for k in ell]
    finite = [e < 10**300 for e in exact]
    got = s.harmonic_dimension(d, ell)
    np.testing.assert_allclose(got[finite], [float(e) for e, f in zip(exact, finite) if f], rtol=d * 2e-16, atol=0)
    assert np.all(np.isinf(got[~np.array(finite)]))
    small = [i for i, e in enumerate(exact) if e < 2**53]
    np.testing.assert_array_equal(got[small], [float(exact[i]) for i in small])   # counts below 2⁵³ exactly
    assert s.harmonic_dimension(d, 10**5) == got[4]                               # alone or in company


@pytest.mark.parametrize("d, beta", [(800, 701.0), (512, 1000.0), (200, 1300.0)])
def test_high_dimensional_multipliers_beyond_beta_700_against_the_exact_series(d, beta):
    # d > 100 beyond β = 700 came from ive at orders ~d/2: 3.8e-13 off (d = 800, β = 701), ∂_βλ_0 3e-13 (d = 512,
    # β = 1000), past the 2e-13 per multiplier that the energy bounds allow; now the series up to β = 1400
    lam, dlam = _exact_series(beta, 3, d)
    np.testing.assert_allclose(s.funk_hecke(beta, 3, d, scaled=True), lam, rtol=1e-14, atol=0)
    np.testing.assert_allclose(s.funk_hecke_dbeta(beta, 3, d, scaled=True), dlam, rtol=1e-14, atol=0)


@pytest.mark.parametrize("d, beta", [(64, 700.0), (512, 1000.0), (4096, 700.0)])
def test_dlog_lam0_of_the_ratios_against_the_exact_series(d, beta):
    # ∂_β log λ_0 (the uniform measure's ‖A‖) was exp of a difference of logs of size ~|log e^{-β}λ_0| (~420 at
    # d = 512, β = 1000): 8.4e-14, 3.1e-13 and 7.2e-14 off; now the quotient of the two multipliers
    lam, dlam = _exact_series(beta, 0, d)
    assert s.multiplier_ratios(beta, 3, d)[1] == pytest.approx(dlam[0] / lam[0], rel=2e-14, abs=0)


@pytest.mark.parametrize("d, beta", [(128, 700.0), (4096, 700.0), (64, 700.0)])
def test_multiplier_ratios_against_the_exact_series(d, beta):
    # the ratios were exp of differences of logs of size ~β (the series): 1.0e-13, 1.1e-13 and 3.6e-14 off; now the
    # quotients of the multipliers, which are normal floats here
    lam, _ = _exact_series(beta, 3, d)
    np.testing.assert_allclose(s.multiplier_ratios(beta, 3, d)[0], lam / lam[0], rtol=1e-14, atol=0)
