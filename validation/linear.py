"""Linear growth rates and the most unstable mode: formula, PDE, particles; ℓ = 1 noise floor.

What is reproduced, the references and the tolerances: see the docstring of meanfield/_validation/linear.py.
Run:  python validation/linear.py [--quick] [--output DIR]   (prints the comparison table; writes DIR/linear.png,
default validation/figures/)
"""
import sys
from pathlib import Path

from meanfield._validation import script_main

if __name__ == "__main__":
    sys.exit(script_main("linear", default_output=str(Path(__file__).resolve().parent / "figures")))
