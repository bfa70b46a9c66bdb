"""Tests of meanfield.sphere._interop: pyshtools conversion, rotations, the Mollweide grid.

Independent answers: pyshtools' own evaluation (``SHCoeffs.expand`` at points and on its GLQ grid)
and rotation (``SHCoeffs.rotate``), scipy's ``Rotation.from_euler``, and the definition
(f∘R⁻¹)(x) = f(Rᵀx) evaluated by non-uniform synthesis.

pyshtools' rotation convention, worked out here: ``rotate(α, β, γ, degrees=False, body=True)`` turns the
field f into f∘R⁻¹ with R = R_z(α) R_y(β) R_z(γ) (active rotations about the fixed axes, γ first) —
exactly ``meanfield.sphere.rotate(alm, L, rotation_matrix(α, β, γ))``; the default ``body=False``
rotates the coordinate frame instead, i.e. gives f∘R (our ``rotate`` with Rᵀ).
"""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from meanfield import sphere as s

pyshtools = pytest.importorskip("pyshtools")


def random_alm(rng, lmax):
    ell, m = s.lm_arrays(lmax)
    a = rng.standard_normal(ell.size) + 1j * rng.standard_normal(ell.size)
    a[m == 0] = a[m == 0].real
    return a


def random_points(rng, n):
    x = rng.standard_normal((n, 3))
    return x / np.linalg.norm(x, axis=1)[:, None]


def lat_lon_deg(points):
    th, ph = s.points_to_angles(points)
    return 90.0 - np.degrees(th), np.degrees(ph)


def pysh_at_points(coeffs, points):
    lat, lon = lat_lon_deg(points)
    return np.asarray(coeffs.expand(lat=lat, lon=lon, degrees=True))


def random_rotation(rng):
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.linalg.det(q))


# ------------------------------------------------------------------------------------------------
# conversion

def test_to_and_from_shcoeffs_round_trip():
    rng = np.random.default_rng(0)
    lmax = 17
    a = random_alm(rng, lmax)
    c = s.to_shcoeffs(a, lmax)
    assert (c.kind, c.normalization, c.csphase, c.lmax) == ("complex", "ortho", -1, lmax)
    back, lmax_back = s.from_shcoeffs(c)
    assert lmax_back == lmax
    np.testing.assert_array_equal(back, a)
    # the m < 0 half is (−1)^m conj(a_ℓm): the field is real
    p = random_points(rng, 50)
    vals = pysh_at_points(c, p)
    assert np.max(np.abs(vals.imag)) < 1e-13
    np.testing.assert_allclose(vals.real, s.synthesis_points(a, lmax, p), rtol=0, atol=1e-12)


@pytest.mark.parametrize("normalization, csphase", [("4pi", 1), ("4pi", -1), ("ortho", 1), ("schmidt", 1),
                                                    ("unnorm", -1)])
def test_from_real_pyshtools_coefficients(normalization, csphase):
    # 'unnorm' guards the workaround in from_shcoeffs: pyshtools 4.14 converts real 'unnorm' coefficients
    # to kind='complex' with a spurious √2 on m > 0
    rng = np.random.default_rng(1)
    lmax = 12
    arr = rng.standard_normal((2, lmax + 1, lmax + 1))
    arr[1, :, 0] = 0.0
    arr[:, np.triu_indices(lmax + 1, 1)[0], np.triu_indices(lmax + 1, 1)[1]] = 0.0  # m ≤ ℓ
    c = pyshtools.SHCoeffs.from_array(arr, normalization=normalization, csphase=csphase)
    assert c.kind == "real"
    a, lmax_a = s.from_shcoeffs(c)
    assert lmax_a == lmax and a.shape == (s.nalm(lmax),)
    p = random_points(rng, 200)
    expected = pysh_at_points(c, p)
    np.testing.assert_allclose(s.synthesis_points(a, lmax, p), expected, rtol=0,
                               atol=1e-12 * np.max(np.abs(expected)))
    # complex coefficients in the same convention: our field is pyshtools' complex expansion
    cplx = c.convert(kind="complex")
    a_c, _ = s.from_shcoeffs(cplx)
    expected_c = pysh_at_points(cplx, p)
    assert np.max(np.abs(expected_c.imag)) <= 1e-12 * np.max(np.abs(expected_c))
    np.testing.assert_allclose(s.synthesis_points(a_c, lmax, p), expected_c.real, rtol=0,
                               atol=1e-12 * np.max(np.abs(expected_c)))


def test_pyshtools_glq_grid_expansion_matches_ours():
    rng = np.random.default_rng(2)
    lmax = 40
    a = random_alm(rng, lmax)
    grid = s.to_shcoeffs(a, lmax).expand(grid="GLQ")
    lat, lon = np.radians(grid.lats()), np.radians(grid.lons())
    th, ph = np.meshgrid(np.pi / 2 - lat, lon, indexing="ij")
    ours = s.synthesis_points(a, lmax, s.angles_to_points(th, ph))
    np.testing.assert_allclose(grid.data.real, ours, rtol=0, atol=1e-12 * np.linalg.norm(a))
    # and its analysis returns our coefficients
    back, _ = s.from_shcoeffs(grid.expand())
    np.testing.assert_allclose(back, a, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# rotations

def test_rotation_matrix_is_zyz():
    for ang in [(0.3, 1.1, -2.0), (2.0, 0.0, 0.5), (-1.0, np.pi, 0.25), (0.0, 0.0, 0.0)]:
        r = s.rotation_matrix(*ang)
        np.testing.assert_allclose(r, Rotation.from_euler("ZYZ", ang).as_matrix(), rtol=0, atol=1e-15)
        np.testing.assert_allclose(r @ r.T, np.eye(3), rtol=0, atol=1e-15)
        assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-15)


ROTATIONS = {
    "generic": s.rotation_matrix(0.3, 1.1, -2.0),
    "beta=0": s.rotation_matrix(0.3, 0.0, 0.7),
    "beta=pi": s.rotation_matrix(0.3, np.pi, 0.7),
    "beta=1e-7": s.rotation_matrix(0.3, 1e-7, 0.7),
    "beta=pi-1e-9": s.rotation_matrix(0.3, np.pi - 1e-9, 0.7),
    "identity": np.eye(3),
    "x-half-turn": np.diag([1.0, -1.0, -1.0]),
    "near-identity, tilted axis": Rotation.from_rotvec(1e-9 * np.array([0.6, 0.0, 0.8])).as_matrix(),
    "random": random_rotation(np.random.default_rng(3)),
}


@pytest.mark.parametrize("name", sorted(ROTATIONS))
def test_rotate_then_synthesize_equals_synthesize_at_rotated_points(name):
    r = ROTATIONS[name]
    rng = np.random.default_rng(4)
    lmax = 32
    a = random_alm(rng, lmax)
    p = random_points(rng, 300)
    got = s.synthesis_points(s.rotate(a, lmax, r), lmax, p)
    expected = s.synthesis_points(a, lmax, p @ r)  # rows of p @ R are Rᵀx = R⁻¹x
    # the rotated field is band-limited to the same L; NUFFT and Wigner rounding ~1e-14 relative
    assert np.max(np.abs(got - expected)) <= 1e-13 * np.linalg.norm(a)


def test_rotation_composes_and_inverts():
    rng = np.random.default_rng(5)
    lmax = 24
    a = random_alm(rng, lmax)
    r1, r2 = random_rotation(rng), random_rotation(rng)
    twice = s.rotate(s.rotate(a, lmax, r1), lmax, r2)
    np.testing.assert_allclose(twice, s.rotate(a, lmax, r2 @ r1), rtol=0, atol=1e-13)
    np.testing.assert_allclose(s.rotate(s.rotate(a, lmax, r1), lmax, r1.T), a, rtol=0, atol=1e-13)
    # rotation preserves the power per degree
    np.testing.assert_allclose(s.degree_power(s.rotate(a, lmax, r1), lmax), s.degree_power(a, lmax), rtol=1e-13)


@pytest.mark.parametrize("angles", [(0.4, 1.1, -0.9), (0.0, 0.0, 1.2), (1.0, np.pi, -0.3), (2.5, 0.5, 0.0)])
def test_rotate_agrees_with_pyshtools(angles):
    rng = np.random.default_rng(6)
    lmax = 15
    a = random_alm(rng, lmax)
    c = s.to_shcoeffs(a, lmax)
    r = s.rotation_matrix(*angles)
    body, _ = s.from_shcoeffs(c.rotate(*angles, degrees=False, body=True))
    np.testing.assert_allclose(s.rotate(a, lmax, r), body, rtol=0, atol=1e-13)
    frame, _ = s.from_shcoeffs(c.rotate(*angles, degrees=False))  # body=False: the frame turns, f∘R
    np.testing.assert_allclose(s.rotate(a, lmax, r.T), frame, rtol=0, atol=1e-13)
    # and pyshtools' Fortran backend agrees with its ducc backend (to its Wigner-table accuracy)
    fortran, _ = s.from_shcoeffs(c.rotate(*angles, degrees=False, body=True, backend="shtools"))
    np.testing.assert_allclose(fortran, body, rtol=0, atol=1e-12)


def test_euler_angles_are_recovered_stably():
    from meanfield.sphere._interop import _zyz_angles

    rng = np.random.default_rng(7)
    for r in list(ROTATIONS.values()) + [random_rotation(rng) for _ in range(20)]:
        np.testing.assert_allclose(s.rotation_matrix(*_zyz_angles(r)), r, rtol=0, atol=4e-16 * 3)


@pytest.mark.parametrize("bad", [
    np.diag([1.0, 1.0, -1.0]),                       # a reflection
    2 * np.eye(3),                                   # not orthogonal
    np.eye(3) + 1e-6 * np.arange(9).reshape(3, 3),   # slightly off
    np.eye(2),                                       # wrong shape
    np.full((3, 3), np.nan),
])
def test_invalid_rotation_matrices_raise(bad):
    a = np.zeros(s.nalm(4), complex)
    with pytest.raises(ValueError, match="`rotation`"):
        s.rotate(a, 4, bad)


def test_rotate_checks_coefficient_length():
    with pytest.raises(ValueError, match="`alm`"):
        s.rotate(np.zeros(s.nalm(4) + 1, complex), 4, np.eye(3))


# ------------------------------------------------------------------------------------------------
# plotting grid

def test_mollweide_grid_values():
    rng = np.random.default_rng(8)
    lmax = 20
    a = random_alm(rng, lmax)
    lon, lat, vals = s.mollweide_grid(a, lmax, nlat=50)
    assert lon.shape == (100,) and lat.shape == (50,) and vals.shape == (50, 100)
    assert np.all(np.diff(lat) > 0) and np.all(np.abs(lat) < np.pi / 2) and lon[0] == -np.pi
    th, ph = np.meshgrid(np.pi / 2 - lat, lon, indexing="ij")
    np.testing.assert_allclose(vals, s.synthesis_points(a, lmax, s.angles_to_points(th, ph)), rtol=0,
                               atol=1e-12 * np.linalg.norm(a))
    assert s.mollweide_grid(a, lmax)[2].shape == (90, 180)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: s.from_shcoeffs(np.zeros((2, 3, 3))), TypeError, "`coeffs` must be a pyshtools.SHCoeffs.*ndarray"),
    (lambda: s.rotation_matrix("a", 0.0, 0.0), TypeError, "`alpha` must be a finite real number"),
    (lambda: s.rotation_matrix(0.0, np.nan, 0.0), ValueError, "`beta` must be a finite real number"),
    (lambda: s.rotation_matrix(0.0, 0.0, np.zeros(2)), TypeError, "`gamma`"),
    (lambda: s.rotate(np.zeros(s.nalm(4), complex), -1, np.eye(3)), ValueError, "`lmax`"),
    (lambda: s.rotate(np.zeros(s.nalm(4), complex), 4, "abc"), ValueError, "`rotation` must be numbers"),
    (lambda: s.to_shcoeffs(np.zeros(s.nalm(4), complex), -1), ValueError, "`lmax`"),
    (lambda: s.to_shcoeffs(["a"] * s.nalm(4), 4), ValueError, "`alm` must be numbers"),   # "complex() arg is …"
    (lambda: s.to_shcoeffs(np.full(s.nalm(4), np.nan), 4), ValueError, "`alm` must be finite"),  # was a NaN SHCoeffs
    (lambda: s.mollweide_grid(np.zeros(s.nalm(4), complex), -1), ValueError, "`lmax`"),
    (lambda: s.mollweide_grid(np.zeros(s.nalm(4), complex), 4, 0), ValueError, "`nlat`"),   # 0 meant the default
    (lambda: s.mollweide_grid(np.zeros(s.nalm(4), complex), 4, 2.5), TypeError, "`nlat`"),
    (lambda: s.mollweide_grid(np.zeros(5, complex), 4, 10), ValueError, r"`alm` must have nalm\(lmax\)=15"),
])
def test_malformed_inputs_raise_naming_the_parameter(call, exc, match):
    # a too-short alm was read past its end by ducc0 in mollweide_grid
    with pytest.raises(exc, match=match):
        call()


def test_huge_requests_are_refused_before_allocating():
    import meanfield as mf

    a = np.zeros(s.nalm(4), complex)
    with pytest.raises(mf.InsufficientMemoryError, match="lower `nlat`"):
        s.mollweide_grid(a, 4, 10**9)                    # tried to allocate 1.6e19 bytes
    with pytest.raises(mf.InsufficientMemoryError, match="lower `lmax`"):
        s.to_shcoeffs(a, 10**8)


def test_rotate_and_plotting_grid_refuse_nan_coefficients_naming_alm():
    # a NaN coefficient came back as a NaN rotated field (or a plotting grid of NaN) with no error; a (k, m, nalm)
    # stack failed inside ducc0 ("array has too many dimensions")
    a = np.zeros(s.nalm(3), dtype=complex)
    a[0] = 1.0
    bad = a.copy()
    bad[4] = np.nan
    with pytest.raises(ValueError, match="`alm` must be finite"):
        s.rotate(bad, 3, np.eye(3))
    with pytest.raises(ValueError, match="`alm` must be finite"):
        s.mollweide_grid(bad, 3)
    with pytest.raises(ValueError, match=r"`alm` must have shape \(10,\) or \(k, 10\)"):
        s.rotate(np.zeros((2, 2, s.nalm(3))), 3, np.eye(3))
    r = s.rotation_matrix(0.3, 0.5, 0.7)
    both = s.rotate(np.stack([a, 2 * a]), 3, r)          # k fields, each rotated
    np.testing.assert_array_equal(both[1], s.rotate(2 * a, 3, r))


def test_pyshtools_fields_are_the_real_fields_of_meanfield():
    # meanfield's transforms ignore Im a_ℓ0; to_shcoeffs passed it on, so pyshtools expanded a complex field 0.21
    # away from synthesis (a_10 = 1 + 0.5j), and degree_power counted it in E_ℓ
    lmax = 3
    a = np.zeros(s.nalm(lmax), dtype=complex)
    a[1], a[s.lm_index(lmax, 2, 1)] = 1 + 0.5j, 0.3 - 0.2j
    grid = s.SphereGrid.for_bandlimit(lmax)
    f = s.synthesis(a, lmax, grid)
    theta, phi = s.points_to_angles(grid.points)
    via_pysh = s.to_shcoeffs(a, lmax).expand(lat=90 - np.degrees(theta.ravel()), lon=np.degrees(phi.ravel()))
    np.testing.assert_allclose(via_pysh, f.ravel(), rtol=0, atol=1e-14)
    assert s.degree_power(a, lmax).sum() == pytest.approx(grid.integrate(f * f), rel=1e-14, abs=0)
    np.testing.assert_allclose(s.to_shcoeffs(a, lmax).spectrum() * 4 * np.pi, s.degree_power(a, lmax), rtol=1e-14)


def test_from_shcoeffs_refuses_a_complex_field_and_nan():
    # pyshtools' complex coefficients may describe a complex field; keeping their m ≥ 0 half gave another field
    import pyshtools
    c = pyshtools.SHCoeffs.from_random(np.ones(4), normalization="ortho", kind="complex", seed=1)
    with pytest.raises(ValueError, match="`coeffs` must describe a real field"):
        s.from_shcoeffs(c)
    real = pyshtools.SHCoeffs.from_random(np.ones(4), normalization="4pi", csphase=1, kind="real", seed=1)
    for kind in ("real", "complex"):
        a, lmax = s.from_shcoeffs(real.convert(kind=kind))
        np.testing.assert_allclose(s.synthesis_points(a, lmax, [[0.0, 0.6, 0.8]]),
                                   real.expand(lat=[90 - np.degrees(np.arccos(0.8))], lon=[90.0]), rtol=1e-13)
    bad = real.copy()
    bad.coeffs[0, 2, 1] = np.nan
    with pytest.raises(ValueError, match="`coeffs` must be finite"):
        s.from_shcoeffs(bad)
