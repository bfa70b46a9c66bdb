"""Tests of meanfield.sphere._zonal: zonal functions on S^{d-1} in normalized Gegenbauer polynomials.

Independent answers: moments of a coordinate on S^{d-1}, scipy's Gegenbauer/Chebyshev evaluators,
adaptive quadrature of ∫ P_ℓ P_k dσ, the count of harmonics N(d, ℓ), the S² SH transforms (m = 0
coefficients), and a two-dimensional quadrature of the convolution ∫ e^{β⟨x,y⟩} g(⟨y,e⟩) dσ(y).
"""
import math
import warnings

import numpy as np
import pytest
from scipy import integrate, special

import meanfield as mf
from meanfield import sphere as s

DIMS = [2, 3, 4, 5, 6]


def gegenbauer_reference(ell, d, t):
    if d == 2:
        return special.eval_chebyt(ell, t)
    lam = (d - 2) / 2
    return special.eval_gegenbauer(ell, lam, t) / special.eval_gegenbauer(ell, lam, 1.0)


def coordinate_moment(d, k):
    """∫ t^k dσ for t = ⟨x, e⟩, x uniform on S^{d-1}: Γ((k+1)/2) Γ(d/2) / (√π Γ((k+d)/2)) for even k."""
    if k % 2:
        return 0.0
    return math.exp(math.lgamma((k + 1) / 2) + math.lgamma(d / 2) - math.lgamma(0.5) - math.lgamma((k + d) / 2))


@pytest.mark.parametrize("d", DIMS)
def test_grid_integrates_polynomials_exactly(d):
    g = s.ZonalGrid(12, d)
    assert g.t.shape == g.w.shape == (12,)
    assert np.all(np.abs(g.t) < 1) and np.all(g.w > 0)
    np.testing.assert_allclose(g.w.sum(), 1.0, rtol=1e-15)
    for k in range(2 * g.n):  # degree ≤ 2n − 1
        np.testing.assert_allclose(np.dot(g.w, g.t ** k), coordinate_moment(d, k), rtol=1e-13, atol=1e-15)
    fb = s.ZonalGrid.for_bandlimit(10, d)
    assert fb.n == 16 and s.ZonalGrid.for_bandlimit(10, d, dealias=False).n == 11


@pytest.mark.parametrize("n", [7, 300, 1000])
def test_grid_weights_are_accurate_for_large_n(n):
    # closed forms: Gauss–Chebyshev of the 1st kind (d = 2), of the 2nd kind (d = 4), and ducc0's
    # Gauss–Legendre weights (d = 3; accurate to ~1e-16). scipy's roots_jacobi weights alone are off by
    # 1e-10 (n = 300) and 2e-8 (n = 1000), relative.
    i = np.arange(1, n + 1)
    g2 = s.ZonalGrid(n, 2)
    np.testing.assert_allclose(np.sort(g2.t), np.sort(np.cos((2 * i - 1) * np.pi / (2 * n))), rtol=0, atol=1e-15)
    np.testing.assert_allclose(g2.w, 1.0 / n, rtol=1e-14)
    g4 = s.ZonalGrid(n, 4)
    order = np.argsort(g4.t)
    ref_t = np.cos(i * np.pi / (n + 1))[::-1]
    ref_w = np.sin(i * np.pi / (n + 1))[::-1] ** 2
    np.testing.assert_allclose(g4.t[order], ref_t, rtol=0, atol=1e-15)
    np.testing.assert_allclose(g4.w[order], ref_w / ref_w.sum(), rtol=1e-13)
    import ducc0

    g3 = s.ZonalGrid(n, 3)
    order = np.argsort(g3.t)
    np.testing.assert_allclose(g3.t[order], -np.cos(ducc0.misc.GL_thetas(n)), rtol=0, atol=1e-15)
    np.testing.assert_allclose(g3.w[order], ducc0.sht.get_gridweights("GL", n) / (4 * np.pi), rtol=1e-13)


@pytest.mark.parametrize("d", [5, 6, 7, 12, 65])
def test_product_rule_of_large_grids_integrates_to_degree_2n_minus_1(d):
    """From n ≥ 20·k, k = ⌊(d−3)/2⌋, the grid is the O(n) product rule with n + k nodes (Gauss–Jacobi took
    O(n²): 9 s at n = 10⁴); it is exact to degree 2n − 1 as Gauss–Jacobi is: orthogonality ∫ P_ℓ P_j dσ =
    δ_ℓj / N(d, ℓ) for ℓ, j ≤ n − 1 (closed-form norms), and it agrees with the n-node Gauss–Jacobi rule."""
    k = (d - 3) // 2
    n = 20 * k
    g = s.ZonalGrid(n, d)
    assert g.size == g.t.size == g.w.size == n + k
    assert np.all(np.diff(g.t) > 0) and np.all(np.abs(g.t) < 1) and np.all(g.w > 0)
    np.testing.assert_allclose(g.w.sum(), 1.0, rtol=1e-15)
    p = s.gegenbauer(n - 1, g.t, d)
    gram = (p * g.w) @ p.T
    np.testing.assert_allclose(gram, np.diag(s.gegenbauer_norms(n - 1, d)), rtol=0, atol=2e-15)
    smaller = s.ZonalGrid(n - 1, d)                                         # below 20·k: Gauss–Jacobi, n − 1 nodes
    assert smaller.size == n - 1
    f = lambda t: np.exp(2.0 * t) * np.cos(3.0 * t)                         # noqa: E731 (entire: both converged)
    assert abs(np.dot(g.w, f(g.t)) - np.dot(smaller.w, f(smaller.t))) < 1e-15


@pytest.mark.parametrize("d, n", [(1000, 400), (4000, 200), (300, 2000)])
def test_gauss_jacobi_grids_in_high_dimension_are_finite_and_exact(d, n):
    # scipy's roots_jacobi returned NaN nodes there (so every zonal run raised "`t` must be finite"); the nodes
    # now come from the Jacobi matrix's eigenvalues.  Moments E t² = 1/d, E t⁴ = 3/(d(d+2)), E t⁶ = 15/(d(d+2)(d+4))
    g = s.ZonalGrid(n, d)
    assert g.rule == "gauss-jacobi" and g.size == n
    assert np.all(np.isfinite(g.t)) and np.all(g.w >= 0) and np.all(np.diff(g.t) > 0)
    np.testing.assert_allclose(g.w.sum(), 1.0, rtol=1e-14)
    for k, moment in ((2, 1 / d), (4, 3 / (d * (d + 2))), (6, 15 / (d * (d + 2) * (d + 4)))):
        np.testing.assert_allclose(np.dot(g.w, g.t ** k), moment, rtol=1e-12)
    assert abs(np.dot(g.w, g.t ** 3)) < 1e-16
    product = s.ZonalGrid(20 * ((d - 3) // 2), d)                      # the other rule, many more nodes
    np.testing.assert_allclose(np.dot(g.w, np.exp(5 * g.t)), np.dot(product.w, np.exp(5 * product.t)), rtol=1e-14)


def test_large_grids_in_every_dimension_are_built_fast_enough_to_use():
    # n = 1.5·10⁵ nodes (the 3/2-rule grid of L = 10⁵) in d = 7 took ~30 min by Gauss–Jacobi; a product rule is O(n)
    g = s.ZonalGrid(150_000, 7)
    assert g.size == 150_002 and np.isclose(np.dot(g.w, g.t ** 2), 1.0 / 7, rtol=1e-13, atol=0)


@pytest.mark.parametrize("d", DIMS)
def test_gegenbauer_matches_scipy(d):
    t = np.linspace(-1, 1, 41)
    p = s.gegenbauer(15, t, d)
    assert p.shape == (16, 41)
    ref = np.stack([gegenbauer_reference(ell, d, t) for ell in range(16)])
    np.testing.assert_allclose(p, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(p[:, -1], 1.0, rtol=1e-14)
    if d == 3:
        np.testing.assert_allclose(p, np.stack([special.eval_legendre(ell, t) for ell in range(16)]), atol=1e-14)
    assert s.gegenbauer(3, np.zeros((2, 5)), d).shape == (4, 2, 5)


def test_gegenbauer_at_high_degree_against_closed_forms_and_in_high_dimension():
    # by its recurrence: scipy's eval_jacobi table took 9 s here (O(ℓ) per value) and was NaN at d = 1000
    t, lmax = np.linspace(-1, 1, 2001), 1000
    ell = np.arange(lmax + 1)[:, None]
    np.testing.assert_allclose(s.gegenbauer(lmax, t, 2), np.cos(ell * np.arccos(t)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.gegenbauer(lmax, t, 3), special.eval_legendre(ell, t), rtol=0, atol=5e-12)
    high = s.gegenbauer(lmax, t, 1000)
    assert np.all(np.isfinite(high)) and np.all(np.abs(high) <= 1 + 1e-12)
    np.testing.assert_allclose(high[:, -1], 1.0, rtol=1e-12)
    np.testing.assert_allclose(high[:40], np.stack([gegenbauer_reference(k, 1000, t) for k in range(40)]),
                               rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("shape", [(), (4,), (2, 3)])
def test_zonal_synthesis_sums_the_table_for_any_batch_and_argument_shape(shape):
    rng = np.random.default_rng(7)
    c, t = rng.standard_normal(shape + (12,)), rng.uniform(-1, 1, (5, 3))
    expected = np.tensordot(c, s.gegenbauer(11, t, 5), axes=([-1], [0]))
    got = s.zonal_synthesis(c, t, 5)
    assert got.shape == shape + (5, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13)
    assert np.ndim(s.zonal_synthesis(c, 0.3, 5)) == len(shape)


@pytest.mark.parametrize("d", DIMS)
def test_orthogonality_and_norms_by_quadrature(d):
    a = (d - 3) / 2
    cd = math.gamma(d / 2) / (math.sqrt(math.pi) * math.gamma((d - 1) / 2))
    lmax = 8
    norms = s.gegenbauer_norms(lmax, d)
    np.testing.assert_allclose(norms, 1.0 / s.harmonic_dimension(d, np.arange(lmax + 1)), rtol=1e-14)
    for ell in range(lmax + 1):
        for k in range(ell, lmax + 1):
            with warnings.catch_warnings():  # "roundoff detected" when the integral is 0: the floor we want
                warnings.simplefilter("ignore", integrate.IntegrationWarning)
                val, _ = integrate.quad(lambda t: gegenbauer_reference(ell, d, t) * gegenbauer_reference(k, d, t),
                                        -1, 1, weight="alg", wvar=(a, a), epsabs=1e-14, epsrel=1e-13)
            expected = norms[ell] if k == ell else 0.0
            assert abs(cd * val - expected) <= 1e-13, (ell, k, cd * val, expected)


@pytest.mark.parametrize("d", DIMS)
def test_round_trip_and_batch_layout(d):
    rng = np.random.default_rng(d)
    lmax = 9
    g = s.ZonalGrid.for_bandlimit(lmax, d)
    c = rng.standard_normal((3, lmax + 1))
    vals = s.zonal_synthesis(c, g.t, d)
    assert vals.shape == (3, g.size)
    back = s.zonal_analysis(vals, lmax, g)
    assert back.shape == (3, lmax + 1)
    np.testing.assert_allclose(back, c, rtol=0, atol=1e-13)
    np.testing.assert_allclose(s.zonal_analysis(vals[1], lmax, g), c[1], rtol=0, atol=1e-13)
    # the 3/2-rule grid projects products of two degree-L profiles exactly
    f1, f2 = rng.standard_normal(lmax + 1), rng.standard_normal(lmax + 1)
    fine = s.ZonalGrid(4 * lmax, d)
    prod = lambda grid: s.zonal_synthesis(f1, grid.t, d) * s.zonal_synthesis(f2, grid.t, d)  # noqa: E731
    np.testing.assert_allclose(s.zonal_analysis(prod(g), lmax, g), s.zonal_analysis(prod(fine), lmax, fine),
                               rtol=0, atol=1e-13)


@pytest.mark.parametrize("d", DIMS)
def test_exponential_profile_has_funk_hecke_coefficients(d):
    # e^{κt} = Σ N(d,ℓ) λ_ℓ(κ) P_ℓ(t): the zonal analysis recovers N(d,ℓ) λ_ℓ
    kappa, lmax = 2.0, 20
    g = s.ZonalGrid(40, d)
    coeffs = s.zonal_analysis(np.exp(kappa * g.t), lmax, g)
    n_dim = s.harmonic_dimension(d, np.arange(lmax + 1))
    expected = n_dim * s.funk_hecke(kappa, lmax, d)
    # g_ℓ = N(d,ℓ) ∫ g P_ℓ dσ: the quadrature's rounding (~eps·max g) is multiplied by N(d,ℓ)
    assert np.all(np.abs(coeffs - expected) <= 1e-13 * expected + 10 * np.finfo(float).eps * n_dim * np.exp(kappa))


def test_zonal_coefficients_are_sh_m0_coefficients_on_s2():
    # g(cos θ) = Σ g_ℓ P_ℓ = Σ a_ℓ0 Y_ℓ0 with Y_ℓ0 = √((2ℓ+1)/(4π)) P_ℓ(cos θ)
    kappa, lmax = 1.5, 24
    prof = lambda t: np.exp(kappa * t) * np.cos(3 * t)  # noqa: E731
    zg = s.ZonalGrid(60, 3)
    g_ell = s.zonal_analysis(prof(zg.t), lmax, zg)
    grid = s.SphereGrid.for_bandlimit(40)
    alm = s.analysis(prof(grid.points[..., 2]), lmax, grid)
    ell, m = s.lm_arrays(lmax)
    np.testing.assert_allclose(alm[m == 0].real, g_ell * np.sqrt(4 * np.pi / (2 * np.arange(lmax + 1) + 1)),
                               rtol=0, atol=1e-14)
    assert np.max(np.abs(alm[m > 0])) < 1e-14 and np.max(np.abs(alm[m == 0].imag)) == 0


def _convolution_by_quadrature(beta, prof, svals, d, n=80):
    """∫ e^{β⟨x,y⟩} g(⟨y,e⟩) dσ(y) at ⟨x,e⟩ = s, in coordinates y = cos θ e + sin θ u, u ∈ S^{d−2} ⊥ e.

    θ ∈ [0, π] with density ∝ sin^{d−2} θ; ⟨u, e'⟩ = cos ψ, ψ ∈ [0, π] with density ∝ sin^{d−3} ψ (d ≥ 3),
    or ⟨u, e'⟩ = ±1 with mass ½ each (d = 2).  Gauss–Legendre in θ and ψ: the integrand is analytic.
    """
    x, w = np.polynomial.legendre.leggauss(n)
    th = np.pi * (x + 1) / 2
    wt = w * np.sin(th) ** (d - 2)
    wt /= wt.sum()
    if d == 2:
        v, wv = np.array([-1.0, 1.0]), np.array([0.5, 0.5])
    else:
        wv = w * np.sin(th) ** (d - 3)
        wv /= wv.sum()
        v = np.cos(th)
    out = []
    for s_ in svals:
        inner = s_ * np.cos(th)[:, None] + np.sqrt(1 - s_ ** 2) * np.sin(th)[:, None] * v[None, :]
        out.append(np.einsum("i,j,ij,i->", wt, wv, np.exp(beta * inner), prof(np.cos(th))))
    return np.array(out)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("beta", [0.5, 5.0])
def test_funk_hecke_on_zonal_functions_is_the_convolution(d, beta):
    rng = np.random.default_rng(d)
    lmax = 6
    c = rng.standard_normal(lmax + 1)
    prof = lambda t: s.zonal_synthesis(c, t, d)  # noqa: E731  (a degree-6 polynomial profile)
    svals = np.linspace(-1, 1, 9)
    spectral = s.zonal_synthesis(s.funk_hecke(beta, lmax, d) * c, svals, d)
    direct = _convolution_by_quadrature(beta, prof, svals, d)
    np.testing.assert_allclose(spectral, direct, rtol=0, atol=1e-13 * np.exp(beta) * np.abs(c).sum())


@pytest.mark.parametrize("call, match", [
    (lambda: s.ZonalGrid(0, 3), "`n`"),
    (lambda: s.ZonalGrid(5, 1), "`d`"),
    (lambda: s.ZonalGrid.for_bandlimit(-1, 3), "`lmax`"),
    (lambda: s.gegenbauer(-1, 0.5, 3), "`lmax`"),
    (lambda: s.gegenbauer(3, 0.5, 1), "`d`"),
    (lambda: s.zonal_analysis(np.ones(4), 3, s.ZonalGrid(5, 3)), "`values`"),
])
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, exc, match", [
    (lambda: s.gegenbauer(3, "a", 3), ValueError, "`t` must be numbers"),
    (lambda: s.gegenbauer(3, np.nan, 3), ValueError, "`t` must be finite"),
    (lambda: s.gegenbauer_norms(-1, 3), ValueError, "`lmax`"),              # returned []
    (lambda: s.gegenbauer_norms(1.5, 3), TypeError, "`lmax`"),              # returned 3 norms
    (lambda: s.zonal_analysis(np.ones(5), 3, None), TypeError, "`grid` must be a meanfield.sphere.ZonalGrid"),
    (lambda: s.zonal_analysis("abc", 3, s.ZonalGrid(5, 3)), ValueError, "`values` must be numbers"),
    (lambda: s.zonal_synthesis(np.ones(0), 0.5, 3), ValueError, r"`coeffs` must have shape \(\.\.\., L \+ 1\)"),
    (lambda: s.zonal_synthesis("ab", 0.5, 3), ValueError, "`coeffs` must be numbers"),
])
def test_malformed_inputs_raise_naming_the_parameter(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_huge_requests_are_refused_before_allocating():
    import meanfield as mf

    with pytest.raises(mf.InsufficientMemoryError, match="quadrature nodes"):
        s.ZonalGrid(10**12, 3).t
    with pytest.raises(mf.InsufficientMemoryError, match="lower `lmax`"):
        s.gegenbauer(10**12, 0.5, 3)
    with pytest.raises(mf.InsufficientMemoryError, match="lower `lmax`"):
        s.gegenbauer_norms(10**12, 3)
    with pytest.raises(mf.InsufficientMemoryError, match="lower `lmax`"):
        s.zonal_analysis(np.ones(5), 10**12, s.ZonalGrid(5, 3))


def _analysis_floor(values, lmax, d):
    """The rounding floor of a coefficient g_ℓ = N(d,ℓ) Σ_i w_i g(t_i) P_ℓ(t_i): eps·max|g| times N(d,ℓ) (the
    normalization) plus lmax (the growth of the recurrence's and the sum's rounding)."""
    return np.finfo(float).eps * np.abs(values).max() * (s.harmonic_dimension(d, np.arange(lmax + 1)) + lmax)


@pytest.mark.parametrize("d", [2, 3, 5, 8])
def test_analysis_at_high_degree_meets_the_closed_forms(d):
    """At L = 400: e^{βt} has g_ℓ = N(d,ℓ) λ_ℓ(β) (Funk–Hecke), and a random series in numpy's independent
    Legendre (d = 3) or Chebyshev (d = 2) evaluators is recovered.  Measured against the floor: ≤ 0.32 for the
    recurrence and for the former eval_jacobi table alike, at L = 60, 400, 1000."""
    L = 400
    grid = s.ZonalGrid.for_bandlimit(L, d)
    for beta in (1.0, 40.0):
        v = np.exp(beta * grid.t)
        expected = s.harmonic_dimension(d, np.arange(L + 1)) * s.funk_hecke(beta, L, d)
        err = np.abs(s.zonal_analysis(v, L, grid) - expected)
        assert np.all(err <= 1e-13 * np.abs(expected) + 0.5 * _analysis_floor(v, L, d)), beta
        significant = expected > 1e-2 * expected.max()
        if beta == 1.0:   # max|g| = e: the coefficients above 1e-2·max are clear of the floor
            assert np.max(err[significant] / expected[significant]) < 1e-13
    if d in (2, 3):
        from numpy.polynomial import chebyshev, legendre

        c = np.random.default_rng(5).standard_normal(L + 1)
        v = legendre.legval(grid.t, c) if d == 3 else chebyshev.chebval(grid.t, c)
        assert np.all(np.abs(s.zonal_analysis(v, L, grid) - c) <= 0.5 * _analysis_floor(v, L, d))


@pytest.mark.parametrize("d", [2, 3, 6])
def test_analysis_agrees_with_the_gegenbauer_table(d):
    """The recurrence against the former method, the quadrature with gegenbauer()'s eval_jacobi table."""
    L = 150
    grid = s.ZonalGrid.for_bandlimit(L, d)
    table = (s.gegenbauer(L, grid.t, d) * grid.w).T / s.gegenbauer_norms(L, d)
    for g in (lambda t: np.exp(7 * t), lambda t: 1 / (1.5 - t), lambda t: np.abs(t) ** 3, lambda t: np.cos(40 * t)):
        v = g(grid.t)
        assert np.all(np.abs(s.zonal_analysis(v, L, grid) - v @ table) <= 0.5 * _analysis_floor(v, L, d))


def test_analysis_is_not_cubic_in_the_band_limit(monkeypatch):
    """ZonalDensity.from_function went through gegenbauer()'s (L+1) × n table of eval_jacobi values, O(ℓ) each:
    O(L³), 6 s at L = 1000 and 55 s at L = 2000.  It no longer builds the table."""
    import meanfield as mf
    from meanfield.sphere import _zonal

    monkeypatch.setattr(_zonal, "gegenbauer", lambda *a: pytest.fail("the O(L³) Gegenbauer table was built"))
    L, beta = 1000, 3.0
    rho = mf.ZonalDensity.from_function(lambda t: np.exp(beta * t), L)
    expected = (2 * np.arange(L + 1) + 1) * s.funk_hecke(beta, L, 3)
    assert np.all(np.abs(rho.coeffs - expected) <= 1e-13 * expected + 0.5 * _analysis_floor(np.exp(beta), L, 3))


@pytest.mark.parametrize("f", [lambda t: s.gegenbauer(30, t, 3), lambda t: s.zonal_synthesis(np.ones(31), t, 3)])
def test_arguments_outside_the_interval_are_refused_and_rounding_is_clipped(f):
    # the recurrence extrapolates outside [-1, 1]: P_30(1.5) came back as 3.8e11, no value of a zonal function
    with pytest.raises(ValueError, match=r"`t` must lie in \[-1, 1\].*1\.5"):
        f(np.array([0.2, 1.5]))
    with pytest.raises(ValueError, match="`t` must lie"):
        f(-1.0 - 1e-9)
    over = np.nextafter(1.0, 2.0) + 4e-16         # ⟨x, x⟩ of a float64 unit vector can exceed 1 by a few ulps
    np.testing.assert_array_equal(f(np.array([over, -over])), f(np.array([1.0, -1.0])))


def test_norms_beyond_float64_in_high_dimension_are_refused_with_the_largest_band_limit():
    # 1/N(1000, ℓ) underflowed to 0 from ℓ ≈ 450, and from_function's coefficients came out inf ("`coeffs` must be
    # finite with shape (451,); got shape (451,)"); N(1000, 294) ≈ 1e299.6 is the last below 1e300
    from meanfield.sphere._harmonic_dimension import _log_harmonic_dimension

    assert _log_harmonic_dimension(1000, np.array([294, 295])) @ [1, 0] < 300 * np.log(10) < \
        _log_harmonic_dimension(1000, np.array([294, 295])) @ [0, 1]
    with pytest.raises(ValueError, match=r"`lmax`=450 .* d=1000.*from ℓ = 295.*largest band limit .* is 294"):
        s.gegenbauer_norms(450, 1000)
    with pytest.raises(ValueError, match="largest band limit of zonal functions in d=1000 is 294"):
        mf.ZonalDensity.from_function(lambda t: np.exp(5 * t), 450, d=1000)
    assert s.gegenbauer_norms(294, 1000)[-1] > 0


@pytest.mark.parametrize("d", [3, 4, 16, 200, 1000])
def test_norms_are_the_inverse_counts_to_rounding(d):
    # exp of the log-gamma form lost |log Γ|·eps: 5.5e-14 (d = 3), 1e-13 (d = 64), 2.5e-12 (d = 1000) relative, and
    # every coefficient g_ℓ = N(d, ℓ) ∫ g P_ℓ dσ carried it; the product of the count's ratios is within ~ℓ·eps
    L = 60
    exact = [math.comb(k + d - 1, d - 1) - (math.comb(k + d - 3, d - 1) if k + d - 3 >= 0 else 0) for k in range(L + 1)]
    inv = 1.0 / np.array([float(n) for n in exact])
    np.testing.assert_allclose(s.gegenbauer_norms(L, d), inv, rtol=L * np.finfo(float).eps / 2, atol=0)   # 6e-16 measured
    assert s.harmonic_dimension(1000, 1) == 1000.0 and s.harmonic_dimension(d, 2) == exact[2]


def test_zonal_transforms_refuse_nan_naming_the_parameter():
    # NaN coefficients gave NaN values, NaN values NaN coefficients, with no error
    grid = s.ZonalGrid(4, 5)
    with pytest.raises(ValueError, match="`coeffs` must be finite"):
        s.zonal_synthesis([1.0, np.nan], [0.1], 5)
    with pytest.raises(ValueError, match="`values` must be finite"):
        s.zonal_analysis(np.full(grid.size, np.nan), 2, grid)
