"""mf.equiangular: the exact ODE of the symmetric solution against closed forms and the reference values
(docs/validation.md)."""
import numpy as np
import pytest

import meanfield as mf
from meanfield import SCHEMES
from meanfield.analysis._equiangular import equiangular_attention

CONTINUOUS = sorted(name for name, s in SCHEMES.items() if s.continuous)


@pytest.mark.parametrize("n", [2, 5, 64])
def test_beta_zero_closed_form(n):
    t = np.linspace(0, 3, 13)
    rho, r = mf.equiangular("post-ln", 0.0, n, t)
    # solve_ivp controls the local error at rtol = 1e-12; the global error is a small multiple of it
    assert np.max(np.abs(rho - (np.exp(2 * t) - 1) / (np.exp(2 * t) + n - 1))) < 1e-11
    assert np.all(r == 1.0)
    if n == 2:
        assert np.max(np.abs(rho - np.tanh(t))) < 1e-11


def test_reference_value_sa_n5_beta2():
    rho, _ = mf.equiangular("post-ln", 2.0, 5, [0.0, 1.5])
    assert rho[0] == 0.0
    assert abs(rho[1] - 0.4632182624) < 1e-10       # reference value, 10 decimals


@pytest.mark.parametrize("scheme, slope", [("post-ln", 4.958e-3), ("peri-ln", 1.3399e-2), ("ngpt", 1.3399e-2),
                                           ("pre-ln", 4.958e-3)])
def test_initial_slopes_beta5_n256(scheme, slope):
    h = 1e-7
    rho, _ = mf.equiangular(scheme, 5.0, 256, [0.0, h])
    assert rho[1] / h == pytest.approx(slope, rel=5e-4)     # the reference values give 4 and 5 digits
    # and the closed form 2/(e^β + n − 1) of Post-LN
    if scheme == "post-ln":
        assert rho[1] / h == pytest.approx(2 / (np.exp(5.0) + 255), rel=1e-6)


def test_time_change_laws_of_ln_scaling_and_ngpt():
    """Exact time changes of the schemes' speed factors (docs/model.md; no tuning): LN-Scaling's s = √(t+1) runs Post-LN on the
    clock 2(√(t+1) − 1); nGPT with a constant step α runs nGPT (α = 1) on the clock α t.  1e-11: the global
    error of solve_ivp at rtol 1e-12, as in test_beta_zero_closed_form."""
    t = np.linspace(0, 3, 7)
    ln_scaling, _ = mf.equiangular("ln-scaling", 2.0, 5, t)
    post_ln, _ = mf.equiangular("post-ln", 2.0, 5, 2 * (np.sqrt(t + 1) - 1))
    assert np.max(np.abs(ln_scaling - post_ln)) < 1e-11
    slow, _ = mf.equiangular("ngpt", 2.0, 5, t, alpha=0.5)
    clock, _ = mf.equiangular("ngpt", 2.0, 5, 0.5 * t)
    assert np.max(np.abs(slow - clock)) < 1e-11
    assert np.max(np.abs(slow - mf.equiangular("ngpt", 2.0, 5, t)[0])) > 1e-2     # α is visible


@pytest.mark.parametrize("scheme", ["peri-ln", "ngpt"])
def test_scale_free_schemes_agree_for_both_attentions_at_large_beta(scheme):
    """Peri-LN and nGPT divide by ‖A‖, so softmax and unnormalized attention give one ODE; at β = 400 USA's
    ‖A‖ ~ e^β/n has an overflowing square (the solution froze at ρ0)."""
    t = [0.5, 1.0]
    sa = mf.equiangular(scheme, 400.0, 5, t, rho0=0.99)
    usa = mf.equiangular(scheme, 400.0, 5, t, rho0=0.99, attention="unnormalized")
    np.testing.assert_allclose(usa[0], sa[0], rtol=1e-12, atol=0)
    np.testing.assert_allclose(usa[1], sa[1], rtol=1e-12, atol=0)
    assert sa[0][-1] > 0.991


@pytest.mark.parametrize("scheme, kw", [("peri-ln", {"r0": 2.0}), ("ngpt", {"alpha": 0.5})])
def test_scale_free_schemes_agree_for_both_attentions_where_the_speed_factor_overflows(scheme, kw):
    """β = 709.7, ρ0 = 0.999: ‖A‖ ≈ 0.75 e^β = 1.23e308, so Peri-LN's r‖A‖ (r ≥ 2) and nGPT's ‖A‖/α (α = 0.5) are
    inf, and dρ/dt = …/s read 0: the USA solution froze at ρ0 = 0.999 while the softmax one (the same ODE) reaches
    0.99945 (Peri-LN) by t = 1."""
    t = [0.5, 1.0]
    sa = mf.equiangular(scheme, 709.7, 2, t, rho0=0.999, **kw)
    usa = mf.equiangular(scheme, 709.7, 2, t, rho0=0.999, attention="unnormalized", **kw)
    np.testing.assert_allclose(usa[0], sa[0], rtol=1e-12, atol=0)
    np.testing.assert_allclose(usa[1], sa[1], rtol=1e-12, atol=0)
    assert sa[0][-1] > 0.9994


def test_a_run_over_its_evaluation_budget_stops_with_a_diagnosis(monkeypatch):
    """Pre-LN moves θ at speed 1/r: from r0 ≪ 1 the collapse is spread over the decades of t from ~r0 on; a run over
    its evaluation budget stops with a ConvergenceError naming r0 instead of running on."""
    from meanfield.analysis import _equiangular
    monkeypatch.setattr(_equiangular, "_MAX_EVALUATIONS", 50)
    with pytest.raises(mf.ConvergenceError, match="took over 50 evaluations"):
        mf.equiangular("pre-ln", 2.0, 5, [0.5, 1.0], r0=1e-40)
    with pytest.raises(mf.ConvergenceError, match="took over 50 evaluations"):
        mf.equiangular_time("pre-ln", 2.0, 5, 0.9, r0=1e-40)


def _pre_ln_from_r0(beta, n, levels):
    """(T, L) at the levels ρ of Pre-LN under SA from ρ0 = 0: t = r0·T(ρ) and log r = log r0 + L(ρ), by quadrature.

    dρ/dt = 2b(1 − ρ)(1 + (n−1)ρ)/r and dr/dt = ⟨θ, A⟩ = a(1 + (n−1)qρ) (module docstring; q = e^{β(ρ−1)}, b = aq,
    a = 1/(1 + (n−1)q)) give dlog r/dρ = g(ρ) = (1 + (n−1)qρ)/(2q(1 − ρ)(1 + (n−1)ρ)), free of r, and
    dt/dρ = r/(2b(1 − ρ)(1 + (n−1)ρ)) = r0 h(ρ), h = e^{L(ρ)}/(2b(1 − ρ)(1 + (n−1)ρ)): L = ∫g, T = ∫h from 0."""
    from scipy.integrate import quad

    def q(v):
        return np.exp(beta * (v - 1))

    def L(rho):
        return quad(lambda v: (1 + (n - 1) * q(v) * v) / (2 * q(v) * (1 - v) * (1 + (n - 1) * v)), 0.0, rho,
                    epsabs=0, epsrel=1e-13, limit=200)[0]

    def h(v):
        return np.exp(L(v)) * (1 + (n - 1) * q(v)) / (2 * q(v) * (1 - v) * (1 + (n - 1) * v))

    T = np.array([quad(h, 0.0, rho, epsabs=0, epsrel=1e-13, limit=200)[0] for rho in levels])
    return T, np.array([L(rho) for rho in levels])


def test_pre_ln_from_a_radius_near_the_smallest_normal_matches_the_quadrature():
    """Pre-LN from r0 = 1e-300 (SA, β = 2, n = 5): the rates ~1/r0 made LSODA's own difference-quotient Jacobian
    overflow (its increment ∝ max_i |f_i|/(atol + rtol|y_i|)), and the run stopped at its first stiff step ("became
    non-finite at t=6.49e-301", from r0 ≤ 1e-297); the Jacobian is now the module's, with increments from the state.
    Against the quadrature t = r0·T(ρ), log r = log r0 + L(ρ): log r to 2(atol + rtol·|log r|) as in the tests above
    (1.4e-9; measured 2.6e-10), ρ to that times max |dρ/dlog r| = max 1/g = 0.64 (ρ is a function of log r along the
    solution, so log r's error carries one of ρ: 8.9e-10; measured 2.6e-11, against 1.5e-12 from r0 = 1, where log r's
    weight atol + rtol·|log r| is 1e-14 instead of 7e-10).  Peri-LN, whose rates are also homogeneous of degree −1 in
    r (and whose dρ/dlog r is Pre-LN's: ‖A‖ cancels), is the same run from r0 = 1 at the times t/r0."""
    beta, n, r0 = 2.0, 5, 1e-300
    levels = np.array([0.1, 0.5, 0.9, 0.99, 0.999])
    T, L = _pre_ln_from_r0(beta, n, levels)
    rho, r = mf.equiangular("pre-ln", beta, n, r0 * T, r0=r0)
    log_tol = 2 * (1e-14 + 1e-12 * abs(np.log(r0)))
    np.testing.assert_allclose(np.log(r), np.log(r0) + L, rtol=0, atol=log_tol)
    grid = np.linspace(0, 0.999, 1000)
    q = np.exp(beta * (grid - 1))
    slope = np.max(2 * q * (1 - grid) * (1 + (n - 1) * grid) / (1 + (n - 1) * q * grid))      # 1/g
    np.testing.assert_allclose(rho, levels, rtol=0, atol=slope * log_tol)
    peri, peri_r = mf.equiangular("peri-ln", beta, n, r0 * T, r0=r0)
    unit, unit_r = mf.equiangular("peri-ln", beta, n, T, r0=1.0)
    np.testing.assert_allclose(np.log(peri_r), np.log(r0) + np.log(unit_r), rtol=0, atol=log_tol)
    np.testing.assert_allclose(peri, unit, rtol=0, atol=slope * log_tol)


@pytest.mark.parametrize("r0", [1e-310, 5e-324])
def test_a_subnormal_r0_is_refused_before_any_work(r0, monkeypatch):
    # r = e^{log r} has fewer than 53 bits there and the rates ~1/r0 pass float64: the run stopped at its first step
    # with "d log r/dt overflows … unnormalized attention near beta = 709.78" (softmax attention)
    from meanfield.analysis import _equiangular
    monkeypatch.setattr(_equiangular, "LSODA", None)        # any integration would fail with a TypeError
    for call in (lambda: mf.equiangular("pre-ln", 2.0, 5, [0.0, 1.0], r0=r0),
                 lambda: mf.equiangular_time("mix-ln", 2.0, 5, 0.5, r0=r0, tau=0.5)):
        with pytest.raises(ValueError, match=r"`r0` must be ≥ 2\.2250738585072014e-308 \(float64's smallest normal"):
            call()


def test_rho_rate_is_the_reference_slope_at_any_radius():
    """dρ/dt(0) = 2/(s (e^β + n − 1)) (the reference values, docs/validation.md) with s = r for Pre-LN: the validation suite's slopes read it
    (when the ODE's state became (ρ, log r), a caller passing r got e^{-1}·slope and 13 checks failed)."""
    from meanfield.analysis._equiangular import rho_rate
    beta, n = 5.0, 256
    post = 2.0 / (np.exp(beta) + n - 1)
    assert rho_rate("post-ln", beta, n, 0.0, 0.0) == pytest.approx(post, rel=1e-14, abs=0)
    for r in (0.5, 1.0, 3.0):
        assert rho_rate("pre-ln", beta, n, 0.0, 0.0, r) == pytest.approx(post / r, rel=1e-14, abs=0)


def test_attention_parts_against_explicit_vectors():
    # Build an equiangular family explicitly (n vectors with Gram matrix (1−ρ)I + ρ11ᵀ) and compare.
    n, rho, beta = 5, 0.3, 1.7
    G = (1 - rho) * np.eye(n) + rho * np.ones((n, n))
    X = np.linalg.cholesky(G)                         # rows: vectors in R^n with ⟨x_i, x_j⟩ = G_ij
    for attention in ("softmax", "unnormalized"):
        E = np.exp(beta * X @ X.T) / n                 # weights 1/n
        A = (E @ X) / E.sum(1, keepdims=True) if attention == "softmax" else E @ X
        a, b, radial, norm = equiangular_attention(beta, n, rho, attention)
        assert np.allclose(np.einsum("ij,ij->i", X, A), radial, rtol=1e-14, atol=0)
        assert np.allclose(np.linalg.norm(A, axis=1), norm, rtol=1e-14, atol=0)
        PA = A - np.einsum("ij,ij->i", X, A)[:, None] * X
        assert np.allclose(PA[0] @ X[1], b * (1 - rho) * (1 + (n - 1) * rho), rtol=1e-14, atol=0)


def _attention_parts_to_50_digits(beta, n, rho, usa):
    """(⟨θ, A⟩, ‖A‖) of the equiangular family from the expanded formulas (module docstring) in 50-digit decimals."""
    from decimal import Decimal, localcontext
    with localcontext() as ctx:
        ctx.prec = 50
        beta, rho = Decimal(beta), Decimal(rho)
        q = (beta * (rho - 1)).exp()
        a = beta.exp() / n if usa else 1 / (1 + (n - 1) * q)
        radial = a * (1 + (n - 1) * q * rho)
        norm = a * (1 + 2 * (n - 1) * q * rho + (n - 1) * (1 + (n - 2) * rho) * q * q).sqrt()
        return float(radial), float(norm)


@pytest.mark.parametrize("beta", [1e-8, 1e-5, 0.3, 4.0])
@pytest.mark.parametrize("n, rho", [(5, -0.25), (5, -0.25 + 2.0 ** -30), (3, -0.5), (9, -0.125), (4, -0.2), (7, 0.5),
                                    (3, 0.999)])
@pytest.mark.parametrize("attention", ["softmax", "unnormalized"])
def test_attention_magnitudes_are_accurate_near_the_simplex(beta, n, rho, attention):
    # ⟨θ, A⟩ and ‖A‖² were evaluated in their expanded forms, which cancel to (1 − q) and (1 − q)² (q = e^{β(ρ−1)})
    # near the simplex ρ = −1/(n−1) at small β: at β = 1e-8, n = 5, ρ = −1/4 (exact in float64, as are the ρ here, so
    # u = 1 + (n−1)ρ is too) ‖A‖ came out 1.05e-8·a for (1 − q)·a = 1.25e-8·a
    _, _, radial, norm = equiangular_attention(beta, n, rho, attention)
    want = _attention_parts_to_50_digits(beta, n, rho, attention == "unnormalized")
    assert radial == pytest.approx(want[0], rel=1e-13, abs=0) and norm == pytest.approx(want[1], rel=1e-13, abs=0)


@pytest.mark.parametrize("beta", [1e-8, 1e-3, 1.0])
def test_peri_ln_radius_grows_at_unit_rate_from_the_simplex(beta):
    # the simplex is stationary and A_i = (a − b)θ_i there, so ⟨θ, A⟩/‖A‖ = 1: r(t) = r0 + t (at β = 1e-8 the
    # rate came out 1.19: r(1) = 2.19)
    n = 5      # ρ0 = −1/4 is exact in float64
    rho, r = mf.equiangular("peri-ln", beta, n, [0.0, 0.5, 1.0], r0=1.0, rho0=-1 / (n - 1))
    np.testing.assert_allclose(r, [1.0, 1.5, 2.0], rtol=1e-12)
    assert np.all(rho == -1 / (n - 1))


@pytest.mark.parametrize("scheme", ["ngpt", "peri-ln"])
@pytest.mark.parametrize("n", [2, 4, 5])
def test_a_zero_attention_vector_is_named(scheme, n):
    # at β = 0 every A_i is the tokens' mean, 0 on the simplex, and nGPT and Peri-LN divide by ‖A‖: the run stopped
    # with "became non-finite at t=0 … a step overshot a collapse … unnormalized attention" (softmax, no step taken)
    for call in (lambda: mf.equiangular(scheme, 0.0, n, [0.0, 1.0], rho0=-1 / (n - 1)),
                 lambda: mf.equiangular_time(scheme, 0.0, n, 0.5, rho0=-1 / (n - 1))):
        with pytest.raises(ValueError, match=r"divides by ‖A‖, which is 0 at beta=0 from the simplex"):
            call()
    rho, _ = mf.equiangular("post-ln", 0.0, n, [0.0, 1.0], rho0=-1 / (n - 1))    # A = 0 does not stop Post-LN
    assert np.all(rho == -1 / (n - 1))


def test_mix_ln_is_post_ln_before_tau():
    t = np.linspace(0, 2, 21)
    rho_mix, r_mix = mf.equiangular("mix-ln", 3.0, 6, t, tau=0.75, r0=2.0)
    rho_post, _ = mf.equiangular("post-ln", 3.0, 6, t)
    before = t <= 0.75
    assert np.max(np.abs(rho_mix[before] - rho_post[before])) < 1e-11
    assert np.all(r_mix[before] == 2.0) and np.all(np.diff(r_mix[~before]) > 0)


def test_simplex_is_stationary():
    n = 7
    rho, r = mf.equiangular("pre-ln", 4.0, n, [0.0, 5.0], rho0=-1 / (n - 1))
    assert abs(rho[1] + 1 / (n - 1)) < 1e-14


@pytest.mark.parametrize("scheme", CONTINUOUS)
def test_every_continuous_scheme_runs_and_clusters(scheme):
    tau = 0.5 if scheme == "mix-ln" else None
    rho, r = mf.equiangular(scheme, 2.0, 8, [0.0, 10.0], tau=tau)
    assert 0 < rho[1] < 1 and r[1] > 0


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(scheme="angpt"), mf.UnsupportedModelError, "only as a discrete layer map"),
    (dict(scheme="layer-norm"), ValueError, "`scheme` must be one of"),
    (dict(beta=-1.0), ValueError, "`beta` must be finite and >= 0"),
    (dict(n=1), ValueError, "`n` must be an integer >= 2"),
    (dict(t=[1.0, 0.5]), ValueError, "`t` must be strictly increasing"),
    (dict(t=[-1.0, 0.5]), ValueError, "`t` must be ≥ 0"),
    (dict(r0=0.0), ValueError, "`r0` must be finite and > 0"),
    (dict(r0=2.0), ValueError, r"`r0` is only used by the schemes with a radius .*scheme='post-ln'"),  # returned r = 2
    (dict(rho0=-0.5), ValueError, r"`rho0` must be in \[−1/\(n−1\), 1\)"),
    (dict(rho0=1.0), ValueError, r"`rho0` must be in"),
    (dict(rho0="a"), TypeError, r"`rho0` must be a finite real number"),     # was "could not convert string to float"
    (dict(rho0=float("nan")), ValueError, r"`rho0` must be a finite real number"),
    (dict(scheme="mix-ln"), ValueError, "`tau`"),
    (dict(attention="linear"), ValueError, "`attention` must be one of"),
    (dict(scheme="ngpt", alpha=-1.0), ValueError, "`alpha` must be finite and > 0"),
    (dict(rtol=float("nan")), ValueError, r"`rtol` must be in \[2.22e-14, 1\) .*got rtol=nan"),
    (dict(rtol=2.0), ValueError, r"`rtol` must be in \[2.22e-14, 1\)"),
    # scipy's LSODA replaced it by 2.22e-14 with a UserWarning; the range said [1e-14, 1)
    (dict(rtol=1e-14), ValueError, r"`rtol` must be in \[2.22e-14, 1\) \(scipy's LSODA goes no lower.*got rtol=1e-14"),
    (dict(rtol="1e-8"), TypeError, r"`rtol` must be a real number"),
    (dict(atol=-1.0), ValueError, "`atol` must be finite and > 0"),
])
def test_bad_input(kwargs, error, match):
    args = dict(scheme="post-ln", beta=1.0, n=4, t=[0.0, 1.0])
    args.update(kwargs)
    with pytest.raises(error, match=match):
        mf.equiangular(args.pop("scheme"), args.pop("beta"), args.pop("n"), args.pop("t"), **args)


def test_the_smallest_rtol_accepted_is_used_as_given():
    # rtol = 1e-14 passed validation and LSODA raised it to 2.22e-14 with a UserWarning; 100 ulp is the floor
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rho, _ = mf.equiangular("post-ln", 2.0, 5, [0.0, 1.5], rtol=2.3e-14)
        t = mf.equiangular_time("post-ln", 2.0, 5, 0.4, rtol=2.3e-14)
    assert abs(rho[1] - 0.4632182624) < 1e-10 and 0 < t < 1.5
    with pytest.raises(ValueError, match=r"`rtol` must be in \[2.22e-14, 1\)"):
        mf.equiangular_time("post-ln", 2.0, 5, 0.4, rtol=1.5e-14)


def test_tolerances_of_any_real_type_reach_the_solver_as_floats():
    # rtol and atol were checked, then passed on as given: atol=10**20 (a Python int beyond int64) reached LSODA as an
    # object array, which raised "Cannot cast scalar from dtype('O')" and crashed the interpreter with a segmentation
    # fault when collected; run in a subprocess so that the old crash fails this test, not the test session
    import subprocess
    import sys
    code = ("import meanfield as mf, numpy as np\n"
            "a = mf.equiangular('ngpt', 2.0, 5, [0.0, 0.5], atol=10**20)[0]\n"
            "b = mf.equiangular('ngpt', 2.0, 5, [0.0, 0.5], atol=1e20)[0]\n"
            "c = mf.equiangular_time('post-ln', 2.0, 5, 0.4, rtol=np.float16(0.001), atol=10**20)\n"
            "d = mf.equiangular_time('post-ln', 2.0, 5, 0.4, rtol=float(np.float16(0.001)), atol=1e20)\n"
            "import gc; gc.collect()\n"
            "assert np.array_equal(a, b) and c == d, (a, b, c, d)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_equiangular_time_levels_that_are_not_numbers_are_named():
    # np.asarray(rho, dtype=float) raised "could not convert string to float: 'a'", naming nothing
    with pytest.raises(ValueError, match="`rho` must be numbers"):
        mf.equiangular_time("post-ln", 1.0, 5, "a")
    with pytest.raises(ValueError, match="`rho` must be numbers"):
        mf.equiangular_time("post-ln", 1.0, 5, [0.5, "b"])


def test_long_times_after_collapse_are_cheap(monkeypatch):
    # ρ → 1 is a stable equilibrium: an explicit method needs O(t) steps there (DOP853: about a second to
    # t = 1e4, hours to 1e8); counted in right-hand-side evaluations, not seconds
    from meanfield.analysis import _equiangular as eq
    calls = []
    original = eq.equiangular_attention
    monkeypatch.setattr(eq, "equiangular_attention", lambda *a: calls.append(1) or original(*a))
    rho, _ = mf.equiangular("post-ln", 1.0, 3, [10.0, 1e4, 1e8])
    assert len(calls) < 5000                         # LSODA: ~500
    assert 1 - 1e-6 < rho[0] < 1 and np.all(rho[1:] > 1 - 1e-12)


def test_more_accurate_than_the_tolerance_against_a_tight_reference():
    # against scipy's DOP853 at rtol 2.3e-14 (scipy raises anything smaller to 100 ulp), an independent integrator of the same ODE
    from scipy.integrate import solve_ivp
    beta, n, t = 3.0, 7, np.linspace(0.5, 20, 9)

    def rhs(_, y):                                  # Post-LN SA: dρ/dt = 2 b (1−ρ)(1+(n−1)ρ), b the off weight
        b = np.exp(beta * y[0]) / (np.exp(beta) + (n - 1) * np.exp(beta * y[0]))
        return [2 * b * (1 - y[0]) * (1 + (n - 1) * y[0])]
    ref = solve_ivp(rhs, (0, t[-1]), [0.0], method="DOP853", t_eval=t, rtol=2.3e-14, atol=1e-16).y[0]
    assert np.max(np.abs(mf.equiangular("post-ln", beta, n, t)[0] - ref)) < 1e-11


@pytest.mark.parametrize("beta", [40.0, 100.0, 700.0])
def test_hitting_times_of_a_fast_usa_collapse_match_the_quadrature(beta):
    """USA at large β collapses at speed ~e^{βρ}: ρ crosses most of (0, 1) in a step shorter than one ulp of t, and
    solve_ivp's event root finder raised "f(a) and f(b) must have different signs" (β ≥ 40).  Post-LN's hitting
    time is the quadrature t(ρ) = ∫_0^ρ n e^{−βu} / (2(1 − u)(1 + (n−1)u)) du; the ODE at rtol 1e-12 agrees to
    its global error (2e-11 at β = 20, 2e-10 at β = 700: below 1e-9)."""
    from scipy.integrate import quad

    n, levels = 3, [0.5, 0.9, 0.999]
    got = mf.equiangular_time("post-ln", beta, n, levels, attention="unnormalized")
    for level, t in zip(levels, got):
        exact = quad(lambda u: n * np.exp(-beta * u) / (2 * (1 - u) * (1 + (n - 1) * u)), 0, level,
                     epsabs=1e-16, epsrel=1e-13, limit=500, points=[1 / beta, 5 / beta])[0]
        assert t == pytest.approx(exact, rel=1e-9, abs=0)


def _usa_post_ln_time(beta, n, rho, rho0=0.0):
    """t(ρ) = ∫_ρ0^ρ n e^{−βu} / (2(1 − u)(1 + (n−1)u)) du: Post-LN under USA is separable, dρ/dt =
    (2/n) e^{βρ}(1 − ρ)(1 + (n−1)ρ) (the module's b = e^{βρ}/n, s = 1; n = 2: e^{βρ}(1 − ρ²))."""
    from scipy.integrate import quad
    return quad(lambda u: n * np.exp(-beta * u) / (2 * (1 - u) * (1 + (n - 1) * u)), rho0, rho,
                epsabs=1e-300, epsrel=1e-13, limit=500,
                points=[rho0 + p / beta for p in (1, 5, 20) if rho0 + p / beta < rho])[0]


def _usa_post_ln_rounds_to_one(beta, n):
    """A time after which the exact ρ(t) is 1 in float64 (1 − ρ < 2^-54): t(0.999) plus a bound of the rest,
    e^{−0.999β} n / (2(1 + 0.999(n−1))) · log(0.001 / 2^-54)."""
    rest = np.exp(-0.999 * beta) * n / (2 * (1 + 0.999 * (n - 1))) * np.log(1e-3 * 2.0 ** 54)
    return _usa_post_ln_time(beta, n, 0.999) + rest


def _consistent_with_the_quadrature(beta, n, t, rho, rel):
    """ρ(t) checked where it is well conditioned, in t: the quadrature's time of the value returned is t to ``rel``.
    Near a fast collapse ρ(t) is a step of width ~e^{−β} (below one ulp of t from ρ ≈ 40/β): any ρ within the
    collapse answers a t that is the collapse's time to float64, and ρ = 1 answers a t past it."""
    if rho < 1:
        return abs(_usa_post_ln_time(beta, n, rho) - t) <= rel * t
    return _usa_post_ln_rounds_to_one(beta, n) <= t * (1 + rel)


@pytest.mark.parametrize("n", [2, 5])
@pytest.mark.parametrize("beta", [100.0, 200.0, 700.0, 709.7])
def test_a_usa_collapse_at_large_beta_matches_the_quadrature(beta, n):
    """USA speeds ρ up like e^{βρ}: at β = 100 ρ crossed (0.3, 1) within one ulp of t, LSODA overshot ρ = 1 and the ODE
    became non-finite (ConvergenceError for β = 100, 200, 700; β = 50 passed).  The integration now hands over to the
    arc length σ (dt/dσ ≤ 1) when the collapse outruns the clock.  1e-9: the global error of the ODE at rtol 1e-12 in
    t (3.5e-11 relative at β = 100, n = 2; the hitting times agree to 2e-10 at β = 700).  At β = 709.7 the rate 2e^β
    of 1 − ρ overflows float64."""
    levels = [0.5 / beta, 5 / beta, 20 / beta, 30 / beta]      # from 30/β on the integration runs in σ
    t_c = _usa_post_ln_time(beta, n, 0.999)
    times = [_usa_post_ln_time(beta, n, level) for level in levels] + [t_c, t_c * (1 + 1e-8), 2 * t_c, 1.0, 2.0]
    rho, r = mf.equiangular("post-ln", beta, n, times, attention="unnormalized")
    assert rho[0] == pytest.approx(levels[0], rel=1e-9)          # slow yet: ρ itself is well conditioned
    for t, value in zip(times, rho):
        assert _consistent_with_the_quadrature(beta, n, t, value, rel=1e-9), (t, value)
    # past the collapse the exact ρ is 1 in float64 (1 − ρ < 2^-54), and so is the value returned
    assert _usa_post_ln_rounds_to_one(beta, n) < t_c * (1 + 1e-8)
    assert np.all(rho[-4:] == 1.0) and np.all(np.diff(rho) >= 0) and np.all(r == 1.0)
    # the time of the collapse, and ρ on either side of it
    hit = mf.equiangular_time("post-ln", beta, n, [0.5, 0.999], attention="unnormalized")
    np.testing.assert_allclose(hit, [_usa_post_ln_time(beta, n, 0.5), t_c], rtol=1e-9)
    before, after = mf.equiangular("post-ln", beta, n, [hit[1] * (1 - 1e-8), hit[1] * (1 + 1e-8)],
                                   attention="unnormalized")[0]
    assert before < 0.5 and after == 1.0


@pytest.mark.parametrize("beta", [50.0, 100.0, 700.0])
def test_usa_collapses_of_ln_scaling_and_mix_ln_at_large_beta(beta):
    """The other schemes whose USA collapse is reached (Pre-LN's radius grows like e^β t and slows it to ρ ~ e^{−β};
    Peri-LN and nGPT are SA's ODE): LN-Scaling is Post-LN on the clock 2(√(t+1) − 1); Mix-LN with τ after the collapse
    is Post-LN, then Pre-LN at ρ = 1, where dr/dt = ⟨θ, A⟩ = n a = e^β: r = r0 + e^β (t − τ).  Both stopped with a
    ConvergenceError ("became non-finite") from β = 100; at β = 50 r(τ) came out 2.000002 for r0 = 2 (the first step
    of Pre-LN, from speed e^β/r0, ends below one ulp of τ, and its end was returned at τ).  r to 1e-9: log r (≈ β) is
    integrated to rtol·|log r| ≈ 1e-10 per step."""
    n, r0, tau = 2, 2.0, 0.5
    t = np.array([_usa_post_ln_time(beta, n, 5 / beta), _usa_post_ln_time(beta, n, 30 / beta), 0.1, 0.3])
    clock = 2 * (np.sqrt(t + 1) - 1)
    rho, _ = mf.equiangular("ln-scaling", beta, n, t, attention="unnormalized")
    for c, value in zip(clock, rho):
        assert _consistent_with_the_quadrature(beta, n, c, value, rel=1e-9), (c, value)
    assert np.all(rho[2:] == 1.0)
    rho, r = mf.equiangular("mix-ln", beta, n, [0.1, tau, 0.75, 1.0], r0=r0, tau=tau, attention="unnormalized")
    assert np.all(rho == 1.0)
    np.testing.assert_allclose(r, [r0, r0, r0 + np.exp(beta) * 0.25, r0 + np.exp(beta) * 0.5], rtol=1e-9)


def test_particles_agree_with_a_usa_collapse_up_to_where_they_resolve_it():
    """Two orthonormal tokens, USA Post-LN, β = 100: the particle backend (rk45, rtol 1e-12) follows the collapse up
    to ρ ≈ 0.2 (its step then falls below min_step); there both agree, compared in t as above (ρ' ~ e^{βρ})."""
    from test_particles import equiangular_start

    beta, n = 100.0, 2
    times = [_usa_post_ln_time(beta, n, level) for level in (0.01, 0.05, 0.1, 0.15)]
    model = mf.Model(beta=beta, scheme="post-ln", d=n, attention="unnormalized")
    traj = mf.simulate(model, equiangular_start(n), times[-1], backend="particles", t_eval=times, method="rk45",
                       rtol=1e-12, atol=1e-14)
    assert traj.success
    particles = [state.positions[0] @ state.positions[1] for state in traj.states[1:]]
    rho, _ = mf.equiangular("post-ln", beta, n, times, attention="unnormalized")
    for t, p, e in zip(times, particles, rho):
        assert abs(_usa_post_ln_time(beta, n, p) - _usa_post_ln_time(beta, n, e)) <= 1e-9 * t, (t, p, e)
    assert particles[-1] > 0.1


def test_a_usa_collapse_reached_near_t_0_stays_at_one():
    """From ρ0 = 0.9 at β = 100 the collapse ends near t = 5e-41, where t resolves it; LSODA's history then carried ρ
    past 1 (1 + 7e-15 at t = 5e-17), the rate 5e43 of 1 − ρ made the next step diverge and the ODE stopped
    ("non-finite at t=2.9e-16").  A step that reaches ρ = 1 in float64 now restarts there, ρ = 1 kept exactly.
    The hitting times' global error is ~1e3·rtol here (measured 8e-8, 1.3e-8, 1.2e-9, 1.8e-10 at rtol = 1e-10 … 1e-13,
    ρ moving by only 0.05 to the first level): 5e-9 at rtol = 1e-12, and smaller at 1e-13."""
    beta, n, rho0, levels = 100.0, 2, 0.9, (0.95, 0.999)
    exact = np.array([_usa_post_ln_time(beta, n, level, rho0) for level in levels])
    hit = mf.equiangular_time("post-ln", beta, n, levels, attention="unnormalized", rho0=rho0)
    finer = mf.equiangular_time("post-ln", beta, n, levels, attention="unnormalized", rho0=rho0, rtol=1e-13)
    np.testing.assert_allclose(hit, exact, rtol=5e-9)
    assert np.all(np.abs(finer - exact) < np.abs(hit - exact) / 3)
    rho, _ = mf.equiangular("post-ln", beta, n, [0.0, hit[0], 1e-30, 1.0, 2.0], attention="unnormalized", rho0=rho0)
    assert rho[0] == rho0 and abs(_usa_post_ln_time(beta, n, rho[1], rho0) - hit[0]) <= 5e-9 * hit[0]
    assert np.all(rho[2:] == 1.0)


def test_a_radius_beyond_float64_is_inf_with_one_warning_and_rho_goes_on(monkeypatch):
    """USA β = 709.7: Pre-LN's r ≈ 1 + e^β t/n and Mix-LN's r = 1 + e^β (t − τ) after its collapse pass 1.8e308 at
    t = n·1.086 and τ + 1.086.  The rows were evaluated at r = e^{log r} = inf, where dρ/dt and d log r/dt read 0:
    Pre-LN's ρ froze at 8.5775e-306 (8.6e-4 low at t = 10; a numpy overflow warning), and Mix-LN spent the
    10⁶-evaluation budget (~100 s) and stopped with a ConvergenceError naming r0 (now ~5·10⁴ evaluations; the budget
    is cut to 10⁵ here so that the old path fails fast).  Beyond float64 the ODE is read in log r; r is inf there,
    with one MeanfieldWarning naming the time.
    Pre-LN's dρ/d log r = 2q(1 − ρ)(1 + (n−1)ρ)/(1 + q(n−1)ρ), q = e^{−β}, is 2q to 1e-300 at ρ ~ 1e-305, so
    ρ = 2e^{−β} log r; log r is accurate to about atol + rtol·log r ≈ 7.1e-10 (docstring), hence the 2·7.1e-10 below,
    the exit times to that times dt/d log r, and ρ (~1e-305, far below atol: its accuracy is that of the steps taken
    for log r, 1e-12 relative) to 10·rtol."""
    from meanfield.analysis import _equiangular
    monkeypatch.setattr(_equiangular, "_MAX_EVALUATIONS", 100_000)
    beta, n, log_tol = 709.7, 5, 2 * (1e-14 + 1e-12 * 710)
    over = np.finfo(float).max / np.exp(beta)          # the span over which e^β·t passes float64: 1.086
    t = np.array([1.0, 2.0, 5.0, 6.0, 10.0])
    with pytest.warns(mf.MeanfieldWarning) as record:
        rho, r = mf.equiangular("pre-ln", beta, n, t, attention="unnormalized")
    log_r = beta + np.log(t / n)
    np.testing.assert_allclose(rho, 2 * np.exp(-beta) * log_r, rtol=10 * 1e-12, atol=0)
    np.testing.assert_allclose(np.log(r[:3]), log_r[:3], rtol=0, atol=log_tol)
    assert np.all(np.isposinf(r[3:]))
    assert len(record) == 1
    exit_time = float(str(record[0].message).split(" at t=")[1].split()[0])
    assert abs(exit_time - n * over) <= log_tol * n * over
    tau, tm = 0.5, np.array([0.25, 1.0, 1.5, 1.6, 3.0])
    with pytest.warns(mf.MeanfieldWarning) as record:
        rho, r = mf.equiangular("mix-ln", beta, n, tm, tau=tau, attention="unnormalized")
    assert np.all(rho == 1.0) and r[0] == 1.0 and np.all(np.isposinf(r[3:]))
    np.testing.assert_allclose(np.log(r[1:3]), beta + np.log(tm[1:3] - tau), rtol=0, atol=log_tol)
    assert len(record) == 1
    exit_time = float(str(record[0].message).split(" at t=")[1].split()[0])
    assert abs(exit_time - (tau + over)) <= log_tol * over


def test_a_radial_rate_beyond_float64_is_named():
    """Mix-LN after a USA collapse at β = 709 from r0 = 1e-3: d log r/dt = e^β/r0 passes 1.8e308 at τ (it stopped with
    "non-finite … a step overshot a collapse", which is not what happens)."""
    with pytest.raises(mf.ConvergenceError, match=r"d log r/dt .* overflows float64 at t=0\.5.*r0=0\.001"):
        mf.equiangular("mix-ln", 709.0, 5, [0.25, 1.0], r0=1e-3, tau=0.5, attention="unnormalized")


def _just_after(tau):
    """Times from the float after τ to τ + 0.25: a few ulps, then decades of t − τ."""
    ulps = [np.nextafter(tau, np.inf), tau + 4 * np.spacing(tau)]
    return np.array(ulps + [tau + dt for dt in (1e-14, 1e-12, 1e-10, 1e-7, 1e-5, 1e-3, 0.25)])


@pytest.mark.parametrize("beta", [50.0, 100.0, 700.0])
def test_mix_ln_radius_just_after_tau_after_a_usa_collapse(beta):
    """Mix-LN after a USA collapse (ρ = 1 at τ): dr/dt = e^β, so r = r0 + e^β (t − τ) exactly, which crosses from r0
    to r0 + e^β·ulp(τ) (5.7e5 at β = 50) within the first ulp after τ.  The piece after τ was integrated in t, where
    LSODA took ~95 steps of zero length (τ + h = τ) and log r came out 3.06 (β = 50), 2.79 (100), 2.77 (700) too high
    at the float after τ, still 1.2e-8 at τ + 1e-5; it is now integrated on the clock t − τ.  log r to
    2(atol + rtol·|log r|), as in test_a_radius_beyond_float64_is_inf_with_one_warning_and_rho_goes_on (measured
    7.2e-11 at β = 50, 6.8e-10 at β = 700)."""
    n, r0, tau = 2, 2.0, 0.5
    assert _usa_post_ln_rounds_to_one(beta, n) < tau
    t = _just_after(tau)
    rho, r = mf.equiangular("mix-ln", beta, n, t, r0=r0, tau=tau, attention="unnormalized")
    log_r = np.log(r0 + np.exp(beta) * (t - tau))          # t − τ is exact here (Sterbenz)
    assert np.all(rho == 1.0)
    np.testing.assert_allclose(np.log(r), log_r, rtol=0, atol=2 * (1e-14 + 1e-12 * log_r.max()))


@pytest.mark.parametrize("beta", [50.0, 100.0])
def test_mix_ln_radius_just_after_tau_before_a_usa_collapse(beta):
    """τ at ρ = 0.2, before the USA collapse: after τ, Pre-LN's dr/dt = ⟨θ, A⟩ = (e^β/n)(1 + (n−1) e^{β(ρ−1)} ρ) while
    dρ/d log r = 2e^{β(ρ−1)}(1 − ρ)(1 + (n−1)ρ)/(1 + (n−1) e^{β(ρ−1)} ρ) ≤ 1e-17 (β = 50) keeps ρ at ρ(τ) over the
    40 units of log r to τ + 1e-5: r = r0 + ⟨θ, A⟩(ρ(τ)) (t − τ) to ~1e-17 relative.  log r came out 3.05 (β = 50) and
    23.8 (β = 100) off; now 6.0e-11 and 1.2e-10, tolerance as in the test above.  ρ(τ) against the quadrature, in t."""
    n, r0 = 2, 2.0
    tau = _usa_post_ln_time(beta, n, 0.2)
    t = _just_after(tau)[:-2]                                # to τ + 1e-5
    rho, r = mf.equiangular("mix-ln", beta, n, np.concatenate([[tau], t]), r0=r0, tau=tau, attention="unnormalized")
    assert _consistent_with_the_quadrature(beta, n, tau, rho[0], rel=1e-9)
    assert np.all(np.abs(rho[1:] - rho[0]) <= 1e-15)
    q = np.exp(beta * (rho[0] - 1))
    log_r = np.log(r0 + np.exp(beta) / n * (1 + (n - 1) * q * rho[0]) * (t - tau))
    np.testing.assert_allclose(np.log(r[1:]), log_r, rtol=0, atol=2 * (1e-14 + 1e-12 * log_r.max()))


def test_the_tail_keeps_rho_below_one_monotone_and_accurate():
    # ρ itself carried an absolute error ~atol: Post-LN (SA, β = 2, n = 5) read ρ(20) = 1 + 1.2e-13 > 1 and then
    # ρ(40) < ρ(20), where 1 − ρ ~ e^{−2t} rounds ρ to 1; below 1 − ρ = 1e-3 the state is now s = −log(1 − ρ)
    rho, _ = mf.equiangular("post-ln", 2.0, 5, np.linspace(0.0, 60.0, 61))
    assert np.all(rho <= 1.0) and np.all(np.diff(rho) >= 0) and rho[-1] == 1.0
    # β = 0: 1 − ρ = n/(e^{2t} + n − 1); the error is LSODA's (3e-10 of 1 − ρ, carried from the switch at 1 − ρ = 1e-3)
    # plus ρ's rounding (half an ulp of 1); it was 2855 ulps of 1 at t = 5, 92 at t = 15 (4 % of 1 − ρ)
    n, t = 5, np.array([5.0, 10.0, 15.0])
    rho, _ = mf.equiangular("post-ln", 0.0, n, t)
    exact = n / (np.exp(2 * t) + n - 1)
    assert np.all(np.abs((1 - rho) - exact) <= 1e-9 * exact + np.spacing(1.0))


def test_hitting_times_of_levels_near_one():
    # β = 0, Post-LN: t(ρ) = ½ ln((1 + (n−1)ρ)/(1 − ρ)); with ρ's absolute error ~atol the times of 1 − 1e-10 and
    # 1 − 1e-14 were 4e-4 and 8 % off; in s = −log(1 − ρ) (the tail) they are at the solver's 2e-11
    n = 5
    rho = np.array([0.5, 0.999, 1 - 1e-6, 1 - 1e-10, 1 - 1e-14])
    exact = 0.5 * np.log((1 + (n - 1) * rho) / (1 - rho))
    np.testing.assert_allclose(mf.equiangular_time("post-ln", 0.0, n, rho), exact, rtol=1e-10, atol=0)
