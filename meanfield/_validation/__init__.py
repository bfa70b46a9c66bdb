"""The validation suite: one module per published result, each with ``run(quick, outdir) -> list[Row]``.

A :class:`Row` is (quantity, reference, ours, error, tolerance, passed); every module also writes one
figure ``<outdir>/<name>.png`` and documents, in its docstring, the statement it reproduces, where the
reference comes from and which independent computations are compared.  ``meanfield validate [--quick]
[--output DIR]`` runs them all (:func:`main`): it prints the comparison table and writes ``DIR/REPORT.md``,
``DIR/validation.json`` and ``DIR/figures/*.png``.  The scripts ``validation/<name>.py`` run one module
each (:func:`script_main`).
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from ._common import Row, fmt, table

#: The results, in report order: module name → one-line title (the modules are imported on demand).
RESULTS = {
    "normalization": "Normalization schemes: speeds, ranking, crossover, asymptotic rates (Karagodin et al. 2025)",
    "convergence": "Mean-field PDE vs particles: convergence in N for each sphere scheme",
    "linear": "Linear growth rates and the most unstable mode: formula, PDE, particles; ℓ = 1 noise floor",
    "energy": "Interaction energy (Burger et al. 2025): minimizers, four particles, maximizer switch, flow outcomes",
    "qkv_angpt": "QKV-Norm vs Pre-LN; anGPT's layer map vs nGPT",
}


def _module(name: str):
    if name not in RESULTS:
        raise ValueError(f"unknown validation result {name!r}; choose from {sorted(RESULTS)}.")
    return importlib.import_module(f"{__name__}.{name}")


def run_result(name: str, quick: bool, outdir) -> tuple[list, float, str | None]:
    """Run one result: (rows, seconds, error text or None).  An exception, or a module that returns no rows, becomes
    one failing row.

    Raises
    ------
    KeyboardInterrupt
        Ctrl-C or SIGTERM during the result (a run it makes is interrupted, or the signal's stop request is
        found after an error or at the end): an interrupted run is no result, and its rows would be false failures.
    """
    from .._simulate import STOP_REQUESTED, propagating_interrupts, stop_if_requested

    t0 = time.perf_counter()
    try:
        with propagating_interrupts():
            rows = list(_module(name).run(quick, outdir))
        err = None
    except Exception as e:          # report, do not hide: the suite still writes its report
        if STOP_REQUESTED.is_set():         # an error of a run the stop request cut short, not of the module
            raise KeyboardInterrupt(f"{name} was interrupted") from e
        err = "".join(traceback.format_exception_only(type(e), e)).strip()
        rows = [Row(f"{name}: the module raised {type(e).__name__}", "runs", err, 1.0, 0.0, False)]
        traceback.print_exc()
    stop_if_requested()             # a signal whose KeyboardInterrupt was swallowed (raised inside a finalizer)
    if not rows:                    # nothing checked is no pass (the suite's status was 0 for a result without rows)
        rows = [Row(f"{name}: the module returned no checks", "at least one check", "none", 1.0, 0.0, False)]
    return rows, time.perf_counter() - t0, err


def _summary_line(name, rows, seconds):
    bad = sum(not r.passed for r in rows)
    return f"{name}: {len(rows) - bad}/{len(rows)} passed in {seconds:.1f} s"


def _docstring(name):
    """The module docstring as Markdown: Sphinx roles (:func:`meanfield.x`) become code spans (`mf.x`)."""
    import re

    doc = (_module(name).__doc__ or "").strip()
    doc = re.sub(r":\w+:`~?meanfield\.([^`]+)`", r"`mf.\1`", doc)
    return re.sub(r":\w+:`([^`]+)`", r"`\1`", doc)


def write_report(results: dict, outdir: Path, quick: bool, total: float) -> None:
    """DIR/REPORT.md and DIR/validation.json from {name: (rows, seconds, error)}."""
    import meanfield

    n_rows = sum(len(r[0]) for r in results.values())
    n_bad = sum(not row.passed for r in results.values() for row in r[0])
    lines = ["# Validation report", "",
             f"`meanfield validate{' --quick' if quick else ''}` — meanfield {meanfield.__version__}, "
             f"Python {platform.python_version()}, {platform.machine()}; {total:.0f} s in total.", "",
             f"**{n_rows - n_bad} of {n_rows} checks passed"
             + (".**" if n_bad == 0 else f"; {n_bad} failed.**"), "",
             "Every row compares our number (*ours*) with a *reference*: a closed form, a reference value (each "
             "listed with its origin under \"Reference values\" in docs/validation.md), "
             "or an independent computation (the equiangular ODE, a second integrator, the PDE against "
             "particles).  *error* is |ours − reference| (divided by |reference| where marked \"(rel.)\"), *tolerance* "
             "comes from the method's error (quadrature, time stepping, Monte Carlo standard errors), never "
             "from the observed error.  Each section states what is reproduced and from which computation; "
             "the modules are in `meanfield/_validation/`, the scripts in `validation/`.", "",
             "| result | checks | passed | time |", "|---|---|---|---|"]
    for name, (rows, secs, _) in results.items():
        lines.append(f"| [{name}](#{name}) | {len(rows)} | {sum(r.passed for r in rows)} | {secs:.1f} s |")
    for name, (rows, secs, err) in results.items():
        lines += ["", f"## {name}", "", f"*{RESULTS[name]}*", ""]
        doc = _docstring(name)
        if doc:
            lines += [doc, ""]
        fig = outdir / "figures" / f"{name}.png"
        if fig.exists():
            lines += [f"![{name}](figures/{name}.png)", ""]
        if err:
            lines += [f"**The module raised:** `{err}`", ""]
        lines.append(table(rows, markdown=True))
    (outdir / "REPORT.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = {"quick": quick, "version": meanfield.__version__, "seconds": total, "passed": n_bad == 0,
            "results": {name: {"seconds": secs, "error": err,
                               "rows": [dict(zip(Row._fields, (r.quantity, r.reference if isinstance(r.reference, str)
                                                               else float(r.reference),
                                                               r.ours if isinstance(r.ours, str) else float(r.ours),
                                                               float(r.error), float(r.tolerance), bool(r.passed),
                                                               bool(r.relative))))
                                        for r in rows]}
                        for name, (rows, secs, err) in results.items()}}
    # strict JSON: a failing row's NaN or inf (a run that did not finish) as "nan", "inf", as meanfield.io writes them
    from .._io import _finite_json

    (outdir / "validation.json").write_text(json.dumps(_finite_json(data), indent=1, ensure_ascii=False,
                                                       allow_nan=False) + "\n", encoding="utf-8")


def run_all(quick: bool, outdir, names=None) -> dict:
    """Run the results (all by default) with figures in ``outdir/figures``; returns {name: (rows, s, error)}."""
    outdir = Path(outdir)
    figs = outdir / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names or RESULTS:
        print(f"[validate] {name} …", flush=True)
        rows, secs, err = run_result(name, quick, figs)
        results[name] = (rows, secs, err)
        print(f"[validate] {_summary_line(name, rows, secs)}", flush=True)
    return results


def main(args) -> int:
    """``meanfield validate``: run every result, print the table, write REPORT.md and validation.json.

    ``args`` has ``quick`` (bool) and ``output`` (folder).  Returns 0 iff every check passed, 130 when interrupted
    (Ctrl-C, SIGTERM): then nothing in the folder is written or replaced, the figures included, since the suite
    makes them in a hidden folder beside and moves them in only once every result has run.
    """
    from ._common import quiet

    t0 = time.perf_counter()
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():     # mkdir's "[Errno 17] File exists" did not say what to give
        raise ValueError(f"--output {str(outdir)!r} is a file; give a folder (created if missing) for REPORT.md, "
                         "validation.json and the figures.")
    try:
        with quiet(), _staged_figures(outdir) as staging:
            results = run_all(bool(args.quick), staging)
    except KeyboardInterrupt:
        print(f"meanfield validate: interrupted; no report written ({outdir / 'REPORT.md'}, validation.json and "
              "the figures, if there, are those of an earlier run).", file=sys.stderr)
        return 130
    total = time.perf_counter() - t0
    write_report(results, outdir, bool(args.quick), total)
    rows = [r for res in results.values() for r in res[0]]
    print()
    print(table(rows, markdown=False))
    print()
    for name, (rs, secs, _) in results.items():
        print(_summary_line(name, rs, secs))
    bad = sum(not r.passed for r in rows)
    print(f"{len(rows) - bad}/{len(rows)} checks passed in {total:.1f} s; report: {outdir / 'REPORT.md'}")
    return 0 if bad == 0 else 1


@contextlib.contextmanager
def _staged_figures(outdir: Path):
    """A hidden folder in ``outdir`` for :func:`run_all`; its figures replace ``outdir/figures/*`` only if the
    block completes (an interrupted suite must not mix its figures into an earlier report)."""
    import shutil
    import tempfile

    outdir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=outdir, prefix=".validate-partial-"))
    try:
        yield staging
        (outdir / "figures").mkdir(exist_ok=True)
        for fig in (staging / "figures").iterdir():
            os.replace(fig, outdir / "figures" / fig.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def script_main(name: str, argv=None, default_output=None) -> int:
    """The body of ``validation/<name>.py``: run one result, print its table, write its figure."""
    import argparse

    from ._common import quiet

    _module(name)
    p = argparse.ArgumentParser(prog=f"validation/{name}.py", description=RESULTS[name])
    p.add_argument("--quick", action="store_true", help="the reduced run (as in CI)")
    p.add_argument("--output", default=default_output or "validation/figures", help="folder for the figure")
    args = p.parse_args(argv)
    try:
        with quiet():
            rows, secs, _ = run_result(name, args.quick, Path(args.output))
    except KeyboardInterrupt:
        print(f"validation/{name}.py: interrupted; no table.", file=sys.stderr)
        return 130
    print(RESULTS[name])
    print(table(rows, markdown=False))
    print(_summary_line(name, rows, secs) + f"; figure: {Path(args.output) / (name + '.png')}")
    return 0 if all(r.passed for r in rows) else 1


__all__ = ["RESULTS", "Row", "main", "run_all", "run_result", "script_main", "write_report", "fmt"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(script_main(sys.argv[1], sys.argv[2:]))
