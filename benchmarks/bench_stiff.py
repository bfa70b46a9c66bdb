"""Case 11: stiff particle runs (USA at large β), the implicit methods against rk45.

    python benchmarks/bench_stiff.py [--quick] [--output DIR]

A thin entry point: the implementation is meanfield._bench (_stiff.py); writes DIR/bench.json and DIR/REPORT.md.
"""
import sys

from meanfield._bench import cli

if __name__ == "__main__":
    sys.exit(cli(prog="python benchmarks/bench_stiff.py", default_cases=["stiff"]))
