"""The Eulerian spectral backend: ∂_t ρ + div_S(ρ v[ρ]) = 0 on S² (harmonics), S¹ (Fourier) or, for
axisymmetric data, on any S^{d-1} (Gegenbauer).

Per right-hand side, for Q = K = I and V = I (the fast path, all spectral):
Z = K∗ρ, N_tan = ∇_S Z / β and ⟨x, N⟩ = ∂_β Z come from the Funk–Hecke multipliers λ_ℓ, ∂_β λ_ℓ;
A = N / Z (softmax) or N (unnormalized); the scheme table gives the speed s and the radial law; the
flux F = ρ v is formed on the grid and its divergence taken with the spin-1 adjoint, so mass is exact.
A general V uses the four convolutions Z and K∗(g_i ρ), g_i = (Vy)_i; a general Q, K (or several
heads) uses quadrature of the kernel on the grid (O(N_grid²), BLAS).

Schemes with a radius carry a radius field r(t, x), advected with ∂_t r + v·∇r = ṙ.  Several
species (ρ_k, r_k) share the attention of their total density: a general radius distribution.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._errors import UnsupportedModelError, warn
from .._integrators import check_step_options, error_norm, get_method, l2_norm, next_step, rk_step
from .._measures import NEGATIVITY_TOL, Density, ZonalDensity, conversion_hint
from .._memory import available_bytes, fits, require
from .._model import Model
from .._norms import norms
from .._schemes import SCHEMES, over_overflowed_speed
from .._trajectory import Status
from .._validate import choice, exponential_filter, nonneg_int, open_fraction, positive_float, real_number
from ..sphere._funk_hecke import kernel_beta
from ..sphere._funk_hecke import _MAX_UNSCALED_BETA as _LOG_FLOAT_MAX
from ..sphere._funk_hecke import (funk_hecke, funk_hecke_dbeta, kernel_bandlimit,
                                  kernel_truncation_error)
from ._bases import CircleBasis, S2Basis, ZonalBasis, workspace
from .._validate import check_options

POLICIES = ("stop", "refine", "handoff")


class _Fields:
    """Attention on the grid: tangential A (ncomp, grid), radial ⟨x, A⟩ (grid or None), ‖A‖ (grid, lazy) and
    the normalization Z (grid; None where the path does not need it)."""

    __slots__ = ("tangential", "radial", "z", "_norm")

    def __init__(self, tangential, radial, z=None):
        self.tangential, self.radial, self.z = tangential, radial, z
        self._norm = None

    @property
    def norm(self):
        if self._norm is None:
            if self.radial is None:
                raise RuntimeError("‖A‖ needs the radial part; the scheme row must set needs_norm=True.")
            self._norm = norms(np.concatenate([self.tangential, self.radial[None]]), axis=0)
        return self._norm


def _check_invertible_for_qkv_norm(model) -> None:
    """QKV-Norm normalizes Qθ, Kθ and Vθ at every point of the sphere, which a density charges everywhere: a
    singular matrix leaves them undefined on its null directions (V = 0·I ran with a zero velocity, a rank-deficient
    V divided 0 by 0 at the nodes near them).  Particles check the tokens themselves."""
    for name, mats in zip("QKV", model.matrices()):
        if getattr(model, name) is None:
            continue
        sv = np.linalg.svd(mats, compute_uv=False)          # (heads, d), descending
        smallest, largest = float(sv[:, -1].min()), float(sv[:, 0].max())
        if not smallest > 1e-14 * largest:
            raise ValueError(f"scheme='qkv-norm' normalizes {name}θ at every direction, so on a density `{name}` must be "
                             f"invertible; its smallest singular value is {smallest:.3g} (largest {largest:.3g}). "
                             "Use backend='particles', which checks only the tokens' directions.")


class SpectralAttention:
    """The attention vector A[ρ] at the nodes of a basis, for one model.

    Chooses the fast path (isotropic kernel, V = v·I: everything spectral), the general-V path (four
    scalar convolutions) or quadrature of the kernel on the grid (general Q, K, several heads).
    """

    def __init__(self, model: Model, basis, quadrature_tol: float = 1e-12):
        self.model, self.basis = model, basis
        scheme = model.scheme_def
        self.need_radial = scheme.has_radius or scheme.needs_norm
        self.path = self._choose_path()
        if self.path == "quadrature":
            self._setup_quadrature(quadrature_tol)
        else:
            b = model.beta_eff
            top = basis.lmax + 2
            self.beta = b
            self.lam = funk_hecke(b, top, model.d, scaled=True)     # e^{-β}λ_ℓ: common factors cancel in SA
            self.dlam = funk_hecke_dbeta(b, top, model.d, scaled=True)
            self.unscale = 1.0 if model.softmax else np.exp(b)
            if self.path == "general-v":
                self._setup_values()
            else:
                self._setup_multipliers()
            need = kernel_bandlimit(b, quadrature_tol, model.d)
            if basis.lmax < need:
                warn(f"lmax={basis.lmax} is below the kernel band limit {need} for quadrature_tol="
                     f"{quadrature_tol:g} at β={b:g}: the attention of the band-limited state can differ "
                     f"from that of the measure it represents by up to "
                     f"{kernel_truncation_error(b, basis.lmax, model.d):.2e}·λ_0 (the kernel truncation "
                     f"error at lmax={basis.lmax}); raise `lmax` to {need} for that tolerance.")

    def _choose_path(self):
        m = self.model
        if m.scheme_def.normalize_qkv:
            _check_invertible_for_qkv_norm(m)
        if not m.isotropic:
            if not self.basis.has_ambient:
                from .._attention import _repulsive_scale

                c = _repulsive_scale(m)
                why = "" if c is None else f" with c > 0 (got c = {c:g}: its multipliers are built for β·c > 0)"
                raise UnsupportedModelError(f"the zonal solver needs QᵀK = c·I{why} and V = v·I (an axisymmetric "
                                            "problem); use d = 2, 3 or backend='particles'.")
            return "quadrature"
        v = None if m.V is None else m.V.reshape(m.d, m.d)
        if v is None or np.allclose(v, v[0, 0] * np.eye(m.d), rtol=0, atol=1e-14 * abs(v[0, 0]) + 1e-300):
            self.vscale = 1.0 if v is None else float(v[0, 0])
            if m.scheme_def.normalize_qkv:      # normalized values: V θ / ‖V θ‖ = sign(v)·θ for V = v·I
                self.vscale = float(np.sign(self.vscale))
            return "fast"
        if not self.basis.has_ambient:
            raise UnsupportedModelError("the zonal solver supports V = v·I only; use d = 2 or 3.")
        return "general-v"

    def _setup_multipliers(self):
        """Per-coefficient multipliers of the fast path: Z, (unscale·v/β) ∇Z and unscale·v·∂_βZ.  The constant
        factors act on the coefficients once per call instead of on every node (O(L²) numbers, no O(L³))."""
        ell = self.basis.ell
        const = self.unscale * self.vscale
        # complex: numpy multiplies complex by real through a cast buffer, 1.5-2× slower (same values)
        self.z_mult = self.lam[ell].astype(complex)
        self.grad_mult = (self.lam[ell] * (const / self.beta)).astype(complex)
        self.radial_mult = (self.dlam[ell] * const).astype(complex)

    def _setup_values(self):
        pts = self.basis.points
        d = self.model.d
        v = np.eye(d) if self.model.V is None else self.model.V.reshape(d, d)
        g = pts @ v.T
        if self.model.scheme_def.normalize_qkv:
            g = g / np.linalg.norm(g, axis=-1, keepdims=True)
        self.values = np.moveaxis(g, -1, 0)                 # (d, grid)

    def _setup_quadrature(self, tol):
        m, basis = self.model, self.basis
        if not m.softmax and m.logit_bound > _LOG_FLOAT_MAX:
            raise ValueError(f"attention='unnormalized' with β·‖QᵀK‖ = {m.logit_bound:.6g} > {_LOG_FLOAT_MAX:.2f}: the "
                             "kernel e^(β⟨Qx, Ky⟩) on the quadrature grid overflows float64. Softmax attention has no "
                             "such limit; backend='particles' runs as long as the tokens' weights fit.")
        pts = basis.points.reshape(-1, m.d)
        n = pts.shape[0]
        q_all, k_all, v_all = m.matrices()
        # the kernel matrix is constant in time: keep it when it fits, else rebuild it in row chunks
        self.cache = fits(8.0 * n * n * len(q_all))
        self.chunk = n if self.cache else max(1, int(available_bytes() // (8 * 8 * n)))
        require(8.0 * n * min(self.chunk, n) * 3, "the anisotropic-kernel quadrature",
                "lower `lmax` or use backend='particles'.")
        self.heads = []
        bound = 0.0
        for q, k, v in zip(q_all, k_all, v_all):
            qx, kx, vx = pts @ q.T, pts @ k.T, pts @ v.T
            if m.scheme_def.normalize_qkv:
                qx, kx, vx = (a / np.linalg.norm(a, axis=1, keepdims=True) for a in (qx, kx, vx))
            norm_bound = np.linalg.norm(qx, axis=1).max() * np.linalg.norm(kx, axis=1).max()
            shift = m.beta * norm_bound if m.softmax else 0.0   # cancels in N/Z; keeps exp() finite
            kern = np.exp(m.beta * (qx @ kx.T) - shift) if self.cache else None
            self.heads.append((qx, kx, vx, shift, kern))
            bound = max(bound, m.beta * norm_bound)
        need = kernel_bandlimit(bound, tol, 3 if m.d == 3 else 2)
        capacity = 2 * (basis.grid.ntheta if m.d == 3 else basis.n // 2) - 1 - basis.lmax
        if need > capacity:
            warn(f"quadrature of the anisotropic kernel (β‖Q‖‖K‖ = {bound:.3g}) needs degree {need} for "
                 f"tol={tol:g} but the grid integrates degree {capacity}; raise `lmax` for accuracy.")

    # -- the fields -------------------------------------------------------------------------------
    def __call__(self, rho_c) -> _Fields:
        if self.path == "fast":
            return self._fast(rho_c)
        if self.path == "general-v":
            return self._general_v(rho_c)
        return self._quadrature(rho_c)

    def _fast(self, rho_c):
        # every constant factor is on the coefficients (_setup_multipliers) and every grid field in a reused
        # buffer: the grid sees one division by Z per field (softmax) and nothing else; unnormalized attention
        # needs no Z at all
        b = self.basis
        gshape = b.weights.shape
        coef = workspace(b, "coefficients", rho_c.shape, complex)     # one at a time: each transform reads it first
        tang = b.grad(np.multiply(rho_c, self.grad_mult, out=coef),
                      out=workspace(b, "tangential", (b.ncomp,) + gshape))
        rad = None
        if self.need_radial:
            rad = b.synth(np.multiply(rho_c, self.radial_mult, out=coef), out=workspace(b, "radial", gshape))
        z = None
        if self.model.softmax:
            z = b.synth(np.multiply(rho_c, self.z_mult, out=coef), out=workspace(b, "z", gshape))
            tang /= z
            if rad is not None:
                rad /= z
        return _Fields(tang, rad, z)

    def _general_v(self, rho_c):
        b = self.basis
        rho = b.synth(rho_c)
        zc = b.conv(rho_c, self.lam)
        z = b.synth(zc) * self.unscale
        # N_i = K∗(g_i ρ): g_i ρ has degree L+1 for linear g; project to L+1 then convolve.
        gr = b.analyze(self.values * rho, lmax=b.lmax + 1)
        big = _basis_like(b, b.lmax + 1)
        nvec = np.stack([big.synth_on(b, big.conv(c, self.lam)) for c in gr], axis=-1) * self.unscale
        if self.model.softmax:
            nvec = nvec / z[..., None]
        return _Fields(b.tangent_components(nvec), np.sum(b.points * nvec, axis=-1), z)

    def _quadrature(self, rho_c):
        b, m = self.basis, self.model
        w = (b.synth(rho_c) * b.weights).reshape(-1)
        total, z_first = 0.0, None
        for qx, kx, vx, shift, kern in self.heads:
            z, n = np.empty(w.size), np.empty((w.size, vx.shape[1]))
            for lo in range(0, w.size, self.chunk):
                rows = slice(lo, lo + self.chunk)
                k = kern[rows] if kern is not None else np.exp(m.beta * (qx[rows] @ kx.T) - shift)
                z[rows], n[rows] = k @ w, k @ (w[:, None] * vx)
            total = total + (n / z[:, None] if m.softmax else n * np.exp(shift))
            z_first = z if z_first is None else z_first
        avec = total.reshape(b.points.shape)
        z_grid = z_first.reshape(b.points.shape[:-1])
        return _Fields(b.tangent_components(avec), np.sum(b.points * avec, axis=-1), z_grid)


def _tangent_dot(a, b, out, work):
    """Σ_k a_k b_k over the tangent components (axis 0) of ``a`` and ``b``; ``work`` (their shape) is scratch and may
    be ``b``.  Returns ``out``, or a view of ``work`` for one component."""
    prod = np.multiply(a, b, out=work)
    if len(prod) == 1:
        return prod[0]
    np.add(prod[0], prod[1], out=out)
    for p in prod[2:]:
        out += p
    return out


def _largest_norm(v) -> float:
    """max over the grid of |v| (tangent components on axis 0), scaled so that |v|² need not fit in float64: it read
    inf at USA's β ≳ 355 (|v| ~ e^β/β²), and so did ``max_speed``, the CFL cap (0) and the step-size diagnosis."""
    scale = float(np.max(np.abs(v)))
    if not np.isfinite(scale) or scale == 0:
        return scale
    w = v / scale
    return scale * float(np.sqrt(np.max(np.sum(w * w, axis=0))))


def _basis_like(basis, lmax):
    """A basis of band limit ``lmax`` that synthesizes onto ``basis``'s grid (for degree-L+1 products)."""
    if isinstance(basis, S2Basis):
        return _S2Padded(lmax)
    return _CirclePadded(lmax)


class _S2Padded:
    def __init__(self, lmax):
        from ..sphere import _sh as sh
        self.lmax, self.sh = lmax, sh
        self.ell, _ = sh.lm_arrays(lmax)

    def conv(self, c, per_degree):
        return c * per_degree[self.ell]

    def synth_on(self, basis, c):
        return self.sh.synthesis(c, self.lmax, basis.grid)


class _CirclePadded:
    def __init__(self, lmax):
        self.lmax = lmax

    def conv(self, c, per_degree):
        return c * per_degree[: self.lmax + 1]

    def synth_on(self, basis, c):
        from ..sphere import _circle as circ
        return circ.circle_synthesis(c, basis.n)


# ----------------------------------------------------------------------------------------------

def monitor_thresholds(opts: dict, given: dict) -> None:
    """``tail_warn`` ≤ ``tail_tol`` (in place): the monitor warns (or refines) before the run stops.  A stricter
    ``tail_tol`` given alone lowers ``tail_warn`` with it; both given the wrong way round are refused."""
    try:
        wrong_way = opts["tail_warn"] > opts["tail_tol"] > 0     # tail_tol ≤ 0 is refused by its own check, by name
    except TypeError:          # not numbers: their own checks name them
        return
    if wrong_way:
        if "tail_warn" in given:
            raise ValueError(f"`tail_warn` must be ≤ `tail_tol` (the monitor warns or refines before it stops the run); "
                             f"got tail_warn={opts['tail_warn']!r} > tail_tol={opts['tail_tol']!r}.")
        opts["tail_warn"] = opts["tail_tol"]


def _memory_estimate(lmax, d, zonal, nspecies, has_radius):
    """(bytes, grid nodes) of the spectral backend at band limit ``lmax``: the basis (nodes, tangent frame),
    the fields of one right-hand side per node (measured ≈ 190–230 B/node on S²) and the Runge–Kutta
    stages of the coefficients; the zonal basis also keeps its (L+1) × nodes Gegenbauer tables."""
    from ..sphere import _sh as sh
    from ..sphere._circle import circle_grid_size
    fields = nspecies * (2 if has_radius else 1)
    if zonal:
        nodes, ncoef, tables = (3 * lmax) // 2 + 1, lmax + 1, 2 * (lmax + 1) * ((3 * lmax) // 2 + 1)
    elif d == 3:
        grid = sh.SphereGrid.for_bandlimit(lmax, dealias=True)
        nodes, ncoef, tables = grid.ntheta * grid.nphi, sh.nalm(lmax), 0
    else:
        nodes, ncoef, tables = circle_grid_size(lmax), lmax + 1, 0
    return 8.0 * (nodes * (24 + 8 * fields) + tables) + 16.0 * 12 * fields * ncoef, nodes


_TAIL_ROUNDING = 1e-14   # a tail-energy fraction at float64 rounding: the density is resolved at its band limit

_OPTIONS = dict(lmax=None, method="rk45", rtol=1e-9, atol=1e-12, first_step=None, max_step=np.inf,
                min_step=1e-12, cfl=1.0, r0=1.0, on_resolution_loss="stop", tail_warn=1e-6, tail_tol=1e-4,
                negativity_tol=NEGATIVITY_TOL, lmax_max=256, refine_factor=1.5, filter=None, step=None,
                quadrature_tol=1e-12, mass_tol=1e-10, max_steps=10_000_000, error_norm="l2")


def start_negativity_tol(negativity_tol: float, hands_off: bool = False) -> float:
    """How negative the starting density may be on the grid: ``negativity_tol``, where the monitor's firing ends the
    run (backend="spectral": a start below it would stop at the first step); at least
    :data:`meanfield._measures.NEGATIVITY_TOL` where it hands off to particles (backend="hybrid": a start that
    "spectral" runs but its stricter monitor, 1e-10, does not pass is handed to particles at the first step)."""
    return max(negativity_tol, NEGATIVITY_TOL) if hands_off else negativity_tol


def start_bound(tol: float, given: float) -> str:
    """The bound ``tol`` of the start check, for messages: "-negativity_tol = -1e-06", or the hybrid's floor beside
    the ``negativity_tol`` ``given``."""
    if tol == given:
        return f"-negativity_tol = {-tol:g}"
    return f"{-tol:g} (a start is checked against max(negativity_tol={given:g}, {NEGATIVITY_TOL:g}))"


def _radius_schemes() -> str:
    """The schemes this solver evolves a radius field for, as a list for messages."""
    return ", ".join(sorted(name for name, row in SCHEMES.items() if row.has_radius and row.continuous))


class _Validated(Exception):
    """Raised by :meth:`SpectralBackend.validate_options` where the solver would be built: every value was accepted."""

    def __init__(self, options):
        super().__init__("validated")
        self.options = options


def _stop_before_setup(backend, lmax):
    raise _Validated(dict(backend.options))


class SpectralBackend:
    """Spectral (Eulerian) solver of the mean-field continuity equation.

    Accepts a :class:`~meanfield.Density` (d = 2 or 3), a :class:`~meanfield.ZonalDensity` (any d,
    axisymmetric, isotropic kernel) or a list of Densities (species with different radius fields,
    masses summing to 1).

    Options
    -------
    lmax : int
        Band limit (default: the density's).
    method : {"rk45", "rk23", "rk4"}
        Explicit Runge–Kutta method; embedded pairs adapt the step to ``rtol``/``atol``, "rk4" uses the
        fixed ``step``.
    step : float
        The fixed step of "rk4" (required with it, refused by the adaptive methods), in the time unit of the ODE.
    rtol, atol : float
        Tolerances of the adaptive methods (``rtol`` in [1e-14, 1); default 1e-9 and 1e-12).
    first_step, max_step, min_step : float
        Trial steps of the adaptive methods: the first (default min(CFL cap, 0.01)), the largest (default inf),
        and the smallest (default 1e-12; below it the run ends with status STEP_TOO_SMALL).
    error_norm : {"l2", "elementwise"}
        "l2": the step's error relative to the L² norm of the state; "elementwise": every coefficient
        against atol + rtol·|c| (for small perturbations of a large background).
    cfl : float
        Step cap Δt ≤ cfl·π/(L·max|v|) of the adaptive methods.  A fixed "rk4" step is not capped; when one
        beyond the cap ends in a loss of resolution, the run stops there with that diagnosis (refining
        would only lower the cap).
    r0 : float
        Initial radius where the density carries no radius field (radius schemes).
    on_resolution_loss : {"stop", "refine", "handoff"}
        "stop" ends the run (status RESOLUTION_LOST) keeping the last resolved state; "refine" zero-pads to
        ⌈refine_factor·L⌉ (up to ``lmax_max``) whenever the tail fraction passes ``tail_warn``;
        "handoff" is for backend="hybrid".
    tail_warn, tail_tol, negativity_tol : float
        Resolution monitor: warn (or refine) when E_tail > tail_warn, stop when E_tail > tail_tol or
        min ρ < −negativity_tol.  The tail fraction E_tail is at most 1: ``tail_warn`` and ``tail_tol`` are in
        (0, 1], and 1 switches that check off.  min ρ is taken on the grid; for zonal data a negative value
        within its rounding estimate (:meth:`meanfield.ZonalDensity.rounding_error`: ~eps·√N(d, ℓ) at the nodes
        near the poles in high d) counts as 0.
    refine_factor, lmax_max : float, int
        Under "refine": each refinement goes to min(⌈refine_factor·L⌉, lmax_max) (refine_factor > 1, default
        1.5; lmax_max ≥ the starting L, default 256).
    filter : None or (strength, order)
        Exponential filter exp(−strength (ℓ/L)^order) after each step.  It changes the answer; its use is
        warned about and recorded: ``steps["filtered"]`` marks the filtered steps, the diagnostic
        ``filtered_steps`` counts those of the whole run (a resumed run's earlier ones included).
    max_steps : int
        The run ends (status STEP_TOO_SMALL) once it has taken this many steps (those of ``Trajectory.steps``),
        counted over the whole run: a resumed run counts the steps of the part it continues.
    quadrature_tol : float
        Kernel accuracy in (0, 1) (default 1e-12): an ``lmax`` below ``kernel_bandlimit(β, quadrature_tol)`` is
        warned about; the anisotropic-kernel quadrature must reach it on its grid.
    mass_tol : float
        Largest |mass error| before the run stops with status MASS_DRIFT (default 1e-10; the divergence is
        discrete-exact, so the reported ``mass_error`` is 0 up to rounding).

    Diagnostics of each saved state: ``t``, ``mass``, ``mass_error``, ``min_rho`` (on the grid, uniform density =
    1), ``tail_fraction``, ``energy``, ``max_speed``, ``dissipation``, ``lmax``, ``filtered_steps``,
    ``mean_alignment`` and, for the schemes with a radius, ``mean_radius`` (see :class:`meanfield.Trajectory`).
    """

    name = "spectral"

    #: whether the monitor's firing hands the state to particles (the hybrid's spectral phase) rather than ends the
    #: run: the starting density is then checked against :func:`start_negativity_tol` with ``hands_off=True``
    HANDS_OFF = False

    @classmethod
    def option_defaults(cls) -> dict:
        """{option name: default} of this backend."""
        return dict(_OPTIONS)

    @classmethod
    def validate_options(cls, model, initial, options: dict, times=None) -> dict:
        """The options checked by this backend's own ``__init__``, stopped where it would build the basis and the
        attention (``_setup``): names, values and the initial density are checked, nothing is allocated.  Returns
        the options as the run would use them (``times`` is not needed: the caller counts fixed steps)."""
        dry = type(cls.__name__, (cls,), {"_setup": _stop_before_setup})
        try:
            dry(model, initial, **options)
        except _Validated as done:
            return done.options
        return dict(options)      # pragma: no cover - an __init__ that never calls _setup built the solver

    def __init__(self, model: Model, initial, **options):
        opts = check_options("spectral", options, _OPTIONS)
        self.model = model
        if not model.scheme_def.continuous:
            raise UnsupportedModelError(f"scheme {model.scheme!r} is a discrete layer map only; use "
                                        "backend='particles' with time='layers'.")
        species = list(initial) if isinstance(initial, (list, tuple)) else [initial]
        self._check_initial(species)
        first = species[0]
        if opts["lmax"] is None and first.lmax < 1:     # "`lmax` must be an integer >= 1" named an option not given
            raise ValueError(f"the initial density has band limit {first.lmax}, and the solver needs a band limit >= 1: "
                             "give the option `lmax` (>= 1; the density is zero-padded to it).")
        lmax = nonneg_int("lmax", first.lmax if opts["lmax"] is None else opts["lmax"], minimum=1)
        self.method = get_method(opts["method"])
        check_step_options(opts, self.method, options)
        for k in ("cfl", "r0", "negativity_tol", "mass_tol"):
            positive_float(k, opts[k])
        if opts["r0"] != _OPTIONS["r0"]:        # not the default (which a resumed run's stored options repeat)
            self._check_r0_used(species)
        for k in ("tail_warn", "tail_tol"):     # a fraction of the energy is at most 1: 5 (for 5 %?) would never act
            if not 0 < real_number(k, opts[k]) <= 1:      # one message for 0, −1, NaN and 5: the range is (0, 1]
                raise ValueError(f"`{k}` must be in (0, 1] (a fraction of the spectral energy; 1 switches that "
                                 f"check off); got {k}={opts[k]!r}.")
        monitor_thresholds(opts, options)
        open_fraction("quadrature_tol", opts["quadrature_tol"])
        kernel_beta(model, opts["quadrature_tol"])    # β·c = 1e10 from a large Q was refused in the set-up, as `beta`
        factor = opts["refine_factor"]       # "finite and > 0" hid the bound for 0.5 alike: say > 1 from the start
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real):
            raise TypeError(f"`refine_factor` must be a real number > 1; got refine_factor={factor!r}.")
        if not (np.isfinite(factor) and factor > 1):
            raise ValueError(f"`refine_factor` must be finite and > 1 (each refinement raises the band limit by that "
                             f"factor); got refine_factor={factor!r}.")
        opts["max_steps"] = nonneg_int("max_steps", opts["max_steps"], minimum=1)
        if isinstance(opts["on_resolution_loss"], str) and opts["on_resolution_loss"] == "handoff" \
                and type(self).name != "hybrid":
            raise ValueError("on_resolution_loss='handoff' is what backend='hybrid' does (spectral, then particles "
                             "when resolution is lost): use backend='hybrid', which sets it itself.")
        # the spectral backend's own choices: the error listed 'handoff', which it then refused
        choice("on_resolution_loss", opts["on_resolution_loss"],
               POLICIES if type(self).name == "hybrid" else tuple(p for p in POLICIES if p != "handoff"))
        if opts["lmax_max"] is not None or opts["on_resolution_loss"] == "refine":   # checked even when not refining
            opts["lmax_max"] = nonneg_int("lmax_max", opts["lmax_max"], minimum=1)
        if opts["on_resolution_loss"] == "refine" and opts["lmax_max"] < lmax:
            raise ValueError(f"`lmax_max` must be ≥ the starting band limit lmax={lmax} to refine; got "
                             f"lmax_max={opts['lmax_max']!r}.")
        choice("error_norm", opts["error_norm"], ("l2", "elementwise"))
        opts["filter"] = exponential_filter(opts["filter"])      # ["a", "b"] compared with 0 raised a TypeError
        self.options = opts
        #: the most negative value on the grid a starting density (or species) may take, negated
        self.start_negativity_tol = start_negativity_tol(opts["negativity_tol"], self.HANDS_OFF)
        self.zonal = isinstance(first, ZonalDensity)
        self._axis = first.axis if self.zonal else None
        self.t = 0.0
        self.detail = ""
        nbytes, nodes = _memory_estimate(lmax, model.d, self.zonal, len(species), model.scheme_def.has_radius)
        require(nbytes, f"backend='spectral' at lmax={lmax} ({nodes} grid nodes)", "lower `lmax` (the band limit).")
        if opts["on_resolution_loss"] == "refine":   # a cap that cannot fit would fail mid-run, hours in
            top, nodes = _memory_estimate(opts["lmax_max"], model.d, self.zonal, len(species),
                                          model.scheme_def.has_radius)
            require(top, f"refining up to lmax_max={opts['lmax_max']} ({nodes} grid nodes)", "lower `lmax_max`.")
        self._setup(lmax)
        rad = self.model.scheme_def.has_radius
        y = np.zeros((len(species), 2 if rad else 1, self.basis.ncoef), complex)
        for i, s in enumerate(species):
            y[i, 0] = self._resize_from(s.coeffs, s.lmax)
            if s.lmax > self.basis.lmax:     # content dropped before the first step, unreported
                e = s.power()
                lost = float(e[self.basis.lmax + 1:].sum() / e.sum())
                if lost > opts["tail_warn"]:
                    warn(f"lmax={self.basis.lmax} truncates the initial density{f' (species {i})' if i else ''} "
                         f"(band limit {s.lmax}): the degrees above {self.basis.lmax} held {lost:.2e} of its spectral "
                         f"energy (> tail_warn={opts['tail_warn']:g}), and the run goes on without them.")
            # a positive field the option lmax truncated: that option is what to change
            cut = (f" once truncated to lmax={self.basis.lmax} (its band limit is {s.lmax}): raise `lmax`, or leave it "
                   "unset" if s.lmax > self.basis.lmax else "")
            if len(species) > 1:     # the run checks the total density; a species is a density of its own too
                low = self._lowest(y[i, 0])
                if low < -self.start_negativity_tol:
                    bound = start_bound(self.start_negativity_tol, opts["negativity_tol"])
                    raise ValueError(f"species {i} must be a nonnegative density; its minimum on the solver's grid "
                                     f"is {low:.3g} < {bound}{cut} (the total "
                                     "of the species may be positive: each one is a density of tokens).")
            if rad:
                y[i, 1] = (self._resize_from(s.radius, s.lmax) if s.radius is not None
                           else self.basis.uniform() * opts["r0"])
                r_min = self._lowest(y[i, 1], cap=None)
                if not r_min > 0:
                    raise ValueError(f"the radius field of species {i} must be > 0 everywhere; its minimum on the "
                                     f"solver's grid is {r_min:.3g}{cut}.")
        self.y = y
        self._mass0 = float(np.sum(self.basis.mass(y[:, 0])))
        self.step_log = {k: [] for k in ("t", "dt", "lmax", "mass_error", "min_rho", "tail", "max_speed",
                                         "energy", "mean_alignment", "dissipation", "rejected", "filtered")}
        self._h = opts["first_step"]
        self._warned_tail = self._warned_filter = False
        self._over_cfl = None      # (t, step, cap) of the last fixed step longer than the CFL cap
        # run-wide counts: the steps of the run before this backend's first one (a resumed run's saved part), and
        # the filtered steps of the whole run; see carry_steps
        self._steps_before = 0
        self._filter_count = 0
        self._last = None
        self._diag_cache = None
        self._k0 = self._memo = None       # f(t, y) of the current state; the last stage of a step
        self._segment = (0.0, np.inf)      # the [start, stop] that no step crosses (Mix-LN: τ ends one)

    # -- set-up -----------------------------------------------------------------------------------
    def _check_initial(self, species):
        kinds = {type(s) for s in species}
        if not kinds <= {Density, ZonalDensity} or len(kinds) != 1:
            raise TypeError("backend='spectral' needs a Density, a ZonalDensity or a list of one kind; "
                            f"got {[type(s).__name__ for s in species]}." + conversion_hint(species[0]))
        for s in species:
            if s.d != self.model.d:
                # a Density lives on S² or S¹ only: in higher d the spectral backend takes a ZonalDensity
                hint = (" (a Density lives on S² or S¹: for d > 3 use a ZonalDensity, or Particles with a particle "
                        "backend)" if isinstance(s, Density) and self.model.d > 3
                        else f" (a model on its sphere: mf.Model(..., d={s.d}))")
                raise ValueError(f"the density has d={s.d} but the model has d={self.model.d}{hint}.")
            if len({s.lmax for s in species}) != 1:
                raise ValueError("all species must share `lmax`.")
        mass = sum(s.mass() for s in species)
        if abs(mass - 1) > 1e-10:
            if len(species) > 1:     # normalizing each species (as said for one density) would give a total of k
                raise ValueError(f"the species' masses must sum to 1 (Σ_i ∫ρ_i dσ = 1); got {mass!r}. Divide every "
                                 "species by that sum (s.with_coeffs(s.coeffs / total, s.radius)), not each by its "
                                 "own mass.")
            raise ValueError(f"the initial density must have total mass 1 (∫ρ dσ = 1); got {mass!r}. "
                             f"Use its .normalized() ({type(species[0]).__name__}.normalized).")
        if len(species) > 1 and not self.model.scheme_def.has_radius:
            raise ValueError(f"several species only make sense for schemes with a radius ({_radius_schemes()}); "
                             f"got scheme={self.model.scheme!r}.")
        if not self.model.scheme_def.has_radius and any(s.radius is not None for s in species):
            warn(f"scheme={self.model.scheme!r} has no radius: the radius field of the initial density is "
                 "not used, and the states of the run carry none.")

    def _check_r0_used(self, species) -> None:
        """A given ``r0`` that sets no radius (a scheme without one, or densities that carry their own) is warned about."""
        if not self.model.scheme_def.has_radius:
            warn(f"`r0` is not used: scheme={self.model.scheme!r} has no radius (the radius schemes: "
                 f"{_radius_schemes()}).")
        elif all(s.radius is not None for s in species):
            warn("`r0` is not used: the initial density carries its own radius field.")

    def _setup(self, lmax):
        d = self.model.d
        if self.zonal:
            self.basis = ZonalBasis(lmax, d)
        elif d == 3:
            self.basis = S2Basis(lmax)
        elif d == 2:
            self.basis = CircleBasis(lmax)
        else:
            raise UnsupportedModelError(f"backend='spectral' handles d = 2, 3 or zonal data; got d={d}.")
        self.attention = SpectralAttention(self.model, self.basis, self.options["quadrature_tol"])
        # e^{-β_eff}-scaled: the unscaled weights overflow to inf from β_eff ≈ 710, and inf·|c|² = NaN where c = 0
        self._energy_w = (self.basis.energy_weights(funk_hecke(self.model.beta_eff, lmax + 1, d, scaled=True))
                          if self.attention.path != "quadrature" else None)

    def _lowest(self, c, cap=0.0) -> float:
        """The minimum of the field of coefficients ``c`` on the grid; zonal: beyond its rounding (see
        ZonalBasis.min_beyond_rounding)."""
        v = self.basis.synth(c)
        low = float(np.min(v))
        return self.basis.min_beyond_rounding(c, v, cap) if self.zonal and low <= 0 else low

    def _resize_from(self, c, lmax_in):
        if self.zonal or self.model.d == 2:
            out = np.zeros(self.basis.ncoef, complex)
            k = min(lmax_in, self.basis.lmax) + 1
            out[:k] = np.asarray(c)[:k]
            return out
        from ..sphere import _sh as sh
        return sh.resize(np.asarray(c, complex), lmax_in, self.basis.lmax)

    # -- right-hand side --------------------------------------------------------------------------
    def rhs(self, t, y):
        """f(t, y): the coefficients of −div(ρ_i v_i) (and of the radius law) of every species i.  Also sets the
        monitors of the state, ``_last`` = (max |v|, ∫ ρ|v|² dσ, min ρ)."""
        b = self.basis
        gshape = b.weights.shape          # grid fields go to reused buffers (no page faults)
        rho = workspace(b, "rho", (y.shape[0],) + gshape)
        for i in range(y.shape[0]):
            b.synth(y[i, 0], out=rho[i])
        # each grid field is read again soon after it was written where the order allows: a transform in
        # between evicts it from the cache (L = 128: ρ·v took 110 µs after the next transform, 45 µs before it)
        total = rho[0] if len(rho) == 1 else rho.sum(axis=0)
        min_rho = float(total.min())
        if min_rho < 0 and self.zonal:     # in high d, rounding near the poles: a negative value within it counts as 0
            min_rho = b.min_beyond_rounding(y[0, 0] if y.shape[0] == 1 else y[:, 0].sum(axis=0), total)
        fields = self.attention(y[0, 0] if y.shape[0] == 1 else y[:, 0].sum(axis=0))
        dy = np.empty_like(y)
        vmax, diss = 0.0, 0.0
        for i in range(y.shape[0]):
            v, r, a_norm = self._velocity(t, y[i], fields)
            flux = workspace(b, "flux", v.shape)
            with np.errstate(over="ignore"):   # |v|² beyond float64 (USA, β ≳ 355) while |v| is not: see below
                speed2 = _tangent_dot(v, v, workspace(b, "speed2", gshape), flux)
            peak = float(speed2.max())
            vmax = max(vmax, np.sqrt(peak) if np.isfinite(peak) else _largest_norm(v))
            diss += float(b.inner(rho[i], speed2))
            np.negative(b.div(np.multiply(rho[i], v, out=flux)), out=dy[i, 0])
            if r is not None:
                dy[i, 1] = self._radius_rate(t, y[i, 1], v, r, a_norm, fields)
        self._last = (vmax, diss, min_rho)
        return dy

    def _velocity(self, t, y_i, fields):
        """(v, r, ‖A‖) of one species on the grid: v = A_tan / s (a reused buffer, or the attention's own when
        s = 1), its radius field r (None without one) and the ‖A‖ the scheme row was given."""
        b, scheme = self.basis, self.model.scheme_def
        r = b.synth(y_i[1], out=workspace(b, "radius", b.weights.shape)) if scheme.has_radius else None
        a_norm = fields.norm if scheme.needs_norm else np.ones(())   # unused by these rows
        with np.errstate(over="ignore"):           # an s beyond float64 is divided out scaled below
            s = scheme.speed(np.ones(()) if r is None else r, a_norm, t, self.model)
        if np.ndim(s) == 0 and s == 1:                                 # Post-LN
            return fields.tangential, r, a_norm
        v = np.divide(fields.tangential, s, out=workspace(b, "velocity", fields.tangential.shape))
        if np.isposinf(s).any():    # r‖A‖ or ‖A‖/α beyond float64 (USA near β = 709.78): v read 0, the density froze
            g = np.shape(s)
            scaled = over_overflowed_speed(scheme, fields.tangential.reshape(len(v), -1).T, np.ravel(s),
                                           np.broadcast_to(1.0 if r is None else r, g).ravel(),
                                           np.broadcast_to(a_norm, g).ravel(), t, self.model)
            if scaled is not None:
                v[...] = scaled.T.reshape(v.shape)
        return v, r, a_norm

    def _radius_rate(self, t, r_c, v, r, a_norm, fields):
        """Coefficients of ∂_t r = ṙ − v·∇r for one species (radius coefficients ``r_c``, values ``r``)."""
        b, scheme = self.basis, self.model.scheme_def
        grad_r = b.grad(r_c, out=workspace(b, "grad_r", v.shape))
        adv = _tangent_dot(v, grad_r, workspace(b, "advection", b.weights.shape), grad_r)
        return b.analyze(np.subtract(scheme.radial(fields.radial, a_norm, r, t, self.model), adv, out=adv))

    # -- stepping ---------------------------------------------------------------------------------
    def advance(self, t_target: float) -> Status:
        breaks = [self.model.tau] if (self.model.tau is not None and self.t < self.model.tau < t_target) else []
        for stop in breaks + [t_target]:
            status = self._advance_to(stop)
            if status is not Status.OK:
                return status
        return Status.OK

    def _advance_to(self, t_target):
        opts = self.options
        self._segment = (self.t, t_target)
        while self.t < t_target - 1e-14 * max(1.0, abs(t_target)):
            if self._steps_before + len(self.step_log["t"]) >= opts["max_steps"]:
                self.detail = (f"max_steps={opts['max_steps']} steps taken by t={self.t:.6g} (the steps of the whole "
                               "run, a resumed run's earlier ones included; not the step size: raise `max_steps`, "
                               "or the step).")
                return Status.STEP_TOO_SMALL
            status = self._one_step(t_target)
            if status is not Status.OK:
                return status
        self.t = t_target
        return Status.OK

    def _cfl_cap(self):
        if self._last is None:
            self.rhs(self.t, self.y)
        vmax = self._last[0]
        return np.inf if vmax == 0 else self.options["cfl"] * np.pi / (self.basis.lmax * vmax)

    def _one_step(self, t_target):
        opts, tab = self.options, self.method
        remaining = t_target - self.t
        rejected = 0
        if not tab.adaptive:
            h = min(opts["step"], remaining)
            k0 = self._first_stage()
            cap = self._cfl_cap()        # a fixed step is not capped (it is fixed), but one beyond the cap is unstable
            self._over_cfl = (self.t, h, cap) if h > cap else None
            y_new, _, _ = rk_step(tab, self._rhs_memo, self.t, self.y, h, k0=k0)
        else:
            # without first_step the first guess is 0.01, but never below min_step (that stopped every run at t = 0)
            h = self._h if self._h is not None else max(min(self._cfl_cap(), 0.01), opts["min_step"])
            k0 = self._first_stage()
            while True:
                h = min(h, opts["max_step"], self._cfl_cap())
                if h < opts["min_step"]:
                    if rejected and not finite:
                        self.detail = self._nonfinite(f"non-finite coefficients at t={self.t:.6g} down to step {h:.3g}.")
                        return Status.NON_FINITE
                    self.detail = f"step {h:.3g} < min_step at t={self.t:.6g}{self._speed_note()}."
                    return Status.STEP_TOO_SMALL
                wanted, h = h, min(h, remaining)      # a step shortened to land on a save time is not a stalled one
                y_new, err, _ = rk_step(tab, self._rhs_memo, self.t, self.y, h, k0=k0)
                finite = np.all(np.isfinite(y_new))
                norm = self._error_norm(err, y_new) if finite else np.inf
                if norm <= 1.0:
                    break
                rejected += 1
                h = next_step(h, norm, tab.error_order) if finite else h / 4
            # a step shortened to a save time keeps the step size it interrupted; a first step so shortened hands on
            # the one it wanted (grown from the short one, it could stay below min_step)
            if h < remaining or (self._h is None and wanted <= remaining):
                self._h = next_step(h, norm, tab.error_order)
            elif self._h is None:
                self._h = wanted
        if not np.all(np.isfinite(y_new)):
            self.detail = self._nonfinite(f"non-finite coefficients after the step at t={self.t:.6g}.")
            return Status.NON_FINITE
        return self._accept(y_new, h, rejected)

    def _speed_note(self) -> str:
        """Where the step stalled: the largest speed on the grid (and, for unnormalized attention, its e^β)."""
        vmax = self._last[0] if self._last is not None else np.nan
        note = f", where the largest speed on the grid is {vmax:.3g} (the CFL cap is {self._cfl_cap():.3g})"
        if not self.model.softmax and self.model.logit_bound > 30:
            note += (f"; unnormalized attention scales speeds by up to e^(β‖QᵀK‖) = {np.exp(self.model.logit_bound):.3g} "
                     "(softmax attention divides it out)")
        return note

    def _nonfinite(self, detail: str) -> str:
        """``detail``, or the attention field's diagnosis when the field is not finite at the last finite state
        (then a smaller step does not help)."""
        if not np.all(np.isfinite(self.y)):
            return detail
        with np.errstate(all="ignore"):
            fields = self.attention(self.y[:, 0].sum(axis=0))
            finite = np.all(np.isfinite(fields.tangential))
        if finite:
            return detail
        return (f"The attention field is not finite at t={round(self.t, 12):.6g}, although the coefficients are "
                "finite. A smaller step does not help.")

    # The right-hand side at the accepted state is needed twice: for the monitors and as the next step's
    # first stage; for the FSAL pairs (rk45, rk23) it is also the step's last stage, evaluated at bitwise
    # the same (t, y).  Each is computed once (8 → 6 right-hand sides per rk45 step; same results).
    def _stage_time(self, t):
        """``t`` kept strictly inside the current segment when the scheme switches laws (Mix-LN at τ), so every
        stage of a step evaluates the law of the segment's own side: at t = τ, the state that ends the Post-LN
        segment and the one that starts the Pre-LN segment have different velocities."""
        if self.model.tau is None:
            return t
        a, b = self._segment
        return min(max(t, np.nextafter(a, b)), np.nextafter(b, a))

    def _rhs_memo(self, t, y):
        t = self._stage_time(t)
        dy = self.rhs(t, y)
        self._memo = (t, y, dy)
        return dy

    def _state_rhs(self):
        """(t, f(t, y)) of the accepted state (t its stage time): the step's last stage if it was evaluated there,
        else computed."""
        memo, self._memo = self._memo, None
        t = self._stage_time(self.t)
        if memo is not None and memo[0] == t and np.array_equal(memo[1], self.y):
            return memo[0], memo[2]        # it was the last right-hand side evaluated: `_last` is its monitors
        return t, self.rhs(t, self.y)

    def _first_stage(self):
        """The cached f(t, y) of the current state, or None when the state changed since it was computed, or when
        it was evaluated on the other side of a switch (the end of the previous segment)."""
        k = self._k0
        return k[2] if k is not None and k[0] == self._stage_time(self.t) and k[1] is self.y else None

    def _error_norm(self, err, y_new):
        opts = self.options
        if opts["error_norm"] == "l2":  # relative L² error of the whole state
            y = self.y
            if self.zonal:
                # Parseval: ‖g‖² = Σ g_ℓ²/N(d, ℓ) for P_ℓ(1) = 1.  The plain sum of g_ℓ² weighed degree ℓ by N(d, ℓ):
                # in high d the rounding of the top coefficients (eps·√N(d, ℓ)·‖g‖) ruled the step: e^{5t} on S^99
                # at L = 30 took 18 952 steps of ~6e-6 to t = 0.5, against 12
                w = np.sqrt(self.basis.norms)
                err, y, y_new = err * w, y * w, y_new * w
            err, y, y_new = l2_norm(err), l2_norm(y), l2_norm(y_new)
        else:                           # every coefficient on its own scale (perturbation studies)
            y = self.y
        return error_norm(err, y, y_new, opts["rtol"], opts["atol"])

    def _accept(self, y_new, h, rejected):
        opts = self.options
        previous = (self.t, self.y)
        if opts["filter"] is not None:
            strength, order = opts["filter"]
            y_new = y_new * np.exp(-strength * (self.basis.ell / self.basis.lmax) ** order)
        self.t, self.y = self.t + h, y_new      # together: an interrupt never leaves a time with another state
        if opts["filter"] is not None and not self._warned_filter:
            self._warned_filter = True
            warn(f"an exponential filter {opts['filter']} is applied after every step: it changes the "
                 "answer (clusters get a filter-set width).")
        t_eval, dy = self._state_rhs()
        self._k0 = (t_eval, self.y, dy)             # monitors of the new state, and the next first stage
        vmax, diss, min_rho = self._last
        tail = self._tail()
        self._log(h, rejected, tail, vmax, diss, min_rho)
        status = self._monitor(tail, min_rho, previous)
        # after the monitor's verdict: the hook (progress, a wall-clock checkpoint) sees a state the run keeps
        # (refined, or rolled back), never one it is about to give up
        if status is Status.OK and getattr(self, "on_step", None) is not None:
            self.on_step(self.t, h, tail=tail, lmax=self.basis.lmax)
        return status

    def _tail(self):
        e = self.basis.power(self.y[:, 0].sum(axis=0))
        cut = int(np.floor(2 * self.basis.lmax / 3)) + 1
        return float(e[cut:].sum() / e.sum())

    def _roll_back(self, previous):
        """Return to the state before the last step, and drop that step from the log (its state is not kept)."""
        self.t, self.y = previous
        self._filter_count -= bool(self.step_log["filtered"][-1])
        for column in self.step_log.values():
            column.pop()

    def _monitor(self, tail, min_rho, previous):
        opts = self.options
        policy = opts["on_resolution_loss"]
        undershoot = min_rho < -0.1 * opts["negativity_tol"] and tail > _TAIL_ROUNDING  # a resolved tail: refining cannot help
        lost = tail > opts["tail_tol"] or min_rho < -opts["negativity_tol"]
        if self._over_cfl is not None and lost:
            # more degrees only lower the cap: diagnose the time step instead of refining
            t0, h, cap = self._over_cfl
            self.detail = (f"At t={self.t:.6g}: the tail fraction {tail:.3e}, min ρ {min_rho:.3e} (lmax={self.basis.lmax}) "
                           f"after a fixed step {h:.3g} from t={t0:.6g}, beyond the CFL cap cfl·π/(L·max|v|) = "
                           f"{cap:.3g}, where the time stepping is unstable. State kept from t={previous[0]:.6g}. "
                           "Lower `step` below the cap, or use an adaptive method (rk45), which keeps to it.")
            self.loss_time = self.t
            self._roll_back(previous)
            self._last = None
            return self._on_loss()
        if policy == "refine" and (tail > opts["tail_warn"] or undershoot):
            new_l = min(int(np.ceil(opts["refine_factor"] * self.basis.lmax)), opts["lmax_max"])
            if new_l > self.basis.lmax:      # the last refinement steps up to lmax_max exactly
                if min_rho < -0.1 * opts["negativity_tol"] or lost:
                    # an undershoot, or a tail past tail_tol, is made by the last step's truncation: zero-padding
                    # keeps it, so redo that step from the previous (resolved) state at the new band limit
                    self._roll_back(previous)
                self.refine(new_l)
                return Status.OK
        lost = tail > opts["tail_tol"] or min_rho < -opts["negativity_tol"]
        if tail > opts["tail_warn"] and not self._warned_tail and not lost:
            self._warned_tail = True
            warn(f"resolution warning at t={self.t:.6g}: tail-energy fraction {tail:.2e} > tail_warn="
                 f"{opts['tail_warn']:g} (lmax={self.basis.lmax}).")
        if lost:
            tail_fired, undershoot = tail > opts["tail_tol"], min_rho < -opts["negativity_tol"]
            fired = [f"the tail fraction {tail:.3e} > tail_tol={opts['tail_tol']:g}"] if tail_fired else []
            if undershoot:
                fired.append(f"min ρ {min_rho:.3e} < −negativity_tol={opts['negativity_tol']:g}")
            # the quantities that did not fire, once (the detail repeated the fired one: "the tail fraction 1.442e-06
            # > tail_tol=1e-06 (tail fraction 1.442e-06, …)")
            context = ([] if tail_fired else [f"tail fraction {tail:.3e}"]) + \
                ([] if undershoot else [f"min ρ {min_rho:.3e}"]) + [f"lmax={self.basis.lmax}"]
            self.detail = (f"At t={self.t:.6g}: {' and '.join(fired)} ({', '.join(context)}). "
                           f"State kept from t={previous[0]:.6g}.")
            if tail <= _TAIL_ROUNDING and min_rho >= -opts["negativity_tol"]:
                # only the tail fired, below its rounding level: no undershoot to explain, no band limit that helps
                self.detail += (f" tail_tol={opts['tail_tol']:g} is below the rounding level of the tail fraction "
                                f"(~{_TAIL_ROUNDING:g}), which it exceeds at any band limit.")
            elif tail <= _TAIL_ROUNDING:
                self.detail += (" The tail is at rounding level, so more degrees cannot remove the undershoot: it is "
                                "the time stepping's (or an earlier truncation's) where the density is ~0 between "
                                "clusters.")
                if self.loss_advice:            # the hybrid backend hands off instead: no advice
                    self.detail += (" Lower `rtol`, raise `negativity_tol`, or continue with particles "
                                    "(backend='hybrid').")
            else:
                if policy == "refine":
                    self.detail += f" Refinement reached lmax_max={opts['lmax_max']}."
                self.detail += self.loss_advice.get(policy, "")
            self.loss_time = self.t
            self._roll_back(previous)
            self._last = None
            kept = self._tail()
            if kept > opts["tail_tol"]:     # e.g. an initial density with no room above its degrees: "resolved" it is not
                self.detail += (f" The state kept is itself beyond tail_tol (tail fraction {kept:.3e} at "
                                f"t={self.t:.6g}, lmax={self.basis.lmax}), so it is not resolved either; a larger "
                                "`lmax` (the density is zero-padded to it) gives its degrees room.")
            return self._on_loss()
        mass_err = abs(float(np.sum(self.basis.mass(self.y[:, 0]))) - self._mass0)
        if mass_err > opts["mass_tol"]:
            self.detail = f"mass error {mass_err:.3e} at t={self.t:.6g}."
            return Status.MASS_DRIFT
        return Status.OK

    # what to change after a loss of resolution, by policy (the hybrid backend, which hands off, clears it)
    loss_advice = {"stop": " Raise `lmax`, use on_resolution_loss='refine' (up to `lmax_max`) or backend='hybrid'.",
                   "refine": " Raise `lmax_max` (a stopped run continues from its checkpoint with it: "
                             "`meanfield run CONFIG --output FILE --resume --option lmax_max=N`, or "
                             "meanfield.resume(FILE, options={'lmax_max': N})), or continue with particles "
                             "(backend='hybrid')."}

    def _on_loss(self):
        return Status.RESOLUTION_LOST

    def refine(self, lmax: int):
        """Zero-pad the state to band limit ``lmax`` and continue there."""
        y = np.stack([[self._pad(c, lmax) for c in sp] for sp in self.y])
        self._setup(lmax)
        self.y = y
        self._last = None
        self._h = None

    def _pad(self, c, lmax):
        return self.basis.resize(c, lmax)

    def _log(self, h, rejected, tail, vmax, diss, min_rho):
        log = self.step_log
        log["t"].append(self.t)
        log["dt"].append(h)
        log["lmax"].append(self.basis.lmax)
        mass = float(np.sum(self.basis.mass(self.y[:, 0])))
        log["mass_error"].append(mass - self._mass0)
        log["min_rho"].append(min_rho)
        log["tail"].append(tail)
        log["max_speed"].append(vmax)
        log["energy"].append(self._energy())
        log["mean_alignment"].append(self._mean_alignment(mass))     # from the degree-≤1 coefficients: ~25 µs
        log["dissipation"].append(diss)
        log["rejected"].append(rejected)
        log["filtered"].append(self.options["filter"] is not None)
        self._filter_count += log["filtered"][-1]

    def _energy(self):
        """E_β(ρ) = (1/2β) ∬ e^{β_eff⟨x,y⟩} dμ dμ (isotropic kernels; NaN otherwise)."""
        if self._energy_w is None:
            return np.nan
        c = self.y[:, 0].sum(axis=0)
        scaled = float(np.sum(self._energy_w[: c.size] * np.abs(c) ** 2) / (2 * self.model.beta))
        with np.errstate(over="ignore"):        # beyond float64: inf, as meanfield.energy reports it
            return float(np.exp(self.model.beta_eff) * scaled)

    def resume_options(self) -> dict:
        """Options that let a new backend continue exactly where this one stands (checkpoints)."""
        return dict(first_step=self._h, lmax=self.basis.lmax) if self.method.adaptive else dict(lmax=self.basis.lmax)

    def carry_steps(self, steps: dict) -> None:
        """Continue the run whose saved part logged ``steps`` (its ``Trajectory.steps``, up to where this backend
        starts): ``max_steps`` bounds the steps of the whole run, and ``filtered_steps`` counts those of the whole
        run, as in a run that was never interrupted."""
        self._steps_before = len(steps.get("t", ()))
        # (NaN in a stretch of the log that lacks the column: _concatenate fills it so)
        self._filter_count = int(np.nansum(np.asarray(steps.get("filtered", ()), dtype=float)))

    def step_marker(self) -> tuple:
        """(t, steps logged, state and basis identity): see :meth:`ParticleStepper.step_marker`; a refinement
        changes the basis before the state."""
        return (self.t, len(self.step_log["t"]), id(self.y), id(self.basis))

    # -- output -----------------------------------------------------------------------------------
    def state(self):
        out = []
        for sp in self.y:
            rad = sp[1].copy() if sp.shape[0] > 1 else None
            if self.zonal:
                out.append(ZonalDensity(sp[0].real, self.basis.lmax, self.model.d, self._axis,
                                        None if rad is None else rad.real))
            else:
                out.append(Density(sp[0].copy(), self.basis.lmax, self.model.d, rad))
        return out[0] if len(out) == 1 else tuple(out)

    def _first_moment(self, c) -> np.ndarray:
        """∫ x ρ dσ of the coefficients ``c`` on the solver's grid (exact: x ρ is band-limited to L + 1, within the
        grid's degree); along the axis for zonal densities, whose other components vanish."""
        b = self.basis
        rho = b.synth(c)
        return b.integrate(np.moveaxis(b.points, -1, 0) * rho if b.has_ambient else b.t * rho)

    def _moment_map(self):
        """(idx, G_re, G_im) with ∫ x ρ dσ = G_re Re c[idx] + G_im Im c[idx]: only degrees ≤ 1 have a first
        moment, so a few syntheses per band limit replace one per step (which cost ~0.7 of a right-hand side)."""
        b = self.basis
        if getattr(self, "_moments", (None,))[0] is not b:
            idx = np.flatnonzero(b.ell <= 1)
            unit = np.zeros(b.ell.shape, complex)
            cols = []
            for scale in (1.0, 1j):
                for k in idx:
                    unit[k] = scale
                    cols.append(np.atleast_1d(self._first_moment(unit)))
                    unit[k] = 0
            g = np.array(cols).T
            self._moments = (b, idx, g[:, :idx.size], g[:, idx.size:])
        return self._moments[1:]

    def _mean_alignment(self, mass) -> float:
        """∬⟨x, y⟩ dμ dμ / mass² = |m|², m = ∫ x dμ / mass: the particles' ``mean_alignment`` of the density."""
        idx, g_re, g_im = self._moment_map()
        c = self.y[:, 0].sum(axis=0)[idx]
        m = g_re @ c.real + g_im @ c.imag
        return float(np.sum(np.square(m)) / mass ** 2)

    def diagnostics(self) -> dict:
        if self._last is None:
            self.rhs(self.t, self.y)
        vmax, diss, min_rho = self._last
        mass = float(np.sum(self.basis.mass(self.y[:, 0])))
        # `t` as the particle backends record it (only the hybrid added it to its spectral phase): a spectral run's
        # diagnostics had no time column
        out = dict(t=float(self.t), mass=mass, mass_error=mass - self._mass0, min_rho=min_rho,
                   tail_fraction=self._tail(), energy=self._energy(), max_speed=vmax, dissipation=diss,
                   lmax=self.basis.lmax, filtered_steps=self._filter_count, mean_alignment=self._mean_alignment(mass))
        if self.model.scheme_def.has_radius:
            rho = np.stack([self.basis.synth(c) for c in self.y[:, 0]])
            r = np.stack([self.basis.synth(c) for c in self.y[:, 1]])
            out["mean_radius"] = float(self.basis.integrate((rho * r).sum(axis=0)) / mass)
        return out
