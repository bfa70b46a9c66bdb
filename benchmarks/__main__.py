"""Run the registered benchmark cases: ``python -m benchmarks [--quick] [--output DIR] [case ...]``."""
from __future__ import annotations

import argparse
import importlib

from . import CASES


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("cases", nargs="*", metavar="case", help=f"cases to run (default: all of {sorted(CASES)})")
    ap.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    ap.add_argument("--output", default="bench-out", help="folder for the JSON results (default: bench-out)")
    args = ap.parse_args(argv)
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; choose from {sorted(CASES)}")
    forwarded = (["--quick"] if args.quick else []) + ["--output", args.output]
    for name in args.cases or list(CASES):
        print(f"\n## {name}\n")
        importlib.import_module(CASES[name]).main(forwarded)


if __name__ == "__main__":
    main()
