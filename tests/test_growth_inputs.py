"""Input checks of meanfield.analysis' growth rates (meanfield/analysis/_growth.py): β beyond the computed range,
huge degrees, huge dimensions.  They returned NaN with numpy warnings, hung, or raised OverflowError."""
import time

import numpy as np
import pytest

import meanfield as mf
from meanfield import sphere as s


@pytest.mark.parametrize("call", [
    lambda: mf.growth_rate(1e308, 1),
    lambda: mf.growth_rates(1e308, 3),
    lambda: mf.growth_rates(2e9, 3, scheme="ngpt"),
    lambda: mf.most_unstable_mode(1e308),      # OverflowError: cannot convert float infinity to integer
    lambda: mf.l1_noise_time(1e308, 100, 0.5),
])
def test_beta_beyond_the_computed_range_is_refused_naming_it(call):
    with pytest.raises(ValueError, match=r"`beta` must be ≤ 1e9 .*got beta="):
        call()


def test_rates_are_finite_up_to_the_largest_beta():
    beta = 1e9
    rates = mf.growth_rates(beta, 3)
    # d = 3: λ_1/λ_0 = coth β − 1/β, γ_1 = 2 (λ_1/λ_0) / β
    assert np.all(np.isfinite(rates)) and rates[1] == pytest.approx(2 * (1 - 1 / beta) / beta, rel=1e-13, abs=0)
    assert mf.most_unstable_mode(beta).ell == pytest.approx(np.sqrt(2 * beta), rel=0.01)


def _direct_rates(beta, lmax, d):
    """Post-LN softmax rates computed for every degree (the formula of growth_rates, no shortcut)."""
    ratios, _ = s.multiplier_ratios(beta, lmax, d)
    ell = np.arange(lmax + 1)
    return ell * (ell + (d - 2.0)) * ratios / beta


@pytest.mark.parametrize("beta, d", [(1e-3, 3), (1.0, 2), (1.0, 3), (1e4, 2), (1e4, 3), (50.0, 50)])
def test_degrees_past_the_zero_rate_bound_are_zero_as_computed(beta, d):
    # growth_rates sets the rates beyond 1000 + √(10⁶ + 2000β) to 0.0 without computing them: they underflow
    cut = int(1000 + np.sqrt(1e6 + 2000 * beta)) + 1
    lmax = cut + 500
    direct = _direct_rates(beta, lmax, d)
    assert not direct[cut + 1:].any()                # the bound holds: nothing nonzero is cut off
    got = mf.growth_rates(beta, lmax, d)
    np.testing.assert_allclose(got, direct, rtol=1e-15, atol=0)
    assert not got[cut + 1:].any()
    assert mf.growth_rate(beta, lmax, d) == 0.0


def test_huge_degrees_cost_nothing_or_are_refused():
    t0 = time.perf_counter()
    assert mf.growth_rate(1.0, 10**9) == 0.0                    # hung: all 10⁹ degrees were computed
    assert mf.growth_rates(1.0, 10**6)[-1] == 0.0              # was ~1 s of Bessel functions for zeros
    assert time.perf_counter() - t0 < 5
    with pytest.raises(ValueError, match="`attention`"):
        mf.growth_rate(1.0, 10**9, attention="hard")            # the other parameters are still checked
    with pytest.raises(ValueError, match="needs β ≤ 709.78"):
        mf.growth_rate(800.0, 10**9, attention="unnormalized")
    with pytest.raises(mf.InsufficientMemoryError, match="lower `lmax`"):
        mf.growth_rates(1.0, 10**12)                            # the result alone is 8 TB


def test_huge_dimension_does_not_overflow_integer_arithmetic():
    # ℓ(ℓ + d − 2) was int64 arithmetic on a Python int d: OverflowError for d = 10³⁰
    d = 10**30
    rates = mf.growth_rates(1.0, 2, d=d)
    ratios, _ = s.multiplier_ratios(1.0, 2, d)
    assert np.all(np.isfinite(rates)) and rates[1] == pytest.approx((d - 1.0) * ratios[1], rel=1e-14)
