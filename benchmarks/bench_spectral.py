"""Cases 2 and 7: the spectral right-hand side in transform units, and the cost per RK stage beside Dedalus.

    python benchmarks/bench_spectral.py [--quick] [--output DIR]

A thin entry point: the implementation is meanfield._bench (_spectral_rhs.py, _dedalus.py); writes
DIR/bench.json and DIR/REPORT.md.
"""
import sys

from meanfield._bench import cli

if __name__ == "__main__":
    sys.exit(cli(prog="python benchmarks/bench_spectral.py", default_cases=["spectral", "dedalus"]))
