"""The exceptions of meanfield (one hierarchy, so callers can catch ``MeanfieldError``) and its warning."""


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


class MeanfieldWarning(UserWarning):
    """A result to read with care: a run ended early, an option changes the answer (e.g. a filter), a
    band limit is below the requested tolerance, or a value overflowed float64."""
