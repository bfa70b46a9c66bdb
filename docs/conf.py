"""Sphinx configuration of the meanfield documentation.

Build (warnings are errors):  python -m sphinx -W -b html docs docs/_build/html   (or docs/build.sh)
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import meanfield  # noqa: E402  (the installed package; `pip install -e .` puts the checkout on the path)

project = "meanfield"
author = "the meanfield developers"
copyright = "the meanfield developers"
version = release = meanfield.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "meanfield_docs",          # docs/_ext/meanfield_docs.py: the scheme table from the registry, the API catch-all
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "scripts", "_ext", "Thumbs.db", ".DS_Store"]

# MyST: $…$ and $$…$$ math, ::: fences, definition lists, anchors for ## headings
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc + numpydoc
autodoc_member_order = "bysource"
autodoc_typehints = "none"             # the numpydoc "Parameters" sections carry the types
numpydoc_show_class_members = False    # members are listed by autodoc's :members:, once
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True

# Docstrings write norms and absolute values with bars (|v|, ‖A‖ is fine), which reStructuredText would
# read as substitution references: escape bars outside inline literals before numpydoc/docutils see them.
meanfield_autodoc_skip = {}


def _escape_bars(app, what, name, obj, options, lines):
    import re

    literal = re.compile(r"(``.*?``|`[^`]*`)")
    for i, line in enumerate(lines):
        parts = literal.split(line)
        lines[i] = "".join(p if k % 2 else p.replace("|", r"\|") for k, p in enumerate(parts))


def setup(app):
    app.connect("autodoc-process-docstring", _escape_bars, priority=400)


html_theme = "alabaster"
html_title = f"meanfield {release}"
html_static_path = []
html_theme_options = {"description": "Mean-field self-attention dynamics on the sphere", "fixed_sidebar": True}
