"""Analysis tools: linear stability, the equiangular ODE, clusters (more to come)."""
from ._growth import growth_rate as growth_rate
