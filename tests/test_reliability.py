"""Reliability (issue 11): bad input is refused before any work with a message that names it; requests
beyond the available memory are refused with an estimate; a run that goes non-finite or is interrupted
keeps its last good state, writes its checkpoint and can be resumed.

File damage (truncation, flipped bytes, foreign or object-dtype datasets) is tested in test_io.py.
"""
import re
import sys
import warnings
from dataclasses import replace

import numpy as np
import pytest

import meanfield as mf
from meanfield import _memory
from meanfield._io import run_info
from meanfield.backends._particles import ParticlesBackend
from meanfield.backends._spectral import SpectralBackend
from meanfield.sphere import kernel_truncation_error

NAN, INF = float("nan"), float("inf")
P = mf.Particles.uniform(6, seed=0)
SMOOTH = mf.Density.from_function(lambda x: 1 + 0.3 * x[..., 2], 16)          # β = 1 needs L = 12: resolved
NEGATIVE = mf.Density.from_function(lambda x: 1 + 3 * x[..., 2], 16)          # mass 1, min ρ = −2
TWO = [[1.0, 0, 0], [0, 1.0, 0]]
NGPT_GOES_NEGATIVE = mf.Model(1.0, "ngpt", alpha=lambda t: 1.0 if t < 0.2 else -1.0)


def _FE_DENSITY():
    mesh = mf.SphereMesh.icosahedral(1)
    space = mf.FESpace(mesh, 1)
    return mf.FEDensity(space, np.ones(space.ndof))


def sim(initial=SMOOTH, t_final=0.1, model=None, **kw):
    return mf.simulate(model or mf.Model(1.0), initial, t_final, **kw)


def _row(id_, call, expected, *patterns, marks=()):
    return pytest.param(call, expected, patterns, id=id_, marks=marks)


def _beta_rows():
    entry_points = {   # β = 0 is a valid limit of funk_hecke (λ_ℓ(0) = δ_ℓ0) and of the equiangular ODE
        "Model": (lambda b: mf.Model(b), False),
        "funk_hecke": (lambda b: mf.funk_hecke(b, 4), True),
        "kernel_bandlimit": (lambda b: mf.kernel_bandlimit(b), True),
        "growth_rate": (lambda b: mf.growth_rate(b, 2), False),
        "equiangular": (lambda b: mf.equiangular("post-ln", b, 3, [0.0, 1.0]), True),
        "energy": (lambda b: mf.energy(P, b), False),
        "uniform_energy": (lambda b: mf.uniform_energy(b), False),
        "minimize_energy": (lambda b: mf.minimize_energy(b, d=2, lmax=8), False),
        "maximize_energy": (lambda b: mf.maximize_energy(b, n_starts=1), False),
        "gradient_flow": (lambda b: mf.gradient_flow(P, b, t_final=0.1), False),
        "mmd": (lambda b: mf.mmd(SMOOTH, SMOOTH, b), False),
    }
    rows = []
    for name, (f, zero_ok) in entry_points.items():
        for b in ([-1.0, NAN, INF] if zero_ok else [0.0, -1.0, NAN, INF]):
            rows.append(_row(f"beta={b}-{name}", lambda f=f, b=b: f(b), ValueError,
                             "`beta`", ">= 0" if zero_ok else "> 0", f"beta={b!r}"))
    return rows


def _bandlimit_rows():
    need, err = mf.kernel_bandlimit(20.0, 1e-12), kernel_truncation_error(20.0, 8)
    return [
        _row("L-below-kernel-bandlimit-spectral", lambda: sim(mf.Density.uniform(8), 0.01, mf.Model(20.0)),
             mf.MeanfieldWarning, "lmax=8", f"kernel band limit {need}", "quadrature_tol=1e-12", f"{err:.2e}"),
        _row("L-below-kernel-bandlimit-particles-sh",
             lambda: sim(P, 0.01, mf.Model(20.0), backend="particles-sh", lmax=8),
             mf.MeanfieldWarning, "lmax=8", f"{need}", f"{err:.2e}"),
    ]


BAD_INPUTS = _beta_rows() + _bandlimit_rows() + [
    # d < 2 (and d outside a Density's 2, 3)
    *(_row(f"d=1-{name}", f, ValueError, "`d`", ">= 2", "d=1") for name, f in {
        "Model": lambda: mf.Model(1.0, d=1), "Particles.uniform": lambda: mf.Particles.uniform(4, d=1),
        "ZonalDensity": lambda: mf.ZonalDensity.uniform(4, d=1), "funk_hecke": lambda: mf.funk_hecke(1.0, 4, d=1),
        "growth_rate": lambda: mf.growth_rate(1.0, 2, d=1), "uniform_energy": lambda: mf.uniform_energy(1.0, d=1),
    }.items()),
    # positions of one column name `positions` and their shape (Particles takes no `d`)
    _row("d=1-Particles", lambda: mf.Particles([[1.0], [1.0]]), ValueError, "`positions`", "`d` ≥ 2", "(2, 1)"),
    _row("d=1.5-Model", lambda: mf.Model(1.0, d=1.5), TypeError, "`d`", "integer", "d=1.5"),
    _row("d=4-Density", lambda: mf.Density.uniform(4, d=4), ValueError, "`d`", "2 or 3", "d=4"),
    _row("d=1-Density", lambda: mf.Density.uniform(4, d=1), ValueError, "`d`", "2 or 3", "d=1"),
    # unknown names list the choices
    _row("scheme-Model", lambda: mf.Model(1.0, "post_ln"), ValueError, "`scheme`", "'post-ln'", "'post_ln'"),
    _row("scheme-growth_rate", lambda: mf.growth_rate(1.0, 2, scheme="x"), ValueError, "`scheme`", "'ngpt'", "'x'"),
    _row("scheme-equiangular", lambda: mf.equiangular("x", 1.0, 3, [0, 1.0]), ValueError, "`scheme`", "'x'"),
    _row("backend-simulate", lambda: sim(backend="gpu"), ValueError, "`backend`", "'particles-sh'", "'gpu'"),
    _row("backend-ensemble", lambda: mf.ensemble(mf.Model(1.0), 4, 0.1, replicas=2, backend="gpu"),
         ValueError, "`backend`", "'gpu'"),
    _row("backend-particle_velocity", lambda: mf.particle_velocity(mf.Model(1.0), P, backend="gpu"),
         ValueError, "`backend`", "'gpu'"),
    _row("attention-Model", lambda: mf.Model(1.0, attention="hard"), ValueError, "`attention`", "'softmax'", "'hard'"),
    _row("attention-growth_rate", lambda: mf.growth_rate(1.0, 2, attention="hard"), ValueError, "`attention`",
         "'hard'"),
    _row("attention-equiangular", lambda: mf.equiangular("post-ln", 1.0, 3, [0, 1.0], attention="hard"),
         ValueError, "`attention`", "'hard'"),
    _row("method-spectral", lambda: sim(method="euler"), ValueError, "`method`", "'rk45'", "'euler'"),
    _row("method-particles", lambda: sim(P, backend="particles", method="euler"), ValueError, "`method`", "'euler'"),
    _row("method-energy", lambda: mf.energy(P, 1.0, method="fast"), ValueError, "`method`", "'pairs'", "'fast'"),
    # τ only with Mix-LN, and required there
    _row("tau-without-mix-ln", lambda: mf.Model(1.0, tau=1.0), ValueError, "`tau`", "mix-ln", "tau=1.0"),
    _row("mix-ln-without-tau", lambda: mf.Model(1.0, "mix-ln"), ValueError, "`tau`", "required", "mix-ln"),
    _row("mix-ln-without-tau-equiangular", lambda: mf.equiangular("mix-ln", 1.0, 3, [0, 1.0]),
         ValueError, "`tau`", "required"),
    _row("tau<0", lambda: mf.Model(1.0, "mix-ln", tau=-1.0), ValueError, "`tau`", ">= 0", "tau=-1.0"),
    # α > 0: constants on construction, callables when called (the run stops with the time and value)
    *(_row(f"alpha={a}", lambda a=a: mf.Model(1.0, "ngpt", alpha=a), ValueError, "`alpha`", "> 0", f"alpha={a!r}")
      for a in (0.0, -1.0, NAN)),
    _row("alpha(t)<=0-particles", lambda: sim(P, 0.5, NGPT_GOES_NEGATIVE, backend="particles", step=0.05),
         ValueError, "`alpha(t)`", "> 0", "alpha(0.2)=-1.0"),
    _row("alpha(t)<=0-spectral", lambda: sim(SMOOTH, 0.5, NGPT_GOES_NEGATIVE), ValueError, "`alpha(t)`", "> 0",
         "=-1.0"),
    # Q, K, V
    _row("Q-shape", lambda: mf.Model(1.0, Q=np.eye(2)), ValueError, "`Q`", "shape (3, 3)", "(2, 2)"),
    _row("K-heads-shape", lambda: mf.Model(1.0, K=np.ones((2, 3, 2))), ValueError, "`K`", "(heads, 3, 3)", "(2, 3, 2)"),
    _row("V-nan", lambda: mf.Model(1.0, V=np.full((3, 3), NAN)), ValueError, "`V`", "finite", "NaN"),
    _row("K-inf", lambda: mf.Model(1.0, K=np.diag([1.0, INF, 1.0])), ValueError, "`K`", "finite", "inf"),
    _row("heads-mismatch", lambda: mf.Model(1.0, Q=np.stack([np.eye(3)] * 2), K=np.stack([np.eye(3)] * 3)),
         ValueError, "`Q`, `K`, `V`", "heads", "[2, 3]"),
    # densities: unit mass and nonnegative (normalizing on request is tested below)
    _row("density-mass-2", lambda: sim(SMOOTH.with_coeffs(2 * SMOOTH.coeffs)), ValueError, "total mass 1", "2.0",
         "normalized()"),
    _row("density-mass-negative", lambda: sim(SMOOTH.with_coeffs(-SMOOTH.coeffs)), ValueError, "total mass 1", "-1.0"),
    _row("zonal-mass-2", lambda: sim(mf.ZonalDensity(np.array([2.0, 0.1]), 1, d=5), model=mf.Model(1.0, d=5)),
         ValueError, "total mass 1", "2.0"),
    _row("density-negative-values", lambda: sim(NEGATIVE), ValueError, "`initial`", "nonnegative", "-1.99",
         "negativity_tol"),
    _row("normalize-negative-mass", lambda: SMOOTH.with_coeffs(-SMOOTH.coeffs).normalized(), ValueError,
         "normalize", "mass -1.0", "> 0"),
    _row("from_function-normalize-negative-mass", lambda: mf.Density.from_function(lambda x: x[..., 2] - 2, 4,
                                                                                  normalize=True),
         ValueError, "normalize", "mass -2.0"),
    _row("sample-negative-density", lambda: mf.sample_density(NEGATIVE, 10), ValueError, "`density`", "negative"),
    # particles: on the sphere, weights ≥ 0 summing to 1, radii > 0
    _row("off-sphere", lambda: mf.Particles([[1.0, 1.0, 0]]), ValueError, "`positions`", "unit vectors", "0.414",
         "normalize=True"),
    _row("positions-nan", lambda: mf.Particles([[NAN, 0, 1.0]]), ValueError, "`positions`", "finite"),
    _row("weights-negative", lambda: mf.Particles(TWO, [1.5, -0.5]), ValueError, "`weights`", "≥ 0",
         "weights[1]=-0.5"),
    _row("weights-nan", lambda: mf.Particles(TWO, [NAN, 1.0]), ValueError, "`weights`", "weights[0]=nan"),
    _row("weights-sum", lambda: mf.Particles(TWO, [0.3, 0.3]), ValueError, "`weights`", "sum to 1", "sum=0.6",
         "normalize=True"),
    _row("weights-zero-normalize", lambda: mf.Particles(TWO, [0.0, 0.0], normalize=True), ValueError,
         "`weights`", "positive sum", "sum=0.0"),
    _row("weights-shape", lambda: mf.Particles(TWO, [1.0]), ValueError, "`weights`", "shape (2,)"),
    _row("weights-negative-attention_field", lambda: mf.attention_field(mf.Model(1.0), TWO, [1.5, -0.5]),
         ValueError, "`weights`", "≥ 0"),
    *(_row(f"radii={r}", lambda r=r: mf.Particles(TWO, radii=[1.0, r]), ValueError, "`radii`", "> 0",
           f"radii[1]={r!r}") for r in (0.0, -1.0, NAN)),
    # times strictly increasing, within the run
    _row("t_eval-decreasing", lambda: sim(t_final=1.0, t_eval=[0.5, 0.2]), ValueError, "`t_eval`",
         "strictly increasing", "[0.5, 0.2]"),
    _row("t_eval-beyond-t_final", lambda: sim(t_final=1.0, t_eval=[0.5, 2.0]), ValueError, "`t_eval`", "[0.0, 1.0]"),
    _row("t_eval-nan", lambda: sim(t_final=1.0, t_eval=[0.5, NAN]), ValueError, "`t_eval`", "finite"),
    _row("t_eval-ensemble", lambda: mf.ensemble(mf.Model(1.0), 4, 1.0, replicas=2, t_eval=[0.5, 0.2]),
         ValueError, "`t_eval`", "strictly increasing"),
    _row("equiangular-t-decreasing", lambda: mf.equiangular("post-ln", 1.0, 3, [0, 1.0, 0.5]), ValueError,
         "`t`", "strictly increasing"),
    _row("equiangular-t-negative", lambda: mf.equiangular("post-ln", 1.0, 3, [-1.0, 1.0]), ValueError,
         "`t`", "≥ 0", "-1.0"),
    _row("save_every=0", lambda: sim(save_every=0.0), ValueError, "`save_every`", "> 0", "save_every=0.0"),
    # t_final > t0 ≥ 0, finite
    *(_row(f"t_final={t}", lambda t=t: sim(t_final=t), ValueError, "`t_final`", f"t_final={t!r}")
      for t in (0.0, -1.0, NAN, INF)),
    _row("t_final=None", lambda: sim(t_final=None), TypeError, "`t_final`", "real number"),
    _row("t_final<t0", lambda: sim(t_final=1.0, t0=2.0), ValueError, "`t_final`", "> t0=2.0", "t_final=1.0"),
    _row("t0<0", lambda: sim(t0=-1.0), ValueError, "`t0`", ">= 0", "t0=-1.0"),
    _row("t_final-ensemble", lambda: mf.ensemble(mf.Model(1.0), 4, 0.0, replicas=2), ValueError, "`t_final`", "> 0"),
    _row("t_final-gradient_flow", lambda: mf.gradient_flow(P, 1.0, t_final=0.0), ValueError, "`t_final`"),
    # unknown options raise and list the valid ones
    _row("option-spectral", lambda: sim(lmax_maxx=64), TypeError, "unknown option", "'lmax_maxx'", "'lmax_max'"),
    _row("option-particles", lambda: sim(P, backend="particles", chunks=8), TypeError, "'chunks'", "'chunk'"),
    _row("option-particles-sh", lambda: sim(P, backend="particles-sh", toll=1e-6), TypeError, "'toll'", "'tol'"),
    _row("option-ensemble", lambda: mf.ensemble(mf.Model(1.0), 4, 0.1, replicas=2, stepp=0.1), TypeError, "'stepp'"),
    _row("option-gradient_flow", lambda: mf.gradient_flow(P, 1.0, t_final=0.1, stepp=0.1), TypeError, "'stepp'"),
    # wrong types and mismatched measures
    _row("model-type", lambda: mf.simulate("post-ln", SMOOTH, 1.0), TypeError, "`model`", "str"),
    _row("beta-type", lambda: mf.Model("1"), TypeError, "`beta`", "real number", "beta='1'"),
    _row("particles-to-spectral", lambda: sim(P), TypeError, "backend='spectral'", "Particles"),
    _row("density-to-particles", lambda: sim(SMOOTH, backend="particles"), TypeError, "`initial`", "Density"),
    _row("d-mismatch", lambda: sim(P, model=mf.Model(1.0, d=4), backend="particles"), ValueError, "d=3", "d=4"),
    # radius fields must be positive (Particles' radii already are)
    _row("radius-negative-constant", lambda: mf.Density.from_function(lambda x: 1.0, 8, radius=-1.0),
         ValueError, "`radius`", "> 0", "-1.0"),
    _row("radius-sign-change", lambda: mf.Density.from_function(lambda x: 1.0, 8, radius=lambda x: x[..., 2]),
         ValueError, "`radius`", "> 0"),
    _row("radius-zonal", lambda: mf.ZonalDensity.from_function(lambda t: 1.0, 8, radius=lambda t: t),
         ValueError, "`radius`", "> 0"),
    _row("radius-rings-negative", lambda: mf.Density.from_function(
        lambda x: 1.0, 6, radius=lambda x: np.where(x[..., 2] > 0.9, 5.0, 0.05)), ValueError, "`radius`",
        "after projection"),
    _row("radius-coefficients", lambda: mf.Density.from_coefficients(SMOOTH.coeffs, radius=-SMOOTH.coeffs),
         ValueError, "`radius`", "> 0"),
    _row("radius-at-simulate", lambda: sim(mf.Density(SMOOTH.coeffs, 16, 3, radius=-SMOOTH.coeffs),
                                           model=mf.Model(1.0, "pre-ln")), ValueError, "radius", "> 0"),
    _row("radii-shape", lambda: mf.Particles(TWO, radii=np.ones(3)), ValueError, "`radii`", "(2,)", "(3,)"),
    # query points and functions
    _row("evaluate-nan", lambda: SMOOTH.evaluate([[np.nan, 0, 1.0]]), ValueError, "`points`", "finite"),
    _row("evaluate-zero", lambda: SMOOTH.evaluate([[0.0, 0, 0]]), ValueError, "`points`", "zero vector"),
    _row("evaluate-shape", lambda: mf.ZonalDensity.uniform(4, d=5).evaluate(np.ones((2, 3))), ValueError,
         "`points`", "(..., 5)", "(2, 3)"),
    _row("profile-range", lambda: mf.ZonalDensity.uniform(4).evaluate_profile(2.0), ValueError, "`t`", "[-1, 1]"),
    _row("from_function-shape", lambda: mf.Density.from_function(lambda x: np.ones(3), 4), ValueError,
         "`f`", "one value per point", "(3,)"),
    _row("on_grid-type", lambda: SMOOTH.on_grid(32), TypeError, "`grid`", "SphereGrid", "int"),
    _row("tail_fraction-range", lambda: SMOOTH.tail_fraction(2.0), ValueError, "`frac`", "(0, 1)", "2.0"),
    _row("attention-zero-direction", lambda: mf.attention_field(mf.Model(1.0), [[0.0, 0, 0], [0, 0, 1.0]]),
         ValueError, "`directions`", "zero vector"),
    _row("equiangular-empty-t", lambda: mf.equiangular("post-ln", 1.0, 3, []), ValueError, "`t`", "non-empty"),
    _row("mean_alignment-density", lambda: mf.mean_alignment(SMOOTH), TypeError, "`particles`", "Density"),
    _row("fe-density-to-spectral", lambda: sim(_FE_DENSITY()), TypeError, "FEDensity", ".to_density(lmax)"),
    # Mix-LN's switch time in the linear theory, as in Model
    _row("growth_rate-mix-ln-no-tau", lambda: mf.growth_rate(1.0, 2, scheme="mix-ln"), ValueError, "`tau`",
         "required"),
    _row("growth_rate-tau-post-ln", lambda: mf.growth_rate(1.0, 2, tau=1.0), ValueError, "`tau`", "mix-ln"),
    # refinement needs room; a largest step is > 0 (∞: unbounded)
    _row("lmax_max-below-lmax", lambda: sim(mf.Density.random(24, seed=2), on_resolution_loss="refine", lmax_max=16),
         ValueError, "`lmax_max`", "lmax=24", "lmax_max=16"),
    _row("lmax_max-below-lmax-hybrid", lambda: sim(mf.Density.random(24, seed=2), backend="hybrid", lmax_max=16),
         ValueError, "`lmax_max`", "lmax=24"),
    _row("max_step-nan-spectral", lambda: sim(max_step=float("nan")), ValueError, "`max_step`", "> 0", "nan"),
    _row("max_step-zero-particles", lambda: sim(P, backend="particles", max_step=0.0), ValueError, "`max_step`",
         "inf: unbounded"),
    # float64 range
    _row("funk_hecke-overflow", lambda: mf.funk_hecke(1e4, 4), ValueError, "`beta`", "709.78", "scaled=True"),
    _row("energy-overflow", lambda: mf.energy(mf.Particles([[0, 0, 1.0]]), 800.0), mf.MeanfieldWarning,
         "float64", "beta=800.0"),
]


@pytest.mark.parametrize("call, expected, patterns", BAD_INPUTS)
def test_bad_input_is_refused_with_a_message_naming_it(call, expected, patterns):
    if issubclass(expected, Warning):
        with pytest.warns(expected) as caught:
            call()
        message = "\n".join(str(w.message) for w in caught if issubclass(w.category, expected))
    else:
        with pytest.raises(expected) as caught:
            call()
        message = str(caught.value)
    missing = [p for p in patterns if p not in message]
    assert not missing, f"message {message!r} lacks {missing}"


def test_densities_and_weights_are_normalized_when_asked():
    f = lambda x: 2.0 + x[..., 2]  # noqa: E731  (mass 2)
    assert mf.Density.from_function(f, 8).mass() == pytest.approx(2.0)
    rho = mf.Density.from_function(f, 8, normalize=True)
    assert rho.mass() == pytest.approx(1.0, abs=1e-15)
    assert np.allclose(mf.Density.from_function(f, 8).normalized().coeffs, rho.coeffs, rtol=0, atol=1e-15)
    assert sim(rho.resized(16), 0.05).success
    p = mf.Particles([[2.0, 0, 0], [0, 0, -0.5]], [3.0, 1.0], normalize=True)
    assert np.allclose(p.positions, [[1, 0, 0], [0, 0, -1]]) and np.allclose(p.weights, [0.75, 0.25])


# ----------------------------------------------------------------------------------------------
# memory: estimated before allocating, refused with the estimate and how to reduce it

MEMORY_REQUESTS = [
    # the measures' constructors allocated first: Density.uniform(10**5) raised numpy's bare MemoryError
    pytest.param(1 << 20, lambda: mf.Density.uniform(1000),
                 ("Density.uniform(lmax=1000, d=3)", "501501 coefficients", "lower `lmax`"), id="Density.uniform"),
    pytest.param(1 << 20, lambda: mf.Density.uniform(10 ** 6, d=2),
                 ("Density.uniform(lmax=1000000, d=2)", "lower `lmax`"), id="Density.uniform-d=2"),
    pytest.param(1 << 20, lambda: mf.ZonalDensity.uniform(10 ** 6),
                 ("ZonalDensity.uniform(lmax=1000000)", "lower `lmax`"), id="ZonalDensity.uniform"),
    pytest.param(1 << 20, lambda: mf.Density.uniform(2, d=2).resized(10 ** 6),
                 ("Density.resized(lmax=1000000)", "lower `lmax`"), id="Density.resized"),
    pytest.param(1 << 20, lambda: mf.Density.from_function(lambda x: 1.0, 10 ** 6, d=2),
                 ("projecting `f` at lmax=1000000, d=2", "lower `lmax`"), id="Density.from_function-d=2"),
    pytest.param(1 << 20, lambda: mf.ZonalDensity.from_function(lambda t: 1 + t, 10 ** 6, d=5),
                 ("ZonalDensity.from_function(lmax=1000000, d=5)", "1500002 quadrature nodes", "lower `lmax`"),
                 id="ZonalDensity.from_function"),
    pytest.param(1 << 20, lambda: mf.Density.random(1000),
                 ("at lmax=1000, d=3", "quadrature nodes", "lower `lmax`"), id="Density.random"),
    pytest.param(1 << 30, lambda: sim(mf.Density.uniform(8), 0.1, mf.Model(2.0), lmax=20000),
                 ("backend='spectral' at lmax=20000", "lower `lmax`"), id="spectral-lmax=20000"),
    pytest.param(1 << 30, lambda: sim(mf.ZonalDensity.uniform(8, d=6), 0.1, mf.Model(2.0, d=6), lmax=20000),
                 ("lmax=20000", "lower `lmax`"), id="zonal-lmax=20000"),
    pytest.param(1 << 30, lambda: mf.Particles.uniform(10 ** 11),
                 ("Particles.uniform(n=100000000000", "lower `n`"), id="Particles.uniform"),
    pytest.param(1 << 30, lambda: mf.sample_density(SMOOTH, 10 ** 10),
                 ("sampling n=10000000000", "lower `n`"), id="sample_density"),
    pytest.param(1 << 30, lambda: mf.attention_field(mf.Model(1.0), mf.Particles.uniform(20000).positions,
                                                     chunk=20000, threads=1),
                 ("exact attention of N=20000", "chunk=20000", "lower `chunk`"), id="attention_field-chunk"),
    pytest.param(1 << 30, lambda: sim(mf.Particles.uniform(20000), 0.1, backend="particles", chunk=20000,
                                      threads=1),
                 ("exact attention of N=20000", "lower `chunk`"), id="particles-backend-chunk"),
    pytest.param(1 << 30, lambda: sim(P, 0.1, backend="particles-sh", lmax=5000),
                 ("band limit L=5000", "lower `lmax`"), id="particles-sh-lmax"),
    pytest.param(1 << 28, lambda: mf.attention_field_sh(mf.Model(1.0), mf.Particles.uniform(10 ** 6).positions),
                 ("N=1000000 tokens", "lower the number of tokens"), id="particles-sh-tokens"),
]


@pytest.mark.parametrize("available, call, patterns", MEMORY_REQUESTS)
def test_requests_beyond_memory_are_refused_with_the_estimate(monkeypatch, available, call, patterns):
    monkeypatch.setattr(_memory, "available_bytes", lambda: available)
    with pytest.raises(mf.MeanfieldError) as caught:
        call()
    err = caught.value
    assert isinstance(err, MemoryError) and isinstance(err, _memory.InsufficientMemoryError)
    msg = str(err)
    assert "GiB but only" in msg and f"{available / 2**30:.2f} GiB are available" in msg
    assert all(p in msg for p in patterns), msg


# ----------------------------------------------------------------------------------------------
# tracemalloc peaks: the interpreter's table of interned strings kept out of them

def _ducc_keywords():
    """The parameter names of ducc0's transforms, interned: hold the returned list while measuring.

    ducc0's functions take keyword-only arguments, and its binding layer interns every parameter name on every call
    (PyUnicode_InternFromString, given or not).  A name no live object holds (``mmax``, ``mstart``, ``lstride``,
    ``ringfactor`` of synthesis_2d) is inserted into CPython's dict of interned strings and deleted when the call
    returns; a deletion does not give back the slot, so every few 10^4 insertions the dict is reallocated (one
    1,922,416 B block at 2^17 slots, its size for the ~4·10^4 interned strings of a pytest run).  tracemalloc charges
    that block to the transform in progress, and whether it falls inside a measurement depends on everything the
    process did before: which files were collected, which tests ran.  With the names held, the transforms insert
    nothing.
    """
    import ducc0.fft
    import ducc0.sht

    docs = [getattr(f, "__doc__", None) or "" for mod in (ducc0.sht, ducc0.fft) for f in vars(mod).values()]
    return [sys.intern(name) for doc in docs for name in set(re.findall(r"(\w+): ", doc))]


def _leave_free_interned_slots(free):
    """Leave ``free`` insertions before CPython's dict of interned strings is next reallocated (the worst case
    for a measurement that follows: any ``free`` + 1 new interned strings in it bring the reallocation in).

    Interns and drops fresh strings: each uses a slot, a reallocation shows as a new block in tracemalloc's peak,
    and the insertions from one reallocation to the next (the period) are the same while the live interned strings
    do not change.  The period is found to within a chunk, then exactly by single insertions near its end.
    Returns False, touching nothing more, where no reallocation is seen (an interpreter that keeps interned
    strings otherwise).
    """
    import collections
    import itertools
    import tracemalloc

    names = itertools.count()

    def churn(n):
        collections.deque(map(sys.intern, map("meanfield-test-churn-{}".format, itertools.islice(names, n))),
                          maxlen=0)

    def until_reallocation(chunk, limit=1 << 22):
        """Insertions (in chunks) up to and including the chunk that reallocated the table; None past ``limit``."""
        done = 0
        while done < limit:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            churn(chunk)
            done += chunk
            if tracemalloc.get_traced_memory()[1] - before > 1 << 15:
                return done
        return None

    chunk = 1024
    tracemalloc.start()
    try:
        rough = until_reallocation(chunk) and until_reallocation(chunk)    # the period, within chunk - 1
        if rough is None:
            return False
        skip = max(0, rough - 2 * chunk)            # short of the next reallocation, then one at a time
        tracemalloc.stop()                          # (churning untraced is 4x faster)
        churn(skip)
        tracemalloc.start()
        until_reallocation(1)                       # just after a reallocation
        tracemalloc.stop()
        churn(skip)
        tracemalloc.start()
        last = until_reallocation(1)
    finally:
        tracemalloc.stop()
    period = None if last is None else skip + last
    if period is None or period <= free:
        return False
    churn(period - 1 - free)
    return True


def _traced_peak(call, free_interned_slots=None):
    """tracemalloc's peak over ``call()``, with ducc0's keyword names held (see _ducc_keywords).

    With ``free_interned_slots``, the table of interned strings is first left that many insertions from its next
    reallocation: the worst case, for a ``call`` that runs many transforms, made the same in every test order."""
    import tracemalloc

    keep = _ducc_keywords()
    if free_interned_slots is not None:
        _leave_free_interned_slots(free_interned_slots)
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        del keep


def test_measurement_setup_puts_the_interned_string_table_within_reach():
    """The worst case _traced_peak sets up is real: 65 fresh interned strings reallocate the table."""
    import tracemalloc

    if not _leave_free_interned_slots(64):
        pytest.skip("no reallocation of the interned-string table seen on this interpreter")
    tracemalloc.start()
    try:
        for i in range(64):
            sys.intern(f"meanfield-test-probe-{i}")
        assert tracemalloc.get_traced_memory()[1] < 1 << 15
        sys.intern("meanfield-test-probe-64")
        assert tracemalloc.get_traced_memory()[1] > 1 << 15
    finally:
        tracemalloc.stop()


def test_measure_constructor_estimates_bound_the_measured_peak():
    from meanfield import _measures as M
    from meanfield.sphere import SphereGrid

    grid = SphereGrid.for_bandlimit(100)
    cases = [(lambda: mf.Density.uniform(300), M._DENSITY_BYTES_PER_COEF * 301 * 302 / 2),
             (lambda: mf.Density.uniform(10 ** 5, d=2), M._DENSITY_BYTES_PER_COEF * (10 ** 5 + 1)),
             (lambda: mf.ZonalDensity.uniform(10 ** 5), M._ZONAL_BYTES_PER_COEF * (10 ** 5 + 1)),
             (lambda: mf.Density.from_function(lambda x: 1 + x[..., 0], 100),
              grid.ntheta * grid.nphi * M._PROJECTION_BYTES_PER_NODE[3] + M._DENSITY_BYTES_PER_COEF * 101 * 102 / 2),
             (lambda: mf.Density.from_function(lambda x: 1 + x[..., 0], 10 ** 4, d=2),
              M._PROJECTION_BYTES_PER_NODE[2] * 3 * 10 ** 4 + M._DENSITY_BYTES_PER_COEF * (10 ** 4 + 1)),
             (lambda: mf.ZonalDensity.from_function(lambda t: 1 + t, 400, d=5),          # the O(n) product rule
              M._ZONAL_PROJECTION_BYTES_PER_NODE["product"] * 602 + M._ZONAL_BYTES_PER_COEF * 401),
             (lambda: mf.ZonalDensity.from_function(lambda t: 1 + t, 300, d=64),         # Gauss–Jacobi
              M._ZONAL_PROJECTION_BYTES_PER_NODE["gauss-jacobi"] * 451 + M._ZONAL_BYTES_PER_COEF * 301)]
    for i, (call, estimate) in enumerate(cases):
        call()                                      # caches (grids, imports) outside the measurement
        peak = _traced_peak(call)
        assert peak < estimate < 2 * peak, (i, peak, estimate)


def test_spectral_memory_estimate_bounds_the_measured_peak():
    from meanfield.backends._spectral import _memory_estimate

    for scheme, L in (("post-ln", 48), ("pre-ln", 40)):
        peak = _traced_peak(lambda: SpectralBackend(mf.Model(2.0, scheme), SMOOTH, lmax=L).advance(0.01),
                            free_interned_slots=64)   # ~70 transforms, 4 insertions each without the names held
        estimate, _ = _memory_estimate(L, 3, False, 1, scheme == "pre-ln")
        assert peak < estimate < 4 * peak, (scheme, peak, estimate)


# ----------------------------------------------------------------------------------------------
# run time: non-finite states stop the run with a diagnosis, the last good state kept and checkpointed

def _poison_after(monkeypatch, cls, name, k):
    """Make ``cls.name`` (rhs or _field) return NaN from its (k+1)-th call on; returns the call counter.

    The original is still called first, as in a real blow-up (a NaN state reaches the same code)."""
    original, calls = getattr(cls, name), [0]

    def poisoned(self, *args):
        calls[0] += 1
        out = original(self, *args)
        if calls[0] <= k:
            return out
        if isinstance(out, mf.AttentionField):
            return mf.AttentionField(*(None if a is None else a * np.nan for a in out))
        return out * np.nan

    monkeypatch.setattr(cls, name, poisoned)
    return calls


NON_FINITE_RUNS = [
    pytest.param(SpectralBackend, "rhs", SMOOTH, dict(method="rk4", step=0.05), id="spectral-rk4"),
    pytest.param(ParticlesBackend, "_field", P, dict(backend="particles", time="layers", step=0.05),
                 id="particles-layers"),
    pytest.param(SpectralBackend, "rhs", SMOOTH, {}, id="spectral-rk45"),
    pytest.param(ParticlesBackend, "rhs", P, dict(backend="particles", step=0.05), id="particles-rk4"),
    pytest.param(ParticlesBackend, "rhs", P, dict(backend="particles"), id="particles-rk45"),
]


@pytest.mark.parametrize("cls, method, initial, options", NON_FINITE_RUNS)
def test_non_finite_state_stops_with_a_diagnosis_and_keeps_the_last_good_state(
        tmp_path, monkeypatch, cls, method, initial, options):
    _poison_after(monkeypatch, cls, method, 40)
    path = tmp_path / "ck.h5"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = sim(initial, 2.0, mf.Model(2.0), save_every=0.1, checkpoint=path, **options)
    assert tr.status is mf.Status.NON_FINITE and "finite" in tr.detail.lower()
    assert any(issubclass(w.category, mf.MeanfieldWarning) and "NaN or infinite" in str(w.message) for w in caught)
    assert 0.1 < tr.times[-1] < 2.0 and len(tr.times) >= 3
    for s in tr.states:
        assert np.all(np.isfinite(s.coeffs if hasattr(s, "coeffs") else s.positions))
    back = mf.load(path)     # the checkpoint holds the same run, marked incomplete, with its diagnosis
    assert back.status is mf.Status.NON_FINITE and back.detail == tr.detail and not run_info(path)["complete"]
    assert np.array_equal(back.times, tr.times)


def _overflowing_usa_model():
    # an isotropic USA kernel beyond e^709 is refused by Model (test_model); an anisotropic one is warned about
    with pytest.warns(mf.MeanfieldWarning, match="can overflow float64"):
        return mf.Model(350.0, attention="unnormalized", Q=np.diag([2.2, 2.1, 2.0]))


def test_the_spectral_backend_refuses_a_usa_kernel_beyond_float64():
    model = _overflowing_usa_model()
    assert model.logit_bound == pytest.approx(350 * 2.2)
    with pytest.raises(ValueError, match=r"β·‖QᵀK‖ = 770 > 709.78.*Softmax attention has no such limit"):
        sim(SMOOTH, 1.0, model, method="rk4", step=0.05)


@pytest.mark.parametrize("options", [dict(step=0.05), {}, dict(time="layers", step=0.05)],
                         ids=["rk4", "rk45", "layers"])
def test_a_particle_run_whose_weights_overflow_stops_at_once_with_the_cause(options):
    model = _overflowing_usa_model()
    x = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.6, 0.8, 0]])
    with warnings.catch_warnings(record=True) as caught:     # the diagnosis replaces numpy's overflow warnings
        warnings.simplefilter("always")
        tr = sim(mf.Particles(x), 1.0, model, backend="particles", **options)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert tr.status is mf.Status.NON_FINITE and len(tr) == 1 and np.array_equal(tr.final.positions, x)
    # token 0 sees itself with weight e^(350·2.2) = e^770 / 4: log Z = 770 − log 4, the largest
    assert re.search(r"overflows float64 for 3 token\(s\) at t=0: token 0's weight sum .* is e\^768\.61[0-9]*, "
                     r"beyond e\^709\.78\. A smaller step does not help", tr.detail), tr.detail


def test_a_step_below_min_step_names_the_largest_velocity():
    p = mf.Particles.uniform(20, seed=1)
    with pytest.warns(mf.MeanfieldWarning, match="min_step"):
        tr = sim(p, 1.0, mf.Model(2.0), backend="particles", min_step=0.9)
    assert tr.status is mf.Status.STEP_TOO_SMALL
    x = p.positions        # SA, Post-LN: v_i = P_x_i Σ_j e^(β⟨x_i, x_j⟩) x_j / Σ_j e^(β⟨x_i, x_j⟩)
    w = np.exp(2.0 * x @ x.T)
    A = w @ x / w.sum(axis=1, keepdims=True)
    v = A - np.sum(A * x, axis=1, keepdims=True) * x
    reported = float(re.search(r"largest velocity component is ([0-9.e+-]+)\.$", tr.detail).group(1))
    assert reported == pytest.approx(np.max(np.abs(v)), rel=5e-3)      # printed to 3 digits


# ----------------------------------------------------------------------------------------------
# Ctrl-C: the checkpoint is written before simulate returns, and resume continues the run

def _interrupting(cls, k, method="rhs"):
    """``cls``'s ``method`` raising KeyboardInterrupt at its ``k``-th call (a Ctrl-C inside a step)."""
    original, calls = getattr(cls, method), [0]

    def interrupted(self, *args):
        calls[0] += 1
        if calls[0] == k:
            raise KeyboardInterrupt
        return original(self, *args)
    return interrupted


def _max_diff(a, b):
    get = (lambda s: s.coeffs) if hasattr(a.states[0], "coeffs") else (lambda s: s.positions)
    assert np.array_equal(a.times, b.times)
    return max(np.max(np.abs(get(x) - get(y))) for x, y in zip(a.states, b.states))


SPECTRAL_RUN = (mf.Model(5.0), mf.Density.random(20, seed=2, degree=4),
                dict(save_every=0.25, on_resolution_loss="refine"))
PARTICLE_RUN = (mf.Model(3.0, "pre-ln"), mf.Particles.uniform(12, seed=3, radii=1.5),
                dict(save_every=0.25, backend="particles", step=0.05))


@pytest.mark.parametrize("where", ["callback", "rhs"])
@pytest.mark.parametrize("backend", ["spectral", "particles"])
def test_interrupt_writes_a_checkpoint_and_resume_reproduces_the_run(tmp_path, monkeypatch, backend, where):
    model, initial, kw = SPECTRAL_RUN if backend == "spectral" else PARTICLE_RUN
    full = mf.simulate(model, initial, 1.5, **kw)
    assert full.success
    path = tmp_path / "ck.h5"
    callback = None
    if where == "callback":
        def callback(t, state, diagnostics):
            if t >= 0.75 - 1e-12:
                raise KeyboardInterrupt
    else:   # inside a step, between two saves: the resumed run must start from the last *saved* state
        cls = SpectralBackend if backend == "spectral" else ParticlesBackend
        monkeypatch.setattr(cls, "rhs", _interrupting(cls, 60 if backend == "spectral" else 90))
    with pytest.warns(mf.MeanfieldWarning, match="KeyboardInterrupt"):
        part = mf.simulate(model, initial, 1.5, checkpoint=path, callback=callback, **kw)
    monkeypatch.undo()
    assert part.status is mf.Status.INTERRUPTED and 0 < part.times[-1] < 1.5
    assert not run_info(path)["complete"] and np.array_equal(mf.load(path).times, part.times)
    resumed = mf.resume(path)
    assert resumed.success and run_info(path)["complete"]
    assert _max_diff(full, resumed) <= 1e-14


def test_adaptive_particle_run_resumes_exactly(tmp_path):
    model, initial = mf.Model(3.0), mf.Particles.uniform(12, seed=3)
    full = mf.simulate(model, initial, 1.0, save_every=0.25, backend="particles")
    path = tmp_path / "ck.h5"
    mf.simulate(model, initial, 1.0, save_every=0.25, backend="particles", checkpoint=path,
                callback=lambda t, s, d: t >= 0.5 - 1e-12)
    resumed = mf.resume(path)
    assert resumed.success and _max_diff(full, resumed) <= 1e-14


def test_particles_sh_checkpoint_resumes(tmp_path):
    path = tmp_path / "ck.h5"
    mf.simulate(mf.Model(2.0), P, 0.5, backend="particles-sh", save_every=0.25, checkpoint=path,
                callback=lambda t, s, d: t >= 0.25 - 1e-12)
    assert mf.resume(path).success


def test_runtime_alpha_failure_keeps_the_checkpoint(tmp_path):
    path = tmp_path / "ck.h5"
    with pytest.raises(ValueError, match=r"`alpha\(t\)`"):
        sim(P, 0.5, NGPT_GOES_NEGATIVE, backend="particles", step=0.05, save_every=0.1, checkpoint=path)
    back = mf.load(path, alpha=NGPT_GOES_NEGATIVE.alpha)
    assert np.allclose(back.times, [0, 0.1]) and not run_info(path)["complete"]


def test_the_checkpoint_holds_the_initial_state_once_the_run_is_validated(tmp_path):
    path = tmp_path / "ck.h5"
    sim(P, 0.25, mf.Model(2.0), backend="particles", checkpoint=path)      # an older result
    older = path.read_bytes()
    with pytest.raises(TypeError, match="unknown option"):       # refused: the old file stays
        sim(P, 0.5, mf.Model(2.0), backend="particles", save_every=0.25, checkpoint=path, stepp=0.1)
    assert path.read_bytes() == older
    seen = []

    def during_the_first_interval(t, state, diags):      # the first save after t0: the checkpoint of t0 is there
        seen.append((list(mf.load(path).times), run_info(path)["complete"]))
        return True

    sim(P, 0.5, mf.Model(2.0), backend="particles", save_every=0.25, checkpoint=path, checkpoint_every=5,
        callback=during_the_first_interval)
    assert seen == [([0.0], False)]
    assert mf.resume(path).success


@pytest.mark.parametrize("backend, initial", [("particles", P), ("spectral", SMOOTH)])
def test_a_run_with_max_step_resumes_and_matches_the_uninterrupted_run(tmp_path, backend, initial):
    # the stored next step can exceed max_step (it is capped when taken): resume caps it the same way
    kw = dict(backend=backend, save_every=0.25, max_step=0.01)
    full = mf.simulate(mf.Model(2.0), initial, 0.5, **kw)
    path = tmp_path / "ck.h5"
    mf.simulate(mf.Model(2.0), initial, 0.5, checkpoint=path, callback=lambda t, s, d: t >= 0.25 - 1e-12, **kw)
    resumed = mf.resume(path)
    assert resumed.success and _max_diff(full, resumed) <= 1e-14


def test_max_step_none_means_unbounded_in_every_backend():
    for backend, initial in (("spectral", SMOOTH), ("particles", P)):
        tr = mf.simulate(mf.Model(1.0), initial, 0.2, backend=backend, max_step=None)
        assert tr.success and tr.options["max_step"] == np.inf


@pytest.mark.parametrize("model", [mf.Model(3.0, "ln-scaling"), mf.Model(3.0, "mix-ln", tau=0.8),
                                   mf.Model(3.0, "ngpt", alpha=lambda t: 1.0 + 0.5 * np.sin(t))],
                         ids=["ln-scaling", "mix-ln", "ngpt-alpha-t"])
@pytest.mark.parametrize("backend", ["spectral", "particles"])
def test_time_dependent_schemes_resume_on_their_clock(tmp_path, model, backend):
    """Stopped at t = 0.5 and resumed: √(t+1), a Mix-LN switch at τ = 0.8 after the stop, and a callable α(t)
    continue from t = 0.5, not from 0 (the resumed run equals the uninterrupted one)."""
    if backend == "spectral":
        initial, kw = mf.Density.random(16, seed=2, amplitude=0.5), dict(save_every=0.25, on_resolution_loss="refine")
    else:
        initial, kw = mf.Particles.uniform(12, seed=3, radii=1.5 if model.scheme_def.has_radius else None), dict(
            save_every=0.25, backend="particles")
    if model.scheme_def.has_radius and backend == "spectral":
        kw["r0"] = 1.5
    full = mf.simulate(model, initial, 1.25, **kw)
    path = tmp_path / "ck.h5"
    mf.simulate(model, initial, 1.25, checkpoint=path, callback=lambda t, s, d: t >= 0.5 - 1e-12, **kw)
    if callable(model.alpha):
        resumed = mf.resume(path, alpha=model.alpha)
    else:
        resumed = mf.resume(path)
    assert full.success and resumed.success
    assert _max_diff(full, resumed) <= 1e-14


# ----------------------------------------------------------------------------------------------
# Resume points: the state a run reached between two save times (wall-clock checkpoints, Ctrl-C, errors)

def _resume_point(path):
    from meanfield._io import read_resume_point
    return read_resume_point(path)


ONE_INTERVAL = {"spectral": (mf.Model(5.0), mf.Density.random(20, seed=2, degree=4), dict(on_resolution_loss="refine")),
                "particles": (mf.Model(3.0, "pre-ln"), mf.Particles.uniform(12, seed=3, radii=1.5),
                              dict(backend="particles")),
                "hybrid": (mf.Model(5.0), mf.Density.random(24, seed=2, amplitude=0.7),
                           dict(backend="hybrid", oversample=1, particle_options={"rtol": 1e-5}))}


def _copy_each_checkpoint(monkeypatch, tmp_path, points_only: bool = False) -> list:
    """Copies of the checkpoint after each write (with a resume point only, if asked): what a SIGKILL right after
    that write would leave."""
    import shutil

    import meanfield._io as io
    copies, real = [], io.save_checkpoint

    def copying(trajectory, target, point):
        out = real(trajectory, target, point)
        if point is not None or not points_only:
            copies.append(shutil.copy(target, tmp_path / f"copy{len(copies)}.h5"))
        return out
    monkeypatch.setattr(io, "save_checkpoint", copying)
    return copies


def _get(state):
    return state.coeffs if hasattr(state, "coeffs") else state.positions


@pytest.mark.parametrize("backend", ["spectral", "particles"])
def test_an_interrupt_between_save_times_resumes_from_where_the_run_stood(tmp_path, monkeypatch, backend):
    # a run with no save_every saves only t_final: a Ctrl-C at 90 % restarted it from t0
    model, initial, kw = ONE_INTERVAL[backend]
    full = mf.simulate(model, initial, 1.5, **kw)
    cls = SpectralBackend if backend == "spectral" else ParticlesBackend
    path = tmp_path / "ck.h5"
    monkeypatch.setattr(cls, "rhs", _interrupting(cls, 40))
    with pytest.warns(mf.MeanfieldWarning, match="KeyboardInterrupt"):
        part = mf.simulate(model, initial, 1.5, checkpoint=path, **kw)
    monkeypatch.undo()
    point = _resume_point(path)
    assert part.status is mf.Status.INTERRUPTED and np.array_equal(part.times, [0.0])
    assert np.array_equal(mf.load(path).times, [0.0]) and 0 < point.t < 1.5      # beside the trajectory, not in it
    resumed = mf.resume(path)
    assert resumed.success and np.array_equal(resumed.times, full.times)
    assert np.max(np.abs(_get(resumed.final) - _get(full.final))) <= 1e-14
    assert len(resumed.steps["t"]) == len(full.steps["t"])            # no step taken twice or lost
    assert _resume_point(path) is None and run_info(path)["complete"]  # a finished run has none


@pytest.mark.parametrize("backend", ["spectral", "particles", "hybrid"])
def test_wall_clock_checkpoints_let_a_killed_run_resume_mid_interval(tmp_path, monkeypatch, backend):
    # as SIGKILL would leave it: the file as the last wall-clock checkpoint (interval 0: after every step) wrote it
    model, initial, kw = ONE_INTERVAL[backend]
    t_final = 2.0 if backend == "hybrid" else 1.5
    full = mf.simulate(model, initial, t_final, save_every=t_final / 2, **kw)
    copies = _copy_each_checkpoint(monkeypatch, tmp_path, points_only=True)
    mf.simulate(model, initial, t_final, save_every=t_final / 2, checkpoint=tmp_path / "ck.h5",
                checkpoint_interval=0.0, **kw)
    monkeypatch.undo()
    assert len(copies) > 5
    picks = [copies[len(copies) // 3], copies[-1]]           # before the middle save time, and after it
    if backend == "hybrid":
        picks.append(next(c for c in reversed(copies) if isinstance(_resume_point(c).state, mf.Particles)))
        assert isinstance(_resume_point(copies[0]).state, mf.Density)     # both phases write resume points
    for copy in picks:
        resumed = mf.resume(copy, checkpoint_interval=None)
        assert resumed.success and np.array_equal(resumed.times, full.times)
        tol = 1e-13 if backend == "hybrid" else 1e-14
        assert max(np.max(np.abs(_get(a) - _get(b))) for a, b in zip(full.states, resumed.states)) <= tol


def test_an_error_inside_the_run_stores_its_resume_point(tmp_path, monkeypatch):
    model, initial, kw = ONE_INTERVAL["particles"]
    original, calls = ParticlesBackend.rhs, [0]

    def failing(self, *args):
        calls[0] += 1
        if calls[0] == 30:
            raise RuntimeError("a transient failure")
        return original(self, *args)
    monkeypatch.setattr(ParticlesBackend, "rhs", failing)
    path = tmp_path / "ck.h5"
    with pytest.raises(RuntimeError, match="transient"):
        mf.simulate(model, initial, 1.5, checkpoint=path, **kw)
    monkeypatch.undo()
    assert _resume_point(path).t > 0
    assert np.max(np.abs(mf.resume(path).final.positions - mf.simulate(model, initial, 1.5, **kw).final.positions)) \
        <= 1e-14


def test_a_run_resumed_from_a_point_and_stopped_at_once_keeps_the_point(tmp_path, monkeypatch):
    model, initial, kw = ONE_INTERVAL["particles"]
    path = tmp_path / "ck.h5"
    monkeypatch.setattr(ParticlesBackend, "rhs", _interrupting(ParticlesBackend, 40))
    with pytest.warns(mf.MeanfieldWarning):
        mf.simulate(model, initial, 1.5, checkpoint=path, **kw)
    first = _resume_point(path)
    monkeypatch.setattr(ParticlesBackend, "rhs", _interrupting(ParticlesBackend, 1))
    with pytest.warns(mf.MeanfieldWarning):
        again = mf.resume(path)
    monkeypatch.undo()
    assert again.status is mf.Status.INTERRUPTED and np.array_equal(again.times, [0.0])
    kept = _resume_point(path)
    assert kept.t == first.t and np.array_equal(kept.state.positions, first.state.positions)


class _InterruptAtLine:
    """A Ctrl-C that lands just before line ``line`` of ``fn`` runs for the ``nth`` time (sys.settrace): as a
    SIGINT can, between a step's new state and its time, inside its log, inside a refinement."""

    def __init__(self, fn, line, nth=3):
        self.code, self.line, self.nth, self.seen, self.fired = fn.__code__, line, nth, 0, False

    def __enter__(self):
        self.previous = sys.gettrace()
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc):
        sys.settrace(self.previous)

    def _global(self, frame, event, arg):
        return self._local if frame.f_code is self.code and not self.fired else None

    def _local(self, frame, event, arg):
        if event == "line" and frame.f_lineno == self.line and not self.fired:
            self.seen += 1
            if self.seen == self.nth:
                self.fired = True
                raise KeyboardInterrupt
        return self._local


def _lines(fn):
    code = fn.__code__
    return sorted({line for _, _, line in code.co_lines() if line is not None and line > code.co_firstlineno})


INTERRUPTED_STEPS = {   # backend → (model, initial, kwargs, the functions of a step)
    "particles": (mf.Model(3.0, "pre-ln"), mf.Particles.uniform(12, seed=3, radii=1.5),
                  dict(backend="particles", step=0.05, save_every=0.5),
                  ("_advance_fixed", "_log_step", "advance")),
    "spectral": (mf.Model(5.0), mf.Density.random(10, seed=2, degree=4),
                 dict(on_resolution_loss="refine", save_every=0.25),
                 ("_accept", "_monitor", "refine", "_advance_to")),       # three refinements
}


@pytest.mark.parametrize("backend", ["particles", pytest.param("spectral", marks=pytest.mark.slow)])   # 5 s, 20 s
def test_a_ctrl_c_anywhere_in_a_step_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch, backend):
    # the state, the time, the step size wanted, the step log and the band limit are updated one after the other:
    # a resume point taken half-way (a new state at the old time, a step logged in part, a new basis with the old
    # coefficients) resumed to other states, a step log with steps missing or taken twice, or a ValueError
    import meanfield._durable as durable
    monkeypatch.setattr(durable, "_flush_to_disk", lambda fd: None)      # ~100 runs: no fsync
    model, initial, kw, names = INTERRUPTED_STEPS[backend]
    cls = ParticlesBackend if backend == "particles" else SpectralBackend
    t_final = 0.5 if backend == "spectral" else 1.0
    full = mf.simulate(model, initial, t_final, **kw)
    fired = 0
    for name in names:
        fn = getattr(cls, name)
        for line in _lines(fn):
            path = tmp_path / f"{name}-{line}.h5"
            with warnings.catch_warnings(), _InterruptAtLine(fn, line) as interrupt:
                warnings.simplefilter("ignore", mf.MeanfieldWarning)
                part = mf.simulate(model, initial, t_final, checkpoint=path, **kw)
            if not interrupt.fired:
                continue
            fired += 1
            assert part.status is mf.Status.INTERRUPTED, (name, line)
            assert len({len(v) for v in part.steps.values()}) == 1, (name, line)      # no step logged in part
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", mf.MeanfieldWarning)
                resumed = mf.resume(path, checkpoint_interval=None)
            where = f"{name}:{line} (point {getattr(_resume_point(path), 't', None)})"
            assert resumed.success and _max_diff(full, resumed) <= 1e-14, where
            assert {k: len(v) for k, v in resumed.steps.items()} == {k: len(v) for k, v in full.steps.items()}, where
            # (fixed steps from a point: a + i·h from another a, equal to rounding)
            assert np.allclose(resumed.steps["t"], full.steps["t"], rtol=0, atol=1e-14), where
    assert fired >= 10


@pytest.mark.parametrize("backend", ["particles", "particles-sh", "hybrid"])
def test_an_adaptive_particle_run_resumed_anywhere_takes_the_steps_of_the_uninterrupted_run(tmp_path, monkeypatch,
                                                                                             backend):
    # the resumed run started from the directions normalized once more (~1e-16 off) and recomputed its first
    # stage, which the uninterrupted run reused from the last step (first same as last) at the unprojected state:
    # error estimates ~1e-7 apart, step times ~1e-7 apart, a failing run's last state at another time
    import meanfield._durable as durable
    monkeypatch.setattr(durable, "_flush_to_disk", lambda fd: None)
    if backend == "hybrid":
        model, initial, kw = ONE_INTERVAL["hybrid"]
        t_final = 1.0
    else:
        model, initial, kw = mf.Model(3.0, "mix-ln", tau=0.37), mf.Particles.uniform(30, seed=3, radii=1.5), {}
        kw, t_final = dict(backend=backend), 1.0
    kw = {**kw, "save_every": 0.5}
    full = mf.simulate(model, initial, t_final, **kw)
    copies = _copy_each_checkpoint(monkeypatch, tmp_path)
    mf.simulate(model, initial, t_final, checkpoint=tmp_path / "ck.h5", checkpoint_interval=0.0, **kw)
    monkeypatch.undo()
    assert any(isinstance(getattr(_resume_point(c), "state", None), mf.Particles) for c in copies[1:-1])
    for copy in copies[1:-1]:           # from points, and from the saved state at 0.5
        resumed = mf.resume(copy, checkpoint_interval=None)
        assert np.array_equal(resumed.times, full.times), copy
        assert all(np.array_equal(_get(a), _get(b)) for a, b in zip(full.states, resumed.states)), copy
        for k in ("t", "dt", "error"):
            assert np.array_equal(resumed.steps[k], full.steps[k], equal_nan=True), (copy, k)


def test_wall_clock_checkpoints_at_save_times_hold_no_steps_past_the_saved_states(tmp_path, monkeypatch):
    # with checkpoint_every > 1, the wall-clock write of a step that ends on a save time (not a resume point:
    # kept next) stayed the file until the next write, with the steps since the last kept state in its log
    import meanfield._durable as durable
    monkeypatch.setattr(durable, "_flush_to_disk", lambda fd: None)
    model, initial, kw, _ = INTERRUPTED_STEPS["particles"]
    kw = {**kw, "save_every": 0.25}
    full = mf.simulate(model, initial, 1.5, **kw)
    copies = _copy_each_checkpoint(monkeypatch, tmp_path)
    mf.simulate(model, initial, 1.5, checkpoint=tmp_path / "ck.h5", checkpoint_every=3, checkpoint_interval=0.0,
                **kw)
    for copy in copies[:-1]:
        resumed = mf.resume(copy, checkpoint_interval=None)
        assert _max_diff(full, resumed) <= 1e-14, copy
        assert np.allclose(resumed.steps["t"], full.steps["t"], rtol=0, atol=1e-14), copy


def test_resume_drops_logged_steps_past_the_saved_states_of_an_earlier_version(tmp_path):
    # an interrupted run of an earlier version wrote the steps it had taken past its last saved state (no resume
    # point): the continuation takes them again, and logged them twice
    model, initial, kw, _ = INTERRUPTED_STEPS["particles"]
    full = mf.simulate(model, initial, 1.5, **kw)
    stopped = mf.simulate(model, initial, 1.5, callback=lambda t, s, d: t >= 0.5 - 1e-12, **kw)
    assert len(stopped.steps["t"]) < len(full.steps["t"])
    path = mf.save(replace(stopped, steps={k: v[:len(stopped.steps["t"]) + 4] for k, v in full.steps.items()}),
                   tmp_path / "old.h5")
    resumed = mf.resume(path)
    assert _max_diff(full, resumed) <= 1e-14 and np.array_equal(resumed.steps["t"], full.steps["t"])


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "often", True])
def test_checkpoint_interval_is_checked(bad):
    with pytest.raises((TypeError, ValueError), match="checkpoint_interval"):
        mf.simulate(mf.Model(1.0), P, 0.1, backend="particles", checkpoint_interval=bad)


@pytest.mark.parametrize("scheme, time, calls", [
    ("ln-scaling", "rk4", 57), ("ngpt", "layers", 5), ("ngpt", "rk4", 13), ("mix-ln", "rk4", 57),
    ("mix-ln", "rk4", 95), ("post-ln", "rk4", 57), ("ln-scaling", "layers", 9)])
def test_fixed_steps_and_layers_resumed_mid_stretch_give_the_same_bits(tmp_path, monkeypatch, scheme, time, calls):
    # the resumed steps sit on the uninterrupted run's grid (save time + k·h; Mix-LN's τ = 0.6 cuts the stretch
    # [0.5, 1], the point at 95 calls is past it): counted from the resume point, h = (b − p)/n and the times p + i·h
    # came out a few ulps off (1e-16 to 3e-16 here; 1.3e-15 to 5.5e-15 at 400 tokens, t = 4)
    model = mf.Model(2.0, scheme, alpha=(lambda t: 1 / (1 + t)) if scheme == "ngpt" else 1.0,
                     tau=0.6 if scheme == "mix-ln" else None)
    initial = mf.Particles.uniform(30, seed=4)
    kw = dict(backend="particles", save_every=0.5, step=0.03 if time == "rk4" else 0.05,
              **({"method": "rk4"} if time == "rk4" else {"time": "layers"}))
    full, point, resumed = _interrupted_in_a_field_and_resumed(tmp_path, monkeypatch, ParticlesBackend, calls, model,
                                                               initial, 1.0, kw)
    assert point.t not in (0.0, 0.5, 1.0)
    assert len(resumed.steps["t"]) == len(full.steps["t"])


def _interrupted_in_a_field_and_resumed(tmp_path, monkeypatch, cls, calls, model, initial, t_final, kw):
    """(uninterrupted run, resume point, resumed run) of a run stopped by Ctrl-C at ``cls``'s ``calls``-th field
    evaluation; the resumed run is checked to give the uninterrupted run's times and states bit for bit."""
    full = mf.simulate(model, initial, t_final, **kw)
    path = tmp_path / "ck.h5"
    monkeypatch.setattr(cls, "_field", _interrupting(cls, calls, "_field"))
    with pytest.warns(mf.MeanfieldWarning, match="KeyboardInterrupt"):
        mf.simulate(model, initial, t_final, checkpoint=path, **kw)
    monkeypatch.undo()
    point = _resume_point(path)
    assert point is not None
    resumed = mf.resume(path, alpha=model.alpha) if callable(model.alpha) else mf.resume(path)
    assert resumed.success and np.array_equal(resumed.times, full.times)
    assert all(np.array_equal(_get(a), _get(b)) for a, b in zip(full.states, resumed.states))
    return full, point, resumed


@pytest.mark.parametrize("calls", [5, 60])
def test_a_hybrid_runs_fixed_particle_steps_resumed_after_its_hand_off_give_the_same_bits(tmp_path, monkeypatch, calls):
    # the particle phase counts its fixed steps from the hand-off (t = 0.72, inside the save interval [0.5, 1]), then
    # from each save time; resumed at 0.748 (5 calls) or 1.118 (60), its steps were counted from the point: 4e-16 to
    # 7e-16 off the uninterrupted run
    from meanfield.backends._particles_sh import ParticlesSHBackend

    model, initial = mf.Model(5.0, "ln-scaling"), mf.Density.random(24, seed=2, amplitude=0.7)
    kw = dict(backend="hybrid", oversample=1, particle_options={"method": "rk4", "step": 0.03}, save_every=0.5)
    full, point, _ = _interrupted_in_a_field_and_resumed(tmp_path, monkeypatch, ParticlesSHBackend, calls, model,
                                                         initial, 2.0, kw)
    assert full.run_info["handoff"]["t"] < point.t and isinstance(point.state, mf.Particles)
