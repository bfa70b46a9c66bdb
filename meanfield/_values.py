"""Equality by value for the package's result objects (measures, trajectories): numpy arrays inside them make the
generated ``==`` of a dataclass raise ("the truth value of an array … is ambiguous"), and identity says a run differs
from the file it was saved to."""
from __future__ import annotations

import dataclasses

import numpy as np


def same_values(a, b) -> bool:
    """Equal by value: arrays entry by entry (NaN equal to NaN; a list read back from a file equals the array it was
    written from), dicts, lists and tuples item by item, dataclasses field by field (those declared with
    ``compare=False`` left out)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        try:
            x, y = np.asarray(a), np.asarray(b)
        except (TypeError, ValueError):
            return False
        nan_ok = x.dtype.kind in "fc" and y.dtype.kind in "fc"
        return x.shape == y.shape and bool(np.array_equal(x, y, equal_nan=nan_ok))
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(same_values(getattr(a, f.name), getattr(b, f.name))
                                          for f in dataclasses.fields(a) if f.compare)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_values(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (isinstance(b, (list, tuple)) and len(a) == len(b) and type(a) is type(b)
                and all(same_values(x, y) for x, y in zip(a, b)))
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return bool(a == b)


class ComparedByValue:
    """``==`` by :func:`same_values` for objects of the same type; unhashable, as a value with arrays must be."""

    __slots__ = ()

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return same_values(self, other)

    __hash__ = None
