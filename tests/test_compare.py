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


def test_iid_samples_converge_like_inverse_sqrt_n():
    dens = mf.Density.random(12, seed=1)
    ns = np.array([500, 2000, 8000, 32000])
    dist = [np.mean([sobolev_distance(dens, mf.sample_density(dens, int(n), seed=k)) for k in range(4)]) for n in ns]
    slope = np.polyfit(np.log(ns), np.log(dist), 1)[0]
    assert abs(slope + 0.5) < 0.1, slope


def test_errors():
    with pytest.raises(ValueError, match="`lmax`"):
        sobolev_distance(mf.Particles.uniform(3), mf.Particles.uniform(3))
    with pytest.raises(ValueError, match="same S"):
        sobolev_distance(mf.Density.uniform(4), mf.Density.uniform(4, d=2))
    with pytest.raises(ValueError, match="`s`"):
        sobolev_distance(mf.Density.uniform(4), mf.Density.uniform(4), s=0)


def test_a_difference_of_mass_counts_at_degree_zero():
    u = mf.Density.uniform(6)
    # μ − ν = σ (the normalized uniform measure): only its ℓ = 0 term, of weight 1 and power 1
    assert mf.sobolev_distance(mf.Density(2 * u.coeffs, 6), u) == pytest.approx(1.0, rel=1e-14)
    p = mf.Particles.uniform(50, seed=3)
    assert mf.sobolev_distance(p, p, lmax=8) == 0.0


@pytest.mark.parametrize("call, match", [
    (lambda u: mf.sobolev_distance(u, np.zeros(3)), r"`nu` must be a Density, Particles or a non-empty tuple"),
    (lambda u: mf.mmd((), u, 1.0), r"`mu` must be a Density, Particles or a non-empty tuple"),
    (lambda u: mf.mmd(u, (u, 3), 1.0), r"`nu` must be"),
])
def test_non_measures_are_refused_by_name(call, match):
    with pytest.raises(TypeError, match=match):
        call(mf.Density.uniform(4))
