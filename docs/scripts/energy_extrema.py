"""Tutorial figure and numbers: the interaction energy E_{β,D}, its minimizers, maximizers and stationary states.

E_{β,D}(μ) = (1/2β) ∬ e^{β⟨x, Dy⟩} dμ dμ.  Every number quoted on docs/tutorials/energy_extrema.md is printed
here, beside the reference it is compared with:

* energies of simple measures (mf.energy) against their closed forms (β = 2; anisotropic uniform on S¹, β = 1);
* the minimizing density on S¹, β = 1, D = diag(1, 1 + ε): its cos 2θ coefficient at ε = 0.05 against the
  reference value 0.10167 (docs/validation.md), and dc₂/dε at ε = 0 (central difference, ε = ±1e-3) against
  βI₁(β)/(2I₂(β));
* the minimizer on S² (basix P1 elements), β = 2, D = diag(0.6, 1, 1.4): against the mesh one level coarser and
  against a spectral Galerkin minimum over harmonics of degree ≤ 12 (a second discretization, computed here);
  D = I against the closed form sinh β/(2β²); a partial support, β = 1, D = diag(0.3, 1, 1);
* maximizers by the multi-start ascent alone (candidates=False): D = diag(0.5, 1) → e/2, D = −I → cosh(1)/2;
* stationary states: the test mf.stationary; four particles descending from a square to the rectangle
  (±a, ±b), a² the root of d1 tanh(βd1a²) = d2 tanh(βd2b²) (by brentq), against its reference values;
* the attention dynamics (USA, Q = I, K = V = D) is the gradient ascent: E increases, the energy identity
  dE/dt = ∫|v|²dμ holds, mf.simulate gives the same tokens, and the flow ends at a stationary state.

Run:  python docs/scripts/energy_extrema.py   (about 40 s; writes docs/images/energy_extrema.png)
"""
import time
from pathlib import Path

import numpy as np
from scipy import optimize, special

import meanfield as mf
from meanfield import plot

IMAGES = Path(__file__).resolve().parents[1] / "images"


def energies():
    print("== energies of simple measures (β = 2) against closed forms")
    beta = 2.0
    cases = {
        "uniform on S¹": (mf.Density.uniform(8, d=2), special.i0(beta) / (2 * beta)),
        "uniform on S²": (mf.Density.uniform(8), np.sinh(beta) / (2 * beta ** 2)),
        "Dirac": (mf.Particles([[0.0, 0.0, 1.0]]), np.exp(beta) / (2 * beta)),
        "antipodal pair": (mf.Particles([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]), np.cosh(beta) / (2 * beta)),
    }
    for name, (measure, closed) in cases.items():
        E = mf.energy(measure, beta)
        print(f"  {name:15s} mf.energy {E:.12f}  closed form {closed:.12f}  rel. diff {E / closed - 1:.1e}")
    E = mf.energy(mf.Density.uniform(8, d=2), 1.0, [1.0, 0.3])
    closed = special.i0(0.65) * special.i0(0.35) / 2.0
    print(f"  uniform on S¹, β = 1, D = diag(1, 0.3): mf.energy {E:.12f}  I0(0.65) I0(0.35)/2 {closed:.12f}"
          f"  rel. diff {E / closed - 1:.1e}")
    rho = mf.Density.random(16, seed=0, degree=4)
    exact, quad = mf.energy_estimate(rho, beta), mf.energy_estimate(rho, beta, method="quadrature")
    print(f"  Density.random(16, seed=0, degree=4), β = 2: {exact.method} {exact.value:.15f} (bound {exact.error_bound:.1e}), "
          f"{quad.method} {quad.value:.15f} (bound {quad.error_bound:.1e}); difference {exact.value - quad.value:.1e}")
    print(f"  classify(diag(1, 1.05)):\n{mf.classify(np.diag([1.0, 1.05])).message}")


def circle_minimizer():
    print("== minimizing density on S¹, β = 1, D = diag(1, 1 + ε)")
    t0 = time.perf_counter()
    rho = mf.minimize_energy(1.0, np.diag([1.0, 1.05]), d=2)
    c2 = 2 * rho.coeffs[2].real
    print(f"  {rho!r} ({time.perf_counter() - t0:.1f} s, {len(rho.nodal_values)} nodes); uniform energy "
          f"{mf.uniform_energy(1.0, [1.0, 1.05], d=2):.12f}")
    print(f"  ε = 0.05: c2 = {c2:.6f} (reference value: 0.10167); c4 = {2 * rho.coeffs[4].real:.6f}")
    print(f"  certificate: {rho.certificate.message} satisfied(1e-8): {rho.certificate.satisfied(1e-8)}")
    print(f"  nodal values in [{rho.nodal_values.min():.4f}, {rho.nodal_values.max():.4f}]")
    a = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    phi = mf.first_variation(rho, 1.0, np.diag([1.0, 1.05]), np.stack([np.cos(a), np.sin(a)], axis=1))
    print(f"  δE/δμ / 2E − 1 on 2000 points of the circle: [{phi.min() / (2 * rho.value) - 1:.1e}, "
          f"{phi.max() / (2 * rho.value) - 1:.1e}]")
    h = 1e-3
    cp, cm = (2 * mf.minimize_energy(1.0, np.diag([1.0, 1.0 + s]), d=2).coeffs[2].real for s in (h, -h))
    ref = 1.0 * special.iv(1, 1.0) / (2 * special.iv(2, 1.0))
    print(f"  dc2/dε at ε = 0: central difference (ε = ±1e-3) {(cp - cm) / (2 * h):.7f}, βI1/(2I2) {ref:.7f}, "
          f"rel. diff {(cp - cm) / (2 * h) / ref - 1:.1e}")
    wide = mf.minimize_energy(1.0, np.diag([1.0, 2.0]), d=2)
    print(f"  ε = 1: c2 = {2 * wide.coeffs[2].real:.6f}, nodal values in [{wide.nodal_values.min():.4f}, "
          f"{wide.nodal_values.max():.4f}] (for the figure)")
    return rho, wide


def galerkin_minimum(beta, D, lmax):
    """min E over signed band-limited densities Σ u_k Y_k of unit mass: (1/2β)/(G⁻¹)_00 in real harmonics.

    A reference for a minimizer with full support: its minimizer must be positive (checked on a grid), and
    then it is the minimizer over densities of degree ≤ lmax."""
    from meanfield._energy._fem import real_harmonics     # reference only (not the tutorial's API)

    _, G, shift = mf.FESpace(mf.SphereMesh.icosahedral(0)).kernel_factor(beta, D, lmax)
    u = np.linalg.solve(G, np.eye(len(G))[0])
    grid = mf.sphere.SphereGrid(40, 80)
    low = float(np.min(real_harmonics(lmax, grid.points.reshape(-1, 3)) @ (u / u[0])))
    return np.exp(shift) / (2 * beta) / u[0], low


def sphere_minimizer():
    print("== minimizer on S² (basix P1)")
    D3 = np.diag([0.6, 1.0, 1.4])
    t0 = time.perf_counter()
    fe = mf.minimize_energy(2.0, D3, d=3, level=3)
    print(f"  β = 2, D = diag(0.6, 1, 1.4): {fe!r} ({time.perf_counter() - t0:.1f} s), E = {fe.value:.12f}")
    print(f"  uniform energy {mf.uniform_energy(2.0, D3):.12f}; mf.energy(fe) − fe.value = "
          f"{mf.energy(fe, 2.0, D3) - fe.value:.1e}")
    print(f"  certificate: {fe.certificate.message} satisfied(1e-6): {fe.certificate.satisfied(1e-6)}")
    phi = mf.first_variation(fe, 2.0, D3)
    print(f"  max |δE/δμ / 2E − 1| at the 642 nodes: {np.max(np.abs(phi / (2 * fe.value) - 1)):.1e}; "
          f"nodal values in [{fe.values.min():.4f}, {fe.values.max():.4f}]")
    print(f"  mf.stationary(fe) (tol 1e-8): {mf.stationary(fe, 2.0, D3).message}")
    print(f"  mf.stationary(fe, tol=1e-6): {mf.stationary(fe, 2.0, D3, tol=1e-6).stationary}")
    coarse = mf.minimize_energy(2.0, D3, d=3, level=2)
    ref, low = galerkin_minimum(2.0, D3, 12)
    print(f"  level 2: {coarse!r}, E = {coarse.value:.12f} (difference {coarse.value - fe.value:.1e})")
    print(f"  spectral Galerkin, degree ≤ 12: E = {ref:.12f} (difference {fe.value - ref:.1e}); its minimizer's "
          f"smallest value on a 40 × 80 grid {low:.4f} (> 0: a density)")
    iso = mf.minimize_energy(2.0, None, d=3, level=3)
    print(f"  D = I, level 3: E = {iso.value:.15f}, sinh β/(2β²) = {np.sinh(2.0) / 8:.15f}, "
          f"rel. diff {iso.value / (np.sinh(2.0) / 8) - 1:.1e}; max |ρ − 1| at the nodes {np.max(np.abs(iso.values - 1)):.1e}")
    Dp = np.diag([0.3, 1.0, 1.0])
    part = mf.minimize_energy(1.0, Dp, d=3, level=3)
    c = part.certificate
    a = np.linspace(0, 2 * np.pi, 721)
    great = np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], axis=1)       # through e1 and e2
    off = part.evaluate(great) <= 0
    phi_off = mf.first_variation(part, 1.0, Dp, great[off]) / (2 * part.value) - 1
    print(f"  β = 1, D = diag(0.3, 1, 1): E = {part.value:.10f} (uniform {mf.uniform_energy(1.0, Dp):.10f}); "
          f"support fraction {c.support_fraction:.3f}; satisfied(1e-6): {c.satisfied(1e-6)}")
    print(f"    {c.message}")
    print(f"    on the great circle through e1, e2 where ρ = 0: δE/δμ / 2E − 1 in [{phi_off.min():.1e}, "
          f"{phi_off.max():.1e}]")
    print(f"    level 2: E = {mf.minimize_energy(1.0, Dp, d=3, level=2).value:.10f}")
    return fe


def maximizers():
    print("== maximizers by the ascent alone (candidates=False, 4 starts)")
    top = mf.maximize_energy(1.0, np.diag([0.5, 1.0]), d=2, candidates=False, n_starts=4, seed=1)
    print(f"  D = diag(0.5, 1): {top.kind} at {np.round(top.positions, 6) + 0.0}, E = {top.value:.12f}, "
          f"e/2 = {np.e / 2:.12f}, rel. diff {top.value / (np.e / 2) - 1:.1e}")
    print(f"    {top.message} satisfied: {top.certificate.satisfied()}")
    pair = mf.maximize_energy(1.0, -np.eye(2), d=2, candidates=False, n_starts=4, seed=1)
    print(f"  D = −I: {pair.kind}, E = {pair.value:.12f}, cosh(1)/2 = {np.cosh(1) / 2:.12f}, "
          f"rel. diff {pair.value / (np.cosh(1) / 2) - 1:.1e}; ⟨x1, x2⟩ = {pair.positions[0] @ pair.positions[1]:.12f}")
    print(f"    {pair.message} satisfied: {pair.certificate.satisfied()}")
    print(f"  proven upper bounds (certificate.upper_bound): {top.certificate.upper_bound:.12f}, "
          f"{pair.certificate.upper_bound:.12f}")


def stationary_states():
    print("== stationary states")
    D = np.diag([0.5, 1.0, 1.5])
    print(f"  uniform, D = I: {mf.stationary(mf.Density.uniform(8), 1.0).message}")
    print(f"  uniform, D = diag(0.5, 1, 1.5): {mf.stationary(mf.Density.uniform(8), 1.0, D).message}")
    pair = mf.Particles([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]], weights=[0.3, 0.7])
    print(f"  0.3 δ_e3 + 0.7 δ_−e3: {mf.stationary(pair, 1.0, D).message}")
    b, d1, d2 = 1.0, 1.0, 0.5
    a2 = optimize.brentq(lambda a: d1 * np.tanh(b * d1 * a) - d2 * np.tanh(b * d2 * (1 - a)), 1e-12, 1 - 1e-12,
                         xtol=1e-16)
    E = np.cosh(b * d1 * a2) * np.cosh(b * d2 * (1 - a2)) / (2 * b)
    square = mf.Particles(np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]) / np.sqrt(2))
    t0 = time.perf_counter()
    rect = mf.find_stationary(square, 1.0, [1.0, 0.5], direction="descent", tol=1e-11, check_every=5.0)
    x = rect.state.positions
    print(f"  four particles from a square, descent: {rect.message} ({time.perf_counter() - t0:.1f} s)")
    print(f"    E(square) = {mf.energy(square, 1.0, [1.0, 0.5]):.10f}")
    print(f"    a² = mean x1² {np.mean(x[:, 0] ** 2):.10f}, brentq root {a2:.10f} (reference value 0.19370612); "
          f"max |x1² − a²| {np.max(np.abs(x[:, 0] ** 2 - a2)):.1e}")
    print(f"    E = {rect.energy:.12f}, cosh(βd1a²)cosh(βd2b²)/(2β) = {E:.12f} (reference value 0.5513701486)")
    print(f"    max |energy identity residual| {np.max(np.abs(rect.trajectory.diagnostics['energy_identity_residual'])):.1e}")
    path = mf.gradient_flow(square, 1.0, [1.0, 0.5], t_final=15.0, save_every=0.1, direction="descent")
    return square, rect, path


def dynamics():
    print("== the attention dynamics is the gradient ascent (β = 1, D = diag(0.5, 1, 1.5), 100 tokens)")
    D = np.diag([0.5, 1.0, 1.5])
    tokens = mf.Particles.uniform(100, seed=0)
    t0 = time.perf_counter()
    flow = mf.gradient_flow(tokens, 1.0, D, t_final=6.0, save_every=0.5)
    E, P = flow.diagnostics["energy"], flow.diagnostics["dissipation"]
    res = flow.diagnostics["energy_identity_residual"]
    print(f"  gradient_flow: {flow.message} ({time.perf_counter() - t0:.1f} s); E increasing: {np.all(np.diff(E) > 0)}")
    print(f"  E: {E[0]:.6f} → {E[-1]:.6f} (uniform {mf.uniform_energy(1.0, D):.6f}); ∫|v|²dμ at t = 6: {P[-1]:.1e}; "
          f"max |E(t) − E(0) − ∫∫|v|²| = {np.max(np.abs(res)):.1e}")
    usa = mf.Model(1.0, attention="unnormalized", K=D, V=D)
    same = mf.simulate(usa, tokens, 6.0, save_every=0.5, backend="particles")
    print(f"  simulate(USA, Q = I, K = V = D): max |Δx| at t = 6 against gradient_flow "
          f"{np.max(np.abs(same.final.positions - flow.final.positions)):.1e}")
    t0 = time.perf_counter()
    end = mf.find_stationary(flow.final, 1.0, D, tol=1e-8, check_every=2.0)
    cl = mf.particle_clusters(end.state, angle=1e-3)
    m = cl.masses
    two = (m @ np.exp((cl.centers @ D) @ cl.centers.T) @ m) / 2
    print(f"  find_stationary from t = 6: {end.message} ({time.perf_counter() - t0:.1f} s); "
          f"max |energy identity residual| {np.max(np.abs(end.trajectory.diagnostics['energy_identity_residual'])):.1e}")
    print(f"    {cl.count} clusters at {(np.round(cl.centers, 6) + 0.0).tolist()} with masses {m}; E = {end.energy:.10f}, "
          f"cluster formula {two:.10f}; maximum e^1.5/2 = {np.exp(1.5) / 2:.10f}")
    small = mf.find_stationary(mf.Particles.uniform(32, seed=0), 1.0, D, tol=1e-8, check_every=2.0)
    cs = mf.particle_clusters(small.state, angle=1e-3)
    print(f"  32 tokens (seed 0): {small.message} {cs.count} cluster(s) at {(np.round(cs.centers, 6) + 0.0).tolist()}, "
          f"E = {small.energy:.10f}")
    return flow, end, small, two


def figure(circle, wide, fe, square, rect, path, flow, end, small, two):
    plt = plot._plt()
    fig = plt.figure(figsize=(8.4, 5.8), layout="constrained")
    ax = [fig.add_subplot(2, 2, 1), fig.add_subplot(2, 2, 2, projection="mollweide"),
          fig.add_subplot(2, 2, 3), fig.add_subplot(2, 2, 4)]
    a = np.linspace(0, 2 * np.pi, 721)
    circ = np.stack([np.cos(a), np.sin(a)], axis=1)
    for r, eps, color in ((circle, 0.05, "C0"), (wide, 1.0, "C1")):
        ax[0].plot(a, r.evaluate(circ), color=color, lw=1, label=f"ε = {eps:g}")
        n = len(r.nodal_values)
        ax[0].plot(2 * np.pi * np.arange(n) / n, r.nodal_values, ".", ms=2, color=color)
    c2 = 2 * circle.coeffs[2].real
    ax[0].plot(a, 1 + c2 * np.cos(2 * a), "k--", lw=0.7, label=f"1 + {c2:.4f} cos 2θ")
    ax[0].set_xlabel("θ")
    ax[0].set_ylabel("ρ (uniform = 1)")
    ax[0].set_xlim(0, 2 * np.pi)
    ax[0].legend(fontsize=7)
    ax[0].set_title("(a) minimizer on S¹, β = 1, D = diag(1, 1 + ε)", fontsize=8)

    lon, lat, vals = plot._sphere_values(fe.evaluate)
    mesh = ax[1].pcolormesh(lon, lat, vals, shading="auto", cmap="magma", vmin=0)
    fig.colorbar(mesh, ax=ax[1], orientation="horizontal", shrink=0.6, pad=0.04, label="ρ (uniform = 1)")
    ax[1].set_xticklabels([])
    ax[1].set_yticklabels([])
    ax[1].grid(alpha=0.3)
    ax[1].set_title("(b) minimizer on S², β = 2, D = diag(0.6, 1, 1.4)", fontsize=8)

    ax[2].plot(circ[:, 0], circ[:, 1], color="0.8", lw=0.8)
    xs = np.array([s.positions for s in path.states])                    # (times, 4, 2)
    for j in range(xs.shape[1]):
        ax[2].plot(xs[:, j, 0], xs[:, j, 1], ".", ms=1.5, color="C0")
    ax[2].plot(square.positions[:, 0], square.positions[:, 1], "o", mfc="none", color="0.4", label="start: square")
    x = rect.state.positions
    ax[2].plot(x[:, 0], x[:, 1], "o", color="C3", label=f"rectangle, x1² = {np.mean(x[:, 0] ** 2):.5f}")
    ax[2].set_aspect("equal")
    ax[2].set_xlim(-1.6, 1.6)
    ax[2].set_xlabel("x1")
    ax[2].set_ylabel("x2")
    ax[2].legend(fontsize=7, loc="center")
    ax[2].set_title("(c) four particles, descent, β = 1, D = diag(1, 0.5)", fontsize=8)

    ax[3].plot(flow.times, flow.diagnostics["energy"], "o-", ms=2.5, lw=0.8, color="C0",
               label="100 tokens → 2 clusters")
    ax[3].plot(flow.times[-1] + end.trajectory.times, end.trajectory.diagnostics["energy"], "o-", ms=2.5, lw=0.8,
               color="C0")
    ax[3].plot(small.trajectory.times, small.trajectory.diagnostics["energy"], "s--", ms=2.5, lw=0.8, color="C2",
               label="32 tokens → Dirac at e3")
    ax[3].axhline(np.exp(1.5) / 2, color="k", lw=0.7, ls="--", label="max E = $e^{1.5}/2$")
    ax[3].axhline(two, color="C0", lw=0.7, ls=":")
    ax[3].set_xlabel("t")
    ax[3].set_ylabel("E")
    ax[3].legend(fontsize=7, loc="center right")
    ax[3].set_title("(d) E along the ascent, β = 1, D = diag(0.5, 1, 1.5)", fontsize=8)
    IMAGES.mkdir(exist_ok=True)
    fig.savefig(IMAGES / "energy_extrema.png", dpi=90)
    plt.close(fig)
    print(f"wrote {IMAGES / 'energy_extrema.png'}")


def main():
    t0 = time.perf_counter()
    energies()
    circle, wide = circle_minimizer()
    fe = sphere_minimizer()
    maximizers()
    square, rect, path = stationary_states()
    flow, end, small, two = dynamics()
    figure(circle, wide, fe, square, rect, path, flow, end, small, two)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
