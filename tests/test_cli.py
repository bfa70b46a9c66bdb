import os
import warnings
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import meanfield as mf
from meanfield._config import ConfigError, parse_config
from meanfield.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")

SMALL = """
[model]
beta = 3.0
scheme = "{scheme}"
{extra}
[initial]
kind = "random"
lmax = 12
seed = 4
amplitude = 0.5
[run]
t_final = 0.4
save_every = 0.2
"""


@pytest.mark.parametrize("scheme", sorted(s for s in mf.SCHEMES if mf.SCHEMES[s].continuous))
def test_run_info_plot_every_scheme(tmp_path, scheme, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(SMALL.format(scheme=scheme, extra="tau = 0.2" if scheme == "mix-ln" else ""))
    out = tmp_path / "r.h5"
    assert main(["run", str(cfg), "--output", str(out), "--quiet"]) == 0
    assert main(["info", str(out)]) == 0
    assert "Reached t_final" in capsys.readouterr().out
    assert main(["plot", str(out), "--output", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "r.png").stat().st_size > 10_000
    assert mf.load(out).success


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".toml") and "sweep" not in f))
def test_shipped_examples_parse(name):
    cfg = mf._config.load_config(os.path.join(EXAMPLES, name))
    assert cfg.t_final > 0


@pytest.mark.parametrize("raw, match", [
    ({"model": {"beta": 1}, "initial": {"kind": "uniform"}, "run": {"t_final": 1}, "extra": {}}, "top level"),
    ({"model": {"beta": 1, "temperature": 2}, "initial": {"kind": "uniform"}, "run": {"t_final": 1}}, "temperature"),
    ({"model": {"beta": 1}, "initial": {"kind": "gaussian"}, "run": {"t_final": 1}}, "`kind`"),
    ({"model": {"beta": 1}, "initial": {"kind": "uniform", "seed": 1}, "run": {"t_final": 1}}, "seed"),
    ({"model": {"beta": 1}, "initial": {"kind": "uniform"}, "run": {}}, "t_final"),
    ({"model": {}, "initial": {"kind": "uniform"}, "run": {"t_final": 1}}, "beta"),
    ({"initial": {"kind": "uniform"}, "run": {"t_final": 1}}, r"\[model\]"),
])
def test_config_errors_list_the_valid_keys(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(raw)


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[model]\nbeta = -1\n[initial]\nkind='uniform'\n[run]\nt_final=1\n")
    assert main(["run", str(cfg), "--output", str(tmp_path / "x.h5")]) == 2
    assert "`beta`" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing.h5")]) == 2
    assert main(["run", str(cfg), "--output", str(tmp_path / "none.h5"), "--resume"]) == 2


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    cfg = tmp_path / "long.toml"
    cfg.write_text("""
[model]
beta = 5.0
[initial]
kind = "random"
lmax = 32
seed = 2
[run]
t_final = 2.0
save_every = 0.05
[options]
on_resolution_loss = "refine"
lmax_max = 160
""")
    ref = tmp_path / "ref.h5"
    assert main(["run", str(cfg), "--output", str(ref), "--quiet"]) == 0
    out = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, "-m", "meanfield", "run", str(cfg), "--output", str(out), "--quiet"],
                            cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.exists() and len(mf.load(out)) >= 8):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = mf.load(out)
    assert not mf._io.run_info(out)["complete"], "the run finished before it could be killed"
    assert main(["run", str(cfg), "--output", str(out), "--resume", "--quiet"]) == 0
    a, b = mf.load(ref), mf.load(out)
    assert len(partial) < len(b) == len(a)
    assert max(np.max(np.abs(x.coeffs - y.coeffs)) for x, y in zip(a.states, b.states)) <= 1e-14


def test_config_and_seed_survive_kill_and_resume(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(SMALL.format(scheme="post-ln", extra=""))
    out = tmp_path / "r.h5"
    assert main(["run", str(cfg), "--output", str(out), "--quiet"]) == 0
    info = mf._io.run_info(out)
    assert info["seed"] == 4 and "[initial]" in info["config"]
    # a checkpoint written mid-run already carries them, and resume keeps them
    mf.simulate(mf.Model(3.0), mf.Density.random(12, seed=4, amplitude=0.5), 0.4, save_every=0.1,
                checkpoint=tmp_path / "p.h5", metadata={"config": "x", "seed": 7},
                callback=lambda t, s, d: t > 0.15)
    assert mf._io.run_info(tmp_path / "p.h5")["seed"] == 7
    mf.resume(tmp_path / "p.h5")
    info = mf._io.run_info(tmp_path / "p.h5")
    assert info["seed"] == 7 and info["config"] == "x" and info["complete"]


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".toml") and "sweep" not in f))
def test_shipped_examples_run_at_a_small_size(name):
    cfg = mf._config.load_config(os.path.join(EXAMPLES, name))
    init = cfg.initial
    if isinstance(init, mf.Density) and init.d == 3:
        init = init.resized(min(init.lmax, 16)).normalized()
    elif isinstance(init, mf.Particles):
        k = min(init.n, 200)
        init = mf.Particles(init.positions[:k], None, None if init.radii is None else init.radii[:k])
    opts = dict(cfg.options)
    t_final = 2 * opts["step"] if opts.get("time") == "layers" else 0.2
    if "lmax_max" in opts:
        opts["lmax_max"] = 32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        tr = mf.simulate(cfg.model, init, t_final, backend=cfg.backend, **opts)
    assert tr.status in (mf.Status.OK, mf.Status.RESOLUTION_LOST), tr.message
    assert len(tr.states) >= 2
