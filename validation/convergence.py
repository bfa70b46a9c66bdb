"""Mean-field PDE vs particles: convergence in N for each sphere scheme.

What is reproduced, the references and the tolerances: see the docstring of meanfield/_validation/convergence.py.
Run:  python validation/convergence.py [--quick] [--output DIR]   (prints the comparison table; writes DIR/convergence.png,
default validation/figures/)
"""
import sys
from pathlib import Path

from meanfield._validation import script_main

if __name__ == "__main__":
    sys.exit(script_main("convergence", default_output=str(Path(__file__).resolve().parent / "figures")))
