"""Worker threads: sums over point slices are reproducible bit for bit (meanfield/_threads.py)."""
import numpy as np
import pytest

import meanfield as mf
from meanfield import _threads
from meanfield._attention import _SHEvaluator
from meanfield._sampling import particles_coefficients


def test_slices_cover_the_points_in_order():
    for n, threads in [(1, 4), (9_999, 2), (10_000, 2), (123_457, 3), (50_000, 8)]:
        parts = _threads.slices(n, threads)
        assert parts[0].start == 0 and parts[-1].stop == n
        assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
        assert len(parts) == max(1, min(threads, n // _threads.MIN_PART))


def test_map_slices_keeps_the_order_of_the_slices():
    parts = _threads.slices(40_000, 2)
    assert _threads.map_slices(lambda s: (s.start, s.stop), parts) == [(s.start, s.stop) for s in parts]
    assert _threads.ordered_sum([np.ones(2), 2 * np.ones(2), 3 * np.ones(2)]).tolist() == [6.0, 6.0]


@pytest.mark.parametrize("n, lmax", [(50, 8), (3_000, 60), (20_000, 21)])
def test_particle_coefficients_are_the_same_bits_on_every_call(n, lmax):
    # ducc0's own threads add an adjoint transform's points into a shared grid in arrival order: a sum that
    # changed in its last bit from call to call (seen as 2.8e-16 for the distance of a set to itself)
    p = mf.Particles.uniform(n, seed=3)
    first = particles_coefficients(p, lmax)
    assert all(np.array_equal(particles_coefficients(p, lmax), first) for _ in range(30))
    assert mf.sobolev_distance(p, p, lmax=lmax) == 0.0


@pytest.mark.parametrize("n, lmax", [(3_000, 60), (20_000, 21)])
def test_spectral_velocity_coefficients_are_the_same_bits_on_every_call(n, lmax):
    x = mf.Particles.uniform(n, seed=4).positions
    w = np.full(n, 1.0 / n)
    ev = _SHEvaluator(mf.Model(beta=5.0), lmax=lmax, epsilon=3e-13, nthreads=2)
    first = ev.coefficients(x, w)
    assert all(np.array_equal(ev.coefficients(x, w), first) for _ in range(30))


def test_map_slices_waits_for_the_other_slices_when_its_own_fails():
    # the other slices write into the caller's arrays: the error must not reach the caller while they still do
    import time
    done = []

    def fn(part):
        if part.start == 0:
            time.sleep(0.1)                      # the other slice has started: it cannot be cancelled
            raise FloatingPointError("first slice")
        time.sleep(0.3)
        done.append(part.start)

    with pytest.raises(FloatingPointError, match="first slice"):
        _threads.map_slices(fn, [slice(0, 1), slice(1, 2)])
    assert done == [1]

    def fails_at_once(part):                     # a slice not started yet is cancelled, and never runs
        if part.start == 0:
            raise FloatingPointError("first slice")
        done.append(part.start)

    with pytest.raises(FloatingPointError):
        _threads.map_slices(fails_at_once, [slice(0, 1)] + [slice(i, i + 1) for i in range(1, 40)])
    ran = len(done)
    time.sleep(0.2)
    assert len(done) == ran
