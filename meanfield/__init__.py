"""meanfield: the mean-field (infinite-token) limit of self-attention dynamics on the sphere.

The public surface is exactly what this module names: the core objects are imported here; the larger
tool sets (analysis, energy, particles helpers, sweeps) are listed in :data:`_LAZY` and imported on
first use, so that ``import meanfield`` stays fast.
"""
from importlib import import_module as _import_module

from ._errors import (MeanfieldError as MeanfieldError, UnsupportedModelError as UnsupportedModelError,
                      ResolutionError as ResolutionError, NonFiniteStateError as NonFiniteStateError,
                      ConvergenceError as ConvergenceError, InsufficientMemoryError as InsufficientMemoryError,
                      MeanfieldWarning as MeanfieldWarning)
from ._measures import (Density as Density, Particles as Particles, ZonalDensity as ZonalDensity,
                        mean_alignment as mean_alignment)
from ._model import Model as Model
from ._schemes import SCHEMES as SCHEMES, Scheme as Scheme, get_scheme as get_scheme
from ._user_schemes import register_scheme as register_scheme, unregister_scheme as unregister_scheme
from ._trajectory import Trajectory as Trajectory, Status as Status
from ._simulate import simulate as simulate, resume as resume, particle_velocity as particle_velocity
from .backends._registry import BACKENDS as BACKENDS, register_backend as register_backend
from ._io import save as save, load as load, ResultFileError as ResultFileError
from .sphere._funk_hecke import (funk_hecke as funk_hecke, funk_hecke_dbeta as funk_hecke_dbeta,
                                 kernel_bandlimit as kernel_bandlimit)
from . import sphere as sphere

__version__ = "0.1.0"

# name -> private module that defines it (imported on first attribute access)
_LAZY = {
    # analysis: linear theory, the equiangular ODE, clusters and alignment
    **dict.fromkeys(["growth_rate", "growth_rates", "most_unstable_mode", "UnstableMode", "l1_noise_threshold",
                     "l1_noise_time", "equiangular", "equiangular_time", "Clusters", "particle_clusters",
                     "density_clusters", "cluster_count", "cluster_history", "ClusterHistory",
                     "AlignmentStatistics", "alignment_statistics",
                     "aligned_fraction", "alignment_phase_diagram"], ".analysis"),
    # distances between measures
    **dict.fromkeys(["sobolev_distance", "mmd", "wasserstein_distance"], "._compare"),
    **dict.fromkeys(["convergence_in_n", "convergence_in_l", "ConvergenceResult"], "._convergence"),
    # the interaction energy E_{β,D}
    **dict.fromkeys(["energy", "energy_estimate", "EnergyEstimate", "uniform_energy", "first_variation",
                     "first_variation_gradient", "gradient_flow", "find_stationary", "stationary",
                     "minimize_energy", "maximize_energy", "classify", "Classification", "FEDensity",
                     "SphereMesh", "FESpace", "EnergyResult", "MinimizingDensity", "OptimalityCertificate",
                     "MaximizingParticles", "MaximizerCertificate", "StationarityReport", "StationaryResult"],
                    "._energy"),
    # particles: attention fields, ensembles, sampling
    **dict.fromkeys(["attention_field", "attention_field_sh", "AttentionField"], "._attention"),
    **dict.fromkeys(["ensemble"], "._ensemble"),
    "EnsembleResult": "._ensemble_result",
    **dict.fromkeys(["sample_density", "particles_coefficients"], "._sampling"),
    # sweeps on dask.distributed
    **dict.fromkeys(["run_sweep", "load_sweep", "SweepResult", "distributed_particles_sh"], "._sweep"),
}


def __getattr__(name):
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'meanfield' has no attribute {name!r}") from None
    value = getattr(_import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


# the public names, eager and lazy (``from meanfield import *`` imports the lazy ones on demand)
__all__ = sorted({name for name in globals() if not name.startswith("_") and name not in ("annotations",)}
                 | set(_LAZY))
