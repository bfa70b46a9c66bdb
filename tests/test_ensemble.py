"""mf.ensemble: independent reproducible replicas, Student-t and bootstrap confidence intervals, bad input."""
import dataclasses
import warnings

import numpy as np
import pytest
from scipy import stats

import meanfield as mf


MODEL = mf.Model(beta=2.0)


def test_replicas_are_reproducible_and_independent():
    r1 = mf.ensemble(MODEL, 40, 0.5, replicas=3, seed=11, save_every=0.25, step=0.05)
    r2 = mf.ensemble(MODEL, 40, 0.5, replicas=3, seed=11, save_every=0.25, step=0.05)
    r3 = mf.ensemble(MODEL, 40, 0.5, replicas=3, seed=12, save_every=0.25, step=0.05)
    assert r1.success and np.array_equal(r1.values, r2.values)
    assert not np.array_equal(r1.values, r3.values)
    assert len(set(r1.values[:, 0])) == 3          # distinct initial draws
    # replica i is exactly a run from SeedSequence(seed).spawn(R)[i]
    ss = np.random.SeedSequence(11).spawn(3)[1]
    p = mf.Particles.uniform(40, seed=np.random.default_rng(ss))
    traj = mf.simulate(MODEL, p, 0.5, backend="particles", save_every=0.25, step=0.05)
    assert np.array_equal(r1.values[1], [mf.mean_alignment(s) for s in traj.states])
    assert np.array_equal(r1.times, [0, 0.25, 0.5])


def test_statistics_and_interval():
    obs = lambda p: np.array([p.positions[:, 2].mean(), mf.mean_alignment(p)])  # noqa: E731
    r = mf.ensemble(MODEL, 30, 0.2, replicas=12, seed=3, observable=obs, step=0.1, confidence=0.9)
    assert r.values.shape == (12, 2, 2) and r.mean.shape == (2, 2)
    v = r.values[:, 1, 0]
    lo, hi = stats.t.interval(0.9, 11, loc=v.mean(), scale=stats.sem(v))
    assert r.ci_low[1, 0] == pytest.approx(lo, rel=1e-12) and r.ci_high[1, 0] == pytest.approx(hi, rel=1e-12)
    assert r.std[1, 0] == pytest.approx(v.std(ddof=1), rel=1e-12)
    assert np.all(r.count == 12)


def test_interval_covers_a_known_mean():
    # At t = 0 the mean pairwise alignment of i.i.d. uniform tokens has expectation exactly 0.
    r = mf.ensemble(MODEL, 25, 0.1, replicas=40, seed=5, step=0.1)
    assert r.ci_low[0] < 0 < r.ci_high[0]
    assert r.mean[1] > r.mean[0]             # and attention aligns them


def test_sampler_and_other_backend():
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 2], 2)
    r = mf.ensemble(MODEL, lambda rng: mf.Particles.from_density(rho, 50, seed=rng), 0.2, replicas=3,
                    backend="particles-sh", observable=lambda p: p.positions[:, 2].mean(), step=0.1)
    assert r.success and r.values.shape == (3, 2)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(replicas=1), ValueError, "`replicas` must be an integer >= 2"),
    (dict(replicas=2, confidence=1.5), ValueError, r"`confidence` must be in \(0, 1\)"),
    (dict(replicas=2, observable=3), TypeError, "`observable` must be callable"),
    (dict(replicas=2, sampler_or_n=0), ValueError, "`sampler_or_n` must be an integer >= 1"),
    (dict(replicas=2, sampler_or_n="many"), TypeError, "`sampler_or_n` must be a token count"),
    (dict(replicas=2, sampler_or_n=lambda rng: np.zeros((3, 3))), TypeError, "the sampler must return"),
    (dict(replicas=2, stepsize=0.1), TypeError, "unknown option"),
    (dict(replicas=2, model="post-ln"), TypeError, "`model` must be a meanfield.Model; got str"),   # was .d's error
    (dict(replicas=6, interval="bca"), ValueError, r"`interval` must be one of 't', 'bootstrap'; got interval='bca'"),
    (dict(replicas=6, interval=None), ValueError, r"`interval` must be one of 't', 'bootstrap'; got interval=None"),
    (dict(replicas=5, interval="bootstrap"), ValueError,
     r"`interval`='bootstrap' needs `replicas` >= 6 at confidence=0.95: .*2\^\(1-R\) = 0.0625 .*got replicas=5"),
    (dict(replicas=3, interval="bootstrap", confidence=0.8), ValueError, r"needs `replicas` >= 4 at confidence=0.8"),
    (dict(replicas=7, interval="bootstrap", confidence=0.99), ValueError, r"needs `replicas` >= 8 at confidence=0.99"),
])
def test_bad_input(kwargs, error, match):
    args = dict(sampler_or_n=10, step=0.1, model=MODEL)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        mf.ensemble(args.pop("model"), args.pop("sampler_or_n"), 0.2, **args)


def test_a_replica_that_stops_early_counts_only_at_the_times_it_reached():
    # pre-ln with V = −I drives a radius to 0 in one replica (NON_FINITE at t ≈ 1.62): its last state, off the
    # save grid, used to be filed under the next save time (t = 2) and counted there
    model = mf.Model(3.0, "pre-ln", V=-np.eye(3))

    def sampler(rng):
        return mf.Particles.uniform(50, 3, seed=rng, radii=rng.uniform(0.3, 3.0))
    r = mf.ensemble(model, sampler, 3.0, replicas=3, seed=2, save_every=1.0, step=0.01,
                    observable=lambda p: p.radii.mean())
    stopped = [i for i, s in enumerate(r.statuses) if s is not mf.Status.OK]
    assert stopped and not r.success
    for i, ss in enumerate(r.seeds):
        tr = mf.simulate(model, sampler(np.random.default_rng(ss)), 3.0, backend="particles", save_every=1.0, step=0.01)
        reached = np.isin(r.times, tr.times)
        assert np.array_equal(np.isfinite(r.values[i]), reached)
        assert np.array_equal(r.values[i][reached], [s.radii.mean() for s, t in zip(tr.states, tr.times) if t in r.times])
    assert np.array_equal(r.count, np.sum(np.isfinite(r.values), axis=0)) and r.count[-1] < 3


def test_replicas_start_at_t0():
    model = mf.Model(3.0)
    r = mf.ensemble(model, 50, 2.0, replicas=2, seed=1, save_every=0.5, t0=1.0)
    assert np.array_equal(r.times, [1.0, 1.5, 2.0]) and np.all(r.count == 2)
    tr = mf.simulate(model, mf.Particles.uniform(50, seed=np.random.default_rng(r.seeds[0])), 2.0,
                     backend="particles", save_every=0.5, t0=1.0)
    assert np.array_equal(r.values[0], [mf.mean_alignment(s) for s in tr.states])
    with pytest.raises(ValueError, match=r"`t_final` must be > t0=2.5"):
        mf.ensemble(model, 50, 2.0, replicas=2, t0=2.5)


@pytest.mark.parametrize("n", [2, 7, 50])
@pytest.mark.parametrize("d", [2, 3, 5])
def test_mean_alignment_is_the_weighted_pair_mean(n, d):
    """Against the direct O(n²) pair sum Σ_{i≠j} w_i w_j⟨θ_i, θ_j⟩ / Σ_{i≠j} w_i w_j (the O(n) form loses a few
    ulps to cancellation), and the closed cases: an antipodal pair −1, one cluster 1."""
    rng = np.random.default_rng(n * d)
    x = rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.random(n) + 0.1
    w /= w.sum()
    gram, pair = x @ x.T, np.outer(w, w)
    off = ~np.eye(n, dtype=bool)
    direct = np.sum(pair[off] * gram[off]) / np.sum(pair[off])
    assert mf.mean_alignment(mf.Particles(x, w)) == pytest.approx(direct, rel=1e-13, abs=1e-15)
    e = np.eye(d)[:1]
    assert mf.mean_alignment(mf.Particles(np.vstack([e, -e]))) == pytest.approx(-1.0, rel=1e-15)
    assert mf.mean_alignment(mf.Particles(np.repeat(e, n, axis=0), w)) == pytest.approx(1.0, rel=1e-15)


def test_a_non_finite_component_leaves_the_replica_out_of_every_component():
    # per-component NaN skipping averaged component 0 over all 6 replicas while `count` (and so the t quantile and
    # the √k of the interval) counted 4: an interval of the wrong width, with no warning
    def obs(p):
        z = p.positions[0, 2]
        return np.array([z, np.nan if z > 0 else z])
    with pytest.warns(mf.MeanfieldWarning, match=r"observable is not finite .* left out"):
        r = mf.ensemble(MODEL, 10, 0.1, replicas=6, seed=1, step=0.1, observable=obs)
    kept = np.all(np.isfinite(r.values), axis=2)                  # (R, T)
    assert 2 <= kept[:, 0].sum() < 6
    assert np.array_equal(r.count, kept.sum(axis=0))
    for j in range(r.times.size):
        v = r.values[kept[:, j], j, 0]
        lo, hi = stats.t.interval(0.95, v.size - 1, loc=v.mean(), scale=stats.sem(v))
        assert r.mean[j, 0] == pytest.approx(v.mean(), rel=1e-12)
        assert r.ci_low[j, 0] == pytest.approx(lo, rel=1e-12) and r.ci_high[j, 0] == pytest.approx(hi, rel=1e-12)


def test_a_constant_observable_has_the_point_interval_at_its_value():
    # the mean of 30 copies of 0.1 rounded to 0.1 + 2.8e-17 and the interval (half-width 1e-17) missed 0.1
    r = mf.ensemble(MODEL, 5, 0.1, replicas=30, seed=2, step=0.1, observable=lambda p: 0.1)
    assert np.all(r.mean == 0.1) and np.all(r.std == 0.0)
    assert np.all(r.ci_low == 0.1) and np.all(r.ci_high == 0.1)


@pytest.mark.parametrize("observable, error, match", [
    (lambda p: None, TypeError, r"`observable` must return a real number .*got None"),
    (lambda p: "x", TypeError, r"`observable` must return a real number .*got 'x'"),
    (lambda p: 1j, TypeError, r"`observable` must return a real number .*got 1j"),
])
def test_an_observable_that_returns_no_real_number_is_refused_before_any_run(monkeypatch, observable, error, match):
    # None became NaN and was counted as 'not reached'; a str or complex failed after the first run, unnamed
    import meanfield._ensemble as ens
    runs = []
    monkeypatch.setattr(ens, "simulate", lambda *a, **k: runs.append(a))
    with pytest.raises(error, match=match):
        mf.ensemble(MODEL, 10, 0.1, replicas=2, step=0.1, observable=observable)
    assert not runs


def test_too_few_replicas_for_the_bootstrap_are_refused_before_any_run(monkeypatch):
    import meanfield._ensemble as ens
    runs = []
    monkeypatch.setattr(ens, "simulate", lambda *a, **k: runs.append(a))
    with pytest.raises(ValueError, match=r"`interval`='bootstrap' needs `replicas` >= 6"):
        mf.ensemble(MODEL, 10, 0.1, replicas=5, step=0.1, interval="bootstrap")
    assert not runs


def test_an_observable_of_varying_shape_is_refused_by_name():
    sizes = iter([10, 12])
    with pytest.raises(ValueError, match=r"`observable` must return values of one shape; .*\(10,\) .*\(12,\)"):
        mf.ensemble(MODEL, lambda rng: mf.Particles.uniform(next(sizes), seed=rng), 0.1, replicas=2, step=0.1,
                    observable=lambda p: p.positions[:, 0])


def test_seed_true_is_refused():
    with pytest.raises(TypeError, match=r"`seed` must be an int ≥ 0 or a numpy SeedSequence; got seed=True"):
        mf.ensemble(MODEL, 10, 0.1, replicas=2, seed=True, step=0.1)
    with pytest.raises(ValueError, match=r"`seed` must be an int ≥ 0 or a numpy SeedSequence; got seed=-1"):
        mf.ensemble(MODEL, 10, 0.1, replicas=2, seed=-1, step=0.1)


@pytest.mark.slow
def test_interval_coverage_matches_the_confidence_level():
    # the mean z-coordinate of uniform tokens has mean 0 at every t (rotation symmetry) and is nearly normal: the
    # share of 1000 intervals that cover 0 must be the confidence level within 4 binomial standard deviations
    level, runs = 0.9, 1000
    hits = 0
    for k in range(runs):
        r = mf.ensemble(MODEL, 20, 0.01, replicas=4, seed=k, method="rk4", step=0.01, confidence=level,
                        observable=lambda p: p.positions[:, 2].mean())
        hits += r.ci_low[-1] <= 0.0 <= r.ci_high[-1]
    assert abs(hits / runs - level) < 4 * np.sqrt(level * (1 - level) / runs)


def test_a_save_every_beyond_the_save_limit_is_refused_by_name():
    # simulate refused it; ensemble built the save times first (1e-300: numpy's 'Maximum allowed size exceeded';
    # 1e-9: 30 s and 8 GB of save times, then simulate's refusal)
    with pytest.raises(ValueError, match=r"`save_every` must be ≥ \(t_final − t0\)/1000000 .*save_every=1e-300"):
        mf.ensemble(MODEL, 4, 1.0, replicas=2, save_every=1e-300)


def _in_order_mean(x, axis):
    """The mean summed in replica order (as ensemble's bootstrap does: np.mean's order depends on the shape)."""
    return sum(np.moveaxis(x, axis, 0)) / x.shape[axis]


def test_the_bootstrap_interval_is_scipys_bca_at_every_time_and_component():
    obs = lambda p: np.array([p.positions[:, 2].mean(), mf.mean_alignment(p)])  # noqa: E731
    kw = dict(replicas=12, seed=3, observable=obs, save_every=0.1, step=0.1, confidence=0.9)
    r = mf.ensemble(MODEL, 30, 0.2, interval="bootstrap", **kw)
    rt = mf.ensemble(MODEL, 30, 0.2, **kw)
    assert (r.interval, rt.interval, rt.bootstrap_seed) == ("bootstrap", "t", None)
    assert np.array_equal(r.values, rt.values) and np.array_equal(r.mean, rt.mean) and np.array_equal(r.std, rt.std)
    # the resampling is seeded by the root's next child after the replicas'
    assert r.bootstrap_seed.entropy == 3 and r.bootstrap_seed.spawn_key == (12,)
    for j in range(3):
        for c in range(2):
            v = r.values[:, j, c]
            res = stats.bootstrap((v,), _in_order_mean, confidence_level=0.9, method="BCa",
                                  rng=np.random.default_rng(r.bootstrap_seed))
            assert (r.ci_low[j, c], r.ci_high[j, c]) == tuple(res.confidence_interval)
            # np.mean sums in another order: the ends move by a small part of the width
            plain = stats.bootstrap((v,), np.mean, confidence_level=0.9, rng=np.random.default_rng(r.bootstrap_seed))
            width = r.ci_high[j, c] - r.ci_low[j, c]
            assert np.allclose(tuple(plain.confidence_interval), (r.ci_low[j, c], r.ci_high[j, c]), rtol=0,
                               atol=1e-3 * width)
            assert r.ci_low[j, c] < r.mean[j, c] < r.ci_high[j, c]


def test_the_bootstrap_interval_is_reproducible():
    kw = dict(replicas=6, save_every=0.1, step=0.1, interval="bootstrap")
    r1, r2 = mf.ensemble(MODEL, 20, 0.1, seed=4, **kw), mf.ensemble(MODEL, 20, 0.1, seed=4, **kw)
    r3 = mf.ensemble(MODEL, 20, 0.1, seed=5, **kw)
    assert np.array_equal(r1.ci_low, r2.ci_low) and np.array_equal(r1.ci_high, r2.ci_high)
    assert not np.array_equal(r1.ci_low, r3.ci_low)
    # a SeedSequence root: R children for the replicas, the next for the resampling, then fresh ones
    root = np.random.SeedSequence(4)
    r4 = mf.ensemble(MODEL, 20, 0.1, seed=root, **kw)
    assert np.array_equal(r4.ci_low, r1.ci_low) and root.n_children_spawned == 7
    r5 = mf.ensemble(MODEL, 20, 0.1, seed=root, **kw)
    assert r5.seeds[0].spawn_key == (7,) and r5.bootstrap_seed.spawn_key == (13,)
    # "t" spawns no resampling child (its replicas and a SeedSequence's state are as before the option)
    root = np.random.SeedSequence(4)
    mf.ensemble(MODEL, 20, 0.1, seed=root, replicas=6, save_every=0.1, step=0.1)
    assert root.n_children_spawned == 6


def test_the_bootstrap_interval_per_time_over_the_replicas_counted_there():
    # replica i gives NaN (in one component) at save time j when i < 4j - 1 (j ≥ 1): counts 12, 9, 5, 1 at the four
    # times; at 95 % the BCa interval needs 6, so the last two are NaN; the others are over different replica sets
    calls = iter(range(10 ** 6))
    R, T = 12, 4

    def obs(p):
        n = next(calls) - 1             # call 0 is the check on replica 0's initial tokens
        i, j = (0, 0) if n < 0 else divmod(n, T)
        z = p.positions[:, 2].mean()
        return np.array([z, np.nan if j >= 1 and i < 4 * j - 1 else z ** 2])
    with pytest.warns(mf.MeanfieldWarning, match="observable is not finite") as record:
        r = mf.ensemble(MODEL, 20, 0.3, replicas=R, seed=6, save_every=0.1, step=0.1, observable=obs,
                        interval="bootstrap")
    assert not [w for w in record if "BCa" in str(w.message)]      # too few replicas is not a failure
    assert np.array_equal(r.count, [12, 9, 5, 1])
    assert np.all(np.isnan(r.ci_low[2:])) and np.all(np.isnan(r.ci_high[2:]))
    assert np.all(np.isfinite(r.mean[2:]))       # the mean is still there
    # one call per count, in increasing count, with one generator: the 9 replicas at t = 0.1, then all 12 at t = 0
    rng = np.random.default_rng(r.bootstrap_seed)
    for j in (1, 0):
        kept = r.values[np.all(np.isfinite(r.values[:, j]), axis=1), j]          # (k, 2)
        res = stats.bootstrap((kept.T,), _in_order_mean, axis=-1, method="BCa", rng=rng)
        assert np.array_equal(r.ci_low[j], res.confidence_interval.low)
        assert np.array_equal(r.ci_high[j], res.confidence_interval.high)


def test_a_constant_observable_has_the_point_bootstrap_interval():
    obs = lambda p: np.array([0.1, p.positions[:, 2].mean()])  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # scipy's DegenerateDataWarning is not passed on
        r = mf.ensemble(MODEL, 5, 0.1, replicas=8, seed=2, step=0.1, observable=obs, interval="bootstrap")
    assert np.all(r.ci_low[:, 0] == 0.1) and np.all(r.ci_high[:, 0] == 0.1)
    assert np.all(r.ci_low[:, 1] < r.mean[:, 1]) and np.all(r.mean[:, 1] < r.ci_high[:, 1])


def test_a_bootstrap_interval_scipy_cannot_compute_is_nan_and_warned():
    # values 0.1 and the next float: the jackknife differences round to 0, and BCa's acceleration is 0/0
    obs = lambda p: 0.1 if p.positions[0, 2] > 0 else np.nextafter(0.1, 1.0)  # noqa: E731
    with pytest.warns(mf.MeanfieldWarning, match=r"BCa interval could not be computed at 2 .*t=0 with values in "
                                                 r"\[0.1, 0.10000000000000002\]"):
        r = mf.ensemble(MODEL, 5, 0.01, replicas=8, seed=2, step=0.01, observable=obs, interval="bootstrap")
    assert r.times.size == 2 and len(set(r.values[:, 0])) == 2
    assert np.all(np.isnan(r.ci_low)) and np.all(np.isnan(r.ci_high)) and np.all(r.mean > 0)


def test_the_bootstrap_in_memory_blocks_draws_them_in_turn(monkeypatch):
    # with room for one column per scipy call, the columns (time-major) are resampled one after the other
    import meanfield._ensemble as ens
    monkeypatch.setattr(ens, "_BOOTSTRAP_FLOATS", 1)
    obs = lambda p: np.array([p.positions[:, 2].mean(), mf.mean_alignment(p)])  # noqa: E731
    r = mf.ensemble(MODEL, 20, 0.1, replicas=6, seed=8, save_every=0.1, step=0.1, observable=obs,
                    interval="bootstrap")
    rng = np.random.default_rng(r.bootstrap_seed)
    for j in range(2):
        for c in range(2):
            res = stats.bootstrap((r.values[:, j, c],), _in_order_mean, method="BCa", rng=rng)
            assert (r.ci_low[j, c], r.ci_high[j, c]) == tuple(res.confidence_interval)


@pytest.mark.slow
def test_bootstrap_interval_coverage_matches_its_measured_value():
    # the documented coverages at t = 0 of R = 10 replicas, 95 % (the mean z-coordinate and mean_alignment of n = 20
    # uniform tokens both have mean 0 there), measured on 20 000 directly sampled ensembles (sd 0.002): BCa
    # 0.902 and 0.886, below t's 0.952 and 0.919.  350 ensembles: each within 4 binomial sd, and BCa below t for z
    runs, level = 350, 0.95
    measured = {"t": np.array([0.9515, 0.9185]), "bootstrap": np.array([0.9023, 0.8863])}
    obs = lambda p: np.array([p.positions[:, 2].mean(), mf.mean_alignment(p)])  # noqa: E731
    hits = {"t": np.zeros(2), "bootstrap": np.zeros(2)}
    for k in range(runs):
        r = mf.ensemble(MODEL, 20, 0.01, replicas=10, seed=k, method="rk4", step=0.01, observable=obs,
                        interval="bootstrap")
        half = stats.t.ppf(0.5 + level / 2, 9) * r.std[0] / np.sqrt(10)        # the t interval of the same values
        hits["t"] += (r.mean[0] - half <= 0.0) & (0.0 <= r.mean[0] + half)
        hits["bootstrap"] += (r.ci_low[0] <= 0.0) & (0.0 <= r.ci_high[0])
    for kind, p in measured.items():
        sd = np.sqrt(p * (1 - p) / runs + p * (1 - p) / 20_000)
        assert np.all(np.abs(hits[kind] / runs - p) < 4 * sd), (kind, hits[kind] / runs)
    assert hits["bootstrap"][0] < hits["t"][0]


# ------------------------------------------------------------------------------------------------
# batched replicas: one run of backend="particles" with groups=R

def test_batched_replicas_agree_with_the_replicas_run_one_by_one():
    kw = dict(replicas=5, seed=4, save_every=0.5)
    fixed = [mf.ensemble(MODEL, 20, 1.5, batch=b, step=0.05, **kw) for b in (True, False)]
    assert np.max(np.abs(fixed[0].values - fixed[1].values)) < 1e-13     # same steps: rounding apart
    rtol = 1e-8
    adaptive = [mf.ensemble(MODEL, 20, 1.5, batch=b, rtol=rtol, atol=rtol, **kw) for b in (True, False)]
    assert np.max(np.abs(adaptive[0].values - adaptive[1].values)) < 100 * rtol
    assert all(r.success for r in fixed + adaptive)
    assert np.array_equal(fixed[0].times, fixed[1].times) and np.array_equal(fixed[0].count, fixed[1].count)


def test_replicas_are_batched_by_default_for_the_exact_backend(monkeypatch):
    import meanfield._ensemble as ens
    calls = []
    real = ens.simulate

    def spy(model, initial, t_final, **options):
        calls.append((initial.n, options.get("groups")))
        return real(model, initial, t_final, **options)
    monkeypatch.setattr(ens, "simulate", spy)
    mf.ensemble(MODEL, 10, 0.2, replicas=4, step=0.1)
    assert calls == [(40, 4)]
    calls.clear()
    mf.ensemble(MODEL, 10, 0.2, replicas=4, step=0.1, batch=False)
    assert calls == [(10, None)] * 4
    calls.clear()       # an implicit method: one by one unless asked (it steps as the stiffest replica needs)
    mf.ensemble(MODEL, 10, 0.2, replicas=4, method="bdf")
    assert calls == [(10, None)] * 4
    calls.clear()
    mf.ensemble(MODEL, 10, 0.2, replicas=4, method="bdf", batch=True)
    assert calls == [(40, 4)]
    calls.clear()       # token counts 5–8: padded to 8 each, at most 2× the token pairs: batched
    mf.ensemble(MODEL, lambda rng: mf.Particles.uniform(int(rng.integers(5, 9)), seed=rng), 0.2, replicas=4, step=0.1)
    assert calls == [(32, 4)]
    calls.clear()       # 2, 2, 2, 30 tokens: padding would cost 3.7× their pairs, so one by one unless asked
    sizes = iter([2, 2, 2, 30] * 2)
    mf.ensemble(MODEL, lambda rng: mf.Particles.uniform(next(sizes), seed=rng), 0.2, replicas=4, step=0.1)
    assert [n for n, _ in calls] == [2, 2, 2, 30] and all(g is None for _, g in calls)
    calls.clear()
    mf.ensemble(MODEL, lambda rng: mf.Particles.uniform(next(sizes), seed=rng), 0.2, replicas=4, step=0.1, batch=True)
    assert calls == [(120, 4)]


@pytest.mark.parametrize("model, options", [
    (MODEL, dict(step=0.05)),
    (MODEL, dict(step=0.05, causal=True)),
    (mf.Model(2.0, "pre-ln"), dict(step=0.05)),
    (MODEL, dict(rtol=1e-8, atol=1e-8)),
])
def test_replicas_of_different_token_counts_batched_agree_with_them_run_one_by_one(model, options):
    """Padded with massless copies of their last token: with fixed steps the values are the replicas' own to
    rounding (also with a causal mask, where the copies move otherwise, and with radii); adaptive, to the tolerance.
    The observable sees each replica's own tokens only."""
    def sampler(rng):
        n = int(rng.integers(12, 21))
        radii = rng.uniform(0.5, 2.0, n) if model.scheme_def.has_radius else None
        return mf.Particles.uniform(n, seed=rng, radii=radii)
    kw = dict(replicas=6, seed=7, save_every=0.5, **options)
    observe = dict(observable=lambda p: [mf.mean_alignment(p), p.n, p.weights.sum()])
    batched, alone = (mf.ensemble(model, sampler, 1.5, batch=b, **observe, **kw) for b in (True, False))
    counts = batched.values[:, 0, 1]
    assert len(set(counts)) > 1 and np.array_equal(batched.values[:, :, 1:], alone.values[:, :, 1:])
    assert np.allclose(batched.values[:, :, 2], 1.0, rtol=0, atol=1e-15)
    tol = 1e-13 if "step" in options else 100 * options.get("rtol", 0)
    assert np.max(np.abs(batched.values - alone.values)) < tol
    assert batched.success and alone.success


def test_a_replica_that_stops_a_batched_run_reruns_them_one_by_one():
    model = mf.Model(3.0, "pre-ln", V=-np.eye(3))

    def sampler(rng):
        return mf.Particles.uniform(50, 3, seed=rng, radii=rng.uniform(0.3, 3.0))
    kw = dict(replicas=3, seed=2, save_every=1.0, step=0.01, observable=lambda p: p.radii.mean())
    with pytest.warns(mf.MeanfieldWarning, match=r"the batched run of the 3 replicas stopped at t=1\.62 .*one by one"):
        batched = mf.ensemble(model, sampler, 3.0, **kw)
    with pytest.warns(mf.MeanfieldWarning):
        alone = mf.ensemble(model, sampler, 3.0, batch=False, **kw)
    assert batched.statuses == alone.statuses and not batched.success
    assert np.array_equal(batched.values, alone.values, equal_nan=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(backend="particles-sh"), r"`batch`=True: only backend='particles' runs replicas together"),
    (dict(callback=lambda t, state: None), r"`batch`=True: a `callback`"),
    (dict(batch="yes"), r"`batch` must be True or False"),
])
def test_batch_true_refuses_what_it_cannot_batch(kwargs, match):
    args = dict(sampler_or_n=10, batch=True)
    args.update(kwargs)
    error = TypeError if kwargs.get("batch") == "yes" else ValueError
    with pytest.raises(error, match=match):
        mf.ensemble(MODEL, args.pop("sampler_or_n"), 0.2, replicas=3, **args)


def test_a_checkpoint_needs_the_replicas_in_one_run(tmp_path):
    path = tmp_path / "ens.h5"
    with pytest.raises(ValueError, match=r"`checkpoint` saves one run, .*\(batch=False\)"):
        mf.ensemble(MODEL, 10, 0.2, replicas=3, step=0.1, checkpoint=path, batch=False)
    with pytest.raises(ValueError, match=r"`checkpoint` saves one run, .*\(only backend='particles'"):
        mf.ensemble(MODEL, 10, 0.2, replicas=3, step=0.1, checkpoint=path, backend="particles-sh")
    assert not path.exists()
    first = mf.ensemble(MODEL, 10, 0.4, replicas=3, step=0.1, save_every=0.2, checkpoint=path)
    saved = mf.load(path)
    assert saved.options["groups"] == 3 and saved.final.n == 30
    again = mf.ensemble(MODEL, 10, 0.4, replicas=3, step=0.1, save_every=0.2, checkpoint=path)
    assert np.array_equal(first.values, again.values)


def test_a_checkpoint_of_the_same_ensemble_is_resumed_and_another_run_refused(tmp_path, monkeypatch):
    # ensemble(checkpoint=...) was documented to save and resume the batched run, but a second call started it
    # again from t0 and overwrote the file: the work of a killed run was lost, as was a file of another run
    import shutil

    from meanfield import _io
    from meanfield.backends._particles import ParticlesBackend
    args = dict(replicas=4, seed=2, save_every=0.25, step=0.05, checkpoint_every=1)
    full = mf.ensemble(MODEL, 6, 1.0, **args)
    copies, write = [], _io.save_checkpoint

    def save_and_copy(trajectory, path, point):         # what a SIGKILL right after each write would leave
        out = write(trajectory, path, point)
        copies.append(shutil.copy(path, tmp_path / f"killed-{len(copies)}.h5"))
        return out
    monkeypatch.setattr(_io, "save_checkpoint", save_and_copy)
    mf.ensemble(MODEL, 6, 1.0, checkpoint=tmp_path / "run.h5", **args)
    monkeypatch.undo()
    path = tmp_path / "ck.h5"
    shutil.copy(copies[2], path)
    assert mf.load(path).status is mf.Status.INCOMPLETE and mf.load(path).times[-1] == 0.5
    calls, field = [], ParticlesBackend._field
    monkeypatch.setattr(ParticlesBackend, "_field", lambda self, *a: calls.append(1) or field(self, *a))
    mf.ensemble(MODEL, 6, 1.0, checkpoint=tmp_path / "fresh.h5", **args)
    fresh, calls[:] = len(calls), []
    resumed = mf.ensemble(MODEL, 6, 1.0, checkpoint=path, **args)
    assert resumed.success and np.array_equal(resumed.values, full.values)
    assert 0 < len(calls) <= fresh * 0.6                # from t = 0.5: 10 of the 20 RK4 steps
    assert mf.load(path).status is mf.Status.OK
    calls.clear()
    again = mf.ensemble(MODEL, 6, 1.0, checkpoint=path, **args)    # complete: read back, not run again
    assert np.array_equal(again.values, full.values) and not calls
    for other, what in ((dict(seed=3), "initial tokens"), (dict(step=0.025), "option step"),
                        (dict(save_every=0.5), "save times"), (dict(replicas=5), "replicas")):
        with pytest.raises(ValueError, match=rf"`checkpoint` .* holds another run .*{what}"):
            mf.ensemble(MODEL, 6, 1.0, checkpoint=path, **{**args, **other})
    with pytest.raises(ValueError, match=r"`checkpoint` .* holds another run .*the model"):
        mf.ensemble(mf.Model(3.0), 6, 1.0, checkpoint=path, **args)


@pytest.mark.parametrize("options, error, match", [
    (dict(method=["rk4"]), ValueError, r"`method` must be one of"),     # was: unhashable type: 'list'
    (dict(method={"a": 1}), ValueError, r"`method` must be one of"),
    (dict(groups=np.array([2, 3])), TypeError, r"`groups` must be an integer"),     # was: truth value ambiguous
])
def test_bad_options_are_refused_by_name(options, error, match):
    with pytest.raises(error, match=match):
        mf.ensemble(MODEL, 4, 0.2, replicas=2, **options)


def test_groups_1_given_explicitly_is_the_default():
    # groups=1, the backend's default, passed as an option (as a configuration spelling out every option does) made
    # the batched run fail with "simulate() got multiple values for keyword argument 'groups'"
    plain = mf.ensemble(MODEL, 4, 0.2, replicas=3, step=0.1)
    given = mf.ensemble(MODEL, 4, 0.2, replicas=3, step=0.1, groups=1)
    assert given.success and np.array_equal(plain.values, given.values)


def test_ctrl_c_stops_the_replicas_run_one_by_one():
    # with batch=False a Ctrl-C interrupted one replica's run and the ensemble went on with the next ones (a user had
    # to press it once per replica); now the replicas not yet run are INTERRUPTED, as a batched run's all are
    started = []

    def interrupt_replica_1(t, state, diagnostics):      # called at each saved time after t0
        if t == pytest.approx(0.2):
            started.append(t)
        if len(started) == 2:
            raise KeyboardInterrupt
        return False
    r = mf.ensemble(MODEL, 6, 0.4, replicas=4, step=0.1, save_every=0.2, batch=False, callback=interrupt_replica_1)
    assert r.statuses == [mf.Status.OK] + [mf.Status.INTERRUPTED] * 3
    assert len(started) == 2 and list(r.count) == [2, 2, 1]


def test_a_checkpoint_of_a_batched_run_stopped_at_its_start_is_read_back(tmp_path):
    # Peri-LN divides by ‖A‖, 0 for a first token without mass under the causal mask: the batched run stops at t0
    def sampler(rng):
        p = mf.Particles.uniform(5, seed=rng)
        return mf.Particles(p.positions, np.array([0, 1, 1, 1, 1]) / 4)
    path, model = tmp_path / "stopped.h5", mf.Model(2.0, "peri-ln")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        runs = [mf.ensemble(model, sampler, 1.0, replicas=3, causal=True, step=0.1, save_every=0.5, checkpoint=path)
                for _ in range(2)]
    assert all(s is mf.Status.NON_FINITE for r in runs for s in r.statuses)
    assert np.array_equal(runs[0].values, runs[1].values, equal_nan=True) and list(runs[1].count) == [3, 0, 0]


def test_a_batched_run_that_spends_max_steps_is_not_rerun_one_by_one(monkeypatch):
    # max_steps bounds the cost of the batch's shared steps: spending it is no replica's failure, and a rerun one by
    # one (each replica with the whole budget) would cost up to R times the bound
    import meanfield._ensemble as ens
    calls = []
    real = ens.simulate

    def spy(model, initial, t_final, **options):
        calls.append(initial.n)
        return real(model, initial, t_final, **options)
    monkeypatch.setattr(ens, "simulate", spy)
    r = mf.ensemble(MODEL, 10, 5.0, replicas=3, save_every=1.0, max_steps=5)
    assert calls == [30]
    assert r.statuses == [mf.Status.STEP_TOO_SMALL] * 3 and np.all(r.count[1:] == 0) and np.all(r.count[0] == 3)


def test_a_complete_checkpoint_is_extended_to_a_later_t_final(tmp_path):
    # refused before ("the save times differ"): the batched run is resumed to the later t_final in the same file
    path = tmp_path / "ens.h5"
    kw = dict(replicas=3, seed=2, step=0.1, save_every=0.2)
    short = mf.ensemble(MODEL, 10, 0.4, checkpoint=path, **kw)
    longer = mf.ensemble(MODEL, 10, 0.8, checkpoint=path, **kw)
    fresh = mf.ensemble(MODEL, 10, 0.8, **kw)
    assert np.array_equal(longer.times, fresh.times) and mf.load(path).times[-1] == pytest.approx(0.8)
    assert np.array_equal(longer.values[:, :3], short.values)
    assert np.max(np.abs(longer.values - fresh.values)) < 1e-13      # fixed steps: the same steps
    with pytest.raises(ValueError, match=r"holds another run .*the save times"):
        mf.ensemble(MODEL, 10, 1.2, checkpoint=path, **{**kw, "save_every": 0.3})


@pytest.mark.parametrize("sampler_or_n", [4, lambda rng: mf.Particles.uniform(4, seed=rng)])
def test_replicas_beyond_memory_are_refused_before_any_seed(sampler_or_n):
    # replicas=10**12 spawned SeedSequences (and drew every replica's tokens) until the process held 15 GB, with
    # no message; a replica holds ~1.2 kB besides its tokens (tracemalloc)
    with pytest.raises(mf.InsufficientMemoryError, match=r"ensemble\(replicas=1000000000000.*\) \(every replica's seed "
                                                        r"and initial tokens\) needs about .* lower `replicas`"):
        mf.ensemble(mf.Model(1.0), sampler_or_n, 0.1, replicas=10**12)


@pytest.mark.parametrize("backend", ["spectral", "hybrid", "particle"])
def test_an_ensemble_refuses_a_backend_that_is_not_a_particle_backend_naming_the_two(backend):
    """backend="spectral" drew every replica's tokens and then failed in the first run with "backend='spectral'
    needs a Density" (the user gave a token count, not Particles); "hybrid" ran its particle phase, which the
    ensemble's documentation does not offer."""
    with pytest.raises(ValueError, match=r"`backend` must be one of \['particles', 'particles-sh'\] for ensemble"):
        mf.ensemble(mf.Model(2.0), 8, 0.1, replicas=2, backend=backend)


def test_an_ensemble_records_what_produced_it():
    """The result said nothing of its model, backend, options, times, observable or sampler: only the batched run's
    checkpoint kept any of it.  The recorded options are those a replica runs with alone (after defaults, as the
    replica's own Trajectory records them)."""
    def first_z(p):
        return p.positions[0, 2]

    def sampler(rng):
        return mf.Particles.uniform(8, seed=rng)
    for batch in (True, False):
        r = mf.ensemble(MODEL, 8, 0.6, replicas=3, seed=4, save_every=0.3, t0=0.1, step=0.1, batch=batch)
        alone = mf.simulate(MODEL, mf.Particles.uniform(8, seed=np.random.default_rng(r.seeds[2])), 0.6,
                            backend="particles", save_every=0.3, t0=0.1, step=0.1)
        assert (r.model, r.backend, r.t0, r.t_final, r.observable, r.sampler, r.batched) == (
            MODEL, "particles", 0.1, 0.6, "mean_alignment", 8, batch)
        assert r.options == alone.options and r.options["method"] == "rk4" and r.options["groups"] == 1
        # fixed steps: batched, the replica's values are its own run's to rounding
        assert np.max(np.abs(np.array([mf.mean_alignment(s) for s in alone.states]) - r.values[2])) < 1e-14
    r = mf.ensemble(MODEL, sampler, 0.2, replicas=2, observable=first_z, backend="particles-sh", step=0.1)
    assert (r.observable, r.sampler, r.backend, r.batched) == ("first_z", "sampler", "particles-sh", False)
    assert r.options["lmax"] >= 1 and "groups" not in r.options


def test_an_ensemble_result_built_by_hand_still_works_and_compares_by_value():
    # the provenance fields come last, with defaults: the positional construction of before still works
    seeds = np.random.SeedSequence(1).spawn(2)
    parts = (np.array([0.0, 1.0]), np.array([[0.1, 0.2], [0.3, np.nan]]), np.array([0.2, 0.2]), np.zeros(2),
             np.array([0.0, np.nan]), np.array([0.4, np.nan]), np.array([2, 1]), 0.9)
    r = mf.EnsembleResult(*parts, seeds, [mf.Status.OK, mf.Status.NON_FINITE])
    assert r.model is None and r.options == {} and r.interval == "t" and not r.success
    # == compares by value (it raised "The truth value of an array ... is ambiguous"); NaN equals NaN, seed sequences
    # by their state, not their identity
    same = mf.EnsembleResult(*parts, np.random.SeedSequence(1).spawn(2), [mf.Status.OK, mf.Status.NON_FINITE])
    assert r == same
    assert r != mf.EnsembleResult(*parts, np.random.SeedSequence(2).spawn(2), [mf.Status.OK, mf.Status.NON_FINITE])
    assert r != mf.EnsembleResult(*parts, seeds, [mf.Status.OK, mf.Status.OK])
    assert r != mf.EnsembleResult(*parts, seeds, [mf.Status.OK, mf.Status.NON_FINITE], observable="x")
    with pytest.raises(TypeError, match="unhashable"):
        hash(r)


def _first_z(p):
    return p.positions[0, 2]


def _sampler(rng):
    return mf.Particles.uniform(int(rng.integers(4, 7)), seed=rng)


@pytest.mark.parametrize("n, kwargs, callables", [
    (6, dict(seed=0, save_every=0.3, method="rk4", step=0.07), {}),                 # batched, fixed steps
    (6, dict(seed=3, backend="particles-sh", method="rk4", step=0.1), {}),         # one by one, fixed steps
    (6, dict(seed=1, t0=0.2, interval="bootstrap", observable=_first_z, confidence=0.8), dict(observable=_first_z)),
    (_sampler, dict(seed="spawned", time="layers", step=0.1), dict(sampler=_sampler)),
])
def test_a_loaded_result_runs_again_bit_for_bit_from_its_recorded_arguments(tmp_path, n, kwargs, callables):
    """The recorded options (after defaults) were not re-runnable: a fixed-step run records `rtol`, `atol`,
    `min_step`, which mf.ensemble refuses back as ignored ("option(s) ['rtol', 'atol', 'min_step'] would be
    ignored"), and neither the root seed nor the save times were recorded as arguments.  rerun_arguments gives them:
    run -> save -> load -> run again -> equal, bit for bit, for every field (a SeedSequence seed that had spawned
    before included)."""
    kwargs = dict(kwargs)
    if kwargs["seed"] == "spawned":
        kwargs["seed"] = np.random.SeedSequence(5)
        kwargs["seed"].spawn(3)
    r = mf.ensemble(mf.Model(4.0), n, 1.0, replicas=8, **kwargs)
    path = tmp_path / "ensemble.h5"
    mf.save(r, path)
    back = mf.load(path)
    if kwargs.get("method") == "rk4":
        with pytest.raises(ValueError, match="would be ignored"):       # the recorded form, as it was
            mf.ensemble(back.model, back.sampler, back.t_final, replicas=8, seed=kwargs["seed"], t_eval=back.times,
                        backend=back.backend, **back.options)
    again = mf.ensemble(**back.rerun_arguments(**callables))
    assert again == r == back
    assert np.array_equal(again.values, r.values, equal_nan=True) and again.batched == r.batched


def test_rerun_arguments_refuse_what_cannot_run_again_by_name():
    r = mf.ensemble(MODEL, 4, 0.2, replicas=2, seed=2, observable=_first_z, step=0.1)
    with pytest.raises(ValueError, match=r"observable was '_first_z'.*rerun_arguments\(observable=\.\.\.\)"):
        r.rerun_arguments()
    with pytest.raises(ValueError, match="`observable` must be the recorded '_first_z'; got 'mean_alignment'"):
        r.rerun_arguments(observable=mf.mean_alignment)
    with pytest.raises(TypeError, match="`observable` must be callable"):
        r.rerun_arguments(observable="_first_z")
    with pytest.raises(ValueError, match="`sampler` must be the recorded 4"):
        r.rerun_arguments(observable=_first_z, sampler=_sampler)
    assert r.rerun_arguments(observable=_first_z)["seed"] == 2
    hand = mf.EnsembleResult(r.times, r.values, r.mean, r.std, r.ci_low, r.ci_high, r.count, 0.95, r.seeds,
                             r.statuses)
    with pytest.raises(ValueError, match="records no run"):
        hand.rerun_arguments()
    scattered = dataclasses.replace(r, seeds=[np.random.SeedSequence(1), np.random.SeedSequence(2)])
    with pytest.raises(ValueError, match="not consecutive children of one SeedSequence"):
        scattered.rerun_arguments(observable=_first_z)


def test_tokens_of_another_dimension_are_refused_naming_the_replica_before_any_run(monkeypatch):
    """A sampler whose replicas had different d failed in the batching with numpy's "all the input array dimensions
    except for the concatenation axis must match exactly"; run one by one, the replicas before it ran first."""
    from meanfield import _ensemble

    calls = []

    def sampler(rng):
        calls.append(rng)
        return mf.Particles.uniform(5, 4 if len(calls) == 2 else 3, seed=rng)
    for batch in (None, False):
        calls.clear()
        monkeypatch.setattr(_ensemble, "simulate", lambda *a, **k: pytest.fail("a replica ran"))
        with pytest.raises(ValueError, match="tokens in d=4 for replica 1; the model has d=3"):
            mf.ensemble(MODEL, sampler, 0.2, replicas=3, step=0.1, batch=batch)


def test_a_sampler_that_ignores_its_generator_is_warned_about():
    """A sampler that draws with a fixed seed gave R copies of one run: std 0 and a zero-width interval, silently.
    Warned, not refused: a sampler of a few outcomes may draw one for every replica by chance."""
    with pytest.warns(mf.MeanfieldWarning, match="same tokens for all 4 replicas; if it does not draw them with the"):
        r = mf.ensemble(MODEL, lambda rng: mf.Particles.uniform(6, seed=0), 0.2, replicas=4, step=0.1)
    assert np.all(r.std == 0)
    with warnings.catch_warnings():     # some replicas alike: no warning
        warnings.simplefilter("error", mf.MeanfieldWarning)
        r = mf.ensemble(MODEL, lambda rng: mf.Particles.uniform(6, seed=int(rng.integers(2))), 0.2, replicas=6,
                        seed=1, step=0.1)
    assert len(set(r.values[:, 0])) == 2


def test_a_ragged_observable_is_refused_by_name():
    with pytest.raises(TypeError, match="`observable` must return a real number or an array of real numbers of one"):
        mf.ensemble(MODEL, 5, 0.2, replicas=2, step=0.1, observable=lambda p: [1.0, [2.0, 3.0]])


def test_a_larger_ensemble_begins_with_the_same_replicas():
    """The seed docstring said a larger R gives "the same first ones": their initial tokens, and their values bit for
    bit run one by one; batched they share steps with the others, to rounding with fixed steps."""
    kw = dict(seed=0, save_every=0.5, method="rk4", step=0.05)
    for batch, bound in ((False, 0.0), (True, 1e-15)):
        a = mf.ensemble(mf.Model(4.0), 12, 1.0, replicas=3, batch=batch, **kw)
        b = mf.ensemble(mf.Model(4.0), 12, 1.0, replicas=7, batch=batch, **kw)
        assert np.array_equal(a.values[:, 0], b.values[:3, 0])
        assert np.max(np.abs(a.values - b.values[:3])) <= bound



def test_a_sampler_that_spawns_from_its_generator_is_reproducible():
    def sampler(rng):
        return mf.Particles.uniform(6, seed=rng.spawn(1)[0])
    r = mf.ensemble(MODEL, sampler, 0.2, replicas=3, seed=4, step=0.1)
    assert r == mf.ensemble(**r.rerun_arguments(sampler=sampler))


def test_values_beyond_memory_are_refused_before_any_run(monkeypatch):
    """The values (R, T, ...) were allocated after every run: an observable of 10⁶ values per state at 1001 times of
    1000 replicas (8 TB) ran all the replicas first, then failed in numpy."""
    from meanfield import _ensemble

    monkeypatch.setattr(_ensemble, "simulate", lambda *a, **k: pytest.fail("a replica ran"))
    with pytest.raises(mf.InsufficientMemoryError, match=r"ensemble\(replicas=1000\) of an observable of shape "
                                                        r"\(1000000,\) at 1001 times .* needs about .* `observable`"):
        mf.ensemble(MODEL, 3, 1.0, replicas=1000, save_every=0.001, observable=lambda p: np.zeros(10**6))


@pytest.mark.parametrize("seed", [np.array([1, 2], dtype=np.uint32), [3, 4], None, np.uint64(2**63 + 5)])
def test_every_seed_numpy_takes_is_given_back_by_rerun_arguments(seed):
    """An entropy given as a numpy array compared as an array ("truth value of an array ... is ambiguous"); None
    (fresh entropy) comes back as the int the result recorded."""
    r = mf.ensemble(MODEL, 5, 0.2, replicas=3, seed=seed, step=0.1, interval="bootstrap", confidence=0.7)
    assert mf.ensemble(**r.rerun_arguments()) == r


def test_an_ensemble_whose_replicas_stop_early_says_its_statistics_cover_the_survivors():
    # each stopped replica was warned about by its own run, but nothing said that from then on the mean and its
    # interval are over the replicas still running (a subset selected by the dynamics)
    model = mf.Model(3.0, "pre-ln", V=-np.eye(3))

    def sampler(rng):
        return mf.Particles.uniform(50, 3, seed=rng, radii=rng.uniform(0.3, 3.0))
    with pytest.warns(mf.MeanfieldWarning) as record:
        r = mf.ensemble(model, sampler, 3.0, replicas=3, seed=2, save_every=1.0, step=0.01,
                        observable=lambda p: p.radii.mean())
    stopped = sum(s is not mf.Status.OK for s in r.statuses)
    first = r.times[np.argmax(r.count < 3)]
    summary = [str(w.message) for w in record if "replicas stopped before t_final" in str(w.message)]
    assert summary == [f"ensemble: {stopped} of 3 replicas stopped before t_final=3 (`statuses`); from t={first:g} "
                       "on, mean, std and the interval are over the replicas that reached each time (`count`), which "
                       "biases them where stopping depends on the trajectory."], summary


def test_an_ensemble_whose_replicas_all_reach_t_final_has_no_survivor_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", mf.MeanfieldWarning)
        r = mf.ensemble(MODEL, 10, 0.2, replicas=3, step=0.1)
    assert r.success
