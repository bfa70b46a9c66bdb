"""The sphere layer: grids, transforms, spin-1 calculus, non-uniform evaluation, Funk–Hecke multipliers.

S² (d = 3) on ducc0 with Gauss–Legendre grids (see :mod:`meanfield.sphere._sh` for the conventions),
the circle S¹ on FFT, zonal functions on any S^{d-1} by Gaussian quadrature in t = ⟨x, e⟩, and pyshtools interop.
"""
from ._funk_hecke import (funk_hecke as funk_hecke, funk_hecke_dbeta as funk_hecke_dbeta,
                          multiplier_ratios as multiplier_ratios, kernel_bandlimit as kernel_bandlimit,
                          kernel_truncation_error as kernel_truncation_error)
from ._sh import (SphereGrid as SphereGrid, nalm as nalm, lm_arrays as lm_arrays, lm_index as lm_index,
                  synthesis as synthesis, analysis as analysis, gradient as gradient, divergence as divergence,
                  laplacian as laplacian, apply_degree as apply_degree, resize as resize,
                  degree_power as degree_power, synthesis_points as synthesis_points,
                  gradient_points as gradient_points, adjoint_synthesis_points as adjoint_synthesis_points,
                  angles_to_points as angles_to_points, points_to_angles as points_to_angles,
                  tangent_basis as tangent_basis, to_ambient as to_ambient, ylm as ylm, NTHREADS as NTHREADS)
from ._circle import (circle_grid_size as circle_grid_size, circle_angles as circle_angles,
                      circle_points as circle_points, circle_synthesis as circle_synthesis,
                      circle_analysis as circle_analysis, circle_derivative as circle_derivative,
                      circle_evaluate as circle_evaluate, circle_adjoint_points as circle_adjoint_points,
                      circle_adjoint_error as circle_adjoint_error)
from ._harmonic_dimension import harmonic_dimension as harmonic_dimension
from ._zonal import (ZonalGrid as ZonalGrid, gegenbauer as gegenbauer, gegenbauer_norms as gegenbauer_norms,
                     zonal_analysis as zonal_analysis, zonal_synthesis as zonal_synthesis)
from ._interop import (to_shcoeffs as to_shcoeffs, from_shcoeffs as from_shcoeffs, rotate as rotate,
                       rotation_matrix as rotation_matrix, mollweide_grid as mollweide_grid)
