"""Interaction energy (Burger et al. 2025): minimizers, four particles, maximizer switch, flow outcomes.

What is reproduced, the references and the tolerances: see the docstring of meanfield/_validation/energy.py.
Run:  python validation/energy.py [--quick] [--output DIR]   (prints the comparison table; writes DIR/energy.png,
default validation/figures/)
"""
import sys
from pathlib import Path

from meanfield._validation import script_main

if __name__ == "__main__":
    sys.exit(script_main("energy", default_output=str(Path(__file__).resolve().parent / "figures")))
