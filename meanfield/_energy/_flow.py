"""The Wasserstein gradient flow of E_{β,D} (symmetric D) through the existing simulation backends.

With D = Dᵀ the USA velocity of the model Q = I, K = D, V = D,

    v[μ](x) = P_x ∫ e^{β⟨x, D y⟩} D y dμ(y) = ∇_S δE/δμ (x),

is the Wasserstein gradient *ascent* of E (docs/model.md, "The gradient-flow case"), and V = −D gives the
descent.  The flow is run by :func:`meanfield.simulate` (default ``backend="particles"``), and the energy
identity

    E(t) − E(0) = ± ∫_0^t ∫ |v|² dμ ds

is recorded at the saved times as a diagnostic: ``energy`` (E, from :func:`meanfield.energy`),
``dissipation`` (∫|v|² dμ) and ``energy_identity_residual`` (the identity's defect).  With a particle backend
and a Runge–Kutta method the time integral is the method's own quadrature over its stages, as for an extra
equation dS/dt = ∫|v|² dμ (``ParticleStepper.step_integrand``): the residual is the integration error,
also where the flow collapses within a few of its steps (at β = 10 a ring of seven tokens collapses on a time
scale ~1e-5; Simpson over 2048 recorded states left a residual of 0.9 of the energy gain, the stages 2.5e-10
of it at rtol = 1e-10).  With an implicit method ("bdf", "radau") dS/dt = ∫|v|² dμ is one more equation of the
solver.  The softmax flow's dissipation ∫ Z |u|² dμ is integrated over the stages too, with Z
from each stage's attention sums (backend="particles"; particles-sh's fast path has no Z).
Otherwise (layers, a density's backend, the softmax flow on particles-sh) it is the composite Simpson rule on
``identity_parts`` states between the saved times (default 64 over the run, ≥ 8 per saved interval; 0: the
saved times only), at the level of the integrator's tolerance plus the Simpson error O(h⁴) of their spacing h.
A layer map (``time="layers"``, step h) is not the flow: E changes by h∫|v|²dμ + O(h²) per layer, so its residual
is O(h), the map's departure from the gradient flow rather than a quadrature error (a ring of seven tokens, β = 2:
0.044 of the gain at h = 0.01, 0.022 at h = 0.005; at β = 5, where the ring collapses within a few layers, 0.54
and 0.25).

:func:`find_stationary` can instead follow ``flow="softmax"``: the velocity ±v/Z, Z(x) = ∫ e^{β⟨x,Dy⟩} dμ(y)
(the SA attention of the same model), which has the zeros of v and along which
E(t) − E(0) = ± ∫_0^t ∫ |v|²/Z dμ ds (its ``dissipation``), without the gradient flow's stiffness at large β.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import integrate

from .._integrators import IMPLICIT_METHODS
from .._measures import Particles, ZonalDensity
from ..backends._registry import get_backend
from ..backends._stepper import ParticleStepper, _takes_fixed_steps
from .._validate import MAX_SAVES, choice, nonneg_int, positive_float
from .._errors import warn
from ._energy import (_SPECTRAL_MIN_N, _check_particle_sums, _spectral_dissipation_applies, atoms, energy_estimate,
                      first_variation_gradient)
from ._kernel import (FLOWS, _scaled_kernel_sums, announced, check_beta, check_D, check_pair_work, check_symmetric,
                      flow_model, isotropic_scale, tangent_project, zonal_padded)
from ._results import StationaryResult
from ._stationary import stationary



def dissipation(measure, beta, D=None, flow: str = "gradient") -> float:
    """|dE/dt| along the flow, for Particles, Density, FEDensity or ZonalDensity (D = c·I).

    ``flow="gradient"``: ∫ |∇_S δE/δμ|² dμ.  ``flow="softmax"`` (velocity u = ±∇_S δE/δμ / Z, Z(x) =
    ∫ e^{β⟨x,Dy⟩} dμ(y)): ∫ Z |u|² dμ = ∫ |∇_S δE/δμ|² / Z dμ, computed in units of e^{β max⟨x,Dy⟩} per point
    (Z and |∇_S δE/δμ|² / Z both grow like e^{β‖D‖}).  Particles take O(N²) pair sums, but for either flow more
    than 4000 particles on S² with D = c·I, c > 0, βc ≤ 300, which take the O(N) spectral velocity of
    backend="particles-sh" (:func:`_spectral_dissipation`)."""
    choice("flow", flow, FLOWS)
    d = measure.d
    D = check_symmetric(check_D(D, d), "the dissipation ∫|v|²dμ")
    if isinstance(measure, ZonalDensity):
        return _zonal_dissipation(measure, check_beta(beta), D, flow)
    if _spectral_dissipation_applies(measure, beta, D):
        return _spectral_dissipation(measure, check_beta(beta), D, flow)
    y, a, _ = atoms(measure, check_beta(beta), D)
    if flow == "softmax":
        return _softmax_dissipation(measure, beta, D, y, a)
    g = first_variation_gradient(measure, beta, D, y)
    return float(a @ np.einsum("ij,ij->i", g, g))




def _spectral_dissipation(p: Particles, beta: float, D: np.ndarray, flow: str = "gradient") -> float:
    """The dissipation of ``flow`` at the particles by the truncated Funk–Hecke kernel (the velocity of
    backend="particles-sh", :func:`meanfield.attention_field_sh`, tolerance 1e-13): O(N + L² log L) instead of the
    O(N²) pair sums.  The energy of such particles is already the O(N) spectral sum; the dissipation's pairs made
    gradient_flow(..., backend="particles-sh") O(N²) per recorded state (N = 8000: 0.5 s each, 65 states).

    "gradient": Σ_j w_j |v_j|², v = ∇_S δE/δμ.  "softmax": Σ_j w_j Z_j |u_j|² with the SA model of
    :func:`flow_model`, whose ``tangential`` is u = v/Z and whose ``log_z`` is log Z itself (its e^{-βc} scaling
    is added back); Z ≤ e^{βc} fits in float64 for the βc ≤ 300 this applies to.  Its pair sums made every
    recorded state of find_stationary(..., flow="softmax") O(N²): 20 000 uniform tokens, β = 2, D = I: 2–4.5 s,
    now 0.01–0.02 s."""
    from .._attention import attention_field_sh

    if flow == "gradient":
        v = attention_field_sh(flow_model(beta, D, 3), p.positions, p.weights, tol=1e-13, radial=False).tangential
        return float(p.weights @ np.einsum("ij,ij->i", v, v))
    # at the atoms of positive weight only: there Z ≥ w e^{βc} (the atom itself) is far above the truncation error,
    # while at a weightless atom away from the mass (e^{-2βc} of the scale) Z_L can be ≤ 0: log Z NaN, 0·inf terms
    keep = p.weights > 0
    targets = None if np.all(keep) else p.positions[keep]
    field = attention_field_sh(flow_model(beta, D, 3, flow="softmax"), p.positions, p.weights, targets=targets,
                               tol=1e-13)
    u = field.tangential
    return float(p.weights[keep] @ (np.exp(field.log_z[0]) * np.einsum("ij,ij->i", u, u)))


def _zonal_dissipation(rho: ZonalDensity, beta: float, D: np.ndarray, flow: str) -> float:
    """∫ |v|² ρ dσ (over Z for the softmax flow) of an axisymmetric density on any S^{d-1}, D = c·I: δE/δμ is then
    zonal, (1/β) Σ λ_ℓ(βc) g_ℓ P_ℓ, and v its meridional gradient; exact on the zonal grid (ρ|v|² has degree
    ≤ 3L, the grid's dealiased rule integrates it) but for the kernel truncated at 1e-13.  Without it,
    gradient_flow of a ZonalDensity raised "`measure` must be a meanfield Particles, Density or FEDensity"."""
    from ._energy import _multipliers

    c = isotropic_scale(D)
    if c is None:
        raise ValueError(f"`D` must be c·I for the dissipation of a ZonalDensity on S^{rho.d - 1} (the kernel, and "
                         "with it the velocity, is then zonal); got a D that is not a multiple of the identity.")
    b = beta * c
    basis, g = zonal_padded(rho, b)
    with np.errstate(over="ignore", invalid="ignore"):      # beyond float64 (β|c| ≳ 700): inf, as the energy
        first_variation = basis.conv(g, _multipliers(b, basis.lmax, rho.d) / beta)
        v2 = basis.grad(first_variation)[0] ** 2
        if flow == "softmax":
            v2 = v2 / (beta * basis.synth(first_variation))
        return float(basis.integrate(basis.synth(g) * v2))


def _softmax_dissipation(measure, beta, D, y, a) -> float:
    """Σ_k a_k |P M_k|² / Z_k at the atoms (Z_k, M_k the kernel sum and moment at y_k), each term scaled by
    e^{shift_k}, its largest exponent, so that neither Z nor |M|² overflows."""
    _check_particle_sums(measure, len(y), 1, "the dissipation ∫|v|²/Z dμ")
    sums, shift = _scaled_kernel_sums(y, y, a, beta, D, moment=True)
    v = tangent_project(y, sums[:, 1:])
    terms = np.einsum("ij,ij->i", v, v) / sums[:, 0]
    top = float(np.max(shift)) if len(shift) else 0.0         # 0 unless an exponent exceeds 300
    half = np.exp(0.5 * top)                                  # e^{top} in two halves: 0·e^{800} was NaN
    with np.errstate(over="ignore"):
        return float(a @ (terms * np.exp(shift - top))) * half * half


def _cumulative(t, f):
    if len(t) >= 3:
        return integrate.cumulative_simpson(f, x=t, initial=0.0)
    return integrate.cumulative_trapezoid(f, x=t, initial=0.0)


# the energy identity is integrated (Simpson) on at least this many equal parts of every saved interval,
# and on at least IDENTITY_PARTS parts of the whole run
IDENTITY_SUBSTEPS, IDENTITY_PARTS = 8, 64


def _dense_times(times, min_parts: int = IDENTITY_SUBSTEPS, first_parts: int = 0, step=None,
                 total_parts: int = IDENTITY_PARTS):
    """(times after t0 that split every interval of ``times`` into equal parts, index of each saved time).

    Every interval gets at least ``min_parts`` parts and its share of ``total_parts`` over the whole span;
    the first at least ``first_parts`` (a flow from a generic start has its fastest transient early).
    With a fixed ``step`` (rk4, or the layer maps) the points fall on the step grid from each saved time."""
    total = times[-1] - times[0]
    counts = [max(min_parts, int(np.ceil(total_parts * (b - a) / total))) for a, b in zip(times[:-1], times[1:])]
    counts[0] = max(counts[0], first_parts)
    parts = [_interval_points(a, b, k, step) for a, b, k in zip(times[:-1], times[1:], counts)]
    return np.concatenate(parts), np.cumsum([0] + [len(p) for p in parts])


def _interval_points(a, b, k, step):
    """``k`` equal parts of (a, b], or up to ``k`` parts made of whole steps from ``a`` (then ``b``)."""
    if step is None:
        return np.linspace(a, b, k + 1)[1:]
    m = int(np.floor((b - a) / step * (1 + 1e-12)))
    inner = a + step * np.unique(np.round(np.linspace(0, m, min(k, m) + 1)))[1:]
    return np.append(inner[inner < b - 1e-9 * step], b)


# (n, d) arrays a particle flow holds besides its kernel sums: the Runge–Kutta stages (7 for rk45), the state,
# its trial step, error estimate and the saved-state copies in flight
_STEPPER_COPIES = 12


def _evaluations_per_step(options: dict) -> int:
    """Velocity evaluations of one step of a particle backend with ``options`` (a recorded state costs ≥ one)."""
    from .._integrators import IMPLICIT_METHODS, METHODS

    if options.get("time") == "layers":
        return 1
    if options.get("method") in IMPLICIT_METHODS:     # Newton iterations (its Jacobians, n·d more, are reused)
        return 4
    tab = METHODS.get(options.get("method") or ("rk4" if options.get("step") is not None else "rk45"))
    return 1 if tab is None else tab.stages - int(tab.fsal)


def _check_flow_work(name: str, initial, D, backend: str, options: dict, states: int, what: str,
                     beta: float = 1.0) -> None:
    """:func:`check_pair_work` for a flow of Particles that records E and ∫|v|²dμ at ``states`` states.

    Each costs the dissipation's direct sum, of either flow (unless its O(N) spectral sum applies: D = c·I, c > 0,
    βc ≤ 300, on S² beyond 4000 particles), the energy's (unless the O(N) spectral sum applies: D = c·I on S² or S¹
    beyond 4000 particles) and, with backend="particles", one step's velocity evaluations (the exact attention,
    threaded: 1/threads of a sum each)."""
    from .. import _threads

    if not isinstance(initial, Particles):     # a density's grid is bounded by the energy's own checks
        return
    n, d = initial.n, initial.d
    spectral = isotropic_scale(D) is not None and d in (2, 3) and n > _SPECTRAL_MIN_N
    spectral_dissipation = _spectral_dissipation_applies(initial, beta, D)
    velocity = _evaluations_per_step(options) / _threads.NTHREADS if backend == "particles" else 0.0
    check_pair_work(name, n, d, what,
                    passes=states * (2 - spectral - spectral_dissipation + velocity),
                    extra_bytes_per_atom=8.0 * _STEPPER_COPIES * (d + 1),
                    advice=" The energy, the dissipation and the stationarity test of particles are O(N²) for any "
                           "backend (but on S² for D = c·I, c > 0, βc ≤ 300, beyond 4000 particles: gradient_flow and "
                           "find_stationary, either flow, with backend='particles-sh' are then O(N) per state): use "
                           "fewer particles, or a density (meanfield.minimize_energy, meanfield.maximize_energy, "
                           "gradient_flow with backend='spectral').")


def _flow_with_identity(model, initial, t_final, times, direction, backend, options, stop=None, flow="gradient",
                        **parts):
    """Run the flow to the saved ``times`` through states between them (:func:`_dense_times`), recording E
    and the dissipation (of ``flow``: :func:`dissipation`) at every one of them, keeping the states at ``times``
    only; the energy identity is
    integrated over all of them.  ``stop(state)`` is asked at the saved times (True ends the run).

    The cost of the direct sums over particles is checked first (:func:`_check_flow_work`): up to the first
    stationarity check with ``stop`` (find_stationary), else for the whole run; the run's own sums are then
    not warned about again."""
    d = initial.d
    D = model.K.reshape(d, d)
    dense, saved = _dense_times(times, step=options.get("step"), **parts)
    if stop is None:
        _check_flow_work("initial", initial, D, backend, options, len(dense) + 1,
                         f"gradient_flow's {len(dense) + 1} recorded states", model.beta)
    else:
        first = int(saved[1]) + 1
        _check_flow_work("start", initial, D, backend, options, first,
                         f"find_stationary's flow to its first stationarity check ({first} recorded states)",
                         model.beta)
    with announced():
        return _run_flow(model, initial, t_final, times, dense, saved, direction, backend, options, stop, flow)


def _stage_dissipation(w, flow: str):
    """The flow's dissipation at a Runge–Kutta stage, ``g(k, log_z)`` of ``ParticleStepper.step_integrand``.

    The stages are the velocities of the tokens (Post-LN, unit speed).  "gradient": Σ_j w_j |v_j|².  "softmax"
    (u_j = v_j / Z_j): Σ_j w_j Z_j |u_j|², Z_j = e^{log_z_j} from the stage's own attention sums, scaled by the
    largest (Z alone overflows from β‖D‖ ≈ 710); NaN where the backend did not compute log Z (particles-sh's
    fast path), and the identity then falls back to Simpson's rule over the recorded states."""
    def gradient(k, log_z):
        return float(w @ np.einsum("ij,ij->i", k, k))

    def softmax(k, log_z):
        if log_z is None:
            return np.nan
        log_z = log_z[0]
        top = float(np.max(log_z))
        return float(w @ (np.exp(log_z - top) * np.einsum("ij,ij->i", k, k))) * np.exp(top)

    return gradient if flow == "gradient" else softmax


def _energy_value(measure, beta, D) -> float:
    """E_{β,D}(μ), inf beyond float64, without :func:`energy`'s warning (the flow warns once for the run)."""
    return float(energy_estimate(measure, beta, D).value)


def _run_flow(model, initial, t_final, times, dense, saved, direction, backend, options, stop, flow="gradient"):
    """The run of :func:`_flow_with_identity` at the ``dense`` times (``saved``: the indices of ``times`` there)."""
    from .._simulate import _simulate

    beta, d = model.beta, initial.d
    D = model.K.reshape(d, d)
    saved_set = set(int(i) for i in saved)
    # E at every recorded state without energy()'s own warning: beyond float64 (β‖D‖ ≳ 710) it warned once per
    # state (65 identical warnings for find_stationary); the run warns once below
    E, P, S = [_energy_value(initial, beta, D)], [dissipation(initial, beta, D, flow)], [0.0]
    stepper = []

    def setup(st):
        stepper.append(st)
        if isinstance(st, ParticleStepper):
            st.step_integrand = _stage_dissipation(st.weights, flow)

    def integral():     # ∫_0^t ∫|v|²dμ ds over the stages so far (NaN: no stage quadrature)
        return stepper[0].integral if getattr(stepper[0], "step_integrand", None) is not None else np.nan

    def record(t, state, diag):
        E.append(_energy_value(state, beta, D))
        P.append(dissipation(state, beta, D, flow))
        S.append(integral())
        return stop is not None and len(E) - 1 in saved_set and stop(state)

    traj = _simulate(model, initial, t_final, backend, None, dense, record, False, None, 1, float(times[0]), None,
                     None, options, keep_state=lambda i: i in saved_set, setup=setup)
    n = len(traj.times)
    if len(E) < n:                       # the last good state of a run that failed after its last save
        E.append(_energy_value(traj.states[-1], beta, D))
        P.append(dissipation(traj.states[-1], beta, D, flow))
        S.append(integral())
    sign = 1.0 if direction == "ascent" else -1.0
    E, P, S = np.array(E[:n]), np.array(P[:n]), np.array(S[:n])
    with np.errstate(invalid="ignore"):   # an E or a dissipation beyond float64: the identity is NaN there
        if not np.all(np.isfinite(S)):  # no stage quadrature (layers, a density's backend, the softmax flow)
            S = _cumulative(np.asarray(traj.times), P)
        resid = E - E[0] - sign * S
    if np.any(np.isposinf(E)) and not np.any(np.isposinf(traj.diagnostics.get("energy", 0.0))):
        warn(f"E_(β,D) exceeds the float64 range at beta={beta!r} along the flow (it grows like e^(β‖D‖)): "
             "`energy` is recorded as inf there and `energy_identity_residual` as NaN; the states are unaffected.")
    keep = [i for i in range(n) if traj.states[i] is not None]
    diagnostics = {k: np.asarray(v)[keep] for k, v in traj.diagnostics.items()}
    diagnostics.update(energy=E[keep], dissipation=P[keep], energy_identity_residual=resid[keep])
    return replace(traj, times=np.asarray(traj.times)[keep], states=[traj.states[i] for i in keep],
                   diagnostics=diagnostics)


def gradient_flow(initial, beta, D=None, *, t_final, direction: str = "ascent", save_every=None,
                  t_eval=None, backend: str = "particles", identity_parts: int = IDENTITY_PARTS, **options):
    """Run the Wasserstein gradient ascent (or descent) of E_{β,D} and record the energy identity.

    Parameters
    ----------
    initial : Particles (or a Density for a backend that takes one)
        The initial measure μ_0 on S^{d-1}; with ``backend="spectral"`` also a Density on S¹/S² or a ZonalDensity on
        any S^{d-1} (D = c·I, c > 0: the zonal solver's kernel).
    beta : float
        β > 0.
    D : None, float, array_like of shape (d,) (a diagonal) or (d, d)
        Symmetric interaction matrix (None: identity).
    t_final : float
        Final time (> 0), keyword-only.
    direction : {"ascent", "descent"}
        ±∇_S δE/δμ: "ascent" is the USA self-attention dynamics with QᵀK = V = D.
    save_every, t_eval
        Save times, as in :func:`meanfield.simulate`.  E and ∫|v|²dμ are also recorded at states between
        them (``identity_parts``); only the requested states are returned.
    backend : str
        A backend of :func:`meanfield.simulate` (default "particles", exact for any d and D).
    identity_parts : int
        States over the run at which E and ∫|v|²dμ are recorded (default 64; every saved interval gets at
        least ``identity_parts // 8`` of them).  Each is a step end and two energy evaluations: on the
        spectral quadrature path (anisotropic D) the default makes a short flow ~20× slower than
        :func:`meanfield.simulate`.  Where the energy identity is integrated by Simpson's rule over them (not
        the particle backends' Runge–Kutta stages: see the module docstring), 0 records the saved states
        only: as fast as simulate, but the residual then measures the spacing of the saved states as much as
        the flow.
    **options
        Backend options (e.g. ``rtol``, ``atol``, ``method``).

    Returns
    -------
    Trajectory
        The :func:`meanfield.simulate` result, its diagnostics extended by ``energy`` (E_{β,D}),
        ``dissipation`` (∫|v|²dμ) and ``energy_identity_residual``
        (E(t) − E(0) ∓ ∫_0^t ∫|v|²dμ ds: the integrator's error, with a particle backend's Runge–Kutta
        method; elsewhere plus the Simpson error of the time integral, O(h⁴) in the substep h).

    Raises
    ------
    InsufficientMemoryError
        The flow's arrays for the particles of ``initial`` would not fit in memory.

    Warns
    -----
    MeanfieldWarning
        The O(N²) sums over the particles at the recorded states are expected to take more than a minute (the
        message gives the estimate).
    """
    from .._trajectory import save_times

    d = getattr(initial, "d", None)
    if d is None:
        raise TypeError(f"`initial` must be a meanfield measure; got {type(initial).__name__}.")
    if "flow" in options:       # else the backend reports it as an unknown option of its own
        raise TypeError("gradient_flow has no `flow`: it runs the gradient flow in its own time.  For a stationary "
                        "state by the softmax flow use find_stationary(..., flow='softmax'); for the softmax (SA) "
                        "dynamics, simulate(Model(beta, attention='softmax', K=D, V=D), ...) (V=-D: the descent).")
    model = flow_model(beta, D, d, direction)
    get_backend(backend)            # before the work estimate, which compares it with "particles"
    identity_parts = nonneg_int("identity_parts", identity_parts)
    return _flow_with_identity(model, initial, t_final, save_times(t_final, save_every, t_eval), direction,
                               backend, options, total_parts=identity_parts,
                               min_parts=max(1, identity_parts // IDENTITY_SUBSTEPS))


def find_stationary(start, beta, D=None, *, direction: str = "ascent", flow: str = "gradient", tol: float = 1e-10,
                    t_max: float = 1e3, check_every: float = 1.0, backend: str = "particles", **options):
    """Follow the gradient flow of E_{β,D} from ``start`` until it is stationary on the support.

    Stationary means :func:`meanfield.stationary` of the gradient-flow velocity v = ∇_S δE/δμ:
    max |v| ≤ ``tol`` · max(1, max |G|) over the particles of positive weight, G = ∫ e^{β⟨x,Dy⟩} D y dμ(y)
    the ambient vector whose tangential part is v.  It is asked at every ``check_every``.

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
    flow : {"gradient", "softmax"}
        The velocity field followed.  "gradient" (default): the Wasserstein gradient flow ±v, the USA
        Post-LN model Q = I, K = D, V = ±D (:func:`flow_model`).  "softmax": ±v/Z, Z(x) = ∫ e^{β⟨x,Dy⟩} dμ(y),
        the SA (softmax attention) velocity of the same model: the same zeros, E still monotone, and not stiff
        at large β‖D‖ (see Notes).  Use it where particles cluster at β‖D‖ ≳ 10.  ``time`` is then the softmax
        flow's own time, and from a generic start the two flows can end at different stationary states.
    tol : float
        Stationarity threshold (> 0), relative as in :func:`meanfield.stationary`: max_j |v(θ_j)| ≤
        tol · max(1, max_j |G(θ_j)|), v in velocity units of the gradient flow (1/time) whichever ``flow`` is
        followed.  |G| grows like e^{β max⟨x,Dy⟩}: the default 1e-10 is an absolute 1e-10 while max |G| ≤ 1,
        else 1e-10 of the largest |G|, whose rounding alone leaves |v| ≈ 1e-16 |G| (at one cluster at
        β = 30: |v| ≈ 1.5e-3, which the absolute threshold used before could never reach).
    t_max : float
        Give up at this time (> 0).
    check_every : float
        Time between stationarity checks (> 0); the states there are kept in the trajectory.  The energy
        identity of the trajectory is integrated over 32 states per check interval (64 in the first).
    backend : str
        Backend of :func:`meanfield.simulate` (default "particles").
    **options
        Backend options (default rtol=1e-12, atol=1e-14 for the particle backend's adaptive pairs, rtol=1e-8,
        atol=1e-10 for its implicit methods "bdf" and "radau"; none with ``method="rk4"``, a ``step`` alone or
        ``time="layers"``, which take fixed steps).

    Returns
    -------
    StationaryResult
        ``max_speed`` is max |v| of the gradient flow, ``threshold`` the test's right-hand side.

    Raises
    ------
    ValueError
        An invalid ``direction``, ``flow``, β, D, ``tol``, ``t_max`` or ``check_every`` (a TypeError for a
        ``direction`` or ``flow`` that is not a string).
    InsufficientMemoryError
        The flow's arrays for the particles of ``start`` would not fit in memory (the message gives the
        largest N that would).

    Warns
    -----
    MeanfieldWarning
        Particles so many that the O(N²) sums up to the first stationarity check (the energy, the dissipation and
        the velocity at each of the 65 states recorded until then) are expected to take more than a minute; the
        message gives the estimate.  Beyond 4000 particles on S² with D = c·I, c > 0, βc ≤ 300, the energy and
        the dissipation (of either flow) are O(N) spectral sums, and the velocity too with backend="particles-sh".

    Notes
    -----
    With ∂E/∂x_i = w_i G_i for particles of weights w_i (D = Dᵀ), a flow ẋ_i = ±u_i of tangent u_i has
    dE/dt = ±Σ_i w_i ⟨v_i, u_i⟩: Σ_i w_i |v_i|² for u = v, and Σ_i w_i |v_i|²/Z_i = Σ_i w_i Z_i |u_i|² for
    u_i = v_i/Z_i, Z_i = Σ_j w_j e^{β⟨x_i, D x_j⟩} (the softmax flow is the gradient flow of E in the metric
    ∫ Z |u|² dμ).  Its rates are the gradient flow's divided by Z ~ e^{β‖D‖}: O(‖D‖) instead of
    O(β‖D‖ e^{β‖D‖}), so its explicit steps are not capped at ~e^{−β‖D‖}.

    Measured (2 vCPUs, the defaults otherwise):

    * 20 uniform tokens on S² (``Particles.uniform(20, 3, seed=0)``), D = I, β = 10: "gradient" takes 6417 steps
      over t ∈ [0, 1] at rtol = 1e-12 and still 3959 at rtol = 1e-5 (its step is stability-capped); with
      ``t_max=5`` it takes 22417 steps (26–35 s) and does not converge: two clusters (masses 0.6, 0.4,
      ⟨c₁, c₂⟩ = −0.87) attract at max |v| = 4.8e-5 against a threshold of 1.3e-6.  "softmax" with ``t_max=5``
      takes 417 steps (0.7 s) and is still clustering; with ``t_max=1000``, 32974 steps (88 s) and two clusters
      (0.6, 0.4, ⟨c₁, c₂⟩ ≈ −0.90) at max |v| = 3.0e-5.  The clusters attract at a speed ~m e^{β⟨c₁, c₂⟩} in the
      gradient flow (merging at t ≈ 1.7e3 here) and ~e^{β(⟨c₁, c₂⟩ − 1)} in the softmax flow (~e^{β(1 − ⟨c₁, c₂⟩)}
      ≈ 1e8 time units): an explicit method cannot follow the gradient flow there (its steps are held at
      ~e^{−β}) and nothing follows the softmax flow.  The gradient flow by ``method="bdf"`` does:
      ``find_stationary(start, 10.0, t_max=5000.0, check_every=250.0, method="bdf")`` (its default rtol = 1e-8,
      atol = 1e-10) merges the clusters and converges to the Dirac (E = e^{10}/20) at t = 1750 in 4029 steps
      (1.8–2.3 s); at rtol = 1e-10, atol = 1e-12 in 8323 steps (4.1 s), and at the explicit pairs' 1e-12, 1e-14 it
      did not finish in 400 s.  A ``tol`` above the metastable
      state's relative speed |v|/|G| (~2e-9 here) reports it stationary.  The softmax flow's steps (~3 time
      units once clustered) are cut to the recorded states, 32 per ``check_every``.
    * seven tokens, a ring of six at 0.8 rad from e₃ and one at e₃, D = I (ascent): both flows reach the Dirac
      at e₃ (E = e^β/2β to rounding).  β = 10: "gradient" in 7274 steps (9.4 s), "softmax" in 1118 (1.7 s),
      medians of 3; β = 5: 660 and 1064 steps, so the crossover is between.  The gradient flow by an implicit
      method at its defaults rtol = 1e-8, atol = 1e-10: ``method="bdf"`` 424 steps (0.30 s) to the same Dirac,
      ``"radau"`` 397 steps (0.98 s).

    The energy identity of the trajectory uses the flow's own dissipation (:func:`dissipation`).  The gradient
    flow's is integrated over the Runge–Kutta stages (see :func:`gradient_flow`): in the ring example at β = 10,
    whose collapse takes ~1e-5, the residual is 1.6e-9 of a gain of 910 (2.3e-7 at gradient_flow's default
    rtol = 1e-10).  The softmax flow's Σ_i w_i Z_i |u_i|² is integrated over the stages as well, Z_i from each
    stage's attention sums: 2.5e-10 there (Simpson's rule over the recorded states, used before, left 7.7e-6).

    :func:`gradient_flow` has no ``flow``: it returns a trajectory in time, and the softmax flow is not a
    reparametrization of the gradient flow's time (each particle is slowed by its own Z); for the SA
    dynamics itself, :func:`meanfield.simulate` runs ``meanfield.Model(beta, attention="softmax", K=D, V=D)``
    (Post-LN, Q = I; ``V=-D`` for the descent).
    """
    from .._trajectory import save_times

    a = stationary_arguments(start, beta, D, direction=direction, flow=flow, tol=tol, t_max=t_max,
                             check_every=check_every)
    model, tol, t_max, check_every = a["model"], a["tol"], a["t_max"], a["check_every"]
    beta, D = model.beta, model.K.reshape(start.d, start.d)
    get_backend(backend)            # an array raised numpy's "truth value of an array is ambiguous" below
    if backend == "particles" and not _takes_fixed_steps(options):    # tolerances of the adaptive pairs only: rk4
        options = {**_STATIONARY_TOLERANCES[options.get("method") in IMPLICIT_METHODS], **options}  # and layers
        # refuse them as ignored
    traj = _flow_with_identity(model, start, t_max, save_times(t_max, check_every), direction, backend, options,
                               stop=lambda state: stationary(state, beta, D, tol).stationary, flow=flow,
                               min_parts=4 * IDENTITY_SUBSTEPS, first_parts=IDENTITY_PARTS)
    final = traj.final
    with announced():                         # the flow's check covered this sum
        report = stationary(final, beta, D, tol)
    return StationaryResult(final, float(traj.times[-1]), report.max_speed, report.stationary,
                            float(traj.diagnostics["energy"][-1]), traj, report.threshold, report.relative_speed)


# find_stationary's default tolerances of the particle backend: the explicit pairs', and the implicit methods' (True),
# whose BDF at the explicit pairs' did not finish 20 tokens at β = 10 in 400 s (at rtol=1e-8, atol=1e-10: 6.4 s); the
# stationarity test judges the state itself, whatever the accuracy of the path to it
_STATIONARY_TOLERANCES = {False: {"rtol": 1e-12, "atol": 1e-14}, True: {"rtol": 1e-8, "atol": 1e-10}}


def stationary_arguments(start, beta, D=None, *, direction="ascent", flow="gradient", tol=1e-10, t_max=1e3,
                         check_every=1.0) -> dict:
    """The arguments of :func:`find_stationary` (but the backend's options), checked, without running anything.

    Returns
    -------
    dict
        model (the flow's :class:`~meanfield.Model`), tol, t_max, check_every.
    """
    if not isinstance(start, Particles):
        raise TypeError(f"`start` must be meanfield.Particles; got {type(start).__name__}.")
    tol = positive_float("tol", tol)
    t_max = positive_float("t_max", t_max)
    check_every = positive_float("check_every", check_every)
    if not t_max / check_every <= MAX_SAVES:       # each check keeps a state: numpy's "Maximum allowed size exceeded"
        raise ValueError(f"`check_every` must be ≥ t_max/{MAX_SAVES} = {t_max / MAX_SAVES:.6g} (at most {MAX_SAVES} "
                         f"stationarity checks, each keeping a state); got check_every={check_every!r} with "
                         f"t_max={t_max!r}.")
    return dict(model=flow_model(beta, D, start.d, direction, flow), tol=tol, t_max=t_max, check_every=check_every)
