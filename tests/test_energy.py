"""meanfield._energy._energy: E_{β,D} of every measure type, the uniform closed form, the first variation."""
import warnings

import numpy as np
import pytest
from scipy import special

import meanfield as mf
from meanfield._energy import dissipation, energy_estimate, first_variation, first_variation_gradient, uniform_energy

BETA = 2.0


# ----------------------------------------------------------------------------------------------
# closed forms of the reference values (docs/validation.md; β = 2), each by an exact method, to 1e-12

def test_uniform_circle():
    e = mf.energy(mf.Density.uniform(0, d=2), BETA)
    assert e == pytest.approx(special.i0(BETA) / (2 * BETA), abs=1e-12)
    assert round(e, 6) == 0.569896


def test_uniform_sphere():
    e = mf.energy(mf.Density.uniform(0, d=3), BETA)
    assert e == pytest.approx(np.sinh(BETA) / (2 * BETA ** 2), abs=1e-12)
    assert round(e, 6) == 0.453358


@pytest.mark.parametrize("d", [2, 3, 5])
def test_dirac(d):
    x = np.zeros((1, d))
    x[0, -1] = 1.0
    e = mf.energy(mf.Particles(x), BETA)
    assert e == pytest.approx(np.exp(BETA) / (2 * BETA), abs=1e-12)
    assert round(e, 6) == 1.847264


@pytest.mark.parametrize("d", [2, 3, 5])
def test_antipodal_pair(d):
    x = np.zeros((2, d))
    x[0, 0], x[1, 0] = 1.0, -1.0
    e = mf.energy(mf.Particles(x), BETA)
    assert e == pytest.approx(np.cosh(BETA) / (2 * BETA), abs=1e-12)
    assert round(e, 6) == 0.940549


def test_anisotropic_uniform_circle():
    D = np.diag([1.0, 0.3])
    assert uniform_energy(1.0, D, 2) == pytest.approx(0.571327045227, abs=1e-10)
    # the same through the Density front door, and the product of Bessel functions derived here
    assert mf.energy(mf.Density.uniform(8, d=2), 1.0, D) == pytest.approx(0.571327045227, abs=1e-10)
    assert uniform_energy(1.0, D, 2) == pytest.approx(special.i0(0.65) * special.i0(0.35) / 2, abs=1e-15)


@pytest.mark.parametrize("d", [2, 3])
def test_uniform_energy_matches_grid_quadrature(d):
    """The series (any D, also non-symmetric) against an independent product quadrature."""
    rng = np.random.default_rng(4)
    D = rng.standard_normal((d, d))
    beta = 1.7
    if d == 3:
        g = mf.sphere.SphereGrid(48, 96)
        x, w = g.points.reshape(-1, 3), g.weights.ravel() / (4 * np.pi)
    else:
        x, w = mf.sphere.circle_points(256), np.full(256, 1 / 256)
    quad = w @ np.exp(beta * x @ D @ x.T) @ w / (2 * beta)
    assert uniform_energy(beta, D, d) == pytest.approx(quad, rel=1e-13)


@pytest.mark.parametrize("d", [2, 3, 4, 7])
def test_uniform_energy_identity_is_lambda0(d):
    assert uniform_energy(1.3, None, d) == pytest.approx(mf.funk_hecke(1.3, 0, d)[0] / 2.6, rel=1e-14)


def test_uniform_energy_takes_d_from_D_as_minimize_and_maximize_energy_do():
    # uniform_energy(1.0, diag(1, 1.05)) was refused: d defaulted to 3, "(the measure's dimension d=3)", with no measure
    D = np.diag([1.0, 1.05])
    assert uniform_energy(1.0, D) == uniform_energy(1.0, [1.0, 1.05]) == uniform_energy(1.0, D, 2)
    assert uniform_energy(1.0, D) == pytest.approx(0.640307544253, abs=1e-12)     # the S¹ tutorial's value
    assert uniform_energy(1.3) == uniform_energy(1.3, None, 3) and uniform_energy(1.3, 2.0) == uniform_energy(1.3, 2.0, 3)
    with pytest.raises(ValueError, match=r"shape \(3, 3\) \(the argument `d`=3\); got shape \(2, 2\)"):
        uniform_energy(1.0, D, d=3)


def test_uniform_energy_large_beta_is_finite_and_zero_matrix():
    assert np.isfinite(uniform_energy(300.0, np.diag([1.0, 0.5, 0.2]), 3))
    assert uniform_energy(2.0, 0.0, 3) == 1 / 4


# ----------------------------------------------------------------------------------------------
# the PSD singular case: measures on ker D have E = 1/(2β) exactly

def test_equator_measures_have_minimal_energy_exactly():
    rng = np.random.default_rng(0)
    phi = rng.uniform(0, 2 * np.pi, 50)
    x = np.stack([np.cos(phi), np.sin(phi), np.zeros_like(phi)], axis=1)
    p = mf.Particles(x, rng.dirichlet(np.ones(50)))
    D = np.diag([0.0, 0.0, 1.0])
    assert mf.energy(p, 0.7, D) == pytest.approx(1 / (2 * 0.7), rel=4e-16)   # Σw = 1 to rounding
    assert mf.classify(D).min_value(0.7) == 1 / (2 * 0.7)
    # off the equator E is strictly larger
    assert mf.energy(mf.Particles.uniform(50, 3), 0.7, D) > 1 / (2 * 0.7)


# ----------------------------------------------------------------------------------------------
# densities: Parseval against grid quadrature

def test_density_spectral_equals_quadrature_sphere():
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 2] + 0.3 * x[..., 0] * x[..., 1], 6)
    a = energy_estimate(rho, BETA)
    b = energy_estimate(rho, BETA, np.eye(3), method="quadrature")
    assert a.method == "exact" and b.method == "quadrature"
    assert abs(a.value - b.value) <= b.error_bound + 1e-15 * a.value


@pytest.mark.parametrize("c", [1.0, -0.6, 0.0])
def test_density_spectral_equals_quadrature_circle(c):
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 0] + 0.4 * (x[..., 0] ** 2 - x[..., 1] ** 2), 4, d=2)
    a = mf.energy(rho, BETA, c)
    b = energy_estimate(rho, BETA, c * np.eye(2) + 0 * np.eye(2), method="quadrature")
    assert a == pytest.approx(b.value, abs=1e-14)


def test_density_general_D_matches_particles_on_grid():
    """A band-limited density and the same density as weighted particles on a fine grid agree."""
    D = np.array([[1.0, 0.3, 0.0], [0.3, -0.4, 0.2], [0.0, 0.2, 0.8]])
    rho = mf.Density.from_function(lambda x: 1 + 0.4 * x[..., 1] * x[..., 2], 4)
    g = mf.sphere.SphereGrid(40, 80)
    w = g.weights.ravel() / (4 * np.pi) * rho.on_grid(g).ravel()
    p = mf.Particles(g.points.reshape(-1, 3), w)
    assert mf.energy(rho, 1.2, D) == pytest.approx(mf.energy(p, 1.2, D), rel=1e-13)


# ----------------------------------------------------------------------------------------------
# particles: the O(N) spectral sum against the pair sum, within its stated bound

@pytest.mark.parametrize("d,c,lmax", [(3, 1.0, 4), (3, 1.0, 8), (3, -0.5, 6), (3, 1.0, None), (2, 1.0, 4),
                                      (2, -0.5, 8), (2, 1.0, None)])
def test_particles_spectral_within_bound(d, c, lmax):
    p = mf.Particles.uniform(1500, d, seed=1)
    clustered = mf.Particles(np.concatenate([p.positions[:750], np.tile(p.positions[:1], (750, 1))]))
    for q in (p, clustered):
        s = energy_estimate(q, BETA, c, method="spectral", lmax=lmax)
        e = energy_estimate(q, BETA, c, method="pairs")
        assert s.method == "spectral" and e.method == "pairs"
        assert abs(s.value - e.value) <= s.error_bound
    if lmax is None:
        assert s.error_bound < 1e-11 * s.value


def test_particles_auto_uses_spectral_for_many_particles():
    p = mf.Particles.uniform(5000, 3, seed=2)
    s = energy_estimate(p, 1.0)
    assert s.method == "spectral"
    assert s.value == pytest.approx(energy_estimate(p, 1.0, method="pairs").value, abs=s.error_bound)


def test_energy_is_float_and_ignores_radii():
    p = mf.Particles.uniform(10, 3, radii=np.linspace(1, 2, 10))
    assert isinstance(mf.energy(p, 1.0), float)
    assert mf.energy(p, 1.0) == mf.energy(mf.Particles(p.positions), 1.0)


# ----------------------------------------------------------------------------------------------
# first variation and its gradient

def test_first_variation_integrates_to_twice_energy():
    rng = np.random.default_rng(3)
    p = mf.Particles.uniform(30, 4, seed=3)
    D = rng.standard_normal((4, 4))
    phi = first_variation(p, 1.1, D)
    assert p.weights @ phi == pytest.approx(2 * mf.energy(p, 1.1, D), rel=1e-13)


def test_first_variation_of_density_matches_spectral_formula():
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 2], 3)
    x = mf.Particles.uniform(7, 3, seed=5).positions
    # ∫ e^{β⟨x,y⟩}(1 + a z) dσ = λ_0 + a λ_1 z  (Funk–Hecke), divided by β
    lam = mf.funk_hecke(BETA, 1)
    a = rho.coeffs[1].real / np.sqrt(4 * np.pi) * np.sqrt(3)   # the z-coefficient of ρ
    expect = (lam[0] + a * lam[1] * x[:, 2]) / BETA
    assert first_variation(rho, BETA, None, x) == pytest.approx(expect, abs=1e-13)


@pytest.mark.parametrize("D", [np.array([[0.5, 0.2, 0.0], [0.2, -1.0, 0.3], [0.0, 0.3, 0.7]]),
                               np.array([[0.0, 1.0, 0.2], [0.0, 0.3, 0.0], [-0.4, 0.0, 0.5]])],   # not symmetric
                         ids=["symmetric", "nonsymmetric"])
def test_gradient_is_tangent_derivative_of_first_variation(D):
    p = mf.Particles.uniform(12, 3, seed=6)
    x = mf.Particles.uniform(5, 3, seed=7).positions
    g = first_variation_gradient(p, 1.3, D, x)
    assert np.max(np.abs(np.einsum("ij,ij->i", g, x))) < 1e-14
    np.testing.assert_allclose(first_variation_gradient(p, 1.3, D.T, x), g, rtol=0, atol=1e-14)
    h = 1e-5
    for i in range(3):                       # central differences along a tangent direction
        t = np.cross(x, np.eye(3)[i])
        t /= np.linalg.norm(t, axis=1)[:, None]
        xp = np.cos(h) * x + np.sin(h) * t
        xm = np.cos(h) * x - np.sin(h) * t
        fd = (first_variation(p, 1.3, D, xp) - first_variation(p, 1.3, D, xm)) / (2 * h)
        # O(h²)·|f‴| ~ 1e-10 plus rounding ε|f|/h ~ 1e-11 (observed 1.4e-11)
        assert np.einsum("ij,ij->i", g, t) == pytest.approx(fd, abs=1e-9)


def test_nonsymmetric_D_first_variation_symmetrizes():
    D = np.array([[0.0, 1.0], [0.0, 0.0]])
    p = mf.Particles.uniform(9, 2, seed=8)
    phi = first_variation(p, 1.0, D)
    phiT = first_variation(p, 1.0, D.T)
    assert phi == pytest.approx(phiT, rel=1e-14)
    assert mf.energy(p, 1.0, D) == pytest.approx(mf.energy(p, 1.0, D.T), rel=1e-14)


# ----------------------------------------------------------------------------------------------
# bad input: each message names the parameter

def test_bad_inputs():
    p = mf.Particles.uniform(5, 3)
    rho = mf.Density.uniform(2)
    with pytest.raises(ValueError, match="`beta`"):
        mf.energy(p, -1.0)
    with pytest.raises(TypeError, match="`beta`"):
        mf.energy(p, "2")
    with pytest.raises(ValueError, match="`D`"):
        mf.energy(p, 1.0, np.eye(2))
    with pytest.raises(ValueError, match="`D`"):
        mf.energy(p, 1.0, np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="`D`"):
        mf.energy(p, 1.0, float("inf"))
    with pytest.raises(ValueError, match="`D`.*3 numbers"):
        mf.energy(p, 1.0, [1.0, 2.0])
    # d numbers are the diagonal, as in a configuration file's [energy] table
    assert mf.energy(p, 1.0, [1.0, 0.5, 0.2]) == mf.energy(p, 1.0, np.diag([1.0, 0.5, 0.2]))
    with pytest.raises(ValueError, match="`method`"):
        mf.energy(p, 1.0, method="magic")
    with pytest.raises(ValueError, match="`method`"):
        mf.energy(p, 1.0, method="quadrature")
    with pytest.raises(ValueError, match="`method`"):
        mf.energy(rho, 1.0, method="pairs")
    with pytest.raises(ValueError, match="`method`"):
        mf.energy(p, 1.0, np.diag([1.0, 2.0, 3.0]), method="spectral")
    with pytest.raises(ValueError, match="`method`"):
        mf.energy(mf.Density.from_function(lambda x: 1 + x[..., 0], 2), 1.0, np.diag([1.0, 2, 3]), method="exact")
    with pytest.raises(ValueError, match="`tol`"):
        mf.energy(p, 1.0, tol=2.0)
    with pytest.raises(ValueError, match="`lmax`"):
        mf.energy(p, 1.0, method="spectral", lmax=0)
    with pytest.raises(TypeError, match="`measure`"):
        mf.energy(np.zeros((3, 3)), 1.0)
    with pytest.raises(ValueError, match="`d`"):
        uniform_energy(1.0, None, 1)
    with pytest.raises(ValueError, match="`points`"):
        first_variation(rho, 1.0)
    with pytest.raises(ValueError, match="`points`"):
        first_variation(p, 1.0, None, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="`points`"):
        first_variation_gradient(p, 1.0, None, 2 * np.eye(3))



@pytest.mark.parametrize("D", [np.float32(0.5), np.float16(0.5), 10 ** 400])
def test_a_numpy_scalar_D_gives_the_value_of_the_float_without_a_warning(D):
    # abs(np.float32(0.5)) > 1e100 cast 1e100 to float32: "RuntimeWarning: overflow encountered in cast" (an error
    # under -W error); the Python integer 10**400 raised "int too large to convert to float"
    p = mf.Particles.uniform(5, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if isinstance(D, int):
            with pytest.raises(ValueError, match="`D` must be finite"):
                mf.energy(p, 2.0, D)
        else:
            assert mf.energy(p, 2.0, D) == mf.energy(p, 2.0, float(D))


@pytest.mark.parametrize("points, error", [
    (np.array([[0.0, 0.0, 1.0 + 1.0j]]), ValueError),     # the imaginary part was dropped (a ComplexWarning only)
    ([[True, False, False]], TypeError),                   # read as the point (1, 0, 0)
    ("x", ValueError),                                      # numpy's "could not convert string to float"
])
def test_first_variation_points_must_be_real_numbers(points, error):
    p = mf.Particles.uniform(5, seed=1)
    for f in (first_variation, first_variation_gradient):
        with pytest.raises(error, match="`points`"):
            f(p, 2.0, None, points)


# ----------------------------------------------------------------------------------------------
# axisymmetric densities on any S^{d-1}

@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("c", [1.0, -0.7])
def test_zonal_energy_equals_the_full_density_energy(d, c):
    # Funk–Hecke on the Gegenbauer coefficients against Parseval on the SH/Fourier coefficients
    g = lambda t: np.exp(1.2 * t) + 0.3 * t ** 3   # noqa: E731
    zon = mf.ZonalDensity.from_function(g, 24, d=d)
    axis = np.eye(d)[-1]
    full = mf.Density.from_function(lambda x: g(x @ axis), 24, d=d)
    for beta in (0.5, 4.0):
        ez = energy_estimate(zon, beta, c)
        # exact but for its rounding and the multipliers' 2e-13 (scipy's ive)
        assert ez.method == "exact" and ez.error_bound < 1e-12 * ez.value
        assert ez.value == pytest.approx(mf.energy(full, beta, c), rel=1e-13)


def test_zonal_energy_with_a_general_D_on_s2_uses_quadrature():
    zon = mf.ZonalDensity.from_function(lambda t: 1 + 0.5 * t + 0.2 * t ** 2, 6, d=3)
    D = np.diag([0.5, 1.0, 1.5])
    full = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 2] + 0.2 * x[..., 2] ** 2, 6)
    est = energy_estimate(zon, 2.0, D)
    assert est.method == "quadrature"
    assert est.value == pytest.approx(mf.energy(full, 2.0, D), rel=1e-12)


@pytest.mark.parametrize("d", [4, 6])
def test_zonal_uniform_and_a_monte_carlo_check_in_higher_dimension(d):
    assert mf.energy(mf.ZonalDensity.uniform(8, d=d), 3.0) == pytest.approx(uniform_energy(3.0, None, d), rel=1e-13)
    # ρ(x) = 1 + a⟨x, e⟩ on S^{d-1}: E against an unbiased Monte-Carlo estimate (the U-statistic of
    # uniform samples weighted by ρ, diagonal removed), written out here with numpy alone
    a, beta, n = 0.8, 2.0, 2000
    zon = mf.ZonalDensity(np.array([1.0, a]), 1, d=d)
    rng = np.random.default_rng(d)
    reps = []
    for _ in range(10):
        x = rng.standard_normal((n, d))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        rho = 1 + a * x[:, -1]
        K = np.exp(beta * (x @ x.T))
        reps.append((rho @ K @ rho - np.sum(rho ** 2) * np.exp(beta)) / (n * (n - 1)) / (2 * beta))
    reps = np.array(reps)
    assert abs(mf.energy(zon, beta) - reps.mean()) < 5 * reps.std(ddof=1) / np.sqrt(len(reps))


def test_zonal_energy_refusals():
    zon = mf.ZonalDensity.uniform(4, d=5)
    with pytest.raises(ValueError, match="needs D = c·I"):
        mf.energy(mf.ZonalDensity(np.array([1.0, 0.5]), 1, d=5), 1.0, np.diag([1.0, 1, 1, 1, 2]))
    with pytest.raises(ValueError, match="for Particles"):
        mf.energy(zon, 1.0, method="pairs")


def test_an_alternating_sum_that_cancels_is_not_trusted():
    # D = −I: λ_ℓ(−β) = (−1)^ℓ λ_ℓ(β) cancel for a concentrated measure; the pair sum of positive terms does not
    x = np.random.default_rng(0).standard_normal((5000, 3)) * 0.15
    x[:, 2] += 1
    p = mf.Particles(x, normalize=True)
    pairs = mf.energy(p, 50.0, -1.0, method="pairs")
    auto = energy_estimate(p, 50.0, -1.0)
    assert auto.method == "pairs" and auto.value == pairs and 0 < pairs < 1e-15
    spectral = energy_estimate(p, 50.0, -1.0, method="spectral")     # asked for: its bound says it has no digit
    assert spectral.error_bound > abs(spectral.value - pairs)
    dens = mf.Density.from_function(lambda y: ((1 + y[..., 2]) / 2) ** 30, 30, normalize=True)
    with pytest.warns(mf.MeanfieldWarning, match="not determined in float64"):
        est = energy_estimate(dens, 100.0, -1.0)
    assert est.error_bound > abs(est.value)


def test_a_complex_D_and_a_classification_tolerance_outside_0_1_are_refused():
    with pytest.raises(ValueError, match="got a complex D"):
        mf.energy(mf.Particles.uniform(5), 1.0, 1j * np.eye(3))
    with pytest.raises(ValueError, match=r"`tol` must be in \(0, 1\); got tol=2"):
        mf.classify(np.eye(2), tol=2)


def test_kernel_sums_shift_each_row_by_its_own_largest_exponent():
    # a fixed worst-case shift β‖D‖ under- or overflowed values that fit in float64
    pole = mf.Particles([[0, 0, 1.0]])
    assert mf.energy(pole, 400.0, -1.0) == pytest.approx(np.exp(-400) / 800, rel=1e-12)       # was 0.0
    assert mf.first_variation(pole, 712.0, points=[[1.0, 0, 0]])[0] == pytest.approx(1 / 712, rel=1e-14)  # was inf
    assert mf.energy(pole, 712.0) == pytest.approx(np.exp(712 - np.log(1424)), rel=1e-12)     # was inf
    pair = mf.Particles([[0, 0, 1.0], [0, np.sqrt(3) / 2, -0.5]])     # ⟨x, y⟩ = −1/2: E = e^{400}/3200
    assert mf.energy(pair, 800.0, -1.0) == pytest.approx(np.exp(400 - np.log(3200)), rel=1e-12)


def test_a_sum_whose_largest_term_alone_overflows_is_not_returned_as_inf():
    # each row was scaled back by e^{shift}, which overflows beyond 709.78 although the row's sum (its largest term
    # times a weight < 1) does not: the energy e^{709.1} and the first variation e^{702.7} both returned inf
    poles = mf.Particles([[0, 0, 1.0], [0, 0, -1.0]])        # weights ½: E = cosh β/(2β), δE/δμ(north) = cosh β/β
    beta = 717.1
    assert mf.energy(poles, beta) == pytest.approx(np.exp(beta - np.log(4 * beta)), rel=1e-13)
    assert mf.first_variation(poles, 710.0, points=[[0, 0, 1.0]])[0] == pytest.approx(np.exp(710 - np.log(1420)),
                                                                                     rel=1e-13)


def test_a_density_energy_near_the_float64_limit_is_finite_with_a_finite_bound():
    # S¹, β = 720, D = diag(1, 0.9): E = 4.3e306 was inf (a row's e^{shift}), and once finite its bound was inf (λ₀ =
    # I₀(720) overflows), which warned that E is "not determined"; independent value: a log-sum-exp over a fine grid
    beta = 720.0
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 0], 4, d=2)
    phi = 2 * np.pi * np.arange(3000) / 3000
    c, s = np.cos(phi), np.sin(phi)
    logs = beta * (np.outer(c, c) + 0.9 * np.outer(s, s)) + np.log(np.outer(1 + 0.5 * c, 1 + 0.5 * c))
    true = np.exp(special.logsumexp(logs) - 2 * np.log(3000) - np.log(2 * beta))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = energy_estimate(rho, beta, [1.0, 0.9])
    assert est.value == pytest.approx(true, rel=1e-13)
    assert abs(est.value - true) <= est.error_bound < 1e-12 * true


def test_the_quadrature_bound_covers_the_rounding_amplified_by_an_indefinite_kernel():
    from scipy import special
    # ρ = 31((1+z)/2)^30 (mass 1), D = −I, β = 100: independent value from a positive double integral in
    # (z1, z2), the azimuth integrated in closed form: E = (1/2β) ∬ ρρ e^{−β z1 z2} I0(β s1 s2) dz1/2 dz2/2
    beta = 100.0
    z, wz = np.polynomial.legendre.leggauss(600)
    rho = 31 * ((1 + z) / 2) ** 30
    s = np.sqrt(1 - z ** 2)
    kern = np.exp(-beta * np.outer(z, z)) * special.i0(beta * np.outer(s, s))
    true = float((wz * rho / 2) @ kern @ (wz * rho / 2)) / (2 * beta)
    dens = mf.Density.from_function(lambda x: 31 * ((1 + x[..., 2]) / 2) ** 30, 30)
    with pytest.warns(mf.MeanfieldWarning, match="not determined in float64"):
        est = energy_estimate(dens, beta, -1.0, method="quadrature")
    assert abs(est.value - true) <= est.error_bound
    mild = energy_estimate(dens, 2.0, -1.0, method="quadrature")       # at β = 2 the same bound is small
    assert mild.error_bound < 1e-11 * abs(mild.value)                # still eleven digits


def test_a_spectral_particle_energy_without_a_correct_digit_is_warned_about():
    # method="spectral" returned −4.28e25 for a true 2.27e-46 (D = −I, a tight cluster) and 2.20 for 2.917
    # (lmax = 2 at β = 5), with bounds above the values but no warning; "auto" falls back to the pair sum
    rng = np.random.default_rng(0)
    x = np.array([0.0, 0.0, 1.0]) + 0.03 * rng.standard_normal((5000, 3))
    p = mf.Particles(x, normalize=True)
    with pytest.warns(mf.MeanfieldWarning, match=r"not determined in float64 .* truncated spectral sum"):
        est = mf.energy_estimate(p, 100.0, -1.0, method="spectral")
    assert not est.error_bound < abs(est.value)
    assert mf.energy(p, 100.0, -1.0) == pytest.approx(mf.energy(p, 100.0, -1.0, method="pairs"), rel=1e-12)
    with pytest.warns(mf.MeanfieldWarning, match="raise `lmax`"):
        mf.energy(mf.Particles.uniform(2000, seed=1), 5.0, method="spectral", lmax=2)


def test_the_first_variation_is_a_function_on_the_sphere():
    with pytest.raises(ValueError, match=r"`points` must be unit vectors"):
        mf.first_variation(mf.Particles.uniform(10, seed=0), 1.0, points=np.array([[0.0, 0.0, 2.0]]))


@pytest.mark.parametrize("beta, d", [(500.0, 1000), (300.0, 800), (100.0, 4096), (1600.0, 4096), (1501.0, 3000)])
def test_uniform_energy_in_high_dimension(beta, d):
    # the series coefficients h_k overflowed (inf − inf = NaN at β = 500, d = 1000; 1e-12 off at d = 4096);
    # for D = I the uniform energy is λ_0/(2β), here against a 50-digit sum of the ₀F₁ series
    from decimal import Decimal, localcontext
    with localcontext() as ctx:
        ctx.prec = 50
        z, total, term, k = Decimal(repr(beta)) ** 2 / 4, Decimal(0), Decimal(1), 0
        while term > Decimal("1e-40") * total or k < 5:
            total += term
            k += 1
            term *= z / (k * (Decimal(d) / 2 + k - 1))
        expected = float(total / (2 * Decimal(repr(beta))))
    # the ₀F₁ terms by their ratios: ⌊β⌋ + 80 rounded products, each within ε
    rel = 2 * (beta + 80) * np.finfo(float).eps
    assert mf.uniform_energy(beta, d=d) == pytest.approx(expected, rel=rel)
    # an orthogonal D (singular values all 1) gives the same; a rank-deficient one less
    if d <= 1000:           # (a dense 4096 × 4096 SVD would take seconds)
        q = np.linalg.qr(np.random.default_rng(1).standard_normal((d, d)))[0]
        assert mf.uniform_energy(beta, q, d=d) == pytest.approx(expected, rel=1e-12)
    assert mf.uniform_energy(beta, -np.ones(d), d=d) == mf.uniform_energy(beta, -1.0, d=d) == pytest.approx(expected, rel=rel)


def test_uniform_energy_beyond_float64_and_beyond_the_supported_range():
    # d ≤ 100: past β s_max = 1500 even the rank-one D's energy overflows; in high d it can still be finite
    # (β = 1600, d = 4096 above), so there the series is summed up to β s_max = 5000 and refused beyond
    assert mf.uniform_energy(1501.0, np.diag(np.r_[1.0, np.zeros(99)]), d=100) == np.inf
    assert mf.uniform_energy(4000.0, d=200) == np.inf
    with pytest.raises(ValueError, match=r"β·s_max = 6000 .* must be ≤ 5000 for the uniform energy in d = 200 .*got beta=6000"):
        mf.uniform_energy(6000.0, d=200)


@pytest.mark.parametrize("beta, d", [(5.0, 3), (30.0, 10), (300.0, 50)])
def test_uniform_energy_recurrence_and_convolution_agree(beta, d, monkeypatch):
    # low d multiplies the d series directly; high d (where that overflows) uses the recurrence for h_k/c_k
    from meanfield._energy import _energy
    D = np.diag(np.linspace(1.0, 0.2, d)) * np.where(np.arange(d) % 2, -1.0, 1.0)
    by_convolution = mf.uniform_energy(beta, D, d=d)
    monkeypatch.setattr(_energy, "_CONVOLUTION_MAX_D", 0)
    assert mf.uniform_energy(beta, D, d=d) == pytest.approx(by_convolution, rel=2e-13)


def test_circle_spectral_particle_energy_is_within_its_bound():
    """S¹, half the tokens in a tight cluster: the spectral sum against a long-double pair sum is within its bound
    (the Fourier sums' rounding was missing from it: error 3.9e-14 against a bound of 3.7e-15), and c_0 is the
    mass to an ulp (a BLAS matrix-vector product summed sequentially: 2e-13 off at n = 10⁵)."""
    from meanfield.sphere import circle_adjoint_points
    n = 5000
    x = np.random.default_rng(2).normal(size=(n, 2))
    x[: n // 2] = x[: n // 2] * 0.01 + [1.0, 0.0]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    est = mf.energy_estimate(mf.Particles(x), 0.1, 1.0, method="spectral")
    xl = x.astype(np.longdouble)
    pairs = sum(np.exp(np.longdouble(0.1) * (xl[a:a + 500] @ xl.T)).sum() for a in range(0, n, 500))
    reference = float(pairs / n / n / np.longdouble(0.2))
    assert abs(est.value - reference) <= est.error_bound < 1e-12 * reference     # λ_ℓ's 2e-13 included
    many = np.random.default_rng(3).uniform(-np.pi, np.pi, 100_000)
    assert abs(circle_adjoint_points(np.full(many.size, 1e-5), many, 4)[0] - 1.0) <= 2 * np.finfo(float).eps


def test_overflowing_beta_or_D_is_refused_not_answered():
    # the logits β⟨x, Dy⟩ and their differences overflowed: energy(P, 1e308) returned 0.0, classify(1e308·I) "zero"
    p = mf.Particles.uniform(5, seed=0)
    with pytest.raises(ValueError, match="`beta` must be ≤ 1e\\+100"):
        mf.energy(p, 1e308)
    with pytest.raises(ValueError, match="`D` must be finite, of magnitude ≤ 1e\\+100"):
        mf.energy(p, 1.0, 1e308)
    with pytest.raises(ValueError, match="`D` must have entries ≤ 1e\\+100"):
        mf.classify(np.eye(3) * 1e308)
    with pytest.raises(ValueError, match="`D` must be"):
        mf.classify([["a", "b"], ["c", "d"]])
    assert mf.classify(np.eye(3) * 1e99).kind == "positive definite"


@pytest.mark.parametrize("beta", [5.0, 20.0])
def test_the_exact_bound_covers_the_error_of_the_funk_hecke_multipliers(beta):
    # ρ = 1 + x₃/2 has degrees 0 and 1 only: E = (λ₀ + λ₁/12)/(2β) with the closed forms λ₀ = sinh β/β and
    # λ₁ = (β cosh β − sinh β)/β² (no cancellation at these β); scipy's ive, behind λ_ℓ on S², is off by
    # 8e-15 at β = 5 and 2.5e-14 at β = 20, which the bound (rounding of the sum alone) missed 4–14×
    lam0 = np.sinh(beta) / beta
    lam1 = (beta * np.cosh(beta) - np.sinh(beta)) / beta ** 2
    exact = (lam0 + lam1 / 12) / (2 * beta)
    for rho in (mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 2], 1),
                mf.ZonalDensity.from_function(lambda t: 1 + 0.5 * t, 1, d=3)):
        est = energy_estimate(rho, beta)
        assert est.method == "exact"
        assert abs(est.value - exact) <= est.error_bound
        assert est.error_bound <= 1e-12 * exact


@pytest.mark.parametrize("d", [2, 3])
def test_a_density_quadrature_beyond_reach_is_refused_before_any_work(d, monkeypatch):
    # β‖D‖ = 3e6 asked for 1.5e8 nodes on S² (an O(n³) Gauss–Legendre rule, then 2e16 kernel pairs): it ran for
    # hours; now a ValueError naming β before the grid or a pair sum is formed
    import meanfield._energy._energy as en

    def started(*args, **kwargs):
        raise AssertionError("the quadrature started")
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., -1], 2, d=d)
    monkeypatch.setattr(en, "pair_energy", started)
    monkeypatch.setattr(en, "kernel_sums", started)
    monkeypatch.setattr(en.sh, "SphereGrid", started)
    D = np.diag(np.arange(1.0, d + 1))
    beta = 1e6 if d == 3 else 1e8           # S¹: 1.2e5 nodes, 1.4e10 pairs
    with pytest.raises(ValueError, match=r"`beta`·‖D‖₂ = .* too large for the grid quadrature"):
        mf.energy(rho, beta, D)
    with pytest.raises(ValueError, match="too large for the grid quadrature"):
        mf.first_variation(rho, beta, D, points=np.eye(d))


_POSITIVE = lambda x: 1 + 0.5 * x[..., 2]                                 # noqa: E731
_SIGNED = lambda x: 0.3 + x[..., 0] * x[..., 2] + 0.2 * x[..., 0]         # negative near ±e₁ too  # noqa: E731
_NONSYMMETRIC = np.array([[1.0, 0.1, 0.0], [0.0, 0.9, 0.0], [0.05, 0.0, 0.8]])


@pytest.mark.parametrize("f, beta, D", [(_POSITIVE, 800.0, np.diag([1.0, 0.9, 0.8])),
                                        (_POSITIVE, 400.0, np.diag([1.0, 1.5, 2.0])),
                                        (_POSITIVE, 800.0, np.diag([1.0, -0.5, 0.3])),
                                        (_SIGNED, 800.0, _NONSYMMETRIC)])
def test_an_energy_beyond_float64_is_found_before_the_quadrature_pair_sum(f, beta, D, monkeypatch):
    # β‖D‖ = 800: the pair sum over the 36450 grid nodes (and for an indefinite D a second one, for the rounding
    # bound) ran 15–50 s only to return inf (or NaN, the signed density: rows of both signs overflowed); a lower
    # bound from the pairs of 1024 nodes near the kernel's peak shows it first.  With D = diag(1, 1.5, 2) it had
    # also warned about "an indefinite D"
    import meanfield._energy._energy as en

    def full_sum(*args, **kwargs):
        raise AssertionError("the quadrature's pair sum started")
    rho = mf.Density.from_function(f, 8)
    monkeypatch.setattr(en, "pair_energy", full_sum)
    monkeypatch.setattr(en, "kernel_sums", full_sum)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert mf.energy(rho, beta, D) == np.inf
    assert [str(w.message) for w in record] == [
        f"E_(β,D) exceeds the float64 range at beta={beta!r} (it grows like e^β): returned inf."]
    from meanfield._energy._energy import EnergyEstimate, _undetermined_warning
    with pytest.warns(mf.MeanfieldWarning, match="indefinite"):      # a finite value without a digit: as before
        _undetermined_warning(EnergyEstimate(1.0, 2.0, "quadrature"))


def test_energy_estimate_fields_are_plain_floats():
    """The estimate's value and bound are Python floats, as documented (its repr showed np.float64(…))."""
    est = energy_estimate(mf.Density.random(8, seed=0), BETA)
    assert type(est.value) is float and type(est.error_bound) is float
    assert "np.float64" not in repr(est)


@pytest.mark.parametrize("D", [np.diag([1.0, 0.9, 0.8]), np.diag([1.0, -0.5, 0.3]), _NONSYMMETRIC,
                               np.diag([1.0, 0.999, 0.998])])
@pytest.mark.parametrize("f", [_POSITIVE, _SIGNED])
def test_the_overflow_test_bounds_the_quadrature_pair_sum_from_below(f, D):
    from meanfield._energy._energy import _density_nodes, _log_pair_sum_lower
    from meanfield._energy._kernel import pair_energy

    beta = 40.0
    pts, sigma, values = _density_nodes(mf.Density.from_function(f, 4), beta, D)
    w = sigma * values
    S = 2 * beta * pair_energy(pts, w, beta, D)
    for k in (16, 256, len(w)):
        lower = _log_pair_sum_lower(pts, w, beta, D, k)
        assert lower == -np.inf if S <= 0 else lower <= np.log(S) + 1e-13
    if f is _POSITIVE:                                    # every pair: the sum itself
        assert _log_pair_sum_lower(pts, w, beta, D, len(w)) == pytest.approx(np.log(S), abs=1e-12)


@pytest.mark.parametrize("factor, early", [(0.25, False), (0.55, False), (1.5, None), (4.0, True), (1e10, True)])
def test_the_overflow_test_agrees_with_the_pair_sum_on_both_sides_of_the_limit(factor, early):
    # ρ scaled so that E = factor·(largest float64), at β = 50 (a 2738-node grid): below the limit the value is
    # the pair sum's, bit for bit; above it inf, decided early (True) or by the pair sum itself (None: within the
    # factor 2 the early test leaves to it)
    from meanfield._energy._energy import _density_nodes, _overflows
    from meanfield._energy._kernel import pair_energy

    beta, D = 50.0, np.diag([1.0, 0.9, 0.8])
    rho = mf.Density.from_function(_POSITIVE, 8)
    scale = np.sqrt(np.finfo(float).max / mf.energy(rho, beta, D)) * np.sqrt(factor)
    rho = rho.with_coeffs(scale * rho.coeffs)
    pts, sigma, values = _density_nodes(rho, beta, D)
    w = sigma * values
    with np.errstate(over="ignore"):
        full = pair_energy(pts, w, beta, D)
    if early is not None:
        assert _overflows(pts, w, beta, D) is early
    if factor < 1:
        assert mf.energy(rho, beta, D) == full < np.inf
    else:
        assert full == np.inf
        with pytest.warns(mf.MeanfieldWarning, match="exceeds the float64 range"):
            assert mf.energy(rho, beta, D) == np.inf


@pytest.fixture(scope="module")
def many():
    return mf.Particles.uniform(300_000, seed=0)


@pytest.mark.parametrize("tool", ["energy", "first_variation", "first_variation_gradient", "dissipation",
                                  "stationary", "stationary of a Model"])
def test_a_direct_sum_over_too_many_particles_warns_with_its_cost_first(tool, many, monkeypatch):
    # 3·10⁵ particles, D ≠ c·I (no O(N) path): one direct sum over 9e10 pairs, 5–13 min here, without a word
    import meanfield._attention as attention
    import meanfield._energy._energy as en

    def started(*args, **kwargs):
        raise AssertionError("the O(N²) sum started")
    for module, name in ((en, "pair_energy"), (en, "kernel_sums"), (attention, "_run_block_groups")):
        monkeypatch.setattr(module, name, started)
    D = np.diag([1.0, 0.9, 0.8])
    calls = {"energy": lambda: mf.energy(many, 1.0, D), "first_variation": lambda: mf.first_variation(many, 1.0, D),
             "first_variation_gradient": lambda: mf.first_variation_gradient(many, 1.0, D),
             "dissipation": lambda: dissipation(many, 1.0, D), "stationary": lambda: mf.stationary(many, 1.0, D),
             "stationary of a Model": lambda: mf.stationary(many, mf.Model(1.0))}
    with warnings.catch_warnings():
        warnings.simplefilter("error", mf.MeanfieldWarning)
        with pytest.raises(mf.MeanfieldWarning, match=r"N=300000 particles of `measure`: 1 direct sum over "
                                                      r"300000×300000 = 9e\+10 pairs, expected ~[\d.]+ min .* N ≤ \d+"):
            calls[tool]()


def test_a_direct_sum_whose_memory_would_not_fit_is_refused(monkeypatch):
    import meanfield._energy._energy as en
    import meanfield._memory as memory

    def started(*args, **kwargs):
        raise AssertionError("the O(N²) sum started")
    many16 = mf.Particles.uniform(300_000, d=16, seed=0)
    monkeypatch.setattr(memory, "available_bytes", lambda: 100 << 20)
    monkeypatch.setattr(en, "pair_energy", started)
    with pytest.raises(mf.InsufficientMemoryError, match=r"the energy's pair sum over the N=300000 particles of "
                                                         r"`measure` \(d=16\) needs about 0.17 GiB .* at most about N="):
        mf.energy(many16, 1.0, np.linspace(1.0, 0.5, 16))


@pytest.mark.parametrize("measure", [mf.Particles(np.eye(3)), mf.Density.uniform(4), mf.Density.random(6, seed=1),
                                     mf.ZonalDensity.uniform(4, d=5), mf.ZonalDensity([1.0, 0.0, 0.3], 2, d=5)],
                         ids=["pairs", "closed-form", "exact", "zonal-uniform", "zonal-no-degree-1"])
def test_an_energy_beyond_float64_has_an_infinite_error_bound(measure):
    """energy_estimate documents "inf with a value inf"; the pair sum and the closed form reported 0.0, and the zonal
    Funk–Hecke sum NaN (λ_ℓ = inf times a zero coefficient), warned about as "an indefinite D" with D = I."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        est = energy_estimate(measure, 1000.0)
    assert est.value == np.inf and est.error_bound == np.inf


@pytest.mark.parametrize("measure", [mf.Particles.uniform(4), mf.Density.uniform(4), mf.ZonalDensity.uniform(4)],
                         ids=["pairs", "closed-form", "zonal"])
@pytest.mark.parametrize("kw, error, match", [(dict(lmax=-1), ValueError, "`lmax` must be an integer >= 1"),
                                              (dict(lmax="a"), TypeError, "`lmax` must be an integer"),
                                              (dict(tol=2.0), ValueError, r"`tol` must be in \(0, 1\)")])
def test_energy_estimate_checks_lmax_and_tol_on_every_path(measure, kw, error, match):
    """The documented ValueError for an invalid tol or lmax: the paths that do not use them returned a value."""
    with pytest.raises(error, match=match):
        energy_estimate(measure, 1.0, **kw)


@pytest.mark.parametrize("beta", [1e4, 1e5])
def test_an_energy_beyond_float64_warns_once_in_its_own_words(beta):
    """The pair sum's last scaling let numpy's "overflow encountered in exp" RuntimeWarning out beside the package's
    own warning (a Dirac at β = 1e5)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert mf.energy(mf.Particles([[0.0, 0.0, 1.0]]), beta) == np.inf
    assert [type(w.message) for w in caught] == [mf.MeanfieldWarning], [str(w.message) for w in caught]


@pytest.mark.parametrize("beta", [1e-300, 1e-200, 1e-155])
@pytest.mark.parametrize("D, d", [(None, 3), ([1.0, 2.0], 2), (None, 200), ([1e-100, 1e-100], 2)])
def test_uniform_energy_at_a_tiny_beta_is_one_over_two_beta(beta, D, d):
    """2βE = 1 + O(β²).  The series took log(z²/4) with z² underflowed to 0 (z = β s_max ≲ 1e-154): 0·log 0 made the
    closed form NaN (energy of Density.uniform with error bound 0), and the high-d sum returned e^{−log 2β}, off
    by 3e-14 at β = 1e-300."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # numpy's "invalid value" warning came with it
        value = mf.uniform_energy(beta, D, d)
        assert value * 2 * beta == pytest.approx(1.0, rel=4 * np.finfo(float).eps)
        if d == 3:
            assert mf.energy(mf.Density.uniform(4), beta) == value


@pytest.mark.parametrize("beta", [1e-300, 1e-100, 1e-20])
def test_pair_sums_at_a_tiny_beta_are_exact_to_rounding(beta):
    """At β‖D‖ ≪ ε the kernel is 1 and E = (Σa)²/(2β).  The pair sum multiplied by e^{−log 2β}, off by |log 2β|·ε
    (3e-14 at β = 1e-300): the Dirac missed 1/(2β), and the quadrature of a density its own error bound (2e-15)."""
    assert mf.energy(mf.Particles([[0.0, 0.0, 1.0]]), beta) == 1 / (2 * beta)
    rho = mf.Density.random(4, seed=0)
    est = energy_estimate(rho, beta, [1.0, 2.0, 3.0])
    assert est.method == "quadrature"
    assert abs(est.value - rho.mass() ** 2 / (2 * beta)) <= est.error_bound


def test_the_spectral_bound_covers_the_transforms_error(monkeypatch):
    # with ducc0's accuracy loosened to 1e-4 (module constant _NUFFT_EPS), the spectral energy of clustered particles
    # moves from the exact pair sum by ~2e-7, far above the kernel truncation and rounding parts of its bound (~2e-12):
    # only the transforms' part 2ε λ_0 Σ power covers it.  Dropping that part passed every test, run at ε = 1e-13
    import meanfield._energy._energy as en
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 3))
    x[:1500] = [0, 0, 1] + 0.1 * rng.standard_normal((1500, 3))
    p = mf.Particles(x / np.linalg.norm(x, axis=1, keepdims=True))
    exact = mf.energy_estimate(p, 2.0, method="pairs").value
    monkeypatch.setattr(en, "_NUFFT_EPS", 1e-4)
    est = mf.energy_estimate(p, 2.0, method="spectral")
    assert 1e-9 < abs(est.value - exact) <= est.error_bound


def test_uniform_energy_of_a_rank_one_d_in_d_100_up_to_the_float64_limit():
    # D = z e₁e₁ᵀ on S^99 at z = 1040: 2βE = E_x λ_0(z x₁), λ_0(a) = Γ(d/2)(2/a)^{d/2−1} I_{d/2−1}(a), a 1-D integral
    # against the law ∝ (1 − t²)^{(d−3)/2} of x₁, done by quad in log scale: E = 1.87e307, finite (it overflows from
    # z ≈ 1041).  A shortcut "inf beyond z = 1000" for d ≤ 100 passed every test; the reference is good to ~1e-13
    # (quad's 1e-13, and e^x of an exponent ~700 to ~700 ulp), the series to a few e-13 (observed 4.5e-13)
    from scipy import integrate
    d, z = 100, 1040.0
    nu = d / 2 - 1

    def log_lam0(a):
        return special.gammaln(d / 2) + nu * np.log(2 / a) + np.log(special.ive(nu, a)) + a
    shift = log_lam0(z)
    f = lambda t: np.exp(log_lam0(z * t) - shift + (d - 3) / 2 * np.log1p(-t * t))      # noqa: E731
    num = 2 * integrate.quad(f, 1e-12, 1, points=[1 - 48.5 / z], epsabs=0, epsrel=1e-13, limit=500)[0]
    log_e = np.log(num) - special.betaln(0.5, (d - 1) / 2) + shift - np.log(2.0)
    D = np.zeros(d)
    D[0] = z
    assert uniform_energy(1.0, D, d) == pytest.approx(np.exp(log_e), rel=2e-12)


@pytest.mark.parametrize("b", [1e-6, 1e-3, 0.3, 0.999, 1.0, 4.0, 40.0])
def test_the_variation_multiplier_on_s2_is_lambda0_less_one_without_cancellation(b):
    # e^{−b}(λ_0(b) − 1): against the Funk–Hecke λ_0 where the difference does not cancel much (b ≥ 0.3: ≤ 2 digits
    # lost), and against the two leading terms b²/6 + b⁴/120 of the series where it does
    from meanfield._energy._kernel import scaled_mean_variation_s2
    from meanfield.sphere import funk_hecke

    got = scaled_mean_variation_s2(b)
    if b >= 0.3:
        assert got == pytest.approx(funk_hecke(b, 0, 3, scaled=True)[0] - np.exp(-b), rel=1e-14)
    else:
        assert got == pytest.approx(np.exp(-b) * (b ** 2 / 6 + b ** 4 / 120), rel=b ** 4 + 1e-15)


# ----------------------------------------------------------------------------------------------
# EnergyResult built by hand (the way to store a solver's result with mf.save)

def _minimizer_s2():
    return mf.minimize_energy(1.0, [0.5, 1.0, 1.0], level=1)


@pytest.mark.parametrize("args, error, match", [
    (("maximise", 1.0, None, 3), ValueError, "`task` must be one of"),
    (("minimize", -1.0, None, 3), ValueError, "`beta` must be finite and > 0"),
    (("minimize", 1.0, np.eye(2), 3), ValueError, r"`D` must be .* shape \(3, 3\)"),
    (("minimize", 1.0, [[1, 2, 0], [0, 1, 0], [0, 0, 1.0]], 3), ValueError, "`D` must be symmetric"),
    (("minimize", 1.0, np.eye(2), 2), ValueError, r"`solution` lives on S\^2 \(d=3\) but d=2"),
    (("maximize", 1.0, None, 3), TypeError, "`solution` of task='maximize' must be a MaximizingParticles"),
])
def test_energy_result_refuses_a_problem_its_solution_does_not_solve(args, error, match):
    """EnergyResult took its fields unchecked: β = −1, a 2 × 2 D with d = 3, a non-symmetric D, an FEDensity filed
    under d = 2 were saved and loaded back as such, and task='maximise' or an FEDensity as a maximizer failed
    only inside save, with AttributeError: 'FEDensity' object has no attribute 'message'."""
    with pytest.raises(error, match=match):
        mf.EnergyResult(*args, _minimizer_s2())


def test_energy_result_stores_D_as_the_solvers_read_it(tmp_path):
    """D given as the solvers take it (None, a diagonal) was stored as given: None failed in save with h5py's
    "Object dtype dtype('O') has no native HDF5 equivalent", a diagonal was stored with shape (3,), not (d, d)."""
    rho = _minimizer_s2()
    diagonal = mf.EnergyResult("minimize", 1.0, [0.5, 1.0, 1.0], 3, rho)
    np.testing.assert_array_equal(diagonal.D, np.diag([0.5, 1.0, 1.0]))
    back = mf.load(mf.save(diagonal, tmp_path / "min.h5"))
    np.testing.assert_array_equal(back.D, np.diag([0.5, 1.0, 1.0]))
    assert back.value == rho.value and back.success
    np.testing.assert_array_equal(mf.EnergyResult("minimize", 1.0, None, 3, rho).D, np.eye(3))


def test_energy_result_of_a_hand_built_fe_density_has_a_value_and_a_message(tmp_path):
    """An FEDensity built by hand (no value, no certificate) as a "minimize" solution: `message`, and with it
    `meanfield info` on its file, raised AttributeError: 'NoneType' object has no attribute 'message', and its
    value read nan."""
    space = mf.FESpace(mf.SphereMesh.icosahedral(1))
    rho = mf.FEDensity(space, np.ones(space.ndof))
    result = mf.load(mf.save(mf.EnergyResult("minimize", BETA, None, 3, rho), tmp_path / "fe.h5"))
    assert not result.success and "no certificate" in result.message
    assert result.value == mf.energy(rho, BETA)
    assert result.value == pytest.approx(np.sinh(BETA) / (2 * BETA ** 2), rel=1e-4)    # its mass is 1 to 1.2e-5


@pytest.mark.parametrize("call", [lambda m: mf.energy(m, 1.0), lambda m: mf.energy_estimate(m, 1.0),
                                  lambda m: mf.stationary(m, 1.0)])
def test_a_non_measure_is_refused_with_every_measure_type_the_function_takes(call):
    """energy() and stationary() take a ZonalDensity, but their TypeError listed "Particles, Density or FEDensity"."""
    with pytest.raises(TypeError, match="`measure` must be a meanfield Particles, Density, ZonalDensity or FEDensity"):
        call(np.ones(3))


@pytest.mark.parametrize("beta", [1.0, 40.0, 200.0])
def test_the_pair_sum_bounds_its_rounding(beta):
    """The pair sum reported error_bound = 0.0 ("exact to rounding"), but its exponents β⟨x, Dy⟩ are rounded and
    e^{·} amplifies that by β‖D‖: against a long-double sum of the same stored particles it was off by 15 ulps at
    β = 40 and 62 ulps at β = 200 (1 ulp at β = 1).  The bound now covers the error, and stays a rounding bound."""
    D = np.diag([1.0, 0.7, -0.3])
    for seed in range(5):
        p = mf.Particles.uniform(40, seed=seed)
        est = energy_estimate(p, beta, D, method="pairs")
        x, w = p.positions.astype(np.longdouble), p.weights.astype(np.longdouble)
        reference = w @ np.exp(np.longdouble(beta) * (x @ D.astype(np.longdouble) @ x.T)) @ w / (2 * np.longdouble(beta))
        assert float(abs(est.value - reference)) <= est.error_bound < 1e-11 * est.value


def test_the_pair_sum_of_coincident_particles_bounds_its_error():
    """5000 particles at one point, β = 1, D = −I (the spectral sum cancels, so "auto" takes the pair sum): E is
    e^{−1}/2 to 1e-16 for the stored weights (5000·fl(1/5000) = 1 + 5e-17), and the pair sum was 33 ulps off with
    bound 0."""
    x = np.zeros((5000, 3))
    x[:, 2] = 1.0
    est = energy_estimate(mf.Particles(x), 1.0, -1.0)
    assert est.method == "pairs"
    assert abs(est.value - np.exp(-1.0) / 2) <= est.error_bound < 1e-11 * est.value


@pytest.mark.parametrize("c", [1.0, -2.0])
def test_first_variation_of_a_zonal_density_is_that_of_the_same_density_on_s2(c):
    """first_variation and first_variation_gradient refused a ZonalDensity ("must be a meanfield Particles, Density
    or FEDensity") although energy() and stationary() take it.  On S² the same axisymmetric density as a
    band-limited Density gives both independently (grid quadrature against Funk–Hecke): equal to rounding
    (measured 1.6e-15 relative)."""
    zonal = mf.ZonalDensity.from_function(lambda s: 1 + 0.5 * s + 0.3 * s ** 3, 8, d=3, normalize=True)
    same = mf.Density.from_function(zonal.evaluate, 8)
    p = np.random.default_rng(0).normal(size=(5, 3))
    p /= np.linalg.norm(p, axis=1)[:, None]
    phi, ref = first_variation(zonal, 1.3, c, p), first_variation(same, 1.3, c, p)
    assert np.max(np.abs(phi - ref)) <= 1e-14 * np.max(np.abs(ref))
    g, ref = first_variation_gradient(zonal, 1.3, c, p), first_variation_gradient(same, 1.3, c, p)
    assert np.max(np.abs(g - ref)) <= 1e-14 * np.max(np.abs(ref))


def test_first_variation_gradient_of_a_zonal_density_in_high_dimension_is_tangent_and_the_derivative():
    """On S⁴ (no Density to compare with): the gradient is tangent and its component along a tangent u is the
    central difference of the first variation (error O(h²) ≈ 1e-12 at h = 1e-6, plus rounding/h ≈ 1e-10)."""
    rho = mf.ZonalDensity.from_function(lambda s: 1 + 0.5 * s + 0.2 * s ** 2, 6, d=5, normalize=True)
    rng = np.random.default_rng(1)
    x = rng.normal(size=5)
    x /= np.linalg.norm(x)
    u = rng.normal(size=5)
    u -= (u @ x) * x
    u /= np.linalg.norm(u)
    g = first_variation_gradient(rho, 1.0, None, [x])[0]
    assert abs(g @ x) < 1e-15
    h = 1e-6
    f = [first_variation(rho, 1.0, None, [(x + s * h * u) / np.linalg.norm(x + s * h * u)])[0] for s in (1, -1)]
    assert g @ u == pytest.approx((f[0] - f[1]) / (2 * h), abs=1e-9)
    with pytest.raises(ValueError, match="`D` must be c·I"):
        first_variation(rho, 1.0, [1.0, 2.0, 3.0, 4.0, 5.0], [x])


def test_saving_a_bare_solver_result_says_how_to_wrap_it(tmp_path):
    """mf.save(minimize_energy(...), path) said only "`trajectory` must be a Trajectory or an EnergyResult; got
    MinimizingDensity", with no word of how a solver's result becomes an EnergyResult."""
    rho = mf.minimize_energy(1.0, [1.0, 1.05], lmax=8)
    with pytest.raises(TypeError, match=r"mf\.EnergyResult\('minimize', beta, D, d, result\)"):
        mf.save(rho, tmp_path / "min.h5")


def test_circle_spectral_energy_of_many_tokens_at_high_degree_is_within_its_bound(monkeypatch):
    """S¹, 6·10⁴ tokens at 300 distinct angles (200 coincident tokens each: the worst case of the non-uniform
    FFT), lmax = 600 with 1 GiB available: the Fourier table took 48·n·(L + 1) = 1.7 GB and was refused.  The
    spectral energy is within its bound of a long-double pair sum over the distinct angles, the bound not
    vacuous."""
    from meanfield import _memory

    monkeypatch.setattr(_memory, "available_bytes", lambda: 1 << 30)
    rng = np.random.default_rng(11)
    theta = np.concatenate([rng.normal(0.4, 0.05, 150), rng.uniform(-np.pi, np.pi, 150)])
    y = np.stack([np.cos(theta), np.sin(theta)], axis=-1)
    mult = rng.integers(100, 300, theta.size)
    x = np.repeat(y, mult, axis=0)
    est = mf.energy_estimate(mf.Particles(x), 20.0, 1.0, method="spectral", lmax=600)
    yl, wl = y.astype(np.longdouble), mult.astype(np.longdouble) / mult.sum()
    reference = float(wl @ np.exp(np.longdouble(20.0) * (yl @ yl.T)) @ wl / np.longdouble(40.0))
    assert abs(est.value - reference) <= est.error_bound < 1e-11 * reference
