"""Case 5: the hybrid backend to full clustering against exact particles at equal observable error.

    python benchmarks/bench_hybrid.py [--quick] [--output DIR]

A thin entry point: the implementation is meanfield._bench (_hybrid.py); writes DIR/bench.json and DIR/REPORT.md.
"""
import sys

from meanfield._bench import cli

if __name__ == "__main__":
    sys.exit(cli(prog="python benchmarks/bench_hybrid.py", default_cases=["hybrid"]))
