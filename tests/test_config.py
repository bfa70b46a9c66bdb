"""meanfield._config: the [energy] table of energy problems and sampled initial densities (the other run
tables are tested in test_cli.py)."""
import numpy as np
import pytest

import meanfield as mf
from meanfield._config import ConfigError, EnergyConfig, RunConfig, parse_config

SQUARE = [[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]]


def energy(**kw):
    return {"energy": kw}


def test_minimize_table_parses_into_the_solver_arguments():
    cfg = parse_config(energy(task="minimize", beta=2.0, D=[0.6, 1.0, 1.4], level=2, degree=1), "text")
    assert isinstance(cfg, EnergyConfig) and cfg.task == "minimize" and cfg.text == "text"
    assert cfg.d == 3 and np.array_equal(cfg.D, np.diag([0.6, 1.0, 1.4]))      # a list of d numbers: the diagonal
    assert cfg.parameters == {"level": 2, "degree": 1} and cfg.start is None and cfg.seed is None


def test_matrix_D_sets_d_and_identity_is_the_default():
    cfg = parse_config(energy(task="minimize", beta=1.0, D=[[1.0, 0.0], [0.0, 1.05]], lmax=16))
    assert cfg.d == 2 and cfg.D[1, 1] == 1.05
    cfg = parse_config(energy(task="maximize", beta=1.0))
    assert cfg.d == 3 and np.array_equal(cfg.D, np.eye(3)) and cfg.seed == 0
    assert parse_config(energy(task="maximize", beta=1.0, D=-1.0, d=4)).D[3, 3] == -1.0


def test_stationary_start_from_positions_or_uniform_points():
    cfg = parse_config(energy(task="stationary", beta=1.0, D=[1.0, 0.5], positions=SQUARE, direction="descent"))
    assert isinstance(cfg.start, mf.Particles) and cfg.start.n == 4
    assert np.allclose(np.abs(cfg.start.positions), np.sqrt(0.5))                # normalized on reading
    assert cfg.parameters == {"direction": "descent"} and cfg.seed is None
    cfg = parse_config(energy(task="stationary", beta=1.0, d=3, n=5, seed=7))
    assert cfg.start.n == 5 and cfg.seed == 7
    assert np.array_equal(cfg.start.positions, mf.Particles.uniform(5, 3, seed=7).positions)


def test_a_run_configuration_is_still_a_run():
    raw = {"model": {"beta": 1.0}, "initial": {"kind": "uniform"}, "run": {"t_final": 1.0}}
    assert isinstance(parse_config(raw), RunConfig)


@pytest.mark.parametrize("table, match", [
    (energy(task="minimize", beta=1.0, levels=3), r"unknown key\(s\) \['levels'\].*valid keys: \['D', 'beta'"),
    (energy(task="maximize", beta=1.0, lmax=8), r"\['lmax'\].*n_starts"),
    (energy(task="minimise", beta=1.0), r"`task` must be one of \['minimize', 'maximize', 'stationary'\]"),
    (energy(beta=1.0), "`task`"),
    (energy(task="minimize"), "needs `beta`"),
    (energy(task="minimize", beta=-1.0), "`beta`"),
    (energy(task="minimize", beta=1.0, D=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), "`D`"),
    (energy(task="minimize", beta=1.0, D=[[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
    (energy(task="minimize", beta=1.0, D=[1.0, 1.0], d=3), "`D`"),
    (energy(task="minimize", beta=1.0, d=1), "`d`"),
    (energy(task="minimize", beta=1.0, d=4), "d` = 2"),
    (energy(task="minimize", beta=1.0, D=[1.0, 1.05], level=2), r"\['level'\] do not apply.*d=2.*'lmax'"),
    (energy(task="minimize", beta=1.0, lmax=16), r"\['lmax'\] do not apply.*d=3"),
    (energy(task="stationary", beta=1.0, d=2), "exactly one of `positions`"),
    (energy(task="stationary", beta=1.0, d=2, n=4, positions=SQUARE), "exactly one of `positions`"),
    (energy(task="stationary", beta=1.0, d=2, positions=SQUARE, seed=1), "`seed`"),
    (energy(task="stationary", beta=1.0, d=2, n=4, weights=[0.5, 0.5]), "`weights`"),
    (energy(task="stationary", beta=1.0, d=3, positions=SQUARE), "R\\^2 but d=3"),
    (energy(task="stationary", beta=1.0, d=2, positions=SQUARE, weights=[1.0, -1.0, 0.5, 0.5]), "`weights`"),
    ({**energy(task="minimize", beta=1.0), "model": {"beta": 1.0}}, r"single table \[energy\].*\['model'\]"),
])
def test_energy_table_errors_name_the_key_and_the_valid_ones(table, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(table)


# ----------------------------------------------------------------------------------------------
# `samples`: the tokens of a particle run drawn from the density a spectral run starts from

RANDOM = {"kind": "random", "lmax": 12, "seed": 3, "degree": 3, "amplitude": 0.8}


def run_config(initial, backend="particles-sh"):
    return {"model": {"beta": 2.0}, "initial": initial, "run": {"t_final": 0.1, "backend": backend}}


def test_samples_draw_the_particles_from_the_same_density():
    density = parse_config(run_config(RANDOM, "spectral")).initial
    cfg = parse_config(run_config({**RANDOM, "samples": 40_000, "sample_seed": 5}))
    assert isinstance(density, mf.Density) and isinstance(cfg.initial, mf.Particles)
    assert cfg.initial.n == 40_000 and cfg.seed == 3
    direct = mf.Particles.from_density(density, 40_000, seed=5)
    assert np.array_equal(cfg.initial.positions, direct.positions)
    # and it is that density: the empirical mean of the tokens against ∫ x ρ dσ, within 5 standard errors
    x = cfg.initial.positions
    grid = mf.sphere.SphereGrid.for_bandlimit(32)
    pts = grid.points.reshape(-1, 3)
    rho = density.evaluate(pts)
    w = grid.weights.reshape(-1)
    mean = (w * rho) @ pts / np.sum(w * rho)
    assert np.all(np.abs(x.mean(axis=0) - mean) < 5 * x.std(axis=0) / np.sqrt(len(x)))


def test_samples_keep_the_radius_field_and_refuse_bad_values():
    cfg = parse_config(run_config({**RANDOM, "r0": 2.0, "samples": 100}))
    assert np.allclose(cfg.initial.radii, 2.0, rtol=1e-12)
    for bad in (0, 2.5, True, "100"):
        with pytest.raises(ConfigError, match="`samples`"):
            parse_config(run_config({**RANDOM, "samples": bad}))
    with pytest.raises(ConfigError, match="samples"):
        parse_config(run_config({"kind": "particles", "n": 10, "samples": 10}))


def test_the_shipped_pde_and_particle_examples_start_from_the_same_density():
    import os
    import tomllib
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
    with open(os.path.join(root, "post_ln_s2.toml"), "rb") as f:
        pde = tomllib.load(f)
    with open(os.path.join(root, "post_ln_s2_particles.toml"), "rb") as f:
        particles = tomllib.load(f)
    assert particles["model"] == pde["model"]
    assert {k: v for k, v in particles["initial"].items() if k not in ("samples", "sample_seed")} == pde["initial"]
    assert particles["run"]["backend"] == "particles-sh" and pde["run"]["backend"] == "spectral"
