"""The spectral backend against independent answers: linear theory, symmetry, a second solver, exact laws."""
import re
import warnings

import numpy as np
import pytest
from scipy import integrate

import meanfield as mf
from meanfield.backends._bases import CircleBasis, S2Basis, ZonalBasis
from meanfield.backends._spectral import SpectralAttention, SpectralBackend
from meanfield.sphere import SphereGrid, lm_index, rotate, rotation_matrix


def _perturbed(L, d, ell, eps):
    if d == 3:
        c = mf.Density.uniform(L).coeffs.copy()
        c[lm_index(L, ell, 0)] = eps
        return mf.Density(c, L), lambda s: s.coeffs[lm_index(L, ell, 0)].real
    c = np.zeros(L + 1, complex)
    c[0], c[ell] = 1.0, eps / 2
    return mf.Density(c, L, d=2), lambda s: 2 * s.coeffs[ell].real


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("attention", ["softmax", "unnormalized"])
@pytest.mark.parametrize("beta", [1.0, 5.0])
def test_linear_growth_matches_growth_rate(d, attention, beta):
    """uniform + 1e-7·Y_ℓ grows like e^{γ_ℓ t}; nonlinear corrections are O(ε) = 1e-7 relative."""
    for ell in (1, 2, 3, 4):
        rate = mf.growth_rate(beta, ell, d, attention)
        dens, amp = _perturbed(12, d, ell, 1e-7)
        t_final = 1.0 / rate   # one e-fold: the perturbation stays linear
        tr = mf.simulate(mf.Model(beta, attention=attention, d=d), dens, t_final, rtol=1e-10, atol=1e-20,
                         error_norm="elementwise")
        fitted = np.log(amp(tr.final) / 1e-7) / t_final
        assert abs(fitted / rate - 1) < 1e-6, (ell, fitted, rate)


def _smooth(L):
    return mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 2] + 0.3 * x[..., 0] * x[..., 1], L)


def test_mass_exact_and_stop_on_resolution_loss():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(5.0), _smooth(32), 10.0, save_every=1.0)
    assert tr.status is mf.Status.RESOLUTION_LOST and not tr.success
    assert "tail fraction" in tr.message
    assert np.max(np.abs(tr.diagnostics["mass_error"])) < 1e-13
    assert np.max(np.abs(tr.steps["mass_error"])) < 1e-13
    # the last kept state is resolved: its monitors are within the thresholds
    assert tr.diagnostics["tail_fraction"][-1] <= 1e-4 and tr.diagnostics["min_rho"][-1] >= -1e-6
    assert tr.times[-1] > 3.0   # clusters formed before the loss


def test_refine_policy_raises_lmax_and_keeps_mass():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(5.0), _smooth(16), 5.0, on_resolution_loss="refine", lmax_max=64)
    assert tr.success, tr.message
    assert tr.final.lmax > 16 and tr.steps["lmax"].max() == tr.final.lmax
    assert np.max(np.abs(tr.steps["mass_error"])) < 1e-13
    assert np.all(tr.steps["tail"] <= 1e-4)


def test_refine_redoes_a_step_whose_tail_passed_tail_tol():
    """A step that jumps from below tail_warn to beyond tail_tol was kept and zero-padded (a state with a tail
    2.5e-6 > tail_tol = 2e-6 went on at the new band limit); it is redone from the resolved state instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(5.0), _smooth(16), 5.0, on_resolution_loss="refine", lmax_max=64, method="rk4",
                         step=0.1, tail_warn=1e-6, tail_tol=2e-6)
    assert tr.success, tr.message
    assert tr.final.lmax > 16
    assert np.all(tr.steps["tail"] <= 2e-6), tr.steps["tail"].max()


def test_filter_is_recorded_and_warned():
    with pytest.warns(mf.MeanfieldWarning, match="filter"):
        tr = mf.simulate(mf.Model(2.0), _smooth(16), 0.2, filter=(36.0, 8))
    assert tr.diagnostics["filtered_steps"][-1] > 0 and tr.steps["filtered"].all()


def test_rotation_equivariance():
    L = 24
    d0 = _smooth(L)
    R = rotation_matrix(0.4, 1.0, 2.0)
    model = mf.Model(5.0)
    a = mf.simulate(model, d0, 1.0, rtol=1e-12)
    b = mf.simulate(model, mf.Density(rotate(d0.coeffs, L, R), L), 1.0, rtol=1e-12)
    assert np.max(np.abs(rotate(a.final.coeffs, L, R) - b.final.coeffs)) < 1e-10


def test_exponential_convergence_in_lmax():
    """While resolved, the error against a finer solution drops geometrically with L."""
    model = mf.Model(3.0)
    f = lambda x: np.exp(x[..., 2] + 0.5 * x[..., 0])  # noqa: E731  (entire: coefficients decay super-geometrically)
    ref = mf.simulate(model, mf.Density.from_function(f, 40, normalize=True), 0.3, rtol=1e-13).final
    errs = []
    for L in (6, 8, 10, 12):
        # coarse L on purpose: the monitor threshold is relaxed, the error is measured directly
        tr = mf.simulate(model, mf.Density.from_function(f, L, normalize=True), 0.3, rtol=1e-13, tail_tol=1e-2)
        assert tr.success, tr.message
        errs.append(np.linalg.norm(tr.final.resized(40).coeffs - ref.coeffs))
    errs = np.array(errs)
    assert np.all(np.diff(np.log(errs)) < -4.0), errs        # each +2 in L gains more than e⁴
    assert errs[-1] < 1e-9


def test_zonal_solver_matches_s2_solver():
    L = 20
    g = lambda t: np.exp(1.5 * t)  # noqa: E731
    s2 = mf.Density.from_function(lambda x: g(x[..., 2]), L, normalize=True)
    zon = mf.ZonalDensity.from_function(g, L, d=3)
    zon = zon.with_coeffs(zon.coeffs / zon.mass())
    model = mf.Model(4.0)
    a = mf.simulate(model, s2, 1.0, rtol=1e-13).final
    b = mf.simulate(model, zon, 1.0, rtol=1e-13).final
    t = np.linspace(-1, 1, 41)
    pts = np.stack([np.sqrt(1 - t ** 2), 0 * t, t], axis=-1)
    assert np.max(np.abs(a.evaluate(pts) - b.evaluate(pts))) < 1e-10


@pytest.mark.parametrize("v", [-2.0, 0.5])
def test_zonal_qkv_norm_with_scalar_values_matches_s2_solver(v):
    """QKV-Norm with V = v·I keeps the axial symmetry (normalized values are sign(v)·θ): the zonal solver runs it
    (it refused it as "supports V = v·I only") and agrees with the S² solver, whose values are normalized on the
    grid; a radius field rides along."""
    L = 16
    g = lambda t: 1 + 0.4 * t + 0.2 * t ** 2  # noqa: E731
    r = lambda t: 1 + 0.25 * t  # noqa: E731
    s2 = mf.Density.from_function(lambda x: g(x[..., 2]), L, radius=lambda x: r(x[..., 2]), normalize=True)
    zon = mf.ZonalDensity.from_function(g, L, d=3, radius=r, normalize=True)
    model = mf.Model(3.0, "qkv-norm", V=v * np.eye(3))
    a = mf.simulate(model, s2, 0.5, rtol=1e-12).final
    b = mf.simulate(model, zon, 0.5, rtol=1e-12).final
    t = np.linspace(-1, 1, 41)
    pts = np.stack([np.sqrt(1 - t ** 2), 0 * t, t], axis=-1)
    assert np.max(np.abs(a.evaluate(pts) - b.evaluate(pts))) < 1e-10
    assert np.max(np.abs(a.evaluate_radius(pts) - b.with_coeffs(b.radius).evaluate(pts))) < 1e-10
    assert mf.simulate(mf.Model(3.0, "qkv-norm", d=7, V=v * np.eye(7)),
                       mf.ZonalDensity.from_function(g, L, d=7, normalize=True), 0.1).status is mf.Status.OK


@pytest.mark.parametrize("V, d", [(0.0, 3), ("rank2", 3), (0.0, 7), ("rank2", 2)])
def test_qkv_norm_with_a_singular_matrix_is_refused_on_densities(V, d):
    # V = 0·I ran with a zero velocity (sign(0) = 0); a rank-deficient V left V θ/‖V θ‖ undefined on its null
    # directions, which a density charges
    V = np.diag([1.0] * (d - 1) + [0.0]) if V == "rank2" else V * np.eye(d)
    rho = mf.Density.uniform(12, d=d) if d < 4 else mf.ZonalDensity.uniform(12, d=d)
    with pytest.raises(ValueError, match=r"qkv-norm.*`V` must be invertible; its smallest singular value is 0"):
        mf.simulate(mf.Model(1.0, "qkv-norm", d=d, V=V), rho, 0.1)
    with pytest.raises(ValueError, match=r"`Q` must be invertible"):
        mf.simulate(mf.Model(1.0, "qkv-norm", d=d, Q=np.diag([0.0] + [1.0] * (d - 1))), rho, 0.1)
    if d < 4:                   # other schemes take a singular V (the zonal solver takes V = v·I only)
        assert mf.simulate(mf.Model(1.0, "post-ln", d=d, V=V), rho, 0.1).status is mf.Status.OK


def test_zonal_solver_on_circle_matches_fourier_solver():
    """d = 2: g(cos φ) in Chebyshev polynomials against the Fourier solver."""
    L = 20
    g = lambda t: 1 + 0.4 * t + 0.2 * t ** 2  # noqa: E731
    four = mf.Density.from_function(lambda x: g(x[..., 1]) / 1.1, L, d=2)
    zon = mf.ZonalDensity.from_function(lambda t: g(t) / 1.1, L, d=2)
    model = mf.Model(2.0, d=2)
    a = mf.simulate(model, four, 1.0, rtol=1e-13).final
    b = mf.simulate(model, zon, 1.0, rtol=1e-13).final
    phi = np.linspace(0, 2 * np.pi, 50)
    pts = np.stack([np.cos(phi), np.sin(phi)], axis=-1)
    assert np.max(np.abs(a.evaluate(pts) - b.evaluate(pts))) < 1e-10


def test_energy_identity_usa():
    """dE/dt = ∫|v|² dμ along the USA flow (V = I): compare the recorded E(t) with ∫ dissipation dt."""
    model = mf.Model(2.0, attention="unnormalized")
    residual = []
    for h in (1e-2, 5e-3):
        tr = mf.simulate(model, _smooth(24), 0.5, method="rk4", step=h)
        t, e, diss = tr.steps["t"], tr.steps["energy"], tr.steps["dissipation"]
        t, e, diss = np.r_[0.0, t], np.r_[tr.diagnostics["energy"][0], e], np.r_[tr.diagnostics["dissipation"][0], diss]
        gained = integrate.simpson(diss, x=t)       # O(h⁴), like RK4 itself
        residual.append(abs((e[-1] - e[0]) - gained) / gained)
    assert residual[1] < 1e-8
    assert residual[0] / residual[1] > 2 ** 3.5      # fourth order in h


def test_pre_ln_radius_on_uniform_state_grows_linearly():
    beta, r0 = 3.0, 2.0
    lam = mf.funk_hecke(beta, 0)[0]
    dlam = mf.funk_hecke_dbeta(beta, 0)[0]
    tr = mf.simulate(mf.Model(beta, "pre-ln"), mf.Density.uniform(8), 2.0, r0=r0, save_every=0.5)
    expected = r0 + tr.times * dlam / lam
    assert np.max(np.abs(tr.diagnostics["mean_radius"] - expected)) < 1e-12
    # a small perturbation changes the rate only at second order in ε
    c = mf.Density.uniform(8).coeffs.copy()
    c[lm_index(8, 2, 0)] = 1e-4
    tr2 = mf.simulate(mf.Model(beta, "pre-ln"), mf.Density(c, 8), 2.0, r0=r0, save_every=0.5)
    assert np.max(np.abs(tr2.diagnostics["mean_radius"] - expected)) < 1e-6


@pytest.mark.parametrize("scheme", sorted(s for s in mf.SCHEMES if mf.SCHEMES[s].continuous))
def test_every_scheme_runs_and_conserves_mass(scheme):
    model = mf.Model(4.0, scheme, tau=0.3 if scheme == "mix-ln" else None)
    tr = mf.simulate(model, _smooth(16), 0.6, save_every=0.2)
    assert tr.success, tr.message
    assert np.max(np.abs(tr.steps["mass_error"])) < 1e-13
    assert np.all(np.diff(tr.diagnostics["energy"]) > 0)   # attention concentrates the measure


def test_growth_rate_is_rate_of_every_scheme():
    """The scheme's speed at the uniform state divides the Post-LN rate (pre-ln with r0, peri-ln, ngpt)."""
    L, ell, beta, eps = 10, 2, 3.0, 1e-7
    for scheme, kw in [("pre-ln", dict(r0=2.0)), ("peri-ln", dict(r0=2.0)), ("ngpt", {}), ("ln-scaling", {})]:
        rate = mf.growth_rate(beta, ell, 3, scheme=scheme, r0=kw.get("r0", 1.0))
        dens, amp = _perturbed(L, 3, ell, eps)
        fitted = []
        for h in (1e-3, 5e-4):
            tr = mf.simulate(mf.Model(beta, scheme), dens, h, rtol=1e-12, atol=1e-22, error_norm="elementwise", **kw)
            fitted.append(np.log(amp(tr.final) / eps) / h)
        # the mean rate over [0, h] is γ(0) + O(h) (r and t move: 1.7e-4 to 2.5e-4 off at h = 1e-3); Richardson's
        # 2γ(h/2) − γ(h) leaves O(h²) ~ 1e-6 and the O(ε) nonlinearity ~ 1e-7 (observed ≤ 6e-8)
        assert abs((2 * fitted[1] - fitted[0]) / rate - 1) < 1e-6, scheme


def test_attention_paths_agree():
    """Fast spectral path = general-V path (V = I) = quadrature path (Q = K = I), on the same grid."""
    L = 16
    dens = _smooth(L)
    basis = S2Basis(L)
    fast = SpectralAttention(mf.Model(2.0, "pre-ln"), basis)(dens.coeffs)
    general = SpectralAttention(mf.Model(2.0, "pre-ln"), basis)
    general.path = "general-v"
    general._setup_values()
    gv = general(dens.coeffs)
    quad = SpectralAttention(mf.Model(2.0, "pre-ln"), basis)
    quad.path = "quadrature"
    quad._setup_quadrature(1e-12)
    qv = quad(dens.coeffs)
    for other in (gv, qv):
        assert np.max(np.abs(other.tangential - fast.tangential)) < 1e-12
        assert np.max(np.abs(other.radial - fast.radial)) < 1e-12


def test_anisotropic_kernel_runs_through_quadrature():
    model = mf.Model(1.0, Q=np.diag([1.0, 0.5, 1.0]))
    tr = mf.simulate(model, _smooth(16), 0.3)
    assert tr.success and np.max(np.abs(tr.steps["mass_error"])) < 1e-13
    assert np.isnan(tr.diagnostics["energy"]).all()


def test_species_split_into_identical_halves_is_the_single_species():
    L = 12
    base = _smooth(L)
    half = mf.Density(base.coeffs / 2, L, radius=mf.Density.uniform(L).coeffs * 1.5)
    a, b = mf.simulate(mf.Model(2.0, "pre-ln"), [half, half], 0.5, rtol=1e-12).final
    single = mf.simulate(mf.Model(2.0, "pre-ln"), base, 0.5, r0=1.5, rtol=1e-12).final
    assert np.max(np.abs(a.coeffs + b.coeffs - single.coeffs)) < 1e-12
    assert np.max(np.abs(a.radius - single.radius)) < 1e-12


def test_a_negative_species_is_refused_even_when_the_total_is_positive():
    """A species ρ/2 − 0.3 beside ρ/2 + 0.3 ran (status OK): only the total density was checked."""
    L = 12
    base = _smooth(L)
    uniform = mf.Density.uniform(L).coeffs
    low = mf.Density(base.coeffs / 2 - 0.3 * uniform, L, radius=uniform)
    high = mf.Density(base.coeffs / 2 + 0.3 * uniform, L, radius=2 * uniform)
    with pytest.raises(ValueError, match=r"species 0 must be a nonnegative density; its minimum on the solver's grid "
                                         r"is -0\.\d+ < -negativity_tol = -1e-06"):
        mf.simulate(mf.Model(2.0, "pre-ln"), [low, high], 0.1)
    half = mf.Density(base.coeffs / 2, L, radius=uniform)
    assert mf.simulate(mf.Model(2.0, "pre-ln"), [half, half], 0.1).success


def test_a_radius_field_made_negative_by_the_lmax_option_names_lmax():
    """A positive radius field exp(6 z) cut to lmax=4 rings below 0: the error did not say the option did it."""
    L = 40
    dens = mf.Density.from_function(lambda x: np.ones(x.shape[:-1]), L,
                                    radius=lambda x: 1e-3 + np.exp(6 * x[..., 2]) / np.exp(6))
    with pytest.raises(ValueError, match=r"the radius field of species 0 must be > 0 everywhere; its minimum on the "
                                         r"solver's grid is -\d.* once truncated to lmax=4 \(its band limit is 40\): "
                                         r"raise `lmax`"):
        mf.simulate(mf.Model(2.0, "pre-ln"), dens, 0.1, lmax=4)
    assert mf.simulate(mf.Model(2.0, "pre-ln"), dens, 0.01).success


def test_a_truncation_by_the_lmax_option_that_drops_content_is_warned_about():
    """simulate(…, lmax=4) (or resume(…, options={"lmax": 4})) of a density of band limit 32 dropped its degrees
    above 4 in silence; the tail monitor cannot see content that is gone."""
    dens = mf.Density.random(32, seed=1, degree=3)
    with pytest.warns(mf.MeanfieldWarning, match=r"lmax=6 truncates the initial density \(band limit 32\): the "
                                                  r"degrees above 6 held \d\.\d\de-\d\d of its spectral energy"):
        mf.simulate(mf.Model(1.0), dens, 0.01, lmax=6)
    with warnings.catch_warnings(record=True) as caught:     # what it drops at 8 is below tail_warn (8.3e-7)
        warnings.simplefilter("always")
        mf.simulate(mf.Model(1.0), dens, 0.01, lmax=8)
    assert not [w for w in caught if "truncates" in str(w.message)]
    padded = mf.Density.random(8, seed=1, degree=3).resized(32)        # nothing above 8: nothing lost
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mf.simulate(mf.Model(1.0), padded, 0.01, lmax=8)
    assert not [w for w in caught if "truncates" in str(w.message)]


def test_a_density_of_band_limit_0_is_refused_naming_its_band_limit_and_runs_with_the_lmax_option():
    dens = mf.Density.uniform(0)
    with pytest.raises(ValueError, match=r"the initial density has band limit 0, and the solver needs a band limit "
                                         r">= 1: give the option `lmax`"):
        mf.simulate(mf.Model(1.0), dens, 0.1)      # was "`lmax` must be an integer >= 1; got lmax=0": not given
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(1.0), dens, 0.1, lmax=4)
    assert tr.success and np.allclose(tr.final.coeffs, mf.Density.uniform(4).coeffs, atol=1e-14)


def test_a_loss_at_the_first_step_of_an_unresolved_start_does_not_call_it_resolved():
    """A degree-3 density at lmax = 4 (tail fraction 3.6e-2 at t = 0) stopped after one step with "the last resolved
    state is kept … State kept from t=0", the start being no more resolved than the step."""
    tr = mf.simulate(mf.Model(2.0), mf.Density.random(4, seed=1, degree=3), 1.0)
    assert tr.status is mf.Status.RESOLUTION_LOST and np.array_equal(tr.times, [0.0])
    assert tr.diagnostics["tail_fraction"][0] > tr.options["tail_tol"]
    assert re.search(r"The state kept is itself beyond tail_tol \(tail fraction 3\.64\de-02 at t=0, lmax=4\)",
                     tr.detail)
    with warnings.catch_warnings():     # a resolved state kept: no such sentence
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        later = mf.simulate(mf.Model(20.0), mf.Density.random(24, seed=1, degree=3), 10.0)
    assert later.status is mf.Status.RESOLUTION_LOST and "itself beyond" not in later.detail


def test_an_initial_state_the_backend_refuses_gets_the_right_fix():
    """Two species of total mass 0.5 were told "Use its .normalized()", which gives each mass 1 (total 2); the
    scheme of a species run and the way to d > 3 were not named."""
    L = 8
    half = mf.Density(mf.Density.uniform(L).coeffs / 2, L, radius=mf.Density.uniform(L).coeffs)
    with pytest.raises(ValueError, match=r"the species' masses must sum to 1 .*got 1\.5.*Divide every species by that "
                                         r"sum .*not each by its own mass"):
        mf.simulate(mf.Model(2.0, "pre-ln"), [half, half, half], 0.1)
    with pytest.raises(ValueError, match=r"several species only make sense for schemes with a radius \(mix-ln, "
                                         r"peri-ln, pre-ln, qkv-norm\); got scheme='post-ln'"):
        mf.simulate(mf.Model(2.0), [half, half], 0.1)
    with pytest.raises(ValueError, match=r"has d=3 but the model has d=4 \(.*for d > 3 use a ZonalDensity"):
        mf.simulate(mf.Model(2.0, d=4), mf.Density.uniform(L), 0.1)


@pytest.mark.parametrize("scheme, L", [("pre-ln", 24), ("peri-ln", 32)])
def test_radius_field_is_transported_like_lagrangian_particles(scheme, L):
    """∂_t r + v·∇r = ṙ against a second method: exact particles at Gauss–Legendre nodes (weights ρ(x_q) w_q/4π, radii
    r0(x_q)) carry r along their paths, so the spectral radius field at their final positions is their radius.
    From a non-constant r0 (∇r ≠ 0 at once).  Peri-LN's field needs L = 32 (1.1e-7 at L = 16, 2.7e-10 at 24, 8e-13
    at 32); 1e-11 is the quadrature's and the integrators' (rtol 1e-12) error with margin; without the transport
    term v·∇r the difference is ~1e-3."""
    def r0(x):
        return 1.5 + 0.4 * x[..., 0] - 0.2 * x[..., 1] * x[..., 2]

    def rho0(x):
        return 1 + 0.5 * x[..., 2] + 0.3 * x[..., 0] * x[..., 1]

    model, T = mf.Model(2.0, scheme), 0.5
    initial = mf.Density(mf.Density.from_function(rho0, L).coeffs, L, radius=mf.Density.from_function(r0, L).coeffs)
    spectral = mf.simulate(model, initial, T, rtol=1e-12).final
    grid = SphereGrid(24, 48)
    nodes = grid.points.reshape(-1, 3)
    weights = grid.weights.reshape(-1) / (4 * np.pi) * rho0(nodes)
    particles = mf.simulate(model, mf.Particles(nodes, weights, radii=r0(nodes)), T, backend="particles",
                            rtol=1e-12, atol=1e-14).final
    field = mf.Density(spectral.radius, spectral.lmax).evaluate(particles.positions)
    assert np.ptp(particles.radii) > 0.5                       # the radius is far from constant
    assert np.max(np.abs(particles.radii - field)) < 1e-11


def test_mean_alignment_is_logged_every_step():
    """|∫x dμ|² of each step's state, against the final density integrated on a Gauss–Legendre grid (exact for
    x ρ of degree L + 1) and the saved diagnostic; on S² with two species (the moment of their sum)."""
    L = 16
    base = _smooth(L)
    halves = [mf.Density(base.coeffs / 2, L, radius=mf.Density.uniform(L).coeffs * r) for r in (1.0, 2.0)]
    tr = mf.simulate(mf.Model(2.0, "pre-ln"), halves, 0.4, save_every=0.2)
    steps = tr.steps["mean_alignment"]
    assert steps.shape == tr.steps["t"].shape and np.all(np.isfinite(steps))
    grid = SphereGrid(L + 2, 2 * L + 4)
    x, w = grid.points.reshape(-1, 3), grid.weights.reshape(-1) / (4 * np.pi)
    rho = sum(sp.evaluate(x) for sp in tr.final)
    m = (w * rho) @ x / np.sum(w * rho)
    assert abs(steps[-1] - m @ m) < 1e-14
    assert steps[-1] == tr.diagnostics["mean_alignment"][-1]
    assert np.all(np.diff(steps) > 0)         # Pre-LN clusters this smooth density


@pytest.mark.parametrize("scheme", ["peri-ln", "ngpt"])
def test_scale_free_schemes_agree_for_both_attentions_at_large_beta(scheme):
    """At β = 400 the unnormalized ‖A‖ ~ e^β overflowed when squared: the run froze (status OK, nothing moved)."""
    rho = mf.ZonalDensity.from_function(lambda t: 1 + 0.3 * t, 170, d=3, normalize=True)
    sa, usa = (mf.simulate(mf.Model(400.0, scheme, attention=a), rho, 1e-3).final for a in ("softmax", "unnormalized"))
    assert np.max(np.abs(sa.coeffs - rho.coeffs)) > 1e-6               # it moves
    assert np.max(np.abs(usa.coeffs - sa.coeffs)) < 1e-15


@pytest.mark.filterwarnings("ignore::meanfield.MeanfieldWarning")    # lmax = 8 below the kernel's band limit 223
@pytest.mark.parametrize("scheme, kw, r0", [("peri-ln", {}, 1e4), ("ngpt", {"alpha": 1e-4}, 1.0)])
def test_scale_free_schemes_agree_for_both_attentions_where_the_speed_factor_overflows(scheme, kw, r0):
    """β = 709.7, a smooth density: ‖A‖ ≈ 1e305 under USA, so Peri-LN's r‖A‖ with r = 1e4 and nGPT's ‖A‖/α with
    α = 1e-4 are inf, and v = P_θA/s read 0: the USA run froze (status OK, max_speed 0) where softmax attention (the
    same motion) moves at 4.4e-8 (Peri-LN)."""
    rho = mf.Density.from_function(lambda x: 1 + 0.3 * x[..., 2], 8)
    sa, usa = (mf.simulate(mf.Model(709.7, scheme, attention=a, **kw), rho, 0.05, r0=r0, save_every=0.05)
               for a in ("softmax", "unnormalized"))
    assert sa.success and usa.success
    assert np.all(sa.diagnostics["max_speed"] > 0)
    np.testing.assert_allclose(usa.diagnostics["max_speed"], sa.diagnostics["max_speed"], rtol=1e-12)
    assert np.max(np.abs(sa.final.coeffs - rho.coeffs)) > 0                  # it moves
    assert np.max(np.abs(usa.final.coeffs - sa.final.coeffs)) < 1e-15


def test_species_speed_scales_with_inverse_radius():
    """Pre-LN species at r = 1 and r = 2 on the same density: the first moves twice as fast (to O(h))."""
    L, h = 12, 1e-5
    base = _smooth(L)
    uni = mf.Density.uniform(L).coeffs
    one, two = (mf.Density(base.coeffs / 2, L, radius=uni * r) for r in (1.0, 2.0))
    a, b = mf.simulate(mf.Model(2.0, "pre-ln"), [one, two], h, rtol=1e-13).final
    da, db = a.coeffs - one.coeffs, b.coeffs - two.coeffs
    # O(h) with h = 1e-5 and O(1) rates (observed 1.4e-6); s ∝ r^p with |p − 1| ≳ 1e-5 fails
    assert np.linalg.norm(da - 2 * db) < 2e-5 * np.linalg.norm(da)


@pytest.mark.parametrize("bad, match", [
    (dict(lmax=-1), "`lmax`"), (dict(rtol=0.0), "`rtol`"), (dict(method="euler"), "`method`"),
    (dict(on_resolution_loss="ignore"), "`on_resolution_loss`"), (dict(filter=(1.0,)), "`filter`"),
    (dict(method="rk4"), "`step`"), (dict(on_resolution_loss="handoff"), "hybrid"),
    (dict(error_norm="max"), "`error_norm`"),
    (dict(first_step=-0.1), "`first_step` must be finite and > 0"), (dict(first_step=0), "`first_step`"),
    (dict(first_step=2.0, max_step=1.0), r"`first_step` must be in \[min_step, max_step\]"),
    (dict(max_steps=0), "`max_steps` must be an integer >= 1"),
    (dict(min_step=0.5, max_step=0.1), "`min_step` must be ≤ `max_step`"),
    (dict(refine_factor=1.0, on_resolution_loss="refine"), "`refine_factor` must be finite and > 1"),
    (dict(refine_factor=-1.0), r"`refine_factor` must be finite and > 1 .*got refine_factor=-1.0"),  # said "> 0"
    (dict(refine_factor=np.inf), r"`refine_factor` must be finite and > 1"),
    (dict(refine_factor="2"), r"`refine_factor` must be a real number > 1"),
    (dict(step=0.1), "method='rk45' chooses its own steps"),
    (dict(quadrature_tol=2.0), r"`quadrature_tol` must be in \(0, 1\)"),
    (dict(method="rk4", step=0.1, rtol=1e-6), r"\['rtol'\] would be ignored: method='rk4' takes fixed steps"),
])
def test_bad_options(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 1.0, **bad)


def test_unknown_option_and_bad_initial():
    with pytest.raises(TypeError, match="unknown option"):
        mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 1.0, lmx=4)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['time'\].*layer maps .* backend='particles'"):
        mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 1.0, time="layers", step=0.1)
    with pytest.raises(TypeError, match="`max_steps` must be an integer"):
        mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 1.0, max_steps=500.9)
    with pytest.raises(ValueError, match="mass 1"):
        mf.simulate(mf.Model(1.0), mf.Density(2 * mf.Density.uniform(4).coeffs, 4), 1.0)
    with pytest.raises(mf.UnsupportedModelError, match="layer map"):
        mf.simulate(mf.Model(1.0, "angpt"), mf.Density.uniform(4), 1.0)
    with pytest.raises(ValueError, match="d=2"):
        mf.simulate(mf.Model(1.0), mf.Density.uniform(4, d=2), 1.0)


@pytest.mark.parametrize("attention", ["softmax", "unnormalized"])
def test_quadrature_chunks_equal_the_cached_kernel(attention):
    L = 12
    dens = _smooth(L)
    model = mf.Model(1.5, "pre-ln", attention=attention, Q=np.diag([1.0, 0.7, 1.2]))
    basis = S2Basis(L)
    cached = SpectralAttention(model, basis)
    chunked = SpectralAttention(model, basis)
    chunked.heads = [(q, k, v, s, None) for q, k, v, s, _ in chunked.heads]
    chunked.chunk = 37
    a, b = cached(dens.coeffs), chunked(dens.coeffs)
    assert np.max(np.abs(a.tangential - b.tangential)) < 1e-13 and np.max(np.abs(a.radial - b.radial)) < 1e-13


def test_quadrature_refuses_what_cannot_fit(monkeypatch):
    from meanfield import _memory
    from meanfield.backends import _spectral

    monkeypatch.setattr(_spectral, "available_bytes", lambda: 10_000)
    monkeypatch.setattr(_spectral, "fits", lambda n: False)
    monkeypatch.setattr(_memory, "available_bytes", lambda: 10_000)
    with pytest.raises(MemoryError, match="GiB"):
        mf.simulate(mf.Model(1.0, Q=np.diag([1.0, 0.5, 1.0])), _smooth(8), 0.1)


def test_refine_steps_up_to_lmax_max_exactly_then_says_so():
    # 16 → 24 → 36 → 54, then 81 > lmax_max = 60: the last refinement goes to 60, not stops at 54
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(5.0), _smooth(16), 8.0, on_resolution_loss="refine", lmax_max=60)
    assert tr.status is mf.Status.RESOLUTION_LOST
    assert list(np.unique(tr.steps["lmax"])) == [16, 24, 36, 54, 60]
    assert "Refinement reached lmax_max=60" in tr.message and "Raise `lmax_max`" in tr.message
    assert "on_resolution_loss='refine'" not in tr.message          # the advice fits the policy in use


def test_mean_alignment_diagnostic_is_that_of_the_density():
    # |m|², m = ∫ x dμ: the particles' mean_alignment of the density, so comparisons can overlay it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(2.0), mf.Density.random(16, seed=2, amplitude=0.7), 0.5, save_every=0.25)
        zonal = mf.simulate(mf.Model(2.0, d=5), mf.ZonalDensity.from_function(lambda t: 1 + 0.5 * t, 8, d=5), 0.2)
    expected = [mf.alignment_statistics(s).mean_alignment for s in tr.states]
    assert np.allclose(tr.diagnostics["mean_alignment"], expected, rtol=1e-12, atol=0)
    assert zonal.diagnostics["mean_alignment"][0] == pytest.approx((0.5 / 5) ** 2, rel=1e-13)   # (g_1/d)²


def test_a_loss_by_undershoot_at_a_resolved_tail_names_its_cause():
    # S¹, β = 5: the density is ~0 between clusters; it undershoots while its tail is at rounding level,
    # where refining cannot help (it used to refine on and advise raising lmax_max)
    r = mf.Density.random(lmax=32, d=2, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(beta=5.0, d=2), r, 20.0, save_every=0.25, on_resolution_loss="refine",
                         lmax_max=2048)
    assert tr.status is mf.Status.RESOLUTION_LOST
    assert "min ρ" in tr.detail and "< −negativity_tol" in tr.detail and "tail_tol=" not in tr.detail
    assert "at rounding level" in tr.detail and "lmax_max" not in tr.detail


def test_a_loss_by_a_tail_tol_below_rounding_says_so():
    # tail_tol=1e-30 (how a hybrid run is made to hand off at once) fired with min ρ = 0.5 and the detail explained
    # an undershoot that was not there ("more degrees cannot remove the undershoot ... raise `negativity_tol`")
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 2], 8)
    with pytest.warns(mf.MeanfieldWarning, match="simulate stopped"):
        tr = mf.simulate(mf.Model(1.0), rho, 1.0, tail_tol=1e-30)
    assert tr.status is mf.Status.RESOLUTION_LOST and "min ρ 5" in tr.detail
    assert "tail_tol=1e-30 is below the rounding level of the tail fraction (~1e-14)" in tr.detail
    assert "undershoot" not in tr.detail and "negativity_tol" not in tr.detail


def test_mix_ln_keeps_the_fourth_order_of_rk4_across_the_switch():
    # the state at t = τ ends the Post-LN segment: its right-hand side (speed 1, dr/dt = 0) was reused as the
    # first stage of the first Pre-LN step, an O(h) error (−9.2e-3 in the mean radius at h = 0.1)
    model = mf.Model(2.0, "mix-ln", tau=0.5)
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 2] + 0.3 * x[..., 0] * x[..., 1], 12)
    final = {h: mf.simulate(model, rho, 1.0, method="rk4", step=h, lmax=12).final for h in (0.1, 0.05, 0.00625)}
    err = [np.linalg.norm(final[h].radius - final[0.00625].radius) for h in (0.1, 0.05)]
    assert err[0] / err[1] > 2 ** 3.5


def test_mix_ln_with_tau_zero_is_pre_ln():
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 2], 8)
    a = mf.simulate(mf.Model(2.0, "mix-ln", tau=0.0), rho, 0.3, method="rk4", step=0.1).final
    b = mf.simulate(mf.Model(2.0, "pre-ln"), rho, 0.3, method="rk4", step=0.1).final
    assert np.array_equal(a.coeffs, b.coeffs) and np.array_equal(a.radius, b.radius)


def test_the_monitor_warns_before_it_stops():
    rho = mf.Density.uniform(8)
    with pytest.raises(ValueError, match=r"`tail_warn` must be ≤ `tail_tol`.*tail_warn=1e-06 > tail_tol=1e-08"):
        mf.simulate(mf.Model(1.0), rho, 0.1, tail_tol=1e-8, tail_warn=1e-6)
    run = mf.simulate(mf.Model(1.0), rho, 0.1, tail_tol=1e-8)       # a stricter stop alone lowers the warning
    assert run.options["tail_warn"] == run.options["tail_tol"] == 1e-8


def test_a_stalled_step_names_the_speed_and_a_radius_field_without_use_is_warned_about():
    with pytest.warns(mf.MeanfieldWarning):
        tr = mf.simulate(mf.Model(300.0, attention="unnormalized"), mf.Density.random(8, seed=1, amplitude=0.3), 0.1)
    assert tr.status is mf.Status.STEP_TOO_SMALL
    assert "largest speed on the grid is" in tr.detail and "e^(β‖QᵀK‖) = 1.94e+130" in tr.detail
    rho = mf.Density.from_function(lambda x: 1 + 0 * x[..., 0], 12, radius=2.0)
    with pytest.warns(mf.MeanfieldWarning, match="scheme='post-ln' has no radius"):
        assert mf.simulate(mf.Model(1.0), rho, 0.1).final.radius is None


@pytest.mark.parametrize("policy", ["stop", "refine"])
def test_the_step_log_ends_at_the_state_kept(policy):
    """A step whose state the monitor rejects (resolution lost, or an undershoot redone after refining) is dropped
    from the log: it listed a step past the final time (t = 0.01 logged, state kept from t = 0)."""
    tr = mf.simulate(mf.Model(5.0), mf.Density.random(16, seed=1, degree=4), 3.0, on_resolution_loss=policy,
                     lmax_max=40)
    assert tr.status is mf.Status.RESOLUTION_LOST
    t = tr.steps["t"]
    assert t[-1] == tr.times[-1] and np.all(np.diff(t) > 0)
    assert all(len(v) == len(t) for v in tr.steps.values())


def test_a_fixed_step_beyond_the_cfl_cap_is_diagnosed_not_refined():
    # rk4 with step 5 where the CFL cap is ~0.8: the density blew up (min ρ −3e3) and "refine" raised L to
    # lmax_max, then advised raising lmax_max; the time step is the cause and more degrees only lower the cap
    rho = mf.Density.random(24, seed=1, degree=3, amplitude=1.2)
    with pytest.warns(mf.MeanfieldWarning, match="simulate stopped"):
        tr = mf.simulate(mf.Model(4.0), rho, 20.0, save_every=5.0, method="rk4", step=5.0,
                         on_resolution_loss="refine", lmax_max=64)
    assert tr.status is mf.Status.RESOLUTION_LOST and tr.states[-1].lmax == 24 and tr.times[-1] == 0.0
    assert "beyond the CFL cap" in tr.message and "Lower `step`" in tr.message and "lmax_max" not in tr.message
    # a step within the cap refines as before
    ok = mf.simulate(mf.Model(4.0), rho, 2.0, save_every=1.0, method="rk4", step=0.05, on_resolution_loss="refine",
                     lmax_max=64)
    assert ok.status is mf.Status.OK


def test_max_steps_and_filter_are_named():
    # reaching max_steps read "the adaptive step size fell below `min_step`"; filter=["a", "b"] raised a TypeError
    with pytest.warns(mf.MeanfieldWarning):
        tr = mf.simulate(mf.Model(1.0), mf.Density.random(16, seed=1, amplitude=0.3), 1.0, max_steps=3)
    assert tr.status is mf.Status.STEP_TOO_SMALL and "max_steps=3 steps taken" in tr.detail
    assert "`max_steps` steps were taken" in tr.message
    with pytest.raises(ValueError, match="`filter` must be"):
        mf.simulate(mf.Model(1.0), mf.Density.uniform(8), 0.1, filter=["a", "b"])


def test_min_step_neither_stops_the_first_step_nor_a_step_shortened_to_a_save_time():
    # min_step = 0.05 stopped every run at t = 0 (the first guess is 0.01), and a step shortened to land on a
    # save time (0.0178 before t = 0.33) counted as a stalled one: STEP_TOO_SMALL on smooth data
    m, rho = mf.Model(1.0), mf.Density.random(16, seed=0, amplitude=0.3)
    r = mf.simulate(m, rho, 1.0, min_step=0.05)
    assert r.success and min(r.steps["dt"]) >= 0.05
    r = mf.simulate(m, rho, 1.0, min_step=0.05, first_step=0.1, save_every=0.33)
    assert r.success and np.allclose(r.times, [0, 0.33, 0.66, 0.99, 1.0])
    ref = mf.simulate(m, rho, 1.0, save_every=0.33)
    assert np.max(np.abs(r.final.coeffs - ref.final.coeffs)) < 1e-7
    r = mf.simulate(m, rho, 0.2, min_step=0.05, save_every=0.003)   # the very first step shortened to a save time
    assert r.success and len(r.times) == 68


def test_lmax_max_is_checked_even_when_unused_and_its_memory_before_the_run():
    # lmax_max="foo" ran (it is read only when refining), and a cap beyond the memory failed hours into a run
    rho = mf.Density.random(16, seed=0, amplitude=0.3)
    with pytest.raises(TypeError, match="`lmax_max` must be an integer >= 1; got lmax_max='foo'"):
        mf.simulate(mf.Model(1.0), rho, 0.1, lmax_max="foo")
    with pytest.raises(ValueError, match="`lmax_max` must be an integer >= 1; got lmax_max=-5"):
        mf.simulate(mf.Model(1.0), rho, 0.1, lmax_max=-5)
    with pytest.raises(mf.InsufficientMemoryError, match="refining up to lmax_max=100000 .* lower `lmax_max`"):
        mf.simulate(mf.Model(1.0), rho, 0.1, on_resolution_loss="refine", lmax_max=100_000)
    assert mf.simulate(mf.Model(1.0), rho, 0.1, lmax_max=None).success     # as earlier versions stored it
    with pytest.raises(TypeError, match="`lmax_max` must be an integer >= 1; got lmax_max=None"):
        mf.simulate(mf.Model(1.0), rho, 0.1, on_resolution_loss="refine", lmax_max=None)


def test_a_filter_given_as_an_array_runs_as_the_same_tuple():
    """np.array([36., 8.]) was refused as if it were not two numbers > 0; [36, 10**400] raised numpy's TypeError
    ("ufunc 'isfinite' not supported for the input types")."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        a = mf.simulate(mf.Model(2.0), _smooth(16), 0.05, filter=np.array([36.0, 8.0]))
        b = mf.simulate(mf.Model(2.0), _smooth(16), 0.05, filter=(36.0, 8.0))
    assert np.array_equal(a.final.coeffs, b.final.coeffs)
    for bad in ([36, 10**400], np.array([36.0, 8.0, 1.0]), np.array([[36.0, 8.0]])):
        with pytest.raises(ValueError, match=r"`filter` must be None or \(strength, order\): two finite numbers > 0"):
            mf.simulate(mf.Model(1.0), mf.Density.uniform(4), 1.0, filter=bad)


@pytest.mark.parametrize("model, named", [
    (dict(beta=1.0, Q=1e10 * np.eye(3)),
     r"beta·c = 1e\+10 \(beta=1\.0, QᵀK = c·I with c = 1e\+10\), which must be ≤ 1e\+09 "),
    (dict(beta=0.5, Q=np.diag([4e9, 1.0, 1.0])), r"beta·‖Q‖₂·‖K‖₂ = 2e\+09 \(beta=0\.5, ‖Q‖₂ = 4e\+09, ‖K‖₂ = 1\)"),
    (dict(beta=1.0, K=9e8 * np.eye(3)), r"beta·c = 9e\+08 .*needs degrees beyond 200000"),
])
def test_a_large_effective_beta_is_named_as_such_not_as_beta(model, named):
    """beta=1 with Q = 1e10·I was refused as "`beta` must be ≤ 1e9 … got beta=10000000000.0" (in the set-up)."""
    m, rho = mf.Model(**model), mf.Density.uniform(4)
    with pytest.raises(ValueError, match=named):
        mf.simulate(m, rho, 1.0)
    with pytest.raises(ValueError, match=named):         # refused by the dry pass too, before any run of a batch
        SpectralBackend.validate_options(m, rho, {})


# -- the right-hand side against a plain evaluation ----------------------------------------------------------------

def _plain_rhs(be, t, y):
    """f(t, y) and the monitors (max |v|, ∫ρ|v|² dσ, min ρ) written out plainly for the isotropic fast path: fresh
    arrays, A = v·∇Z / (β Z) (softmax) or v·e^β ∇(e^{-β}Z) / β, ⟨x, A⟩ from ∂_β λ_ℓ, the scheme table's speed
    and radial law, ρv formed and divided on the grid, every factor applied to grid values."""
    from meanfield.sphere import funk_hecke, funk_hecke_dbeta

    b, m, row = be.basis, be.model, be.model.scheme_def
    beta = m.beta_eff
    lam = funk_hecke(beta, b.lmax + 2, m.d, scaled=True)
    dlam = funk_hecke_dbeta(beta, b.lmax + 2, m.d, scaled=True)
    total = y[:, 0].sum(axis=0)
    z = b.synth(b.conv(total, lam))
    a_tan = b.grad(b.conv(total, lam)) / beta
    a_rad = b.synth(b.conv(total, dlam))
    if m.softmax:
        a_tan, a_rad = a_tan / z, a_rad / z
    else:
        a_tan, a_rad = a_tan * np.exp(beta), a_rad * np.exp(beta)
    v_scale = 1.0 if m.V is None else m.V.reshape(m.d, m.d)[0, 0]
    if row.normalize_qkv:
        v_scale = np.sign(v_scale)
    a_tan, a_rad = v_scale * a_tan, v_scale * a_rad
    a_norm = np.sqrt(np.sum(a_tan ** 2, axis=0) + a_rad ** 2)
    dy = np.zeros_like(y)
    vmax, diss = 0.0, 0.0
    for i in range(len(y)):
        rho = b.synth(y[i, 0])
        r = b.synth(y[i, 1]) if row.has_radius else 1.0
        v = a_tan / row.speed(r, a_norm, t, m)
        dy[i, 0] = -b.div(rho * v)
        if row.has_radius:
            dy[i, 1] = b.analyze(row.radial(a_rad, a_norm, r, t, m) - np.sum(v * b.grad(y[i, 1]), axis=0))
        speed2 = np.sum(v * v, axis=0)
        vmax = max(vmax, np.sqrt(speed2.max()))
        diss += b.integrate(rho * speed2)
    return dy, (vmax, diss, b.synth(total).min())


def _rhs_case(scheme, attention="softmax", d=3, V=None, species=1):
    L = 18                                    # the kernel band limit of β = 3 (at 1e-12): no warning
    kw = dict(tau=0.3) if scheme == "mix-ln" else {}
    kw.update(alpha=0.7) if scheme == "ngpt" else None
    dim = 4 if d == "zonal" else d
    if V is not None:
        kw["V"] = V * np.eye(dim)
    model = mf.Model(3.0, scheme, attention=attention, d=dim, **kw)
    if d == "zonal":
        rho = mf.ZonalDensity.from_function(lambda s: 1 + 0.3 * s + 0.2 * s ** 2, L, d=4, normalize=True)
    else:
        rho = mf.Density.random(L, d=d, seed=1, degree=4, amplitude=0.5)
    if species == 2:
        uni = mf.Density.uniform(L).coeffs
        # species of different shapes (ρ ≥ 0.58 on the sphere: both stay positive): with equal halves the attention of
        # one species was that of the total (SA's A[ρ/2] = A[ρ]; Peri-LN's speed and radial law are scale-free), and a
        # right-hand side that read species 0's density alone for the attention passed
        first = 0.35 * rho.coeffs + 0.15 * uni
        rho = [mf.Density(first, L, radius=1.3 * uni),
               mf.Density(rho.coeffs - first, L, radius=2 * uni + rho.coeffs)]
    return SpectralBackend(model, rho)


@pytest.mark.parametrize("scheme, attention, d, V, species", [
    ("post-ln", "softmax", 3, None, 1), ("post-ln", "unnormalized", 3, None, 1), ("post-ln", "softmax", 3, -1.5, 1),
    ("pre-ln", "softmax", 3, None, 1), ("pre-ln", "unnormalized", 3, 0.5, 1), ("pre-ln", "softmax", 3, None, 2),
    ("mix-ln", "softmax", 3, None, 1), ("peri-ln", "softmax", 3, None, 1), ("peri-ln", "unnormalized", 3, None, 2),
    ("ngpt", "softmax", 3, None, 1), ("ln-scaling", "softmax", 3, None, 1), ("qkv-norm", "softmax", 3, -2.0, 1),
    ("post-ln", "softmax", 2, None, 1), ("pre-ln", "unnormalized", 2, None, 1), ("peri-ln", "softmax", 2, None, 1),
    ("post-ln", "unnormalized", "zonal", None, 1), ("pre-ln", "softmax", "zonal", None, 1),
    ("ngpt", "softmax", "zonal", None, 1)])
def test_rhs_matches_a_plain_evaluation(scheme, attention, d, V, species):
    """The right-hand side (constant factors on the coefficients, reused buffers, fused grid passes, quadrature weights
    inside the transform) equals the plain formulas to rounding (≤ 4e-15 observed) for every scheme row, both
    attentions, V = v·I, species and the three bases.  Two states in turn, and Mix-LN on both sides of τ: a buffer
    that kept a value of the previous call would show."""
    be = _rhs_case(scheme, attention, d, V, species)
    y1 = be.y.copy()
    if y1.shape[1] == 2:
        y1[:, 1] += 0.3 * y1[:, 0]           # a radius field with a gradient: the transport term counts
    y2 = y1 * (1 + 0.1j) + 0.05 * np.roll(y1, 1, axis=-1)
    y2[:, 0, 0] = y1[:, 0, 0]                # the same mass
    for t, y in ((0.1, y1), (0.5, y2), (0.1, y1)):
        dy = be.rhs(t, y)
        ref, monitors = _plain_rhs(be, t, y)
        err = np.linalg.norm(dy - ref) / np.linalg.norm(ref)
        assert err <= 1e-13, (t, err)
        np.testing.assert_allclose(be._last, monitors, rtol=1e-13, atol=0)


@pytest.mark.parametrize("name", ["tail_tol", "tail_warn"])
def test_tail_thresholds_above_one_are_refused_and_one_switches_the_check_off(name):
    rho = mf.Density.random(8, seed=1, degree=4, amplitude=0.3)
    with pytest.raises(ValueError, match=rf"`{name}` must be in \(0, 1\] .*1 switches that check off.*{name}=5\.0"):
        mf.simulate(mf.Model(2.0), rho, 0.1, **{name: 5.0, "tail_tol": 5.0})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        off = mf.simulate(mf.Model(5.0), rho.resized(4), 4.0, tail_warn=1.0, tail_tol=1.0, negativity_tol=1e6)
        on = mf.simulate(mf.Model(5.0), rho.resized(4), 4.0)
    assert on.status is mf.Status.RESOLUTION_LOST and off.success


def test_r0_that_sets_no_radius_is_warned_about():
    rho = mf.Density.random(8, seed=1, amplitude=0.3)
    with pytest.warns(mf.MeanfieldWarning, match=r"`r0` is not used: scheme='post-ln' has no radius \(.*pre-ln"):
        mf.simulate(mf.Model(2.0), rho, 0.01, r0=2.0, lmax=16)
    own = rho.with_coeffs(rho.coeffs, 2.0 * mf.Density.uniform(8).coeffs)
    with pytest.warns(mf.MeanfieldWarning, match="`r0` is not used: the initial density carries its own radius"):
        mf.simulate(mf.Model(2.0, scheme="pre-ln"), own, 0.01, r0=3.0, lmax=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(2.0, scheme="pre-ln"), rho, 0.01, r0=2.0, lmax=16)
    assert tr.diagnostics["mean_radius"][0] == pytest.approx(2.0, rel=1e-13)


def test_resuming_a_run_without_radius_does_not_warn_about_r0(tmp_path):
    # the stored options of a run repeat the default r0 = 1, which sets no radius under Post-LN
    rho = mf.Density.random(16, seed=1, amplitude=0.3)
    path = tmp_path / "run.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        mf.simulate(mf.Model(2.0), rho, 0.2, save_every=0.05, checkpoint=path, callback=lambda t, s, d: t > 0.07)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert mf.resume(path).success
    assert not [w for w in caught if "r0" in str(w.message)]


@pytest.mark.parametrize("d", [2, 3, 5, 8, 64])
def test_zonal_basis_derivatives_match_scipy_jacobi_and_ducc0(d):
    """√(1−t²) P_ℓ'(t) on the zonal nodes, now by ℓ(ℓ+d−2)/(d−1)·P_{ℓ−1}^{(d+2)} and the O(L·n) recurrence (scipy's
    eval_jacobi table was O(L²·n): 0.7 s at L = 400, d = 5, against 0.02 s): against d/dt of scipy's Jacobi
    polynomials, P^{(α,α)}_ℓ' = (ℓ + 2α + 1)/2 · P^{(α+1,α+1)}_{ℓ−1}, and for d = 3 against ducc0's gradient of Y_ℓ0."""
    from scipy import special

    from meanfield import sphere
    from meanfield.backends._bases import ZonalBasis

    lmax = 30
    z = ZonalBasis(lmax, d)
    a, ell = (d - 3) / 2, np.arange(lmax + 1)[:, None]
    scipy_derivative = np.where(ell == 0, 0.0, (ell + 2 * a + 1) / 2 / special.eval_jacobi(ell, a, a, 1.0)
                                * special.eval_jacobi(np.maximum(ell - 1, 0), a + 1, a + 1, z.t[None, :]))
    reference = scipy_derivative * np.sqrt(1 - z.t ** 2)
    np.testing.assert_allclose(z.dP, reference, rtol=0, atol=1e-13 * np.max(np.abs(reference)))
    if d == 3:
        points = sphere.angles_to_points(np.arccos(z.t), np.zeros_like(z.t))
        for l in (1, 7, lmax):
            a_lm = np.zeros(sphere.nalm(lmax), complex)
            a_lm[sphere.lm_index(lmax, l, 0)] = np.sqrt(4 * np.pi / (2 * l + 1))     # Y_ℓ0 = √((2ℓ+1)/4π) P_ℓ
            meridional = sphere.gradient_points(a_lm, lmax, points, epsilon=1e-14, ambient=False)[0]
            np.testing.assert_allclose(z.dP[l], -meridional, rtol=0, atol=1e-13 * l * (l + 1))  # ∂_θ = −√(1−t²)∂_t


@pytest.mark.parametrize("Q", [None, np.diag([1.0, 0.7, 1.2])])
@pytest.mark.parametrize("attention", ["softmax", "unnormalized"])
def test_a_general_v_is_applied_as_v_not_its_transpose(Q, attention):
    """The general-V path (isotropic kernel) and the quadrature path (anisotropic Q) against the direct sum
    (meanfield.attention_field) over the grid nodes as atoms with weights σ_i ρ_i: the grid integrates
    ρ(y) e^{β⟨Qx, y⟩} V y exactly up to the kernel's truncation (band limit 16 at β‖Q‖ = 2.4, tol 1e-12; the grid of
    L = 16 integrates degree 16 + 16 + 1), so the two agree to ~1e-12 relative.  With a V that is not symmetric, V y
    taken as Vᵀy (pts @ v instead of pts @ v.T) passed every test of this file."""
    L = 16
    dens = _smooth(L)
    basis = S2Basis(L)
    V = np.array([[1.0, 0.4, 0.0], [-0.3, 0.8, 0.2], [0.1, -0.5, 1.1]])
    model = mf.Model(2.0, "pre-ln", attention=attention, Q=Q, V=V)
    att = SpectralAttention(model, basis)
    assert att.path == ("general-v" if Q is None else "quadrature")
    f = att(dens.coeffs)
    grid = basis.points.shape[:-1]
    pts = basis.points.reshape(-1, 3)
    w = (basis.synth(dens.coeffs) * basis.weights).reshape(-1)
    ref = mf.attention_field(model, pts, w)
    a_ref = ref.A.reshape(grid + (3,))
    scale = np.max(ref.norm)
    assert np.max(np.abs(f.tangential - basis.tangent_components(a_ref))) < 1e-11 * scale
    assert np.max(np.abs(f.radial - ref.radial.reshape(grid))) < 1e-11 * scale
    mirrored = mf.attention_field(mf.Model(2.0, "pre-ln", attention=attention, Q=Q, V=V.T), pts, w)
    assert np.max(np.abs(mirrored.A - ref.A)) > 1e-2 * scale     # the test can tell V from Vᵀ


def _two_fields(L, d, seed):
    if d == "zonal":
        rng = np.random.default_rng(seed)
        return ZonalBasis(L, 5), rng.standard_normal(L + 1) + 0j, rng.standard_normal(L + 1) + 0j
    return ((S2Basis(L) if d == 3 else CircleBasis(L)), mf.Density.random(L, d=d, seed=seed, amplitude=0.5).coeffs,
            mf.Density.random(L, d=d, seed=seed + 1, amplitude=0.5).coeffs)


@pytest.mark.parametrize("d", [3, 2, "zonal"])
def test_basis_power_and_pair_are_parseval_of_the_grid_values(d):
    """Σ_ℓ power_ℓ(a) = ∫ f² dσ (∫ f² dA = 4π ∫ f² dσ on S², whose harmonics are orthonormal for the area) and
    pair(a, b) = ∫ f g dσ, by the basis' own quadrature of the grid values (exact for the degree-2L products on these
    dealiased grids): the degree power feeds the tail monitor.  The Fourier power without the factor 2 of k ≥ 1 (the
    conjugate modes) passed every test."""
    basis, a, b = _two_fields(10, d, 3)
    f, g = basis.synth(a), basis.synth(b)
    norm2 = basis.integrate(f * f)
    area = 4 * np.pi if d == 3 else 1.0
    assert np.sum(basis.power(a)) == pytest.approx(area * norm2, rel=1e-13)
    assert basis.pair(a, a) == pytest.approx(norm2, rel=1e-13)
    assert basis.pair(a, b) == pytest.approx(basis.integrate(f * g), rel=1e-13)


def test_mean_radius_is_the_density_weighted_mean_of_the_radius_field():
    # ρ = 1 + z/2, r = 2 + z: ∫ ρ r dσ / ∫ ρ dσ = 2 + ⟨z²⟩/2 = 13/6 (the particles' Σ_j w_j r_j of tokens drawn from ρ);
    # the plain mean ∫ r dσ = 2 passed every test, whose radius fields were constant or whose densities uniform
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 2], 16, radius=lambda x: 2 + x[..., 2])
    diag = SpectralBackend(mf.Model(1.0, "pre-ln"), rho).diagnostics()
    assert diag["mean_radius"] == pytest.approx(13 / 6, rel=1e-13)
    assert diag["mean_alignment"] == pytest.approx(1 / 36, rel=1e-13)       # |∫ x ρ dσ|² = (1/6)²


def test_zonal_step_control_measures_the_l2_error_in_high_dimension():
    """The "l2" error norm summed g_ℓ², weighing degree ℓ by N(d, ℓ) (P_ℓ(1) = 1): in high d the rounding of the
    top coefficients (eps·√N(d, ℓ)·‖g‖) ruled it, and e^{5t} on S^99 at L = 30 took 18 952 steps of ~6e-6 (22 s) to
    t = 0.5 (with max_steps=3000 it stopped at t = 0.037).  With Parseval's weights 1/N(d, ℓ) it takes 12 steps, and L = 26 and 30 agree to 2e-16 in L²(σ)."""
    from meanfield.sphere import gegenbauer_norms

    finals = []
    for L in (26, 30):           # the kernel's band limit is 25 at tolerance 1e-12
        rho = mf.ZonalDensity.from_function(lambda t: np.exp(5 * t), L, d=100, normalize=True)
        tr = mf.simulate(mf.Model(4.0, d=100), rho, 0.5)
        assert tr.success, tr.message
        assert len(tr.steps["t"]) < 30
        finals.append(tr.final.coeffs[:27])
    assert np.max(np.abs(finals[1] - finals[0]) * np.sqrt(gegenbauer_norms(26, 100))) < 1e-12


def test_zonal_minimum_counts_rounding_at_the_poles_as_zero():
    """In high d the grid nodes near the poles carry the coefficients' rounding ~eps·√N(d, ℓ)·‖g‖: e^{5t} on S^999 at
    L = 40 was −2443 at the node t = 0.42 (exact 8.4, σ-weight 3e-44), and the run refused it ("`initial` must be a
    nonnegative density; its minimum on the grid is -2.44e+03").  A negative value beyond the rounding is refused."""
    g = lambda t: np.exp(5 * t)  # noqa: E731
    bulk = np.linspace(-0.1, 0.1, 9)
    finals = []
    for L in (30, 40):
        rho = mf.ZonalDensity.from_function(g, L, d=1000, normalize=True)
        tr = mf.simulate(mf.Model(4.0, d=1000), rho, 0.5)
        assert tr.success, tr.message
        assert np.all(tr.steps["min_rho"] >= 0)
        finals.append(tr.final.evaluate_profile(bulk))
    np.testing.assert_allclose(finals[1], finals[0], rtol=1e-12)
    with_radius = mf.ZonalDensity.from_function(g, 30, d=1000, normalize=True, radius=lambda t: 1 + 0.5 * t)
    assert mf.simulate(mf.Model(4.0, "pre-ln", d=1000), with_radius, 0.1).success       # its radius field too
    with pytest.raises(ValueError, match=r"`initial` must be a nonnegative density; its minimum on the grid is -"):
        mf.simulate(mf.Model(4.0, d=1000), mf.ZonalDensity.from_function(lambda t: 1 - 30 * t, 30, d=1000), 0.1)


def test_an_unknown_resolution_policy_is_refused_with_the_spectral_backends_own_choices():
    # the error listed ['handoff', 'refine', 'stop'], and the 'handoff' it offered was then refused (it is the hybrid
    # backend's); it lists the spectral backend's two policies now
    rho = mf.Density.uniform(4)
    with pytest.raises(ValueError, match=r"`on_resolution_loss` must be one of \['refine', 'stop'\]; got "
                                         r"on_resolution_loss='raise'"):
        mf.simulate(mf.Model(1.0), rho, 0.1, on_resolution_loss="raise")
    with pytest.raises(TypeError, match=r"`on_resolution_loss` must be one of \['refine', 'stop'\] \(a string\)"):
        mf.simulate(mf.Model(1.0), rho, 0.1, on_resolution_loss=np.array(["stop"]))
    with pytest.raises(ValueError, match="use backend='hybrid'"):
        mf.simulate(mf.Model(1.0), rho, 0.1, on_resolution_loss="handoff")


@pytest.mark.parametrize("beta", [50.0, 400.0, 700.0])
def test_usa_max_speed_is_finite_where_its_square_overflows(beta):
    """USA's |v| grows like e^β/β²: from β ≈ 355 its square overflows float64 and `max_speed` read inf (with a numpy
    overflow warning), so the CFL cap read 0 and the diagnosis of the stop said "the largest speed on the grid is inf".
    ρ = 1 + z/2 has P_x A = (a/2) P_x e_z exactly, a = cosh β/β² − sinh β/β³, so max |v| = (a/2)·max sin θ over the nodes
    (float64 rounding of e^β and of the multipliers: ~1e-13 relative)."""
    from meanfield.sphere import SphereGrid
    L = 4
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 2], L)
    sin_max = np.sqrt(1 - SphereGrid.for_bandlimit(L).points[..., 2] ** 2).max()
    expect = 0.5 * sin_max * np.exp(beta - np.log(2) + np.log(1 / beta**2 - 1 / beta**3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)          # the kernel band limit of β at L = 4
        warnings.simplefilter("error", RuntimeWarning)
        tr = mf.simulate(mf.Model(beta, attention="usa"), rho, 1e-300, min_step=1e-305)
    assert tr.diagnostics["max_speed"][0] == pytest.approx(expect, rel=1e-12)


def test_the_truncation_of_a_zonal_initial_density_is_warned_about():
    """The option `lmax` below the band limit of the initial density warns with the spectral energy it drops; a
    ZonalDensity (no power()) was truncated silently.  The dropped fraction is checked against the profiles' L²(σ)
    norms by quadrature on S⁴ (t = ⟨x, e⟩ has density ∝ 1 − t² there)."""
    from scipy.integrate import quad
    z = mf.ZonalDensity.from_function(lambda t: np.exp(3 * t), 16, d=5, normalize=True)
    low = z.resized(4)

    def square_norm(dens):
        return quad(lambda t: dens.evaluate_profile(t) ** 2 * (1 - t * t), -1, 1, epsabs=0, epsrel=1e-13)[0]

    lost = 1 - square_norm(low) / square_norm(z)
    assert lost > 1e-4                      # 3.6e-4: far above tail_warn
    with pytest.warns(mf.MeanfieldWarning, match=r"lmax=4 truncates the initial density \(band limit 16\): the "
                                                  rf"degrees above 4 held {lost:.2e} of its spectral energy"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(kernel band limit|simulate stopped)")
            mf.simulate(mf.Model(1.0, d=5), z, 0.01, lmax=4)


def test_the_zonal_solver_names_a_repulsive_kernel_scale():
    # QᵀK = −I on S⁴ is c·I: the refusal read "needs QᵀK = c·I" for a kernel that is c·I (c < 0)
    zonal = mf.ZonalDensity.from_function(lambda t: 1 + 0.1 * t, 8, d=5)
    with pytest.raises(mf.UnsupportedModelError, match=r"c > 0 \(got c = -1: "):
        mf.simulate(mf.Model(2.0, d=5, K=-np.eye(5)), zonal, 0.1)


@pytest.mark.parametrize("make", [lambda: mf.Density.random(12, seed=1),
                                  lambda: mf.Density.random(12, d=2, seed=1),
                                  lambda: mf.ZonalDensity.from_function(lambda t: np.exp(2 * t), 12, d=5, normalize=True)])
def test_spectral_runs_record_the_time_diagnostic_as_particle_runs_do(make):
    """Particle runs record a `t` diagnostic and spectral runs did not: a hybrid run's spectral states read NaN in
    it (the hybrid now adds it itself) and a table of a spectral run's diagnostics had no time column."""
    rho = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(1.0, d=rho.d), rho, 0.2, save_every=0.1)
    assert tr.success and np.array_equal(tr.diagnostics["t"], tr.times) and tr.times[-1] == 0.2


@pytest.mark.parametrize("lmax", [8, 12, 16])
def test_a_run_of_the_documented_defaults_starts_resolved(lmax):
    """mf.simulate(mf.Model(1.0), mf.Density.random(12), 1.0): the default degree 4 of Density.random put the draw
    beyond the default tail_tol = 1e-4, and the run stopped at t = 0: for 51 of seeds 0-50 at lmax = 8, 32 at
    lmax = 12, 7 at lmax = 16 (only 7 of the 153 runs reached t = 1).  With the default degree resolved at lmax, all
    but 2 (lmax = 12, resolution lost past t = 0.2) reach t = 1."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(1.0), mf.Density.random(lmax), 1.0)
    assert tr.success, tr.detail
    assert not [w for w in caught if "resolution warning" in str(w.message)]      # not even tail_warn
    assert tr.diagnostics["tail_fraction"][0] <= 1e-6 and tr.diagnostics["min_rho"][0] > 0


def test_the_backend_docstring_names_every_option_and_diagnostic():
    """SpectralBackend's Options section left out step, rtol, atol, first/max/min_step, refine_factor, lmax_max,
    quadrature_tol and mass_tol (half of them); it now names each option and each diagnostic a run records."""
    doc = SpectralBackend.__doc__
    options = doc[doc.index("Options\n"):]
    named = set(re.findall(r"^    (\w+(?:, \w+)*) :", options, re.M))
    named = {n for group in named for n in group.split(", ")}
    assert named == set(SpectralBackend.option_defaults())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(1.0, "pre-ln"), mf.Density.random(8, seed=1), 0.01)
    said = set(re.findall(r"``(\w+)``", doc[doc.index("Diagnostics of each saved state"):]))
    assert set(tr.diagnostics) <= said
