"""``python -m benchmarks [--quick] [--output DIR] [case ...]``: the same code as ``meanfield bench``."""
import sys

from meanfield._bench import cli

if __name__ == "__main__":
    sys.exit(cli(prog="python -m benchmarks"))
