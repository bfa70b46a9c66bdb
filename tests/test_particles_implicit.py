"""The implicit methods of the particle backends (method="radau" or "bdf", scipy's solvers): stiff runs of a few
tokens, where the explicit pairs are capped by stability at steps ~e^{−β}."""
import re
import warnings

import numpy as np
import pytest

import meanfield as mf
from meanfield._integrators import IMPLICIT_METHODS, IMPLICIT_MIN_RTOL

IMPLICIT = sorted(IMPLICIT_METHODS)


def _ring(polar=0.8):
    phi = np.arange(6) * np.pi / 3
    ring = np.c_[np.sin(polar) * np.cos(phi), np.sin(polar) * np.sin(phi), np.full(6, np.cos(polar))]
    return mf.Particles(np.vstack([ring, [0.0, 0.0, 1.0]]))


@pytest.mark.parametrize("method", IMPLICIT)
@pytest.mark.parametrize("scheme", ["post-ln", "pre-ln", "peri-ln"])
def test_an_implicit_run_is_the_explicit_run_to_its_tolerance(method, scheme):
    """Every scheme's ODE (with a radius for Pre-LN and Peri-LN): the final state of rk45 at rtol = 1e-12 is the
    reference; the implicit run at rtol = 1e-9 lands within ~10³·rtol of it (a global error)."""
    model = mf.Model(2.0, scheme=scheme)
    start = mf.Particles.uniform(8, 3, seed=3)
    ref = mf.simulate(model, start, 1.0, backend="particles", rtol=1e-12, atol=1e-14).final
    run = mf.simulate(model, start, 1.0, backend="particles", method=method, rtol=1e-9, atol=1e-12)
    assert run.success, run.detail
    assert np.max(np.abs(run.final.positions - ref.positions)) < 1e-6
    assert np.allclose(np.linalg.norm(run.final.positions, axis=1), 1.0, atol=1e-15)     # projected
    if model.scheme_def.has_radius:
        assert np.max(np.abs(run.final.radii - ref.radii) / ref.radii) < 1e-6
    assert set(run.steps) >= {"t", "dt"} and "rejected" not in run.steps      # scipy reports no rejections


@pytest.mark.parametrize("method", IMPLICIT)
def test_the_error_of_an_implicit_run_follows_its_tolerance(method):
    """Tightening rtol by 100 shrinks the global error by ≥ 10 (a tolerance-proportional control, not a floor)."""
    model, start = mf.Model(3.0), mf.Particles.uniform(8, 3, seed=1)
    ref = mf.simulate(model, start, 1.0, backend="particles", rtol=1e-13, atol=1e-15).final.positions
    err = [np.max(np.abs(mf.simulate(model, start, 1.0, backend="particles", method=method, rtol=rtol,
                                     atol=1e-3 * rtol).final.positions - ref)) for rtol in (1e-5, 1e-7, 1e-9)]
    assert err[0] > 10 * err[1] > 100 * err[2] > 0, err


def test_an_implicit_method_steps_past_the_stiffness_of_usa_clusters():
    """USA at β = 10: once the tokens have clustered the explicit pair is held at steps ~e^{−β} by stability while
    nothing moves (20 tokens to t = 5: rk45 20115 steps, radau 1062, bdf 1191; measured 10.1 s, 1.0 s and 0.49 s,
    benchmark case 11).
    Here 8 tokens to t = 2; both reach the same clusters."""
    model, start = mf.Model(10.0, attention="unnormalized"), mf.Particles.uniform(8, 3, seed=0)
    runs = {m: mf.simulate(model, start, 2.0, backend="particles", method=m, rtol=1e-8, atol=1e-10)
            for m in ["rk45"] + IMPLICIT}
    steps = {m: len(r.steps["t"]) for m, r in runs.items()}
    for m in IMPLICIT:
        assert runs[m].success, runs[m].detail
        assert steps[m] < steps["rk45"] / 5, steps
        assert np.max(np.abs(runs[m].final.positions - runs["rk45"].final.positions)) < 1e-5


@pytest.mark.parametrize("method", IMPLICIT)
def test_find_stationary_by_an_implicit_gradient_flow(method):
    """The gradient flow of the ring at β = 10 (rk45 at rtol = 1e-12: 7274 steps, 6.9 s) by BDF (424 steps, 0.30 s)
    or Radau (397 steps, 0.98 s) at find_stationary's implicit defaults rtol = 1e-8, atol = 1e-10: the same Dirac at
    e₃.  The energy identity's ∫∫|v|²dμ dt is one more equation of the solver (Simpson over the 65 records left 672
    of the gain of 910; now the solver's error at its tolerance, measured 9.0e-5 with BDF, 5.3e-8 with Radau)."""
    r = mf.find_stationary(_ring(), 10.0, t_max=100.0, method=method)
    assert r.converged, r.message
    assert np.max(np.abs(r.state.positions - [0.0, 0.0, 1.0])) < 1e-8
    assert r.energy == pytest.approx(np.exp(10.0) / 20.0, rel=1e-13)
    assert len(r.trajectory.steps["t"]) < 7274 // 10
    d = r.trajectory.diagnostics
    assert np.max(np.abs(d["energy_identity_residual"])) < 1e-6 * (d["energy"][-1] - d["energy"][0])
    tight = mf.find_stationary(_ring(), 10.0, t_max=100.0, method=method, rtol=1e-11, atol=1e-13)   # the solver's
    d = tight.trajectory.diagnostics                                                           # error, not a floor
    assert np.max(np.abs(d["energy_identity_residual"])) < 1e-9 * (d["energy"][-1] - d["energy"][0])


@pytest.mark.parametrize("method", IMPLICIT)
def test_an_implicit_run_resumes_from_its_checkpoint(tmp_path, method):
    """A resume starts a new solver (its Jacobian and step history are not in the file): the same end to the
    tolerance, not the same steps."""
    run = dict(model=mf.Model(4.0), initial=mf.Particles.uniform(10, 3, seed=2), t_final=2.0, backend="particles",
               method=method, rtol=1e-9, atol=1e-12, save_every=0.5)
    whole = mf.simulate(**run)
    path = tmp_path / "run.h5"
    stopped = mf.simulate(**run, checkpoint=path, callback=lambda t, s, d: t >= 1.0)
    assert stopped.times[-1] == 1.0
    resumed = mf.resume(path)
    assert resumed.success and np.array_equal(resumed.times, whole.times)
    assert np.max(np.abs(resumed.final.positions - whole.final.positions)) < 1e-7


def test_max_steps_and_min_step_stop_an_implicit_run():
    run = dict(model=mf.Model(10.0, attention="unnormalized"), initial=mf.Particles.uniform(8, 3, seed=0),
               t_final=2.0, backend="particles", method="radau")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        capped = mf.simulate(**run, max_steps=10)
        small = mf.simulate(**run, min_step=0.5)
    assert capped.status is mf.Status.STEP_TOO_SMALL and len(capped.steps["t"]) == 10
    assert "max_steps=10 steps taken" in capped.detail
    assert small.status is mf.Status.STEP_TOO_SMALL and "< min_step=0.5" in small.detail and "radau" in small.detail


def test_an_undefined_velocity_stops_an_implicit_run_with_the_diagnosis():
    """QKV-Norm with a singular V: a token reaching V's null direction leaves the attention undefined; the solver's
    own failure ("step size less than spacing") would hide why, so the stepper's diagnosis is reported."""
    from meanfield.backends._particles import ParticlesBackend

    st = ParticlesBackend(mf.Model(1.0), mf.Particles.uniform(5, 3, seed=0), method="radau")
    st.rhs = lambda t, y: np.full_like(y, np.nan)
    st._speed_issue = "The attention is undefined at t=0: `V` maps token 2 to 0."
    assert st.advance(1.0) is mf.Status.NON_FINITE
    assert st.detail.startswith("The attention is undefined")


@pytest.mark.parametrize("options, match", [
    (dict(method="radau", rtol=1e-14), r"`rtol` must be in \[2.22e-14, 1\) with method='radau'"),
    (dict(method="bdf", step=0.1), "chooses its own steps"),
    (dict(method="implicit"), r"`method` must be one of \['rk23', 'rk4', 'rk45', 'bdf', 'radau'\]"),
    (dict(method="radau", time="layers", step=0.1), "applies to time='continuous' only"),
])
def test_implicit_options_are_checked_before_any_work(options, match):
    with pytest.raises(ValueError, match=match):
        mf.simulate(mf.Model(1.0), mf.Particles.uniform(5, 3, seed=0), 1.0, backend="particles", **options)
    assert IMPLICIT_MIN_RTOL == pytest.approx(2.22e-14, rel=1e-3)


def test_the_spectral_backend_has_no_implicit_method():
    with pytest.raises(ValueError, match="`method` must be one of"):
        mf.simulate(mf.Model(1.0), mf.Density.uniform(8), 0.1, method="radau")


@pytest.mark.parametrize("attention", ["softmax", "unnormalized"])
@pytest.mark.parametrize("general", [False, True])
@pytest.mark.parametrize("heads, causal, massless", [(1, False, False), (3, False, False), (1, True, False),
                                                     (2, True, True)])
def test_the_closed_form_jacobian_is_the_derivative_of_the_velocity(attention, general, heads, causal, massless):
    """Against central differences of the right-hand side (error O(ε²) ≈ 1e-12 of the third derivative) at an
    off-sphere state with unequal weights; Q, K, V general or the identity; one head or several (summed); with a
    causal mask, also with the first two tokens massless (their rows see no mass: A = 0)."""
    from meanfield.backends._particles import ParticlesBackend

    rng = np.random.default_rng(0)
    shape = (heads, 3, 3) if heads > 1 else (3, 3)
    mats = dict(Q=rng.standard_normal(shape), K=rng.standard_normal(shape), V=rng.standard_normal(shape))
    if heads > 1 and not general:
        mats = dict(V=np.stack([np.eye(3)] * heads))
    weights = rng.uniform(0.5, 1.5, 7)
    if massless:
        weights[:2] = 0.0
    st = ParticlesBackend(mf.Model(1.5, attention=attention, **(mats if general or heads > 1 else {})),
                          mf.Particles(rng.standard_normal((7, 3)), weights, normalize=True), causal=causal)
    y = st.y * rng.uniform(0.8, 1.2, (7, 1))
    J = st._jacobian(0.0, y)
    eps, fd = 1e-6, np.empty_like(J)
    for k in range(y.size):
        e = np.zeros(y.size)
        e[k] = eps
        fd[:, k] = (st.rhs(0.0, (y.ravel() + e).reshape(y.shape)) - st.rhs(0.0, (y.ravel() - e).reshape(y.shape))
                    ).ravel() / (2 * eps)
    assert np.max(np.abs(J - fd)) < 1e-8 * max(1.0, np.max(np.abs(J)))


@pytest.mark.parametrize("model, opts", [(mf.Model(8.0, attention="unnormalized"), {}),
                                         (mf.Model(8.0, Q=np.stack([np.eye(3), 0.5 * np.eye(3)])), {}),
                                         (mf.Model(8.0, attention="unnormalized"), dict(causal=True))])
def test_the_closed_form_jacobian_is_used_where_it_applies_and_changes_nothing_but_the_cost(monkeypatch, model, opts):
    """Post-LN (one head or several, causal mask or not): the solver gets the closed form; elsewhere (Pre-LN)
    None, and scipy's finite differences.  Both runs agree to the tolerance."""
    from meanfield.backends._particles import ParticlesBackend

    p = mf.Particles.uniform(8, 3, seed=4)
    assert ParticlesBackend(model, p, **opts)._jacobian(0.0, p.positions) is not None
    st = ParticlesBackend(mf.Model(2.0, scheme="pre-ln"), p)
    assert st._jacobian(0.0, st.y) is None
    calls = []          # that the solver is handed the closed form, not only that one exists (a bypass passed)
    closed_form = ParticlesBackend._jacobian
    monkeypatch.setattr(ParticlesBackend, "_jacobian", lambda self, t, y: calls.append(t) or closed_form(self, t, y))
    closed = mf.simulate(model, p, 1.0, backend="particles", method="bdf", rtol=1e-9, atol=1e-12, **opts)
    used = len(calls)
    monkeypatch.setattr(ParticlesBackend, "_has_jacobian", False)         # scipy's finite differences
    fd = mf.simulate(model, p, 1.0, backend="particles", method="bdf", rtol=1e-9, atol=1e-12, **opts)
    assert used > 0 and len(calls) == used
    assert np.max(np.abs(closed.final.positions - fd.final.positions)) < 1e-6


def test_an_implicit_gradient_flow_merges_metastable_clusters():
    """20 uniform tokens at β = 10 form two clusters (masses 0.6, 0.4, ⟨c₁, c₂⟩ ≈ −0.87) that attract at |v| ~ 5e-5:
    the explicit gradient flow, held at steps ~e^{−β}, took 22417 steps to reach t = 5.  BDF follows the slow
    attraction, the merger at t ≈ 1.7e3 and the collapse, to the Dirac (measured: t = 1750, 4064 steps, 3.3–6.6 s at
    find_stationary's implicit defaults rtol = 1e-8, atol = 1e-10)."""
    r = mf.find_stationary(mf.Particles.uniform(20, 3, seed=0), 10.0, t_max=5000.0, check_every=250.0, method="bdf")
    assert r.converged, r.message
    assert r.energy == pytest.approx(np.exp(10.0) / 20.0, rel=1e-12)
    assert mf.particle_clusters(r.state, angle=1e-6).count == 1
    assert 1000.0 < r.time <= 2500.0
    before = r.trajectory.states[list(r.trajectory.times).index(1000.0)]
    assert list(np.round(mf.particle_clusters(before, angle=1e-4).masses, 3)) == [0.6, 0.4]


def test_an_implicit_method_refuses_tokens_whose_jacobian_does_not_fit(monkeypatch):
    """A dense Jacobian of (n·d)² entries: 10⁵ tokens on S² would need ~3.6 TB, refused before any work."""
    import meanfield._memory as memory
    monkeypatch.setattr(memory, "available_bytes", lambda: 16 << 30)
    with pytest.raises(mf.InsufficientMemoryError, match=r"method='bdf' for 100000 tokens .* use 'rk45'"):
        mf.simulate(mf.Model(1.0), mf.Particles.uniform(100_000, 3, seed=0), 1.0, backend="particles", method="bdf")


def test_the_hybrid_refuses_an_implicit_particle_phase_up_front():
    """Its hand-off makes thousands of weighted particles: the implicit solver would not finish (a run at β = 6 did
    not in 300 s), so particle_options refuse it before the spectral phase runs."""
    with pytest.raises(ValueError, match=r"`particle_options` method='bdf': the hand-off makes thousands"):
        mf.simulate(mf.Model(6.0), mf.Density.uniform(8), 1.0, backend="hybrid", particle_options={"method": "bdf"})


def test_an_implicit_method_warns_about_the_cost_of_many_unknowns():
    """100 tokens at d = 32 (3200 unknowns) fit in memory but each factorization takes ~0.7 s: warned up front (a
    reviewer's 3-step run at d = 32 took 22 s at 200 tokens)."""
    start = mf.Particles.uniform(100, 32, seed=0)
    with pytest.warns(mf.MeanfieldWarning, match=r"method='bdf' for 100 tokens: 3200 unknowns, each LU"):
        mf.simulate(mf.Model(2.0, d=32), start, 0.01, backend="particles", method="bdf", max_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", mf.MeanfieldWarning)
        mf.simulate(mf.Model(2.0), mf.Particles.uniform(50, 3, seed=0), 0.01, backend="particles", method="bdf")


@pytest.mark.parametrize("method", IMPLICIT)
def test_a_segment_end_clipped_step_is_not_carried_into_the_next_segment(method):
    """The last step of a segment is clipped to its end; carried as the next segment's first step, a clip of ~1e-12
    made the next step fall below min_step (find_stationary with BDF at rtol = 1e-10 stopped at t = 218.75, a
    recorded time, with "Step 9.95e-13 < min_step=1e-12")."""
    from meanfield.backends._particles import ParticlesBackend

    st = ParticlesBackend(mf.Model(2.0), mf.Particles.uniform(8, 3, seed=0), method=method)
    st.advance(1.0)
    wanted = st._h
    st.advance(1.0 + 1e-9)                        # a segment of one step, clipped to 1e-9
    assert st.step_log["dt"][-1] == pytest.approx(1e-9, rel=1e-6)
    assert st._h == wanted > 1e-3


@pytest.mark.parametrize("method", IMPLICIT)
@pytest.mark.parametrize("rtol", [1e-15, 0.0, float("nan"), 1.0])
def test_an_implicit_rtol_out_of_range_is_told_the_implicit_range(method, rtol):
    # these were told the explicit pairs' range "[1e-14, 1)", and rtol=1e-14 (in it) was then refused with [2.22e-14, 1)
    with pytest.raises(ValueError, match=rf"^`rtol` must be in \[2.22e-14, 1\) with method='{method}' "):
        mf.simulate(mf.Model(1.0), mf.Particles.uniform(5, 3, seed=0), 1.0, backend="particles", method=method,
                    rtol=rtol)


@pytest.mark.filterwarnings("ignore::meanfield.MeanfieldWarning")     # "simulate stopped at t=0"
@pytest.mark.parametrize("method", IMPLICIT)
def test_velocities_beyond_float64_norms_stop_an_implicit_run_with_the_diagnosis(method):
    # USA at β = 650 (allowed: β ≤ 709.78): scipy's RMS estimate of the first step overflows to 0, and the factorization
    # of I/h − J failed on infs: radau raised "ValueError: array must not contain infs or NaNs", bdf stopped with that
    # as its detail, later with "Step 0 < min_step".  The first step is now estimated without the overflow (4.5e-280
    # for bdf, 3.4e-272 for radau: the velocity's time scale), below min_step: the run stops at t = 0 and says why.
    # With a first step given at β = 705 the closed-form Jacobian itself overflows (β e^β)
    start = mf.Particles.uniform(6, 3, seed=1)
    run = mf.simulate(mf.Model(650.0, attention="unnormalized"), start, 0.1, backend="particles", method=method)
    assert run.status is mf.Status.STEP_TOO_SMALL
    m = re.match(rf"Step (\S+) < min_step=1e-12 at t=0 \({method}: its first step\), where the largest velocity "
                 r"component is 3\.03e\+271: the state changes on time scales too short for steps of min_step to "
                 r"follow \(lower `min_step` below (\S+) to follow them\)\.$", run.detail)
    assert m and m[1] == m[2] and 1e-290 < float(m[1]) < 1e-270, run.detail
    run = mf.simulate(mf.Model(705.0, attention="unnormalized"), start, 0.1, backend="particles", method=method,
                      first_step=1e-3)
    assert run.status is mf.Status.STEP_TOO_SMALL
    assert run.detail.startswith(f"The '{method}' solver failed at t=0: the closed-form Jacobian overflows float64")


@pytest.mark.parametrize("method", IMPLICIT)
@pytest.mark.parametrize("beta", [2.0, 300.0])
def test_the_first_step_estimate_is_scipys_where_scipys_does_not_overflow(method, beta):
    # β = 300: velocity components ~3e124, whose squares still fit: scipy's select_initial_step is the reference
    from scipy.integrate._ivp.common import select_initial_step

    from meanfield.backends._implicit import _Segment
    from meanfield.backends._registry import get_backend

    st = get_backend("particles")(mf.Model(beta, attention="unnormalized"), mf.Particles.uniform(6, 3, seed=1),
                                  method=method)
    seg = _Segment(st, 0.0, 0.1)
    y0 = st.y.ravel()
    f0 = seg._velocity(0.0, y0)
    theirs = select_initial_step(seg._velocity, 0.0, y0, 0.1, np.inf, f0, 1, 1 if method == "bdf" else 3,
                                 st.options["rtol"], st.options["atol"])
    assert seg._first_step(y0) == pytest.approx(theirs, rel=1e-12)


@pytest.mark.parametrize("method", IMPLICIT)
def test_an_implicit_run_with_velocities_beyond_float64_norms_follows_the_closed_form(method):
    # USA Pre-LN at β = 650, two orthogonal tokens: dr/dt = e^β/2 (ρ stays ~1e-280), so r = 1 + t e^β/2.  With
    # min_step lowered below the velocity's time scale (~1e-282) rk45 follows it, but bdf and radau stopped at t = 0
    # ("Step 0 < min_step=1e-300"): scipy's first-step estimate had overflowed to 0
    beta = 650.0
    run = mf.simulate(mf.Model(beta, "pre-ln", attention="unnormalized"), mf.Particles([[1.0, 0, 0], [0, 1.0, 0]]),
                      1.0, backend="particles", method=method, min_step=1e-300, save_every=0.5)
    assert run.status is mf.Status.OK, run.detail
    r = np.array([x.radii for x in run.states])
    assert np.max(np.abs(r / (1 + run.times * np.exp(beta) / 2)[:, None] - 1)) < 1e-12
    assert max(abs(x.positions[0] @ x.positions[1]) for x in run.states) < 1e-12      # atol


@pytest.mark.parametrize("method", IMPLICIT)
@pytest.mark.parametrize(("beta", "budget"), [(10.0, 40), (15.0, 200)])
@pytest.mark.parametrize("spread", [1e-15, 1e-9])
def test_an_implicit_method_holds_a_collapsed_cluster_at_the_rounding_floor_of_its_velocity(method, beta, budget,
                                                                                            spread):
    """20 tokens within ``spread`` of one point, USA Post-LN (the gradient flow of E, D = I): an exact equilibrium once
    collapsed, but the velocity is the rounding of A − ⟨A, x⟩x, |A| ~ e^β, ~ε e^β = 5e-12 at β = 10 in the
    directions J does not damp.  scipy's Newton iterations called two such corrections (2e-8..1e-6 of the error scale
    against their tolerance 1e-4) diverged whenever the second was not smaller, or shrank too slowly for their test,
    and halved the step.  At β = 10 scipy's BDF stayed at steps of 1e-5..1e-3 (2000 steps reached t = 0.29 and 1.0)
    and Radau took 120 and 136 steps to t = 100; at β = 15 Radau stalled (5000 steps reached t = 34.5 and 33.1,
    median step 3.5e-4), and BDF with the floor for rates ≥ 1 only took 246 and 275.  With the floor's exit (rates
    < 2): β = 10 BDF 9 and 16 steps, Radau 5 and 8; β = 15 (at the floor's cap h ≈ 0.1·rtol/(ε e^β) ≈ 1.4) BDF 84
    and 87, Radau 83 and 85.  The cluster stays collapsed and in place: the exact solution does not move (drift
    measured up to 1e-10 at β = 10, 4.0e-9 at β = 15: the floor's corrections, each within a tenth of the error
    scale)."""
    rng = np.random.default_rng(0)
    center = np.array([0.36, 0.48, 0.8])
    x = center + spread * rng.standard_normal((20, 3))
    start = mf.Particles(x / np.linalg.norm(x, axis=1, keepdims=True))
    run = mf.simulate(mf.Model(beta, attention="unnormalized"), start, 100.0, backend="particles", method=method,
                      rtol=1e-8, atol=1e-10, max_steps=budget)
    assert run.status is mf.Status.OK, run.detail
    p = run.final.positions
    assert np.max(np.abs(p - p[0])) < 1e-15
    assert np.max(np.abs(p - center)) < 1e-8        # rtol


def test_radau_with_the_floor_is_scipys_radau_where_its_newton_iterations_contract():
    """Robertson's stiff kinetics (closed-form and finite-difference Jacobians) and a stiff linear system: every
    Newton iteration scipy's tests end (converged, or diverged with corrections far beyond the floor: two in
    Robertson's run, of 5.6e4 and 7.0e3 error scales, one of 0.93 in the linear one) ends the same way, so FloorRadau
    takes scipy's steps, bit for bit, with the same counts of evaluations."""
    from scipy.integrate import Radau

    from meanfield.backends._newton import FloorRadau

    def robertson(t, y):
        return np.array([-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                         3e7 * y[1] ** 2])

    def robertson_jacobian(t, y):
        return np.array([[-0.04, 1e4 * y[2], 1e4 * y[1]], [0.04, -1e4 * y[2] - 6e7 * y[1], -1e4 * y[1]],
                         [0.0, 6e7 * y[1], 0.0]])

    A = np.array([[-1.0, 1.0, 0.0], [0.0, -1e3, 0.0], [0.0, 0.0, -1e6]])
    problems = [(robertson, robertson_jacobian, [1.0, 0.0, 0.0], 1e5, 1e-6, 1e-10),
                (robertson, None, [1.0, 0.0, 0.0], 1e5, 1e-6, 1e-10),
                (lambda t, y: A @ y, lambda t, y: A, [1.0, 1.0, 1.0], 10.0, 1e-8, 1e-12)]
    for fun, jac, y0, t_end, rtol, atol in problems:
        runs = []
        for cls in (FloorRadau, Radau):
            solver = cls(fun, 0.0, np.array(y0), t_end, rtol=rtol, atol=atol, jac=jac)
            steps = []
            while solver.status == "running":
                solver.step()
                steps.append(np.r_[solver.t, solver.y])
            runs.append((np.array(steps), solver.nfev, solver.njev, solver.nlu))
        (ours, *counts), (theirs, *their_counts) = runs
        assert len(ours) > 100 and np.array_equal(ours, theirs) and counts == their_counts


def test_bdf_differences_stand_for_the_step_taken_far_from_t_0():
    """scipy's BDF scaled its differences to a step h and stepped to t + h rounded: far from t = 0 the step taken
    differs from h by up to half an ulp of t, and the predictor (for h) and the implicit equation (for the step taken)
    disagree by ~ that × the velocity, whatever h.  USA at β = 10 (autonomous: Post-LN, constant α), 8 uniform
    tokens, rtol = 1e-10, atol = 1e-12, started at t0 = 1e4 (half an ulp 9.1e-13 × speeds up to 645: 5.9e-10, against
    error scales of 1e-12 + 1e-10·|y|): scipy's BDF stopped at its first step ("step size less than spacing between
    numbers"); with D rescaled to the step taken the run takes the steps of the start at t0 = 0 (679 both) and ends
    where it does (measured 5.4e-12 apart, both 1.8e-9 from rk45 at rtol = 1e-12).  The same failure stopped the
    energy tutorial's merger at rtol = 1e-10, t = 1711."""
    model, start = mf.Model(10.0, attention="unnormalized"), mf.Particles.uniform(8, 3, seed=0)
    runs = [mf.simulate(model, start, t0 + 2.0, t0=t0, backend="particles", method="bdf", rtol=1e-10, atol=1e-12)
            for t0 in (0.0, 1e4)]
    for run in runs:
        assert run.status is mf.Status.OK, run.detail
    assert abs(len(runs[1].steps["t"]) - len(runs[0].steps["t"])) < 20
    assert np.max(np.abs(runs[1].final.positions - runs[0].final.positions)) < 1e-8    # 100·rtol: global errors


@pytest.mark.parametrize("method", IMPLICIT)
def test_an_implicit_run_too_far_from_t_0_to_resolve_its_steps_says_so(method):
    """scipy's smallest step is ten ulps of t: 1.49e-7 at t0 = 1e8, 1.53e-4 at 1e11, while the same start takes steps
    down to 3.1e-9 (BDF; 1.86e-8, its floor, from t0 = 1e7, where it still succeeds) and 4.3e-6 (Radau).  The run
    stops with scipy's message, and says that the clock, not min_step, was the floor."""
    model, start = mf.Model(10.0, attention="unnormalized"), mf.Particles.uniform(8, 3, seed=0)
    t0 = 1e8 if method == "bdf" else 1e11
    with pytest.warns(mf.MeanfieldWarning):
        run = mf.simulate(model, start, t0 + 1.0, t0=t0, backend="particles", method=method, rtol=1e-8, atol=1e-10)
    assert run.status is mf.Status.STEP_TOO_SMALL
    floor = f"{10 * np.spacing(t0):.3g}"
    assert "less than spacing between numbers" in run.detail
    assert f"ten ulps of t, {floor}, above min_step=1e-12" in run.detail and "smaller t0" in run.detail, run.detail


def _newton(increments, tol=1e-4):
    """Both Newton iterations of a BDF step on corrections chosen in advance: I − cJ = I, c = 1, ψ = 0, scale 1, so
    the k-th correction is f_k − Σ_{j<k} Δ_j and f returns the running sums of ``increments``."""
    from scipy.integrate._ivp import bdf as scipy_bdf

    from meanfield.backends._newton import solve_bdf_system

    def run(solver):
        values = iter(np.cumsum(increments))
        return solver(lambda t, y: np.array([next(values)]), 1.0, np.zeros(1), 1.0, 0.0, None,
                      lambda LU, b: b, np.ones(1), tol)
    return run(solve_bdf_system), run(scipy_bdf.solve_bdf_system)


def test_the_newton_iteration_converges_at_its_rounding_floor_only():
    """Corrections that stopped shrinking, or shrink too slowly for scipy's test, end the iteration when within
    FLOOR = 0.1 of the error scale (CVODE's NLSCOEF), even above scipy's tolerance (1e-4 here); growing by RDIV = 2,
    or beyond FLOOR, is divergence.  (The rule, newton_exit, is BDF's and Radau's.)"""
    from meanfield.backends._newton import FLOOR, RDIV

    assert (FLOOR, RDIV) == (0.1, 2.0)
    # the last two shrink at rates 0.9 and 0.95, which scipy's test (rate^(4 − k)/(1 − rate)·‖Δ‖ ≤ tol) calls diverged:
    # the floor had converged rates ≥ 1 only, so a slower correction ended the iteration and a faster one halved h
    for stalled in ([1e-7, 1.2e-7, 1.0, 1.0], [0.04, 0.05, 1.0, 1.0], [0.05, 0.045, 1.0, 1.0], [1e-5, 9.5e-6, 1.0]):
        ours, scipys = _newton(stalled)
        assert ours[:2] == (True, 2) and ours[2][0] == pytest.approx(sum(stalled[:2]), rel=1e-12)
        assert scipys[:2] == (False, 2)
    for growing in ([1e-7, 2e-7, 1.0, 1.0], [0.09, 0.11, 1.0, 1.0], [0.5, 0.45, 1.0, 1.0]):
        ours, scipys = _newton(growing)
        assert ours[:2] == scipys[:2] == (False, 2)
    for contracting in ([1e-3, 1e-5, 1e-7, 1.0], [1e-7, 9.5e-8, 1.0, 1.0]):     # scipy's iteration, bit for bit
        ours, scipys = _newton(contracting)
        assert ours[:2] == scipys[:2] == (True, 2) and ours[2][0] == scipys[2][0]


def test_the_newton_iterations_stand_in_for_scipys_own():
    """FloorBDF and FloorRadau run scipy's _step_impl with this module's solve_bdf_system and
    solve_collocation_system: the same names and signatures in the installed scipy, else the substitution would fail
    (or, renamed, silently not happen)."""
    import inspect

    from scipy.integrate import BDF, Radau
    from scipy.integrate._ivp import bdf as scipy_bdf
    from scipy.integrate._ivp import radau as scipy_radau

    from meanfield.backends._newton import FloorBDF, FloorRadau, solve_bdf_system, solve_collocation_system
    from meanfield.backends._newton import solver_class as _newton_solver_class

    assert inspect.signature(solve_bdf_system) == inspect.signature(scipy_bdf.solve_bdf_system)
    solver = FloorBDF(lambda t, y: -y, 0.0, np.ones(1), 1.0)
    step = solver._step_impl.__func__
    assert step.__code__ is BDF._step_impl.__code__
    assert step.__globals__["solve_bdf_system"].__self__.solver is solver       # the solver's _ExactSteps
    assert step.__globals__["change_D"].__self__.solver is solver
    assert scipy_bdf.solve_bdf_system is not solve_bdf_system          # scipy's module is left as it is
    assert scipy_bdf.change_D is not step.__globals__["change_D"]
    assert _newton_solver_class(IMPLICIT_METHODS["bdf"]) is FloorBDF
    assert inspect.signature(solve_collocation_system) == inspect.signature(scipy_radau.solve_collocation_system)
    step = FloorRadau(lambda t, y: -y, 0.0, np.ones(1), 1.0)._step_impl.__func__
    assert step.__code__ is Radau._step_impl.__code__
    assert step.__globals__["solve_collocation_system"] is solve_collocation_system
    assert scipy_radau.solve_collocation_system is not solve_collocation_system
    assert _newton_solver_class(IMPLICIT_METHODS["radau"]) is FloorRadau


def test_a_scipy_whose_bdf_differs_runs_its_bdf_unchanged_with_a_warning(monkeypatch):
    """scipy's BDF internals are private: a release that changes them must not make method='bdf' fail."""
    import types

    from scipy.integrate import BDF
    from scipy.integrate._ivp import bdf as scipy_bdf

    from meanfield.backends import _newton

    assert _newton.MISMATCH == ""
    renamed = types.SimpleNamespace(**{k: v for k, v in vars(scipy_bdf).items() if k != "solve_bdf_system"})
    assert "no longer calls" in _newton.scipy_mismatch(renamed, BDF._step_impl)
    other = types.SimpleNamespace(**{**vars(scipy_bdf), "solve_bdf_system": lambda fun, t, y: None})
    assert "is not solve_bdf_system" in _newton.scipy_mismatch(other, BDF._step_impl)
    unscaled = types.SimpleNamespace(**{k: v for k, v in vars(scipy_bdf).items() if k != "change_D"})
    assert "no longer rescales" in _newton.scipy_mismatch(unscaled, BDF._step_impl)
    monkeypatch.setattr(_newton, "FloorBDF", None)
    monkeypatch.setattr(_newton, "MISMATCH", "its BDF._step_impl no longer calls solve_bdf_system")
    with pytest.warns(mf.MeanfieldWarning, match="runs scipy .*'s BDF unchanged: its BDF._step_impl no longer"):
        assert _newton.solver_class(IMPLICIT_METHODS["bdf"]) is BDF


def test_a_scipy_whose_radau_differs_runs_its_radau_unchanged_with_a_warning(monkeypatch):
    """scipy's Radau internals are private too: a release that changes them must not make method='radau' fail."""
    import types

    from scipy.integrate import Radau
    from scipy.integrate._ivp import radau as scipy_radau

    from meanfield.backends import _newton

    assert _newton.RADAU_MISMATCH == ""
    renamed = types.SimpleNamespace(**{k: v for k, v in vars(scipy_radau).items() if k != "solve_collocation_system"})
    assert "Radau._step_impl no longer calls solve_collocation_system" in _newton.radau_mismatch(renamed,
                                                                                                 Radau._step_impl)
    other = types.SimpleNamespace(**{**vars(scipy_radau), "solve_collocation_system": lambda fun, t, y: None})
    assert "is not solve_collocation_system" in _newton.radau_mismatch(other, Radau._step_impl)
    untransformed = types.SimpleNamespace(**{k: v for k, v in vars(scipy_radau).items() if k != "TI_COMPLEX"})
    assert "lacks ['TI_COMPLEX']" in _newton.radau_mismatch(untransformed, Radau._step_impl)
    monkeypatch.setattr(_newton, "FloorRadau", None)
    monkeypatch.setattr(_newton, "RADAU_MISMATCH", "its Radau._step_impl no longer calls solve_collocation_system")
    with pytest.warns(mf.MeanfieldWarning, match="method='radau' runs scipy .*'s Radau unchanged: its Radau._step"):
        assert _newton.solver_class(IMPLICIT_METHODS["radau"]) is Radau
