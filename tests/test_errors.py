"""meanfield._errors: one exception hierarchy, and warnings attributed to the user's line."""
import warnings

import numpy as np
import pytest

import meanfield as mf


def _caught(call):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        call()
    return [w for w in seen if issubclass(w.category, mf.MeanfieldWarning)]


@pytest.mark.parametrize("call", [
    lambda: mf.simulate(mf.Model(2.0), mf.Density.uniform(8), 1e-3),                     # lmax below the band limit
    lambda: mf.simulate(mf.Model(2.0), mf.Particles.uniform(50, seed=1), 1e-3, backend="particles-sh", lmax=4),
    lambda: mf.Model(400.0, attention="unnormalized", Q=np.diag([2.0, 1.0, 1.0])),
    lambda: mf.energy(mf.Particles(np.eye(3)), 800.0),
], ids=["spectral-bandlimit", "particles-sh-lmax", "model-overflow", "energy-overflow"])
def test_warnings_point_at_the_callers_line(call):
    """A fixed stacklevel pointed into meanfield (_simulate.py:76, backends/_spectral.py:454) whenever the call
    depth differed; every MeanfieldWarning now names the first frame outside the package."""
    seen = _caught(call)
    assert seen, "expected a MeanfieldWarning"
    assert {w.filename for w in seen} == {__file__}


def test_every_error_is_a_meanfield_error():
    for name in ("UnsupportedModelError", "ResolutionError", "NonFiniteStateError", "ConvergenceError",
                 "InsufficientMemoryError", "ResultFileError"):
        assert issubclass(getattr(mf, name), mf.MeanfieldError)
