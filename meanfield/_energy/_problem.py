"""An energy problem solved as a whole: what was asked (task, β, D, d, the solver's arguments) and the answer.

:func:`solve_energy` runs the solver of an :class:`~meanfield._config.EnergyConfig` (a TOML ``[energy]``
table): :func:`~meanfield.minimize_energy`, :func:`~meanfield.maximize_energy` or
:func:`~meanfield.find_stationary`, and wraps what it returned in an :class:`EnergyResult`, the object
that ``meanfield run`` writes to HDF5 and :func:`meanfield.load` reads back.
"""
from __future__ import annotations

import numpy as np

from ._flow import find_stationary
from ._maximize import maximize_energy
from ._minimize import minimize_energy
from ._results import TASKS, EnergyResult


def solve_energy(config) -> EnergyResult:
    """Solve the energy problem of an :class:`~meanfield._config.EnergyConfig`.

    Parameters
    ----------
    config : EnergyConfig
        From :func:`meanfield._config.load_config` on a file with an ``[energy]`` table.

    Returns
    -------
    EnergyResult
    """
    p = dict(config.parameters)
    if config.task == "minimize":
        sol = minimize_energy(config.beta, config.D, config.d, **p)
    elif config.task == "maximize":
        sol = maximize_energy(config.beta, config.D, config.d, **p)
    elif config.task == "stationary":
        sol = find_stationary(config.start, config.beta, config.D, **p)
    else:
        raise ValueError(f"`task` must be one of {list(TASKS)}; got task={config.task!r}.")
    return EnergyResult(config.task, float(config.beta), np.array(config.D, dtype=float), int(config.d), sol, p,
                        config.start)
