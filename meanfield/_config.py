"""TOML run configurations: parse, validate every key, build the Model, the initial measure and the run.

A configuration has four tables; unknown tables or keys are errors that list the valid ones::

    [model]     beta, scheme, attention, d, Q, K, V, alpha, tau          (as meanfield.Model; Q, K, V also as .npy paths)
    [initial]   kind = "uniform" | "random" | "perturbed" | "particles" | "file", and its parameters
    [run]       backend, t0, t_final, save_every | t_eval, checkpoint_every, checkpoint_interval
    [options]   backend options (validated by the backend: lmax, rtol, on_resolution_loss, step, …)

An energy problem (the extremizers and stationary states of E_{β,D}, :mod:`meanfield._energy`) is a
file with the single table ``[energy]`` instead: ``task`` = "minimize" | "maximize" | "stationary",
``beta``, ``D``, ``d`` and the keyword arguments of :func:`~meanfield.minimize_energy`,
:func:`~meanfield.maximize_energy` or :func:`~meanfield.find_stationary` under their own names
(:func:`parse_config` returns an :class:`EnergyConfig` for it).
"""
from __future__ import annotations

import contextlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._measures import Density, Particles
from ._model import Model
from ._trajectory import save_times
from ._validate import nonneg_int, positive_float, real_number, save_every_count
from ._validate import check_options
from ._validate import checkpoint_every as _checkpoint_every
from .backends._registry import check_option_values, get_backend

_MODEL_KEYS = {"beta", "scheme", "attention", "d", "Q", "K", "V", "alpha", "tau"}
SEED_MAX = 2**64 - 1       # seeds are stored in the result file's /run attributes: 64-bit (unsigned) integers
_SAMPLE_KEYS = {"samples", "sample_seed"}     # a density kind with `samples = N`: N i.i.d. tokens drawn from it
_INITIAL_KEYS = {
    "uniform": {"kind", "lmax"} | _SAMPLE_KEYS,
    "random": {"kind", "lmax", "seed", "degree", "amplitude", "r0"} | _SAMPLE_KEYS,
    "perturbed": {"kind", "lmax", "ell", "m", "eps"} | _SAMPLE_KEYS,
    "particles": {"kind", "n", "seed", "radius"},
    "file": {"kind", "path", "sha256"},
}
_FILE_ARRAYS = ("positions", "weights", "radii")     # the arrays of a .npz tokens file
_RUN_KEYS = {"backend", "t0", "t_final", "save_every", "t_eval", "checkpoint_every", "checkpoint_interval"}
_TABLES = {"model", "initial", "run", "options"}


class ConfigError(ValueError):
    """A configuration file with a missing, unknown or invalid entry."""


def _check_keys(where, given, valid, qualifier: str = ""):
    """Refuse keys of table ``where`` outside ``valid`` (``where="top level"``: the table names)."""
    unknown = set(given) - set(valid)
    if not unknown:
        return
    hint = _key_hints(where, unknown, valid)
    if where == "top level":
        raise ConfigError(f"unknown table(s) {sorted(unknown)}; valid tables: {sorted(valid)} for a run, or a single "
                          f"[energy] table for an energy problem.{hint}")
    raise ConfigError(f"unknown key(s) {sorted(unknown)} in [{where}]{qualifier}; valid keys: {sorted(valid)}.{hint}")


def _key_hints(where, unknown, valid) -> str:
    """" Did you mean …?" for a misspelled key (a close match among ``valid``), and where a key of a run's other
    table belongs (``beta`` in [run]: it is a key of [model]); "" when there is nothing to suggest."""
    import difflib

    home = {"model": _MODEL_KEYS, "initial": set().union(*_INITIAL_KEYS.values()), "run": _RUN_KEYS}
    hints = []
    for key in sorted(map(str, unknown)):
        close = difflib.get_close_matches(key, sorted(map(str, valid)), n=1, cutoff=0.7)
        tables = [t for t, keys in home.items() if where in home and t != where and key in keys]
        if close:
            hints.append(f"{key!r}: did you mean {close[0]!r}?")
        elif tables:
            hints.append(f"{key!r} is a key of [{tables[0]}].")
    return "".join(f" {h}" for h in hints)


@dataclass
class RunConfig:
    model: Model
    initial: object
    backend: str
    t_final: float
    save: dict
    checkpoint_every: int | str
    options: dict
    checkpoint_interval: float = 600.0
    text: str = ""
    seed: int | None = None
    raw: dict = field(default_factory=dict)
    t0: float = 0.0     # the start time: time-dependent models (LN-Scaling, α(t), Mix-LN's τ) read the clock
    source: str | None = None   # where kind = "file" read its tokens (path, shape, sha256), recorded in the result
    matrices: str | None = None     # where [model] Q, K, V given as .npy files were read from


def read_toml(path, what: str = "configuration") -> tuple[dict, str]:
    """(parsed table, text) of a TOML file; unreadable or invalid files raise :class:`ConfigError`."""
    path = Path(path)
    try:
        # UTF-8 whatever the locale (TOML's encoding), and without the byte-order mark some editors write first:
        # tomllib reads it as a character and the file was "not valid TOML: Invalid statement (at line 1, column 1)"
        text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except OSError as e:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{str(path)!r} is not UTF-8 text, as a TOML {what} must be ({e.reason} at byte {e.start}); "
                          "an HDF5 result is read with `meanfield info`.") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{str(path)!r} is not valid TOML: {e}") from None


def load_config(path) -> RunConfig | EnergyConfig:
    """Read and validate a TOML configuration file (a run, or an energy problem with an ``[energy]`` table)."""
    return parse_config(*read_toml(path), base=Path(path).parent)


def parse_config(raw: dict, text: str = "", base=None) -> RunConfig | EnergyConfig:
    """Validate a parsed configuration: a run (:class:`RunConfig`) or, with an ``[energy]`` table, an
    energy problem (:class:`EnergyConfig`).  A relative ``[initial] path`` is read from the folder ``base`` (the
    configuration file's; None: the current directory)."""
    if "energy" in raw:
        return parse_energy_config(raw, text)
    if "sweep" in raw:
        raise ConfigError("this is a sweep file (it has a [sweep] table): run it with `meanfield sweep FILE --output "
                          "DIR` (or meanfield.run_sweep).")
    _check_keys("top level", raw, _TABLES)
    for t in ("model", "initial", "run"):
        if t not in raw:
            raise ConfigError(f"the configuration needs the table [{t}] (a run has [model], [initial], [run] "
                              "and optional [options]; an energy problem the single table [energy]).")
    for t in _TABLES & set(raw):
        if not isinstance(raw[t], dict):
            raise ConfigError(f"[{t}] must be a table; got {t} = {raw[t]!r}.")
    m = dict(raw["model"])
    _check_keys("model", m, _MODEL_KEYS)
    if "beta" not in m:
        raise ConfigError("[model] needs `beta` (the inverse temperature β, a number > 0).")
    matrices = _matrix_files(m, base)
    with _in_table("model", _MODEL_KEYS):
        model = Model(**m)
    init = dict(raw["initial"])
    kind = init.get("kind")
    if not isinstance(kind, str) or kind not in _INITIAL_KEYS:
        raise ConfigError(f"[initial] `kind` must be one of {sorted(_INITIAL_KEYS)}; got kind={kind!r}.")
    _check_keys("initial", init, _INITIAL_KEYS[kind], f" (kind={kind!r})")
    run = dict(raw["run"])
    _check_keys("run", run, _RUN_KEYS)
    backend = run.get("backend", "spectral")
    with _in_table("run", _RUN_KEYS):
        get_backend(backend)            # a misspelled name is said before the initial measure is built for it
    _check_density_dimension(kind, model.d)
    # a density the spectral solver evolves starts at a band limit resolving the kernel; one only sampled into
    # tokens keeps the kinds' defaults (the kernel's band limit grows like β, and the sampler's grid with it)
    spectral = "samples" not in init and backend in ("spectral", "hybrid")
    source = None
    with _in_table("initial", _INITIAL_KEYS[kind]):
        if kind == "file":
            (initial, source), seed = _file_initial(init, model.d, base), None
        else:
            initial, seed = _initial(kind, init, model.d, _kernel_band_limit(model) if spectral else 0)
        if "samples" in init:
            initial = _samples(initial, init)
    _check_initial_for(kind, init, backend)
    if "t_final" not in run:
        raise ConfigError("[run] needs `t_final` (the final time, a number > `t0`, which is 0 by default).")
    save = {k: run[k] for k in ("save_every", "t_eval") if k in run}
    with _in_table("run", _RUN_KEYS, also=("Give either `save_every` or `t_eval`",)):
        t0 = positive_float("t0", run.get("t0", 0.0), allow_zero=True)
        t_final = positive_float("t_final", run["t_final"])
        save_every_count(t_final, save.get("save_every"), t0)
        times = save_times(t_final, **save, t0=t0)      # the save times are checked here, not when the run starts
        checkpoint_every = _checkpoint_every(run.get("checkpoint_every", "auto"))
        checkpoint_interval = positive_float("checkpoint_interval", run.get("checkpoint_interval", 600.0),
                                             allow_zero=True)
    options = dict(raw.get("options", {}))
    defaults = getattr(get_backend(backend), "option_defaults", None)       # a registered backend may lack it
    names = _option_names(options) | set(defaults() if defaults is not None else ())
    # a backend can refuse a model value for its solver (β too large for particles-sh's multipliers)
    with _in_table("model", _MODEL_KEYS), _in_table("options", names, also=("unknown option", "particle_options")):
        if defaults is not None:
            check_options(backend, options, defaults())       # the names first, listing the valid ones
        _refuse_unused_step_options(options)
        # the values too, as the backend checks them when the run starts, but without building the solver (the
        # particle backends on two probe tokens; spectral up to its set-up): a batch or a sweep stops before its
        # first run
        check_option_values(backend, model, initial, options, times)
    return RunConfig(model=model, initial=initial, backend=backend, t_final=t_final, save=save,
                     checkpoint_every=checkpoint_every, options=options, text=text, seed=seed, raw=raw,
                     checkpoint_interval=checkpoint_interval, t0=t0, source=source, matrices=matrices)


def _in_table(table: str, keys, also: tuple = ()):
    """Name the table of the file whose value was refused: "[initial] `lmax` must be …", where "`lmax` must be …"
    left the reader to guess between [initial] and [options] (both have an `lmax`).  See :func:`named_errors`."""
    return named_errors(f"[{table}] ", keys, also)


@contextlib.contextmanager
def named_errors(prefix: str, keys, also: tuple = ()):
    """Put ``prefix`` (where the value came from: "[initial] ", "--option ") in front of the errors about ``keys``.

    A TypeError, ValueError or MemoryError (and their subclasses) whose message starts with one of ``keys`` in
    backticks, or with one of the texts ``also``, is re-raised (the same object, so of the same type) with
    ``prefix`` in front.  Other messages pass unchanged: those that name a table already, and a backend's refusal
    of the model or the initial measure while it checks the options.
    """
    try:
        yield
    except (TypeError, ValueError, MemoryError) as e:
        text = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else None
        if text is not None and text.startswith(tuple(f"`{k}`" for k in keys) + tuple(also)):
            e.args = (f"{prefix}{text}",)
        raise


def _option_names(options: dict) -> set:
    """The option names of ``[options]``, those of its sub-tables (a hybrid run's ``particle_options``) included."""
    return set(options) | {k for v in options.values() if isinstance(v, dict) for k in v}


def _check_density_dimension(kind: str, d: int) -> None:
    """A density kind needs d = 2 or 3; said in the file's terms (the API's message points to the zonal solver,
    which a file has no kind for)."""
    if kind not in ("particles", "file") and d not in (2, 3):
        raise ConfigError(f"[initial] kind={kind!r} is a density on S² or S¹ ([model] d = 3 or 2); got d={d}: "
                          'for d > 3 use kind = "particles".')


def _check_initial_for(kind: str, init: dict, backend) -> None:
    """Refuse an [initial] measure that the [run] backend cannot take, with the fix in the file's terms (the API's
    message names a Python call, Particles.from_density, where a file has the key `samples`)."""
    tokens = kind in ("particles", "file") or "samples" in init
    if not tokens and backend in ("particles", "particles-sh"):
        raise ConfigError(f"[run] backend={backend!r} moves tokens, and [initial] kind={kind!r} is a density: add "
                          '`samples = N` to [initial] to draw N tokens from it, or use kind = "particles".')
    if tokens and backend in ("spectral", "hybrid"):
        given = f"kind={kind!r}" if kind in ("particles", "file") else "`samples`"
        raise ConfigError(f"[run] backend={backend!r} evolves a density, and [initial] {given} gives tokens: "
                          + ('use kind = "uniform", "random" or "perturbed"' if kind in ("particles", "file")
                             else "leave out `samples`")
                          + ', or backend = "particles" or "particles-sh".')


def _refuse_unused_step_options(options: dict) -> None:
    """Options a fixed-step run would ignore, refused when the file is read (so a batch stops before its first
    run), as the backends refuse them: at the top level and in a hybrid run's ``particle_options``."""
    from ._integrators import ADAPTIVE_OPTIONS, IMPLICIT_METHODS, METHODS, fixed_steps, refuse_unused

    for where, opts in (("[options]", options), ("[options] particle_options", options.get("particle_options"))):
        if not isinstance(opts, dict):
            continue
        method = opts.get("method")
        if not isinstance(method, (str, type(None))):
            raise ConfigError(f"{where} `method` must be a string, one of {sorted(METHODS) + sorted(IMPLICIT_METHODS)} "
                              f"(radau and bdf: particle backends only); got method={method!r}.")
        why = fixed_steps(opts)
        if why is not None:
            refuse_unused(opts, ADAPTIVE_OPTIONS, f"in {where}, {why}")


def _samples(density, c) -> Particles:
    """``samples`` i.i.d. tokens of the density (seed ``sample_seed``; radii from its radius field): a
    particle run from the same initial density as a spectral run of the same file without ``samples``."""
    n = c["samples"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"[initial] `samples` must be an integer ≥ 1; got samples={n!r}.")
    _fits(f"[initial] samples={n} tokens", 8.0 * n * (density.d + 3), "lower `samples`.")
    seed = nonneg_int("sample_seed", c.get("sample_seed", 0), maximum=SEED_MAX)
    return Particles.from_density(density, n, seed=seed)


def _fits(what: str, nbytes: float, advice: str) -> None:
    """Refuse, before allocating it, an initial measure that cannot fit in memory (a clear error naming the key,
    not a MemoryError traceback)."""
    from ._memory import require

    require(nbytes, what, advice)


def _band_limit(c, default: int, d: int, minimum: int = 0) -> int:
    """``lmax`` of a density kind, checked, and refused up front when the quadrature grid it is projected on (about
    1.5(L+1) × 3(L+1) nodes on S², 40 bytes each with the node coordinates) cannot fit in memory."""
    lmax = nonneg_int("lmax", c.get("lmax", default), minimum=minimum)
    nodes = 4.5 * (lmax + 1) ** 2 if d == 3 else 3.0 * (lmax + 1)
    _fits(f"[initial] lmax={lmax}", 40.0 * nodes, "lower `lmax` (the band limit).")
    return lmax


def _kernel_band_limit(model) -> int:
    """The band limit that resolves the model's kernel to 1e-12 (what the spectral backend warns below), or 0 when
    the kernel is not isotropic (its grid is then chosen by the backend's quadrature_tol)."""
    if not model.isotropic:
        return 0
    from .sphere._funk_hecke import kernel_bandlimit
    try:
        return int(kernel_bandlimit(model.beta_eff, 1e-12, model.d))
    except ValueError:          # a β beyond the multipliers' range: the run's own checks say so
        return 0


def _initial(kind, c, d, kernel_lmax: int = 0):
    """The initial measure of ``[initial]``; a density's default ``lmax`` is its kind's (16, or 32 for "random"),
    raised to ``kernel_lmax`` when that is larger (a default that the run would warn about is no default)."""
    if kind == "uniform":
        return Density.uniform(_band_limit(c, max(16, kernel_lmax), d), d), None
    if kind == "random":
        seed = nonneg_int("seed", c.get("seed", 0), maximum=SEED_MAX)
        lmax = _band_limit(c, max(32, kernel_lmax), d)
        # Density.random checks `degree` (≤ lmax: the memory of its field is then within lmax's, checked above)
        # and `amplitude`, with its defaults
        dens = Density.random(lmax, d, seed=seed, **{k: c[k] for k in ("degree", "amplitude") if k in c})
        if "r0" in c:
            r0 = positive_float("r0", c["r0"])
            dens = Density(dens.coeffs, dens.lmax, d, Density.uniform(dens.lmax, d).coeffs * r0)
        return dens, seed
    if kind == "perturbed":
        return _perturbed(c, d, kernel_lmax), None
    seed = nonneg_int("seed", c.get("seed", 0), maximum=SEED_MAX)
    n = nonneg_int("n", c.get("n", 1000), minimum=1)
    _fits(f"[initial] n={n} tokens", 8.0 * n * (d + 3), "lower `n`.")
    radius = c.get("radius")
    radii = None if radius is None else np.full(n, positive_float("radius", radius))
    return Particles.uniform(n, d, seed=seed, radii=radii), seed


def tokens_path(c, base=None) -> Path:
    """The file of ``[initial] path`` (kind = "file"): a relative path is read from ``base``, the folder of the
    configuration file (the current directory when None), so a run does not depend on where it was started."""
    p = c.get("path")
    if not isinstance(p, str) or not p:
        raise ConfigError('[initial] kind="file" needs `path`, a string: a .npy array of shape (n, d) (ambient '
                          f"embeddings) or a .npz with `positions` and optional `weights`, `radii`; got path={p!r}.")
    return _resolved(p, base)


def _resolved(p: str, base) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else Path(base if base is not None else ".") / path


def read_tokens_file(path, where: str = "[initial] cannot read `path`") -> tuple[bytes, str]:
    """(contents, SHA-256 hex digest) of a file a configuration names; an unreadable one raises
    :class:`ConfigError` (``where``: what the message starts with)."""
    import hashlib

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{where} {str(path)!r}: {e.strerror or e}.") from None
    return data, hashlib.sha256(data).hexdigest()


def _check_pin(where: str, pinned, digest: str) -> None:
    if pinned is not None and pinned != digest:
        raise ConfigError(f"{where}: its SHA-256 is {digest}, not the `sha256` = {pinned!r} given with it: the file "
                          "changed since it was pinned.")


def _np_load(data: bytes, where: str, suffix: str):
    """The array (.npy) or the NpzFile (.npz) of ``data``, without pickle: a file runs no code."""
    import io
    import zipfile

    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ConfigError(f"{where} cannot be read as {suffix} without pickle (object arrays are refused): "
                          f"{e}") from None


def _check_real_finite(where: str, name: str, a) -> None:
    if a.dtype.kind not in "fiu":
        raise ConfigError(f"{where}: `{name}` must be an array of real numbers; got dtype {a.dtype}.")
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ConfigError(f"{where}: `{name}` has a value that is not finite (NaN or ±inf) at index "
                          f"{tuple(int(i) for i in bad)}.")


MATRIX_FILE_KEYS = {"path", "sha256"}


def matrix_file(name: str, value, base):
    """(path, pinned sha256) of a [model] matrix ``name`` given as a .npy path string, or as a table
    ``{ path = "...", sha256 = "..." }`` (how a sweep pins it); None for a matrix written out in the file."""
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict):
        return None
    _check_keys("model", value, MATRIX_FILE_KEYS, f" `{name}`")
    p = value.get("path")
    if not isinstance(p, str) or not p:
        raise ConfigError(f"[model] `{name}` as a table needs `path`, a string (a .npy file); got path={p!r}.")
    return _resolved(p, base), value.get("sha256")


def _matrix_files(m: dict, base) -> str | None:
    """Replace in ``m`` the matrices Q, K, V given as .npy files by their arrays (checked: readable, real, finite;
    the shapes are the Model's to check); the line saying where they came from, or None."""
    sources = []
    for name in ("Q", "K", "V"):
        given = matrix_file(name, m.get(name), base)
        if given is None:
            continue
        path, pinned = given
        where = f"[model] `{name}` {str(path)!r}"
        if path.suffix.lower() != ".npy":        # Q = "I" was, and is, refused as numbers
            raise ConfigError(f"[model] `{name}` must be numbers (a d×d matrix, or heads×d×d) or the path of a .npy "
                              f"file holding them (numpy.save); got {name}={m[name]!r}, whose suffix is not .npy.")
        data, digest = read_tokens_file(path, f"[model] cannot read `{name}`")
        _check_pin(where, pinned, digest)
        a = _np_load(data, where, ".npy")
        _check_real_finite(where, name, a)
        m[name] = a
        sources.append(f"{name} from {str(path.resolve())!r} (shape {a.shape}, sha256 {digest})")
    return "; ".join(sources) or None


def _file_initial(c, d: int, base) -> tuple[Particles, str]:
    """The tokens of ``[initial] kind = "file"`` and a line saying where they came from (path, shape, digest).

    The arrays are loaded from the bytes that were hashed (``allow_pickle=False``: a file runs no code), so
    ``sha256`` (given, or pinned by a sweep) is the digest of what is run."""
    path = tokens_path(c, base)
    where = f"[initial] `path` {str(path)!r}"
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise ConfigError(f"{where} must name a .npy or .npz file (numpy.save, numpy.savez); got suffix {suffix!r}.")
    data, digest = read_tokens_file(path)
    _check_pin(where, c.get("sha256"), digest)
    loaded = _np_load(data, where, suffix)
    try:
        arrays = {"positions": loaded} if suffix == ".npy" else {k: loaded[k] for k in loaded.files}
    except ValueError as e:             # an object array inside a .npz is met when it is read
        raise ConfigError(f"{where} cannot be read as {suffix} without pickle (object arrays are refused): "
                          f"{e}") from None
    _check_token_arrays(arrays, where, d, suffix)
    try:
        if "radii" in arrays:        # directions and radii apart: the directions are normalized on reading
            tokens = Particles(arrays["positions"], arrays.get("weights"), radii=arrays["radii"], normalize=True)
        else:
            tokens = Particles.from_ambient(arrays["positions"], arrays.get("weights"))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
    n = tokens.positions.shape[0]
    return tokens, f"file {str(path.resolve())!r} ({suffix[1:]}, {n} tokens in R^{d}, sha256 {digest})"


def _check_token_arrays(arrays: dict, where: str, d: int, suffix: str) -> None:
    """The arrays of a tokens file: known names, real numbers, positions of shape (n, d) with [model]'s d, finite."""
    unknown = sorted(set(arrays) - set(_FILE_ARRAYS))
    if unknown or "positions" not in arrays:
        raise ConfigError(f"{where}: a .npz tokens file holds `positions` and optional `weights`, `radii`; got "
                          f"arrays {sorted(arrays)}.")
    for name, a in arrays.items():
        _check_real_finite(where, name, a)
    x = arrays["positions"]
    what = "the array" if suffix == ".npy" else "`positions`"
    if x.ndim != 2 or x.shape[0] < 1:
        raise ConfigError(f"{where}: {what} must have shape (n, d) with n ≥ 1 (one token per row); got shape "
                          f"{x.shape}.")
    if x.shape[1] != d:
        raise ConfigError(f"{where}: {what} has shape {x.shape}, tokens in R^{x.shape[1]}, but [model] d = {d}.")


def _perturbed(c, d, kernel_lmax: int = 0) -> Density:
    """The uniform density plus ``eps`` times one harmonic: Y_ℓm on S² (the coefficient of degree ℓ and order
    m), cos ℓφ on S¹ (``m`` does not apply)."""
    lmax = _band_limit(c, max(16, kernel_lmax), d, minimum=1)
    ell, eps = nonneg_int("ell", c.get("ell", 1), minimum=1), real_number("eps", c.get("eps", 1e-3))
    if ell > lmax:
        raise ValueError(f"`ell` must be in 1..lmax = 1..{lmax} (the perturbed mode must be resolved); got ell={ell}.")
    coeffs = Density.uniform(lmax, d).coeffs.copy()
    if d == 3:
        from .sphere._sh import lm_index

        m = c.get("m", 0)
        if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m <= ell:
            raise ValueError(f"`m` must be an integer in 0..ell = 0..{ell} (the real part of Y_ℓm; cos mφ); "
                             f"got m={m!r}.")
        coeffs[lm_index(lmax, ell, m)] += eps
    else:
        if c.get("m", 0) != 0:
            raise ValueError(f"`m` applies to d = 3 (Y_ℓm); on S¹ the perturbation is cos(ℓφ); got m={c['m']!r}.")
        coeffs[ell] += eps / 2
    return Density(coeffs, lmax, d)


# ----------------------------------------------------------------------------------------------
# energy problems: one [energy] table

ENERGY_TASKS = ("minimize", "maximize", "stationary")
_ENERGY_COMMON = {"task", "beta", "D", "d"}
_ENERGY_KEYS = {           # the keyword arguments of the solver of each task, under the same names
    "minimize": _ENERGY_COMMON | {"lmax", "level", "degree", "quadrature_degree", "regularization"},
    "maximize": _ENERGY_COMMON | {"n_particles", "n_starts", "seed", "candidates", "tol"},
    "stationary": _ENERGY_COMMON | {"positions", "weights", "n", "seed", "direction", "flow", "tol", "t_max",
                                    "check_every", "method", "rtol", "atol", "step"},
}
# the keys of task = "stationary" that are options of the particle backend its flow runs on: "bdf" is how a stiff
# flow (clusters at β‖D‖ ≳ 10) reaches its stationary state, and a configuration could not ask for it
_STATIONARY_BACKEND_KEYS = ("method", "rtol", "atol", "step")
_MINIMIZE_BY_D = {2: {"lmax"}, 3: {"level", "degree", "quadrature_degree"}}   # discretization keys per d


@dataclass
class EnergyConfig:
    """A validated ``[energy]`` table: the problem (task, β, D, d) and the solver's keyword arguments.

    ``parameters`` are passed to :func:`~meanfield.minimize_energy`, :func:`~meanfield.maximize_energy`
    or :func:`~meanfield.find_stationary` as they are; ``start`` is the initial configuration of
    ``task = "stationary"`` (None otherwise).
    """

    task: str
    beta: float
    D: np.ndarray
    d: int
    parameters: dict
    start: Particles | None = None
    text: str = ""
    seed: int | None = None
    raw: dict = field(default_factory=dict)


def parse_energy_config(raw: dict, text: str = "") -> EnergyConfig:
    """Validate a configuration with an ``[energy]`` table (and no other table)."""
    from ._energy._kernel import check_beta, check_D, check_symmetric, dimension_for

    others = sorted(set(raw) - {"energy"})
    if others:
        raise ConfigError(f"an energy configuration has the single table [energy] (β, D and d included); "
                          f"got also {others}. Valid top-level table: ['energy'].")
    e = dict(raw["energy"])
    task = e.get("task")
    if task not in ENERGY_TASKS:
        raise ConfigError(f"[energy] `task` must be one of {list(ENERGY_TASKS)}; got task={task!r}.")
    _check_keys("energy", e, _ENERGY_KEYS[task], f" (task={task!r})")
    if "beta" not in e:
        raise ConfigError(f"[energy] needs `beta`; valid keys for task={task!r}: {sorted(_ENERGY_KEYS[task])}.")
    D = e.get("D")          # a list of d numbers is the diagonal: check_D reads it so (and names what was written)
    try:
        beta = check_beta(e["beta"])
        d = dimension_for(D, e.get("d"))
        D = check_symmetric(check_D(D, d), "an energy problem")
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[energy]: {err}") from None
    params = {k: v for k, v in e.items() if k not in _ENERGY_COMMON}
    start, seed = None, None
    if task == "minimize":
        if d not in _MINIMIZE_BY_D:
            raise ConfigError(f"[energy] task='minimize' needs `d` = 2 (S¹) or 3 (S²); got d={d}.")
        wrong = sorted(set(params) & _MINIMIZE_BY_D[5 - d])
        if wrong:
            valid = sorted(_ENERGY_KEYS["minimize"] - _MINIMIZE_BY_D[5 - d])
            raise ConfigError(f"[energy] key(s) {wrong} do not apply to task='minimize' with d={d}; "
                              f"valid keys: {valid}.")
    elif task == "maximize":
        try:
            seed = nonneg_int("seed", params.get("seed", 0), maximum=SEED_MAX)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"[energy]: {err}") from None
    else:
        start, seed = _energy_start(params, d)
        params = {k: v for k, v in params.items() if k not in ("positions", "weights", "n", "seed")}
    _check_energy_parameters(task, beta, D, d, params, start)
    return EnergyConfig(task=task, beta=beta, D=D, d=d, parameters=params, start=start, text=text,
                        seed=None if seed is None else int(seed), raw=raw)


def _check_energy_parameters(task, beta, D, d, params, start):
    """The solver's own checks of its keyword arguments (values, and memory), before any configuration runs."""
    from ._energy._flow import stationary_arguments
    from ._energy._maximize import maximize_arguments
    from ._energy._minimize import minimize_arguments
    from ._errors import InsufficientMemoryError

    from .backends._registry import check_option_values

    try:
        if task == "stationary":
            options = {k: params[k] for k in _STATIONARY_BACKEND_KEYS if k in params}
            model = stationary_arguments(start, beta, D, **{k: v for k, v in params.items()
                                                            if k not in _STATIONARY_BACKEND_KEYS})["model"]
            check_option_values("particles", model, start, options)
        else:
            (minimize_arguments if task == "minimize" else maximize_arguments)(beta, D, d, **params)
    except (TypeError, ValueError, InsufficientMemoryError) as err:
        raise ConfigError(f"[energy] (task={task!r}): {err}") from None


def _energy_start(params, d):
    """The initial particles of task = "stationary": explicit ``positions`` (and ``weights``) or ``n`` uniform."""
    if ("positions" in params) == ("n" in params):
        raise ConfigError("[energy] task='stationary' needs exactly one of `positions` (a list of points, "
                          "normalized on reading) and `n` (that many i.i.d. uniform points, with `seed`).")
    if "positions" in params:
        if "seed" in params:
            raise ConfigError("[energy] `seed` applies to a random start (`n`); got it with `positions`.")
        try:
            start = Particles(params["positions"], params.get("weights"), normalize=True)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"[energy]: {err}") from None
        if start.d != d:
            raise ConfigError(f"[energy] `positions` are points in R^{start.d} but d={d}.")
        return start, None
    if "weights" in params:
        raise ConfigError("[energy] `weights` applies to explicit `positions`; got it with `n`.")
    try:
        seed = nonneg_int("seed", params.get("seed", 0), maximum=SEED_MAX)
        return Particles.uniform(params["n"], d, seed=seed), seed
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[energy]: {err}") from None
