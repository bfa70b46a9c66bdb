"""Each Runge–Kutta tableau has the order it claims (observed on an exact solution)."""
import numpy as np
import pytest

from meanfield._integrators import METHODS, error_norm, get_method, next_step, rk_step


def _solve(tab, h, t_final=1.0):
    f = lambda t, y: np.array([y[1], -y[0]]) * (1 + 0.5 * np.cos(t))  # noqa: E731  (a time-dependent rotation)
    y, t = np.array([1.0, 0.0]), 0.0
    for _ in range(int(round(t_final / h))):
        y, _, _ = rk_step(tab, f, t, y, h)
        t += h
    phase = t_final + 0.5 * np.sin(t_final)
    return np.linalg.norm(y - np.array([np.cos(phase), -np.sin(phase)]))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_observed_order(name):
    tab = get_method(name)
    e1, e2 = _solve(tab, 1 / 20), _solve(tab, 1 / 40)
    assert abs(np.log2(e1 / e2) - tab.order) < 0.3


@pytest.mark.parametrize("name", sorted(n for n in METHODS if METHODS[n].adaptive))
def test_embedded_error_estimate_has_the_lower_order(name):
    tab = get_method(name)
    f = lambda t, y: -y * (1 + t)  # noqa: E731
    errs = [np.abs(rk_step(tab, f, 0.0, np.array([1.0]), h)[1][0]) for h in (0.02, 0.01)]
    assert abs(np.log2(errs[0] / errs[1]) - (tab.error_order + 1)) < 0.3


def test_tableaux_are_consistent():
    for tab in METHODS.values():
        assert np.allclose(tab.a.sum(axis=1), tab.c)
        assert abs(tab.b.sum() - 1) < 1e-15


def test_step_control():
    assert next_step(0.1, 0.0, 4) == pytest.approx(0.5)
    assert next_step(0.1, 1e6, 4) == pytest.approx(0.02)
    assert error_norm(np.array([1e-6]), np.array([1.0]), np.array([1.0]), 1e-6, 0.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="`method`"):
        get_method("euler")


@pytest.mark.parametrize("rtol", [0, -1e-3, float("nan"), 1e-16, 1.0])
@pytest.mark.parametrize("backend", ["particles", "spectral"])
def test_rtol_out_of_range_names_the_range(backend, rtol):
    # rtol = 0 (or < 0, NaN) was refused as "must be finite and > 0", yet 1e-16 > 0 is refused too: the message
    # gives the range the step control accepts
    import re

    import meanfield as mf
    initial = mf.Particles.uniform(4, seed=0) if backend == "particles" else mf.Density.uniform(4)
    with pytest.raises(ValueError, match=re.escape("`rtol` must be in [1e-14, 1)") + f".*got rtol={rtol!r}"):
        mf.simulate(mf.Model(1.0), initial, 0.1, backend=backend, rtol=rtol)
    with pytest.raises(TypeError, match=re.escape("`rtol` must be a real number in [1e-14, 1)")):
        mf.simulate(mf.Model(1.0), initial, 0.1, backend=backend, rtol="1e-8")


def test_l2_norm_is_numpys_norm_to_rounding():
    """The error norm's ‖·‖₂ (einsum, not numpy's threaded BLAS dot): real, complex and strided arrays."""
    from meanfield._integrators import l2_norm

    rng = np.random.default_rng(3)
    cases = [rng.standard_normal((1, 2, 20000)) * (1 + 1j), rng.standard_normal(33), rng.standard_normal((6, 8))[:, ::3],
             np.zeros(4, complex), np.array([3.0 + 4.0j])]
    for a in cases:
        assert abs(l2_norm(a) - np.linalg.norm(a)) <= 1e-14 * np.linalg.norm(a)
    assert l2_norm(np.array([3.0 + 4.0j])) == 5.0


def _reference_rk_step(tab, f, t, y, h, k0=None):
    """rk_step as the sums over the tableau, read per step (each coefficient scaled by h before it meets a stage)."""
    ks = [f(t, y) if k0 is None else k0]
    for i in range(1, tab.stages):
        yi = y + sum((h * tab.a[i, j]) * ks[j] for j in range(i) if tab.a[i, j] != 0)
        ks.append(f(t + tab.c[i] * h, yi))
    y_new = y + sum((h * bj) * kj for bj, kj in zip(tab.b, ks) if bj != 0)
    err = None if tab.b_err is None else sum((h * ej) * kj for ej, kj in zip(tab.b_err, ks) if ej != 0)
    return y_new, err, ks[-1]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_rk_step_has_the_bits_of_the_sums_over_the_tableau(name):
    # the precomputed terms sum from 0 as builtin sum does: same bits, the sign of a zero included (0 + -0.0 = 0.0),
    # and a zero coefficient still skips its stage (0·inf would be NaN)
    tab = get_method(name)
    rng = np.random.default_rng(3)
    y = rng.standard_normal((7, 4))
    y[0] = -0.0
    times = []

    def f(t, yy):
        times.append(t)
        out = np.sin(3 * yy + t) * np.exp(yy)
        out[0] = -0.0
        out[1, 0] = np.inf if t > 0 and len(times) % 2 == 0 else out[1, 0]
        return out
    with np.errstate(invalid="ignore", over="ignore"):
        got = rk_step(tab, f, 0.25, y, 0.1)     # (h not a power of 2: h·Σ a k and Σ (h a) k round differently)
        t_got, times[:] = list(times), []
        want = _reference_rk_step(tab, f, 0.25, y, 0.1)
    assert times == t_got and [type(t) for t in times] == [type(t) for t in t_got]
    for a, b in zip(got, want):
        assert (a is None and b is None) or (np.array_equal(a, b, equal_nan=True)
                                             and np.array_equal(np.signbit(a), np.signbit(b)))


def test_tableau_arrays_are_read_only():
    # rk_step's terms are read from them once: an edit in place would leave those terms stale
    tab = get_method("rk45")
    for arr in (tab.a, tab.b, tab.c, tab.b_err):
        with pytest.raises(ValueError):
            arr[0] = 1.0


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_stage_near_the_float64_maximum_does_not_overflow_the_step(name):
    # y' = c with c = 1.5e308: the increment h·c and the error estimate are finite, but Dormand–Prince's
    # coefficients (up to 11.6 in size) times c overflowed when h was applied after the sum (inf, and NaN in err)
    # (the velocity reads the direction y/|y| only, as Pre-LN's radial law does: an overflowed stage state is NaN)
    c = 1.5e308
    y_new, err, _ = rk_step(get_method(name), lambda t, y: c * (y / np.abs(y)), 0.0, np.array([1.0]), 1e-3)
    assert y_new[0] == pytest.approx(1.5e305, rel=1e-14)
    assert err is None or abs(err[0]) <= 1e-14 * 1.5e305


@pytest.mark.parametrize("scheme", ["pre-ln", "qkv-norm"])
@pytest.mark.parametrize("method", ["rk45", "rk23"])
def test_adaptive_pairs_run_usa_at_the_top_of_its_beta_range(scheme, method):
    # two orthogonal tokens, USA at β = 709 (≤ 709.78, the top of its range): each radius grows at
    # dr/dt = (e^β + ρ)/2 ≈ 4.1e307, and ρ stays 0 to rounding (its rate is ≤ 1/r), so r(t) = 1 + e^β t/2.
    # rk45 stopped at t = 0 ("Non-finite velocity"): its stage sums overflowed, while rk4 ran.
    import meanfield as mf
    model = mf.Model(709.0, scheme=scheme, attention="usa")
    tr = mf.simulate(model, mf.Particles(np.eye(3)[:2]), 1e-2, backend="particles", method=method,
                     t_eval=[2.5e-3, 5e-3, 1e-2])
    assert tr.status is mf.Status.OK and np.allclose(tr.times, [0, 2.5e-3, 5e-3, 1e-2], rtol=0, atol=1e-15)
    exact = 1 + np.exp(709.0) / 2 * tr.times
    radii = np.array([s.radii for s in tr.states])
    assert np.all(np.abs(radii / exact[:, None] - 1) < 1e-12)
