"""The exceptions of meanfield (one hierarchy, so callers can catch ``MeanfieldError``) and its warning."""
import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class MeanfieldError(Exception):
    """Base class of every error raised on purpose by meanfield."""


class UnsupportedModelError(MeanfieldError, NotImplementedError):
    """A valid model that the chosen backend does not handle (e.g. anisotropic Q, K on particles-sh)."""


class ResolutionError(MeanfieldError):
    """The spectral resolution was lost (tail energy or negativity beyond the policy's threshold)."""


class NonFiniteStateError(MeanfieldError):
    """The state became NaN or infinite."""


class ConvergenceError(MeanfieldError):
    """An iterative method (optimizer, step-size control) did not converge."""


class InsufficientMemoryError(MeanfieldError, MemoryError):
    """A requested discretization would not fit in the available memory (refused before allocating it)."""


class MeanfieldWarning(UserWarning):
    """A result to read with care: a run ended early, an option changes the answer (e.g. a filter), a
    band limit is below the requested tolerance, or a value overflowed float64."""


def warn(message: str, category: type[Warning] | None = None) -> None:
    """Issue a :class:`MeanfieldWarning` (or ``category``) attributed to the first caller outside meanfield: the
    user's line, not the library's (a fixed ``stacklevel`` pointed into meanfield whenever the call depth
    differed)."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and _ours(frame):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category or MeanfieldWarning, stacklevel=level)


def _ours(frame) -> bool:
    """A frame of meanfield's code: its files, or the ``__init__`` that dataclasses generate for its classes."""
    code = frame.f_code
    if code.co_filename.startswith(_PACKAGE_DIR):
        return True
    owner = frame.f_locals.get("self") if code.co_name == "__init__" and code.co_filename == "<string>" else None
    return owner is not None and type(owner).__module__.startswith("meanfield.")
