"""Case 10: whole runs of the exact backend at small n (20–300 tokens) against a hand-written numpy script.

    python benchmarks/bench_small_n.py [--quick] [--output DIR]

A thin entry point: the implementation is meanfield._bench (_small_n.py); writes DIR/bench.json and DIR/REPORT.md.
"""
import sys

from meanfield._bench import cli

if __name__ == "__main__":
    sys.exit(cli(prog="python benchmarks/bench_small_n.py", default_cases=["small-n"]))
