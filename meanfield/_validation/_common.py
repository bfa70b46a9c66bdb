"""Rows of a comparison table and the small helpers every validation module shares."""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

DPI = 90


class Row(NamedTuple):
    """One line of a comparison: a quantity, its reference value, ours, the error and whether it passed.

    ``reference`` and ``ours`` are numbers, or strings for orderings and outcomes; ``error`` is
    |ours − reference| (``relative=True``: divided by |reference|), or 0/1 for strings;
    ``passed`` is ``error ≤ tolerance``; ``relative`` says whether ``error`` and ``tolerance`` are relative.
    """

    quantity: str
    reference: float | str
    ours: float | str
    error: float
    tolerance: float
    passed: bool
    relative: bool = False     # the error (and so the tolerance) is relative to |reference|


def compare(quantity: str, reference, ours, tolerance: float, *, relative: bool = False) -> Row:
    """A numeric row: error |ours − reference| (relative to |reference| with ``relative=True``)."""
    reference, ours = float(reference), float(ours)
    err = abs(ours - reference)
    if relative:
        err = err / abs(reference) if reference != 0 else math.inf
    ok = bool(np.isfinite(err) and err <= tolerance)
    return Row(quantity, reference, ours, float(err), float(tolerance), ok, relative)


def same(quantity: str, reference: str, ours: str) -> Row:
    """A row for an ordering or an outcome: passes iff the two strings are equal (error 0 or 1)."""
    ok = str(reference) == str(ours)
    return Row(quantity, str(reference), str(ours), 0.0 if ok else 1.0, 0.0, ok)


def fmt(v, resolution: float = 0.0) -> str:
    """A table cell: strings as they are, numbers with 7 significant digits, or as many more as it takes to show
    differences of ``resolution`` (a row's tolerance: a reference given to 12 digits is shown to 12), up to 17."""
    if isinstance(v, str):
        return v
    v = float(v)
    if v == 0:
        return "0"
    if not np.isfinite(v):
        return str(v)
    digits, decimals = 7, 3          # significant digits in fixed notation, decimals in exponent notation
    if np.isfinite(resolution) and resolution > 0:
        needed = math.floor(math.log10(abs(v))) - math.floor(math.log10(resolution)) + 1
        digits, decimals = min(17, max(digits, needed)), min(16, max(decimals, needed - 1))
    return f"{v:.{digits}g}" if 1e-3 <= abs(v) < 1e7 else f"{v:.{decimals}e}"


def _resolution(row: Row) -> float:
    """The difference the reference and ours columns must show: the tolerance, in absolute terms."""
    if isinstance(row.reference, str):
        return 0.0
    return row.tolerance * abs(row.reference) if row.relative else row.tolerance


def table(rows, markdown: bool = True) -> str:
    """The rows as a Markdown table (or plain aligned text); a relative error and its tolerance are marked "(rel.)"."""
    head = ("quantity", "reference", "ours", "error", "tolerance", "pass")
    rel = " (rel.)"         # error and tolerance relative to |reference| (the quantities do not say it)
    body = [(r.quantity, fmt(r.reference, _resolution(r)), fmt(r.ours, _resolution(r)),
             fmt(r.error) + (rel if r.relative else ""), fmt(r.tolerance) + (rel if r.relative else ""),
             "pass" if r.passed else "**FAIL**" if markdown else "FAIL") for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(out)


def figure_path(outdir, name: str) -> Path:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    return out / f"{name}.png"


def plt():
    from ..plot import _plt

    return _plt()


@contextlib.contextmanager
def quiet():
    """Silence MeanfieldWarning (runs that end on purpose, e.g. at a resolution loss) inside the block."""
    import warnings

    from .._errors import MeanfieldWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MeanfieldWarning)
        yield


def equiangular_particles(n: int, seed: int = 0):
    """n orthonormal directions in R^n (ρ0 = 0), randomly rotated so no coordinate is special."""
    from .._measures import Particles

    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return Particles(q)


def pair_gap(particles) -> tuple[float, float]:
    """(mean, spread) of 1 − ⟨θ_i, θ_j⟩ over pairs i < j, from squared distances (no cancellation near 1)."""
    from scipy.spatial.distance import pdist

    u = 0.5 * pdist(particles.positions, "sqeuclidean")
    return float(u.mean()), float(u.max() - u.min())
