"""The ``meanfield`` command: subcommands only parse and dispatch."""
from __future__ import annotations

import argparse
import sys


def _parser():
    p = argparse.ArgumentParser(prog="meanfield", description="Mean-field self-attention dynamics on the sphere.")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="Post-LN vs Peri-LN on S² with the spectral solver; writes a figure.",
                          description="Example: meanfield demo --output demo.png")
    demo.add_argument("--output", default="demo.png", help="figure file (PNG)")
    demo.add_argument("--lmax", type=int, default=48, help="initial band limit")
    demo.add_argument("--beta", type=float, default=4.0)
    demo.add_argument("--t-final", type=float, default=3.0)
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        run_demo(args.output, lmax=args.lmax, beta=args.beta, t_final=args.t_final)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
