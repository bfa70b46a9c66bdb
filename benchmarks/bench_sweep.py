"""Benchmark: sweep throughput against serial execution, and distributed particles-sh per step (issue 10).

    python benchmarks/bench_sweep.py [--quick] [--output DIR]

A thin wrapper: the implementation is meanfield/_sweep/_bench.py (see its docstring).
"""
import sys

from meanfield._sweep._bench import main

if __name__ == "__main__":
    sys.exit(main())
