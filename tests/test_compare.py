import numpy as np
import pytest

import meanfield as mf
from meanfield._compare import mmd, sobolev_distance


def test_mmd_equals_the_direct_pair_sum():
    beta = 2.0
    a, b = mf.Particles.uniform(300, seed=1), mf.Particles.uniform(200, seed=2)

    def k(x, y):
        return x.weights @ np.exp(beta * x.positions @ y.positions.T) @ y.weights

    direct = np.sqrt(k(a, a) - 2 * k(a, b) + k(b, b))
    assert abs(mmd(a, b, beta) - direct) < 1e-12 * direct


@pytest.mark.parametrize("d", [2, 3])
def test_dirac_against_uniform_has_the_closed_form(d):
    L, s = 20, 1.0
    dirac = mf.Particles(np.eye(d)[:1])
    ell = np.arange(1, L + 1)
    mult = (2 * ell + 1.0) if d == 3 else 2.0 * np.ones(L)     # Σ_m |Y_ℓm|² normalized to σ
    exact = np.sqrt(np.sum(mult * (1 + ell * (ell + d - 2.0)) ** (-s)))
    assert abs(sobolev_distance(dirac, mf.Density.uniform(L, d), s) - exact) < 1e-12 * exact


@pytest.mark.parametrize("d", [2, 3])
def test_the_documented_norm_weights_the_l2_sigma_norm_of_each_degree(d):
    # the docstring's formula: Σ_ℓ (1 + ℓ(ℓ + d − 2))^{-s} ‖(μ − ν)_ℓ‖²_{L²(σ)}; at s → 0 the L²(σ) norm itself
    rho, L = mf.Density.random(12, d=d, seed=1), 12
    if d == 3:
        grid = mf.sphere.SphereGrid.for_bandlimit(L)
        diff = rho.on_grid(grid) - 1.0
        l2 = grid.integrate(diff ** 2) / (4 * np.pi)
    else:
        l2 = np.mean((rho.evaluate(mf.sphere.circle_points(64)) - 1.0) ** 2)
    assert sobolev_distance(rho, mf.Density.uniform(L, d), s=1e-300) ** 2 == pytest.approx(l2, rel=1e-13)


def test_iid_samples_converge_like_inverse_sqrt_n():
    dens = mf.Density.random(12, seed=1)
    ns = np.array([500, 2000, 8000, 32000])
    dist = [np.mean([sobolev_distance(dens, mf.sample_density(dens, int(n), seed=k)) for k in range(4)]) for n in ns]
    slope = np.polyfit(np.log(ns), np.log(dist), 1)[0]
    assert abs(slope + 0.5) < 0.1, slope


def test_errors():
    with pytest.raises(ValueError, match="`lmax`"):
        sobolev_distance(mf.Particles.uniform(3), mf.Particles.uniform(3))
    with pytest.raises(ValueError, match=r"same sphere; got d = \[2, 3\]"):
        sobolev_distance(mf.Density.uniform(4), mf.Density.uniform(4, d=2))
    with pytest.raises(ValueError, match="`s`"):
        sobolev_distance(mf.Density.uniform(4), mf.Density.uniform(4), s=0)


def test_a_difference_of_mass_counts_at_degree_zero():
    u = mf.Density.uniform(6)
    # μ − ν = σ (the normalized uniform measure): only its ℓ = 0 term, of weight 1 and power 1
    assert mf.sobolev_distance(mf.Density(2 * u.coeffs, 6), u) == pytest.approx(1.0, rel=1e-14)
    p = mf.Particles.uniform(50, seed=3)
    assert mf.sobolev_distance(p, p, lmax=8) == 0.0       # the transforms give the same bits on every call


@pytest.mark.parametrize("call, match", [
    (lambda u: mf.sobolev_distance(u, np.zeros(3)), r"`nu` must be a Density, ZonalDensity, Particles or a non-empty "
                                                    r"tuple"),
    (lambda u: mf.mmd((), u, 1.0), r"`mu` must be a Density, ZonalDensity, Particles or a non-empty tuple"),
    (lambda u: mf.mmd(u, (u, 3), 1.0), r"`nu` must be"),
])
def test_non_measures_are_refused_by_name(call, match):
    with pytest.raises(TypeError, match=match):
        call(mf.Density.uniform(4))


# --- Wasserstein distance (geodesic cost, exact transport) ---------------------------------------

def _dirac(v):
    return mf.Particles([v])


@pytest.mark.parametrize("p", [1.0, 2.0, 3.5])
def test_wasserstein_of_two_diracs_is_their_angle_in_any_dimension(p):
    x, y = np.zeros(5), np.zeros(5)
    x[0], y[0], y[1] = 1.0, np.cos(0.7), np.sin(0.7)
    assert mf.wasserstein_distance(_dirac(x), _dirac(y), p) == pytest.approx(0.7, abs=1e-14)


def test_wasserstein_of_a_dirac_and_the_uniform_density_on_s2():
    # the geodesic distance θ from a pole has density sin θ / 2: E θ = π/2, E θ² = (π² − 4)/2
    pole, u = _dirac([0, 0, 1.0]), mf.Density.uniform(8)
    assert mf.wasserstein_distance(pole, u, 1, grid_lmax=64) == pytest.approx(np.pi / 2, abs=1e-12)
    errors = [abs(mf.wasserstein_distance(pole, u, 2, grid_lmax=L) ** 2 - (np.pi ** 2 - 4) / 2) for L in (32, 64)]
    assert errors[1] < 1e-5 and errors[1] < errors[0] / 4      # the grid's error (θ² is not smooth at the pole)


@pytest.mark.parametrize("d", [2, 3])
def test_wasserstein_to_a_density_of_band_limit_zero_uses_a_grid_by_default(d):
    # the uniform density at lmax = 0 made the default grid_lmax 2·0 = 0, refused as "`grid_lmax` must be an
    # integer >= 1" although the caller passed none; the default is now at least 1
    u, pole = mf.Density.uniform(0, d=d), _dirac([0, 0, 1.0] if d == 3 else [1.0, 0])
    assert mf.wasserstein_distance(pole, u, 1) == mf.wasserstein_distance(pole, mf.Density.uniform(0, d=d), 1,
                                                                          grid_lmax=1)
    assert mf.wasserstein_distance(u, mf.Density.uniform(3, d=d)) == 0.0


@pytest.mark.parametrize("grid_lmax, error", [(0, ValueError), (-3, ValueError), (2.5, TypeError), ("x", TypeError)])
def test_grid_lmax_is_checked_between_particles_too(grid_lmax, error):
    # grid_lmax was checked only when a Density needed a grid: between two particle sets any value (0, "x", nan)
    # was accepted without a word
    p, q = mf.Particles.uniform(4, seed=0), mf.Particles.uniform(5, seed=1)
    with pytest.raises(error, match="`grid_lmax`"):
        mf.wasserstein_distance(p, q, grid_lmax=grid_lmax)


def test_wasserstein_on_the_circle_against_pots_circle_solver():
    import ot
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 2 * np.pi, (2, 300))
    P = [mf.Particles(np.stack([np.cos(t), np.sin(t)], axis=1)) for t in (a, b)]
    reference = 2 * np.pi * float(np.squeeze(ot.wasserstein_circle(a / (2 * np.pi), b / (2 * np.pi), p=1)))
    assert mf.wasserstein_distance(*P, p=1) == pytest.approx(reference, abs=1e-12)


def test_wasserstein_is_a_rotation_invariant_metric():
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(1)
    a, b, c = (mf.Particles.uniform(60, seed=s) for s in (1, 2, 3))
    w = rng.uniform(0.5, 1.5, 60)
    a = mf.Particles(a.positions, w / w.sum())
    d = mf.wasserstein_distance
    assert d(a, a) == 0.0 and d(a, b) == pytest.approx(d(b, a), abs=1e-14)
    assert d(a, c) <= d(a, b) + d(b, c) + 1e-14
    R = Rotation.random(random_state=4).as_matrix()
    rotated = [mf.Particles(q.positions @ R.T, q.weights) for q in (a, b)]
    assert d(*rotated) == pytest.approx(d(a, b), abs=1e-13)


@pytest.mark.parametrize("call, error, match", [
    (lambda: mf.wasserstein_distance(_dirac([1.0, 0, 0]), _dirac([0, 1.0, 0]), p=0.5), ValueError, r"`p` must be ≥ 1"),
    # p = 0 and p = inf read "`p` must be finite and > 0", a range that p = 0.5 is not allowed in either
    (lambda: mf.wasserstein_distance(_dirac([1.0, 0, 0]), _dirac([0, 1.0, 0]), p=0), ValueError,
     r"`p` must be ≥ 1 and finite"),
    (lambda: mf.wasserstein_distance(_dirac([1.0, 0, 0]), _dirac([0, 1.0, 0]), p=np.inf), ValueError,
     r"`p` must be ≥ 1 and finite"),
    (lambda: mf.wasserstein_distance(_dirac([1.0, 0, 0]), _dirac([0, 1.0]), 1), ValueError, "same sphere"),
    # "the same S¹ or S²" misled: mmd takes two particle measures in any d, only not two different ones
    (lambda: mf.mmd(mf.Particles.uniform(10, d=4), mf.Particles.uniform(10, d=5), 1.0), ValueError,
     r"both measures must live on the same sphere; got d = \[4, 5\]"),
    (lambda: mf.sobolev_distance(mf.Particles.uniform(10, d=4), mf.Particles.uniform(10, d=4)), ValueError,
     r"`lmax` is required when neither measure is a density"),
    (lambda: mf.wasserstein_distance(mf.ZonalDensity.uniform(4, d=5), mf.Particles.uniform(10, d=5)), TypeError,
     r"takes a ZonalDensity on S¹ or S² only .*d = 5"),
    (lambda: mf.wasserstein_distance(mf.Density(2 * mf.Density.uniform(4).coeffs, 4), mf.Density.uniform(4)),
     ValueError, "equal mass"),
    (lambda: mf.wasserstein_distance(mf.Particles.uniform(300), mf.Particles.uniform(300, seed=1), max_pairs=1000),
     ValueError, "more pairs than max_pairs=1000"),
    (lambda: mf.wasserstein_distance(mf.Density.random(8, degree=4, amplitude=3.0, seed=1), mf.Density.uniform(8)),
     ValueError, "negative at some grid nodes"),
    (lambda: mf.wasserstein_distance(np.zeros(3), mf.Density.uniform(4)), TypeError, "`mu` must be"),
])
def test_wasserstein_refuses_what_it_cannot_measure(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_mmd_of_particles_in_higher_dimension_is_the_direct_double_sum():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((2, 40, 6))
    a = mf.Particles(x / np.linalg.norm(x, axis=1, keepdims=True))
    b = mf.Particles(y / np.linalg.norm(y, axis=1, keepdims=True), rng.uniform(0.5, 1.5, 40) / 40, normalize=True)
    beta = 2.0

    def k(p, q):          # ∬ e^{β⟨x,y⟩} dp dq, term by term in plain Python sums
        return sum(wi * wj * np.exp(beta * xi @ xj) for xi, wi in zip(p.positions, p.weights)
                   for xj, wj in zip(q.positions, q.weights))
    expected = np.sqrt(k(a, a) - 2 * k(a, b) + k(b, b))
    assert mf.mmd(a, b, beta) == pytest.approx(expected, rel=1e-12)
    assert mf.mmd(a, a, beta) < 1e-6          # the square root of a rounding of e^β-sized terms (~1e-16·e^β)


def test_wasserstein_accepts_a_density_with_ringing_below_the_solvers_negativity_tolerance():
    # (1 + z)^4 (mass 1) minus 1e-8·P_2(z) (mass 0): the minimum is about −1e-8 near the south pole
    def f(x):
        z = x[..., 2]
        return 5 * (1 + z) ** 4 / 16 - 1e-8 * (3 * z ** 2 - 1) / 2
    rho = mf.Density.from_function(f, 8)
    assert -2e-8 < rho.on_grid(mf.sphere.SphereGrid.for_bandlimit(16, dealias=False)).min() < 0
    w = mf.wasserstein_distance(rho, mf.Particles([[0, 0, 1.0]]), 1)
    assert 0 < w < np.pi / 2


def test_wasserstein_puts_both_densities_on_one_grid():
    # each Density used to be discretized on its own grid: the uniform density at L = 6 and L = 3 were 0.188 apart
    assert mf.wasserstein_distance(mf.Density.uniform(6), mf.Density.uniform(3)) < 1e-12
    rho = mf.Density.random(8, seed=2, amplitude=0.3)
    assert mf.wasserstein_distance(rho, rho.resized(16)) < 1e-12


@pytest.mark.parametrize("delta", [1e-6, 1e-7, 1e-9])
def test_wasserstein_of_nearly_antipodal_diracs_is_their_angle(delta):
    # 2·arcsin(chord/2) lost 1e-9 near π; 2·atan2(|x − y|, |x + y|) is accurate at every angle
    a = np.array([[0.0, 0.0, 1.0]])
    b = np.array([[np.sin(np.pi - delta), 0.0, np.cos(np.pi - delta)]])
    angle = 2 * np.arctan2(np.linalg.norm(a - b), np.linalg.norm(a + b))     # the angle of the rounded points
    assert abs(angle - (np.pi - delta)) < 1e-15
    assert mf.wasserstein_distance(mf.Particles(a), mf.Particles(b), 1.0) == pytest.approx(np.pi - delta, rel=1e-15)


def test_wasserstein_takes_a_density_finer_than_the_grid_by_its_values_at_the_nodes():
    # a density of band limit 40 on a grid of band limit 16 (it was refused: "exceeds what this grid resolves"):
    # equal measures stay at distance 0, and W₁ to a Dirac at the pole, E_ρ[θ], converges with the grid
    rho = mf.Density.random(40, seed=3, amplitude=0.5)
    assert mf.wasserstein_distance(rho, rho.resized(64), 1, grid_lmax=16) < 1e-12    # point values equal to rounding
    fine = mf.sphere.SphereGrid.for_bandlimit(400, dealias=False)
    pts = fine.points.reshape(-1, 3)
    expected = float(np.sum(rho.evaluate(pts) * np.arccos(np.clip(pts[:, 2], -1, 1)) * fine.weights.ravel()) / (4 * np.pi))
    pole = _dirac([0, 0, 1.0])
    errors = [abs(mf.wasserstein_distance(pole, rho, 1, grid_lmax=L) - expected) for L in (12, 24)]
    assert errors[1] < 2e-3 and errors[1] < errors[0]
    c = mf.Density.random(40, d=2, seed=1, amplitude=0.5)
    assert mf.wasserstein_distance(c, c.resized(60), 1, grid_lmax=10) < 1e-12


# --- audit regressions -------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: mf.Particles.uniform(20, d=3, seed=1), lambda: mf.Density.random(6, seed=2),
                                  lambda: mf.Density.uniform(5, d=2), lambda: mf.Particles.uniform(20, d=5, seed=1)])
def test_mmd_of_equal_measures_is_zero_at_large_beta(make):
    # e^{β/2}·√0 was NaN from β ≈ 1419, where e^{β/2} overflows float64
    import warnings
    m = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mf.mmd(m, m, 1500.0) == 0.0


def test_mmd_beyond_float64_is_inf_without_a_numpy_warning():
    import warnings
    a, b = mf.Particles.uniform(20, d=3, seed=1), mf.Particles.uniform(20, d=3, seed=2)
    a5, b5 = mf.Particles.uniform(20, d=5, seed=1), mf.Particles.uniform(20, d=5, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mf.mmd(a, b, 1500.0) == np.inf and mf.mmd(a5, b5, 1500.0) == np.inf
        # just below the overflow, the value is finite and matches the direct sum in logs
        z, c = np.concatenate([a.positions, b.positions]), np.concatenate([a.weights, -b.weights])
        scaled = c @ np.exp(1400.0 * (z @ z.T - 1.0)) @ c
        assert mf.mmd(a, b, 1400.0) == pytest.approx(np.exp(0.5 * (1400.0 + np.log(scaled))), rel=1e-10)


@pytest.mark.parametrize("kw, error, match", [(dict(tol=-3.0), ValueError, "`tol`"), (dict(tol=1.5), ValueError, "`tol`"),
                                              (dict(lmax="x"), TypeError, "`lmax`"), (dict(lmax=-1), ValueError, "`lmax`")])
def test_mmd_checks_tol_and_lmax_on_the_direct_path_too(kw, error, match):
    p = mf.Particles.uniform(5, d=5, seed=0)
    with pytest.raises(error, match=match):
        mf.mmd(p, p, 1.0, **kw)


@pytest.mark.parametrize("distance", [lambda a, b: mf.sobolev_distance(a, b, lmax=10 ** 12),
                                      lambda a, b: mf.mmd(a, b, 1.0, lmax=10 ** 12)])
def test_a_band_limit_beyond_memory_is_refused_by_name_before_the_transform(distance):
    # ducc0's adjoint transform failed with a bare "MemoryError: std::bad_alloc"
    a, b = mf.Particles.uniform(5, seed=0), mf.Particles.uniform(5, seed=1)
    with pytest.raises(mf.InsufficientMemoryError, match="`lmax`"):
        distance(a, b)


# --- zonal densities, and particles in any dimension (the addition theorem) ------------------------

def _zonal(d, lmax=10, axis=None):
    return mf.ZonalDensity.from_function(lambda t: np.exp(1.5 * t + 0.5 * t ** 2), lmax, d, axis=axis).normalized()


@pytest.mark.parametrize("d", [2, 3])
def test_the_addition_theorem_path_is_the_spherical_harmonic_one_on_s1_and_s2(d):
    """The degree powers of particles and zonal densities (two axes) by Gegenbauer sums, against the spherical-
    harmonic (Fourier) coefficients of the same measures as Densities: two methods, to rounding."""
    from meanfield._compare import _degree_power_any_d, _degree_power_of_difference, _on_s1_s2

    rng = np.random.default_rng(2)
    axis = rng.standard_normal(d)
    z1, z2 = _zonal(d), _zonal(d, axis=axis / np.linalg.norm(axis))
    p = mf.Particles(rng.standard_normal((60, d)), rng.uniform(0.5, 1.5, 60), normalize=True)
    q = mf.Particles.uniform(40, d, seed=3)
    L = 12
    for mu, nu in ((z1, p), (z1, z2), (p, q), ((z1, z2), p)):
        gram = _degree_power_any_d(mu, nu, d, L)
        sh = _degree_power_of_difference(_on_s1_s2(mu), _on_s1_s2(nu), d, L)
        assert np.allclose(gram, sh, rtol=1e-11, atol=1e-13 * gram.max()), (type(mu), type(nu))


@pytest.mark.parametrize("d", [4, 7])
def test_mmd_by_the_addition_theorem_is_the_direct_double_sum_in_higher_dimension(d):
    """Σ_ℓ λ_ℓ ‖(μ − ν)_ℓ‖², the degree powers by Gegenbauer sums, against Σ c_i c_j e^{β⟨z_i, z_j⟩} (kernel
    truncated at 1e-14 relative)."""
    from meanfield._compare import _degree_power_any_d, _mmd_direct

    p, q = mf.Particles.uniform(70, d, seed=1), mf.Particles.uniform(50, d, seed=2)
    beta = 2.0
    L = mf.kernel_bandlimit(beta, 1e-14, d)
    by_degree = np.sqrt(np.sum(mf.funk_hecke(beta, L, d) * _degree_power_any_d(p, q, d, L)))
    assert by_degree == pytest.approx(_mmd_direct(p, q, beta, d), rel=1e-11)


@pytest.mark.parametrize("d", [5, 16])
def test_iid_uniform_tokens_have_the_expected_sobolev_distance_to_a_zonal_uniform_density(d):
    """E‖μ_N − σ‖²_{H^{-s}} = (1/N) Σ_{1≤ℓ≤L} (1 + ℓ(ℓ + d − 2))^{-s} N(d, ℓ) for N i.i.d. uniform tokens: the mean over
    40 draws within 4 standard errors (the zonal path: the uniform ZonalDensity against particles in d > 3)."""
    from meanfield.sphere import harmonic_dimension

    N, L = 200, 6
    ell = np.arange(1, L + 1)
    expected = np.sum((1.0 + ell * (ell + d - 2.0)) ** -1 * harmonic_dimension(d, ell)) / N
    u = mf.ZonalDensity.uniform(L, d)
    sq = np.array([mf.sobolev_distance(mf.Particles.uniform(N, d, seed=k), u) ** 2 for k in range(40)])
    assert abs(sq.mean() - expected) < 4 * sq.std(ddof=1) / np.sqrt(sq.size), (sq.mean(), expected)


def test_a_zonal_density_against_itself_and_its_density_is_at_distance_zero():
    z = _zonal(3)
    assert mf.sobolev_distance(z, z.normalized()) == 0.0
    assert mf.sobolev_distance(z, mf.Density.from_function(z.evaluate, 10)) < 1e-15
    z5 = _zonal(5)
    assert mf.sobolev_distance(z5, z5) == 0.0 and mf.mmd(z5, z5, 3.0) == 0.0
    # a zonal density and a rotated copy: ‖ζ_e − ζ_e'‖ > 0, symmetric
    e = np.zeros(5)
    e[0] = 1.0
    r = _zonal(5, axis=e)
    forth, back = mf.sobolev_distance(z5, r), mf.sobolev_distance(r, z5)
    assert forth == pytest.approx(back, rel=1e-14) and forth > 0.1


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_wasserstein_of_measures_of_mass_c_scales_like_c_to_the_1_over_p(p):
    # W_p^p = min over couplings π of mass c of ∬ d^p dπ: doubling both measures doubles W_p^p.  Dropping the mass
    # (the transport problem is solved between the normalized atoms) passed every test, all of unit mass
    L = 4
    u = mf.Density.uniform(L)
    rho = mf.Density.from_function(lambda x: 1 + 0.6 * x[..., 2], L)
    one = mf.wasserstein_distance(u, rho, p)
    two = mf.wasserstein_distance(mf.Density(2 * u.coeffs, L), mf.Density(2 * rho.coeffs, L), p)
    assert one > 0.1
    assert two == pytest.approx(2 ** (1 / p) * one, rel=1e-12)


def test_the_comparison_figure_of_particle_runs_only_draws_their_mmd():
    """Two particle runs (a causal and a plain one, d = 5) compared by comparison_figure, or `meanfield plot a.h5
    b.h5`, drew no distance at all: the default H⁻¹ needs a density for its band limit, and the pair was skipped
    silently.  Without a density the default is the attention-kernel MMD, the values of comparison_distances."""
    import matplotlib.pyplot as plt

    from meanfield import plot

    p = mf.Particles.uniform(40, d=5, seed=0)
    runs = [mf.simulate(mf.Model(2.0, d=5), p, 0.5, backend="particles", save_every=0.25, causal=causal)
            for causal in (False, True)]
    fig = plot.comparison_figure(runs, labels=["plain", "causal"])
    (dist,) = [ax for ax in fig.axes if ax.get_gid() == "distance"]
    assert "MMD" in dist.get_title()
    t, v, _ = plot.comparison_distances(*runs, distance="mmd")
    np.testing.assert_array_equal(dist.get_lines()[0].get_ydata(), v)
    assert v[0] < 1e-12 and v[-1] > 0.01            # the same start (to rounding), then the mask moves them apart
    plt.close(fig)
    fig = plot.comparison_figure(runs, distance="sobolev")       # asked for: no band limit, so no curve
    assert not [ax for ax in fig.axes if ax.get_gid() == "distance"]
    plt.close(fig)


@pytest.mark.parametrize("backend, options, error, match", [
    ("hybrid", None, ValueError, r"`backend` must be one of \['particles', 'particles-sh'\] for convergence_in_n"),
    ("spectral", None, ValueError, r"`backend` must be one of \['particles', 'particles-sh'\]"),
    ("particles", {"stp": 0.05}, TypeError, r"unknown option\(s\) \['stp'\] for backend='particles'"),
    ("particles", {"time": "layers", "step": 0.3}, ValueError, r"whole numbers of layers of step=0.3"),
])
def test_convergence_in_n_refuses_a_bad_particle_run_before_the_reference_run(monkeypatch, backend, options, error,
                                                                             match):
    """backend="hybrid" failed after the spectral reference run with "method='rk45' chooses its own steps" (the default
    step=0.05 went to its spectral phase), "spectral" with "needs a Density", and a misspelt particle option only
    after the reference run, which can take minutes: all are refused before it."""
    import meanfield._simulate as sim

    def no_run(*args, **kwargs):
        raise AssertionError("a run started before the particle options were checked")

    monkeypatch.setattr(sim, "simulate", no_run)
    with pytest.raises(error, match=match):
        mf.convergence_in_n(mf.Model(2.0), mf.Density.random(8, seed=1, amplitude=0.3), 1.0, [10, 20], replicas=1,
                            backend=backend, particle_options=options)


# --- review h9: closed forms in any dimension, and the Gegenbauer sums against the table they replaced --------------

def _two_diracs(d, angle):
    x, y = np.zeros(d), np.zeros(d)
    x[0], y[0], y[1] = 1.0, np.cos(angle), np.sin(angle)
    return mf.Particles([x]), mf.Particles([y])


def _normalized_gegenbauer(ell, t, d):
    """P_ℓ^{(d)}(t) from scipy (Chebyshev for d = 2), independent of meanfield's recurrence."""
    from scipy.special import eval_chebyt, eval_gegenbauer

    if d == 2:
        return eval_chebyt(ell, t)
    return eval_gegenbauer(ell, (d - 2) / 2, t) / eval_gegenbauer(ell, (d - 2) / 2, 1.0)


@pytest.mark.parametrize("d", [2, 3, 4, 5, 7])
def test_two_diracs_and_a_dirac_against_uniform_have_their_closed_forms_in_any_dimension(d):
    """‖δ_x − δ_y‖²_{H^{-s}} = Σ_ℓ (1 + ℓ(ℓ + d − 2))^{-s} 2N(d, ℓ)(1 − P_ℓ(cos θ)) and ‖δ_x − σ‖² =
    Σ_{ℓ≥1} (…)^{-s} N(d, ℓ) (the addition theorem), MMD² = 2e^β − 2e^{β cos θ} and e^β − λ_0(β) (direct kernel sums), W_p = θ."""
    from meanfield.sphere import harmonic_dimension

    theta, s, L, beta = 0.9, 1.3, 10, 2.5
    a, b = _two_diracs(d, theta)
    ell = np.arange(L + 1)
    weight, count = (1.0 + ell * (ell + d - 2.0)) ** -s, harmonic_dimension(d, ell)
    pair = np.sqrt(np.sum(weight * 2 * count * (1 - _normalized_gegenbauer(ell, np.cos(theta), d))))
    assert mf.sobolev_distance(a, b, s, lmax=L) == pytest.approx(pair, rel=1e-13)
    uniform = mf.Density.uniform(L, d) if d <= 3 else mf.ZonalDensity.uniform(L, d)
    assert mf.sobolev_distance(a, uniform, s) == pytest.approx(np.sqrt(np.sum((weight * count)[1:])), rel=1e-13)
    # the kernel bound tol = 1e-12 relative to λ_0 (d ≤ 3 and the zonal path); the direct sum to rounding
    assert mf.mmd(a, b, beta) == pytest.approx(np.sqrt(2 * np.exp(beta) - 2 * np.exp(beta * np.cos(theta))), rel=1e-12)
    lambda0 = mf.funk_hecke(beta, 0, d)[0]
    assert mf.mmd(a, uniform, beta) == pytest.approx(np.sqrt(np.exp(beta) - lambda0), rel=1e-12)
    assert mf.sobolev_distance(a, a, s, lmax=L) == 0.0 and mf.mmd(a, a, beta) == 0.0


def _gegenbauer_table_sums(a, b, d, lmax):
    """The former path: a (lmax + 1)·rows·m table of P_ℓ(⟨x_i, y_j⟩) contracted by einsum."""
    from meanfield.sphere import harmonic_dimension
    from meanfield.sphere._zonal import gegenbauer

    total, rows = np.zeros(lmax + 1), max(1, 2 ** 21 // ((lmax + 1) * b.n))
    for i in range(0, a.n, rows):
        cos = np.clip(a.positions[i:i + rows] @ b.positions.T, -1.0, 1.0)
        total += np.einsum("lij,i,j->l", gegenbauer(lmax, cos, d), a.weights[i:i + rows], b.weights)
    return harmonic_dimension(d, np.arange(lmax + 1)) * total


@pytest.mark.parametrize("d", [2, 4, 5, 9])
def test_the_blocked_gegenbauer_sums_are_the_table_they_replaced(d):
    """The in-place recurrence over cache-sized blocks (and only the upper blocks of a measure against itself) gives
    the degree powers of the (lmax + 1)·N·M table to rounding, at lmax = 0, 1, 2 (the recurrence's first steps) and
    17, with zero weights among the tokens and blocks of one row (``chunk_elements`` below M)."""
    from meanfield._compare import _gegenbauer_sums, _gram

    rng = np.random.default_rng(d)
    w = rng.uniform(0, 1, 700)
    w[::7] = 0.0
    a = mf.Particles(rng.standard_normal((700, d)), w, normalize=True)
    b = mf.Particles.uniform(300, d, seed=2)
    for lmax in (0, 1, 2, 17):
        for x, y in ((a, a), (a, b), (b, a), (b, b)):
            old = _gegenbauer_table_sums(x, y, d, lmax)
            assert np.allclose(_gram(x, y, d, lmax), old, rtol=1e-12, atol=1e-13 * np.abs(old).max())
    np.testing.assert_allclose(_gegenbauer_sums(a, a, d, 5, chunk_elements=1), _gegenbauer_sums(a, a, d, 5),
                               rtol=1e-12)


@pytest.mark.parametrize("d", [5, 6])
def test_a_measure_and_its_copy_are_at_distance_exactly_zero_in_higher_dimension(d):
    """The direct MMD sum of two equal particle sets rounded to ±1e-16·e^β: MMD(μ, μ) read up to 8e-8 at β = 5 for
    half of 20 seeds (d = 6); the Gegenbauer sums of a copy (other memory) must round as those of the original."""
    for seed in range(10):
        for n in (7, 100):
            p = mf.Particles.uniform(n, d, seed=seed)
            copy = mf.Particles(p.positions.copy(), p.weights.copy())
            z = mf.ZonalDensity.uniform(6, d)
            assert mf.mmd(p, p, 5.0) == 0.0 and mf.mmd(p, copy, 2.0) == 0.0
            assert mf.sobolev_distance(p, copy, lmax=8) == 0.0
            assert mf.sobolev_distance((p, z), (copy, z)) == 0.0 and mf.mmd((p, z), (copy, z), 2.0) == 0.0


@pytest.mark.parametrize("d", [4, 5, 9])
def test_mmd_with_a_zonal_density_in_higher_dimension_is_the_truncated_degree_sum(d):
    """Exact MMD (direct sums between tokens, Funk–Hecke against zonal densities, O(N²)) against Σ_ℓ λ_ℓ ‖(μ − ν)_ℓ‖²
    with the degree powers by Gegenbauer sums to the kernel's band limit at tol = 1e-15 (the former path, O(N²·L)):
    zonal against particles both ways, two zonal densities of other axes and band limits, and species tuples."""
    from meanfield._compare import _degree_power_any_d

    e = np.zeros(d)
    e[1] = 1.0
    z = _zonal(d)
    z2 = mf.ZonalDensity.from_function(lambda t: np.exp(0.5 * t), 6, d, axis=e).normalized()
    p, q = mf.Particles.uniform(300, d, seed=1), mf.Particles.uniform(200, d, seed=2)
    for beta in (0.5, 2.0, 8.0):
        L = mf.kernel_bandlimit(beta, 1e-15, d)
        for mu, nu in ((z, p), (p, z), (z, z2), ((z, p), q), ((p, z2), (q, z))):
            by_degree = np.sqrt(np.sum(mf.funk_hecke(beta, L, d) * _degree_power_any_d(mu, nu, d, L)))
            assert mf.mmd(mu, nu, beta) == pytest.approx(by_degree, rel=1e-13)
    # a given lmax still truncates where a zonal density enters (and is ignored between tokens alone)
    truncated = np.sqrt(np.sum(mf.funk_hecke(2.0, 3, d) * _degree_power_any_d(z, p, d, 3)))
    assert mf.mmd(z, p, 2.0, lmax=3) == pytest.approx(truncated, rel=1e-13)
    assert mf.mmd(p, q, 2.0, lmax=3) == mf.mmd(p, q, 2.0)


def test_the_kernel_sum_of_a_measure_with_itself_on_half_the_pairs_is_the_full_sum():
    from meanfield._compare import _kernel_sum

    rng = np.random.default_rng(0)
    p = mf.Particles(rng.standard_normal((500, 6)), rng.uniform(0, 1, 500), normalize=True)
    full = p.weights @ np.exp(3.0 * (p.positions @ p.positions.T - 1.0)) @ p.weights
    for chunk in (1, 700, 2 ** 22):
        assert _kernel_sum(p, p, 3.0, 6, chunk_elements=chunk) == pytest.approx(full, rel=1e-13)


def _bottleneck(angles):
    """W_∞ of two uniform sets of n atoms: the smallest τ with a perfect matching of pairs at angles ≤ τ (scipy)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    values = np.unique(angles)
    lo, hi = 0, len(values) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        matched = maximum_bipartite_matching(csr_matrix(angles <= values[mid]), perm_type="column")
        lo, hi = (lo, mid) if np.all(matched >= 0) else (mid + 1, hi)
    return values[lo]


def test_wasserstein_of_large_order_p_is_the_assignment_and_tends_to_the_bottleneck_distance():
    """Two sets of 50 tokens: W_p is the optimal assignment (scipy's linear_sum_assignment on (θ/s)^p) up to p = 50,
    and for every p lies in [50^{-1/p}·W_∞, W_∞], increasing with p.  POT's simplex resolves costs to ~1e-14 of the
    largest: with costs θ^p, W_50 read 1.39 and W_100 2.14, above W_∞ = 0.62; θ^p overflowed from p ≈ 620."""
    from scipy.optimize import linear_sum_assignment

    a, b = mf.Particles.uniform(50, 3, seed=1), mf.Particles.uniform(50, 3, seed=2)
    angles = np.arccos(np.clip(a.positions @ b.positions.T, -1, 1))
    nearest = max(angles.min(axis=0).max(), angles.min(axis=1).max())
    for p in (1.0, 2.0, 3.0, 10.0, 50.0):
        cost = (angles / nearest) ** p
        rows, cols = linear_sum_assignment(cost)
        assert mf.wasserstein_distance(a, b, p) == pytest.approx(nearest * cost[rows, cols].mean() ** (1 / p),
                                                                 rel=1e-12)
    w_inf = _bottleneck(angles)
    orders = [1, 2, 10, 50, 100, 400, 1000, 5000]
    w = np.array([mf.wasserstein_distance(a, b, p) for p in orders])
    assert np.all(np.diff(w) >= -1e-13) and np.all(w <= w_inf * (1 + 1e-13))
    assert np.all(w >= 50.0 ** (-1.0 / np.array(orders)) * w_inf * (1 - 1e-13))


@pytest.mark.parametrize("angle, p", [(0.3, 700.0), (0.3, 1000.0), (np.pi - 0.1, 650.0), (1e-3, 1e4)])
def test_wasserstein_of_two_diracs_is_their_angle_at_any_order(angle, p):
    # 0.3^700 underflowed (W = 0.0), (π − 0.1)^650 overflowed (ConvergenceError "Problem infeasible")
    a, b = _two_diracs(3, angle)
    assert mf.wasserstein_distance(a, b, p) == pytest.approx(angle, rel=1e-14)


def test_wasserstein_on_the_circle_is_the_best_cyclic_shift_and_to_a_dirac_tends_to_its_closed_form():
    """On S¹, between two sets of n equal atoms, an optimal plan is a cyclic shift of the sorted angles (convex costs
    of the arc length): W_p^p = min_k mean_i d(θ_i, φ_{i+k})^p, p = 1, 2, 3.  The uniform density against a Dirac at a
    node: the sums over its 2L + 1 equispaced atoms, which tend to W_p^p = π^p/(p + 1) like L^{-2}."""
    rng = np.random.default_rng(3)
    theta, phi = np.sort(rng.uniform(0, 2 * np.pi, (2, 120)), axis=1)
    a, b = (mf.Particles(np.stack([np.cos(t), np.sin(t)], axis=1)) for t in (theta, phi))
    for p in (1.0, 2.0, 3.0):
        gap = np.abs(theta[None, :] - np.stack([np.roll(phi, k) for k in range(120)]))
        arc = np.minimum(gap, 2 * np.pi - gap)
        assert mf.wasserstein_distance(a, b, p) == pytest.approx(np.min(np.mean(arc ** p, axis=1)) ** (1 / p),
                                                                 rel=1e-13)
    # the n = 2L + 1 atoms 2πk/n, |k| ≤ L: mean |θ| = 2πL(L + 1)/n², mean θ² = 4π²L(L + 1)/(3n²) exactly
    dirac = mf.Particles([[1.0, 0.0]])
    for L in (32, 128):
        n = 2 * L + 1
        w1, w2 = (mf.wasserstein_distance(dirac, mf.Density.uniform(4, 2), p, grid_lmax=L) for p in (1.0, 2.0))
        assert w1 == pytest.approx(2 * np.pi * L * (L + 1) / n ** 2, rel=1e-14)
        assert w2 == pytest.approx(np.sqrt(4 * np.pi ** 2 * L * (L + 1) / (3 * n ** 2)), rel=1e-14)
    assert abs(w1 - np.pi / 2) < 3e-5 and abs(w2 - np.pi / np.sqrt(3)) < 3e-5      # → (π^p/(p + 1))^{1/p}


@pytest.mark.parametrize("d", [2, 3])
def test_a_density_and_its_own_quadrature_atoms_are_at_distance_zero(d):
    """Particles at the nodes of a quadrature exact to degree ≥ 2L, weighted by ρ times the quadrature weights, have
    the coefficients of ρ up to degree L: H^{-s} and MMD at band limit L are rounding.  W_p to the atoms of the grid
    that wasserstein_distance itself uses is 0."""
    L = 10
    rho = mf.Density.random(L, d=d, seed=1, amplitude=0.5)
    if d == 3:
        grid = mf.sphere.SphereGrid.for_bandlimit(L)
        nodes, w = grid.points.reshape(-1, 3), (rho.on_grid(grid) * grid.weights).ravel() / (4 * np.pi)
        same = mf.sphere.SphereGrid.for_bandlimit(2 * L, dealias=False)
        atoms, aw = same.points.reshape(-1, 3), (rho.on_grid(same) * same.weights).ravel() / (4 * np.pi)
    else:
        n = 4 * L + 1
        nodes = mf.sphere.circle_points(n)
        w = rho.evaluate(nodes) / n
        atoms = mf.sphere.circle_points(4 * L + 1)
        aw = w
    quad = mf.Particles(nodes, w, normalize=True)
    assert mf.sobolev_distance(rho, quad) < 1e-14 and mf.mmd(rho, quad, 2.0, lmax=L) < 1e-14
    assert mf.wasserstein_distance(rho, mf.Particles(atoms, aw, normalize=True)) < 1e-7


@pytest.mark.parametrize("d", [2, 3, 5])
def test_sobolev_and_mmd_are_symmetric_and_satisfy_the_triangle_inequality(d):
    a, b, c = (mf.Particles.uniform(40, d, seed=s) for s in (1, 2, 3))
    for dist in (lambda x, y: mf.sobolev_distance(x, y, lmax=8), lambda x, y: mf.mmd(x, y, 3.0)):
        assert dist(a, b) == pytest.approx(dist(b, a), rel=1e-13)
        assert dist(a, c) <= dist(a, b) + dist(b, c)


@pytest.mark.parametrize("d", [3, 5])
def test_atoms_of_zero_weight_change_no_distance(d):
    """A measure with extra atoms of weight 0 is the same measure: at distance 0 from it, and at the same distance
    from a third (the transport's lower bound of the plan's largest angle skips massless atoms)."""
    p = mf.Particles.uniform(6, d, seed=0)
    padded = mf.Particles(np.concatenate([p.positions, mf.Particles.uniform(4, d, seed=9).positions]),
                          np.concatenate([p.weights, np.zeros(4)]))
    other = mf.Particles.uniform(5, d, seed=1)
    for dist in (lambda x, y: mf.sobolev_distance(x, y, lmax=6), lambda x, y: mf.mmd(x, y, 2.0),
                 mf.wasserstein_distance, lambda x, y: mf.wasserstein_distance(x, y, 40.0)):
        assert dist(p, padded) < 1e-7
        assert dist(padded, other) == pytest.approx(dist(p, other), rel=1e-12)


@pytest.mark.parametrize("d, value, share", [(3, 0.079, 0.43), (64, 3.5, 0.92), (768, 138.0, 0.993)])
def test_sobolev_distance_of_particles_in_high_d_is_its_top_degree_as_documented(d, value, share):
    # in d = 768 the H^{-1} distance of two token sets is nearly all from degree lmax (N(d, ℓ) ≈ d^ℓ/ℓ! against
    # the weight (1 + ℓ(ℓ + d − 2))^{-1}): the docstring said nothing of it, and an interpretability user read 138
    # between two samples of one uniform measure as a large difference.  The Notes quote these numbers.
    from meanfield._compare import _degree_power_any_d

    a, b = mf.Particles.uniform(500, d, seed=1), mf.Particles.uniform(500, d, seed=2)
    ell = np.arange(5)
    terms = _degree_power_any_d(a, b, d, 4) / (1 + ell * (ell + d - 2.0))
    assert mf.sobolev_distance(a, b, lmax=4) == pytest.approx(value, rel=0.02)
    assert terms[4] / terms.sum() == pytest.approx(share, abs=0.005)
    notes = mf.sobolev_distance.__doc__
    assert f"{value:g} " in notes.replace("\n    ", " ") and f"{100 * share:g} %" in notes


def test_geodesic_cost_takes_differences_only_near_0_and_pi_and_stays_accurate_at_every_angle(monkeypatch):
    # the cost matrix of the Wasserstein distance was 2·atan2(‖x − y‖, ‖x + y‖) of every pair, O(n·m·d) elementwise:
    # 20-40 s for two sets of 2000 tokens in d = 768 (the simplex: 1-2 s).  Where |⟨x, y⟩| ≤ 1/2 arccos of the Gram
    # entry is as accurate; the differences are taken only near 0 and π.  Checked against long double.
    from meanfield import _compare

    rng = np.random.default_rng(0)
    d = 256
    x = rng.standard_normal((120, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.vstack([x[:20] + 1e-9 * rng.standard_normal((20, d)), -x[20:40] + 1e-7 * rng.standard_normal((20, d)),
                   x[40:60] + 0.6 * rng.standard_normal((20, d)) / np.sqrt(d), rng.standard_normal((100, d))])
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    seen = []
    norm = np.linalg.norm
    monkeypatch.setattr(np.linalg, "norm", lambda a, *args, **kw: seen.append(np.size(a)) or norm(a, *args, **kw))
    cost = _compare._geodesic_cost(x, y)
    near = np.abs(x @ y.T) > 0.5
    assert 0 < near.sum() < 0.05 * near.size
    assert sum(seen) == 2 * near.sum() * d              # the differences and sums of the pairs near 0 and π only
    if np.finfo(np.longdouble).eps > 1e-18:
        pytest.skip("no extended precision for the reference here (long double is double)")
    X, Y = x.astype(np.longdouble), y.astype(np.longdouble)
    exact = np.array([2 * np.arctan2(np.sqrt(((X[i] - Y) ** 2).sum(-1)), np.sqrt(((X[i] + Y) ** 2).sum(-1)))
                      for i in range(len(x))])
    assert np.max(np.abs(cost - exact).astype(float) / np.spacing(exact.astype(float))) <= 4     # ulp, every angle
