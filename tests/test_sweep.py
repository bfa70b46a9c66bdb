"""Sweeps on dask.distributed (issue 10): cluster = serial, resume without redoing, failures recorded,
distributed particles-sh = single process to 1e-12, the spec's validation and the observables."""
import json
import re
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import meanfield as mf
from meanfield import cli
from meanfield._attention import attention_field_from_coefficients, attention_field_sh, sh_coefficients
from meanfield._config import ConfigError
from meanfield._sweep import (OBSERVABLES, distributed_particles_sh, load_sweep, parse_sweep, run_sweep, run_task)
from meanfield._sweep._observables import CLUSTER_MIN_MASS, aligned_fraction, density_mean

distributed = pytest.importorskip("distributed")

BASE = """
[model]
beta = 1.0
[initial]
kind = "particles"
n = 12
seed = 0
[run]
backend = "particles"
t_final = 1.0
save_every = 0.5
[options]
step = 0.1
threads = 1
"""
SWEEP = BASE + """
[sweep]
observables = ["energy", "mean_alignment", "aligned_fraction", "clusters", "status", "wall_time"]
at = "saved"
aligned_tol = 0.05
[sweep.grid]
"options.step" = [0.1, 0.2, 0.3]
"initial.seed" = [0, 1]
"""


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as c:
        yield c


def _spec(text=SWEEP, tmp_path=None):
    import tomllib
    spec = parse_sweep(tomllib.loads(text), text)
    return _failing_when_run(spec) if text is SWEEP else spec


def _failing_when_run(spec):
    """SWEEP with its `options.step = 0.3` tasks turned into `options.step = -0.1` ones after the up-front check: tasks
    that fail only when they run (a lost worker, …), recorded as ERROR rows.  (A sweep file with step = -0.1 is
    refused before any task runs: test_option_values_of_every_task_are_checked_before_any_runs.)"""
    from meanfield._sweep._spec import Task, resolve, task_key
    tasks = []
    for t in spec.tasks:
        if t.params["options.step"] == 0.3:
            params = {**t.params, "options.step": -0.1}
            config = resolve(spec.base, params)
            t = Task(index=t.index, params=params, config=config, key=task_key(config, spec.record))
        tasks.append(t)
    object.__setattr__(spec, "tasks", tasks)
    return spec


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]


# ----------------------------------------------------------------------------------------------
# the sweep

def test_cluster_equals_serial_and_failures_are_recorded(client, tmp_path):
    spec = _spec()
    assert len(spec.tasks) == 6 and spec.parameter_names == ["options.step", "initial.seed"]
    par = run_sweep(spec, tmp_path / "par", client=client, progress=False)
    ser = run_sweep(spec, tmp_path / "ser", serial=True, progress=False)
    assert par.ran == ser.ran == 6
    assert _strip(par.rows) == _strip(ser.rows)      # same code, one thread each: bitwise the same
    # a value only the backend checks, when the run starts (names and model values are checked up front)
    bad = [r for r in par.rows if r["options.step"] == -0.1]
    assert len(bad) == 2 and all(r["status"] == "ERROR" and "`step`" in r["error"] for r in bad)
    good = [r for r in par.rows if r["options.step"] != -0.1]
    assert all(r["status"] == "OK" and len(r["aligned_fraction"]) == len(r["t"]) == 3 for r in good)
    assert not par.success
    # the table files: one row per task, lists kept in JSON lines, JSON-encoded in CSV
    lines = (tmp_path / "par" / "results.jsonl").read_text().splitlines()
    assert [json.loads(s)["key"] for s in lines] == [t.key for t in spec.tasks]
    csv_text = (tmp_path / "par" / "results.csv").read_text().splitlines()
    assert csv_text[0].startswith("key,options.step,initial.seed,status,error,wall_time,t_end,t,energy")
    assert len(csv_text) == 7


def test_a_task_equals_a_direct_simulate():
    spec = _spec()
    row = run_task(spec.tasks[1], spec.record)
    p = mf.Particles.uniform(12, seed=1)
    traj = mf.simulate(mf.Model(beta=1.0), p, 1.0, backend="particles", save_every=0.5, step=0.1, threads=1)
    assert row["energy"] == list(traj.diagnostics["energy"])
    assert row["mean_alignment"] == [mf.mean_alignment(s) for s in traj.states]


def test_a_task_runs_on_threads_threads_also_when_its_options_leave_them_unset(monkeypatch):
    # sweeps.md: "each task limits meanfield's own threads (transforms, attention blocks) to one".  Only the transforms'
    # default was limited: the particle backends' attention, `threads` unset, ran on every usable core in each task.
    import meanfield._attention as attention
    import meanfield._threads as pool
    from meanfield.sphere import _sh
    monkeypatch.setattr(pool, "NTHREADS", 3)
    monkeypatch.setattr(_sh, "NTHREADS", 3)
    groups, sh_threads = [], []
    run_groups, sh_init = attention._run_block_groups, attention._SHEvaluator.__init__
    monkeypatch.setattr(attention, "_run_block_groups", lambda block, g: (groups.append(len(g)), run_groups(block, g)))

    def init(self, *args, **kwargs):
        sh_init(self, *args, **kwargs)
        sh_threads.append(self.nthreads)
    monkeypatch.setattr(attention._SHEvaluator, "__init__", init)
    text = BASE.replace("threads = 1\n", "") + \
        '[sweep]\nsets = [{ "run.backend" = "particles", "options.chunk" = 4 }, { "run.backend" = "particles-sh" }]\n'
    spec = _spec(text)
    assert "threads" not in spec.tasks[0].config["options"]
    sh_threads.clear()              # the up-front check of the tasks builds an evaluator too
    rows = [run_task(t, spec.record) for t in spec.tasks]
    assert [r["status"] for r in rows] == ["OK", "OK"]
    assert groups == [] and sh_threads and set(sh_threads) == {1}       # one thread each (3 groups, 3 threads before)
    assert pool.NTHREADS == _sh.NTHREADS == 3                            # restored after the task
    rows2 = [run_task(t, spec.record, threads=2) for t in spec.tasks]
    assert groups and set(groups) == {2} and set(sh_threads[len(sh_threads) // 2:]) == {2}
    assert _strip(rows2) == _strip(rows)                                 # the thread count changes no number


def test_max_tasks_on_a_cluster_runs_only_that_many_tasks(client, tmp_path):
    """All the tasks were submitted to dask and the loop stopped reading at max_tasks: the workers ran the others
    too, whose results were dropped (computed, never recorded, computed again by the next sweep).  Now exactly
    max_tasks tasks run, as in a serial sweep."""
    spec = _spec(BASE + '[sweep]\ngrid = { "initial.seed" = [0, 1, 2, 3] }\nhdf5 = true\n')
    first = run_sweep(spec, tmp_path, client=client, progress=False, max_tasks=1)
    assert first.ran == 1 and len(list((tmp_path / "tasks").glob("*.json"))) == 1
    time.sleep(1.0)                                   # a task dask ran past the limit writes its HDF5 file
    assert len(list((tmp_path / "runs").glob("*.h5"))) == 1
    rest = run_sweep(spec, tmp_path, client=client, progress=False)
    assert rest.skipped == 1 and rest.ran == len(spec.tasks) - 1


def test_interrupted_sweep_resumes_without_redoing(client, tmp_path):
    spec = _spec()
    first = run_sweep(spec, tmp_path, serial=True, progress=False, max_tasks=2)   # "killed" after 2 tasks
    assert first.ran == 2 and len(first.rows) == 2
    files = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "tasks").glob("*.json")}
    assert len(files) == 2
    time.sleep(0.01)
    second = run_sweep(spec, tmp_path, client=client, progress=False)
    assert second.skipped == 2 and second.ran == 4 and len(second.rows) == 6
    for name, mtime in files.items():
        assert (tmp_path / "tasks" / name).stat().st_mtime_ns == mtime
    # a third run redoes only the failed (ERROR) tasks, in case the failure was transient
    third = run_sweep(spec, tmp_path, serial=True, progress=False)
    assert third.ran == 2 and third.skipped == 4
    assert _strip(third.rows) == _strip(second.rows)


def test_a_table_without_rows_has_the_columns_of_one_with_rows(tmp_path):
    # a sweep stopped before its first task finished wrote a CSV header of five columns (no t_end, t, observables)
    for text in (SWEEP, BASE + '[sweep]\nhdf5 = true\n[sweep.grid]\n"model.beta" = [1.0]\n'):
        spec = _spec(text)
        run_sweep(spec, tmp_path / "empty", serial=True, progress=False, max_tasks=0)
        run_sweep(spec, tmp_path / "full", serial=True, progress=False, max_tasks=1)
        header = [(tmp_path / d / "results.csv").read_text().splitlines()[0] for d in ("empty", "full")]
        assert header[0] == header[1]


def test_hdf5_per_task_and_final_observables(tmp_path):
    text = BASE + '[sweep]\nsets = [{ "model.beta" = 1.0 }, { "model.beta" = 3.0, "run.backend" = "particles-sh" }]\n' \
                  'observables = ["energy", "clusters"]\nhdf5 = true\ntable = "jsonl"\n'
    res = run_sweep(_spec(text), tmp_path, serial=True, progress=False)
    assert res.success and [r["status"] for r in res.rows] == ["OK", "OK"]
    assert not (tmp_path / "results.csv").exists()
    for r in res.rows:
        traj = mf.load(tmp_path / r["hdf5"])
        assert r["energy"] == traj.diagnostics["energy"][-1] and isinstance(r["clusters"], int)
    assert mf.load(tmp_path / res.rows[1]["hdf5"]).backend == "particles-sh"


def test_cli_sweep_on_a_scheduler(client, tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE + '[sweep]\ngrid = { "model.beta" = [1.0, 2.0] }\n')
    out = tmp_path / "out"
    args = ["sweep", str(cfg), "--scheduler", client.scheduler.address, "--output", str(out)]
    assert cli.main(args + ["--quiet"]) == 0
    assert len(list((out / "tasks").glob("*.json"))) == 2 and (out / "sweep.toml").read_text() == cfg.read_text()
    assert cli.main(args) == 0
    assert "2 tasks: 0 run, 2 already done; OK 2" in capsys.readouterr().out
    cfg.write_text(BASE + '[sweep]\ngrid = { "options.step" = [0.1, -0.1] }\n')
    assert cli.main(args + ["--quiet"]) == 2          # a bad option value: refused before any task runs
    assert "task {'options.step': -0.1}: [options] `step` must be finite and > 0" in capsys.readouterr().err
    assert len(list((out / "tasks").glob("*.json"))) == 2                     # nothing ran
    cfg.write_text(BASE + '[sweep]\ngrid = { "model.beta" = [1.0, -2.0] }\n')
    assert cli.main(args + ["--quiet"]) == 2          # a model value is checked for every task before any runs
    assert "task {'model.beta': -2.0}: [model] `beta` must be finite and > 0" in capsys.readouterr().err
    cfg.write_text(BASE + '[sweep]\ngrid = { "model.bta" = [1.0] }\n')
    assert cli.main(args) == 2
    assert "valid keys of [model]" in capsys.readouterr().err


def test_an_unreachable_scheduler_fails_fast_and_says_so(tmp_path, capsys):
    """--scheduler with nothing listening waited dask's default 30 s, then said only "Timed out trying to connect";
    now 5 s (--connect-timeout / connect_timeout), and the message names the address and what to check."""
    import socket
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE + '[sweep]\ngrid = { "model.beta" = [1.0] }\n')
    args = ["sweep", str(cfg), "--scheduler", address, "--output", str(tmp_path / "out"), "--quiet"]
    t0 = time.perf_counter()
    assert cli.main(args) == 2
    assert time.perf_counter() - t0 < 15
    err = capsys.readouterr().err
    assert f"error: could not connect to the dask scheduler at {address!r}" in err and "allow more than 5 s" in err
    t0 = time.perf_counter()
    assert cli.main(args + ["--connect-timeout", "0.5"]) == 2
    assert time.perf_counter() - t0 < 10 and "allow more than 0.5 s" in capsys.readouterr().err
    with pytest.raises(ConnectionError, match=re.escape(f"could not connect to the dask scheduler at {address!r}")):
        run_sweep(_spec(cfg.read_text()), tmp_path / "api", scheduler=address, connect_timeout=0.5, progress=False)
    for extra, match in [(["--connect-timeout", "0"], "`--connect-timeout` must be finite and > 0"),
                         (["--serial", "--connect-timeout", "2"], "give it with `--scheduler`")]:
        assert cli.main(["sweep", str(cfg), "--output", str(tmp_path / "o"), *extra] +
                        (["--scheduler", address] if "--serial" not in extra else [])) == 2
        assert match in capsys.readouterr().err
    with pytest.raises(ValueError, match="`connect_timeout` must be finite and > 0; got connect_timeout=-1"):
        run_sweep(_spec(cfg.read_text()), tmp_path / "api", scheduler=address, connect_timeout=-1, progress=False)


@pytest.mark.parametrize("extra, match", [
    ("[sweep]\nobservables = [\"energy\"]\n", "needs `grid`"),
    ("[sweep]\ngrid = { \"model.beta\" = [1.0] }\nbogus = 1\n",
     r"unknown key\(s\) \['bogus'\] in \[sweep\]; valid keys"),
    ("[sweep]\ngrid = { \"model.bta\" = [1.0] }\n", r"valid keys of \[model\]: \['K', 'Q'"),
    ("[sweep]\ngrid = { \"beta\" = [1.0] }\n", "must be \"table.key\""),
    ("[sweep]\ngrid = { \"model.beta\" = 1.0 }\n", "non-empty lists"),
    ("[sweep]\ngrid = { \"model.beta\" = [1.0] }\nobservables = [\"entropy\"]\n",
     r"valid observables: \['aligned_fraction'"),
    ("[sweep]\ngrid = { \"model.beta\" = [1.0] }\nat = \"every\"\n", "`at` must be one of"),
    ("[sweep]\ngrid = { \"model.beta\" = [1.0, 1.0] }\n", "duplicate parameter sets"),
    ("[sweep]\ngrid = { \"model.beta\" = [1, 1.0] }\n", "duplicate parameter sets"),
    ("[sweep]\ngrid = { \"initial.seed\" = [0, 0.0] }\n", "duplicate parameter sets"),
    ("[sweep]\ngrid = { \"initial.lmax\" = [8] }\n", r"unknown key\(s\) \['lmax'\] in \[initial\] \(kind='particles'\)"),
    ("[sweep]\nsets = [{ \"model.beta\" = 1.0 }]\ngrid = { \"model.beta\" = [2.0] }\n", "both `grid` and `sets`"),
    ("[sweep]\ngrid = { \"model.beta\" = [1.0] }\ntable = [\"parquet\"]\n", "`table` must be"),
])
def test_invalid_sweep_files(extra, match):
    with pytest.raises(ConfigError, match=match):
        _spec(BASE + extra)


def test_a_structural_error_names_the_task_that_has_it():
    # a grid over the initial kind: the keys of the base that one kind does not take were refused without saying
    # which task (which kind) has them
    text = BASE + '[sweep.grid]\n"initial.kind" = ["particles", "uniform"]\n'
    with pytest.raises(ConfigError, match=re.escape("task {'initial.kind': 'uniform'}: unknown key(s) ['n', 'seed'] "
                                                    "in [initial] (kind='uniform'); valid keys: ")):
        _spec(text)
    with pytest.raises(ConfigError, match=re.escape("task {'initial.kind': 'dirac'}: [initial] `kind` must be one of")):
        _spec(BASE + '[sweep.grid]\n"initial.kind" = ["particles", "dirac"]\n')


def test_checkpoint_settings_are_refused_not_ignored():
    # a sweep task keeps no checkpoint: these were accepted, ignored, and a grid over them ran one run twice
    for extra in ('[sweep.grid]\n"run.checkpoint_every" = [1, 2]\n',
                  '[sweep]\nsets = [{ "run.checkpoint_interval" = 60.0 }]\n'):
        with pytest.raises(ConfigError, match="a sweep task keeps no checkpoint"):
            _spec(BASE + extra)
    with pytest.raises(ConfigError, match=r"\[run\] `checkpoint_every`: a sweep task keeps no checkpoint"):
        _spec(BASE.replace("[options]", "checkpoint_every = 1\n[options]") + '[sweep.grid]\n"model.beta" = [1.0]\n')


def test_a_sweep_given_as_a_dict_may_hold_numpy_numbers(tmp_path):
    # "initial.seed": list(np.arange(2)) stopped with "Object of type int64 is not JSON serializable" (the task key)
    import tomllib
    raw = tomllib.loads(BASE)
    toml = parse_sweep({**raw, "sweep": {"grid": {"model.beta": [1.0, 1.5], "initial.seed": [0, 1]}}})
    spec = parse_sweep({**raw, "sweep": {"grid": {"model.beta": list(np.linspace(1.0, 1.5, 2)),
                                                   "initial.seed": list(np.arange(2))},
                                          "aligned_tol": np.float64(0.01)}})
    assert [t.key for t in spec.tasks] != [] and spec.tasks[0].params == {"model.beta": 1.0, "initial.seed": 0}
    assert [t.key for t in parse_sweep({**raw, "sweep": {"grid": {"model.beta": [1.0, 1.5], "initial.seed": [0, 1]},
                                                         "aligned_tol": 0.01}}).tasks] == [t.key for t in spec.tasks]
    assert [t.key for t in toml.tasks] != [t.key for t in spec.tasks]      # aligned_tol is part of the key
    assert type(spec.tasks[1].params["initial.seed"]) is int
    result = run_sweep(spec, tmp_path, serial=True, progress=False)
    assert result.success and (tmp_path / "sweep.json").is_file()


def test_keys_are_stable_and_dotted_keys_work(tmp_path):
    a = _spec(BASE + "[sweep.grid]\nmodel.beta = [1.0, 2.0]\n")
    b = _spec(BASE + "[sweep]\ngrid = { \"model.beta\" = [1.0, 2.0] }\n")
    assert [t.key for t in a.tasks] == [t.key for t in b.tasks]
    assert len({t.key for t in a.tasks}) == 2
    c = _spec(BASE.replace("t_final = 1.0", "t_final = 2.0") + "[sweep.grid]\nmodel.beta = [1.0, 2.0]\n")
    assert not {t.key for t in a.tasks} & {t.key for t in c.tasks}     # another base run: other tasks
    f = tmp_path / "x.toml"
    f.write_text(BASE + "[sweep.grid]\nmodel.beta = [1.0, 2.0]\n")
    assert [t.key for t in load_sweep(f).tasks] == [t.key for t in a.tasks]
    ints = _spec(BASE + "[sweep.grid]\nmodel.beta = [1, 2]\n")       # 1 and 1.0 are one value: the same keys
    assert [t.key for t in ints.tasks] == [t.key for t in a.tasks]


def test_shipped_example_parses():
    spec = load_sweep(Path(__file__).resolve().parents[1] / "examples" / "phase_sweep.toml")
    assert len(spec.tasks) == 216 and spec.at == "saved"
    assert spec.observables == ("aligned_fraction", "clusters", "mean_alignment", "energy")


# ----------------------------------------------------------------------------------------------
# observables

def test_pair_observables_against_brute_force():
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((3, 3))
    x = np.repeat(centers, [5, 3, 2], axis=0) + 1e-4 * rng.standard_normal((10, 3))
    w = rng.random(10)
    p = mf.Particles(x, w, normalize=True)
    g = p.positions @ p.positions.T >= 1 - 1e-3
    ww = np.outer(p.weights, p.weights)
    off = ~np.eye(10, dtype=bool)
    assert aligned_fraction(p, 1e-3) == pytest.approx((ww * g)[off].sum() / ww[off].sum(), abs=1e-14)
    from types import SimpleNamespace
    assert OBSERVABLES["clusters"](SimpleNamespace(states=[p], diagnostics={}), 0, 1e-3) == 3


def test_density_mean_is_exact():
    rho = mf.Density.from_function(lambda x: 1 + 0.5 * x[..., 2] - 0.3 * x[..., 0], lmax=6)
    assert np.allclose(density_mean(rho), [-0.1, 0, 0.5 / 3], atol=1e-14)
    assert np.allclose(density_mean(mf.Density.uniform(8)), 0, atol=1e-15)
    assert set(OBSERVABLES) >= {"energy", "mean_alignment", "aligned_fraction", "clusters"}


# ----------------------------------------------------------------------------------------------
# distributed particles-sh

def test_split_attention_equals_the_one_shot_evaluation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.random(600)
    w /= w.sum()
    V = np.array([[1, 0.2, 0], [0, 1, 0.3], [0.1, 0, 2.0]])
    for model in (mf.Model(beta=3.0), mf.Model(beta=2.0, scheme="qkv-norm", V=V)):
        ref = attention_field_sh(model, x, w, threads=1)
        c = sh_coefficients(model, x, w, threads=1)
        f = attention_field_from_coefficients(model, c, x, threads=1)
        for name in ("A", "tangential", "radial", "norm", "log_z"):
            assert np.array_equal(getattr(ref, name), getattr(f, name)), name
        c2 = sh_coefficients(model, x[:250], w[:250], threads=1) + sh_coefficients(model, x[250:], w[250:], threads=1)
        assert np.abs(c2 - c).max() < 1e-13 * np.abs(c).max()   # linear: the sum of the parts, to rounding
    with pytest.raises(ValueError, match="`coefficients` must have shape"):
        attention_field_from_coefficients(mf.Model(beta=3.0), c, x)


@pytest.mark.parametrize("scheme, radii", [("post-ln", False), ("pre-ln", True)])
def test_distributed_particles_sh_equals_single_process(client, scheme, radii):
    n = 1500
    p = mf.Particles.uniform(n, seed=4, radii=np.linspace(0.5, 2.0, n) if radii else None)
    model = mf.Model(beta=4.0, scheme=scheme)
    ref = mf.simulate(model, p, 0.6, backend="particles-sh", step=0.1, save_every=0.3, threads=1)
    out = distributed_particles_sh(model, p, 0.6, step=0.1, save_every=0.3, client=client, shards=3)
    assert out.status is mf.Status.OK and out.backend == "particles-sh" and out.options == ref.options
    assert np.array_equal(out.times, ref.times) and np.array_equal(out.steps["t"], ref.steps["t"])
    for a, b in zip(ref.states, out.states):
        assert np.max(np.abs(a.positions - b.positions)) < 1e-12
        assert np.array_equal(a.weights, b.weights)
        if radii:
            assert np.max(np.abs(a.radii - b.radii)) < 1e-12
    assert list(out.diagnostics) == list(ref.diagnostics)
    for k, v in ref.diagnostics.items():
        assert np.allclose(out.diagnostics[k], v, rtol=1e-12, atol=1e-14), k


def _one_and_distributed(model, p, t_final, client, shards=2, **kw):
    """The same run in one process (particles-sh, one thread) and on ``shards`` shards, warnings silenced (runs that
    stop warn by design): (one process's trajectory, the distributed one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = mf.simulate(model, p, t_final, backend="particles-sh", threads=1, **kw)
        out = distributed_particles_sh(model, p, t_final, client=client, shards=shards, **kw)
    return ref, out


def test_distributed_energy_beyond_e_to_the_709_is_finite_as_in_one_process(threaded_client):
    """The shards summed e^{log Z} unshifted: at β = 714 four tokens within 1e-3 rad have log Z ≈ 714 > 709.78 and
    the energy read inf, where the single-process backend (shifted by the largest log Z) gives 8.538e306."""
    x = np.array([[0, 0, 1.0], [1e-3, 0, 1], [0, 1e-3, 1], [1e-3, 1e-3, 1]])
    p = mf.Particles(x, normalize=True)
    model = mf.Model(beta=714.0)
    ref, out = _one_and_distributed(model, p, 0.002, threaded_client, step=0.001, tol=1e-6)
    direct = np.mean(np.exp(714.0 * (p.positions @ p.positions.T) - np.log(2 * 714.0)))      # E at t = 0
    assert np.isfinite(out.diagnostics["energy"]).all()
    assert out.diagnostics["energy"][0] == pytest.approx(direct, rel=1e-6)                    # tol = 1e-6
    assert np.allclose(out.diagnostics["energy"], ref.diagnostics["energy"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("beta, r0", [(400.0, 1.0), (709.7, 3.0)])
def test_distributed_speeds_of_unnormalized_attention_at_large_beta_are_as_in_one_process(threaded_client, beta, r0):
    """The shards took |P_θA| by np.linalg.norm, whose squares overflow from ~1e154: USA Peri-LN at β = 400 saved
    max_speed = dissipation = inf where one process reports 0.0195 and 2.9e-5; at β = 709.7 with r = 3 the speed factor
    r‖A‖ itself overflows (one process divides it out scaled: 0.0039)."""
    p = mf.Particles(mf.Particles.uniform(50, seed=4).positions, radii=np.full(50, r0))
    model = mf.Model(beta, "peri-ln", attention="unnormalized")
    ref = mf.simulate(model, p, 0.02, backend="particles-sh", step=0.01, threads=1)
    out = distributed_particles_sh(model, p, 0.02, step=0.01, client=threaded_client, shards=2)
    assert list(out.diagnostics) == list(ref.diagnostics)
    for k, v in ref.diagnostics.items():
        assert np.all(np.isfinite(v)), k
        assert np.allclose(out.diagnostics[k], v, rtol=1e-12, atol=1e-14), k


def test_distributed_fixed_step_that_cannot_resolve_the_motion_warns_once_as_one_process(threaded_client):
    """USA at β = 20, 20 tokens, step 1e-3: one process warns that a stage moves a token by more than a radian (the
    two particle backends ended 1.86 apart); the shards, with their own copy of the RK4 loop, ran silently.  The
    warning names the fastest token of all shards (its index in the run), once per run; a resolved step is silent."""
    import warnings
    model = mf.Model(20.0, attention="unnormalized")
    p = mf.Particles.uniform(20, seed=0)

    def unresolved(run):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
        return [str(w.message) for w in caught if "does not resolve" in str(w.message)]
    one = unresolved(lambda: mf.simulate(model, p, 0.01, backend="particles-sh", step=1e-3, threads=1))
    many = unresolved(lambda: distributed_particles_sh(model, p, 0.01, step=1e-3, save_every=0.005,
                                                       client=threaded_client, shards=3))
    assert len(one) == len(many) == 1
    token = re.search(r"token (\d+) moves", one[0]).group(1)
    assert re.search(rf"at t=0: in the step from there token {token} moves", many[0]), many[0]
    assert not unresolved(lambda: distributed_particles_sh(model, p, 1e-6, step=1e-8, client=threaded_client,
                                                            shards=3))


@pytest.mark.parametrize("scheme, radii", [("post-ln", None), ("pre-ln", [2.0, 1.0])])
def test_distributed_unresolved_velocity_warns_once_as_one_process(threaded_client, scheme, radii):
    """Two orthogonal tokens, USA at β = 30: particles-sh's velocity error bound is 56 times their tangential
    attention and one process warns (once) that it could move a token by over a radian by t_final; the shards
    reported the same relative_velocity_error_bound and ran silently.  Now the same warning, the same numbers: the
    drift divides by the smallest speed factor of all shards (Pre-LN s = r: the second shard's, 1)."""
    import warnings
    model = mf.Model(30.0, scheme, attention="unnormalized")
    p = mf.Particles([[1.0, 0, 0], [0, 1.0, 0]], radii=radii)

    def unresolved(run):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = run()
        return out, [str(w.message) for w in caught if "spectral velocity is not resolved" in str(w.message)]
    ref, one = unresolved(lambda: mf.simulate(model, p, 0.1, backend="particles-sh", step=0.01, save_every=0.05,
                                              threads=1))
    out, many = unresolved(lambda: distributed_particles_sh(model, p, 0.1, step=0.01, save_every=0.05,
                                                            client=threaded_client, shards=2))
    assert len(one) == 1 and many == one, (one, many)
    # the bound's denominator is the computed max|P_θA| (0.507 for 0.5): summed in another order over the shards, its
    # rounding grows by e^β·ε/|P_θA| ≈ 5e-3 (measured 6e-5), and later states are the noise's
    bound = ref.diagnostics["relative_velocity_error_bound"][0]
    assert bound > 1 and out.diagnostics["relative_velocity_error_bound"][0] == pytest.approx(bound, rel=5e-3)


def test_distributed_failed_step_is_diagnosed_as_in_one_process(threaded_client):
    """A Pre-LN radius that reaches 0: the shard's diagnosis named the token by its index in its shard (token 2 for
    token 7) and evaluated dr/dt with the field of its last Runge–Kutta stage (−0.391, where one process gives the
    rate at the step's start, −0.586)."""
    rng = np.random.default_rng(0)
    x = np.tile([0, 0, 1.0], (10, 1)) + 0.5 * rng.standard_normal((10, 3))
    x[7] = [0.05, 0, -1.0]
    r = np.ones(10)
    r[7] = 0.05
    p = mf.Particles(x, radii=r, normalize=True)
    model = mf.Model(beta=0.1, scheme="pre-ln")
    ref, out = _one_and_distributed(model, p, 0.5, threaded_client, step=0.1)
    assert ref.status is out.status is mf.Status.NON_FINITE
    assert "(token 7: r = -0.00535)" in ref.detail and "dr/dt = -0.586" in ref.detail
    assert out.detail == ref.detail and np.array_equal(out.times, ref.times)


@pytest.mark.parametrize("radii", [[0.21, 0.4, 0.4, 0.2], [0.22, 0.4, 0.4, 0.2]])
def test_distributed_radii_reaching_zero_name_the_most_negative_as_one_process(threaded_client, radii):
    """Tokens 0 and 3 (one on each shard) cross 0 in the same step: one process names the most negative radius
    (token 3), the shards' merge named the first shard's (token 0, r = -0.0316 for -0.0334)."""
    m = mf.Model(beta=1.0, scheme="pre-ln", V=-np.eye(3))
    p = mf.Particles(mf.Particles.uniform(4, seed=3).positions, radii=radii)
    ref, out = _one_and_distributed(m, p, 5.0, threaded_client, step=0.1)
    assert ref.detail.startswith("A radius reached ≤ 0 at t=0.5 (token 3 (and 1 more): r = -0.03")
    assert out.status is ref.status is mf.Status.NON_FINITE and out.detail == ref.detail


def test_distributed_particles_sh_generated_tokens_and_errors(client):
    out = distributed_particles_sh(mf.Model(beta=2.0), 1001, 0.2, step=0.1, client=client, gather=False, seed=5)
    assert out.states == [None, None] and out.success
    assert abs(out.diagnostics["mean_alignment"][-1]) < 0.05      # 1001 i.i.d. uniform tokens, t = 0.2
    with pytest.raises(TypeError, match="unknown option"):
        distributed_particles_sh(mf.Model(beta=2.0), 10, 0.2, step=0.1, client=client, chunk=3)
    with pytest.raises(ValueError, match="method='rk45' chooses its own steps"):
        distributed_particles_sh(mf.Model(beta=2.0), 10, 0.2, step=0.1, client=client, method="rk45")
    with pytest.raises(ValueError, match="the implicit method='bdf' needs a dense Jacobian"):
        distributed_particles_sh(mf.Model(beta=2.0), 10, 0.2, client=client, method="bdf")
    with pytest.raises(mf.UnsupportedModelError):
        distributed_particles_sh(mf.Model(beta=2.0, d=4), 10, 0.2, step=0.1, client=client)


@pytest.fixture(scope="module")
def threaded_client():
    """A cluster whose workers are threads of this process: a test's monkeypatch reaches its shards."""
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster) as c:
        yield c


# QKV-Norm with V = diag(1, 1, 0): the poles ±e3 are its null directions, where a token has no value
_NULL_V = mf.Model(1.0, "qkv-norm", V=np.diag([1.0, 1.0, 0.0]))


def test_distributed_qkv_norm_token_on_a_null_direction_at_the_start_is_refused(client, monkeypatch):
    # the shard's NullDirectionError came out of a dask worker once the cluster had started, naming the token by
    # its index in its shard (token 1 of the second shard for token 4)
    from meanfield._attention import NullDirectionError
    from meanfield._sweep import _distributed
    x = np.array(mf.Particles.uniform(6, seed=1).positions)
    x[4] = [0.0, 0.0, 1.0]
    single = r"`V` must map every direction to a nonzero vector .*; it maps token 4 to 0\.$"
    with pytest.raises(ValueError, match=single):
        mf.simulate(_NULL_V, mf.Particles(x), 0.2, backend="particles-sh", method="rk4", step=0.1)

    def no_cluster(client, workers):
        raise AssertionError("a cluster was started before the tokens were checked")
    with monkeypatch.context() as m:
        m.setattr(_distributed, "_local_client", no_cluster)
        with pytest.raises(NullDirectionError, match=single):
            distributed_particles_sh(_NULL_V, mf.Particles(x), 0.2, step=0.1, shards=2)
    # tokens generated on the workers are checked there, before any step: V = 0 has no value anywhere, and the
    # message counts the tokens of every shard (it said "(and 4 more)", the first of two shards' five)
    with pytest.raises(ValueError, match=r"`V` must map every direction .* maps token 0 \(and 9 more\) to 0\.$"):
        distributed_particles_sh(mf.Model(1.0, "qkv-norm", V=np.zeros((3, 3))), 10, 0.2, step=0.1, client=client,
                                 shards=2)


def _to_null_once(monkeypatch, method, weight, off_sphere=False):
    """Patch ParticleStepper.``method`` so that, in each stepper once, the token of weight ``weight`` goes to the
    null direction e3 of _NULL_V: in a projected state (``_project``, the end of the first step) or in the first
    Runge–Kutta stage off the sphere (``_directions``).  No run lands there by itself; an RK stage could."""
    from meanfield.backends._stepper import ParticleStepper

    def patch(name, vouched=False):
        original = getattr(ParticleStepper, name)

        def patched(self, y, *args, **kwargs):
            out = original(self, y, *args, **kwargs)
            state = out[0] if vouched else out
            hit = np.flatnonzero(self.weights == weight)
            if not hit.size or getattr(self, "_went_null", False):
                return out
            if off_sphere and abs(np.linalg.norm(y[hit[0], :3]) - 1) < 1e-9:
                return out
            self._went_null = True
            state = np.array(state)
            state[hit[0], :3] = [0.0, 0.0, 1.0]
            return (state, False) if vouched else state
        monkeypatch.setattr(ParticleStepper, name, patched)
    patch(method)
    if method == "_project":        # one process's step loops project through _projected (which also vouches)
        patch("_projected", vouched=True)


@pytest.mark.parametrize("method, off_sphere, t_stop, saved", [
    ("_project", False, 0.1, [0.0, 0.1]),          # a step ends there: the next one cannot start
    ("_directions", True, 0.05, [0.0])])           # an RK stage of the first step is there: that step fails
def test_distributed_qkv_norm_null_direction_mid_run_stops_as_one_process(threaded_client, monkeypatch, method,
                                                                          off_sphere, t_stop, saved):
    # the shard's NullDirectionError came out of a dask worker: the run raised instead of stopping with NON_FINITE, its
    # diagnosis and its last good state (token 4 lives in the second of two shards)
    w = np.array([0.15, 0.15, 0.15, 0.15, 0.25, 0.15])
    p = mf.Particles(mf.Particles.uniform(6, seed=1).positions, w)
    _to_null_once(monkeypatch, method, 0.25, off_sphere)
    with pytest.warns(mf.MeanfieldWarning, match="stopped at t="):
        ref = mf.simulate(_NULL_V, p, 0.4, backend="particles-sh", method="rk4", step=0.1, save_every=0.2, threads=1)
    with pytest.warns(mf.MeanfieldWarning, match=f"distributed_particles_sh stopped at t={saved[-1]:g}"):
        out = distributed_particles_sh(_NULL_V, p, 0.4, step=0.1, save_every=0.2, client=threaded_client, shards=2)
    assert ref.status is out.status is mf.Status.NON_FINITE
    assert re.fullmatch(rf"The attention is undefined at t={t_stop:g}: scheme='qkv-norm' normalizes Vθ, .* maps token "
                        r"4 to 0\.", ref.detail), ref.detail
    assert out.detail == ref.detail
    assert np.array_equal(ref.times, saved) and np.array_equal(out.times, ref.times)
    assert np.array_equal(out.steps["t"], ref.steps["t"])
    assert np.max(np.abs(out.final.positions - ref.final.positions)) < 1e-12
    assert list(out.diagnostics) == list(ref.diagnostics)
    for k, v in ref.diagnostics.items():        # NaN where the attention is undefined, in both
        assert np.allclose(out.diagnostics[k], v, rtol=1e-12, atol=1e-14, equal_nan=True), k
    assert np.isnan(out.diagnostics["max_speed"][-1]) == (len(saved) > 1)


@pytest.mark.parametrize("model", [mf.Model(3.0), mf.Model(3.0, "pre-ln"), mf.Model(3.0, "mix-ln", tau=0.3),
                                   mf.Model(3.0, "angpt", alpha=0.5)], ids=lambda m: m.scheme)
def test_distributed_layer_map_equals_single_process(threaded_client, model):
    """time="layers" (the scheme's discrete layer map; anGPT has nothing else) was refused as an unknown option."""
    n = 300
    p = mf.Particles.uniform(n, seed=2, radii=np.linspace(0.5, 2.0, n))
    kw = dict(step=0.1, save_every=0.2, time="layers")
    ref = mf.simulate(model, p, 0.6, backend="particles-sh", threads=1, **kw)
    out = distributed_particles_sh(model, p, 0.6, client=threaded_client, shards=3, **kw)
    assert out.status is ref.status is mf.Status.OK and out.options == ref.options
    assert np.array_equal(out.times, ref.times) and np.array_equal(out.steps["t"], ref.steps["t"])
    assert len(out.steps["t"]) == 6
    for a, b in zip(ref.states, out.states):
        assert np.max(np.abs(a.positions - b.positions)) < 1e-12
        assert np.max(np.abs(a.radii - b.radii)) < 1e-12
    assert list(out.diagnostics) == list(ref.diagnostics)
    for k, v in ref.diagnostics.items():
        assert np.allclose(out.diagnostics[k], v, rtol=1e-12, atol=1e-14), k
    with pytest.raises(ValueError, match=r"`method` applies to time='continuous' only"):
        distributed_particles_sh(model, p, 0.6, client=threaded_client, method="rk4", **kw)
    with pytest.raises(ValueError, match=r"whole numbers of layers of step=0.07"):
        distributed_particles_sh(model, p, 0.6, client=threaded_client, **{**kw, "step": 0.07})


def _same_adaptive_run(ref, out, positions_tol=1e-12):
    """An adaptive distributed run against one process: the same accepted and rejected steps, to rounding.  The
    shards' μ̂ is summed in another order, and the error estimate h·Σ (b_j − b̂_j) k_j, a difference of stages ~ rtol
    smaller than them, carries that rounding relative to rtol: the step sizes agree to ~ε/rtol (measured 2.6e-9 to
    5.8e-7 at rtol = 1e-8, 2.5e-5 on one step at the default 1e-10), not bit for bit."""
    assert out.status is ref.status and out.options == ref.options
    np.testing.assert_allclose(out.times, ref.times, rtol=1e-3, atol=0)   # a stopped run's last time, as its steps
    assert np.array_equal(out.steps["rejected"], ref.steps["rejected"])
    np.testing.assert_allclose(out.steps["dt"], ref.steps["dt"], rtol=1e-3, atol=0)
    np.testing.assert_allclose(out.steps["error"], ref.steps["error"], rtol=1e-3, atol=0)
    # a stopped run's last state is at a time that differs as the steps do: the tokens moved by |Δt|·max_speed more
    slack = np.abs(out.times - ref.times) * np.nan_to_num(ref.diagnostics["max_speed"])
    for a, b, more in zip(ref.states, out.states, slack):
        assert np.max(np.abs(a.positions - b.positions)) < positions_tol + 2 * more
        if a.radii is not None:
            assert np.max(np.abs(a.radii - b.radii)) < positions_tol + 2 * more


@pytest.mark.parametrize("model, kw", [
    (mf.Model(4.0), {}),                                                    # rk45 by default, without `step`
    (mf.Model(4.0, "pre-ln"), dict(method="rk23", rtol=1e-8, atol=1e-10)),
    (mf.Model(4.0, "mix-ln", tau=0.25), dict(first_step=0.5, rtol=1e-8, atol=1e-10)),     # rejected first step, τ
], ids=["post-ln-rk45", "pre-ln-rk23", "mix-ln-rejections"])
def test_distributed_adaptive_steps_equal_single_process(threaded_client, model, kw):
    """distributed_particles_sh took fixed RK4 steps only (method='rk45' was refused): a user had to guess `step`
    for millions of tokens.  The embedded pairs now run over the shards with the one-process step control (the error
    norm a max over all tokens: over the shards' maxima)."""
    n = 900
    p = mf.Particles.uniform(n, seed=4, radii=np.linspace(0.5, 2.0, n) if model.scheme != "post-ln" else None)
    ref = mf.simulate(model, p, 0.6, backend="particles-sh", save_every=0.3, threads=1, **kw)
    out = distributed_particles_sh(model, p, 0.6, save_every=0.3, client=threaded_client, shards=3, **kw)
    assert ref.status is mf.Status.OK and len(ref.steps["t"]) >= 4
    _same_adaptive_run(ref, out)
    assert ref.steps["rejected"].any() == ("first_step" in kw)
    for k, v in ref.diagnostics.items():
        assert np.allclose(out.diagnostics[k], v, rtol=1e-12, atol=1e-14), k


@pytest.mark.parametrize("kw, status, match", [
    (dict(max_steps=3), mf.Status.STEP_TOO_SMALL, r"^max_steps=3 steps taken by t="),
    (dict(min_step=0.02, rtol=1e-12, atol=1e-14), mf.Status.STEP_TOO_SMALL,
     r"^Step \S+ < min_step=0\.02 at t=\S+, where the largest velocity component is \S+\.$"),
])
def test_distributed_adaptive_run_that_stops_stops_as_one_process(threaded_client, kw, status, match):
    n = 300
    p = mf.Particles.uniform(n, seed=1)
    ref, out = _one_and_distributed(mf.Model(4.0), p, 0.6, threaded_client, save_every=0.3, **kw)
    assert ref.status is status and re.search(match, ref.detail), ref.detail
    number = r"[-+]?\d+\.?\d*(?:e[-+]?\d+)?"
    assert re.sub(number, "#", out.detail) == re.sub(number, "#", ref.detail)
    # the time and the step (6 digits, 3 digits) agree as the steps do, to ~ε/rtol
    np.testing.assert_allclose([float(v) for v in re.findall(number, out.detail)],
                               [float(v) for v in re.findall(number, ref.detail)], rtol=1e-3)
    _same_adaptive_run(ref, out)


@pytest.mark.parametrize("kw", [dict(step=0.1), dict(step=0.1, time="layers")], ids=["rk4", "layers"])
def test_distributed_fixed_steps_beyond_max_steps_are_refused_up_front_as_one_process(threaded_client, kw):
    p = mf.Particles.uniform(30, seed=1)
    with pytest.raises(ValueError) as one:
        mf.simulate(mf.Model(2.0), p, 0.6, backend="particles-sh", threads=1, max_steps=4, **kw)
    with pytest.raises(ValueError) as many:
        distributed_particles_sh(mf.Model(2.0), p, 0.6, client=threaded_client, shards=2, max_steps=4, **kw)
    assert str(many.value) == str(one.value) and "(max_steps=4)" in str(one.value)


def test_distributed_adaptive_run_whose_velocity_is_undefined_stops_as_one_process(threaded_client):
    """Peri-LN with V = 0: the speed factor is 0 and the first stage NaN; one process stops NON_FINITE at t = 0 with
    the speed factor's diagnosis naming every token, and so do the shards."""
    p = mf.Particles.uniform(6, seed=1)
    m = mf.Model(1.0, "peri-ln", V=np.zeros((3, 3)))
    ref, out = _one_and_distributed(m, p, 0.4, threaded_client, save_every=0.2)
    assert ref.detail.startswith("The speed factor of scheme='peri-ln' is 0 for token 0 (and 5 more) at t=0,")
    assert out.status is ref.status is mf.Status.NON_FINITE and out.detail == ref.detail
    assert np.array_equal(out.times, ref.times) and len(out.steps["t"]) == 0


@pytest.mark.parametrize("where", ["nan", "null"])
def test_distributed_layer_map_failure_stops_as_one_process(threaded_client, monkeypatch, where):
    """A layer whose result is not finite, or that puts a token on a null direction of QKV-Norm's V (the next layer
    has no attention): status, diagnosis, saved times and last good state as in one process."""
    from meanfield.backends._stepper import ParticleStepper
    original = ParticleStepper._layer

    def patched(self, t, h):
        out = original(self, t, h)
        hit = np.flatnonzero(self.weights == 0.25)
        if hit.size and t >= 0.2 - 1e-12 and not getattr(self, "_hit", False):
            self._hit = True
            out[hit[0], :3] = np.nan if where == "nan" else [0.0, 0.0, 1.0]
        return out
    monkeypatch.setattr(ParticleStepper, "_layer", patched)
    w = np.array([0.15, 0.15, 0.15, 0.15, 0.25, 0.15])
    p = mf.Particles(mf.Particles.uniform(6, seed=1).positions, w)
    kw = dict(step=0.1, save_every=0.2, time="layers")
    with pytest.warns(mf.MeanfieldWarning, match="stopped at t="):
        ref = mf.simulate(_NULL_V, p, 0.6, backend="particles-sh", threads=1, **kw)
    with pytest.warns(mf.MeanfieldWarning, match="distributed_particles_sh stopped at t="):
        out = distributed_particles_sh(_NULL_V, p, 0.6, client=threaded_client, shards=2, **kw)
    assert ref.status is out.status is mf.Status.NON_FINITE
    expected = ("Non-finite state at t=0.3." if where == "nan" else
                r"The attention is undefined at t=0.3: .* maps token 4 to 0\.")
    assert re.fullmatch(expected, ref.detail), ref.detail
    assert out.detail == ref.detail
    assert np.array_equal(out.times, ref.times) and np.array_equal(out.steps["t"], ref.steps["t"])
    assert np.max(np.abs(out.final.positions - ref.final.positions)) < 1e-12


def test_distributed_failure_counts_the_tokens_of_every_shard(threaded_client):
    # nGPT's layer with V = 0: ‖A_j‖ = 0 for all ten tokens; one process says "token 0 (and 9 more)", the two shards
    # said "token 0 (and 4 more)" (the first shard's own tokens)
    m, p = mf.Model(1.0, "ngpt", V=np.zeros((3, 3))), mf.Particles.uniform(10, seed=1)
    kw = dict(time="layers", step=0.1)
    with pytest.warns(mf.MeanfieldWarning, match="stopped at t="):
        ref = mf.simulate(m, p, 0.2, backend="particles-sh", threads=1, **kw)
    with pytest.warns(mf.MeanfieldWarning, match="distributed_particles_sh stopped at t="):
        out = distributed_particles_sh(m, p, 0.2, client=threaded_client, shards=2, **kw)
    assert "‖A_j‖ = 0 for token 0 (and 9 more) at t=0" in ref.detail
    assert out.status is ref.status is mf.Status.NON_FINITE and out.detail == ref.detail


@pytest.mark.parametrize("where", ["speed", "origin"])
def test_distributed_failed_stage_stops_as_one_process(threaded_client, monkeypatch, where):
    # Peri-LN with V = 0 (speed factor 0: the first stage's velocity is NaN), or a Runge–Kutta stage that puts token 4
    # (second of two shards) at the origin: the shard's geometry raised ZeroVectorError ("a token's direction was
    # lost") out of the dask worker, where one process stops with NON_FINITE, its diagnosis and the last good state
    w = np.array([0.15, 0.15, 0.15, 0.15, 0.25, 0.15])
    p = mf.Particles(mf.Particles.uniform(6, seed=1).positions, w)
    m = mf.Model(1.0, "peri-ln", V=np.zeros((3, 3))) if where == "speed" else mf.Model(1.0)
    if where == "origin":
        from meanfield.backends._stepper import ParticleStepper
        original = ParticleStepper._directions

        def patched(self, y, *args, **kwargs):
            out = original(self, y, *args, **kwargs)
            hit = np.flatnonzero(self.weights == 0.25)
            if hit.size and not getattr(self, "_hit", False) and abs(np.linalg.norm(y[hit[0], :3]) - 1) > 1e-9:
                self._hit = True
                out = np.array(out)
                out[hit[0], :3] = 0.0
            return out
        monkeypatch.setattr(ParticleStepper, "_directions", patched)
    with pytest.warns(mf.MeanfieldWarning, match="stopped at t="):
        ref = mf.simulate(m, p, 0.4, backend="particles-sh", method="rk4", step=0.1, save_every=0.2, threads=1)
    with pytest.warns(mf.MeanfieldWarning, match="distributed_particles_sh stopped at t=") as caught:
        out = distributed_particles_sh(m, p, 0.4, step=0.1, save_every=0.2, client=threaded_client, shards=2)
    # (and the diagnostics of V = 0's state, max_speed 0/0, warned numpy's "invalid value encountered in divide")
    assert not [c for c in caught if issubclass(c.category, RuntimeWarning)]
    expected = ("The speed factor of scheme='peri-ln' is 0 for token 0 (and 5 more) at t=0," if where == "speed" else
                "A Runge–Kutta stage at t=0.05 sends a token to the origin")
    assert ref.detail.startswith(expected), ref.detail
    assert out.status is ref.status is mf.Status.NON_FINITE and out.detail == ref.detail
    assert np.array_equal(out.times, ref.times) and np.array_equal(out.steps["t"], ref.steps["t"])
    assert np.max(np.abs(out.final.positions - ref.final.positions)) < 1e-12


def test_vanishing_radii_of_the_shards_name_the_smallest_and_count_all():
    from meanfield._sweep._distributed import _vanishing_radii
    from meanfield.backends._stepper import _VANISHING_TAIL

    def told(j, r, more=""):
        return f" Token {j}'s radius is r = {r:.3g}, falling at dr/dt = -1: the scheme's radial law drives it to 0 " \
               f"within {r:.3g}{more}{_VANISHING_TAIL}"
    parts = [(1.0, 2e-8, told(1, 2e-8)), (1.0, 5e-9, told(7, 5e-9, " (and 2 more token(s))")), (1.0, 0.5, "")]
    assert _vanishing_radii(parts) == told(7, 5e-9, " (and 3 more token(s))")
    assert _vanishing_radii(parts[:1]) == told(1, 2e-8)
    assert _vanishing_radii([(1.0, 1e-9, ""), parts[0]]) == ""     # the smallest radius of all is not vanishing
    assert _vanishing_radii([(1.0, np.inf, ""), (1.0, np.inf, "")]) == ""      # no radius


def test_shards_detail_counts_like_diagnoses_only():
    from meanfield._sweep._distributed import _shards_detail
    speed = "The speed factor of scheme='peri-ln' is {} for token {}{} at t=0.1, so dθ/dt = P_θA/s is undefined."
    assert _shards_detail([speed.format(0, 0, ""), speed.format("nan", 5, " (and 3 more)")]) == \
        speed.format(0, 0, " (and 4 more)")
    radius = ("Token {}'s radius overflows float64 at t=0.5: r = {}, growing at dr/dt = 1e+301 by the scheme's radial "
              "law, passes 1.798e+308 within 0.1{}. A smaller step does not help.")
    assert _shards_detail([radius.format(3, 1e300, ""), radius.format(7, 2e300, " (and 2 more token(s))")]) == \
        radius.format(3, 1e300, " (and 3 more token(s))")
    # another diagnosis (or another head's matrix) is not counted; a message naming no token is kept as it is
    null = "`V` of head {} must map every direction to a nonzero vector; it maps token {} to 0."
    assert _shards_detail([null.format(0, 1), null.format(1, 6)]) == null.format(0, 1)
    assert _shards_detail([speed.format(0, 0, ""), radius.format(7, 2e300, "")]) == speed.format(0, 0, "")
    assert _shards_detail(["Non-finite state at t=0.3."] * 2) == "Non-finite state at t=0.3."


# ----------------------------------------------------------------------------------------------
# a real kill

@pytest.mark.slow
def test_killed_cli_sweep_finishes_on_rerun(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE.replace("t_final = 1.0", "t_final = 6.0") + "[sweep]\n"
                   "grid = { \"model.beta\" = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0], \"initial.seed\" = [0, 1, 2, 3] }\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "meanfield", "sweep", str(cfg), "--workers", "2", "--output", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "tasks").glob("*.json"))) < 4:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in (out / "tasks").glob("*.json")}
    assert 4 <= len(done) < 24
    assert subprocess.run(cmd).returncode == 0
    assert len(list((out / "tasks").glob("*.json"))) == 24
    assert all((out / "tasks" / k).stat().st_mtime_ns == m for k, m in done.items())
    assert len((out / "results.jsonl").read_text().splitlines()) == 24


def test_observables_agree_with_the_fallbacks():
    from types import SimpleNamespace
    rng = np.random.default_rng(7)
    x = np.repeat(rng.standard_normal((4, 3)), 6, axis=0) + 3e-3 * rng.standard_normal((24, 3))
    p = mf.Particles(x, normalize=True)
    traj = SimpleNamespace(states=[p], diagnostics={})
    assert OBSERVABLES["aligned_fraction"](traj, 0, 1e-3) == pytest.approx(aligned_fraction(p, 1e-3), abs=1e-14)
    assert OBSERVABLES["clusters"](traj, 0, 1e-3) == mf.particle_clusters(p, angle=np.arccos(1 - 1e-3)).count == 4
    assert OBSERVABLES["mean_alignment"](traj, 0, 1e-3) == mf.mean_alignment(p)


def test_the_clusters_observable_counts_clusters_of_at_least_one_percent_of_the_mass():
    """Every stray token was a cluster (a hybrid run's weighted nodes counted 491 against its density's 4 basins).
    Now particles and densities both count clusters of mass ≥ 1 %: collapsed groups (single linkage at aligned_tol)
    for particles, ascent basins for a density."""
    from types import SimpleNamespace
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((3, 3))
    grouped = np.repeat(centers, 10, axis=0) + 1e-5 * rng.standard_normal((30, 3))
    stray = rng.standard_normal((200, 3))
    w = np.r_[np.full(30, 0.9 / 30), np.full(200, 0.1 / 200)]          # each stray token 0.05 % of the mass
    p = mf.Particles(np.vstack([grouped, stray]), w, normalize=True)
    assert CLUSTER_MIN_MASS == 0.01
    assert mf.particle_clusters(p, angle=np.arccos(1 - 1e-3)).count > 150        # what was recorded (194)
    assert OBSERVABLES["clusters"](SimpleNamespace(states=[p], diagnostics={}), 0, 1e-3) == 3
    smooth = mf.Particles.uniform(2000, seed=0)                                     # no collapsed cluster
    assert OBSERVABLES["clusters"](SimpleNamespace(states=[smooth], diagnostics={}), 0, 1e-3) == 0
    rho = mf.Density.random(16, seed=1, degree=3, amplitude=1.2)
    assert OBSERVABLES["clusters"](SimpleNamespace(states=[rho], diagnostics={}), 0, 1e-3) == \
        mf.density_clusters(rho, min_mass=0.01).count


def test_collapsed_clusters_and_modes_are_the_two_meanings_of_clusters_by_name():
    """`clusters` meant collapsed groups for particles and density modes for a density, with no way to ask for
    one meaning: a sweep over both kinds of backend (or a hybrid run across its hand-off) mixed them in one column.
    `collapsed_clusters` and `modes` record one meaning each (empty where it does not apply); `clusters` is kept."""
    from types import SimpleNamespace
    assert {"collapsed_clusters", "modes", "clusters"} <= set(OBSERVABLES)
    # three orthonormal tokens (an equiangular start, ρ0 = 0): ρ(t) from the closed-form ODE decides the count
    model = mf.Model(beta=2.0)
    traj = mf.simulate(model, mf.Particles(np.eye(3)), 4.0, backend="particles", method="rk4", step=0.01,
                       save_every=0.5)
    rho, _ = mf.equiangular("post-ln", 2.0, 3, traj.times)
    expected = [1 if r >= 1 - 0.05 else 3 for r in rho]
    assert 1 in expected and 3 in expected
    for name in ("collapsed_clusters", "clusters"):
        assert [OBSERVABLES[name](traj, i, 0.05) for i in range(len(traj.times))] == expected
    assert {OBSERVABLES["modes"](traj, i, 0.05) for i in range(len(traj.times))} == {None}
    # a density with two antipodal peaks of equal mass: two modes, no collapsed group
    two = mf.Density.from_function(lambda x: np.exp(8 * x[..., 2] ** 2), 24)
    dens = SimpleNamespace(states=[two, mf.Density.uniform(8)], diagnostics={})
    assert [OBSERVABLES["modes"](dens, i, 0.05) for i in (0, 1)] == [2, 0]
    assert [OBSERVABLES["clusters"](dens, i, 0.05) for i in (0, 1)] == [2, 0]
    assert [OBSERVABLES["collapsed_clusters"](dens, i, 0.05) for i in (0, 1)] == [None, None]
    species = SimpleNamespace(states=[(two, two)], diagnostics={})
    assert {OBSERVABLES[n](species, 0, 0.05) for n in ("collapsed_clusters", "modes", "clusters")} == {None}


def test_records_keep_infinite_values_apart_from_missing_ones(tmp_path):
    from meanfield._sweep._runner import read_records, write_record
    (tmp_path / "tasks").mkdir()
    write_record(tmp_path, {"key": "k1", "energy": float("inf"), "aligned_fraction": None, "t": [0.0, float("nan")]})
    text = (tmp_path / "tasks" / "k1.json").read_text()
    json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))    # strict JSON
    back = read_records(tmp_path)["k1"]
    assert back["energy"] == float("inf") and back["aligned_fraction"] is None and np.isnan(back["t"][1])


def test_a_parameter_given_as_a_dotted_and_a_quoted_key_is_refused():
    # `model.beta` (a table) and "model.beta" (one key) name one parameter: one of the two was dropped silently
    with pytest.raises(ConfigError, match=r"gives the parameter 'model.beta' twice"):
        _spec(BASE + '[sweep.grid]\nmodel.beta = [1.0]\n"model.beta" = [2.0]\n')


def test_a_table_valued_option_can_be_a_parameter_of_a_set_as_of_a_grid():
    # `sets = [{ "options.particle_options" = { rtol = 1e-6 } }]` was split into 'options.particle_options.rtol' and
    # refused ("must be \"table.key\""), while the same tables as a grid's list were accepted
    base = BASE.replace('backend = "particles"', 'backend = "hybrid"').replace(
        'kind = "particles"\nn = 12\nseed = 0', 'kind = "random"\nlmax = 12').replace("step = 0.1\nthreads = 1\n", "")
    tables = [{"rtol": 1e-6}, {"rtol": 1e-8, "method": "rk23"}]
    by_grid = _spec(base + '[sweep]\ngrid = { "options.particle_options" = [{ rtol = 1e-6 }, '
                           '{ rtol = 1e-8, method = "rk23" }] }\n')
    for sets in ('[{ "options.particle_options" = { rtol = 1e-6 } }, '
                 '{ "options.particle_options" = { rtol = 1e-8, method = "rk23" } }]',
                 '[{ options.particle_options = { rtol = 1e-6 } }, '           # dotted keys: nested tables
                 '{ options = { particle_options = { rtol = 1e-8, method = "rk23" } } }]'):
        spec = _spec(base + f"[sweep]\nsets = {sets}\n")
        assert [t.params for t in spec.tasks] == [{"options.particle_options": p} for p in tables]
        assert [t.config["options"]["particle_options"] for t in spec.tasks] == tables
        assert [t.key for t in spec.tasks] == [t.key for t in by_grid.tasks]
    with pytest.raises(ConfigError, match=r"unknown sweep parameter 'model.bta'"):     # names are still checked
        _spec(base + "[sweep]\nsets = [{ model = { bta = 1.0 } }]\n")


def test_the_output_folder_cannot_be_a_file(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE + '[sweep]\ngrid = { "model.beta" = [1.0] }\n')
    (tmp_path / "afile").write_text("")
    assert cli.main(["sweep", str(cfg), "--workers", "1", "--output", str(tmp_path / "afile" / "out"), "--quiet"]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (a folder nothing can be created in)")
def test_an_output_folder_that_cannot_be_written_is_refused_naming_it(tmp_path, capsys):
    # the error was a bare "[Errno 2] No such file or directory: '/proc/self/out'", naming neither --output nor why
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE + '[sweep]\ngrid = { "model.beta" = [1.0] }\n')
    assert cli.main(["sweep", str(cfg), "--serial", "--output", "/proc/self/out", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--output '/proc/self/out': cannot create the sweep's folder or write in it" in err, err
    assert "Traceback" not in err


def test_run_sweep_refuses_an_output_folder_that_is_a_file_or_cannot_be_written_naming_it(tmp_path):
    """The command line checked --output, run_sweep did not: "[Errno 20] Not a directory: '…/afile/tasks'",
    "[Errno 2] No such file or directory: '/proc/self/x'", naming neither `out_dir` nor why."""
    spec = _spec(BASE + '[sweep]\ngrid = { "model.beta" = [1.0] }\n')
    (tmp_path / "afile").write_text("")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        with pytest.raises(ValueError, match=r"`out_dir` is the sweep's folder .*afile' is a file"):
            run_sweep(spec, out, serial=True, progress=False)
    if os.path.isdir("/proc/self"):
        with pytest.raises(ValueError, match=r"`out_dir` '/proc/self/x': cannot create the sweep's folder"):
            run_sweep(spec, "/proc/self/x", serial=True, progress=False)


def test_a_file_no_sweep_wrote_is_refused_before_any_task_runs(tmp_path, capsys):
    """A results.csv of the --output folder that no sweep wrote (a user's own) was replaced after every task had
    run; with `table = ["csv"]` a results.jsonl was deleted; a sweep.toml was replaced by the sweep's copy."""
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE + '[sweep]\ngrid = { "model.beta" = [1.0, 2.0] }\ntable = ["csv"]\n')
    out = tmp_path / "out"
    out.mkdir()
    args = ["sweep", str(cfg), "--serial", "--quiet", "--output", str(out)]
    for name, text in [("results.csv", "run,energy\n1,0.5\n"), ("results.jsonl", '{"energy": 0.5}\n'),
                       ("sweep.toml", "# another sweep\n"), ("results.csv", "key,status\nabc,OK\n")]:
        (out / name).write_text(text)
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert f"error: {str(out / name)!r} exists" in err and "Move the file away, or give another" in err
        assert (out / name).read_text() == text and sorted(p.name for p in out.iterdir()) == [name]   # nothing ran
        (out / name).unlink()
    # the sweep's own table is rebuilt from the records: a rerun, another sweep and a rerun that redoes a task whose
    # record was deleted replace it
    assert cli.main(args) == 0
    assert cli.main(args) == 0 and len((out / "results.csv").read_text().splitlines()) == 3
    next(iter((out / "tasks").glob("*.json"))).unlink()
    assert cli.main(args) == 0 and len(list((out / "tasks").glob("*.json"))) == 2
    other = tmp_path / "other.toml"
    other.write_text(BASE + '[sweep]\ngrid = { "model.beta" = [3.0] }\n')
    assert cli.main(["sweep", str(other), "--serial", "--quiet", "--output", str(out)]) == 0
    assert (out / "sweep.toml").read_text() == other.read_text()
    assert len((out / "results.jsonl").read_text().splitlines()) == 1
    # the same, from Python (a sweep given as a dict writes sweep.json)
    import tomllib
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "sweep.json").write_text("{}")
    with pytest.raises(FileExistsError, match="sweep.json' exists, is not this sweep's file"):
        run_sweep(parse_sweep(tomllib.loads(other.read_text())), fresh, serial=True, progress=False)


def test_every_task_is_checked_before_any_runs(tmp_path, capsys):
    """An option the backend does not take, a scheme typo or a seed of the wrong type stopped only the tasks
    that had it, as ERROR rows after the cluster started; now the sweep stops up front (exit 2), as `run` does."""
    for grid, match in [('"options.tl" = [1e-3]', "task {'options.tl': 0.001}: [options] unknown option(s) ['tl']"),
                        ('"model.scheme" = ["postln"]', "task {'model.scheme': 'postln'}: [model] `scheme` must be one of"),
                        ('"initial.seed" = [1.5]', "task {'initial.seed': 1.5}: [initial] `seed`")]:
        with pytest.raises(ConfigError, match=re.escape(match)):
            _spec(BASE + f"[sweep]\ngrid = {{ {grid} }}\n")
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE + '[sweep]\ngrid = { "options.tl" = [1e-3] }\n')
    assert cli.main(["sweep", str(cfg), "--output", str(tmp_path / "out"), "--quiet"]) == 2
    assert not (tmp_path / "out").exists()
    # the wrong kind of file: named, with what to do
    assert cli.main(["run", str(cfg), "--output", str(tmp_path / "r.h5"), "--quiet"]) == 2
    assert "this is a sweep file (it has a [sweep] table): run it with `meanfield sweep" in capsys.readouterr().err
    binary = tmp_path / "r.h5"
    binary.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_sweep(binary)


def test_a_partial_sweep_says_so_and_a_second_sweep_cannot_share_the_folder(tmp_path):
    spec = _spec()
    part = run_sweep(spec, tmp_path / "out", serial=True, progress=False, max_tasks=2)
    assert (part.tasks, len(part.rows), part.missing, part.not_ok) == (6, 2, 4, 0)
    assert not part.success and "missing=4" in repr(part)       # it read success=True with 4 tasks not run
    # a sweep file's path is accepted; the lock of a live sweep refuses a second one, a dead one's is taken over
    lock = tmp_path / "out" / ".lock"
    import socket
    lock.write_text(f"{socket.gethostname()} {os.getppid()}")              # a live process of this host
    with pytest.raises(mf.MeanfieldError, match="another sweep is running in"):
        run_sweep(spec, tmp_path / "out", serial=True, progress=False)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(f"{socket.gethostname()} {dead.stdout.strip()}")
    f = tmp_path / "s.toml"
    f.write_text(SWEEP.replace("at = \"saved\"", "at = \"saved\"\ntable = [\"csv\"]"))
    full = run_sweep(str(f), tmp_path / "out", serial=True, progress=False)
    assert (full.tasks, full.missing, full.not_ok) == (6, 0, 0) and not lock.exists()   # the file's step = 0.3 tasks
    # the table this sweep does not ask for is gone (it held the earlier rows, stale)
    assert (tmp_path / "out" / "results.csv").exists() and not (tmp_path / "out" / "results.jsonl").exists()


def test_info_on_a_sweep_folder_says_what_it_is(tmp_path, capsys):
    """`meanfield info DIR` and `plot DIR/results.jsonl` said "not a readable HDF5 file (truncated or corrupted?)".
    (`meanfield info DIR` of the folder itself now summarizes it: tests/test_cli.py.)"""
    out = tmp_path / "out"
    run_sweep(_spec(BASE + '[sweep]\ngrid = { "model.beta" = [1.0] }\n'), out, serial=True, progress=False)
    record = next((out / "tasks").glob("*.json"))       # the record folder and a record: "truncated or corrupted?"
    for args in (["plot", str(out / "results.jsonl"), "--output", str(tmp_path / "p.png")],
                 ["info", str(out / "tasks")], ["info", str(record)]):
        assert cli.main(args) == 2
        assert "is the output of a sweep (`meanfield sweep`), not a run's result file" in capsys.readouterr().err


def test_the_output_folder_describes_itself(tmp_path):
    """Each record holds its resolved run configuration and the version; a sweep given as a dict writes
    sweep.json (it wrote no sweep file at all, so the fixed settings were lost)."""
    import tomllib
    spec = parse_sweep(tomllib.loads(BASE + '[sweep]\ngrid = { "model.beta" = [1.0, 2.0] }\n'))     # no text
    run_sweep(spec, tmp_path / "out", serial=True, progress=False)
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "out" / "tasks").glob("*.json"))]
    assert sorted(r["config"]["model"]["beta"] for r in records) == [1.0, 2.0]
    assert all(r["meanfield"] == mf.__version__ and r["config"]["options"]["step"] == 0.1 for r in records)
    saved = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert saved["sweep"]["grid"] == {"model.beta": [1.0, 2.0]} and saved["initial"]["n"] == 12
    assert not (tmp_path / "out" / "sweep.toml").exists()


def test_the_stored_sweep_file_loads_back_to_the_same_tasks_in_the_same_order(tmp_path, capsys):
    """load_sweep read DIR/sweep.json (the copy of a sweep given as a dict) as TOML ("not valid TOML: Invalid
    statement"), and the copy had sorted keys: its grid {"model.beta", "initial.seed"} came back as
    {"initial.seed", "model.beta"}, so a rerun from it ordered the tasks and the columns otherwise."""
    import tomllib
    text = BASE + ('[sweep]\nsets = [{ "model.scheme" = "post-ln" }, { "model.scheme" = "pre-ln" }]\n'
                   '[sweep.grid]\n"model.beta" = [2.0, 1.0]\n"initial.seed" = [1, 0]\n')
    for name, spec in (("toml", parse_sweep(tomllib.loads(text), text)), ("json", parse_sweep(tomllib.loads(text)))):
        out = tmp_path / name
        first = run_sweep(spec, out, serial=True, progress=False)
        again = load_sweep(out / f"sweep.{name}")
        assert [(t.key, t.params) for t in again.tasks] == [(t.key, t.params) for t in spec.tasks]
        assert list(again.tasks[0].params) == ["model.scheme", "model.beta", "initial.seed"]
        assert again.record == spec.record and again.table == spec.table
        assert run_sweep(again, out, serial=True, progress=False).skipped == 8 and first.ran == 8
    assert cli.main(["sweep", str(tmp_path / "json" / "sweep.json"), "--serial", "--quiet",
                     "--output", str(tmp_path / "json")]) == 0
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"bad.json' must hold a JSON object"):
        load_sweep(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match=r"bad.json' is not valid JSON"):
        load_sweep(tmp_path / "bad.json")


def test_sweep_help_says_what_quiet_leaves_out(capsys):
    # `--quiet` also drops the summary and the list of failed tasks (sweeps.md); the help said only "no progress bar"
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    assert "no progress bar and no summary" in " ".join(capsys.readouterr().out.split())


def test_cli_serial_runs_without_a_cluster(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE + '[sweep]\ngrid = { "model.beta" = [1.0, 2.0] }\n')
    assert cli.main(["sweep", str(cfg), "--serial", "--output", str(tmp_path / "out")]) == 0
    assert "2 tasks: 2 run, 0 already done; OK 2" in capsys.readouterr().out
    assert cli.main(["sweep", str(cfg), "--serial", "--workers", "2", "--output", str(tmp_path / "o2")]) == 2
    assert "`--serial` runs the tasks in this process" in capsys.readouterr().err


def test_locks_left_behind_are_taken_over_and_odd_ones_do_not_crash(tmp_path, capsys):
    """An empty lock (its writer died before writing), a lock naming this very process (a reused pid) or an
    unparsable pid: taken over (an empty one once it is a few seconds old), never a traceback."""
    import socket
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE + '[sweep]\ngrid = { "model.beta" = [1.0] }\n')
    out = tmp_path / "out"
    (out / "tasks").mkdir(parents=True)
    lock = out / ".lock"
    args = ["sweep", str(cfg), "--serial", "--quiet", "--output", str(out)]
    lock.write_text("")
    assert cli.main(args) == 2 and "another sweep is running" in capsys.readouterr().err    # fresh: maybe being written
    os.utime(lock, (time.time() - 60, time.time() - 60))
    for text in (None, f"{socket.gethostname()} {os.getpid()}", f"{socket.gethostname()} 99999999999999999999"):
        if text is not None:
            lock.write_text(text)
        assert cli.main(args) == 0 and not lock.exists()
    assert cli.main(["info", str(out / "sweep.toml")]) == 2
    assert "is the output of a sweep" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# bad values and arguments: refused before any task runs, before a cluster starts

def test_option_values_of_every_task_are_checked_before_any_runs(tmp_path, capsys):
    """`"options.rtol" = [1e-6, 0.0]` ran task 1 and recorded task 2 as an ERROR row; _check_task promises refusal
    up front."""
    text = BASE.replace("step = 0.1\n", "") + '[sweep]\ngrid = { "options.rtol" = [1e-6, 0.0] }\n'
    with pytest.raises(ConfigError, match=re.escape("task {'options.rtol': 0.0}: [options] `rtol` must be in [1e-14, 1)")):
        _spec(text)
    for grid, match in [('"options.step" = [0.1, 1e-300]', "task {'options.step': 1e-300}: [options] `step` must be ≥"),
                        ('"initial.kind" = [["particles"]]', "[initial] `kind` must be one of"),
                        ('"model.attention" = [["softmax"]]', "`attention` must be one of"),
                        ('"run.backend" = ["particles-sh"], "model.d" = [4]', "backend='particles-sh'")]:
        with pytest.raises(ConfigError, match=re.escape(match)):
            _spec(BASE + f"[sweep]\ngrid = {{ {grid} }}\n")
    cfg = tmp_path / "s.toml"
    cfg.write_text(text)
    assert cli.main(["sweep", str(cfg), "--serial", "--output", str(tmp_path / "out"), "--quiet"]) == 2
    assert "`rtol` must be in [1e-14, 1)" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(workers=0), ValueError, r"`workers` must be an integer >= 1; got workers=0"),
    (dict(workers=1.5), TypeError, r"`workers` must be an integer >= 1"),
    (dict(threads=0), ValueError, r"`threads` must be an integer >= 1; got threads=0"),
    (dict(threads="a"), TypeError, r"`threads` must be an integer >= 1; got threads='a'"),
    (dict(max_tasks=-1), ValueError, r"`max_tasks` must be an integer >= 0; got max_tasks=-1"),
    (dict(max_tasks="a"), TypeError, r"`max_tasks` must be an integer >= 0; got max_tasks='a'"),
    (dict(serial="no"), TypeError, r"`serial` must be True or False; got serial='no'"),     # ran serially
    (dict(progress="no"), TypeError, r"`progress` must be True or False; got progress='no'"),
])
def test_run_sweep_arguments_are_checked_before_any_work(tmp_path, kwargs, error, match):
    """workers=0 silently used all the cores (`workers or _usable_cores()`); threads and max_tasks were not checked."""
    spec = _spec(BASE + '[sweep]\ngrid = { "model.beta" = [1.0] }\n')
    with pytest.raises(error, match=match):
        run_sweep(spec, tmp_path / "out", **{"progress": False, **kwargs})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(stats="x"), TypeError, r"`stats` must be a dict .*got stats='x'"),
    (dict(shards=0), ValueError, r"`shards` must be an integer >= 1; got shards=0"),
    (dict(shards=11), ValueError, r"`shards` must be in \[1, 10\] \(the token count\); got shards=11"),
    (dict(shards="2"), TypeError, r"`shards` must be an integer"),
    (dict(seed="x"), TypeError, r"`seed` must be an integer >= 0; got seed='x'"),
    (dict(seed=-1), ValueError, r"`seed` must be an integer >= 0; got seed=-1"),
    (dict(workers=0), ValueError, r"`workers` must be an integer >= 1; got workers=0"),
    (dict(gather="no"), TypeError, r"`gather` must be True or False"),
    (dict(progress="no"), TypeError, r"`progress` must be True or False"),
    (dict(step=1e-300), ValueError, r"`step` must be ≥ .*got step=1e-300.*: raise `step`\.$"),
    (dict(save_every=1e-300), ValueError, r"`save_every` must be ≥"),
])
def test_distributed_arguments_are_checked_before_a_cluster_starts(monkeypatch, kwargs, error, match):
    """stats='x' failed after the run; shards and seed were checked only once the local cluster had started."""
    from meanfield._sweep import _distributed

    def no_cluster(client, workers):
        raise AssertionError("a cluster was started before the arguments were checked")
    monkeypatch.setattr(_distributed, "_local_client", no_cluster)
    with pytest.raises(error, match=match):
        distributed_particles_sh(mf.Model(beta=2.0), 10, 0.2, **{"step": 0.1, **kwargs})


def test_a_client_that_is_not_a_running_client_is_refused_before_any_work(tmp_path):
    """A closed client failed in distributed_particles_sh with "KeyError: 'workers'"; an address given as `client`
    with "'str' object has no attribute 'scheduler_info'" (and, in run_sweep, '... no attribute submit' after the
    sweep file had been written into the output folder)."""
    from distributed import Client, LocalCluster
    spec = _spec(BASE + '[sweep]\ngrid = { "model.beta" = [1.0] }\n')
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                      silence_logs=40) as cluster:
        closed = Client(cluster)
        closed.close()
        for bad, error, match in ((closed, ValueError, r"`client` must be a running distributed.Client; got one "
                                                       r"whose status is 'closed'"),
                                  ("tcp://127.0.0.1:8786", TypeError, r"`client` must be a distributed.Client \(an "
                                                                      r"address goes to `scheduler=`\); got str")):
            with pytest.raises(error, match=match):
                distributed_particles_sh(mf.Model(beta=2.0), 10, 0.2, step=0.1, client=bad)
            with pytest.raises(error, match=match):
                run_sweep(spec, tmp_path / "out", client=bad, progress=False)
            assert not (tmp_path / "out").exists()


def test_a_worker_lost_during_a_distributed_run_is_a_connection_error_that_says_so(monkeypatch):
    """A worker killed during the run surfaced as dask's bare "OSError: Unable to contact Actor's worker" (or
    "RuntimeError: Worker holding Actor was lost"), without the run, the time or what to do."""
    from distributed import Client, LocalCluster
    from meanfield._sweep import _distributed
    advance = _distributed._Driver._advance
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=50) as cluster, Client(cluster) as c:
        victim = sorted(c.run(os.getpid).items())[1][1]

        def kill_then_advance(self, a, b, stepper):
            if a >= 0.2:          # after two saved states
                os.kill(victim, signal.SIGKILL)
            return advance(self, a, b, stepper)
        monkeypatch.setattr(_distributed._Driver, "_advance", kill_then_advance)
        with pytest.raises(ConnectionError, match=r"lost a worker holding a shard of the tokens at t=0\.2 \(.*\): "
                                                  r"dask actors are not resilient .*; rerun it"):
            distributed_particles_sh(mf.Model(beta=2.0), 200, 0.5, step=0.1, save_every=0.1, client=c)


def test_a_token_count_beyond_memory_is_refused_before_any_work(client, monkeypatch):
    """distributed_particles_sh(model, 10**15, …) started a local cluster, and then each shard failed to allocate
    its tokens (numpy's MemoryError from a worker); on a given cluster the shards were submitted unchecked."""
    from meanfield._sweep import _distributed
    model = mf.Model(beta=2.0)

    def no_cluster(client, workers):
        raise AssertionError("a cluster was started before the memory was checked")
    with monkeypatch.context() as m:
        m.setattr(_distributed, "_local_client", no_cluster)
        for gather, advice in [(True, "lower `particles` (the token count), pass gather=False, or pass client="),
                               (False, "lower `particles` (the token count), or pass client=")]:
            with pytest.raises(mf.InsufficientMemoryError, match=re.escape("distributed_particles_sh with particles="
                               "1000000000000000 tokens on a local cluster (about 560 bytes per token")) as info:
                distributed_particles_sh(model, 10**15, 0.2, step=0.1, gather=gather)
            assert str(info.value).endswith(advice + " a cluster with more memory.")
    # a given cluster: each worker's shards against its memory limit, the gathered states against this process's
    # memory; InsufficientMemoryError, not the MemoryError of a shard that tried
    with pytest.raises(mf.InsufficientMemoryError, match=r"particles=10000000000000 tokens in 2 shards needs about "
                       r"[\d.]+ GiB on worker tcp://[\d.:]+ \(about 560 bytes per token\) but its memory limit is"):
        distributed_particles_sh(model, 10**13, 0.2, step=0.1, client=client, gather=False)
    with pytest.raises(mf.InsufficientMemoryError, match=r"gathering particles=10000000000000 tokens at 3 saved times"):
        distributed_particles_sh(model, 10**13, 0.2, step=0.1, save_every=0.1, client=client)


def test_a_sweep_task_with_a_token_count_beyond_memory_is_refused_up_front(tmp_path, capsys):
    """Every task's initial measure is checked (and its memory with it) when the sweep file is read: refused before
    a cluster starts, named by the task's parameters."""
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE + '[sweep]\ngrid = { "run.backend" = ["particles-sh"], "initial.n" = [12, 10000000000000'
                          '00] }\n')
    assert cli.main(["sweep", str(cfg), "--workers", "1", "--output", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "task {'run.backend': 'particles-sh', 'initial.n': 1000000000000000}: [initial] n=1000000000000000 " \
           "tokens needs about" in err and "lower `n`" in err
    assert not (tmp_path / "out").exists()


def test_an_interrupted_task_is_not_recorded_and_stops_a_serial_sweep(tmp_path, monkeypatch):
    """simulate() turns a Ctrl-C / SIGTERM into status INTERRUPTED: the task was recorded as finished (never run
    again) and a serial sweep went on, every later task "interrupted" in turn (the flag stays set)."""
    from meanfield._simulate import STOP_REQUESTED
    from meanfield._sweep import _runner
    spec = _spec(BASE + '[sweep]\ngrid = { "initial.seed" = [0, 1, 2, 3] }\nhdf5 = true\n')
    real, calls = _runner._simulate, []

    def interrupt_the_second(cfg):
        calls.append(cfg.seed)
        if len(calls) == 2:
            STOP_REQUESTED.set()          # what the command line's SIGINT / SIGTERM handler sets
        return real(cfg)
    monkeypatch.setattr(_runner, "_simulate", interrupt_the_second)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(spec, tmp_path, serial=True, progress=False)
    finally:
        STOP_REQUESTED.clear()
    assert calls == [0, 1]
    assert [json.loads(p.read_text())["params"] for p in (tmp_path / "tasks").glob("*.json")] == [{"initial.seed": 0}]
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 1
    # nor a trajectory file: the interrupted task's runs/<key>.h5 was left without a record or a row
    assert [p.stem for p in (tmp_path / "runs").glob("*.h5")] == [p.stem for p in (tmp_path / "tasks").glob("*.json")]
    again = run_sweep(spec, tmp_path, serial=True, progress=False)
    assert (again.ran, again.skipped, again.missing) == (3, 1, 0) and again.success


def test_a_sweep_with_too_many_tasks_is_refused_before_expanding_it(monkeypatch):
    """Each task is checked and held in memory before any runs: a grid of 10⁸ points hung for hours, then ran out
    of memory.  The count is the product of the list lengths, known before a single task is built."""
    from meanfield._sweep import _spec as spec_module
    monkeypatch.setattr(spec_module, "MAX_TASKS", 5)
    with pytest.raises(ConfigError, match=re.escape("[sweep] has 6 tasks (3 options.step × 2 initial.seed); "
                                                    "at most 5 tasks per sweep file")):
        _spec(SWEEP)
    monkeypatch.undo()
    assert len(_spec(SWEEP).tasks) == 6
    t0 = time.perf_counter()
    big = BASE + '[sweep]\nsets = [{ "run.backend" = "particles" }, { "run.backend" = "particles-sh" }]\n' \
                 f'grid = {{ "initial.seed" = {list(range(10_000))}, "model.beta" = {[1.0 + i for i in range(10_000)]} }}\n'
    with pytest.raises(ConfigError, match=r"has 200000000 tasks \(2 sets × 10000 initial.seed × 10000 model.beta\)"):
        _spec(big)
    assert time.perf_counter() - t0 < 5


def test_hdf5_files_go_to_the_output_folder_whatever_the_workers_directory(client, tmp_path, monkeypatch):
    """With --scheduler the workers run in their own working directory: a relative --output sent as is put the
    per-task HDF5 files in that directory's `out/runs`, not beside the table that names them."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    before = client.run(os.getcwd)
    client.run(os.chdir, str(elsewhere))
    monkeypatch.chdir(here)
    try:
        res = run_sweep(_spec(BASE + '[sweep]\ngrid = { "model.beta" = [1.0, 2.0] }\nhdf5 = true\n'), "out",
                        client=client, progress=False)
    finally:
        for worker, cwd in before.items():
            client.run(os.chdir, cwd, workers=[worker])
    assert res.success
    for r in res.rows:
        assert (here / "out" / r["hdf5"]).is_file()
    assert not (elsewhere / "out").exists()


def test_a_parameter_a_set_does_not_name_shows_the_value_the_task_ran_with(tmp_path):
    """A column was empty (null) for a task whose set does not name the parameter, though it ran with the base's
    value: filtering the table on β = 1 left such rows out.  Empty stays for a value neither sets (a default)."""
    text = BASE + '[sweep]\nsets = [{ "model.beta" = 3.0 }, { "run.backend" = "particles-sh", "options.tol" = 1e-8 }]\n'
    res = run_sweep(_spec(text), tmp_path, serial=True, progress=False)
    assert [(r["model.beta"], r["run.backend"], r["options.tol"]) for r in res.rows] == \
        [(3.0, "particles", None), (1.0, "particles-sh", 1e-8)]
    csv_rows = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_rows[0].startswith("key,model.beta,run.backend,options.tol,status")
    assert csv_rows[1].split(",")[1:4] == ["3.0", "particles", ""] and csv_rows[2].split(",")[1:4] == ["1.0", "particles-sh", "1e-08"]


def test_local_workers_leave_ctrl_c_to_the_sweep():
    """A Ctrl-C reaches the whole process group: each local worker died with a page of tracebacks before the
    sweep's "interrupted" line.  The workers start with SIGINT blocked; this process keeps its handler, unblocked."""
    from meanfield._sweep._distributed import _local_client
    from meanfield._sweep._runner import CONNECT_TIMEOUT, _client
    mine = signal.getsignal(signal.SIGINT)
    for start in (lambda: _client(None, 1, (None, CONNECT_TIMEOUT)), lambda: _local_client(None, 1)):
        with start() as c:      # a sweep's cluster, a distributed particles-sh run's
            assert signal.getsignal(signal.SIGINT) is mine
            assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
            blocked = lambda: signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])     # noqa: E731
            assert list(c.run(blocked).values()) == [True] and c.submit(blocked, pure=False).result()


def test_a_ctrl_c_while_the_local_workers_start_stops_the_sweep(tmp_path):
    """The workers were started with SIGINT ignored in the whole process, so a Ctrl-C pressed during the seconds they
    take to start was dropped and the sweep ran on.  Now it stops: the one-line message, exit status 130, no traceback,
    no process left behind."""
    psutil = pytest.importorskip("psutil")
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE + '[sweep]\ngrid = { "model.beta" = [1.0, 2.0] }\n')
    cmd = [sys.executable, "-m", "meanfield", "sweep", str(cfg), "--workers", "2", "--output", str(tmp_path / "out"),
           "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not _starting_worker(psutil, proc.pid):
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()[1]
    os.killpg(proc.pid, signal.SIGINT)         # what the terminal does: the whole group, workers included
    t0 = time.time()
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130 and time.time() - t0 < 60, err
    assert "meanfield sweep: interrupted; the finished tasks are recorded in" in err and "Traceback" not in err, err
    while time.time() < deadline and _session(psutil, proc.pid):
        time.sleep(0.1)
    assert not _session(psutil, proc.pid)


def _starting_worker(psutil, pid) -> bool:
    """Whether a worker process of ``pid`` has been spawned (multiprocessing's spawn_main: it is still starting)."""
    try:
        return any("spawn_main" in " ".join(c.cmdline()) for c in psutil.Process(pid).children())
    except psutil.Error:
        return False


def _session(psutil, sid) -> list:
    """The processes left in the session ``sid``."""
    left = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                left.append(p)
        except (OSError, psutil.Error):
            pass
    return left


def test_tasks_finished_when_a_dask_sweep_is_interrupted_are_recorded(client, tmp_path, monkeypatch):
    """A Ctrl-C while finished tasks waited to be handed over: their runs/<key>.h5 were written (status OK) but
    they got no record, and a rerun computed them again."""
    import distributed

    def ctrl_c_after_the_first(futures):
        distributed.wait(list(futures))          # every task done, one handed over, then the Ctrl-C
        yield next(iter(futures))
        raise KeyboardInterrupt
    monkeypatch.setattr(distributed, "as_completed", ctrl_c_after_the_first)
    spec = _spec(BASE + '[sweep]\ngrid = { "initial.seed" = [0, 1, 2] }\nhdf5 = true\n')
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path, client=client, progress=False)
    recorded = sorted(p.stem for p in (tmp_path / "tasks").glob("*.json"))
    assert recorded == sorted(t.key for t in spec.tasks) == sorted(p.stem for p in (tmp_path / "runs").glob("*.h5"))
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 3
    monkeypatch.undo()
    again = run_sweep(spec, tmp_path, client=client, progress=False)
    assert (again.ran, again.skipped) == (0, 3) and again.success


def test_a_hybrid_runs_pair_observables_count_the_self_pairs_of_its_nodes():
    """After the hand-off a hybrid run's particles are weighted nodes standing for its density: the observables
    follow the density's double integral (self-pairs included), as the run's own diagnostic does; they had left
    the self-pairs out (0.0438 against the spectral run's 0.0349 on S¹)."""
    from types import SimpleNamespace
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 3))
    w = rng.uniform(0.5, 1.5, 40)
    p = mf.Particles(x, w, normalize=True)
    hybrid, tokens = SimpleNamespace(states=[p], backend="hybrid"), SimpleNamespace(states=[p], backend="particles")
    m = p.weights @ p.positions
    assert OBSERVABLES["mean_alignment"](hybrid, 0, 1e-3) == pytest.approx(m @ m, rel=1e-14)
    assert OBSERVABLES["mean_alignment"](tokens, 0, 1e-3) == pytest.approx(mf.mean_alignment(p), rel=1e-14)
    # the aligned fraction by a direct double sum over all pairs, i = j included
    cos = p.positions @ p.positions.T
    direct = float(p.weights @ (cos >= 1 - 0.3) @ p.weights)
    assert OBSERVABLES["aligned_fraction"](hybrid, 0, 0.3) == pytest.approx(direct, rel=1e-12)
    assert OBSERVABLES["aligned_fraction"](tokens, 0, 0.3) < direct


def test_a_hybrid_runs_mean_alignment_observable_is_its_diagnostic_across_the_hand_off():
    rho = mf.Density.random(24, d=2, seed=2, amplitude=0.4, degree=2)          # hands off at t ≈ 2.8 (146 nodes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        traj = mf.simulate(mf.Model(8.0, d=2), rho, 6.0, save_every=0.5, backend="hybrid")
    assert 0.5 < traj.run_info["handoff"]["t"] < 5.5
    values = [OBSERVABLES["mean_alignment"](traj, i, 1e-3) for i in range(len(traj.times))]
    assert np.allclose(values, traj.diagnostics["mean_alignment"], rtol=1e-12, atol=1e-15)


def test_each_record_says_how_its_observables_were_recorded(tmp_path):
    """A rerun with another aligned_tol into the same folder left the records of both in tasks/, and nothing in a
    record told which δ its aligned_fraction was counted with (sweep.toml holds only the last sweep's)."""
    text = (BASE + '[sweep]\nobservables = ["aligned_fraction"]\naligned_tol = {tol}\n'
            'grid = {{ "model.beta" = [1.0] }}\n')
    for tol in (1e-3, 0.5):
        run_sweep(_spec(text.format(tol=tol)), tmp_path, serial=True, progress=False)
    records = [json.loads(p.read_text()) for p in (tmp_path / "tasks").glob("*.json")]
    assert sorted(r["recording"]["aligned_tol"] for r in records) == [1e-3, 0.5]
    assert all(r["recording"] == {"observables": ["aligned_fraction"], "at": "final", "hdf5": False,
                                  "aligned_tol": r["recording"]["aligned_tol"]} for r in records)


@pytest.mark.parametrize("kwargs, given", [
    (dict(serial=True, workers=2), "`workers`, `serial=True`"),
    (dict(scheduler="tcp://127.0.0.1:1", workers=2), "`scheduler`, `workers`"),
    (dict(serial=True, scheduler="tcp://127.0.0.1:1"), "`scheduler`, `serial=True`"),
])
def test_run_sweep_refuses_two_places_to_run_as_the_command_line_does(tmp_path, kwargs, given):
    """workers= with a client or a scheduler, and serial=True with either, were ignored without a word (the
    command line refuses `--workers` with `--scheduler` or `--serial`)."""
    spec = _spec(BASE + '[sweep]\ngrid = { "model.beta" = [1.0] }\n')
    with pytest.raises(ValueError, match=f"give one of `client` .*; got {re.escape(given)}\\.$"):
        run_sweep(spec, tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_run_sweep_refuses_workers_with_a_client(threaded_client, tmp_path):
    spec = _spec(BASE + '[sweep]\ngrid = { "model.beta" = [1.0] }\n')
    for kwargs in (dict(workers=7), dict(serial=True)):
        with pytest.raises(ValueError, match="give one of `client`"):
            run_sweep(spec, tmp_path / "out", client=threaded_client, progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_the_summary_says_how_many_failures_it_does_not_list(tmp_path, capsys):
    """The summary listed the first ten tasks that were not OK and said nothing of the others."""
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE.replace("step = 0.1", "max_steps = 1") + '[sweep]\ngrid = { "initial.seed" = '
                   + str(list(range(12))) + ' }\n')
    assert cli.main(["sweep", str(cfg), "--serial", "--output", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "12 tasks: 12 run, 0 already done; STEP_TOO_SMALL 12" in captured.out
    err = captured.err.splitlines()
    assert sum(line.startswith("  STEP_TOO_SMALL: ") for line in err) == 10
    assert err[-1] == (f"  … and 2 more task(s) not OK: their rows in {tmp_path / 'out' / 'results.jsonl'} or "
                       f"{tmp_path / 'out' / 'results.csv'} say why.")


def test_a_table_left_by_deleted_records_is_refused_saying_so(tmp_path):
    """Deleting DIR/tasks to have every task run again left the sweep's own table behind, and the refusal said only
    that it "is not a table of the sweep records", of the table that sweep had written."""
    import shutil
    spec = _spec(BASE + '[sweep]\ngrid = { "model.beta" = [1.0, 2.0] }\n')
    run_sweep(spec, tmp_path, serial=True, progress=False)
    shutil.rmtree(tmp_path / "tasks")
    with pytest.raises(FileExistsError, match=r"results.jsonl' exists .* \(it has a sweep table's columns, but none "
                                              r"of its 2 rows has a record there: were the records deleted\? Then "
                                              r"delete the tables \(results.jsonl, results.csv\) too"):
        run_sweep(spec, tmp_path, serial=True, progress=False)
    for name in ("results.jsonl", "results.csv"):
        (tmp_path / name).unlink()
    assert run_sweep(spec, tmp_path, serial=True, progress=False).ran == 2


def test_the_summary_says_when_records_of_other_settings_were_not_used(tmp_path, capsys):
    """After an edit of aligned_tol every task ran again and the summary said only "2 run, 0 already done", not that
    the folder's 2 records were of other keys (kept, unused)."""
    cfg, out = tmp_path / "s.toml", tmp_path / "out"
    text = BASE + '[sweep]\naligned_tol = {tol}\ngrid = {{ "model.beta" = [1.0, 2.0] }}\n'
    args = ["sweep", str(cfg), "--serial", "--output", str(out)]
    cfg.write_text(text.format(tol=1e-3))
    assert cli.main(args) == 0 and "other record" not in capsys.readouterr().out
    cfg.write_text(text.format(tol=1e-2))
    assert cli.main(args) == 0
    said = capsys.readouterr().out
    assert "2 tasks: 2 run, 0 already done; OK 2" in said
    assert f"(2 other record(s) in {str(out / 'tasks')!r} belong to no task of this sweep: a task's key changes" in said
    assert cli.main(args) == 0 and "other record" not in capsys.readouterr().out       # nothing ran: nothing to explain


def test_an_unknown_run_parameter_is_not_offered_the_checkpoint_keys_a_sweep_refuses():
    """'unknown sweep parameter 'run.save_times'; valid keys of [run]: [..., 'checkpoint_every',
    'checkpoint_interval', ...]': both are then refused ("a sweep task keeps no checkpoint")."""
    with pytest.raises(ConfigError, match=re.escape("unknown sweep parameter 'run.save_times'; valid keys of [run]: "
                                                    "['backend', 'save_every', 't0', 't_eval', 't_final'].")):
        _spec(BASE + '[sweep.grid]\n"run.save_times" = [[0.0, 1.0]]\n')


def test_records_of_another_version_are_kept_and_said_to_be(tmp_path, capsys):
    """The version is not part of a key: after an upgrade a rerun kept the old records and said only "2 already
    done" (the docs: "each record names the version that computed it"); now SweepResult.other_versions counts them
    and the summary says so."""
    cfg, out = tmp_path / "s.toml", tmp_path / "out"
    cfg.write_text(BASE + '[sweep]\ngrid = { "model.beta" = [1.0, 2.0] }\n')
    args = ["sweep", str(cfg), "--serial", "--output", str(out)]
    assert cli.main(args + ["--quiet"]) == 0
    first = sorted((out / "tasks").glob("*.json"))[0]
    first.write_text(first.read_text().replace(f'"meanfield": "{mf.__version__}"', '"meanfield": "0.0.1"'))
    assert run_sweep(str(cfg), out, serial=True, progress=False).other_versions == {"0.0.1": 1}
    assert "as does\n`SweepResult.other_versions`" in (Path(__file__).parents[1] / "docs" / "sweeps.md").read_text()
    assert cli.main(args) == 0
    assert (f"(1 of the 2 tasks already done were computed by another meanfield version (0.0.1: 1), not this one "
            f"({mf.__version__}), and were kept: give a fresh --output to recompute them)") in capsys.readouterr().out
    first.unlink()
    assert run_sweep(str(cfg), out, serial=True, progress=False).other_versions == {}


def test_a_list_in_a_set_that_makes_a_task_invalid_points_to_grid():
    """sets = [{ "model.beta" = [1.0, 2.0] }] (meaning two tasks) stopped with "`beta` must be a real number; got
    beta=[1.0, 2.0]", which did not say that lists to combine belong in `grid`."""
    with pytest.raises(ConfigError, match=re.escape("`beta` must be a real number; got beta=[1.0, 2.0]. (In `sets`, "
                                                    "'model.beta' is given a list: a value of a set is one task's "
                                                    "value; lists of values to combine go in `grid`.)")):
        _spec(BASE + '[sweep]\nsets = [{ "model.beta" = [1.0, 2.0] }]\n')
    with pytest.raises(ConfigError, match=r"`beta` must be finite and > 0; got beta=-1.0\.$"):    # no list: no hint
        _spec(BASE + '[sweep]\nsets = [{ "model.beta" = -1.0 }]\n')
    with pytest.raises(ConfigError, match=r"`beta` must be finite and > 0; got beta=-1.0\.$"):    # the list is fine
        _spec(BASE + '[sweep]\nsets = [{ "model.beta" = -1.0, "run.t_eval" = [0.0, 1.0] }]\n')


def test_distributed_layers_with_an_alpha_schedule_undefined_at_t_final_equal_single_process(threaded_client):
    # nGPT's layers use α(t) = 1 − t at t = 0, …, 0.9, never α(1) = 0; the shards' diagnostics of the final state
    # computed the ODE speed ‖A‖/α(1) and raised, as one process did: the speed is left out there (NaN), as there
    model = mf.Model(1.0, "ngpt", alpha=lambda t: 1.0 - t)
    p = mf.Particles.uniform(40, seed=3)
    kw = dict(step=0.1, save_every=0.5, time="layers")
    ref = mf.simulate(model, p, 1.0, backend="particles-sh", threads=1, **kw)
    out = distributed_particles_sh(model, p, 1.0, client=threaded_client, shards=2, **kw)
    assert out.status is ref.status is mf.Status.OK
    assert np.isnan(out.diagnostics["max_speed"][-1]) and np.isnan(ref.diagnostics["max_speed"][-1])
    for k, v in ref.diagnostics.items():
        assert np.allclose(out.diagnostics[k], v, rtol=1e-12, atol=1e-14, equal_nan=True), k
    assert np.max(np.abs(out.final.positions - ref.final.positions)) < 1e-12


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_sweep_exits_with_130_not_the_status_of_a_failed_task(tmp_path, monkeypatch, capsys, signum):
    """A sweep stopped by Ctrl-C or SIGTERM exited with 1, the status of a task that failed or ended early: a script
    could not tell "rerun to continue" from "some rows are not OK".  Now 130, as every command the command line
    stops on a Ctrl-C or SIGTERM (`meanfield run` before it stored anything, validate, bench, demo)."""
    from meanfield._sweep import _runner
    real, calls = _runner._simulate, []

    def signalled_at_the_second(cfg):
        calls.append(cfg)
        if len(calls) == 2:
            os.kill(os.getpid(), signum)     # the command line's handler turns it into a KeyboardInterrupt here
            time.sleep(1.0)
        return real(cfg)
    monkeypatch.setattr(_runner, "_simulate", signalled_at_the_second)
    cfg, out = tmp_path / "s.toml", tmp_path / "out"
    cfg.write_text(BASE + '[sweep]\ngrid = { "model.beta" = [1.0, 2.0, 3.0] }\n')
    assert cli.main(["sweep", str(cfg), "--serial", "--output", str(out), "--quiet"]) == 130
    assert "meanfield sweep: interrupted; the finished tasks are recorded in" in capsys.readouterr().err
    assert len(calls) == 2 and len(list((out / "tasks").glob("*.json"))) == 1
    monkeypatch.setattr(_runner, "_simulate", real)
    failing = tmp_path / "f.toml"           # a task that ends early: 1, not 130
    failing.write_text(BASE.replace("step = 0.1", "max_steps = 1") + '[sweep]\ngrid = { "model.beta" = [1.0] }\n')
    assert cli.main(["sweep", str(failing), "--serial", "--output", str(tmp_path / "f"), "--quiet"]) == 1
    assert cli.main(["sweep", str(cfg), "--serial", "--output", str(out), "--quiet"]) == 0


def _many_tasks(n):
    """A SweepSpec of ``n`` tasks of two parameters, built without the per-task checks, and a record of each."""
    from meanfield._sweep import SweepSpec
    from meanfield._sweep._spec import Task
    tasks = [Task(index=i, params={"model.beta": 1.0 + i // 100, "initial.seed": i % 100}, config={}, key=f"k{i}")
             for i in range(n)]
    spec = SweepSpec(tasks=tasks, observables=("energy",))
    return spec, {t.key: {"key": t.key, "status": "OK", "energy": 0.5, "t_end": 1.0, "wall_time": 0.1} for t in tasks}


def test_the_table_of_many_tasks_is_assembled_in_linear_time(tmp_path):
    """Each row asked for SweepSpec.parameter_names, itself quadratic in the tasks: for 10⁴ tasks the table took
    80 s to assemble (at the end of every sweep, and for `meanfield info DIR`).  Here 3000 tasks took 14 s."""
    from meanfield._sweep._runner import table_rows, write_tables
    spec, records = _many_tasks(3000)
    t0 = time.perf_counter()
    rows = table_rows(spec, records)
    write_tables(tmp_path, spec, records)
    assert time.perf_counter() - t0 < 1.0
    assert spec.parameter_names == ["model.beta", "initial.seed"]
    assert rows[-1] == {"key": "k2999", "model.beta": 30.0, "initial.seed": 99, "status": "OK", "error": "",
                        "wall_time": 0.1, "t_end": 1.0, "energy": 0.5}
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 3001


def test_info_of_a_sweep_folder_does_not_check_every_tasks_values_again(tmp_path, monkeypatch):
    """`meanfield info DIR` read the stored sweep file as a run reads it, every task's run configuration checked
    (about 1.5 ms each: 15 s of its 17 s for 10⁴ tasks, once the table's assembly was linear).  It needs only the
    tasks' parameters and keys, of a file that was checked when it ran; load_sweep still checks every task."""
    from meanfield._sweep import _spec as spec_module
    from meanfield._sweep._runner import read_sweep_folder
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE + '[sweep]\ngrid = { "model.beta" = [1.0, 2.0, 3.0] }\n')
    run_sweep(str(cfg), tmp_path / "out", serial=True, progress=False, max_tasks=2)
    checked = []
    real = spec_module._check_task
    monkeypatch.setattr(spec_module, "_check_task", lambda config, params: checked.append(params) or real(config, params))
    spec, problem, records, result = read_sweep_folder(tmp_path / "out")
    assert checked == [] and problem == "" and (result.tasks, len(result.rows), result.missing) == (3, 2, 1)
    assert [t.key for t in spec.tasks] == [t.key for t in load_sweep(cfg).tasks] and len(checked) == 3


def test_a_task_that_finishes_while_the_local_cluster_closes_after_a_ctrl_c_is_recorded(tmp_path, monkeypatch):
    """After a Ctrl-C the sweep's local cluster closes, and its worker finishes the task it runs first (dask gives it
    4 s): the task's HDF5 file was written, but its result went to a cancelled future, so it got no record and the
    next sweep ran it again.  The workers of the sweep's own cluster now write each record themselves, atomically,
    when the task ends; the sweep's table has its row, and a rerun runs only the tasks that never ran.

    The worker's first task waits for the cluster's close to begin, then ends (a task ending during the shutdown,
    whatever the machine's load); the Ctrl-C comes while it waits."""
    import distributed

    from meanfield._sweep import _local
    flags = tmp_path / "flags"
    flags.mkdir()

    def hold_each_task_until_the_close(flag_dir):          # runs in the worker process
        from meanfield._sweep import _runner
        real = _runner._simulate

        def held(cfg):
            Path(flag_dir, "started").touch()
            deadline = time.time() + 60
            while not Path(flag_dir, "closing").exists() and time.time() < deadline:
                time.sleep(0.01)
            return real(cfg)
        _runner._simulate = held

    real_build = _local._build

    def build(n):
        cluster = real_build(n)
        with distributed.Client(cluster) as c:
            c.run(hold_each_task_until_the_close, str(flags))
        real_close = cluster.close

        def close(*args, **kwargs):
            (flags / "closing").touch()
            return real_close(*args, **kwargs)
        cluster.close = close
        return cluster

    def ctrl_c_while_the_first_task_runs(futures):
        deadline = time.time() + 60
        while time.time() < deadline and not (flags / "started").exists():
            time.sleep(0.01)
        raise KeyboardInterrupt
        yield       # (a generator, as as_completed is iterated)
    monkeypatch.setattr(_local, "_build", build)
    monkeypatch.setattr(distributed, "as_completed", ctrl_c_while_the_first_task_runs)
    spec = _spec(BASE + '[sweep]\ngrid = { "initial.seed" = [0, 1, 2] }\nhdf5 = true\n')
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path / "out", workers=1, progress=False)
    out = tmp_path / "out"
    recorded = {p.stem: json.loads(p.read_text()) for p in (out / "tasks").glob("*.json")}
    assert list(recorded) == [spec.tasks[0].key] == [p.stem for p in (out / "runs").glob("*.h5")]
    assert recorded[spec.tasks[0].key]["status"] == "OK" and not list((out / "tasks").glob(".*"))
    assert [json.loads(line)["key"] for line in (out / "results.jsonl").read_text().splitlines()] == \
        [spec.tasks[0].key]
    monkeypatch.undo()
    again = run_sweep(spec, out, workers=1, progress=False)
    assert (again.ran, again.skipped) == (2, 1) and again.success


def test_options_threads_stays_in_the_key_though_particles_sh_no_longer_depends_on_it():
    """The particles-sh coefficients were summed over min(threads, N/5000) parts, so a record of one thread count was
    not the result of another; they are now cut by the token count alone (the same bits for any `threads`).  The key
    keeps `options.threads` all the same (docs/sweeps.md, "Keys and resuming"): the exact backend's threads = 1 uses
    BLAS's own threads, and existing output folders are not rerun."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12_000, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    model = mf.Model(2.0)
    one, two = (sh_coefficients(model, x, threads=n) for n in (1, 2))
    assert np.array_equal(one, two)
    keys = [_spec(BASE.replace("threads = 1", f"threads = {n}") + '[sweep]\ngrid = { "model.beta" = [1.0] }\n')
            .tasks[0].key for n in (1, 2)]
    assert keys[0] != keys[1]


def test_a_ctrl_c_while_a_record_is_written_leaves_it_to_the_stop(client, tmp_path, monkeypatch):
    """A Ctrl-C during the write of a finished task's record (a second or so of fsyncs on a busy disk) must not lose
    it: the task is recorded by the stop, with the other finished ones, not run again by the next sweep."""
    import distributed

    from meanfield._sweep import _runner
    real, calls = _runner.write_record, []

    def ctrl_c_in_the_first_write(out, row):
        calls.append(row["key"])
        if len(calls) == 1:
            raise KeyboardInterrupt
        real(out, row)

    def all_done_first(futures):
        distributed.wait(list(futures))
        yield from futures
    monkeypatch.setattr(_runner, "write_record", ctrl_c_in_the_first_write)
    monkeypatch.setattr(distributed, "as_completed", all_done_first)
    spec = _spec(BASE + '[sweep]\ngrid = { "initial.seed" = [0, 1] }\n')
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path, client=client, progress=False)
    assert sorted(p.stem for p in (tmp_path / "tasks").glob("*.json")) == sorted(t.key for t in spec.tasks)
    assert calls[0] in calls[1:]


def test_a_task_recorded_by_its_worker_whose_result_is_lost_keeps_its_record(tmp_path, monkeypatch):
    """A worker of the sweep's own cluster writes the record when its task ends; if the result then does not arrive
    (the worker is lost before it hands it over), the sweep wrote an ERROR row over that record, and the next sweep
    ran the task again.  Now the record stays, and the row is the worker's."""
    import distributed

    def all_done_then_lost(futures):
        distributed.wait(list(futures))

        def lost(self, timeout=None):
            raise distributed.client.FutureCancelledError(self.key, "the worker was lost")
        monkeypatch.setattr(distributed.Future, "result", lost)
        yield from futures
    monkeypatch.setattr(distributed, "as_completed", all_done_then_lost)
    spec = _spec(BASE + '[sweep]\ngrid = { "initial.seed" = [0, 1] }\n')
    res = run_sweep(spec, tmp_path, workers=1, progress=False)
    assert [r["status"] for r in res.rows] == ["OK", "OK"] and res.success
    assert {json.loads(p.read_text())["status"] for p in (tmp_path / "tasks").glob("*.json")} == {"OK"}


def test_sweep_help_gives_the_exit_statuses_and_its_example_on_a_line(capsys):
    # a script around `meanfield sweep` needs 1 (a task not OK) and 130 (interrupted: run again) apart; the help said
    # neither, and ran its example into the text before it
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    out = capsys.readouterr().out
    assert "\n  meanfield sweep examples/phase_sweep.toml --workers 2 --output sweep-out\n" in out, out
    text = " ".join(out.split())
    assert "exit status: 0 every task reached t_final; 1 some task stopped early or failed" in text, out
    assert "130 stopped by Ctrl-C or SIGTERM" in text, out


def test_the_sweep_progress_bar_in_a_log_file_is_redrawn_every_30_seconds():
    # a sweep is a batch job: with stderr not a terminal its bar was redrawn every 0.1 s into the log
    from meanfield._simulate import BATCH_LOG_INTERVAL
    from meanfield._sweep._runner import _bar

    bar = _bar(True, 10, 0)
    try:
        assert bar.mininterval == BATCH_LOG_INTERVAL
    finally:
        bar.close()


def test_a_user_scheme_runs_on_the_cluster_workers_as_in_this_process(client, tmp_path):
    """A scheme registered in the sweep's process (mf.register_scheme, `meanfield --import`) was unknown to the
    workers: every task ended ERROR, "`scheme` must be one of [...]", while --serial ran them.  The workers now
    register the process's user schemes (and backends) before a task: a copy of Post-LN gives Post-LN's rows."""
    import dataclasses

    mf.register_scheme(dataclasses.replace(mf.SCHEMES["post-ln"], name="post-ln-sweep-copy"))
    try:
        user = _spec(BASE.replace("beta = 1.0", 'beta = 1.0\nscheme = "post-ln-sweep-copy"')
                     + '[sweep]\nobservables = ["mean_alignment", "energy"]\n[sweep.grid]\n"initial.seed" = [0, 1]\n')
        rows = run_sweep(user, tmp_path / "user", client=client, progress=False).rows
    finally:
        mf.unregister_scheme("post-ln-sweep-copy")
    builtin = _spec(BASE + '[sweep]\nobservables = ["mean_alignment", "energy"]\n[sweep.grid]\n"initial.seed" = [0, 1]\n')
    ref = run_sweep(builtin, tmp_path / "ref", serial=True, progress=False).rows
    assert [r["status"] for r in rows] == ["OK", "OK"], [r.get("error") for r in rows]
    keep = ("initial.seed", "mean_alignment", "energy", "t_end")
    assert [{k: r[k] for k in keep} for r in rows] == [{k: r[k] for k in keep} for r in ref]


def test_a_sweep_folder_reads_relative_token_paths_from_the_sweep_files_folder(tmp_path, monkeypatch):
    # `meanfield info DIR` reads the copy DIR/sweep.toml: its relative path was read from DIR, where the tokens file
    # is not, and every task of a finished sweep counted as "not run yet" (its records as belonging to no task)
    from meanfield._sweep._outdir import FOLDER_FILE
    from meanfield._sweep._runner import read_sweep_folder

    here = tmp_path / "study"
    here.mkdir()
    np.save(here / "t.npy", np.random.default_rng(3).normal(size=(6, 4)))
    (here / "s.toml").write_text('[model]\nbeta = 1.0\nd = 4\n[initial]\nkind = "file"\npath = "t.npy"\n[run]\n'
                                 'backend = "particles"\nt_final = 0.2\n[options]\nthreads = 1\n'
                                 '[sweep]\ngrid = { "model.beta" = [1.0, 2.0] }\n')
    out = tmp_path / "out"
    result = run_sweep(load_sweep(here / "s.toml"), out, serial=True)
    assert result.ran == 2 and (out / FOLDER_FILE).read_text().strip() == str(here.resolve())
    monkeypatch.chdir(tmp_path)
    spec, problem, records, table = read_sweep_folder(out)
    assert not problem and table.missing == 0 and {t.key for t in spec.tasks} == set(records)
    # a sweep that reads no file stores no folder (and removes a stale one)
    plain = tmp_path / "plain.toml"
    plain.write_text(BASE + '[sweep]\ngrid = { "model.beta" = [1.0] }\n')
    run_sweep(load_sweep(plain), tmp_path / "out2", serial=True)
    assert not (tmp_path / "out2" / FOLDER_FILE).exists()
