"""backend="particles" with ``groups``: G independent systems in one run (the batched replicas of mf.ensemble).

Each group's field and trajectory are checked against the group run on its own (the independent answer), and the
diagnostics against the groups' own diagnostics averaged with their masses."""
import numpy as np
import pytest

import meanfield as mf
from meanfield._attention import _DirectEvaluator, attention_field
from meanfield.backends._particles import ParticlesBackend


def _tokens(rng, n, d):
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _groups_of(initials):
    """One Particles of the groups side by side, each group of mass 1/G (as mf.ensemble builds it)."""
    G = len(initials)
    radii = None if initials[0].radii is None else np.concatenate([p.radii for p in initials])
    return mf.Particles(np.concatenate([p.positions for p in initials]),
                        np.concatenate([p.weights for p in initials]) / G, radii)


@pytest.mark.parametrize("attention", ["softmax", "unnormalized"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("massless", [False, True])
@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("chunk, threads", [(None, 1), (13, 2), (20, 2), (1, 1)])
def test_each_group_gets_the_field_of_its_own_tokens(attention, causal, massless, heads, chunk, threads):
    rng = np.random.default_rng(7)
    d, G, g = 4, 5, 13
    mats = {} if heads == 1 else {k: rng.standard_normal((heads, d, d)) for k in "QKV"}
    model = mf.Model(beta=2.5, d=d, attention=attention, **mats)
    x = _tokens(rng, G * g, d)
    w = rng.random(G * g)
    if massless:
        w[::4] = 0
    w /= w.sum()
    field = _DirectEvaluator(model, w, causal=causal, chunk=chunk, nthreads=threads, groups=G)(x)
    for k in range(G):
        own = slice(k * g, (k + 1) * g)
        ref = attention_field(model, x[own], w[own] / w[own].sum(), causal=causal, threads=1)
        # the same operations on the same numbers: bit for bit
        assert np.array_equal(field.A[own], ref.A)
        assert np.array_equal(field.log_z[:, own], ref.log_z)


@pytest.mark.parametrize("scheme", ["post-ln", "pre-ln", "peri-ln", "ngpt"])
def test_fixed_steps_give_each_group_its_own_run(scheme):
    G, n = 4, 12
    model = mf.Model(3.0, scheme)
    radii = mf.SCHEMES[scheme].has_radius
    initials = [mf.Particles.uniform(n, seed=s, radii=np.linspace(0.5, 2.0, n) if radii else None)
                for s in range(G)]
    joint = mf.simulate(model, _groups_of(initials), 1.0, backend="particles", step=0.05, save_every=0.5, groups=G)
    assert joint.success
    for k, p in enumerate(initials):
        own = mf.simulate(model, p, 1.0, backend="particles", step=0.05, save_every=0.5)
        part = slice(k * n, (k + 1) * n)
        # the group weights are w/G rescaled back to mass 1: equal to w up to an ulp, so rounding apart
        assert np.max(np.abs(joint.final.positions[part] - own.final.positions)) < 1e-13
        if radii:
            assert np.max(np.abs(joint.final.radii[part] - own.final.radii) / own.final.radii) < 1e-13


def test_layer_maps_give_each_group_its_own_run():
    G, n = 3, 10
    model = mf.Model(2.0, "angpt")
    initials = [mf.Particles.uniform(n, seed=10 + s) for s in range(G)]
    joint = mf.simulate(model, _groups_of(initials), 1.0, backend="particles", time="layers", step=0.1, groups=G)
    for k, p in enumerate(initials):
        own = mf.simulate(model, p, 1.0, backend="particles", time="layers", step=0.1)
        assert np.max(np.abs(joint.final.positions[k * n:(k + 1) * n] - own.final.positions)) < 1e-13


def test_adaptive_steps_keep_every_group_within_its_tolerance():
    # the shared steps are accepted on the largest error of all groups: each group is at least as accurate as on its
    # own.  Reference: each group alone at a much tighter tolerance.
    G, n, rtol = 6, 15, 1e-7
    model = mf.Model(4.0)
    initials = [mf.Particles.uniform(n, seed=20 + s) for s in range(G)]
    joint = mf.simulate(model, _groups_of(initials), 3.0, backend="particles", rtol=rtol, atol=rtol, groups=G)
    steps_alone = []
    for k, p in enumerate(initials):
        alone = mf.simulate(model, p, 3.0, backend="particles", rtol=rtol, atol=rtol)
        ref = mf.simulate(model, p, 3.0, backend="particles", rtol=1e-12, atol=1e-12)
        part = slice(k * n, (k + 1) * n)
        err_joint = np.max(np.abs(joint.final.positions[part] - ref.final.positions))
        err_alone = np.max(np.abs(alone.final.positions - ref.final.positions))
        assert err_joint < 100 * rtol and err_alone < 100 * rtol
        steps_alone.append(len(alone.steps["t"]))
    assert len(joint.steps["t"]) >= max(steps_alone)


def test_diagnostics_are_the_groups_own_averaged_by_mass():
    rng = np.random.default_rng(3)
    G, n = 3, 9
    model = mf.Model(2.0)
    mass = np.array([0.2, 0.5, 0.3])
    initials = []
    for k in range(G):
        w = rng.random(n)
        initials.append(mf.Particles(_tokens(rng, n, 3), w / w.sum()))
    joint = mf.Particles(np.concatenate([p.positions for p in initials]),
                         np.concatenate([m * p.weights for m, p in zip(mass, initials)]))
    diag = ParticlesBackend(model, joint, groups=G).diagnostics()
    own = [ParticlesBackend(model, p).diagnostics() for p in initials]
    for key in ("mean_alignment", "energy", "dissipation"):
        assert diag[key] == pytest.approx(sum(m * o[key] for m, o in zip(mass, own)), rel=1e-13), key
    for key in ("max_speed", "max_attention"):
        assert diag[key] == pytest.approx(max(o[key] for o in own), rel=1e-13), key


@pytest.mark.parametrize("groups, options, error, match", [
    (5, {}, ValueError, r"`groups` must divide the number of tokens n=12 .*got groups=5"),
    (0, {}, ValueError, r"`groups` must be an integer >= 1"),
    ("2", {}, TypeError, r"`groups`"),
])
def test_bad_groups_are_refused_before_any_work(groups, options, error, match):
    with pytest.raises(error, match=match):
        mf.simulate(mf.Model(2.0), mf.Particles.uniform(12), 1.0, backend="particles", groups=groups, **options)


def test_a_group_without_mass_is_refused_by_its_tokens():
    w = np.r_[np.full(4, 0.25), np.zeros(4)]
    with pytest.raises(ValueError, match=r"group 1 \(tokens 4\.\.7\) has no mass"):
        mf.simulate(mf.Model(2.0), mf.Particles(mf.Particles.uniform(8).positions, w), 1.0, backend="particles",
                    groups=2)


def test_the_hybrid_refuses_groups_for_its_particle_phase():
    rho = mf.Density.from_function(lambda x: 1 + 0.3 * x[..., 2], 8)
    with pytest.raises(ValueError, match=r"`particle_options` groups=2"):
        mf.simulate(mf.Model(2.0), rho, 1.0, backend="hybrid",
                    particle_backend="particles", particle_options={"groups": 2})


@pytest.mark.parametrize("method", ["bdf", "radau"])
@pytest.mark.parametrize("attention, scheme", [("unnormalized", "post-ln"), ("softmax", "post-ln"),
                                               ("softmax", "peri-ln")])
def test_implicit_methods_solve_each_group_as_on_its_own(method, attention, scheme):
    # Post-LN: the closed-form Jacobian, one block per group (sparse); Peri-LN (a radius): finite differences of one
    # block's columns.  Reference: each group alone with the same method, both against a tight explicit run.
    G, n, rtol = 3, 8, 1e-8
    model = mf.Model(6.0, scheme, attention=attention)
    initials = [mf.Particles.uniform(n, seed=30 + s) for s in range(G)]
    joint = mf.simulate(model, _groups_of(initials), 2.0, backend="particles", method=method, rtol=rtol,
                        atol=1e-10, groups=G)
    assert joint.success
    for k, p in enumerate(initials):
        ref = mf.simulate(model, p, 2.0, backend="particles", rtol=1e-12, atol=1e-14)
        alone = mf.simulate(model, p, 2.0, backend="particles", method=method, rtol=rtol, atol=1e-10)
        part = slice(k * n, (k + 1) * n)
        err_joint = np.max(np.abs(joint.final.positions[part] - ref.final.positions))
        err_alone = np.max(np.abs(alone.final.positions - ref.final.positions))
        assert err_joint < 1e-6 and err_joint < 10 * err_alone + 1e-9, (err_joint, err_alone)


def test_the_grouped_jacobian_is_block_diagonal_with_each_groups_own_block():
    from scipy import sparse

    G, n = 4, 6
    model = mf.Model(3.0, attention="unnormalized")
    initials = [mf.Particles.uniform(n, seed=40 + s) for s in range(G)]
    joint = _groups_of(initials)
    J = ParticlesBackend(model, joint, groups=G, method="bdf")._jacobian(0.0, np.array(joint.positions))
    assert sparse.issparse(J) and J.shape == (G * n * 3,) * 2
    dense = J.toarray()
    for k, p in enumerate(initials):
        own = ParticlesBackend(model, p, method="bdf")._jacobian(0.0, np.array(p.positions))
        block = slice(k * n * 3, (k + 1) * n * 3)
        assert np.allclose(dense[block, block], own, rtol=1e-13, atol=1e-13)
        dense[block, block] = 0
    assert not dense.any()


def test_an_implicit_ensemble_is_batched():
    r = [mf.ensemble(mf.Model(8.0, attention="unnormalized"), 6, 1.0, replicas=4, seed=5, save_every=0.5,
                     method="bdf", rtol=1e-8, atol=1e-10, batch=b) for b in (True, False)]
    assert all(x.success for x in r)
    assert np.max(np.abs(r[0].values - r[1].values)) < 1e-6


def test_sweep_pair_observables_are_the_groups_own_averaged_by_mass():
    # a sweep of a run with groups recorded mean_alignment, aligned_fraction and clusters over the pairs of all the
    # tokens, as if the independent groups were one system (mean_alignment 0.043 against the run's own 0.0026)
    from meanfield._sweep._observables import record
    rng = np.random.default_rng(4)
    initials = [mf.Particles(_tokens(rng, 8, 3), rng.uniform(0.5, 1.5, 8), normalize=True) for _ in range(3)]
    model = mf.Model(6.0)
    traj = mf.simulate(model, _groups_of(initials), 3.0, backend="particles", groups=3, step=0.05, save_every=1.5)
    alone = [mf.simulate(model, p, 3.0, backend="particles", step=0.05, save_every=1.5) for p in initials]
    names = ["mean_alignment", "aligned_fraction", "clusters", "collapsed_clusters", "energy"]
    got = record(traj, names, "saved", 1e-2)
    for name in names:
        own = np.array([record(a, [name], "saved", 1e-2)[name] for a in alone], float)      # (groups, times)
        np.testing.assert_allclose(got[name], own.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["mean_alignment"], traj.diagnostics["mean_alignment"], rtol=1e-12)
