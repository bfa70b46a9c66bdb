"""OpenBLAS thread control: one BLAS thread while meanfield's own threads run, the previous count restored."""
import threading

import numpy as np
import pytest

import meanfield as mf
from meanfield._blas import blas_info, blas_threads, openblas_libs, single_threaded_blas

pytestmark = pytest.mark.skipif(not openblas_libs(), reason="no OpenBLAS found in this process")


def counts():
    return set(blas_info().values())


def test_single_threaded_blas_is_counted_across_threads():
    with blas_threads(2):
        inside, release, entered = [], threading.Event(), threading.Barrier(3)

        def worker():
            with single_threaded_blas():
                entered.wait()
                inside.append(counts())
                release.wait()
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        entered.wait()
        release.set()
        for t in threads:
            t.join()
        assert inside == [{1}, {1}]
        assert counts() == {2}          # restored only when the last section ended


def test_exact_attention_restores_the_blas_threads():
    x = np.random.default_rng(0).standard_normal((3000, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with blas_threads(2):
        ref = mf.attention_field(mf.Model(beta=5.0), x, threads=1).A
        got = mf.attention_field(mf.Model(beta=5.0), x, threads=2, chunk=300).A
        assert counts() == {2}
    assert np.max(np.abs(got - ref)) < 1e-14
