"""meanfield._energy._maximize and _classify: maximizers with certificates, the classification by the sign of D."""
import numpy as np
import pytest

import meanfield as mf
from meanfield._energy import Classification


def test_positive_definite_maximizer_is_dirac_on_top_eigenvector():
    """Reference value (docs/validation.md): D = diag(0.5, 1), β = 1: the Dirac on e2 with E = e/2."""
    r = mf.maximize_energy(1.0, np.diag([0.5, 1.0]), d=2, n_starts=8)
    assert isinstance(r, mf.Particles) and r.kind == "dirac"
    assert abs(abs(r.positions[0, 1]) - 1) < 1e-15
    assert r.value == pytest.approx(np.e / 2, abs=1e-12)
    assert round(r.value, 6) == 1.359141
    assert r.ascent_best <= r.value * (1 + 1e-12)
    c = r.certificate
    assert c.satisfied(1e-12) and c.upper_bound == pytest.approx(r.value, rel=1e-15)
    assert mf.energy(r, 1.0, np.diag([0.5, 1.0])) == r.value


def test_the_dimension_defaults_to_the_size_of_D():
    r = mf.maximize_energy(1.0, [0.5, 1.0], n_starts=2)                 # d = 2 from D, as the [energy] table reads it
    assert r.d == 2 and r.value == pytest.approx(np.e / 2, abs=1e-12)
    assert mf.maximize_energy(1.0, -np.eye(4), n_starts=2).d == 4
    with pytest.raises(ValueError, match=r"\(the argument `d`=3\); got shape \(2, 2\)"):
        mf.maximize_energy(1.0, np.eye(2), d=3)


@pytest.mark.parametrize("d", [2, 3])
def test_negative_identity_maximizer_is_antipodal_pair(d):
    """Reference value (docs/validation.md): D = −I, β = 1: an antipodal pair with cosh(1)/2 = 0.771540."""
    r = mf.maximize_energy(1.0, -np.eye(d), d=d, n_starts=8)
    assert r.kind == "antipodal"
    assert r.value == pytest.approx(np.cosh(1.0) / 2, abs=1e-12)
    assert round(r.value, 6) == 0.771540
    assert r.certificate.satisfied(1e-12)
    assert r.ascent_best == pytest.approx(r.value, rel=1e-9)    # the ascent alone finds it too


def test_ascent_alone_finds_the_maximizer_in_3d():
    D = np.diag([1.0, 0.3, -0.5])
    r = mf.maximize_energy(1.0, D, d=3, candidates=False, n_starts=8)
    assert r.kind == "dirac" and r.source == "ascent"
    assert r.value == pytest.approx(np.e / 2, rel=1e-10)
    assert abs(r.positions[0, 0]) == pytest.approx(1.0, abs=1e-6)


def test_dirac_antipodal_switch():
    """D = diag(−1, dd), β = 1: the Dirac on e2 beats the antipodal pair on e1 for dd > dd* = ln cosh 1.

    Located by bisection on the kind of the ascent-only maximizer (no candidates), to 1e-4."""
    def kind(dd):
        return mf.maximize_energy(1.0, np.diag([-1.0, dd]), d=2, candidates=False, n_starts=10, seed=1).kind

    lo, hi = 0.2, 0.7
    assert kind(lo) == "antipodal" and kind(hi) == "dirac"
    while hi - lo > 5e-5:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if kind(mid) == "antipodal" else (lo, mid)
    assert 0.5 * (lo + hi) == pytest.approx(np.log(np.cosh(1.0)), abs=1e-4)


@pytest.mark.parametrize("dd", [0.1, 0.43, 0.44, 0.8])
def test_no_better_measure_than_the_candidates_in_the_unproven_case(dd):
    D = np.diag([-1.0, dd])
    r = mf.maximize_energy(1.0, D, d=2, n_starts=16)
    assert r.source == "candidate" and r.ascent_best <= r.value * (1 + 1e-10)
    assert r.certificate.excess <= 1e-12
    assert r.value == pytest.approx(mf.classify(D).max_value(1.0), rel=1e-15)


# ----------------------------------------------------------------------------------------------
# classification

@pytest.mark.parametrize("D,kind,max_ok", [
    (np.diag([1.0, 2.0]), "positive definite", True),
    (np.diag([0.0, 0.0, 1.0]), "positive semi-definite", True),
    (np.diag([-1.0, 0.5]), "indefinite", False),
    (np.diag([-0.5, 1.0]), "indefinite", True),
    (np.diag([-1.0, 0.0]), "negative semi-definite", True),
    (-np.eye(3), "negative definite", True),
    (np.zeros((2, 2)), "zero", True),
])
def test_classify_kinds(D, kind, max_ok):
    c = mf.classify(D)
    assert isinstance(c, Classification) and c.kind == kind and c.maximizer_proven == max_ok
    assert kind in c.message and "maximizers" in str(c)


def test_classify_takes_a_diagonal_as_the_energy_functions_do():
    """d numbers are the diagonal, as in energy() and the [energy] table (they were refused as 'not a square
    matrix'); a scalar, which has no d here, is refused naming what to pass."""
    diagonal, matrix = mf.classify([-1.0, 0.5]), mf.classify(np.diag([-1.0, 0.5]))
    assert diagonal.kind == matrix.kind == "indefinite" and diagonal.message == matrix.message
    assert mf.classify(np.array([0.0, 0.0, 1.0])).kind == "positive semi-definite"
    with pytest.raises(ValueError, match=r"`D` must be a square matrix of shape \(d, d\) or its diagonal .*c·np.eye"):
        mf.classify(2.0)
    with pytest.raises(ValueError, match=r"`D` must be a square matrix"):
        mf.classify(np.ones((2, 3)))


def test_classified_values_match_the_energies_they_name():
    beta = 1.3
    # λ_min < 0: Dirac at v_min (Jensen); D ⪯ 0: antipodal max; D ⪰ 0 singular: 1/(2β)
    D = np.array([[-0.8, 0.3], [0.3, 0.4]])
    c = mf.classify(D)
    vmin = c.eigenvectors[:, 0]
    assert c.min_value(beta) == pytest.approx(mf.energy(mf.Particles(vmin[None]), beta, D), rel=1e-14)
    rng = np.random.default_rng(0)
    for _ in range(5):                                   # random measures lie above the minimum
        p = mf.Particles(rng.standard_normal((6, 2)), rng.dirichlet(np.ones(6)), normalize=True)
        assert c.min_value(beta) <= mf.energy(p, beta, D) <= c.max_value(beta)
    assert mf.classify(np.eye(3)).min_value(2.0) == pytest.approx(np.sinh(2.0) / 8, rel=1e-14)
    assert mf.classify(np.diag([1.0, 2.0])).min_value(1.0) is None


def test_bad_inputs():
    with pytest.raises(ValueError, match="`D`"):
        mf.maximize_energy(1.0, np.array([[0.0, 1.0], [0.0, 0.0]]), d=2)
    with pytest.raises(ValueError, match="`D`"):
        mf.maximize_energy(1.0, np.eye(3), d=2)
    with pytest.raises(ValueError, match="`n_particles`"):
        mf.maximize_energy(1.0, None, d=2, n_particles=0)
    with pytest.raises(ValueError, match="`n_starts`"):
        mf.maximize_energy(1.0, None, d=2, n_starts=0, candidates=False)
    with pytest.raises(ValueError, match="`beta`"):
        mf.maximize_energy(0.0, None, d=2)
    with pytest.raises(ValueError, match="`d`"):
        mf.maximize_energy(1.0, None, d=1)
    with pytest.raises(ValueError, match="`tol`"):
        mf.maximize_energy(1.0, None, d=2, tol=0.0)
    from meanfield._errors import InsufficientMemoryError
    with pytest.raises(InsufficientMemoryError, match="n_particles=10000000"):    # pair matrices, before any start
        mf.maximize_energy(1.0, None, d=2, n_particles=10 ** 7)
    with pytest.raises(ValueError, match="`D`"):
        mf.classify(np.ones((3, 1)))        # (np.ones(3) is the diagonal of I)
    with pytest.raises(ValueError, match="`D`"):
        mf.classify([[1.0, 2.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="`D`"):
        mf.classify([[np.nan, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="`tol`"):
        mf.classify(np.eye(2), tol=-1.0)
    with pytest.raises(ValueError, match="`beta`"):
        mf.classify(np.eye(2)).max_value(-1.0)


@pytest.mark.parametrize("beta", [380.0, 600.0])
def test_maximize_at_large_beta_returns_the_proven_dirac(beta):
    # the certificate's polish ran L-BFGS on δE/δμ ~ e^β, whose squared gradient overflowed above β ≈ 370
    r = mf.maximize_energy(beta, np.eye(2), d=2, n_starts=0)
    assert r.value == pytest.approx(np.exp(beta) / (2 * beta), rel=1e-12) and r.certificate.satisfied()


@pytest.mark.parametrize("n_starts", [0, 1])
def test_maximize_where_the_first_variation_overflows_but_e_does_not(n_starts):
    """β = 712, D = I: E = e^β/(2β) ≈ 1e306 fits in float64, δE/δμ = e^β/β and its gradient do not.  The certificate
    computed them unscaled (inf) and stopped with "`points` must be finite" (an argument the caller never
    passed), or returned an upper bound of inf; past the float64 edge (β = 720) the maximum itself overflows and
    the message named `points` too."""
    beta = 712.0
    r = mf.maximize_energy(beta, np.eye(2), d=2, n_starts=n_starts, n_particles=2)
    exact = np.exp(beta - np.log(2 * beta))
    assert r.kind == "dirac" and r.value == pytest.approx(exact, rel=1e-12)
    c = r.certificate
    assert c.satisfied(1e-12) and c.upper_bound == pytest.approx(exact, rel=1e-12)
    assert np.isfinite(c.support_gradient)
    with pytest.raises(ValueError, match="`beta` is too large for maximize_energy"):
        mf.maximize_energy(720.0, np.eye(2), d=2)
    with pytest.raises(ValueError, match="`beta` is too large"):
        mf.maximize_energy(720.0, -np.eye(2), d=2)


@pytest.mark.parametrize("tol", [1.0, 2.0])
def test_a_candidate_tolerance_of_one_or_more_is_refused(tol):
    """tol ≥ 1 made E_ascent·(1 − tol) ≤ 0, so a theorem candidate was returned however far below the ascent's best
    it was: the tolerance is a fraction in (0, 1)."""
    with pytest.raises(ValueError, match=r"`tol` must be in \(0, 1\)"):
        mf.maximize_energy(1.0, [-1.0, 0.3], tol=tol)


@pytest.mark.parametrize("D, beta, log_expected", [
    (np.eye(3), 710.0, 710.0 - np.log(1420.0)),                        # the Dirac, e^{βλ_max}/(2β)
    (-np.eye(3), 712.0, 712.0 - np.log(2.0) - np.log(1424.0)),          # the antipodal pair, cosh(βλ_min)/(2β)
])
def test_classification_max_value_is_finite_where_the_maximum_is(D, beta, log_expected):
    """max_value formed e^{βλ_max} (or cosh) before dividing by 2β: from βλ = 709.78 it read inf (with numpy's
    overflow warning) for a maximum of 1.57e305 (D = I, β = 710)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = mf.classify(D).max_value(beta)
    assert value == pytest.approx(np.exp(log_expected), rel=1e-12)
    assert mf.classify(D).max_value(800.0) == np.inf
