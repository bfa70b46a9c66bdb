"""Run a sweep: one task per parameter set on dask.distributed (or serially), resumable, one table at the end.

Layout of the output folder ``DIR``::

    DIR/tasks/<key>.json   one record per finished task, written atomically when the task finishes (by the
                           sweep's process, or by the worker of its own local cluster that ran the task)
    DIR/runs/<key>.h5      the task's trajectory (only with ``hdf5 = true``; written by the worker)
    DIR/results.csv        the table assembled from the records, one row per task, in task order
    DIR/results.jsonl      the same rows as JSON lines (lists stay lists)
    DIR/sweep.toml         the sweep file that was run (sweep.json when it was given as a dict, without text)
    DIR/sweep.folder       the sweep file's folder, where its relative file paths are read from (when it reads any)
    DIR/.lock              while a sweep runs in DIR (a second sweep into the same folder is refused)

A rerun skips every task that has a record (whatever its run status) except those recorded as
``ERROR`` (an exception: retried, since it may have been transient, e.g. a lost worker).  A task interrupted
(Ctrl-C, SIGTERM: its run returns status ``INTERRUPTED``) is not finished: it gets no record.  When a sweep on
dask is interrupted, the tasks that had finished are recorded before it stops (their results fetched from the
workers).  The workers of the sweep's own local cluster write each record themselves when the task ends, so a task
they finish while the cluster closes is recorded too; a task still running elsewhere gets no record (on a
``--scheduler``'s workers it may still write its ``runs/<key>.h5``, which a rerun replaces).  A file of one of
these names that no sweep wrote (a table without recorded rows, a sweep file in a folder where no sweep ran) is
refused before any task runs (:func:`meanfield._sweep._outdir.refuse_foreign_files`).
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
import time
import traceback
import uuid
import warnings
from pathlib import Path

from .._durable import replace_durably
from .._io import json_text, json_value
from ._outdir import TABLE_FILES, definition_files, refuse_foreign_files, stored_folder
from ._spec import SweepSpec, Task

ERROR = "ERROR"
INTERRUPTED = "INTERRUPTED"     # Status.INTERRUPTED.name: a task stopped by Ctrl-C / SIGTERM, not finished
RETRIED = (ERROR, INTERRUPTED)  # records a rerun runs again (INTERRUPTED ones: written by earlier versions)
# seconds to reach a --scheduler: dask's default (30 s) made a mistyped address look like a hang; a scheduler
# answers within milliseconds on a local network
CONNECT_TIMEOUT = 5.0
# seconds to fetch a finished task's row from its worker after a Ctrl-C (it is done: the transfer takes milliseconds;
# the bound keeps the stop prompt if a worker is gone)
FETCH_TIMEOUT = 5.0


# ----------------------------------------------------------------------------------------------
# one task (runs on a worker, or in this process)

@contextlib.contextmanager
def _threads(n):
    """Limit meanfield's own thread pools (ducc0 transforms, attention blocks) to ``n`` threads.

    Both defaults: ``sphere._sh.NTHREADS`` (the transforms) and ``meanfield._threads.NTHREADS``, which the particle
    backends' attention (``threads`` left unset) reads; setting only the first left a particles or particles-sh task
    on every usable core, so two workers ran four threads on two cores."""
    from .. import _threads as pool
    from ..sphere import _sh
    old = _sh.NTHREADS, pool.NTHREADS
    if n:
        _sh.NTHREADS = pool.NTHREADS = n
    try:
        yield
    finally:
        _sh.NTHREADS, pool.NTHREADS = old


def run_task(task: Task, settings: dict, out_dir: str | None = None, threads: int | None = 1) -> dict:
    """Simulate one task and record its observables; never raises (an exception becomes status ERROR).

    ``settings`` is :attr:`SweepSpec.record` (observables, at, aligned_tol, hdf5).
    """
    from .._config import parse_config
    from .._io import save
    from ._observables import record

    row = _record_head(task, settings)
    t0 = time.perf_counter()
    try:
        with _threads(threads), warnings.catch_warnings():
            warnings.simplefilter("ignore")          # an early stop is recorded as the status
            cfg = parse_config(task.config)
            traj = _simulate(cfg)
            at = settings["at"]
            row.update(record(traj, settings["observables"], at, settings["aligned_tol"]))
            row["status"] = traj.status.name
            row["error"] = "" if traj.success else traj.message
            row["t_end"] = float(traj.times[-1])
            if at == "saved":
                row["t"] = [float(t) for t in traj.times]
            # an interrupted task is not finished (no record; a rerun runs it from its start): no trajectory file
            # either, which was left in runs/ beside the records with nothing in the table to say what it was
            if settings["hdf5"] and out_dir is not None and traj.status.name != INTERRUPTED:
                path = Path(out_dir) / "runs" / f"{task.key}.h5"
                path.parent.mkdir(parents=True, exist_ok=True)
                info = {"sweep_parameters": task.params, "sweep_key": task.key, "t_final": cfg.t_final}
                if cfg.seed is not None:
                    info["seed"] = cfg.seed
                save(traj, path, run_info=info, complete=traj.success)
                row["hdf5"] = f"runs/{task.key}.h5"
    except Exception as e:   # noqa: BLE001 - a failing task is recorded, the sweep goes on
        row["status"] = ERROR
        row["error"] = f"{type(e).__name__}: {e}"
        row["traceback"] = traceback.format_exc(limit=8)
    row["wall_time"] = time.perf_counter() - t0
    return row


def user_extensions() -> tuple:
    """(the user's scheme rows, the user's backend classes) registered in this process, for the workers."""
    from .._schemes import BUILTIN_SCHEMES, SCHEMES
    from ..backends._registry import BACKENDS, BUILTIN

    schemes = {name: row for name, row in SCHEMES.items() if name not in BUILTIN_SCHEMES}
    backends = {name: cls for name, cls in BACKENDS.items()
                if name not in BUILTIN or (cls.__module__, cls.__qualname__) != (
                    f"meanfield.backends.{BUILTIN[name][0]}", BUILTIN[name][1])}
    return schemes, backends


def _install_extensions(extensions) -> None:
    from .._schemes import SCHEMES
    from ..backends._registry import BACKENDS, _load_backends

    if not extensions:
        return
    schemes, backends = extensions
    SCHEMES.update(schemes)
    _load_backends()
    BACKENDS._classes.update(backends)


def _run_and_record(task: Task, settings: dict, out_dir: str, threads: int | None, record: bool,
                    extensions: tuple | None = None) -> tuple:
    """:func:`run_task` on a dask worker; with ``record`` (a worker of the sweep's own local cluster: this machine,
    this folder) the task's record is written here, atomically, as soon as the task ends.

    Recorded by the sweep's process only, a task that finished while the local cluster shut down after a Ctrl-C (its
    worker finishes the task it runs before it closes) was computed, its HDF5 file written, and run again by the
    next sweep.  Returns (row, whether its record was written here); an INTERRUPTED row is never recorded."""
    _install_extensions(extensions)
    row = run_task(task, settings, out_dir, threads)
    if not record or row["status"] == INTERRUPTED:
        return row, False
    try:
        write_record(Path(out_dir), row)
    except OSError:     # (the sweep's process writes it, and says why if it cannot either)
        return row, False
    return row, True


def _record_head(task: Task, settings: dict) -> dict:
    """The fields every record starts with: which task, its resolved run configuration, how it was recorded
    (``settings``: the observables, ``at``, ``aligned_tol``, ``hdf5``) and the version, so that a record describes
    itself without the sweep file.  The recording settings were missing: after a rerun with another ``aligned_tol``
    into the same folder, the records of both were in ``tasks/`` and nothing told which δ an ``aligned_fraction``
    was counted with (``sweep.toml`` holds only the last sweep's)."""
    from .. import __version__
    return {"key": task.key, "index": task.index, "params": task.params, "config": task.config,
            "recording": dict(settings), "meanfield": __version__, "status": ERROR, "error": "", "wall_time": 0.0,
            "t_end": None}


def _simulate(cfg):
    from .._simulate import simulate
    return simulate(cfg.model, cfg.initial, cfg.t_final, backend=cfg.backend, t0=cfg.t0, **cfg.save, **cfg.options)


# ----------------------------------------------------------------------------------------------
# the records on disk

def _atomic_write(path: Path, text: str):
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        replace_durably(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)        # only left when the write or the rename failed


def write_record(out_dir: Path, row: dict):
    """``DIR/tasks/<key>.json``, atomically: strict JSON, non-finite values as "inf", "-inf", "nan" (null is
    an observable that does not apply)."""
    _atomic_write(Path(out_dir) / "tasks" / f"{row['key']}.json", json_text(row, sort_keys=True))


def read_records(out_dir: Path) -> dict:
    """key → record of every finished task in ``DIR/tasks`` (unreadable files are ignored: redone)."""
    recs = {}
    folder = Path(out_dir) / "tasks"
    if folder.is_dir():
        for p in folder.glob("*.json"):
            r = _read_record(p)
            if r is not None:
                recs[p.stem] = r
    return recs


def _read_record(path: Path) -> dict | None:
    """The record in ``path`` (``DIR/tasks/<key>.json``), or None when it is missing, unreadable or of another key."""
    try:
        r = json_value(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return r if isinstance(r, dict) and r.get("key") == path.stem else None


def table_rows(spec: SweepSpec, records: dict) -> list:
    """One flat row per task that has a record, in task order: parameters, status, error, time, observables."""
    rows, names = [], spec.parameter_names
    for t in spec.tasks:
        r = records.get(t.key)
        if r is None:
            continue
        row = {"key": t.key}
        row.update({name: _ran_with(t, name) for name in names})
        row.update(status=r.get("status"), error=r.get("error", ""), wall_time=r.get("wall_time"),
                   t_end=r.get("t_end"))
        if spec.at == "saved":
            row["t"] = r.get("t")
        row.update({o: r.get(o) for o in spec.observables})
        if spec.hdf5:
            row["hdf5"] = r.get("hdf5")
        rows.append(row)
    return rows


def _columns(spec: SweepSpec) -> list:
    """The columns of a row of :func:`table_rows` (the header of a table with no rows yet had only the first five)."""
    return ["key", *spec.parameter_names, "status", "error", "wall_time", "t_end", *(["t"] if spec.at == "saved" else []),
            *spec.observables, *(["hdf5"] if spec.hdf5 else [])]


def _ran_with(task: Task, name: str):
    """The value of the parameter ``"table.key"`` in the task's configuration: a set that does not name it runs with
    the base's value (the column was empty, as if the task had none); None when neither sets it (the default)."""
    if name in task.params:
        return task.params[name]
    table, _, key = name.partition(".")
    return task.config.get(table, {}).get(key)


def write_tables(out_dir: Path, spec: SweepSpec, records: dict) -> list:
    """Assemble ``results.csv`` / ``results.jsonl`` from the records (atomically); returns the paths.  A table
    this sweep does not ask for is removed (an earlier sweep's would be read as this one's, stale)."""
    rows = table_rows(spec, records)
    paths = []
    for kind, name in TABLE_FILES.items():
        if kind not in spec.table:
            (Path(out_dir) / name).unlink(missing_ok=True)
    if "jsonl" in spec.table:
        p = Path(out_dir) / "results.jsonl"
        _atomic_write(p, "".join(json_text(r) + "\n" for r in rows))
        paths.append(p)
    if "csv" in spec.table:
        buf = io.StringIO()
        fields = list(rows[0]) if rows else _columns(spec)
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: json_text(v) if isinstance(v, (list, dict)) else ("" if v is None else v)
                        for k, v in r.items()})
        p = Path(out_dir) / "results.csv"
        _atomic_write(p, buf.getvalue())
        paths.append(p)
    return paths


# ----------------------------------------------------------------------------------------------
# the sweep

class SweepResult:
    """What :func:`run_sweep` did: the rows (task order), the counts and the table files.

    Attributes
    ----------
    rows : list of dict
        One flat row per task that has a record, in task order: ``key``, the swept parameters,
        ``status``, ``error``, ``wall_time`` (seconds), ``t_end`` and the observables.
    ran : int
        Tasks run by this call.
    skipped : int
        Tasks that already had a record (not ``ERROR``) in the output folder.
    paths : list of Path
        The table files written (``results.jsonl``, ``results.csv``).
    tasks : int
        The sweep's tasks.
    missing : int
        Tasks without a record yet (``max_tasks`` stopped the call, or it was interrupted): rerun to finish.
    other_versions : dict
        Of the tasks skipped, those whose record another meanfield version computed: version → count (the version
        is not part of a key, so an upgrade keeps them; write to a fresh folder to recompute).
    failed : list of dict
        The rows whose ``status`` is not ``"OK"`` (a property).
    not_ok : int
        ``len(failed)``.
    success : bool
        True when every task has a row and every row has status ``"OK"`` (a property).
    """

    def __init__(self, rows, ran, skipped, paths, tasks=None, other_versions=None):
        self.rows, self.ran, self.skipped, self.paths = rows, ran, skipped, paths
        self.tasks = len(rows) if tasks is None else int(tasks)
        self.other_versions = dict(other_versions or {})

    @property
    def missing(self) -> int:
        return self.tasks - len(self.rows)

    @property
    def failed(self) -> list:
        return [r for r in self.rows if r["status"] != "OK"]

    @property
    def not_ok(self) -> int:
        return len(self.failed)

    @property
    def success(self) -> bool:
        return not self.failed and not self.missing

    def __repr__(self):
        return (f"SweepResult(tasks={self.tasks}, ran={self.ran}, skipped={self.skipped}, "
                f"not_ok={self.not_ok}, missing={self.missing})")


def run_sweep(spec: SweepSpec, out_dir, *, client=None, workers: int | None = None, scheduler: str | None = None,
              serial: bool = False, progress: bool = True, max_tasks: int | None = None,
              threads: int = 1, connect_timeout: float = CONNECT_TIMEOUT) -> SweepResult:
    """Run every task of ``spec`` that has no record in ``out_dir`` yet; assemble the table.

    Parameters
    ----------
    spec : SweepSpec, str or Path
        From :func:`load_sweep` / :func:`parse_sweep`, or the path of a sweep file (read with
        :func:`load_sweep`).
    out_dir : str or Path
        Output folder (created); see the module docstring for its layout.
    client : distributed.Client, optional
        Run on this client (it is not closed).  Otherwise on ``scheduler`` if given, else on a new
        ``LocalCluster`` of ``workers`` processes with one thread each (closed at the end).
    workers : int, optional
        Local worker processes, ≥ 1 (default: the usable cores); not with ``client`` or ``scheduler``.
    scheduler : str, optional
        Address of a running dask scheduler (e.g. ``"tcp://host:8786"``) to connect to, with a
        ``distributed.Client`` closed at the end; not with ``client``.
    serial : bool
        Run the tasks one after the other in this process (no dask): not with ``client``, ``scheduler`` or
        ``workers``.
    progress : bool
        A tqdm bar over the tasks.
    max_tasks : int, optional
        Stop after this many newly finished tasks, ≥ 0 (the rest stays for a rerun; 0 only assembles the table).
    threads : int
        meanfield's threads per task, ≥ 1 (ducc0 transforms, attention blocks); 1 suits one task per core.
    connect_timeout : float
        Seconds to wait for the ``scheduler`` to answer (default 5; dask's own default is 30).

    Returns
    -------
    SweepResult
        The rows of every recorded task (this run's and earlier ones), the counts ``ran`` and
        ``skipped``, and the table paths.  A task whose run failed or ended early is a row with its
        status, not an exception.

    Raises
    ------
    FileExistsError
        ``out_dir`` holds a ``results.csv``, ``results.jsonl``, ``sweep.toml`` or ``sweep.json`` that no sweep
        wrote (checked before any task runs; the sweep would replace it).
    ConnectionError
        The ``scheduler`` did not answer within ``connect_timeout`` seconds (or is not a dask scheduler).
    TypeError, ValueError
        ``client`` is not a ``distributed.Client`` (an address goes to ``scheduler``), or not a running one; or two
        of ``client``, ``scheduler``, ``workers`` and ``serial=True``, which name different places to run, are given.
    KeyboardInterrupt
        A Ctrl-C (or the command line's SIGTERM) stopped the sweep: raised after the finished tasks are recorded and
        the tables written; a rerun into ``out_dir`` continues (``meanfield sweep`` exits with 130 there).
    """
    if isinstance(spec, (str, os.PathLike)):
        from ._spec import load_sweep
        spec = load_sweep(spec)
    if not isinstance(spec, SweepSpec):
        raise TypeError(f"`spec` must be a SweepSpec (load_sweep, parse_sweep) or a sweep file's path; "
                        f"got {type(spec).__name__}.")
    from .._validate import flag, nonneg_int, positive_float

    serial, progress = flag("serial", serial), flag("progress", progress)   # serial="no" ran serially
    if workers is not None:           # 0 read as "unset" (all the cores) before
        workers = nonneg_int("workers", workers, minimum=1)
    if threads is not None:
        threads = nonneg_int("threads", threads, minimum=1)
    if max_tasks is not None:
        max_tasks = nonneg_int("max_tasks", max_tasks)
    connect = (scheduler, positive_float("connect_timeout", connect_timeout))
    _check_where(client, workers, scheduler, serial)
    check_client(client)
    out = Path(out_dir)
    refuse_foreign_files(out, spec)      # (before the folder is created: a refused sweep leaves no folder behind)
    check_output_folder(out, "`out_dir`")      # a results.csv no sweep wrote was replaced, after every task had run
    (out / "tasks").mkdir(parents=True, exist_ok=True)
    with _lock(out):
        return _run_locked(spec, out, client, workers, connect, serial, progress, max_tasks, threads)


def _check_where(client, workers, scheduler, serial) -> None:
    """At most one place to run the tasks, as ``meanfield sweep`` requires: ``run_sweep(..., client=c, workers=7)`` ran
    on the client's workers, and ``serial=True`` with a client ran in this process, each without a word."""
    given = [name for name, value in (("client", client), ("scheduler", scheduler), ("workers", workers))
             if value is not None] + (["serial=True"] if serial else [])
    if len(given) > 1:
        raise ValueError(f"give one of `client` (a running cluster), `scheduler` (its address), `workers` (a new "
                         f"local cluster) and `serial=True` (this process); got {', '.join(f'`{g}`' for g in given)}.")


def _lock(out: Path):
    """``out/.lock`` while a sweep runs there (:func:`meanfield._lockfile.held`)."""
    from .._lockfile import held

    return held(out / ".lock", f"another sweep is running in {str(out)!r}")


def _run_locked(spec, out, client, workers, connect, serial, progress, max_tasks, threads) -> SweepResult:
    for name, text in definition_files(spec).items():
        if text is None:
            (out / name).unlink(missing_ok=True)
        else:
            _atomic_write(out / name, text)
    records = read_records(out)
    todo = [t for t in spec.tasks if records.get(t.key, {}).get("status", ERROR) in RETRIED]
    todo_limit = len(todo) if max_tasks is None else max_tasks
    skipped = len(spec.tasks) - len(todo)
    other_versions = _other_versions(spec, records)
    bar = _bar(progress, len(spec.tasks), skipped)
    ran = 0
    try:
        if serial or not todo or todo_limit == 0:
            for t in todo[:todo_limit]:
                row = run_task(t, spec.record, str(out), threads)
                if row["status"] == INTERRUPTED:
                    # simulate() turned the Ctrl-C into a status: recorded, the task was never run again and the
                    # sweep went on, each later task "interrupted" in turn
                    records.pop(t.key, None)
                    raise KeyboardInterrupt
                write_record(out, row)
                records[t.key] = row
                ran += 1
                _tick(bar, row)
        else:
            ran = _run_dask(spec, todo, out, records, bar, client, workers, connect, todo_limit, threads)
    finally:
        if bar is not None:
            bar.close()
        paths = write_tables(out, spec, records)
    return SweepResult(table_rows(spec, records), ran, skipped, paths, tasks=len(spec.tasks),
                       other_versions=other_versions)


def read_sweep_folder(out_dir) -> tuple:
    """What a sweep's output folder holds, read only (no lock, no table written, no cluster).

    ``run_sweep(spec, DIR, max_tasks=0)`` gives the same rows but writes the tables and takes the folder's lock
    (refused while a sweep runs there): ``meanfield info DIR`` must only read.

    Parameters
    ----------
    out_dir : str or Path
        The folder ``meanfield sweep ... --output DIR`` wrote.

    Returns
    -------
    spec : SweepSpec or None
        The sweep stored in the folder (``sweep.toml``, else ``sweep.json``); None when it has none.
    problem : str
        Why the stored sweep file could not be read (empty when it was, or when there is none).
    records : dict
        key → record of every task recorded in ``DIR/tasks`` (:func:`read_records`).
    result : SweepResult or None
        The stored sweep's rows and counts (``ran = 0``; ``paths``: the table files present); None without ``spec``.
    """
    from ._spec import _load

    out = Path(out_dir)
    records = read_records(out)
    spec, problem = None, ""
    for name in ("sweep.toml", "sweep.json"):
        if (out / name).is_file():
            try:
                # the keys and parameters only: it was checked when it ran; relative paths from the original's folder
                spec = _load(out / name, check=False, folder=stored_folder(out))
            except (OSError, ValueError) as e:      # ConfigError is a ValueError: an edited or damaged copy
                problem = f"{type(e).__name__}: {e}"
            break
    if spec is None:
        return None, problem, records, None
    kept = sum(records.get(t.key, {}).get("status", ERROR) not in RETRIED for t in spec.tasks)
    paths = [out / n for n in TABLE_FILES.values() if (out / n).is_file()]
    return spec, problem, records, SweepResult(table_rows(spec, records), 0, kept, paths, tasks=len(spec.tasks),
                                               other_versions=_other_versions(spec, records))


def _other_versions(spec, records: dict) -> dict:
    """version → how many of the records a run keeps (not retried) another meanfield version computed: after an
    upgrade they were kept without a word ("216 already done")."""
    from collections import Counter

    from .. import __version__
    kept = (records[t.key] for t in spec.tasks if records.get(t.key, {}).get("status", ERROR) not in RETRIED)
    return dict(Counter(str(r.get("meanfield")) for r in kept if r.get("meanfield") != __version__))


def _run_dask(spec, todo, out, records, bar, client, workers, connect, limit, threads) -> int:
    # the workers of the sweep's own local cluster write each record themselves (_run_and_record)
    own = client is None and connect[0] is None
    unhandled = {}              # on an interruption: the tasks submitted and not recorded by the loop
    try:
        with _client(client, workers, connect) as c:
            return _submit_and_record(c, spec, todo[:limit], out, records, bar, own, threads, unhandled)
    except KeyboardInterrupt:
        if own:     # closed now: the tasks its workers finished while it shut down have their records
            for key in unhandled:
                row = _read_record(out / "tasks" / f"{key}.json")
                if row is not None:
                    records[key] = row
        raise


def _submit_and_record(c, spec, todo, out, records, bar, own, threads, unhandled) -> int:
    """Run ``todo`` on the client ``c`` and record each task as it finishes; returns how many ran.  On a Ctrl-C the
    finished tasks are recorded, the others cancelled, and ``unhandled`` holds key → task of those not recorded."""
    from distributed import as_completed

    run_id = uuid.uuid4().hex[:8]     # fresh dask keys: a retried task is really run again
    # absolute: a worker of --scheduler has its own working directory, where a relative --output put its HDF5 files
    where = str(out.resolve())
    # only the first `limit` tasks (todo is cut there): with all of them submitted, the workers ran tasks past
    # max_tasks whose results the loop then dropped (computed, not recorded, and computed again by the next sweep)
    # a user's schemes and backends (register_scheme, register_backend, `meanfield --import`) exist in this process
    # only: a worker registers them before its task (their tasks ended with "`scheme` must be one of [...]")
    extensions = user_extensions()
    futures = {c.submit(_run_and_record, t, spec.record, where, threads, own, extensions,
                        key=f"meanfield-sweep-{t.key}-{run_id}", pure=False): t for t in todo}
    ran = 0
    handled = set()             # futures whose row this loop has recorded (or dropped, if interrupted)
    try:
        for fut in as_completed(futures):
            t = futures[fut]
            try:
                row, recorded = fut.result()
            except Exception as e:   # noqa: BLE001 - lost worker, unpicklable result, …
                row, recorded = _lost_result(t, spec, out, own, e)
            if row["status"] == INTERRUPTED:      # a worker's Ctrl-C: the task is not done, a rerun runs it
                records.pop(t.key, None)
                handled.add(fut)
                continue
            if not recorded:
                write_record(out, row)
            records[t.key] = row
            handled.add(fut)        # (after the write: a Ctrl-C during it leaves the record to _record_finished)
            ran += 1
            _tick(bar, row)
    except KeyboardInterrupt:
        rest = {f: t for f, t in futures.items() if f not in handled}
        done = _record_finished(rest, out, records)
        unhandled.update((t.key, t) for t in rest.values() if t.key not in done)
        raise
    finally:
        for f in futures:
            if not f.done():
                f.cancel()
    return ran


def _lost_result(task, spec, out: Path, own: bool, err: Exception) -> tuple:
    """(row, recorded) of a task whose result did not arrive (a lost worker, …): an ERROR row, to be recorded, unless
    a worker of the sweep's own cluster recorded the task before it was lost (a record that a rerun keeps, not the
    ERROR one of a retried task): the ERROR row replaced that record, and the next sweep ran the task again."""
    if own:
        kept = _read_record(out / "tasks" / f"{task.key}.json")
        if kept is not None and kept.get("status", ERROR) not in RETRIED:
            return kept, True
    return {**_record_head(task, spec.record), "error": f"{type(err).__name__}: {err}", "wall_time": None}, False


def _record_finished(futures: dict, out: Path, records: dict) -> set:
    """On an interruption: record the tasks of ``futures`` (future → task; those the loop has not recorded) that
    finished.  Their HDF5 files are written and whole, and without a record a rerun computed them again.  A task
    still running is not waited for here (a worker of the sweep's own local cluster records it if it finishes while
    the cluster closes; elsewhere it stays unrecorded, and a rerun runs it again).  Returns the keys recorded."""
    done = set()
    for fut, task in futures.items():
        if fut.status != "finished":
            continue
        try:
            row, recorded = fut.result(timeout=FETCH_TIMEOUT)
        except Exception:   # noqa: BLE001 - a result that cannot be fetched now: the task is run again
            continue
        if row.get("status") != INTERRUPTED:
            if not recorded:
                write_record(out, row)
            records[task.key] = row
            done.add(task.key)
    return done


@contextlib.contextmanager
def _client(client, workers, connect):
    """The given client; else one of the scheduler of ``connect`` = (address or None, timeout); else of a new
    LocalCluster of ``workers`` processes."""
    if client is not None:
        yield client
        return
    from distributed import Client

    from ._local import local_cluster

    if connect[0] is not None:
        with _connect(*connect) as c:
            yield c
        return
    with local_cluster(_usable_cores() if workers is None else workers) as cluster, Client(cluster) as c:
        yield c


def _connect(address: str, timeout: float):
    """A ``distributed.Client`` of the scheduler at ``address``, or a ConnectionError naming it after ``timeout`` s.

    Any failure counts as "could not connect": a refused or silent address times out (OSError), an unknown scheme is a
    ValueError, and a service that is not a dask scheduler answers with bytes whose decoding failed (a MemoryError
    for an "array" of exabytes was seen, which the command line then blamed on the sweep's sizes).
    """
    from distributed import Client

    try:
        return Client(address, timeout=timeout)
    except Exception as e:   # noqa: BLE001 - see the docstring; the cause is in the message
        raise ConnectionError(f"could not connect to the dask scheduler at {address!r} ({type(e).__name__}: {e}); "
                              "check the address (e.g. tcp://host:8786) and that a dask scheduler is running there, "
                              f"or allow more than {timeout:g} s (connect_timeout, --connect-timeout).") from None


def check_output_folder(out: Path, name: str) -> None:
    """The output folder ``out`` (the argument ``name``) is a folder, created if missing: refuse a file, a path below a
    file, or a folder that cannot be created or written in, before any work, with an error naming the argument (a
    bare ``[Errno 2] No such file or directory: '/proc/self/out'`` said neither which argument nor why; run_sweep
    said ``[Errno 20] Not a directory: 'FILE/tasks'``)."""
    import tempfile

    for part in (out, *out.parents):
        if part.exists():
            if not part.is_dir():
                raise ValueError(f"{name} is the sweep's folder (records, tables, results); {str(part)!r} is a file.")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out, prefix=".probe-"):     # a probe, not permission bits (root ignores them)
            pass
    except OSError as e:
        raise ValueError(f"{name} {str(out)!r}: cannot create the sweep's folder or write in it "
                         f"({e.strerror or e}).") from None


def check_client(client) -> None:
    """Refuse, before any work, a ``client=`` that is not a running ``distributed.Client``: an address string failed
    with "'str' object has no attribute 'submit'" (after the sweep file was written), and a closed client of
    distributed_particles_sh with ``KeyError: 'workers'``."""
    if client is None:
        return
    from distributed import Client

    if not isinstance(client, Client):
        hint = " (an address goes to `scheduler=`)" if isinstance(client, str) else ""
        raise TypeError(f"`client` must be a distributed.Client{hint}; got {type(client).__name__} {client!r}.")
    if client.status != "running":
        raise ValueError(f"`client` must be a running distributed.Client; got one whose status is {client.status!r} "
                         "(closed, or not connected yet): pass an open client, or none to start a local cluster.")


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _bar(progress, total, done):
    if not progress:
        return None
    from tqdm.auto import tqdm

    from .._simulate import _progress_interval
    # a sweep is a batch job: in a log file (stderr not a terminal) a line every 30 s, not every 0.1 s
    return tqdm(total=total, initial=done, unit="task", desc="sweep", mininterval=_progress_interval(tqdm))


def _tick(bar, row):
    if bar is not None:
        bar.update(1)
        if row["status"] != "OK":
            bar.set_postfix_str(f"last: {row['status']}", refresh=False)
