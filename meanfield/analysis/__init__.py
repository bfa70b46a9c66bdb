"""Analysis of measures and trajectories: linear stability of the uniform measure (growth rates, the most
unstable mode, the noise floor of the ℓ = 1 mode), the equiangular ODE, clusters of particles and
densities, pairwise alignment and its (β, t) phase diagram.

Every name here is also exported at the top level (``mf.growth_rate``, ``mf.particle_clusters``, …).
"""
from ._growth import (growth_rate as growth_rate, growth_rates as growth_rates,
                      most_unstable_mode as most_unstable_mode, UnstableMode as UnstableMode,
                      l1_noise_threshold as l1_noise_threshold, l1_noise_time as l1_noise_time)
from ._equiangular import equiangular as equiangular, equiangular_time as equiangular_time
from ._clusters import (Clusters as Clusters, particle_clusters as particle_clusters,
                        density_clusters as density_clusters, cluster_count as cluster_count,
                        ClusterHistory as ClusterHistory, cluster_history as cluster_history)
from ._alignment import (AlignmentStatistics as AlignmentStatistics, alignment_statistics as alignment_statistics,
                         aligned_fraction as aligned_fraction, alignment_phase_diagram as alignment_phase_diagram)
