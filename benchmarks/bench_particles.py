"""Case 3: particles-sh against dense attention written the way published scripts do it.

    python benchmarks/bench_particles.py [--quick] [--output DIR]

A thin entry point: the implementation is meanfield._bench (_particles.py); writes DIR/bench.json and DIR/REPORT.md.
"""
import sys

from meanfield._bench import cli

if __name__ == "__main__":
    sys.exit(cli(prog="python benchmarks/bench_particles.py", default_cases=["particles"]))
