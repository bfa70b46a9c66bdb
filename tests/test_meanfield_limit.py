"""Particles → mean field: N i.i.d. tokens evolved by particles-sh approach the spectral PDE solution like N^{-1/2}."""
import numpy as np

import meanfield as mf


def test_particles_converge_to_the_pde_at_rate_one_half():
    model = mf.Model(3.0)
    dens = mf.Density.random(24, seed=3, amplitude=0.6)
    pde = mf.simulate(model, dens, 1.0, rtol=1e-11)
    assert pde.success
    ns = np.array([1000, 3000, 10000, 30000, 100000])
    dist = []
    for n in ns:
        runs = [mf.simulate(model, mf.sample_density(dens, int(n), seed=s), 1.0, backend="particles-sh", step=0.1)
                for s in range(3)]
        # H^{-1} at the PDE's band limit: E‖μ_N − μ‖² = O(1/N) exactly at a fixed truncation
        dist.append(np.mean([mf.sobolev_distance(r.final, pde.final, 1.0, lmax=24) for r in runs]))
    slope = np.polyfit(np.log(ns), np.log(dist), 1)[0]
    assert abs(slope + 0.5) < 0.1, (slope, dist)
