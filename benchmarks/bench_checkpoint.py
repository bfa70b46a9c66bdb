"""Case 9: checkpoint writes of a run with many saved states, against the run saved once at its end.

    python benchmarks/bench_checkpoint.py [--quick] [--output DIR]

A thin entry point: the implementation is meanfield._bench (_checkpoint.py); writes DIR/bench.json and DIR/REPORT.md.
"""
import sys

from meanfield._bench import cli

if __name__ == "__main__":
    sys.exit(cli(prog="python benchmarks/bench_checkpoint.py", default_cases=["checkpoint"]))
