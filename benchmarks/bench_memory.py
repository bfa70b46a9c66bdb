"""Case 6: peak memory of each method at its largest size, each in a fresh process.

    python benchmarks/bench_memory.py [--quick] [--output DIR]

A thin entry point: the implementation is meanfield._bench (_memory.py); writes DIR/bench.json and DIR/REPORT.md.
"""
import sys

from meanfield._bench import cli

if __name__ == "__main__":
    sys.exit(cli(prog="python benchmarks/bench_memory.py", default_cases=["memory"]))
