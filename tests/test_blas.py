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


@pytest.mark.parametrize("n, threads", [(1000, None), (3000, 1)])
def test_exact_attention_runs_every_block_on_one_blas_thread(monkeypatch, n, threads):
    # one block (N = 1000) and a serial loop of blocks (threads=1) ran on the caller's BLAS team: 2.7x and 7.5x slower
    # on a loaded two-vCPU machine (a run of 1000 tokens, beta = 10, to t = 5: 43-52 s, now 6-8 s), and the bits
    # followed the BLAS thread count (3.3e-16 apart between one and two)
    from meanfield import _attention

    seen, finish = [], _attention._finish

    def spy(*args, **kwargs):
        seen.append(counts())
        return finish(*args, **kwargs)

    monkeypatch.setattr(_attention, "_finish", spy)
    x = mf.Particles.uniform(n, seed=0).positions
    fields = []
    for team in (1, 2):
        with blas_threads(team):
            fields.append(mf.attention_field(mf.Model(beta=10.0), x, threads=threads).A)
            assert counts() == {team}
    assert seen and all(s == {1} for s in seen)
    assert np.array_equal(fields[0], fields[1])


@pytest.mark.parametrize("n, d", [(20, 3), (100, 3), (127, 3), (40, 30)])
def test_small_exact_attention_skips_the_blas_section_and_still_does_not_follow_the_blas_team(monkeypatch, n, d):
    # below N·M·(d + 1) = 65 536 OpenBLAS runs the products on one thread by itself: the section's lock and
    # thread-count calls (~5 µs, a quarter of a 20-token stage) are skipped there, and the bits still do not depend
    # on the caller's BLAS team
    from meanfield import _attention, _blas

    entered = []
    real = _blas.single_threaded_blas
    monkeypatch.setattr(_attention, "single_threaded_blas", lambda: (entered.append(1), real())[1])
    x = mf.Particles.uniform(n, d, seed=1).positions
    model = mf.Model(beta=10.0, d=d)
    fields = []
    for team in (1, 2):
        with blas_threads(team):
            fields.append(mf.attention_field(model, x, threads=1).A)
    assert not entered and n * n * (d + 1) < _attention._SERIAL_BLAS_SIZE
    assert np.array_equal(fields[0], fields[1])
