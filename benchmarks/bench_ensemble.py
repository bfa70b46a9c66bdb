"""Case 12: ensembles of small particle runs, the replicas batched into one run against one by one and a numpy script.

    python benchmarks/bench_ensemble.py [--quick] [--output DIR]

A thin entry point: the implementation is meanfield._bench (_ensemble.py); writes DIR/bench.json and DIR/REPORT.md.
"""
import sys

from meanfield._bench import cli

if __name__ == "__main__":
    sys.exit(cli(prog="python benchmarks/bench_ensemble.py", default_cases=["ensemble"]))
