"""meanfield._convergence: particles → mean field in N, and the spectral solver in L, as one call each."""
import warnings

import numpy as np
import pytest

import meanfield as mf

MODEL = mf.Model(3.0)


@pytest.fixture(scope="module")
def in_n():
    dens = mf.Density.random(24, seed=3, amplitude=0.6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        return dens, mf.convergence_in_n(MODEL, dens, 1.0, [300, 1000, 3000, 10000], replicas=2, rtol=1e-11)


def test_particles_approach_the_pde_like_n_to_the_minus_one_half(in_n):
    _, r = in_n
    assert r.distances.shape == (2, 4) and np.array_equal(r.sizes, [300, 1000, 3000, 10000])
    assert abs(r.slope + 0.5) < 0.15 and r.slope_stderr < 0.15, r.message


def test_each_distance_is_that_of_its_own_seeded_sample(in_n):
    dens, r = in_n
    stream = np.random.SeedSequence(0).spawn(2)[1].spawn(4)[2]           # replica 1, N = 3000
    tokens = mf.sample_density(dens, 3000, seed=np.random.default_rng(stream))
    run = mf.simulate(MODEL, tokens, 1.0, backend="particles-sh", step=0.05)
    expected = mf.sobolev_distance(run.final, r.reference.final, 1.0, lmax=24)
    assert r.distances[1, 2] == pytest.approx(expected, rel=1e-12)


def test_the_spectral_solution_converges_exponentially_in_the_band_limit():
    dens = mf.Density.random(12, seed=3, amplitude=0.6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        r = mf.convergence_in_l(MODEL, dens, 1.0, [12, 16, 20, 32], rtol=1e-12)
        low = mf.simulate(MODEL, dens.resized(16), 1.0, rtol=1e-12, tail_warn=1.0, tail_tol=1.0, negativity_tol=1e6)
    assert np.all(np.diff(np.log(r.mean)) < -2.0)           # each 4 degrees gain more than a factor e²
    assert r.slope < -0.5 and r.mean[-1] < 1e-5
    assert r.mean[1] == pytest.approx(mf.sobolev_distance(low.final, r.reference.final, 1.0, lmax=32), rel=1e-12)


@pytest.mark.parametrize("call, error, match", [
    (lambda d: mf.convergence_in_n(MODEL, d, 1.0, [1000]), ValueError, "at least two strictly increasing"),
    (lambda d: mf.convergence_in_n(MODEL, d, 1.0, [1000, 300]), ValueError, "`ns` must be at least two"),
    (lambda d: mf.convergence_in_n(MODEL, d, 1.0, [100, 200], replicas=0), ValueError, "`replicas`"),
    (lambda d: mf.convergence_in_n(MODEL, mf.Particles.uniform(5), 1.0, [100, 200]), TypeError, "`density`"),
    (lambda d: mf.convergence_in_l(MODEL, d, 1.0, [8, 8]), ValueError, "`lmaxes` must be at least two"),
    (lambda d: mf.convergence_in_l(MODEL, d, -1.0, [8, 12]), ValueError, "`t_final`"),
    # numpy's "SeedSequence expects int or sequence of ints" and "expected non-negative integer" named nothing
    (lambda d: mf.convergence_in_n(MODEL, d, 1.0, [100, 200], seed="a"), TypeError, "`seed` must be None, an int"),
    (lambda d: mf.convergence_in_n(MODEL, d, 1.0, [100, 200], seed=-1), ValueError, "`seed` must be None, an int"),
    (lambda d: mf.convergence_in_n(MODEL, d, 1.0, [100, 200], seed=1.5), TypeError, "`seed` must be None, an int"),
])
def test_bad_input_is_refused_before_any_run(call, error, match):
    with pytest.raises(error, match=match):
        call(mf.Density.uniform(8))


def test_particle_options_replace_the_default_and_a_given_reference_is_checked():
    dens = mf.Density.random(8, seed=1, amplitude=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        ref = mf.simulate(MODEL, dens, 0.2)
        r = mf.convergence_in_n(MODEL, dens, 0.2, [50, 100], replicas=1, reference=ref,
                                particle_options={"method": "rk45", "rtol": 1e-6})       # no step added to rk45
    assert r.reference is ref and np.all(r.mean > 0)
    with pytest.raises(ValueError, match=r"`reference` must end at t_final=0.1; it ends at t=0.2"):
        mf.convergence_in_n(MODEL, dens, 0.1, [50, 100], reference=ref)
    with pytest.raises(TypeError, match=r"spectral options \['rtol'\] set the reference run"):
        mf.convergence_in_n(MODEL, dens, 0.2, [50, 100], reference=ref, rtol=1e-10)


def test_convergence_in_l_refuses_an_lmax_option():
    # the option overrode every L of the study: the distances came back [0, 0]
    with pytest.raises(ValueError, match="`lmax` is what convergence_in_l varies"):
        mf.convergence_in_l(mf.Model(1.0), mf.Density.uniform(4), 0.05, [6, 8, 10], lmax=4)


def test_convergence_in_n_takes_a_seed_sequence_as_alignment_phase_diagram_does():
    # SeedSequence(SeedSequence(3)) raised "SeedSequence expects int or sequence of ints"
    dens = mf.Density.random(16, seed=1, amplitude=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        ref = mf.simulate(MODEL, dens, 0.1)
        root = np.random.SeedSequence(3)
        by_sequence = mf.convergence_in_n(MODEL, dens, 0.1, [16, 32], replicas=1, seed=root, reference=ref)
        by_int = mf.convergence_in_n(MODEL, dens, 0.1, [16, 32], replicas=1, seed=3, reference=ref)
    assert np.array_equal(by_sequence.distances, by_int.distances)
    assert root.n_children_spawned == 0                       # the caller's sequence is not advanced


def test_a_zero_distance_gives_a_nan_slope_without_a_numpy_warning():
    # the uniform density is stationary: every band limit gives it exactly, and np.log(0) warned "divide by zero"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        warnings.simplefilter("error", RuntimeWarning)
        r = mf.convergence_in_l(mf.Model(1.0), mf.Density.uniform(16), 0.05, [4, 8, 12, 16])
    assert np.array_equal(r.mean, [0.0, 0.0, 0.0])
    assert np.isnan(r.slope) and np.isnan(r.slope_stderr)


def test_a_given_reference_must_be_the_spectral_run_of_this_model_from_this_density():
    """A Density or a particle run as `reference` raised AttributeError ('no attribute times' / 'lmax'), and the
    spectral run of another model or initial density was compared silently: slope −0.05 "over 16..64"."""
    dens = mf.Density.random(8, seed=1, amplitude=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        ref = mf.simulate(MODEL, dens, 0.2)
        other_model = mf.simulate(mf.Model(1.0), dens, 0.2)
        other_start = mf.simulate(MODEL, mf.Density.uniform(8), 0.2)
        padded = mf.simulate(MODEL, dens, 0.2, lmax=12)                 # the same start, zero-padded: accepted
    particles = mf.simulate(MODEL, mf.Particles.uniform(20), 0.2, backend="particles")
    with pytest.raises(TypeError, match=r"`reference` must be a meanfield\.Trajectory.*got Density"):
        mf.convergence_in_n(MODEL, dens, 0.2, [16, 32], reference=dens)
    with pytest.raises(TypeError, match=r"`reference` must be a spectral run.*Particles"):
        mf.convergence_in_n(MODEL, dens, 0.2, [16, 32], reference=particles)
    with pytest.raises(ValueError, match=r"`reference` was run with another model"):
        mf.convergence_in_n(MODEL, dens, 0.2, [16, 32], reference=other_model)
    with pytest.raises(ValueError, match=r"`reference` must start from `density`"):
        mf.convergence_in_n(MODEL, dens, 0.2, [16, 32], reference=other_start)
    r = mf.convergence_in_n(MODEL, dens, 0.2, [16, 32], replicas=1, reference=padded)
    assert r.reference is padded and np.all(r.mean > 0)


def test_particles_approach_the_zonal_pde_like_n_to_the_minus_one_half_in_d5():
    """A ZonalDensity gives the study on S⁴: the zonal spectral solver against exact particles (the default
    backend where particles-sh does not apply), the distance by the addition theorem."""
    z = mf.ZonalDensity.from_function(lambda t: np.exp(1.5 * t), 12, 5).normalized()
    model = mf.Model(2.0, d=5)
    r = mf.convergence_in_n(model, z, 0.5, [100, 400, 1600], replicas=3)
    assert abs(r.slope + 0.5) < 0.1, r.message
    assert isinstance(r.reference.final, mf.ZonalDensity)
    # the given reference is checked as for a Density: another axis is another initial state
    e = np.zeros(5)
    e[0] = 1.0
    tilted = mf.simulate(model, mf.ZonalDensity(z.coeffs, z.lmax, 5, axis=e), 0.5)
    with pytest.raises(ValueError, match=r"`reference` must start from `density`"):
        mf.convergence_in_n(model, z, 0.5, [16, 32], reference=tilted)
    # in L: the zonal solver converges fast in the band limit
    in_l = mf.convergence_in_l(model, z, 0.5, [8, 12, 16, 24])
    assert in_l.mean[0] < 1e-4 and in_l.mean[-1] < 1e-8 and in_l.slope < 0


def test_the_default_particle_backend_is_particles_sh_where_it_applies():
    from meanfield._convergence import _particle_backend

    assert _particle_backend(MODEL) == "particles-sh"
    assert _particle_backend(mf.Model(1.0, d=5)) == "particles"
    assert _particle_backend(mf.Model(1.0, Q=np.diag([1.0, 2.0, 3.0]))) == "particles"


# --- review h9: the slope's uncertainty from the replicas; options checked before the reference run ---------------

@pytest.mark.parametrize("replicas, sizes", [(1, 3), (2, 3), (3, 2), (4, 5)])
def test_the_slope_confidence_interval_covers_the_true_slope_95_percent_of_the_time(replicas, sizes):
    """Synthetic studies with a known slope: d = N^{-1/2}·χ₅/√5 (the spread of log d independent of N, as for
    √N(μ_N − μ)), 4000 of them.  The 95 % interval covers −1/2 in 95 % of the studies (binomial standard error
    0.34 %: within 1.5 %).  The former fit of the replica means, quoted as slope ± one standard error, covered 49 %
    of such studies at three sizes (58 % at four; ± 1.96 of them: 70 %, 81 %), and gave no error at two sizes."""
    from meanfield._convergence import _fit

    rng = np.random.default_rng(replicas * 10 + sizes)
    ns = 100.0 * 4.0 ** np.arange(sizes)
    studies = 4000
    noise = np.sqrt(rng.chisquare(5, (studies, replicas, sizes)) / 5)
    covered = 0
    for dist in ns ** -0.5 * noise:
        slope, err, dof, (lo, hi) = _fit(np.log(ns), dist)
        assert dof == replicas * sizes - 2 and lo < slope < hi
        covered += lo <= -0.5 <= hi
    assert abs(covered / studies - 0.95) < 0.015, covered / studies


def test_two_sizes_with_replicas_give_an_interval_and_the_pooled_fit_is_polyfits():
    """Two N and three replicas: the slope, its standard error and interval from the 6 points (4 degrees of freedom),
    checked against numpy's polyfit of the pooled points and scipy's t quantile.  It was NaN ± NaN."""
    from scipy import stats

    dens = mf.Density.random(8, seed=1, amplitude=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        ref = mf.simulate(MODEL, dens, 0.1)
        r = mf.convergence_in_n(MODEL, dens, 0.1, [40, 160], replicas=3, reference=ref)
    x, y = np.tile(np.log([40.0, 160.0]), 3), np.log(r.distances).ravel()
    (slope, _), cov = np.polyfit(x, y, 1, cov=True)
    assert r.slope == pytest.approx(slope, rel=1e-12) and r.dof == 4
    assert r.slope_stderr == pytest.approx(np.sqrt(cov[0, 0]), rel=1e-10)
    half = stats.t.ppf(0.975, 4) * r.slope_stderr
    assert r.slope_ci == pytest.approx((slope - half, slope + half), rel=1e-10)
    assert "95 % CI" in r.message and "4 dof" in r.message
    one = mf.convergence_in_n(MODEL, dens, 0.1, [40, 160], replicas=1, reference=ref)
    assert np.isfinite(one.slope) and np.isnan(one.slope_stderr) and one.dof == 0 and "CI" not in one.message


def test_convergence_in_l_reports_no_confidence_interval_for_its_deterministic_distances():
    dens = mf.Density.random(6, seed=3, amplitude=0.4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        r = mf.convergence_in_l(mf.Model(1.0), dens, 0.2, [4, 6, 8, 12], rtol=1e-12)
    slope, _ = np.polyfit([4.0, 6.0, 8.0], np.log(r.mean), 1)
    assert r.slope == pytest.approx(slope, rel=1e-12) and r.dof == 1 and np.isfinite(r.slope_stderr)
    assert np.all(np.isnan(r.slope_ci)) and "CI" not in r.message


@pytest.mark.parametrize("lmax, error", [(0, ValueError), (-2, ValueError), ("x", TypeError), (2.5, TypeError)])
def test_convergence_in_n_refuses_a_bad_lmax_before_the_reference_run(monkeypatch, lmax, error):
    # `lmax` was checked only once the spectral reference had run (minutes at a fine band limit)
    import meanfield._simulate as sim

    def no_run(*args, **kwargs):
        raise AssertionError("a run started before `lmax` was checked")

    monkeypatch.setattr(sim, "simulate", no_run)
    with pytest.raises(error, match="`lmax`"):
        mf.convergence_in_n(MODEL, mf.Density.uniform(8), 1.0, [10, 20], replicas=1, lmax=lmax)


def test_the_fixture_studys_interval_holds_the_expected_slope(in_n):
    _, r = in_n
    assert r.dof == 2 * 4 - 2 and r.slope_ci[0] < -0.5 < r.slope_ci[1], r.message


@pytest.mark.slow
def test_the_slope_interval_covers_minus_one_half_for_iid_samples_of_a_density():
    """400 studies of i.i.d. samples of a density on S² (N = 100, 400, 1600; three replicas; H⁻¹ at L = 8): the 95 %
    interval covers −1/2 in 95.5 % (binomial standard error 1.1 %; the former slope ± one standard error of the
    replica means covered 53 %, ± 1.96 of them 74.5 %), and the reported standard error is the slopes' spread."""
    from meanfield._convergence import _fit

    dens = mf.Density.random(8, seed=1, amplitude=0.5)
    ns, rng = np.array([100, 400, 1600]), np.random.default_rng(7)
    fits = [_fit(np.log(ns), [[mf.sobolev_distance(mf.sample_density(dens, int(n), seed=rng), dens) for n in ns]
                              for _ in range(3)]) for _ in range(400)]
    slopes, errors = np.array([f[0] for f in fits]), np.array([f[1] for f in fits])
    covered = np.mean([lo <= -0.5 <= hi for _, _, _, (lo, hi) in fits])
    assert abs(covered - 0.95) < 0.035 and abs(slopes.mean() + 0.5) < 0.01, (covered, slopes.mean())
    assert errors.mean() == pytest.approx(slopes.std(), rel=0.15)


def test_convergence_in_n_names_the_density_of_another_dimension_than_the_model():
    # the particle options' check refused it first, as "`initial` has d=5 but the model has d=3"
    with pytest.raises(ValueError, match=r"`density` has d=5 but the model has d=3"):
        mf.convergence_in_n(MODEL, mf.ZonalDensity.uniform(6, 5), 0.1, [10, 20])
