"""Case 8: sweeps on dask.distributed against serial execution, and distributed particles-sh per step.

    python benchmarks/bench_sweep.py [--quick] [--output DIR]

A thin entry point: the implementation is meanfield._bench (_sweep.py); writes DIR/bench.json and DIR/REPORT.md.
"""
import sys

from meanfield._bench import cli

if __name__ == "__main__":
    sys.exit(cli(prog="python benchmarks/bench_sweep.py", default_cases=["sweep"]))
