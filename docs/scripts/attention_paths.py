"""Cost of one right-hand side on each attention path of the spectral backend (numbers in numerics.md).

S², Post-LN, softmax, β = 2, a smooth random density; the three paths are selected by the model:
fast (Q = K = V = I), general V (V a rotation about the z axis), quadrature (Q = diag(1, 0.5, 1)).
Timing: median of 20 evaluations of SpectralBackend.rhs after one warm-up (threads: ducc0 default).

Run:  python docs/scripts/attention_paths.py
"""
import os
import time

import numpy as np

import meanfield as mf
from meanfield.backends._spectral import SpectralBackend

ROT = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
MODELS = {"fast": mf.Model(2.0), "general-v": mf.Model(2.0, V=ROT),
          "quadrature": mf.Model(2.0, Q=np.diag([1.0, 0.5, 1.0]))}


def main():
    print(f"cpus available: {len(os.sched_getaffinity(0))}")
    print(f"{'L':>4s} " + " ".join(f"{k:>14s}" for k in MODELS) + "   (ms per right-hand side)")
    for L in (16, 32, 48):
        rho = mf.Density.random(L, seed=0, degree=4)
        row = []
        for name, model in MODELS.items():
            b = SpectralBackend(model, rho)
            assert b.attention.path == name, (b.attention.path, name)
            b.rhs(0.0, b.y)
            ts = []
            for _ in range(20):
                t0 = time.perf_counter()
                b.rhs(0.0, b.y)
                ts.append(time.perf_counter() - t0)
            row.append(1e3 * np.median(ts))
        print(f"{L:4d} " + " ".join(f"{v:14.2f}" for v in row))


if __name__ == "__main__":
    main()
