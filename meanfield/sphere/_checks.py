"""Input checks shared by the sphere layer (messages name the parameter): numeric arrays, directions in R³, and
memory requests refused before they are allocated.  All O(1) but the finiteness test of points (O(n), next to
an O(n) transform)."""
from __future__ import annotations

import numpy as np

from .._validate import holds_text, real_array

_MEMORY_CHECK_FLOOR = 2 ** 26   # requests below 64 MiB are not checked against the available memory (hot paths)


def check_memory(nbytes: float, what, how_to_reduce: str) -> None:
    """Refuse a request beyond the available memory (InsufficientMemoryError) before allocating it.  ``what`` may
    be a callable returning the description, so that hot paths do not format it for the requests that fit."""
    if nbytes > _MEMORY_CHECK_FLOOR:
        from .._memory import require
        require(float(nbytes), what() if callable(what) else what, how_to_reduce)


def complex_array(name: str, value, *, contiguous: bool = False) -> np.ndarray:
    """``value`` as a complex128 array (no copy for one); a value that is not numeric (a string, ragged lists)
    raises a ValueError naming ``name``, as :func:`meanfield._validate.real_array` does for real arrays."""
    convert = np.ascontiguousarray if contiguous else np.asarray
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":     # the hot path: no check to make
        return convert(value, dtype=np.complex128)
    try:
        a = np.asarray(value)
        if holds_text(a):       # numeric text ("1") too, in an object array as well: numpy reads it as 1
            raise ValueError
        return convert(a, dtype=np.complex128)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be numbers (an array of complex coefficients); got {name}={value!r}.") \
            from None


def finite(name: str, a: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(a)):
        raise ValueError(f"`{name}` must be finite; it contains NaN or inf.")
    return a


def directions(name: str, value, dim: int = 3) -> np.ndarray:
    """Points of shape (..., dim) as a float array: finite, and each nonzero (only its direction is used)."""
    p = real_array(name, value)
    if p.ndim == 0 or p.shape[-1] != dim:
        raise ValueError(f"`{name}` must have shape (..., {dim}) (vectors in R^{dim}); got shape {p.shape}.")
    finite(name, p)
    nonzero = p[..., 0] != 0
    for i in range(1, dim):               # (faster than np.any over the last axis)
        nonzero |= p[..., i] != 0
    if not np.all(nonzero):
        raise ValueError(f"`{name}` contains a zero vector, which has no direction.")
    return p
