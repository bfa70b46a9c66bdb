"""Self-describing HDF5 results: write a Trajectory (or an energy or ensemble result) atomically, read it back as it
was.

Layout (version 1)::

    /                    attrs: format, format_version, meanfield_version, backend, status, detail, complete
    /model               attrs: beta, scheme, attention, d, alpha, tau; datasets Q, K, V when given
    /run                 attrs: t_final (default: the last saved time), options (JSON), resume (JSON),
                         config (TOML text, from the CLI), seed
    /scales/t            the saved times (a dimension scale)
    /states/000000 …     one group per saved state, attrs kind and t:
                         density: coeffs, [radius], attrs lmax, d; zonal: coeffs, [radius], axis;
                         particles: positions, weights, [radii]; species: sub-groups 0, 1, …
    /diagnostics/<name>  per saved time, dimension scale t attached
    /steps/<name>        per integrator step

An energy problem (``meanfield run`` on an ``[energy]`` configuration, an :class:`~meanfield.EnergyResult`)
has ``format = "meanfield-energy"`` and the layout::

    /                    attrs: format, format_version, meanfield_version, complete, task, value
    /problem             attrs: task, beta, d, parameters (JSON: the solver's keyword arguments); dataset D
    /run                 attrs: config (TOML text), seed
    /start               task "stationary": the initial particles (a state group, as above)
    /solution            attrs kind, value and, by kind:
                         minimizing-density (S¹): coeffs, nodal_values, attrs lmax, d;
                         fe-density (S²): values, vertices, triangles (the mesh; a file without
                         them: the icosahedral mesh of `level`), attrs level, degree, quadrature_degree;
                         maximizing-particles: positions, weights, attrs support, source, ascent_best, candidates;
                         stationary: attrs time, max_speed, converged; state/ (particles); trajectory/ (the
                         trajectory layout above: model, run, scales, states, diagnostics, steps)
    /solution/certificate  attrs class and the certificate's fields

An :class:`~meanfield.EnsembleResult` (:func:`meanfield.ensemble`) has ``format = "meanfield-ensemble"``::

    /                    attrs: format, format_version, meanfield_version, complete, replicas, confidence,
                         interval, options (JSON), backend, observable, sampler (JSON), t0, t_final, batched
    /model               as above
    /scales/t            the saved times (a dimension scale)
    /values              (R, T, ...); /mean, /std, /ci_low, /ci_high (T, ...); /count (T,)
    /statuses            (R,) codes, attrs names (JSON: the Status names they index)
    /seeds               the replicas' SeedSequences (attrs entropy, layout: see SEEDS_LAYOUT)
    /bootstrap_seed      interval "bootstrap": the resampling's SeedSequence, the same layout

Files are written to a temporary name in the same folder and renamed into place, so a reader (or a
crash) never sees a half-written result; the data reaches the disk before the rename
(:mod:`meanfield._durable`), so a power loss does not leave the new name with no data either.  Every non-empty array carries a Fletcher-32 checksum, and the
attributes one SHA-256 digest (root attribute ``attributes_sha256``; files written before it have none), so
a corrupted byte is reported (:class:`ResultFileError`) rather than read as a wrong number.  Reading never
unpickles anything: every dataset must have a numeric dtype.
"""
from __future__ import annotations

import glob
import json
import numbers
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._durable import replace_durably
from ._errors import MeanfieldError
from ._lockfile import pid_alive
from ._measures import Density, Particles, ZonalDensity
from ._model import Model
from ._schemes import SCHEMES, get_scheme

FORMAT = "meanfield-trajectory"
ENERGY_FORMAT = "meanfield-energy"
ENSEMBLE_FORMAT = "meanfield-ensemble"
#: the formats a meanfield result file has (attribute ``format`` of its root)
_FORMATS = (FORMAT, ENERGY_FORMAT, ENSEMBLE_FORMAT)
FORMAT_VERSION = 1


class ResultFileError(MeanfieldError, OSError):
    """A result or checkpoint file is missing, truncated, corrupted or not a meanfield file."""


class _ArgumentError(Exception):
    """Carries an error in an argument of :func:`load` (not in the file) past its diagnosis of damaged files."""


def check_output_path(name: str, path) -> Path:
    """``path`` as a Path, after checking, before any work, that a result file can be written there: a str or
    path-like, not a folder, in a folder that exists."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be a file path (a str or pathlib.Path); got {name}={path!r}.")
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"`{name}` must be a file path, not a folder; got {name}={str(p)!r}, which is a folder.")
    if not p.parent.is_dir():
        why = "is a file, not a folder" if p.parent.exists() else "does not exist"
        raise ValueError(f"`{name}` must be a file in an existing folder; got {name}={str(p)!r}: the folder "
                         f"{str(p.parent)!r} {why}.")
    check_replaceable(f"`{name}`", p)
    return p


def check_replaceable(name: str, path: Path) -> None:
    """Refuse to replace an existing non-empty file that is not a meanfield result (a file that is not HDF5, or an
    HDF5 file of other data): a typo'd --output must not overwrite a configuration, a script, notes or a data set
    with a result.  A damaged file that HDF5 cannot open is replaced."""
    if path.is_file() and path.stat().st_size > 0:
        import h5py

        if not h5py.is_hdf5(path):
            raise ValueError(f"{name}={str(path)!r} is an existing file that is not an HDF5 file; a result replaces "
                             "only an earlier result. Choose another path (a .h5 name), or remove that file first.")
        try:        # an HDF5 file of other data (an experiment's data.h5) was replaced all the same
            with h5py.File(path, "r") as f:
                fmt = f.attrs.get("format")
        except (OSError, RuntimeError, ValueError, KeyError):
            return      # unreadable (damaged): nothing left to lose, and a rerun must be able to replace it
        if fmt not in _FORMATS:
            raise ValueError(f"{name}={str(path)!r} is an existing HDF5 file that is not a meanfield result (no "
                             f"format attribute {' or '.join(map(repr, _FORMATS))}); a result replaces only an earlier "
                             "result. Choose another path, or remove that file first.")


def check_run_info(name: str, value, reserved=()) -> dict:
    """``value`` (None or a dict) as a dict a result file's ``/run`` group can hold: non-empty string keys (none of
    ``reserved``), values that are strings, numbers or booleans, or lists and dicts of them (stored as JSON)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"`{name}` must be a dict (str keys; strings, numbers, or lists and dicts of them); "
                        f"got {name}={value!r}.")
    for k, v in value.items():
        if not isinstance(k, str) or not k:
            raise TypeError(f"`{name}` keys must be non-empty strings; got the key {k!r} in {name}={value!r}.")
        if k in reserved:
            raise ValueError(f"`{name}` key {k!r} is reserved (the run's own record: {sorted(reserved)}); use "
                             "another name.")
        if isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) and not -2**63 <= v < 2**64:
            raise ValueError(f"`{name}` value {k}={v!r} is outside [-2**63, 2**64), the integers an HDF5 attribute "
                             "holds; store it as a string.")
        if isinstance(v, (str, bool, np.bool_, numbers.Number)):
            continue
        if isinstance(v, (Mapping, list, tuple, np.ndarray)):
            try:
                json.dumps(_finite_json(v), allow_nan=False, default=_strict_json_default)
                continue
            except (TypeError, ValueError):
                pass
        raise TypeError(f"`{name}` values must be strings, numbers or booleans, or lists and dicts of them; got "
                        f"{name}[{k!r}]={v!r}.")
    return dict(value)


def _strict_json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot store {o!r}")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if callable(o):
        return f"<callable {getattr(o, '__name__', repr(o))}>"
    raise TypeError(f"cannot store option value {o!r} in a result file")


_NON_FINITE = {"inf": float("inf"), "-inf": float("-inf"), "nan": float("nan")}


def _finite_json(v):
    """``v`` for strict JSON: non-finite floats as the strings "inf", "-inf", "nan" (JSON has no such numbers)."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    elif isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return "nan" if np.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _finite_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite_json(x) for x in v]
    return v


def _restore_json(v):
    """Inverse of :func:`_finite_json`: the strings "inf", "-inf", "nan" back to floats."""
    if isinstance(v, str):
        return _NON_FINITE.get(v, v)
    if isinstance(v, dict):
        return {k: _restore_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_restore_json(x) for x in v]
    return v


def json_text(value, **kw) -> str:
    """Strict JSON text of ``value`` (numpy values as Python; non-finite floats as "inf", "-inf", "nan")."""
    return json.dumps(_finite_json(value), default=_json_default, allow_nan=False, **kw)


def json_value(text: str):
    """The value of :func:`json_text` (files written before it, with Infinity and NaN, read the same)."""
    return _restore_json(json.loads(text))


def _put(g, name, data, **kw):
    """A dataset with a Fletcher-32 checksum (non-empty arrays), so a corrupted byte is an error on reading."""
    a = np.asarray(data)
    return g.create_dataset(name, data=a, fletcher32=a.ndim > 0 and a.size > 0, **kw)


def _write_state(g, state):
    if isinstance(state, tuple):
        g.attrs["kind"] = "species"
        for i, s in enumerate(state):
            _write_state(g.create_group(str(i)), s)
    elif isinstance(state, Density):
        g.attrs.update(kind="density", lmax=state.lmax, d=state.d)
        _put(g, "coeffs", state.coeffs)
        if state.radius is not None:
            _put(g, "radius", state.radius)
    elif isinstance(state, ZonalDensity):
        g.attrs.update(kind="zonal", lmax=state.lmax, d=state.d)
        _put(g, "coeffs", state.coeffs)
        _put(g, "axis", state.axis)
        if state.radius is not None:
            _put(g, "radius", state.radius)
    elif isinstance(state, Particles):
        g.attrs["kind"] = "particles"
        _put(g, "positions", state.positions, compression="gzip", compression_opts=1)
        _put(g, "weights", state.weights)
        if state.radii is not None:
            _put(g, "radii", state.radii)
    else:
        raise TypeError(f"cannot store a state of type {type(state).__name__}.")


def _array(ds) -> np.ndarray:
    """A dataset's values as a plain numeric array; anything else (strings, object, compound) is refused."""
    import h5py

    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "biufc":
        raise ResultFileError(f"{getattr(ds, 'name', ds)!r} is not a numeric dataset (dtype "
                              f"{getattr(ds, 'dtype', type(ds).__name__)}); a meanfield file holds plain numbers only.")
    # the stored number type must be exactly the native one: the Fletcher-32 checksum covers the data, not the
    # type in the header, and one flipped bit of a float's exponent bias read every time doubled
    if not ds.id.get_type().equal(h5py.h5t.py_create(ds.dtype)):
        raise ResultFileError(f"{ds.name!r} is damaged: its stored number type is not the plain {ds.dtype} that "
                              "meanfield writes.")
    return np.asarray(ds[()])


def _read_state(g):
    kind = g.attrs["kind"]
    if kind == "species":
        return tuple(_read_state(g[k]) for k in sorted(g, key=int))
    rad = _array(g["radius"]) if "radius" in g else None
    if kind == "density":
        return Density(_array(g["coeffs"]), int(g.attrs["lmax"]), int(g.attrs["d"]), rad)
    if kind == "zonal":
        return ZonalDensity(_array(g["coeffs"]), int(g.attrs["lmax"]), int(g.attrs["d"]), _array(g["axis"]), rad)
    if kind == "particles":
        return Particles(_array(g["positions"]), _array(g["weights"]), _array(g["radii"]) if "radii" in g else None)
    raise ResultFileError(f"unknown state kind {kind!r} in {g.name}.")


def _write_model(g, model: Model):
    alpha = model.alpha
    g.attrs.update(beta=model.beta, scheme=model.scheme, attention=model.attention, d=model.d,
                   alpha=float(alpha) if not callable(alpha) else np.nan,
                   alpha_callable=callable(alpha), alpha_repr=repr(alpha),
                   tau=np.nan if model.tau is None else model.tau)
    for name in "QKV":
        m = getattr(model, name)
        if m is not None:
            _put(g, name, m)


def _read_model(g, alpha=None) -> Model:
    a = g.attrs
    if bool(a["alpha_callable"]) and alpha is None:
        raise ResultFileError(f"the model used a callable alpha ({a['alpha_repr']}), which a file cannot hold; "
                              "pass `alpha=` to load() (or to resume(), which reads the file the same way).")
    tau = float(a["tau"])
    scheme = str(a["scheme"])
    if scheme not in SCHEMES:       # a user's scheme (register_scheme) in a process that has not registered it
        raise ResultFileError(f"the file was written with scheme={scheme!r}, which is not registered in this "
                              f"process (registered: {sorted(SCHEMES)}): import the module that registers it "
                              "(meanfield.register_scheme) before reading the file; on the command line, "
                              "`meanfield --import MODULE ...`.")
    given = alpha
    stored = float(a["alpha"]) if not bool(a["alpha_callable"]) else 1.0
    if not get_scheme(scheme).uses_alpha:
        stored = 1.0        # files written before Model refused it stored an alpha the scheme never used

    def model(alpha):
        return Model(float(a["beta"]), scheme, str(a["attention"]), int(a["d"]),
                     *(_array(g[n]) if n in g else None for n in "QKV"), alpha=alpha,
                     tau=None if np.isnan(tau) else tau)
    stored_model = model(stored)        # a file that does not make a Model is damaged (diagnosed by load)
    if given is None:
        return stored_model
    try:
        return model(given)
    except (TypeError, ValueError) as err:     # the file is fine (read above): the argument does not fit it
        raise _ArgumentError(type(err)(f"`alpha` does not fit the run in the file: {err}")) from None


#: What the arrays of a state group mean, stored as the attribute ``layout`` of ``/states``.
STATE_LAYOUT = (
    "One group per saved state, attrs kind and t. kind='density', d=3 (S²): coeffs = complex orthonormal "
    "spherical-harmonic coefficients rho_lm of the density w.r.t. the normalized uniform measure sigma (rho_00 = "
    "sqrt(4 pi) for mass 1, uniform density = 1), m >= 0 only, ducc0 order (m-major: (l,m) = (0,0), (1,0), …, (L,0), "
    "(1,1), …, (L,1), …, (L,L)); kind='density', d=2 (S¹): coeffs = Fourier c_0 … c_L of "
    "rho(phi) = sum_{|k|<=L} c_k e^{ik phi}, c_{-k} = conj(c_k), c_0 = 1 for mass 1; kind='zonal': coeffs = "
    "g_0 … g_L of rho(x) = sum_l g_l P_l(<x, axis>), P_l the Gegenbauer polynomials of S^{d-1} with P_l(1) = 1; radius: the "
    "radius field r(x), same layout; kind='particles': positions (n, d) unit directions, weights (sum 1), radii; "
    "kind='species': sub-groups 0, 1, … . The rest of the file: meanfield docs, 'The HDF5 result layout' (cli.md).")


def _write_trajectory(g, trajectory):
    """The trajectory layout (model, options, times, states, diagnostics, steps) into the group ``g``."""
    g.attrs.update(backend=trajectory.backend, status=trajectory.status.name, detail=trajectory.detail)
    _write_model(g.create_group("model"), trajectory.model)
    run = g.require_group("run")
    run.attrs["options"] = json_text(trajectory.options)
    t = _put(g, "scales/t", np.asarray(trajectory.times, dtype=float))
    t.make_scale("t")
    states = g.create_group("states")
    states.attrs["layout"] = STATE_LAYOUT      # a reader with h5py alone saw a complex array and no convention
    for i, (ti, s) in enumerate(zip(trajectory.times, trajectory.states)):
        sg = states.create_group(f"{i:06d}")
        sg.attrs["t"] = ti
        _write_state(sg, s)
    for k, v in trajectory.diagnostics.items():
        ds = _put(g, f"diagnostics/{k}", np.asarray(v, dtype=float))
        ds.dims[0].attach_scale(t)
    for k, v in trajectory.steps.items():
        _put(g, f"steps/{k}", np.asarray(v))


_HOST = socket.gethostname().replace("-", "_") or "host"


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the temporaries ``.NAME.tmp-HOST-PID`` of ``path`` left by killed writers of this host (PID no longer
    running); another host's (a shared file system) cannot be checked and are left."""
    for stale in path.parent.glob(glob.escape(f".{path.name}.tmp-{_HOST}-") + "*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        if not pid_alive(int(pid)):                    # running (as another user too): left alone
            stale.unlink(missing_ok=True)


_ATTRS_DIGEST = "attributes_sha256"
_DIGEST_VERSION = "digest_version"     # 2: the digest covers the names, types and shapes of the datasets too
_HDF5_ATTRIBUTES = frozenset({"CLASS", "NAME", "DIMENSION_LIST", "REFERENCE_LIST"})   # dimension scales (references)


def _attributes_digest(f, version: int = 2) -> str:
    """SHA-256 of the file's attributes (names, types, values) as h5py reads them back, but those of the states
    (their kind and time, which the checksummed arrays repeat: hashing them doubled the time to save 2000 states)
    and HDF5's own: the arrays carry Fletcher-32 checksums, the attributes (β, the scheme, the run record) none,
    and one flipped bit of β read 4.25 for 4.0 and resumed at it.  Version 2 adds the names, number types and
    shapes of the datasets outside the states (a flipped byte renamed ``mass_error``)."""
    import hashlib

    import h5py

    digest = hashlib.sha256()

    def add(name, obj):
        for key in sorted(obj.attrs):
            if (name == "" and key == _ATTRS_DIGEST) or key in _HDF5_ATTRIBUTES:
                continue
            v = obj.attrs[key]
            v = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            a = np.asarray(v)
            if a.dtype.kind == "O":
                a = np.asarray([str(x) for x in a.ravel()])
            digest.update(f"{name}/{key}:{a.dtype.str}{a.shape}:".encode() + a.tobytes())
        if version >= 2 and isinstance(obj, h5py.Dataset):
            digest.update(f"dataset {name}:{obj.dtype.str}{obj.shape};".encode())

    add("", f)
    for top in sorted(f):
        if top == "states":
            continue
        obj = f[top]
        add(top, obj)
        if isinstance(obj, h5py.Group):
            obj.visititems(lambda name, item, top=top: add(f"{top}/{name}", item))
    return digest.hexdigest()


_WRITE_MARGIN = 1 << 20          # bytes of HDF5 structure beyond the arrays, plus slack
_BYTES_PER_GROUP = 4096          # HDF5's overhead per stored state (a group, its attributes, its datasets' headers)


def _payload_bytes(trajectory) -> int:
    """An upper estimate of the bytes a trajectory's arrays take in its file (before compression)."""
    columns = list(trajectory.diagnostics.values()) + list(trajectory.steps.values())
    return (sum(_state_bytes(s) for s in trajectory.states)
            + sum(8 * np.size(v) for v in columns) + 8 * len(trajectory.times))


def _check_free_space(path: Path, nbytes: int) -> None:
    """Refuse, before HDF5 writes anything, a file that the disk cannot hold: HDF5 fails on a full disk deep in
    its writes and h5py then crashes the process (a segmentation fault) while closing the file."""
    import errno
    import shutil

    need = nbytes + _WRITE_MARGIN
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return                                      # unknown: let the write itself report
    if free < need:
        raise OSError(errno.ENOSPC, f"No space left on device: writing {str(path)!r} needs about "
                                    f"{need / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free")


def _atomic_write(path, fmt, write, run_info=None, complete=True, nbytes: int = 0) -> Path:
    """Write an HDF5 file through ``write(f)`` to a temporary name in the same folder, then rename it.

    ``nbytes``: an estimate of the arrays' size, checked against the free disk space before anything is written."""
    import h5py

    from . import __version__

    given = Path(path)
    # a symbolic link is written through, as h5py.File(link, "w") does: renaming the temporary onto the link itself
    # replaced the link by a file, and the file it named (a result on shared storage) kept the old content
    path = Path(os.path.realpath(given)) if given.is_symlink() else given
    tmp = path.with_name(f".{path.name}.tmp-{_HOST}-{os.getpid()}")
    _remove_stale_temporaries(path)
    _check_free_space(path, nbytes)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(format=fmt, format_version=FORMAT_VERSION, meanfield_version=__version__,
                           complete=complete)
            write(f)
            if not complete and f.attrs.get("status") == "OK":
                f.attrs["status"] = "INCOMPLETE"   # plain HDF5 readers must not take a checkpoint for a finished run
            run = f.require_group("run")
            for k, v in (run_info or {}).items():
                run.attrs[k] = json_text(v) if isinstance(v, (dict, list, tuple, np.ndarray)) else v
            f.attrs[_DIGEST_VERSION] = 2
            f.attrs[_ATTRS_DIGEST] = _attributes_digest(f)
            f.flush()
        replace_durably(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return given


def _state_bytes(s) -> int:
    if isinstance(s, tuple):
        return sum(_state_bytes(x) for x in s)
    return _BYTES_PER_GROUP + sum(v.nbytes for v in vars(s).values() if isinstance(v, np.ndarray))


def save(trajectory, path, *, run_info: dict | None = None, complete: bool | None = None) -> Path:
    """Write ``trajectory`` (or an energy or ensemble result) to the HDF5 file ``path`` atomically (temporary file +
    rename).

    Parameters
    ----------
    trajectory : Trajectory, EnergyResult or EnsembleResult
        A run of :func:`meanfield.simulate`, the :class:`~meanfield.EnergyResult` of an energy
        problem (written in the ``meanfield-energy`` layout, see :doc:`cli`), or the
        :class:`~meanfield.EnsembleResult` of :func:`meanfield.ensemble` (the ``meanfield-ensemble`` layout: its
        arrays, seeds, statuses and provenance; its fields are checked to fit together before anything is
        written).
    path : str or Path
        Target file; an existing file is replaced only once the new one is complete.
    run_info : dict, optional
        Not for an EnsembleResult.  Extra run attributes (a ``note``, the CLI ``config`` text, ``seed``;
        ``t_final``, ``resume`` options),
        added to the trajectory's own :attr:`~meanfield.Trajectory.run_info` (a key given here replaces the
        stored one): what :func:`load` read, or, for a run returned by :func:`simulate`, what its checkpoint
        would hold (its ``t_final``, the save times it did not reach, the step size of its last state), so
        that the file resumes as the checkpoint would.  Without a ``t_final`` in either (a Trajectory built
        by hand), ``t_final`` is the last saved time, so that ``meanfield info`` shows it and
        :func:`meanfield.resume` can extend the file.
    complete : bool, optional
        Not for an EnsembleResult.  False for a checkpoint of a run still in progress; default: the
        trajectory's ``run_info`` (a run from :func:`simulate` is complete when it reached its t_final; one
        stopped early, by a callback too, is saved resumable, as its checkpoint is), else True.

    Returns
    -------
    Path
        The file written (``path`` as a :class:`pathlib.Path`).

    Raises
    ------
    TypeError
        ``trajectory`` is not a Trajectory, an EnergyResult or an EnsembleResult, ``path`` is not a str or Path,
        ``complete`` is not a bool, ``run_info`` or ``complete`` is given with an EnsembleResult, or a field of an
        EnsembleResult has the wrong type.
    ValueError
        ``path`` is a folder, lies in a folder that does not exist, or is an existing file that is not a meanfield
        result (not HDF5, or HDF5 of other data: never replaced); the fields of an EnsembleResult do not fit
        together (the shapes of R replicas and T times, one seed and one status per replica).
    """
    from ._ensemble_result import EnsembleResult
    from ._trajectory import Trajectory

    if isinstance(trajectory, EnsembleResult):
        return _save_ensemble_checked(trajectory, path, run_info, complete)
    if not isinstance(trajectory, Trajectory):      # an energy result (its module is imported only for one)
        from ._energy._results import EnergyResult

        if not isinstance(trajectory, EnergyResult):
            raise TypeError(f"`trajectory` must be a Trajectory, an EnergyResult or an EnsembleResult; got "
                            f"{type(trajectory).__name__}." + _energy_solution_hint(trajectory))
    path = check_output_path("path", path)
    if run_info is not None:
        run_info = check_run_info("run_info", run_info, reserved=("options",))
    if complete is not None and not isinstance(complete, (bool, np.bool_)):
        raise TypeError(f"`complete` must be True, False or None (from the trajectory); got complete={complete!r}.")
    if not isinstance(trajectory, Trajectory):
        return _atomic_write(path, ENERGY_FORMAT, lambda f: _write_energy(f, trajectory),
                             {**(trajectory.run_info or {}), **(run_info or {})},
                             True if complete is None else complete)
    return _save_trajectory(trajectory, path, run_info, complete)


def _save_ensemble_checked(result, path, run_info, complete) -> Path:
    """:func:`save` of an EnsembleResult: its own record (provenance) only, no run record or checkpoint state."""
    if run_info is not None:
        raise TypeError("`run_info` is the run record of a Trajectory or an EnergyResult; an EnsembleResult records "
                        "its own provenance (model, backend, options, t0, t_final, observable, sampler): omit it.")
    if complete is not None:
        raise TypeError("`complete` marks the checkpoint of a run in progress; an EnsembleResult is saved complete: "
                        "omit it.")
    return _save_ensemble(result, check_output_path("path", path))


def _save_trajectory(trajectory, path, run_info=None, complete=None, point: ResumePoint | None = None) -> Path:
    """:func:`save` of a Trajectory (arguments checked), with the checkpoint's resume point if any."""
    stored = dict(getattr(trajectory, "run_info", {}) or {})
    complete = bool(stored.pop("complete", True)) if complete is None else complete
    # added to the run's own record: {"note": ...} alone dropped t_final, the save times still to come and the
    # step size, and a stopped run's file then read as complete at its last state
    run_info = {**stored, **(run_info or {})}
    last = float(trajectory.times[-1])
    if run_info.get("t_final") is None:
        run_info["t_final"] = last
    t_final = run_info["t_final"]
    # resume reads it as the run's end: "abc" failed there with "could not convert string to float", and an end
    # before the last state with "`t_eval` must be strictly increasing"
    if (isinstance(t_final, (bool, np.bool_)) or not isinstance(t_final, numbers.Real) or not np.isfinite(t_final)
            or t_final < last * (1 - 1e-12)):
        raise ValueError(f"`run_info` t_final must be a finite number ≥ the last saved time {last:g} (the end of the "
                         f"run); got t_final={t_final!r}.")

    def write(f):
        _write_trajectory(f, trajectory)
        if point is not None and not complete:
            _write_resume_point(f.create_group(_RESUME_POINT), point)
    nbytes = _payload_bytes(trajectory) + (_state_bytes(point.state) + np.asarray(point.stage).nbytes
                                           if point is not None else 0)
    return _atomic_write(path, FORMAT, write, run_info, complete, nbytes=nbytes)


def save_checkpoint(trajectory, path, point: ResumePoint | None) -> Path:
    """The checkpoint of a run in progress: ``trajectory`` (with its ``run_info`` record) and, if given, the
    state it reached past its last saved time, from which :func:`meanfield.resume` continues."""
    return _save_trajectory(trajectory, path, point=point)


# ----------------------------------------------------------------------------------------------
# resume points: where a checkpointed run stood between two save times

_RESUME_POINT = "resume_point"


@dataclass(frozen=True)
class ResumePoint:
    """A run's state at time ``t`` past its last saved state, and the options that continue from it exactly
    (the step size wanted there, the band limit).  Stored beside the trajectory of a checkpoint, not in it:
    ``t`` is not a save time, and the finished run holds the save times only."""

    t: float
    state: object
    resume: dict
    stage: np.ndarray | None = None     # the next step's first stage, when the backend reuses it (resume_stage)


def _write_resume_point(g, point: ResumePoint) -> None:
    g.attrs.update(t=float(point.t), resume=json_text(point.resume))
    _write_state(g.create_group("state"), point.state)
    if point.stage is not None:
        _put(g, "stage", point.stage, compression="gzip", compression_opts=1)


def read_resume_point(path) -> ResumePoint | None:
    """The resume point of a checkpoint (None when it has none: it was written at a save time, or before it
    existed)."""
    f = _open(path)
    try:
        with f:
            if _RESUME_POINT not in f:
                return None
            g = f[_RESUME_POINT]
            return ResumePoint(float(g.attrs["t"]), _read_state(g["state"]), dict(json_value(g.attrs["resume"])),
                               _array(g["stage"]) if "stage" in g else None)
    except ResultFileError:
        raise
    except (KeyError, OSError, ValueError, TypeError, RuntimeError, json.JSONDecodeError) as e:
        raise ResultFileError(f"{str(path)!r} is damaged: its resume point cannot be read: {type(e).__name__}: "
                              f"{e}") from None


def sweep_folder(path) -> bool:
    """Whether ``path`` is a sweep's output folder itself (it has the ``tasks`` folder of records), which
    ``meanfield info`` summarizes, as opposed to a file in it (:func:`_sweep_output`)."""
    path = Path(path)
    return path.is_dir() and (path / "tasks").is_dir()


def _sweep_output(path: Path) -> str | None:
    """What to say when ``path`` is a sweep's output folder or table, not a result file (None otherwise)."""
    folder = path if path.is_dir() else path.parent
    if folder.name == "tasks" and path.suffix in ("", ".json") and any(
            (folder.parent / n).is_file() for n in ("sweep.toml", "sweep.json", "results.jsonl", "results.csv")):
        folder = folder.parent          # DIR/tasks or a task's record DIR/tasks/<key>.json ("truncated or corrupted?")
    if not sweep_folder(folder) or not (path.is_dir() or path.suffix in (".jsonl", ".csv", ".toml", ".json")):
        return None
    runs = sorted((folder / "runs").glob("*.h5")) if (folder / "runs").is_dir() else []
    return (f"{str(path)!r} is the output of a sweep (`meanfield sweep`), not a run's result file: its table is "
            f"{str(folder / 'results.jsonl')!r} (or results.csv), one row per task"
            + (f"; the tasks' trajectories are the HDF5 files in {str(folder / 'runs')!r}" if runs else
               "; a sweep with `hdf5 = true` also writes each task's trajectory to runs/<key>.h5") + ".")


def _configuration_file(path: Path) -> str | None:
    """What to say when ``path`` is a TOML configuration or sweep file, not a result (None otherwise): `meanfield info
    CONFIG.toml` said "not a readable HDF5 file (truncated or corrupted?)" of an intact configuration."""
    import tomllib

    try:
        if path.stat().st_size > 1 << 22:               # far beyond a configuration: not read whole
            return None
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    if "sweep" in raw:
        what, run = "a sweep file", "run it with `meanfield sweep FILE --output DIR`"
    elif raw.keys() & {"model", "initial", "run", "energy"}:
        what, run = "a configuration", "run it with `meanfield run FILE --output RESULT.h5`, then read RESULT.h5"
    else:
        return None
    return f"{str(path)!r} is {what} (TOML), not a result file: {run}."


def _open(path):
    import h5py

    path = Path(path)
    if not path.exists():
        raise ResultFileError(f"result file {str(path)!r} does not exist.")
    sweep = _sweep_output(path)
    if sweep is not None:
        raise ResultFileError(sweep)
    if path.is_dir():           # HDF5's answer was a page: "truncated or corrupted?", errno = 21, buf = 0x7fff…
        raise ResultFileError(f"{str(path)!r} is a folder, not a result file: give the path of an HDF5 result "
                              "(e.g. RESULT.h5).")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        config = _configuration_file(path)
        if config is not None:
            raise ResultFileError(config) from None
        raise ResultFileError(f"{str(path)!r} is not a readable HDF5 file (truncated or corrupted?): {e}") from None
    try:
        if f.attrs.get("format") not in _FORMATS:
            raise ResultFileError(f"{str(path)!r} is not a meanfield result file (no format attribute "
                                  f"{' or '.join(map(repr, _FORMATS))}).")
        stored = f.attrs.get(_ATTRS_DIGEST)          # files written before it have none
        version = int(f.attrs.get(_DIGEST_VERSION, 1))
        if stored is not None and str(stored) != _attributes_digest(f, version):
            raise ResultFileError(f"{str(path)!r} is corrupted: its attributes (model parameters, run record) or "
                                  "the names and types of its datasets do not match their checksum.")
    except ResultFileError:
        f.close()
        raise
    except (KeyError, OSError, ValueError, TypeError, RuntimeError) as e:   # a damaged header HDF5 cannot walk
        f.close()
        raise ResultFileError(f"{str(path)!r} is damaged: {type(e).__name__}: {e}") from None
    return f


def _options_value(text) -> dict:
    """Backend options as a run holds them, from their JSON text (a callable was stored as its name)."""
    options = json_value(text)
    if isinstance(options.get("filter"), list):     # JSON has no tuple: the run's own options hold (strength, order)
        options["filter"] = tuple(options["filter"])
    return options


def _read_trajectory(g, alpha=None):
    from ._trajectory import Status, Trajectory

    model = _read_model(g["model"], alpha)
    times = _array(g["scales/t"])
    groups = g["states"]
    states = [_read_state(groups[k]) for k in sorted(groups)]
    diagnostics = {k: _array(g["diagnostics"][k]) for k in g.get("diagnostics", {})}
    steps = {k: _array(g["steps"][k]) for k in g.get("steps", {})}
    options = _options_value(g["run"].attrs["options"])
    if len(states) != len(times):
        raise ResultFileError(f"{g.file.filename!r} is inconsistent: {len(states)} states for {len(times)} times.")
    short = {k: len(v) for k, v in diagnostics.items() if np.shape(v) != np.shape(times)}
    if short:
        raise ResultFileError(f"{g.file.filename!r} is inconsistent: diagnostics of other lengths than its "
                              f"{len(times)} times ({', '.join(f'{k}: {n}' for k, n in short.items())}).")
    status, detail = Status[g.attrs["status"]], str(g.attrs["detail"])
    if status in (Status.OK, Status.INCOMPLETE) and not bool(g.attrs.get("complete", True)):
        # a checkpoint is written with the status of the steps so far: "OK" would read as "finished"
        t_final = _run_attr(g["run"].attrs.get("t_final"))
        status = Status.INCOMPLETE
        detail = f"Saved up to t = {times[-1]:g}" + (f" of t_final = {t_final:g}." if t_final is not None else ".")
    info = {k: v for k, v in _run_record(g).items() if k != "options"}
    return Trajectory(times=times, states=states, diagnostics=diagnostics, steps=steps, model=model,
                      backend=str(g.attrs["backend"]), status=status, detail=detail, options=options, run_info=info)


def load(path, *, alpha=None):
    """Read a result file written by :func:`save` (or a checkpoint) back into a :class:`Trajectory`.

    Parameters
    ----------
    path : str or Path
        An HDF5 file in the ``meanfield-trajectory``, ``meanfield-energy`` or ``meanfield-ensemble`` layout (see
        :doc:`cli`).
    alpha : float or callable, optional
        The nGPT/anGPT step α_t of the model.  Required when the run used a callable α (a file stores
        only its repr); otherwise it replaces the stored constant (nGPT/anGPT only: for the other schemes a
        stored α is read as 1, the value they use).  Not used for energy files.

    Returns
    -------
    Trajectory, EnergyResult or EnsembleResult
        The run as it was saved: times, states, diagnostics, steps, model, backend, options and status,
        and in ``run_info`` what the file records beside them (``t_final``, configuration text, seed,
        remaining save times, resume options, ``complete``).
        The checkpoint of a run still in progress (or killed) comes back with
        ``status = Status.INCOMPLETE`` (continue it with :func:`resume`).  A file written from an
        energy problem (``meanfield run`` on an ``[energy]`` configuration) is read back into its
        :class:`~meanfield.EnergyResult`, whose ``solution`` is the object the solver returned.  An ensemble's
        file is read back into an :class:`~meanfield.EnsembleResult` equal (``==``) to the one saved, but for
        a callable backend option, which the file holds as its name.

    Raises
    ------
    ResultFileError
        With a diagnosis, for a missing, truncated, corrupted or foreign file, and for a callable α
        that ``alpha`` does not supply.
    """
    if alpha is not None and not callable(alpha):
        from ._validate import positive_float

        positive_float("alpha", alpha)         # an argument error, not a damaged file
    f = _open(path)
    try:
        with f:
            if f.attrs["format"] == ENERGY_FORMAT:
                return _read_energy(f)
            if f.attrs["format"] == ENSEMBLE_FORMAT:
                return _read_ensemble(f, alpha)
            return _read_trajectory(f, alpha)
    except ResultFileError:
        raise
    except _ArgumentError as e:
        raise e.args[0] from None
    except (KeyError, OSError, ValueError, TypeError, RuntimeError, json.JSONDecodeError) as e:
        raise ResultFileError(f"{str(path)!r} is damaged or incomplete: {type(e).__name__}: {e}") from None


def file_attrs(path) -> dict:
    """The root attributes of a result file (format, format_version, meanfield_version, complete, …)."""
    f = _open(path)
    with f:
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}


def _run_record(f) -> dict:
    """The /run attributes of an open result file, decoded, with the root's ``complete``."""
    return {**{k: _run_attr(v) for k, v in f["run"].attrs.items()}, "complete": bool(f.attrs.get("complete", True))}


def _run_attr(v):
    """A /run attribute as written: JSON text decoded (plain text, e.g. the TOML config, kept), numbers as Python."""
    if isinstance(v, str):
        try:
            return json_value(v)
        except json.JSONDecodeError:
            return v
    if isinstance(v, np.ndarray):
        return v.item() if v.size == 1 else v.tolist()
    return v.item() if hasattr(v, "item") else v


def unstored_alpha(path) -> str | None:
    """The text of the callable α of a trajectory file's model (which the file cannot hold), or None: none, another
    kind of file, or one that cannot be read (:func:`load` diagnoses it)."""
    try:
        with _open(path) as f:
            a = f["model"].attrs
            return str(a["alpha_repr"]) if bool(a.get("alpha_callable", False)) else None
    except Exception:       # a damaged or foreign file: load() says what is wrong with it
        return None


def run_info(path) -> dict:
    """The /run attributes of a result file (t_final, resume options, config text, …), JSON decoded."""
    f = _open(path)
    try:
        with f:
            return _run_record(f)
    except (KeyError, OSError, ValueError, TypeError, RuntimeError) as e:
        raise ResultFileError(f"{str(path)!r} is damaged or incomplete: {type(e).__name__}: {e}") from None


# ----------------------------------------------------------------------------------------------
# energy problems (format "meanfield-energy")

def _write_certificate(g, cert):
    """A certificate dataclass as attributes of ``g`` (a None field is left out)."""
    from dataclasses import asdict

    g.attrs["class"] = type(cert).__name__
    for k, v in asdict(cert).items():
        if v is not None:
            g.attrs[k] = v


def _read_certificate(g):
    from dataclasses import fields

    from ._energy._maximize import MaximizerCertificate
    from ._energy._minimize import OptimalityCertificate

    cls = {c.__name__: c for c in (OptimalityCertificate, MaximizerCertificate)}[str(g.attrs["class"])]
    kw = {}
    for fl in fields(cls):
        v = g.attrs.get(fl.name)
        kw[fl.name] = None if v is None else (str(v) if isinstance(v, str) else v.item())
    return cls(**kw)


def _energy_solution_hint(value) -> str:
    """How to save what an energy solver returned (it is not an EnergyResult until wrapped with its problem)."""
    from ._energy._fem import FEDensity
    from ._energy._maximize import MaximizingParticles
    from ._energy._minimize import MinimizingDensity
    from ._energy._results import StationaryResult

    task = {MinimizingDensity: "minimize", FEDensity: "minimize", MaximizingParticles: "maximize",
            StationaryResult: "stationary"}.get(type(value))
    if task is None:
        return ""
    return (f" A solver's result is saved with its problem: mf.save(mf.EnergyResult({task!r}, beta, D, d, result), "
            "path).")


def _write_energy(f, result):
    from ._energy._fem import FEDensity
    from ._energy._maximize import MaximizingParticles
    from ._energy._minimize import MinimizingDensity
    from ._energy._results import StationaryResult

    f.attrs.update(task=result.task, value=result.value)
    pb = f.create_group("problem")
    pb.attrs.update(task=result.task, beta=result.beta, d=result.d,
                    parameters=json_text(result.parameters))
    _put(pb, "D", result.D)
    if result.start is not None:
        _write_state(f.create_group("start"), result.start)
    g = f.create_group("solution")
    s = result.solution
    if isinstance(s, MinimizingDensity):
        g.attrs.update(kind="minimizing-density", value=s.value, lmax=s.lmax, d=s.d)
        _put(g, "coeffs", s.coeffs)
        _put(g, "nodal_values", s.nodal_values)
    elif isinstance(s, FEDensity):
        sp = s.space
        g.attrs.update(kind="fe-density", value=s.value, level=sp.mesh.level, degree=sp.degree,
                       quadrature_degree=sp.quadrature_degree)
        _put(g, "values", s.values)
        # the mesh itself: a SphereMesh built by hand was read back as the icosahedral mesh of its `level`
        _put(g, "vertices", sp.mesh.vertices)
        _put(g, "triangles", sp.mesh.triangles)
    elif isinstance(s, MaximizingParticles):
        g.attrs.update(kind="maximizing-particles", value=s.value, support=s.kind, source=s.source,
                       ascent_best=s.ascent_best, candidates=json_text(s.candidates))
        _put(g, "positions", s.positions)
        _put(g, "weights", s.weights)
    elif isinstance(s, StationaryResult):
        g.attrs.update(kind="stationary", value=s.energy, time=s.time, max_speed=s.max_speed, converged=s.converged)
        if s.threshold is not None:
            g.attrs["threshold"] = s.threshold
        if s.relative_speed is not None:
            g.attrs["relative_speed"] = s.relative_speed
        _write_state(g.create_group("state"), s.state)
        _write_trajectory(g.create_group("trajectory"), s.trajectory)
    else:
        raise TypeError(f"cannot store an energy solution of type {type(s).__name__}.")
    if getattr(s, "certificate", None) is not None:
        _write_certificate(g.create_group("certificate"), s.certificate)


def _read_energy(f):
    from ._energy._fem import FEDensity, FESpace, SphereMesh
    from ._energy._maximize import MaximizingParticles
    from ._energy._minimize import MinimizingDensity
    from ._energy._results import EnergyResult, StationaryResult

    pb = f["problem"]
    g = f["solution"]
    kind = str(g.attrs["kind"])
    cert = _read_certificate(g["certificate"]) if "certificate" in g else None
    value = float(g.attrs["value"])
    if kind == "minimizing-density":
        sol = MinimizingDensity(_array(g["coeffs"]), int(g.attrs["lmax"]), int(g.attrs["d"]), value=value,
                                certificate=cert, nodal_values=_array(g["nodal_values"]))
    elif kind == "fe-density":
        level = int(g.attrs["level"])
        mesh = (SphereMesh(_array(g["vertices"]), _array(g["triangles"]), level) if "vertices" in g
                else SphereMesh.icosahedral(level))         # files written before the mesh was stored
        space = FESpace(mesh, int(g.attrs["degree"]), int(g.attrs["quadrature_degree"]))
        sol = FEDensity(space, _array(g["values"]), value=value, certificate=cert)
    elif kind == "maximizing-particles":
        sol = MaximizingParticles(_array(g["positions"]), _array(g["weights"]), value=value,
                                  kind=str(g.attrs["support"]), source=str(g.attrs["source"]), certificate=cert,
                                  candidates=json_value(g.attrs["candidates"]),
                                  ascent_best=float(g.attrs["ascent_best"]))
    elif kind == "stationary":
        sol = StationaryResult(_read_state(g["state"]), float(g.attrs["time"]), float(g.attrs["max_speed"]),
                               bool(g.attrs["converged"]), value, _read_trajectory(g["trajectory"]),
                               float(g.attrs["threshold"]) if "threshold" in g.attrs else None,
                               float(g.attrs["relative_speed"]) if "relative_speed" in g.attrs else None)
    else:
        raise ResultFileError(f"unknown energy solution kind {kind!r} in {f.filename!r}.")
    run_info = {k: v for k, v in _run_record(f).items() if k != "complete"} if "run" in f else {}
    return EnergyResult(str(pb.attrs["task"]), float(pb.attrs["beta"]), _array(pb["D"]), int(pb.attrs["d"]), sol,
                        json_value(pb.attrs["parameters"]), _read_state(f["start"]) if "start" in f else None,
                        run_info)


# ----------------------------------------------------------------------------------------------
# ensembles (format "meanfield-ensemble")

#: How the arrays of ``/seeds`` give back the replicas' seed sequences, stored as its attribute ``layout``.
SEEDS_LAYOUT = (
    "Seed sequence i (replica i; one, for /bootstrap_seed) is numpy.random.SeedSequence(entropy[entropy_index[i]], "
    "spawn_key=its spawn_key_length[i] entries of spawn_key (in order), pool_size=pool_size[i], "
    "n_children_spawned=n_children_spawned[i]); attribute entropy: JSON list of the distinct entropies (ints, or "
    "lists of ints). Replica i's initial tokens are drawn with numpy.random.default_rng(that sequence).")
#: bytes of JSON an attribute holds comfortably (HDF5 refuses attributes beyond 64 kB in its default layout)
_ATTR_TEXT_LIMIT = 60_000


def _seed_arrays(name: str, seeds) -> dict:
    """The arrays and entropy text of the ``/seeds`` layout (:data:`SEEDS_LAYOUT`), made before any file is opened:
    what cannot be stored is refused naming ``name``."""
    states = [s.state for s in seeds]
    distinct: dict[str, int] = {}           # the replicas of one ensemble share their root's entropy
    index = [distinct.setdefault(json_text(st["entropy"]), len(distinct)) for st in states]
    text = "[" + ", ".join(distinct) + "]"
    if len(text) > _ATTR_TEXT_LIMIT:
        raise ValueError(f"EnsembleResult.{name} hold {len(distinct)} distinct entropies ({len(text)} bytes of "
                         f"text), more than a file attribute holds ({_ATTR_TEXT_LIMIT}); seed the replicas by "
                         "spawning one SeedSequence, as meanfield.ensemble does.")
    keys = [k for st in states for k in st["spawn_key"]]
    try:
        flat = np.array(keys, dtype=np.uint64)
    except OverflowError:
        raise ValueError(f"EnsembleResult.{name}: a spawn key entry is outside [0, 2**64), which a file cannot hold; "
                         f"got {max(keys)!r}.") from None
    return dict(entropy=text, entropy_index=np.array(index, np.int64), spawn_key=flat,
                spawn_key_length=np.array([len(st["spawn_key"]) for st in states], np.int64),
                pool_size=np.array([st["pool_size"] for st in states], np.int64),
                n_children_spawned=np.array([st["n_children_spawned"] for st in states], np.uint64))


def _write_seeds(g, arrays: dict) -> None:
    g.attrs.update(entropy=arrays["entropy"], layout=SEEDS_LAYOUT)
    for k, v in arrays.items():
        if k != "entropy":
            _put(g, k, v)


def _read_seeds(g) -> list:
    entropies = json_value(g.attrs["entropy"])
    index, lengths = _array(g["entropy_index"]), _array(g["spawn_key_length"])
    flat, pool, spawned = _array(g["spawn_key"]), _array(g["pool_size"]), _array(g["n_children_spawned"])
    if not (index.shape == lengths.shape == pool.shape == spawned.shape and int(lengths.sum()) == flat.size):
        raise ResultFileError(f"{g.file.filename!r} is inconsistent: the arrays of {g.name} do not describe one seed "
                              "sequence each.")
    keys = np.split(flat, np.cumsum(lengths)[:-1])
    return [np.random.SeedSequence(entropies[int(i)], spawn_key=tuple(int(x) for x in k), pool_size=int(p),
                                   n_children_spawned=int(c)) for i, k, p, c in zip(index, keys, pool, spawned)]


def _ensemble_arrays(result) -> dict:
    """Everything of an EnsembleResult a file stores besides its attributes, checked (shapes, types) and converted
    before the file is opened."""
    from ._ensemble_result import check_result

    check_result(result)
    json_text(result.options)      # a value JSON cannot hold (a callable is stored as its name): refused here
    return dict(seeds=_seed_arrays("seeds", result.seeds),
                bootstrap_seed=None if result.bootstrap_seed is None else _seed_arrays("bootstrap_seed",
                                                                                      [result.bootstrap_seed]),
                statuses=np.array([list(type(s)).index(s) for s in result.statuses], np.int8))


def _write_ensemble(f, result, arrays: dict) -> None:
    from ._trajectory import Status

    f.attrs.update(replicas=result.replicas, confidence=float(result.confidence), interval=result.interval,
                   options=json_text(result.options))
    for k in ("backend", "observable", "t0", "t_final", "batched"):
        if getattr(result, k) is not None:
            f.attrs[k] = getattr(result, k)
    if result.sampler is not None:
        f.attrs["sampler"] = json_text(result.sampler)       # an int or a name: JSON keeps which
    if result.model is not None:
        _write_model(f.create_group("model"), result.model)
    t = _put(f, "scales/t", np.asarray(result.times))
    t.make_scale("t")
    _put(f, "values", result.values, compression="gzip", compression_opts=1).dims[1].attach_scale(t)
    for k in ("mean", "std", "ci_low", "ci_high", "count"):
        _put(f, k, getattr(result, k)).dims[0].attach_scale(t)
    st = _put(f, "statuses", arrays["statuses"])
    st.attrs["names"] = json_text([s.name for s in Status])
    _write_seeds(f.create_group("seeds"), arrays["seeds"])
    if arrays["bootstrap_seed"] is not None:
        _write_seeds(f.create_group("bootstrap_seed"), arrays["bootstrap_seed"])


def _save_ensemble(result, path: Path) -> Path:
    arrays = _ensemble_arrays(result)
    nbytes = sum(np.asarray(getattr(result, k)).nbytes for k in ("times", "values", "mean", "std", "ci_low",
                                                                  "ci_high", "count"))
    nbytes += sum(a.nbytes for g in (arrays["seeds"], arrays["bootstrap_seed"] or {}) for a in g.values()
                  if isinstance(a, np.ndarray))
    return _atomic_write(path, ENSEMBLE_FORMAT, lambda f: _write_ensemble(f, result, arrays), nbytes=nbytes)


def _read_ensemble(f, alpha=None):
    from ._ensemble_result import EnsembleResult, check_result
    from ._trajectory import Status

    a = f.attrs
    names = json_value(f["statuses"].attrs["names"])
    codes = _array(f["statuses"])
    if codes.size and not (0 <= codes.min() and codes.max() < len(names)):
        raise ResultFileError(f"{f.filename!r} is inconsistent: a status code outside the {len(names)} names.")
    try:
        statuses = [Status[names[int(c)]] for c in codes]
    except KeyError as e:
        raise ResultFileError(f"{f.filename!r} holds a status {e} this version of meanfield does not know.") from None
    opt = {k: (a[k].item() if hasattr(a[k], "item") else a[k]) if k in a else None
           for k in ("backend", "observable", "t0", "t_final", "batched")}
    result = EnsembleResult(
        times=_array(f["scales/t"]), values=_array(f["values"]), mean=_array(f["mean"]), std=_array(f["std"]),
        ci_low=_array(f["ci_low"]), ci_high=_array(f["ci_high"]), count=_array(f["count"]),
        confidence=float(a["confidence"]), seeds=_read_seeds(f["seeds"]), statuses=statuses,
        interval=str(a["interval"]),
        bootstrap_seed=_read_seeds(f["bootstrap_seed"])[0] if "bootstrap_seed" in f else None,
        model=_read_model(f["model"], alpha) if "model" in f else None,
        backend=None if opt["backend"] is None else str(opt["backend"]),
        options=_options_value(a["options"]),
        t0=None if opt["t0"] is None else float(opt["t0"]),
        t_final=None if opt["t_final"] is None else float(opt["t_final"]),
        observable=None if opt["observable"] is None else str(opt["observable"]),
        sampler=json_value(a["sampler"]) if "sampler" in a else None,
        batched=None if opt["batched"] is None else bool(opt["batched"]))
    try:
        check_result(result)
    except (TypeError, ValueError) as e:
        raise ResultFileError(f"{f.filename!r} is inconsistent: {e}") from None
    return result
