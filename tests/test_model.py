import warnings

import numpy as np
import pytest

import meanfield as mf


def test_defaults_and_normalized_names():
    m = mf.Model(2.0)
    assert (m.scheme, m.attention, m.d, m.heads) == ("post-ln", "softmax", 3, 1)
    assert mf.Model(1.0, attention="usa").attention == "unnormalized"
    assert m.isotropic and m.beta_eff == 2.0


def test_isotropic_detection_and_effective_beta():
    assert mf.Model(2.0, Q=2 * np.eye(3), K=1.5 * np.eye(3)).beta_eff == pytest.approx(6.0, rel=1e-15)
    assert not mf.Model(2.0, Q=np.diag([1.0, 2.0, 3.0])).isotropic
    # a rotation R with QᵀK = RᵀR = I is isotropic
    c, s = np.cos(0.3), np.sin(0.3)
    r = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    assert mf.Model(1.0, Q=r, K=r).isotropic
    assert not mf.Model(1.0, Q=np.ones((2, 3, 3))).isotropic   # several heads


def test_alpha_function_and_matrices():
    m = mf.Model(1.0, "ngpt", alpha=lambda t: 1.0 + t)
    assert m.alpha_at(2.0) == 3.0
    q, k, v = mf.Model(1.0, d=4, V=2 * np.eye(4)).matrices()
    assert q.shape == (1, 4, 4) and np.allclose(v[0], 2 * np.eye(4))
    with pytest.raises(ValueError, match="alpha"):
        mf.Model(1.0, "ngpt", alpha=lambda t: -1.0).alpha_at(0.0)


def test_model_is_frozen():
    m = mf.Model(1.0)
    with pytest.raises(AttributeError):
        m.beta = 2.0
    with pytest.raises(ValueError):
        m.Q  # noqa: B018  (None is fine)
        mf.Model(1.0, Q=np.eye(3)).Q[0, 0] = 5.0   # arrays are read-only


def test_models_with_matrices_compare_and_hash():
    # `==` raised "The truth value of an array with more than one element is ambiguous" for any model with a
    # matrix, e.g. mf.load(path).model == model for a run with V
    V = np.array([[1.0, 0.2, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.5]])
    a, b = mf.Model(2.0, V=V), mf.Model(2.0, V=V.copy())
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != mf.Model(2.0, V=2 * V) and a != mf.Model(2.0) and a != mf.Model(3.0, V=V)
    assert a != mf.Model(2.0, Q=V) and mf.Model(2.0, Q=np.eye(3)) != mf.Model(2.0, Q=np.eye(3)[None])
    assert mf.Model(2.0) == mf.Model(2.0) and mf.Model(2.0) != "post-ln"


@pytest.mark.parametrize("kwargs, match", [
    (dict(beta=0.0), "`beta`"), (dict(beta=-1.0), "`beta`"), (dict(beta=np.nan), "`beta`"),
    (dict(beta=np.inf), "`beta`"), (dict(beta=10**400), "`beta` must be finite and > 0"),   # float() overflowed
    # d = 10**400 raised numpy's "Maximum allowed dimension exceeded"; 10**5000 in a message raised Python's "Exceeds
    # the limit (4300 digits) for integer string conversion"
    (dict(beta=1.0, d=10**400), r"`d` must be an integer >= 2 and within int64's range \(≤ 2\*\*63 − 1 = \d+\); "
                                r"got d=<an integer of 1329 bits"),
    (dict(beta=1.0, d=2**64), r"`d` must be an integer >= 2 and within int64's range .*; got d=18446744073709551616\."),
    (dict(beta=10**5000), r"`beta` must be finite and > 0; got beta=<an integer of 16610 bits"),
    (dict(beta=1.0, d=1), "`d`"), (dict(beta=1.0, scheme="layer-norm"), "`scheme`"),
    (dict(beta=1.0, attention="linear"), "`attention`"), (dict(beta=1.0, scheme="mix-ln"), "`tau`"),
    (dict(beta=1.0, tau=1.0), "`tau`"), (dict(beta=1.0, scheme="mix-ln", tau=-1.0), "`tau`"),
    (dict(beta=1.0, alpha=0.0), "`alpha`"), (dict(beta=1.0, Q=np.eye(2)), "`Q`"),
    (dict(beta=1.0, alpha=0.5), "`alpha` is only used by scheme='angpt' or 'ngpt'"),
    (dict(beta=800.0, attention="unnormalized"), r"needs β·c ≤ 709.78"),
    (dict(beta=400.0, attention="unnormalized", Q=2 * np.eye(3)), r"got β·c = 800"),
    (dict(beta=1.0, scheme="pre-ln", alpha=lambda t: 1.0), "`alpha` is only used"),
    (dict(beta=1.0, V=np.full((3, 3), np.nan)), "`V`"),
    (dict(beta=1.0, Q=np.ones((2, 3, 3)), K=np.ones((3, 3, 3))), "heads"),
    (dict(beta=1.0, Q=np.zeros((0, 3, 3))), r"`Q` must have shape \(3, 3\) or \(heads, 3, 3\) with heads ≥ 1"),
])
def test_bad_input_names_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mf.Model(**kwargs)


def test_beta_type_error():
    with pytest.raises(TypeError, match="`beta`"):
        mf.Model("2")


def test_an_anisotropic_usa_kernel_beyond_float64_is_warned_about():
    with pytest.warns(mf.MeanfieldWarning, match=r"β·‖QᵀK‖ = 770 > 709.78"):
        mf.Model(350.0, attention="unnormalized", Q=np.diag([2.2, 2.1, 2.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mf.Model(350.0, Q=np.diag([2.2, 2.1, 2.0]))                      # softmax: shifted, no limit
        mf.Model(3.0, attention="unnormalized", Q=np.diag([2.2, 2.1, 2.0]))


def test_logit_bound_is_the_largest_logit_over_the_sphere_and_the_heads():
    rng = np.random.default_rng(4)
    Q, K = rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 3, 3))
    m = mf.Model(1.5, Q=Q, K=K)
    # max over unit x, y of ⟨Q_h x, K_h y⟩ = xᵀ Q_hᵀ K_h y: attained at the top singular pair of Q_hᵀ K_h
    best = 0.0
    for q, k in zip(Q, K):
        u, s, vt = np.linalg.svd(q.T @ k)
        x, y = u[:, 0], vt[0]
        best = max(best, float((q @ x) @ (k @ y)))
    assert m.logit_bound == pytest.approx(1.5 * best, rel=1e-14)
    assert mf.Model(1.5, "qkv-norm", Q=Q[0], K=K[0]).logit_bound == 1.5       # unit q and k


def test_repr_shows_the_matrices_given():
    """Q, K, V were hidden: an anisotropic model printed exactly like the isotropic one."""
    assert repr(mf.Model(1.0)) == "Model(beta=1.0, scheme='post-ln', attention='softmax', d=3, alpha=1.0, tau=None)"
    text = repr(mf.Model(1.0, Q=np.diag([1.0, 0.5, 1.0]), V=2 * np.eye(3)))
    assert "Q=diag([1. , 0.5, 1. ])" in text and "V=2·I" in text and "K=" not in text
    assert "Q=<8×8 matrix>" in repr(mf.Model(1.0, d=8, Q=np.arange(64.0).reshape(8, 8)))
    assert "K=<2 heads of 3×3>" in repr(mf.Model(1.0, K=np.stack([np.eye(3)] * 2)))


def test_identity_and_diagonal_q_k_need_no_dense_products(monkeypatch):
    """Model(d=8192) took 24 s (and logit_bound minutes): QᵀK of identities was formed as a dense O(d³) product."""
    q = np.diag(np.full(2000, 2.0))
    monkeypatch.setattr(np, "eye", lambda *a, **k: pytest.fail("a dense identity was built"))
    m = mf.Model(1.5, d=4096)
    assert m.isotropic and m.beta_eff == 1.5 and m.logit_bound == 1.5
    m = mf.Model(1.5, "qkv-norm", d=4096)
    assert m.isotropic and m.beta_eff == 1.5
    m = mf.Model(1.5, d=2000, Q=q, K=np.diag(np.linspace(0.5, 1.0, 2000)))      # diagonal: O(d²) checks only
    assert not m.isotropic and m.logit_bound == 1.5 * 2.0


@pytest.mark.parametrize("kinds", [("none", "diag"), ("diag", "full"), ("full", "none"), ("diag", "diag"),
                                   ("rotation", "none"), ("full", "full")])
def test_structured_q_k_give_the_dense_results_bit_for_bit(kinds):
    """A diagonal or missing factor is applied by scaling (see _model._transposed_product): each entry of the
    dense product has a single nonzero term, so QᵀK, β_eff and logit_bound are those of the dense product exactly."""
    rng = np.random.default_rng(7)
    c, s = np.cos(0.3), np.sin(0.3)
    make = {"none": None, "diag": np.diag(rng.uniform(0.5, 2.0, 3)), "full": rng.standard_normal((3, 3)),
            "rotation": 1.3 * np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}
    Q, K = (make[k] for k in kinds)
    dense = (np.eye(3) if Q is None else Q).T @ (np.eye(3) if K is None else K)
    m = mf.Model(0.7, Q=Q, K=K)
    product = m._qk_product()
    assert np.array_equal(np.diag(product) if product.ndim == 1 else product, dense)
    assert m.logit_bound == float(0.7 * np.linalg.norm(dense, 2))
    if m.isotropic:
        assert m.beta_eff == 0.7 * dense[0, 0]


@pytest.mark.parametrize("alpha, shown", [(lambda t, s: 0.5, r"alpha\(t, s\)"), (lambda: 0.5, r"alpha\(\)")])
def test_a_callable_alpha_of_the_wrong_arity_is_refused_up_front(alpha, shown):
    """alpha(t, s) failed with Python's TypeError at the first step of the run."""
    with pytest.raises(TypeError, match=rf"`alpha` must be callable as alpha\(t\) \(t the time\); got {shown}"):
        mf.Model(1.0, scheme="angpt", alpha=alpha)
    assert mf.Model(1.0, "ngpt", alpha=lambda t, scale=1.0: scale).alpha_at(0.5) == 1.0   # a default is fine
    assert mf.Model(1.0, "ngpt", alpha=np.exp).alpha_at(0.0) == 1.0                     # so is a ufunc


def test_a_callable_alpha_that_returns_no_number_is_named():
    """float("x") raised "could not convert string to float: 'x'" mid-run."""
    with pytest.raises(ValueError, match=r"`alpha\(t\)` must return a real number; got alpha\(0\.0\)='x'"):
        mf.simulate(mf.Model(1.0, "ngpt", alpha=lambda t: "x"), mf.Particles.uniform(5), 0.1, backend="particles")


@pytest.mark.parametrize("name, value", [
    ("Q", [[True, False, False], [False, True, False], [False, False, True]]), ("K", np.eye(3, dtype=bool)),
    ("V", [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, True]]),
])
def test_boolean_matrices_are_refused(name, value):
    """Q=np.eye(3, dtype=bool) was read as the identity."""
    with pytest.raises(TypeError, match=rf"`{name}` must be numbers; got booleans"):
        mf.Model(1.0, **{name: value})


@pytest.mark.parametrize("name", ["Q", "K", "V"])
def test_numeric_text_matrices_are_refused(name):
    """Q=[['1', '0', '0'], ...] was read as the identity (numpy casts numeric text)."""
    with pytest.raises(ValueError, match=rf"`{name}` must be numbers"):
        mf.Model(1.0, **{name: [["1", "0", "0"], ["0", "1", "0"], ["0", "0", "1"]]})


@pytest.mark.parametrize("value", ["0.5", True])
def test_a_callable_alpha_returning_text_or_a_bool_is_refused(value):
    """float('0.5') and float(True) passed: alpha(t) = '0.5' ran as 0.5."""
    with pytest.raises(ValueError, match=r"`alpha\(t\)` must return a real number; got alpha\(0\.0\)="):
        mf.Model(1.0, "ngpt", alpha=lambda t: value).alpha_at(0.0)


def test_a_large_d_without_q_and_k_allocates_nothing():
    """QᵀK = I was found from two length-d arrays of ones: Model(1.0, d=10**8) took 12.9 s and 3.9 GB, and
    d=2**40 raised numpy's "Unable to allocate 8.00 TiB" (a simulation with such d is refused by its memory check)."""
    m = mf.Model(1.0, d=2**40)
    assert m.isotropic and m.beta_eff == 1.0
    assert mf.Model(2.0, d=2**40, attention="unnormalized").beta_eff == 2.0


def test_a_head_projection_of_shape_k_by_d_is_refused_with_how_to_pass_it():
    # a transformer's per-head W_Q, W_K, W_V have shape (k, d): the message gave only the shape rule, and left the
    # user to find that a zero-padded (d, d) Q and K give the same logits and that V must carry the output projection
    d, k = 16, 4
    W = np.random.default_rng(0).standard_normal((2, k, d))
    with pytest.raises(ValueError, match=r"zero-padded to \(16, 16\): Q = np\.pad\(W, \(\(0, 0\), \(0, 12\), \(0, 0\)\)\)"):
        mf.Model(1.0, d=d, Q=W)
    with pytest.raises(ValueError, match=r"K = np\.pad\(W, \(\(0, 12\), \(0, 0\)\)\)"):
        mf.Model(1.0, d=d, K=W[0])
    with pytest.raises(ValueError, match=r"pass V = W_O @ W_V"):
        mf.Model(1.0, d=d, V=W)
    padded = np.pad(W, ((0, 0), (0, d - k), (0, 0)))           # the hint's own expression gives a valid model
    assert mf.Model(1.0, d=d, Q=padded, K=padded).heads == 2
    with pytest.raises(ValueError, match=r"got shape \(16, 4\)\.$"):        # no hint for other shapes
        mf.Model(1.0, d=d, Q=W[0].T)


def test_usa_overflow_check_takes_no_svd_where_cheap_norm_bounds_rule_it_out(monkeypatch):
    # Model(attention="unnormalized") with 12 heads of 768×768 took 24 s: β·max_h ‖Q_hᵀK_h‖₂ by one SVD per head, to
    # find that no logit can reach 709.78.  Bounds of ‖Q_h‖₂‖K_h‖₂ in O(d²) rule that out first; the exact
    # logit_bound is taken only where they do not, and still decides the warning
    rng = np.random.default_rng(4)
    Q, K = (rng.standard_normal((3, 48, 48)) / np.sqrt(48) for _ in range(2))
    calls = []
    svd = np.linalg._linalg.svd
    monkeypatch.setattr(np.linalg._linalg, "svd", lambda *a, **k: calls.append(1) or svd(*a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = mf.Model(1.0, d=48, Q=Q, K=K, attention="unnormalized")
        assert not calls
        assert m._logit_bound_above() >= m.logit_bound
        mf.Model(60.0, d=48, Q=Q, K=K, attention="unnormalized")     # cheap bound > 709.78, exact ~ 60·3: silent
        assert calls
    with pytest.warns(mf.MeanfieldWarning, match="can overflow float64"):
        mf.Model(400.0, d=48, Q=Q, K=K, attention="unnormalized")
