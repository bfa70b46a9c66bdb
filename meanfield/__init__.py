"""meanfield: the mean-field (infinite-token) limit of self-attention dynamics on the sphere.

The public surface is exactly what this module imports; everything else lives in private modules.
"""
from ._errors import (MeanfieldError as MeanfieldError, UnsupportedModelError as UnsupportedModelError,
                      ResolutionError as ResolutionError, NonFiniteStateError as NonFiniteStateError,
                      ConvergenceError as ConvergenceError)
from ._measures import Density as Density, Particles as Particles
from ._model import Model as Model
from ._schemes import SCHEMES as SCHEMES, Scheme as Scheme, get_scheme as get_scheme
from ._simulate import (simulate as simulate, resume as resume, Trajectory as Trajectory, Status as Status,
                        BACKENDS as BACKENDS, MeanfieldWarning as MeanfieldWarning)
from ._io import save as save, load as load, ResultFileError as ResultFileError
from .sphere._funk_hecke import (funk_hecke as funk_hecke, funk_hecke_dbeta as funk_hecke_dbeta,
                                 kernel_bandlimit as kernel_bandlimit)
from . import sphere as sphere

# --- analysis (growth rates, equiangular ODE) ---
from .analysis import growth_rate as growth_rate
from .analysis import equiangular as equiangular
from .analysis import (growth_rates as growth_rates, most_unstable_mode as most_unstable_mode,
                       UnstableMode as UnstableMode, l1_noise_threshold as l1_noise_threshold,
                       l1_noise_time as l1_noise_time, equiangular_time as equiangular_time, Clusters as Clusters,
                       particle_clusters as particle_clusters, density_clusters as density_clusters,
                       cluster_count as cluster_count, AlignmentStatistics as AlignmentStatistics,
                       alignment_statistics as alignment_statistics, aligned_fraction as aligned_fraction,
                       alignment_phase_diagram as alignment_phase_diagram)
from ._measures import ZonalDensity as ZonalDensity
from ._compare import sobolev_distance as sobolev_distance, mmd as mmd
# --- energy ---
from ._energy import (energy as energy, energy_estimate as energy_estimate, EnergyEstimate as EnergyEstimate,
                     uniform_energy as uniform_energy, first_variation as first_variation,
                     first_variation_gradient as first_variation_gradient, gradient_flow as gradient_flow,
                     find_stationary as find_stationary, stationary as stationary,
                     minimize_energy as minimize_energy, maximize_energy as maximize_energy,
                     classify as classify, Classification as Classification, FEDensity as FEDensity,
                     SphereMesh as SphereMesh, FESpace as FESpace)
# --- particles ---
from ._attention import (attention_field as attention_field, attention_field_sh as attention_field_sh,
                         AttentionField as AttentionField, particle_velocity as particle_velocity)
from ._ensemble import ensemble as ensemble, EnsembleResult as EnsembleResult, mean_alignment as mean_alignment
from ._sampling import sample_density as sample_density, particles_coefficients as particles_coefficients

# --- sweeps (dask.distributed, imported lazily inside) ---
from ._sweep import (run_sweep as run_sweep, load_sweep as load_sweep, SweepResult as SweepResult,
                     distributed_particles_sh as distributed_particles_sh)

__version__ = "0.1.0"
