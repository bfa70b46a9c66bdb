import numpy as np
import pytest

from meanfield._norms import norms, row_norms

# 3-4-5 rows at every scale: their squares overflow (1e200), underflow (1e-200) or are subnormal (1e-320)
SCALES = [1.0, 1e200, 1e-200, 1e-320, 0.0]
ROWS = np.array([[3.0, 4.0, 0.0]]) * np.array(SCALES)[:, None]


def test_norms_neither_overflow_nor_underflow():
    """‖A‖ of unnormalized attention reaches e^β: its square overflows from β ≈ 355."""
    np.testing.assert_allclose(norms(ROWS), 5 * np.array(SCALES), rtol=1e-15, atol=0)
    np.testing.assert_array_equal(norms(ROWS.T, axis=0), norms(ROWS))
    assert norms(np.array([[1.5e308, 1.5e308]]))[0] == np.inf           # beyond float64, as it should be
    assert np.isnan(norms(np.array([[np.nan, 1.0]])))[0]
    for row, scale in zip(ROWS, SCALES):                                 # one vector: a scalar
        assert norms(row) == pytest.approx(5 * scale, rel=1e-15, abs=0)


@pytest.mark.parametrize("shape", [(5, 3), (1, 5, 3), (5, 1, 3)])
def test_row_norms_equal_norms_along_the_last_axis(shape):
    rows = ROWS.reshape(shape)
    np.testing.assert_array_equal(row_norms(rows), norms(rows, axis=-1))


def test_row_norms_of_ordinary_rows_are_the_plain_sum_of_squares():
    x = np.random.default_rng(0).standard_normal((50, 4))
    assert np.array_equal(row_norms(x), np.sqrt(np.einsum("ij,ij->i", x, x)))
    assert np.array_equal(row_norms(x[0]), np.sqrt(x[0] @ x[0]))


def test_plain_row_norms_flag_every_odd_row():
    # the stepper's fast paths (projection, unit_vectors) trust the plain norms only where plain_row_norms' range
    # says every one is finite and > TINY_NORM: a NaN, inf, zero, underflowing or overflowing row must fail it
    from meanfield._norms import TINY_NORM, norm_range, plain_row_norms, regular

    rng = np.random.default_rng(0)
    for n in (1, 3, 20, 257):
        x = rng.normal(size=(n, 3))
        nrm, lo, hi = plain_row_norms(x)
        assert regular(lo, hi) and lo == nrm.min() and hi == nrm.max()
        assert np.array_equal(nrm, row_norms(x))
        for odd in ([np.nan, 0, 0], [np.inf, 0, 0], [0, 0, 0], [1e-170, 0, 0], [1e200, 1e200, 0], [TINY_NORM, 0, 0]):
            y = x.copy()
            y[rng.integers(n)] = odd
            with np.errstate(over="ignore", under="ignore"):
                assert not regular(*plain_row_norms(y)[1:]), (n, odd)
    assert not regular(*plain_row_norms(np.empty((0, 3)))[1:])
    for values in (np.array([2.0, np.nan, -1.0]), np.array([[np.inf, 1.0], [np.nan, 0.0]]), np.array([3.0, -np.inf])):
        lo, hi = norm_range(values)
        assert np.array_equal([lo, hi], [values.min(), values.max()], equal_nan=True)
