"""Case 4: accuracy per cost (error against CPU time) for spectral, particles-sh and exact particles.

    python benchmarks/bench_accuracy.py [--quick] [--output DIR]

A thin entry point: the implementation is meanfield._bench (_accuracy.py); writes DIR/bench.json and DIR/REPORT.md.
"""
import sys

from meanfield._bench import cli

if __name__ == "__main__":
    sys.exit(cli(prog="python benchmarks/bench_accuracy.py", default_cases=["accuracy"]))
