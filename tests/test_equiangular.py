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


def test_a_collapse_faster_than_the_integrator_stops_with_a_diagnosis(monkeypatch):
    """Pre-LN moves θ at speed 1/r: from r0 = 1e-300 the collapse takes ~1e-300 (it hung; now a ConvergenceError
    names r0); a run over its evaluation budget stops the same way instead of running on."""
    from meanfield.analysis import _equiangular
    with pytest.raises(mf.ConvergenceError, match=r"r0=1e-300"):
        mf.equiangular("pre-ln", 2.0, 5, [0.5, 1.0], r0=1e-300)
    monkeypatch.setattr(_equiangular, "_MAX_EVALUATIONS", 50)
    with pytest.raises(mf.ConvergenceError, match="took over 50 evaluations"):
        mf.equiangular("pre-ln", 2.0, 5, [0.5, 1.0], r0=1e-40)
    with pytest.raises(mf.ConvergenceError, match="took over 50 evaluations"):
        mf.equiangular_time("pre-ln", 2.0, 5, 0.9, r0=1e-40)


def test_rho_rate_is_the_reference_slope_at_any_radius():
    """dρ/dt(0) = 2/(s (e^β + n − 1)) (the reference values, docs/validation.md) with s = r for Pre-LN: the validation suite's slopes read it
    (when the ODE's state became (ρ, log r), a caller passing r got e^{-1}·slope and 13 checks failed)."""
    from meanfield.analysis._equiangular import rho_rate
    beta, n = 5.0, 256
    post = 2.0 / (np.exp(beta) + n - 1)
    assert rho_rate("post-ln", beta, n, 0.0, 0.0) == pytest.approx(post, rel=1e-14)
    for r in (0.5, 1.0, 3.0):
        assert rho_rate("pre-ln", beta, n, 0.0, 0.0, r) == pytest.approx(post / r, rel=1e-14)


def test_attention_parts_against_explicit_vectors():
    # Build an equiangular family explicitly (n vectors with Gram matrix (1−ρ)I + ρ11ᵀ) and compare.
    n, rho, beta = 5, 0.3, 1.7
    G = (1 - rho) * np.eye(n) + rho * np.ones((n, n))
    X = np.linalg.cholesky(G)                         # rows: vectors in R^n with ⟨x_i, x_j⟩ = G_ij
    for attention in ("softmax", "unnormalized"):
        E = np.exp(beta * X @ X.T) / n                 # weights 1/n
        A = (E @ X) / E.sum(1, keepdims=True) if attention == "softmax" else E @ X
        a, b, radial, norm = equiangular_attention(beta, n, rho, attention)
        assert np.allclose(np.einsum("ij,ij->i", X, A), radial, rtol=1e-14)
        assert np.allclose(np.linalg.norm(A, axis=1), norm, rtol=1e-14)
        PA = A - np.einsum("ij,ij->i", X, A)[:, None] * X
        assert np.allclose(PA[0] @ X[1], b * (1 - rho) * (1 + (n - 1) * rho), rtol=1e-14)


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
    assert radial == pytest.approx(want[0], rel=1e-13) and norm == pytest.approx(want[1], rel=1e-13)


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
        assert t == pytest.approx(exact, rel=1e-9)


def test_an_unresolvable_usa_collapse_names_its_cause_and_the_way_out():
    """At β = 100 (USA, r0 = 1) a step overshoots ρ = 1 and the ODE turns non-finite; the error only said "ask for a
    larger r0", which is 1 here.  It now names the e^(βρ) speed-up and points to equiangular_time."""
    with pytest.raises(mf.ConvergenceError, match=r"r0=1;.*e\^\(βρ\).*equiangular_time gives the time of the collapse"):
        mf.equiangular("post-ln", 100.0, 3, [0.01, 0.1], attention="unnormalized")
    t_collapse = mf.equiangular_time("post-ln", 100.0, 3, 0.999, attention="unnormalized")
    assert 0.01 < t_collapse < 0.02
