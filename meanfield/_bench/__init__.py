"""The performance report: ``meanfield bench [--quick] --output DIR`` and ``python -m benchmarks``.

Each case is one module with ``NAME``, ``TITLE``, ``run(quick=False, **sizes) -> dict`` and
``report(result, out_dir) -> str`` (a markdown section; it writes its PNG figures into ``out_dir``).
:func:`run_cases` runs the chosen cases and writes ``DIR/bench.json`` and ``DIR/REPORT.md``.

JSON layout: ``{"meta": {...machine, cores, load, command...}, "cases": {name: result}}``; a result has
``status`` ("ok", "not available" or "error" with ``error``), ``comparisons`` (each with ``ours_s``,
``alternative_s`` and ``speedup`` = alternative / ours, all measured in this run), ``targets`` (the goals
of the issue and whether this run meets them), ``references`` (figures measured elsewhere: never
ratios of this run) and the case's own rows.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

from . import _common as C

CASES: dict[str, str] = {
    "transforms": "._transforms",   # 1. transforms and gradients vs pyshtools
    "spectral": "._spectral_rhs",   # 2. spectral RHS in units of one scalar transform
    "particles": "._particles",     # 3. particles-sh vs dense attention as published scripts write it
    "accuracy": "._accuracy",       # 4. error against CPU time: spectral, particles-sh, exact particles
    "hybrid": "._hybrid",           # 5. hybrid to full clustering vs exact particles at equal error
    "memory": "._memory",           # 6. peak memory of each at its largest size
    "dedalus": "._dedalus",         # 7. spectral cost per RK stage vs the Dedalus anchor
    "sweep": "._sweep",             # 8. dask sweeps vs serial; distributed particles-sh vs one process
    "checkpoint": "._checkpoint",   # 9. checkpoint writes of a run with many saved states vs no checkpoint
    "small-n": "._small_n",         # 10. whole exact-backend runs at n ≤ 300 vs a hand-written numpy script
    "stiff": "._stiff",             # 11. stiff particle runs: implicit methods (bdf, radau) vs rk45
    "ensemble": "._ensemble",       # 12. mf.ensemble's batched replicas vs one by one and a batched numpy script
}


def case_module(name: str):
    return importlib.import_module(CASES[name], __name__)


def run_cases(names=None, quick: bool = False, output="bench-out", sizes: dict | None = None,
              command: str | None = None, echo=None) -> dict:
    """Run the benchmark cases ``names`` (a name or a list of names; default: all) and write ``output/bench.json``
    and ``REPORT.md``.

    ``sizes`` maps a case name to keyword overrides of its ``run`` (e.g. ``{"transforms": {"sizes": [16]}}``),
    for tests and quick looks.  A case that raises is recorded with status "error" and the others still run.

    Raises
    ------
    ValueError
        An unknown case (in ``names`` or ``sizes``), or an ``output`` that is a file or a folder that cannot be created or written: refused
        before any case runs (found at the end, it lost every measurement of the run).
    KeyboardInterrupt
        Ctrl-C or SIGTERM during a case (a run it times is interrupted): nothing is written, since timings
        and checks of interrupted runs are no results; ``output``'s earlier bench.json and REPORT.md stay.
    """
    echo = echo or _say
    names = list(CASES) if not names else [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise ValueError(f"unknown benchmark case(s) {unknown}; choose from {list(CASES)}.")
    unknown = [n for n in (sizes or {}) if n not in CASES]
    if unknown:        # a misspelt key left the case at its default sizes, silently
        raise ValueError(f"`sizes` has unknown benchmark case(s) {unknown}; choose from {list(CASES)}.")
    out = output_folder(output)
    meta = dict(date=C.now(), quick=quick, command=command or " ".join(sys.argv), cases=names,
                machine=C.machine(), loadavg_start=C.loadavg())
    counters_all = C.cpu_counters()
    results = {}
    t_all = time.perf_counter()
    for name in names:
        echo(f"[bench] {name} ...")
        mod = case_module(name)
        load0, counters0, t0 = C.loadavg(), C.cpu_counters(), time.perf_counter()
        res = _run_case(name, mod, quick, (sizes or {}).get(name, {}))
        res.setdefault("status", "ok")
        res.setdefault("title", getattr(mod, "TITLE", name))
        res.update(seconds=round(time.perf_counter() - t0, 2), loadavg_before=load0, loadavg_after=C.loadavg(),
                   cpu_steal=C.steal_share(counters0, C.cpu_counters()))
        results[name] = res
        echo(f"[bench] {name}: {res['status']} in {res['seconds']:.1f} s (load {load0[0]:.2f} → "
             f"{res['loadavg_after'][0]:.2f}{_steal_text(res['cpu_steal'])})")
    meta.update(seconds=round(time.perf_counter() - t_all, 1), loadavg_end=C.loadavg(),
                cpu_steal=C.steal_share(counters_all, C.cpu_counters()))
    record = dict(meta=meta, cases=results)
    # strict JSON: a bare NaN / Infinity (a failed fit, an error of a diverged run) is no JSON, and other readers
    # (jq, JavaScript, ...) refuse the whole file
    (out / "bench.json").write_text(_strict_json(record) + "\n")
    from ._report import write_report

    write_report(record, out)
    echo(f"[bench] wrote {out / 'bench.json'} and {out / 'REPORT.md'}")
    return record


def output_folder(output) -> Path:
    """The folder ``output`` for bench.json, REPORT.md and the plots, created if missing.

    Raises
    ------
    ValueError
        ``output`` is empty, is a file, or is a folder that cannot be created or written (a probe file is written
        and removed: permission bits say nothing for root or a read-only file system).
    """
    import tempfile

    if str(output) == "":
        raise ValueError("--output must name a folder (created if missing) for bench.json, REPORT.md and the plots; "
                         "got ''.")
    out = Path(output)
    if out.exists() and not out.is_dir():      # mkdir's "[Errno 17] File exists" did not say what to give
        raise ValueError(f"--output {str(out)!r} is a file; give a folder (created if missing) for bench.json, "
                         "REPORT.md and the plots.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out, prefix=".bench-probe-"):
            pass
    except OSError as e:
        raise ValueError(f"--output {str(out)!r}: cannot write in this folder ({e.strerror or e}).") from None
    return out


def _run_case(name: str, mod, quick: bool, sizes: dict) -> dict:
    """One case's result; an exception becomes status "error", an interruption (Ctrl-C, SIGTERM) is raised."""
    from .._simulate import STOP_REQUESTED, propagating_interrupts, stop_if_requested

    try:
        with propagating_interrupts():
            res = mod.run(quick=quick, **sizes)
        _strict_json(res)                   # a value bench.json cannot hold fails this case, not the whole run
    except Exception as e:  # noqa: BLE001  (recorded in the report; the other cases still run)
        if STOP_REQUESTED.is_set():         # an error of a run the stop request cut short, not of the case
            raise KeyboardInterrupt(f"bench case {name} was interrupted") from e
        res = dict(case=name, title=getattr(mod, "TITLE", name), status="error", comparisons=[], targets=[],
                   error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    stop_if_requested()                     # a signal whose KeyboardInterrupt was swallowed (inside a finalizer)
    return res


def _interrupted(prog: str, output) -> int:
    print(f"{prog}: interrupted; nothing written (bench.json and REPORT.md in {str(output)!r}, if there, are those "
          "of an earlier run).", file=sys.stderr)
    return 130


def _steal_text(share) -> str:
    return "" if share is None else f"; CPU steal {100 * share:.0f} %"


def _say(msg: str) -> None:
    print(msg, flush=True)


def _strict_json(x) -> str:
    """``x`` as strict JSON in the package's one convention (:func:`meanfield._io._finite_json`: a non-finite float
    is the string "nan", "inf" or "-inf", as in validation.json); TypeError naming the type JSON cannot hold."""
    from .._io import _finite_json

    def refuse(obj):
        raise TypeError(f"not JSON serializable: {type(obj).__name__}")
    return json.dumps(_finite_json(x), indent=1, allow_nan=False, default=refuse)


def parser(prog: str = "python -m benchmarks") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="meanfield's performance report against the alternatives "
                                 "(same-run ratios, medians of repeats); writes bench.json and REPORT.md.")
    ap.add_argument("cases", nargs="*", metavar="case", help=f"cases to run (default: all of {list(CASES)})")
    ap.add_argument("--quick", action="store_true", help="small sizes only (30 s idle, about 3 minutes on a loaded machine)")
    ap.add_argument("--output", default="bench-out", help="folder for bench.json, REPORT.md and the plots")
    return ap


def cli(argv=None, prog: str = "python -m benchmarks", default_cases=None) -> int:
    """``python -m benchmarks`` and ``python benchmarks/bench_*.py``: parse, run, return an exit code."""
    args = parser(prog).parse_args(argv)
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser(prog).error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    try:
        output_folder(args.output)
    except ValueError as e:
        parser(prog).error(str(e))
    cmd = " ".join([prog] + (sys.argv[1:] if argv is None else list(argv)))
    try:
        record = run_cases(args.cases or default_cases, quick=args.quick, output=args.output, command=cmd)
    except KeyboardInterrupt:
        return _interrupted(prog, args.output)
    return _exit_code(record)


def _exit_code(record) -> int:
    return 1 if any(r["status"] == "error" for r in record["cases"].values()) else 0


def main(args) -> int:
    """``meanfield bench``: ``args.quick``, ``args.output`` (and optionally ``args.cases``); an exit code (130:
    interrupted, nothing written)."""
    cases = list(getattr(args, "cases", None) or [])
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise ValueError(f"unknown benchmark case(s) {unknown}; choose from {list(CASES)}.")
    cmd = " ".join(["meanfield bench"] + cases + (["--quick"] if args.quick else []) + ["--output", str(args.output)])
    try:
        record = run_cases(cases or None, quick=args.quick, output=args.output, command=cmd)
    except KeyboardInterrupt:
        return _interrupted("meanfield bench", args.output)
    return _exit_code(record)
