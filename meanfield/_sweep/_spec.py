"""Sweep files: a base run configuration plus a ``[sweep]`` table; validation, tasks and their keys.

A sweep file is a run configuration (the tables ``[model]``, ``[initial]``, ``[run]``, ``[options]`` of
:mod:`meanfield._config`) with one more table::

    [sweep]
    grid = { "model.beta" = [1.0, 2.0], "initial.seed" = [0, 1] }   # cartesian product of lists
    sets = [ { "run.backend" = "particles" }, { "run.backend" = "particles-sh" } ]   # explicit list
    observables = ["energy", "mean_alignment", "aligned_fraction", "collapsed_clusters"]
    at = "final"          # or "saved": every observable at every saved time (lists)
    aligned_tol = 1e-3    # pairs with ⟨θ_i, θ_j⟩ ≥ 1 − aligned_tol are aligned (and clustered together)
    hdf5 = false          # also write each task's trajectory to DIR/runs/<key>.h5
    table = ["csv", "jsonl"]

Parameter names are ``"table.key"`` (dotted TOML keys work too: ``[sweep.grid]`` with
``model.beta = [...]``).  With both ``grid`` and ``sets`` the tasks are every set combined with every
grid point.  Each task is the base configuration with its parameters substituted, keyed by a stable
hash of that configuration and of what is recorded (sorted JSON, SHA-256).
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .._config import _INITIAL_KEYS, _MODEL_KEYS, _RUN_KEYS, _TABLES, ConfigError, _check_keys, read_toml

SWEEP_KEYS = {"grid", "sets", "observables", "at", "aligned_tol", "hdf5", "table"}
AT = ("final", "saved")
TABLES = ("csv", "jsonl")
ALWAYS = ("status", "error", "wall_time")   # recorded for every task, whatever `observables` says
KEY_VERSION = 2
NO_CHECKPOINT = {"checkpoint_every", "checkpoint_interval"}   # [run] keys of `meanfield run` that a sweep has no use for
# Each task is checked (about a millisecond) and held in memory before any runs: a grid of 10⁸ points (one list
# too many) hung for hours and then ran out of memory.  The limit is checked on the product of the list lengths.
MAX_TASKS = 100_000


@dataclass(frozen=True)
class Task:
    """One parameter set: its parameters, the resolved run configuration and its key."""

    index: int
    params: dict
    config: dict
    key: str


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: the tasks and what to record for each."""

    tasks: list
    observables: tuple
    at: str = "final"
    aligned_tol: float = 1e-3
    hdf5: bool = False
    table: tuple = ("csv", "jsonl")
    base: dict = field(default_factory=dict, repr=False)
    text: str = field(default="", repr=False)
    definition: dict = field(default_factory=dict, repr=False)     # the parsed sweep file, [sweep] included
    #: the sweep file's folder (absolute), where its relative file paths are read from; "" when it reads no file
    folder: str = field(default="", repr=False)

    @property
    def parameter_names(self) -> list:
        """The swept parameters, in first-appearance order (linear in the tasks: the scan of a list per name made
        it quadratic, and the table's assembly asked for it once per row: 80 s for 10⁴ tasks)."""
        return list(dict.fromkeys(k for t in self.tasks for k in t.params))

    @property
    def record(self) -> dict:
        """The settings that determine a task's row besides its configuration (part of the key)."""
        return {"observables": list(self.observables), "at": self.at, "aligned_tol": self.aligned_tol,
                "hdf5": self.hdf5}


def load_sweep(path) -> SweepSpec:
    """Read and validate a sweep TOML file (or the ``sweep.json`` that a run stores for a sweep given as a dict).

    Parameters
    ----------
    path : str or Path
        The sweep file (a ``[sweep]`` table with ``grid`` and/or ``sets``, and the tables of a run
        configuration as the base of every task).  A name ending in ``.json`` is read as JSON: the
        ``DIR/sweep.json`` of a sweep run from a dict (:func:`parse_sweep`), which gives the same tasks, in the
        same order, with the same keys.

    Returns
    -------
    SweepSpec
        The tasks (one per parameter set, with its resolved configuration and key) and what to record.

    Raises
    ------
    ConfigError
        (a ``ValueError``) The file is missing, not TOML, or not a valid sweep.
    """
    return _load(path, check=True)


def _load(path, check: bool, folder=None) -> SweepSpec:
    """:func:`load_sweep`; with ``check=False`` without the value check of each task (:func:`_check_task`).
    ``folder``: where relative file paths are read from (default the file's own folder; a sweep's output folder
    stores the original's, see :attr:`SweepSpec.folder`)."""
    base = Path(folder) if folder else Path(path).parent      # where a relative [initial] path is read from
    if Path(path).suffix.lower() == ".json":     # was read as TOML: "not valid TOML: Invalid statement"
        return _parse(_read_json(Path(path)), "", check, base)
    return _parse(*read_toml(path, "sweep file"), check, base)


def _read_json(path) -> dict:
    """The sweep definition in the JSON file ``path`` (as written by a run: non-finite numbers as "inf", …)."""
    from .._io import json_value

    try:
        raw = json_value(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read sweep file {str(path)!r}: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{str(path)!r} is not UTF-8 text, as a JSON sweep file must be ({e.reason} at byte "
                          f"{e.start}).") from None
    except ValueError as e:
        raise ConfigError(f"{str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{str(path)!r} must hold a JSON object (the sweep's tables); got {type(raw).__name__}.")
    return raw


def parse_sweep(raw: dict, text: str = "") -> SweepSpec:
    """Validate a parsed sweep file (a dict as from ``tomllib``) into a :class:`SweepSpec`.

    Parameters
    ----------
    raw : dict
        The parsed file.
    text : str, optional
        Its text, stored with the results (``DIR/sweep.toml``).

    Returns
    -------
    SweepSpec

    Raises
    ------
    ConfigError
        (a ``ValueError``) The sweep is not valid (unknown keys or tables, empty grid values, a bad
        parameter address, …).
    """
    return _parse(raw, text, check=True)


def _parse(raw: dict, text: str, check: bool, base=None) -> SweepSpec:
    """:func:`parse_sweep`; ``check=False`` leaves out the value check of each task (a run configuration read as a
    run reads it, about 1.5 ms per task): ``meanfield info DIR`` needs only the tasks' parameters and keys, of a
    sweep file that was checked when it ran (15 s of its 17 s for 10⁴ tasks)."""
    from ._observables import OBSERVABLES

    definition = _plain(raw)
    raw = copy.deepcopy(definition)
    if "sweep" not in raw:
        raise ConfigError("a sweep file needs a [sweep] table (with `grid` and/or `sets`).")
    sw = raw.pop("sweep")
    if not isinstance(sw, dict):
        raise ConfigError("[sweep] must be a table.")
    _check_keys("sweep", sw, SWEEP_KEYS)
    _check_keys("top level", raw, _TABLES | {"sweep"})

    grid = _flatten(sw.get("grid", {}), "sweep.grid")
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"[sweep] grid values must be non-empty lists; got {name} = {values!r}.")
    sets = sw.get("sets", [{}] if grid else None)
    if sets is None:
        raise ConfigError("[sweep] needs `grid` (lists to combine) and/or `sets` (a list of parameter tables).")
    if not isinstance(sets, list) or not sets or not all(isinstance(s, dict) for s in sets):
        raise ConfigError("[sweep] `sets` must be a non-empty list of tables, e.g. "
                          "sets = [{ \"model.beta\" = 1.0 }, { \"model.beta\" = 2.0 }].")
    sets = [_flatten(s, f"sweep.sets[{i}]") for i, s in enumerate(sets)]
    for name in list(grid) + [k for s in sets for k in s]:
        _check_address(name)

    observables = sw.get("observables", ["energy", "mean_alignment"])
    if isinstance(observables, str):
        observables = [observables]
    if not isinstance(observables, list):
        raise ConfigError(f"[sweep] `observables` must be a list of names; got {observables!r}.")
    valid = sorted(set(OBSERVABLES) | set(ALWAYS))
    unknown = [o for o in observables if o not in valid]
    if unknown:
        raise ConfigError(f"unknown observable(s) {unknown} in [sweep]; valid observables: {valid}.")
    observables = tuple(dict.fromkeys(o for o in observables if o not in ALWAYS))
    at = sw.get("at", "final")
    if at not in AT:
        raise ConfigError(f"[sweep] `at` must be one of {list(AT)}; got at={at!r}.")
    tol = sw.get("aligned_tol", 1e-3)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 2:
        raise ConfigError(f"[sweep] `aligned_tol` must be a number in (0, 2); got aligned_tol={tol!r}.")
    hdf5 = sw.get("hdf5", False)
    if not isinstance(hdf5, bool):
        raise ConfigError(f"[sweep] `hdf5` must be true or false; got hdf5={hdf5!r}.")
    table = sw.get("table", list(TABLES))
    table = [table] if isinstance(table, str) else table
    if not isinstance(table, list) or not table or any(t not in TABLES for t in table):
        raise ConfigError(f"[sweep] `table` must be a non-empty list of {list(TABLES)}; got table={table!r}.")

    count = len(sets) * math.prod(len(v) for v in grid.values())
    if count > MAX_TASKS:
        sizes = " × ".join([f"{len(sets)} sets"] * (len(sets) > 1) + [f"{len(v)} {n}" for n, v in grid.items()])
        raise ConfigError(f"[sweep] has {count} tasks ({sizes}); at most {MAX_TASKS} tasks per sweep file: "
                          "split it into several sweep files, each with its own --output.")
    spec = SweepSpec(tasks=[], observables=observables, at=at, aligned_tol=float(tol), hdf5=hdf5,
                     table=tuple(dict.fromkeys(table)), base=raw, text=text, definition=definition)
    names = list(grid)
    tasks, seen, digests = [], {}, {}
    for s in sets:
        clash = sorted(set(s) & set(grid))
        if clash:
            raise ConfigError(f"parameter(s) {clash} appear in both `grid` and `sets` of [sweep].")
        for combo in itertools.product(*(grid[n] for n in names)):
            params = {**s, **dict(zip(names, combo))}
            config = resolve(raw, params)
            try:
                check_structure(config)
            except ConfigError as err:      # which task: "initial.kind" = ["uniform", "particles"] named none
                raise ConfigError(f"task {params}: {err}" if params else str(err)) from None
            _pin_tokens_file(config, base, digests, check)
            key = task_key(config, spec.record)
            if key in seen:
                raise ConfigError(f"duplicate parameter sets in [sweep]: {seen[key]} and {params} give the same run.")
            try:
                if check:
                    _check_task(config, params)
            except ConfigError as err:
                # only the key at fault: a list-valued t_eval beside a bad beta is no mistake
                listed = sorted(k for k, v in s.items()
                                if isinstance(v, list) and f"`{k.partition('.')[2]}`" in str(err))
                if not listed:
                    raise
                # sets = [{ "model.beta" = [1.0, 2.0] }] meant two tasks: "`beta` must be a real number" said not why
                raise ConfigError(f"{err} (In `sets`, {', '.join(repr(k) for k in listed)} is given a list: a value of "
                                  "a set is one task's value; lists of values to combine go in `grid`.)") from None
            seen[key] = params
            tasks.append(Task(index=len(tasks), params=params, config=config, key=key))
    object.__setattr__(spec, "tasks", tasks)
    if digests and base is not None:
        object.__setattr__(spec, "folder", str(Path(base).resolve()))
    return spec


def _plain(value):
    """``value`` (a copy) with numpy scalars and arrays as Python numbers and lists, as TOML gives them: a dict with
    ``"initial.seed": list(np.arange(12))`` stopped at the key's JSON ("Object of type int64 is not JSON
    serializable"), and its sweep.json could not be written."""
    import numpy as np

    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return copy.deepcopy(value)


def _flatten(d, where, prefix=""):
    """{"model": {"beta": [..]}} and {"model.beta": [..]} both → {"model.beta": [..]}.

    Only down to "table.key": below it a table is the parameter's value (a hybrid run's ``particle_options``), so
    ``{ "options.particle_options" = { rtol = 1e-8 } }`` in ``sets`` is that option, as the same table in a grid list
    is (it was split into the parameter 'options.particle_options.rtol' and refused)."""
    if not isinstance(d, dict):
        raise ConfigError(f"[{where}] must be a table of parameters; got {d!r}.")
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        inner = _flatten(v, where, name + ".") if isinstance(v, dict) and "." not in name else {name: v}
        for key, value in inner.items():
            if key in out:       # `model.beta` (a dotted key) and `"model.beta"` (one quoted key) name one parameter
                raise ConfigError(f"[{where}] gives the parameter {key!r} twice (as a dotted and as a quoted key).")
            out[key] = value
    return out


def _check_address(name):
    table, _, key = name.partition(".")
    if table not in _TABLES or not key or "." in key:
        raise ConfigError(f"sweep parameter {name!r} must be \"table.key\" with table one of {sorted(_TABLES)}, "
                          "e.g. \"model.beta\", \"initial.seed\", \"run.backend\", \"options.step\".")
    valid = {"model": _MODEL_KEYS, "run": _RUN_KEYS,
             "initial": set().union(*_INITIAL_KEYS.values())}.get(table)
    if valid is not None and key not in valid:
        # not the checkpoint keys, which a sweep refuses (check_structure): the list offered them as valid
        raise ConfigError(f"unknown sweep parameter {name!r}; valid keys of [{table}]: "
                          f"{sorted(valid - NO_CHECKPOINT)}.")


def _pin_tokens_file(config: dict, base, digests: dict, check: bool) -> None:
    """[initial] kind = "file": the task's ``path`` made absolute (a worker reads it from wherever it runs) and its
    contents' SHA-256 put in as ``sha256``, so the key changes with the file (a changed file is a new task, not one
    already done) and a file changed while the sweep runs is refused by the task (digest mismatch).  With
    ``check=False`` (``meanfield info DIR``) a file that cannot be read is left as written (its tasks' keys then
    differ from those of the run)."""
    from .._config import read_tokens_file, tokens_path

    _pin_matrix_files(config, base, digests, check)
    init = config["initial"]
    if init.get("kind") != "file":
        return
    try:
        path = tokens_path(init, base).resolve()
        if path not in digests:
            digests[path] = read_tokens_file(path)[1]
    except ConfigError:
        if check:
            raise
        return
    init["path"] = str(path)
    init.setdefault("sha256", digests[path])


def _pin_matrix_files(config: dict, base, digests: dict, check: bool) -> None:
    """[model] Q, K, V given as .npy paths: each becomes ``{ path = <absolute>, sha256 = <of its contents> }``, as
    the tokens file of [initial] (:func:`_pin_tokens_file`)."""
    from .._config import matrix_file, read_tokens_file

    model = config["model"]
    for name in ("Q", "K", "V"):
        try:
            given = matrix_file(name, model.get(name), base)
            if given is None or given[0].suffix.lower() != ".npy":      # parse_config says what is wrong
                continue
            path, pinned = given[0].resolve(), given[1]
            if path not in digests:
                digests[path] = read_tokens_file(path, f"[model] cannot read `{name}`")[1]
        except ConfigError:
            if check:
                raise
            continue
        model[name] = {"path": str(path), "sha256": pinned if pinned is not None else digests[path]}


def _check_task(config: dict, params: dict) -> None:
    """Every value a run checks when its file is read (model, initial measure, save times, backend, option names
    and values, fixed steps), for one task, before any task runs: a mistake stops the sweep up front (exit 2), as
    it stops ``meanfield run``, instead of becoming an ERROR row after the cluster has started."""
    from .._config import parse_config
    from .._errors import MeanfieldError

    try:
        parse_config(config)
    except (TypeError, ValueError, MeanfieldError) as err:       # ConfigError is a ValueError; MeanfieldError: a
        raise ConfigError(f"task {params}: {err}") from None    # model the backend cannot run, too little memory
    except (MemoryError, OverflowError) as err:
        raise ConfigError(f"task {params}: {type(err).__name__} while checking it: {err}") from None


def resolve(base: dict, params: dict) -> dict:
    """The run configuration of one task: ``base`` with each ``"table.key"`` of ``params`` substituted."""
    config = copy.deepcopy(base)
    for name, value in params.items():
        table, _, key = name.partition(".")
        config.setdefault(table, {})[key] = copy.deepcopy(value)
    return config


def check_structure(config: dict):
    """The key checks of :func:`meanfield._config.parse_config`, without building anything (no values checked)."""
    _check_keys("top level", config, _TABLES)
    for t in ("model", "initial", "run"):
        if t not in config:
            raise ConfigError(f"the configuration needs a [{t}] table (in the base or from the sweep).")
    _check_keys("model", config["model"], _MODEL_KEYS)
    kind = config["initial"].get("kind")
    if not isinstance(kind, str) or kind not in _INITIAL_KEYS:
        raise ConfigError(f"[initial] `kind` must be one of {sorted(_INITIAL_KEYS)}; got kind={kind!r}.")
    _check_keys("initial", config["initial"], _INITIAL_KEYS[kind], f" (kind={kind!r})")
    _check_keys("run", config["run"], _RUN_KEYS)
    ignored = sorted(NO_CHECKPOINT & set(config["run"]))
    if ignored:     # they were accepted and ignored (and, swept, gave the same run twice under two keys)
        raise ConfigError(f"[run] {', '.join(f'`{k}`' for k in ignored)}: a sweep task keeps no checkpoint (a task "
                          "that is stopped is run again from its start by a rerun); remove it from the sweep file.")
    for t, k in (("model", "beta"), ("run", "t_final")):
        if k not in config[t]:
            raise ConfigError(f"[{t}] needs `{k}` (in the base or from the sweep).")


def _canonical(value):
    """``value`` with integral floats as ints, recursively: 1 and 1.0 are the same run (and the same key)."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def task_key(config: dict, record: dict) -> str:
    """A stable key: SHA-256 of the sorted JSON of the run configuration and the recording settings, with
    numbers in canonical form (an integral float as an int)."""
    blob = json.dumps({"v": KEY_VERSION, "config": _canonical(config), "record": _canonical(record)},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]
