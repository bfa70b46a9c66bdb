"""Tests of meanfield.sphere._circle: real Fourier series on S¹ (d = 2).

Independent answers: explicit cosine/sine series and their derivatives, the Jacobi–Anger expansion
e^{β cos φ} = Σ I_k(β) e^{ikφ}, Python-loop direct sums, and trapezoidal quadrature of convolutions.
"""
import numpy as np
import pytest
from scipy import special

from meanfield import sphere as s


def random_coeffs(rng, lmax):
    c = rng.standard_normal(lmax + 1) + 1j * rng.standard_normal(lmax + 1)
    c[0] = c[0].real
    return c


def cos_sin_series(c, phi):
    """f = c_0 + Σ_{k≥1} (a_k cos kφ + b_k sin kφ) with a_k = 2 Re c_k, b_k = −2 Im c_k; and f'."""
    f = np.full_like(phi, c[0].real)
    df = np.zeros_like(phi)
    for k in range(1, len(c)):
        a, b = 2 * c[k].real, -2 * c[k].imag
        f += a * np.cos(k * phi) + b * np.sin(k * phi)
        df += -k * a * np.sin(k * phi) + k * b * np.cos(k * phi)
    return f, df


def test_grid_helpers():
    assert s.circle_grid_size(10) == 32 and s.circle_grid_size(10, dealias=False) == 22
    assert s.circle_grid_size(0) == 2
    n = 12
    np.testing.assert_allclose(s.circle_angles(n), 2 * np.pi * np.arange(n) / n)
    p = s.circle_points(n)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(np.arctan2(p[:, 1], p[:, 0]) % (2 * np.pi), s.circle_angles(n), atol=1e-14)


@pytest.mark.parametrize("lmax", [0, 1, 8, 64, 255])
@pytest.mark.parametrize("dealias", [True, False])
def test_round_trip(lmax, dealias):
    rng = np.random.default_rng(lmax)
    c = random_coeffs(rng, lmax)
    n = s.circle_grid_size(lmax, dealias)
    f = s.circle_synthesis(c, n)
    assert f.shape == (n,) and f.dtype == float
    np.testing.assert_allclose(f, cos_sin_series(c, s.circle_angles(n))[0], rtol=0, atol=1e-13 * np.abs(c).sum())
    np.testing.assert_allclose(s.circle_analysis(f, lmax), c, rtol=0, atol=1e-14 * np.abs(c).max() * (1 + np.log2(n)))
    # minimal n = 2L + 1 is still exact
    np.testing.assert_allclose(s.circle_analysis(s.circle_synthesis(c, 2 * lmax + 1), lmax), c, rtol=0,
                               atol=1e-13 * np.abs(c).max())


def test_batched_round_trip():
    rng = np.random.default_rng(0)
    c = np.stack([random_coeffs(rng, 9) for _ in range(4)])
    f = s.circle_synthesis(c, 30)
    assert f.shape == (4, 30)
    np.testing.assert_allclose(s.circle_analysis(f, 9), c, rtol=0, atol=1e-14)


def test_product_is_alias_free_on_dealiased_grid():
    rng = np.random.default_rng(1)
    lmax = 20
    a, b = random_coeffs(rng, lmax), random_coeffs(rng, lmax)
    n = s.circle_grid_size(lmax)
    exact = s.circle_analysis(s.circle_synthesis(a, 8 * lmax) * s.circle_synthesis(b, 8 * lmax), lmax)
    got = s.circle_analysis(s.circle_synthesis(a, n) * s.circle_synthesis(b, n), lmax)
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-13 * np.abs(exact).max())
    n0 = s.circle_grid_size(lmax, dealias=False)
    aliased = s.circle_analysis(s.circle_synthesis(a, n0) * s.circle_synthesis(b, n0), lmax)
    assert np.max(np.abs(aliased - exact)) > 1e-3 * np.abs(exact).max()


def test_derivative_of_trig_polynomial():
    rng = np.random.default_rng(2)
    c = random_coeffs(rng, 30)
    n = s.circle_grid_size(30)
    phi = s.circle_angles(n)
    _, df = cos_sin_series(c, phi)
    np.testing.assert_allclose(s.circle_synthesis(s.circle_derivative(c), n), df, rtol=0,
                               atol=1e-13 * np.abs(np.arange(31) * c).sum())


def test_derivative_of_exp_cos_is_spectrally_accurate():
    # Jacobi–Anger: e^{β cos φ} has c_k = I_k(β); d/dφ = −β sin φ e^{β cos φ}
    beta, lmax = 3.0, 40
    c = special.iv(np.arange(lmax + 1), beta).astype(complex)
    n = 128
    phi = s.circle_angles(n)
    f = np.exp(beta * np.cos(phi))
    np.testing.assert_allclose(s.circle_analysis(f, lmax), c, rtol=0, atol=1e-14 * np.e ** beta)
    np.testing.assert_allclose(s.circle_synthesis(s.circle_derivative(c), n), -beta * np.sin(phi) * f,
                               rtol=0, atol=1e-13 * np.e ** beta)


def test_evaluate_at_arbitrary_angles():
    rng = np.random.default_rng(3)
    c = random_coeffs(rng, 15)
    phi = rng.uniform(-10, 10, size=(7, 5))
    got = s.circle_evaluate(c, phi)
    assert got.shape == phi.shape
    np.testing.assert_allclose(got, cos_sin_series(c, phi)[0], rtol=0, atol=1e-13 * np.abs(c).sum())
    n = 40
    np.testing.assert_allclose(s.circle_evaluate(c, s.circle_angles(n)), s.circle_synthesis(c, n), rtol=0, atol=1e-13)


def test_adjoint_points_matches_direct_sum_and_is_adjoint():
    rng = np.random.default_rng(4)
    lmax, npts = 12, 200
    phi = rng.uniform(0, 2 * np.pi, npts)
    w = rng.standard_normal(npts)
    got = s.circle_adjoint_points(w, phi, lmax)
    direct = np.array([sum(w[j] * (np.cos(k * phi[j]) - 1j * np.sin(k * phi[j])) for j in range(npts))
                       for k in range(lmax + 1)])
    np.testing.assert_allclose(got, direct, rtol=0, atol=1e-12 * np.abs(w).sum())
    # adjointness: Σ w_j f(φ_j) = c_0 μ̂_0 + 2 Re Σ_{k>0} c_k conj(μ̂_k)
    c = random_coeffs(rng, lmax)
    lhs = np.dot(w, s.circle_evaluate(c, phi))
    rhs = np.real(c[0] * got[0] + 2 * np.sum(c[1:] * np.conj(got[1:])))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)
    # with trapezoid weights at the grid it is the analysis
    n = 32
    f = s.circle_synthesis(c, n)
    np.testing.assert_allclose(s.circle_adjoint_points(f / n, s.circle_angles(n), lmax), c, rtol=0, atol=1e-14 * n)


def test_funk_hecke_on_the_circle_is_the_convolution():
    # (1/2π) ∫ e^{β cos(φ−ψ)} f(ψ) dψ has coefficients I_k(β) c_k = funk_hecke(β, L, d=2) c_k
    rng = np.random.default_rng(5)
    beta, lmax = 4.0, 10
    c = random_coeffs(rng, lmax)
    conv = s.circle_synthesis(s.funk_hecke(beta, lmax, d=2) * c, 24)
    psi = s.circle_angles(256)  # trapezoid: exponentially accurate for the periodic analytic integrand
    f = s.circle_synthesis(c, 256)
    direct = np.array([np.mean(np.exp(beta * np.cos(p - psi)) * f) for p in s.circle_angles(24)])
    np.testing.assert_allclose(conv, direct, rtol=0, atol=1e-13 * np.exp(beta) * np.abs(c).sum())


@pytest.mark.parametrize("call, match", [
    (lambda: s.circle_synthesis(np.ones(6), 10), "`n`"),
    (lambda: s.circle_analysis(np.ones(10), 5), "`lmax`"),
    (lambda: s.circle_grid_size(-1), "`lmax`"),
    (lambda: s.circle_analysis(np.ones(10), -1), "`lmax`"),
    (lambda: s.circle_adjoint_points(np.ones(3), np.zeros(3), -1), "`lmax`"),
])
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, exc, match", [
    (lambda: s.circle_angles(0), ValueError, "`n` must be an integer >= 1; got n=0"),   # returned []
    (lambda: s.circle_angles(1.5), TypeError, "`n`"),                                 # returned 2 angles
    (lambda: s.circle_angles("a"), TypeError, "`n`"),
    (lambda: s.circle_points(-2), ValueError, "`n`"),
    (lambda: s.circle_synthesis(np.ones(3), 10.5), TypeError, "`n`"),
    (lambda: s.circle_synthesis(np.ones(0), 10), ValueError, r"`coeffs` must have shape \(\.\.\., L \+ 1\)"),
    (lambda: s.circle_synthesis(1.0, 10), ValueError, "`coeffs` must have shape"),
    (lambda: s.circle_synthesis("abc", 10), ValueError, "`coeffs` must be numbers"),
    (lambda: s.circle_analysis(1.0, 0), ValueError, r"`values` must have shape \(\.\.\., n\)"),
    (lambda: s.circle_analysis("abc", 0), ValueError, "`values` must be numbers"),
    (lambda: s.circle_derivative("ab"), ValueError, "`coeffs` must be numbers"),
    (lambda: s.circle_evaluate(np.ones((2, 3)), [0.1]), ValueError, r"`coeffs` must have shape \(L \+ 1,\)"),
    (lambda: s.circle_evaluate(np.ones(0), 0.1), ValueError, "`coeffs`"),
    (lambda: s.circle_evaluate(np.ones(3), np.nan), ValueError, "`phi` must be finite"),
    (lambda: s.circle_evaluate(np.ones(3), "a"), ValueError, "`phi` must be numbers"),
    (lambda: s.circle_adjoint_points(np.ones(3), np.zeros(2), 3), ValueError, "`weights` and `phi` must be 1-D"),
    (lambda: s.circle_adjoint_points("abc", np.zeros(3), 3), ValueError, "`weights` must be numbers"),
])
def test_malformed_inputs_raise_naming_the_parameter(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_huge_grids_are_refused_before_allocating():
    import meanfield as mf

    for call in (lambda: s.circle_angles(10**12), lambda: s.circle_points(10**12),   # tried to allocate 7 TiB
                 lambda: s.circle_synthesis(np.ones(3), 10**12)):
        with pytest.raises(mf.InsufficientMemoryError, match="lower `n`"):
            call()
    with pytest.raises(mf.InsufficientMemoryError, match="lower `lmax`"):
        s.circle_adjoint_points(np.ones(3), np.zeros(3), 10**12)
    np.testing.assert_allclose(s.circle_derivative([1, 2]), [0, 2j])       # a list is fine (it raised)


def test_evaluate_and_sampling_on_s1_take_bounded_memory(monkeypatch):
    """circle_evaluate built the whole table e^{ikφ} (48·n·(L + 1) bytes), so sample_density on S¹, which evaluates
    all its proposals at once, was refused at L = 2000 for 2·10⁵ tokens (64.6 GiB, "evaluate fewer angles at a
    time", advice a caller of sample_density cannot follow).  With 1 GiB available: L = 200 at 2·10⁵ angles
    (a 1.8 GiB table), against the direct sum at a few angles, and 5·10⁴ samples of an L = 200 density."""
    import meanfield as mf
    from meanfield import _memory

    monkeypatch.setattr(_memory, "available_bytes", lambda: 1 << 30)
    rng = np.random.default_rng(0)
    lmax = 200
    c = (rng.standard_normal(lmax + 1) + 1j * rng.standard_normal(lmax + 1)) / (1 + np.arange(lmax + 1)) ** 2
    c[0] = 1.0
    phi = rng.uniform(-10, 10, (2, 100_000))
    vals = s.circle_evaluate(c, phi)
    k = np.arange(1, lmax + 1)
    for i, j in ((0, 0), (1, 99_999), (1, 54_321)):
        direct = c[0].real + 2 * np.sum((c[1:] * np.exp(1j * k * phi[i, j])).real)
        assert vals[i, j] == pytest.approx(direct, abs=1e-13)
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 0], lmax, d=2)
    p = mf.sample_density(rho, 50_000, seed=1)
    assert abs(p.positions[:, 0].mean() - 0.25) < 5 / np.sqrt(50_000)


def test_circle_evaluation_and_adjoint_refuse_nan_naming_the_parameter():
    # NaN weights gave NaN coefficients (the S² adjoint refuses them), NaN coefficients NaN values
    with pytest.raises(ValueError, match="`weights` must be finite"):
        s.circle_adjoint_points([1.0, np.nan], [0.1, 0.2], 3)
    with pytest.raises(ValueError, match="`coeffs` must be finite"):
        s.circle_evaluate([1.0, np.inf], [0.1])
    np.testing.assert_allclose(s.circle_adjoint_points([0.25, 0.75], [0.0, np.pi], 2), [1.0, -0.5, 1.0], atol=1e-15)


def _long_double_adjoint(w, phi, ks):
    """Σ_j w_j e^{-ikφ_j} for the degrees ``ks``, in long double (an independent reference, ~1e-18)."""
    wl, pl = w.astype(np.longdouble), phi.astype(np.longdouble)
    return np.array([np.sum(wl * np.cos(k * pl)) - 1j * np.sum(wl * np.sin(k * pl)) for k in ks], dtype=complex)


def test_adjoint_points_for_many_angles_and_degrees_is_within_its_bound(monkeypatch):
    """circle_adjoint_points built the table e^{-ikφ_j} (48·n·(L + 1) bytes): 10.7 s and 11.5 GiB at n = 10⁶,
    L = 256, and with 1 GiB available it refused n = 2·10⁵, L = 2000 (a 19 GB table).  Now a non-uniform FFT:
    each c_k within circle_adjoint_error·Σ|w_j| of a long-double sum, with half the points coincident (their
    kernel errors add up) and weights of both signs; c_0 summed as the direct path sums it; small inputs
    (≤ 2¹⁶ table entries) still the direct table, to the bit."""
    from meanfield import _memory

    monkeypatch.setattr(_memory, "available_bytes", lambda: 1 << 30)
    rng = np.random.default_rng(7)
    n, lmax = 200_000, 2000
    phi = rng.uniform(-np.pi, np.pi, n)
    phi[: n // 2] = 2.9       # coincident: the worst case of the transform's error
    w = rng.uniform(-0.5, 1.0, n) / n
    got = s.circle_adjoint_points(w, phi, lmax)
    from meanfield.sphere._circle import circle_adjoint_error
    ks = np.array([0, 1, 2, 3, 17, 256, 999, 1000, 1999, 2000])
    bound = circle_adjoint_error(n, lmax)[ks] * np.abs(w).sum()
    assert np.all(np.abs(got[ks] - _long_double_adjoint(w, phi, ks)) <= bound)
    assert np.all(bound < 1e-11 * np.abs(w).sum())           # not vacuous
    assert got[0] == np.sum(w.astype(complex))
    # the same below the switch, where the table is summed pairwise (as before)
    small_w, small_phi = w[:1000], phi[-1000:]
    k = np.arange(65)
    np.testing.assert_array_equal(s.circle_adjoint_points(small_w, small_phi, 64),
                                  np.sum(np.exp(-1j * k[:, None] * small_phi[None, :]) * small_w, axis=-1))
    assert circle_adjoint_error(1000, 64)[-1] == pytest.approx((2 * np.log2(1000) + 2 + 64 * np.pi) * 2.0 ** -52)
