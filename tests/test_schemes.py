"""The scheme table: every row is complete, and each layer map tends to its ODE row."""
import numpy as np
import pytest

import meanfield as mf
from meanfield._norms import norms
from meanfield._schemes import normalize


def test_registry_has_the_eight_schemes():
    assert set(mf.SCHEMES) == {"post-ln", "pre-ln", "mix-ln", "peri-ln", "ngpt", "ln-scaling", "qkv-norm", "angpt"}
    with pytest.raises(ValueError, match="must be one of"):
        mf.get_scheme("rms-norm")


@pytest.mark.parametrize("name", sorted(mf.SCHEMES))
def test_row_is_complete(name):
    s = mf.SCHEMES[name]
    assert s.reference and s.description and callable(s.layer)
    if s.continuous:
        assert callable(s.speed)
        assert (s.radial is not None) == s.has_radius


@pytest.mark.parametrize("name", sorted(mf.SCHEMES))
def test_layer_normalizes_attention_flag_matches_the_layer_map(name):
    # the flag selects the zero-attention diagnosis of layered runs: it must say what the map does
    m = mf.Model(1.0, name, tau=0.5 if name == "mix-ln" else None)
    x = normalize(np.array([[1.0, 2.0, 2.0], [0.0, 1.0, 0.0]]))
    with np.errstate(all="ignore"):
        out = m.scheme_def.layer(x, lambda y: np.zeros_like(y), 0.1, 0.0, m)
    assert (not np.all(np.isfinite(out))) == m.scheme_def.layer_normalizes_attention


def _attention(beta):
    """Dense SA attention of the directions of y, for a handful of tokens."""
    def attn(y):
        th = normalize(y)
        w = np.exp(beta * th @ th.T)
        return (w / w.sum(1, keepdims=True)) @ th
    return attn


@pytest.mark.parametrize("name", sorted(n for n in mf.SCHEMES if mf.SCHEMES[n].continuous))
def test_layer_map_is_a_first_order_step_of_the_ode(name):
    """(layer(x, h) − x)/h → (r P_θA/s + θ ṙ) as h → 0, with O(h) error."""
    model = mf.Model(2.0, name, tau=10.0 if name == "mix-ln" else None)
    s = model.scheme_def
    rng = np.random.default_rng(0)
    theta = normalize(rng.standard_normal((6, 3)))
    r = 1.0 + rng.random((6, 1)) if s.has_radius else np.ones((6, 1))
    x = r * theta
    attn = _attention(2.0)
    a = attn(x)
    radial_a = np.sum(theta * a, axis=1, keepdims=True)
    a_norm = np.linalg.norm(a, axis=1, keepdims=True)
    speed = s.speed(r, a_norm, 0.0, model)
    rdot = s.radial(radial_a, a_norm, r, 0.0, model) if s.has_radius else 0.0
    exact = r * (a - radial_a * theta) / speed + theta * rdot
    errs = [np.max(np.abs((s.layer(x, attn, h, 0.0, model) - x) / h - exact)) for h in (1e-3, 5e-4)]
    assert errs[1] < 1e-2
    if errs[0] > 1e-11:                       # additive residual layers (pre-ln, peri-ln) are exact in h
        assert 1.8 < errs[0] / errs[1] < 2.2  # first order in h


# The scheme table of docs/model.md ("The schemes") written out here, not read from the package's: (speed factor s, dr/dt) of
# (r, ‖A‖, ⟨θ, A⟩, t) for α = 0.5 (nGPT) and τ = 0.5 (Mix-LN)
ALPHA, TAU = 0.5, 0.5
TABLE_ROWS = {
    "post-ln": lambda r, a, ra, t: (1.0, 0.0),
    "pre-ln": lambda r, a, ra, t: (r, ra),
    "mix-ln": lambda r, a, ra, t: (1.0, 0.0) if t <= TAU else (r, ra),
    "peri-ln": lambda r, a, ra, t: (r * a, ra / a),
    "ngpt": lambda r, a, ra, t: (a / ALPHA, 0.0),
    "ln-scaling": lambda r, a, ra, t: (np.sqrt(t + 1), 0.0),
    "qkv-norm": lambda r, a, ra, t: (r, ra),   # Q = K = V = I: the same A as Pre-LN
}


def _table_model(name):
    return mf.Model(2.0, name, tau=TAU if name == "mix-ln" else None, alpha=ALPHA if name == "ngpt" else 1.0)


def test_table_rows_cover_the_continuous_schemes():
    assert set(TABLE_ROWS) == {n for n in mf.SCHEMES if mf.SCHEMES[n].continuous}


@pytest.mark.parametrize("name", sorted(TABLE_ROWS))
@pytest.mark.parametrize("t", [0.3, 0.7, 2.5])
def test_speed_and_radial_law_are_table_rows(name, t):
    """At t ≠ 0 and α ≠ 1, where √(t+1), α and the Mix-LN switch are visible: equal to the written-out row."""
    model = _table_model(name)
    s = model.scheme_def
    rng = np.random.default_rng(1)
    r, a, ra = 1 + rng.random(5), 0.2 + rng.random(5), rng.standard_normal(5) * 0.1
    speed, rdot = TABLE_ROWS[name](r, a, ra, t)
    np.testing.assert_array_equal(np.broadcast_to(s.speed(r, a, t, model), (5,)), np.broadcast_to(speed, (5,)))
    if s.has_radius:
        np.testing.assert_allclose(s.radial(ra, a, r, t, model), np.broadcast_to(rdot, (5,)), rtol=1e-15, atol=0)
    else:
        assert np.all(rdot == 0.0)


@pytest.mark.parametrize("name", sorted(TABLE_ROWS))
def test_layer_map_is_a_first_order_step_of_the_table_ode_at_t(name):
    """At t = 0.7 with α = 0.5 and τ = 0.5: (layer(x, h) − x)/h → r P_θA/s + θ ṙ of the written-out row, O(h)."""
    model, t = _table_model(name), 0.7
    s = model.scheme_def
    rng = np.random.default_rng(2)
    theta = normalize(rng.standard_normal((6, 3)))
    r = 1.0 + rng.random((6, 1)) if s.has_radius else np.ones((6, 1))
    attn = _attention(2.0)
    a = attn(r * theta)
    radial_a = np.sum(theta * a, axis=1, keepdims=True)
    speed, rdot = TABLE_ROWS[name](r, np.linalg.norm(a, axis=1, keepdims=True), radial_a, t)
    exact = r * (a - radial_a * theta) / speed + theta * rdot
    errs = [np.max(np.abs((s.layer(r * theta, attn, h, t, model) - r * theta) / h - exact)) for h in (1e-3, 5e-4)]
    assert errs[1] < 1e-2
    if errs[0] > 1e-11:                       # additive residual layers (pre-ln, peri-ln) are exact in h
        assert 1.8 < errs[0] / errs[1] < 2.2  # first order in h


def test_normalize_rows_beyond_the_squares_range():
    rows = np.array([[3.0, 4.0, 0.0]]) * np.array([[1e200], [1e-200]])
    np.testing.assert_allclose(normalize(rows), [[0.6, 0.8, 0.0]] * 2, rtol=1e-15)
    np.testing.assert_allclose(normalize(rows[0]), [0.6, 0.8, 0.0], rtol=1e-15)


def test_mix_ln_switches_at_tau():
    m = mf.Model(1.0, "mix-ln", tau=1.0)
    s = m.scheme_def
    assert s.speed(np.array(3.0), np.array(1.0), 0.5, m) == 1.0
    assert s.speed(np.array(3.0), np.array(1.0), 1.5, m) == 3.0
    assert s.radial(np.array(0.2), np.array(1.0), np.array(3.0), 0.5, m) == 0.0


@pytest.mark.parametrize("r0", [1e-160, 3.0, 1e160])
def test_mix_ln_layers_before_tau_move_directions_as_post_ln_at_any_radius(r0):
    # before τ the radius is frozen and the directions take Post-LN layers; the layer gave attn the raw x and took
    # ‖x‖ with np.linalg.norm, whose square overflows: r0 = 1e160 raised ZeroVectorError ("`directions` contains a
    # zero vector") out of simulate
    p = mf.Particles.uniform(5, seed=0)
    post = mf.simulate(mf.Model(1.0), p, 0.5, backend="particles", time="layers", step=0.1)
    mix = mf.simulate(mf.Model(1.0, "mix-ln", tau=1.0), mf.Particles(p.positions, radii=np.full(5, r0)), 0.5,
                      backend="particles", time="layers", step=0.1)
    assert mix.status is mf.Status.OK
    np.testing.assert_allclose(mix.final.positions, post.final.positions, rtol=0, atol=1e-14)
    np.testing.assert_allclose(mix.final.radii, r0, rtol=1e-14)
    seen = []
    m = mf.Model(1.0, "mix-ln", tau=1.0)
    m.scheme_def.layer(r0 * p.positions, lambda y: seen.append(norms(y)) or y, 0.1, 0.0, m)
    np.testing.assert_allclose(seen[0], 1.0, rtol=1e-15)        # attn is given directions, as by every other layer


def test_a_missing_switch_time_names_its_range():
    with pytest.raises(ValueError, match=r"`tau` \(the Mix-LN switch time, τ ≥ 0\) is required for scheme='mix-ln'"):
        mf.Model(1.0, "mix-ln")


def test_angpt_layer_keeps_orthogonal_inputs_on_the_sphere():
    m = mf.Model(1.0, "angpt", alpha=0.5)
    x = np.array([[1.0, 0.0, 0.0]])
    out = m.scheme_def.layer(x, lambda y: np.array([[0.0, 2.0, 0.0]]), 0.3, 0.0, m)
    assert abs(np.linalg.norm(out) - 1) < 1e-15


def test_scheme_uses_magnitude_keeps_only_answers_that_do_not_depend_on_t():
    # TIME_FREE_ROWS answers are probed once and kept; every other row is probed at its t, so a row whose use of
    # ‖A‖ or ⟨θ, A⟩ changes with t (Mix-LN at τ, a custom row) is answered at each t
    from dataclasses import replace

    import meanfield as mf
    from meanfield._schemes import SCHEMES, TIME_FREE_ROWS
    from meanfield.backends._stepper import _probe_magnitude, scheme_uses_magnitude

    for f in TIME_FREE_ROWS:   # the claim of the set: the same answer at every t and for every model
        owner = next(s for s in SCHEMES.values() if f in (s.speed, s.radial))
        models = [mf.Model(1.0, scheme=owner.name)] + (
            [mf.Model(1.0, scheme="ngpt", alpha=lambda t: 1e-300 if t > 1 else 1e300)] if owner.name == "ngpt" else [])
        answers = {_probe_magnitude(replace(owner, speed=f, radial=None) if f is owner.speed
                                    else replace(owner, speed=lambda r, a, t, m: r, radial=f), t, m)
                   for t in (-5.0, -1.0, 0.0, 0.5, 2.0, 1e300) for m in models}
        assert len(answers) == 1, owner.name
    for scheme in SCHEMES.values():
        if scheme.continuous:
            model = mf.Model(1.0, scheme=scheme.name, **({"tau": 0.5} if scheme.uses_tau else {}))
            for t in (-3.0, 0.0, 0.25, 0.75, 0.25):
                assert scheme_uses_magnitude(scheme, t, model) == _probe_magnitude(scheme, t, model), (scheme.name, t)
    mix = mf.Model(1.0, scheme="mix-ln", tau=0.5)
    assert [scheme_uses_magnitude(SCHEMES["mix-ln"], t, mix) for t in (0.25, 0.75, 0.25)] == [False, True, False]
    post, pre = SCHEMES["post-ln"], SCHEMES["pre-ln"]
    late = replace(post, name="late", speed=lambda r, a_norm, t, model: a_norm if t > 1 else r)
    assert [scheme_uses_magnitude(late, t, mix) for t in (0.0, 2.0, 0.0)] == [False, True, False]
    # a listed speed factor with a custom radial law: probed at every t
    late_radial = replace(pre, name="late-radial", radial=lambda ra, a_norm, r, t, model: ra if t > 1 else 0 * r)
    for _ in range(2):
        assert [scheme_uses_magnitude(late_radial, t, mix) for t in (0.0, 2.0)] == [False, True]


def test_mix_ln_at_tau_itself_is_post_ln():
    # docs/model.md: "1 for t ≤ τ, r after", "Mix-LN's layer at t = τ is a Post-LN layer"; t ≥ τ went unnoticed
    m = mf.Model(1.0, "mix-ln", tau=1.0)
    s = m.scheme_def
    assert s.speed(np.array(3.0), np.array(1.0), 1.0, m) == 1.0
    assert s.radial(np.array(0.2), np.array(1.0), np.array(3.0), 1.0, m) == 0.0
    x = np.array([[3.0, 0.0, 0.0]])
    out = s.layer(x, lambda y: np.array([[0.0, 1.0, 0.0]]), 0.5, 1.0, m)     # the radius 3 is kept at t = τ
    np.testing.assert_allclose(out, 3.0 * normalize(np.array([[1.0, 0.5, 0.0]])), rtol=1e-15, atol=0)
    after = s.layer(x, lambda y: np.array([[0.0, 1.0, 0.0]]), 0.5, 1.0 + 1e-9, m)   # Pre-LN just after τ
    np.testing.assert_allclose(after, [[3.0, 0.5, 0.0]], rtol=1e-15, atol=0)


@pytest.mark.parametrize("alpha, h", [(1.0, 1.0), (0.5, 0.4)])
def test_ngpt_layer_interpolates_between_x_and_the_attention_direction(alpha, h):
    # x ← N(x + hα(N(A) − x)) = N((1 − hα)x + hα N(A)): at hα = 1 one layer lands on N(A) exactly, and for hα = 0.2
    # with x ⟂ N(A) the result is N(0.8 x + 0.2 N(A)).  Dropping the "− x" keeps the O(h) limit (the first-order
    # tests cannot see it) but not these values
    m = mf.Model(1.0, "ngpt", alpha=alpha)
    x = np.array([[1.0, 0.0, 0.0]])
    A = np.array([[0.0, 3.0, 4.0]])
    a = alpha * h
    out = m.scheme_def.layer(x, lambda y: A, h, 0.0, m)
    np.testing.assert_allclose(out, normalize((1 - a) * x + a * A / 5.0), rtol=1e-15, atol=1e-16)


@pytest.mark.parametrize("scheme", ["angpt", "ngpt"])
def test_a_layer_weight_above_one_is_refused(scheme):
    # a = α·step is the interpolation weight of anGPT's h ← ν(a)((1−a)h + a N(Attn(N(h)))) and of nGPT's
    # x ← N(x + hα(N(A) − x)) = N((1 − a)x + a N(A)): a > 1 extrapolates past N(Attn).  α = 1, step = 1.5 ran to status
    # OK (anGPT: radii 0.72–0.76 after 3 layers; nGPT: also α = 2, step = 0.75, to another state); a = 1 is allowed
    p = mf.Particles.uniform(4, seed=1)
    for alpha, step in [(2.0, 0.75), (1.0, 1.5)]:
        with pytest.raises(ValueError, match=rf"scheme='{scheme}' needs the layer weight a = alpha·step in \(0, 1\].*"
                                             rf"got alpha={alpha!r}, step={step!r}: a = 1.5"):
            mf.simulate(mf.Model(1.0, scheme, alpha=alpha), p, 3 * step, backend="particles", time="layers",
                        step=step)
    ok = mf.simulate(mf.Model(1.0, scheme, alpha=0.7), p, 3 / 0.7, backend="particles", time="layers", step=1 / 0.7)
    assert ok.success
    # a callable α(t) is checked at each layer: the run ends with the layer whose weight passes 1
    calls = []

    def alpha(t):
        calls.append(t)
        return 0.5 + t
    with pytest.raises(ValueError, match=rf"scheme='{scheme}'.*got alpha\(0.8\)=1.3, step=0.8: a = 1.04"):
        mf.simulate(mf.Model(1.0, scheme, alpha=alpha), p, 2.4, backend="particles", time="layers", step=0.8)
    assert max(calls) == 0.8        # the layer at t = 0 ran (a = 0.4), the one at t = 0.8 was refused


@pytest.mark.parametrize("t_final, step", [(1.0, 1e10), (1.0, 1e9), (1e-12, 0.1)])
def test_a_layer_step_longer_than_the_span_is_refused(t_final, step):
    # (t_final − t0)/step = 1e-10 layers passed the whole-layers check (a slack of 1e-9 layers, however short the
    # span): the run took 0 layers and returned the initial state with status OK
    p = mf.Particles.uniform(5, seed=0)
    for backend in ("particles", "particles-sh"):
        with pytest.raises(ValueError, match=rf"whole numbers of layers of step={step!r}; .* \(0 layers end at 0\)\. "
                                             rf"`step` must be at most {t_final:.12g}, the span it is to cover"):
            mf.simulate(mf.Model(1.0), p, t_final, backend=backend, time="layers", step=step)


def test_layers_far_from_time_zero_count_the_rounding_of_the_times():
    # from t0 = 1e8 three layers of 0.1 end at 1e8 + 0.3 (to rounding), but (1e8 + 0.3 − 1e8)/0.1 = 2.99999997 was
    # refused as "2.9999999702 layers (3 layers end at 100000000.3)": the slack was relative to the count only, not
    # to the rounding of t0 and t_final.  Post-LN's layer does not depend on t: the run from t0 = 0 is the same bits
    p = mf.Particles.uniform(5, seed=0)
    far = mf.simulate(mf.Model(1.0), p, 1e8 + 0.3, t0=1e8, backend="particles", time="layers", step=0.1)
    near = mf.simulate(mf.Model(1.0), p, 0.3, backend="particles", time="layers", step=0.1)
    assert far.success and len(far.steps["t"]) == 3
    assert np.array_equal(far.final.positions, near.final.positions)


# Random multi-head Q, K, V and weighted tokens: the layers of a run against the maps of docs/model.md written out
# here (not the package's Scheme.layer), and against the ODE of each scheme
_RNG = np.random.default_rng(7)
_N, _H = 7, 2
_THETA = normalize(_RNG.standard_normal((_N, 3)))
_W = _RNG.random(_N) + 0.2
_W /= _W.sum()
_R0 = 0.5 + _RNG.random(_N)
_QKV = {k: _RNG.standard_normal((_H, 3, 3)) * 0.6 + np.eye(3) for k in "QKV"}


def _heads_attention(model, x, w, causal):
    """Σ_heads of the SA/USA attention of the directions of x (QKV-Norm: q, k, v normalized), causal: k ≤ j."""
    th, A = normalize(x), np.zeros_like(x)
    for Q, K, V in zip(*model.matrices()):
        q, k, v = th @ Q.T, th @ K.T, th @ V.T
        if model.scheme == "qkv-norm":
            q, k, v = normalize(q), normalize(k), normalize(v)
        E = np.exp(model.beta * q @ k.T) * w
        E = np.tril(E) if causal else E
        A += E @ v / (E.sum(1, keepdims=True) if model.softmax else 1.0)
    return A


def _layer_by_hand(model, x, h, t, w, causal):
    """One layer of docs/model.md's discrete forms, x ambient (r θ)."""
    def A(z):
        return _heads_attention(model, z, w, causal)
    s, N = model.scheme, normalize
    if s == "post-ln":
        return N(x + h * A(x))
    if s in ("pre-ln", "qkv-norm") or (s == "mix-ln" and t > model.tau):
        return x + h * A(N(x))
    if s == "mix-ln":
        return norms(x)[:, None] * N(N(x) + h * A(N(x)))
    if s == "peri-ln":
        return x + h * N(A(N(x)))
    if s == "ngpt":
        return N(x + h * model.alpha * (N(A(x)) - x))
    if s == "ln-scaling":
        return N(x + h * A(x) / np.sqrt(t + 1.0))
    a = model.alpha * h                                     # anGPT
    return ((1 - a) * x + a * N(A(N(x)))) / np.sqrt(a * a + (1 - a) ** 2)


_LAYER_CASES = {
    "post-ln": (dict(**_QKV), {}), "pre-ln": (dict(**_QKV), {}), "mix-ln": (dict(tau=0.5), {}),
    "peri-ln": (dict(**_QKV), {}), "ngpt": (dict(alpha=0.6), {}), "ln-scaling": ({}, dict(t0=0.3)),
    "qkv-norm": (dict(**_QKV), {}), "angpt": (dict(alpha=0.6, **_QKV), {}),
    "post-ln usa causal": (dict(attention="unnormalized"), dict(causal=True)),
    "pre-ln causal": (dict(**_QKV), dict(causal=True)),
}


def _layer_case(case):
    kwargs, run = _LAYER_CASES[case]
    model = mf.Model(2.0, case.split()[0], **kwargs)
    has_r = model.scheme_def.has_radius
    return model, mf.Particles(_THETA, _W, _R0 if has_r else None), run, has_r


def _ambient(p, has_r):
    return p.positions * p.radii[:, None] if has_r else p.positions


@pytest.mark.parametrize("case", sorted(_LAYER_CASES))
def test_layered_runs_are_the_layer_maps_of_the_design_with_heads_and_a_causal_mask(case):
    """12 layers of h = 0.1 (Mix-LN crossing τ = 0.5, LN-Scaling from t0 = 0.3), the radius r = ‖x‖ of the
    schemes with one: equal to the written-out maps to rounding (measured ≤ 1.8e-15)."""
    model, start, run, has_r = _layer_case(case)
    t0, h = run.get("t0", 0.0), 0.1
    got = mf.simulate(model, start, t0 + 1.2, backend="particles", time="layers", step=h, **run).final
    x = _ambient(start, has_r)
    for k in range(12):
        x = _layer_by_hand(model, x, h, t0 + k * h, _W, run.get("causal", False))
        x = x if has_r else normalize(x)
    assert np.max(np.abs(_ambient(got, has_r) - x)) < 1e-13
    if not has_r:
        assert got.radii is None


@pytest.mark.parametrize("case", sorted(_LAYER_CASES))
def test_every_layer_map_converges_to_its_ode_at_first_order_from_a_generic_start(case):
    """The ambient state after T = 1.2 against the ODE (rk45 at rtol 1e-12); anGPT against Peri-LN at time αT (its
    layer is x + αh N(A) + O(h²)).  Observed order from h = 0.01 and 0.005: measured 0.95 (Post-LN, random heads,
    still approaching 1 from below) to 1.01; the error of the estimate is O(h)."""
    model, start, run, has_r = _layer_case(case)
    t0 = run.get("t0", 0.0)
    if model.scheme == "angpt":
        ode_model, span = mf.Model(2.0, "peri-ln", **_QKV), 1.2 * model.alpha
    else:
        ode_model, span = model, 1.2
    ref = mf.simulate(ode_model, start, t0 + span, backend="particles", rtol=1e-12, atol=1e-14, **run).final
    errs = []
    for h in (0.01, 0.005):
        f = mf.simulate(model, start, t0 + 1.2, backend="particles", time="layers", step=h, **run).final
        errs.append(np.max(np.abs(_ambient(f, has_r) - _ambient(ref, has_r))))
    order = np.log2(errs[0] / errs[1])
    assert abs(order - 1) < 0.1, (errs, order)


@pytest.mark.parametrize("backend", ["particles", "particles-sh"])
def test_a_layered_alpha_schedule_need_not_be_defined_at_t_final(backend):
    # the layers of α(t) = 1 − t from 0 to 1 use α at 0, 0.1, …, 0.9 (down to 0.1), never α(1) = 0; the diagnostics of
    # the final state computed nGPT's ODE speed ‖A‖/α(1) and raised "`alpha(t)` must be finite and > 0; got
    # alpha(1.0)=0.0" after the last layer.  The speed is now left out there (NaN), the run kept
    p = mf.Particles.uniform(5, seed=0)
    model = mf.Model(1.0, "ngpt", alpha=lambda t: 1.0 - t)
    tr = mf.simulate(model, p, 1.0, backend=backend, time="layers", step=0.1, save_every=0.5)
    assert tr.success
    assert np.all(np.isfinite(tr.diagnostics["max_speed"][:2])) and np.isnan(tr.diagnostics["max_speed"][2])
    assert np.isnan(tr.diagnostics["dissipation"][2]) and np.isfinite(tr.diagnostics["energy"][2])
    x = p.positions
    for k in range(10):
        a = (1.0 - 0.1 * k) * 0.1
        x = normalize(x + a * (normalize(_attention_weighted(1.0, x, p.weights)) - x))
    # rounding (particles: measured 1e-16); particles-sh's velocity is exact to its kernel tolerance tol = 1e-12
    # relative to the kernel sum (measured 1.1e-13 after 10 layers)
    np.testing.assert_allclose(tr.final.positions, x, rtol=0, atol=1e-14 if backend == "particles" else 1e-12)


def _attention_weighted(beta, x, w):
    """SA attention of the directions of x with token weights w, Q = K = V = I."""
    th = normalize(x)
    e = np.exp(beta * th @ th.T) * w
    return e @ th / e.sum(1, keepdims=True)


def test_a_layered_alpha_schedule_need_not_be_defined_at_t_final_where_particles_sh_is_unresolved():
    # where the spectral velocity is unresolved (relative bound ≥ 1: β = 20 at lmax = 2) particles-sh looked for the
    # ODE's smallest speed factor, for its warning, at the final state: alpha(1) = 0 raised after the last layer.
    # A layered run has no ODE speed to warn about
    p = mf.Particles.uniform(5, seed=0)
    model = mf.Model(20.0, "ngpt", alpha=lambda t: 1.0 - t)
    with pytest.warns(mf.MeanfieldWarning, match="lmax=2 is below the kernel band limit"):
        tr = mf.simulate(model, p, 1.0, backend="particles-sh", time="layers", step=0.1, save_every=0.5, lmax=2)
    assert tr.success
    assert np.all(tr.diagnostics["relative_velocity_error_bound"] >= 1)


@pytest.fixture
def user_schemes():
    """The scheme registry as it was, restored after the test (the other tests iterate it)."""
    from meanfield._schemes import SCHEMES

    saved = dict(SCHEMES)
    yield SCHEMES
    SCHEMES.clear()
    SCHEMES.update(saved)


def _sandwich(name="sandwich-test", needs_norm=True):
    g = lambda a_norm: np.sqrt(1.0 + np.asarray(a_norm) ** 2)     # noqa: E731
    return mf.Scheme(name=name, has_radius=True, needs_norm=needs_norm,
                     speed=lambda r, a_norm, t, model: r * g(a_norm),
                     radial=lambda radial_a, a_norm, r, t, model: radial_a / g(a_norm),
                     layer=lambda x, attn, h, t, model: x + h * attn(x) / g(norms(attn(x)))[:, None])


def test_register_scheme_is_public_and_checks_the_row(user_schemes):
    """Registering a scheme took the private ``meanfield._schemes.register``, which accepted anything (a built-in
    name replaced Post-LN for every later run; a non-callable speed failed only inside a run)."""
    import dataclasses

    row = mf.register_scheme(_sandwich())
    assert mf.SCHEMES["sandwich-test"] is row and mf.get_scheme("sandwich-test") is row
    with pytest.raises(ValueError, match=r"`scheme.name` must not be a built-in scheme's .*got name='post-ln'"):
        mf.register_scheme(dataclasses.replace(mf.SCHEMES["pre-ln"], name="post-ln"))
    with pytest.raises(TypeError, match=r"`scheme` must be a meanfield.Scheme; got str"):
        mf.register_scheme("post-ln")
    with pytest.raises(TypeError, match=r"`scheme.speed` must be callable or None; got speed=1"):
        mf.register_scheme(dataclasses.replace(row, name="bad", speed=1))
    with pytest.raises(ValueError, match=r"a continuous scheme needs `speed`"):
        mf.register_scheme(dataclasses.replace(row, name="bad", speed=None))
    mf.unregister_scheme("sandwich-test")
    assert "sandwich-test" not in mf.SCHEMES
    with pytest.raises(ValueError, match=r"'post-ln' is built in"):
        mf.unregister_scheme("post-ln")


def test_a_row_that_reads_the_attention_norm_must_say_needs_norm(user_schemes):
    """Without needs_norm the spectral backend passes ‖A‖ = 1 to the speed: a Sandwich-LN (s = r√(1 + ‖A‖²))
    registered so ran 0.014 off the same row with needs_norm (lmax 14, t = 0.5), silently; it is now refused."""
    with pytest.raises(ValueError, match=r"scheme 'sandwich-nonorm': .* must set needs_norm=True"):
        mf.register_scheme(_sandwich("sandwich-nonorm", needs_norm=False))
    assert "sandwich-nonorm" not in mf.SCHEMES


@pytest.mark.parametrize("backend, kw", [("spectral", {}), ("hybrid", {}), ("particles", {}), ("particles-sh", {}),
                                         ("particles", {"time": "layers", "step": 0.1})])
def test_a_registered_copy_of_post_ln_gives_post_ln_bits_with_every_backend(user_schemes, backend, kw):
    import dataclasses

    mf.register_scheme(dataclasses.replace(mf.SCHEMES["post-ln"], name="post-ln-copy"))
    initial = (mf.Density.random(12, seed=1, amplitude=0.3) if backend in ("spectral", "hybrid")
               else mf.Particles.uniform(30, seed=1))
    a, b = (mf.simulate(mf.Model(1.0, scheme=s), initial, 0.5, backend=backend, **kw).final
            for s in ("post-ln", "post-ln-copy"))
    assert a == b


def test_register_scheme_refuses_flags_that_are_not_bools_and_unregister_a_name_that_is_not_a_string(user_schemes):
    """has_radius="no" registered a row with a radius (a truthy string); unregister_scheme(["x"]) raised Python's
    "unhashable type: 'list'"."""
    import dataclasses

    post = mf.SCHEMES["post-ln"]
    for key, value in (("has_radius", "no"), ("needs_norm", 1), ("continuous", None)):
        with pytest.raises(TypeError, match=rf"`scheme.{key}` must be True or False; got {key}="):
            mf.register_scheme(dataclasses.replace(post, name="flag-test", **{key: value}))
        assert "flag-test" not in mf.SCHEMES
    mf.register_scheme(dataclasses.replace(post, name="flag-test", has_radius=np.bool_(False)))
    with pytest.raises(TypeError, match=r"`name` must be a string, the name of a scheme added by register_scheme"):
        mf.unregister_scheme(["flag-test"])
    mf.unregister_scheme("flag-test")
