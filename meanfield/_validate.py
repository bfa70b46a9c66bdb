"""Small named validators shared by the public entry points (messages name the parameter)."""
from __future__ import annotations

import inspect
import itertools
import numbers
import os
from pathlib import Path

import numpy as np

from ._norms import norm_range, plain_row_norms, regular, row_norms


def _as_float(value) -> float:
    """float(value), inf for an integer beyond float64 (float(10**400) raises OverflowError): refused as not finite."""
    try:
        return float(value)
    except OverflowError:
        return float("inf")


def positive_float(name: str, value, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float after checking it is finite and > 0 (or >= 0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number; got {name}={value!r}.")
    v = _as_float(value)
    ok = np.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be finite and {bound}; got {name}={shown(value)}.")
    return v


def real_number(name: str, value) -> float:
    """Return ``value`` as a float after checking it is a finite real number (of either sign)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(_as_float(value)):
        raise (ValueError if isinstance(value, numbers.Real) and not isinstance(value, bool) else TypeError)(
            f"`{name}` must be a finite real number; got {name}={shown(value)}.")
    return float(value)


def _holds_bool(value) -> bool:
    """True when ``value`` is a bool, a bool array, or (nested) lists or tuples holding one.  Scanned one nesting
    level at a time by type, at C speed (a list of 10⁶ numbers takes milliseconds; an array is not scanned)."""
    level = [value]
    while level:
        kinds = set(map(type, level))
        if any(issubclass(k, (bool, np.bool_)) for k in kinds):
            return True
        if any(issubclass(k, np.ndarray) for k in kinds) and any(
                a.dtype == bool or (a.dtype == object and _holds_bool(a.tolist()))
                for a in level if isinstance(a, np.ndarray)):
            return True
        if not kinds & {list, tuple}:
            return False
        nested = level if kinds <= {list, tuple} else [v for v in level if isinstance(v, (list, tuple))]
        level = list(itertools.chain.from_iterable(nested))
    return False


def no_bools(name: str, value):
    """``value`` after checking it holds no True/False where numbers are expected: numpy reads them as 1 and 0,
    so ``weights=[True, False]`` or ``t_eval=[0.5, True]`` passed as numbers.  numpy's bools are refused too."""
    if _holds_bool(value):
        raise TypeError(f"`{name}` must be numbers; got booleans (True/False), which numpy would read as 1 and 0.")
    return value


def holds_text(a: np.ndarray) -> bool:
    """True when the array ``a`` holds strings or bytes (its dtype is text, or an object array holds one): numpy
    casts numeric text to numbers (np.asarray(["1", "0"], dtype=float) is [1., 0.]), which no parameter wants."""
    if a.dtype.kind in "USV":
        return True
    return a.dtype == object and any(issubclass(k, (str, bytes)) for k in set(map(type, a.ravel().tolist())))


def real_array(name: str, value, *, allow_bool: bool = True) -> np.ndarray:
    """``value`` as a float array; a value that is not numeric (a string, numeric text such as "1" included, ragged
    lists) or has a nonzero imaginary part raises a ValueError naming ``name`` (numpy would drop the imaginary part
    with only a warning, and read "1" as 1).  With ``allow_bool=False`` (parameters that are numbers, not masks)
    booleans raise a TypeError (:func:`no_bools`)."""
    if not allow_bool:
        no_bools(name, value)
    try:
        a = np.asarray(value)
        if holds_text(a):
            raise ValueError
        if np.iscomplexobj(a):
            if np.any(a.imag != 0):
                raise ValueError(f"`{name}` must be real; got complex values (imaginary parts up to "
                                 f"{float(np.max(np.abs(a.imag))):.3g}).")
            a = a.real
        return np.asarray(a, dtype=float)
    except (TypeError, ValueError) as err:
        if str(err).startswith(f"`{name}` must be real"):
            raise
        raise ValueError(f"`{name}` must be numbers (an array of real values); got {name}={value!r}.") from None


def complex_array(name: str, value) -> np.ndarray:
    """``value`` as a new complex array; booleans (:func:`no_bools`) and values that are not numeric (malformed
    strings, numeric text such as "1" included, ragged lists, dicts) raise naming ``name`` (numpy's own message
    named neither, and numpy reads "1" as 1)."""
    no_bools(name, value)
    try:
        if holds_text(np.asarray(value)):
            raise ValueError
        return np.array(value, dtype=complex)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be numbers (an array of complex values); got {name}={value!r}.") from None


def flag(name: str, value) -> bool:
    """``value`` as a bool: True or False, numpy's np.True_ and np.False_ included (what a comparison of arrays
    returns); anything else (1, "yes", None) is refused rather than read by its truth value."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False; got {name}={value!r}.")
    return bool(value)


def function_of(name: str, value, usage: str, nargs: int = 1):
    """``value`` after checking it is callable with ``nargs`` positional arguments, as ``usage`` (e.g. "alpha(t)")
    shows; by its signature, so a wrong one is refused before any work (it failed when first called, for α(t)
    mid-run).  A builtin or extension without a readable signature passes (it is checked by its first call)."""
    if not callable(value):
        raise TypeError(f"`{name}` must be a function, called as {usage}; got {name}={value!r}.")
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):
        return value
    try:
        signature.bind(*([0.0] * nargs))
    except TypeError as err:
        raise TypeError(f"`{name}` must be callable as {usage}; got {name}{signature}, which cannot be called so "
                        f"({err}).") from None
    return value


class ZeroVectorError(ValueError):
    """A zero vector where a direction is needed (a ValueError; the particle stepper tells a stage that lost a
    token's direction from bad input by it)."""


class NonFiniteError(ValueError):
    """NaN or inf where finite values are needed (a ValueError; the particle stepper tells a blown-up stage by it
    where the field's own normalization is its finiteness check)."""


def unit_vectors(name: str, x: np.ndarray) -> np.ndarray:
    """The rows of ``x`` (..., d) as unit vectors: finite and nonzero, normalized unless already of unit
    norm to rounding (those are returned bit for bit)."""
    norms, lo, hi = plain_row_norms(x)
    if regular(lo, hi):     # the common case, in one pass: every norm finite and > TINY_NORM (so every entry finite)
        return _unit(x, norms, lo, hi)
    norms = row_norms(x)    # rows whose squares under- or overflow are recomputed: x/inf was a zero row, x/0 a NaN one
    if norms.size:          # every norm finite and > 0 (then so is every entry)
        lo, hi = norm_range(norms)
        if lo > 0 and hi < np.inf:      # (a NaN fails both: the checks below)
            return _unit(x, norms, lo, hi)
    if not np.all(np.isfinite(x)):
        raise NonFiniteError(f"`{name}` must be finite; it contains NaN or inf.")
    if np.any(norms == 0):
        raise ZeroVectorError(f"`{name}` contains a zero vector, which has no direction.")
    beyond = norms == np.inf        # finite rows whose norm exceeds float64 ([1e308, 1e308]): x/inf was a zero row
    if np.any(beyond):
        x = np.array(x, dtype=float)
        x[beyond] /= np.max(np.abs(x[beyond]), axis=-1, keepdims=True)
        norms = row_norms(x)
    if norms.size and np.max(np.abs(norms - 1)) > 1e-15:
        x = x / norms[..., None]
    return x


def _unit(x, norms, lo, hi):
    """``x`` normalized by its row ``norms`` (all finite and > 0, from ``lo`` to ``hi``), or ``x`` itself when they
    are 1 to rounding: max |norm − 1| is at the smallest or the largest norm (rounding of n − 1 is monotone in n)."""
    return x / norms[..., None] if max(abs(lo - 1), abs(hi - 1)) > 1e-15 else x


def max_step_value(value) -> float:
    """A largest step > 0; ∞ (the default of every backend) means unbounded."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > 0:
        raise ValueError(f"`max_step` must be > 0 (inf: unbounded); got max_step={value!r}.")
    return float(value)


def open_fraction(name: str, value) -> float:
    """A tolerance or fraction in (0, 1), as a float."""
    value = positive_float(name, value)
    if value >= 1:
        raise ValueError(f"`{name}` must be in (0, 1); got {name}={value!r}.")
    return value


def relative_tolerance(value, name: str = "rtol") -> float:
    """A relative tolerance of a step-size control: in [1e-14, 1) (float64 rounding below, no accuracy at 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number in [1e-14, 1); got {name}={value!r}.")
    value = _as_float(value)
    if not 1e-14 <= value < 1:          # 0, a negative value and NaN too ("must be > 0" hid the lower bound)
        raise ValueError(f"`{name}` must be in [1e-14, 1) (float64 rounding below, no accuracy at 1); "
                         f"got {name}={value!r}.")
    return value


#: The largest integer float64 holds (≈ 1.8e308): a count, size or degree beyond it cannot be converted to a float,
#: which every size estimate and formula does (float(10**400) raises OverflowError)
FLOAT_MAX_INT = int(np.finfo(float).max)


def shown(value) -> str:
    """``repr(value)``, but an integer beyond float64's range as its size (repr(10**5000) raises "Exceeds the limit
    (4300 digits) for integer string conversion", and 10**400 is 401 digits of message)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and abs(int(value)) > FLOAT_MAX_INT:
        sign = "-" if value < 0 else ""
        return f"{sign}<an integer of {abs(int(value)).bit_length()} bits, beyond float64's range (1.8e308)>"
    return repr(value)


#: The largest count, size or degree :func:`nonneg_int` takes by default (2**63 − 1): numpy indexes and sizes arrays
#: with int64, so a larger one could only fail later (Model(d=2**64) was accepted, and Particles.uniform then asked
#: to "lower `n`" for its memory); beyond float64 (10**400) the float conversions raised, naming no parameter
INT64_MAX = int(np.iinfo(np.int64).max)


#: the default ceilings of :func:`nonneg_int`: (largest value, how a message names it)
_RANGES = {"int64": (INT64_MAX, f"int64's range (≤ 2**63 − 1 = {INT64_MAX})"),
           "float64": (FLOAT_MAX_INT, "float64's range (≤ 1.8e308)")}


def nonneg_int(name: str, value, *, minimum: int = 0, maximum: int | None = None, within: str = "int64") -> int:
    """Return ``value`` as an int after checking it is an integer >= ``minimum`` and <= ``maximum``.  Without
    ``maximum`` it must be within ``within``'s range: "int64" (:data:`INT64_MAX`, what a count, size or degree that
    sizes an array can be), or "float64" for a parameter that only enters formulas as a number (the dimension d of
    the Funk–Hecke formulas, whose d → ∞ limit is meaningful).  A seed, not a count, passes its own ``maximum``."""
    allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer {allowed}; got {name}={value!r}.")
    top, what = _RANGES[within]
    if maximum is None and value > top:
        raise ValueError(f"`{name}` must be an integer {allowed} and within {what}; got {name}={shown(value)}.")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"`{name}` must be an integer {allowed}; got {name}={shown(value)}.")
    return int(value)


def seed_error(seed, accepted: str) -> Exception:
    """The error for a ``seed`` numpy refused: ValueError for integers out of range (seed=-1: the right kind of
    value), TypeError for anything else (1.5, "a", True); ``accepted`` lists what the caller takes."""
    entries = seed if isinstance(seed, (list, tuple)) else [seed]
    integral = all(isinstance(s, (numbers.Integral, np.integer)) and not isinstance(s, (bool, np.bool_))
                   for s in entries)
    kind = ValueError if integral and entries else TypeError
    return kind(f"`seed` must be {accepted}; got seed={shown(seed)}.")


def random_generator(seed) -> np.random.Generator:
    """``seed`` (None, an int ≥ 0, a SeedSequence or a numpy Generator) as a numpy Generator; a Generator is
    returned as is, so that the caller's stream continues."""
    if isinstance(seed, np.random.Generator):
        return seed
    try:
        if isinstance(seed, (bool, np.bool_)):       # numpy takes True for the seed 1
            raise TypeError
        return np.random.default_rng(seed)
    except (TypeError, ValueError):
        raise seed_error(seed, "None, an int ≥ 0, a SeedSequence or a numpy Generator") from None


def checkpoint_every(value) -> int | str:
    """``checkpoint_every``: an integer ≥ 1 (every that many saved states) or ``"auto"`` (paced by the time the
    writes take: see :data:`meanfield._simulate.CHECKPOINT_TIME_SHARE`)."""
    if isinstance(value, str):
        if value == "auto":
            return value
        raise ValueError(f"`checkpoint_every` must be an integer >= 1 or 'auto'; got checkpoint_every={value!r}.")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        error = ValueError if isinstance(value, numbers.Integral) and not isinstance(value, bool) else TypeError
        raise error(f"`checkpoint_every` must be an integer >= 1 or 'auto'; got checkpoint_every={shown(value)}.")
    return int(value)


def dimension(value, within: str = "int64") -> int:
    """Validate the ambient dimension ``d`` (tokens live on S^{d-1}); ``within`` as for :func:`nonneg_int`."""
    return nonneg_int("d", value, minimum=2, within=within)


def choice(name: str, value, allowed) -> str:
    """``value`` after checking it is one of the names ``allowed`` (a string: a list or a number is refused with
    the same message, not with Python's "unhashable type")."""
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be one of {sorted(allowed)} (a string); got {name}={value!r}.")
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {sorted(allowed)}; got {name}={value!r}.")
    return value


def matrix(name: str, value, d: int) -> np.ndarray | None:
    """A (d, d) or (heads, d, d) finite float array, or None (identity); booleans are refused (True read as 1)."""
    if value is None:
        return None
    a = real_array(name, value, allow_bool=False)
    if a.ndim not in (2, 3) or a.shape[-2:] != (d, d) or a.shape[0] == 0:
        raise ValueError(f"`{name}` must have shape ({d}, {d}) or (heads, {d}, {d}) with heads ≥ 1; got shape {a.shape}."
                         + _head_projection_hint(name, a.shape, d))
    if not np.all(np.isfinite(a)):
        raise ValueError(f"`{name}` must be finite; it contains NaN or inf.")
    a = a.copy()
    a.setflags(write=False)
    return a


def _head_projection_hint(name: str, shape, d: int) -> str:
    """How to pass a head's projection of shape (k, d), k < d (a transformer's W_Q, W_K, W_V), which Model refused
    with the bare shape rule."""
    if len(shape) not in (2, 3) or shape[-1] != d or not 0 < shape[-2] < d:
        return ""
    k = shape[-2]
    if name == "V":
        return (f" A head's value projection W_V of shape ({k}, {d}) maps back to R^{d} through the output projection "
                f"W_O ({d}, {k}): pass V = W_O @ W_V.")
    pad = "(" + "(0, 0), " * (len(shape) == 3) + f"(0, {d - k}), (0, 0))"
    return (f" A head of dimension {k} < d is given zero-padded to ({d}, {d}): {name} = np.pad(W, {pad}) (only ⟨Qθ, Kθ'⟩ "
            "enters, and rows zero in Q or K cost nothing in backend='particles').")


def increasing_times(name: str, t) -> np.ndarray:
    """``t`` as a finite, non-empty, strictly increasing 1-D float array (booleans refused)."""
    t = np.atleast_1d(real_array(name, t, allow_bool=False))
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)):
        raise ValueError(f"`{name}` must be a finite, non-empty 1-D array of times; got {t!r}.")
    if t.size > 1 and not np.all(np.diff(t) > 0):
        raise ValueError(f"`{name}` must be strictly increasing; got {name}={t!r}.")
    return t


def check_options(owner: str, options: dict, defaults: dict) -> dict:
    """Merge ``options`` into ``defaults``; unknown names raise TypeError listing the valid ones of ``owner``."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        # the layer maps act on tokens: a density has no layer map, which the list of valid options does not say
        hint = (" The discrete layer maps (time='layers') are those of the particle backends: backend='particles' "
                "or 'particles-sh'." if "time" in unknown else "")
        raise TypeError(f"unknown option(s) {unknown} for backend={owner!r}; valid options are "
                        f"{sorted(defaults)}.{hint}")
    return {**defaults, **options}


#: The most states a run keeps with ``save_every`` (each is a whole density or token set, kept in memory).
MAX_SAVES = 1_000_000


def save_every_count(t_final, save_every, t0=0.0) -> None:
    """Refuse a ``save_every`` that asks for more than :data:`MAX_SAVES` saved states between ``t0`` and
    ``t_final`` (``save_every=1e-300`` would allocate the times, then the states, without end).  Values of the wrong
    type or sign are left to :func:`meanfield._trajectory.save_times`, which names them."""
    numbers_ = [t_final, save_every, t0]
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in numbers_):
        return
    t_final, save_every, t0 = (float(v) for v in numbers_)
    if not (np.isfinite(t_final) and np.isfinite(t0) and np.isfinite(save_every) and save_every > 0
            and t_final > t0):
        return
    with np.errstate(over="ignore"):
        count = (t_final - t0) / save_every
    if not count <= MAX_SAVES:
        raise ValueError(f"`save_every` must be ≥ (t_final − t0)/{MAX_SAVES} = {(t_final - t0) / MAX_SAVES:.6g} (at "
                         f"most {MAX_SAVES} saved states); got save_every={save_every!r}, which asks for "
                         f"{count:.3g} states from t0={t0:g} to t_final={t_final:g}.")


def exponential_filter(value):
    """The spectral ``filter``: None, or (strength > 0, order > 0), two finite real numbers in a tuple, a list or a
    1-D array, returned as a tuple of two floats (a list or numpy scalars were kept as given, and the run's
    ``options`` then differed from those read back from its file, where JSON makes every pair a list)."""
    if value is None:
        return None
    pair = tuple(value.tolist()) if isinstance(value, np.ndarray) and value.ndim == 1 else value
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(map(_is_positive_number, pair))):
        raise ValueError(f"`filter` must be None or (strength, order): two finite numbers > 0 (a tuple, a list or a "
                         f"1-D array); got filter={value!r}.")
    return tuple(float(v) for v in pair)


def _is_positive_number(value) -> bool:
    try:
        positive_float("filter", value)
    except (TypeError, ValueError):
        return False
    return True



#: Figure file types written by every plotting entry point (matplotlib's Agg, PDF, SVG and PS back-ends, and
#: Pillow's formats).
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".eps", ".ps")


def output_file(name: str, path, suffixes=None) -> Path:
    """``path`` as a Path, refused before any work when it is a folder, its folder does not exist, its extension
    is not one of ``suffixes`` (when given), or it cannot be written.

    Parameters
    ----------
    name : str
        How the caller names it in messages (``"--output"``, ``"`output`"``).
    path : str or os.PathLike
    suffixes : sequence of str, optional
        Allowed extensions, lower case with the dot.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        Naming ``name``, the path, and the folder or the allowed extensions.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name} {str(path)!r} is a folder; give a file name.")
    if not path.parent.is_dir():
        raise ValueError(f"{name} {str(path)!r}: the folder {str(path.parent)!r} does not exist.")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise ValueError(f"{name} {str(path)!r}: the file type must be one of {', '.join(suffixes)}.")
    _check_writable(name, path)
    return path


def _check_writable(name: str, path: Path) -> None:
    """Refuse a file that cannot be written (a read-only folder or file system): found after the work, a figure
    was lost and a run's result had nowhere to go.  A probe file, not permission bits (root ignores them)."""
    import tempfile

    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{name} {str(path)!r}: the file exists and is not writable.")
    try:
        with tempfile.TemporaryFile(dir=path.parent, prefix=f".{path.name}.probe-"):
            pass
    except OSError as e:
        raise ValueError(f"{name} {str(path)!r}: cannot write in the folder {str(path.parent)!r} "
                         f"({e.strerror or e}).") from None
