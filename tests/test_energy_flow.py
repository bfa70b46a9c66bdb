"""meanfield._energy._flow and _stationary: the gradient flow of E_{β,D}, its energy identity, stationary states."""
import warnings

import numpy as np
import pytest
from scipy import optimize

import meanfield as mf
from meanfield._energy import dissipation, flow_model
from meanfield._energy._energy import atoms
from meanfield._energy._flow import _softmax_dissipation


def test_flow_model_velocity_is_gradient_of_first_variation():
    """The USA model Q = I, K = V = D moves particles along ∇_S δE/δμ (docs/model.md, "The gradient-flow case")."""
    D = np.array([[1.0, 0.3, 0.0], [0.3, 0.5, -0.2], [0.0, -0.2, -0.4]])
    p = mf.Particles.uniform(20, 3, seed=1)
    v = mf.attention_field(flow_model(1.4, D, 3), p.positions, p.weights).tangential
    g = mf.first_variation_gradient(p, 1.4, D)
    assert v == pytest.approx(g, abs=1e-13)
    vd = mf.attention_field(flow_model(1.4, D, 3, "descent"), p.positions, p.weights).tangential
    assert vd == pytest.approx(-g, abs=1e-13)


def test_energy_identity_over_the_stages_does_not_depend_on_the_save_grid():
    """E(t) − E(0) = ∫∫|v|² dμ dt along the ascent.  The particle backend integrates ∫|v|²dμ over its Runge–Kutta
    stages, so the defect is the integration error at any save spacing (Simpson over the save grid left 1e-7,
    falling as Δt⁴; measured now 1.5e-15 and 1.7e-16 of a gain of 0.064)."""
    p = mf.Particles.uniform(30, 3, seed=3)
    D = np.diag([1.0, 0.5, 0.2])
    for dt in (0.1, 0.05):
        tr = mf.gradient_flow(p, 1.0, D, t_final=1.0, save_every=dt)
        assert tr.success
        e = tr.diagnostics["energy"]
        assert np.all(np.diff(e) > 0)                                   # an ascent
        assert np.max(np.abs(tr.diagnostics["energy_identity_residual"])) < 1e-12


def test_energy_identity_of_a_density_to_simpson_order():
    """Without Runge–Kutta stages of particles (a density through the spectral backend) the time integral is
    Simpson's rule over the recorded states: its defect falls as O(Δt⁴) with their spacing."""
    rho = mf.Density.from_function(lambda x: 1 + 0.3 * x[..., 2] + 0.2 * x[..., 0] * x[..., 1], 12)
    res = []
    for parts in (8, 16):
        tr = mf.gradient_flow(rho, 1.0, t_final=1.0, backend="spectral", identity_parts=parts)
        res.append(np.max(np.abs(tr.diagnostics["energy_identity_residual"])))
    order = np.log2(res[0] / res[1])
    assert 3.5 < order < 4.6, (res, order)


def test_descent_decreases_energy_and_identity_has_the_sign():
    p = mf.Particles.uniform(15, 2, seed=4)
    tr = mf.gradient_flow(p, 1.0, np.diag([1.0, 0.6]), t_final=1.0, direction="descent", save_every=0.05)
    e = tr.diagnostics["energy"]
    assert np.all(np.diff(e) < 0)
    assert np.max(np.abs(tr.diagnostics["energy_identity_residual"])) < 1e-6


def test_density_flow_through_the_spectral_backend():
    rho = mf.Density.from_function(lambda x: 1 + 0.3 * x[..., 2], 12)
    tr = mf.gradient_flow(rho, 1.0, None, t_final=0.3, backend="spectral", save_every=0.05)
    assert tr.success and isinstance(tr.final, mf.Density)
    assert np.all(np.diff(tr.diagnostics["energy"]) > 0)
    assert np.max(np.abs(tr.diagnostics["energy_identity_residual"])) < 1e-6


def test_four_particle_rectangle():
    """Reference values (docs/validation.md): descent from a square ends on the rectangle d1 tanh(βd1a²) = d2 tanh(βd2b²)."""
    beta, d1, d2 = 1.0, 1.0, 0.5
    sq = mf.Particles(np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]]) / np.sqrt(2))
    r = mf.find_stationary(sq, beta, np.diag([d1, d2]), direction="descent", tol=1e-11, check_every=2.0)
    assert r.converged, r.message
    a2 = r.state.positions[:, 0] ** 2
    ref = optimize.brentq(lambda a: d1 * np.tanh(beta * d1 * a) - d2 * np.tanh(beta * d2 * (1 - a)), 0, 1,
                          xtol=1e-15)
    assert ref == pytest.approx(0.19370612, abs=1e-8)
    assert a2 == pytest.approx(np.full(4, ref), abs=1e-8)
    assert r.energy == pytest.approx(0.5513701486, abs=1e-8)
    assert r.energy == pytest.approx(np.cosh(beta * d1 * ref) * np.cosh(beta * d2 * (1 - ref)) / (2 * beta), abs=1e-8)
    assert mf.stationary(r.state, beta, np.diag([d1, d2]), tol=1e-10).stationary


def test_find_stationary_gives_up_at_t_max():
    p = mf.Particles.uniform(6, 3, seed=5)
    r = mf.find_stationary(p, 1.0, None, tol=1e-14, t_max=0.5, check_every=0.25)
    assert not r.converged and "Not stationary" in r.message
    assert r.time == pytest.approx(0.5)


def test_stationary_states():
    beta = 1.0
    # the antipodal pair is stationary for any D = diag; the uniform density for D = I
    pair = mf.Particles([[1.0, 0.0], [-1.0, 0.0]])
    assert mf.stationary(pair, beta, np.diag([-1.0, 0.3])).stationary
    assert mf.stationary(mf.Density.uniform(6), beta).stationary
    assert mf.stationary(mf.Density.uniform(6, d=2), beta).stationary
    # a tilted pair is not; the model's own velocity (SA) agrees on the zero set
    tilted = mf.Particles([[1.0, 0.0], [0.0, 1.0]])
    rep = mf.stationary(tilted, beta, None)
    assert not rep.stationary and rep.max_speed > 0.1 and "not stationary" in rep.message
    model = mf.Model(beta, attention="softmax", d=2)
    assert not mf.stationary(tilted, model).stationary
    assert mf.stationary(pair, model).stationary


@pytest.mark.parametrize("beta", [20.0, 40.0])
def test_stationarity_is_judged_relative_to_the_size_of_the_gradient(beta):
    # the velocity is the tangential part of a vector of size ~e^{β}: at β = 40 rounding alone leaves |v| ≈ 37
    # at a Dirac mass, which an absolute tol called "not stationary"; a tilted pair moves at ~e^{β}/2
    x = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    for state in (mf.Particles([x]), mf.Particles([x, -x]), mf.Density.uniform(4)):
        rep = mf.stationary(state, beta)
        assert rep.stationary and rep.scale > np.exp(beta) / (4 * beta ** 2) and "tol·max(1, |G|)" in rep.message
        assert rep.threshold == rep.tol * rep.scale
    usa = mf.Model(beta, attention="unnormalized")
    assert mf.stationary(mf.Particles([x, -x]), usa).stationary
    tilted = mf.Particles([x, [0.0, 0.0, 1.0]])
    for arg in (beta, usa):
        rep = mf.stationary(tilted, arg)
        assert not rep.stationary and rep.max_speed > 1e-5 * rep.scale      # e^{0.8β} against e^{β}
    # below a scale of 1 (softmax attention: |A| ≤ 1) the threshold is tol itself
    rep = mf.stationary(mf.Particles([x, -x]), mf.Model(beta))
    assert rep.stationary and rep.scale <= 1 and rep.threshold == rep.tol and "tol = 1e-08" in rep.message


def test_stationarity_of_the_gradient_flow_beyond_the_float64_range_of_the_gradient():
    """G = ∫ e^{β⟨x,Dy⟩} D y dμ reaches e^{β‖D‖}: from β‖D‖ ≈ 710 it (or its squared norm) overflowed, and the
    report read max |v| = NaN with numpy warnings; it is now computed in units of e^{β max⟨x,Dy⟩}."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        # an orthonormal frame: v(θ_1) = (θ_2 + θ_3)/3, of size √2/3, next to |G| = e^β/3 (whose square overflows)
        frame = mf.stationary(mf.Particles(np.eye(3)), 705.0)
        assert frame.speeds == pytest.approx(np.full(3, np.sqrt(2) / 3), rel=1e-12)
        assert frame.scale == pytest.approx(np.exp(705.0) / 3, rel=1e-12) and frame.stationary   # relative to |G|
        x = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
        e1 = np.array([1.0, 0.0, 0.0])                  # an eigenvector of D: the antipodal pair there is stationary
        for state, D in ((mf.Particles([x]), None), (mf.Particles([e1, -e1]), np.diag([2.0, 1.0, -0.5])),
                         (mf.ZonalDensity.uniform(8), None)):
            rep = mf.stationary(state, 800.0, D)
            assert rep.stationary and rep.max_speed == 0.0 and rep.scale == np.inf
        # a state far from stationary stays so: |v| ~ e^{β·0.8}·… against |G| ~ e^{β}/…, zonal S² at β = 400 and 1000
        zonal = mf.ZonalDensity.from_function(lambda t: np.exp(3 * t), 30).normalized()
        assert not mf.stationary(zonal, 400.0).stationary and not mf.stationary(zonal, 1000.0).stationary
        for beta in (400.0, 800.0):                     # every exponent below −300: units e^{−β}, reported as ~0
            rep = mf.stationary(mf.Particles([x]), beta, -1.0)
            assert rep.stationary and rep.max_speed == 0.0 and rep.scale < 1e-170
        tilted = mf.Particles([x, -x])                  # not an eigenvector: v ~ |G| at β x·Dx = 200
        assert not mf.stationary(tilted, 800.0, np.diag([2.0, 1.0, -0.5])).stationary


def test_dissipation_of_uniform_is_zero():
    assert dissipation(mf.Density.uniform(4), 1.0) == pytest.approx(0.0, abs=1e-26)


def test_bad_inputs():
    p = mf.Particles.uniform(4, 2)
    with pytest.raises(ValueError, match="`direction`"):
        mf.gradient_flow(p, 1.0, None, t_final=1.0, direction="sideways")
    with pytest.raises(ValueError, match="`D`"):
        mf.gradient_flow(p, 1.0, np.array([[0.0, 1.0], [0.0, 0.0]]), t_final=1.0)
    with pytest.raises(ValueError, match="`beta`"):
        mf.gradient_flow(p, 0.0, None, t_final=1.0)
    with pytest.raises(TypeError, match="`initial`"):
        mf.gradient_flow([[1.0, 0.0]], 1.0, None, t_final=1.0)
    with pytest.raises(TypeError, match="`start`"):
        mf.find_stationary(mf.Density.uniform(2, d=2), 1.0)
    with pytest.raises(ValueError, match="`tol`"):
        mf.find_stationary(p, 1.0, tol=0.0)
    with pytest.raises(ValueError, match="`t_max`"):
        mf.find_stationary(p, 1.0, t_max=-1.0)
    with pytest.raises(ValueError, match="`check_every`"):
        mf.find_stationary(p, 1.0, check_every=0.0)
    # more checks than states a run may keep: numpy's "Maximum allowed size exceeded" from the save times
    with pytest.raises(ValueError, match="`check_every` must be ≥ t_max/1000000"):
        mf.find_stationary(p, 1.0, check_every=1e-300)
    with pytest.raises(ValueError, match="`check_every` must be ≥ t_max/1000000"):
        mf.find_stationary(p, 1.0, t_max=1e300)
    # an array as backend raised numpy's "truth value of an array is ambiguous"
    with pytest.raises(ValueError, match="`backend` must be one of"):
        mf.find_stationary(p, 1.0, backend=np.array(["particles", "spectral"]))
    with pytest.raises(ValueError, match="`backend` must be one of"):
        mf.gradient_flow(p, 1.0, t_final=1.0, backend=np.array(["particles", "spectral"]))
    with pytest.raises(ValueError, match="`tol`"):
        mf.stationary(p, 1.0, tol=-1.0)
    with pytest.raises(ValueError, match="`support_tol`"):
        mf.stationary(p, 1.0, support_tol=0.0)
    with pytest.raises(ValueError, match="`D`"):
        mf.stationary(p, mf.Model(1.0, d=2), np.eye(2))
    with pytest.raises(ValueError, match="`D`"):
        mf.stationary(p, 1.0, np.array([[0.0, 1.0], [0.0, 0.0]]))
    with pytest.raises(TypeError, match="`measure`"):
        mf.stationary("uniform", 1.0)
    with pytest.raises(ValueError, match="`measure`"):
        mf.stationary(mf.Density.from_function(lambda x: 0.2 + x[..., 2], 2), mf.Model(1.0, d=3))
    with pytest.raises(ValueError, match="`D`"):
        dissipation(p, 1.0, np.array([[0.0, 1.0], [0.0, 0.0]]))


def test_energy_identity_residual_measures_the_flow_not_the_save_spacing():
    # a fast transient from a random start: the time integral of the dissipation is taken on 8 states per
    # saved interval (Simpson, error O(h⁴), h = 1/32 here: ~1e-6 during the transient), where the saved
    # states alone left a residual of 3e-2
    rng = np.random.default_rng(5)
    x = rng.standard_normal((12, 3))
    w = rng.uniform(0.5, 1.5, 12)
    p = mf.Particles(x, w, normalize=True)
    tr = mf.gradient_flow(p, 2.0, np.eye(3), t_final=3.0, save_every=0.25)
    assert np.allclose(tr.times, np.arange(13) * 0.25) and len(tr.states) == 13
    gain = tr.diagnostics["energy"][-1] - tr.diagnostics["energy"][0]
    assert gain > 1.0
    assert np.max(np.abs(tr.diagnostics["energy_identity_residual"])) < 1e-5 * gain


def test_flows_keep_the_users_fixed_step_and_their_last_state_on_failure(monkeypatch):
    rng = np.random.default_rng(1)
    p = mf.Particles(rng.standard_normal((12, 3)), normalize=True)
    rk4 = mf.gradient_flow(p, 1.0, t_final=2.0, save_every=0.5, step=0.1, method="rk4")
    assert len(rk4.steps["t"]) == 20                      # the identity's extra states lie on the step grid
    layers = mf.gradient_flow(p, 1.0, t_final=2.0, save_every=0.5, time="layers", step=0.1)
    assert np.allclose(layers.times, [0, 0.5, 1.0, 1.5, 2.0])
    # a run that fails between two saved times ends with the last state it reached, as simulate's do
    from meanfield.backends._stepper import ParticleStepper
    advance = ParticleStepper._advance_adaptive

    def fail_late(self, a, b):
        return mf.Status.NON_FINITE if a >= 0.7 else advance(self, a, b)

    monkeypatch.setattr(ParticleStepper, "_advance_adaptive", fail_late)
    with pytest.warns(mf.MeanfieldWarning):
        broken = mf.gradient_flow(p, 1.0, t_final=2.0, save_every=0.5)
    assert broken.times[-1] > 0.7 and broken.states[-1] is not None
    assert len(broken.diagnostics["energy"]) == len(broken.times)


def test_identity_parts_trade_the_identity_resolution_for_speed():
    p = mf.Particles.uniform(12, seed=3)
    D = np.diag([1.0, 0.6, 1.4])
    full = mf.gradient_flow(p, 2.0, D, t_final=0.5, save_every=0.25)
    saved = mf.gradient_flow(p, 2.0, D, t_final=0.5, save_every=0.25, identity_parts=0)
    assert np.array_equal(full.times, saved.times) and len(saved.steps["t"]) < len(full.steps["t"])
    assert np.max(np.abs(full.final.positions - saved.final.positions)) < 1e-9
    # the particle backend integrates the identity over its stages: the records change the cost, not the residual
    assert abs(full.diagnostics["energy_identity_residual"][-1]) < 1e-11
    assert abs(saved.diagnostics["energy_identity_residual"][-1]) < 1e-11
    with pytest.raises(TypeError, match="`identity_parts` must be an integer"):
        mf.gradient_flow(p, 2.0, D, t_final=0.5, identity_parts=1.5)


@pytest.mark.parametrize("c", [3.0, 5.0])
def test_stationarity_of_a_density_resolves_the_models_own_kernel(c):
    # the uniform density is stationary for any zonal kernel; Q = K = c·I at β = 5 is the kernel of β = 5c²
    # (the grid was sized for β = 5 and reported speeds of 8e-5 and 1.4e-2)
    report = mf.stationary(mf.Density.uniform(4), mf.Model(5.0, Q=c * np.eye(3), K=c * np.eye(3)))
    assert report.max_speed < 1e-13


@pytest.mark.parametrize("scheme, alpha", [("ngpt", 0.5), ("pre-ln", 1.0), ("peri-ln", 1.0), ("post-ln", 1.0)])
def test_stationarity_reports_the_models_velocity_with_its_speed_factor(scheme, alpha):
    # |v| = |P_x A|/s with the scheme's s at the tokens' radii (it was |P_x A|: 0.139 for 0.133 under nGPT, α = 0.5)
    rng = np.random.default_rng(4)
    p = mf.Particles.uniform(40, seed=1, radii=rng.uniform(0.5, 2.0, 40))
    model = mf.Model(2.0, scheme, **({"alpha": alpha} if scheme == "ngpt" else {}))
    report = mf.stationary(p, model, tol=1e-3)
    dtheta = mf.particle_velocity(model, p, backend="particles")[0]
    assert np.allclose(report.speeds, np.linalg.norm(dtheta, axis=1), rtol=1e-12, atol=0)


@pytest.mark.parametrize("scheme, kw", [("peri-ln", {}), ("ngpt", {"alpha": 0.5})])
def test_stationarity_where_the_speed_factor_overflows_is_that_of_softmax_attention(scheme, kw):
    """USA at β = 709.7: two tokens at ρ = 0.999 have ‖A‖ ≈ 1.23e308, so Peri-LN's r‖A‖ (r = 2) and nGPT's ‖A‖/α
    (α = 0.5) are inf; the speeds and the scale read 0 and the moving pair was reported stationary (max_speed 0).  A
    zonal density with radius 1e4 likewise.  Both schemes see only A/‖A‖: softmax attention's report is the answer."""
    c, s = np.sqrt(1.999 / 2), np.sqrt(0.001 / 2)
    pair = mf.Particles([[c, s, 0], [c, -s, 0]], radii=[2.0, 2.0] if scheme == "peri-ln" else None)
    measures = [pair]
    if scheme == "peri-ln":
        measures.append(mf.ZonalDensity.from_function(lambda t: 1 + 0.3 * t, 12, d=3, radius=lambda t: 1e4 + 0 * t,
                                                       normalize=True))
    for measure in measures:
        sa, usa = (mf.stationary(measure, mf.Model(709.7, scheme, attention=a, **kw))
                   for a in ("softmax", "unnormalized"))
        assert not usa.stationary and not sa.stationary
        np.testing.assert_allclose(usa.speeds, sa.speeds, rtol=1e-12)
        assert usa.relative_speed == pytest.approx(sa.relative_speed, rel=1e-12) and sa.max_speed > 4e-8


def _zonal_and_density(g, L=12):
    zonal = mf.ZonalDensity.from_function(g, L, d=3, normalize=True)
    dens = mf.Density.from_function(lambda x: g(x[..., 2]) / zonal_mass(g), L)
    return zonal, dens


def zonal_mass(g):
    t, w = np.polynomial.legendre.leggauss(40)
    return float(w @ g(t)) / 2


@pytest.mark.parametrize("how", ["gradient-flow", "post-ln-usa", "peri-ln", "ngpt"])
def test_stationary_of_a_zonal_density_matches_the_density_path(how):
    """S²: the zonal path (the zonal solver's attention on its Gauss–Jacobi nodes) against the Density path (atoms
    and the direct attention sum) at the same support points; the two share no code past the scheme table."""
    def g(t):
        return 1 + 0.5 * t + 0.3 * t ** 2

    zonal, dens = _zonal_and_density(g)
    arg = {"gradient-flow": 1.5, "post-ln-usa": mf.Model(1.5, attention="unnormalized"),
           "peri-ln": mf.Model(1.5, "peri-ln"), "ngpt": mf.Model(1.5, "ngpt", alpha=0.5)}[how]
    z = mf.stationary(zonal, arg, tol=1e-3)
    assert not z.stationary and z.points.shape[1] == 3 and len(z.speeds) > 10
    np.testing.assert_allclose(np.linalg.norm(z.points, axis=1), 1.0, rtol=1e-15)
    # the Density path's speeds at those points: its support is a grid, so ask at the zonal nodes directly
    from meanfield._energy._energy import first_variation_gradient
    from meanfield._energy._stationary import _radii_at
    if how == "gradient-flow":
        ref = np.linalg.norm(first_variation_gradient(dens, 1.5, np.eye(3), z.points), axis=1)
    else:
        from meanfield._attention import attention_field
        from meanfield._energy._energy import atoms
        y, a, _ = atoms(dens, arg.beta, np.eye(3))
        f = attention_field(arg, y, a, targets=z.points)
        ref = np.linalg.norm(f.tangential, axis=1) / np.abs(arg.scheme_def.speed(_radii_at(dens, z.points), f.norm, 0.0,
                                                                                 arg))
    np.testing.assert_allclose(z.speeds, ref, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("d", [4, 8, 64])
def test_the_uniform_zonal_density_is_stationary_in_any_dimension(d):
    for arg in (2.0, -1.0, mf.Model(2.0, d=d), mf.Model(2.0, "peri-ln", d=d)):
        D = None if not isinstance(arg, float) or arg > 0 else -1.0
        beta = abs(arg) if isinstance(arg, float) else arg
        assert mf.stationary(mf.ZonalDensity.uniform(6, d=d), beta, D, tol=1e-12).stationary
    tilted = mf.ZonalDensity(np.array([1.0, 0.4]), 1, d=d)
    rep = mf.stationary(tilted, mf.Model(2.0, d=d), tol=1e-6)
    assert not rep.stationary and rep.max_speed > 1e-3
    with pytest.raises(ValueError, match="`D` must be c·I for a ZonalDensity"):
        mf.stationary(tilted, 1.0, np.diag(np.r_[1.0, np.ones(d - 1) * 0.5]))


# ----------------------------------------------------------------------------------------------
# the O(N²) work over particles, checked before it starts

@pytest.fixture(scope="module")
def many():
    return mf.Particles.uniform(300_000, seed=0)


def _no_flow(monkeypatch):
    import meanfield._energy._flow as fl

    def started(*args, **kwargs):
        raise AssertionError("the O(N²) work started")
    monkeypatch.setattr(fl, "_energy_value", started)   # E at each recorded state
    monkeypatch.setattr(fl, "dissipation", started)


@pytest.mark.parametrize("run", ["find_stationary", "gradient_flow"])
def test_a_flow_of_too_many_particles_warns_with_its_cost_before_any_sum(run, many, monkeypatch):
    # 3·10⁵ particles: every recorded state costs O(N²) sums (5–13 min each here), and find_stationary went on
    # for days without a word
    _no_flow(monkeypatch)
    D = np.diag([1.0, 0.9, 0.8])
    name = "start" if run == "find_stationary" else "initial"
    with warnings.catch_warnings():
        warnings.simplefilter("error", mf.MeanfieldWarning)
        with pytest.raises(mf.MeanfieldWarning, match=rf"N=300000 particles of `{name}`: .* direct sums over "
                                                      r"300000×300000 = 9e\+10 pairs, expected ~[\d.]+ (h|days) .* N ≤ \d+"):
            if run == "find_stationary":
                mf.find_stationary(many, 1.0, D)
            else:
                mf.gradient_flow(many, 1.0, D, t_final=1.0)


def test_a_flow_whose_memory_would_not_fit_is_refused_naming_the_largest_n(many, monkeypatch):
    import meanfield._memory as memory
    _no_flow(monkeypatch)
    monkeypatch.setattr(memory, "available_bytes", lambda: 100 << 20)
    with pytest.raises(mf.InsufficientMemoryError, match=r"N=300000 particles of `start` \(d=3\) needs about 0.16 GiB "
                                                         r"but only 0.10 GiB .* `start` may hold at most about N=1\d{5} "):
        mf.find_stationary(many, 1.0, np.diag([1.0, 0.9, 0.8]))


def test_a_slow_flow_is_warned_about_once_not_at_each_of_its_sums(monkeypatch):
    import meanfield._energy._kernel as kernel
    monkeypatch.setattr(kernel, "_SLOW_SECONDS", 0.0)          # every sum counts as slow
    p = mf.Particles.uniform(6, 3, seed=5)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        mf.find_stationary(p, 1.0, np.diag([1.0, 0.9, 0.8]), tol=1e-14, t_max=0.5, check_every=0.25)
    assert [str(w.message).split(" over ")[0] for w in record] == [
        "find_stationary's flow to its first stationarity check (65 recorded states)"]


# ----------------------------------------------------------------------------------------------
# find_stationary(flow="softmax"): the SA velocity v/Z, the same zeros without the stiffness

def _ring_and_pole(k=6, polar=0.8):
    """k tokens on a ring at ``polar`` rad from e₃ and one at e₃: both flows keep the ring's C_k symmetry, so the
    ascent with D = I ends at the Dirac on the axis, at e₃."""
    phi = 2 * np.pi * np.arange(k) / k
    ring = np.c_[np.sin(polar) * np.cos(phi), np.sin(polar) * np.sin(phi), np.full(k, np.cos(polar))]
    return mf.Particles(np.vstack([ring, [0.0, 0.0, 1.0]]))


def test_softmax_flow_is_the_gradient_over_Z_and_its_dissipation_is_dE_dt():
    """u_i = ±v_i/Z_i, Z_i = Σ_j w_j e^{β⟨x_i,Dx_j⟩}; ∂E/∂x_i = w_i G_i gives
    dE/dt = Σ_i w_i ⟨v_i, u_i⟩ = Σ_i w_i |v_i|²/Z_i."""
    D = np.array([[1.0, 0.3, 0.0], [0.3, 0.5, -0.2], [0.0, -0.2, -0.4]])
    rng = np.random.default_rng(2)
    p = mf.Particles(rng.standard_normal((15, 3)), rng.uniform(0.5, 1.5, 15), normalize=True)
    beta, x, w = 1.7, p.positions, p.weights
    Z = np.exp(beta * x @ D @ x.T) @ w
    g = mf.first_variation_gradient(p, beta, D)
    for direction, sign in (("ascent", 1.0), ("descent", -1.0)):
        u = mf.attention_field(flow_model(beta, D, 3, direction, "softmax"), x, w).tangential
        assert u == pytest.approx(sign * g / Z[:, None], abs=1e-14)
    u = g / Z[:, None]
    P = dissipation(p, beta, D, flow="softmax")
    assert P == pytest.approx(w @ (np.einsum("ij,ij->i", g, g) / Z), rel=1e-13)
    assert P == pytest.approx(w @ (Z * np.einsum("ij,ij->i", u, u)), rel=1e-13)
    assert dissipation(p, beta, D) == pytest.approx(w @ np.einsum("ij,ij->i", g, g), rel=1e-13)   # the default

    def E_along(h):                                 # E at the positions moved by h along u, back on the sphere
        return mf.energy(mf.Particles(x + h * u, w, normalize=True), beta, D)

    h = 1e-4
    assert (E_along(h) - E_along(-h)) / (2 * h) == pytest.approx(P, rel=1e-7)
    # in units of e^{β max⟨x,Dy⟩} per point: finite where Z and |v|² overflow (β = 800: Z ~ e^{800})
    big = dissipation(mf.Particles([[0.0, 0.0, 1.0], [0.0, 0.6, 0.8]]), 800.0, None, flow="softmax")
    assert np.isfinite(big) and big > 0


def test_both_flows_reach_the_same_stationary_point_and_the_softmax_flow_is_much_cheaper():
    """β = 10: the gradient flow's explicit step is stability-capped at ~e^{−β}; the softmax flow's is not."""
    p, beta = _ring_and_pole(), 10.0
    runs = {flow: mf.find_stationary(p, beta, flow=flow, t_max=100.0) for flow in ("gradient", "softmax")}
    for flow, r in runs.items():
        assert r.converged, (flow, r.message)
        assert np.max(np.abs(r.state.positions - [0.0, 0.0, 1.0])) < 1e-8, flow
        assert r.energy == pytest.approx(np.exp(beta) / (2 * beta), rel=1e-13)          # the Dirac
        assert r.max_speed <= r.threshold and r.threshold == pytest.approx(1e-10 * np.exp(beta), rel=1e-6)
        assert mf.stationary(r.state, beta, tol=1e-10).stationary
        assert np.all(np.diff(r.trajectory.diagnostics["energy"]) >= -1e-12 * r.energy)   # an ascent either way
    steps = {flow: len(r.trajectory.steps["t"]) for flow, r in runs.items()}
    assert steps["softmax"] < steps["gradient"] / 4, steps                      # measured: 1118 against 7274
    # the energy identity with the softmax flow's own dissipation ∫|v|²/Z dμ: at the integrator's level
    soft = runs["softmax"].trajectory.diagnostics
    gain = soft["energy"][-1] - soft["energy"][0]
    # (over the Runge–Kutta stages, measured 2.8e-13 of the gain; Simpson over the records left 8e-9)
    assert gain > 900 and np.max(np.abs(soft["energy_identity_residual"])) < 1e-11 * gain
    # ... which the gradient flow's integrand ∫|v|²dμ would miss by orders of magnitude
    states = runs["softmax"].trajectory.states[:2]
    assert dissipation(states[1], beta, None) > 100 * dissipation(states[1], beta, None, flow="softmax")


def test_softmax_flow_finds_the_four_particle_rectangle_at_large_beta():
    """The descent from a square ends on the rectangle d1 tanh(βd1a²) = d2 tanh(βd2b²) (same symmetric end as the
    gradient flow's), here at β = 10."""
    beta, d1, d2 = 10.0, 1.0, 0.5
    sq = mf.Particles(np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]]) / np.sqrt(2))
    r = mf.find_stationary(sq, beta, np.diag([d1, d2]), direction="descent", flow="softmax")
    assert r.converged, r.message
    ref = optimize.brentq(lambda a: d1 * np.tanh(beta * d1 * a) - d2 * np.tanh(beta * d2 * (1 - a)), 0, 1,
                          xtol=1e-15)
    assert r.state.positions[:, 0] ** 2 == pytest.approx(np.full(4, ref), abs=1e-9)
    assert r.energy == pytest.approx(np.cosh(beta * d1 * ref) * np.cosh(beta * d2 * (1 - ref)) / (2 * beta), rel=1e-12)
    e = r.trajectory.diagnostics["energy"]
    assert np.all(np.diff(e) <= 1e-12 * e[0])                                     # a descent
    assert np.max(np.abs(r.trajectory.diagnostics["energy_identity_residual"])) < 1e-7 * (e[0] - e[-1])


def test_stationarity_is_relative_to_the_size_of_the_gradient_so_a_tight_cluster_at_large_beta_converges():
    """β = 30: |v| = |P_x G| with |G| ~ e^{30} ≈ 1e13, whose rounding alone is ~1e-3: the old absolute test
    max|v| ≤ tol = 1e-10 could never hold; the test of mf.stationary, max|v| ≤ tol·max(1, max|G|), does."""
    x = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    rng = np.random.default_rng(0)
    cluster = mf.Particles(x + 1e-3 * rng.standard_normal((4, 3)), normalize=True)
    for tol in (1e-10, 1e-14):
        r = mf.find_stationary(cluster, 30.0, flow="softmax", tol=tol, t_max=100.0)
        assert r.converged, r.message
        assert r.threshold == pytest.approx(tol * np.exp(30.0), rel=1e-3) and r.max_speed <= r.threshold
        assert np.finfo(float).eps * r.threshold / tol > 1e4 * tol          # the rounding floor ≫ an absolute tol
        assert mf.stationary(r.state, 30.0, tol=tol).stationary
        assert "threshold tol·max(1, |G|)" in r.message
    assert r.max_speed > 1e-10                                             # at the floor: beyond any absolute tol
    assert mf.particle_clusters(r.state, angle=1e-9).count == 1


def test_find_stationary_flow_is_validated_up_front(monkeypatch):
    import meanfield._energy._flow as fl
    monkeypatch.setattr(fl, "_flow_with_identity", lambda *a, **k: pytest.fail("the flow started"))
    p = mf.Particles.uniform(4, 2)
    for bad in ("sa", "Softmax", None):
        with pytest.raises(TypeError if bad is None else ValueError,
                           match=r"`flow` must be one of \['gradient', 'softmax'\]"):
            mf.find_stationary(p, 1.0, flow=bad)
    with pytest.raises(ValueError, match="`flow`"):
        dissipation(p, 1.0, flow="usa")


def test_the_default_flow_is_the_gradient_flow():
    p = mf.Particles.uniform(6, 3, seed=5)
    a = mf.find_stationary(p, 1.0, tol=1e-14, t_max=0.5, check_every=0.25)
    b = mf.find_stationary(p, 1.0, flow="gradient", tol=1e-14, t_max=0.5, check_every=0.25)
    assert np.array_equal(a.state.positions, b.state.positions)
    ref = mf.simulate(flow_model(1.0, None, 3), p, 0.5, t_eval=[0.0, 0.25, 0.5], backend="particles", rtol=1e-12,
                      atol=1e-14)
    assert np.max(np.abs(ref.final.positions - a.state.positions)) < 1e-10


def test_a_softmax_stationary_problem_runs_from_a_configuration_and_keeps_its_threshold_in_the_file(tmp_path):
    from meanfield._config import parse_config
    from meanfield._energy import solve_energy
    from meanfield.cli import _energy_summary

    square = [[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]]
    cfg = parse_config({"energy": {"task": "stationary", "beta": 10.0, "D": [1.0, 0.5], "positions": square,
                                   "direction": "descent", "flow": "softmax"}})
    r = solve_energy(cfg)
    rep = mf.stationary(r.solution.state, 10.0, np.diag([1.0, 0.5]), tol=1e-10)
    assert r.success and rep.stationary and r.solution.threshold == rep.threshold > 1e-10
    assert "(softmax flow)" in _energy_summary(r, "r.h5") and "threshold tol·max(1, |G|)" in r.message
    back = mf.load(mf.save(r, tmp_path / "r.h5"))
    assert back.solution.threshold == r.solution.threshold and back.parameters["flow"] == "softmax"
    assert back.solution.message == r.solution.message


def _ring(a=0.8):
    ang = np.arange(6) * np.pi / 3
    x = np.stack([np.sin(a) * np.cos(ang), np.sin(a) * np.sin(ang), np.cos(a) * np.ones(6)], 1)
    return mf.Particles(np.vstack([x, [0.0, 0.0, 1.0]]))


def test_energy_identity_over_the_stages_resolves_a_collapse_the_records_miss():
    """At β = 5 the ring collapses to a Dirac around t ≈ 0.03 in a spike of ∫|v|²dμ: Simpson over the 64 recorded
    states left a residual of 3.8 (0.35 of the gain 10.8); the Runge–Kutta quadrature over the stages leaves the
    integration error (measured 1.7e-9)."""
    tr = mf.gradient_flow(_ring(), 5.0, t_final=2.0)
    E, resid = tr.diagnostics["energy"], tr.diagnostics["energy_identity_residual"]
    gain = E[-1] - E[0]
    assert gain > 10
    assert np.max(np.abs(resid)) <= 1e-7 * gain


def test_energy_identity_over_the_stages_has_the_order_of_rk4():
    """With fixed RK4 steps the residual is the method's global error, O(h⁴): halving h divides it by ~16."""
    res = []
    for h in (0.02, 0.01):
        tr = mf.gradient_flow(_ring(1.0), 2.0, t_final=0.8, method="rk4", step=h)
        res.append(np.max(np.abs(tr.diagnostics["energy_identity_residual"])))
    assert res[1] > 0 and 10 < res[0] / res[1] < 24, res


def test_softmax_flow_identity_over_the_stages_has_the_order_of_rk4():
    """The softmax flow's dissipation Σ w Z |u|² takes Z from each stage's own attention sums: with fixed RK4 steps
    the residual is O(h⁴) (measured ratio 16.0 on halving h; Simpson over the records gave 0.7: no order)."""
    res = []
    for h in (0.02, 0.01):
        r = mf.find_stationary(_ring(1.0), 2.0, flow="softmax", t_max=0.8, check_every=0.8, method="rk4", step=h)
        res.append(np.max(np.abs(r.trajectory.diagnostics["energy_identity_residual"])))
    assert res[1] > 0 and 10 < res[0] / res[1] < 24, res


def test_softmax_flow_on_particles_sh_falls_back_to_simpson_over_the_records():
    """particles-sh's fast path computes no Z, so the stage integrand is NaN and the identity is integrated by
    Simpson's rule over the recorded states: finite, at the level of their spacing (measured 2.6e-8 of a gain of
    10.8 by t = 20)."""
    r = mf.find_stationary(_ring_and_pole(), 5.0, flow="softmax", t_max=2.0, backend="particles-sh")
    d = r.trajectory.diagnostics
    gain = d["energy"][-1] - d["energy"][0]
    assert gain > 1 and np.all(np.isfinite(d["energy_identity_residual"]))
    assert 0 < np.max(np.abs(d["energy_identity_residual"])) < 1e-6 * gain


def _stepper_with_integrand(state, beta, **options):
    from meanfield._energy._flow import _stage_dissipation
    from meanfield.backends._particles import ParticlesBackend

    st = ParticlesBackend(flow_model(beta, None, 3, flow="softmax"), state, **options)
    st.step_integrand = _stage_dissipation(st.weights, "softmax")
    return st


def test_a_resumed_adaptive_segment_integrates_the_same_stage_dissipation():
    """A resume point's carried first stage has no Z of its own: the integrand recomputes Z at the state, and the
    integral over the rest of the run is the uninterrupted run's to rounding (the same steps, rejected ones
    included)."""
    whole = _stepper_with_integrand(mf.Particles.uniform(12, 3, seed=1), 20.0, rtol=1e-8, atol=1e-10)
    resume = []

    def checkpoint(t, h):         # what a checkpoint keeps after the first step (inside the segment [0, 1])
        if not resume:
            resume.append((t, whole.state(), whole.resume_stage(), whole.resume_options(), whole.integral))
    whole.on_step = checkpoint
    whole.advance(1.0)
    t, at, stage, h, before = resume[0]
    assert stage is not None
    assert any(whole.step_log["rejected"][1:]), "no rejected step: the memo of a rejected step's k1 is untested"
    rest = _stepper_with_integrand(at, 20.0, rtol=1e-8, atol=1e-10, **h)
    rest.t = t
    rest.carry_stage(t, stage)
    rest.advance(1.0)
    assert rest.step_log["t"] == pytest.approx(whole.step_log["t"][1:], rel=1e-12)
    assert rest.integral == pytest.approx(whole.integral - before, rel=1e-12)
    assert np.isfinite(rest.integral) and rest.integral > 0


def test_energy_identity_of_layers_falls_back_to_simpson_over_the_records():
    tr = mf.gradient_flow(_ring(1.0), 2.0, t_final=0.5, time="layers", step=0.01, identity_parts=0)
    resid = tr.diagnostics["energy_identity_residual"]
    assert np.all(np.isfinite(resid)) and resid[0] == 0


def test_energy_identity_of_layers_measures_the_maps_first_order_departure_from_the_flow():
    """A layer map changes E by h∫|v|²dμ + O(h²) per layer: the residual is O(h) whatever the records (measured
    0.044 and 0.022 of the gain at h = 0.01 and 0.005, the same with a record at every layer)."""
    rel = {}
    for h, parts in ((0.01, 64), (0.005, 64), (0.005, 400)):
        tr = mf.gradient_flow(_ring(), 2.0, t_final=2.0, time="layers", step=h, identity_parts=parts)
        E = tr.diagnostics["energy"]
        rel[h, parts] = np.max(np.abs(tr.diagnostics["energy_identity_residual"])) / (E[-1] - E[0])
    assert 1.8 < rel[0.01, 64] / rel[0.005, 64] < 2.2, rel
    assert rel[0.005, 400] == pytest.approx(rel[0.005, 64], rel=0.05)


@pytest.mark.parametrize("fixed", [dict(method="rk4", step=0.01), dict(step=0.01), dict(time="layers", step=0.01)])
def test_find_stationary_takes_fixed_steps_without_its_default_tolerances(fixed):
    """find_stationary's default rtol/atol are for the adaptive pairs: with rk4 or layers they were added anyway, and
    the backend refused them as ignored ("option(s) ['rtol', 'atol'] would be ignored")."""
    res = mf.find_stationary(_ring(), 2.0, tol=1e-8, t_max=20.0, **fixed)
    assert res.converged
    assert np.allclose(res.state.positions, [0.0, 0.0, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="ignored"):       # a user's own tolerance is still refused
        mf.find_stationary(_ring(), 2.0, t_max=1.0, rtol=1e-6, **fixed)


def test_a_blown_up_stage_of_the_identity_quadrature_raises_no_numpy_warning():
    """At β = 700 the stages reach |v| ~ 1e288: their |v|² overflowed in the stage quadrature of the energy identity,
    and h Σ b_i g(k_i) added +inf and −inf, which leaked 'RuntimeWarning: invalid value encountered in scalar add'
    beside the run's own MeanfieldWarning."""
    p = mf.Particles(np.random.default_rng(5).normal(size=(6, 3)), normalize=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = mf.gradient_flow(p, 700.0, t_final=0.5)
    assert not tr.success
    assert [type(w.message) for w in caught] == [mf.MeanfieldWarning], [str(w.message) for w in caught]


def test_gradient_flow_refuses_a_flow_argument_by_name():
    """flow= belongs to find_stationary: gradient_flow passed it to the backend, which called it an unknown option
    of backend='particles'."""
    with pytest.raises(TypeError, match="find_stationary"):
        mf.gradient_flow(mf.Particles.uniform(5, seed=0), 1.0, t_final=1.0, flow="softmax")


def test_the_stage_integrand_of_a_gradient_flow_does_not_reach_a_plain_simulate(monkeypatch):
    """gradient_flow sets ParticleStepper.step_integrand on its own stepper (through _simulate's setup hook); a
    simulate run afterwards, in the same process, has none and accumulates nothing."""
    from meanfield.backends._stepper import ParticleStepper
    p = mf.Particles.uniform(6, seed=2)
    flow = mf.gradient_flow(p, 1.0, t_final=0.5)
    seen = []
    log = ParticleStepper._log_step

    def spy(self, t, h):
        seen.append((self.step_integrand, self.integral))
        return log(self, t, h)

    monkeypatch.setattr(ParticleStepper, "_log_step", spy)
    plain = mf.simulate(flow_model(1.0, None, 3), p, 0.5, backend="particles")
    assert seen and all(g is None and s == 0.0 for g, s in seen)
    assert ParticleStepper.step_integrand is None
    assert np.allclose(plain.final.positions, flow.final.positions, atol=1e-8)   # (its steps stop at 64 records)


def test_a_flow_that_stops_early_says_so_in_the_result_message():
    """At β = 300 the gradient flow cannot take a first step (STEP_TOO_SMALL at t = 0): the result's message said
    only "Not stationary by t = 0", as if the flow had run."""
    with pytest.warns(mf.MeanfieldWarning, match="simulate stopped"):
        r = mf.find_stationary(mf.Particles.uniform(6, 3, seed=1), 300.0, t_max=5)
    assert r.trajectory.status is mf.Status.STEP_TOO_SMALL
    assert "The flow stopped early (STEP_TOO_SMALL): Step" in r.message
    ok = mf.find_stationary(mf.Particles.uniform(6, 3, seed=1), 1.0, t_max=50)
    assert ok.converged and "stopped early" not in ok.message


def test_a_flow_whose_energy_exceeds_float64_warns_once():
    """β = 800, the softmax flow (no USA overflow): E = e^{800}/1600 is beyond float64 at every recorded state, and
    energy() warned at each of them (65 identical warnings from find_stationary), with numpy's "invalid value"
    RuntimeWarnings from the identity inf − inf; now one warning, E inf and the residual NaN, the states sound."""
    start = mf.Particles.uniform(4, 3, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = mf.find_stationary(start, 800.0, flow="softmax", t_max=10.0, check_every=5.0)
    assert [type(w.message) for w in caught] == [mf.MeanfieldWarning], [str(w.message) for w in caught]
    assert "exceeds the float64 range" in str(caught[0].message)
    assert r.energy == np.inf and np.all(np.isnan(r.trajectory.diagnostics["energy_identity_residual"][1:]))
    assert np.all(np.isfinite(r.state.positions))


def test_a_stationarity_report_beyond_float64_states_the_ratio_it_judged():
    """Beyond float64 max |v| and |G| both read inf, and the message said "max |v| = inf … threshold = inf" for a
    verdict that was made on their ratio in scaled units; it now gives that ratio (and `relative_speed` holds it)."""
    x = np.array([[0.0, 0.0, 1.0], [0.0, 0.01, 1.0]])
    near = mf.Particles(x / np.linalg.norm(x, axis=1)[:, None])          # two tokens 0.01 rad apart
    rep = mf.stationary(near, 800.0)
    assert not rep.stationary and rep.max_speed == np.inf and rep.scale == np.inf
    assert 1e-3 < rep.relative_speed < 1e-2                               # |v|/|G| ≈ sin(0.01)/2
    assert f"max |v|/max(1, |G|) = {rep.relative_speed:.3g} against tol = 1e-08" in rep.message
    small = mf.stationary(near, 1.0)                                       # within float64: as before, ratio kept
    assert small.relative_speed == pytest.approx(small.max_speed / small.scale, rel=1e-15)
    assert "max |v|/max(1, |G|)" not in small.message


def test_a_stationary_result_beyond_float64_states_the_ratio_it_judged_and_stores_it(tmp_path):
    """find_stationary's message read "max|v| = inf on the support (threshold tol·max(1, |G|) = inf)" at β = 800:
    the verdict was made on the ratio in scaled units, which the result now carries and the message quotes."""
    x = np.array([[0.0, 0.0, 1.0], [0.0, 0.01, 1.0]])
    near = mf.Particles(x / np.linalg.norm(x, axis=1)[:, None])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)            # the energy beyond float64
        r = mf.find_stationary(near, 800.0, flow="softmax", t_max=1.0, check_every=0.5)
    assert not r.converged and r.max_speed == np.inf and r.threshold == np.inf
    assert r.relative_speed == mf.stationary(r.state, 800.0).relative_speed
    assert 1e-4 < r.relative_speed < 1e-2                                 # |v|/|G| ≈ sin(angle)/2, the pair closing
    assert f"max|v|/max(1, |G|) = {r.relative_speed:.3g} against tol" in r.message
    back = mf.load(mf.save(mf.EnergyResult("stationary", 800.0, np.eye(3), 3, r, {}), tmp_path / "s.h5")).solution
    assert back.relative_speed == r.relative_speed and back.message == r.message
    ok = mf.find_stationary(mf.Particles.uniform(6, 3, seed=1), 1.0, t_max=50)     # within float64: as before
    assert ok.relative_speed == mf.stationary(ok.state, 1.0).relative_speed <= 1e-10     # the default tol
    assert "judged on their ratio" not in ok.message


@pytest.mark.parametrize("make", [
    lambda: mf.Density.uniform(6),
    lambda: mf.Density.uniform(6, d=2),
    lambda: mf.FEDensity(mf.FESpace(mf.SphereMesh.icosahedral(1)), np.ones(42)),
    lambda: mf.ZonalDensity.uniform(6, d=5),
])
@pytest.mark.parametrize("support_tol", [1.0, 2.0])
def test_stationary_refuses_a_support_tol_that_leaves_no_support(make, support_tol):
    """support_tol ≥ 1 kept no point of a density (ρ > support_tol·max ρ nowhere), and "max |v| = 0 on the
    support (0 support points)" was reported stationary (so was a uniform density under D = diag(0.5, 1, 1.5),
    which moves at 0.37)."""
    with pytest.raises(ValueError, match=r"`support_tol` must be in \(0, 1\)"):
        mf.stationary(make(), 1.0, support_tol=support_tol)


@pytest.mark.parametrize("make", [
    lambda: mf.Density.uniform(6).with_coeffs(0 * mf.Density.uniform(6).coeffs),
    lambda: mf.Density.uniform(6).with_coeffs(-mf.Density.uniform(6).coeffs),
    lambda: mf.FEDensity(mf.FESpace(mf.SphereMesh.icosahedral(1)), np.zeros(42)),
    lambda: mf.ZonalDensity(np.zeros(7), 6, d=5),
])
def test_stationary_refuses_a_density_without_positive_values(make):
    """A zero or negative density has no support: the test held vacuously and it was reported stationary."""
    with pytest.raises(ValueError, match="`measure` has no positive values"):
        mf.stationary(make(), 1.0)


@pytest.mark.parametrize("c", [1.0, 2.5, -1.0])
@pytest.mark.parametrize("flow", ["gradient", "softmax"])
def test_dissipation_of_a_zonal_density_is_that_of_the_same_density_on_s2(c, flow):
    """dissipation() refused a ZonalDensity ("must be a meanfield Particles, Density or FEDensity"); on S² the same
    axisymmetric density as a band-limited Density gives it independently (grid quadrature of the atoms); both are
    exact to rounding (degree ≤ 3L integrands on Gauss rules; measured 5e-15 relative)."""
    zonal = mf.ZonalDensity.from_function(lambda s: 1 + 0.5 * s + 0.3 * s ** 3, 8, d=3, normalize=True)
    same = mf.Density.from_function(zonal.evaluate, 8)
    assert dissipation(zonal, 1.3, c, flow) == pytest.approx(dissipation(same, 1.3, c, flow), rel=1e-13)


def test_gradient_flow_of_a_zonal_density_in_high_dimension():
    """gradient_flow(ZonalDensity, …, backend="spectral") raised TypeError from its first dissipation although the
    spectral backend runs the flow (D = c·I, c > 0) on any S^{d-1}.  Its dissipation at the start is the backend's
    own diagnostic ∫ρ|v|²dσ (to rounding; later states differ by the two runs' steps, 5e-10), and the energy
    identity holds to the backend's tolerance (measured 1.4e-12)."""
    rho = mf.ZonalDensity.from_function(lambda s: 1 + 0.5 * s, 12, d=5, normalize=True)
    flow = mf.gradient_flow(rho, 1.0, None, t_final=0.5, save_every=0.25, backend="spectral")
    assert flow.success and np.all(np.diff(flow.diagnostics["energy"]) > 0)
    backend = mf.simulate(flow_model(1.0, None, 5), rho, 0.5, save_every=0.25, backend="spectral")
    assert flow.diagnostics["dissipation"][0] == pytest.approx(backend.diagnostics["dissipation"][0], rel=1e-13)
    assert np.max(np.abs(flow.diagnostics["energy_identity_residual"])) < 1e-10


def test_an_energy_configuration_runs_the_stiff_stationary_flow_by_bdf(tmp_path):
    """The [energy] table of task = "stationary" had no `method`, `rtol`, `atol` or `step`: the implicit method that
    find_stationary's docstring and the tutorial give for clusters at β = 10 (20 tokens merging at t = 1750, 4067 BDF
    steps, where the explicit flow does not finish) could not be asked for from a configuration file."""
    from meanfield import cli

    config = tmp_path / "bdf.toml"
    config.write_text('[energy]\ntask = "stationary"\nbeta = 10.0\nn = 20\nseed = 0\nt_max = 5000.0\n'
                      'check_every = 250.0\nmethod = "bdf"\n', encoding="utf-8")
    assert cli.main(["run", str(config), "--output", str(tmp_path / "bdf.h5"), "--quiet"]) == 0
    result = mf.load(tmp_path / "bdf.h5")
    assert result.success and result.solution.time == 1750.0 and result.parameters["method"] == "bdf"
    assert result.value == pytest.approx(np.exp(10.0) / 20, rel=1e-12)            # the Dirac


@pytest.mark.parametrize("line, match", [('method = "bdff"', "`method` must be one of"),
                                         ("rtol = 0.0", r"`rtol` must be in \[1e-14, 1\)"),
                                         ('method = "rk4"', "give `step` > 0")])
def test_an_energy_configuration_checks_the_flow_options_on_reading(line, match):
    import tomllib

    from meanfield._config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=match):
        parse_config(tomllib.loads(f'[energy]\ntask = "stationary"\nbeta = 1.0\nn = 3\n{line}\n'))


def test_every_energy_solver_result_has_its_energy_as_value():
    """StationaryResult named its energy `energy` where MinimizingDensity, FEDensity, MaximizingParticles and
    EnergyResult name it `value`: `find_stationary(...).value` raised AttributeError."""
    r = mf.find_stationary(mf.Particles.uniform(3, d=2, seed=0), 1.0, t_max=2.0)
    assert r.value == r.energy == mf.energy(r.state, 1.0)


def test_a_stationary_result_built_without_its_start_takes_the_flows_first_state(tmp_path, capsys):
    """EnergyResult("stationary", …) without `start` (optional in its signature) was saved without it, and
    `meanfield info` on the file raised AttributeError: 'NoneType' object has no attribute 'n'."""
    from meanfield import cli

    start = mf.Particles.uniform(5, seed=1)
    r = mf.find_stationary(start, 1.0, [1.0, 0.5, 0.2], t_max=2.0)
    result = mf.EnergyResult("stationary", 1.0, [1.0, 0.5, 0.2], 3, r)
    np.testing.assert_array_equal(result.start.positions, start.positions)
    path = mf.save(result, tmp_path / "s.h5")
    assert cli.main(["info", str(path)]) == 0
    assert "from 5 particles on S^2" in capsys.readouterr().out


def test_the_dissipation_of_a_zonal_density_names_d_when_it_is_not_isotropic():
    rho = mf.ZonalDensity.uniform(4, d=5)
    with pytest.raises(ValueError, match="`D` must be c·I for the dissipation of a ZonalDensity on S\\^4"):
        dissipation(rho, 1.0, [1.0, 2.0, 3.0, 4.0, 5.0])


@pytest.mark.parametrize("beta, c", [(1.0, 1.0), (5.0, 1.0), (2.0, 3.0), (20.0, 1.0)])
def test_the_dissipation_of_many_particles_on_s2_is_the_spectral_velocitys(beta, c):
    """Beyond 4000 particles on S² with D = c·I (c > 0) the dissipation Σ w|v|² takes v from the truncated Funk–Hecke
    kernel (O(N)), as the energy does: its pair sums made gradient_flow(..., backend="particles-sh") O(N²) per
    recorded state (8000 tokens, β = 2, t ≤ 0.5: 60.8 s, now 1.9 s, the same diagnostics).  Against the exact
    gradient the error is within the spectral velocity's bound |δv| ≤ c e^{βc} ε_M (sh_error_bounds):
    Σ w(|v + δv|² − |v|²) ≤ 2 max|v| δ + δ²; measured 1e-14 to 4e-14 relative."""
    from meanfield._attention import sh_bandlimit, sh_error_bounds, transform_epsilon

    p = mf.Particles.uniform(5000, seed=2)
    got = dissipation(p, beta, c)
    g = mf.first_variation_gradient(p, beta, c)
    exact = float(p.weights @ np.einsum("ij,ij->i", g, g))
    lmax = sh_bandlimit(flow_model(beta, c, 3), 1e-13)
    delta = c * np.exp(beta * c) * sh_error_bounds(beta * c, lmax, transform_epsilon(None, 1e-13))[1]
    bound = 2 * np.max(np.linalg.norm(g, axis=1)) * delta + delta ** 2
    assert abs(got - exact) <= bound
    assert abs(got - exact) < 1e-12 * exact


def test_a_particles_sh_gradient_flow_of_many_tokens_is_not_priced_as_pair_sums(monkeypatch):
    """The dissipation of 5000 tokens on S² (D = I) takes no pair sum now (the exact gradient is not called), and the
    flow's cost check no longer prices 20 000 tokens' recorded states as O(N²) dissipations: it warned that
    gradient_flow(..., backend="particles-sh") would take more than a minute, which it then did (65 states)."""
    import meanfield._energy._flow as flow_module

    def refuse(*args, **kwargs):
        raise AssertionError("the O(N²) gradient was evaluated")

    monkeypatch.setattr(flow_module, "first_variation_gradient", refuse)
    assert dissipation(mf.Particles.uniform(5000, seed=0), 2.0) > 0
    tokens = mf.Particles.uniform(20_000, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flow_module._check_flow_work("initial", tokens, np.eye(3), "particles-sh", {}, 65, "65 states", 2.0)


@pytest.mark.parametrize("beta, c", [(1.0, 1.0), (20.0, 1.0), (2.0, 3.0)])
def test_the_stationarity_test_of_many_particles_on_s2_uses_the_spectral_velocity(beta, c, monkeypatch):
    """stationary() of particles on S² beyond 4000 (D = c·I, c > 0) evaluated v and G by O(N²) pair sums at every
    check of find_stationary (5000 tokens: 0.3 s a test, now 0.01 s).  The spectral velocity is used where its bound
    δ = c e^{βc} ε_M is below 1e-2 of the threshold: the same verdict, max |v| and max |G| to ~1e-13 relative
    (within δ); a `tol` the bound does not reach (1e-15) falls back to the pair sums."""
    import meanfield._energy._stationary as st
    from meanfield._attention import sh_bandlimit, sh_error_bounds, transform_epsilon

    p = mf.Particles.uniform(5000, seed=3)
    with monkeypatch.context() as m:            # the reference, by pair sums
        m.setattr(st, "_spectral_report", lambda *args: None)
        pairs = mf.stationary(p, beta, c)
    calls = []
    real = st._scaled_kernel_sums
    monkeypatch.setattr(st, "_scaled_kernel_sums", lambda *a, **k: calls.append(1) or real(*a, **k))
    fast = mf.stationary(p, beta, c)
    assert not calls                              # no pair sum
    delta = c * np.exp(beta * c) * sh_error_bounds(beta * c, sh_bandlimit(flow_model(beta, c, 3), 1e-13),
                                                   transform_epsilon(None, 1e-13))[1]
    assert fast.stationary == pairs.stationary
    assert abs(fast.max_speed - pairs.max_speed) <= delta and abs(fast.scale - pairs.scale) <= delta
    x = np.zeros((6000, 3))
    x[:3000, 2], x[3000:, 2] = 1.0, -1.0
    exact = mf.stationary(mf.Particles(x), beta, c, tol=1e-15)       # two antipodal clusters: v = 0 exactly
    assert calls and exact.max_speed == 0.0 and exact.stationary


def _softmax_dissipation_bound(p, beta, c):
    """(the pair-sum softmax dissipation, the bound on the spectral one's error).  With |δv| ≤ δ = c e^{βc} ε_M and
    |δZ| ≤ δ_Z = e^{βc} ε_Z (sh_error_bounds, unit mass) each term |v + δv|²/(Z + δZ) − |v|²/Z is within
    (2|v|δ + δ²)/(Z − δ_Z) + |v|² δ_Z/(Z (Z − δ_Z)), summed over the atoms of positive weight."""
    from meanfield._attention import sh_bandlimit, sh_error_bounds, transform_epsilon
    from meanfield._energy._energy import first_variation

    y, a, _ = atoms(p, beta, c * np.eye(3))
    pairs = _softmax_dissipation(p, beta, c * np.eye(3), y, a)
    keep = p.weights > 0
    v = np.linalg.norm(mf.first_variation_gradient(p, beta, c, p.positions[keep]), axis=1)
    z = beta * first_variation(p, beta, c, p.positions[keep])          # δE/δμ = Z/β for a symmetric D
    lmax = sh_bandlimit(flow_model(beta, c, 3, flow="softmax"), 1e-13)
    eps_z, eps_m = sh_error_bounds(beta * c, lmax, transform_epsilon(None, 1e-13))
    delta, delta_z = c * np.exp(beta * c) * eps_m, np.exp(beta * c) * eps_z
    terms = (2 * v * delta + delta ** 2) / (z - delta_z) + v ** 2 * delta_z / (z * (z - delta_z))
    return pairs, float(p.weights[keep] @ terms)


@pytest.mark.parametrize("beta", [1.0, 5.0, 20.0])
@pytest.mark.parametrize("c", [1.0, 2.5])
def test_the_softmax_dissipation_of_many_particles_on_s2_is_the_spectral_velocitys(beta, c):
    """The softmax flow's dissipation Σ w Z |u|² = Σ w |v|²/Z of more than 4000 particles on S² (D = c·I, c > 0) took
    O(N²) pair sums at every recorded state of find_stationary(..., flow="softmax"); it now takes u = v/Z and log Z
    from the SA model's spectral attention (O(N)), within the spectral bound of the pair sum's value."""
    p = mf.Particles.uniform(4001, seed=4)
    got = dissipation(p, beta, c, flow="softmax")
    pairs, bound = _softmax_dissipation_bound(p, beta, c)
    assert abs(got - pairs) <= bound
    assert abs(got - pairs) < 1e-12 * pairs          # measured 4e-15 to 5e-14 relative; the bound 1e-9 to 3e-8


def test_the_spectral_softmax_dissipation_skips_weightless_particles():
    """A particle of weight 0 opposite a cluster has Z = e^{-βc} of the scale, below the truncation error: its
    spectral Z was ≤ 0 at β = 100 (log Z NaN, 0·inf) and the dissipation NaN; the pair sum's value is
    4.76e40.  The atoms of positive weight, where Z ≥ w e^{βc}, give it within the bound."""
    rng = np.random.default_rng(0)
    x = np.array([0.0, 0.0, 1.0]) + 0.05 * rng.standard_normal((4001, 3))
    x[-1] = [0.0, 0.0, -1.0]
    w = np.full(4001, 1 / 4000)
    w[-1] = 0.0
    p = mf.Particles(x, w, normalize=True)
    got = dissipation(p, 100.0, 1.0, flow="softmax")
    pairs, bound = _softmax_dissipation_bound(p, 100.0, 1.0)
    assert abs(got - pairs) <= bound


def test_the_softmax_dissipation_of_many_tokens_takes_no_pair_sum(monkeypatch):
    """The softmax dissipation of 5000 tokens on S² (D = I) calls neither the pair-sum path nor its kernel sums, and
    find_stationary(..., flow="softmax", backend="particles-sh") of 20 000 tokens is no longer priced as O(N²)
    dissipations at its 65 recorded states (it warned that they would take more than a minute)."""
    import meanfield._energy._flow as flow_module

    def refuse(*args, **kwargs):
        raise AssertionError("an O(N²) pair sum was evaluated")

    monkeypatch.setattr(flow_module, "_softmax_dissipation", refuse)
    monkeypatch.setattr(flow_module, "_scaled_kernel_sums", refuse)
    assert dissipation(mf.Particles.uniform(5000, seed=0), 2.0, flow="softmax") > 0
    tokens = mf.Particles.uniform(20_000, seed=0)
    model = flow_model(2.0, None, 3, flow="softmax")
    monkeypatch.setattr(flow_module, "_run_flow", lambda *args: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flow_module._flow_with_identity(model, tokens, 1.0, np.array([0.0, 1.0]), "ascent", "particles-sh", {},
                                        stop=lambda state: False, flow="softmax", min_parts=32, first_parts=64)
