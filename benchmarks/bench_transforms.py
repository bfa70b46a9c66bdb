"""Case 1: our S² transforms and gradient against pyshtools' default path.

    python benchmarks/bench_transforms.py [--quick] [--output DIR]

A thin entry point: the implementation is meanfield._bench (_transforms.py); writes DIR/bench.json and DIR/REPORT.md.
"""
import sys

from meanfield._bench import cli

if __name__ == "__main__":
    sys.exit(cli(prog="python benchmarks/bench_transforms.py", default_cases=["transforms"]))
