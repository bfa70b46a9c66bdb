"""Measures on S^{d-1}: a band-limited :class:`Density` and weighted :class:`Particles`.

A Density's values are taken w.r.t. the *normalized* uniform measure σ, so the uniform density is 1
and a probability density integrates to 1 against σ.  On S² (d = 3) it is stored by orthonormal
spherical-harmonic coefficients (``meanfield.sphere`` conventions; then ρ̂_00 = √(4π) for a
probability density); on S¹ (d = 2) by Fourier coefficients c_0..c_L (c_0 = 1 for a probability).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from ._errors import warn
from ._memory import require
from ._norms import norms as overflow_safe_norms
from ._validate import (complex_array, dimension, flag, function_of, holds_text, no_bools, nonneg_int,
                        random_generator, real_array, unit_vectors)
from ._values import ComparedByValue
from .sphere import _circle as circ
from .sphere import _sh as sh

_SQRT4PI = np.sqrt(4 * np.pi)
MASS_TOL = 1e-10
#: How negative a density may be on a solver's grid (uniform density = 1) and still count as nonnegative: ringing
#: of a band-limited profile below it is 0.  The spectral backend's default ``negativity_tol``, and the start that
#: both it and backend="hybrid" accept (the hybrid's stricter monitor then hands such a start to particles at once);
#: :func:`meanfield.wasserstein_distance` clips below it too.
NEGATIVITY_TOL = 1e-6


def _query_points(points, d) -> np.ndarray:
    """``points`` (..., d) as finite unit vectors (normalized here; zero vectors have no direction)."""
    p = real_array("points", points, allow_bool=False)    # complex: imaginary parts dropped; [[True, False, False]]: e1
    if p.ndim < 1 or p.shape[-1] != d:
        raise ValueError(f"`points` must have shape (..., {d}); got shape {p.shape}.")
    return unit_vectors("points", p)


def _values_at(f, arg, shape, what: str, nodes: str = "quadrature nodes") -> np.ndarray:
    """f(arg) as one float per node, shape ``shape`` (a scalar result is broadcast: a constant function); ``nodes``
    names the points for the message."""
    raw = np.asarray(f(arg))
    if raw.dtype == object and any(v is None for v in raw.flat):   # astype(float) read None as NaN
        raise ValueError(f"`{what}` must return real numbers; got None (a function without a `return`?).")
    if np.iscomplexobj(raw):                    # float() would drop the imaginary part with only a ComplexWarning
        raise ValueError(f"`{what}` must return real values; got complex values (imaginary parts up to "
                         f"{np.max(np.abs(raw.imag)):.3g}).")
    try:
        if holds_text(raw):         # numpy reads "1" as 1
            raise ValueError
        vals = raw.astype(float)
    except (TypeError, ValueError):
        raise ValueError(f"`{what}` must return real numbers; got dtype {raw.dtype}.") from None
    try:
        vals = np.broadcast_to(vals, shape)
    except ValueError:
        raise ValueError(f"`{what}` must return one value per point: shape {shape} for an argument of "
                         f"shape {np.shape(arg)}; got shape {vals.shape}.") from None
    bad = ~np.isfinite(vals)
    if bad.any():       # else the projection's "`coeffs` must be finite" named a parameter the caller never gave
        i = np.unravel_index(int(np.argmax(bad)), shape)
        raise ValueError(f"`{what}` must return finite values; got {float(vals[i])!r} at {int(bad.sum())} of {bad.size} "
                         f"{nodes} (first at {np.asarray(arg)[i].tolist()!r}).")
    return vals


def _radius_function_or_number(radius, usage: str) -> None:
    """A ``radius`` of from_function: a function (called as ``usage``) or a real number ("big" raised float()'s
    error); its sign is checked at the quadrature nodes, with the values of a function."""
    if callable(radius):
        function_of("radius", radius, usage)
    elif isinstance(radius, bool) or not isinstance(radius, numbers.Real):
        raise TypeError(f"`radius` must be a real number or a function called as {usage}; got radius={radius!r}.")
    elif not (np.isfinite(radius) and radius > 0):     # checked here, not as "a function that returns NaN"
        raise ValueError(f"`radius` must be finite and > 0 (a token's distance from the origin); got radius={radius!r}.")


def conversion_hint(value) -> str:
    """What to call on a measure-like result that is not the measure asked for (appended to TypeErrors), or ''."""
    if type(value).__name__ == "FEDensity":
        return (" An FEDensity (the finite-element result of minimize_energy on S²) becomes a Density with "
                "`.to_density(lmax)` (band-limited: it can ring below 0 where ρ is small, and then cannot be "
                "sampled), or weighted particles at its quadrature nodes with "
                "`meanfield.Particles(*rho.atoms(), normalize=True)` (the same energy).")
    if type(value).__name__ == "Trajectory":
        return (" A Trajectory is a run's result: pass one of its states, `traj.final` (the last) or "
                "`traj.states[i]` (meanfield.cluster_history(traj) clusters every state); to continue a "
                "checkpointed run itself, use meanfield.resume(path).")
    return ""


def _check_radius_values(vals, where: str) -> None:
    lo = float(np.min(vals)) if np.size(vals) else 1.0
    if not np.all(np.isfinite(vals)) or not lo > 0:
        raise ValueError(f"`radius` must be finite and > 0 everywhere (a token's distance from the origin); "
                         f"{where} it is {lo!r} at its smallest.")


def _constant_radius_hint(cls, value) -> str:
    """For a number given as a radius field's coefficients: how to give a constant radius."""
    if np.ndim(value) != 0:
        return ""
    return (f" A constant radius r: pass radius=r to {cls.__name__}.from_function, or the coefficients "
            f"r * {cls.__name__}.uniform(lmax, d).coeffs.")


def _real_coefficients(name: str, value) -> np.ndarray:
    """Coefficients of a zonal field as a new real array (np.real_if_close drops imaginary parts at rounding level):
    booleans and values that are not numbers raise naming ``name`` (ragged lists raised numpy's own error)."""
    no_bools(name, value)
    try:
        value = np.real_if_close(value)
    except (TypeError, ValueError):
        pass                                # not numeric: real_array names it
    return np.array(real_array(name, value))


def _normalized(density):
    """``density`` divided by its mass (a Density or ZonalDensity; ValueError unless the mass is > 0)."""
    m = density.mass()
    if not m > 0:
        raise ValueError(f"cannot normalize a density of mass {m!r} (must be > 0).")
    return density.with_coeffs(density.coeffs / m, density.radius)


def _tail_fraction(power: np.ndarray, lmax: int, frac) -> float:
    """Σ_{ℓ > ⌊frac·lmax⌋} E_ℓ / Σ_ℓ E_ℓ of the degree power ``power`` (the resolution monitor's, at frac = 2/3)."""
    # "a" raised "'<' not supported between instances of 'int' and 'str'"
    if isinstance(frac, bool) or not isinstance(frac, numbers.Real) or not 0 < frac < 1:
        raise (ValueError if isinstance(frac, numbers.Real) and not isinstance(frac, bool) else TypeError)(
            f"`frac` must be a real number in (0, 1); got frac={frac!r}.")
    total = power.sum()
    # the zero field gave 0/0: NaN with a RuntimeWarning
    return float(power[int(np.floor(frac * lmax)) + 1:].sum() / total) if total > 0 else 0.0


#: Peak bytes per coefficient of building a Density (the array, the validated copy, |c| for the m = 0 check) and a
#: ZonalDensity (the array, its copy, the finiteness mask): 40 and 17 measured with tracemalloc, rounded up.
_DENSITY_BYTES_PER_COEF, _ZONAL_BYTES_PER_COEF = 48.0, 24.0
#: Peak bytes per quadrature node of Density.from_function (nodes, values, the transform's work arrays), measured,
#: and of ZonalDensity.from_function (Gauss–Jacobi nodes are polished in long double: 128 measured; the product
#: rule of ZonalGrid 40–53).
_PROJECTION_BYTES_PER_NODE = {2: 40.0, 3: 72.0}
# Density.random: the largest default degree of g, and the largest |amplitude| (at 100 the peaks of exp(g) at degree 4
# already need lmax ≈ 128 to stay nonnegative: beyond, ρ is spikes finer than the band limits runs use)
_RANDOM_DEGREE, _RANDOM_AMPLITUDE_MAX = 4, 100.0
#: Band limit per degree of g that the default degree keeps, by d: at amplitude 1 and degree lmax // 6 on S² (lmax // 10
#: on S¹) the tail fraction of every draw of seeds 0–50 is ≤ 8.2e-7 < tail_warn = 1e-6, the spectral backend's
#: default (the fixed degree 4 put 31 of those 51 draws at lmax = 12 beyond its tail_tol = 1e-4: runs stopped at t = 0)
_RANDOM_LMAX_PER_DEGREE = {3: 6, 2: 10}
_ZONAL_PROJECTION_BYTES_PER_NODE = {"gauss-jacobi": 160.0, "product": 80.0}   # the product rule: 40-53 B measured


def _require_band_limit(nbytes: float, call: str) -> None:
    """Refuse ``call`` (InsufficientMemoryError naming `lmax`, the memory needed and available) before it allocates
    ``nbytes``: numpy's bare MemoryError (Density.uniform(10**5): "Unable to allocate 74.5 GiB") named neither."""
    require(nbytes, call, "lower `lmax` (the band limit).")


def _real_axis_entries(name: str, c: np.ndarray, lmax: int, d: int) -> None:
    """The m = 0 entries (d = 3: the first lmax + 1; d = 2: c_0) of a real field are real: an imaginary part at
    rounding level (transforms leave ~1e-16) is set to 0 in place, a larger one is refused (the field's values
    would ignore it while its norms and distances would not)."""
    axis = c[:lmax + 1] if d == 3 else c[:1]
    imag = np.abs(axis.imag)
    if np.any(imag > 1e-10 * max(float(np.max(np.abs(c))), 1e-300)):
        i = int(np.argmax(imag))
        where = f"ℓ={i}, m=0" if d == 3 else "k=0"
        raise ValueError(f"`{name}` of a real field must have real m = 0 entries (a real field's coefficients "
                         f"there are real); got imaginary part {axis[i].imag:.3g} at {where}.")
    axis.imag = 0.0


_FROM_PYSHTOOLS = ("convert it with `alm, lmax = meanfield.sphere.from_shcoeffs(clm)` (any normalization, kind and "
                   "csphase of a pyshtools.SHCoeffs `clm`; an array: pyshtools.SHCoeffs.from_array(array, "
                   "normalization=..., csphase=...)), then Density.from_coefficients(alm, lmax).")


def _refuse_pyshtools_object(value) -> None:
    """A pyshtools SHCoeffs or SHGrid given as coefficients: say how to convert it (complex_array printed the object's
    repr as the coefficients it "must be numbers")."""
    name = type(value).__name__
    if not type(value).__module__.startswith("pyshtools"):
        return
    if "Grid" in name:
        raise TypeError(f"`coeffs` must be coefficients; got a pyshtools {name} (values on a grid): expand it, "
                        f"`clm = grid.expand()`, and {_FROM_PYSHTOOLS} Or project the function itself with "
                        "Density.from_function.")
    raise TypeError(f"`coeffs` must be an array in meanfield's layout; got a pyshtools {name}: {_FROM_PYSHTOOLS}")


def _density_dimension(d) -> int:
    """``d`` of a Density, 2 (S¹) or 3 (S²), checked before anything is built for it (Density.random(8, d=4) and
    from_function raised a bare KeyError from the projection)."""
    try:
        return nonneg_int("d", d, minimum=2, maximum=3)
    except ValueError:          # d = 1 was told "`d` must be an integer >= 2", the range of a ZonalDensity
        raise ValueError(f"`d` must be 2 or 3 for a Density (use Particles or the zonal solver for d > 3); "
                         f"got d={d!r}.") from None


@dataclass(frozen=True, eq=False)
class Density(ComparedByValue):
    """A band-limited density on S² (d = 3) or S¹ (d = 2).

    ``==`` compares by value (every array entry by entry, as a run and its file compare); unhashable.

    Attributes
    ----------
    coeffs : ndarray, complex
        d = 3: (nalm(lmax),) orthonormal SH coefficients in ducc0 order; d = 2: (lmax + 1,) Fourier c_k.
        The m = 0 entries (the first L + 1 on S², c_0 on S¹) of a real field are real: imaginary parts at
        rounding level are set to 0, larger ones (> 1e-10·max|c|) raise ValueError; so for ``radius``.
    lmax : int
        Band limit L.
    d : int
        Ambient dimension (2 or 3).
    radius : ndarray or None
        Coefficients (same layout) of the radius field r(x) > 0 for schemes with a radius; None for
        r ≡ 1 or sphere-only schemes.  The constructors check r > 0 on a grid, and so does
        :func:`meanfield.simulate` for the schemes that use it.
    """

    coeffs: np.ndarray
    lmax: int
    d: int = 3
    radius: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        d = _density_dimension(self.d)
        lmax = nonneg_int("lmax", self.lmax)
        _refuse_pyshtools_object(self.coeffs)
        c = complex_array("coeffs", self.coeffs)       # a malformed string raised "complex() arg is a malformed string"
        if c.shape != (self._ncoef(lmax, d),):
            raise ValueError(f"`coeffs` must have shape ({self._ncoef(lmax, d)},) for lmax={lmax}, d={d}; "
                             f"got {c.shape}.")
        if not np.all(np.isfinite(c)):
            raise ValueError("`coeffs` must be finite; it contains NaN or inf.")
        _real_axis_entries("coeffs", c, lmax, d)
        c.setflags(write=False)
        object.__setattr__(self, "coeffs", c)
        if self.radius is not None:
            r = complex_array("radius", self.radius)
            if r.shape != c.shape:
                raise ValueError(f"`radius` coefficients must have shape {c.shape}; got {r.shape}."
                                 + _constant_radius_hint(type(self), r))
            _real_axis_entries("radius", r, lmax, d)
            r.setflags(write=False)
            object.__setattr__(self, "radius", r)

    @staticmethod
    def _ncoef(lmax, d):
        return sh.nalm(lmax) if d == 3 else lmax + 1

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def uniform(cls, lmax: int, d: int = 3) -> "Density":
        """The uniform probability density (ρ ≡ 1 w.r.t. σ) stored at band limit ``lmax``.

        Parameters
        ----------
        lmax : int
            Band limit L ≥ 0 of the storage (all coefficients but the first are zero).
        d : {3, 2}
            Ambient dimension: S² or S¹.

        Returns
        -------
        Density
            Mass 1, no radius field: ρ̂_00 = √(4π) on S², c_0 = 1 on S¹.
        """
        lmax, d = nonneg_int("lmax", lmax), _density_dimension(d)
        n = cls._ncoef(lmax, d)
        _require_band_limit(_DENSITY_BYTES_PER_COEF * n, f"Density.uniform(lmax={lmax}, d={d}) ({n} coefficients)")
        c = np.zeros(n, dtype=complex)
        c[0] = _SQRT4PI if d == 3 else 1.0
        return cls(c, lmax, d)

    @classmethod
    def from_coefficients(cls, coeffs, lmax: int | None = None, d: int = 3, radius=None) -> "Density":
        """A Density from its coefficients.

        Parameters
        ----------
        coeffs : array_like, complex
            d = 3: orthonormal SH coefficients in ducc0 order, shape ((L+1)(L+2)/2,) (m ≥ 0 only; a
            probability density has ρ̂_00 = √(4π)); d = 2: Fourier c_0..c_L, shape (L+1,) (c_0 = 1).
            The m = 0 entries must be real (see :class:`Density`).  From a ``pyshtools.SHCoeffs`` ``clm`` of
            any normalization: ``Density.from_coefficients(*meanfield.sphere.from_shcoeffs(clm))``.
        lmax : int, optional
            Band limit L; inferred from the length of ``coeffs`` when omitted.
        d : {3, 2}
        radius : array_like, optional
            Coefficients of the radius field r(x), same layout; r must be > 0 everywhere (checked on
            the grid of the 3/2 rule).

        Returns
        -------
        Density
        """
        _refuse_pyshtools_object(coeffs)
        c = complex_array("coeffs", coeffs)      # ragged lists raised numpy's error (when counting them)
        if c.ndim == 3 and c.shape[0] == 2 and c.shape[1] == c.shape[2]:
            raise ValueError(f"`coeffs` must be one coefficient array in meanfield's layout (see Density); got shape "
                             f"{c.shape}, the layout of pyshtools' SHCoeffs.coeffs: {_FROM_PYSHTOOLS}")
        if lmax is None:
            lmax = cls._inferred_lmax(c, _density_dimension(d))
        out = cls(c, lmax, d, radius)
        if out.radius is not None:
            _check_radius_values(out.with_coeffs(out.radius).on_grid(), "on the grid of the 3/2 rule")
        return out

    @classmethod
    def _inferred_lmax(cls, c: np.ndarray, d: int) -> int:
        """The band limit of coefficients ``c`` given without one, refused unless their count is that of some L ≥ 0:
        rounding it made 4 coefficients "must have shape (3,) for lmax=1" and none "`lmax` … got lmax=-1", naming a
        band limit the caller never gave."""
        lmax = int(round((np.sqrt(8 * c.size + 1) - 3) / 2)) if d == 3 else c.size - 1
        if c.ndim != 1 or lmax < 0 or c.size != cls._ncoef(lmax, d):
            counts = "(L + 1)(L + 2)/2 = 1, 3, 6, 10, …" if d == 3 else "L + 1 ≥ 1"
            raise ValueError(f"`coeffs` must be one coefficient array of length {counts} for d={d} (the band limit "
                             f"L is inferred from it when `lmax` is not given); got shape {c.shape}.")
        return lmax

    @classmethod
    def from_function(cls, f, lmax: int, d: int = 3, radius=None, normalize: bool = False) -> "Density":
        """Project a function onto degree ≤ ``lmax`` by quadrature exact to that degree.

        Parameters
        ----------
        f : callable
            Unit vectors of shape (..., d) → density values of shape (...,) w.r.t. σ (the uniform
            density is 1).  A scalar result is taken as a constant.
        lmax : int
            Band limit L ≥ 0.
        d : {3, 2}
        radius : float or callable, optional
            The radius field r(x) > 0 for schemes with a radius: a constant or a function like ``f``;
            projected the same way.  Its values at the quadrature nodes must be > 0.
        normalize : bool
            Rescale the result to unit mass.

        Returns
        -------
        Density
        """
        lmax, d = nonneg_int("lmax", lmax), _density_dimension(d)
        normalize = flag("normalize", normalize)
        # f=3.0 raised "'float' object is not callable" from the projection
        function_of("f", f, "f(points) (unit vectors of shape (..., d))")
        if radius is not None:
            _radius_function_or_number(radius, "radius(points) (unit vectors of shape (..., d))")
        coeffs = cls._project(f, lmax, d, "f")
        rad = None
        if radius is not None:
            rfun = radius if callable(radius) else (lambda x, r=float(radius): np.full(x.shape[:-1], r))
            rad = cls._project(rfun, lmax, d, "radius", positive=True)
        out = cls(coeffs, lmax, d, rad)
        if rad is not None:     # the band-limited radius can ring below 0 between the nodes: as from_coefficients
            _check_radius_values(out.with_coeffs(rad).on_grid(), "after projection to degree ≤ lmax, on the grid "
                                 "of the 3/2 rule (raise `lmax` or smooth the radius)")
        return out.normalized() if normalize else out

    @classmethod
    def random(cls, lmax: int, d: int = 3, seed=0, degree: int | None = None, amplitude: float = 1.0) -> "Density":
        """A smooth random probability density ρ ∝ exp(g), g a random field of degree ≤ ``degree``.

        g has independent Gaussian coefficients (scaled by ``amplitude``, a real number): on S² of expected
        degree power E_ℓ = 1 (area units, as :meth:`power`) for 1 ≤ ℓ ≤ ``degree`` and 0 above, so each degree adds
        1/(4π) to the variance of g(x); on S¹ of E|c_k|² = 1/4, so each degree adds 1/2, and S¹ fields are rougher.
        exp(g) is positive and entire: the spectrum of ρ decays faster than geometrically above ``degree`` (degree
        n·``degree`` is first reached by the term g^n/n! of the exponential series), and ρ is its projection onto
        degree ≤ ``lmax``.

        The default degree is resolved at ``lmax`` by the spectral backend's monitor, so that a run from the defaults
        starts resolved: lmax // 6 on S², lmax // 10 on S¹, kept between 1 and 4.  At amplitude 1, over seeds 0–50
        and every lmax from 6 to 64 on S² (9 to 64 on S¹), the tail fraction of the draw (:meth:`tail_fraction`, the
        monitor's) is at most 8.2e-7 (S¹: 4.2e-7), below the monitor's default ``tail_warn`` = 1e-6, and min ρ
        on the grid is > 0.09 (S¹: > 0.001).  The former fixed degree 4 was beyond its ``tail_tol`` = 1e-4 for all
        51 seeds at lmax = 8 and 31 at lmax = 12 (tail up to 0.025): those runs stopped at t = 0.  ``degree=4``
        reproduces those draws seed for seed; from lmax = 24 on S² (40 on S¹) the default draws are unchanged.
        Below lmax = 6 on S² (9 on S¹) even degree 1 is not resolved (the monitor's tail starts at degree
        ⌊2·lmax/3⌋ + 1): its tail reaches 3.2e-4 at lmax = 4 on S² (1.6e-2 on S¹, where ρ dips to −0.46 at
        lmax = 1); lower ``amplitude`` there.
        A larger ``degree`` dips below 0 when ``lmax`` does not resolve it: on S¹ at degree 4, min ρ over seeds
        0–7 is −1.17 at lmax = 8 (seed 3; below −0.1 for five of the eight), −0.097 at lmax = 16 and −0.002 at
        lmax = 24 (measured on 2000 points of the field at L = 64).

        Parameters
        ----------
        lmax : int
            Band limit L ≥ 1 of the result.
        d : {3, 2}
            Ambient dimension: S² or S¹.
        seed : None, int, SeedSequence or numpy.random.Generator
            Randomness of g (``numpy.random.default_rng(seed)``).
        degree : int, optional
            Largest degree of g, in [1, lmax] (default: max(1, min(4, lmax // 6)) on S², max(1, min(4, lmax // 10))
            on S¹, above).  Degrees above the band limit cannot be represented.  Keeping ρ nonnegative takes more
            than the degree, on S² lmax ≈ 2–3 × degree at amplitude 1 (lmax = 8: min ρ > 0.15 at degree 4, down to
            −0.16 at degree 6, −0.94 at degree 8, over seeds 0–4), on S¹ lmax ≈ 6 × degree (above); the spectral
            monitor's tail fraction takes lmax ≈ 6 × degree on S², 10 × degree on S¹.
        amplitude : float
            Factor of g, in [−100, 100]: 0 gives the uniform density, a larger magnitude sharper peaks (at
            100 and degree 4 they need lmax ≈ 128 to keep ρ nonnegative).

        Returns
        -------
        Density
            A probability density (mass 1, values w.r.t. σ: the uniform density is 1).

        Raises
        ------
        TypeError, ValueError
            Naming the parameter and its allowed range: ``lmax`` < 1, ``degree`` outside [1, lmax],
            ``amplitude`` not a real number in [−100, 100], a bad ``d`` or ``seed``.
        """
        lmax, d = nonneg_int("lmax", lmax, minimum=1), _density_dimension(d)
        degree, amplitude = cls._random_degree(degree, lmax, d), cls._random_amplitude(amplitude)
        rng = random_generator(seed)
        if d == 3:
            ell, m = sh.lm_arrays(degree)
            g = rng.standard_normal(ell.size) + 1j * rng.standard_normal(ell.size)
            g = np.where(m == 0, g.real * np.sqrt(2), g) / np.sqrt(2 * (2 * ell + 1)) * (ell > 0)
            field_ = lambda x: sh.synthesis_points(g, degree, x.reshape(-1, 3)).reshape(x.shape[:-1])  # noqa: E731
        else:
            k = np.arange(degree + 1)
            g = (rng.standard_normal(k.size) + 1j * rng.standard_normal(k.size)) / np.sqrt(8) * (k > 0)
            field_ = lambda x: circ.circle_evaluate(g, np.arctan2(x[..., 1], x[..., 0]))  # noqa: E731

        def unnormalized(x):
            # from_function calls this once on all its nodes, and normalizes: subtracting the largest exponent
            # changes nothing but keeps exp finite (amplitude · g overflowed from about 700, at a high degree
            # within the amplitude range)
            exponent = amplitude * field_(x)
            return np.exp(exponent - exponent.max())
        return cls.from_function(unnormalized, lmax, d, normalize=True)

    @staticmethod
    def _random_degree(degree, lmax: int, d: int) -> int:
        """``degree`` of :meth:`random` (None: its default, which depends on ``lmax`` and ``d``), checked against
        ``lmax``."""
        if degree is None:
            return max(1, min(_RANDOM_DEGREE, lmax // _RANDOM_LMAX_PER_DEGREE[d]))
        degree = nonneg_int("degree", degree, minimum=1)
        if degree > lmax:
            raise ValueError(f"`degree` must be an integer in [1, lmax] = [1, {lmax}]; got degree={degree}: degrees "
                             "of g above the band limit cannot be represented (the projection of exp(g) would be "
                             "negative somewhere). Lower `degree` or raise `lmax`.")
        return degree

    @staticmethod
    def _random_amplitude(amplitude) -> float:
        """``amplitude`` of :meth:`random`, checked against its range."""
        from ._validate import real_number

        top = _RANDOM_AMPLITUDE_MAX
        if abs(real_number("amplitude", amplitude)) > top:
            raise ValueError(f"`amplitude` must be a real number in [{-top:g}, {top:g}]; got amplitude={amplitude!r}: "
                             f"at {top:g} the peaks of ρ ∝ exp(amplitude·g) already need lmax ≈ 128 to stay "
                             "nonnegative, beyond it ρ is spikes finer than the band limits runs use.")
        return float(amplitude)

    @staticmethod
    def _project(f, lmax, d, what, positive=False):
        grid = sh.SphereGrid.for_bandlimit(lmax, dealias=True) if d == 3 else None
        nodes = grid.ntheta * grid.nphi if d == 3 else circ.circle_grid_size(lmax)
        _require_band_limit(_PROJECTION_BYTES_PER_NODE[d] * nodes + _DENSITY_BYTES_PER_COEF * Density._ncoef(lmax, d),
                            f"projecting `{what}` at lmax={lmax}, d={d} ({nodes} quadrature nodes)")
        if d == 3:
            vals = _values_at(f, grid.points, grid.points.shape[:-1], what)
        else:
            pts = circ.circle_points(nodes)
            vals = _values_at(f, pts, pts.shape[:-1], what)
        if positive:
            _check_radius_values(vals, "at the quadrature nodes")
        if d == 3:
            return sh.analysis(np.ascontiguousarray(vals), lmax, grid)
        return circ.circle_analysis(np.ascontiguousarray(vals), lmax)

    # -- values ------------------------------------------------------------------------------------
    def evaluate(self, points) -> np.ndarray:
        """The density ρ (w.r.t. σ) at the directions of ``points``.

        Parameters
        ----------
        points : array_like, shape (..., d)
            Nonzero, finite vectors (normalized here).

        Returns
        -------
        ndarray, shape (...,)
            ρ at each direction, w.r.t. σ (the uniform density is 1); real.
        """
        p = _query_points(points, self.d)
        if p.size == 0:
            return np.zeros(p.shape[:-1])
        if self.d == 3:
            return sh.synthesis_points(self.coeffs, self.lmax, p.reshape(-1, 3)).reshape(p.shape[:-1])
        return circ.circle_evaluate(self.coeffs, np.arctan2(p[..., 1], p[..., 0]))

    def evaluate_radius(self, points) -> np.ndarray:
        """The radius field r at the directions of ``points``; ones when the density carries none.

        Parameters
        ----------
        points : array_like, shape (..., d)
            Nonzero, finite vectors (normalized here).

        Returns
        -------
        ndarray, shape (...,)
            r (in the units of the tokens' radii, r0 = 1 by default).
        """
        p = _query_points(points, self.d)
        if self.radius is None:
            return np.ones(p.shape[:-1])
        return self.with_coeffs(self.radius).evaluate(p)

    def on_grid(self, grid=None):
        """Values on a grid.

        Parameters
        ----------
        grid : meanfield.sphere.SphereGrid or int, optional
            d = 3: the grid (default ``SphereGrid.for_bandlimit(lmax)``, the 3/2-rule grid; its
            ``points`` give the nodes); d = 2: the number n of equispaced angles 2πk/n (default the
            3/2-rule count).

        Returns
        -------
        ndarray
            d = 3: shape (ntheta, nphi); d = 2: shape (n,).
        """
        if self.d == 3:
            if grid is not None and not isinstance(grid, sh.SphereGrid):
                raise TypeError(f"`grid` must be a meanfield.sphere.SphereGrid for d=3; got {type(grid).__name__}.")
            grid = grid or sh.SphereGrid.for_bandlimit(self.lmax)
            return sh.synthesis(self.coeffs, self.lmax, grid)
        n = circ.circle_grid_size(self.lmax) if grid is None else nonneg_int("grid", grid, minimum=1)
        if n <= 2 * self.lmax:      # circle_synthesis would name its own `n`, which is `grid` here
            raise ValueError(f"`grid` must be a number of angles > 2·lmax = {2 * self.lmax} for d=2 (fewer cannot "
                             f"carry degree lmax={self.lmax}); got grid={n}.")
        return circ.circle_synthesis(self.coeffs, n)

    def mass(self) -> float:
        """The mass ∫ ρ dσ, σ the normalized uniform measure.

        Returns
        -------
        float
            ρ̂_00/√(4π) on S², c_0 on S¹ (1 for a probability density).
        """
        return float(self.coeffs[0].real / (_SQRT4PI if self.d == 3 else 1.0))

    def power(self) -> np.ndarray:
        """The degree power spectrum E_ℓ of ρ (used by :meth:`tail_fraction`, which takes ratios of it).

        Returns
        -------
        ndarray, shape (lmax + 1,)
            On S²: E_ℓ = Σ_m |ρ̂_ℓm|² over m = −ℓ … ℓ, in area units (orthonormal harmonics of the area measure:
            Σ_ℓ E_ℓ = ∫ ρ² dA = 4π ∫ ρ² dσ; the uniform density has E_0 = 4π).  On S¹: E_0 = c_0², E_k = 2|c_k|²
            (the modes ±k), so Σ_k E_k = ∫ ρ² dσ.
        """
        if self.d == 3:
            return sh.degree_power(self.coeffs, self.lmax)
        return np.abs(self.coeffs) ** 2 * np.where(np.arange(self.lmax + 1) == 0, 1.0, 2.0)

    def tail_fraction(self, frac: float = 2 / 3) -> float:
        """The tail-energy fraction E_tail = Σ_{ℓ > ⌊frac·L⌋} E_ℓ / Σ_ℓ E_ℓ of the resolution monitor.

        Parameters
        ----------
        frac : float
            Where the tail starts, as a fraction of the band limit L, in (0, 1) (the monitor's 2/3).

        Returns
        -------
        float
            E_tail in [0, 1] (dimensionless; E_ℓ = :meth:`power`).  The zero field has no tail (0.0).
        """
        return _tail_fraction(self.power(), self.lmax, frac)

    # -- transformations --------------------------------------------------------------------------
    def with_coeffs(self, coeffs, radius=None) -> "Density":
        """A Density with the same band limit and dimension and new coefficients.

        Parameters
        ----------
        coeffs : array_like
            Coefficients in the layout of ``self.coeffs`` (same shape), w.r.t. the normalized measure σ.
        radius : array_like, optional
            Coefficients of a radius field, same shape (default: none; the radius of ``self`` is not kept).

        Returns
        -------
        Density
        """
        return Density(coeffs, self.lmax, self.d, radius)

    def normalized(self) -> "Density":
        """This density divided by its mass; the radius field is kept.

        Returns
        -------
        Density
            Mass 1.

        Raises
        ------
        ValueError
            If the mass is not > 0.
        """
        return _normalized(self)

    def resized(self, lmax: int) -> "Density":
        """The same density at another band limit, its radius field too.

        Parameters
        ----------
        lmax : int
            The new band limit L ≥ 0: zero-padded when higher, truncated (a projection) when lower.

        Returns
        -------
        Density
        """
        lmax = nonneg_int("lmax", lmax)
        n = self._ncoef(lmax, self.d)
        _require_band_limit(_DENSITY_BYTES_PER_COEF * n * (1 if self.radius is None else 2),
                            f"Density.resized(lmax={lmax}) (d={self.d}, {n} coefficients)")
        if self.d == 3:
            rs = lambda a: sh.resize(a, self.lmax, lmax)  # noqa: E731
        else:
            rs = lambda a: np.concatenate([a, np.zeros(max(0, lmax - self.lmax))])[: lmax + 1]  # noqa: E731
        return Density(rs(self.coeffs), lmax, self.d, None if self.radius is None else rs(self.radius))

    def __repr__(self):
        return f"Density(lmax={self.lmax}, d={self.d}, mass={self.mass():.6g}, radius={'yes' if self.radius is not None else 'no'})"


def _rows_named(bad) -> str:
    """The end of a message on the rows of ``positions`` flagged in ``bad``: which one first, and how many (of a
    few thousand embeddings, the message named none)."""
    rows = np.flatnonzero(bad)
    more = f" (and {rows.size - 1} more)" if rows.size > 1 else ""
    return f": row {int(rows[0])}{more}."


@dataclass(frozen=True, eq=False)
class Particles(ComparedByValue):
    """Weighted tokens on S^{d-1}, optionally with radii (x_j = r_j θ_j).

    ``==`` compares by value (every array entry by entry, as a run and its file compare); unhashable.

    Parameters
    ----------
    positions : array_like, shape (n, d)
        Unit vectors θ_j (checked to 1e-10; pass ``normalize=True`` to project arbitrary nonzero vectors).
    weights : array_like, shape (n,), optional
        Nonnegative, summing to 1; default uniform 1/n.
    radii : float or array_like, shape (n,), optional
        Radii r_j > 0 for schemes with a radius; default None (r ≡ 1).
    normalize : bool
        Project nonzero ``positions`` onto the sphere and rescale ``weights`` to sum 1, instead of
        refusing them.  The norms are dropped, not read as radii: tokens x_j = r_j θ_j of a residual stream
        (Pre-LN, Peri-LN, …) are :meth:`from_ambient`, i.e. ``Particles(x / r[:, None], radii=r)`` with r = ‖x_j‖,
        the inverse of :meth:`ambient`.
    """

    positions: np.ndarray
    weights: np.ndarray | None = None
    radii: np.ndarray | None = None
    normalize: bool = field(default=False, repr=False, compare=False)     # how it was built, not what it is

    def __post_init__(self):
        x = np.array(real_array("positions", self.positions, allow_bool=False))
        if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 2:      # (n, 1) was told "`d` must be an integer >= 2"
            raise ValueError(f"`positions` must have shape (n, d) with n ≥ 1 and `d` ≥ 2; got shape {x.shape}.")
        dimension(x.shape[1])
        if not np.all(np.isfinite(x)):
            raise ValueError("`positions` must be finite; it contains NaN or inf" + _rows_named(~np.isfinite(x).all(axis=1)))
        norms = overflow_safe_norms(x, axis=1)            # entries near 1e308 have squares beyond float64
        normalize = flag("normalize", self.normalize)        # "no" was read as True
        if normalize:
            if np.any(norms == 0):
                raise ValueError("`positions` contains a zero vector, which has no direction"
                                 + _rows_named(norms == 0))
            x = x / norms[:, None]
        elif np.max(np.abs(norms - 1)) > 1e-10:
            raise ValueError(f"`positions` must be unit vectors (max | ‖x‖ − 1 | = {np.max(np.abs(norms - 1)):.3g}); "
                             "pass normalize=True to project them.")
        n = x.shape[0]
        w = (np.full(n, 1.0 / n) if self.weights is None
             else np.array(real_array("weights", self.weights, allow_bool=False)))
        if w.shape != (n,):
            raise ValueError(f"`weights` must have shape ({n},); got {w.shape}.")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            bad = int(np.flatnonzero(~(np.isfinite(w) & (w >= 0)))[0])
            raise ValueError(f"`weights` must be finite and ≥ 0; got weights[{bad}]={float(w[bad])!r}.")
        with np.errstate(over="ignore"):                   # weights near 1e308: an inf sum is "not 1"
            total = w.sum()
        if abs(total - 1) > MASS_TOL:
            if not normalize:
                raise ValueError(f"`weights` must sum to 1 (to {MASS_TOL:g}); got sum={float(total)!r} "
                                 "(pass normalize=True to rescale).")
            if not w.max() > 0:
                raise ValueError(f"`weights` must have a positive sum to be normalized; got sum={float(total)!r}.")
            w = w / w.max()                                 # a sum of weights near 1e308 overflows
            w = w / w.sum()
        r = None
        if self.radii is not None:
            r = real_array("radii", self.radii, allow_bool=False)
            if r.ndim != 0 and r.shape != (n,):
                raise ValueError(f"`radii` must be a number or have shape ({n},); got shape {r.shape}.")
            r = np.array(np.broadcast_to(r, (n,)))
            if not np.all(np.isfinite(r)) or np.any(r <= 0):
                bad = int(np.flatnonzero(~(np.isfinite(r) & (r > 0)))[0])
                raise ValueError(f"`radii` must be finite and > 0; got radii[{bad}]={float(r[bad])!r}.")
        for name, a in (("positions", x), ("weights", w), ("radii", r)):
            if a is not None:
                a.setflags(write=False)
            object.__setattr__(self, name, a)

    @classmethod
    def _of_checked(cls, positions, weights, radii=None) -> "Particles":
        """Particles of arrays that already passed these checks (rows of a checked state, its weights), without
        repeating them: an ensemble builds one per replica and saved state, and the checks cost ~40 µs each."""
        p = object.__new__(cls)
        for name, a in (("positions", positions), ("weights", weights), ("radii", radii)):
            if a is not None:
                a = a.view()
                a.setflags(write=False)
            object.__setattr__(p, name, a)
        object.__setattr__(p, "normalize", False)
        return p

    @classmethod
    def uniform(cls, n: int, d: int = 3, seed=0, radii=None) -> "Particles":
        """n i.i.d. uniform points on S^{d-1} with equal weights 1/n.

        Parameters
        ----------
        n : int
            Number of tokens ≥ 1.
        d : int
            Ambient dimension ≥ 2.
        seed : int, SeedSequence or Generator
            For numpy's ``default_rng``.
        radii : float or array_like, shape (n,), optional
            Radii r_j > 0 (schemes with a radius).

        Returns
        -------
        Particles
            Positions of shape (n, d), weights 1/n.
        """
        n, d = nonneg_int("n", n, minimum=1), dimension(d)
        if n * (3 * d + 2) > 2 ** 23:          # 64 MiB; below, not worth a read of /proc/meminfo per call
            require(8.0 * n * (3 * d + 2), f"Particles.uniform(n={n}, d={d})", "lower `n`.")
        x = random_generator(seed).standard_normal((n, d))
        return cls(x, None, radii, normalize=True)

    @classmethod
    def from_ambient(cls, positions, weights=None) -> "Particles":
        """Tokens given as points x_j of R^d (embeddings, a residual stream): θ_j = x_j/‖x_j‖, r_j = ‖x_j‖.

        The inverse of :meth:`ambient`, for the schemes with a radius (Pre-LN, Peri-LN, Mix-LN, QKV-Norm, anGPT); the
        others move the directions θ_j only and keep the radii as they are.

        Parameters
        ----------
        positions : array_like, shape (n, d)
            Finite, nonzero real vectors, of any norm (float32 input is read as float64); n ≥ 1, d ≥ 2.
        weights : array_like, shape (n,), optional
            Nonnegative with a positive sum (e.g. an attention mask: 0 for padding), rescaled to sum 1; default
            uniform 1/n.

        Returns
        -------
        Particles
            ``positions`` the unit vectors θ_j, ``radii`` the norms ‖x_j‖, so that ``ambient()`` gives x back to
            rounding (relative 2.3e-16 per entry).

        Raises
        ------
        ValueError
            ``positions`` not of shape (n, d), a row that is zero or not finite (the message names it), or
            ``weights`` of another shape, negative or summing to 0.
        TypeError
            ``positions`` or ``weights`` of booleans.
        """
        x = np.array(real_array("positions", positions, allow_bool=False), dtype=float)
        if x.ndim != 2 or x.shape[0] < 1 or not np.all(np.isfinite(x)):
            return cls(x, weights, normalize=True)          # its message: the shape, or the row that is not finite
        # a zero row is refused by the checks of `positions`, which come before those of `radii`
        return cls(x, weights, radii=overflow_safe_norms(x, axis=1), normalize=True)

    @classmethod
    def from_density(cls, density, n: int, seed=0) -> "Particles":
        """n i.i.d. samples of a Density or ZonalDensity, weights 1/n (see :func:`meanfield.sample_density`).

        Parameters
        ----------
        density : Density, ZonalDensity or list of Density
            A nonnegative density; a list of species is sampled species by species, with weights that keep
            each species' share of the mass.
        n : int
            Number of tokens, ≥ 1.
        seed : None, int, SeedSequence or numpy.random.Generator
            Randomness of the samples (default 0: the same tokens on every call, as :meth:`uniform`; None draws
            fresh entropy).

        Returns
        -------
        Particles
            Positions of shape (n, d); the radii are the density's radius field at the samples, when it has one.
        """
        from ._sampling import sample_density     # (the sampler builds Particles: it imports this module)
        return sample_density(density, n, seed)

    @property
    def n(self) -> int:
        """Number of tokens."""
        return self.positions.shape[0]

    @property
    def d(self) -> int:
        """Ambient dimension (the tokens live on S^{d-1})."""
        return self.positions.shape[1]

    @property
    def directions(self) -> np.ndarray:
        """The unit vectors θ_j, shape (n, d) (the same array as ``positions``)."""
        return self.positions

    def ambient(self) -> np.ndarray:
        """The tokens as points of R^d, x_j = r_j θ_j.

        Returns
        -------
        ndarray, shape (n, d)
            r_j θ_j (θ_j when there are no radii).
        """
        return self.positions if self.radii is None else self.positions * self.radii[:, None]

    def __len__(self):
        return self.n

    def __repr__(self):
        return f"Particles(n={self.n}, d={self.d}, radii={'yes' if self.radii is not None else 'no'})"


def _profile_arguments(t) -> np.ndarray:
    """t = ⟨x, e⟩ as a float array clipped to [−1, 1] (values beyond it by more than 1e-12 are refused)."""
    t = real_array("t", t)                # as `points` of evaluate: complex and strings named, not cast
    if not np.all(np.isfinite(t)) or np.any(np.abs(t) > 1 + 1e-12):
        raise ValueError("`t` must be in [-1, 1] (t = ⟨x, e⟩ for unit x); got values outside it.")
    return np.clip(t, -1.0, 1.0)


#: ZonalDensity.evaluate_profile warns where the rounding estimate exceeds this fraction of the value scale (the
#: resolution monitor's tail_warn and negativity_tol are 1e-6 too), and refuses where it exceeds the scale.
_ROUNDING_WARN = 1e-6


@dataclass(frozen=True, eq=False)
class ZonalDensity(ComparedByValue):
    """An axisymmetric density ρ(x) = g(⟨x, e⟩) on S^{d-1}, any d ≥ 2, w.r.t. the normalized measure σ.

    ``==`` compares by value (every array entry by entry, as a run and its file compare); unhashable.

    Attributes
    ----------
    coeffs : ndarray, shape (lmax + 1,)
        g_ℓ in g(t) = Σ_ℓ g_ℓ P_ℓ^{(d)}(t), P_ℓ^{(d)} the Gegenbauer polynomials normalized to P(1) = 1
        (so the mass ∫ρ dσ is g_0).
    lmax : int
        Band limit L ≥ 0.
    d : int
        Ambient dimension, ≥ 2 (the density lives on S^{d-1}).
    axis : ndarray, shape (d,)
        The symmetry axis e (default the last basis vector).
    radius : ndarray or None
        Coefficients of a zonal radius field, same layout.

    Notes
    -----
    In high dimension the coefficients are ill-conditioned at high degree: P_ℓ^{(d)} is 1 at t = ±1 but
    of size N(d, ℓ)^{-1/2} where σ has its mass, so a projection rounds g_ℓ by ~eps·√N(d, ℓ)·‖g‖ and point
    values near the axis carry that error (measured at the axis for g ≡ 1 at L = 40: 2e-10 for d = 16,
    9e-7 for d = 32, 1e-2 for d = 64, 2e20 for d = 1000; at t = 0 all are below 1e-15).  :meth:`rounding_error`
    estimates it at any t; :meth:`evaluate_profile` and :meth:`evaluate` warn (:class:`~meanfield.MeanfieldWarning`)
    where it exceeds 1e-6 of the density's scale and refuse arguments where it exceeds the scale (values without a
    correct digit).  Keep eps·√N(d, lmax) small; the kernel band limit needs few degrees (at tolerance 1e-12: 14
    at β = 1 and 40–46 at β = 10 for d = 64 to 2048).
    """

    coeffs: np.ndarray
    lmax: int
    d: int = 3
    axis: np.ndarray | None = None
    radius: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        d, lmax = dimension(self.d), nonneg_int("lmax", self.lmax)
        c = _real_coefficients("coeffs", self.coeffs)
        if c.shape != (lmax + 1,) or not np.all(np.isfinite(c)):
            raise ValueError(f"`coeffs` must be finite with shape ({lmax + 1},); got shape {c.shape}.")
        e = np.eye(d)[-1] if self.axis is None else real_array("axis", self.axis, allow_bool=False)
        if e.shape != (d,) or not np.all(np.isfinite(e)) or not abs(np.linalg.norm(e) - 1) <= 1e-12:
            raise ValueError(f"`axis` must be a finite unit vector of length {d}; got axis={self.axis!r}.")
        object.__setattr__(self, "coeffs", c)
        object.__setattr__(self, "axis", e)
        if self.radius is not None:
            r = _real_coefficients("radius", self.radius)
            if r.shape != c.shape:
                raise ValueError(f"`radius` coefficients must have shape {c.shape}; got {r.shape}."
                                 + _constant_radius_hint(type(self), r))
            object.__setattr__(self, "radius", r)

    @classmethod
    def uniform(cls, lmax: int, d: int = 3) -> "ZonalDensity":
        """The uniform probability density on S^{d-1} (g ≡ 1).

        Parameters
        ----------
        lmax : int
            Band limit L ≥ 0 at which it is stored.
        d : int
            Ambient dimension, ≥ 2.

        Returns
        -------
        ZonalDensity
        """
        lmax = nonneg_int("lmax", lmax)
        _require_band_limit(_ZONAL_BYTES_PER_COEF * (lmax + 1),
                            f"ZonalDensity.uniform(lmax={lmax}) ({lmax + 1} coefficients)")
        c = np.zeros(lmax + 1)
        c[0] = 1.0
        return cls(c, lmax, d)

    @classmethod
    def from_function(cls, g, lmax: int, d: int = 3, radius=None, axis=None,
                      normalize: bool = False) -> "ZonalDensity":
        """The projection of a profile g(t), t = ⟨x, e⟩ ∈ [−1, 1], onto degree ≤ lmax (the quadrature of
        :class:`meanfield.sphere.ZonalGrid`).

        Parameters
        ----------
        g : callable
            Maps an array of t values to the density's values there (w.r.t. σ: the uniform density is 1).
        lmax : int
            Band limit L ≥ 0.
        d : int
            Ambient dimension, ≥ 2.
        radius : callable or float, optional
            A radius field r(t) > 0, or a constant radius.
        axis : array_like, shape (d,), optional
            The symmetry axis e, a unit vector (default the last basis vector).
        normalize : bool
            Divide by the mass (as :meth:`normalized`).

        Returns
        -------
        ZonalDensity
        """
        from .sphere import _zonal as zon

        lmax, d, normalize = nonneg_int("lmax", lmax), dimension(d), flag("normalize", normalize)
        function_of("g", g, "g(t) (t = ⟨x, e⟩ in [−1, 1])")
        if radius is not None:
            _radius_function_or_number(radius, "radius(t) (t = ⟨x, e⟩ in [−1, 1])")
        grid = zon.ZonalGrid.for_bandlimit(lmax, d)
        _require_band_limit(_ZONAL_PROJECTION_BYTES_PER_NODE[grid.rule] * grid.size + _ZONAL_BYTES_PER_COEF * (lmax + 1),
                            f"ZonalDensity.from_function(lmax={lmax}, d={d}) ({grid.size} quadrature nodes)")
        coeffs = zon.zonal_analysis(np.ascontiguousarray(_values_at(g, grid.t, grid.t.shape, "g")), lmax, grid)
        rad = None
        if radius is not None:
            vals = (_values_at(radius, grid.t, grid.t.shape, "radius") if callable(radius)
                    else np.full(grid.t.shape, float(radius)))
            _check_radius_values(vals, "at the quadrature nodes")
            rad = zon.zonal_analysis(np.ascontiguousarray(vals), lmax, grid)
        out = cls(coeffs, lmax, d, axis, rad)
        return out.normalized() if normalize else out

    def evaluate_profile(self, t) -> np.ndarray:
        """The profile g(t) of the density (w.r.t. σ).

        Parameters
        ----------
        t : array_like, any shape
            t = ⟨x, e⟩ in [−1, 1].

        Returns
        -------
        ndarray, the shape of ``t``
            g(t), w.r.t. σ (the uniform density is 1).

        Raises
        ------
        ValueError
            ``t`` outside [−1, 1], or where :meth:`rounding_error` exceeds the value scale max(|g(t)|, ‖g‖): in high d
            near the poles, where the values have no correct digit (e^{5t} on S^999 at L = 100: −4e55 at t = 1).

        Warns
        -----
        MeanfieldWarning
            Where :meth:`rounding_error` exceeds 1e-6 of that scale.
        """
        from .sphere import _zonal as zon

        t = _profile_arguments(t)
        values = zon.zonal_synthesis(self.coeffs, t, self.d)
        self._check_rounding(t, values)
        return values

    def rounding_error(self, t) -> np.ndarray:
        """An estimate of the rounding error of the profile g(t) that :meth:`evaluate_profile` returns.

        A projection (:meth:`from_function`, the solver's transforms) rounds the coefficient g_ℓ by about
        eps·√N(d, ℓ)·‖g‖ (Cauchy–Schwarz: ‖P_ℓ‖² = ∫ P_ℓ² dσ = 1/N(d, ℓ); ‖g‖² = ∫ g² dσ), and P_ℓ(±1) = 1 carries
        it in full to the poles, where in high d it dwarfs the values (g ≡ 1 at d = 1000, L = 100: 4e55 at t = 1).
        The estimate is

            δ(t) = Σ_ℓ min(|g_ℓ|, 4·eps·√N(d, ℓ)·‖g‖) |P_ℓ^{(d)}(t)|,

        a coefficient below the floor counting with its own size (it is rounding, or exact: the uniform density's
        zeros give δ = 4·eps).  Measured against the exact series of e^{βt} (β = 0 … 20, d = 4 … 1000, L = 5 … 100,
        125 cases): the error is ≤ 1.0·δ at the poles (median 0.6 in d ≥ 64), ≤ 3.4·δ anywhere.

        Parameters
        ----------
        t : array_like, any shape
            t = ⟨x, e⟩ in [−1, 1].

        Returns
        -------
        ndarray, the shape of ``t``
            δ(t), in the units of the density (≥ 0; largest at t = ±1).
        """
        from .sphere import _zonal as zon

        return zon._rounding_bound(self.coeffs, _profile_arguments(t), self.d)

    def _check_rounding(self, t: np.ndarray, values: np.ndarray, warn_too: bool = True) -> None:
        """Warn where :meth:`rounding_error` exceeds 1e-6 of the scale max(|g(t)|, ‖g‖), and refuse ``t`` where it
        exceeds the scale: those values have no correct digit (g ≡ 1 in d = 1000 at L = 100 came back as −4e55 at
        t = 1, silently).  O(L) when even the poles are clear, else one more O(L·t.size) pass."""
        from .sphere import _zonal as zon

        norm = zon.l2_norm(self.coeffs, self.d)
        at_poles = float(np.sum(zon._rounding_sizes(self.coeffs, self.d)))
        if not t.size or at_poles <= _ROUNDING_WARN * norm:       # |P_ℓ| ≤ 1: δ(t) ≤ δ(±1) = Σ_ℓ min(…)
            return
        err = zon._rounding_bound(self.coeffs, t, self.d)
        rel = err / np.maximum(np.abs(values), norm)
        worst = int(np.argmax(rel))
        where = (f"in d={self.d} at lmax={self.lmax} (a projection rounds g_ℓ by ~eps·√N(d, ℓ)·‖g‖ and P_ℓ(±1) = 1 "
                 f"carries it to the poles; ‖g‖ = {norm:.4g})")
        if rel.flat[worst] > 1:
            bad = rel > 1
            raise ValueError(f"`t` (t = ⟨x, e⟩ of the points) must stay where the density's values have a correct "
                             f"digit: at {int(bad.sum())} of {t.size} arguments, |t| ≥ {float(np.min(np.abs(t[bad]))):.3g}, "
                             f"the rounding error (ZonalDensity.rounding_error) exceeds the value scale max(|g(t)|, "
                             f"‖g‖), e.g. {float(err.flat[worst]):.3g} at t={float(t.flat[worst]):.6g} {where}. Evaluate "
                             "where rounding_error(t) is small, or lower `lmax`.")
        if warn_too and rel.flat[worst] > _ROUNDING_WARN:
            warn(f"the density's values near the poles carry rounding up to {rel.flat[worst]:.2g} of their scale "
                 f"max(|g(t)|, ‖g‖) ({float(err.flat[worst]):.3g} at t={float(t.flat[worst]):.6g}) {where}; "
                 "ZonalDensity.rounding_error(t) gives it at each t.")

    def evaluate(self, points) -> np.ndarray:
        """The density ρ (w.r.t. σ) at the directions of ``points``.

        Parameters
        ----------
        points : array_like, shape (..., d)
            Nonzero, finite vectors (normalized here).

        Returns
        -------
        ndarray, shape (...,)
            ρ(x) = g(⟨x, e⟩) at each direction, w.r.t. σ (the uniform density is 1).

        Raises
        ------
        ValueError
            As :meth:`evaluate_profile` at t = ⟨x, e⟩ (points near the axis in high d).

        Warns
        -----
        MeanfieldWarning
            As :meth:`evaluate_profile`.
        """
        p = _query_points(points, self.d)
        return self.evaluate_profile(np.clip(p @ self.axis, -1.0, 1.0))

    def mass(self) -> float:
        """The mass ∫ ρ dσ, σ the normalized uniform measure.

        Returns
        -------
        float
            g_0 (1 for a probability density).
        """
        return float(self.coeffs[0])

    def power(self) -> np.ndarray:
        """The degree power spectrum E_ℓ of ρ (used by :meth:`tail_fraction`, which takes ratios of it).

        Returns
        -------
        ndarray, shape (lmax + 1,)
            E_ℓ = g_ℓ² ∫ P_ℓ^{(d)}(⟨x, e⟩)² dσ = g_ℓ² / N(d, ℓ), N(d, ℓ) the dimension of the degree-ℓ harmonics,
            w.r.t. the normalized measure σ: Σ_ℓ E_ℓ = ∫ ρ² dσ (the uniform density has E_0 = 1).
        """
        from .sphere._zonal import gegenbauer_norms

        return self.coeffs ** 2 * gegenbauer_norms(self.lmax, self.d)

    def tail_fraction(self, frac: float = 2 / 3) -> float:
        """The tail-energy fraction E_tail = Σ_{ℓ > ⌊frac·L⌋} E_ℓ / Σ_ℓ E_ℓ of the resolution monitor, as
        :meth:`Density.tail_fraction` (the zonal solver's diagnostic ``tail_fraction`` at frac = 2/3).

        Parameters
        ----------
        frac : float
            Where the tail starts, as a fraction of the band limit L, in (0, 1) (the monitor's 2/3).

        Returns
        -------
        float
            E_tail in [0, 1] (dimensionless; E_ℓ = :meth:`power`).  The zero field has no tail (0.0).
        """
        return _tail_fraction(self.power(), self.lmax, frac)

    def normalized(self) -> "ZonalDensity":
        """This density divided by its mass; the radius field is kept.

        Returns
        -------
        ZonalDensity
            Mass 1 (g_0 = 1).

        Raises
        ------
        ValueError
            If the mass is not > 0.
        """
        return _normalized(self)

    def with_coeffs(self, coeffs, radius=None) -> "ZonalDensity":
        """A ZonalDensity with the same band limit, d and axis, and new coefficients.

        Parameters
        ----------
        coeffs : array_like, shape (lmax + 1,)
            Gegenbauer coefficients g_0..g_L (real parts kept).
        radius : array_like, shape (lmax + 1,), optional
            Coefficients of a radius field (default: none; the radius of ``self`` is not kept).

        Returns
        -------
        ZonalDensity
        """
        return ZonalDensity(np.real(coeffs), self.lmax, self.d, self.axis, None if radius is None else np.real(radius))

    def resized(self, lmax: int) -> "ZonalDensity":
        """The same density at another band limit, its radius field too.

        Parameters
        ----------
        lmax : int
            The new band limit L ≥ 0: zero-padded when higher, truncated when lower (a projection: the
            Gegenbauer polynomials are orthogonal).

        Returns
        -------
        ZonalDensity
        """
        lmax = nonneg_int("lmax", lmax)

        def rs(a):
            return np.concatenate([a, np.zeros(max(0, lmax - self.lmax))])[: lmax + 1]
        return ZonalDensity(rs(self.coeffs), lmax, self.d, self.axis, None if self.radius is None else rs(self.radius))

    def __repr__(self):
        return f"ZonalDensity(lmax={self.lmax}, d={self.d}, mass={self.mass():.6g})"


def pair_alignment(weights, directions, squares=None):
    """Σ_{i≠j} w_i w_j ⟨θ_i, θ_j⟩ / Σ_{i≠j} w_i w_j of unit ``directions`` (n, d) with ``weights`` (n,) summing to 1,
    in O(n d) through m = Σ_i w_i θ_i: (|m|² − Σ w_i²) / (1 − Σ w_i²); 1 when there is no pair (one token).
    ``squares``: Σ w_i² as ``float(w @ w)`` gives it, where the caller keeps it (a run logs every step's value).

    With a leading axis of G independent groups, ``weights`` (G, n) each summing to 1 and ``directions`` (G, n, d):
    each group's value, an ndarray (G,)."""
    w = np.asarray(weights)
    if w.ndim == 2:
        m = np.einsum("gi,gid->gd", w, directions)
        w2 = np.einsum("gi,gi->g", w, w)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(w2 < 1, (np.einsum("gd,gd->g", m, m) - w2) / (1.0 - w2), 1.0)
    m = w @ directions
    w2 = float(w @ w) if squares is None else squares
    return float((m @ m - w2) / (1.0 - w2)) if w2 < 1 else 1.0


def mean_alignment(particles: Particles) -> float:
    """The mean pairwise alignment Σ_{i≠j} w_i w_j ⟨θ_i, θ_j⟩ / Σ_{i≠j} w_i w_j of weighted tokens.

    Computed in O(n d) through the mean vector m = Σ_i w_i θ_i as (|m|² − Σ_i w_i²) / (1 − Σ_i w_i²);
    the default observable of :func:`ensemble`.  Radii are ignored.  For particles it equals
    ``alignment_statistics(particles).mean_alignment``.

    Parameters
    ----------
    particles : Particles
        Tokens θ_i on S^{d-1}, shape (n, d), with weights w_i summing to 1.

    Returns
    -------
    float
        The mean alignment in [−1, 1]: 1 for a single cluster (and for a single token), about 0 for
        tokens spread uniformly.

    Raises
    ------
    TypeError
        If ``particles`` is not :class:`Particles` (for a Density use :func:`alignment_statistics`).
    """
    if not isinstance(particles, Particles):
        raise TypeError(f"`particles` must be meanfield.Particles; got {type(particles).__name__} (for a "
                        "Density use alignment_statistics).")
    return pair_alignment(particles.weights, particles.positions)
