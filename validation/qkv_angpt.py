"""QKV-Norm vs Pre-LN; anGPT's layer map vs nGPT.

What is reproduced, the references and the tolerances: see the docstring of meanfield/_validation/qkv_angpt.py.
Run:  python validation/qkv_angpt.py [--quick] [--output DIR]   (prints the comparison table; writes DIR/qkv_angpt.png,
default validation/figures/)
"""
import sys
from pathlib import Path

from meanfield._validation import script_main

if __name__ == "__main__":
    sys.exit(script_main("qkv_angpt", default_output=str(Path(__file__).resolve().parent / "figures")))
