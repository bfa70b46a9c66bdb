"""The interaction energy E_{β,D}(μ) = (1/2β) ∬ e^{β⟨x, Dy⟩} dμ dμ: evaluation, first variation, gradient
flows, stationary states, minimizers (basix FE on S², Fourier nodes on S¹), maximizers, classification.

A private package: its public names (``meanfield.energy``, ``meanfield.minimize_energy``, …) are
re-exported by ``meanfield/__init__.py``.  (It is not called ``meanfield.energy`` because that name is
the function E_{β,D}.)
"""
from ._energy import (energy as energy, energy_estimate as energy_estimate, EnergyEstimate as EnergyEstimate,
                      uniform_energy as uniform_energy, first_variation as first_variation,
                      first_variation_gradient as first_variation_gradient)
from ._flow import gradient_flow as gradient_flow, find_stationary as find_stationary, dissipation as dissipation
from ._kernel import flow_model as flow_model
from ._stationary import stationary as stationary, StationarityReport as StationarityReport
from ._fem import SphereMesh as SphereMesh, FESpace as FESpace, FEDensity as FEDensity
from ._minimize import (minimize_energy as minimize_energy, MinimizingDensity as MinimizingDensity,
                        OptimalityCertificate as OptimalityCertificate)
from ._maximize import (maximize_energy as maximize_energy, MaximizingParticles as MaximizingParticles,
                        MaximizerCertificate as MaximizerCertificate)
from ._classify import classify as classify, Classification as Classification
from ._problem import solve_energy as solve_energy
from ._results import EnergyResult as EnergyResult, StationaryResult as StationaryResult
