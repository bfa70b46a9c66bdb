"""meanfield's benchmarks: ``python -m benchmarks [--quick] [--output DIR] [case ...]`` from the repository root.

The implementations live in :mod:`meanfield._bench` (one module per case), which ``meanfield bench`` runs
too; the ``bench_*.py`` files here are thin entry points (``python benchmarks/bench_transforms.py --quick``).
Each run writes ``DIR/bench.json`` and ``DIR/REPORT.md`` with its plots.
"""
from meanfield._bench import CASES as CASES  # noqa: F401  (name → module of meanfield._bench)
