"""Scale-out on dask.distributed: parameter sweeps and sharded particles-sh runs.

* :func:`run_sweep` / ``meanfield sweep SWEEP.toml --output DIR``: every parameter set of a sweep
  file is a task (simulate + observables) on a ``LocalCluster`` or an existing scheduler;
  resumable (one record file per finished task, keyed by a hash of its configuration).
* :func:`distributed_particles_sh`: the particles-sh backend with the tokens split across workers;
  each Runge–Kutta stage adds the workers' spherical-harmonic coefficients (O(L²) numbers) and sends
  the sum back, so N is bounded by the cluster's memory, not one machine's.

dask is imported only inside these functions: ``import meanfield`` stays light.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ._distributed import distributed_particles_sh as distributed_particles_sh
from ._observables import OBSERVABLES as OBSERVABLES
from ._runner import CONNECT_TIMEOUT, check_output_folder, SweepResult as SweepResult, run_sweep as run_sweep, \
    run_task as run_task
from ._spec import SweepSpec as SweepSpec, load_sweep as load_sweep, parse_sweep as parse_sweep

SHOWN_FAILURES = 10      # tasks not OK listed by the summary of `meanfield sweep`
# the exit status of a sweep stopped by Ctrl-C or SIGTERM: that of every command of the command line stopped so
# (`meanfield run` before it stored anything, validate, bench, demo; 128 + SIGINT, the shell's for a Ctrl-C).  It was
# 1, the status of a task that failed: a script could not tell "rerun to continue" from "look at the failed rows".
INTERRUPTED_EXIT = 130


def main(args) -> int:
    """``meanfield sweep``: 0 when every task reached t_final, 1 when some ended early or failed, 2 for a bad file or
    argument, INTERRUPTED_EXIT (130) when a Ctrl-C or SIGTERM stopped it (the finished tasks are recorded)."""
    spec = load_sweep(args.config)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"`--workers` must be ≥ 1; got {args.workers}.")
    if args.workers is not None and args.scheduler is not None:
        raise ValueError("give either `--workers` (a local cluster) or `--scheduler` (an existing one), not both.")
    serial = getattr(args, "serial", False)
    if serial and (args.workers is not None or args.scheduler is not None):
        raise ValueError("`--serial` runs the tasks in this process: it takes no `--workers` or `--scheduler`.")
    timeout = _connect_timeout(args)
    check_output_folder(Path(args.output), "--output")
    try:
        result = run_sweep(spec, args.output, workers=args.workers, scheduler=args.scheduler, serial=serial,
                           progress=not args.quiet, connect_timeout=timeout)
    except KeyboardInterrupt:
        print(f"meanfield sweep: interrupted; the finished tasks are recorded in {args.output!r}: "
              "run the same command again to continue.", file=sys.stderr)
        return INTERRUPTED_EXIT
    if not args.quiet:
        counts = {}
        for r in result.rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        print(f"{result.tasks} tasks: {result.ran} run, {result.skipped} already done; "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
              + (f"; {result.missing} not run yet (run the command again)" if result.missing else ""))
        failed = result.failed
        for r in failed[:SHOWN_FAILURES]:
            print(f"  {r['status']}: {r['key']} {_params(r, spec)}: {r['error']}", file=sys.stderr)
        if len(failed) > SHOWN_FAILURES:     # the list stopped at 10 without a word of the others
            where = " or ".join(str(p) for p in result.paths)
            print(f"  … and {len(failed) - SHOWN_FAILURES} more task(s) not OK: their rows in {where} say why.",
                  file=sys.stderr)
        print("table: " + ", ".join(str(p) for p in result.paths))
        if result.other_versions:
            from .. import __version__
            versions = ", ".join(f"{v}: {n}" for v, n in sorted(result.other_versions.items()))
            print(f"({sum(result.other_versions.values())} of the {result.skipped} tasks already done were computed by "
                  f"another meanfield version ({versions}), not this one ({__version__}), and were kept: give a fresh "
                  "--output to recompute them)")
        others = _other_records(Path(args.output), spec)
        if others and result.ran:
            print(f"({others} other record(s) in {str(Path(args.output) / 'tasks')!r} belong to no task of this "
                  "sweep: a task's key changes with the base configuration and the recording settings (observables "
                  "and their order, at, aligned_tol, hdf5), and a record of another key is kept but not used)")
    return 0 if result.success else 1


def _connect_timeout(args) -> float:
    """``--connect-timeout``, checked: only with ``--scheduler`` (the time to reach it); default CONNECT_TIMEOUT."""
    from .._validate import positive_float

    timeout = getattr(args, "connect_timeout", None)
    if timeout is None:
        return CONNECT_TIMEOUT
    if args.scheduler is None:
        raise ValueError("`--connect-timeout` is the time to reach a `--scheduler`; give it with `--scheduler`.")
    return positive_float("--connect-timeout", timeout)


def _other_records(out: Path, spec) -> int:
    """The records in ``out/tasks`` of no task of ``spec``: a sweep whose every task ran again after an edit of its
    file (its records kept under the old keys) said only "N run, 0 already done", not why."""
    keys = {t.key for t in spec.tasks}
    return sum(p.stem not in keys for p in (out / "tasks").glob("*.json"))


def _params(row, spec):
    return "{" + ", ".join(f"{k}={row.get(k)!r}" for k in spec.parameter_names) + "}"
