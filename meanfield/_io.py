"""Self-describing HDF5 results: write a Trajectory atomically, read it back into the same objects.

Layout (version 1)::

    /                    attrs: format, format_version, meanfield_version, backend, status, detail, complete
    /model               attrs: beta, scheme, attention, d, alpha, tau; datasets Q, K, V when given
    /run                 attrs: t_final, options (JSON), resume (JSON), config (TOML text, from the CLI), seed
    /scales/t            the saved times (a dimension scale)
    /states/000000 …     one group per saved state, attrs kind and t:
                         density: coeffs, [radius], attrs lmax, d; zonal: coeffs, [radius], axis;
                         particles: positions, weights, [radii]; species: sub-groups 0, 1, …
    /diagnostics/<name>  per saved time, dimension scale t attached
    /steps/<name>        per integrator step

Files are written to a temporary name in the same folder and renamed into place, so a reader (or a
crash) never sees a half-written result.  Every non-empty array carries a Fletcher-32 checksum, so a
corrupted byte is reported (:class:`ResultFileError`) rather than read as a wrong number.  Reading never
unpickles anything: every dataset must have a numeric dtype.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ._errors import MeanfieldError
from ._measures import Density, Particles, ZonalDensity
from ._model import Model

FORMAT = "meanfield-trajectory"
FORMAT_VERSION = 1


class ResultFileError(MeanfieldError, OSError):
    """A result or checkpoint file is missing, truncated, corrupted or not a meanfield file."""


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if callable(o):
        return f"<callable {getattr(o, '__name__', repr(o))}>"
    raise TypeError(f"cannot store option value {o!r} in a result file")


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
    if not hasattr(ds, "dtype") or ds.dtype.kind not in "biufc":
        raise ResultFileError(f"{getattr(ds, 'name', ds)!r} is not a numeric dataset (dtype "
                              f"{getattr(ds, 'dtype', type(ds).__name__)}); a meanfield file holds plain numbers only.")
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
                              "pass `alpha=` to load().")
    tau = float(a["tau"])
    return Model(float(a["beta"]), str(a["scheme"]), str(a["attention"]), int(a["d"]),
                 *(_array(g[n]) if n in g else None for n in "QKV"),
                 alpha=alpha if alpha is not None else float(a["alpha"]), tau=None if np.isnan(tau) else tau)


def save(trajectory, path, *, run_info: dict | None = None, complete: bool = True) -> Path:
    """Write ``trajectory`` to the HDF5 file ``path`` atomically (temporary file + rename).

    Parameters
    ----------
    trajectory : Trajectory
    path : str or Path
        Target file; an existing file is replaced only once the new one is complete.
    run_info : dict, optional
        Extra run attributes (``t_final``, ``resume`` options, the CLI ``config`` text, ``seed``).
    complete : bool
        False for a checkpoint of a run still in progress.
    """
    import h5py

    from . import __version__

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(format=FORMAT, format_version=FORMAT_VERSION, meanfield_version=__version__,
                           backend=trajectory.backend, status=trajectory.status.name, detail=trajectory.detail,
                           complete=complete)
            _write_model(f.create_group("model"), trajectory.model)
            run = f.create_group("run")
            run.attrs["options"] = json.dumps(trajectory.options, default=_json_default)
            for k, v in (run_info or {}).items():
                run.attrs[k] = json.dumps(v, default=_json_default) if isinstance(v, (dict, list)) else v
            t = _put(f, "scales/t", np.asarray(trajectory.times, dtype=float))
            t.make_scale("t")
            states = f.create_group("states")
            for i, (ti, s) in enumerate(zip(trajectory.times, trajectory.states)):
                g = states.create_group(f"{i:06d}")
                g.attrs["t"] = ti
                _write_state(g, s)
            for k, v in trajectory.diagnostics.items():
                ds = _put(f, f"diagnostics/{k}", np.asarray(v, dtype=float))
                ds.dims[0].attach_scale(t)
            for k, v in trajectory.steps.items():
                _put(f, f"steps/{k}", np.asarray(v))
            f.flush()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _open(path):
    import h5py

    path = Path(path)
    if not path.exists():
        raise ResultFileError(f"result file {str(path)!r} does not exist.")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ResultFileError(f"{str(path)!r} is not a readable HDF5 file (truncated or corrupted?): {e}") from None
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise ResultFileError(f"{str(path)!r} is not a meanfield result file (no format={FORMAT!r} attribute).")
    return f


def load(path, *, alpha=None):
    """Read a result file written by :func:`save` (or a checkpoint) back into a :class:`Trajectory`.

    Raises :class:`ResultFileError` with a diagnosis for missing, truncated, corrupted or foreign files.
    ``alpha`` supplies a callable nGPT step that the file could not hold.
    """
    from ._simulate import Status, Trajectory

    f = _open(path)
    try:
        with f:
            model = _read_model(f["model"], alpha)
            times = _array(f["scales/t"])
            groups = f["states"]
            states = [_read_state(groups[k]) for k in sorted(groups)]
            diagnostics = {k: _array(f["diagnostics"][k]) for k in f.get("diagnostics", {})}
            steps = {k: _array(f["steps"][k]) for k in f.get("steps", {})}
            options = json.loads(f["run"].attrs["options"])
            status = Status[f.attrs["status"]]
            detail = str(f.attrs["detail"])
            backend = str(f.attrs["backend"])
    except ResultFileError:
        raise
    except (KeyError, OSError, ValueError, TypeError, RuntimeError, json.JSONDecodeError) as e:
        raise ResultFileError(f"{str(path)!r} is damaged or incomplete: {type(e).__name__}: {e}") from None
    if len(states) != len(times):
        raise ResultFileError(f"{str(path)!r} is inconsistent: {len(states)} states for {len(times)} times.")
    return Trajectory(times=times, states=states, diagnostics=diagnostics, steps=steps, model=model,
                      backend=backend, status=status, detail=detail, options=options)


def run_info(path) -> dict:
    """The /run attributes of a result file (t_final, resume options, config text, …), JSON decoded."""
    f = _open(path)
    try:
        with f:
            out = {}
            for k, v in f["run"].attrs.items():
                try:
                    out[k] = json.loads(v) if isinstance(v, str) else (v.item() if hasattr(v, "item") else v)
                except json.JSONDecodeError:
                    out[k] = v
            out["complete"] = bool(f.attrs["complete"])
            return out
    except (KeyError, OSError, ValueError, TypeError, RuntimeError) as e:
        raise ResultFileError(f"{str(path)!r} is damaged or incomplete: {type(e).__name__}: {e}") from None
