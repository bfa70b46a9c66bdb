"""Sampling a density and the coefficients of an empirical measure, against independent answers."""
import numpy as np
import pytest
from scipy import integrate

import meanfield as mf
from meanfield.sphere import ylm

N = 200_000


def test_sampled_moments_on_s2():
    # ρ = 1 + a z + b (3x² − 1) w.r.t. σ: E[z] = a/3, E[x²] = 1/3 + b·(∫(3x²−1)x² dσ) = 1/3 + 4b/15.
    a, b = 0.6, 0.25
    rho = mf.Density.from_function(lambda x: 1 + a * x[..., 2] + b * (3 * x[..., 0] ** 2 - 1), 4, radius=2.0)
    p = mf.Particles.from_density(rho, N, seed=1)
    se = 1 / np.sqrt(N)                                   # the standard error of a mean of |·| ≤ 1
    assert abs(p.positions[:, 2].mean() - a / 3) < 5 * se
    assert abs((p.positions[:, 0] ** 2).mean() - (1 / 3 + 4 * b / 15)) < 5 * se
    assert np.allclose(p.radii, 2.0, atol=1e-12) and p.n == N


def test_sampled_moments_on_s1_and_zonal_s4():
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 0], 3, d=2)
    p = mf.Particles.from_density(rho, N, seed=2)
    assert abs(p.positions[:, 0].mean() - 0.25) < 5 / np.sqrt(N)   # E[cos φ] = 0.5·E[cos² φ] = 1/4
    # zonal density g(t) = e^{2t} on S⁴ (d = 5): pushforward of σ ∝ (1 − t²)^{(d−3)/2}
    z = mf.ZonalDensity.from_function(lambda t: np.exp(2 * t), 30, d=5)
    pz = mf.Particles.from_density(z, N // 10, seed=3)
    num = integrate.quad(lambda t: t * np.exp(2 * t) * (1 - t * t), -1, 1)[0]
    den = integrate.quad(lambda t: np.exp(2 * t) * (1 - t * t), -1, 1)[0]
    assert abs((pz.positions @ z.axis).mean() - num / den) < 5 / np.sqrt(N // 10)


def test_a_list_of_species_is_sampled_species_by_species_with_its_mass_shares():
    # the north and south halves of 1 + 0.6 z at radii 1 and 2 (masses 0.65 and 0.35, as simulate's species):
    # tokens split 65/35, weights keep the shares, radii follow the species, and the mixture's first moment
    # E[z] = 0.6/3 is that of the whole density
    north = mf.Density.from_function(lambda x: (1 + 0.6 * x[..., 2]) * (1 + x[..., 2]) / 2, 6, radius=1.0)
    south = mf.Density.from_function(lambda x: (1 + 0.6 * x[..., 2]) * (1 - x[..., 2]) / 2, 6, radius=2.0)
    m_n, m_s = north.mass(), south.mass()
    assert m_n == pytest.approx(0.6, abs=1e-12) and m_s == pytest.approx(0.4, abs=1e-12)
    p = mf.sample_density([north, south], N, seed=4)
    k = int(round(N * m_n))
    assert p.n == N and np.allclose(p.radii[:k], 1.0) and np.allclose(p.radii[k:], 2.0)
    assert p.weights[:k].sum() == pytest.approx(m_n, abs=1e-12) and p.weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert abs(p.weights @ p.positions[:, 2] - 0.6 / 3) < 5 / np.sqrt(N)
    assert np.all(p.positions[:k, 2] @ p.weights[:k] > 0) and p.positions[k:, 2] @ p.weights[k:] < 0
    assert mf.Particles.from_density((north, south), 3, seed=1).n == 3
    with pytest.raises(ValueError, match="≥ the number of species"):
        mf.sample_density([north, south], 1)
    with pytest.raises(TypeError, match="Density or ZonalDensity species"):
        mf.sample_density([], 10)
    with pytest.raises(ValueError, match="one sphere"):
        mf.sample_density([north, mf.Density.uniform(4, d=2)], 10)


def test_low_bound_restarts_instead_of_biasing(monkeypatch):
    # Force a bound below the true maximum: a proposal above it must restart the draw with a safe
    # bound, so the samples still follow ρ ∝ e^{κz} exactly: E[z] = coth κ − 1/κ.
    import meanfield._sampling as smp
    monkeypatch.setattr(smp, "_MARGIN", 0.5)
    kappa = 8.0
    rho = mf.Density.from_function(lambda x: np.exp(kappa * (x[..., 2] - 1)), 24, normalize=True)
    p = mf.sample_density(rho, 20_000, seed=4, batch=5000)
    exact = 1 / np.tanh(kappa) - 1 / kappa
    assert abs(p.positions[:, 2].mean() - exact) < 5 * 0.2 / np.sqrt(20_000)   # std of z here is < 0.2
    # (without the restart, min(ρ, bound) would be sampled: E[z] lower by ≈ 0.018, 20 standard errors)


def test_particles_coefficients_against_direct_harmonics():
    rng = np.random.default_rng(5)
    p = mf.Particles(rng.standard_normal((50, 3)), rng.random(50), normalize=True)
    c = mf.particles_coefficients(p, 6)
    direct = 4 * np.pi * (p.weights @ np.conj(ylm(6, p.positions)))
    assert np.max(np.abs(c - direct)) < 1e-12
    assert c[0] == pytest.approx(np.sqrt(4 * np.pi), rel=1e-13)      # Density.uniform's ρ̂_00 for unit mass
    q = mf.Particles(rng.standard_normal((40, 2)), normalize=True)
    phi = np.arctan2(q.positions[:, 1], q.positions[:, 0])
    c2 = mf.particles_coefficients(q, 4)
    assert np.allclose(c2, [np.mean(np.exp(-1j * k * phi)) for k in range(5)], rtol=0, atol=1e-14)


def test_coefficients_of_samples_converge_to_the_density():
    rho = mf.Density.from_function(lambda x: 1 + 0.6 * x[..., 2], 3)
    c = mf.particles_coefficients(mf.Particles.from_density(rho, N, seed=6), 3)
    # each coefficient is a mean of 4π conj(Y_ℓm), |4π Y_ℓm| ≤ √(4π(2ℓ+1)): 5 standard errors
    assert np.max(np.abs(c - rho.coeffs)) < 5 * np.sqrt(4 * np.pi * 7) / np.sqrt(N)


def test_bad_input():
    with pytest.raises(ValueError, match="takes negative values"):
        mf.sample_density(mf.Density.from_function(lambda x: x[..., 2], 2), 10)
    with pytest.raises(TypeError, match="`density` must be a meanfield.Density"):
        mf.sample_density(np.ones(3), 10)
    with pytest.raises(ValueError, match="`n` must be an integer >= 1"):
        mf.sample_density(mf.Density.uniform(2), 0)
    with pytest.raises(TypeError, match="`seed` must be"):
        mf.sample_density(mf.Density.uniform(2), 5, seed="abc")
    with pytest.raises(ValueError, match="on S² \\(d=3\\) or S¹ \\(d=2\\)"):
        mf.particles_coefficients(mf.Particles.uniform(5, d=4), 3)
    with pytest.raises(TypeError, match="`particles` must be meanfield.Particles"):
        mf.particles_coefficients(np.ones((3, 3)), 3)
    with pytest.raises(ValueError, match="no positive values"):
        mf.sample_density(mf.Density.from_function(lambda x: 0 * x[..., 2], 2), 10)


@pytest.mark.parametrize("make", [lambda s: mf.Density.random(8, seed=s), lambda s: mf.Particles.uniform(5, seed=s),
                                  lambda s: mf.Particles.from_density(mf.Density.uniform(4), 5, seed=s)])
def test_a_bool_is_not_a_seed(make):
    with pytest.raises(TypeError, match="`seed` must be None, an int"):
        make(True)


def test_a_concentrated_zonal_density_in_high_dimension_is_sampled_along_its_axis(monkeypatch):
    """g = e^{10(t−1)} on S^19 has max g / mass = 2266: uniform directions needed ~5.7e7 proposals of 20 numbers for
    20 000 tokens (19.6 GiB; at 50 000 tokens refused as 46 GiB).  Now t = ⟨x, e⟩ is drawn from its law ∝ g(t)(1 − t²)^{(d−3)/2}
    and the rest uniformly about the axis: checked against that law by quadrature (first two moments of t) and
    against the symmetry about the axis (a transverse coordinate has mean 0 and variance (1 − E t²)/(d − 1))."""
    import meanfield._sampling as smp
    from scipy.special import roots_jacobi

    d, kappa, n = 20, 10.0, 20_000
    real = smp._uniform_sphere

    def spy(rng, m, dim):
        assert m <= 100 * n, f"{m} uniform proposals for {n} tokens"
        return real(rng, m, dim)
    monkeypatch.setattr(smp, "_uniform_sphere", spy)
    axis = np.ones(d) / np.sqrt(d)
    z = mf.ZonalDensity.from_function(lambda t: np.exp(kappa * (t - 1)), 60, d=d, axis=axis, normalize=True)
    p = mf.sample_density(z, n, seed=5)
    x, w = roots_jacobi(200, (d - 3) / 2, (d - 3) / 2)
    w = w * np.exp(kappa * (x - 1))
    et, et2 = (w @ x) / w.sum(), (w @ x ** 2) / w.sum()
    t = p.positions @ axis
    v = np.zeros(d)
    v[0] = 1.0
    v = (v - (v @ axis) * axis) / np.linalg.norm(v - (v @ axis) * axis)
    s = p.positions @ v
    for sample, exact in ((t, et), (t ** 2, et2), (s, 0.0), (s ** 2, (1 - et2) / (d - 1))):
        assert abs(sample.mean() - exact) < 5 * sample.std() / np.sqrt(n)
    np.testing.assert_allclose(np.linalg.norm(p.positions, axis=1), 1.0, rtol=0, atol=4e-16)


@pytest.mark.parametrize("n", [3, 7, 11])
def test_species_keep_their_mass_shares_when_n_does_not_split_evenly(n):
    # masses 0.6 and 0.4 with n = 7: 4 and 3 tokens (largest remainder), weights 0.6/4 and 0.4/3, each species'
    # weights summing to its share.  Equal weights 1/n passed the test above, where n·0.6 is a whole number
    north = mf.Density.from_function(lambda x: (1 + 0.6 * x[..., 2]) * (1 + x[..., 2]) / 2, 6)
    south = mf.Density.from_function(lambda x: (1 + 0.6 * x[..., 2]) * (1 - x[..., 2]) / 2, 6)
    p = mf.sample_density([north, south], n, seed=1)
    counts = {3: (2, 1), 7: (4, 3), 11: (7, 4)}[n]
    np.testing.assert_allclose(p.weights[:counts[0]], 0.6 / counts[0], rtol=1e-14)
    np.testing.assert_allclose(p.weights[counts[0]:], 0.4 / counts[1], rtol=1e-14)
    assert p.weights.sum() == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("d", [3, 4])
def test_the_radius_of_a_zonal_density_follows_its_own_axis(d):
    # radius field r(t) = 2 + t of t = ⟨x, e⟩ about the axis e = e₁ (not the default e_d): each token's radius is
    # 2 + ⟨x, e⟩ (a degree-1 profile, exact to rounding).  Reading t as the last coordinate passed every test, whose
    # zonal densities with a radius field had the default axis
    axis = np.eye(d)[0]
    g = mf.ZonalDensity.from_function(lambda t: 1 + 0.5 * t, 4, d=d, axis=axis)
    r = mf.ZonalDensity.from_function(lambda t: 2 + t, 4, d=d)
    p = mf.sample_density(mf.ZonalDensity(g.coeffs, 4, d=d, axis=axis, radius=r.coeffs), 500, seed=1)
    np.testing.assert_allclose(p.radii, 2 + p.positions @ axis, rtol=0, atol=1e-13)


@pytest.mark.parametrize("d, lmax", [(64, 40), (1000, 100)])
def test_zonal_sampling_ignores_the_rounding_at_the_poles(d, lmax):
    # in high d the values near the poles are rounding (e^{5t} on S^999 at L = 100: −4e55 at t = 1): sampling refused
    # the density ("`density` takes negative values (min -4.18e+55 against max 1.87e+19 on a fine grid)"; S^63 at
    # L = 40: min -0.0203).  The mean of t = ⟨x, e⟩ is ∂_β log λ_0(β) at β = 5
    rho = mf.ZonalDensity.from_function(lambda t: np.exp(5 * t), lmax, d=d, normalize=True)
    t = mf.sample_density(rho, 4000, seed=3).positions @ rho.axis
    exact = mf.sphere.funk_hecke_dbeta(5.0, 0, d)[0] / mf.funk_hecke(5.0, 0, d)[0]
    assert abs(t.mean() - exact) < 4 * t.std() / np.sqrt(t.size)


def test_sampling_without_a_seed_is_reproducible_like_the_other_random_constructors():
    # Particles.uniform, Density.random, ensemble and configuration files default to seed 0; the samplers drew fresh
    # entropy (seed=None), so two calls without a seed gave other tokens while Particles.uniform gave the same
    rho = mf.Density.from_function(lambda x: 1.0 + 0.5 * x[..., 2], 4)
    first, again = mf.sample_density(rho, 50), mf.Particles.from_density(rho, 50)
    np.testing.assert_array_equal(first.positions, again.positions)
    np.testing.assert_array_equal(first.positions, mf.sample_density(rho, 50, seed=0).positions)
    fresh = [mf.sample_density(rho, 50, seed=None).positions for _ in range(2)]
    assert not np.array_equal(*fresh)
