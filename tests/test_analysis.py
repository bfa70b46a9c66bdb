"""meanfield.analysis: growth rates and the most unstable mode, the ℓ = 1 noise floor, equiangular hitting times,
clusters of particles and densities, pairwise alignment and the (β, t) phase diagram."""
import warnings

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage

import meanfield as mf
from meanfield import analysis

CONTINUOUS = sorted(name for name, s in mf.SCHEMES.items() if s.continuous)


# ------------------------------------------------------------------------------------------------
# growth rates, most unstable mode

def test_growth_rate_reference_values():
    """The reference values (docs/validation.md), through the public function: d = 2 USA and d = 3 SA at β = 1, ℓ = 1..4 (six digits given)."""
    usa2 = [mf.growth_rate(1.0, ell, 2, "unnormalized") for ell in range(1, 5)]
    sa3 = [mf.growth_rate(1.0, ell, 3, "softmax") for ell in range(1, 5)]
    np.testing.assert_allclose(usa2, [0.565159, 0.542991, 0.199516, 0.043794], rtol=0, atol=5e-7)
    np.testing.assert_allclose(sa3, [0.626071, 0.365365, 0.102775, 0.018843], rtol=0, atol=5e-7)


def _bessel_rate(beta, ell, d, softmax, speed):
    """γ_ℓ written out with Bessel functions (λ_ℓ = Γ(d/2)(2/β)^{d/2−1} I_{ℓ+d/2−1}(β)), independent of the package."""
    from scipy.special import gammaln, ive
    nu = d / 2 - 1
    log_lam0 = gammaln(d / 2) + nu * np.log(2 / beta) + np.log(ive(nu, beta)) + beta
    ratio = ive(ell + nu, beta) / ive(nu, beta)
    lam = ratio if softmax else ratio * np.exp(log_lam0)
    return ell * (ell + d - 2) * lam / (beta * speed)


@pytest.mark.parametrize("d", [2, 3, 5, 8])
@pytest.mark.parametrize("attention", ["softmax", "unnormalized"])
def test_growth_rates_match_the_bessel_closed_form(d, attention):
    """Every degree and every continuous scheme's speed at the uniform state, written from docs/model.md's scheme table:
    ‖A‖ = I_{d/2}(β)/I_{d/2−1}(β) (SA; times λ_0 for USA), rtol from ive's ~1e-15 per factor."""
    from scipy.special import gammaln, ive
    beta, r0, alpha, t = 3.0, 1.7, 0.4, 0.6
    softmax = attention == "softmax"
    nu = d / 2 - 1
    a_norm = ive(nu + 1, beta) / ive(nu, beta)
    if not softmax:
        a_norm *= np.exp(gammaln(d / 2) + nu * np.log(2 / beta) + np.log(ive(nu, beta)) + beta)
    speeds = {"post-ln": (1.0, {}), "pre-ln": (r0, dict(r0=r0)), "qkv-norm": (r0, dict(r0=r0)),
              "peri-ln": (r0 * a_norm, dict(r0=r0)), "ngpt": (a_norm / alpha, dict(alpha=alpha)),
              "ln-scaling": (np.sqrt(t + 1), {}), "mix-ln": (r0, dict(r0=r0, tau=0.5))}
    assert set(speeds) == set(CONTINUOUS)
    for scheme, (speed, kw) in speeds.items():
        rates = mf.growth_rates(beta, 12, d, attention, scheme=scheme, t=t, **kw)
        expected = [0.0] + [_bessel_rate(beta, ell, d, softmax, speed) for ell in range(1, 13)]
        np.testing.assert_allclose(rates, expected, rtol=1e-13, atol=0, err_msg=scheme)
        assert mf.growth_rate(beta, 5, d, attention, scheme=scheme, t=t, **kw) == rates[5]


@pytest.mark.parametrize("beta", [0.3, 1.0, 4.0, 10.0, 20.0, 40.0, 120.0])
@pytest.mark.parametrize("d", [2, 3, 5])
@pytest.mark.parametrize("attention", ["softmax", "unnormalized"])
def test_most_unstable_mode_is_the_brute_force_argmax(beta, d, attention):
    ells = np.arange(1, 121)
    brute = [mf.growth_rate(beta, int(ell), d, attention) for ell in ells]
    mode = mf.most_unstable_mode(beta, d, attention)
    assert mode.ell == int(ells[np.argmax(brute)])
    assert mode.rate == pytest.approx(max(brute), rel=1e-13)


def test_most_unstable_mode_values_and_scheme():
    assert mf.most_unstable_mode(1.0).ell == 1
    assert mf.most_unstable_mode(10.0).ell == 4
    assert mf.most_unstable_mode(20.0).ell == 6
    # the speed factor does not depend on ℓ: same degree for every scheme, rates divided by s
    post = mf.most_unstable_mode(10.0)
    for scheme in CONTINUOUS:
        tau = 1.0 if scheme == "mix-ln" else None
        assert mf.most_unstable_mode(10.0, scheme=scheme, t=0.5, tau=tau).ell == post.ell
    peri = mf.most_unstable_mode(10.0, scheme="peri-ln", r0=2.0)
    assert peri.rate == pytest.approx(mf.growth_rate(10.0, post.ell, scheme="peri-ln", r0=2.0), rel=1e-14)


def test_mix_ln_rate_switches_at_tau():
    # Post-LN's rate until τ, Pre-LN's (speed r0) after; τ is required, as in Model
    for t, like in ((0.5, dict(scheme="post-ln")), (5.0, dict(scheme="pre-ln", r0=2.0))):
        assert mf.growth_rate(1.0, 2, scheme="mix-ln", r0=2.0, t=t, tau=1.0) == pytest.approx(
            mf.growth_rate(1.0, 2, **like), rel=1e-15)
    # parameters a scheme does not use are refused, as Model refuses them
    with pytest.raises(ValueError, match=r"`r0` is only used by the schemes with a radius .* scheme='post-ln'"):
        mf.growth_rate(1.0, 2, scheme="post-ln", r0=2.0)
    with pytest.raises(ValueError, match=r"`alpha` is only used by scheme='angpt' or 'ngpt'"):
        mf.growth_rates(1.0, 2, scheme="pre-ln", alpha=3.0)
    with pytest.raises(ValueError, match="`tau`.*required"):
        mf.growth_rate(1.0, 2, scheme="mix-ln")
    with pytest.raises(ValueError, match="`tau` is only used"):
        mf.growth_rates(1.0, 4, tau=1.0)


def test_growth_and_mode_errors_name_the_parameter():
    with pytest.raises(ValueError, match="`beta`"):
        mf.most_unstable_mode(-1.0)
    with pytest.raises(ValueError, match="`lmax`"):
        mf.growth_rates(1.0, 0)
    with pytest.raises(ValueError, match="`scheme`"):
        mf.most_unstable_mode(1.0, scheme="angpt")
    with pytest.raises(ValueError, match="`attention`"):
        mf.growth_rates(1.0, 4, attention="hard")
    with pytest.raises(ValueError, match="`r0`"):
        mf.growth_rates(1.0, 4, scheme="pre-ln", r0=0.0)


# ------------------------------------------------------------------------------------------------
# the ℓ = 1 noise floor

def test_l1_noise_threshold_rms_is_exact_and_quantile_covers():
    assert mf.l1_noise_threshold(400) == pytest.approx(0.05, rel=1e-15)
    rng = np.random.default_rng(0)
    for d in (3, 5):
        n, R = 300, 3000
        x = rng.standard_normal((R, n, d))
        x /= np.linalg.norm(x, axis=2, keepdims=True)
        m2 = np.sum(x.mean(axis=1) ** 2, axis=1)
        # E[n|m|²] = 1 exactly: within 4 standard errors of the Monte Carlo mean
        assert abs(np.mean(n * m2) - 1.0) < 4 * np.std(n * m2) / np.sqrt(R)
        for q in (0.5, 0.9, 0.99):
            thr = mf.l1_noise_threshold(n, d, quantile=q)
            cover = np.mean(np.sqrt(m2) <= thr)
            assert abs(cover - q) < 4 * np.sqrt(q * (1 - q) / R) + 2.0 / n   # MC error + O(1/n) CLT error


def test_l1_noise_time():
    gamma = mf.growth_rate(1.0, 1)
    assert mf.l1_noise_time(1.0, 10_000, 0.1) == pytest.approx(np.log(0.1 / 0.01) / gamma, rel=1e-14)
    thr = mf.l1_noise_threshold(10_000, quantile=0.95)
    assert mf.l1_noise_time(1.0, 10_000, 0.1, quantile=0.95) == pytest.approx(np.log(0.1 / thr) / gamma, rel=1e-14)
    assert mf.l1_noise_time(1.0, 100, 0.05) == 0.0          # below the noise floor already
    nm = mf.l1_noise_time(2.0, 1000, 0.2, scheme="ngpt", alpha=0.5)
    assert nm == pytest.approx(np.log(0.2 * np.sqrt(1000)) / mf.growth_rate(2.0, 1, scheme="ngpt", alpha=0.5))


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=0), "`n`"), (dict(n=10, quantile=1.5), "`quantile`"), (dict(n=10, quantile=0.0), "`quantile`"),
    (dict(n=10, d=1), "`d`")])
def test_l1_noise_threshold_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mf.l1_noise_threshold(**kwargs)


def test_l1_noise_time_errors():
    with pytest.raises(ValueError, match="`amplitude`"):
        mf.l1_noise_time(1.0, 100, 1.5)
    with pytest.raises(ValueError, match="`amplitude`"):
        mf.l1_noise_time(1.0, 100, 0.0)


# ------------------------------------------------------------------------------------------------
# equiangular hitting times

@pytest.mark.parametrize("scheme", CONTINUOUS)
def test_equiangular_time_hits_the_levels(scheme):
    tau = 1.0 if scheme == "mix-ln" else None
    levels = np.array([0.2, 0.6, 0.95])
    t = mf.equiangular_time(scheme, 3.0, 6, levels, tau=tau)
    assert np.all(np.diff(t) > 0)
    rho, _ = mf.equiangular(scheme, 3.0, 6, t, tau=tau)
    assert np.max(np.abs(rho - levels)) < 1e-9
    assert isinstance(mf.equiangular_time(scheme, 3.0, 6, 0.6, tau=tau), float)


def test_equiangular_time_closed_form_and_limits():
    # β = 0, Post-LN: ρ(t) = (e^{2t} − 1)/(e^{2t} + n − 1)  ⇒  t(ρ) = ½ ln((1 + (n−1)ρ)/(1 − ρ))
    n, rho = 5, np.array([0.1, 0.5, 0.9])
    assert np.allclose(mf.equiangular_time("post-ln", 0.0, n, rho), 0.5 * np.log((1 + (n - 1) * rho) / (1 - rho)),
                       rtol=1e-10, atol=0)
    assert mf.equiangular_time("post-ln", 5.0, 256, 0.5, t_max=1.0) == np.inf
    with pytest.raises(ValueError, match="`rho`"):
        mf.equiangular_time("post-ln", 1.0, 4, 1.0)
    with pytest.raises(ValueError, match="`rho`"):
        mf.equiangular_time("post-ln", 1.0, 4, [0.5], rho0=0.6)
    with pytest.raises(ValueError, match="`t_max`"):
        mf.equiangular_time("post-ln", 1.0, 4, 0.5, t_max=0)
    with pytest.raises(mf.UnsupportedModelError, match="angpt"):
        mf.equiangular_time("angpt", 1.0, 4, 0.5)


# ------------------------------------------------------------------------------------------------
# clusters of particles

def _clustered(sizes, d=3, width=1e-4, seed=0, weights=None):
    rng = np.random.default_rng(seed)
    k = len(sizes)
    while True:                     # centers at least 0.5 rad apart
        c = rng.standard_normal((k, d))
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        g = c @ c.T - 2 * np.eye(k)
        if k == 1 or g.max() < np.cos(0.5):
            break
    x = np.repeat(c, sizes, axis=0) + width * rng.standard_normal((sum(sizes), d))
    return mf.Particles(x, weights, normalize=True), c


@pytest.mark.parametrize("d", [2, 3, 7])
def test_particle_clusters_known_counts_and_masses(d):
    sizes = [50, 30, 15, 5] if d > 2 else [60, 40]
    p, centers = _clustered(sizes, d)
    cl = mf.particle_clusters(p, angle=0.05)
    assert cl.count == len(sizes)
    assert np.allclose(cl.masses, np.sort(sizes)[::-1] / sum(sizes))
    assert np.array_equal(cl.sizes, np.sort(sizes)[::-1])
    # labels are consistent with the construction (and sorted by mass)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    assert len(set(zip(truth, cl.labels))) == len(sizes)
    for j, c in enumerate(cl.centers):
        assert np.max(c @ centers.T) > 1 - 1e-6
    assert mf.cluster_count(p, angle=0.05) == len(sizes)
    assert mf.particle_clusters(p, angle=np.pi).count == 1


def test_particle_clusters_weighted_and_collapsed():
    rng = np.random.default_rng(1)
    p, _ = _clustered([4000, 3000, 1], width=1e-9, weights=rng.random(7001))
    cl = mf.particle_clusters(p, angle=0.01)
    assert cl.count == 3
    w = p.weights
    assert np.isclose(cl.masses.sum(), 1.0)
    assert np.allclose(np.sort(cl.masses)[::-1], cl.masses)
    assert cl.count_above(1e-3) == 2                           # the singleton weighs < 2/7001
    assert np.isclose(cl.masses[cl.labels[0]], w[cl.labels == cl.labels[0]].sum())


def test_particle_clusters_single_linkage_chains():
    # points along a great circle spaced 0.04 apart: one cluster at angle 0.05, singletons at 0.03
    phi = 0.04 * np.arange(40)
    p = mf.Particles(np.stack([np.cos(phi), np.sin(phi), 0 * phi], axis=1))
    assert mf.particle_clusters(p, angle=0.05).count == 1
    assert mf.particle_clusters(p, angle=0.03).count == 40


@pytest.mark.parametrize("d", [2, 3, 6, 7, 12])
@pytest.mark.parametrize("angle", [0.05, 0.2, 0.6])
def test_particle_clusters_match_scipy_single_linkage(d, angle):
    p = mf.Particles.uniform(400, d, seed=int(100 * angle) + d)
    cl = mf.particle_clusters(p, angle)
    ref = fcluster(linkage(p.positions, "single"), 2 * np.sin(angle / 2), criterion="distance")
    pairs = set(zip(cl.labels, ref))
    assert len(pairs) == cl.count == len(set(ref))


@pytest.mark.parametrize("d", [3, 9])
def test_neighbour_indexes_agree(d):
    # the KD-tree and the Gram blocks answer every query of the cluster search alike, on dispersed and
    # collapsed tokens (Gram candidates are decided on the chord, as the tree decides)
    from meanfield.analysis._neighbours import GramIndex, TreeIndex

    rng = np.random.default_rng(d)
    x = rng.standard_normal((600, d))
    x[:300] = x[0] + 1e-3 * rng.standard_normal((300, d))     # a tight cluster, and dispersed tokens
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    tree, gram = TreeIndex(x), GramIndex(x)
    mixed = []                                                      # some "near" flags true, some false
    for h in (0.05, 0.4, 1.2):
        rows = np.arange(0, 600, 7)
        assert np.array_equal(tree.counts(rows, h), gram.counts(rows, h))
        for b1, b2 in zip(tree.balls(rows, h), gram.balls(rows, h), strict=True):
            assert np.array_equal(np.sort(b1), np.sort(b2))
        as_set = lambda p: set(map(tuple, p))                       # noqa: E731
        assert as_set(tree.pairs(h)) == as_set(gram.pairs(h))
        k1, j1, n1 = tree.around(rows, h, 0.6 * h)
        k2, j2, n2 = gram.around(rows, h, 0.6 * h)
        o1, o2 = np.lexsort((j1, k1)), np.lexsort((j2, k2))
        assert np.array_equal(k1[o1], k2[o2]) and np.array_equal(j1[o1], j2[o2])
        assert np.array_equal(n1[o1], n2[o2])
        mixed.append(0 < n1.sum() < n1.size)
        members, queries = np.arange(0, 300, 3), np.arange(290, 600)
        assert np.allclose(tree.nearest(members, queries, h), gram.nearest(members, queries, h), rtol=0, atol=1e-15)
    assert any(mixed)


def test_particle_clusters_errors():
    p = mf.Particles.uniform(10)
    with pytest.raises(ValueError, match="`angle`"):
        mf.particle_clusters(p, angle=0.0)
    with pytest.raises(ValueError, match="`angle`"):
        mf.particle_clusters(p, angle=4.0)
    with pytest.raises(TypeError, match="`particles`"):
        mf.particle_clusters(np.zeros((3, 3)))
    with pytest.raises(TypeError, match="`measure`"):
        mf.cluster_count([1, 2])
    # an option of the other measure type: Python's "unexpected keyword argument 'min_mass'" named neither
    with pytest.raises(TypeError, match=r"\['min_mass'\] do not apply to Particles .* valid: \['angle'\]"):
        mf.cluster_count(p, min_mass=0.1)
    with pytest.raises(TypeError, match=r"\['angle'\] do not apply to Density .* valid: \['min_mass', 'level', "
                                        r"'resolution'\]"):
        mf.cluster_count(mf.Density.uniform(8), angle=0.1)
    with pytest.raises(ValueError, match="`min_mass`"):
        mf.particle_clusters(p).count_above(-1)


# ------------------------------------------------------------------------------------------------
# clusters of densities

def _bumps(centers, weights, kappa, lmax, d=3):
    centers = np.asarray(centers, dtype=float)
    return mf.Density.from_function(lambda x: sum(w * np.exp(kappa * (x @ c - 1)) for w, c in zip(weights, centers)),
                                    lmax, d, normalize=True)


def test_density_clusters_three_bumps():
    centers = np.array([[0, 0, 1.0], [1, 0, 0], [0, -1, 0]])
    # von Mises–Fisher bumps of equal concentration: the masses are the weights (up to exp(−2κ) overlaps)
    rho = _bumps(centers, [0.5, 0.3, 0.2], 30.0, 64)
    cl = mf.density_clusters(rho)
    assert cl.count == 3
    assert np.allclose(cl.masses, [0.5, 0.3, 0.2], atol=1e-6)
    spacing = np.pi / (1.5 * 2 * 64)                # ring spacing of the evaluation grid (2L)
    assert np.all(np.arccos(np.clip(np.sum(cl.centers * centers, axis=1), -1, 1)) < 2 * spacing)
    assert cl.labels.shape == cl.nodes.shape[:-1]
    assert mf.cluster_count(rho) == 3
    # `level` removes the background: masses count only nodes where ρ ≥ level
    hi = mf.density_clusters(rho, level=5.0)
    assert hi.count == 3 and np.all(hi.masses < cl.masses) and np.all(hi.labels[rho.on_grid(_grid(rho)) < 5.0] == -1)


def _grid(rho):
    from meanfield.sphere import SphereGrid
    return SphereGrid.for_bandlimit(max(2 * rho.lmax, 32))


def test_density_clusters_uniform_single_hump_and_circle():
    assert mf.density_clusters(mf.Density.uniform(16)).count == 0
    assert mf.density_clusters(mf.Density.uniform(16, d=2)).count == 0
    hump = mf.Density.from_function(lambda x: 1 + 0.3 * x[..., 2], 8)
    cl = mf.density_clusters(hump)
    assert cl.count == 1 and cl.masses[0] == pytest.approx(1.0, abs=1e-12)
    assert cl.centers[0] @ [0, 0, 1] > 1 - 1e-12     # the polar plateau of the grid is one maximum
    two = _bumps([[1, 0], [-1, 0]], [0.7, 0.3], 20.0, 48, d=2)
    cl = mf.density_clusters(two)
    assert cl.count == 2 and np.allclose(cl.masses, [0.7, 0.3], atol=1e-6)
    assert np.allclose(cl.centers, [[1, 0], [-1, 0]], atol=1e-12)
    # min_mass drops small basins
    three = _bumps([[1, 0], [-1, 0], [0, 1]], [0.6, 0.395, 0.005], 40.0, 64, d=2)
    assert mf.density_clusters(three, min_mass=0.0).count >= 3
    assert mf.density_clusters(three, min_mass=0.01).count == 2


def test_density_clusters_errors():
    rho = mf.Density.uniform(4)
    with pytest.raises(ValueError, match="`min_mass`"):
        mf.density_clusters(rho, min_mass=2.0)
    with pytest.raises(ValueError, match="`level`"):
        mf.density_clusters(rho, level=np.nan)
    with pytest.raises(ValueError, match="`resolution`"):
        mf.density_clusters(rho, resolution=0)
    with pytest.raises(TypeError, match="`density`"):
        mf.density_clusters(mf.ZonalDensity.uniform(4, d=5))


# ------------------------------------------------------------------------------------------------
# pairwise alignment

def _brute(x, w, delta):
    g = x @ x.T
    off = ~np.eye(len(x), dtype=bool)
    ww = np.outer(w, w)[off]
    return float(ww @ g[off] / ww.sum()), float(ww @ (g[off] >= 1 - delta) / ww.sum())


@pytest.mark.parametrize("d", [2, 3, 8])
@pytest.mark.parametrize("method", ["auto", "tree", "direct"])
def test_alignment_statistics_particles_vs_brute_force(d, method):
    rng = np.random.default_rng(d)
    p, _ = _clustered([30, 20, 10], d, width=0.05, seed=d, weights=rng.random(60) + 0.1)
    for delta in (1e-3, 0.05, 0.5, 2.0):
        st = mf.alignment_statistics(p, delta, method=method, chunk=7)
        mean, frac = _brute(p.positions, p.weights, delta)
        assert st.mean_alignment == pytest.approx(mean, abs=1e-13)
        assert st.aligned_fraction == pytest.approx(frac, abs=1e-12)
        assert st.delta == delta
    assert mf.aligned_fraction(p, 2.0) == pytest.approx(1.0)
    assert mf.alignment_statistics(mf.Particles(np.eye(3)[:1])).aligned_fraction == 1.0   # one token


@pytest.mark.parametrize("method", ["tree", "direct"])
def test_unequal_weights_with_no_aligned_pair_give_exactly_zero(method):
    """The weighted sum and w·w rounded apart: 20 scattered tokens with random weights gave 1.48e-17, not 0."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 3))
    w = rng.random(20)
    p = mf.Particles(x / np.linalg.norm(x, axis=1)[:, None], w / w.sum())     # the reviewer's case
    g = p.positions @ p.positions.T
    assert np.max(g[~np.eye(20, dtype=bool)]) < 1 - 1e-2        # no pair within the default δ = 0.01
    assert mf.alignment_statistics(p, method=method).aligned_fraction == 0.0
    two = mf.Particles(np.r_[p.positions[:19], p.positions[:1]], p.weights)        # one aligned pair: resolved
    assert mf.alignment_statistics(two, 1e-3, method=method).aligned_fraction == pytest.approx(
        _brute(two.positions, two.weights, 1e-3)[1], rel=1e-12)


def test_alignment_statistics_density_exact_values():
    for delta in (0.01, 0.3, 1.0, 2.0):
        st = mf.alignment_statistics(mf.Density.uniform(8), delta)
        assert st.mean_alignment == 0.0 and st.aligned_fraction == pytest.approx(delta / 2, rel=1e-14)
        st1 = mf.alignment_statistics(mf.Density.uniform(8, d=2), delta)
        assert st1.aligned_fraction == pytest.approx(np.arccos(1 - delta) / np.pi, rel=1e-14)
    # ρ = 1 + 3⟨a, x⟩ on S² has mean vector a: mean alignment |a|²
    a = np.array([0.1, -0.2, 0.15])
    rho = mf.Density.from_function(lambda x: 1 + 3 * x @ a, 4)
    assert mf.alignment_statistics(rho).mean_alignment == pytest.approx(a @ a, rel=1e-12)
    rho2 = mf.Density.from_function(lambda x: 1 + 2 * x @ a[:2], 4, d=2)
    assert mf.alignment_statistics(rho2).mean_alignment == pytest.approx(a[:2] @ a[:2], rel=1e-12)


@pytest.mark.parametrize("d", [2, 3])
def test_alignment_statistics_density_vs_samples(d):
    f = (lambda x: np.exp(3 * x[..., -1] + x[..., 0]))
    rho = mf.Density.from_function(f, 32, d=d, normalize=True)
    exact = mf.alignment_statistics(rho, 0.1)
    p = mf.sample_density(rho, 20_000, seed=3)
    st = mf.alignment_statistics(p, 0.1)
    # U-statistics of 20 000 samples: standard deviation ≤ √(4 max g · F / N) ≈ 0.003 (g the cap mass)
    assert st.aligned_fraction == pytest.approx(exact.aligned_fraction, abs=0.012)
    assert st.mean_alignment == pytest.approx(exact.mean_alignment, abs=0.02)


def test_alignment_errors():
    p = mf.Particles.uniform(5)
    with pytest.raises(ValueError, match="`delta`"):
        mf.alignment_statistics(p, 0.0)
    with pytest.raises(ValueError, match="`delta`"):
        mf.aligned_fraction(p, 2.5)
    with pytest.raises(ValueError, match="`method`"):
        mf.alignment_statistics(p, method="fast")
    with pytest.raises(ValueError, match="`chunk`"):
        mf.alignment_statistics(p, chunk=0)
    with pytest.raises(TypeError, match="`measure`"):
        mf.alignment_statistics("tokens")


@pytest.mark.parametrize("measure", [mf.Particles.uniform(5), mf.Density.uniform(4)])
def test_alignment_options_are_checked_for_every_measure(measure):
    # method and chunk were checked only for particles: a Density took method="fast" and chunk="x" without a word;
    # an array as method raised numpy's "truth value of an array is ambiguous"
    with pytest.raises(ValueError, match="`method` must be one of"):
        mf.alignment_statistics(measure, method="fast")
    with pytest.raises(TypeError, match="`method` must be one of"):
        mf.aligned_fraction(measure, method=np.array(["auto", "tree"]))
    with pytest.raises(TypeError, match="`chunk`"):
        mf.alignment_statistics(measure, chunk="x")


# ------------------------------------------------------------------------------------------------
# the (β, t) phase diagram

def test_phase_diagram_shape_and_common_start():
    betas, times = [1.0, 4.0, 16.0], [0.0, 1.0, 2.0, 8.0]
    F = mf.alignment_phase_diagram(betas, times, n=24, delta=0.05, seed=3)
    assert F.shape == (3, 4)
    assert np.all((F >= 0) & (F <= 1))
    assert np.all(F[:, 0] == F[0, 0])                          # the same initial tokens for every β
    assert F[0, -1] == pytest.approx(1.0)                      # β = 1: one cluster by t = 8
    G = mf.alignment_phase_diagram(betas[:1], times[1:], n=24, delta=0.05, seed=3)
    assert np.allclose(G[0], F[0, 1:])                         # t = 0 is optional


@pytest.mark.parametrize("method", ["tree", "direct"])
def test_no_aligned_pair_gives_exactly_zero_and_all_give_one(method):
    # equal weights are counted in integers: (count − n)/(n(n − 1)); the float (total − w·w)/(1 − w·w) left 3e-17
    # where BLAS's w·w rounds differently from n/n² (n = 6 with OpenBLAS's AVX-512 kernel)
    for n in range(2, 40):
        apart = mf.Particles(np.eye(n))
        assert mf.aligned_fraction(apart, 0.5, method=method) == 0.0
        together = mf.Particles(np.tile(np.eye(n)[:1], (n, 1)))
        assert mf.aligned_fraction(together, 0.5, method=method) == 1.0


def test_phase_diagram_is_monotone_and_exact_for_the_equiangular_start():
    # n orthonormal tokens stay equiangular: F is 1[ρ(t) ≥ 1 − δ], nondecreasing in t and nonincreasing in β
    # (SA Post-LN: dρ/dt = 2b(1−ρ)(1+(n−1)ρ), b = e^{β(ρ−1)}/(1 + (n−1)e^{β(ρ−1)} decreases with β)
    n, delta = 6, 0.05
    betas, times = np.array([0.5, 2.0, 4.0, 8.0]), np.array([0.0, 1.0, 2.0, 3.0, 4.0, 6.0])
    start = mf.Particles(np.eye(n))
    F = mf.alignment_phase_diagram(betas, times, initial=start, delta=delta, rtol=1e-10, atol=1e-12)
    assert np.all(np.diff(F, axis=1) >= 0) and np.all(np.diff(F, axis=0) <= 0)
    hit = np.array([mf.equiangular_time("post-ln", b, n, 1 - delta) for b in betas])
    assert np.array_equal(F, (times[None, :] >= hit[:, None]).astype(float))
    assert 0 < F.sum() < F.size


def test_phase_diagram_errors():
    with pytest.raises(ValueError, match="`betas`"):
        mf.alignment_phase_diagram([-1.0], [1.0])
    with pytest.raises(ValueError, match="`times`"):
        mf.alignment_phase_diagram([1.0], [2.0, 1.0])
    with pytest.raises(ValueError, match="`times`"):
        mf.alignment_phase_diagram([1.0], [0.0])
    with pytest.raises(ValueError, match="`delta`"):
        mf.alignment_phase_diagram([1.0], [1.0], delta=3.0)
    with pytest.raises(ValueError, match="`replicas`"):
        mf.alignment_phase_diagram([1.0], [1.0], replicas=0)
    with pytest.raises(TypeError, match="`initial`"):
        mf.alignment_phase_diagram([1.0], [1.0], initial=np.eye(3))
    with pytest.raises(TypeError, match="`seed`"):
        mf.alignment_phase_diagram([1.0], [1.0], seed="abc")
    # not numbers: numpy's "could not convert string to float: 'a'" named neither argument
    with pytest.raises(ValueError, match="`betas` must be numbers"):
        mf.alignment_phase_diagram(["a"], [1.0])
    with pytest.raises(ValueError, match="`times` must be numbers"):
        mf.alignment_phase_diagram([1.0], "x")


def test_analysis_names_are_exported():
    for name in ("growth_rate", "growth_rates", "most_unstable_mode", "l1_noise_threshold", "l1_noise_time",
                 "equiangular", "equiangular_time", "particle_clusters", "density_clusters", "cluster_count",
                 "alignment_statistics", "aligned_fraction", "alignment_phase_diagram", "Clusters",
                 "AlignmentStatistics", "UnstableMode"):
        assert getattr(mf, name) is getattr(analysis, name)


@pytest.mark.parametrize("scheme, beta, n, levels, kw", [
    ("post-ln", 5.0, 2, 0.5, {}), ("post-ln", 5.0, 2, [0.5, 0.6], {}),
    ("pre-ln", 2.0, 4, [0.3, 0.7], dict(r0=0.2, attention="usa")),
])
def test_equiangular_time_reaches_the_highest_level(scheme, beta, n, levels, kw):
    # the terminal event can stop a rounding error below the highest level: that level is still reached
    t = np.atleast_1d(mf.equiangular_time(scheme, beta, n, levels, **kw))
    assert np.all(np.isfinite(t))
    rho, _ = mf.equiangular(scheme, beta, n, t, **kw)
    assert np.max(np.abs(rho - np.atleast_1d(levels))) < 1e-10


@pytest.mark.parametrize("scheme", ["peri-ln", "ngpt"])
@pytest.mark.parametrize("beta", [1.0, 700.0, 720.0, 5000.0])
def test_usa_rates_of_the_schemes_that_divide_by_the_norm_do_not_overflow(scheme, beta):
    # s ∝ ‖A‖: the normalization cancels, γ_ℓ(USA) = γ_ℓ(SA); for ℓ = 1, ‖A‖ = λ_1/λ_0 gives γ_1 = 2/(β·c), c = r0 or 1/α
    usa = mf.growth_rates(beta, 6, attention="unnormalized", scheme=scheme)
    sa = mf.growth_rates(beta, 6, scheme=scheme)
    assert np.all(np.isfinite(usa)) and usa[0] == 0.0
    assert np.allclose(usa, sa, rtol=1e-14, atol=0)
    assert usa[1] == pytest.approx(2 / beta, rel=1e-13, abs=0)


def test_usa_rates_beyond_float64_are_refused_where_they_overflow():
    with pytest.raises(ValueError, match=r"attention='unnormalized' with scheme='post-ln' needs β ≤ 709.78"):
        mf.growth_rates(800.0, 3, attention="unnormalized")
    assert np.isfinite(mf.growth_rate(709.0, 1, attention="unnormalized"))


def test_density_clusters_of_an_under_resolved_density_count_signed_basin_mass():
    """Five Diracs at L = 40: the Gibbs ripples dip below 0. Counting the positive part only gave each ripple
    basin 0.01–0.03 (45 clusters, masses summing to 2.0); the signed mass finds the five."""
    from meanfield.sphere import adjoint_synthesis_points
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((5, 3))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    weights = np.array([0.1, 0.3, 0.15, 0.25, 0.2])
    dens = mf.Density.from_coefficients(adjoint_synthesis_points(4 * np.pi * weights, centers, 40), 40)
    assert dens.on_grid().min() < -0.1                       # not a measure: ripples below zero
    cl = mf.density_clusters(dens)
    assert cl.count == 5
    found = np.argmax(cl.centers @ centers.T, axis=1)        # each cluster near a different Dirac
    assert sorted(found) == list(range(5))
    with pytest.raises(ValueError, match="`level` must be a finite number"):
        mf.density_clusters(dens, level="x")


def test_aligned_fraction_of_a_density_below_zero_is_clipped_with_a_warning():
    from meanfield.sphere import adjoint_synthesis_points
    dirac = mf.Density.from_coefficients(adjoint_synthesis_points(np.array([4 * np.pi]), np.array([[0, 0, 1.0]]), 20), 20)
    with pytest.warns(mf.MeanfieldWarning, match=r"series is 1.25, outside \[0, 1\]"):
        assert mf.aligned_fraction(dirac, 0.01) == 1.0


def test_phase_diagram_does_not_advance_the_callers_seed_sequence():
    seed = np.random.SeedSequence(3)
    a = analysis.alignment_phase_diagram([1.0], [0.0, 0.1], n=16, seed=seed, delta=0.5)
    b = analysis.alignment_phase_diagram([1.0], [0.0, 0.1], n=16, seed=seed, delta=0.5)
    np.testing.assert_array_equal(a, b)


def test_l1_noise_quantile_is_at_most_one():
    assert mf.l1_noise_threshold(1, 3, 0.95) == 1.0          # |m| = 1 for one token; the asymptotic formula gave 1.61
    assert mf.l1_noise_threshold(2, 2, 0.95) == 1.0
    assert mf.l1_noise_threshold(1000, 3, 0.95) == pytest.approx(np.sqrt(7.814727903251178 / 3000), rel=1e-12)


def test_gram_index_links_at_tiny_angles():
    # at chords ~1e-8 every Gram entry is 1.0 to rounding: the nearest member was picked at random and a chain
    # of tokens 0.95 r apart split in two in d = 7 (one cluster for the tree in d = 6 and before)
    r = 2 * np.sin(0.5e-8)
    for d in (6, 7, 12):
        s = np.concatenate([np.linspace(0, 0.45 * r, 1500), np.linspace(1.4 * r, 1.85 * r, 1500)])
        x = np.zeros((s.size, d))
        x[:, 0], x[:, 1] = np.cos(s), np.sin(s)
        assert mf.particle_clusters(mf.Particles(x), 1e-8).count == 1
        assert mf.particle_clusters(mf.Particles(x), 0.9e-8).count == 2


def test_density_clusters_below_the_band_limit_are_those_of_the_truncated_density():
    # as documented: resolution < lmax truncates the density first.  Its coarse grid has no node near the pole, where
    # the truncated bump peaks (24.34), and two nodes at (−0.11, ±0.139, 0.984) with no valley between them were two
    # clusters (0.364 and 0.315); they are one, as the bump
    def bumps(x):
        return sum(m * 20 / np.sinh(20) * np.exp(20 * (x @ c)) for m, c in ((0.7, [0, 0, 1.0]), (0.3, [1.0, 0, 0])))
    dens = mf.Density.from_function(bumps, 48)
    assert mf.density_clusters(dens).masses == pytest.approx([0.7, 0.3], abs=1e-4)
    coarse, truncated = mf.density_clusters(dens, resolution=8), mf.density_clusters(dens.resized(8), resolution=8)
    assert np.array_equal(coarse.masses, truncated.masses) and coarse.count == 2
    assert coarse.masses == pytest.approx([0.679, 0.293], abs=1e-3)


def test_zero_weight_tokens_form_zero_mass_clusters_that_count_above_skips():
    x = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1e-3, 0]])
    c = mf.particle_clusters(mf.Particles(x, weights=[0.5, 0.5, 0.0, 0.0], normalize=True), 0.1)
    assert c.count == 3 and c.count_above(1e-300) == 2
    assert np.array_equal(c.masses, [0.5, 0.5, 0.0]) and np.allclose(c.centers[2], [0, 0, 1])
    assert c.labels[3] == c.labels[0]       # a zero-weight token joins the cluster it is linked to


def test_a_cluster_of_zero_weight_tokens_is_centred_on_their_plain_mean():
    """As the docstring of particle_clusters says; it was the first token's position (its weighted mean is 0/0)."""
    a = 0.05
    x = np.array([[0, 0, 1.0], [1.0, 0, 0], [np.cos(a), np.sin(a), 0]])
    c = mf.particle_clusters(mf.Particles(x, weights=[1.0, 0.0, 0.0]), angle=0.1)
    assert np.array_equal(c.masses, [1.0, 0.0]) and np.array_equal(c.sizes, [1, 2])
    np.testing.assert_allclose(c.centers[1], [np.cos(a / 2), np.sin(a / 2), 0], atol=1e-15)


def test_particle_clusters_of_a_trajectory_says_which_state_to_pass():
    # cluster_count and density_clusters gave the hint; particle_clusters named only the type
    run = mf.simulate(mf.Model(1.0), mf.Particles.uniform(10), 0.1, backend="particles")
    with pytest.raises(TypeError, match=r"`particles` must be meanfield\.Particles; got Trajectory\..*traj\.final"):
        mf.particle_clusters(run)


@pytest.mark.parametrize("method", ["tree", "direct"])
@pytest.mark.parametrize("weighted", [False, True])
def test_every_pair_is_aligned_at_delta_two(method, weighted):
    """⟨x, y⟩ ≥ 1 − 2 = −1 holds for every pair: F_2 = 1 exactly.  Antipodal pairs read −1 − 2e-16 after rounding
    and were missed (F = 0.99984 for 500 antipodal pairs)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3))
    x = np.concatenate([x, -x]) / np.linalg.norm(np.concatenate([x, -x]), axis=1)[:, None]
    w = rng.random(1000) if weighted else None
    p = mf.Particles(x, weights=w, normalize=True)
    assert mf.aligned_fraction(p, 2.0, method=method) == 1.0


@pytest.mark.parametrize("d", [10 ** 12, 2 ** 70])
def test_l1_noise_threshold_takes_d_beyond_int64_as_a_formula_parameter(d):
    # d is a number in χ²_d as in growth_rate (which takes d beyond int64); the quantile against the
    # Cornish–Fisher expansion χ²_d(q) = d + z√(2d) + (2/3)(z² − 1) + O(d^{-1/2})
    from scipy.stats import norm

    z = norm.ppf(0.95)
    expected = np.sqrt((d + z * np.sqrt(2.0 * d) + 2.0 / 3.0 * (z * z - 1.0)) / (d * 400.0))
    assert mf.l1_noise_threshold(400, d, 0.95) == pytest.approx(expected, rel=1e-13)
    gamma = mf.growth_rate(4.0, 1, d)
    assert mf.l1_noise_time(4.0, 400, 0.5, d=d) == pytest.approx(np.log(0.5 / 0.05) / gamma, rel=1e-14)


@pytest.mark.parametrize("scheme, kw", [("mix-ln", dict(tau=0.7)), ("ngpt", dict(alpha=0.5))])
def test_phase_diagram_takes_the_scheme_parameters_and_is_exact_for_the_equiangular_start(scheme, kw):
    # Mix-LN could not be run (its required `tau` had no way in) and nGPT only at α = 1 (`alpha` reached the
    # backend as an unknown option); F is 1[ρ(t) ≥ 1 − δ] of the equiangular ODE with the same parameters
    n, delta = 6, 0.05
    betas, times = np.array([0.5, 2.0]), np.array([0.5, 1.0, 2.0, 3.0, 4.0, 6.0])
    F = mf.alignment_phase_diagram(betas, times, initial=mf.Particles(np.eye(n)), delta=delta, scheme=scheme,
                                   rtol=1e-10, atol=1e-12, **kw)
    hit = np.array([mf.equiangular_time(scheme, b, n, 1 - delta, **kw) for b in betas])
    assert np.min(np.abs(times[None, :] - hit[:, None])) > 0.05        # no hit within the runs' error of a time
    assert np.array_equal(F, (times[None, :] >= hit[:, None]).astype(float))
    assert 0 < F.sum() < F.size


def test_phase_diagram_names_a_bad_scheme_parameter_before_any_run(monkeypatch):
    from meanfield import _simulate

    monkeypatch.setattr(_simulate, "simulate", lambda *a, **k: pytest.fail("a run started"))
    with pytest.raises(ValueError, match="`tau`"):
        mf.alignment_phase_diagram([1.0], [1.0], n=4, scheme="mix-ln")
    with pytest.raises(ValueError, match="`alpha`"):
        mf.alignment_phase_diagram([1.0], [1.0], n=4, scheme="ngpt", alpha=-1.0)
    with pytest.raises(ValueError, match="`tau`"):
        mf.alignment_phase_diagram([1.0, 2.0], [1.0], n=4, tau=0.5)


def _l1_reference_time(beta, n, amp, scheme, r0=1.0, tau=None, attention="softmax"):
    """∫_0^t γ_1(u) du = ln(amp √n) solved in closed form: γ_1 = γ/s(u), γ the Post-LN rate and s(u) = r0 + a u
    (Pre-LN, QKV-Norm; a = ⟨x, A⟩ of the uniform state), r0 + u (Peri-LN, with its own γ), √(u + 1) (LN-Scaling),
    1 until τ and r0 + a(u − τ) after (Mix-LN)."""
    phase = np.log(amp * np.sqrt(n))
    gamma = mf.growth_rate(beta, 1, attention=attention)
    a = 1 / np.tanh(beta) - 1 / beta
    if attention == "unnormalized":
        a *= np.sinh(beta) / beta                              # ∂_β λ_0 = ∂_β (sinh β/β)
    if scheme in ("pre-ln", "qkv-norm"):
        return r0 / a * np.expm1(phase * a / gamma)
    if scheme == "peri-ln":
        return r0 * np.expm1(phase / (mf.growth_rate(beta, 1, scheme="peri-ln", r0=r0) * r0))
    if scheme == "ln-scaling":
        return (phase / (2 * gamma) + 1) ** 2 - 1
    return phase / gamma if phase <= gamma * tau else tau + r0 / a * np.expm1((phase - gamma * tau) * a / gamma)


@pytest.mark.parametrize("scheme, kw", [("pre-ln", dict(r0=2.5)), ("qkv-norm", dict(r0=0.5)), ("peri-ln", dict(r0=2.5)),
                                        ("ln-scaling", {}), ("mix-ln", dict(r0=2.5, tau=0.5)),
                                        ("mix-ln", dict(r0=2.5, tau=10.0)), ("mix-ln", dict(tau=0.0))])
@pytest.mark.parametrize("attention", ["softmax", "unnormalized"])
def test_l1_noise_time_follows_the_speed_along_the_uniform_state(scheme, kw, attention):
    # it was ln(amplitude/ε)/γ_1(t=0) for every scheme: 3.32 for Pre-LN at β = 1, n = 256, amplitude 0.5, where the
    # radius r(u) = 1 + 0.313u slows the growth and the linear theory reaches it at 5.84
    t = mf.l1_noise_time(1.0, 256, 0.5, scheme=scheme, attention=attention, **kw)
    assert t == pytest.approx(_l1_reference_time(1.0, 256, 0.5, scheme, attention=attention, **kw), rel=1e-12)


@pytest.mark.parametrize("scheme, kw, attention", [("pre-ln", dict(r0=1.0), "softmax"),
                                                   ("pre-ln", dict(r0=2.0), "unnormalized"),
                                                   ("peri-ln", dict(r0=1.5), "softmax"), ("ln-scaling", {}, "softmax"),
                                                   ("mix-ln", dict(r0=1.5, tau=0.8), "softmax")])
def test_l1_noise_time_against_the_spectral_solver(scheme, kw, attention):
    # a second method: the spectral PDE from ρ = 1 + 3ε z (|m| = ε = 1/√n) reaches |m| = ε e^{1.5} at that time; the
    # linearization errs by O(|m|) relative (4e-6 measured at |m| = 4.5e-6), the solver by ~rtol
    eps, n, beta = 1e-6, 10**12, 1.0
    amp = eps * np.exp(1.5)
    t = mf.l1_noise_time(beta, n, amp, scheme=scheme, attention=attention, **kw)
    r0 = kw.get("r0", 1.0)
    rho = mf.Density.from_function(lambda p: 1 + 3 * eps * p[..., 2], 12, **({} if r0 == 1.0 else dict(radius=r0)))
    model = mf.Model(beta, scheme=scheme, attention=attention, tau=kw.get("tau"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)      # lmax 12 below the kernel's band limit: ℓ = 1 only
        final = mf.simulate(model, rho, t, backend="spectral", t_eval=[t], rtol=1e-10).states[-1]
    k = np.unravel_index(np.argmax(np.abs(rho.coeffs - mf.Density.uniform(12).coeffs)), rho.coeffs.shape)
    assert abs(final.coeffs[k] / rho.coeffs[k]) == pytest.approx(np.exp(1.5), rel=10 * amp)


def test_l1_noise_time_beyond_float64_is_inf():
    # Pre-LN at large β: γ_1 ≈ 2/β over r(u) ≈ u, so ln(amplitude/ε) needs t ~ exp(β ln(amplitude/ε)/2)
    assert mf.l1_noise_time(1e4, 10**6, 0.5, scheme="pre-ln") == np.inf
    assert mf.l1_noise_time(50.0, 10**6, 0.5, scheme="pre-ln") == pytest.approx(
        _l1_reference_time(50.0, 10**6, 0.5, "pre-ln"), rel=1e-10)


def test_direct_and_tree_counts_agree_at_the_threshold_and_at_tiny_delta():
    # the Gram entries alone decided "direct": it missed orthogonal pairs that the tree counts at δ = 1 (a rotated
    # octahedron: 0.4 against 0.8, the pairs at ⟨x, y⟩ = ±1e-17) and, where 1 − δ rounds to 1, counted every pair of a
    # cluster of width 1e-9 (1.0 against 0.0065 at δ = 1e-20)
    rot = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))[0]
    octa = mf.Particles(np.concatenate([rot, -rot]))
    for method in ("tree", "direct"):
        assert mf.aligned_fraction(octa, 1.0, method=method) == pytest.approx(24 / 30, abs=1e-15)
    ring = np.arange(8) * 2 * np.pi / 8
    circle = mf.Particles(np.stack([np.cos(ring), np.sin(ring)], axis=1))
    assert mf.aligned_fraction(circle, 1.0, method="direct") == mf.aligned_fraction(circle, 1.0, method="tree")
    rng = np.random.default_rng(1)
    x = np.array([0.0, 0.0, 1.0]) + 1e-9 * rng.standard_normal((50, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.random(50)
    for p in (mf.Particles(x), mf.Particles(x, weights=w / w.sum())):
        for delta in (1e-20, 1e-17):
            tree, direct = (mf.aligned_fraction(p, delta, method=m) for m in ("tree", "direct"))
            assert direct == pytest.approx(tree, rel=1e-13, abs=1e-15)
        assert mf.aligned_fraction(p, 1e-20, method="direct") < 0.01      # chords ~1e-9 > √(2δ) = 1.4e-10


@pytest.mark.parametrize("delta", [1e-10, 1e-13])
def test_aligned_fraction_of_a_density_keeps_its_accuracy_as_delta_vanishes(delta):
    # F_δ/(cap measure) → ∫ρ² dσ, with a relative correction O(ℓ²δ) (f_ℓ = δ/2 (1 − ℓ(ℓ+1)δ/4 + …) on S²,
    # sin(ka)/(πk) = a/π (1 − k²a²/6 + …) on S¹); the multipliers as differences of Legendre values and arccos(1 − δ)
    # erred by ε/δ: 3.9e-5 (S²) and 1.6e-4 (S¹) at δ = 1e-13
    def on_s2(p):
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        return 1 + 0.6 * z + 0.3 * (3 * z ** 2 - 1) / 2 + 0.2 * x * y + 0.1 * x ** 5

    rho = mf.Density.from_function(on_s2, 8)
    z, wz = np.polynomial.legendre.leggauss(40)                # exact for ρ² (degree 10)
    phi = np.linspace(0, 2 * np.pi, 80, endpoint=False)
    zz, pp = np.meshgrid(z, phi, indexing="ij")
    pts = np.stack([np.sqrt(1 - zz ** 2) * np.cos(pp), np.sqrt(1 - zz ** 2) * np.sin(pp), zz], axis=-1)
    mean_square = np.sum(wz[:, None] / 160 * rho.evaluate(pts) ** 2)
    rel = mf.aligned_fraction(rho, delta) / (delta / 2) / mean_square - 1
    assert abs(rel) <= 8 * 9 * delta / 4 + 1e-13
    circle = mf.Density.from_function(lambda p: 1 + 0.5 * p[..., 0] + 0.3 * (2 * p[..., 1] ** 2 - 1), 4, d=2)
    theta = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    mean_square = np.mean(circle.evaluate(np.stack([np.cos(theta), np.sin(theta)], axis=1)) ** 2)
    rel = mf.aligned_fraction(circle, delta) / (np.sqrt(2 * delta) / np.pi) / mean_square - 1
    assert abs(rel) <= 4 ** 2 * delta / 2 + 1e-13


def test_ngpt_takes_a_step_schedule_as_the_model_does():
    # Model takes a callable α(t); growth_rate refused it ("`alpha` must be a real number").  With α(t) = 1/(1 + t)
    # nGPT's speed is ‖A‖(1 + t), so ∫γ_1 = γ_1(α=1) ln(1 + t): the noise-seeded mode reaches |m| at e^{L/γ} − 1
    schedule = lambda t: 1.0 / (1.0 + t)                       # noqa: E731
    assert mf.growth_rate(2.0, 1, scheme="ngpt", alpha=schedule, t=2.0) == \
        mf.growth_rate(2.0, 1, scheme="ngpt", alpha=1.0 / 3.0)
    phase = np.log(0.5 * np.sqrt(100))
    expected = np.expm1(phase / mf.growth_rate(2.0, 1, scheme="ngpt"))
    assert mf.l1_noise_time(2.0, 100, 0.5, scheme="ngpt", alpha=schedule) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match=r"`alpha\(t\)` must be finite and > 0"):
        mf.growth_rate(2.0, 1, scheme="ngpt", alpha=lambda t: -1.0)
    with pytest.raises(ValueError, match="`alpha` is only used by"):
        mf.growth_rate(2.0, 1, alpha=schedule)


@pytest.mark.parametrize("axis", [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
def test_a_ring_maximum_is_centred_on_the_ring(axis):
    # ρ = exp(−20⟨x, e⟩²) peaks on the great circle ⟨x, e⟩ = 0: one plateau maximum whose nodes average to ~0; the
    # normalized mean pointed anywhere ((−0.27, 0.62, 0.74) for e = z; (−0.996, 0, 0.093), ρ's minimum, for e = x)
    e = np.array(axis)
    rho = mf.Density.from_function(lambda p: np.exp(-20 * (p @ e) ** 2), 30, normalize=True)
    cl = mf.density_clusters(rho)
    assert cl.count == 1 and cl.masses[0] == pytest.approx(1.0, abs=1e-6)
    spacing = np.pi / (1.5 * 2 * 30)                            # ring spacing of the evaluation grid (2L)
    assert abs(cl.centers[0] @ e) < spacing and np.linalg.norm(cl.centers[0]) == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("d", [3, 8])
def test_angle_pi_links_every_pair(d):
    # arccos⟨x, y⟩ ≤ π for every pair: one cluster; a rounded antipodal pair (chord 2(1 + ε)) was split (2 of 200
    # random pairs (x, −x) in d = 3, 3 of 100 in d = 8)
    rng = np.random.default_rng(0)
    for _ in range(200):
        x = rng.standard_normal(d)
        x /= np.linalg.norm(x)
        assert mf.particle_clusters(mf.Particles(np.stack([x, -x])), angle=np.pi).count == 1
    cl = mf.particle_clusters(mf.Particles.uniform(50, d), angle=np.pi)
    assert cl.count == 1 and cl.masses[0] == pytest.approx(1.0) and cl.sizes[0] == 50


@pytest.mark.parametrize("d", [2, 3])
def test_density_clusters_refuse_a_grid_beyond_memory_before_building_it(d, monkeypatch):
    # resolution=3000 on S² (4·10⁷ nodes, ~650 B each) ran 78 s and then failed in numpy's "Unable to allocate 935. MiB"
    from meanfield import _memory
    from meanfield.sphere import _sh

    monkeypatch.setattr(_memory, "available_bytes", lambda: 2 ** 30)
    monkeypatch.setattr(_sh, "synthesis", lambda *a, **k: pytest.fail("the grid was built"))
    with pytest.raises(mf.InsufficientMemoryError, match=r"resolution=\d+.*lower `resolution`"):
        mf.density_clusters(mf.Density.uniform(4, d=d), resolution=3000 if d == 3 else 10 ** 6)


@pytest.mark.parametrize("axis", [[0.6, 0.0, 0.8], [0.3, 0.5, 0.81]])
def test_a_ring_off_the_grid_is_one_cluster(axis):
    # grid nodes sample a ring maximum at varying distances, and each node nearer than its neighbours was a maximum
    # of its own: 56 clusters of mass 0.011–0.044 for e = (0.6, 0, 0.8) at L = 30; no valley lies between them
    e = np.array(axis) / np.linalg.norm(axis)
    rho = mf.Density.from_function(lambda p: np.exp(-20 * (p @ e) ** 2), 30, normalize=True)
    cl = mf.density_clusters(rho)
    assert cl.count == 1 and cl.masses[0] == pytest.approx(1.0, abs=1e-6)
    assert abs(cl.centers[0] @ e) < np.pi / (1.5 * 2 * 30)


@pytest.mark.parametrize("tilt", [0.0, 0.35])
def test_maxima_on_a_ridge_join_one_cluster_not_two(tilt):
    # two bumps on a great-circle ridge: the ridge's grid maxima join the bumps (7 clusters before when tilted; when
    # not, the ridge's part flat to 1e-12 far from both bumps was a third, 0.257), and the bumps, separated by the
    # ridge's lower values, stay two
    c, s = np.cos(tilt), np.sin(tilt)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    e, a, b = rot @ [1.0, 0, 0], rot @ [0, 0, 1.0], rot @ [0, 1.0, 0]
    rho = mf.Density.from_function(lambda p: np.exp(-20 * (p @ e) ** 2) + 3 * np.exp(30 * (p @ a - 1))
                                   + 3 * np.exp(30 * (p @ b - 1)), 40, normalize=True)
    cl = mf.density_clusters(rho)
    assert cl.count == 2 and cl.masses.sum() == pytest.approx(1.0, abs=1e-6)
    near = np.sort(np.max(cl.centers @ np.stack([a, b]).T, axis=0))
    assert np.all(near > np.cos(2 * np.pi / (1.5 * 2 * 40)))       # each bump holds one centre, within 2 spacings


@pytest.mark.parametrize("method", ["tree", "direct"])
def test_all_pairs_aligned_with_some_weights_zero_give_exactly_one(method):
    # the weighted count and w·w round apart: 1 − 4.6e-14 for 50 tokens at one point and 50 weightless ones elsewhere,
    # and the mean alignment (|m|² − Σw²)/(1 − Σw²) read 1 + 4e-16
    x = np.concatenate([np.tile([1.0, 0, 0], (50, 1)), np.tile([0, 1.0, 0], (50, 1))])
    w = np.r_[np.full(50, 1 / 50), np.zeros(50)]
    stats = mf.alignment_statistics(mf.Particles(x, weights=w), 0.01, method=method)
    assert stats.aligned_fraction == 1.0 and stats.mean_alignment == 1.0


@pytest.mark.parametrize("r0", [1e-300, 1e-100, 1e300])
@pytest.mark.parametrize("scheme", ["pre-ln", "peri-ln"])
def test_l1_noise_time_from_any_radius(scheme, r0):
    # the growth runs on the time scale r0/‖A‖: integrated in log(1 + t) it came out 3 % long from r0 = 1e-100 and
    # inf from 1e-300; each piece now has the clock log(1 + u/c), c = min(1, r/|dr/dt|)
    t = mf.l1_noise_time(1.0, 256, 0.5, scheme=scheme, r0=r0)
    assert t == pytest.approx(_l1_reference_time(1.0, 256, 0.5, scheme, r0=r0), rel=1e-12, abs=0)


@pytest.mark.parametrize("scheme, kw, attention", [
    ("mix-ln", dict(tau=1.4178525865004472, r0=6.877e-05), "unnormalized"), ("ln-scaling", {}, "unnormalized")])
def test_l1_noise_time_far_below_the_unit_of_time(scheme, kw, attention, recwarn):
    # USA at large β grows at ~e^β: the time is ~1e-15 (Mix-LN, before τ) or ~1e-176 (LN-Scaling, β = 405), where the
    # event, located to a few ulps of log(1 + t), was 5 % off, and LN-Scaling's came out inf with overflow warnings;
    # each piece's clock is now scaled to the growth's time scale as well
    beta = 41.14305380233891 if scheme == "mix-ln" else 405.41143269894457
    t = mf.l1_noise_time(beta, 82036, 0.1392673276522123, d=2 if scheme == "mix-ln" else 3, attention=attention,
                         scheme=scheme, **kw)
    gamma = mf.growth_rate(beta, 1, d=2 if scheme == "mix-ln" else 3, attention=attention)
    phase = np.log(0.1392673276522123 * np.sqrt(82036))
    # before τ (Mix-LN) the rate is the Post-LN one; LN-Scaling's (L/(2γ) + 1)² − 1 is L/γ to 1e-170 here
    assert t == pytest.approx(phase / gamma, rel=1e-12, abs=0)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_close_bumps_with_a_valley_stay_two_clusters():
    # the ridge join tolerates a dip of 1 % along the arc (grid nodes off a ridge by half a spacing); a valley of 6 %
    # between two bumps 0.3 rad apart (κ = 60) is two clusters.  They straddle the pole, and the grid is symmetric
    # about their mid-plane x = 0, so the basins are 0.5 each to rounding: the ascent by rise alone (not per unit
    # length) crossed the pole and gave 0.68 and 0.32
    half = 0.15
    centers = [[np.sin(half), 0, np.cos(half)], [-np.sin(half), 0, np.cos(half)]]
    cl = mf.density_clusters(_bumps(centers, [0.5, 0.5], 60.0, 60))
    assert cl.count == 2 and cl.masses == pytest.approx([0.5, 0.5], abs=1e-6)


def test_cluster_history_times_the_merger_of_two_clusters_as_the_equiangular_ode():
    # two clusters of 10 coincident tokens 1.2 rad apart are two tokens (n = 2) of the equiangular ODE: single
    # linkage at 0.1 rad joins them when ρ reaches cos 0.1, at t_link; the history brackets it between saved states
    phi = 1.2
    x = np.repeat([[1.0, 0.0, 0.0], [np.cos(phi), np.sin(phi), 0.0]], 10, axis=0)
    t_link = mf.equiangular_time("post-ln", 5.0, 2, np.cos(0.1), rho0=np.cos(phi))
    traj = mf.simulate(mf.Model(5.0), mf.Particles(x), 2 * t_link, backend="particles", save_every=t_link / 8.5)
    hist = mf.cluster_history(traj, angle=0.1)
    assert list(hist.times) == list(traj.times)
    assert list(hist.counts) == [2] * 9 + [1] * (len(traj.times) - 9)
    (start, end), = hist.merges
    assert start < t_link < end and end - start == pytest.approx(t_link / 8.5, rel=1e-12)
    assert list(hist.lost) == [1]
    assert hist.clusters[-1].masses == pytest.approx([1.0], abs=1e-15)


def test_cluster_history_counts_by_hand_with_min_mass():
    # four saved states by hand: clusters of masses (0.5, 0.3, 0.195, 0.005), then the two heavy ones joined, then
    # the straggler joined, then all; min_mass = 0.01 leaves the straggler out
    e = np.eye(3)
    near = lambda v, s: v + s * np.array([0.0, 0.0, 1e-3])     # noqa: E731 (a token 1e-3 rad off v)
    w = np.array([0.5, 0.3, 0.195, 0.005])
    frames = [[e[0], e[1], -e[0], -e[1]], [e[0], near(e[0], 1), -e[0], -e[1]],
              [e[0], near(e[0], 1), -e[0], near(-e[0], 1)], [e[0], near(e[0], 1), near(e[0], -1), near(e[0], 2)]]
    states = [mf.Particles(np.array(f), weights=w, normalize=True) for f in frames]
    times = np.array([0.0, 1.0, 2.0, 3.0])
    traj = mf.Trajectory(times, states, {"t": times}, {}, mf.Model(1.0), "particles", mf.Status.OK)
    assert list(mf.cluster_history(traj).counts) == [4, 3, 2, 1]
    hist = mf.cluster_history(traj, min_mass=0.01)
    assert list(hist.counts) == [3, 2, 2, 1]
    assert hist.merges.tolist() == [[0.0, 1.0], [2.0, 3.0]] and list(hist.lost) == [1, 1]
    with pytest.raises(TypeError, match="`trajectory` must be a meanfield.Trajectory"):
        mf.cluster_history(states)
    with pytest.raises(ValueError, match=r"`min_mass` must be in \[0, 1\]"):
        mf.cluster_history(traj, min_mass=2.0)
    with pytest.raises(TypeError, match="do not apply to Density states"):
        mf.cluster_history(traj, delta=0.1)
    assert mf.cluster_history is analysis.cluster_history and mf.ClusterHistory is analysis.ClusterHistory


def _aligned_pairs_cases(d, rng):
    """Uniform, clustered, collapsed and not-quite-unit tokens on S^{d-1}, with δ at pair angles and at fixed values."""
    def unit(v):
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    centres = unit(rng.normal(size=(4, d)))
    cases = [unit(rng.normal(size=(300, d))), unit(centres[rng.integers(0, 4, 400)] + 1e-3 * rng.normal(size=(400, d))),
             centres[rng.integers(0, 4, 120)],
             unit(rng.normal(size=(200, d))) * (1 + 1e-10 * rng.uniform(-1, 1, (200, 1)))]
    for x in cases:
        g = x @ x.T
        at_pairs = 1 - rng.choice(g[np.triu_indices(len(x), 1)], 12, replace=False)
        deltas = np.r_[1e-5, 0.01, 0.3, 1.0, np.pi / 2, 1.8, 1.999, at_pairs, np.nextafter(at_pairs, 0),
                       np.nextafter(at_pairs, 3)]
        yield x, deltas[(deltas > 0) & (deltas < 2)]


@pytest.mark.parametrize("d", [2, 3])
def test_tree_and_direct_counts_agree_to_the_pair_at_every_delta(d):
    # δ = 1 − ⟨θ_i, θ_j⟩ of a pair puts it on the threshold, to rounding: the Gram blocks decided it on √(einsum) ≤ h
    # and the tree on the squares summed in order ≤ r², and the pair fell on different sides for 1 in 3 of the pairs of
    # 5 uniform tokens); both now decide it on the tree's sum.  The counts of S¹ (sorted angles) and of δ > 1
    # (the pairs apart, through −θ) are the Gram count's, pair for pair, weighted or not
    from meanfield.analysis._alignment import _gram_count, _tree_counts

    rng = np.random.default_rng(d)
    for x, deltas in _aligned_pairs_cases(d, rng):
        n = len(x)
        for w in (np.full(n, 1.0 / n), rng.random(n) * (rng.random(n) > 0.2)):
            w = w / w.sum()
            equal = bool(np.all(w == w[0]))
            for delta in deltas:
                aligned, apart = _tree_counts(x, w, float(delta), equal)
                exact = _gram_count(x, w, float(delta), None, equal)
                if equal:
                    assert (aligned if aligned is not None else n * n - apart) == exact, delta
                else:
                    assert (aligned if aligned is not None else 1.0 - apart) == pytest.approx(exact, abs=1e-13), delta
            p = mf.Particles(x, weights=w)
            for delta in deltas[::4]:
                assert mf.aligned_fraction(p, delta, method="tree") == pytest.approx(
                    mf.aligned_fraction(p, delta, method="direct"), rel=1e-13, abs=1e-15)


@pytest.mark.parametrize("d", [2, 3])
def test_tree_and_direct_count_a_pair_on_the_threshold_alike(d):
    # δ = 1 − ⟨θ_i, θ_j⟩ of a pair: 0.9 against 1.0 (S²), 0.4 against 0.5 (S¹) for 5 tokens, 1 pair in 3 disagreed
    five = mf.Particles.uniform(5, d, seed=0)
    g = five.positions @ five.positions.T
    for delta in 1 - g[np.triu_indices(5, 1)]:
        assert mf.aligned_fraction(five, delta, method="tree") == mf.aligned_fraction(five, delta, method="direct")


def test_aligned_fraction_on_the_circle_sorts_the_angles():
    # S¹: the pairs of each token are runs of the sorted angles, O(n log n) at every δ; the dual tree's boundary cost
    # grew with δ (2·10⁵ tokens at δ = 1: see the commit); the exact value for equally spaced tokens
    n = 4000
    a = np.arange(n) * 2 * np.pi / n
    ring = mf.Particles(np.stack([np.cos(a), np.sin(a)], axis=1))
    for k in (1, 7, 1000, 1999):                    # δ between the k-th and (k+1)-th spacing: 2k neighbours each
        delta = 1 - np.cos((k + 0.5) * 2 * np.pi / n)
        assert mf.aligned_fraction(ring, delta) == 2 * k / (n - 1)


@pytest.mark.parametrize("d", [2, 3])
def test_a_density_flat_to_rounding_has_no_cluster(d):
    # no point of a flat density is more of a maximum than another: 0 clusters, not 1, with or without rounding noise
    # (1e-15 of a random field added), and with min_mass=0 (every maximum kept)
    uniform = mf.Density.uniform(24, d=d)
    a = np.random.default_rng(d).standard_normal((4, d))
    field = mf.Density.from_function(lambda x: np.sum(np.cos(3 * x @ a.T), axis=-1), 24, d=d)
    noisy = mf.Density(uniform.coeffs + 1e-15 * field.coeffs / np.max(np.abs(field.coeffs)), 24, d=d)
    for rho in (uniform, noisy, mf.Density.from_function(lambda x: np.ones(x.shape[:-1]), 24, d=d)):
        for min_mass in (0.01, 0.0):
            cl = mf.density_clusters(rho, min_mass=min_mass)
            assert cl.count == 0 and cl.masses.size == 0 and np.all(cl.labels == -1)


@pytest.mark.parametrize("direction", [(-3, -3, 1), (-3, 2, 1)])
def test_a_plateau_flat_to_rounding_is_one_cluster(direction):
    # ρ ∝ 1 − ((1 − ⟨x, e⟩)/2)⁴⁰ is flat to rounding over most of S², and dips at −e.  A node on the gentle slope at the
    # plateau's edge, whose rise stayed within the tie tolerance, counted as a maximum of its own: its basin reached
    # down the slope, 3e-8 below its peak (> 1e-8 of max ρ), and it was a second cluster (mass 0.005 with min_mass=0).
    # Its prominence (the drop to the saddle towards the plateau) is that of a tie: one cluster, centred on the plateau
    e = np.array(direction, float) / np.linalg.norm(direction)
    rho = mf.Density.from_function(lambda x: 1 - ((1 - x @ e) / 2) ** 40, 48, normalize=True)
    for min_mass in (0.01, 0.0):
        cl = mf.density_clusters(rho, min_mass=min_mass)
        assert cl.count == 1 and cl.masses[0] == pytest.approx(1.0, abs=1e-10)
    two = _bumps([e, -e], [0.6, 0.4], 20.0, 40)           # a real two-cluster density: unchanged
    cl = mf.density_clusters(two, min_mass=0.0)
    assert cl.count == 2 and cl.masses == pytest.approx([0.6, 0.4], abs=1e-3)
    assert np.all(np.max(cl.centers @ np.stack([e, -e]).T, axis=1) > np.cos(0.1))



def test_tree_and_direct_count_a_pair_on_the_threshold_alike_in_high_dimension():
    # scipy's tree sums the squares in four running sums over blocks of four coordinates: in d = 8 the squares summed
    # in order put 197 of 1200 pairs on the threshold on the other side (0.867 against 0.933 for 6 tokens, seed 1);
    # summed as the tree sums them, these agree (1 of 1200 still differs, seed 38: the compiled reduction's order)
    for seed in range(10):
        six = mf.Particles.uniform(6, 8, seed=seed)
        g = six.positions @ six.positions.T
        for delta in 1 - g[np.triu_indices(6, 1)]:
            assert mf.aligned_fraction(six, delta, method="tree") == mf.aligned_fraction(six, delta, method="direct")


def test_cluster_history_refuses_an_empty_run_and_out_of_range_arguments_with_their_range():
    # an empty Trajectory gave a ClusterHistory whose repr raised IndexError; NaN angle and negative or NaN
    # min_mass were told "finite and > 0" / "finite and >= 0", without the upper bound π or 1
    def run(times, states):
        times = np.asarray(times, dtype=float)
        return mf.Trajectory(times, states, {"t": times}, {}, mf.Model(1.0), "particles", mf.Status.OK)

    one = run([0.0], [mf.Particles(np.eye(3))])
    assert list(mf.cluster_history(one).counts) == [3] and mf.cluster_history(one).merges.shape == (0, 2)
    for bad in (run([], []), run([0.0, 1.0], one.states)):
        with pytest.raises(ValueError, match="`trajectory` must hold at least one saved state, one per saved time"):
            mf.cluster_history(bad)
    for angle in (np.nan, -0.1, 0.0, 4.0):
        with pytest.raises(ValueError, match=r"`angle` must be in \(0, π\]"):
            mf.cluster_history(one, angle=angle)
        with pytest.raises(ValueError, match=r"`angle` must be in \(0, π\]"):
            mf.particle_clusters(one.final, angle=angle)
    for min_mass in (np.nan, -0.1, np.inf, 2.0):
        with pytest.raises(ValueError, match=r"`min_mass` must be in \[0, 1\]"):
            mf.cluster_history(one, min_mass=min_mass)
    with pytest.raises(TypeError, match="`angle` must be a real number"):
        mf.cluster_history(one, angle="0.1")


def test_cluster_histories_and_clusters_compare_by_value():
    # `==` of two ClusterHistory (or Clusters) computed alike raised "The truth value of an array ... is ambiguous"
    times = np.array([0.0, 1.0])
    e = np.eye(3)
    states = [mf.Particles(e), mf.Particles(np.array([e[0], e[0], e[2]]))]
    traj = mf.Trajectory(times, states, {"t": times}, {}, mf.Model(1.0), "particles", mf.Status.OK)
    a, b = mf.cluster_history(traj), mf.cluster_history(traj)
    assert a == b and a.clusters[1] == b.clusters[1]
    assert a != mf.cluster_history(traj, min_mass=0.5) and a.clusters[0] != a.clusters[1]


def test_cluster_history_refuses_states_it_cannot_cluster_before_any_clustering_and_says_what_to_do(monkeypatch):
    # a run's third state of another kind was found after clustering the first two, with a message that named
    # neither the state nor what to do with a zonal density or a run of several species
    from meanfield.analysis import _clusters

    calls = []
    monkeypatch.setattr(_clusters, "particle_clusters", lambda *a, **k: calls.append(1))
    import dataclasses

    run = mf.simulate(mf.Model(1.0), mf.Particles.uniform(10, seed=0), 2.0, backend="particles", save_every=1.0)
    p = run.final
    zonal = dataclasses.replace(run, states=[p, p, mf.ZonalDensity.uniform(4, d=5)])
    with pytest.raises(TypeError, match=r"state 2 \(t=2\) is ZonalDensity\. .*sample_density") as err:
        mf.cluster_history(zonal)
    assert not calls, err.value
    species = dataclasses.replace(run, states=[(mf.Density.uniform(4), mf.Density.uniform(4))] * 3)
    with pytest.raises(TypeError, match=r"state 0 \(t=0\) is tuple\. A run of several species .*cluster_count"):
        mf.cluster_history(species)
