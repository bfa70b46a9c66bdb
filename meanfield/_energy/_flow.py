"""The Wasserstein gradient flow of E_{β,D} (symmetric D) through the existing simulation backends.

With D = Dᵀ the USA velocity of the model Q = I, K = D, V = D,

    v[μ](x) = P_x ∫ e^{β⟨x, D y⟩} D y dμ(y) = ∇_S δE/δμ (x),

is the Wasserstein gradient *ascent* of E (DESIGN.md §1), and V = −D gives the descent.  The flow is
run by :func:`meanfield.simulate` (default ``backend="particles"``), and the energy identity

    E(t) − E(0) = ± ∫_0^t ∫ |v|² dμ ds

is recorded at the saved times as a diagnostic: ``energy`` (E, from :func:`meanfield.energy`),
``dissipation`` (∫|v|² dμ) and ``energy_identity_residual`` (the identity's defect, with the time
integral by the composite Simpson rule on the saved times: it is at the level of the integrator's
tolerance plus the Simpson error O(Δt⁴) of the save spacing Δt).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import integrate

from .._measures import Particles
from .._validate import choice, positive_float
from ._energy import atoms, energy, first_variation_gradient
from ._kernel import check_beta, check_D, check_symmetric

DIRECTIONS = ("ascent", "descent")


def flow_model(beta, D, d: int, direction: str = "ascent"):
    """The :class:`~meanfield.Model` whose velocity is ±∇_S δE/δμ: USA, Post-LN, Q = I, K = D, V = ±D."""
    from .._model import Model

    choice("direction", direction, DIRECTIONS)
    D = check_symmetric(check_D(D, d), "the gradient flow")
    return Model(check_beta(beta), scheme="post-ln", attention="unnormalized", d=d, K=D,
                 V=D if direction == "ascent" else -D)


def dissipation(measure, beta, D=None) -> float:
    """∫ |∇_S δE/δμ|² dμ (= dE/dt along the ascent), for Particles, Density or FEDensity."""
    d = measure.d
    D = check_symmetric(check_D(D, d), "the dissipation ∫|v|²dμ")
    y, a, _ = atoms(measure, check_beta(beta), D)
    g = first_variation_gradient(measure, beta, D, y)
    return float(a @ np.einsum("ij,ij->i", g, g))


def _cumulative(t, f):
    if len(t) >= 3:
        return integrate.cumulative_simpson(f, x=t, initial=0.0)
    return integrate.cumulative_trapezoid(f, x=t, initial=0.0)


IDENTITY_SUBSTEPS = 8   # states per saved interval on which the energy identity is integrated


def _dense_times(times, substeps):
    """``substeps`` equal parts of every interval of ``times`` (which starts at t0): the times after t0."""
    parts = [np.linspace(a, b, substeps + 1)[1:] for a, b in zip(times[:-1], times[1:])]
    return np.concatenate(parts)


def _saved_part(traj, substeps):
    """The trajectory at every ``substeps``-th state (the requested save times), and at its last state."""
    keep = list(range(0, len(traj.times), substeps))
    if keep[-1] != len(traj.times) - 1:
        keep.append(len(traj.times) - 1)
    diagnostics = {k: np.asarray(v)[keep] for k, v in traj.diagnostics.items()}
    return replace(traj, times=np.asarray(traj.times)[keep], states=[traj.states[i] for i in keep],
                   diagnostics=diagnostics)


def gradient_flow(initial, beta, D=None, *, t_final, direction: str = "ascent", save_every=None,
                  t_eval=None, backend: str = "particles", **options):
    """Run the Wasserstein gradient ascent (or descent) of E_{β,D} and record the energy identity.

    Parameters
    ----------
    initial : Particles (or a Density for a backend that takes one)
        The initial measure μ_0 on S^{d-1}.
    beta : float
        β > 0.
    D : None, float, array_like of shape (d,) (a diagonal) or (d, d)
        Symmetric interaction matrix (None: identity).
    t_final : float
        Final time (> 0), keyword-only.
    direction : {"ascent", "descent"}
        ±∇_S δE/δμ: "ascent" is the USA self-attention dynamics with QᵀK = V = D.
    save_every, t_eval
        Save times, as in :func:`meanfield.simulate`.  The energy identity is integrated (Simpson) over
        ``IDENTITY_SUBSTEPS`` = 8 states per saved interval, so that its residual measures the flow, not
        the spacing of the saved states; only the requested states are returned.
    backend : str
        A backend of :func:`meanfield.simulate` (default "particles", exact for any d and D).
    **options
        Backend options (e.g. ``rtol``, ``atol``, ``method``).

    Returns
    -------
    Trajectory
        The :func:`meanfield.simulate` result, its diagnostics extended by ``energy`` (E_{β,D}),
        ``dissipation`` (∫|v|²dμ) and ``energy_identity_residual``
        (E(t) − E(0) ∓ ∫_0^t ∫|v|²dμ ds: the integrator's error plus the quadrature error of the time
        integral, O(h⁴) in the substep h).
    """
    from .._simulate import simulate

    d = getattr(initial, "d", None)
    if d is None:
        raise TypeError(f"`initial` must be a meanfield measure; got {type(initial).__name__}.")
    model = flow_model(beta, D, d, direction)
    D = model.K.reshape(d, d)
    from .._simulate import save_times

    dense = _dense_times(save_times(t_final, save_every, t_eval), IDENTITY_SUBSTEPS)
    traj = simulate(model, initial, t_final, backend=backend, t_eval=dense, **options)
    return _saved_part(with_energy_identity(traj, model.beta, D, direction), IDENTITY_SUBSTEPS)


def with_energy_identity(traj, beta, D, direction="ascent"):
    """A copy of ``traj`` with the diagnostics ``energy``, ``dissipation``, ``energy_identity_residual``."""
    sign = 1.0 if direction == "ascent" else -1.0
    E = np.array([energy(s, beta, D) for s in traj.states])           # one value per saved state
    P = np.array([dissipation(s, beta, D) for s in traj.states])
    resid = E - E[0] - sign * _cumulative(np.asarray(traj.times), P)
    diags = dict(traj.diagnostics)
    diags.update(energy=E, dissipation=P, energy_identity_residual=resid)
    return replace(traj, diagnostics=diags)


@dataclass(frozen=True)
class StationaryResult:
    """The outcome of :func:`find_stationary`.

    Attributes
    ----------
    state : Particles
        The last state of the flow.
    time : float
        The time reached.
    max_speed : float
        max over the support of |v| = |∇_S δE/δμ| at ``state``.
    converged : bool
        ``max_speed`` ≤ ``tol`` before ``t_max``.
    energy : float
        E_{β,D}(state).
    trajectory : Trajectory
        The flow, with the energy-identity diagnostics.
    """

    state: object
    time: float
    max_speed: float
    converged: bool
    energy: float
    trajectory: object

    @property
    def message(self) -> str:
        if self.converged:
            return f"Stationary to max|v| = {self.max_speed:.3g} on the support at t = {self.time:.6g}."
        return f"Not stationary by t = {self.time:.6g}: max|v| = {self.max_speed:.3g} on the support."


def support_speed(measure, beta, D) -> float:
    """max |∇_S δE/δμ| over the particles of positive weight (the stationarity residual of Particles)."""
    if not isinstance(measure, Particles):
        raise TypeError(f"`measure` must be Particles here; got {type(measure).__name__}.")
    pts = measure.positions[measure.weights > 0]
    g = first_variation_gradient(measure, beta, D, pts)
    return float(np.max(np.linalg.norm(g, axis=1)))


def find_stationary(start, beta, D=None, *, direction: str = "ascent", tol: float = 1e-10,
                    t_max: float = 1e3, check_every: float = 1.0, backend: str = "particles", **options):
    """Follow the gradient flow of E_{β,D} from ``start`` until max |v| ≤ ``tol`` on the support.

    Parameters
    ----------
    start : Particles
        The initial configuration.
    beta : float
        β > 0.
    D : None, float, array_like of shape (d,) (a diagonal) or (d, d)
        Symmetric interaction matrix.
    direction : {"ascent", "descent"}
        Follow +∇ (towards a local maximizer / the attention dynamics) or −∇ (a local minimizer).
    tol : float
        Stationarity threshold on max_j |v(θ_j)| (velocity units, 1/time).
    t_max : float
        Give up at this time (> 0).
    check_every : float
        Time between stationarity checks (> 0); the states there are kept in the trajectory.
    backend : str
        Backend of :func:`meanfield.simulate` (default "particles").
    **options
        Backend options (default rtol=1e-12, atol=1e-14 for the particle backend).

    Returns
    -------
    StationaryResult
    """
    from .._simulate import simulate

    if not isinstance(start, Particles):
        raise TypeError(f"`start` must be meanfield.Particles; got {type(start).__name__}.")
    tol = positive_float("tol", tol)
    t_max = positive_float("t_max", t_max)
    check_every = positive_float("check_every", check_every)
    model = flow_model(beta, D, start.d, direction)
    D = model.K.reshape(start.d, start.d)
    if backend == "particles":
        options = {"rtol": 1e-12, "atol": 1e-14, **options}
    from .._simulate import save_times

    calls = [0]

    def stop(t, state, diag):          # at the check times only (the states between them serve the identity)
        calls[0] += 1
        return calls[0] % IDENTITY_SUBSTEPS == 0 and support_speed(state, model.beta, D) <= tol

    dense = _dense_times(save_times(t_max, check_every), IDENTITY_SUBSTEPS)
    traj = simulate(model, start, t_max, backend=backend, t_eval=dense, callback=stop, **options)
    traj = _saved_part(with_energy_identity(traj, model.beta, D, direction), IDENTITY_SUBSTEPS)
    final = traj.final
    speed = support_speed(final, model.beta, D)
    return StationaryResult(final, float(traj.times[-1]), speed, speed <= tol, float(traj.diagnostics["energy"][-1]),
                            traj)
