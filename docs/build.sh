#!/usr/bin/env bash
# Build the HTML documentation with warnings as errors.  Installs nothing: the package and the `docs`
# extra (sphinx, numpydoc, myst-parser) must already be installed, e.g. `pip install -e ".[docs]"`.
# Usage: docs/build.sh [extra sphinx options, e.g. -E for a fresh environment]
# Output: docs/_build/html/index.html.  PYTHON selects the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
exec "$PY" -m sphinx -W -b html "$@" docs docs/_build/html
