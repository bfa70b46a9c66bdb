"""An energy problem solved as a whole: what was asked (task, β, D, d, the solver's arguments) and the answer.

:func:`solve_energy` runs the solver of an :class:`~meanfield._config.EnergyConfig` (a TOML ``[energy]``
table): :func:`~meanfield.minimize_energy`, :func:`~meanfield.maximize_energy` or
:func:`~meanfield.find_stationary`, and wraps what it returned in an :class:`EnergyResult`, the object
that ``meanfield run`` writes to HDF5 and :func:`meanfield.load` reads back.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._classify import classify
from ._energy import uniform_energy
from ._flow import StationaryResult, find_stationary
from ._maximize import maximize_energy
from ._minimize import minimize_energy

TASKS = ("minimize", "maximize", "stationary")


@dataclass(frozen=True, eq=False)
class EnergyResult:
    """The outcome of an energy problem (``meanfield run`` on an ``[energy]`` configuration).

    Attributes
    ----------
    task : {"minimize", "maximize", "stationary"}
    beta : float
        β > 0.
    D : ndarray, shape (d, d)
        The symmetric interaction matrix.
    d : int
        Ambient dimension: the measures live on S^{d-1}.
    solution : object
        Exactly what the solver returned: a :class:`~meanfield._energy.MinimizingDensity` (minimize,
        d = 2), an :class:`~meanfield.FEDensity` (minimize, d = 3), a
        :class:`~meanfield._energy.MaximizingParticles` (maximize) or a
        :class:`~meanfield._energy.StationaryResult` (stationary, with the flow's trajectory).
    parameters : dict
        The keyword arguments the solver was called with (those of the configuration).
    start : Particles or None
        The initial configuration of ``task = "stationary"``.
    """

    task: str
    beta: float
    D: np.ndarray = field(repr=False)
    d: int
    solution: object = field(repr=False)
    parameters: dict = field(default_factory=dict, repr=False)
    start: object = field(default=None, repr=False)

    @property
    def measure(self):
        """The extremizer or the stationary state (a density or particles)."""
        return self.solution.state if isinstance(self.solution, StationaryResult) else self.solution

    @property
    def value(self) -> float:
        """E_{β,D} of :attr:`measure`."""
        s = self.solution
        return float(s.energy if isinstance(s, StationaryResult) else s.value)

    @property
    def certificate(self):
        """The solver's evidence: an OptimalityCertificate (minimize), a MaximizerCertificate (maximize),
        or None (stationary: see ``solution.max_speed`` and ``solution.converged``)."""
        return getattr(self.solution, "certificate", None)

    @property
    def success(self) -> bool:
        """The certificate is satisfied at its default tolerance (stationary: the flow converged)."""
        if isinstance(self.solution, StationaryResult):
            return bool(self.solution.converged)
        return bool(self.certificate.satisfied())

    @property
    def classification(self):
        """:func:`~meanfield.classify` of D: the sign structure and the extremizers it implies."""
        return classify(self.D)

    @property
    def uniform_value(self) -> float:
        """E_{β,D} of the uniform measure, for comparison."""
        return float(uniform_energy(self.beta, self.D, self.d))

    @property
    def message(self) -> str:
        s = self.solution
        if isinstance(s, StationaryResult):
            return s.message
        if self.task == "minimize":
            return s.certificate.message
        return s.message

    def __repr__(self):
        return f"EnergyResult(task={self.task!r}, d={self.d}, beta={self.beta:g}, value={self.value:.12g})"


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
