"""The exact particle backend: attention against a naive dense sum, the equiangular ODE for every scheme,
observed orders of the time integrators and of the layer maps, causal masking, invariances, bad input."""
import warnings

import itertools
import re

import numpy as np
import pytest

import meanfield as mf
from meanfield._validate import ZeroVectorError
from meanfield import SCHEMES
from meanfield._attention import attention_field

CONTINUOUS = sorted(name for name, s in SCHEMES.items() if s.continuous)


# ------------------------------------------------------------------------------------------------
# an independent reference: the dense formula of docs/model.md ("Tokens and attention"), no chunks, no
# log-sum-exp shift

def naive_attention(model, theta, w, causal=False):
    Qs, Ks, Vs = model.matrices()
    n, d = theta.shape
    A = np.zeros((n, d))
    for Q, K, V in zip(Qs, Ks, Vs):
        q, k, v = theta @ Q.T, theta @ K.T, theta @ V.T
        if model.scheme_def.normalize_qkv:
            q, k, v = (a / np.linalg.norm(a, axis=1, keepdims=True) for a in (q, k, v))
        E = np.exp(model.beta * q @ k.T) * w[None, :]
        if causal:
            E = np.tril(E)
        num = E @ v
        A += num / E.sum(1, keepdims=True) if model.softmax else num
    return A


def random_state(n, d, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    w = rng.random(n) + 0.1
    return x / np.linalg.norm(x, axis=1, keepdims=True), w / w.sum()


def equiangular_start(n, d=None, seed=0):
    """n orthonormal directions in R^d (ρ0 = 0), randomly rotated so no coordinate is special."""
    d = d or n
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return mf.Particles(q[:n])


def pairwise(traj_state):
    X = traj_state.positions
    G = X @ X.T
    return G[~np.eye(len(X), dtype=bool)]


def model_for(scheme, beta=5.0, d=6, **kw):
    extra = {"tau": 0.73} if scheme == "mix-ln" else {}
    return mf.Model(beta=beta, scheme=scheme, d=d, **extra, **kw)


# ------------------------------------------------------------------------------------------------
# attention field

@pytest.mark.parametrize("attention", ["softmax", "unnormalized"])
@pytest.mark.parametrize("scheme", ["post-ln", "qkv-norm"])
def test_attention_matches_dense_formula_multihead(attention, scheme):
    d, heads = 4, 3
    rng = np.random.default_rng(1)
    Q, K, V = (rng.standard_normal((heads, d, d)) / 2 for _ in range(3))
    m = mf.Model(beta=1.5, scheme=scheme, attention=attention, d=d, Q=Q, K=K, V=V)
    theta, w = random_state(300, d)
    ref = naive_attention(m, theta, w)
    for chunk, threads in [(None, None), (1, 1), (7, 2), (1000, 1)]:
        f = attention_field(m, theta, w, chunk=chunk, threads=threads)
        assert np.max(np.abs(f.A - ref)) < 1e-13 * np.max(np.abs(ref))
    assert np.allclose(f.radial, np.einsum("ij,ij->i", theta, ref), rtol=0, atol=1e-13 * np.abs(ref).max())
    assert np.allclose(f.norm, np.linalg.norm(ref, axis=1), rtol=1e-13)
    assert np.max(np.abs(np.einsum("ij,ij->i", f.tangential, theta))) < 1e-14 * np.abs(ref).max()
    # log Z per head, against the dense sum
    q, k = theta @ Q[1].T, theta @ K[1].T
    if scheme == "qkv-norm":
        q, k = q / np.linalg.norm(q, axis=1, keepdims=True), k / np.linalg.norm(k, axis=1, keepdims=True)
    assert np.allclose(f.log_z[1], np.log(np.exp(1.5 * q @ k.T) @ w), rtol=0, atol=1e-13)


def test_attention_causal_and_targets():
    m = mf.Model(beta=2.0, d=3, V=np.diag([1.0, -0.5, 2.0]))
    theta, w = random_state(200, 3, seed=3)
    ref = naive_attention(m, theta, w, causal=True)
    for chunk in (None, 1, 13):
        f = attention_field(m, theta, w, causal=True, chunk=chunk)
        assert np.max(np.abs(f.A - ref)) < 1e-13
    # targets: the field at new points equals the field of the union restricted to them, with zero weight
    y, _ = random_state(50, 3, seed=4)
    f = attention_field(m, theta, w, targets=y)
    union = naive_attention(m, np.vstack([theta, y]), np.concatenate([w, np.zeros(50)]))[200:]
    assert np.max(np.abs(f.A - union)) < 1e-13


def test_softmax_is_stable_at_huge_beta():
    # β = 2000: e^{β} overflows, the log-sum-exp shift must not.  Two far-apart clusters: each token
    # attends to its own cluster only, so A equals the cluster's mean direction.
    rng = np.random.default_rng(0)
    c1, c2 = np.array([0, 0, 1.0]), np.array([1.0, 0, 0])
    pts = np.vstack([c1 + 1e-3 * rng.standard_normal((5, 3)), c2 + 1e-3 * rng.standard_normal((5, 3))])
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    f = attention_field(mf.Model(beta=2000.0), pts, None)
    assert np.all(np.isfinite(f.A)) and np.all(np.isfinite(f.log_z))
    assert np.all(np.linalg.norm(f.A[:5] - c1, axis=1) < 0.01)
    assert np.all(np.linalg.norm(f.A[5:] - c2, axis=1) < 0.01)


@pytest.mark.parametrize("attention, beta", [("softmax", 400.0), ("softmax", 2000.0), ("unnormalized", 400.0)])
def test_a_zero_weight_token_does_not_set_the_shift(attention, beta):
    # A zero-weight token (a test particle, padding, a quadrature node where ρ = 0) antipodal to the mass: its own
    # logit β was the row maximum of the shift, the mass's logits ≈ −β lay 2β below it and underflowed (2β > 745),
    # so the token got A = 0 instead of the mass's mean direction (and Peri-LN stopped: "‖A_j‖ = 0").
    c = np.cos(0.1)
    theta = np.array([[0.0, 0.0, 1.0], [0.0, np.sin(0.1), -c], [np.sin(0.1), 0.0, -c]])
    w = np.array([0.0, 0.5, 0.5])
    m = mf.Model(beta, attention=attention)
    f = attention_field(m, theta, w)
    mean = (theta[1] + theta[2]) / 2
    if attention == "softmax":      # the mass's two tokens are symmetric about the token: equal weights
        assert np.allclose(f.A[0], mean, rtol=0, atol=1e-15)
    else:                           # Σ w_k e^{β⟨θ_0, θ_k⟩} θ_k = e^{−βc} (θ_1 + θ_2)/2, ≈ 1e-173 (β = 400)
        assert np.allclose(f.A[0], np.exp(-beta * c) * mean, rtol=1e-12, atol=0)
    assert np.isfinite(f.log_z[0, 0]) and f.log_z[0, 0] == pytest.approx(-beta * c, rel=1e-14)
    # causal: token 0 sees no mass (A = 0, log Z = −inf, as before); token 1 sees the zero-weight token and itself
    g = attention_field(m, theta, w, causal=True)
    assert np.array_equal(g.A[0], np.zeros(3)) and g.log_z[0, 0] == -np.inf
    if attention == "softmax":
        assert np.allclose(g.A[1], theta[1], rtol=0, atol=1e-15)
    if attention == "softmax" and beta == 400.0:
        dtheta, dr = mf.particle_velocity(mf.Model(beta, "peri-ln"), mf.Particles(theta, w))
        assert np.all(np.isfinite(dtheta)) and np.all(np.isfinite(dr))


def test_qkv_norm_names_the_matrix_that_maps_a_token_to_zero():
    # the message named neither the matrix nor the token ("QKV-Norm needs nonzero values Vθ; a matrix maps ...")
    x = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    singular = np.diag([1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"`V` must map every direction to a nonzero vector.*token 0 \(and 1 more\) to 0"):
        mf.particle_velocity(mf.Model(1.0, "qkv-norm", V=singular), mf.Particles(x))
    with pytest.raises(ValueError, match=r"`Q` of head 1 must map every direction .* maps token 0 \(and 1 more\)"):
        mf.particle_velocity(mf.Model(1.0, "qkv-norm", Q=np.stack([np.eye(3), singular])), mf.Particles(x))
    with pytest.raises(ValueError, match=r"`K` must map .* maps token 1 to 0"):
        attention_field(mf.Model(1.0, "qkv-norm", K=np.diag([0.0, 1.0, 1.0])), x)
    with pytest.raises(ValueError, match=r"`Q` must map .* maps target 0 to 0"):
        attention_field(mf.Model(1.0, "qkv-norm", Q=singular), x[1:2], targets=x[:1])


# QKV-Norm with Q = diag(1, 0, 0), whose null directions are the great circle x = 0; V sends every token with z > 0 to the
# value −e1, so A = −e1 exactly and the layer map x ← x + hA lowers x_1 by h a layer: token 1 (x_1 = 0.75) reaches
# x_1 = 0 exactly at layer 3 of step 0.25, where its normalized query Qθ/‖Qθ‖ is undefined
_NULL_Q = mf.Model(1.0, "qkv-norm", Q=np.diag([1.0, 0.0, 0.0]), V=np.array([[0, 0, -1.0], [0, 0, 0], [0, 0, 0]]))
_TO_NULL = mf.Particles(np.array([[0.5, 0.0, np.sqrt(0.75)], [0.75, 0.0, np.sqrt(1 - 0.75 ** 2)]]))


def test_a_qkv_norm_token_reaching_a_null_direction_mid_run_ends_the_run_with_a_diagnosis(tmp_path):
    # it raised the ValueError of the t = 0 check out of simulate, from the third layer on
    path = tmp_path / "q.h5"
    with pytest.warns(mf.MeanfieldWarning, match="simulate stopped at t=0.75"):
        tr = mf.simulate(_NULL_Q, _TO_NULL, 1.0, backend="particles", time="layers", step=0.25, save_every=0.25,
                         checkpoint=path)
    assert tr.status is mf.Status.NON_FINITE and np.array_equal(tr.times, [0, 0.25, 0.5, 0.75])
    assert tr.detail == ("The attention is undefined at t=0.75: scheme='qkv-norm' normalizes Qθ, so `Q` must map every "
                         "direction to a nonzero vector (e.g. an invertible `Q`); it maps token 1 to 0.")
    assert tr.final.positions[1, 0] == 0.0 and np.all(np.isfinite(tr.final.positions))
    # the state where it stopped is kept; what needs its attention is undefined there (NaN), the rest is not
    assert np.isnan(tr.diagnostics["max_speed"][-1]) and np.isfinite(tr.diagnostics["max_speed"][:-1]).all()
    assert np.isfinite(tr.diagnostics["mean_radius"]).all()
    saved = mf.load(path)
    assert saved.status is mf.Status.NON_FINITE and np.array_equal(saved.times, tr.times)
    assert saved.detail == tr.detail and not mf._io.run_info(path)["complete"]


@pytest.mark.parametrize("backend, model, null, name", [
    ("particles", _NULL_Q, [0.0, 0.6, 0.8], "Q"),
    ("particles-sh", mf.Model(1.0, "qkv-norm", V=np.diag([1.0, 1.0, 0.0])), [0.0, 0.0, 1.0], "V")])
@pytest.mark.parametrize("method", ["rk4", "rk45"])
def test_the_ode_at_a_qkv_norm_null_direction_stops_with_a_diagnosis(backend, model, null, name, method):
    # no ODE run lands exactly there by itself (an RK stage could), so the stepper is put there: its right-hand side
    # raised the ValueError of the t = 0 check
    stepper = mf.BACKENDS[backend](model, mf.Particles.uniform(4, seed=1), method=method,
                                   **({"step": 0.1} if method == "rk4" else {}))
    assert stepper.advance(0.1) is mf.Status.OK
    stepper.y = np.array(stepper.y)
    stepper.y[2, :3] = null
    assert stepper.advance(0.5) is mf.Status.NON_FINITE and stepper.t == 0.1
    assert re.fullmatch(rf"The attention is undefined at t=0.1: .*`{name}` must map every direction .* maps token 2 "
                        "to 0.", stepper.detail)
    assert "max_speed" not in stepper.diagnostics()       # (NaN in a Trajectory)


def test_a_qkv_norm_token_on_a_null_direction_at_t0_is_refused_before_any_work(tmp_path):
    start = mf.Particles(np.array([[0.0, 0.6, 0.8], [1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"`Q` must map every direction to a nonzero vector .* maps token 0 to 0"):
        mf.simulate(_NULL_Q, start, 1.0, backend="particles", checkpoint=tmp_path / "q.h5")
    assert list(tmp_path.iterdir()) == []


def test_a_qkv_norm_query_of_underflowing_norm_still_has_its_direction():
    # Qθ = (1e-170, 0, 0): its squared norm underflows to 0, and it was refused as a zero vector
    near = np.array([[1e-170, 0.6, 0.8], [0.6, 0.0, 0.8]])
    field = attention_field(_NULL_Q, near)
    assert np.all(np.isfinite(field.A)) and np.array_equal(field.A, attention_field(_NULL_Q, near * [1e150, 1, 1]).A)
    assert mf.simulate(_NULL_Q, mf.Particles(near), 0.5, backend="particles").success


def test_attention_field_bad_input():
    m = mf.Model(beta=1.0)
    theta, w = random_state(10, 3)
    with pytest.raises(ValueError, match="`directions` must have shape"):
        attention_field(m, theta[:, :2], w)
    with pytest.raises(ValueError, match="`weights` must have shape"):
        attention_field(m, theta, w[:5])
    with pytest.raises(ValueError, match="`weights` must be finite and ≥ 0"):
        attention_field(m, theta, -w)
    with pytest.raises(ValueError, match="`causal=True` needs `targets=None`"):
        attention_field(m, theta, w, targets=theta, causal=True)
    with pytest.raises(ValueError, match="`chunk` must be an integer >= 1"):
        attention_field(m, theta, w, chunk=0)
    with pytest.raises(TypeError, match="`model` must be a meanfield.Model"):
        attention_field("post-ln", theta, w)


# ------------------------------------------------------------------------------------------------
# the equiangular solution, every continuous scheme

@pytest.mark.parametrize("attention", ["softmax", "unnormalized"])
@pytest.mark.parametrize("scheme", CONTINUOUS)
def test_equiangular_start_stays_equiangular_and_matches_ode(scheme, attention):
    n, beta, t_final = 6, 5.0 if attention == "softmax" else 1.0, 2.0
    alpha = (lambda t: 1.0 + 0.5 * np.sin(t)) if scheme == "ngpt" else 1.0
    m = model_for(scheme, beta=beta, d=n, attention=attention, alpha=alpha)
    start = equiangular_start(n)
    radii = 1.3 if SCHEMES[scheme].has_radius else None
    start = mf.Particles(start.positions, radii=radii)
    traj = mf.simulate(m, start, t_final, backend="particles", save_every=0.5, step=0.005)
    assert traj.success
    rho_ref, r_ref = mf.equiangular(scheme, beta, n, traj.times, r0=1.3 if radii else 1.0, alpha=alpha,
                                    tau=m.tau, attention=attention)
    for state, rho, r in zip(traj.states, rho_ref, r_ref):
        g = pairwise(state)
        assert np.ptp(g) < 1e-13                     # symmetry kept to rounding
        assert abs(g.mean() - rho) < 1e-8            # RK4, h = 0.005: error ~1e-11
        if SCHEMES[scheme].has_radius:
            assert np.ptp(state.radii) < 1e-13 and abs(state.radii[0] - r) < 1e-8
    assert rho_ref[-1] > 1e-3                        # the test is not vacuous: tokens did move


def test_rk4_observed_order():
    n, beta, T = 5, 2.0, 2.0
    m = mf.Model(beta=beta, d=n, scheme="peri-ln")
    rho_ref, r_ref = mf.equiangular("peri-ln", beta, n, [T])
    errs = []
    hs = np.array([0.25, 0.125, 0.0625])
    for h in hs:
        st = mf.simulate(m, equiangular_start(n), T, backend="particles", step=h).final
        errs.append(abs(pairwise(st).mean() - rho_ref[0]) + abs(st.radii[0] - r_ref[0]))
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(slope - 4) < 0.3, (errs, slope)


@pytest.mark.parametrize("method", ["rk45", "rk23"])
def test_adaptive_methods_meet_their_tolerance(method):
    n, beta, T = 5, 3.0, 3.0
    m = mf.Model(beta=beta, d=n, scheme="pre-ln")
    rho_ref, r_ref = mf.equiangular("pre-ln", beta, n, [1.0, 2.0, T])
    errs = {}
    for rtol in (1e-6, 1e-9):
        traj = mf.simulate(m, equiangular_start(n), T, backend="particles", t_eval=[1.0, 2.0, T], method=method,
                           rtol=rtol, atol=rtol * 1e-2)
        assert traj.success and np.allclose(traj.times, [0, 1, 2, T], rtol=0, atol=0)
        errs[rtol] = max(abs(pairwise(s).mean() - rr) for s, rr in zip(traj.states[1:], rho_ref))
        assert errs[rtol] < 100 * rtol
        assert len(traj.steps["dt"]) > 2
    assert errs[1e-9] < errs[1e-6]


@pytest.mark.parametrize("scheme", CONTINUOUS)
def test_layer_maps_converge_at_first_order(scheme):
    n, beta, T = 5, 2.0, 1.0
    m = model_for(scheme, beta=beta, d=n)
    if scheme == "mix-ln":
        m = mf.Model(beta=beta, scheme=scheme, d=n, tau=0.5)
    rho_ref, r_ref = mf.equiangular(scheme, beta, n, [T], tau=m.tau)
    hs = np.array([0.05, 0.025, 0.0125])
    errs = []
    for h in hs:
        st = mf.simulate(m, equiangular_start(n), T, backend="particles", time="layers", step=h).final
        e = abs(pairwise(st).mean() - rho_ref[0])
        if SCHEMES[scheme].has_radius:
            e += abs(st.radii[0] - r_ref[0])
        errs.append(e)
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(slope - 1) < 0.15, (errs, slope)


def test_layer_times_start_at_t0_not_on_the_grid_of_the_step():
    # ln-scaling's layer depends on t: the layers must sit at t0 + k·h (they were snapped to multiples of h)
    from meanfield._schemes import get_scheme
    p = mf.Particles.uniform(30, d=4, seed=5)
    m = mf.Model(2.0, "ln-scaling", d=4)
    run = mf.simulate(m, p, 1.25, backend="particles", t0=0.05, time="layers", step=0.1, save_every=0.1)
    x = p.positions.copy()
    for k in range(12):
        x = get_scheme("ln-scaling").layer(x, lambda z: attention_field(m, z, p.weights).A, 0.1, 0.05 + 0.1 * k, m)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert np.max(np.abs(run.final.positions - x)) < 1e-14


@pytest.mark.parametrize("tau, layers", [(0.3, 4), (0.5, 6), (0.7, 8)])
def test_mix_ln_layer_at_tau_is_post_ln_whatever_the_rounding(tau, layers):
    # 3·0.1 > 0.3 but 5·0.1 == 0.5 in floating point: the layer at t = τ must be Post-LN (t ≤ τ) in both
    p = mf.Particles(mf.Particles.uniform(10, seed=2).positions, radii=np.ones(10))
    r = mf.simulate(mf.Model(1.5, "mix-ln", tau=tau), p, layers * 0.1, backend="particles", time="layers",
                    step=0.1).final.radii
    assert np.max(np.abs(r - 1.0)) < 1e-14
    r = mf.simulate(mf.Model(1.5, "mix-ln", tau=tau), p, (layers + 1) * 0.1, backend="particles", time="layers",
                    step=0.1).final.radii
    assert np.all(r > 1.0 + 1e-6)                       # the next layer is Pre-LN: the radius grows


def test_layers_save_every_layer_and_angpt_layer_map():
    n, h = 4, 0.1
    m = mf.Model(beta=1.5, scheme="angpt", d=n, alpha=0.7)
    theta, _ = random_state(n, n, seed=5)
    start = mf.Particles(theta, radii=np.array([1.0, 2.0, 0.5, 1.5]))
    traj = mf.simulate(m, start, 0.3, backend="particles", time="layers", step=h, save_every=h)
    assert np.allclose(traj.times, [0, 0.1, 0.2, 0.3], rtol=0, atol=1e-15)
    # one layer by hand: x ← ν(a)((1−a)x + a N(A(N(x)))), a = α h, ν = 1/√(a² + (1−a)²)
    x = start.ambient()
    a = 0.7 * h
    A = naive_attention(m, theta, start.weights)
    x1 = ((1 - a) * x + a * A / np.linalg.norm(A, axis=1, keepdims=True)) / np.sqrt(a * a + (1 - a) ** 2)
    s1 = traj.states[1]
    assert np.max(np.abs(s1.ambient() - x1)) < 1e-14


def test_angpt_has_no_continuous_time():
    m = mf.Model(beta=1.0, scheme="angpt")
    with pytest.raises(mf.UnsupportedModelError, match="only as a discrete layer map"):
        mf.simulate(m, mf.Particles.uniform(10), 1.0, backend="particles", step=0.1)


# ------------------------------------------------------------------------------------------------
# causal mask, invariances

def test_causal_prefix_ignores_later_tokens():
    # With SA, uniform weights and a causal mask, tokens 0..k−1 never see tokens ≥ k: their trajectory
    # is that of the k-token run.  Token 0 sees only itself, so (Post-LN) it does not move.
    m = mf.Model(beta=3.0, d=3)
    full = mf.Particles.uniform(40, seed=2)
    head = mf.Particles(full.positions[:15])
    a = mf.simulate(m, full, 1.0, backend="particles", causal=True, step=0.05).final
    b = mf.simulate(m, head, 1.0, backend="particles", causal=True, step=0.05).final
    assert np.max(np.abs(a.positions[:15] - b.positions)) < 1e-14
    assert np.max(np.abs(a.positions[0] - full.positions[0])) < 1e-15
    c = mf.simulate(m, full, 1.0, backend="particles", step=0.05).final
    assert np.max(np.abs(a.positions - c.positions)) > 1e-3


def test_rotation_equivariance_general_qkv():
    d = 4
    rng = np.random.default_rng(7)
    Q, K, V = (rng.standard_normal((d, d)) for _ in range(3))
    R, _ = np.linalg.qr(rng.standard_normal((d, d)))
    p = mf.Particles.uniform(30, d=d, seed=3)
    m = mf.Model(beta=1.0, d=d, Q=Q, K=K, V=V, scheme="pre-ln")
    mR = mf.Model(beta=1.0, d=d, Q=R @ Q @ R.T, K=R @ K @ R.T, V=R @ V @ R.T, scheme="pre-ln")
    a = mf.simulate(m, p, 0.5, backend="particles", step=0.05).final
    b = mf.simulate(mR, mf.Particles(p.positions @ R.T), 0.5, backend="particles", step=0.05).final
    assert np.max(np.abs(a.positions @ R.T - b.positions)) < 1e-12
    assert np.max(np.abs(a.radii - b.radii)) < 1e-12


def test_diagnostics_energy_and_alignment():
    d = 3
    D = np.diag([1.0, 0.6, -0.3])
    m = mf.Model(beta=2.0, d=d, K=D, V=D, attention="unnormalized")
    p = mf.Particles.uniform(50, seed=4)
    traj = mf.simulate(m, p, 0.5, backend="particles", step=0.05)
    x, w = p.positions, p.weights
    E0 = w @ np.exp(2.0 * x @ D @ x.T) @ w / (2 * 2.0)
    assert traj.diagnostics["energy"][0] == pytest.approx(E0, rel=1e-13)
    assert traj.diagnostics["energy"][-1] > E0         # gradient ascent of E_{β,D} (USA, V = D = QᵀK)
    G = x @ x.T
    pairs = ~np.eye(50, dtype=bool)
    assert traj.diagnostics["mean_alignment"][0] == pytest.approx(G[pairs].mean(), abs=1e-14)
    v, _ = mf.particle_velocity(m, p)
    assert traj.diagnostics["max_speed"][0] == pytest.approx(np.linalg.norm(v, axis=1).max(), rel=1e-13)


def test_state_radii_and_copies():
    p = mf.Particles.uniform(8, seed=0, radii=np.linspace(1, 2, 8))
    from meanfield._simulate import get_backend
    b = get_backend("particles")(mf.Model(beta=1.0), p, step=0.1)
    s = b.state()
    assert np.array_equal(s.radii, p.radii)               # passive radii of a sphere scheme are kept
    b.advance(0.2)
    assert np.array_equal(b.state().radii, p.radii)
    q = get_backend("particles")(mf.Model(beta=1.0, scheme="pre-ln"), mf.Particles(p.positions), step=0.1)
    assert np.array_equal(q.state().radii, np.ones(8))    # schemes with a radius start at r = 1
    s1 = b.state()
    b.advance(0.4)
    assert not np.array_equal(s1.positions, b.state().positions)   # states are independent copies


def test_radius_reaching_zero_stops_with_status():
    m = mf.Model(beta=1.0, scheme="pre-ln", V=-np.eye(3))   # ⟨θ, A⟩ < 0: the radius shrinks to 0
    p = mf.Particles(mf.Particles.uniform(20, seed=1).positions, radii=0.3)
    with pytest.warns(mf.MeanfieldWarning, match="radius reached"):
        traj = mf.simulate(m, p, 5.0, backend="particles", step=0.01)
    assert traj.status is mf.Status.NON_FINITE and "radius" in traj.detail
    assert np.all(traj.final.radii > 0)


@pytest.mark.parametrize("backend", ["particles", "particles-sh"])
def test_radii_reaching_zero_together_are_counted(backend):
    """Three equiangular tokens on a great circle, Pre-LN with V = −I: A_j ∝ −θ_j by symmetry, and the three radii
    fall alike and cross 0 in the same step; the diagnosis named one token (as if it were the only one), where the
    other multi-token diagnoses say "(and N more)".  Two mirror-image tokens whose radii vanish together under rk45
    stop with STEP_TOO_SMALL, which counts them too."""
    m = mf.Model(beta=1.0, scheme="pre-ln", V=-np.eye(3))
    a = 2 * np.pi * np.arange(3) / 3
    p = mf.Particles(np.stack([np.cos(a), np.sin(a), 0 * a], 1), radii=0.3)
    with pytest.warns(mf.MeanfieldWarning, match="radius reached"):
        tr = mf.simulate(m, p, 5.0, backend=backend, step=0.1)
    assert tr.status is mf.Status.NON_FINITE
    assert re.search(r"A radius reached ≤ 0 at t=0.6 \(token \d \(and 2 more\): r = -0.0223\)", tr.detail), tr.detail
    c = 0.5
    x = np.array([[np.cos(c), np.sin(c), 0], [np.cos(c), -np.sin(c), 0], [-1, 0, 0.0]])
    with pytest.warns(mf.MeanfieldWarning, match="min_step"):
        tr = mf.simulate(m, mf.Particles(x, radii=[0.3, 0.3, 1.0]), 5.0, backend=backend, min_step=1e-7)
    assert tr.status is mf.Status.STEP_TOO_SMALL
    assert re.search(r"Token [01]'s radius is r = \S+, falling at dr/dt = -0.537: the scheme's radial law drives it "
                     r"to 0 within \S+ \(and 1 more token\(s\)\), where", tr.detail), tr.detail


# ------------------------------------------------------------------------------------------------
# options and bad input

@pytest.mark.parametrize("backend, option", [("particles", "threads"), ("particles", "chunk"),
                                             ("particles", "max_steps"), ("particles-sh", "threads"),
                                             ("particles-sh", "max_steps")])
def test_counts_beyond_int64_are_refused_by_name(backend, option):
    """threads=2**64 (or chunk, max_steps) ran, status OK, and was recorded as given: a count numpy cannot hold."""
    p = mf.Particles.uniform(3, seed=0)
    with pytest.raises(ValueError, match=rf"`{option}` must be an integer >= 1 and within int64's range"):
        mf.simulate(mf.Model(1.0), p, 0.1, backend=backend, **{option: 2**64})
    assert mf.simulate(mf.Model(1.0), p, 0.1, backend=backend, **{option: 2**63 - 1}).success

@pytest.mark.parametrize("scheme", ["peri-ln", "ngpt"])
@pytest.mark.parametrize("backend, kw", [("particles", {}), ("particles", dict(time="layers", step=0.05)),
                                         ("particles-sh", {})])
def test_scale_free_schemes_agree_for_both_attentions_at_large_beta(scheme, backend, kw):
    """USA's ‖A‖ ~ e^β overflowed when squared from β ≈ 355: Peri-LN and nGPT (which divide by it) stopped with
    NON_FINITE at β = 400, where softmax attention gives the same motion."""
    x = np.random.default_rng(0).standard_normal((6, 3))
    runs = [mf.simulate(mf.Model(400.0, scheme, attention=a), mf.Particles(x / np.linalg.norm(x, axis=1)[:, None]),
                        0.5, backend=backend, **kw) for a in ("softmax", "unnormalized")]
    assert all(r.success for r in runs)
    assert np.max(np.abs(runs[0].final.positions - runs[1].final.positions)) < 1e-14
    assert np.all(np.isfinite(runs[1].diagnostics["max_speed"]))


@pytest.mark.parametrize("scheme, r0, extra", [("peri-ln", 2.0, {}), ("ngpt", 1.0, {"alpha": 0.5})])
@pytest.mark.parametrize("backend, kw", [("particles", dict(method="rk45")), ("particles", dict(method="rk4", step=0.01)),
                                         ("particles", dict(method="bdf")), ("particles-sh", dict(method="rk45"))])
def test_a_speed_factor_beyond_float64_with_a_finite_velocity(scheme, r0, extra, backend, kw):
    """USA at β = 709.7, two tokens at ρ0 = 0.999: ‖A‖ ≈ 0.75 e^β = 1.23e308, so Peri-LN's s = r‖A‖ (r = 2) and nGPT's
    ‖A‖/α (α = 0.5) overflow float64 while P_θA/s is of order 1e-2.  The runs stopped at t = 0 (NON_FINITE, "The
    speed factor … is inf").  Both schemes see only A/‖A‖, so softmax attention's closed-form ODE is the answer."""
    beta, rho0 = 709.7, 0.999
    c, s = np.sqrt((1 + rho0) / 2), np.sqrt((1 - rho0) / 2)
    start = mf.Particles([[c, s, 0], [c, -s, 0]], radii=[r0, r0] if scheme == "peri-ln" else None)
    tr = mf.simulate(mf.Model(beta, scheme, attention="unnormalized", **extra), start, 1.0, backend=backend,
                     save_every=0.5, **kw)
    assert tr.status is mf.Status.OK, tr.detail
    rho, r = mf.equiangular(scheme, beta, 2, tr.times, r0=r0, attention="softmax", rho0=rho0, **extra)
    got = np.array([x.positions[0] @ x.positions[1] for x in tr.states])
    assert np.max(np.abs(got - rho)) < 1e-9 and rho[-1] - rho0 > 4e-4      # rtol 1e-10 (rk4: h⁴ ≈ 1e-8 of 1e-3)
    if scheme == "peri-ln":
        assert np.max(np.abs(np.array([x.radii for x in tr.states]) - r[:, None])) < 1e-9
    # the saved speed was 0 where s = inf: it is |P_θA|/s, as the softmax run's
    sa = mf.simulate(mf.Model(beta, scheme, **extra), start, 1.0, backend=backend, save_every=0.5, **kw)
    np.testing.assert_allclose(tr.diagnostics["max_speed"], sa.diagnostics["max_speed"], rtol=1e-9)


def test_an_overflowed_speed_factor_not_proportional_to_the_norm_stays_undefined():
    # the rescaling by a power of two is exact only for s ∝ ‖A‖: a row s = r(1 + ‖A‖) keeps the diagnosis
    from dataclasses import replace

    from meanfield.backends._registry import get_backend

    row = replace(SCHEMES["peri-ln"], name="custom", speed=lambda r, a, t, model: r * (1 + a))
    st = get_backend("particles")(mf.Model(709.7, "peri-ln", attention="usa"),
                                  mf.Particles([[1.0, 0, 0], [0.6, 0.8, 0]], radii=[3.0, 3.0]))
    st.scheme = row
    with pytest.raises(ValueError, match=r"The speed factor of scheme='custom' is inf for token 0"):
        st.velocity()


@pytest.mark.parametrize("options, error, match", [
    ({"stepsize": 0.1}, TypeError, "unknown option"),
    ({"time": "depth", "step": 0.1}, ValueError, "`time` must be one of"),
    ({"time": "layers"}, ValueError, "needs `step`"),
    ({"time": "layers", "step": 0.1, "method": "rk4"}, ValueError, "`method` applies to time='continuous'"),
    ({"method": "rk4"}, ValueError, "`step` is required|has a fixed step"),
    ({"method": "rk45", "step": 0.1}, ValueError, "chooses its own steps"),
    ({"method": "euler", "step": 0.1}, ValueError, "`method` must be one of"),
    ({"step": -0.1}, ValueError, "`step` must be finite and > 0"),
    ({"rtol": 1e-16}, ValueError, r"`rtol` must be in \[1e-14, 1\)"),
    ({"rtol": 2.0}, ValueError, r"`rtol` must be in \[1e-14, 1\)"),
    ({"atol": 0.0}, ValueError, "`atol` must be finite and > 0"),
    ({"chunk": 0, "step": 0.1}, ValueError, "`chunk` must be an integer >= 1"),
    ({"causal": 1, "step": 0.1}, TypeError, "`causal` must be True or False"),
    ({"threads": 0, "step": 0.1}, ValueError, "`threads` must be an integer >= 1"),
    # options the run would ignore
    ({"step": 0.1, "rtol": 1e-3}, ValueError, r"\['rtol'\] would be ignored: method='rk4' takes fixed steps"),
    ({"method": "rk4", "step": 0.1, "max_step": 0.05, "atol": 1e-9}, ValueError, r"\['atol', 'max_step'\]"),
    ({"time": "layers", "step": 0.1, "first_step": 0.01}, ValueError, r"\['first_step'\] would be ignored: time='layers'"),
    ({"time": "layers", "step": 0.1, "rtol": 1e-3}, ValueError, r"\['rtol'\] would be ignored"),
])
def test_bad_options(options, error, match):
    with pytest.raises(error, match=match):
        mf.simulate(mf.Model(beta=1.0), mf.Particles.uniform(5), 1.0, backend="particles", **options)


def test_bad_initial_and_layer_grid():
    with pytest.raises(ValueError, match="`initial` has d=4 but the model has d=3"):
        mf.simulate(mf.Model(beta=1.0), mf.Particles.uniform(5, d=4), 1.0, backend="particles", step=0.1)
    with pytest.raises(TypeError, match="needs `initial` to be meanfield.Particles.*or use backend='spectral'"):
        mf.simulate(mf.Model(beta=1.0), mf.Density.uniform(4), 1.0, backend="particles", step=0.1)
    with pytest.raises(TypeError, match="or use backend='spectral'"):      # gradient_flow's default is "particles"
        mf.gradient_flow(mf.Density.uniform(4), 1.0, t_final=0.1)
    with pytest.raises(ValueError, match="whole numbers of layers"):
        mf.simulate(mf.Model(beta=1.0), mf.Particles.uniform(5), 1.05, backend="particles", time="layers", step=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        traj = mf.simulate(mf.Model(beta=1.0), mf.Particles.uniform(5), 1.0, backend="particles", time="layers",
                           step=0.1)
    assert traj.success and len(traj.steps["dt"]) == 10


def test_layer_grid_refusal_shows_the_near_miss():
    # a float32 step is 0.10000000149…: 1.0 is 9.99999985 of its layers, not a whole number; the refusal printed
    # "step=0.1 … is 10 layers", contradicting itself
    with pytest.raises(ValueError, match="whole numbers of layers") as err:
        mf.simulate(mf.Model(beta=1.0), mf.Particles.uniform(5), 1.0, backend="particles", time="layers",
                    step=np.float32(0.1))
    message = str(err.value)
    assert "step=0.10000000149011612" in message and "is 9.99999985099 layers" in message
    assert "10 layers end at 1.0000000149011612" in message


def test_max_step_inf_is_the_documented_default():
    # docs/backends.md: max_step defaults to unbounded and a configuration may write it as inf
    p = mf.Particles.uniform(40, seed=3)
    a = mf.simulate(mf.Model(1.0), p, 0.3, backend="particles", max_step=np.inf)
    b = mf.simulate(mf.Model(1.0), p, 0.3, backend="particles")
    assert a.success and np.array_equal(a.final.positions, b.final.positions)


@pytest.mark.parametrize("scheme, extra", [("ngpt", dict(causal=True)), ("peri-ln", dict())])
def test_a_zero_attention_norm_is_diagnosed(scheme, extra):
    # Peri-LN and nGPT divide by ‖A‖ (and their layer maps normalize A): a token that sees only zero-weight
    # tokens (a padding token first under a causal mask), or V = 0, has none
    x = mf.Particles.uniform(5, seed=0).positions
    weights = [0, 0.25, 0.25, 0.25, 0.25] if extra else None
    model = mf.Model(2.0, scheme, V=None if extra else np.zeros((3, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = mf.simulate(model, mf.Particles(x, weights), 1.0, backend="particles", **extra)
        layers = mf.simulate(model, mf.Particles(x, weights), 1.0, backend="particles", time="layers", step=0.1,
                             **extra)
    assert tr.status is mf.Status.NON_FINITE
    assert "speed factor" in tr.detail and "‖A_j‖ = 0" in tr.detail and "t=0," in tr.detail
    assert layers.status is mf.Status.NON_FINITE and "normalizes the attention" in layers.detail
    assert "‖A_j‖ = 0 for token 0" in layers.detail and "t=0:" in layers.detail


@pytest.mark.parametrize("scheme, extra", [("ngpt", dict(causal=True)), ("peri-ln", dict())])
def test_particle_velocity_refuses_an_undefined_speed_factor(scheme, extra):
    # particle_velocity returned NaN for every token, silently, where a run stops with the diagnosis
    x = mf.Particles.uniform(5, seed=0).positions
    weights = [0, 0.25, 0.25, 0.25, 0.25] if extra else None
    model = mf.Model(2.0, scheme, V=None if extra else np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"speed factor of scheme='(ngpt|peri-ln)' is 0 for token 0.*‖A_j‖ = 0") as e:
        mf.particle_velocity(model, mf.Particles(x, weights), **extra)
    assert "smaller step" not in str(e.value)
    # with mass on the first token, every token sees some: a velocity
    if extra:
        v, _ = mf.particle_velocity(model, mf.Particles(x, [0.1, 0.3, 0.2, 0.2, 0.2]), **extra)
        assert np.all(np.isfinite(v))


@pytest.mark.parametrize("scheme", ["pre-ln", "peri-ln"])
def test_a_radius_driven_to_zero_is_named_when_the_steps_run_out(scheme):
    # V = −I: dr/dt = −⟨θ, mean⟩ < 0 takes a radius to 0 in finite time, where dθ/dt = P_θA/s (s ∝ r) blows up;
    # the adaptive run ended "Step 9e-13 < min_step" with the largest velocity and no word of the radius
    p = mf.Particles(mf.Particles.uniform(5, seed=0).positions, radii=0.3)
    tr = mf.simulate(mf.Model(2.0, scheme, V=-np.eye(3)), p, 1.0, backend="particles")
    assert tr.status is mf.Status.STEP_TOO_SMALL
    assert re.search(r"Token \d's radius is r = .*e-1\d, falling at dr/dt = -.*drives it to 0", tr.detail), tr.detail


def test_a_zero_attention_stops_angpt_layers_with_that_diagnosis():
    # anGPT's layer normalizes A too (it has no speed row): V = 0 used to end in "reduce the step size"
    model = mf.Model(2.0, "angpt", V=np.zeros((3, 3)))
    p = mf.Particles(mf.Particles.uniform(5, seed=0).positions, radii=np.ones(5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layers = mf.simulate(model, p, 1.0, backend="particles", time="layers", step=0.1)
    assert layers.status is mf.Status.NON_FINITE and "normalizes the attention" in layers.detail
    assert "‖A_j‖ = 0 for token 0" in layers.detail and "reduce the step size" not in layers.detail


@pytest.mark.parametrize("beta", [5.0, 712.0, 715.0])
def test_energy_diagnostic_of_a_dirac_is_finite_wherever_its_value_fits_float64(beta):
    # e^{log Z} overflows from β = 709.78; the energy e^β/(2β) itself fits up to β ≈ 716
    tr = mf.simulate(mf.Model(beta=beta), mf.Particles(np.array([[0.0, 0.0, 1.0]] * 2)), 0.1, backend="particles")
    assert tr.diagnostics["energy"][0] == pytest.approx(np.exp(beta - np.log(2 * beta)), rel=1e-13)


def test_a_radius_driven_to_zero_is_diagnosed_with_its_rate():
    # pre-ln with V = −I: dr/dt = ⟨θ, A⟩ < 0 drives radii to 0; the detail names the token and how fast it fell
    rng = np.random.default_rng(0)
    p = mf.Particles.uniform(50, 3, seed=rng, radii=rng.uniform(0.3, 3.0))
    with pytest.warns(mf.MeanfieldWarning):
        tr = mf.simulate(mf.Model(3.0, "pre-ln", V=-np.eye(3)), p, 3.0, backend="particles", step=0.01)
    assert tr.status is mf.Status.NON_FINITE
    j = int(re.search(r"token (\d+): r = -", tr.detail).group(1))
    rate = float(re.search(r"falling at dr/dt = (\S+):", tr.detail).group(1))
    assert tr.final.radii[j] == tr.final.radii.min() > 0 and rate < 0
    assert "no step size gets past that time" in tr.detail


@pytest.mark.parametrize("kw", [dict(), dict(method="rk4", step=0.05), dict(time="layers", step=0.05)],
                         ids=["adaptive", "rk4", "layers"])
def test_mean_alignment_is_logged_every_step(kw):
    """Every step's |pairwise mean alignment|, the saved diagnostic's formula, so particle curves are not drawn
    through the saved times only."""
    tr = mf.simulate(mf.Model(3.0), mf.Particles.uniform(40, seed=2), 0.5, save_every=0.25, backend="particles", **kw)
    steps = tr.steps["mean_alignment"]
    assert steps.shape == tr.steps["t"].shape and steps.size > 2
    assert steps[-1] == pytest.approx(mf.mean_alignment(tr.final), rel=1e-14)
    assert steps[-1] == tr.diagnostics["mean_alignment"][-1]
    assert np.all(np.diff(steps) > 0)           # Post-LN clusters


# ------------------------------------------------------------------------------------------------
# a fixed step that would take more steps than a run may: refused up front, naming `step`

@pytest.mark.parametrize("options", [dict(step=1e-300), dict(step=1e-300, method="rk4"),
                                     dict(step=1e-300, time="layers"), dict(step=5e-324)])
def test_a_vanishing_fixed_step_is_refused_not_run(options):
    """simulate(M, P, .1, backend="particles", step=1e-300) ran (without end) with rk4 or time="layers"."""
    with pytest.raises(ValueError, match=r"`step` must be ≥ \(t_final − t0\)/10000000 = 1e-08 \(the limit of "
                                         r"10000000 fixed (steps|layers) per run\); got step="):
        mf.simulate(mf.Model(1.0), mf.Particles.uniform(5, seed=0), 0.1, backend="particles", **options)


def test_the_fixed_step_limit_counts_from_t0_to_t_final(monkeypatch):
    from meanfield.backends import _stepper
    monkeypatch.setattr(_stepper, "MAX_FIXED_STEPS", 100)
    p = mf.Particles.uniform(4, seed=0)
    with pytest.raises(ValueError, match=r"got step=0.001, which takes 200 steps from t0=0 to t_final=0.2: raise "
                                         r"`step`, or use an adaptive method"):
        mf.simulate(mf.Model(1.0), p, 0.2, backend="particles", step=1e-3)
    with pytest.raises(ValueError, match=r"which takes 200 layers .*raise `step` \(fewer, longer layers\)"):
        mf.simulate(mf.Model(1.0), p, 0.2, backend="particles", step=1e-3, time="layers")
    assert mf.simulate(mf.Model(1.0), p, 0.2, backend="particles", step=2e-3).success       # 100 steps: allowed
    assert mf.simulate(mf.Model(1.0), p, 1.2, backend="particles", step=2e-3, t0=1.0).success


def test_validate_options_checks_values_on_two_probe_tokens(monkeypatch):
    from meanfield.backends._particles import ParticlesBackend
    p = mf.Particles.uniform(1000, seed=0, radii=np.full(1000, 2.0))
    opts = ParticlesBackend.validate_options(mf.Model(1.0), p, {"step": 0.1, "threads": 1})
    assert opts["method"] == "rk4" and opts["step"] == 0.1
    for options, match in (({"step": -0.1}, "`step` must be finite and > 0"), ({"chunk": 0}, "`chunk` must be"),
                           ({"causal": "yes"}, "`causal` must be True or False")):
        with pytest.raises((TypeError, ValueError), match=match):
            ParticlesBackend.validate_options(mf.Model(1.0), p, options)
    with pytest.raises(ValueError, match="whole numbers of layers"):
        ParticlesBackend.validate_options(mf.Model(1.0), p, {"time": "layers", "step": 0.3}, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="`initial` has d=3 but the model has d=4"):
        ParticlesBackend.validate_options(mf.Model(1.0, d=4), p, {})


def test_an_interrupted_exact_sum_stops_its_workers_at_the_next_block():
    # each worker had half of the N² blocks as one task: after a Ctrl-C the run reported "interrupted" and went on
    # computing (26 s at N = 6·10⁴, minutes at 2·10⁶) before the interpreter could exit
    import signal
    import threading
    import time

    from meanfield import _threads
    from meanfield._attention import _run_block_groups

    if _threads.NTHREADS < 2:
        pytest.skip("needs two worker threads")
    done = []

    def block(a):
        time.sleep(0.01)
        done.append(a)

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    timer = threading.Timer(0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            _run_block_groups(block, [list(range(0, 1000)), list(range(1000, 2000))])
        stopped = len(done)
        time.sleep(0.1)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert len(done) == stopped < 200          # nothing ran after the call returned; ~40 of 2000 blocks had run


def test_a_failing_block_stops_the_other_workers():
    from meanfield import _threads
    from meanfield._attention import _run_block_groups

    if _threads.NTHREADS < 2:
        pytest.skip("needs two worker threads")
    done = []

    def block(a):
        import time
        time.sleep(0.002)
        if a == 5:
            raise ValueError("block 5")
        done.append(a)

    with pytest.raises(ValueError, match="block 5"):
        _run_block_groups(block, [list(range(0, 500)), list(range(500, 1000))])
    assert len([a for a in done if a >= 500]) < 50
    done.clear()                               # a failure in the second group stops the first one too
    with pytest.raises(ValueError, match="block 5"):
        _run_block_groups(block, [list(range(1000, 1500)), list(range(0, 500))])
    assert len([a for a in done if a >= 1000]) < 50


@pytest.mark.parametrize("kw", [{}, {"scheme": "qkv-norm"}, {"attention": "usa"}])
def test_matrices_left_none_give_the_bits_of_explicit_identities(kw):
    # None skips the identity's O(N·d²) product: the field must not change by a bit
    d, rng = 6, np.random.default_rng(5)
    x = rng.standard_normal((40, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    implicit = mf.attention_field(mf.Model(2.0, d=d, **kw), x)
    eye = np.eye(d)
    explicit = mf.attention_field(mf.Model(2.0, d=d, Q=eye, K=eye, V=eye, **kw), x)
    assert np.array_equal(implicit.A, explicit.A) and np.array_equal(implicit.log_z, explicit.log_z)


def test_causal_accepts_numpy_bools_and_refuses_other_values():
    """np.True_ (what a numpy comparison returns) was refused as "`causal` must be True or False; got
    causal=np.True_"; attention_field read causal="no" as True."""
    p, m = mf.Particles.uniform(6, seed=1), mf.Model(1.0)
    runs = [mf.simulate(m, p, 0.1, backend="particles", causal=c, method="rk4", step=0.05)
            for c in (np.True_, True)]
    assert np.array_equal(runs[0].final.positions, runs[1].final.positions)
    assert np.array_equal(attention_field(m, p.positions, causal=np.False_).A, attention_field(m, p.positions).A)
    with pytest.raises(TypeError, match=r"`causal` must be True or False; got causal='no'"):
        attention_field(m, p.positions, causal="no")


@pytest.mark.parametrize("backend", ["particles", "particles-sh"])
def test_stages_of_norm_1e300_keep_their_directions(backend):
    """A Runge–Kutta stage of a USA velocity ~1e302 has rows of ~1e300, whose squares overflow: the exact backend
    divided them by ‖x‖ = inf, lost the directions and stopped with NON_FINITE ("direction is lost"); particles-sh
    handed ducc0 a NaN colatitude and raised its assertion.  Scaled norms keep them: the radii grow to
    r(3) ≈ 2.5e303 < float64's max, as dr/dt = ⟨θ, A⟩ ≈ 8e302 says.  The directions' steps are not resolved (a
    stage moves a token by 7.7e296 rad at r = 1), and the run says so."""
    model = mf.Model(beta=700, attention="unnormalized", scheme="pre-ln")
    with pytest.warns(mf.MeanfieldWarning, match="does not resolve the motion at t=0"):
        tr = mf.simulate(model, mf.Particles.uniform(12, seed=0), 3, backend=backend, method="rk4", step=0.5)
    assert tr.status is mf.Status.OK, tr.detail
    assert np.allclose(np.linalg.norm(tr.final.positions, axis=1), 1.0, rtol=0, atol=1e-15)
    assert np.all((tr.final.radii > 2e303) & (tr.final.radii < 3e303))


def test_unit_vectors_of_huge_and_tiny_rows():
    from meanfield._validate import unit_vectors
    x = np.array([[1e300, 1e300, 0.0], [1e-170, 0.0, 0.0], [0.6, 0.8, 0.0], [1e308, -1e308, 0.0]])
    # the last row's norm is beyond float64: it was divided by inf into a zero row
    want = [[2 ** -0.5, 2 ** -0.5, 0], [1, 0, 0], [0.6, 0.8, 0], [2 ** -0.5, -2 ** -0.5, 0]]
    assert np.allclose(unit_vectors("x", x), want, rtol=0, atol=2.3e-16)
    assert np.allclose(unit_vectors("x", x[3]), want[3], rtol=0, atol=2.3e-16)
    with pytest.raises(ZeroVectorError, match="zero vector"):
        unit_vectors("x", np.zeros((1, 3)))


@pytest.mark.parametrize("backend", ["particles", "particles-sh"])
def test_a_stage_at_the_origin_is_diagnosed_not_raised(backend):
    """A stage whose token sits at the origin has no direction: the velocity is NaN (the step control rejects it, a
    fixed step stops NON_FINITE) and the diagnosis says the direction is lost, instead of an input error."""
    from meanfield._simulate import get_backend
    st = get_backend(backend)(mf.Model(2.0, scheme="pre-ln"), mf.Particles.uniform(12, seed=0), step=0.1)
    y = st.y.copy()
    y[3, :3] = 0.0
    assert np.all(np.isnan(st.rhs(0.0, y)))
    assert "direction is lost" in st._speed_issue

def _unit_vectors_reference(name, x):
    """unit_vectors before its one-pass common case (every norm finite and > 1e-146)."""
    from meanfield._norms import norms as safe_norms
    if not np.all(np.isfinite(x)):
        raise ValueError(f"`{name}` must be finite; it contains NaN or inf.")
    norms = np.sqrt(np.einsum("...i,...i->...", x, x))
    odd = ~(norms > 1e-146) | ~(norms < np.inf)
    if np.any(odd):
        norms = np.array(norms, dtype=float)
        norms[odd] = safe_norms(x[odd])
    if np.any(norms == 0):
        raise ZeroVectorError(f"`{name}` contains a zero vector, which has no direction.")
    if norms.size and np.max(np.abs(norms - 1)) > 1e-15:
        x = x / norms[..., None]
    return x


def _row_norms_reference(a):
    """row_norms before its one-pass common case."""
    from meanfield._norms import norms as safe_norms
    nrm = np.sqrt(np.einsum("ij,ij->i", a, a))
    odd = ~(nrm > 1e-146) | ~(nrm < np.inf)
    if np.any(odd):
        nrm[odd] = safe_norms(a[odd])
    return nrm


def test_unit_vectors_one_pass_case_matches_the_checks():
    # the common case (finite norms > 1e-146) in one pass: the same result, object and bits, as the full checks;
    # the unit test at the smallest and largest norms decides as the max over all rows did
    from meanfield._validate import unit_vectors
    from meanfield._norms import row_norms
    rng = np.random.default_rng(5)
    unit = rng.standard_normal((9, 3))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    cases = [unit, 3 * unit, unit.reshape(3, 3, 3)[0], unit[0], unit[:0], np.array([[1.0, 0, 0], [0, 2.0, 0]])]
    for eps in (1e-15, 1.1e-15, 2e-15, 4.5e-16, 1e-16):     # around the 1e-15 threshold, from both sides
        for sign in (1, -1):
            x = unit.copy()
            x[4] *= 1 + sign * eps
            cases.append(x)
    cases += [np.array([[1e300, 1e300, 0.0], [0.6, 0.8, 0.0]]), np.array([[1e-170, 0.0, 0.0], [0.6, 0.8, 0.0]])]
    for x in cases:
        got, want = unit_vectors("x", x), _unit_vectors_reference("x", x)
        assert (got is x) == (want is x) and np.array_equal(got, want)
        if x.ndim == 2 and x.size:
            assert np.array_equal(row_norms(x), _row_norms_reference(x))
    for bad, err in ((np.array([[np.nan, 0, 1.0]]), ValueError), (np.array([[np.inf, 0, 1.0]]), ValueError),
                     (np.array([[1.0, 0, 0], [0, 0, 0]]), ZeroVectorError)):
        with pytest.raises(err):
            unit_vectors("x", bad)
    with np.errstate(invalid="ignore"):
        for x in ([[np.nan, 0, 1.0], [1.0, 0, 0]], [[np.inf, 0, 1.0], [1.0, 0, 0]], [[1e-170, 0, 0], [1e300, 1e300, 0]],
                  [[0.0, 0, 0], [1.0, 0, 0]]):
            assert np.array_equal(row_norms(np.array(x)), _row_norms_reference(np.array(x)), equal_nan=True)


@pytest.mark.parametrize("kwargs", [{}, {"Q": np.diag([1.0, 2.0, 0.5]), "K": np.eye(3), "V": np.diag([1.0, -1.0, 2.0])},
                                    {"scheme": "qkv-norm", "Q": np.diag([1.0, 2.0, 0.5])}, {"scheme": "peri-ln"}])
def test_direct_evaluator_one_block_is_the_general_path(kwargs):
    # the written-out single block (one head, softmax, no mask, no massless token) gives the bits of the general
    # path, and hands a row without a finite positive weight sum (here a NaN token) back to it
    from meanfield._attention import _DirectEvaluator
    model = mf.Model(5.0, **kwargs)
    p = mf.Particles.uniform(40, seed=2)
    x, targets = np.array(p.positions), np.array(mf.Particles.uniform(7, seed=3).positions)
    ev = _DirectEvaluator(model, np.array(p.weights))
    assert ev.plain
    nan_x = x.copy()
    nan_x[3] = np.nan
    for args in ((x,), (x, targets), (nan_x,)):
        for full in (True, False):
            ev.plain = True
            with np.errstate(invalid="ignore"):
                got = ev(*args, full=full)
            ev.plain = False
            with np.errstate(invalid="ignore"):
                want = ev(*args, full=full)
            for a, b in zip(got, want):
                assert (a is None and b is None) or np.array_equal(a, b, equal_nan=True)
    for other in (mf.Model(5.0, attention="unnormalized"), mf.Model(5.0, Q=np.stack([np.eye(3)] * 2))):
        assert not _DirectEvaluator(other, np.array(p.weights)).plain
    assert not _DirectEvaluator(model, np.array(p.weights), causal=True).plain
    assert not _DirectEvaluator(model, np.r_[0.0, np.full(39, 1 / 39)]).plain


def test_direct_evaluator_own_term_pretest_and_log_z():
    # _one_block skips the own-term test only where no row can pass it (largest weight within the share of the
    # smallest weight sum): the same bits as with the test made (w_max = inf), where rows are summed again (β = 60:
    # isolated tokens' own terms dominate) and where none is; log_z=False leaves log Z out of a stage (full=False)
    from meanfield._attention import _OWN_TERM_SHARE, _DirectEvaluator
    p = mf.Particles.uniform(30, seed=4)
    x = np.array(p.positions)
    for beta, w in ((60.0, np.array(p.weights)), (5.0, np.array(p.weights)), (5.0, np.r_[0.5, np.full(29, 0.5 / 29)])):
        ev = _DirectEvaluator(mf.Model(beta), w)
        assert ev.plain
        got = [ev(x, full=full) for full in (True, False)]
        s = np.exp(got[0].log_z[0] - np.max(beta * x @ x.T, axis=1))       # the weight sums after the shift
        assert (ev.w_max <= _OWN_TERM_SHARE * s.min()) == (beta == 5.0 and w[0] < 0.5)    # where the test is skipped
        w_max, ev.w_max = ev.w_max, np.inf
        want = [ev(x, full=full) for full in (True, False)]
        for g, h in zip(got, want):
            assert all((a is None and b is None) or np.array_equal(a, b) for a, b in zip(g, h))
        ev.w_max = w_max
        stage = ev(x, full=False, log_z=False)
        assert stage.log_z is None and np.array_equal(stage.tangential, got[1].tangential)
    assert _DirectEvaluator(mf.Model(60.0), w)(x, full=True, log_z=False).log_z is not None     # full: always
    dominated = _DirectEvaluator(mf.Model(60.0), np.array(p.weights))
    assert not np.array_equal(dominated(x).tangential, dominated(x).A - dominated(x).radial[:, None] * x)


@pytest.mark.parametrize("kwargs,options", [
    ({}, {}), ({"V": 3.0 * np.eye(3)}, {"causal": True}),
    ({"V": np.array([[0.0, 2.0, 0.0], [1.0, 0.0, 0.5], [0.0, 0.0, 1.0]]), "beta": 40.0}, {}),
    ({"Q": np.stack([np.eye(3), 2 * np.eye(3)]), "V": np.stack([np.eye(3), np.diag([4.0, -1.0, 0.2])])}, {}),
    ({}, {"groups": 2})])
def test_speed_bound_bounds_every_stage(kwargs, options):
    # a fixed-step run skips watching its stages where step · _speed_bound ≤ 1/2 rad: the bound must hold at every
    # stage (off the sphere too: the velocity is evaluated at θ/‖θ‖), here at random off-sphere states
    from meanfield.backends._particles import ParticlesBackend
    kwargs = {"beta": 5.0, **kwargs}
    beta = kwargs.pop("beta")
    rng = np.random.default_rng(7)
    w = rng.random(24)
    w[[2, 5]] = 0.0                 # massless tokens (a causal row that sees none has A = 0)
    st = ParticlesBackend(mf.Model(beta, **kwargs), mf.Particles(mf.Particles.uniform(24, seed=1).positions,
                                                                 w / w.sum()), method="rk4", step=0.1, **options)
    bound = st._speed_bound()
    assert np.isfinite(bound)
    for _ in range(20):
        y = rng.normal(size=(24, 3)) * rng.uniform(0.5, 2.0, size=(24, 1))
        assert np.max(np.linalg.norm(st.rhs(0.0, y), axis=1)) <= bound
    for model in (mf.Model(beta, attention="unnormalized"), mf.Model(beta, scheme="peri-ln"),
                  mf.Model(beta, scheme="ngpt")):
        assert ParticlesBackend(model, mf.Particles.uniform(4), method="rk4", step=0.1)._speed_bound() == np.inf


def test_unresolved_step_still_warns_for_post_ln_softmax():
    # Post-LN with softmax skips the stage watch only where step · Σ‖V_h‖ ≤ 1/2: with V = 20·I and step 0.5 the
    # stages move tokens by more than 1 rad, and the run warns as before
    p = mf.Particles.uniform(20, seed=0)
    with pytest.warns(mf.MeanfieldWarning, match="does not resolve the motion"):
        mf.simulate(mf.Model(4.0, V=20.0 * np.eye(3)), p, 1.0, backend="particles", method="rk4", step=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mf.simulate(mf.Model(4.0), p, 1.0, backend="particles", method="rk4", step=0.5)     # |v| ≤ 1: 0.5 rad


@pytest.mark.parametrize("scheme", ["post-ln", "pre-ln"])
def test_projection_vouches_only_for_states_bad_state_passes(scheme):
    # the steps skip _bad_state where the projection's ranges show every direction finite and nonzero and every
    # radius finite and > 0: it may vouch for no state that _bad_state refuses (those keep their diagnosis)
    from meanfield.backends._particles import ParticlesBackend
    st = ParticlesBackend(mf.Model(4.0, scheme=scheme), mf.Particles.uniform(6, seed=0), method="rk4", step=0.1)
    rng = np.random.default_rng(3)
    odd = ([np.nan, 0, 0], [np.inf, 0, 0], [0, 0, 0], [1e-170, 0, 0], [1e200, 1e200, 0], [1e-300, 1e-300, 0])
    radii = (np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, 1e-320, 1e308)
    states = [rng.normal(size=st.y.shape) for _ in range(5)]
    for row, r in itertools.product(odd, radii + (1.0,)):
        y = rng.normal(size=st.y.shape)
        y[2, :3] = row
        if st.y.shape[1] == 4:
            y[:, 3] = np.abs(y[:, 3]) + 0.1
            y[4, 3] = r
        states.append(y)
    for y in states:
        with np.errstate(all="ignore"):
            projected, good = st._projected(y)
            assert np.array_equal(projected, st._project(y), equal_nan=True)
            refused = st._bad_state(projected, 0.1)
            big = np.any(np.linalg.norm(y[:, :3], axis=1) > 1e150)      # squares beyond float64: not vouched for
        assert not (good and refused)
        if not refused and np.all(np.isfinite(y)) and np.all(np.abs(y[:, :3]).max(axis=1) > 1e-100):
            assert good or big
    st.detail = ""


def test_speed_kind_is_the_elementwise_tests():
    # rhs reads "unit speed" and "divisible" from the ranges of s and |s|: the same answers as the elementwise tests,
    # NaN, ±inf, ±0 and negative speeds (r < 0) included
    from meanfield.backends._stepper import _speed_kind
    cases = [1.0, 2.0, 0.0, np.nan, np.inf, np.ones(()), np.float64(1.0), np.array([1.0, 1.0]), np.array([1.0, 2.0]),
             np.array([1.0, np.nan]), np.array([np.nan, 1.0]), np.array([-2.0, 3.0]), np.array([1.0, -0.0]),
             np.array([0.5, np.inf]), np.array([-np.inf, 1.0]), np.array([[1.0], [1.0]]), np.array([1e-320, 1e308])]
    for s in cases:
        with np.errstate(invalid="ignore"):
            unit = bool(np.all(np.asarray(s) == 1.0))
            want = (unit, unit or bool(np.all(np.isfinite(s) & (np.asarray(s) != 0))))
        assert _speed_kind(s) == want, s


def test_unit_speed_rows_are_one_everywhere():
    # rhs neither calls nor divides by the speed factors of UNIT_SPEED_ROWS: each must be 1 for every r, ‖A‖, t, model
    from meanfield._schemes import SCHEMES, UNIT_SPEED_ROWS
    assert SCHEMES["post-ln"].speed in UNIT_SPEED_ROWS
    models = [mf.Model(2.0), mf.Model(700.0, attention="unnormalized"), mf.Model(1.0, d=5)]
    for speed in UNIT_SPEED_ROWS:
        for r, a_norm, t, model in itertools.product((1.0, np.array([0.5, 3.0])), (np.nan, np.array([0.0, 1e300])),
                                                     (0.0, 2.5, 1e6), models):
            assert np.all(np.asarray(speed(r, a_norm, t, model)) == 1.0)


@pytest.mark.parametrize("backend", ["particles", "particles-sh"])
def test_max_steps_bounds_a_particle_run_resumes_included(tmp_path, backend):
    """Particle runs had no step budget: a stiff adaptive run (a gradient flow at β = 10 takes ~5000 steps per unit
    time) could only be stopped from outside.  max_steps counts the steps of the whole run, as the spectral
    backend's does, also across a resume."""
    import warnings
    warnings.simplefilter("ignore", mf.MeanfieldWarning)
    run = dict(model=mf.Model(3.0), initial=mf.Particles.uniform(20, 3, seed=0), t_final=2.0, backend=backend,
               save_every=0.5)
    n = len(mf.simulate(**run).steps["t"])
    full = mf.simulate(**run, max_steps=n - 5)
    assert full.status is mf.Status.STEP_TOO_SMALL and len(full.steps["t"]) == n - 5
    assert f"max_steps={n - 5} steps taken" in full.detail and "the whole run" in full.detail
    path = tmp_path / "stopped.h5"
    mf.simulate(**run, max_steps=n - 5, checkpoint=path, callback=lambda t, s, d: t >= 0.5)
    resumed = mf.resume(path)
    assert resumed.status is mf.Status.STEP_TOO_SMALL and len(resumed.steps["t"]) == n - 5
    assert np.array_equal(resumed.times, full.times)
    assert mf.resume(path, options={"max_steps": n}).success
    layers = mf.simulate(**{**run, "save_every": None}, time="layers", step=0.01, max_steps=200)
    assert layers.success and len(layers.steps["t"]) == 200


@pytest.mark.parametrize("bad, error", [(0, ValueError), (1.5, TypeError), (True, TypeError)])
def test_max_steps_of_a_particle_run_is_checked(bad, error):
    with pytest.raises(error, match="`max_steps` must be an integer >= 1"):
        mf.simulate(mf.Model(1.0), mf.Particles.uniform(5, 3, seed=0), 1.0, backend="particles", max_steps=bad)


def test_diagnostics_weight_the_tokens_by_their_weights():
    # dissipation Σ_j w_j |dθ_j/dt|² and mean_radius Σ_j w_j r_j with unequal weights, against the naive dense
    # attention: the unweighted means (1/n) Σ_j passed every test, whose tokens had equal weights
    from meanfield._simulate import get_backend
    rng = np.random.default_rng(7)
    n = 12
    theta = rng.standard_normal((n, 3))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    w = rng.random(n) ** 3 + 0.01
    w /= w.sum()
    r = 1.0 + 2.0 * rng.random(n)
    m = mf.Model(beta=1.5, scheme="pre-ln")
    diag = get_backend("particles")(m, mf.Particles(theta, w, r), step=0.1).diagnostics()
    A = naive_attention(m, theta, w)
    v = (A - np.sum(A * theta, axis=1, keepdims=True) * theta) / r[:, None]      # Pre-LN: P_θA / r
    speed2 = np.sum(v * v, axis=1)
    assert abs(w @ speed2 - speed2.mean()) > 0.05 * (w @ speed2)                 # the weights matter here
    assert diag["dissipation"] == pytest.approx(w @ speed2, rel=1e-13)
    assert diag["mean_radius"] == pytest.approx(w @ r, rel=1e-14)
    assert diag["max_speed"] == pytest.approx(np.sqrt(speed2.max()), rel=1e-13)


def test_the_energy_diagnostic_sums_the_heads():
    # energy = (1/2β) Σ_h Σ_ij w_i w_j e^{β⟨Q_h x_i, K_h x_j⟩} (the documented Σ_h ∬ e^{β⟨q_h, k_h⟩} dμ dμ), against the
    # pair sum written out; the first head's alone passed every test, whose energies had one head
    from meanfield._simulate import get_backend
    rng = np.random.default_rng(3)
    n, beta = 15, 1.3
    x = rng.standard_normal((n, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.random(n) + 0.2
    w /= w.sum()
    Q = np.stack([np.eye(3), np.diag([1.5, 0.5, 1.0])])
    K = np.stack([np.diag([1.0, 2.0, 0.3]), np.eye(3)])
    m = mf.Model(beta=beta, Q=Q, K=K)
    diag = get_backend("particles")(m, mf.Particles(x, w), step=0.1).diagnostics()
    heads = [w @ np.exp(beta * (x @ q.T) @ (x @ k.T).T) @ w / (2 * beta) for q, k in zip(Q, K)]
    assert min(heads) > 0.2 * max(heads)
    assert diag["energy"] == pytest.approx(sum(heads), rel=1e-13)


def _two_tokens_in_a_generic_frame(rho):
    from scipy.stats import special_ortho_group
    R = special_ortho_group.rvs(3, random_state=1)
    return np.array([[1.0, 0.0, 0.0], [rho, np.sqrt(1 - rho * rho), 0.0]]) @ R.T


# A token's own term e^β w_i θ_i is radial, but summed into A it left the others' tangential part to the rounding of
# A − ⟨A, θ⟩θ (absolute ε·|A|); rows whose own term dominates are now summed again without it (_attention.py).


def _two_token_tangent(x, beta, attention, i, j, wi=0.5, wj=0.5):
    """The closed form w_j e^{βρ}(θ_j − ρθ_i) / (SA: w_i e^β + w_j e^{βρ}) of token i's tangential field."""
    rho = x[i] @ x[j]           # (of the rounded rows)
    exact = wj * np.exp(beta * rho) * (x[j] - rho * x[i])
    return exact / (wi * np.exp(beta) + wj * np.exp(beta * rho)) if attention == "softmax" else exact


# the logits β⟨θ_i, θ_j⟩ carry ~β·ε of rounding, which e^(·) makes relative
_LOGIT_RTOL = 4 * 40.0 * 2 ** -52


@pytest.mark.parametrize("attention", ["softmax", "unnormalized"])
@pytest.mark.parametrize("path", [dict(), dict(chunk=1), dict(causal=True)])
def test_a_token_s_own_term_does_not_drown_the_others_tangential_part(attention, path):
    """Two tokens at ρ = 0.1, β = 40 had a tangential field of relative error ~1 (SA: the exact 2.5e-17 lost beside
    the own weight ~1; USA: ε·e^β/2 ≈ 26 of noise on an O(1) field)."""
    beta = 40.0
    x = _two_tokens_in_a_generic_frame(0.1)
    field = attention_field(mf.Model(beta=beta, attention=attention), x, **path)
    ij = [(1, 0)] if path.get("causal") else [(0, 1), (1, 0)]      # causal: token 0 sees only itself
    for i, j in ij:
        np.testing.assert_allclose(field.tangential[i], _two_token_tangent(x, beta, attention, i, j),
                                   rtol=_LOGIT_RTOL, atol=0)
    if path.get("causal"):
        np.testing.assert_array_equal(field.tangential[0], 0.0)


@pytest.mark.parametrize("attention", ["softmax", "unnormalized"])
def test_the_own_term_is_left_out_per_group_of_replicas(attention):
    """Replicas run together (groups): each group's isolated pair gets its closed form, also when the groups share
    a block (the other group's columns are not its own)."""
    from meanfield._attention import _DirectEvaluator
    beta = 40.0
    pairs = [_two_tokens_in_a_generic_frame(rho) for rho in (0.1, -0.3, 0.5)]
    w = np.array([0.5, 0.5, 0.25, 0.75, 0.5, 0.5])
    for chunk in (None, 2):
        field = _DirectEvaluator(mf.Model(beta=beta, attention=attention), w, chunk=chunk, nthreads=2,
                                 groups=3)(np.concatenate(pairs))
        for g, x in enumerate(pairs):
            for i, j in ((0, 1), (1, 0)):
                exact = _two_token_tangent(x, beta, attention, i, j, w[2 * g + i], w[2 * g + j])
                np.testing.assert_allclose(field.tangential[2 * g + i], exact, rtol=_LOGIT_RTOL, atol=0)


def test_only_a_head_whose_own_term_is_radial_is_summed_again():
    """Two heads, values V = I and V = 3I (own terms radial) or a rotation (its own term has a tangential part of its
    own, which it keeps): the field is the sum of each head's closed form."""
    from scipy.stats import special_ortho_group
    beta = 40.0
    x = _two_tokens_in_a_generic_frame(0.1)
    for V2 in (3 * np.eye(3), special_ortho_group.rvs(3, random_state=4)):
        model = mf.Model(beta=beta, attention="usa", Q=np.stack([np.eye(3)] * 2), K=np.stack([np.eye(3)] * 2),
                         V=np.stack([np.eye(3), V2]))
        field = attention_field(model, x)
        for i, j in ((0, 1), (1, 0)):
            one = _two_token_tangent(x, beta, "usa", i, j)
            if V2[0, 1] == 0:       # V = 3I: three times the first head's
                np.testing.assert_allclose(field.tangential[i], 4 * one, rtol=_LOGIT_RTOL, atol=0)
                continue
            own, other = (0.5 * np.exp(beta * (x[i] @ x[k])) * V2 @ x[k] for k in (i, j))
            exact = one + sum(v - (v @ x[i]) * x[i] for v in (own, other))
            # the rotation's own term keeps a tangential part ~e^β, whose rounding is relative to it
            assert np.max(np.abs(field.tangential[i] - exact)) < 8 * _LOGIT_RTOL * np.linalg.norm(own)


@pytest.mark.parametrize("attention", ["softmax", "unnormalized"])
def test_rows_whose_own_term_does_not_dominate_keep_their_bits(attention, monkeypatch):
    """Only the rows whose own term dominates are summed again: the others keep the summation order they share with
    their nearly coincident neighbours (whose rounding then cancels in their relative motion; with every row summed
    apart, BDF could not pass the cluster merger of test_particles_implicit: 100000 steps against 5468)."""
    import meanfield._attention as att
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((3, 3))
    x = np.repeat(centres, 20, axis=0) + 1e-3 * rng.standard_normal((60, 3))
    x = np.concatenate([x, [[0.0, 0.0, 1.0]]])           # and one far from all: its own term dominates
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    model = mf.Model(beta=60.0, attention=attention)
    for path in (dict(), dict(chunk=7, threads=2)):
        field = attention_field(model, x, **path)
        monkeypatch.setattr(att, "_OWN_TERM_SHARE", np.inf)            # nothing summed again
        plain = attention_field(model, x, **path)
        monkeypatch.undo()
        np.testing.assert_array_equal(field.tangential[:-1], plain.tangential[:-1])
        np.testing.assert_array_equal(field.A, plain.A)
        assert not np.array_equal(field.tangential[-1], plain.tangential[-1])


def test_usa_two_orthogonal_tokens_follow_their_closed_form_at_large_beta():
    """Post-LN USA, two tokens: dρ/dt = e^{βρ}(1 − ρ²).  At β = 40 the tokens froze (ρ(0.02) = 4e-12 against
    0.0402, status OK) and at β = 30 rk45 crawled at steps of 3e-8: the own term's rounding, ε·e^β, drowned the O(1)
    velocity."""
    from scipy.integrate import solve_ivp
    beta, T = 40.0, 0.02
    exact = solve_ivp(lambda t, r: np.exp(beta * r) * (1 - r * r), (0, T), [0.0], method="DOP853", rtol=1e-13,
                      atol=1e-16).y[0, -1]
    traj = mf.simulate(mf.Model(beta=beta, attention="usa"), mf.Particles(_two_tokens_in_a_generic_frame(0.0)), T,
                       backend="particles", rtol=1e-12, max_steps=2000)
    x = traj.final.positions
    assert traj.status is mf.Status.OK
    assert abs(x[0] @ x[1] - exact) < 1e-9 * exact


def test_a_radius_that_overflows_float64_is_diagnosed_as_such():
    # USA at β = 709.7: Pre-LN's dr/dt = ⟨θ, A⟩ = e^β/2 for two orthogonal tokens, so r = 1 + t e^β/2 passes float64's
    # largest value 1.8e308 at t ≈ 2.17.  The runs stopped NON_FINITE with "Non-finite state at t=2.2." (rk4, layers)
    # or "Non-finite velocity at t=2.17246 (down to step 7.89e-13)." (rk45), naming neither the radius nor its cause
    import warnings

    beta = 709.7
    model = mf.Model(beta, "pre-ln", attention="unnormalized")
    start = mf.Particles([[1.0, 0, 0], [0, 1.0, 0]])
    rk4 = r"at t=2\.1: r = 1\.738e\+308, growing at dr/dt = 8\.275e\+307"
    for options, where in ((dict(method="rk4", step=0.1), rk4),
                           (dict(method="rk45"), r"at t=2\.17246: r = 1\.798e\+308, growing at dr/dt = 8\.275e\+307"),
                           (dict(time="layers", step=0.1), r"in the layer from t=2\.1 \(r = 1\.738e\+308 before it\)")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", mf.MeanfieldWarning)
            tr = mf.simulate(model, start, 3.0, backend="particles", **options)
        assert tr.status is mf.Status.NON_FINITE, options
        assert re.search(r"Token \d's radius overflows float64 " + where, tr.detail), (options, tr.detail)
        assert "attention='softmax'" in tr.detail
        # the state kept is the last one before the overflow, on the exact line r = 1 + t e^β/2
        t, r = tr.times[-1], tr.states[-1].radii
        assert np.all(np.abs(r / (1 + t * (np.exp(beta) / 2)) - 1) < 1e-12), (options, r)


def test_a_fixed_step_that_cannot_resolve_the_motion_warns_once():
    """USA at β = 700 with step=1e-4: the direct sum and particles-sh ended 1.3 apart (2 tokens; 1.9 with 200), both
    with Status OK and no warning, as a stage moved a token by 3.6e215 rad in one step.  A fixed step in which a
    Runge–Kutta stage moves a token by more than a radian now warns, once per run; a step small enough does not."""
    m = mf.Model(700.0, attention="unnormalized")
    p = mf.Particles.uniform(2, seed=0)
    with pytest.warns(mf.MeanfieldWarning, match=r"backend='particles': the fixed step h=0.0001 \(method='rk4', "
                      r"step=0.0001\) does not resolve the motion at t=0: in the step from there token \d moves "
                      r"h·\|dθ/dt\| = \S+e\+2\d\d rad .* smaller `step` .*method='rk45'") as caught:
        tr = mf.simulate(m, p, 0.01, backend="particles", method="rk4", step=1e-4, save_every=0.002)
    assert tr.status is mf.Status.OK
    assert sum("does not resolve" in str(w.message) for w in caught) == 1          # once per run
    # the stages, not only the step's start: two orthogonal tokens start at |dθ/dt| = 1/2 (h·|v| = 5e-5) and
    # accelerate as e^(β⟨θ_1, θ_2⟩); the velocity at the steps' starts stays small (a check of those alone was
    # silent), a stage at t = 0.0014 reached 1.2e10 (and step=5e-5 ends 1.0 away)
    with pytest.warns(mf.MeanfieldWarning, match=r"does not resolve the motion at t=0.0014"):
        mf.simulate(m, mf.Particles([[1.0, 0, 0], [0, 1.0, 0]]), 0.01, backend="particles", method="rk4", step=1e-4)
    # resolved: the same model and tokens with a step small enough (h·|v| = 0.036 at the start): halving it moves the
    # end by ~1e-14
    with warnings.catch_warnings():
        warnings.simplefilter("error", mf.MeanfieldWarning)
        a, b = (mf.simulate(m, p, 1e-223, backend="particles", method="rk4", step=h).final.positions
                for h in (1e-226, 5e-227))
    assert np.max(np.abs(a - b)) < 1e-12 and np.max(np.abs(a - p.positions)) > 1e-4


@pytest.mark.parametrize("backend", ["particles", "particles-sh"])
def test_resolved_fixed_steps_and_layers_do_not_warn(backend):
    """SA at β = 4 with the documented step 0.05 (max h·|v| ≈ 0.03), and a layer map whose h‖A‖ is far above 1
    (USA, β = 20, step 1: the layers are the model itself, not an approximation of the ODE), run without warning."""
    p = mf.Particles.uniform(50, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(4.0), p, 2.0, backend=backend, method="rk4", step=0.05)
        assert tr.status is mf.Status.OK
        if backend == "particles":
            tr = mf.simulate(mf.Model(20.0, attention="unnormalized"), p, 3.0, backend=backend, time="layers",
                             step=1.0)
            assert tr.status is mf.Status.OK


@pytest.mark.parametrize("backend", ["spectral", "hybrid"])
def test_particle_velocity_refuses_a_backend_that_moves_no_tokens(backend):
    """particle_velocity(backend="hybrid") raised AttributeError ('HybridBackend' object has no attribute
    'velocity'), and backend="spectral" said it "needs a Density" for the Particles it was asked about."""
    with pytest.raises(ValueError, match=r"`backend` must be one of \['particles', 'particles-sh'\] for "
                                         r"particle_velocity"):
        mf.particle_velocity(mf.Model(2.0), mf.Particles.uniform(4, seed=0), backend=backend)


def test_meanfield_info_of_a_particle_run_prints_its_alignment_and_radius(tmp_path, capsys):
    """`meanfield info` of a causal Pre-LN particle run printed max_speed alone (no energy under a causal mask, and
    the density's mass_error, tail_fraction, min_rho do not exist): nothing of how far its tokens clustered or how
    its radii grew.  It prints mean_alignment and mean_radius, start and end, as the run recorded them."""
    from meanfield import cli

    traj = mf.simulate(mf.Model(2.0, "pre-ln", d=5), mf.Particles.uniform(30, d=5, seed=0), 0.5, backend="particles",
                       causal=True, method="rk4", step=0.1)
    mf.save(traj, tmp_path / "p.h5")
    assert cli.main(["info", str(tmp_path / "p.h5")]) == 0
    printed = capsys.readouterr().out
    for key in ("mean_alignment", "mean_radius", "max_speed"):
        d = traj.diagnostics[key]
        assert re.search(rf"^  {key} +start {d[0]: .6g}   end {d[-1]: .6g}$", printed, re.M), (key, printed)


def test_the_figure_of_a_particle_run_draws_its_alignment_and_radius(tmp_path, monkeypatch):
    """`meanfield plot` of a causal Pre-LN particle run drew one diagnostic panel, max_speed (no energy under a causal
    mask; tail_fraction and min_rho are a density's): the tokens' clustering and radii were in no panel."""
    from meanfield import plot

    traj = mf.simulate(mf.Model(2.0, "pre-ln", d=5), mf.Particles.uniform(30, d=5, seed=0), 0.5, backend="particles",
                       causal=True, method="rk4", step=0.1)
    figures = []
    monkeypatch.setattr(plot._plt(), "close", lambda fig=None: figures.append(fig))
    plot.result_figure(traj, tmp_path / "p.png")
    monkeypatch.undo()
    plot._plt().close(figures[0])            # left open, it failed the later tests that no figure is left open
    titles = [ax.get_title() for ax in figures[0].axes]
    assert titles[-3:] == ["mean_alignment", "mean_radius", "max_speed"], titles


@pytest.mark.parametrize("as_list", [False, True])
def test_an_array_of_positions_given_as_the_initial_tokens_is_told_how_to_wrap_them(as_list):
    """The positions of a hand-written particle script, an (n, d) array, were refused with advice to sample a Density
    or use the spectral backend only: the message now names meanfield.Particles(positions)."""
    x = mf.Particles.uniform(5, seed=0).positions
    with pytest.raises(TypeError, match=r"got (ndarray|list) .* becomes meanfield\.Particles\(positions\)"):
        mf.simulate(mf.Model(2.0), x.tolist() if as_list else x, 0.1, backend="particles")


def test_the_particles_docstring_says_how_to_keep_the_radii_of_points_of_the_residual_stream():
    """A particle script holds the residual stream x_j = r_j θ_j; Particles(x, normalize=True) projects it and drops
    the radii without a word, which Pre-LN and Peri-LN need.  The docstring says so and gives the inverse of
    ambient(), which is exact."""
    doc = " ".join(mf.Particles.__doc__.split())
    assert "The norms are dropped, not read as radii" in doc and "Particles(x / r[:, None], radii=r)" in doc
    x = 1.5 * mf.Particles.uniform(6, d=4, seed=0).positions
    r = np.linalg.norm(x, axis=1)
    np.testing.assert_allclose(mf.Particles(x / r[:, None], radii=r).ambient(), x, rtol=1e-15, atol=0)
    assert mf.Particles(x, normalize=True).radii is None


@pytest.mark.parametrize("call", ["attention_field", "attention_field_sh", "sh_coefficients",
                                  "attention_field_from_coefficients"])
def test_the_public_attention_functions_take_threads_as_the_backends_do(call):
    # the backends' option is `threads`; these functions called it `nthreads` (ducc0's name): `threads` now,
    # `nthreads` still accepted with a DeprecationWarning pointing at the caller, both at once refused
    from meanfield._attention import attention_field_from_coefficients, sh_coefficients

    model = mf.Model(beta=3.0)
    x = mf.Particles.uniform(50, 3, seed=1).positions
    funcs = {"attention_field": lambda **kw: mf.attention_field(model, x, **kw).A,
             "attention_field_sh": lambda **kw: mf.attention_field_sh(model, x, **kw).A,
             "sh_coefficients": lambda **kw: sh_coefficients(model, x, **kw),
             "attention_field_from_coefficients": lambda **kw: attention_field_from_coefficients(
                 model, sh_coefficients(model, x), x, **kw).A}
    f = funcs[call]
    new = f(threads=1)
    with pytest.warns(DeprecationWarning, match="`nthreads` is deprecated; call it `threads`") as record:
        old = f(nthreads=1)
    assert record[0].filename == __file__
    np.testing.assert_array_equal(new, old)
    with pytest.raises(TypeError, match="give `threads` only"):
        f(threads=1, nthreads=1)
    with pytest.raises(ValueError, match="`threads` must be an integer >= 1"):
        f(threads=0)


# ------------------------------------------------------------------------------------------------
# per-stage overhead at small n (bench case "small-n"): the checks are made once, from what the stage computes anyway

def test_a_stage_of_directions_reads_its_finiteness_from_the_norms_and_a_blown_up_one_is_nan(monkeypatch):
    # the field's normalization takes the row norms, which show a NaN or inf: a separate np.isfinite pass over the
    # state was a twentieth of a stage at n = 20; a blown-up stage is still NaN, not an error, and the next one exact
    from meanfield.backends._particles import ParticlesBackend

    for scheme in ("post-ln", "pre-ln"):        # directions only, and with a radius column (checked apart)
        b = ParticlesBackend(mf.Model(4.0, scheme=scheme), mf.Particles.uniform(20, 3, seed=0), step=0.05)
        y = 1.01 * b.y
        before = b.rhs(0.1, y)
        for bad in (np.nan, np.inf, -np.inf):
            z = y.copy()
            z[3, 1] = bad
            out = b.rhs(0.1, z)
            assert out.shape == z.shape and np.all(np.isnan(out)), (scheme, bad)
        np.testing.assert_array_equal(b.rhs(0.1, y), before)
    calls, isfinite = [], np.isfinite
    monkeypatch.setattr(np, "isfinite", lambda *a, **k: calls.append(1) or isfinite(*a, **k))
    b = ParticlesBackend(mf.Model(4.0), mf.Particles.uniform(20, 3, seed=0), step=0.05)
    b.rhs(0.1, 1.01 * b.y)          # (the first stage builds the evaluator)
    calls.clear()
    b.rhs(0.1, 1.01 * b.y)
    assert not calls


def test_the_step_logs_alignment_with_the_runs_sum_of_squared_weights_the_same_bits():
    from meanfield._measures import pair_alignment
    from meanfield._norms import row_norms

    rng = np.random.default_rng(5)
    w = rng.random(37)
    w /= w.sum()
    x = mf.Particles.uniform(37, 4, seed=2).positions
    assert pair_alignment(w, x, squares=float(w @ w)) == pair_alignment(w, x)
    p = mf.Particles(x, w)
    tr = mf.simulate(mf.Model(3.0, d=4), p, 0.5, backend="particles", step=0.1)
    theta = tr.final.positions / row_norms(tr.final.positions)[:, None]     # as the step log normalizes them
    assert tr.steps["mean_alignment"][-1] == pair_alignment(w, theta)


@pytest.mark.parametrize("scheme, attention, causal", [("post-ln", "softmax", False), ("pre-ln", "unnormalized", True),
                                                       ("qkv-norm", "softmax", False)])
def test_heads_zero_padded_to_d_cost_their_own_dimension_and_give_the_direct_sum(scheme, attention, causal):
    # heads of dimension k < d given as (d, d) matrices with zero rows (a transformer's W_Q, W_K of shape (k, d)
    # padded): the logits used all d rows, O(n²d) per head (n = 2000, d = 768, 12 heads of 64: 13-14 s a velocity,
    # 5-6 s without the zero rows); the rows zero in both Q and K add exact zeros, so they are left out
    from meanfield._attention import _DirectEvaluator

    rng = np.random.default_rng(3)
    n, d, H, k = 60, 24, 3, 4
    Q, K = np.zeros((H, d, d)), np.zeros((H, d, d))
    for h, rows in enumerate([np.arange(k), np.arange(10, 10 + k), np.array([1, 5, 9, 20])]):
        Q[h, rows] = rng.standard_normal((k, d))
        K[h, rows] = rng.standard_normal((k, d))
    K[2, 5] = 0.0                      # a row zero in K only: dropped, but for QKV-Norm (its ‖Qθ‖ needs it)
    V = rng.standard_normal((H, d, d)) / np.sqrt(d)
    model = mf.Model(beta=1.3, scheme=scheme, attention=attention, d=d, Q=Q, K=K, V=V)
    p = mf.Particles(rng.standard_normal((n, d)), weights=rng.uniform(0.1, 1, n), normalize=True)
    ev = _DirectEvaluator(model, np.array(p.weights), causal=causal)
    kept = [k, k, k if scheme == "qkv-norm" else k - 1]
    assert [QT.shape for QT, _, _ in ev.heads] == [(d, c) for c in kept]
    assert [KT.shape for _, KT, _ in ev.heads] == [(d, c) for c in kept]
    th, w = p.positions, p.weights
    unit = (lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)) if scheme == "qkv-norm" else (lambda a: a)
    A = np.zeros((n, d))
    for h in range(H):
        logits = 1.3 * unit(th @ Q[h].T) @ unit(th @ K[h].T).T
        if causal:
            logits[np.triu_indices(n, 1)] = -np.inf
        E = np.exp(logits) * w
        A += E @ unit(th @ V[h].T) / (E.sum(axis=1, keepdims=True) if attention == "softmax" else 1.0)
    field = mf.attention_field(model, th, w, causal=causal)
    np.testing.assert_allclose(field.A, A, rtol=0, atol=1e-13 * np.abs(A).max())


def test_particles_name_the_row_of_a_zero_or_non_finite_embedding():
    # of 2000 embeddings, "`positions` contains a zero vector" / "contains NaN or inf" named none: the user had to
    # search the array for it
    x = np.random.default_rng(0).standard_normal((2000, 64))
    x[[17, 900, 1999]] = 0.0
    with pytest.raises(ValueError, match=r"`positions` contains a zero vector, which has no direction: row 17 "
                                         r"\(and 2 more\)\.$"):
        mf.Particles(x, normalize=True)
    x[[17, 900, 1999]] = 1.0
    x[1234, 5] = np.nan
    with pytest.raises(ValueError, match=r"`positions` must be finite; it contains NaN or inf: row 1234\.$"):
        mf.Particles(x, normalize=True)


def test_particles_from_ambient_reads_embeddings_of_any_norm_as_directions_and_radii():
    # an interpretability user's embeddings x_j (float32, norms 0.5 to 2000, padding weighted 0) had to be split by
    # hand, Particles(x / r[:, None], radii=r), and float32 rows divided in float32 were refused as not unit
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, 96)) * rng.uniform(0.5, 2000, (300, 1))).astype(np.float32)
    mask = np.r_[np.zeros(10), np.ones(290)]
    p = mf.Particles.from_ambient(x, weights=mask)
    x64 = x.astype(float)
    np.testing.assert_allclose(p.radii, np.linalg.norm(x64, axis=1), rtol=1e-15)
    np.testing.assert_allclose(p.ambient(), x64, rtol=0, atol=2.3e-16 * np.abs(x64).max(axis=1, keepdims=True).max())
    np.testing.assert_allclose(np.linalg.norm(p.positions, axis=1), 1.0, rtol=0, atol=1e-15)
    assert p.weights[:10].sum() == 0 and p.weights.sum() == pytest.approx(1.0, abs=1e-15)
    assert mf.Particles.from_ambient(x64) == mf.Particles(x64 / np.linalg.norm(x64, axis=1)[:, None],
                                                          radii=np.linalg.norm(x64, axis=1))
    huge = mf.Particles.from_ambient(np.array([[1e300, 1e300], [3.0, 4.0]]))      # ‖x‖² beyond float64
    np.testing.assert_allclose(huge.radii, [np.sqrt(2) * 1e300, 5.0], rtol=1e-15)
    x64[7] = 0.0
    with pytest.raises(ValueError, match=r"zero vector, which has no direction: row 7\."):
        mf.Particles.from_ambient(x64)
    with pytest.raises(ValueError, match=r"`positions` must have shape \(n, d\)"):
        mf.Particles.from_ambient(x64[0])


def test_speed_bound_of_large_value_matrices_takes_no_svd(monkeypatch):
    # Σ_h ‖V_h‖₂ by SVD took 24-41 s for 12 heads of 768×768 before a Post-LN run of 20 tokens (one RK4 step: 2 s),
    # to spare the stages an O(n) check; the bound min(‖V‖_F, √(‖V‖₁‖V‖_∞)) is O(d²), ≥ ‖V‖₂, and exact for c·I
    from meanfield._norms import spectral_norm_bounds as _spectral_norm_bounds
    from meanfield.backends._particles import ParticlesBackend

    rng = np.random.default_rng(2)
    V = np.stack([rng.standard_normal((40, 40)), 3.0 * np.eye(40), np.diag(rng.uniform(-2, 2, 40)),
                  np.outer(rng.standard_normal(40), rng.standard_normal(40))])
    exact = np.linalg.norm(V, 2, axis=(1, 2))
    bounds = _spectral_norm_bounds(V)
    assert np.all(bounds >= exact * (1 - 1e-14))
    assert bounds[1] == 3.0 and bounds[2] == pytest.approx(exact[2], rel=1e-15)   # c·I, diagonal: exact
    assert bounds[3] == pytest.approx(exact[3], rel=1e-12)                          # rank one: ‖V‖_F = ‖V‖₂

    def no_svd(*args, **kwargs):
        raise AssertionError("an O(d³) SVD for a bound")
    monkeypatch.setattr(np.linalg._linalg, "svd", no_svd)        # (the one np.linalg.norm(·, 2) calls)
    st = ParticlesBackend(mf.Model(2.0, d=40, V=V), mf.Particles.uniform(6, d=40, seed=0), method="rk4", step=0.1)
    assert st._speed_bound() == pytest.approx(float(np.sum(bounds)), rel=1e-15)


@pytest.mark.parametrize("scheme", ["peri-ln", "angpt"])
def test_left_padding_under_a_causal_mask_is_diagnosed_with_the_remedy_that_holds(scheme):
    # left padding (zero-weight tokens first, a transformer's attention mask) stops a scheme that normalizes A;
    # the message said why but not what to do.  It now says that the padding can be left out, which the last part
    # checks: the tokens with mass move alike with and without it (Pre-LN, where padding is allowed)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((30, 8)) * rng.uniform(1, 3, (30, 1))
    w = np.r_[np.zeros(4), np.ones(26)]
    padded = mf.Particles.from_ambient(x, weights=w)
    kw = dict(alpha=0.5) if scheme == "angpt" else {}
    with pytest.warns(mf.MeanfieldWarning, match="padding can be left out of the Particles"):
        traj = mf.simulate(mf.Model(1.0, scheme=scheme, d=8, **kw), padded, 0.2, backend="particles", time="layers",
                           step=0.1, causal=True)
    assert traj.status is mf.Status.NON_FINITE
    model = mf.Model(1.0, scheme="pre-ln", d=8, V=rng.standard_normal((8, 8)))
    run = lambda p: mf.simulate(model, p, 0.2, backend="particles", step=0.05, causal=True).final.ambient()  # noqa: E731
    np.testing.assert_allclose(run(padded)[4:], run(mf.Particles.from_ambient(x[4:])), rtol=1e-13, atol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_a_zero_padded_q_with_k_left_the_identity_costs_its_own_dimension_too(causal):
    # the rows of Q that are zero add zeros to ⟨Qθ, Kθ'⟩ whatever K is: with K = None (the identity) they were kept,
    # as they are for a zero Q (every logit 0), which must still give the plain weighted mean
    from meanfield._attention import _DirectEvaluator

    rng = np.random.default_rng(4)
    n, d, k = 40, 16, 3
    Q = np.zeros((d, d))
    Q[[2, 7, 11]] = rng.standard_normal((k, d))
    V = rng.standard_normal((d, d))
    p = mf.Particles(rng.standard_normal((n, d)), weights=rng.uniform(0.1, 1, n), normalize=True)
    th, w = p.positions, p.weights
    for q, rows in ((Q, k), (np.zeros((d, d)), 1)):
        model = mf.Model(0.8, d=d, Q=q, V=V)
        QT, KT, _ = _DirectEvaluator(model, np.array(w)).heads[0]
        assert QT.shape == KT.shape == (d, rows)
        logits = 0.8 * (th @ q.T) @ th.T
        if causal:
            logits[np.triu_indices(n, 1)] = -np.inf
        E = np.exp(logits) * w
        A = E @ (th @ V.T) / E.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(mf.attention_field(model, th, w, causal=causal).A, A, rtol=0,
                                   atol=1e-13 * np.abs(A).max())


def test_positions_of_one_column_are_refused_by_their_shape():
    # Particles(x) and Particles.from_ambient(x) of shape (n, 1) said "`d` must be an integer >= 2; got d=1", naming
    # a parameter neither takes
    for make in (mf.Particles, mf.Particles.from_ambient):
        with pytest.raises(ValueError, match=r"`positions` must have shape \(n, d\) with n ≥ 1 and `d` ≥ 2; got shape "
                                             r"\(3, 1\)"):
            make(np.ones((3, 1)))
