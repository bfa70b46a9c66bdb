"""TOML run configurations: parse, validate every key, build the Model, the initial measure and the run.

A configuration has four tables; unknown tables or keys are errors that list the valid ones::

    [model]     beta, scheme, attention, d, Q, K, V, alpha, tau          (as meanfield.Model)
    [initial]   kind = "uniform" | "random" | "perturbed" | "particles", and its parameters
    [run]       backend, t_final, save_every | t_eval, checkpoint_every
    [options]   backend options (validated by the backend: lmax, rtol, on_resolution_loss, step, …)
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._measures import Density, Particles
from ._model import Model

_MODEL_KEYS = {"beta", "scheme", "attention", "d", "Q", "K", "V", "alpha", "tau"}
_INITIAL_KEYS = {
    "uniform": {"kind", "lmax"},
    "random": {"kind", "lmax", "seed", "degree", "amplitude", "r0"},
    "perturbed": {"kind", "lmax", "ell", "m", "eps"},
    "particles": {"kind", "n", "seed", "radius"},
}
_RUN_KEYS = {"backend", "t_final", "save_every", "t_eval", "checkpoint_every"}
_TABLES = {"model", "initial", "run", "options"}


class ConfigError(ValueError):
    """A configuration file with a missing, unknown or invalid entry."""


def _check_keys(where, given, valid):
    unknown = set(given) - set(valid)
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in [{where}]; valid keys: {sorted(valid)}.")


@dataclass
class RunConfig:
    model: Model
    initial: object
    backend: str
    t_final: float
    save: dict
    checkpoint_every: int
    options: dict
    text: str = ""
    seed: int | None = None
    raw: dict = field(default_factory=dict)


def read_toml(path, what: str = "configuration") -> tuple[dict, str]:
    """(parsed table, text) of a TOML file; unreadable or invalid files raise :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {e}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{str(path)!r} is not valid TOML: {e}") from None


def load_config(path) -> RunConfig:
    """Read and validate a TOML configuration file."""
    return parse_config(*read_toml(path))


def parse_config(raw: dict, text: str = "") -> RunConfig:
    _check_keys("top level", raw, _TABLES)
    for t in ("model", "initial", "run"):
        if t not in raw:
            raise ConfigError(f"the configuration needs a [{t}] table.")
    m = dict(raw["model"])
    _check_keys("model", m, _MODEL_KEYS)
    if "beta" not in m:
        raise ConfigError("[model] needs `beta`.")
    model = Model(**m)
    init = dict(raw["initial"])
    kind = init.get("kind")
    if kind not in _INITIAL_KEYS:
        raise ConfigError(f"[initial] `kind` must be one of {sorted(_INITIAL_KEYS)}; got kind={kind!r}.")
    _check_keys(f"initial] (kind={kind!r}", init, _INITIAL_KEYS[kind])
    initial, seed = _initial(kind, init, model.d)
    run = dict(raw["run"])
    _check_keys("run", run, _RUN_KEYS)
    if "t_final" not in run:
        raise ConfigError("[run] needs `t_final`.")
    save = {k: run[k] for k in ("save_every", "t_eval") if k in run}
    return RunConfig(model=model, initial=initial, backend=run.get("backend", "spectral"),
                     t_final=float(run["t_final"]), save=save, checkpoint_every=int(run.get("checkpoint_every", 1)),
                     options=dict(raw.get("options", {})), text=text, seed=seed, raw=raw)


def _initial(kind, c, d):
    if kind == "uniform":
        return Density.uniform(c.get("lmax", 16), d), None
    if kind == "random":
        seed = int(c.get("seed", 0))
        dens = Density.random(c.get("lmax", 32), d, seed=seed, degree=c.get("degree", 4),
                              amplitude=c.get("amplitude", 1.0))
        if "r0" in c:
            dens = Density(dens.coeffs, dens.lmax, d, Density.uniform(dens.lmax, d).coeffs * float(c["r0"]))
        return dens, seed
    if kind == "perturbed":
        lmax, ell, m, eps = c.get("lmax", 16), c.get("ell", 1), c.get("m", 0), c.get("eps", 1e-3)
        coeffs = Density.uniform(lmax, d).coeffs.copy()
        if d == 3:
            from .sphere._sh import lm_index
            coeffs[lm_index(lmax, ell, m)] += eps
        else:
            coeffs[ell] += eps / 2
        return Density(coeffs, lmax, d), None
    seed = int(c.get("seed", 0))
    n = c.get("n", 1000)
    radius = c.get("radius")
    return Particles.uniform(n, d, seed=seed, radii=None if radius is None else np.full(n, float(radius))), seed
