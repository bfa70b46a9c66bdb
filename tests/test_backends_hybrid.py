"""The hybrid backend: spectral while resolved, then weighted particles, with exact mass and weights ≥ 0."""
import re
import warnings

import numpy as np
import pytest

import meanfield as mf
from meanfield._sampling import particles_coefficients
from meanfield.backends._bases import CircleBasis, S2Basis
from meanfield.backends._hybrid import density_to_particles
from test_io import _killed_copies  # noqa: E402  (the checkpoint copies a SIGKILL would leave)


@pytest.mark.parametrize("basis_cls, d", [(S2Basis, 3), (CircleBasis, 2)])
@pytest.mark.parametrize("oversample", [1, 2])
def test_handoff_particles_carry_the_density_exactly(basis_cls, d, oversample):
    """Quadrature nodes with weights σ_j ρ(x_j): every coefficient of degree ≤ L is the density's."""
    L = 16
    dens = mf.Density.random(L, d=d, seed=5, amplitude=0.6)
    basis = basis_cls(L)
    particles, clipped = density_to_particles(basis, dens.coeffs[None, None], oversample)
    assert clipped == 0.0 and np.all(particles.weights > 0) and abs(particles.weights.sum() - 1) < 1e-15
    assert np.max(np.abs(particles_coefficients(particles, L) - dens.coeffs)) < 1e-13


def test_hybrid_runs_through_the_collapse():
    model = mf.Model(5.0)
    dens = mf.Density.random(24, seed=2)
    tr = mf.simulate(model, dens, 6.0, backend="hybrid", save_every=1.0)
    assert tr.success and "Handed off to particles-sh" in tr.message
    phase = tr.diagnostics["phase"]
    assert phase[0] == 0 and phase[-1] == 1
    final = tr.final
    assert isinstance(final, mf.Particles) and np.all(final.weights >= 0)
    assert np.max(np.abs(tr.diagnostics["mass_error"])) < 1e-14
    assert np.all(np.diff(tr.diagnostics["energy"]) > 0)                  # attention concentrates
    x, w = final.positions, final.weights                                    # clusters formed:
    aligned = sum(w[i:i + 2000] @ ((x[i:i + 2000] @ x.T) > 0.999) @ w for i in range(0, len(w), 2000))
    assert aligned > 0.1      # the weighted fraction of pairs within 2.6° (uniform: 5e-4)
    assert tr.steps["phase"][0] == 0 and tr.steps["phase"][-1] == 1


def test_hybrid_matches_the_spectral_solution_before_and_after_handoff():
    """Against a refined spectral run: equal before the hand-off, close (particle error) after."""
    model = mf.Model(5.0)
    dens = mf.Density.random(40, seed=2, amplitude=0.7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        ref = mf.simulate(model, dens, 2.5, t_eval=[1.0, 2.5], on_resolution_loss="refine", lmax_max=200,
                          rtol=1e-11)
    hyb = mf.simulate(model, dens, 2.5, backend="hybrid", t_eval=[1.0, 2.5])
    assert hyb.success and 1.0 < (hyb.diagnostics["phase"] > 0).argmax() <= 2
    assert mf.sobolev_distance(hyb.states[1], ref.states[1], lmax=32) < 1e-8      # spectral phase
    assert mf.sobolev_distance(hyb.states[2], ref.states[2], lmax=32) < 1e-4      # particle phase


def test_hybrid_on_the_circle_and_from_particles():
    model = mf.Model(4.0, d=2)
    dens = mf.Density.random(32, d=2, seed=1)
    tr = mf.simulate(model, dens, 6.0, backend="hybrid", save_every=2.0)
    assert tr.success and "Handed off to particles at" in tr.message
    again = mf.simulate(model, tr.final, 1.0, backend="hybrid")   # a particle start skips the spectral phase
    assert again.success and again.diagnostics["phase"][0] == 1


def test_hybrid_bad_options():
    with pytest.raises(TypeError, match="unknown option"):
        mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 1.0, backend="hybrid", on_resolution_loss="stop")
    with pytest.raises(ValueError, match="`oversample`"):
        mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 1.0, backend="hybrid", oversample=0)
    with pytest.raises(ValueError, match="`particle_backend`"):
        mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 1.0, backend="hybrid", particle_backend="gpu")
    with pytest.raises(mf.UnsupportedModelError, match="zonal"):
        mf.simulate(mf.Model(1.0, d=5), mf.ZonalDensity.uniform(4, d=5), 1.0, backend="hybrid")


@pytest.mark.parametrize("particle_options, error, match", [
    ({"rtoll": 1}, TypeError, r"`particle_options` for the particle phase \(particles-sh\): unknown option"),
    ({"causal": True}, mf.UnsupportedModelError, r"`particle_options` .*has no causal mask"),
    ({"time": "layers", "step": 0.1}, ValueError, r"`particle_options` time='layers': the particle phase starts at the hand-off"),
    (3, TypeError, r"`particle_options` must be a dict of particles-sh options; got particle_options=3"),
])
def test_hybrid_checks_particle_options_before_the_spectral_phase(particle_options, error, match):
    # they were checked only at the hand-off, after the spectral work (lost with the exception)
    calls = []
    with pytest.raises(error, match=match):
        mf.simulate(mf.Model(3.0), mf.Density.uniform(8), 5.0, backend="hybrid", particle_options=particle_options,
                    callback=lambda *a: calls.append(a))
    assert not calls


@pytest.mark.parametrize("causal", [True, np.True_])
def test_hybrid_refuses_a_causal_mask_on_the_exact_particle_phase(causal):
    # particles-sh refused it, but backend='particles' took it and masked the quadrature nodes in grid order after a
    # non-causal spectral phase
    with pytest.raises(mf.UnsupportedModelError, match=r"`particle_options` causal=True: .*no token order"):
        mf.simulate(mf.Model(3.0), mf.Density.uniform(8), 5.0, backend="hybrid", particle_backend="particles",
                    particle_options={"causal": causal})
    tr = mf.simulate(mf.Model(3.0), mf.Density.uniform(8), 0.01, backend="hybrid", particle_backend="particles",
                     particle_options={"causal": False})
    assert tr.success


def test_hybrid_mean_alignment_is_continuous_at_the_hand_off():
    # the particles stand for the density: |m|² with self-pairs, as the spectral phase reports it
    model = mf.Model(3.0, "peri-ln")
    dens = mf.Density.random(16, seed=3, degree=4, amplitude=0.5)
    spec = mf.simulate(model, dens, 0.25, save_every=0.25, rtol=1e-12)
    hyb = mf.simulate(model, dens, 0.25, backend="hybrid", save_every=0.25, tail_tol=1e-30,
                      particle_options=dict(rtol=1e-12, atol=1e-14))
    assert hyb.diagnostics["phase"][-1] == 1.0 and "Handed off" in hyb.detail   # at the first step
    a, b = hyb.diagnostics["mean_alignment"], spec.diagnostics["mean_alignment"]
    m = hyb.final.weights @ hyb.final.positions
    assert a[-1] == pytest.approx(m @ m, rel=1e-14)
    assert abs(a[-1] - b[-1]) < 1e-6      # the token formula (self-pairs left out) was 1.2e-4 off here
    steps = hyb.steps["mean_alignment"]   # logged by both phases, on the same convention
    assert np.all(np.isfinite(steps)) and steps[-1] == a[-1]
    reference = np.interp(hyb.steps["t"], np.r_[0.0, spec.steps["t"]], np.r_[b[0], spec.steps["mean_alignment"]])
    np.testing.assert_allclose(steps, reference, rtol=0, atol=1e-6)     # linear interpolation: O(dt²) ~ 1e-7


def test_hybrid_refines_up_to_lmax_max_before_handing_off():
    # S¹ keeps it cheap: without lmax_max the hand-off is at the starting band limit; with it, later and at lmax_max
    model, dens = mf.Model(3.0, d=2), mf.Density.random(24, d=2, seed=3, amplitude=0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        plain = mf.simulate(model, dens, 4.0, backend="hybrid", save_every=1.0)
        refined = mf.simulate(model, dens, 4.0, backend="hybrid", save_every=1.0, lmax_max=96)
    assert plain.success and refined.success
    assert "lmax=24" in plain.detail and "lmax=96" in refined.detail
    t_plain, t_refined = (float(r.detail.split(" at t=")[1].split(" ")[0]) for r in (plain, refined))
    assert t_refined > t_plain
    assert "backend='hybrid'" not in refined.detail        # no advice to use the backend that is running


def test_hybrid_runs_and_resumes_with_a_fixed_step_method(tmp_path):
    # the spectral phase was given every default as if set, and rk4 refused rtol, atol, max_step, min_step
    model, rho = mf.Model(3.0), mf.Density.random(12, seed=1, amplitude=0.5)
    path = tmp_path / "h.h5"
    full = mf.simulate(model, rho, 0.2, backend="hybrid", method="rk4", step=0.05, save_every=0.1)
    part = mf.simulate(model, rho, 0.2, backend="hybrid", method="rk4", step=0.05, save_every=0.1, checkpoint=path,
                       callback=lambda t, s, d: t >= 0.1)
    assert full.success and part.status is mf.Status.CALLBACK_STOP
    resumed = mf.resume(path)
    assert resumed.success and type(resumed.final) is type(full.final)
    key = "coeffs" if isinstance(full.final, mf.Density) else "positions"
    assert np.allclose(getattr(resumed.final, key), getattr(full.final, key), rtol=0, atol=1e-13)
    assert mf.simulate(model, rho, 0.1, method="rk4", step=0.05, max_step=np.inf).success   # ∞ is "unbounded"


def test_a_handoff_that_cannot_fit_is_refused_before_the_spectral_phase():
    # oversample=1000 ran the spectral phase, then allocated 8.6 GiB at the hand-off (or ate the machine's memory)
    with pytest.raises(mf.InsufficientMemoryError, match=r"hand-off to particles .* 1000·16 .* lower `oversample`"):
        mf.simulate(mf.Model(2.0), mf.Density.random(16, seed=1), 0.1, backend="hybrid", oversample=1000)


def test_a_phase_that_fails_reports_its_cause():
    # the hybrid's detail was its own (empty before the hand-off, the hand-off's after): a spectral phase that took
    # max_steps, or a particle phase below its min_step, ended with no cause given
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 2] + 0.3 * x[..., 0] * x[..., 1], 12).normalized()
    with pytest.warns(mf.MeanfieldWarning, match="max_steps=3 steps taken"):
        tr = mf.simulate(mf.Model(5.0), rho, 1.0, backend="hybrid", max_steps=3)
    assert tr.status is mf.Status.STEP_TOO_SMALL and tr.detail.startswith("max_steps=3 steps taken")
    with pytest.warns(mf.MeanfieldWarning, match=r"< min_step=0\.3"):
        tr = mf.simulate(mf.Model(5.0), rho, 1.0, backend="hybrid", tail_tol=1e-30,
                         particle_options=dict(min_step=0.3, rtol=1e-13, atol=1e-15))
    assert tr.status is mf.Status.STEP_TOO_SMALL
    assert re.match(r"Handed off to particles-sh at t=0 .* State kept from t=0\..* Step \S+ < min_step=0\.3 at t=0",
                    tr.detail), tr.detail


def test_a_resumed_run_keeps_the_record_of_its_hand_off(tmp_path):
    # a run resumed past its hand-off starts from the particles: its detail said nothing of a hand-off, and no
    # record held its time
    model = mf.Model(5.0)
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 2] + 0.3 * x[..., 0] * x[..., 1], 6).normalized()
    kw = dict(backend="hybrid", save_every=0.25, tail_tol=1e-8, method="rk4", step=0.05,
              particle_options=dict(method="rk4", step=0.05))
    full = mf.simulate(model, rho, 1.0, **kw)
    record = full.run_info["handoff"]
    assert record["t"] == pytest.approx(0.1, abs=1e-12) and record["particle_backend"] == "particles-sh"
    assert record["n_particles"] == full.final.n and record["lmax"] == 6 and record["clipped_mass"] == 0.0
    assert full.detail == record["detail"] and full.detail.startswith("Handed off to particles-sh at t=0.1 ")
    path = tmp_path / "h.h5"
    part = mf.simulate(model, rho, 1.0, checkpoint=path, callback=lambda t, s, d: t >= 0.5, **kw)
    assert part.status is mf.Status.CALLBACK_STOP and isinstance(part.final, mf.Particles)
    assert mf.load(path).run_info["handoff"] == record
    resumed = mf.resume(path)
    assert resumed.success and resumed.detail == full.detail and resumed.run_info["handoff"] == record
    assert np.array_equal(resumed.final.positions, full.final.positions)
    assert np.array_equal(resumed.diagnostics["phase"], full.diagnostics["phase"])
    longer = mf.resume(path, t_final=1.25)                    # extended: still the same record
    assert longer.success and longer.detail == full.detail and mf.load(path).run_info["handoff"] == record
    with pytest.raises(ValueError, match="`metadata` key 'handoff' is reserved"):
        mf.simulate(model, rho, 1.0, metadata={"handoff": 1}, **kw)


@pytest.mark.parametrize("scheme, attention", [("post-ln", "unnormalized"), ("pre-ln", "softmax")])
def test_the_diagnostics_both_phases_report_are_continuous_at_the_hand_off(scheme, attention):
    # dissipation ∫ρ|v|²dσ was the spectral phase's only: NaN from the first particle state on (the particles now report
    # Σ w|dθ/dt|²); energy, mean alignment and mean radius were continuous already
    model = mf.Model(3.0, scheme, attention=attention)
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 2] + 0.3 * x[..., 0] * x[..., 1], 12,
                                   radius=(lambda x: 1.5 + 0.3 * x[..., 0]) if scheme == "pre-ln" else None)
    spec = mf.simulate(model, rho, 0.05, save_every=0.05, rtol=1e-12)
    hyb = mf.simulate(model, rho, 0.05, backend="hybrid", save_every=0.05, tail_tol=1e-30,
                      particle_options=dict(rtol=1e-12, atol=1e-14))
    assert hyb.run_info["handoff"]["t"] == 0.0 and list(hyb.diagnostics["phase"]) == [0, 1]
    keys = ["energy", "mean_alignment", "dissipation"] + (["mean_radius"] if scheme == "pre-ln" else [])
    for k in keys:
        a, b = hyb.diagnostics[k][-1], spec.diagnostics[k][-1]
        assert abs(a - b) <= 1e-11 * abs(b), (k, a, b)      # measured ≤ 7e-14 (rtol 1e-12 in both)


@pytest.mark.parametrize("particle", [{}, dict(method="rk4", step=0.05)])
def test_the_particle_phase_max_steps_counts_the_whole_run_resumes_included(tmp_path, monkeypatch, particle):
    # a max_steps in particle_options counted the particle steps from the resume: stopped at t=0.25 and resumed, a run
    # whose particle phase had to stop after 19 steps (by t≈0.84) ran on to t_final with status OK.  With fixed steps
    # the run was refused unless step·max_steps covered the whole run (the particle phase covers only its end)
    from meanfield._io import read_resume_point

    warnings.simplefilter("ignore", mf.MeanfieldWarning)
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 2] + 0.3 * x[..., 0] * x[..., 1], 6).normalized()
    run = dict(model=mf.Model(5.0), initial=rho, t_final=1.0, backend="hybrid", save_every=0.25, tail_tol=1e-8,
               method="rk4", step=0.05, particle_options=particle)
    free = mf.simulate(**run)
    handoff, n = free.run_info["handoff"]["t"], int(np.sum(free.steps["phase"] == 1))
    budget = dict(run, particle_options=dict(particle, max_steps=n - 4))
    full = mf.simulate(**budget)
    assert full.status is mf.Status.STEP_TOO_SMALL and int(np.sum(full.steps["phase"] == 1)) == n - 4
    assert f"particle_options['max_steps']={n - 4} steps taken" in full.detail
    assert "the particle phase's steps of the whole run" in full.detail
    stopped = tmp_path / "stopped.h5"           # at a save time past the hand-off
    mf.simulate(**budget, checkpoint=stopped, callback=lambda t, s, d: t >= 0.25)
    copies = _killed_copies(monkeypatch, tmp_path)
    mf.simulate(**budget, checkpoint=tmp_path / "run.h5", checkpoint_interval=0)
    monkeypatch.undo()
    points = {c: read_resume_point(c) for c in copies}
    before = next(c for c, p in points.items() if p is not None and p.t < handoff)       # still spectral
    after = next(c for c, p in points.items() if p is not None and p.t > handoff + 0.1)   # particle steps saved
    assert full.times[-1] > 0.25 + 0.1
    for path in (stopped, before, after):
        resumed = mf.resume(path)
        assert resumed.status is mf.Status.STEP_TOO_SMALL and resumed.detail == full.detail, path
        assert np.array_equal(resumed.times, full.times) and np.array_equal(resumed.steps["t"], full.steps["t"])
        more = mf.resume(path, options={"particle_options": {"max_steps": n}})   # the budget of the whole run
        assert more.success and int(np.sum(more.steps["phase"] == 1)) == n


@pytest.mark.parametrize("option, value, error", [("lmax", -3, ValueError), ("lmax", "a", TypeError),
                                                  ("lmax_max", -3, ValueError), ("lmax_max", "a", TypeError)])
def test_a_bad_band_limit_is_named_as_given(option, value, error):
    # the hand-off's memory check read them first: lmax=-3 raised "`lmax` must be an integer >= 0; got lmax=-6" (the
    # oversampled value), lmax='a' "invalid literal for int() with base 10: 'a'"; now as backend='spectral' names them
    with pytest.raises(error, match=rf"^`{option}` must be an integer >= 1; got {option}={value!r}\.$"):
        mf.simulate(mf.Model(3.0), mf.Density.random(8, seed=1, amplitude=0.5), 0.05, backend="hybrid",
                    **{option: value})


@pytest.mark.filterwarnings("ignore::meanfield.MeanfieldWarning")    # lmax below the kernel's band limit
def test_oversample_takes_numpy_integers_and_names_what_it_refuses():
    # np.int64(2) (from np.arange, a sweep's grid) was refused: "`oversample` must be an integer ≥ 1; got
    # oversample=np.int64(2)"
    model, rho = mf.Model(3.0, d=2), mf.Density.random(12, d=2, seed=1, amplitude=0.5)
    runs = [mf.simulate(model, rho, 0.01, backend="hybrid", tail_tol=1e-30, oversample=o) for o in (2, np.int64(2))]
    assert runs[0].run_info["handoff"]["n_particles"] == runs[1].run_info["handoff"]["n_particles"] == 74
    assert np.array_equal(runs[0].final.positions, runs[1].final.positions)
    with pytest.raises(TypeError, match=r"^`oversample` must be an integer >= 1; got oversample=2\.0\.$"):
        mf.simulate(model, rho, 0.01, backend="hybrid", oversample=2.0)


@pytest.mark.parametrize("model, rho", [(mf.Model(3.0, d=2), mf.Density.random(8, d=2, seed=1)),
                                        (mf.Model(3.0, Q=np.diag([1.0, 2.0, 3.0])), mf.Density.random(8, seed=1))])
@pytest.mark.parametrize("particle_options", [None, {"rtol": 1e-8}])
def test_a_particle_backend_that_cannot_run_the_model_is_named(model, rho, particle_options):
    # particle_backend='particles-sh' on S¹ or for an anisotropic kernel was refused as "backend='particles-sh': ... Use
    # backend='particles'" (the backend the user is running is 'hybrid'), or blamed on `particle_options`; built
    # directly, the backend took it and failed at the hand-off, after the spectral phase
    from meanfield.backends._hybrid import HybridBackend

    match = r"^particle_backend='particles-sh' cannot run the particle phase of this model: .*particle_backend='particles'"
    with pytest.raises(mf.UnsupportedModelError, match=match):
        mf.simulate(model, rho, 1.0, backend="hybrid", particle_backend="particles-sh", particle_options=particle_options)
    with pytest.raises(mf.UnsupportedModelError, match=match):
        HybridBackend(model, rho, particle_backend="particles-sh", particle_options=particle_options)


@pytest.mark.parametrize("options, error, match", [
    (dict(method="foo"), ValueError, r"`method` must be one of \['rk23', 'rk4', 'rk45'\]; got method='foo'"),
    (dict(rtol=5), ValueError, r"`rtol` must be in \[1e-14, 1\)"),
    (dict(lmax=-1), ValueError, r"`lmax` must be an integer >= 1; got lmax=-1"),
    (dict(lmax=16, lmax_max=8), ValueError, r"`lmax_max` must be ≥ the starting band limit lmax=16"),
])
def test_a_particle_start_checks_the_spectral_options_too(options, error, match):
    # from Particles the hybrid runs no spectral phase, and took these in silence (status OK)
    start = mf.Particles.uniform(30, 3, seed=0)
    with pytest.raises(error, match=match):
        mf.simulate(mf.Model(3.0), start, 0.1, backend="hybrid", **options)
    good = dict(lmax=16, lmax_max=32, method="rk4", step=0.1, r0=2.0, filter=(36.0, 8))     # valid ones still run
    for model in (mf.Model(3.0, Q=np.diag([1.0, 2.0, 3.0])), mf.Model(3.0, "pre-ln"), mf.Model(2.0, d=5)):
        assert mf.simulate(model, mf.Particles.uniform(30, model.d, seed=0), 0.1, backend="hybrid", **good).success
    # nor is the memory of the phase that never runs required (refining to 10⁵ would need ~10⁴ GiB)
    assert mf.simulate(mf.Model(3.0), start, 0.1, backend="hybrid", lmax=16, lmax_max=100_000).success


@pytest.mark.parametrize("tail_tol", [0.0, -1.0])
def test_a_nonpositive_tail_tol_is_named(tail_tol):
    # the hybrid lowered tail_warn to it first, and the refusal named the option not given: "`tail_warn` must be finite
    # and > 0; got tail_warn=-1.0"
    with pytest.raises(ValueError, match=rf"^`tail_tol` must be in \(0, 1\] \(a fraction of the spectral energy; 1 "
                                         rf"switches that check off\); got tail_tol={tail_tol!r}\.$"):
        mf.simulate(mf.Model(3.0), mf.Density.uniform(8), 0.1, backend="hybrid", tail_tol=tail_tol)


def test_the_hybrid_is_the_spectral_run_then_the_particle_run_from_its_nodes(monkeypatch):
    # S¹, Mix-LN switching at τ = 3 after the hand-off (t ≈ 2.37): the particle phase runs on the absolute clock
    import meanfield.backends._hybrid as hybrid

    nodes = []
    handoff = hybrid.density_to_particles
    monkeypatch.setattr(hybrid, "density_to_particles", lambda *a, **k: nodes.append(handoff(*a, **k)) or nodes[-1])
    model = mf.Model(10.0, "mix-ln", tau=3.0, d=2)
    rho = mf.Density.from_function(lambda x: 1 + 0.6 * x[..., 1] + 0.3 * x[..., 0] * x[..., 1], 24, d=2).normalized()
    kw = dict(save_every=0.5, tail_tol=1e-13)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        hyb = mf.simulate(model, rho, 3.5, backend="hybrid", **kw)
        spec = mf.simulate(model, rho, 3.5, **kw)
    t = hyb.run_info["handoff"]["t"]
    assert 2.0 < t < 3.0 and spec.status is mf.Status.RESOLUTION_LOST
    before = np.flatnonzero(hyb.diagnostics["phase"] == 0)
    assert len(before) == 5 and all(np.array_equal(hyb.states[i].coeffs, spec.states[i].coeffs) for i in before)
    (particles, clipped), = nodes
    assert clipped == 0.0 and particles.n == hyb.final.n
    part = mf.simulate(model, particles, 3.5, t0=t, backend="particles", save_every=0.5)
    assert np.max(np.abs(part.final.positions - hyb.final.positions)) < 1e-12       # measured 4.9e-15
    assert np.max(np.abs(part.final.radii - hyb.final.radii)) < 1e-12


def test_the_hand_off_detail_names_the_fired_quantity_once():
    # "the tail fraction 1.442e-06 > tail_tol=1e-06 (tail fraction 1.442e-06, min ρ 3.644e-03, lmax=16)": the monitor's
    # detail repeated the quantity that fired; the parenthesis now gives the others
    rho = mf.Density.from_function(lambda x: np.exp(3 * x[..., 2]), 16, normalize=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        r = mf.simulate(mf.Model(scheme="post-ln", beta=6.0), rho, t_final=1.1, backend="hybrid")
    assert r.success and "Handed off" in r.detail
    monitor = r.detail[r.detail.index("Spectral monitor"):]
    assert re.search(r"the tail fraction \S+ > tail_tol=1e-06 \(min ρ \S+, lmax=16\)\.", monitor), monitor
    assert monitor.count("tail fraction") == 1


def _borderline(lmax=16, depth=1e-8):
    """(1 + z)⁴ (mass 1) minus depth·P_2(z) (mass 0): min ρ ≈ −depth near the south pole, nonnegative to ringing."""
    def f(x):
        z = x[..., 2]
        return 5 * (1 + z) ** 4 / 16 - depth * (3 * z ** 2 - 1) / 2
    return mf.Density.from_function(f, lmax)


def test_hybrid_accepts_the_starts_that_spectral_accepts():
    # min ρ ≈ −1e-8, inside spectral's negativity_tol = 1e-6: "spectral" ran it, "hybrid" refused it ("< -negativity_tol
    # = -1e-10", its stricter monitor's threshold).  One tolerance (meanfield._measures.NEGATIVITY_TOL) now decides
    # the start for both; the hybrid's monitor hands such a start to particles at its first step
    rho = _borderline()
    model = mf.Model(2.0)
    spectral = mf.simulate(model, rho, 0.1, backend="spectral")
    assert -1e-8 < spectral.diagnostics["min_rho"][0] < -9e-9 and spectral.success
    hybrid = mf.simulate(model, rho, 0.1, backend="hybrid")
    assert hybrid.success and hybrid.run_info["handoff"]["t"] == 0.0
    assert 0 < hybrid.run_info["handoff"]["clipped_mass"] < 1e-10
    # the two agree on the mean direction to the particle method's error (the particles carry the moments exactly)
    m_s, m_h = (float(tr.diagnostics["mean_alignment"][-1]) for tr in (spectral, hybrid))
    assert abs(m_s - m_h) < 1e-4
    # beyond −1e-6 both refuse it, the hybrid naming the bound it applied
    deep = _borderline(depth=1e-5)
    with pytest.raises(ValueError, match=r"its minimum on the grid is -9\.87e-06 < -negativity_tol = -1e-06"):
        mf.simulate(model, deep, 0.2, backend="spectral")
    with pytest.raises(ValueError, match=r"its minimum on the grid is -9\.87e-06 < -1e-06 \(a start is checked against "
                                         r"max\(negativity_tol=1e-10, 1e-06\)\)"):
        mf.simulate(model, deep, 0.2, backend="hybrid")
    # species alike (each is checked on its own): a species at min ρ ≈ −5e-9 was refused by the hybrid only
    u = mf.Density.uniform(16).coeffs
    species = [mf.Density(rho.coeffs / 2, 16, radius=u), mf.Density(rho.coeffs / 2, 16, radius=2 * u)]
    for backend in ("spectral", "hybrid"):
        assert mf.simulate(mf.Model(2.0, "pre-ln"), species, 0.05, backend=backend).success
    # a looser negativity_tol given to either loosens its start check alike
    for backend in ("spectral", "hybrid"):
        assert mf.simulate(model, deep, 0.05, backend=backend, negativity_tol=1e-4).success


def test_negativity_tolerance_is_defined_once():
    from meanfield._compare import _NEGATIVITY_TOL
    from meanfield._measures import NEGATIVITY_TOL
    from meanfield.backends._registry import BACKENDS

    assert BACKENDS["spectral"].option_defaults()["negativity_tol"] == NEGATIVITY_TOL == _NEGATIVITY_TOL


def test_the_particle_phase_warns_of_an_unresolved_spectral_velocity():
    """Two orthogonal tokens, USA at β = 30: particles-sh's velocity error bound is 56 times their tangential
    attention, and backend='particles-sh' warns; the hybrid's particle phase (particles-sh) never did, as it had no
    t_final to measure the drift by (the warning needs one; the hybrid never passed it).  It now warns as the
    particle run does, the same words and numbers; and after a hand-off, measured from the hand-off to t_final."""
    m = mf.Model(30.0, attention="unnormalized")
    start = mf.Particles([[1.0, 0, 0], [0, 1.0, 0]])
    runs = {}
    for backend, options in (("particles-sh", dict(method="rk4", step=0.01)),
                             ("hybrid", dict(particle_options=dict(method="rk4", step=0.01)))):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", mf.MeanfieldWarning)
            mf.simulate(m, start, 0.1, backend=backend, save_every=0.05, **options)
        runs[backend] = [str(w.message) for w in caught if "spectral velocity is not resolved" in str(w.message)]
    assert len(runs["particles-sh"]) == 1 and runs["hybrid"] == runs["particles-sh"]
    assert re.search(r"at t=0: its error bound \S+ is 55\.\d times", runs["hybrid"][0])


def test_the_particle_phase_after_a_hand_off_measures_the_drift_from_there(monkeypatch):
    """A bound of 1e6 (a stand-in for an unresolved velocity) warns at the first state after the hand-off, its drift
    bound / min_j s_j · (t_final − t_handoff), the particle phase's own span (it had none: no warning)."""
    from meanfield.backends._particles_sh import ParticlesSHBackend

    monkeypatch.setattr(ParticlesSHBackend, "attention_error_bound", lambda self, field: 1e6)
    rho = mf.Density.from_function(lambda x: np.exp(3 * x[..., 2]), 16, normalize=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(scheme="post-ln", beta=6.0, attention="unnormalized"), rho, 0.1,
                         backend="hybrid", save_every=0.05)
    t_hand = tr.run_info["handoff"]["t"]
    assert tr.success and 0 < t_hand < 0.05
    found = [str(w.message) for w in caught if "spectral velocity is not resolved" in str(w.message)]
    assert len(found) == 1 and "at t=0.05:" in found[0], found
    # Post-LN moves at unit speed factor (s = 1): the drift is 1e6·(t_final − t_handoff) (not 1e6·t_final = 1e5),
    # printed to 3 digits
    drift = float(re.search(r"could move a token by (\S+) rad", found[0]).group(1))
    assert drift == pytest.approx(1e6 * (0.1 - t_hand), rel=5e-3)


def test_the_particle_phase_warns_of_an_unresolved_fixed_step_after_a_hand_off():
    """The fixed-step resolution warning lives in the particle stepper, which the hybrid's particle phase is: after
    a hand-off at t ≈ 0.0024 (USA, β = 6), rk4 with step 0.05 moves a token by ~3 rad in a step, and warns once."""
    rho = mf.Density.from_function(lambda x: np.exp(3 * x[..., 2]), 16, normalize=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(scheme="post-ln", beta=6.0, attention="unnormalized"), rho, 0.1,
                         backend="hybrid", save_every=0.05, particle_options=dict(method="rk4", step=0.05))
    found = [str(w.message) for w in caught if "does not resolve the motion" in str(w.message)]
    assert tr.success and len(found) == 1
    assert re.search(rf"fixed step h=0.0\d+ \(method='rk4', step=0.05\) does not resolve the motion at "
                     rf"t={tr.run_info['handoff']['t']:.6g}: .* moves h·\|dθ/dt\| = \S+ rad", found[0]), found


def test_the_time_diagnostic_of_a_hybrid_run_is_its_save_times_in_both_phases():
    """The particle phase records the diagnostic `t` and the spectral phase did not, so the merged diagnostics read
    NaN for `t` at every spectral state (here t = 0.25, 0.5, 0.75 before a hand-off at t ≈ 0.92, from t0 = 0.25)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(5.0), mf.Density.random(24, seed=2, amplitude=0.7), 1.0, t0=0.25,
                         backend="hybrid", save_every=0.25)
    assert list(tr.diagnostics["phase"]) == [0, 0, 0, 1]       # both phases are saved
    assert np.array_equal(tr.diagnostics["t"], tr.times)


def test_on_the_sphere_the_hand_off_is_where_the_spectral_monitor_fires_and_a_resume_crosses_it(tmp_path, monkeypatch):
    """S², β = 5, particles-sh (auto), adaptive steps in both phases, a hand-off between save times (t ≈ 0.761).
    backend="spectral" with the hybrid's monitor (tail_tol=1e-6, negativity_tol=1e-10) stops where the hybrid hands
    off, its states the same bits; the nodes carry the density (weights > 0, mass 1 to rounding, its coefficients);
    the particle phase is particles-sh from those nodes, bit for bit; a run killed at any step around the hand-off
    resumes to the same bits."""
    from meanfield._io import read_resume_point
    import meanfield.backends._hybrid as hybrid

    nodes = []
    handoff = hybrid.density_to_particles
    monkeypatch.setattr(hybrid, "density_to_particles", lambda *a, **k: nodes.append(handoff(*a, **k)) or nodes[-1])
    model, rho = mf.Model(5.0), mf.Density.random(10, seed=2, degree=4, amplitude=0.7)
    kw = dict(save_every=0.3, lmax=24)
    hyb = mf.simulate(model, rho, 0.9, backend="hybrid", oversample=1, **kw)
    spec = mf.simulate(model, rho, 0.9, tail_tol=1e-6, negativity_tol=1e-10, **kw)
    t = hyb.run_info["handoff"]["t"]
    assert hyb.success and hyb.times[-1] == 0.9 and 0.6 < t < 0.9
    assert spec.status is mf.Status.RESOLUTION_LOST and spec.times[-1] == t
    before = np.flatnonzero(hyb.diagnostics["phase"] == 0)
    assert len(before) == 3 and all(np.array_equal(hyb.states[i].coeffs, spec.states[i].coeffs) for i in before)
    (particles, clipped), = nodes
    assert clipped == 0.0 and np.all(particles.weights > 0) and abs(particles.weights.sum() - 1) < 1e-14
    # sums of 2960 terms w_j Y_ℓm(x_j), |Y_ℓm| ≤ √(2L+1) = 7: rounding ≤ eps·2960·7 = 4.6e-12 (measured 1.1e-13)
    assert np.max(np.abs(particles_coefficients(particles, 24) - spec.final.coeffs)) < 4.6e-12
    part = mf.simulate(model, particles, 0.9, t0=t, backend="particles-sh", t_eval=[t, 0.9])
    assert np.array_equal(part.final.positions, hyb.final.positions)
    assert np.array_equal(part.final.weights, hyb.final.weights)
    copies = _killed_copies(monkeypatch, tmp_path)
    mf.simulate(model, rho, 0.9, backend="hybrid", oversample=1, checkpoint=tmp_path / "run.h5", checkpoint_interval=0,
                **kw)
    monkeypatch.undo()
    points = sorted((p.t, c) for c in copies if (p := read_resume_point(c)) is not None)
    at = next(i for i, (s, _) in enumerate(points) if s >= t)
    assert points[at - 1][0] < t == points[at][0] < points[at + 1][0] < 0.9
    for _, path in points[at - 1:at + 2]:       # the last spectral step, the hand-off's, the first particle step
        resumed = mf.resume(path)
        assert np.array_equal(resumed.final.positions, hyb.final.positions), path
        assert resumed.run_info["handoff"] == hyb.run_info["handoff"] and resumed.detail == hyb.detail


@pytest.mark.filterwarnings("ignore::meanfield.MeanfieldWarning")    # lmax below the kernel's band limit
def test_a_density_that_stays_resolved_is_the_spectral_run_and_one_unresolved_at_the_start_is_handed_off_at_once():
    """Never under-resolved: no hand-off, the spectral run with the hybrid's monitor to the bit, a Density at t_final,
    no hand-off record.  Unresolved at t = 0 (a random density at its own band limit: tail fraction 7.3e-4 beyond
    tail_tol=1e-6): handed off at t = 0, the nodes carrying the initial density, not the state of the rejected step."""
    import meanfield.backends._hybrid as hybrid

    smooth = mf.Density.from_function(lambda x: 1 + 0.3 * x[..., 2] + 0.2 * x[..., 0] * x[..., 1], 12, normalize=True)
    model = mf.Model(2.0)
    hyb = mf.simulate(model, smooth, 0.5, backend="hybrid", save_every=0.25)
    spec = mf.simulate(model, smooth, 0.5, save_every=0.25, tail_tol=1e-6, negativity_tol=1e-10)
    assert hyb.success and isinstance(hyb.final, mf.Density) and "handoff" not in hyb.run_info and hyb.detail == ""
    assert all(np.array_equal(a.coeffs, b.coeffs) for a, b in zip(hyb.states, spec.states))
    assert list(hyb.diagnostics["phase"]) == [0, 0, 0]
    rough = mf.Density.random(8, seed=4, degree=4, amplitude=0.5)
    nodes = []
    handoff = hybrid.density_to_particles
    try:
        hybrid.density_to_particles = lambda *a, **k: nodes.append(handoff(*a, **k)) or nodes[-1]
        tr = mf.simulate(model, rough, 0.1, backend="hybrid", oversample=1)
    finally:
        hybrid.density_to_particles = handoff
    assert tr.success and tr.run_info["handoff"]["t"] == 0.0 and "beyond tail_tol (tail fraction 7.260e-04 at t=0" in tr.detail
    (particles, clipped), = nodes
    assert clipped == 0.0 and np.max(np.abs(particles_coefficients(particles, 8) - rough.coeffs)) < 1e-13
