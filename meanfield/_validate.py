"""Small named validators shared by the public entry points (messages name the parameter)."""
from __future__ import annotations

import numbers

import numpy as np


def positive_float(name: str, value, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float after checking it is finite and > 0 (or >= 0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number; got {name}={value!r}.")
    v = float(value)
    ok = np.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be finite and {bound}; got {name}={value!r}.")
    return v


def real_number(name: str, value) -> float:
    """Return ``value`` as a float after checking it is a finite real number (of either sign)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)):
        raise (ValueError if isinstance(value, numbers.Real) and not isinstance(value, bool) else TypeError)(
            f"`{name}` must be a finite real number; got {name}={value!r}.")
    return float(value)


def real_array(name: str, value) -> np.ndarray:
    """``value`` as a float array; a value that is not numeric (a string, ragged lists) or has a nonzero imaginary
    part raises a ValueError naming ``name`` (numpy would drop the imaginary part with only a warning)."""
    try:
        a = np.asarray(value)
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


def unit_vectors(name: str, x: np.ndarray) -> np.ndarray:
    """The rows of ``x`` (..., d) as unit vectors: finite and nonzero, normalized unless already of unit
    norm to rounding (those are returned bit for bit)."""
    if not np.all(np.isfinite(x)):
        raise ValueError(f"`{name}` must be finite; it contains NaN or inf.")
    norms = np.sqrt(np.einsum("...i,...i->...", x, x))
    if np.any(norms == 0):
        raise ValueError(f"`{name}` contains a zero vector, which has no direction.")
    if norms.size and np.max(np.abs(norms - 1)) > 1e-15:
        x = x / norms[..., None]
    return x


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
    value = positive_float(name, value)
    if not 1e-14 <= value < 1:
        raise ValueError(f"`{name}` must be in [1e-14, 1) (float64 rounding below, no accuracy at 1); "
                         f"got {name}={value!r}.")
    return value


def nonneg_int(name: str, value, *, minimum: int = 0, maximum: int | None = None) -> int:
    """Return ``value`` as an int after checking it is an integer >= ``minimum`` (and <= ``maximum``, if given)."""
    allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer {allowed}; got {name}={value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"`{name}` must be an integer {allowed}; got {name}={value!r}.")
    return int(value)


def dimension(value) -> int:
    """Validate the ambient dimension ``d`` (tokens live on S^{d-1})."""
    return nonneg_int("d", value, minimum=2)


def choice(name: str, value, allowed) -> str:
    """``value`` after checking it is one of the names ``allowed`` (a string: a list or a number is refused with
    the same message, not with Python's "unhashable type")."""
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be one of {sorted(allowed)} (a string); got {name}={value!r}.")
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {sorted(allowed)}; got {name}={value!r}.")
    return value


def matrix(name: str, value, d: int) -> np.ndarray | None:
    """A (d, d) or (heads, d, d) finite float array, or None (identity)."""
    if value is None:
        return None
    a = real_array(name, value)
    if a.ndim not in (2, 3) or a.shape[-2:] != (d, d) or a.shape[0] == 0:
        raise ValueError(f"`{name}` must have shape ({d}, {d}) or (heads, {d}, {d}) with heads ≥ 1; got shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"`{name}` must be finite; it contains NaN or inf.")
    a = a.copy()
    a.setflags(write=False)
    return a


def increasing_times(name: str, t) -> np.ndarray:
    t = np.atleast_1d(real_array(name, t))
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)):
        raise ValueError(f"`{name}` must be a finite, non-empty 1-D array of times; got {t!r}.")
    if t.size > 1 and not np.all(np.diff(t) > 0):
        raise ValueError(f"`{name}` must be strictly increasing; got {name}={t!r}.")
    return t


def check_options(owner: str, options: dict, defaults: dict) -> dict:
    """Merge ``options`` into ``defaults``; unknown names raise TypeError listing the valid ones of ``owner``."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for backend={owner!r}; valid options are {sorted(defaults)}.")
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
    """The spectral ``filter``: None, or (strength > 0, order > 0) as two finite real numbers."""
    if value is None:
        return None
    ok = (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) and v > 0
                  for v in value))
    if not ok:
        raise ValueError(f"`filter` must be None or (strength, order), two finite numbers > 0; got filter={value!r}.")
    return value
