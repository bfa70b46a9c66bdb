import warnings

import numpy as np
import pytest

import meanfield as mf


def test_uniform_density_is_one_everywhere():
    for d in (2, 3):
        u = mf.Density.uniform(6, d=d)
        pts = mf.Particles.uniform(20, d=d, seed=1).positions
        assert np.allclose(u.evaluate(pts), 1.0, atol=1e-14) and u.mass() == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("d", [2, 3])
def test_from_function_reproduces_polynomials(d):
    f = lambda x: 1 + 0.5 * x[..., 0] - 0.25 * x[..., 1] ** 3  # noqa: E731
    dens = mf.Density.from_function(f, 4, d=d)
    pts = mf.Particles.uniform(30, d=d, seed=2).positions
    assert np.max(np.abs(dens.evaluate(pts) - f(pts))) < 1e-13
    assert dens.mass() == pytest.approx(1.0, abs=1e-14)   # odd terms integrate to 0


def test_resize_normalize_power_tail():
    dens = mf.Density.from_function(lambda x: 2 + x[..., 2], 6)
    assert dens.normalized().mass() == pytest.approx(1.0, abs=1e-15)
    big = dens.resized(10)
    assert np.allclose(big.resized(6).coeffs, dens.coeffs)
    assert dens.power().shape == (7,) and dens.tail_fraction() == pytest.approx(0.0, abs=1e-28)


def test_zonal_density():
    z = mf.ZonalDensity.from_function(lambda t: 1 + t ** 2 * 0.5, 4, d=5)
    assert z.mass() == pytest.approx(1 + 0.5 / 5, rel=1e-13)    # ∫ t² dσ = 1/d on S^{d-1}
    x = np.eye(5)[-1]
    assert z.evaluate(x) == pytest.approx(1.5, rel=1e-13)


def test_particles_defaults_and_radii():
    p = mf.Particles.uniform(10, d=4, seed=3, radii=2.0)
    assert p.n == 10 and p.d == 4 and np.allclose(p.weights, 0.1) and np.allclose(p.radii, 2.0)
    assert np.allclose(np.linalg.norm(p.ambient(), axis=1), 2.0)
    assert not p.positions.flags.writeable


@pytest.mark.parametrize("kwargs, match", [
    (dict(positions=np.ones((3, 3))), "unit vectors"),
    (dict(positions=np.eye(3), weights=[0.5, 0.5, 0.5]), "sum to 1"),
    (dict(positions=np.eye(3), weights=[1.5, -0.5, 0.0]), "≥ 0"),
    (dict(positions=np.eye(3), radii=[1.0, 0.0, 1.0]), "`radii`"),
    (dict(positions=np.eye(3)[:, :1]), "`d`"),
    (dict(positions=np.full((2, 3), np.nan)), "finite"),
])
def test_particles_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mf.Particles(**kwargs)


def test_particles_near_the_float64_limit_are_normalized_not_zeroed():
    # the squares of 1e308 overflow: the norms gave inf and the positions (and weights) came back as zeros
    with np.errstate(all="raise"):
        p = mf.Particles(np.array([[1e308, 1e308, 1e308], [0.0, 3e307, -4e307]]), [1e308, 3e307], normalize=True)
    np.testing.assert_allclose(p.positions, [[3 ** -0.5] * 3, [0.0, 0.6, -0.8]], rtol=1e-15)
    np.testing.assert_allclose(p.weights, [1 / 1.3, 0.3 / 1.3], rtol=1e-15)
    with pytest.raises(ValueError, match="sum to 1 .*got sum=inf"):
        mf.Particles(np.eye(2), [1e308, 1e308])


@pytest.mark.parametrize("axis", [[0.0, 0.0, np.nan], "abc", [0.0, 0.0, 2.0], [1.0, 0.0]])
def test_zonal_density_axis_is_a_finite_unit_vector(axis):
    with pytest.raises(ValueError, match="`axis` must be"):
        mf.ZonalDensity([1.0, 0.5, 0.0], 2, 3, axis=axis)


@pytest.mark.parametrize("seed, error", [(-1, ValueError), ([3, -1], ValueError), ("a", TypeError),
                                         (1.5, TypeError), (True, TypeError)])
def test_random_constructors_name_a_bad_seed(seed, error):
    """An integer out of range is a ValueError (it was a TypeError), a value of another kind a TypeError."""
    for make in (lambda: mf.Particles.uniform(3, seed=seed), lambda: mf.Density.random(4, seed=seed)):
        with pytest.raises(error, match="`seed` must be None, an int ≥ 0"):
            make()


@pytest.mark.parametrize("d", [3, 2])
@pytest.mark.parametrize("kw, match", [
    (dict(amplitude=1e6), r"`amplitude` must be a real number in \[-100, 100\]; got amplitude=1000000\.0"),
    (dict(amplitude=-101), r"`amplitude` must be a real number in \[-100, 100\]"),
    (dict(degree=20), r"`degree` must be an integer in \[1, lmax\] = \[1, 8\]; got degree=20"),
    (dict(degree=0), r"`degree` must be an integer >= 1"),
])
def test_random_density_names_amplitude_and_degree_out_of_range(kw, match, d):
    """amplitude = 1e6 overflowed exp (a numpy RuntimeWarning, then "`coeffs` must be finite"); degree = 20 at
    lmax = 8 was accepted, and the density's negative values were found later without naming `degree`."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=match):
            mf.Density.random(8, d=d, **kw)


def test_random_density_is_finite_at_every_allowed_amplitude_and_degree():
    """exp(amplitude·g) overflowed from amplitude·max g ≈ 710; the largest exponent is subtracted before the
    normalization.  The default degree is lmax // 6 on S², at least 1 and at most 4."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dens in (mf.Density.random(64, seed=0, degree=64, amplitude=100), mf.Density.random(8, amplitude=-100),
                     mf.Density.random(8, d=2, degree=8, amplitude=100)):
            assert np.all(np.isfinite(dens.coeffs)) and dens.mass() == pytest.approx(1.0, rel=1e-12)
    assert np.allclose(mf.Density.random(24, seed=2).coeffs, mf.Density.random(24, seed=2, degree=4).coeffs)
    assert np.allclose(mf.Density.random(2, seed=2).coeffs, mf.Density.random(2, seed=2, degree=1).coeffs)
    with pytest.raises(ValueError, match=r"`lmax` must be an integer >= 1"):
        mf.Density.random(0)


def test_density_bad_input():
    with pytest.raises(ValueError, match="`coeffs`"):
        mf.Density(np.zeros(5), 3)
    with pytest.raises(ValueError, match="`d`"):
        mf.Density(np.zeros(4), 3, d=4)
    with pytest.raises(ValueError, match="mass"):
        mf.Density(np.zeros(10), 3).normalized()


@pytest.mark.parametrize("make", [
    lambda d: mf.Density.random(8, d=d),
    lambda d: mf.Density.from_function(lambda x: 1.0, 8, d=d),
    lambda d: mf.Density.uniform(8, d=d),
])
def test_density_constructors_name_a_dimension_other_than_2_or_3(make):
    # Density.random(8, d=4) and from_function raised a bare KeyError: 4 from the projection
    with pytest.raises(ValueError, match=r"`d` must be 2 or 3 for a Density .*got d=4"):
        make(4)


def test_a_real_field_has_real_axis_coefficients():
    # an imaginary m = 0 entry changed no value but did change norms and distances (by 0.11 for Im = 0.7)
    rho = mf.Density.random(8, seed=1)
    bad = rho.coeffs.copy()
    bad[1] += 0.7j
    with pytest.raises(ValueError, match=r"`coeffs` of a real field must have real m = 0 entries.*0\.7 at ℓ=1, m=0"):
        mf.Density(bad, 8)
    with pytest.raises(ValueError, match=r"`radius` of a real field .* at ℓ=0, m=0"):
        mf.Density(rho.coeffs, 8, radius=mf.Density.uniform(8).coeffs + 0.5j)
    with pytest.raises(ValueError, match=r"at k=0"):
        mf.Density(np.array([1.0 + 0.1j, 0.2]), 1, d=2)
    rounding = rho.coeffs.copy()
    rounding[:9] += 1e-17j                       # what transforms leave: set to 0
    assert np.array_equal(mf.Density(rounding, 8).coeffs, rho.coeffs)


@pytest.mark.parametrize("make", [
    lambda: mf.Particles(np.array([[0.0, 0.0, 1j]])),
    lambda: mf.Particles(np.eye(3), weights=np.array([0.5, 0.5, 0j + 1e-3j])),
    lambda: mf.ZonalDensity(np.array([1.0, 0.5j]), 1, d=5),
])
def test_complex_input_is_refused_not_truncated(make):
    # numpy drops an imaginary part with only a ComplexWarning
    with pytest.raises(ValueError, match=r"must be real; got complex values"):
        make()


def test_zonal_densities_normalize_like_densities():
    z = mf.ZonalDensity.from_function(lambda t: 1 + 0.2 * t ** 2, 8, d=5, radius=2.0)
    assert z.mass() == pytest.approx(1 + 0.2 / 5, rel=1e-14)          # E[t²] = 1/d on S^{d-1}
    n = z.normalized()
    assert n.mass() == pytest.approx(1.0, rel=1e-15) and np.array_equal(n.radius, z.radius)
    assert np.allclose(mf.ZonalDensity.from_function(lambda t: 1 + 0.2 * t ** 2, 8, d=5, normalize=True).coeffs,
                       n.coeffs, rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match=r"Use its \.normalized\(\) \(ZonalDensity\.normalized\)"):
        mf.simulate(mf.Model(1.0, d=5), z, 0.1)


def test_from_function_refuses_complex_or_non_numeric_values():
    with pytest.raises(ValueError, match="`f` must return real values"):
        mf.Density.from_function(lambda x: 1 + 1j * x[..., 0], 4)
    with pytest.raises(ValueError, match="`f` must return real numbers"):
        mf.Density.from_function(lambda x: np.full(x.shape[:-1], "a"), 4)


@pytest.mark.parametrize("make, match", [
    (lambda: mf.Density.from_coefficients(["a", "b", "c"], d=2), r"`coeffs` must be numbers .*got coeffs=\['a', 'b'"),
    (lambda: mf.Density.from_coefficients("1+2j, 3", d=3), r"`coeffs` must be numbers"),
    (lambda: mf.Density.from_coefficients([[1.0, 0.0], [0.0]], d=2), r"`coeffs` must be numbers"),
    (lambda: mf.Density(np.ones(3), 2, d=2, radius=["2", "x", "0"]), r"`radius` must be numbers"),
    (lambda: mf.ZonalDensity([[1.0], [0.0, 1.0]], 1, d=4), r"`coeffs` must be numbers"),
])
def test_malformed_coefficients_are_refused_by_name(make, match):
    """Python's "complex() arg is a malformed string" and numpy's "inhomogeneous shape" named no parameter."""
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make, name", [
    (lambda: mf.Particles([["1", "0", "0"]]), "positions"),
    (lambda: mf.Particles(np.array([[b"1", b"0", b"0"]])), "positions"),
    (lambda: mf.Particles(np.array([["1", 0.0, 0.0]], dtype=object)), "positions"),
    (lambda: mf.Particles(np.eye(3)[:2], weights=["0.5", "0.5"]), "weights"),
    (lambda: mf.Particles(np.eye(3)[:2], radii=["1", "2"]), "radii"),
    (lambda: mf.Density(["1", "0", "0"], 1), "coeffs"),
    (lambda: mf.Density([1.0, 0, 0], 1, radius=np.array(["1", 0, 0], dtype=object)), "radius"),
    (lambda: mf.ZonalDensity(["1", "0"], 1, d=3), "coeffs"),
    (lambda: mf.Density.uniform(2).evaluate([["1", "0", "0"]]), "points"),
])
def test_numeric_text_is_refused_as_not_numbers(make, name):
    # numpy casts numeric text to numbers: Particles([['1', '0', '0']]) was the point e1, Density(['1', '0', '0'], 1)
    # a density, weights=['0.5', '0.5'] equal weights; "a" was refused, "1" was not
    with pytest.raises(ValueError, match=f"`{name}` must be numbers"):
        make()


@pytest.mark.parametrize("make, name", [
    (lambda big: mf.Particles.uniform(big), "n"), (lambda big: mf.Particles.uniform(4, d=big), "d"),
    (lambda big: mf.Density.uniform(big), "lmax"), (lambda big: mf.ZonalDensity.uniform(big), "lmax"),
    (lambda big: mf.sample_density(mf.Density.uniform(2), big, seed=0), "n"),
])
def test_integers_beyond_int64_are_refused_by_name(make, name):
    # 10**400 raised Python's "OverflowError: int too large to convert to float" from the memory estimate; 2**63 to
    # 1.8e308 passed the validator and met a memory check (Particles.uniform(4, d=2**64): "lower `n`")
    for big in (2**63, 2**64, 10**19, 10**400, 10**5000):
        with pytest.raises(ValueError, match=rf"`{name}` must be an integer >= \d and within int64's range "
                                             r"\(≤ 2\*\*63 − 1 = 9223372036854775807\)"):
            make(big)
    with pytest.raises(mf.InsufficientMemoryError):         # the largest int64 is a count: its memory is refused
        make(2**63 - 1)


def test_from_function_refuses_numeric_text():
    # f returning "1" everywhere gave the coefficients of the constant 1 (c00 = 3.5449077 = √(4π))
    with pytest.raises(ValueError, match="`f` must return real numbers; got dtype <U1"):
        mf.Density.from_function(lambda x: np.full(x.shape[:-1], "1"), 2)


@pytest.mark.parametrize("make, match", [
    (lambda: mf.Density.from_function(3.0, 4), r"`f` must be a function, called as f\(points\) .*got f=3\.0"),
    (lambda: mf.Density.from_function(lambda x, y: x, 4), r"`f` must be callable as f\(points\) .*got f\(x, y\)"),
    (lambda: mf.ZonalDensity.from_function("1 + t", 4, d=5), r"`g` must be a function, called as g\(t\) .*g='1 \+ t'"),
    (lambda: mf.Density.from_function(lambda x: 1.0, 4, radius="big"), r"`radius` must be a real number or a function"),
    (lambda: mf.ZonalDensity.from_function(lambda t: 1.0, 4, d=5, radius=lambda: 2.0),
     r"`radius` must be callable as radius\(t\)"),
    (lambda: mf.Density.from_function(lambda x: 1.0, 4, normalize="yes"), r"`normalize` must be True or False"),
])
def test_from_function_refuses_what_it_cannot_call_by_name(make, match):
    """A non-callable f raised "'float' object is not callable"; radius="big" raised float()'s error."""
    with pytest.raises(TypeError, match=match):
        make()


@pytest.mark.parametrize("make, name", [
    (lambda: mf.Particles(np.eye(2), weights=[True, False]), "weights"),
    (lambda: mf.Particles(np.eye(2), weights=np.array([True, False])), "weights"),
    (lambda: mf.Particles(np.eye(2), weights=[0.0, True]), "weights"),
    (lambda: mf.Particles([[True, False], [False, True]]), "positions"),
    (lambda: mf.Particles(np.eye(2), radii=True), "radii"),
    (lambda: mf.Density([True, False], 1, d=2), "coeffs"),
    (lambda: mf.ZonalDensity([1.0, 0.0], 1, d=3, axis=[False, False, True]), "axis"),
])
def test_booleans_are_refused_where_numbers_are_expected(make, name):
    """numpy reads True as 1: weights=[True, False] was a valid probability vector."""
    with pytest.raises(TypeError, match=rf"`{name}` must be numbers; got booleans \(True/False\)"):
        make()


def test_a_constant_given_as_radius_coefficients_is_told_how_to_give_a_constant_radius():
    rho = mf.Density.random(8, seed=1)
    with pytest.raises(ValueError, match=r"got \(\)\. A constant radius r: pass radius=r to Density\.from_function"):
        mf.Density.from_coefficients(rho.coeffs, 8, radius=2.0)
    z = mf.ZonalDensity.uniform(8, d=5)
    with pytest.raises(ValueError, match=r"r \* ZonalDensity\.uniform\(lmax, d\)\.coeffs"):
        mf.ZonalDensity(z.coeffs, 8, 5, radius=2.0)
    with pytest.raises(ValueError, match=r"got \(3,\)\.$"):          # a wrong-length array gets no such hint
        mf.Density.from_coefficients(rho.coeffs, 8, radius=[1.0, 2.0, 3.0])


@pytest.mark.parametrize("make", [
    lambda f: mf.Density.from_function(f, 4),
    lambda f: mf.Density.from_function(f, 4, d=2),
    lambda f: mf.ZonalDensity.from_function(lambda t: f(t[..., None]), 4, d=5),
])
def test_from_function_names_a_function_that_returns_nan(make):
    """A function that returns NaN or inf at a node was refused as "`coeffs` must be finite", a parameter the caller
    never passed; the error names the function and where it failed."""
    def f(x):
        return np.where(x[..., -1] > 0.5, np.nan, 1.0)
    with pytest.raises(ValueError, match=r"`(f|g)` must return finite values; got nan at \d+ of \d+ quadrature"):
        make(f)
    with pytest.raises(ValueError, match=r"`radius` must return finite values; got inf"):
        mf.Density.from_function(lambda x: 1.0, 4, radius=lambda x: np.where(x[..., 2] > 0.5, np.inf, 1.0))
    with pytest.raises(ValueError, match=r"`radius` must be finite and > 0 .*; got radius=nan"):
        mf.Density.from_function(lambda x: 1.0, 4, radius=np.nan)


@pytest.mark.parametrize("coeffs, d", [(np.ones(4), 3), ([], 3), ([], 2), (np.ones((3, 1)), 3)])
def test_from_coefficients_without_lmax_names_a_count_that_is_no_band_limit(coeffs, d):
    """The band limit was rounded from the count: 4 coefficients were refused as "must have shape (3,) for lmax=1"
    and none as "`lmax` must be an integer >= 0; got lmax=-1", a band limit the caller never gave."""
    with pytest.raises(ValueError, match=r"`coeffs` must be one coefficient array of length .* for d=\d .*got shape"):
        mf.Density.from_coefficients(coeffs, d=d)
    assert mf.Density.from_coefficients(np.r_[np.sqrt(4 * np.pi), np.zeros(5)]).lmax == 2
    assert mf.Density.from_coefficients([1.0, 0.1], d=2).lmax == 1


def test_on_grid_on_the_circle_names_grid_too_coarse():
    """d = 2: a `grid` of too few angles was refused as "`n`=4 points cannot carry degree lmax=5", naming circle_synthesis'
    parameter, not on_grid's."""
    rho = mf.Density.from_function(lambda x: 2 + x[..., 0], 5, d=2)
    with pytest.raises(ValueError, match=r"`grid` must be a number of angles > 2·lmax = 10 for d=2 .*got grid=4"):
        rho.on_grid(4)
    np.testing.assert_allclose(rho.on_grid(11), 2 + np.cos(2 * np.pi * np.arange(11) / 11), rtol=0, atol=1e-15)


@pytest.mark.parametrize("call, name", [
    (lambda v: mf.Density.random(6, seed=1).evaluate(v), "points"),
    (lambda v: mf.Density.random(6, seed=1).evaluate_radius(v), "points"),
    (lambda v: mf.Density.random(6, d=2, seed=1).evaluate(np.asarray(v)[..., 1:] if np.ndim(v) else v), "points"),
    (lambda v: mf.ZonalDensity.uniform(3).evaluate(v), "points"),
    (lambda v: mf.ZonalDensity.uniform(3).evaluate_profile(np.asarray(v)[..., 2] if np.ndim(v) else v), "t"),
])
def test_evaluate_names_complex_or_non_numeric_arguments(call, name):
    """Complex points lost their imaginary parts with only numpy's ComplexWarning (a wrong value returned), and a
    string raised numpy's "could not convert string to float", naming no parameter."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=f"`{name}` must be real; got complex values"):
            call(np.array([[0.0, 0.6, 0.8 + 0.5j]]))
        with pytest.raises(ValueError, match=f"`{name}` must be numbers"):
            call("abc")
        call(np.array([[0.0, 0.6, 0.8 + 0j]]))          # a zero imaginary part is a real number



@pytest.mark.parametrize("measure", [mf.Density.random(6, seed=1), mf.ZonalDensity.uniform(3)])
def test_evaluate_refuses_boolean_points(measure):
    # [[True, False, False]] was read as the point e1, as attention_field and first_variation refuse it
    with pytest.raises(TypeError, match="`points` must be numbers; got booleans"):
        measure.evaluate([[True, False, False]])
    with pytest.raises(TypeError, match="`points` must be numbers; got booleans"):
        measure.evaluate(np.eye(3, dtype=bool))


def test_tail_fraction_names_a_bad_frac_and_gives_the_zero_field_no_tail():
    """frac = "a" raised "'<' not supported between instances of 'int' and 'str'"; the zero field returned NaN with a
    RuntimeWarning (0/0)."""
    rho = mf.Density.random(6, seed=1)
    with pytest.raises(TypeError, match=r"`frac` must be a real number in \(0, 1\); got frac='a'"):
        rho.tail_fraction("a")
    with pytest.raises(ValueError, match=r"`frac` must be a real number in \(0, 1\); got frac=nan"):
        rho.tail_fraction(np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mf.Density(np.zeros(28), 6).tail_fraction() == 0.0
    e = rho.power()
    assert rho.tail_fraction(0.5) == pytest.approx(e[4:].sum() / e.sum(), rel=1e-15)


def test_a_zonal_density_resized_is_zero_padded_or_projected():
    z = mf.ZonalDensity.from_function(lambda t: np.exp(t), 12, 5, radius=lambda t: 1 + 0.1 * t)
    up, down = z.resized(20), z.resized(3)
    t = np.linspace(-1, 1, 7)
    assert up.lmax == 20 and np.allclose(up.evaluate_profile(t), z.evaluate_profile(t), rtol=0, atol=1e-14)
    assert np.array_equal(down.coeffs, z.coeffs[:4]) and np.array_equal(down.radius, z.radius[:4])
    assert np.array_equal(up.axis, z.axis) and up.d == 5


@pytest.mark.parametrize("d, lmax", [(16, 100), (64, 40), (200, 20), (1000, 20), (1000, 100)])
def test_zonal_rounding_error_bounds_the_error_at_the_poles(d, lmax):
    # g ≡ 1 projected: the exact value is 1 everywhere, while the rounding of g_ℓ (eps·√N(d, ℓ)) reaches the poles in
    # full: measured |error| 4.5e-7, 0.014, 0.0042, 3438, 4.2e55 at t = ±1, between 0.07 and 0.96 of the estimate
    from meanfield.sphere import zonal_synthesis

    rho = mf.ZonalDensity.from_function(np.ones_like, lmax, d=d)
    poles = np.array([-1.0, 1.0])
    err = np.abs(zonal_synthesis(rho.coeffs, poles, d) - 1.0)
    est = rho.rounding_error(poles)
    assert np.all(err <= est) and np.all(est <= 20 * err)
    assert rho.rounding_error(0.0) < 2e-14 and rho.rounding_error([[0.0]]).shape == (1, 1)


def test_zonal_values_without_a_correct_digit_are_refused_and_imprecise_ones_warned():
    # exp(5t) on S^999 at L = 100 came back as 1.0 and 1.6487 at t = 0, 0.1 (right) and −4e55 at t = 1, silently
    rho = mf.ZonalDensity.from_function(lambda t: np.exp(5 * t), 100, d=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(rho.evaluate_profile([0.0, 0.1]), np.exp([0.0, 0.5]), rtol=1e-13)
        np.testing.assert_array_equal(mf.ZonalDensity.uniform(100, d=1000).evaluate_profile([-1.0, 1.0]), 1.0)
    with pytest.raises(ValueError, match=r"`t` .* at 1 of 3 arguments, \|t\| ≥ 1.*rounding_error.*d=1000 at lmax=100"):
        rho.evaluate_profile([0.0, 0.1, 1.0])
    with pytest.raises(ValueError, match="`t`"):
        rho.evaluate(np.eye(1000)[[0, 999]])         # the second point is the axis
    with pytest.warns(mf.MeanfieldWarning, match=r"rounding up to 2.4e-06 .* at t=0.3"):
        rho.evaluate_profile([0.3])                  # 10 standard deviations of t out: 5 correct digits
    with pytest.warns(mf.MeanfieldWarning, match=r"rounding up to 0.03"):
        mf.ZonalDensity.from_function(np.ones_like, 40, d=64).evaluate_profile(1.0)


def test_a_function_that_returns_none_is_named_as_such():
    # a profile or density function without `return` gave None, read as NaN: "`f` must return finite values; got
    # nan at 364 of 364 quadrature nodes", which sent the user looking for a NaN
    def forgot(x):
        x[..., 0] + 1
    with pytest.raises(ValueError, match=r"`f` must return real numbers; got None \(a function without a `return`\?\)"):
        mf.Density.from_function(forgot, 8)
    with pytest.raises(ValueError, match=r"`g` must return real numbers; got None"):
        mf.ZonalDensity.from_function(lambda t: None, 8, d=5)
    with pytest.raises(ValueError, match=r"`radius` must return real numbers; got None"):
        mf.Density.from_function(lambda x: np.ones(x.shape[:-1]), 8, radius=forgot)


def test_measures_compare_by_value_as_trajectories_do(tmp_path):
    # Density, ZonalDensity and Particles compared by identity: traj.final == mf.load(path).final was silently False
    # while traj == mf.load(path) was True (and an array field made the generated == raise)
    rho = mf.Density.random(8, seed=1)
    assert rho == mf.Density(rho.coeffs.copy(), rho.lmax) and rho != mf.Density.random(8, seed=2)
    zonal = mf.ZonalDensity.from_function(lambda t: np.exp(t), 6, d=5)
    assert zonal == mf.ZonalDensity(zonal.coeffs.copy(), 6, 5) and zonal != mf.ZonalDensity.from_function(
        lambda t: np.exp(t), 6, d=5, axis=[1.0, 0, 0, 0, 0])
    p = mf.Particles.uniform(6, seed=0, radii=np.linspace(1, 2, 6))
    projected = mf.Particles(2.0 * p.positions, radii=p.radii, normalize=True)
    kept = mf.Particles(projected.positions, radii=p.radii)        # the same tokens, built without normalize
    assert projected == kept and p == mf.Particles(p.positions.copy(), radii=p.radii.copy())
    assert p != mf.Particles(p.positions, radii=None) and p != rho and rho != "rho"
    for m in (rho, zonal, p):
        with pytest.raises(TypeError, match="unhashable"):
            hash(m)
    traj = mf.simulate(mf.Model(2.0), mf.Particles.uniform(6, seed=0), 0.2, backend="particles", save_every=0.1)
    loaded = mf.load(mf.save(traj, tmp_path / "run.h5"))
    assert loaded.final == traj.final and loaded.states[1] == traj.states[1] and loaded.states[0] != traj.final


@pytest.mark.parametrize("d, lmax", [(3, 6), (3, 8), (3, 12), (3, 16), (3, 23), (3, 24), (2, 9), (2, 12), (2, 24),
                                     (2, 40)])
def test_random_density_defaults_start_resolved_by_the_spectral_monitor(d, lmax):
    """Density.random's default degree 4 put 31 of the draws of seeds 0-50 at lmax = 12 (all 51 at lmax = 8) beyond
    the spectral backend's default tail_tol = 1e-4 (tail up to 0.025): a run of the defaults stopped at t = 0.  The
    default degree (lmax // 6 on S², lmax // 10 on S¹, in [1, 4]) keeps every such draw below tail_warn = 1e-6
    (measured: at most 8.2e-7 on S², 4.2e-7 on S¹, for every lmax up to 64) and positive on the grid."""
    from meanfield.backends._spectral import _OPTIONS

    for seed in range(0, 51, 5):
        rho = mf.Density.random(lmax, d=d, seed=seed)
        assert rho.tail_fraction() <= _OPTIONS["tail_warn"] <= _OPTIONS["tail_tol"]
        assert rho.on_grid().min() > 0


@pytest.mark.parametrize("d", [1, 0, -3])
def test_density_constructors_name_the_two_dimensions_for_any_other_integer(d):
    # d = 1 was told "`d` must be an integer >= 2" (the range of a ZonalDensity), and d = 4 "2 or 3"
    for make in (lambda: mf.Density.random(8, d=d), lambda: mf.Density.uniform(8, d=d),
                 lambda: mf.Density.from_function(lambda x: 1.0, 8, d=d)):
        with pytest.raises(ValueError, match=rf"^`d` must be 2 or 3 for a Density .*got d={d}\.$"):
            make()


def test_a_zonal_density_has_the_power_and_tail_fraction_of_the_monitor():
    """A Density had power() and tail_fraction(), a ZonalDensity neither: its tail against the solver's tail_tol could
    not be checked before a run.  Σ_ℓ E_ℓ = ∫ρ² dσ (quadrature on S⁴, where t = ⟨x, e⟩ has density ∝ 1 − t²), and
    tail_fraction() is the run's diagnostic at t = 0."""
    from scipy.integrate import quad
    z = mf.ZonalDensity.from_function(lambda t: np.exp(3 * t), 12, d=5, normalize=True)
    square = quad(lambda t: z.evaluate_profile(t) ** 2 * (1 - t * t), -1, 1, epsabs=0, epsrel=1e-13)[0]
    assert z.power().sum() == pytest.approx(square / (4 / 3), rel=1e-12)
    assert mf.ZonalDensity.uniform(6, d=5).power()[0] == 1.0 and mf.ZonalDensity.uniform(6, d=5).tail_fraction() == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(1.0, d=5), z, 0.01)
    assert z.tail_fraction() == pytest.approx(tr.diagnostics["tail_fraction"][0], rel=1e-12)
    with pytest.raises(ValueError, match=r"`frac` must be a real number in \(0, 1\); got frac=1"):
        z.tail_fraction(1)


def test_pyshtools_objects_given_as_coefficients_say_how_to_convert_them():
    """Density.from_coefficients(clm) of a pyshtools SHCoeffs said "`coeffs` must be numbers" and printed the
    object; its .coeffs array (2, L+1, L+1) "must be one coefficient array of length (L + 1)(L + 2)/2"; a grid the
    same.  Each names meanfield.sphere.from_shcoeffs, and the documented route gives the projection of the function
    (a pyshtools '4pi' expansion of e^{2z + x} at L = 16 against Density.from_function: equal to 1e-13)."""
    pysh = pytest.importorskip("pyshtools")
    L = 16

    def f(x):
        return np.exp(2 * x[..., 2] + x[..., 0])
    grid = pysh.SHGrid.from_zeros(L, kind="real")
    lat, lon = np.meshgrid(np.deg2rad(grid.lats()), np.deg2rad(grid.lons()), indexing="ij")
    grid.data[:] = f(np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1))
    clm = grid.expand(normalization="4pi", lmax_calc=L)
    alm, lmax = mf.sphere.from_shcoeffs(clm)
    assert np.abs(mf.Density.from_coefficients(alm, lmax).coeffs - mf.Density.from_function(f, L).coeffs).max() < 1e-13
    for bad, error in ((clm, TypeError), (clm.coeffs, ValueError), (grid, TypeError)):
        with pytest.raises(error, match=r"meanfield\.sphere\.from_shcoeffs\(clm\)"):
            mf.Density.from_coefficients(bad)
    with pytest.raises(TypeError, match=r"got a pyshtools SHRealCoeffs: convert it"):
        mf.Density(clm, L)
