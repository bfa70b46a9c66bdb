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
