"""Spherical-harmonic transforms on S² (d = 3) on ducc0, with Gauss–Legendre grids.

Conventions (used everywhere in meanfield):

* Coefficients ``alm`` are complex, in ducc0/healpy order (m-major, m ≥ 0 only, index
  ``m(2L+1-m)/2 + ℓ``), for **orthonormal** complex harmonics Y_ℓm (∫|Y_ℓm|² dA = 1 on the unit
  sphere, area measure dA) with the Condon–Shortley phase.  A real field is
  f = Σ_ℓ Re(a_ℓ0) Y_ℓ0 + 2 Re Σ_{m>0} a_ℓm Y_ℓm (the transforms ignore the imaginary parts of the a_ℓ0).
* Grid values are arrays of shape (ntheta, nphi); ring i is at colatitude ``theta[i]`` (north to
  south), pixel j at longitude 2πj/nphi.
* Tangent vector fields are stored as (2, ntheta, nphi) or (2, n) arrays of their components along
  (e_θ, e_φ); points in R³ as (..., 3).

* NaN and inf: the grid transforms (:func:`synthesis`, :func:`analysis`, :func:`gradient`,
  :func:`divergence`) and the per-degree operations pass them through, as numpy's FFTs do: an adaptive
  stepper rejects a trial step by finding them in its result.  Evaluation at points, rotations, pyshtools
  coefficients and plotting grids refuse them (ValueError naming ``alm``) before any work.

A band limit L is analysed exactly on ⌊L⌋+1 rings; quadratic products of two degree-L fields are
projected alias-free on ⌊3L/2⌋+1 rings (``SphereGrid.for_bandlimit(L)``, the 3/2 rule).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from .. import _threads
from .._threads import NTHREADS
from .._validate import flag, nonneg_int, real_array
from ._checks import check_memory, complex_array, directions, finite


GRID_THREADS_FROM_L = 128   # band limit from which a grid transform uses ducc0's threads (measured, below)


def _grid_threads(lmax: int) -> int:
    """ducc0 threads for a grid transform at band limit ``lmax``: one below ``GRID_THREADS_FROM_L``.

    On the 2-vCPU VM of the benchmarks, waking ducc0's pool cost up to ~250 µs per call in some process states
    (synthesis at L = 8: 16 µs on one thread, 50–360 µs on two).  A Pre-LN spectral run (β = 5, 20 steps, one
    process, interleaved medians) took, one thread against two: L = 32 0.13 / 0.47 s, L = 64 0.34 / 0.53 s,
    L = 96 0.61 / 0.80 s, L = 128 1.14 / 1.12 s; in a process where the pool stayed fast two threads were at most
    5 % faster below L = 128 (L = 64: 0.257 / 0.244 s) and gained from L = 128 (0.95 / 0.82 s; L = 160 1.57 /
    1.20 s).  One thread also gives the same bits on every call, which ducc0's threads did not in every process
    state (1-ulp differences seen in CI)."""
    return 1 if lmax < GRID_THREADS_FROM_L else NTHREADS


def _ducc():
    import ducc0.sht  # deferred: keeps `import meanfield` fast

    return ducc0.sht


# ----------------------------------------------------------------------------------------------
# coefficient layout

def nalm(lmax: int) -> int:
    """Number of stored coefficients for band limit ``lmax`` (m ≥ 0 only): (L + 1)(L + 2)/2.

    Parameters
    ----------
    lmax : int
        Band limit L ≥ 0.

    Returns
    -------
    int
        The length of a coefficient array ``alm``.

    Raises
    ------
    TypeError, ValueError
        ``lmax`` is not an integer ≥ 0.
    """
    return _nalm(nonneg_int("lmax", lmax))


def _nalm(lmax: int) -> int:
    return (lmax + 1) * (lmax + 2) // 2


@functools.lru_cache(maxsize=64)
def _lm(lmax: int):
    check_memory(40.0 * nalm(lmax), lambda: f"the (ℓ, m) arrays of band limit lmax={lmax} ({nalm(lmax)} coefficients)",
                 "lower `lmax`.")
    m = np.repeat(np.arange(lmax + 1), np.arange(lmax + 1, 0, -1))
    start = m * (2 * lmax + 1 - m) // 2
    ell = np.arange(nalm(lmax)) - start
    ell.setflags(write=False)
    m.setflags(write=False)
    return ell, m


def lm_arrays(lmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Degree ℓ and order m of every stored coefficient (ducc0 order, m-major).

    Parameters
    ----------
    lmax : int
        Band limit L ≥ 0.

    Returns
    -------
    ell, m : ndarray of int, each of shape (nalm(lmax),)
        Read-only arrays (cached): ``alm[i]`` is the coefficient of Y_{ell[i], m[i]}.

    Raises
    ------
    TypeError, ValueError
        ``lmax`` is not a nonnegative integer.
    InsufficientMemoryError
        The arrays would not fit in the available memory.
    """
    return _lm(nonneg_int("lmax", lmax))


def lm_index(lmax: int, ell, m):
    """Position of (ℓ, m), m ≥ 0, in the coefficient array of band limit ``lmax``: m(2L + 1 − m)/2 + ℓ.

    Parameters
    ----------
    lmax : int
        Band limit L.
    ell, m : int or array_like of int
        Degree(s) and order(s), 0 ≤ m ≤ ℓ ≤ L (broadcast together).

    Returns
    -------
    int or ndarray of int
        The index (or indices) into ``alm``, of the broadcast shape of ``ell`` and ``m``.

    Raises
    ------
    TypeError
        ``lmax``, ``ell`` or ``m`` is not an integer (array).
    ValueError
        ``lmax`` < 0, or some (ℓ, m) is outside 0 ≤ m ≤ ℓ ≤ lmax.
    """
    lmax = nonneg_int("lmax", lmax)
    for name, value in (("ell", ell), ("m", m)):
        if np.asarray(value).dtype.kind not in "iu":
            raise TypeError(f"`{name}` must be an integer or an array of integers; got {name}={value!r}.")
    ell, m = np.asarray(ell), np.asarray(m)
    if np.any(m < 0) or np.any(m > ell) or np.any(ell > lmax):
        raise ValueError(f"need 0 ≤ m ≤ ℓ ≤ lmax={lmax}; got ℓ={ell}, m={m}.")
    return m * (2 * lmax + 1 - m) // 2 + ell


def _coefficients(alm, lmax):
    """(alm as an array of numbers of its own dtype, lmax) after checking lmax ≥ 0 and that the last axis of alm
    holds nalm(lmax) coefficients."""
    if type(lmax) is not int or lmax < 0:
        lmax = nonneg_int("lmax", lmax)
    a = alm if isinstance(alm, np.ndarray) else np.asarray(alm)
    if a.dtype.kind not in "biufc":
        a = complex_array("alm", alm)
    if a.ndim == 0 or a.shape[-1] != _nalm(lmax):
        raise ValueError(f"`alm` must have nalm(lmax)={nalm(lmax)} coefficients in its last axis for "
                         f"lmax={lmax}; got shape {a.shape}.")
    return a, lmax


def apply_degree(alm: np.ndarray, lmax: int, per_degree: np.ndarray) -> np.ndarray:
    """Multiply each coefficient by ``per_degree[ℓ]`` (a zonal operator such as a Funk–Hecke multiplier).

    Parameters
    ----------
    alm : ndarray of complex, shape (..., nalm(lmax))
        Coefficients.
    lmax : int
        Their band limit L.
    per_degree : array_like, shape (≥ lmax + 1,)
        The factor of each degree ℓ = 0 … L (entries beyond L are unused).

    Returns
    -------
    ndarray of complex, shape of ``alm``
        a_ℓm · per_degree[ℓ].

    Raises
    ------
    ValueError
        ``lmax`` is not a nonnegative integer, the last axis of ``alm`` is not nalm(lmax), or ``per_degree`` is
        not a 1-D array of numbers with at least lmax + 1 entries.
    """
    alm, lmax = _coefficients(alm, lmax)
    f = np.asarray(per_degree)
    if f.ndim != 1 or f.shape[0] < lmax + 1 or f.dtype.kind not in "biufc":
        raise ValueError(f"`per_degree` must be a 1-D array of numbers with at least lmax + 1 = {lmax + 1} entries "
                         f"(one per degree ℓ = 0 … {lmax}); got {f.dtype} shape {f.shape}.")
    ell, _ = _lm(lmax)
    return alm * f[ell]


def resize(alm: np.ndarray, lmax_in: int, lmax_out: int) -> np.ndarray:
    """Zero-pad (lmax_out > lmax_in) or truncate coefficients to a new band limit.

    Parameters
    ----------
    alm : array_like, shape (..., nalm(lmax_in))
        Coefficients of band limit ``lmax_in``.
    lmax_in, lmax_out : int
        The band limits before and after.

    Returns
    -------
    ndarray, shape (..., nalm(lmax_out))
        A new array (also when the band limits are equal), of the dtype of ``alm``.

    Raises
    ------
    ValueError
        A band limit is not a nonnegative integer, or the last axis of ``alm`` is not nalm(lmax_in).
    """
    lmax_in, lmax_out = nonneg_int("lmax_in", lmax_in), nonneg_int("lmax_out", lmax_out)
    alm = np.asarray(alm)
    if alm.shape[-1:] != (nalm(lmax_in),):
        raise ValueError(f"`alm` must have last axis nalm(lmax_in={lmax_in}) = {nalm(lmax_in)}; got shape {alm.shape}.")
    if lmax_in == lmax_out:
        return alm.copy()
    ell_o, m_o = _lm(lmax_out)
    keep = (ell_o <= lmax_in)
    out = np.zeros(alm.shape[:-1] + (nalm(lmax_out),), dtype=alm.dtype)
    if lmax_out > lmax_in:
        out[..., keep] = alm
    else:
        ell_i, m_i = _lm(lmax_in)
        out[...] = alm[..., ell_i <= lmax_out]
    return out


def degree_power(alm: np.ndarray, lmax: int) -> np.ndarray:
    """The power per degree E_ℓ = Σ_{m=-ℓ..ℓ} |a_ℓm|² of a real field, ℓ = 0 … lmax.

    Parameters
    ----------
    alm : ndarray of complex, shape (nalm(lmax),)
        Coefficients of a real field (m ≥ 0 stored; the m < 0 ones are their conjugates up to sign).
    lmax : int
        Their band limit L.

    Returns
    -------
    ndarray of float, shape (lmax + 1,)
        E_ℓ, in (field units)² × area: Σ_ℓ E_ℓ = ∫ f² dA on the unit sphere (the constant 1 has
        E_0 = 4π).  pyshtools' ``SHCoeffs.spectrum()`` is E_ℓ/4π (power per unit of normalized area).

    Raises
    ------
    ValueError
        ``lmax`` is not a nonnegative integer, or ``alm`` does not have shape (nalm(lmax),).
    """
    alm, lmax = _coefficients(alm, lmax)
    if alm.ndim != 1:
        raise ValueError(f"`alm` must be one set of coefficients, shape ({nalm(lmax)},); got shape {alm.shape}.")
    ell, m = _lm(lmax)
    w = np.where(m == 0, alm.real ** 2, 2.0 * np.abs(alm) ** 2)     # (Im a_ℓ0 is no part of the field)
    return np.bincount(ell, weights=w, minlength=lmax + 1)


# ----------------------------------------------------------------------------------------------
# grids

def _fft_length(n: int) -> int:
    """Smallest even m ≥ n whose prime factors are all ≤ 11 (lengths the FFT handles at full speed).

    By the odd parts q = 3^a 5^b 7^c 11^e up to the next power of two, each with the least power of two (≥ 2) that
    reaches n: O(log⁴ n) steps.  (Counting up from n took a time growing like the gaps between such numbers:
    1 s at L = 10⁹, 6 s at 10¹¹, and no end at L = 10²⁰, so a huge band limit hung before its memory check.)"""
    n = max(int(n), 2)
    best = 1 << (n - 1).bit_length()            # the power of two ≥ n (even: n ≥ 2)
    q3 = 1
    while q3 < best:
        q5 = q3
        while q5 < best:
            q7 = q5
            while q7 < best:
                q = q7
                while q < best:
                    k = max(1, (-(-n // q) - 1).bit_length())      # least k ≥ 1 with q·2^k ≥ n
                    best = min(best, q << k)
                    q *= 11
                q7 *= 7
            q5 *= 5
        q3 *= 3
    return best


@dataclass(frozen=True)
class SphereGrid:
    """A Gauss–Legendre grid on S²: ``ntheta`` rings × ``nphi`` equispaced longitudes.

    Use :meth:`for_bandlimit` to pick the grid of a band limit.

    Attributes
    ----------
    ntheta : int
        Number of rings (Gauss–Legendre nodes in cos θ), ≥ 1.
    nphi : int
        Number of equispaced longitudes per ring, ≥ 1.
    theta : ndarray, shape (ntheta,)
        Colatitudes of the rings, in (0, π), increasing.
    phi : ndarray, shape (nphi,)
        Longitudes 2πk/nphi, in [0, 2π).
    weights : ndarray, shape (ntheta, nphi)
        Area weights of the nodes (Σ = 4π: the unnormalized measure).
    points : ndarray, shape (ntheta, nphi, 3)
        The nodes as unit vectors.
    shape : tuple of int
        (ntheta, nphi), the shape of grid values.
    """

    ntheta: int
    nphi: int

    def __post_init__(self):
        nonneg_int("ntheta", self.ntheta, minimum=1)
        nonneg_int("nphi", self.nphi, minimum=1)

    @classmethod
    def for_bandlimit(cls, lmax: int, dealias: bool = True) -> "SphereGrid":
        """The grid of band limit ``lmax``: ⌊3L/2⌋ + 1 rings (products alias-free), or L + 1 (``dealias=False``).

        ``nphi`` is the smallest even FFT-friendly length (prime factors ≤ 11) ≥ max(2·ntheta, 3L+2 or
        2L+2): the plain minimum is often 2·prime (194, 386, 514 at L = 64, 128, 256), which makes the
        longitude FFTs, and so the whole transform, 1.4–4× slower.

        Parameters
        ----------
        lmax : int
            Band limit L ≥ 0.
        dealias : bool, optional
            Apply the 3/2 rule (default True).

        Returns
        -------
        SphereGrid

        Raises
        ------
        TypeError, ValueError
            ``lmax`` is not an integer ≥ 0, or ``dealias`` is not True or False.
        """
        lmax, dealias = nonneg_int("lmax", lmax), flag("dealias", dealias)     # "no" was read as True
        ntheta = (3 * lmax) // 2 + 1 if dealias else lmax + 1
        nphi = max(2 * ntheta, 2 * lmax + 2 if not dealias else 3 * lmax + 2)
        return cls(ntheta, _fft_length(nphi))

    @property
    def max_lmax(self) -> int:
        """Largest band limit whose analysis is exact on this grid."""
        return min(self.ntheta - 1, (self.nphi - 1) // 2)

    def _check_nodes(self, bytes_per_node: float, what: str) -> None:
        check_memory(bytes_per_node * self.ntheta * self.nphi,
                     lambda: f"the {what} of a {self.ntheta}×{self.nphi} grid",
                     "use a smaller grid (a lower band limit).")

    @functools.cached_property
    def theta(self) -> np.ndarray:
        # ducc0's nodes, the ones its GL transforms and weights use, in O(n) and to ~1 ulp of θ.  numpy's leggauss
        # took the eigenvalues of the n×n companion matrix (O(n²) memory, O(n³) time: 7.4 s at 4501 rings, the
        # grid of L = 3000, against 0.2 ms) and arccos(−x) lost digits near the poles (2.6e-14 at 1501 rings)
        check_memory(16.0 * self.ntheta, lambda: f"the Gauss–Legendre nodes of {self.ntheta} rings",
                     "use a smaller grid (a lower band limit).")
        import ducc0.misc
        return np.asarray(ducc0.misc.GL_thetas(self.ntheta), dtype=float)

    @functools.cached_property
    def phi(self) -> np.ndarray:
        return 2 * np.pi * np.arange(self.nphi) / self.nphi

    @functools.cached_property
    def weights(self) -> np.ndarray:
        self._check_nodes(8.0, "quadrature weights")
        return np.repeat(self.ring_weights[:, None], self.nphi, axis=1)

    @functools.cached_property
    def ring_weights(self) -> np.ndarray:
        """(ntheta,) the weight of each node of a ring (``weights`` is constant along a ring)."""
        # ducc0 peaks at ~29 B per ring (measured, n = 10⁶ and 4·10⁶); unchecked, the rings of
        # SphereGrid.for_bandlimit(10**9) took the machine's memory until the process was killed
        check_memory(32.0 * self.ntheta, lambda: f"the Gauss–Legendre weights of {self.ntheta} rings",
                     "use a smaller grid (a lower band limit).")
        return _ducc().get_gridweights("GL", self.ntheta) / self.nphi

    @functools.cached_property
    def points(self) -> np.ndarray:
        self._check_nodes(96.0, "points")
        th, ph = np.meshgrid(self.theta, self.phi, indexing="ij")
        return angles_to_points(th, ph)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.ntheta, self.nphi)

    def integrate(self, values: np.ndarray) -> np.ndarray:
        """∫ f dA by the grid quadrature (area measure of the unit sphere; exact for degree ≤ 2·ntheta − 1).

        Parameters
        ----------
        values : ndarray, shape (..., ntheta, nphi)
            f on the grid.

        Returns
        -------
        ndarray, shape (...)
            The integrals (a 0-d array for one field), in field units × area (∫ 1 dA = 4π).

        Raises
        ------
        ValueError
            ``values`` does not end in the grid's shape.
        """
        v = np.asarray(values)
        if v.ndim < 2 or v.shape[-2:] != self.shape:
            raise ValueError(f"`values` must have trailing shape {self.shape}; got shape {v.shape}.")
        return np.tensordot(v, self.weights, axes=([-2, -1], [0, 1]))

    def check(self, lmax: int) -> None:
        """Refuse a band limit this grid cannot analyse exactly.

        Parameters
        ----------
        lmax : int
            Band limit L.

        Raises
        ------
        TypeError, ValueError
            L is not an integer ≥ 0, or L > :attr:`max_lmax`.
        """
        if type(lmax) is not int or lmax < 0:
            lmax = nonneg_int("lmax", lmax)
        if lmax > self.max_lmax:
            raise ValueError(f"`lmax`={lmax} exceeds what this {self.ntheta}×{self.nphi} grid resolves "
                             f"(max_lmax={self.max_lmax}).")


def _check_grid(grid) -> None:
    if not isinstance(grid, SphereGrid):
        raise TypeError(f"`grid` must be a meanfield.sphere.SphereGrid (e.g. SphereGrid.for_bandlimit(lmax)); got "
                        f"{type(grid).__name__}.")


def _as2d(alm, lmax=None):
    """Contiguous complex coefficients; with ``lmax``, check the last axis holds exactly nalm(lmax).

    ducc0 reads past the end of a too-short array and silently uses the head of a too-long one.
    """
    a = complex_array("alm", alm, contiguous=True)
    if lmax is not None and (a.ndim == 0 or a.shape[-1] != _nalm(lmax)):     # lmax checked by the callers
        raise ValueError(f"`alm` must have nalm(lmax)={nalm(lmax)} coefficients in its last axis for "
                         f"lmax={lmax}; got shape {a.shape}.")
    return a


def _one_field(alm, lmax, check_finite: bool = False):
    """:func:`_as2d` of one set of coefficients (shape (nalm(lmax),)), finite with ``check_finite``.

    Finiteness is checked only where coefficients come from a user (points, rotations, plots): the grid transforms
    pass NaN and inf through, because the adaptive steppers reject a trial step by finding them in its result."""
    a = _as2d(alm, lmax)
    if a.ndim != 1:
        raise ValueError(f"`alm` must be one set of coefficients, shape ({nalm(lmax)},); got shape {a.shape}.")
    return finite("alm", a) if check_finite else a


def _grid_values(name, values, shape):
    v = real_array(name, values)
    if v.ndim < len(shape) or v.shape[-len(shape):] != shape:
        raise ValueError(f"`{name}` must have trailing shape {shape}; got shape {v.shape}.")
    return v


def _out(out, shape):
    """A fresh float array of ``shape``, or ``out`` checked to be one (C-contiguous float64) to write into."""
    if out is None:
        check_memory(8.0 * math.prod(shape), lambda: f"an array of shape {shape}", "use a smaller grid.")
        return np.empty(shape)
    if not (isinstance(out, np.ndarray) and out.shape == shape and out.dtype == np.float64
            and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"`out` must be a writeable C-contiguous float64 array of shape {shape}; got "
                         f"{type(out).__name__} {getattr(out, 'shape', '')} {getattr(out, 'dtype', '')}.")
    return out


def synthesis(alm: np.ndarray, lmax: int, grid: SphereGrid, out: np.ndarray | None = None) -> np.ndarray:
    """Grid values of the real field with coefficients ``alm``.

    Parameters
    ----------
    alm : array_like of complex, shape (nalm(lmax),) or (k, nalm(lmax))
        Coefficients of one field, or of k fields.
    lmax : int
        Their band limit L (≤ ``grid.max_lmax``).
    grid : SphereGrid
    out : ndarray, shape (ntheta, nphi) or (k, ntheta, nphi), optional
        A writeable C-contiguous float64 array of the result's shape to write into (reused buffers
        save the page faults of fresh ones).

    Returns
    -------
    ndarray of float, shape (ntheta, nphi) or (k, ntheta, nphi)
        f at the grid points, in the units of the field (``out`` when given).

    Raises
    ------
    ValueError
        L exceeds what the grid resolves, the last axis of ``alm`` is not nalm(lmax), or ``out`` is not
        a suitable array.
    TypeError
        ``grid`` is not a :class:`SphereGrid`.
    """
    _check_grid(grid)
    grid.check(lmax)
    a = _as2d(alm, lmax)
    flat = a.reshape(-1, a.shape[-1])
    res = _out(out, a.shape[:-1] + grid.shape)
    for f, o in zip(flat, res.reshape((flat.shape[0], 1) + grid.shape)):   # written in place by ducc0
        _ducc().synthesis_2d(alm=f[None], spin=0, lmax=lmax, geometry="GL", ntheta=grid.ntheta, nphi=grid.nphi,
                             nthreads=_grid_threads(lmax), map=o)
    return res


def analysis(values: np.ndarray, lmax: int, grid: SphereGrid) -> np.ndarray:
    """Coefficients up to ``lmax`` of grid values, by Gauss–Legendre quadrature (an L² projection).

    Exact for fields of degree ≤ 2·ntheta − 1 − lmax: with the 3/2-rule grid, the product of two
    degree-``lmax`` fields is projected without aliasing.  In floating point the round trip
    analysis(synthesis(a)) has a relative L² error of ~0.5·L·eps (measured: 3e-14 at L = 255, 1.0e-13 at
    L = 1000), the worst coefficient ~2·L·eps of max|a|.

    Parameters
    ----------
    values : array_like of float, shape (..., ntheta, nphi)
        Field values on ``grid``; leading axes are batched.
    lmax : int
        Band limit L of the result (≤ ``grid.max_lmax``).
    grid : SphereGrid

    Returns
    -------
    ndarray of complex, shape (..., nalm(lmax))
        a_ℓm = ∫ f conj(Y_ℓm) dA (orthonormal harmonics on the unit sphere).

    Raises
    ------
    ValueError
        L exceeds what the grid resolves, or ``values`` does not end in the grid's shape.
    TypeError
        ``grid`` is not a :class:`SphereGrid`.
    """
    _check_grid(grid)
    grid.check(lmax)
    v = _grid_values("values", values, grid.shape)
    flat = v.reshape((-1,) + grid.shape)
    out = np.empty((flat.shape[0], _nalm(lmax)), dtype=complex)
    # ducc0 weighs each ring as it reads it (`ringfactor`): the same bits as multiplying the grid by the
    # weights first, without that pass over the grid and its temporary
    for f, o in zip(flat, out[:, None]):                         # written in place by ducc0
        _ducc().adjoint_synthesis_2d(map=np.ascontiguousarray(f[None]), spin=0, lmax=lmax, geometry="GL",
                                     ringfactor=grid.ring_weights, nthreads=_grid_threads(lmax), alm=o)
    return out.reshape(v.shape[:-2] + (nalm(lmax),))


def gradient(alm: np.ndarray, lmax: int, grid: SphereGrid, out: np.ndarray | None = None) -> np.ndarray:
    """Surface gradient ∇_S f on the grid, components along (e_θ, e_φ).

    Parameters
    ----------
    alm : array_like of complex, shape (nalm(lmax),)
        Coefficients of one real field f.
    lmax : int
        Their band limit L (≤ ``grid.max_lmax``).
    grid : SphereGrid
    out : ndarray, shape (2, ntheta, nphi), optional
        A writeable C-contiguous float64 array to write into.

    Returns
    -------
    ndarray of float, shape (2, ntheta, nphi)
        (∂_θ f, ∂_φ f / sin θ): field units per radian of arc on the unit sphere (zero for L = 0).

    Raises
    ------
    ValueError
        L exceeds what the grid resolves, ``alm`` is not one set of nalm(lmax) coefficients, or ``out``
        is not a suitable array.
    TypeError
        ``grid`` is not a :class:`SphereGrid`.
    """
    _check_grid(grid)
    grid.check(lmax)
    a = _one_field(alm, lmax)
    if lmax == 0:        # a constant: ducc0's spin-1 transforms need lmax ≥ 1
        result = _out(out, (2,) + grid.shape)
        result[...] = 0.0
        return result
    return _ducc().synthesis_2d(alm=a[None], spin=1, lmax=lmax, geometry="GL", ntheta=grid.ntheta,
                                nphi=grid.nphi, mode="DERIV1", nthreads=_grid_threads(lmax),
                                map=_out(out, (2,) + grid.shape))


def divergence(vector: np.ndarray, lmax: int, grid: SphereGrid, overwrite: bool = False) -> np.ndarray:
    """Coefficients up to ``lmax`` of div_S F for a tangent field F on the grid.

    Computed as minus the adjoint of :func:`gradient` under the grid quadrature
    (∫ g div F dA = −∫ ∇g·F dA), so the ℓ = 0 coefficient is exactly zero: transport built on it
    conserves mass to rounding.

    Parameters
    ----------
    vector : array_like of float, shape (2, ntheta, nphi)
        Components of F along (e_θ, e_φ) on ``grid``.
    lmax : int
        Band limit L of the result (≤ ``grid.max_lmax``).
    grid : SphereGrid
    overwrite : bool, optional
        Kept for compatibility: ``vector`` is never modified nor copied when it is C-contiguous float64
        (the quadrature weights are applied ring by ring inside the transform).

    Returns
    -------
    ndarray of complex, shape (nalm(lmax),)
        Coefficients of div_S F (units of F per radian of arc); shape (1,), zero, for L = 0.

    Raises
    ------
    ValueError
        L exceeds what the grid resolves, or ``vector`` does not have shape (2, ntheta, nphi).
    TypeError
        ``grid`` is not a :class:`SphereGrid`.
    """
    _check_grid(grid)
    grid.check(lmax)
    v = real_array("vector", vector)
    if v.shape != (2,) + grid.shape:
        raise ValueError(f"`vector` must have shape {(2,) + grid.shape}; got shape {v.shape}.")
    if lmax == 0:        # the divergence has no ℓ = 0 part
        return np.zeros(1, dtype=complex)
    # ducc0 weighs each ring as it reads it (`ringfactor`): the same bits as multiplying the grid by the
    # weights first, without that pass over the grid
    e = _ducc().adjoint_synthesis_2d(map=np.ascontiguousarray(v), spin=1, lmax=lmax, geometry="GL", mode="DERIV1",
                                     ringfactor=grid.ring_weights, nthreads=_grid_threads(lmax))[0]
    return np.negative(e, out=e)


def laplacian(alm: np.ndarray, lmax: int) -> np.ndarray:
    """Coefficients of the Laplace–Beltrami operator Δ_S f: a_ℓm multiplied by −ℓ(ℓ + 1).

    Parameters
    ----------
    alm : ndarray of complex, shape (..., nalm(lmax))
        Coefficients of f.
    lmax : int
        Their band limit L.

    Returns
    -------
    ndarray of complex, shape of ``alm``
        Coefficients of Δ_S f (field units per radian² on the unit sphere).

    Raises
    ------
    ValueError
        ``lmax`` is not a nonnegative integer, or the last axis of ``alm`` is not nalm(lmax).
    """
    alm, lmax = _coefficients(alm, lmax)
    ell, _ = _lm(lmax)
    return -ell * (ell + 1.0) * alm


# ----------------------------------------------------------------------------------------------
# points and non-uniform transforms

def angles_to_points(theta, phi) -> np.ndarray:
    """Unit vectors from colatitude θ and longitude φ.

    Parameters
    ----------
    theta, phi : array_like of float
        Colatitude θ ∈ [0, π] and longitude φ, in radians (broadcast together).

    Returns
    -------
    ndarray, shape (..., 3)
        (sin θ cos φ, sin θ sin φ, cos θ), over the broadcast shape of ``theta`` and ``phi``.

    Raises
    ------
    ValueError
        ``theta`` or ``phi`` is not finite real numbers, or they do not broadcast together.
    """
    theta, phi = _angles(theta, phi)
    st = np.sin(theta)
    return np.stack([st * np.cos(phi), st * np.sin(phi), np.cos(theta)], axis=-1)


def _angles(theta, phi):
    """θ and φ as finite float arrays of a common (broadcast) shape.

    Broadcast here, not only checked: the callers stack expressions of θ alone (cos θ) with expressions of both,
    which np.stack refuses when the shapes differ (θ of shape (n, 1) against φ of shape (m,) raised "all input
    arrays must have the same shape")."""
    theta, phi = finite("theta", real_array("theta", theta)), finite("phi", real_array("phi", phi))
    try:
        theta, phi = np.broadcast_arrays(theta, phi)
    except ValueError:
        raise ValueError(f"`theta` and `phi` must broadcast together; got shapes {theta.shape} and {phi.shape}.") \
            from None
    return theta, phi


def check_epsilon(epsilon, floor: float = 1e-14) -> float:
    """ducc0's accuracy target of a non-uniform transform, checked to be in [floor, 1) (ducc0 0.42 has float64
    kernels down to ~1e-14, though its documentation states 2e-13)."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.floating, np.integer)) \
            or not floor <= float(epsilon) < 1:
        raise ValueError(f"`epsilon` must be in [{floor:g}, 1) (the accuracy target of ducc0's float64 transforms); "
                         f"got epsilon={epsilon!r}.")
    return float(epsilon)


def points_to_angles(points) -> tuple[np.ndarray, np.ndarray]:
    """Colatitude and longitude of points in R³.

    Parameters
    ----------
    points : array_like, shape (..., 3)
        Points (need not be unit length; the direction is used).

    Returns
    -------
    theta, phi : ndarray, each of shape (...)
        θ ∈ [0, π] and φ ∈ [0, 2π), in radians.

    Raises
    ------
    ValueError
        ``points`` does not have shape (..., 3), or holds NaN, inf or a zero vector (which has no direction).
    """
    p = directions("points", points)
    theta = np.arctan2(np.hypot(p[..., 0], p[..., 1]), p[..., 2])
    phi = np.mod(np.arctan2(p[..., 1], p[..., 0]), 2 * np.pi)
    phi = np.where(phi == 2 * np.pi, 0.0, phi)      # mod of a tiny negative angle rounds up to 2π
    return theta, phi


def tangent_basis(theta, phi) -> tuple[np.ndarray, np.ndarray]:
    """The unit tangent vectors e_θ and e_φ at (θ, φ).

    Parameters
    ----------
    theta, phi : array_like of float
        Colatitude and longitude in radians (broadcast together).

    Returns
    -------
    e_theta, e_phi : ndarray, each of shape (..., 3)
        Ambient components of e_θ (pointing south) and e_φ (pointing east).

    Raises
    ------
    ValueError
        As :func:`angles_to_points`.
    """
    theta, phi = _angles(theta, phi)
    ct, st, cp, sp = np.cos(theta), np.sin(theta), np.cos(phi), np.sin(phi)
    e_theta = np.stack([ct * cp, ct * sp, -st], axis=-1)
    e_phi = np.stack([-sp, cp, np.zeros_like(sp)], axis=-1)
    return e_theta, e_phi


def to_ambient(components: np.ndarray, theta, phi) -> np.ndarray:
    """Tangent components along (e_θ, e_φ) to ambient vectors in R³.

    Parameters
    ----------
    components : ndarray, shape (2, ...)
        The e_θ and e_φ components.
    theta, phi : array_like of float, shape (...)
        Where the vectors are attached (radians).

    Returns
    -------
    ndarray, shape (..., 3)
        components[0]·e_θ + components[1]·e_φ.

    Raises
    ------
    ValueError
        ``components`` does not have a first axis of length 2 whose entries broadcast with ``theta`` and ``phi``,
        or the angles are invalid (as :func:`angles_to_points`).
    """
    components = real_array("components", components)
    e_t, e_p = tangent_basis(theta, phi)
    if components.ndim == 0 or components.shape[0] != 2:
        raise ValueError(f"`components` must have shape (2, ...) (the e_θ and e_φ components); got shape "
                         f"{components.shape}.")
    try:
        np.broadcast_shapes(components.shape[1:], e_t.shape[:-1])
    except ValueError:
        raise ValueError(f"`components` of shape {components.shape} do not match angles of shape "
                         f"{e_t.shape[:-1]}; need (2, ...) with ... the shape of `theta` and `phi`.") from None
    return components[0][..., None] * e_t + components[1][..., None] * e_p


def _loc(points) -> np.ndarray:
    th, ph = points_to_angles(points)      # checks the points
    return np.ascontiguousarray(np.stack([th.ravel(), ph.ravel()], axis=-1))


def synthesis_points(alm: np.ndarray, lmax: int, points, epsilon: float = 1e-13) -> np.ndarray:
    """Values of the real field ``alm`` at arbitrary points, by non-uniform synthesis (ducc0).

    Parameters
    ----------
    alm : array_like of complex, shape (nalm(lmax),)
        Coefficients of one real field.
    lmax : int
        Their band limit L.
    points : array_like, shape (..., 3)
        Where to evaluate (directions; need not be unit length).
    epsilon : float, optional
        Accuracy target of the transform relative to the L² norm of the field (‖a‖ with the m > 0 terms
        counted twice), in [1e-14, 1) (default 1e-13).  Rounding sets a floor of ~L·eps·‖a‖ whatever
        ``epsilon`` (measured at L = 1000 against a long-double sum: 1.5e-13·‖a‖ rms, up to 2e-12·‖a‖ within 1°
        of the poles, where the grid :func:`synthesis` errs as much).

    Returns
    -------
    ndarray of float, shape (...)
        f at ``points``, in the units of the field.

    Raises
    ------
    ValueError
        ``epsilon`` outside [1e-14, 1), ``lmax`` not a nonnegative integer, ``alm`` not of shape (nalm(lmax),)
        or holding NaN or inf, or ``points`` not of shape (..., 3) or holding NaN, inf or a zero vector.
    """
    epsilon = check_epsilon(epsilon)
    lmax = nonneg_int("lmax", lmax)
    a = _one_field(alm, lmax, check_finite=True)
    loc = _loc(points)
    shape = np.shape(points)[:-1]
    if loc.shape[0] == 0:                  # no points (ducc0 refuses an empty location array)
        return np.zeros(shape)
    out = _ducc().synthesis_general(alm=a[None], spin=0, lmax=lmax, loc=loc, epsilon=epsilon, nthreads=NTHREADS)[0]
    return out.reshape(shape)


def gradient_points(alm: np.ndarray, lmax: int, points, epsilon: float = 1e-13, ambient: bool = True):
    """Surface gradient ∇_S f at arbitrary points, by non-uniform spin-1 synthesis (ducc0).

    Parameters
    ----------
    alm : array_like of complex, shape (nalm(lmax),)
        Coefficients of one real field f.
    lmax : int
        Their band limit L (L = 0 gives zeros).
    points : array_like, shape (..., 3)
        Where to evaluate (directions).
    epsilon : float, optional
        Accuracy target of the transform relative to the L² norm of the gradient's spin-1 coefficients, in
        [1e-14, 1) (default 1e-13); rounding sets a floor as for :func:`synthesis_points`.
    ambient : bool, optional
        Return ambient vectors (default) or the (e_θ, e_φ) components.

    Returns
    -------
    ndarray of float, shape (..., 3) if ``ambient`` else (2, ...)
        ∇_S f, in field units per radian of arc on the unit sphere.

    Raises
    ------
    ValueError
        As :func:`synthesis_points`.
    """
    epsilon = check_epsilon(epsilon)
    lmax = nonneg_int("lmax", lmax)
    a = _one_field(alm, lmax, check_finite=True)
    loc = _loc(points)
    p_shape = np.shape(points)
    if lmax == 0 or loc.shape[0] == 0:   # a constant has no gradient (ducc0's spin-1 transforms need lmax ≥ 1)
        return np.zeros(p_shape if ambient else (2,) + p_shape[:-1])
    comp = _ducc().synthesis_general(alm=a[None], spin=1, lmax=lmax, loc=loc, epsilon=epsilon,
                                     mode="DERIV1", nthreads=NTHREADS)
    if not ambient:
        return comp.reshape((2,) + p_shape[:-1])
    return to_ambient(comp, loc[:, 0], loc[:, 1]).reshape(p_shape)


def adjoint_synthesis_points(values, points, lmax: int, epsilon: float = 1e-13) -> np.ndarray:
    """Σ_j c_j conj(Y_ℓm(x_j)) for ℓ ≤ lmax: the coefficients of the measure Σ_j c_j δ_{x_j}.

    Cost O(n + L² log L).  The same bits on every call (slices of points, one ducc0 thread each,
    added in order).

    Parameters
    ----------
    values : array_like of float, shape (n,)
        The weights c_j (real).
    points : array_like, shape (n, 3)
        The points x_j (directions).
    lmax : int
        Band limit L of the result.
    epsilon : float, optional
        Accuracy target of the transform relative to the weights' size (ducc0's measure), in [1e-14, 1)
        (default 1e-13); rounding sets a floor of ~L·eps.

    Returns
    -------
    ndarray of complex, shape (nalm(lmax),)
        The coefficients, for the orthonormal Y_ℓm of the area measure (the mass Σ c_j is
        √(4π)·a_00).

    Raises
    ------
    ValueError
        ``epsilon`` outside [1e-14, 1), ``lmax`` not a nonnegative integer, ``points`` not of shape (..., 3) or
        holding NaN, inf or a zero vector, or ``values`` not one finite weight per point.
    InsufficientMemoryError
        ``lmax`` so large that the transform would not fit in the available memory.
    """
    epsilon = check_epsilon(epsilon)
    lmax = nonneg_int("lmax", lmax)
    # ducc0's result and work grid take ~64 B per coefficient per thread (measured 128–154 B with two threads,
    # lmax = 1000–3000); unchecked, lmax = 10¹² failed with a bare "MemoryError: std::bad_alloc"
    check_memory(80.0 * (NTHREADS + 1) * nalm(lmax),
                 lambda: f"the adjoint transform of band limit lmax={lmax} ({nalm(lmax)} coefficients)",
                 "lower `lmax` (the band limit).")
    loc = _loc(points)
    v = np.ascontiguousarray(finite("values", real_array("values", values)).reshape(1, -1))
    if v.shape[1] != loc.shape[0]:
        raise ValueError(f"`values` must hold one weight per point; got {v.shape[1]} values for points of "
                         f"shape {np.shape(points)}.")
    if loc.shape[0] == 0:                  # the empty measure (ducc0 refuses an empty location array)
        return np.zeros(nalm(lmax), dtype=complex)

    def part(sl):   # one ducc0 thread per call and slices added in order: the same bits on every call
        return _ducc().adjoint_synthesis_general(map=np.ascontiguousarray(v[:, sl]), spin=0, lmax=lmax,
                                                 loc=loc[sl], epsilon=epsilon, nthreads=1)[0]

    # slices by the point count, not one per core: the order of the sum, so the bits, would depend on the machine
    n = v.shape[1]
    return _threads.ordered_sum(_threads.map_slices(part, _threads.slices(n, _threads.reproducible_parts(n))))


#: The largest band limit of :func:`ylm`: scipy 1.17's ``sph_harm_y`` returned NaN from degree ~646 on (every m and
#: colatitude tried; L = 1000 gave 284 907 NaN of 501 501 values at one point), and ~1e-13 of pyshtools'
#: ``spharm`` up to 645
YLM_MAX_LMAX = 640


def ylm(lmax: int, points) -> np.ndarray:
    """Complex orthonormal Y_ℓm at points for every stored (ℓ, m ≥ 0).

    Direct evaluation (``scipy.special.sph_harm_y``), for tests and small n and L; prefer the transforms
    (:func:`synthesis_points`, any L).

    Parameters
    ----------
    lmax : int
        Band limit L, 0 ≤ L ≤ 640 (:data:`YLM_MAX_LMAX`: scipy's ``sph_harm_y`` returns NaN beyond ~645).
    points : array_like, shape (n, 3)
        Directions (need not be unit length).

    Returns
    -------
    ndarray of complex, shape (n, nalm(lmax))
        Y_ℓm(x_i) in the order of :func:`lm_arrays` (∫|Y_ℓm|² dA = 1 on the unit sphere, Condon–Shortley
        phase).

    Raises
    ------
    ValueError
        ``lmax`` is not an integer in [0, 640], or ``points`` is not of shape (n, 3) or (3,) or holds NaN, inf
        or a zero vector.
    InsufficientMemoryError
        The table of n × nalm(lmax) values would not fit in the available memory.
    """
    from scipy.special import sph_harm_y

    lmax = nonneg_int("lmax", lmax, maximum=YLM_MAX_LMAX)     # (scipy's sph_harm_y is NaN from degree ~646 on)
    th, ph = points_to_angles(points)
    if th.ndim > 1:
        raise ValueError(f"`points` must have shape (n, 3) or (3,); got shape {np.shape(points)}.")
    check_memory(64.0 * max(th.size, 1) * nalm(lmax), lambda: f"Y_ℓm at {th.size} points up to lmax={lmax}",
                 "lower `lmax` or evaluate fewer points at a time (or use synthesis_points).")
    ell, m = _lm(lmax)
    return sph_harm_y(ell[None, :], m[None, :], np.atleast_1d(th)[:, None], np.atleast_1d(ph)[:, None])
