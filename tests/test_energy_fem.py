"""meanfield._energy._fem: the icosahedral mesh, basix P1/P2 spaces with exact-projection geometry."""
import numpy as np
import pytest

import meanfield as mf
from meanfield._energy import FEDensity, FESpace, SphereMesh


def smooth(x):
    return 1 + 0.3 * x[..., 0] + 0.2 * x[..., 1] * x[..., 2]


@pytest.mark.parametrize("level", [0, 1, 3])
def test_mesh_counts_and_orientation(level):
    m = SphereMesh.icosahedral(level)
    assert len(m.vertices) == 10 * 4 ** level + 2 and len(m.triangles) == 20 * 4 ** level
    assert np.linalg.norm(m.vertices, axis=1) == pytest.approx(1.0, abs=1e-15)
    a, b, c = (m.vertices[m.triangles[:, i]] for i in range(3))
    assert np.all(np.einsum("ij,ij->i", np.cross(b - a, c - a), a + b + c) > 0)   # outward


@pytest.mark.parametrize("degree", [1, 2])
def test_quadrature_measure_has_unit_mass_to_quadrature_order(degree):
    """Exact Jacobian: the only error of ∫1 dσ is the rule's, O(h^{q+1}) or better."""
    errs = [abs(FESpace(SphereMesh.icosahedral(k), degree).weights.sum() - 1) for k in (1, 2, 3)]
    q = 2 * degree + 2
    assert np.log2(errs[1] / errs[2]) > q + 1 - 0.2


@pytest.mark.parametrize("degree,order", [(1, 2), (2, 3)])
def test_interpolation_order(degree, order):
    pts = mf.Particles.uniform(3000, 3, seed=2).positions
    errs, hs = [], []
    for k in (1, 2, 3):
        s = FESpace(SphereMesh.icosahedral(k), degree)
        errs.append(np.max(np.abs(FEDensity(s, s.interpolate(smooth)).evaluate(pts) - smooth(pts))))
        hs.append(s.mesh.h)
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert order - 0.3 < slope < order + 0.5, slope


def test_evaluate_reproduces_nodal_values_and_locates_every_point():
    s = FESpace(SphereMesh.icosahedral(2), 2)
    f = FEDensity(s, s.interpolate(smooth))
    assert f.evaluate(s.nodes) == pytest.approx(smooth(s.nodes), abs=1e-13)
    tri, xi = s.locate(mf.Particles.uniform(500, 3, seed=1).positions)
    assert np.all(xi >= 0) and np.all(xi.sum(axis=1) <= 1 + 1e-12)


@pytest.mark.parametrize("D", [np.eye(3), 0.7 * np.eye(3), np.diag([1.0, 0.5, -0.3]),
                               np.array([[1.0, 0.2, 0.0], [0.2, 0.7, 0.1], [0.0, 0.1, 0.4]])])
def test_kernel_matrix_spectral_equals_direct(D):
    """K = A G Aᵀ through the truncated kernel (tail ≤ 1e-15 λ_0) equals the product quadrature."""
    s = FESpace(SphereMesh.icosahedral(2), 1)
    K1, s1 = s.kernel_matrix(1.3, D, "spectral")
    K2, s2 = s.kernel_matrix(1.3, D, "direct")
    assert s1 == s2
    assert np.max(np.abs(K1 - K2)) < 1e-13 * np.max(np.abs(K2))


def test_fe_energy_paths_agree_and_to_density():
    s = FESpace(SphereMesh.icosahedral(3), 1)
    f = FEDensity(s, s.interpolate(smooth))
    D = np.diag([1.0, 0.5, -0.2])
    e1 = mf.energy_estimate(f, 1.3, D, method="quadrature").value
    assert s.energy(f.values, 1.3, D) == pytest.approx(e1, rel=1e-14)
    rho = f.to_density(6)
    assert rho.mass() == pytest.approx(f.mass(), rel=1e-14)
    assert mf.energy(rho, 1.3) == pytest.approx(mf.energy(f, 1.3), rel=1e-12)   # degree ≤ 6 carries E to 1e-12


def test_bad_inputs():
    with pytest.raises(ValueError, match="`level`"):
        SphereMesh.icosahedral(9)
    with pytest.raises(TypeError, match="`level`"):
        SphereMesh.icosahedral(1.5)
    m = SphereMesh.icosahedral(0)
    with pytest.raises(ValueError, match="`degree`"):
        FESpace(m, 3)
    with pytest.raises(ValueError, match="`quadrature_degree`"):
        FESpace(m, 1, 0)
    with pytest.raises(ValueError, match="`quadrature_degree`"):
        FESpace(m, 1, 40)
    with pytest.raises(TypeError, match="`mesh`"):
        FESpace("icosahedron")
    s = FESpace(m, 1)
    with pytest.raises(ValueError, match="`values`"):
        FEDensity(s, np.ones(5))
    with pytest.raises(ValueError, match="`values`"):
        FEDensity(s, np.full(12, np.nan))
    with pytest.raises(TypeError, match="`space`"):
        FEDensity(m, np.ones(12))
    with pytest.raises(ValueError, match="`points`"):
        FEDensity(s, np.ones(12)).evaluate(np.ones((3, 2)))
    with pytest.raises(ValueError, match="`method`"):
        s.kernel_matrix(1.0, np.eye(3), "fast")
    with pytest.raises(ValueError, match="`lmax`"):
        FEDensity(s, np.ones(12)).to_density(-1)
    with pytest.raises(ValueError, match="`method`"):
        mf.energy(FEDensity(s, np.ones(12)), 1.0, method="exact")
    with pytest.raises(ValueError, match="`method`"):
        mf.energy(FEDensity(s, np.ones(12)), 1.0, method="pairs")


def test_mesh_built_by_hand_is_checked():
    """A mesh of one's own was used as given: a degenerate triangle made the quadrature weights NaN, a clockwise
    one negative, a missing one left a mass below 1, and bad indices raised numpy's IndexError in FESpace."""
    m = SphereMesh.icosahedral(1)
    v, f = np.array(m.vertices), np.array(m.triangles)
    same = SphereMesh(v.tolist(), f.tolist(), 1)                  # lists are fine, and the result is the same
    assert FESpace(same, 1).weights.sum() == pytest.approx(FESpace(m, 1).weights.sum(), abs=1e-15)
    cases = {
        "unit vectors": (2 * v, f),
        "shape \\(nv, 3\\)": (v[:, :2], f),
        "vertex indices": (v, np.where(f == 0, len(v), f)),
        "integer array": (v, f.astype(float)),
        "counter-clockwise": (v, np.concatenate([f[:1, ::-1], f[1:]])),
        "non-degenerate": (v, np.concatenate([[[0, 0, 1]], f[1:]])),
        "closed": (v, f[1:]),                                       # a hole
        "closed, consistently": (v, np.concatenate([f, f[:1]])),    # a triangle twice
    }
    for match, (vv, ff) in cases.items():
        with pytest.raises(ValueError, match=match):
            SphereMesh(vv, ff, 1)
    with pytest.raises(ValueError, match="`vertices` must be finite"):
        SphereMesh(np.where(v == v[0, 0], np.nan, v), f, 1)
    with pytest.raises(TypeError, match="`triangles`"):
        SphereMesh(v, f.astype(bool), 1)
    with pytest.raises(ValueError, match="`level`"):
        SphereMesh(v, f, -1)
    # two covers of S² (every triangle of the octahedron twice, on two vertex copies) is closed but not a tiling
    o = np.array([[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1.0]])
    t = np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4], [1, 0, 5], [2, 1, 5], [3, 2, 5], [0, 3, 5]])
    assert FESpace(SphereMesh(o, t, 0), 1).weights.sum() == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ValueError, match="tile S² once"):
        SphereMesh(np.vstack([o, o]), np.vstack([t, t + 6]), 0)


def test_an_fe_density_on_a_mesh_of_ones_own_round_trips(tmp_path):
    """The file kept only the mesh's `level` and rebuilt the icosahedral mesh on reading: an FE density on a rotated
    icosahedron (same level, same number of nodes) came back on the unrotated one, a different density."""
    from scipy.spatial.transform import Rotation

    ico = SphereMesh.icosahedral(1)
    turned = SphereMesh(ico.vertices @ Rotation.from_euler("xyz", [0.3, 0.2, 0.1]).as_matrix().T, ico.triangles, 1)
    space = FESpace(turned, 1)
    rho = FEDensity(space, space.interpolate(smooth))
    D = np.diag([0.6, 1.0, 1.4])
    path = mf.save(mf.EnergyResult("minimize", 1.0, D, 3, rho, {}), tmp_path / "fe.h5")
    back = mf.load(path).solution
    np.testing.assert_array_equal(back.space.mesh.vertices, turned.vertices)
    assert mf.energy(back, 1.0, D) == mf.energy(rho, 1.0, D)


def test_kernel_matrix_and_energy_check_beta_and_D():
    """FESpace.kernel_matrix and FESpace.energy took β and D unchecked: D as a list raised AttributeError ('list'
    object has no attribute 'size'), β = '1' a TypeError from numpy, β = -1 or NaN gave a matrix of garbage."""
    s = FESpace(SphereMesh.icosahedral(1), 1)
    rho = s.interpolate(smooth)
    D = np.diag([0.6, 1.0, 1.4])
    K, shift = s.kernel_matrix(1.0, [0.6, 1.0, 1.4])                  # a diagonal, as everywhere else
    np.testing.assert_array_equal(K, s.kernel_matrix(1.0, D)[0])
    assert s.energy(list(rho), 1.0, [0.6, 1.0, 1.4]) == s.energy(rho, 1.0, D)
    for f in (s.kernel_matrix, lambda b, DD: s.energy(rho, b, DD)):
        with pytest.raises(TypeError, match="`beta`"):
            f("1", D)
        for bad in (-1.0, float("nan")):
            with pytest.raises(ValueError, match="`beta`"):
                f(bad, D)
        with pytest.raises(ValueError, match="`D`"):
            f(1.0, np.eye(2))
    with pytest.raises(ValueError, match="`values`"):
        s.energy(rho[:-1], 1.0, D)


def test_evaluate_checks_points_as_density_evaluate():
    """A zero vector gave NaN (with numpy's "invalid value" warning) and a NaN scipy's "'x' must be finite"; now
    the errors of Density.evaluate, which name `points`; other lengths are directions, as there."""
    s = FESpace(SphereMesh.icosahedral(1), 1)
    rho = FEDensity(s, s.interpolate(smooth))
    x = np.array([0.3, -0.4, 0.5])
    assert rho.evaluate(2 * x) == rho.evaluate(x / np.linalg.norm(x))
    assert rho.evaluate([[0.0, 0.0, 1.0]]).shape == (1,) and rho.evaluate(np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match="`points` contains a zero vector"):
        rho.evaluate([[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="`points` must be finite"):
        rho.evaluate([[0.0, 0.0, np.nan]])
    with pytest.raises(ValueError, match="`points` must have shape"):
        rho.evaluate([[0.0, 1.0]])


@pytest.mark.parametrize("degree, q", [(1, 1), (2, 1), (2, 2), (2, 3)])
def test_a_rule_too_weak_for_the_mass_matrix_is_refused(degree, q):
    """The mass matrix integrates products of two basis functions (degree 2·degree).  A weaker rule made it singular
    (P2 with q ≤ 3: minimize_energy raised ConvergenceError advising a larger `regularization`, or at q = 3 returned
    nodal values up to 38 where they lie in 0.05–6.6) or far from the Gram matrix (P1 with q = 1: condition 112, not 4)."""
    m = SphereMesh.icosahedral(1)
    with pytest.raises(ValueError, match=rf"`quadrature_degree` must be an integer in \[{2 * degree}, 30\]"):
        FESpace(m, degree, q)
    with pytest.raises(ValueError, match=rf"`quadrature_degree` must be an integer in \[{2 * degree}, 30\]"):
        mf.minimize_energy(1.0, [0.6, 1.0, 1.4], level=1, degree=degree, quadrature_degree=q)
    ok = FESpace(m, degree, 2 * degree)                          # the weakest accepted rule: a Gram matrix
    assert np.linalg.eigvalsh(ok.mass_matrix.toarray())[0] > 0.1 * np.max(ok.mass)


def test_fe_space_energy_and_kernel_matrix_default_to_the_identity():
    """FESpace.energy and kernel_matrix documented D "None: identity" (as mf.energy) but required it: energy(values, β)
    raised TypeError (missing argument 'D').  With D omitted they are those of D = I."""
    s = FESpace(SphereMesh.icosahedral(1), 1)
    ones = np.ones(s.ndof)
    assert s.energy(ones, 2.0) == s.energy(ones, 2.0, np.eye(3))
    K, shift = s.kernel_matrix(2.0)
    K_identity, shift_identity = s.kernel_matrix(2.0, np.eye(3))
    np.testing.assert_array_equal(K, K_identity)
    assert shift == shift_identity


@pytest.mark.parametrize("values, error, match", [
    (np.full(12, 1 + 1j), ValueError, "`values` must be real; got complex values"),
    (np.ones(12, dtype=bool), TypeError, "`values` must be numbers; got booleans"),
    (["1"] * 12, ValueError, r"`values` must be numbers \(an array of real values\)"),
])
def test_fe_density_refuses_values_that_are_not_real_numbers(values, error, match):
    """FEDensity kept the real part of complex nodal values with only numpy's ComplexWarning, and read booleans and
    numeric text as numbers."""
    with pytest.raises(error, match=match):
        FEDensity(FESpace(SphereMesh.icosahedral(0), 1), values)


@pytest.mark.parametrize("f, match", [
    (lambda x: np.ones(3), r"`f` must return one value per point: shape \(12,\)"),
    (lambda x: np.full(x.shape[:-1], np.nan), "`f` must return finite values; got nan at 12 of 12 nodes"),
    (lambda x: 1j * x[..., 0], "`f` must return real values"),
])
def test_fe_interpolate_names_a_bad_function(f, match):
    """FESpace.interpolate raised numpy's "cannot reshape array of size 3 into shape (12,)" for a function that
    does not return one value per node, and returned NaN (or dropped imaginary parts) without a word, where
    Density.from_function names `f`."""
    with pytest.raises(ValueError, match=match):
        FESpace(SphereMesh.icosahedral(0), 1).interpolate(f)


@pytest.mark.parametrize("method", ["pairs", "spectral"])
def test_an_fe_density_is_offered_only_the_methods_it_takes(method):
    """method='pairs' on an FEDensity said "densities take 'auto', 'exact' or 'quadrature'", and 'exact' then
    raised "not available for an FE density"."""
    rho = FEDensity(FESpace(SphereMesh.icosahedral(0), 1), np.ones(12))
    with pytest.raises(ValueError, match=r"FE densities take 'auto' or 'quadrature'\.$"):
        mf.energy(rho, 1.0, method=method)


def test_the_fe_conversion_hint_names_a_way_to_particles_that_works():
    """Particles.from_density(FEDensity) pointed only to `.to_density(lmax)`, whose band-limited interpolant of the
    S² minimizer (β = 2, D = diag(0.6, 1, 1.4), level 2) rings to −0.037 and cannot be sampled.  The hint now also
    names the quadrature nodes as weighted particles (weights ≥ 0 for nonnegative P1 values), whose pair-sum energy is
    the FE density's own (the quadrature that mf.energy uses for it)."""
    D = [0.6, 1.0, 1.4]
    fe = mf.minimize_energy(2.0, D, level=2)
    with pytest.raises(TypeError, match=r"Particles\(\*rho\.atoms\(\), normalize=True\)"):
        mf.Particles.from_density(fe, 100, seed=0)
    particles = mf.Particles(*fe.atoms(), normalize=True)
    assert mf.energy(particles, 2.0, D) == pytest.approx(fe.value, rel=1e-14)


@pytest.mark.parametrize("degree, beta", [(1, 1.0), (1, 8.0), (2, 1.0), (2, 8.0)])
def test_fe_energy_error_bound_contains_the_uniform_closed_form_error_at_the_rules_order(degree, beta):
    """The FE energy's error bound was NaN.  ρ_h = 1 is exact in the space and E = sinh β/(2β²) (D = I): the bound,
    twice the difference from the rule of degree q + 8, contains the quadrature's error, at about twice it, and
    falls as h^{q+2} (measured: bound/error = 2.00; 2^5.9–2^6.0 per level for P1's q = 4, 2^6.8–2^7.9 for P2's q = 6
    from level 0, whose cells are pre-asymptotic at β = 8)."""
    exact = np.sinh(beta) / (2 * beta ** 2)
    levels = (1, 2, 3) if degree == 1 else (0, 1, 2)
    bounds = []
    for level in levels:
        s = FESpace(SphereMesh.icosahedral(level), degree)
        est = mf.energy_estimate(FEDensity(s, np.ones(s.ndof)), beta)
        err = abs(est.value - exact)
        assert err <= est.error_bound <= 2.5 * err, (level, err, est.error_bound)
        bounds.append(est.error_bound)
    q = 2 * degree + 2
    orders = np.log2(np.array(bounds[:-1]) / bounds[1:])
    assert orders[0] > q and abs(orders[-1] - (q + 2)) < 0.5, orders        # level 0 → 1 is pre-asymptotic


def _nested_reference(rho, beta, D):
    """E(ρ_h) independently of ρ_h's own rule: the level + 1 mesh (whose curved cells tile each cell of ρ_h's mesh)
    with a degree-12 rule, ρ_h evaluated by point location, and the direct pair sum (error ~(h/2)^14)."""
    from meanfield._energy._kernel import pair_energy

    fine = FESpace(SphereMesh.icosahedral(rho.space.mesh.level + 1), 1, 12)
    return pair_energy(fine.points, fine.weights * rho.evaluate(fine.points), beta, np.asarray(D, float))


@pytest.mark.parametrize("D", [np.diag([0.6, 1.0, 1.4]), np.diag([1.0, 0.5, -0.8])], ids=["definite", "indefinite"])
@pytest.mark.parametrize("degree", [1, 2])
@pytest.mark.parametrize("f", [smooth, lambda x: np.exp(10 * (x[..., 2] - 1)) + 0.05], ids=["smooth", "peaked"])
def test_fe_energy_error_bound_contains_the_error_against_a_nested_reference(f, degree, D):
    """For non-uniform ρ_h and D ≠ c·I, on both evaluation paths (the direct pair sum and the truncated kernel), the
    bound contains |E_q − E| against an independent reference, at 1.5–2.5 times it (the errors are 1e-6 to 1e-3)."""
    s = FESpace(SphereMesh.icosahedral(1), degree)
    rho = FEDensity(s, s.interpolate(f))
    reference = _nested_reference(rho, 3.0, D)
    from meanfield._energy._fem import fe_energy_estimate
    for direct in (True, False):
        value, bound = fe_energy_estimate(rho, 3.0, D, direct)
        err = abs(value - reference)
        assert 1.5 * err <= bound <= 2.5 * err, (direct, err, bound)
    est = mf.energy_estimate(rho, 3.0, D)
    assert (est.value, est.error_bound) == fe_energy_estimate(rho, 3.0, D, True)


def test_an_fe_energy_the_mesh_does_not_resolve_is_warned_about():
    """At β = 300 the kernel's width 0.06 is far below the level-0 cells (h = 1.05): the quadrature's error exceeds
    the value, and the estimate says so."""
    s = FESpace(SphereMesh.icosahedral(0), 1)
    with pytest.warns(mf.MeanfieldWarning, match="does not resolve the kernel.*Refine the mesh"):
        est = mf.energy_estimate(FEDensity(s, np.ones(s.ndof)), 300.0)
    assert abs(est.value - np.sinh(300.0) / (2 * 300.0 ** 2)) <= est.error_bound


def test_fe_space_energy_by_the_nufft_moments_equals_the_harmonics_table():
    """FESpace.energy tabulated every harmonic at every node (23 s at level 5); the NUFFT moments give the same."""
    from meanfield._energy._fem import kernel_coefficients, real_harmonics

    s = FESpace(SphereMesh.icosahedral(2), 2)
    values = s.interpolate(smooth)
    D = np.diag([0.6, 1.0, 1.4])
    G, shift = kernel_coefficients(1.3, D, 17)
    u = real_harmonics(17, s.points).T @ (s.weights * (s.basis @ values))
    assert s.energy(values, 1.3, D) == pytest.approx(float(u @ G @ u) * np.exp(shift) / 2.6, rel=1e-14)


def test_locate_takes_directions_and_names_bad_points():
    """FESpace.locate returned ξ = NaN for a zero vector, scipy's "'x' must be finite" for NaN, numpy's reshape error
    for a single point of shape (3,) and an IndexError for a vector of norm 1e300.  Like FEDensity.evaluate it now
    takes any nonzero finite vector as its direction (normalized here) and names `points` otherwise."""
    s = FESpace(SphereMesh.icosahedral(1), 1)
    x = mf.Particles.uniform(50, 3, seed=3).positions
    tri, xi = s.locate(x)
    for scaled in (2 * x, 1e300 * x, 1e-300 * x):
        tri2, xi2 = s.locate(scaled)
        np.testing.assert_array_equal(tri2, tri)
        np.testing.assert_allclose(xi2, xi, atol=1e-14)
    assert [a.shape for a in s.locate(np.zeros((0, 3)))] == [(0,), (0, 2)]
    for bad, match in [([[0.0, 0.0, 0.0]], "`points` contains a zero vector"),
                       ([[0.0, 0.0, np.nan]], "`points` must be finite"),
                       ([0.0, 0.0, 1.0], r"`points` must have shape \(m, 3\)"),
                       ([[1.0, 2.0]], r"`points` must have shape \(\.\.\., 3\)")]:
        with pytest.raises(ValueError, match=match):
            s.locate(bad)


def test_numerics_page_fe_section_prints_what_it_quotes(capsys):
    """docs/numerics.md ("Finite elements on S²") quotes the minimizer's energy with its error estimate."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "numerics.md").read_text(encoding="utf-8")
    section = text.split("## Finite elements on $S^2$", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(compile(code, "numerics.md", "exec"), namespace)
    expected = [line.split("# → ", 1)[1].strip() for line in code.splitlines() if "# → " in line]
    assert capsys.readouterr().out.splitlines() == expected
    from meanfield._energy._fem import _reference_rule                # the mass defect the page names
    fe = namespace["fe"]
    exact_mass = fe.space._rule_atoms(fe.values, *_reference_rule(fe.space.quadrature_degree))[1].sum()
    assert fe.mass() == pytest.approx(1.0, abs=1e-14) and 1 - exact_mass == pytest.approx(4.3e-9, abs=0.05e-9)
    assert "1 - 4.3\\cdot10^{-9}" in section


def test_harmonic_moments_and_kernel_factor_check_their_arguments():
    """harmonic_moments(−1) returned an empty table and (1.5) numpy's casting error; kernel_factor took D as a list to
    AttributeError ('list' object has no attribute 'size') and β = −1 to the factors of another kernel;
    kernel_matrix read variation="yes" by its truth value.  Now each names its parameter."""
    s = FESpace(SphereMesh.icosahedral(1), 1)
    for bad, error in [(-1, ValueError), (1.5, TypeError)]:
        with pytest.raises(error, match="`lmax`"):
            s.harmonic_moments(bad)
    A, G, shift = s.kernel_factor(1.0, [0.6, 1.0, 1.4], 3)                   # a diagonal, as in kernel_matrix
    A2, G2, shift2 = s.kernel_factor(1.0, np.diag([0.6, 1.0, 1.4]), 3)
    np.testing.assert_array_equal(G, G2)
    with pytest.raises(ValueError, match="`beta`"):
        s.kernel_factor(-1.0, np.eye(3), 3)
    with pytest.raises(ValueError, match="`lmax`"):
        s.kernel_factor(1.0, np.eye(3), -1)
    with pytest.raises(TypeError, match="`variation`"):
        s.kernel_factor(1.0, np.eye(3), 3, variation="yes")
    with pytest.raises(TypeError, match="`variation`"):
        s.kernel_matrix(1.0, None, "auto", "yes")


@pytest.mark.parametrize("q", [16, 24, 30])
def test_fe_energy_error_bound_of_rules_whose_reference_is_composite(q):
    """For q > 22 the reference rule (degree q + 8 > 30, basix's largest) is the degree-30 rule on the four
    half-size subtriangles: still a rule of the reference triangle (weights sum to ½) and the bound still contains
    the error of ρ_h = 1 against sinh β/(2β²) (2.1e-8 at q = 16; at q = 24 and 30 the rounding, ~1e-11 of E)."""
    from meanfield._energy._fem import _reference_rule

    xi, w = _reference_rule(q)
    assert w.sum() == pytest.approx(0.5, abs=1e-15) and np.all(xi >= 0) and np.all(xi.sum(axis=1) <= 1)
    s = FESpace(SphereMesh.icosahedral(0), 1, q)
    est = mf.energy_estimate(FEDensity(s, np.ones(s.ndof)), 8.0)
    err = abs(est.value - np.sinh(8.0) / 128)
    assert err <= est.error_bound <= max(2.5 * err, 1e-11 * est.value)


def _product_rule_coefficients(beta, D, lmax, extra, variation=False):
    """G_ab by the Gauss–Legendre product rule in both variables, exact to degree 2(lmax + extra) + 3 in each (the
    former kernel_coefficients at extra = 0; with extra = 40 the reference of the tests below)."""
    from meanfield._energy._fem import real_harmonics
    from meanfield._energy._kernel import scaled_kernel, spectral_norm

    shift = beta * spectral_norm(D)
    grid = mf.sphere.SphereGrid(lmax + 2 + extra, 2 * (lmax + 2 + extra))
    x = grid.points.reshape(-1, 3)
    Y = real_harmonics(lmax, x) * (grid.weights.ravel() / (4 * np.pi))[:, None]
    G = Y.T @ scaled_kernel(beta * (x @ D) @ x.T, shift, variation) @ Y
    return 0.5 * (G + G.T)


_GENERAL_D = {"symmetric": [[0.6, 0.1, 0.0], [0.1, 1.0, 0.2], [0.0, 0.2, 1.4]],
              "non-symmetric": [[0.6, 0.5, 0.0], [-0.2, 1.0, 0.3], [0.1, 0.2, 1.4]],
              "singular": [[1.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.0]],
              "rank one": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.3, 0.0, 1.0]]}


@pytest.mark.parametrize("name", sorted(_GENERAL_D))
@pytest.mark.parametrize("beta, lmax", [(1.0, 10), (1e-3, 6), (10.0, 4)])
def test_kernel_coefficients_by_funk_hecke_match_a_fine_product_rule(name, beta, lmax):
    """G_ab with y exact by Funk–Hecke (∫ e^{⟨z,y⟩} Y_b dσ = λ_ℓ(|z|) Y_b(z/|z|), z = βDᵀx) and one x-rule exact to
    degree L + L_k.  Against the product rule 40 degrees finer: measured ≤ 2e-15·max|G| (here and for β‖D‖₂ up to
    100), the former rule (exact to 2L + 3 in each variable) 2e-14 at β = 1, L = 10 and 0.12 at β = 10, L = 4, below
    the kernel's band limit, where the new rule is still exact to rounding.  The singular D's (z = 0 on a great
    circle, or on the rule's equator ring for the rank-one D) and the variation (G_00 lowered by e^{−shift}, without
    cancellation at β = 1e-3, where G_00 is 3e-7) included."""
    from meanfield._energy._fem import kernel_coefficients

    D = np.array(_GENERAL_D[name])
    for variation in (False, True):
        G, shift = kernel_coefficients(beta, D, lmax, variation)
        reference = _product_rule_coefficients(beta, D, lmax, 40, variation)
        np.testing.assert_allclose(G, reference, rtol=0, atol=1e-14 * np.max(np.abs(reference)))
        assert G[0, 0] == pytest.approx(reference[0, 0], rel=1e-13)
    # the former rule: right at β = 1e-3, off below the band limit at β = 10 (0.12 for the symmetric D)
    former_error = np.max(np.abs(_product_rule_coefficients(beta, D, lmax, 0, True) - reference))
    if beta != 1.0:
        assert (former_error <= 1e-14 * np.max(np.abs(reference))) == (beta < 1.0)


def test_kernel_coefficients_of_a_non_symmetric_d_are_the_symmetrized_kernels():
    """For a non-symmetric D, G is ½(G_D + G_Dᵀ), the kernel ½(e^{β⟨x,Dy⟩} + e^{β⟨x,Dᵀy⟩}) that ∬ρρK sees: the same
    for D and Dᵀ, not that of the symmetric part ½(D + Dᵀ) (the energies differ by 4e-3 of themselves here)."""
    from meanfield._energy._fem import kernel_coefficients

    D = np.array(_GENERAL_D["non-symmetric"])
    G, shift = kernel_coefficients(2.0, D, 12)
    Gt, shift_t = kernel_coefficients(2.0, D.T, 12)
    Gs, shift_s = kernel_coefficients(2.0, 0.5 * (D + D.T), 12)
    np.testing.assert_allclose(G, Gt, rtol=0, atol=1e-15 * np.max(np.abs(G)))
    np.testing.assert_array_equal(G, G.T)
    u = np.eye(len(G))[0] + 0.3 * np.eye(len(G))[2]
    assert abs(u @ G @ u * np.exp(shift) / (u @ Gs @ u * np.exp(shift_s)) - 1) > 1e-3


@pytest.mark.parametrize("c", [1.7, -2.5])
def test_general_kernel_coefficients_of_d_equal_c_identity_are_the_funk_hecke_multipliers(c):
    """Through the general path (not the isotropic shortcut), D = c·I gives diag(e^{−|c|β} λ_ℓ(cβ)) (λ_ℓ(−b) =
    (−1)^ℓ λ_ℓ(b)) to rounding, and its radial multipliers (vectorized over the radii) are funk_hecke's."""
    from meanfield._energy._fem import _general_coefficients, _isotropic_multipliers, _radial_multipliers
    from meanfield._energy._kernel import scaled_mean_variation_s2
    from meanfield.sphere import funk_hecke

    beta, lmax = 3.0, 14
    ell = np.repeat(np.arange(lmax + 1), 2 * np.arange(lmax + 1) + 1)
    for variation in (False, True):
        G = _general_coefficients(beta, c * np.eye(3), lmax, abs(c) * beta, variation)
        expected = np.diag(_isotropic_multipliers(beta * c, lmax, variation)[ell])
        np.testing.assert_allclose(G, expected, rtol=0, atol=2e-15)
    r = np.array([0.0, 1e-300, 1e-8, 0.3, 1.0, 4.0, 6.0])
    lam = _radial_multipliers(r, 30, 6.0, False)
    lam_var = _radial_multipliers(r, 30, 6.0, True)
    for i, ri in enumerate(r):
        expected = funk_hecke(ri, 30, 3, scaled=True) * np.exp(ri - 6.0)
        np.testing.assert_allclose(lam[i], expected, rtol=2e-13, atol=1e-300)
        assert lam_var[i, 0] == pytest.approx(scaled_mean_variation_s2(ri) * np.exp(ri - 6.0), rel=1e-14, abs=0)
        np.testing.assert_array_equal(lam_var[i, 1:], lam[i, 1:])


def test_kernel_coefficients_at_a_tiny_beta_keep_the_degree_one_block():
    """At β = 1e-200 the degree-1 block, e^{−shift} λ_1 ~ β/3, must scale with β: |βDᵀx| squared underflowed to 0 (the
    block was 0), and ive's I_{3/2}(r) ~ r^{3/2} underflowed before √(π/2r) scaled it back.  Odd ℓ_a + ℓ_b vanish
    exactly (the kernel is even under (x, y) → (−x, −y))."""
    from meanfield._energy._fem import kernel_coefficients

    D = np.array(_GENERAL_D["symmetric"])
    G_small, _ = kernel_coefficients(1e-200, D, 2, True)
    G_ref, _ = kernel_coefficients(1e-100, D, 2, True)
    block = G_ref[1:4, 1:4] / 1e-100
    np.testing.assert_allclose(G_small[1:4, 1:4] / 1e-200, block, rtol=0, atol=1e-14 * np.max(np.abs(block)))
    assert np.max(np.abs(G_ref[1:4, 1:4])) > 1e-101
    assert not np.any(G_small[0, 1:4]) and not np.any(G_small[1:4, 4:])



def _dense_coefficients(beta, D, lmax, variation, dtype):
    """The former general-D kernel_coefficients: the tables Y (harmonics) and F (:func:`_transformed_harmonics`) on
    the whole x-grid, G = Yᵀ diag(w) F summed in ``dtype`` (np.longdouble: the exact sum of the rounded products to
    ~1e-19)."""
    from meanfield._energy._fem import _coefficient_grid, _transformed_harmonics, real_harmonics

    grid = _coefficient_grid(lmax, beta * np.linalg.norm(D, 2))
    x = grid.points.reshape(-1, 3)
    Y = real_harmonics(lmax, x) * (grid.weights.ravel() / (4 * np.pi))[:, None]
    F = _transformed_harmonics(beta, x @ D, lmax, beta * np.linalg.norm(D, 2), variation)
    G = np.asarray(Y.astype(dtype).T @ F.astype(dtype), dtype=float)
    ell = np.repeat(np.arange(lmax + 1), 2 * np.arange(lmax + 1) + 1)
    G[(ell[:, None] + ell[None, :]) % 2 == 1] = 0.0
    return 0.5 * (G + G.T)


def _rotated_d():
    c, s = np.cos(0.7), np.sin(0.7)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return R @ np.diag([0.6, -1.0, 1.4]) @ R.T


@pytest.mark.parametrize("name, size, lmax", [("diagonal", 1e-8, 2), ("non-symmetric", 1.0, 7), ("singular", 100.0, 5),
                                              ("rotated", 100.0, 7), ("rank one", 100.0, 2), ("singular", 10.0, 16),
                                              ("rotated", 100.0, 24), ("diagonal", 1e-3, 30),
                                              ("non-symmetric", 10.0, 40)])
def test_general_kernel_coefficients_by_ring_transforms_are_the_dense_product(name, size, lmax):
    """G by an FFT over each ring and one product per order with the rings' Legendre values (O(L⁵)) is the dense
    product of the two tables on the grid (O(L⁶): 54 s and 3.0 GB at L = 91) to 3e-15·max|G| (measured ≤ 1.2e-15
    against its sum in extended precision, L ≤ 7, and ≤ 2.3e-15 against the double product, L = 16–40), the entries
    of odd ℓ_a + ℓ_b exactly 0, G symmetric.  The former single product rounded to 1.2e-14·max|G| for the rank-one
    D at β‖D‖₂ = 100, L = 2."""
    from meanfield._energy._fem import _general_coefficients

    D = _rotated_d() if name == "rotated" else np.diag([0.6, 1.0, 1.4]) if name == "diagonal" else \
        np.array(_GENERAL_D[name])
    beta = size / np.linalg.norm(D, 2)
    ell = np.repeat(np.arange(lmax + 1), 2 * np.arange(lmax + 1) + 1)
    odd = (ell[:, None] + ell[None, :]) % 2 == 1
    for variation in (False, True):
        G = _general_coefficients(beta, D, lmax, beta * np.linalg.norm(D, 2), variation)
        reference = _dense_coefficients(beta, D, lmax, variation, np.longdouble if lmax <= 8 else float)
        np.testing.assert_allclose(G, reference, rtol=0, atol=3e-15 * np.max(np.abs(reference)))
        assert not np.any(G[odd])
        np.testing.assert_array_equal(G, G.T)


def test_general_kernel_coefficients_do_not_form_a_table_on_the_whole_grid():
    """The harmonics Y and the transformed harmonics F were each a table of Q × (L + 1)² on the x-grid (1.2 GB at
    L = 91, β‖D‖₂ = 100, peak 3.0 GB): the ring transforms hold the rings' spectra (of half the rings, by the kernel's
    symmetry under x → −x) and F by blocks of rings, below one such table (peak 17 MB against 22 MB here; the
    former product 89 MB)."""
    import tracemalloc

    from meanfield._energy._fem import _coefficient_grid, _general_coefficients

    lmax, size = 20, 100.0
    grid = _coefficient_grid(lmax, size)
    table = 8.0 * grid.ntheta * grid.nphi * (lmax + 1) ** 2
    D = np.array(_GENERAL_D["non-symmetric"])
    tracemalloc.start()
    try:
        _general_coefficients(size / np.linalg.norm(D, 2), D, lmax, size, False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < table
