"""Stationarity tests: is v[μ] = 0 on supp μ?

For the gradient flow (a β and a symmetric D) the velocity is v = ∇_S δE/δμ (docs/model.md, "The
gradient-flow case"); for a :class:`~meanfield.Model` it is the model's velocity P_x A[μ](x)/s, with the
scheme's speed factor s at the measure's radii (1 without them) and time ``t`` (s > 0 does not change the
zero set, but it sets the size of |v| that ``tol`` is compared with).  The velocity is the tangential part of a vector G (the
ambient gradient ∫ e^{β⟨x,Dy⟩} D y dμ, or A/s) that can be of size e^{β‖D‖}: its rounding alone is
ε·|G|, so ``tol`` is relative to the largest |G| on the support once that exceeds 1.  The support is: particles of
positive weight, or the FE nodes or the points of a Gauss–Legendre grid where a density exceeds
``support_tol`` · max ρ (for a ZonalDensity, the nodes of the zonal solver's grid,
one point per latitude: the velocity of an axisymmetric measure is meridional and depends on ⟨x, e⟩ only).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._measures import Density, Particles, ZonalDensity, conversion_hint
from .._norms import norms
from .._validate import open_fraction, positive_float
from ..sphere._funk_hecke import funk_hecke, kernel_beta
from ..sphere import _sh as sh
from ._energy import _check_particle_sums, _spectral_dissipation_applies, atoms
from ._kernel import (_NO_SHIFT, _scaled_kernel_sums, check_beta, check_D, check_pair_work, check_symmetric,
                      flow_model, isotropic_scale, tangent_project, zonal_padded)


@dataclass(frozen=True)
class StationarityReport:
    """The outcome of :func:`stationary`.

    Attributes
    ----------
    stationary : bool
        max |v| over the support ≤ ``tol`` · max(1, ``scale``).
    max_speed : float
        max over the support of |v| (velocity units, 1/time): for a Model its velocity P_x A/s, s the
        scheme's speed factor at the measure's radii (P_x A for anGPT, which has no ODE).  The gradient
        flow with β‖D‖ > 300 is computed in units of e^{β max⟨x,Dy⟩} and judged there: speeds beyond float64
        read inf, and speeds below ~1e-308 of that unit (rounding of the test anyway) read 0.
    points : ndarray, shape (m, d)
        The support points tested.
    speeds : ndarray, shape (m,)
        |v| at ``points``.
    tol : float
    scale : float
        The largest |G| on the support, G the vector whose tangential part is v (the ambient gradient of
        δE/δμ, or A/s for a Model); for the gradient flow of a ZonalDensity the bound |c|·β max δE/δμ
        (inf beyond float64, as ``max_speed``).
    relative_speed : float
        max |v| / max(1, ``scale``), the number the test compares with ``tol`` (computed in the scaled units,
        so finite where ``max_speed`` and ``scale`` read inf).
    """

    stationary: bool
    max_speed: float
    points: np.ndarray
    speeds: np.ndarray
    tol: float
    scale: float = 1.0
    relative_speed: float = float("nan")

    @property
    def threshold(self) -> float:
        """``tol`` · max(1, ``scale``): the largest max |v| that counts as stationary."""
        return self.tol * max(1.0, self.scale)

    @property
    def message(self) -> str:
        """One line: the verdict, max |v| on the support, the number of support points and the threshold."""
        verdict = "stationary" if self.stationary else "not stationary"
        scale = (f"tol·max(1, |G|) = {self.threshold:.3g}, |G| = {self.scale:.3g} the largest ambient vector whose "
                 "tangential part is v" if self.scale > 1 else f"tol = {self.tol:.3g}")
        relative = ""
        if not (np.isfinite(self.max_speed) and np.isfinite(self.scale)):
            # beyond float64 both read inf, and "inf ≤ inf" said nothing: the test's own ratio does
            relative = f"; max |v|/max(1, |G|) = {self.relative_speed:.3g} against tol = {self.tol:.3g}"
        return (f"{verdict}: max |v| on the support = {self.max_speed:.3g} "
                f"({len(self.speeds)} support points; threshold {scale}{relative}).")


def _over_speed(model, v, big, s, r, a_norm, t):
    """(v / s, big / |s|): the velocity and the scale of the test, at points (v of shape (m,) or (m, d)).  Where the
    speed factor overflowed float64 although the ratios are finite (Peri-LN's r‖A‖, nGPT's ‖A‖/α under USA near
    β = 709.78) they are divided out scaled (:func:`meanfield._schemes.over_overflowed_speed`): v and big read 0
    there, and a moving pair was reported stationary."""
    plain = (v / s if np.ndim(v) == 1 else v / np.reshape(s, (-1, 1)), big / np.abs(s))
    if not np.any(np.isposinf(s)):
        return plain
    from .._schemes import over_overflowed_speed

    m = np.shape(big)[0]
    cols = np.column_stack([np.reshape(v, (m, -1)), big])
    g = (m,)
    scaled = over_overflowed_speed(model.scheme_def, cols, np.broadcast_to(s, g), np.broadcast_to(r, g),
                                   np.broadcast_to(a_norm, g), t, model)
    if scaled is None:
        return plain
    return scaled[:, :-1].reshape(np.shape(v)), scaled[:, -1]


def _support(values, support_tol):
    """Where ρ > support_tol · max ρ; a density with no positive value has no support, and the test "v = 0 on the
    support" held vacuously: a zero or negative density was reported stationary."""
    top = float(np.max(values))
    if not top > 0:
        raise ValueError(f"`measure` has no positive values (max ρ = {top:.3g}): it has no support to test "
                         "stationarity on.")
    return values > support_tol * top


def _support_points(measure, support_tol):
    if isinstance(measure, Particles):
        return measure.positions[measure.weights > 0]
    if isinstance(measure, Density):
        if measure.d == 3:
            grid = sh.SphereGrid.for_bandlimit(max(measure.lmax, 8))
            pts, vals = grid.points.reshape(-1, 3), measure.on_grid(grid).ravel()
        else:
            from ..sphere import _circle as circ
            n = max(circ.circle_grid_size(measure.lmax), 64)
            pts = circ.circle_points(n)
            vals = measure.evaluate(pts)
        return pts[_support(vals, support_tol)]
    from ._fem import FEDensity
    if isinstance(measure, FEDensity):
        return measure.space.nodes[_support(measure.values, support_tol)]
    raise TypeError("`measure` must be a meanfield Particles, Density, ZonalDensity or FEDensity; "
                    f"got {type(measure).__name__}." + conversion_hint(measure))


def _radii_at(measure, pts):
    """The radii of the measure at its support points (1 where it has none)."""
    if isinstance(measure, Particles) and measure.radii is not None:
        return measure.radii[measure.weights > 0]
    if isinstance(measure, Density) and measure.radius is not None:
        return Density(measure.radius, measure.lmax, measure.d).evaluate(pts)
    return np.ones(len(pts))


def _zonal_speeds(rho: ZonalDensity, model_or_beta, D, t: float, support_tol: float):
    """(support points (m, d), |v| (m,), the scale |G| of :class:`StationarityReport`) of an axisymmetric density on S^{d-1}, any d: the velocity is meridional,
    computed on the nodes of the zonal spectral solver's grid (its band limit raised to the kernel's,
    tolerance 1e-13), with the solver's attention for a Model and ∇_S of (1/β) Σ λ_ℓ(βc) g_ℓ P_ℓ for the gradient
    flow (D = c·I: the kernel is then zonal)."""
    from .._model import Model
    from ..backends._spectral import SpectralAttention
    from ._energy import _multipliers

    log_factor = 0.0
    if isinstance(model_or_beta, Model):
        model = model_or_beta
        b = model.beta_eff
        kernel_beta(model, 1e-13)       # β·c of a large Q, named so (it was refused as `beta`)
    else:
        beta = check_beta(model_or_beta)
        c = isotropic_scale(check_D(D, rho.d))
        if c is None:
            raise ValueError("`D` must be c·I for a ZonalDensity (the interaction kernel is then zonal, and so is the "
                             "velocity); convert the density or use particles for another D.")
        b = beta * c
    basis, g = zonal_padded(rho, b)
    lmax = basis.lmax
    values = basis.synth(g)
    if isinstance(model_or_beta, Model):
        if not np.all(values >= -1e-12 * np.max(np.abs(values))):
            raise ValueError("`measure` has negative values (a band-limited density below zero); "
                             "it is not a measure the attention velocity is defined for.")
        attention = SpectralAttention(model, basis)
        attention.need_radial = True            # ‖A‖ sets the scale of the test, whatever the scheme needs
        fields = attention(g)
        v, big = fields.tangential[0], np.asarray(fields.norm, dtype=float)
        if model.scheme_def.continuous:
            r = 1.0 if rho.radius is None else basis.synth(np.pad(rho.radius, (0, lmax - rho.lmax)))
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                s = model.scheme_def.speed(r, fields.norm if model.scheme_def.needs_norm else np.nan, t, model)
                v, big = _over_speed(model, v, big, s, r, fields.norm, t)
    else:
        # above |b| = 300 in units of e^{|b|}: λ_ℓ(b) overflowed float64 from |b| ≈ 710 (NaN speeds)
        if abs(b) > _NO_SHIFT:
            log_factor = abs(b)
            lam = funk_hecke(abs(b), lmax, rho.d, scaled=True) * (-1.0) ** (np.arange(lmax + 1) * (b < 0))
        else:
            log_factor, lam = 0.0, _multipliers(b, lmax, rho.d)
        first_variation = basis.conv(g, lam / beta)
        v = basis.grad(first_variation)[0]
        big = abs(b) * np.abs(basis.synth(first_variation))       # |∫ c y e^{βc⟨x,y⟩} dμ| ≤ |c| β δE/δμ
    keep = _support(values, support_tol)
    nodes = basis.t[keep]
    e = rho.axis
    u = np.eye(rho.d)[int(np.argmin(np.abs(e)))]
    u = u - (u @ e) * e
    u /= np.linalg.norm(u)
    points = nodes[:, None] * e + np.sqrt(1 - nodes ** 2)[:, None] * u
    return points, np.abs(v[keep]), np.broadcast_to(big, values.shape)[keep], log_factor


def stationary(measure, model_or_beta, D=None, tol: float = 1e-8, *, support_tol: float = 1e-8,
               t: float = 0.0) -> StationarityReport:
    """Test whether ``measure`` is a stationary state: v[μ] = 0 on supp μ.

    Parameters
    ----------
    measure : Particles, Density, ZonalDensity or FEDensity
        μ.  A ZonalDensity (any d) needs an isotropic kernel: a Model with QᵀK = c·I and V = v·I, or D = c·I.
    model_or_beta : Model or float
        A :class:`~meanfield.Model` (its velocity P_x A/s, s the scheme's speed factor at the measure's radii
        and time ``t``; P_x A for anGPT, which has no ODE; ``D`` must then be None) or β > 0 (the
        gradient-flow velocity ∇_S δE/δμ of E_{β,D}).
    D : None, float, array_like of shape (d,) (a diagonal) or (d, d)
        Symmetric interaction matrix for the gradient flow (None: identity).
    tol : float
        Threshold on max |v| over the support (> 0, velocity units), relative to the largest |G| on the
        support when that exceeds 1 (G the vector v is the tangential part of; see the module docstring):
        the test is max |v| ≤ tol · max(1, max |G|).
    support_tol : float
        Densities: the support is where ρ > support_tol · max ρ, in (0, 1) (a density needs a positive value).
    t : float
        The time of a Model's speed factor (nGPT's α(t), Mix-LN's switch at τ); 0 by default.  (For β and more than
        4000 particles on S² with D = c·I, c > 0, v and G come from the O(N) spectral velocity of
        backend="particles-sh" where its error bound is below 1e-2 of the threshold, else from the pair sums.)

    Returns
    -------
    StationarityReport
        ``stationary`` (the verdict), ``max_speed`` (max |v| on the support), ``scale`` (max |G| there),
        ``relative_speed`` (max |v| / max(1, ``scale``), compared with ``tol``), ``threshold``, the support
        ``points`` and their ``speeds``, and a one-line ``message``.
    """
    from .._model import Model

    tol = positive_float("tol", tol)
    support_tol = open_fraction("support_tol", support_tol)     # ≥ 1 left no support, reported stationary
    t = positive_float("t", t, allow_zero=True)
    if isinstance(measure, ZonalDensity):
        if isinstance(model_or_beta, Model):
            if D is not None:
                raise ValueError("`D` must be None when a Model is given (its Q, K, V define the velocity).")
            if model_or_beta.d != measure.d:
                raise ValueError(f"the model has d={model_or_beta.d} but `measure` has d={measure.d}.")
        pts, speeds, sizes, log_factor = _zonal_speeds(measure, model_or_beta, D, t, support_tol)
        return _report(pts, speeds, tol, sizes, log_factor)
    pts = _support_points(measure, support_tol)
    log_factor = 0.0
    if isinstance(model_or_beta, Model):
        model = model_or_beta
        if D is not None:
            raise ValueError("`D` must be None when a Model is given (its Q, K, V define the velocity).")
        if model.d != measure.d:
            raise ValueError(f"the model has d={model.d} but `measure` has d={measure.d}.")
        from .._attention import attention_field

        # the grid resolves the model's kernel e^{β⟨Qx, Ky⟩}: its largest logit β‖QᵀK‖ sets the degree
        y, a, _ = atoms(measure, model.beta, model.logit_bound / model.beta * np.eye(model.d))
        if np.any(a < -1e-12 * np.max(np.abs(a))):
            raise ValueError("`measure` has negative values (a band-limited density below zero); "
                             "it is not a measure the attention velocity is defined for.")
        if isinstance(measure, Particles):
            check_pair_work("measure", measure.n, model.d, "the attention at the support", m=len(pts),
                            passes=model.heads)
        field = attention_field(model, y, np.maximum(a, 0.0), targets=pts)
        v, big = field.tangential, field.norm
        if model.scheme_def.continuous:   # a layer-only scheme (anGPT) has no speed: its P_x A is reported
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                r = _radii_at(measure, pts)
                s = model.scheme_def.speed(r, field.norm, t, model)
                v, big = _over_speed(model, v, big, s, r, field.norm, t)
    else:
        beta = check_beta(model_or_beta)
        Dm = check_symmetric(check_D(D, measure.d), "the gradient-flow velocity")
        spectral = _spectral_report(measure, pts, beta, Dm, tol)
        if spectral is not None:
            return spectral
        # G = ∫ e^{β⟨x,Dy⟩} D y dμ in units of e^{log_factor}, the largest exponent β⟨x, D y⟩: G itself reaches
        # e^{β‖D‖}, and from β‖D‖ ≈ 710 it overflowed (NaN speeds, the test inf ≤ inf) or its squared norm did
        y, a, _ = atoms(measure, beta, Dm)
        _check_particle_sums(measure, len(pts), 1, "the gradient of the first variation")
        sums, shift = _scaled_kernel_sums(pts, y, a, beta, Dm, moment=True)
        log_factor = float(np.max(shift)) if len(shift) else 0.0
        ambient = sums[:, 1:] * np.exp(shift - log_factor)[:, None]
        v, big = tangent_project(pts, ambient), norms(ambient, axis=1)
        # the scaled v can be ~1e-305 (e^{β(⟨x,Dy⟩ − max)}): norms() rescales where its squares underflow to 0
        return _report(pts, norms(v, axis=1), tol, big, log_factor)
    return _report(pts, np.linalg.norm(v, axis=1), tol, big, log_factor)


def _spectral_report(measure, pts, beta: float, D: np.ndarray, tol: float) -> StationarityReport | None:
    """The test by the spectral velocity of backend="particles-sh" (O(N + L² log L)), where the dissipation takes it
    (particles on S² beyond 4000, D = c·I, c > 0, βc ≤ 300) and its error bound δ = c e^{βc} ε_M on v and G
    (:func:`meanfield._attention.sh_error_bounds`) is below 1e-2 of the test's threshold; else None (pair sums).
    find_stationary asked it at every check by O(N²) pair sums (20 000 tokens: ~1.3 s a check)."""
    from .._attention import attention_field_sh, sh_bandlimit, sh_error_bounds, transform_epsilon

    if not _spectral_dissipation_applies(measure, beta, D) or not len(pts):
        return None
    model = flow_model(beta, D, 3)
    field = attention_field_sh(model, measure.positions, measure.weights, targets=pts, tol=1e-13)
    report = _report(pts, norms(field.tangential, axis=1), tol, field.norm)
    c = float(D[0, 0])
    delta = c * np.exp(beta * c) * sh_error_bounds(beta * c, sh_bandlimit(model, 1e-13),
                                                   transform_epsilon(None, 1e-13))[1]
    return report if delta <= 1e-2 * report.threshold else None


def _report(pts, speeds, tol, sizes, log_factor=0.0) -> StationarityReport:
    """The report of the speeds |v| and the sizes |G| at ``pts``, both given in units of e^{log_factor} (0 but for
    β‖D‖ > 300, where they can exceed float64): judged in those units, reported in velocity units (inf beyond
    float64)."""
    sizes = np.broadcast_to(np.asarray(sizes, dtype=float), speeds.shape)
    top = float(np.max(speeds)) if speeds.size else 0.0
    big = float(np.max(sizes)) if sizes.size else 0.0
    if log_factor == 0.0:
        scale = big if sizes.size else 1.0
        rep = StationarityReport(False, top, pts, speeds, tol, scale)
        return StationarityReport(top <= rep.threshold, top, pts, speeds, tol, scale, top / max(1.0, scale))
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        # |v| ≤ tol·max(1, |G|), divided by e^{f} (f < 0 when every exponent is below −300, e.g. D = −c·I)
        relative = top / max(float(np.exp(-log_factor)), big)
        stationary = top <= tol * max(float(np.exp(-log_factor)), big)
        speeds = np.exp(np.log(speeds) + log_factor)                      # 0 stays 0
        top, scale = (float(np.exp(np.log(x) + log_factor)) for x in (top, big))
    return StationarityReport(bool(stationary), top, pts, speeds, tol, scale if sizes.size else 1.0, float(relative))
