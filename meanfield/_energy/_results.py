"""The results of the energy solvers that are written to and read from HDF5: :class:`StationaryResult`
(of :func:`~meanfield.find_stationary`) and :class:`EnergyResult` (an energy problem solved as a whole).

Data only, apart from derived properties: the solvers that produce them live in :mod:`._flow` and
:mod:`._problem` (which import the run machinery), and :mod:`meanfield._io` needs only these classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._classify import classify
from ._energy import uniform_energy


@dataclass(frozen=True)
class StationaryResult:
    """The outcome of :func:`find_stationary`.

    Attributes
    ----------
    state : Particles
        The last state of the flow.
    time : float
        The time reached: the check time at which the flow stopped (checks are at ``check_every``,
        2·``check_every``, …, so a stationary ``start`` reports ``check_every``, not 0).
    max_speed : float
        max over the support of |v| = |∇_S δE/δμ| at ``state`` (the gradient-flow velocity, whichever
        ``flow`` was followed).
    converged : bool
        ``max_speed`` ≤ ``threshold`` at ``state`` (the test of :func:`meanfield.stationary`).  A flow that stopped
        early (``trajectory.status``, which :attr:`message` then quotes) is judged at its last state too: at large
        β‖D‖ well-separated particles can pass, their mutual forces being below the rounding of |G|.
    energy : float
        E_{β,D}(state).
    trajectory : Trajectory
        The flow, with the energy-identity diagnostics.
    threshold : float or None
        ``tol`` · max(1, max |G|) at ``state``, G = ∫ e^{β⟨x,Dy⟩} D y dμ(y) the ambient vector whose tangential
        part is v (:attr:`meanfield.StationarityReport.threshold`); None in a result stored without it.
    relative_speed : float or None
        max |v| / max(1, max |G|) at ``state``, the number compared with ``tol``
        (:attr:`meanfield.StationarityReport.relative_speed`): finite where ``max_speed`` and ``threshold``
        read inf beyond float64 (β‖D‖ ≳ 700); None in a result stored without it.
    """

    state: object
    time: float
    max_speed: float
    converged: bool
    energy: float
    trajectory: object
    threshold: float | None = None
    relative_speed: float | None = None

    @property
    def message(self) -> str:
        bound = "" if self.threshold is None else f" (threshold tol·max(1, |G|) = {self.threshold:.3g}"
        if self.threshold is not None and self.relative_speed is not None and not (
                np.isfinite(self.max_speed) and np.isfinite(self.threshold)):
            # beyond float64 both read inf, and "inf (threshold inf)" said nothing: the test's own ratio does
            bound += f"; judged on their ratio max|v|/max(1, |G|) = {self.relative_speed:.3g} against tol"
        bound += "" if self.threshold is None else ")"
        if self.converged:
            text = f"Stationary to max|v| = {self.max_speed:.3g} on the support{bound} at t = {self.time:.6g}."
        else:
            text = f"Not stationary by t = {self.time:.6g}: max|v| = {self.max_speed:.3g} on the support{bound}."
        return text + self._flow_failure()

    def _flow_failure(self) -> str:
        """Why the flow stopped before ``t_max`` and before a stationarity check passed ("" when it did not)."""
        status = getattr(self.trajectory, "status", None)
        if status is None or status.name in ("OK", "CALLBACK_STOP"):
            return ""
        return f" The flow stopped early ({status.name}): {self.trajectory.detail}"



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
    run_info : dict
        What its file records beside the result (filled by :func:`meanfield.load`: the CLI's ``config``
        text and ``seed``); :func:`meanfield.save` writes it back.
    """

    task: str
    beta: float
    D: np.ndarray = field(repr=False)
    d: int
    solution: object = field(repr=False)
    parameters: dict = field(default_factory=dict, repr=False)
    start: object = field(default=None, repr=False)
    run_info: dict = field(default_factory=dict, repr=False)

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
