"""meanfield._config: the [energy] table of energy problems, sampled initial densities, and the checks of run
values (the keys of the run tables and the CLI's use of them are tested in test_cli.py)."""
import tomllib
import warnings

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
    cfg = parse_config(energy(task="stationary", beta=10.0, d=3, n=5, flow="softmax"))    # find_stationary's `flow`
    assert cfg.parameters == {"flow": "softmax"}


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
    # the message names what was written: 2 numbers, not the 2 × 2 matrix they were turned into before the check
    (energy(task="minimize", beta=1.0, D=[1.0, 1.0], d=3), r"`D` must be .* 3 numbers \(a diagonal\).*got shape \(2,\)"),
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
    # the solvers' own argument checks, made on reading (a later file of `meanfield run a b` failed after a ran)
    (energy(task="minimize", beta=1.0, level=9), r"task='minimize'.*`level` must be an integer in \[0, 7\]"),
    (energy(task="minimize", beta=1.0, degree=3), "`degree` must be 1 or 2"),
    (energy(task="minimize", beta=1.0, quadrature_degree=31), r"`quadrature_degree` must be an integer in \[2, 30\]"),
    (energy(task="minimize", beta=1.0, regularization=-1.0), "`regularization`"),
    (energy(task="minimize", beta=1.0, D=[1.0, 1.05], lmax=0), "`lmax`"),
    (energy(task="minimize", beta=1.0, level=6, degree=2), r"needs about .* GiB.*lower `level` or `degree`"),
    (energy(task="maximize", beta=1.0, tol=-1.0), "`tol`"),
    (energy(task="maximize", beta=1.0, n_starts=0, candidates=False), "`n_starts` must be ≥ 1"),
    (energy(task="maximize", beta=1.0, n_particles=0), "`n_particles`"),
    (energy(task="stationary", beta=1.0, d=2, n=4, t_max=0.0), "`t_max`"),
    (energy(task="stationary", beta=1.0, d=2, n=4, check_every=-1.0), "`check_every`"),
    (energy(task="stationary", beta=1.0, d=2, n=4, direction="up"), "`direction` must be one of"),
    (energy(task="stationary", beta=1.0, d=2, n=4, flow="sa"), r"`flow` must be one of \['gradient', 'softmax'\]"),
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


RUN = {"model": {"beta": 1.0}, "initial": {"kind": "random", "lmax": 8}, "run": {"t_final": 0.5}}


def _with(table, **entries):
    raw = {k: dict(v) for k, v in RUN.items()}
    raw.setdefault(table, {}).update(entries)
    return raw


@pytest.mark.parametrize("raw, match", [
    (_with("run", t_final=True), r"`t_final` must be a real number; got t_final=True"),
    (_with("run", t_final="abc"), r"`t_final` must be a real number"),
    (_with("run", checkpoint_every=2.7), r"`checkpoint_every` must be an integer >= 1 or 'auto'; got checkpoint_every=2.7"),
    (_with("run", checkpoint_every="x"), r"`checkpoint_every` must be an integer"),
    (_with("run", backend="spectrl"), r"`backend` must be one of \['hybrid', 'particles', 'particles-sh', 'spectral'\]"),
    (_with("run", save_every=0), r"`save_every` must be finite and > 0"),
    (_with("run", t_eval="x"), r"`t_eval` must be numbers"),
    (_with("options", rtoll=1e-6), r"unknown option\(s\) \['rtoll'\] for backend='spectral'"),
    (_with("initial", seed=1.7), r"`seed` must be an integer in \[0, 18446744073709551615\]; got seed=1.7"),
    (_with("initial", seed=-1), r"`seed` must be an integer in \[0, 18446744073709551615\]; got seed=-1"),
    (_with("initial", r0="x"), r"`r0` must be a real number"),
    (_with("initial", samples=10, sample_seed=1.5), r"`sample_seed` must be an integer in \[0, 18446744073709551615\]"),
    ({**RUN, "initial": {"kind": "particles", "n": 5, "radius": "x"}}, r"`radius` must be a real number"),
    ({**RUN, "initial": {"kind": "particles", "n": 5, "seed": "abc"}}, r"`seed` must be an integer"),
    ({**RUN, "initial": {"kind": "perturbed", "lmax": 8, "ell": 20}}, r"`ell` must be in 1..lmax = 1..8"),
    ({**RUN, "initial": {"kind": "perturbed", "lmax": 8, "ell": 0}}, r"`ell` must be an integer >= 1"),
    ({**RUN, "initial": {"kind": "perturbed", "lmax": 8, "ell": -1}}, r"`ell` must be an integer >= 1"),
    ({**RUN, "initial": {"kind": "perturbed", "lmax": 8, "ell": 2, "m": 3}}, r"`m` must be an integer in 0..ell = 0..2"),
    ({**RUN, "initial": {"kind": "perturbed", "eps": "x"}}, r"`eps` must be a finite real number"),
    ({**RUN, "model": {"beta": 1.0, "d": 2}, "initial": {"kind": "perturbed", "lmax": 8, "ell": 20}},
     r"`ell` must be in 1..lmax = 1..8"),
    ({**RUN, "model": {"beta": 1.0, "d": 2}, "initial": {"kind": "perturbed", "ell": 2, "m": 1}},
     r"`m` applies to d = 3"),
    (_with("model", Q="I"), r"`Q` must be numbers"),
    (_with("model", Q=[[1, 0, 0], [0, 1]]), r"`Q` must be numbers"),
    ({**RUN, "model": 3}, r"\[model\] must be a table; got model = 3"),
    (_with("run", t0=-1.0), r"`t0` must be finite and >= 0; got t0=-1.0"),
    (_with("run", t0="1"), r"`t0` must be a real number"),
    (_with("run", t0=0.5), r"`t_final` must be > t0=0.5; got t_final=0.5"),
    (_with("run", t0=0.2, t_eval=[0.1, 0.3]), r"`t_eval` must be strictly increasing within \[0.2, 0.5\]"),
])
def test_run_values_are_checked_with_the_parameter_named(raw, match):
    with pytest.raises((ConfigError, ValueError, TypeError), match=match):
        parse_config(raw)


def test_a_run_starts_at_t0():
    """A file had no `t0`: LN-Scaling, α(t) and Mix-LN's τ read the clock, and a run could only start at t = 0."""
    cfg = parse_config(_with("run", t0=0.2, save_every=0.1))
    assert cfg.t0 == 0.2 and parse_config(RUN).t0 == 0.0


def test_a_perturbed_start_adds_eps_to_one_coefficient():
    base = parse_config({**RUN, "initial": {"kind": "perturbed", "lmax": 8, "ell": 3, "m": 2, "eps": 0.01}}).initial
    diff = base.coeffs - mf.Density.uniform(8).coeffs
    from meanfield.sphere._sh import lm_index
    assert np.flatnonzero(diff).tolist() == [lm_index(8, 3, 2)] and diff[lm_index(8, 3, 2)] == 0.01
    circle = parse_config({**RUN, "model": {"beta": 1.0, "d": 2},
                           "initial": {"kind": "perturbed", "lmax": 8, "ell": 3, "eps": 0.01}}).initial
    theta = np.linspace(0, 2 * np.pi, 7)
    pts = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    assert np.allclose(circle.evaluate(pts), 1 + 0.01 * np.cos(3 * theta), atol=1e-14, rtol=0)   # cos ℓθ, amplitude eps


@pytest.mark.parametrize("energy, match", [
    ({"task": "maximize", "seed": 2.5}, r"`seed` must be an integer in \[0, 18446744073709551615\]; got seed=2.5"),
    ({"task": "stationary", "n": 5, "seed": 2.5}, r"`seed` must be an integer in \[0, 18446744073709551615\]; got seed=2.5"),
])
def test_energy_seeds_are_integers(energy, match):
    with pytest.raises(ConfigError, match=match):
        parse_config({"energy": {"beta": 1.0, "D": [1.0, 0.5, 0.2], **energy}})


def test_maximize_refuses_a_non_boolean_candidates():
    with pytest.raises(TypeError, match=r"`candidates` must be True or False; got candidates='yes'"):
        mf.maximize_energy(1.0, [1.0, 0.5, 0.2], 3, candidates="yes")


def test_a_registered_backend_without_option_defaults_still_parses(monkeypatch):
    from meanfield.backends._registry import BACKENDS, register_backend

    BACKENDS._loaded()     # the built-in backends first, then a third-party one without option_defaults
    monkeypatch.setitem(BACKENDS._classes, "mine", None)
    register_backend("mine")(type("Mine", (), {m: (lambda self, *a: None) for m in ("advance", "state",
                                                                                   "diagnostics")}))
    cfg = parse_config(_with("run", backend="mine") | {"options": {"anything": 1}})
    assert cfg.backend == "mine" and cfg.options == {"anything": 1}


@pytest.mark.parametrize("options, match", [
    ({"method": "rk4", "step": 0.1, "rtol": 1e-6}, r"\['rtol'\] would be ignored: in \[options\], method='rk4'"),
    ({"time": "layers", "step": 0.1, "max_step": 0.05}, r"\['max_step'\] would be ignored: in \[options\], time='layers'"),
    ({"particle_options": {"method": "rk4", "step": 0.1, "atol": 1e-9}}, r"in \[options\] particle_options"),
])
def test_options_a_fixed_step_run_would_ignore_are_refused_when_the_file_is_read(options, match):
    # a batch of configurations stops before its first run, not after it (the backends refuse them too)
    raw = {"model": {"beta": 1.0}, "initial": {"kind": "uniform"}, "run": {"t_final": 1.0,
           "backend": "hybrid" if "particle_options" in options else "particles"}, "options": options}
    if raw["run"]["backend"] == "particles":
        raw["initial"] = {"kind": "particles", "n": 8}
    with pytest.raises(ValueError, match=match):
        parse_config(raw)


def test_a_method_that_is_not_a_string_gets_a_clear_error():
    raw = {"model": {"beta": 1.0}, "initial": {"kind": "uniform"}, "run": {"t_final": 1.0},
           "options": {"method": ["rk4"]}}
    with pytest.raises(ConfigError, match=r"`method` must be a string, one of \['rk23', 'rk4', 'rk45', 'bdf', "
                                          r"'radau'\] \(radau and bdf: particle backends only\)"):
        parse_config(raw)


def test_an_unknown_table_names_every_valid_one():
    raw = {"model": {"beta": 1.0}, "initial": {"kind": "uniform", "lmax": 4}, "run": {"t_final": 1.0}, "option": {}}
    with pytest.raises(ConfigError, match=r"unknown table\(s\) \['option'\]; valid tables: .*'options'.* or a single "
                                          r"\[energy\] table"):
        parse_config(raw)


# ----------------------------------------------------------------------------------------------
# option values and initial sizes, checked when the file is read (before any run of a batch or a sweep)

_P = {"kind": "particles", "n": 6}


@pytest.mark.parametrize("backend, initial, options, match", [
    ("spectral", None, {"rtol": 0}, r"`rtol` must be in \[1e-14, 1\) .*; got rtol=0"),
    ("spectral", None, {"lmax": -3}, r"`lmax` must be an integer >= 1"),
    ("spectral", None, {"filter": ["a", "b"]}, r"`filter` must be None or \(strength, order\)"),
    ("spectral", None, {"on_resolution_loss": ["stop"]}, r"`on_resolution_loss` must be one of"),
    ("spectral", None, {"method": "rk4", "step": 1e-3, "max_steps": 10}, r"`step` must be ≥ .*max_steps=10"),
    ("particles", _P, {"step": -0.1}, r"`step` must be finite and > 0; got step=-0.1"),
    ("particles", _P, {"threads": 0}, r"`threads` must be an integer >= 1"),
    ("particles", _P, {"step": 1e-300}, r"`step` must be ≥ .* got step=1e-300"),
    ("particles", _P, {"time": "layers", "step": 0.3}, r"whole numbers of layers of step=0.3"),
    ("particles-sh", _P, {"tol": 2.0}, r"`tol` must be in \(0, 1\)"),
    ("hybrid", None, {"oversample": 0}, r"`oversample` must be an integer >= 1"),
    ("hybrid", None, {"rtol": 0}, r"`rtol` must be in \[1e-14, 1\)"),                  # its spectral phase
    ("hybrid", None, {"tail_warn": 1e-3}, r"`tail_warn` must be ≤ `tail_tol`"),      # against the hybrid's tail_tol
    ("hybrid", None, {"particle_options": {"rtol": 0}}, r"`particle_options` .*`rtol`"),
    ("hybrid", None, {"particle_options": {"step": 1e-300}}, r"particle_options: `step` must be ≥"),
])
def test_option_values_are_checked_when_the_file_is_read(backend, initial, options, match):
    """Only the option names were checked when a file was read: `meanfield run slow.toml bad.toml` ran slow.toml
    to the end before bad.toml's `rtol = 0` stopped it, and a sweep recorded such a task as an ERROR row."""
    raw = _with("run", backend=backend) | {"options": options}
    if initial is not None:
        raw["initial"] = dict(initial)
    with pytest.raises((ValueError, TypeError), match=match):
        parse_config(raw)


def test_the_option_check_builds_no_solver(monkeypatch):
    """The values are checked without the expensive part: the spectral basis and attention are not built, the
    particle backends see two probe tokens, nothing is advanced."""
    from meanfield.backends import _spectral, _stepper

    def boom(*args, **kwargs):
        raise AssertionError("built or ran the solver while reading the file")
    monkeypatch.setattr(_spectral, "SpectralAttention", boom)
    monkeypatch.setattr(_spectral.SpectralBackend, "advance", boom)
    monkeypatch.setattr(_stepper.ParticleStepper, "advance", boom)
    cfg = parse_config(_with("options", rtol=1e-8, lmax=16))
    assert cfg.options == {"rtol": 1e-8, "lmax": 16}
    seen = []
    real_init = _stepper.ParticleStepper.__init__

    def init(self, model, initial, **options):
        seen.append(initial.n)
        real_init(self, model, initial, **options)
    monkeypatch.setattr(_stepper.ParticleStepper, "__init__", init)
    cfg = parse_config({**RUN, "initial": {"kind": "particles", "n": 5000}, "run": {"t_final": 0.5, "backend": "particles"},
                        "options": {"step": 0.1}})
    assert cfg.initial.n == 5000 and seen == [2]
    parse_config(_with("run", backend="hybrid") | {"options": {"lmax_max": 32}})


@pytest.mark.parametrize("raw, error, match", [
    (_with("initial", kind=["uniform"]), ConfigError, r"\[initial\] `kind` must be one of .*got kind=\['uniform'\]"),
    (_with("model", attention=["softmax"]), TypeError, r"`attention` must be one of .*got attention=\['softmax'\]"),
    (_with("model", scheme=["post-ln"]), (TypeError, ValueError), r"`scheme`"),
    (_with("initial", amplitude="big"), TypeError, r"`amplitude` must be a finite real number; got amplitude='big'"),
    (_with("run", save_every=1e-300), ValueError, r"`save_every` must be ≥ .*at most 1000000 saved states"),
    (_with("initial", lmax=10**9), MemoryError, r"\[initial\] lmax=1000000000 needs about .* lower `lmax`"),
    (_with("initial", degree=10**6), ValueError, r"`degree` must be an integer in \[1, lmax\] = \[1, 8\]"),
    (_with("initial", amplitude=1e6), ValueError, r"`amplitude` must be a real number in \[-100, 100\]; got amp"),
    ({**RUN, "initial": {"kind": "particles", "n": 10**15}}, MemoryError, r"\[initial\] n=\d+ tokens needs about"),
    ({**RUN, "initial": {"kind": "particles", "n": 0}}, ValueError, r"`n` must be an integer >= 1"),
])
def test_bad_initial_and_save_values_get_a_clear_error_before_any_allocation(raw, error, match):
    """`kind = ["uniform"]` and `attention = ["softmax"]` said "unhashable type: 'list'", `amplitude = "big"` a
    ufunc error, `save_every = 1e-300` "Maximum allowed size exceeded", a huge `lmax` or `degree` a MemoryError
    traceback (a `degree` above `lmax` is now refused as such), `amplitude = 1e6` a numpy overflow warning then
    "`coeffs` must be finite"."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(error, match=match):
            parse_config(raw)


@pytest.mark.parametrize("d, initial, backend, match", [
    (4, RANDOM, "spectral", r"\[initial\] kind='random' is a density on S² or S¹ .*got d=4: for d > 3 use kind = "
                            r'"particles"'),
    (3, RANDOM, "particles", r"backend='particles' moves tokens, .*kind='random' is a density: add `samples = N`"),
    (3, {"kind": "uniform"}, "particles-sh", r"add `samples = N` to \[initial\]"),
    (3, _P, "spectral", r"backend='spectral' evolves a density, .*kind='particles' gives tokens: use kind = "
                        r'"uniform", "random" or "perturbed"'),
    (3, {**RANDOM, "samples": 10}, "hybrid", r"\[initial\] `samples` gives tokens: leave out `samples`"),
])
def test_an_initial_kind_the_model_or_backend_cannot_take_gets_the_fix_in_the_files_terms(d, initial, backend, match):
    """The API's messages named Python calls a file cannot make ("sample a Density with Particles.from_density",
    "the zonal solver"), and [model] d = 4 with a density kind raised a KeyError traceback."""
    raw = {"model": {"beta": 2.0, "d": d}, "initial": dict(initial), "run": {"t_final": 0.1, "backend": backend}}
    with pytest.raises(ConfigError, match=match):
        parse_config(raw)


def test_choice_refuses_a_list_with_the_parameter_named():
    with pytest.raises(TypeError, match=r"`attention` must be one of \['sa', 'softmax', 'unnormalized', 'usa'\]"):
        mf.Model(1.0, attention=["softmax"])
    with pytest.raises(ValueError, match=r"`attention` must be one of"):
        mf.Model(1.0, attention="soft")


@pytest.mark.parametrize("kind, beta, expected", [("uniform", 4.0, 19), ("perturbed", 10.0, 28), ("uniform", 1.0, 16),
                                                  ("random", 4.0, 32), ("random", 40.0, 53)])
def test_a_density_default_band_limit_resolves_the_kernel(kind, beta, expected):
    # lmax = 16 by default made every β ≳ 3 configuration without lmax start with a warning (below the kernel's 19)
    from meanfield.sphere import kernel_bandlimit
    cfg = parse_config({"model": {"beta": beta}, "initial": {"kind": kind}, "run": {"t_final": 1.0}})
    assert cfg.initial.lmax == expected == max(16 if kind != "random" else 32, kernel_bandlimit(beta, 1e-12, 3))
    assert parse_config({"model": {"beta": beta}, "initial": {"kind": kind, "lmax": 8},
                         "run": {"t_final": 1.0}}).initial.lmax == 8


def test_a_density_sampled_into_tokens_keeps_the_kinds_default_band_limit(monkeypatch):
    # the kernel's band limit grows like β: at β = 10⁵ a sampled density took 27 s (and 45 GiB at 10⁶) to parse
    from meanfield import _config
    seen, real = [], _config._initial
    monkeypatch.setattr(_config, "_initial", lambda kind, c, d, k=0: (seen.append(k), real(kind, c, d, k))[1])
    raw = {"model": {"beta": 1e5}, "initial": {"kind": "random", "samples": 100}, "run": {"t_final": 1.0,
                                                                                          "backend": "particles"}}
    assert isinstance(parse_config(raw).initial, mf.Particles) and seen == [0]
    raw["initial"] = {"kind": "uniform"}
    raw["run"]["backend"] = "hybrid"
    raw["model"]["beta"] = 4.0
    assert parse_config(raw).initial.lmax == 19 and seen == [0, 19]


@pytest.mark.parametrize("table, key", [('kind = "particles"\nn = 10', "seed"),
                                        ('kind = "random"\nlmax = 4', "seed"),
                                        ('kind = "random"\nlmax = 4\nsamples = 10', "sample_seed")])
def test_a_seed_beyond_64_bits_is_refused_when_read(table, key):
    # it passed validation, the run started, and writing /run failed in h5py ("Object dtype has no native HDF5 ...")
    text = f"[model]\nbeta = 1.0\n[initial]\n{table}\n{key} = 99999999999999999999\n[run]\nt_final = 0.1\n"
    with pytest.raises(ValueError, match=rf"`{key}` must be an integer in \[0, 18446744073709551615\]"):
        parse_config(tomllib.loads(text), text)


def test_metadata_integers_beyond_64_bits_are_refused_up_front(tmp_path):
    with pytest.raises(ValueError, match=r"seed=1180591620717411303424 is outside \[-2\*\*63, 2\*\*64\)"):
        mf.simulate(mf.Model(1.0), mf.Particles.uniform(5), 0.1, backend="particles", checkpoint=tmp_path / "r.h5",
                    metadata={"seed": 2**70})
    assert not (tmp_path / "r.h5").exists()


@pytest.mark.parametrize("D, match", [
    ([[1.0, 0.0], [0.0]], r"got \[\[1\.0, 0\.0\], \[0\.0\]\], which is not a rectangular array of real numbers"),
    ([[1.0, 0.0], 1.0], r"which is not a rectangular array of real numbers"),
    ([True, False], r"`D` must be numbers; got booleans"),
])
def test_a_ragged_or_boolean_D_in_an_energy_table_is_refused_by_name(D, match):
    """A ragged D raised numpy's "setting an array element with a sequence … inhomogeneous shape"; [true, false]
    was read as diag(1, 0)."""
    text = f"[energy]\ntask = 'maximize'\nbeta = 1.0\nD = {D!r}\n".replace("True", "true").replace("False", "false")
    with pytest.raises(ConfigError, match=r"\[energy\]: `D` must .*" + match.split("`D` must ")[-1]):
        parse_config(tomllib.loads(text), text)


def test_a_configuration_saved_with_a_byte_order_mark_is_read(tmp_path):
    # editors on Windows save UTF-8 with a BOM: the file was "not valid TOML: Invalid statement (at line 1, column 1)"
    from meanfield._config import load_config, read_toml
    text = ('# β = 2\n[model]\nbeta = 2.0\n[initial]\nkind = "particles"\nn = 4\n[run]\nbackend = "particles"\n'
            't_final = 0.1\n')
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig) and cfg.model.beta == 2.0 and cfg.text == text
    assert read_toml(path)[1] == text
    from meanfield.cli import main
    out = tmp_path / "r.h5"                          # and --resume compares it with the stored text as read
    assert main(["run", str(path), "--output", str(out), "--quiet"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["run", str(path), "--output", str(out), "--resume", "--t-final", "0.2", "--quiet"]) == 0
    path.write_bytes(b"\xff\xfe[model]")             # not UTF-8: still said so
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(path)


@pytest.mark.parametrize("raw, error, start", [
    (_with("initial", lmax=-1), ValueError, "[initial] `lmax` must be an integer >= 0; got lmax=-1."),
    (_with("options", lmax=-1), ValueError, "[options] `lmax` must be an integer >= 1"),
    (_with("model", beta=-1.0), ValueError, "[model] `beta` must be finite and > 0; got beta=-1.0."),
    (_with("model", attention=["softmax"]), TypeError, "[model] `attention` must be one of"),
    (_with("model", scheme="mix-ln"), ValueError, "[model] `tau` (the Mix-LN switch time, τ ≥ 0) is required"),
    (_with("run", t_final=-1), ValueError, "[run] `t_final` must be finite and > 0; got t_final=-1."),
    (_with("run", backend="spectrl"), ValueError, "[run] `backend` must be one of ['hybrid', 'particles', "),
    (_with("run", checkpoint_every=0), ValueError, "[run] `checkpoint_every` must be an integer >= 1 or 'auto'"),
    (_with("run", save_every=0.1, t_eval=[0.2]), ValueError, "[run] Give either `save_every` or `t_eval`, not both."),
    (_with("options", rtoll=1e-6), TypeError, "[options] unknown option(s) ['rtoll'] for backend='spectral'"),
    (_with("options", rtol=2.0), ValueError, "[options] `rtol` must be in [1e-14, 1)"),
    (_with("run", backend="hybrid") | {"options": {"particle_options": {"step": 1e-300}}}, ValueError,
     "[options] particle_options: `step` must be ≥"),
    ({**RUN, "initial": {"kind": "particles", "n": 0}}, ValueError, "[initial] `n` must be an integer >= 1"),
    ({"model": {"beta": 1e308}, "initial": {"kind": "particles", "n": 4},
      "run": {"t_final": 0.1, "backend": "particles-sh"}}, ValueError, "[model] `beta` must be ≤ 1e9"),
])
def test_a_refused_value_names_its_table(raw, error, start):
    """"`lmax` must be an integer >= 0" did not say which `lmax`: [initial] and [options] both have one (nor did
    any value refused by the Model, the initial measure, the run or a backend name its table); the type is kept."""
    with pytest.raises(error) as info:
        parse_config(raw)
    assert str(info.value).startswith(start), str(info.value)


@pytest.mark.parametrize("raw, hint", [
    (_with("run", tfinal=1.0), " 'tfinal': did you mean 't_final'?"),
    ({**RUN, "model": {"beat": 1.0}}, " 'beat': did you mean 'beta'?"),
    (_with("run", beta=2.0), " 'beta' is a key of [model]."),
    (_with("initial", save_every=0.1), " 'save_every' is a key of [run]."),
    ({**RUN, "runs": {}}, " 'runs': did you mean 'run'?"),
    ({"energy": {"task": "minimize", "beta": 1.0, "levle": 3}}, " 'levle': did you mean 'level'?"),
])
def test_an_unknown_key_gets_the_likely_fix(raw, hint):
    """A misspelled key or a key put in the wrong table got the list of valid keys only, to be compared by eye."""
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert str(info.value).endswith(hint), str(info.value)


def test_a_key_with_no_likely_fix_gets_no_hint():
    with pytest.raises(ConfigError) as info:
        parse_config(_with("run", colour="red"))
    assert str(info.value).endswith("'t_final'].")


# ----------------------------------------------------------------------------------------------
# [initial] kind = "file": the tokens of a real model (embeddings saved with numpy)

def _file_run(tmp_path, d=8, **initial):
    """A run configuration reading its tokens from a file of ``tmp_path`` (the configuration's folder)."""
    from meanfield._config import load_config

    lines = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in {"kind": "file", **initial}.items())
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[model]\nbeta = 2.0\nd = {d}\n[initial]\n{lines}[run]\nbackend = \"particles\"\n"
                   "t_final = 0.3\nsave_every = 0.1\n")
    return load_config(cfg)


def test_a_npy_file_is_read_as_ambient_embeddings_relative_to_the_configuration(tmp_path, monkeypatch):
    x = np.random.default_rng(1).normal(size=(40, 8)) * np.linspace(0.5, 30, 40)[:, None]   # any norm
    np.save(tmp_path / "tokens.npy", x)
    monkeypatch.chdir("/")          # the path is read from the configuration's folder, not the current directory
    cfg = _file_run(tmp_path, path="tokens.npy")
    expected = mf.Particles.from_ambient(x)
    assert cfg.initial == expected
    assert "tokens.npy" in cfg.source and "40 tokens in R^8" in cfg.source and "sha256 " in cfg.source
    got = mf.simulate(cfg.model, cfg.initial, cfg.t_final, backend=cfg.backend, **cfg.save, **cfg.options)
    ref = mf.simulate(cfg.model, expected, 0.3, backend="particles", save_every=0.1)
    for a, b in zip(got.states, ref.states):        # bit for bit
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.radii, b.radii)
        assert np.array_equal(a.weights, b.weights)


def test_a_npz_file_gives_positions_weights_and_radii(tmp_path):
    rng = np.random.default_rng(2)
    x, w, r = rng.normal(size=(10, 5)), rng.uniform(0, 1, 10), rng.uniform(0.5, 2, 10)
    np.savez(tmp_path / "a.npz", positions=x, weights=w)
    assert _file_run(tmp_path, d=5, path="a.npz").initial == mf.Particles.from_ambient(x, w)
    np.savez(tmp_path / "b.npz", positions=x, weights=w, radii=r)
    cfg = _file_run(tmp_path, d=5, path="b.npz")
    assert cfg.initial == mf.Particles(x, w, radii=r, normalize=True)       # directions normalized, radii as given


@pytest.mark.parametrize("write, initial, match", [
    (None, {"path": "missing.npy"}, r"\[initial\] cannot read `path` '.*missing.npy': No such file"),
    (None, {}, r'\[initial\] kind="file" needs `path`'),
    (lambda p: np.save(p / "t.npy", np.ones(8)), {"path": "t.npy"}, r"t.npy'.*shape \(n, d\).*got shape \(8,\)"),
    (lambda p: np.save(p / "t.npy", np.ones((4, 3))), {"path": "t.npy"}, r"shape \(4, 3\), tokens in R\^3, but "
                                                                          r"\[model\] d = 8"),
    (lambda p: np.save(p / "t.npy", np.where(np.eye(4, 8) > 0, np.nan, 1.0)), {"path": "t.npy"},
     r"t.npy'.*not finite \(NaN or ±inf\) at index \(0, 0\)"),
    (lambda p: np.save(p / "t.npy", np.array([[1, "a"]] * 2, dtype=object)), {"path": "t.npy"},
     r"t.npy' cannot be read as .npy without pickle"),
    (lambda p: np.save(p / "t.npy", np.full((2, 8), "a")), {"path": "t.npy"}, r"real numbers; got dtype <U1"),
    (lambda p: np.savez(p / "t.npz", x=np.ones((2, 8))), {"path": "t.npz"},
     r"holds `positions` and optional `weights`, `radii`; got arrays \['x'\]"),
    (lambda p: (p / "t.txt").write_text("1 2"), {"path": "t.txt"}, r"must name a .npy or .npz file"),
    (lambda p: np.save(p / "t.npy", np.ones((2, 8))), {"path": "t.npy", "sha256": "0" * 64},
     r"its SHA-256 is [0-9a-f]{64}, not the `sha256`"),
    (lambda p: np.save(p / "t.npy", np.zeros((2, 8))), {"path": "t.npy"}, r"\[initial\] `path` '.*t.npy': "),
])
def test_a_tokens_file_is_refused_up_front_naming_the_file_and_the_table(tmp_path, write, initial, match):
    if write is not None:
        write(tmp_path)
    with pytest.raises(ConfigError, match=match):
        _file_run(tmp_path, **initial)


def test_a_tokens_file_needs_a_particle_backend(tmp_path):
    np.save(tmp_path / "t.npy", np.ones((2, 3)))
    raw = {"model": {"beta": 1.0}, "initial": {"kind": "file", "path": str(tmp_path / "t.npy")},
           "run": {"t_final": 1.0}}
    with pytest.raises(ConfigError, match=r"backend='spectral' evolves a density, and \[initial\] kind='file'"):
        parse_config(raw)


def test_a_sweep_task_key_follows_the_contents_of_its_tokens_file(tmp_path):
    from meanfield._sweep._spec import load_sweep

    np.save(tmp_path / "t.npy", np.random.default_rng(3).normal(size=(6, 4)))
    sweep = tmp_path / "s.toml"
    sweep.write_text('[model]\nbeta = 1.0\nd = 4\n[initial]\nkind = "file"\npath = "t.npy"\n[run]\n'
                     'backend = "particles"\nt_final = 0.2\n[sweep]\ngrid = { "model.beta" = [1.0, 2.0] }\n')
    first = load_sweep(sweep)
    assert [t.key for t in load_sweep(sweep).tasks] == [t.key for t in first.tasks]
    assert first.tasks[0].config["initial"]["path"] == str((tmp_path / "t.npy").resolve())   # from any folder
    np.save(tmp_path / "t.npy", np.random.default_rng(4).normal(size=(6, 4)))
    changed = load_sweep(sweep)
    assert not {t.key for t in changed.tasks} & {t.key for t in first.tasks}
    # a task whose file changed after the sweep was read is refused by its pinned digest
    with pytest.raises(ConfigError, match="the file changed since it was pinned"):
        parse_config(first.tasks[0].config)


def test_model_matrices_can_be_npy_files_read_from_the_configuration_folder(tmp_path, monkeypatch):
    from meanfield._config import load_config

    rng = np.random.default_rng(6)
    Q, V = rng.normal(size=(4, 4)), rng.normal(size=(2, 4, 4))      # one head, and two heads
    np.save(tmp_path / "q.npy", Q)
    np.save(tmp_path / "v.npy", V)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nbeta = 1.0\nd = 4\nQ = "q.npy"\nV = { path = "v.npy" }\n[initial]\nkind = "particles"\n'
                   'n = 5\n[run]\nbackend = "particles"\nt_final = 0.1\n')
    monkeypatch.chdir("/")
    got = load_config(cfg)
    assert got.model == mf.Model(beta=1.0, d=4, Q=Q, V=V)
    assert f"Q from {str((tmp_path / 'q.npy').resolve())!r} (shape (4, 4), sha256 " in got.matrices
    assert "V from" in got.matrices and "K from" not in got.matrices

    np.save(tmp_path / "q.npy", np.full((4, 4), np.nan))
    with pytest.raises(ConfigError, match=r"\[model\] `Q` '.*q.npy': `Q` has a value that is not finite"):
        load_config(cfg)
    np.save(tmp_path / "q.npy", np.array([[1, "a"]], dtype=object))
    with pytest.raises(ConfigError, match=r"\[model\] `Q` '.*q.npy' cannot be read as .npy without pickle"):
        load_config(cfg)
    np.save(tmp_path / "q.npy", np.eye(3))
    with pytest.raises(ValueError, match=r"\[model\] `Q`"):       # the Model's own shape check, in the table
        load_config(cfg)
    (tmp_path / "q.npy").unlink()
    with pytest.raises(ConfigError, match=r"\[model\] cannot read `Q` '.*q.npy': No such file"):
        load_config(cfg)
    np.save(tmp_path / "q.npy", Q)
    cfg.write_text(cfg.read_text().replace('V = { path = "v.npy" }', 'V = { path = "v.npy", sha256 = "ab" }'))
    with pytest.raises(ConfigError, match=r"\[model\] `V` '.*v.npy': its SHA-256 is [0-9a-f]{64}, not the"):
        load_config(cfg)


def test_a_sweep_task_key_follows_the_contents_of_its_matrix_files(tmp_path):
    from meanfield._sweep._spec import load_sweep

    np.save(tmp_path / "q.npy", np.eye(3))
    sweep = tmp_path / "s.toml"
    sweep.write_text('[model]\nbeta = 1.0\nd = 3\nQ = "q.npy"\n[initial]\nkind = "particles"\nn = 4\n[run]\n'
                     'backend = "particles"\nt_final = 0.2\n[sweep]\ngrid = { "model.beta" = [1.0, 2.0] }\n')
    first = load_sweep(sweep)
    assert first.tasks[0].config["model"]["Q"]["path"] == str((tmp_path / "q.npy").resolve())
    np.save(tmp_path / "q.npy", 2 * np.eye(3))
    assert not {t.key for t in load_sweep(sweep).tasks} & {t.key for t in first.tasks}
    with pytest.raises(ConfigError, match="the file changed since it was pinned"):
        parse_config(first.tasks[0].config)


def test_an_object_array_inside_a_npz_is_refused_without_unpickling(tmp_path):
    # np.load of a .npz defers each array: the pickle refusal comes when `positions` is read, not when it opens
    np.savez(tmp_path / "t.npz", positions=np.array([[1, "a"]] * 2, dtype=object))
    with pytest.raises(ConfigError, match=r"\[initial\] `path` '.*t.npz' cannot be read as .npz without pickle"):
        _file_run(tmp_path, path="t.npz")


def test_a_matrix_string_that_is_no_npy_path_says_both_forms():
    with pytest.raises(ConfigError, match=r"\[model\] `Q` must be numbers .* or the path of a .npy file holding them"
                                          r" \(numpy.save\); got Q='wq.txt', whose suffix is not .npy"):
        parse_config(_with("model", Q="wq.txt"))
