"""Normalization schemes: speeds, ranking, crossover, asymptotic rates (Karagodin et al. 2025).

What is reproduced, the references and the tolerances: see the docstring of meanfield/_validation/normalization.py.
Run:  python validation/normalization.py [--quick] [--output DIR]   (prints the comparison table; writes DIR/normalization.png,
default validation/figures/)
"""
import sys
from pathlib import Path

from meanfield._validation import script_main

if __name__ == "__main__":
    sys.exit(script_main("normalization", default_output=str(Path(__file__).resolve().parent / "figures")))
