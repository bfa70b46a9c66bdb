"""particles-sh: the spectral velocity against the exact direct sum (same velocities to 1e-12), the
truncation bound, the shared integrator, and the models it must refuse."""
import threading
import re
import warnings

import numpy as np
import pytest

import meanfield as mf
from meanfield import SCHEMES
from meanfield._attention import attention_field, attention_field_sh, sh_error_bounds

CONTINUOUS = sorted(name for name, s in SCHEMES.items() if s.continuous)


def clustered(n, seed=0, width=1e-7):
    """Half uniform tokens, half in five tight clusters (width ~ ``width`` radians); random weights."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    centers = rng.standard_normal((5, 3))
    half = n // 2
    x[:half] = centers[np.arange(half) % 5] + width * rng.standard_normal((half, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.random(n) + 0.5
    return x, w / w.sum()


def relerr(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


CASES = {
    "sa": dict(),
    "usa": dict(attention="unnormalized"),
    "general-V": dict(V=np.array([[1.0, 0.3, -0.2], [0.1, 0.7, 0.4], [-0.5, 0.2, 1.2]])),
    "scaled-QK": dict(Q=2.0 * np.eye(3), K=0.5 * np.eye(3)),  # QᵀK = I but Q, K ≠ I
    "qkv-norm-nonlinear-V": dict(scheme="qkv-norm", V=np.array([[1.0, 0.3, -0.2], [0.1, 0.7, 0.4], [-0.5, 0.2, 1.2]])),
    "qkv-norm-orthogonal-QK": dict(scheme="qkv-norm", Q=3 * np.array([[0, -1.0, 0], [1, 0, 0], [0, 0, 1]]),
                                   K=np.array([[0, -1.0, 0], [1, 0, 0], [0, 0, 1]])),
    # V = c·(orthogonal), c ≠ 1: QKV-Norm's values Vθ/‖Vθ‖ = (V/c)θ are linear (V/√(VᵀV)₀₀ = V/c); V/c² passed
    "qkv-norm-conformal-V": dict(scheme="qkv-norm", V=2.5 * np.array([[0.6, -0.8, 0], [0.8, 0.6, 0], [0, 0, 1.0]])),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_spectral_attention_matches_exact(case):
    m = mf.Model(beta=5.0, **CASES[case])
    x, w = clustered(4000)
    e, s = attention_field(m, x, w), attention_field_sh(m, x, w)
    for name in ("A", "tangential"):
        assert relerr(getattr(s, name), getattr(e, name)) < 1e-12, name
    assert relerr(s.radial, e.radial) < 1e-12 and relerr(s.norm, e.norm) < 1e-12
    assert np.max(np.abs(s.log_z - e.log_z)) < 1e-12


def test_spectral_attention_at_other_targets_and_tangential_only():
    m = mf.Model(beta=5.0)
    x, w = clustered(3000, seed=1)
    y = np.random.default_rng(2).standard_normal((500, 3))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    e, s = attention_field(m, x, w, targets=y), attention_field_sh(m, x, w, targets=y)
    assert relerr(s.A, e.A) < 1e-12
    t = attention_field_sh(m, x, w, radial=False)           # the Post-LN fast path: 3 transforms
    assert t.A is None and t.radial is None and t.norm is None and t.log_z is None   # no log on the hot path
    assert relerr(t.tangential, attention_field(m, x, w).tangential) < 1e-12


@pytest.mark.parametrize("attention", ["softmax", "unnormalized"])
@pytest.mark.parametrize("scheme", CONTINUOUS)
def test_scheme_velocities_match_exact(scheme, attention):
    """Every scheme and both attentions (USA Post-LN and LN-Scaling take the tangential-only shortcut, whose
    scale v e^β/β no other test saw); 1e-12: the kernel truncation (tol) plus the transforms' ε = 3e-13."""
    extra = {"tau": 0.5} if scheme == "mix-ln" else {}
    m = mf.Model(beta=5.0, scheme=scheme, attention=attention, **extra)
    x, w = clustered(4000, seed=3)
    radii = np.linspace(0.5, 2.0, 4000) if SCHEMES[scheme].has_radius else None
    p = mf.Particles(x, w, radii)
    for t in (0.2, 1.0):
        ve, re = mf.particle_velocity(m, p, t, backend="particles")
        vs, rs = mf.particle_velocity(m, p, t, backend="particles-sh")
        assert relerr(vs, ve) < 1e-12
        if re is not None:
            assert np.max(np.abs(rs - re)) < 1e-12 * max(np.max(np.abs(re)), 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("width", [1e-1, 1e-8])
def test_spectral_velocity_matches_exact_at_20000_tokens(width):
    m = mf.Model(beta=5.0)
    x, w = clustered(20_000, seed=4, width=width)
    e, s = attention_field(m, x, w), attention_field_sh(m, x, w)
    assert np.max(np.abs(s.tangential - e.tangential)) < 1e-12
    assert relerr(s.A, e.A) < 1e-12


def test_truncation_error_is_within_the_reported_bound():
    # A coarse band limit: the error is visible and must stay below the bound of the diagnostics.
    m = mf.Model(beta=5.0)
    x, w = clustered(2000, seed=5, width=1e-3)
    p = mf.Particles(x, w)
    from meanfield._simulate import get_backend
    for tol in (1e-4, 1e-8):
        b = get_backend("particles-sh")(m, p, tol=tol)
        diag = b.diagnostics()
        err = np.max(np.abs(attention_field_sh(m, x, w, tol=tol).A - attention_field(m, x, w).A))
        assert diag["kernel_truncation_error"] < tol
        assert err <= diag["attention_error_bound"]
        assert err > 1e-3 * diag["attention_error_bound"]   # and the bound is not wildly pessimistic
    eps_z, eps_m = sh_error_bounds(5.0, 21)
    assert eps_z < 1e-12 * mf.funk_hecke(5.0, 0, scaled=True)[0] * 4 * np.pi


def test_runs_agree_with_exact_backend():
    # The two velocities differ by δ (rounding of the transforms, ~1e-14 relative); along a run the
    # difference grows at most like δ·T·e^{ΛT} (Grönwall) with Λ ≤ 2β + 1 the Lipschitz constant of
    # the velocity on the sphere.  Both runs take the same RK4 steps, so that is the whole difference.
    beta, T = 4.0, 1.0
    for scheme, kw in [("post-ln", {}), ("peri-ln", {}), ("ngpt", {"attention": "unnormalized"})]:
        m = mf.Model(beta=beta, scheme=scheme, **kw)
        p = mf.Particles(*clustered(600, seed=6, width=1e-2))
        ve, _ = mf.particle_velocity(m, p, backend="particles")
        vs, _ = mf.particle_velocity(m, p, backend="particles-sh")
        delta = max(np.max(np.abs(vs - ve)), 1e-15)
        bound = delta * T * np.exp((2 * beta + 1) * T)
        a = mf.simulate(m, p, T, backend="particles", step=0.05)
        b = mf.simulate(m, p, T, backend="particles-sh", step=0.05)
        assert np.max(np.abs(a.final.positions - b.final.positions)) < bound
        if a.final.radii is not None:
            assert np.max(np.abs(a.final.radii - b.final.radii)) < bound
    m = mf.Model(beta=beta, scheme="angpt", alpha=2.0)
    p = mf.Particles(*clustered(300, seed=7, width=1e-2))
    a = mf.simulate(m, p, 0.5, backend="particles", time="layers", step=0.1)
    b = mf.simulate(m, p, 0.5, backend="particles-sh", time="layers", step=0.1)
    assert np.max(np.abs(a.final.ambient() - b.final.ambient())) < 1e-12   # 5 layers: little growth


def test_equiangular_tetrahedron_on_s2():
    # n = 4 tokens at the vertices of a regular tetrahedron (ρ0 = −1/3) are stationary
    # (dρ/dt ∝ 1 + (n−1)ρ = 0): the spectral velocity must vanish there to rounding.
    v = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)
    traj = mf.simulate(mf.Model(beta=3.0), mf.Particles(v), 2.0, backend="particles-sh")
    assert np.max(np.abs(traj.final.positions - v)) < 1e-12
    rho, _ = mf.equiangular("post-ln", 3.0, 4, [2.0], rho0=-1 / 3)
    assert abs(rho[0] + 1 / 3) < 1e-14


@pytest.mark.parametrize("model, options, match", [
    (dict(beta=1.0, K=np.diag([1.0, 2.0, 3.0])), {}, "not zonal"),
    (dict(beta=1.0, d=4), {}, "needs d = 3"),
    (dict(beta=1.0, Q=np.stack([np.eye(3)] * 2)), {}, "single head"),
    (dict(beta=1.0, scheme="qkv-norm", Q=np.diag([1.0, 2.0, 1.0]), K=np.diag([1.0, 0.5, 1.0])), {}, "not zonal"),
    (dict(beta=1.0), {"causal": True}, "no causal mask"),
])
def test_unsupported_models(model, options, match):
    d = model.get("d", 3)
    with pytest.raises(mf.UnsupportedModelError, match=match):
        mf.simulate(mf.Model(**model), mf.Particles.uniform(10, d=d), 1.0, backend="particles-sh", **options)


@pytest.mark.parametrize("options, error, match", [
    ({"tol": 0.0}, ValueError, "`tol` must be finite and > 0"),
    ({"tol": 2.0}, ValueError, r"`tol` must be in \(0, 1\)"),
    ({"lmax": 0}, ValueError, "`lmax` must be an integer >= 1"),
    ({"epsilon": 1e-14}, ValueError, r"`epsilon` must be in \[2e-13, 1\)"),
    ({"chunk": 10}, TypeError, "unknown option"),
])
def test_bad_options(options, error, match):
    with pytest.raises(error, match=match):
        mf.simulate(mf.Model(beta=1.0), mf.Particles.uniform(10), 1.0, backend="particles-sh", **options)


@pytest.mark.parametrize("radial", [None, "no", np.array([1, 0])])
def test_radial_must_be_true_or_false(radial):
    # radial was read by its truth value: radial=None returned A = None (the radial=False fast path) without a word,
    # radial="no" the full field, an array numpy's "truth value of an array is ambiguous"
    p = mf.Particles.uniform(10, seed=0)
    with pytest.raises(TypeError, match="`radial` must be True or False"):
        attention_field_sh(mf.Model(1.0), p.positions, radial=radial)


def test_qkv_norm_with_a_value_matrix_that_maps_a_token_to_zero_is_refused():
    # the nonlinear values Vθ/‖Vθ‖ were 0/0: a velocity of NaN for every token, without a word (the exact backend
    # refuses it naming V and the token, and so does this one now)
    x = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    m = mf.Model(1.0, "qkv-norm", V=np.diag([1.0, 1.0, 0.0]))
    for backend in ("particles-sh", "particles"):
        with pytest.raises(ValueError, match=r"`V` must map every direction to a nonzero vector.*maps token 2 to 0"):
            mf.particle_velocity(m, mf.Particles(x), backend=backend)


@pytest.mark.parametrize("tol", [1e-6, 1e-9])
def test_a_looser_tol_loosens_the_transforms_and_stays_within_it(tol):
    from meanfield._attention import _SHEvaluator, transform_epsilon
    m = mf.Model(beta=5.0)
    assert transform_epsilon(None) == 3e-13 and transform_epsilon(None, tol) == tol / 10
    assert transform_epsilon(1e-9, tol) == 1e-9                       # an explicit epsilon wins
    with pytest.raises(ValueError, match=r"`tol` must be in \(0, 1\)"):
        _SHEvaluator(m, tol=20, lmax=10)                              # lmax ignores tol, the transforms do not
    assert _SHEvaluator(m, tol=tol).epsilon == tol / 10
    x, w = clustered(3000, seed=7, width=1e-3)
    err = np.max(np.abs(attention_field_sh(m, x, w, tol=tol).tangential - attention_field(m, x, w).tangential))
    assert err <= tol
    from meanfield._simulate import get_backend
    b = get_backend("particles-sh")(m, mf.Particles(x, w), tol=tol)
    assert b.options["epsilon"] == tol / 10
    full = np.max(np.abs(attention_field_sh(m, x, w, tol=tol).A - attention_field(m, x, w).A))
    assert full <= b.diagnostics()["attention_error_bound"]


@pytest.mark.parametrize("scheme", ["post-ln", "pre-ln"])
def test_the_bound_relative_to_the_velocities_is_reported_and_holds_at_large_beta(scheme):
    """USA at β = 700, 200 uniform tokens: the bound on |A − A_L| is 2.3e292 (the attention's scale e^β), over
    max|P_θA| = 1.35e300 it is 1.7e-8 (SA: 5e-8), and the direct sum's tangential part differs by 1.4e-13 of it."""
    from meanfield._norms import norms
    from meanfield._simulate import get_backend

    x = mf.Particles.uniform(200, 3, seed=0).positions
    for attention in ("softmax", "unnormalized"):
        m = mf.Model(700.0, scheme, attention=attention)
        e, s = attention_field(m, x), attention_field_sh(m, x)
        diag = get_backend("particles-sh")(m, mf.Particles(x), method="rk4", step=1e-3).diagnostics()
        rel = diag["relative_velocity_error_bound"]
        assert rel == pytest.approx(diag["attention_error_bound"] / np.max(norms(s.tangential)), rel=1e-12)
        assert rel < 1e-7, attention
        assert np.max(norms(e.tangential - s.tangential)) <= rel * np.max(norms(e.tangential))
    with warnings.catch_warnings(record=True) as caught:           # the velocity is resolved: no warning of it
        warnings.simplefilter("always", mf.MeanfieldWarning)
        traj = mf.simulate(m, mf.Particles(x), 1e-3, backend="particles-sh", method="rk4", step=1e-3)     # USA
    # (the step is not: h·|v| = 1.4e297, which the fixed-step check reports)
    assert [str(w.message)[:60] for w in caught] == ["backend='particles-sh': the fixed step h=0.001 (method='rk4'"]
    assert traj.success and np.all(traj.diagnostics["relative_velocity_error_bound"] < 1e-7)


@pytest.mark.parametrize("beta, computed", [(30.0, 0.507), (50.0, 3.4e5), (700.0, 3.1e286)])
def test_unresolved_velocities_of_well_separated_tokens_are_reported_and_warned(beta, computed):
    """Two orthogonal tokens, USA Post-LN: |P_θA| = 1/2 exactly (the direct sum gives it), but the spectral bound is
    ~tol·e^β: the velocity came out as 0.507, 3.4e5, 3.1e286 at β = 30, 50, 700 with Status OK, no warning, and
    an attention_error_bound (28, 1.3e10, 2.3e292) that said nothing without a scale.  Relative to max|P_θA| the
    bound is ≥ 1 (56, 3.8e4, 7.3e5) and the run warns once; softmax attention's velocity is as wrong relatively
    (the same field over Z) but its bound, ~1e-11 absolute, would take 10¹¹ time units to move a token by a radian."""
    from meanfield._norms import norms

    start = mf.Particles([[1.0, 0, 0], [0, 1.0, 0]])
    m = mf.Model(beta, attention="unnormalized")
    assert np.max(norms(attention_field(m, start.positions).tangential)) == pytest.approx(0.5, rel=1e-15)
    got = np.max(norms(attention_field_sh(m, start.positions).tangential))
    assert got == pytest.approx(computed, rel=0.05)
    with pytest.warns(mf.MeanfieldWarning, match=r"backend='particles-sh': the spectral velocity is not resolved at "
                      r"t=0: its error bound \S+ is \S+ times the largest tangential attention") as caught:
        traj = mf.simulate(m, start, 0.1, backend="particles-sh", method="rk4", step=0.01, save_every=0.05)
    assert sum("not resolved" in str(w.message) for w in caught) == 1            # once per run
    assert traj.diagnostics["relative_velocity_error_bound"][0] >= 1       # (later states are the noise's)
    with warnings.catch_warnings():
        warnings.simplefilter("error", mf.MeanfieldWarning)
        sa = mf.simulate(mf.Model(beta), start, 1.0, backend="particles-sh", method="rk4", step=0.1)
    assert sa.diagnostics["relative_velocity_error_bound"][0] > 1 and sa.diagnostics["attention_error_bound"][0] < 1e-10


def test_the_bound_counts_the_transforms():
    eps_z, eps_m = sh_error_bounds(5.0, 21)
    with_z, with_m = sh_error_bounds(5.0, 21, 1e-10)
    assert with_z - eps_z == pytest.approx(2 * np.sqrt(4 * np.pi) * 1e-10, rel=1e-3)   # Σ(2ℓ+1)λ_ℓ e^{-β} ≈ 1
    assert with_m > eps_m + with_z - eps_z


def test_reports_band_limit_and_bound():
    traj = mf.simulate(mf.Model(beta=5.0), mf.Particles.uniform(100), 0.1, backend="particles-sh", step=0.05)
    assert traj.options["lmax"] == mf.kernel_bandlimit(5.0, 1e-12)
    assert np.all(traj.diagnostics["kernel_truncation_error"] < 1e-12)
    assert np.all(traj.diagnostics["attention_error_bound"] < 1e-10)
    exact = mf.simulate(mf.Model(beta=5.0), mf.Particles.uniform(100), 0.1, backend="particles", step=0.05)
    for key in ("energy", "max_speed", "max_attention", "mean_alignment"):
        assert np.allclose(traj.diagnostics[key], exact.diagnostics[key], rtol=1e-12, atol=0), key


def test_tokens_at_poles_and_on_axes():
    # the tangent frame is singular at the poles and atan2 has signed-zero cases on the axes
    special = np.array([[0, 0, 1.0], [0, 0, -1.0], [-0.0, -0.0, 1.0], [1.0, 0, 0], [-1.0, -0.0, 0], [-0.0, 1.0, 0],
                        [0, -1.0, 0], [1.0, 0, -0.0], [-0.6, -0.0, 0.8], [0.6, -0.0, -0.8], [1e-300, -1e-300, 1.0]])
    x = np.vstack([special, clustered(500, seed=8)[0]])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for kw in ({}, {"V": np.diag([1.0, 2.0, -1.0])}):
        m = mf.Model(beta=5.0, **kw)
        e, s = attention_field(m, x, None), attention_field_sh(m, x, None)
        assert relerr(s.A, e.A) < 1e-12
        t = attention_field_sh(mf.Model(beta=5.0), x, None, radial=False)
        assert relerr(t.tangential, attention_field(mf.Model(beta=5.0), x, None).tangential) < 1e-12


def test_geometry_angles_and_frame():
    # ducc0's locations and the tangent frame, against arctan2 on the same unit vectors: absolute
    # accuracy of an ulp of π (the angles are ~π in size), also on the axes and near the poles
    from meanfield._attention import _Workspace, _fill_geometry
    special = np.array([[0, 0, 1.0], [0, 0, -1.0], [-0.0, -0.0, 1.0], [1.0, 0, 0], [-1.0, -0.0, 0], [-0.0, 1.0, 0],
                        [0, -1.0, 0], [1.0, -0.0, 0], [1e-12, 1e-13, 1.0], [-1e-9, -1e-15, -1.0], [1.0, 1e-17, 0.5],
                        [1.0, -1e-17, 0.5], [-1.0, 1e-17, 0.5]])
    x = np.vstack([special, clustered(2000, seed=3)[0], np.random.default_rng(4).standard_normal((2000, 3))])
    scaled = x * np.random.default_rng(5).uniform(0.5, 2.0, (len(x), 1))      # off-sphere stages: normalized here
    ws = _Workspace(len(x))
    _fill_geometry(ws, scaled, slice(0, len(x)))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    theta, phi = ws.loc[:, 0], ws.loc[:, 1]
    assert np.max(np.abs(ws.xt.T - u)) < 4e-16
    assert np.all((theta >= 0) & (theta <= np.pi) & (phi >= 0) & (phi <= 2 * np.pi))
    rho = np.hypot(u[:, 0], u[:, 1])
    assert np.max(np.abs(theta - np.arctan2(rho, u[:, 2]))) < 2 * np.pi * 2.3e-16
    off_axis = rho > 0
    dphi = np.angle(np.exp(1j * (phi - np.arctan2(u[:, 1], u[:, 0]))))[off_axis]
    assert np.max(np.abs(dphi)) < 2 * np.pi * 2.3e-16
    # the frame: e_θ, e_φ, u orthonormal, and e_θ = ∂u/∂θ at the φ given to ducc0 (poles included)
    e_t = ws.e_theta.T
    e_p = np.column_stack([ws.e_phi.T, np.zeros(len(x))])
    for a, b, dot in ((e_t, e_t, 1), (e_p, e_p, 1), (e_t, e_p, 0), (e_t, u, 0), (e_p, u, 0)):
        assert np.max(np.abs(np.einsum("ij,ij->i", a, b) - dot)) < 1e-15
    expected_e_t = np.column_stack([np.cos(theta) * np.cos(phi), np.cos(theta) * np.sin(phi), -np.sin(theta)])
    assert np.max(np.abs(e_t - expected_e_t)) < 1e-15


def test_concurrent_calls_do_not_share_scratch():
    # the spectral evaluator reuses per-thread scratch arrays: two threads at once must not interfere
    from concurrent.futures import ThreadPoolExecutor
    m = mf.Model(beta=5.0)
    inputs = [clustered(3000, seed=s)[0] for s in range(4)]
    ref = [attention_field_sh(m, x, None, radial=False).tangential.copy() for x in inputs]
    with ThreadPoolExecutor(4) as ex:
        out = list(ex.map(lambda x: attention_field_sh(m, x, None, radial=False).tangential, inputs * 3))
    # ducc0's threaded sums are not bitwise reproducible (rounding order): interference would be O(1)
    for i, o in enumerate(out):
        assert np.max(np.abs(o - ref[i % 4])) < 1e-14


def _split_evaluators(model, n):
    """The spectral evaluator on one thread and on two threads (two slices of points at n ≥ 10⁴ on either)."""
    from meanfield._attention import _SHEvaluator
    one, two = _SHEvaluator(model, nthreads=1), _SHEvaluator(model, nthreads=2)
    assert len(one._plan(n)) == len(two._plan(n)) == 2
    return one, two


@pytest.mark.parametrize("case", ["sa", "usa", "general-V", "qkv-norm-nonlinear-V"])
@pytest.mark.parametrize("radial", [True, False])
def test_one_parallel_region_gives_the_bits_of_the_two_phases(case, radial):
    # the tokens at themselves on two slices run as one region with a barrier; coefficients() then field()
    # run as two parallel phases: the same slices, the same order of the sum, so the same bits
    x, w = clustered(12_000, seed=3)
    _, two = _split_evaluators(mf.Model(beta=5.0, **CASES[case]), len(x))
    a, b = two(x, w, radial=radial), two.field(two.coefficients(x, w), x, radial)
    for name in a._fields:
        u, v = getattr(a, name), getattr(b, name)
        assert (u is None and v is None) or np.array_equal(u, v), name


@pytest.mark.parametrize("failing_slice", [0, 1])
def test_a_failing_slice_raises_its_own_error_and_the_next_call_works(failing_slice, monkeypatch):
    # slice 0 runs on the calling thread, slice 1 on a worker; either failing before the barrier must not leave
    # the other waiting (a stuck worker would hang every later call), and its own error is the one raised
    from meanfield._attention import _SHEvaluator
    x, w = clustered(12_000, seed=3)
    _, two = _split_evaluators(mf.Model(beta=5.0), len(x))
    ref = two(x, w).tangential.copy()
    real = _SHEvaluator._coefficients_part
    starts = [sl.start for sl in two._plan(len(x))]

    def flaky(self, ws, pts, weights, sl):
        if sl.start == starts[failing_slice]:
            raise FloatingPointError(f"slice {failing_slice}")
        return real(self, ws, pts, weights, sl)

    monkeypatch.setattr(_SHEvaluator, "_coefficients_part", flaky)
    with pytest.raises(FloatingPointError, match=f"slice {failing_slice}"):
        two(x, w)
    monkeypatch.setattr(_SHEvaluator, "_coefficients_part", real)
    assert np.array_equal(two(x, w).tangential, ref)


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_interrupt_inside_submit_leaves_no_worker_behind(when, monkeypatch):
    # a Ctrl-C raised inside submit(), before or after the task is queued: the queued task must not wait at the
    # barrier forever (every later call, and the interpreter's exit, hung) nor write into the next call's arrays
    import meanfield._threads as threads_module
    x, w = clustered(12_000, seed=3)
    _, two = _split_evaluators(mf.Model(beta=5.0), len(x))
    ref = two(x, w).tangential.copy()
    pool = threads_module.executor()

    class Interrupting:
        def submit(self, fn, *args):
            if when == "before":
                raise KeyboardInterrupt
            future = pool.submit(fn, *args)
            raise KeyboardInterrupt

    monkeypatch.setattr(threads_module, "executor", lambda: Interrupting())
    with pytest.raises(KeyboardInterrupt):
        two(x, w)
    monkeypatch.setattr(threads_module, "executor", lambda: pool)
    import threading
    every_worker = threading.Barrier(pool._max_workers + 1, timeout=20)   # met only if no worker is stuck
    for _ in range(pool._max_workers):
        pool.submit(every_worker.wait)
    every_worker.wait()
    assert np.array_equal(two(x, w).tangential, ref)


def _interrupted_twice_then(monkeypatch, first, second):
    """Run ``first()`` with a Ctrl-C (a real SIGINT) at 0.2 s and another at 0.5 s, while its worker's syntheses sleep
    1 s: it must raise KeyboardInterrupt.  Then, at once, ``second()``, whose own main slice sleeps 1.2 s so that
    the first call's late worker writes (at ~1 s) in the middle of it.  Returns what ``second()`` returns.

    The signals raise only during ``first()``: one still to come must not stop the second call, nor pytest."""
    import signal
    import threading
    import time
    from meanfield._attention import _FieldJob
    real = _FieldJob.part
    sleep = {"worker": 1.0, "main": 0.0}

    def slow(self, *args):
        time.sleep(sleep["main" if threading.current_thread() is threading.main_thread() else "worker"])
        return real(self, *args)

    armed = [True]

    def handler(signum, frame):
        if armed[0]:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    monkeypatch.setattr(_FieldJob, "part", slow)
    main = threading.main_thread().ident
    timers = [threading.Timer(t, signal.pthread_kill, (main, signal.SIGINT)) for t in (0.2, 0.5)]
    try:
        for timer in timers:
            timer.start()
        with pytest.raises(KeyboardInterrupt):
            first()
        armed[0] = False
        sleep.update(worker=0.0, main=1.2)
        return second()
    finally:
        armed[0] = False
        for timer in timers:
            timer.join()
        signal.signal(signal.SIGINT, previous)


_REAL_SIGINT = pytest.mark.skipif(not hasattr(__import__("signal"), "pthread_kill"),
                                  reason="sends a real SIGINT to this thread")


@_REAL_SIGINT
def test_a_second_interrupt_while_the_worker_runs_leaves_the_next_call_correct(monkeypatch):
    # Ctrl-C while the caller waits for the worker, then again while it waits for the cancelled worker to finish:
    # the worker, still running, wrote into the scratch arrays of the caller's next call (its error was 0.32)
    x, w = clustered(12_000, seed=3)
    y, v = clustered(12_000, seed=4)
    _, two = _split_evaluators(mf.Model(beta=5.0), len(x))
    ref = two(y, v).tangential.copy()
    out = _interrupted_twice_then(monkeypatch, lambda: two(x, w), lambda: two(y, v).tangential)
    assert np.array_equal(out, ref)


@_REAL_SIGINT
def test_an_interrupt_while_map_slices_waits_leaves_the_next_call_correct(monkeypatch):
    # the field at other targets goes through map_slices: a Ctrl-C while it waited for the worker's slice (and a
    # second one during the wait for it to finish) let that slice write into the next call's arrays (error 2.6)
    x, w = clustered(12_000, seed=3)
    targets, other = clustered(12_000, seed=5)[0], clustered(12_000, seed=6)[0]
    _, two = _split_evaluators(mf.Model(beta=5.0), len(x))
    ref = two(x, w, y=other).A.copy()
    out = _interrupted_twice_then(monkeypatch, lambda: two(x, w, y=targets), lambda: two(x, w, y=other).A)
    assert np.array_equal(out, ref)


def test_calls_from_more_threads_than_workers_finish():
    # four callers, each holding one worker of the pool at its barrier: the queued ones wait, none deadlocks
    from concurrent.futures import ThreadPoolExecutor
    x, w = clustered(12_000, seed=3)
    _, two = _split_evaluators(mf.Model(beta=5.0), len(x))
    ref = two(x, w).tangential.copy()
    with ThreadPoolExecutor(4) as ex:
        futures = [ex.submit(lambda: two(x, w).tangential.copy()) for _ in range(8)]
        out = [f.result(timeout=120) for f in futures]
    assert all(np.array_equal(o, ref) for o in out)


@pytest.mark.parametrize("case", ["sa", "usa", "general-V", "qkv-norm-nonlinear-V"])
def test_point_slices_on_threads_equal_one_call(case):
    # two slices of points on two threads: the coefficients are sums of the slices' (linear), the
    # syntheses write disjoint parts; only the rounding order of the sum differs
    x, w = clustered(12_000, seed=3)
    m = mf.Model(beta=5.0, **CASES[case])
    one, two = _split_evaluators(m, len(x))
    a, b = one(x, w), two(x, w)
    assert relerr(b.A, a.A) < 1e-14 and relerr(b.tangential, a.tangential) < 1e-14
    assert np.allclose(b.log_z, a.log_z, rtol=1e-14, atol=0)
    y = clustered(11_000, seed=4)[0]
    assert relerr(two(x, w, y).A, one(x, w, y).A) < 1e-14
    assert relerr(two(x, w, y).A[:500], attention_field(m, x, w, targets=y[:500]).A) < 1e-12


def test_slices_run_on_the_calling_worker_thread_with_the_same_bits():
    # a call made from a meanfield worker thread runs its slices itself (waiting on its own pool could deadlock);
    # the slices are the same, so the result is the same to the bit
    from meanfield._threads import executor, map_slices, on_worker, slices
    assert len(slices(40_000, 2)) == 2 and not on_worker()
    names = executor().submit(lambda: map_slices(lambda s: threading.current_thread().name, slices(40_000, 2)))
    assert len(set(names.result(timeout=30))) == 1
    x, w = clustered(12_000, seed=5)
    m = mf.Model(beta=5.0)
    one, two = _split_evaluators(m, len(x))
    worker = executor().submit(lambda: two(x, w).A).result(timeout=60)
    assert np.array_equal(worker, two(x, w).A) and relerr(worker, one(x, w).A) < 1e-14


def test_directions_off_the_sphere_are_normalized():
    # Runge–Kutta stages leave the sphere; the spectral field (and the backend's right-hand side) is that of θ/‖θ‖
    from meanfield._simulate import get_backend
    x, w = clustered(12_000, seed=6)
    scaled = x * np.random.default_rng(0).uniform(0.5, 2.0, size=(len(x), 1))
    for kw in ({}, CASES["general-V"]):
        m = mf.Model(beta=5.0, **kw)
        for nthreads in (1, 2):
            ev = _split_evaluators(m, len(x))[nthreads - 1]
            assert relerr(ev(scaled, w).A, ev(x, w).A) < 1e-14
            assert relerr(ev(scaled, w).tangential[:500], attention_field(m, x, w, targets=x[:500]).tangential) < 1e-12
    st = get_backend("particles-sh")(mf.Model(beta=5.0, scheme="pre-ln"), mf.Particles(x, w), step=0.1)
    y = np.concatenate([scaled, np.ones((len(x), 1))], axis=1)
    ref = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    assert relerr(st.rhs(0.0, y), st.rhs(0.0, ref)) < 1e-14


def test_geometry_is_reused_above_the_workspace_cache_size(monkeypatch):
    # above _WORKSPACE_CACHE_MAX points the scratch arrays are not kept per thread: the coefficients'
    # geometry must still reach the field evaluation (a fresh workspace there meant garbage angles)
    from meanfield import _attention
    from meanfield._sweep._distributed import _shard_class
    monkeypatch.setattr(_attention, "_WORKSPACE_CACHE_MAX", 100)
    x, w = clustered(3000, seed=9)
    m = mf.Model(beta=5.0)
    exact = attention_field(m, x, w)
    assert relerr(attention_field_sh(m, x, w).A, exact.A) < 1e-12
    assert relerr(attention_field_sh(m, x, w, radial=False).tangential, exact.tangential) < 1e-12
    shard = _shard_class()(m, mf.Particles(x, w), step=0.1)
    shard._key = ("test-shard", 0)
    shard._mu = shard.coefficients(shard.y)
    assert relerr(shard._field(0.0, x, True).A, exact.A) < 1e-12


@pytest.mark.slow
def test_a_quarter_million_tokens_on_two_threads_match_the_exact_sum():
    # above the per-thread scratch cache (2·10⁵ points) and in two slices: the path of N = 10⁶ runs
    from meanfield._attention import _WORKSPACE_CACHE_MAX
    from meanfield._simulate import get_backend
    x, w = clustered(250_000, seed=11)
    assert len(x) > _WORKSPACE_CACHE_MAX
    m = mf.Model(beta=5.0)
    st = get_backend("particles-sh")(m, mf.Particles(x, w), step=0.1, threads=2)
    v = st.velocity()[0]
    exact = attention_field(m, x, w, targets=x[::500]).tangential
    assert relerr(v[::500], exact) < 1e-12


def test_the_attention_of_no_mass_is_refused_but_its_coefficients_are_zero():
    # zero weights gave NaN (spectral) or A = 0 (direct sum); the coefficients are linear and may weigh 0 (a shard)
    p = mf.Particles.uniform(5, seed=0)
    for field in (mf.attention_field_sh, mf.attention_field):
        with pytest.raises(ValueError, match="`weights` must have a positive sum"):
            field(mf.Model(1.0), p.positions, weights=np.zeros(5))
    from meanfield._attention import sh_coefficients
    assert not np.any(sh_coefficients(mf.Model(1.0), p.positions, weights=np.zeros(5)))
    with pytest.raises(ValueError, match="`t` must be finite and >= 0"):
        mf.particle_velocity(mf.Model(1.0, scheme="ln-scaling"), p, t=-5.0)


def test_causal_false_as_a_numpy_bool_runs():
    """np.False_ was refused as a causal mask ("has no causal mask"): only the object False passed."""
    p = mf.Particles.uniform(10, seed=2)
    runs = [mf.simulate(mf.Model(1.0), p, 0.1, backend="particles-sh", causal=c) for c in (np.False_, False)]
    assert np.array_equal(runs[0].final.positions, runs[1].final.positions)
    with pytest.raises(mf.UnsupportedModelError, match="has no causal mask"):
        mf.simulate(mf.Model(1.0), p, 0.1, backend="particles-sh", causal=np.True_)


def test_a_large_effective_beta_is_named_as_such_not_as_beta():
    """beta=1 with Q = 1e10·I was refused as "`beta` must be ≤ 1e9 … got beta=10000000000.0"."""
    with pytest.raises(ValueError, match=r"beta·c = 1e\+10 \(beta=1\.0, QᵀK = c·I with c = 1e\+10\), which must be"):
        mf.simulate(mf.Model(1.0, Q=1e10 * np.eye(3)), mf.Particles.uniform(10), 1.0, backend="particles-sh")


@pytest.mark.parametrize("beta, lmax", [(5.0, 6), (20.0, 20)])
def test_the_kernel_part_of_the_bounds_is_the_closed_form_tail(beta, lmax):
    # e^{βt} = Σ_ℓ (2ℓ+1) λ_ℓ P_ℓ(t) at t = 1 gives Σ_ℓ (2ℓ+1) λ_ℓ = e^β, and its β-derivative Σ_ℓ (2ℓ+1) ∂_βλ_ℓ = e^β:
    # so the tails past lmax, scaled by e^{-β}, are 1 − e^{-β} Σ_{ℓ≤lmax} (2ℓ+1) λ_ℓ (ε_Z) and likewise for ∂_βλ_ℓ
    # (the radial part of ε_M; the tangential part √(ℓ(ℓ+1)) λ_ℓ/β is positive).  A bound that started its tail one
    # degree late (ell > lmax + 1) passed every test, the observed errors being well inside it.  Tolerance: the
    # multipliers' 2e-13 relative error over a sum of ~1 (the tails are > 1e-6, their first term most of it)
    ell = np.arange(lmax + 1)
    tail_z = 1 - np.sum((2 * ell + 1) * mf.funk_hecke(beta, lmax, scaled=True))
    tail_r = 1 - np.sum((2 * ell + 1) * mf.sphere.funk_hecke_dbeta(beta, lmax, scaled=True))
    eps_z, eps_m = sh_error_bounds(beta, lmax)
    assert tail_z > 1e-6 and tail_r > 1e-6
    assert eps_z == pytest.approx(tail_z, rel=0, abs=1e-12)
    assert eps_m > tail_r + 1e-12


def test_a_fixed_step_that_cannot_resolve_the_motion_warns():
    """USA at β = 20, 20 tokens (max|dθ/dt| = 4.5e6): step=1e-3 ended 1.86 away from the direct sum's run with
    Status OK and no warning; it now warns.  At step=1e-8 (h·|v| = 0.045) the backends agree to 5e-13, silently."""
    m, p = mf.Model(20.0, attention="unnormalized"), mf.Particles.uniform(20, seed=0)
    with pytest.warns(mf.MeanfieldWarning, match=r"backend='particles-sh': the fixed step h=0.001 .* does not resolve "
                      r"the motion at t=0"):
        assert mf.simulate(m, p, 0.01, backend="particles-sh", method="rk4", step=1e-3).status is mf.Status.OK
    with warnings.catch_warnings():
        warnings.simplefilter("error", mf.MeanfieldWarning)
        a, b = (mf.simulate(m, p, 1e-6, backend=be, method="rk4", step=1e-8).final.positions
                for be in ("particles-sh", "particles"))
    assert np.max(np.abs(a - b)) < 1e-11 and np.max(np.abs(a - p.positions)) > 0.5     # (5.4e-13; moved 0.64)


@pytest.mark.parametrize("c", [-1.0, -2.5, 0.0])
def test_a_zonal_but_repulsive_kernel_is_refused_as_such(c):
    # QᵀK = c·I with c ≤ 0 is zonal: the refusal said "not zonal … so it has no Funk–Hecke expansion"
    model = mf.Model(2.0, K=c * np.eye(3))
    with pytest.raises(mf.UnsupportedModelError, match=rf"QᵀK = c·I with c = {c:g} ≤ 0: .* is zonal but not attracting"):
        mf.simulate(model, mf.Particles.uniform(10, seed=0), 0.1, backend="particles-sh")
    with pytest.raises(mf.UnsupportedModelError, match="is not zonal"):
        mf.simulate(mf.Model(2.0, K=np.diag([1.0, 2.0, 3.0])), mf.Particles.uniform(10, seed=0), 0.1,
                    backend="particles-sh")


@pytest.mark.parametrize("n", [12_000, 30_000])
def test_the_field_and_a_run_are_the_same_bits_for_every_thread_count(n):
    """The adjoint transform was cut into one slice per thread and its slices' coefficients summed in order, so
    the thread count set the order of the sum: at N = 12 000 one thread differed from two (1.2e-15 in A), at
    30 000 each of 1–4 threads from the others; ducc0 also picks its kernel from the points and threads of a
    call.  The slices now depend on N and L only: every thread count gives the same bits (a sweep's result
    does not depend on ``threads``)."""
    x, w = clustered(n, seed=12)
    general = mf.Model(beta=5.0, **CASES["general-V"])
    for m in (mf.Model(beta=5.0), general, mf.Model(beta=5.0, **CASES["qkv-norm-nonlinear-V"])):
        ref = attention_field_sh(m, x, w, threads=1)
        for threads in (2, 3, 4):
            out = attention_field_sh(m, x, w, threads=threads)
            assert all(np.array_equal(getattr(out, k), getattr(ref, k)) for k in ("A", "tangential", "log_z"))
    y = clustered(5_000, seed=13)[0]         # other targets, and the large band limit that used ducc0's threads
    ref = attention_field_sh(general, x, w, targets=y, lmax=60, threads=1).A
    assert all(np.array_equal(attention_field_sh(general, x, w, targets=y, lmax=60, threads=t).A, ref)
               for t in (2, 3, 4))
    p = mf.Particles(x, w)
    runs = [mf.simulate(mf.Model(beta=5.0), p, 0.2, backend="particles-sh", step=0.1, threads=t).final.positions
            for t in (1, 2, 3, 4)]
    assert all(np.array_equal(r, runs[0]) for r in runs[1:])


def test_one_thread_runs_the_two_slices_itself(monkeypatch):
    # threads=1 cuts the tokens as two threads do (the same bits) but must not use the worker pool for it
    import meanfield._threads as threads_module
    x, w = clustered(12_000, seed=14)
    two = attention_field_sh(mf.Model(beta=5.0), x, w, threads=2).A

    def no_pool():
        raise AssertionError("threads=1 used a worker thread")

    monkeypatch.setattr(threads_module, "executor", no_pool)
    assert np.array_equal(attention_field_sh(mf.Model(beta=5.0), x, w, threads=1).A, two)


@pytest.mark.parametrize("beta", [40.0, 200.0])
def test_the_syntheses_alone_are_the_same_bits_for_every_thread_count(beta):
    # the syntheses are per point, yet ducc0 picks each call's kernel (oversampling, support) from its points and
    # its threads: from the same coefficients, the field at 5 000 targets on ducc0's two threads (L ≥ 40 below
    # 16 (L+1)² points) differed from one thread by 1.1e-16 (β = 40, L = 53) and 2.2e-16 (β = 200, L = 117)
    from meanfield._attention import attention_field_from_coefficients, sh_coefficients
    m = mf.Model(beta)
    x, y = clustered(3000, seed=15)[0], clustered(5000, seed=16)[0]
    c = sh_coefficients(m, x, threads=1)
    ref = attention_field_from_coefficients(m, c, y, threads=1).A
    assert all(np.array_equal(attention_field_from_coefficients(m, c, y, threads=t).A, ref) for t in (2, 3, 4))


def test_a_large_call_is_cut_by_its_size_and_is_the_same_bits_for_every_thread_count():
    # beyond 2.5·10⁵ points the slices are one per 125 000 (so that more cores share the call), still a function of
    # the point count only: 4·10⁵ points are 3 slices whatever `threads` is
    from meanfield import _threads

    assert [_threads.reproducible_parts(n) for n in (10**4, 2 * 10**5, 4 * 10**5, 10**6, 10**8)] == [2, 2, 3, 8, 32]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((400_000, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    model = mf.Model(5.0)
    fields = [mf.attention_field_sh(model, x, threads=n) for n in (1, 2, 3)]
    for f in fields[1:]:
        assert np.array_equal(f.A, fields[0].A) and np.array_equal(f.log_z, fields[0].log_z)


def test_an_unresolved_velocity_that_could_move_a_token_by_a_visible_angle_warns():
    # two orthogonal USA tokens at β = 30, to t = 0.02: the bound (28, 56× the velocity 1/2) could move a token by
    # 0.56 rad, below the former one-radian threshold, and the run ground silently (rk45 held at ~1.8e-7 by the noisy
    # velocity: 740 s, against 0.07 s for the direct sum); softmax's ~1e-11 bound stays quiet over 10⁴ time units
    from meanfield.backends._particles_sh import UNRESOLVED_DRIFT

    start = mf.Particles([[1.0, 0, 0], [0, 1.0, 0]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", mf.MeanfieldWarning)
        mf.simulate(mf.Model(30.0, attention="unnormalized"), start, 0.02, backend="particles-sh", max_steps=5)
    unresolved = [str(w.message) for w in caught if "not resolved" in str(w.message)]
    assert len(unresolved) == 1 and re.search(r"could move a token by 0\.5\d* rad by t_final", unresolved[0])
    assert UNRESOLVED_DRIFT == 0.01
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", mf.MeanfieldWarning)
        sa = mf.simulate(mf.Model(30.0), start, 1e4, backend="particles-sh", max_steps=5)
    assert not [w for w in caught if "not resolved" in str(w.message)]
    assert sa.diagnostics["relative_velocity_error_bound"][0] > 1
