"""The results of the energy solvers that are written to and read from HDF5: :class:`StationaryResult`
(of :func:`~meanfield.find_stationary`) and :class:`EnergyResult` (an energy problem solved as a whole).

Data only, apart from derived properties: the solvers that produce them live in :mod:`._flow` and
:mod:`._problem` (which import the run machinery), and :mod:`meanfield._io` needs only these classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._measures import Particles
from .._validate import choice, dimension
from ._classify import classify
from ._energy import energy, uniform_energy
from ._kernel import check_beta, check_D, check_symmetric

TASKS = ("minimize", "maximize", "stationary")


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
    def value(self) -> float:
        """E_{β,D}(state), as ``energy``: the name the other solvers' results (MinimizingDensity, FEDensity,
        MaximizingParticles) and EnergyResult give it (``result.value`` raised AttributeError here)."""
        return self.energy

    @property
    def message(self) -> str:
        """One line: stationary or not by the time reached, max |v| and the threshold (and why the flow stopped early)."""
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

    Built by ``meanfield run``, or by hand around what a solver returned, to store it with
    :func:`meanfield.save`: ``mf.save(mf.EnergyResult("minimize", beta, D, d, mf.minimize_energy(beta, D, d)),
    "min.h5")``.  Checked on construction: the file must say what problem its solution solves.

    Attributes
    ----------
    task : {"minimize", "maximize", "stationary"}
    beta : float
        β > 0.
    D : ndarray, shape (d, d)
        The symmetric interaction matrix (given as for the solvers: None for the identity, a scalar c for c·I,
        d numbers for a diagonal, or a (d, d) array; stored as the (d, d) array).
    d : int
        Ambient dimension ≥ 2: the measures live on S^{d-1}.
    solution : object
        Exactly what the solver returned: a :class:`~meanfield.MinimizingDensity` (minimize,
        d = 2), an :class:`~meanfield.FEDensity` (minimize, d = 3; one built by hand has no certificate), a
        :class:`~meanfield.MaximizingParticles` (maximize) or a
        :class:`~meanfield.StationaryResult` (stationary, with the flow's trajectory), on S^{d-1}.
    parameters : dict
        The keyword arguments the solver was called with (those of the configuration).
    start : Particles or None
        The initial configuration of ``task = "stationary"`` (default: the first state of the flow's trajectory).
    run_info : dict
        What its file records beside the result (filled by :func:`meanfield.load`: the CLI's ``config``
        text and ``seed``); :func:`meanfield.save` writes it back.

    Raises
    ------
    ValueError
        ``task`` not one of the three, an invalid β, ``d`` or D (of another size than d, or not symmetric), or a
        ``solution`` or ``start`` on another sphere than S^{d-1}.
    TypeError
        A ``solution`` that is not what the solver of ``task`` returns, or a ``start`` that is not Particles.
    """

    task: str
    beta: float
    D: np.ndarray = field(repr=False)
    d: int
    solution: object = field(repr=False)
    parameters: dict = field(default_factory=dict, repr=False)
    start: object = field(default=None, repr=False)
    run_info: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        # a hand-built result was stored as given: beta = -1, a 2 × 2 D with d = 3, a non-symmetric D or an
        # FEDensity filed under d = 2 were written and read back as such, and task='maximise' failed only in save
        choice("task", self.task, TASKS)
        object.__setattr__(self, "beta", check_beta(self.beta))
        d = dimension(self.d)
        object.__setattr__(self, "d", d)
        D = check_symmetric(check_D(self.D, d, "the argument `d`"), "an energy result")
        object.__setattr__(self, "D", D)
        self._check_solution()
        if self.start is None and self.task == "stationary":
            # the flow's first state is its start: without it `meanfield info` raised AttributeError on the file
            states = getattr(self.solution.trajectory, "states", None) or [None]
            object.__setattr__(self, "start", states[0] if isinstance(states[0], Particles) else None)
        if self.start is not None:
            if not isinstance(self.start, Particles):
                raise TypeError(f"`start` must be None or the initial Particles of the flow; got "
                                f"{type(self.start).__name__}.")
            if self.start.d != d:
                raise ValueError(f"`start` lives on S^{self.start.d - 1} (d={self.start.d}) but d={d}.")
        for name in ("parameters", "run_info"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"`{name}` must be a dict; got {type(getattr(self, name)).__name__}.")

    def _check_solution(self):
        """``solution`` is what the solver of ``task`` returns in dimension ``d``."""
        from ._fem import FEDensity
        from ._maximize import MaximizingParticles
        from ._minimize import MinimizingDensity

        s = self.solution
        expected = {"minimize": ((MinimizingDensity, "MinimizingDensity (d = 2)"), (FEDensity, "FEDensity (d = 3)")),
                    "maximize": ((MaximizingParticles, "MaximizingParticles"),),
                    "stationary": ((StationaryResult, "StationaryResult"),)}[self.task]
        if not isinstance(s, tuple(cls for cls, _ in expected)):
            names = " or ".join(name for _, name in expected)
            raise TypeError(f"`solution` of task={self.task!r} must be a {names}, what the solver returns; got "
                            f"{type(s).__name__}.")
        sd = s.state.d if isinstance(s, StationaryResult) else s.d
        if sd != self.d:
            raise ValueError(f"`solution` lives on S^{sd - 1} (d={sd}) but d={self.d}.")

    @property
    def measure(self):
        """The extremizer or the stationary state (a density or particles)."""
        return self.solution.state if isinstance(self.solution, StationaryResult) else self.solution

    @property
    def value(self) -> float:
        """E_{β,D} of :attr:`measure` (the solver's value; computed for a solution that has none)."""
        s = self.solution
        value = float(s.energy if isinstance(s, StationaryResult) else s.value)
        if np.isnan(value):     # an FEDensity built by hand carries no value: `meanfield info` printed E = nan
            value = float(energy(self.measure, self.beta, self.D))
        return value

    @property
    def certificate(self):
        """The solver's evidence: an OptimalityCertificate (minimize), a MaximizerCertificate (maximize),
        or None (stationary: see ``solution.max_speed`` and ``solution.converged``)."""
        return getattr(self.solution, "certificate", None)

    @property
    def success(self) -> bool:
        """The certificate is satisfied at its default tolerance (stationary: the flow converged; False without a
        certificate)."""
        if isinstance(self.solution, StationaryResult):
            return bool(self.solution.converged)
        return self.certificate is not None and bool(self.certificate.satisfied())

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
        if self.certificate is None:        # an FEDensity built by hand: `meanfield info` raised AttributeError
            return "no certificate: the solution was not produced by the solver."
        if self.task == "minimize":
            return s.certificate.message
        return s.message

    def __repr__(self):
        return f"EnergyResult(task={self.task!r}, d={self.d}, beta={self.beta:g}, value={self.value:.12g})"
