"""meanfield's benchmarks: ``python -m benchmarks [--quick] [--output DIR] [case ...]`` from the repository root.

A case is a module with ``main(argv)`` that accepts ``--quick`` and ``--output DIR``, prints a markdown
table and writes ``DIR/<case>.json``.  Register it in :data:`CASES` (name → module).
"""

CASES: dict[str, str] = {
    "transforms": "benchmarks.bench_transforms",  # our S² transforms/gradient against pyshtools
    "spectral": "benchmarks.bench_spectral",      # one spectral right-hand side in transform units
}
