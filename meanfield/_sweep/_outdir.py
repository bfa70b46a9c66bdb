"""The files of a sweep's output folder that a run replaces or removes, and the check that they are the sweep's own.

A run writes ``DIR/sweep.toml`` (or ``sweep.json``) and, at its end, the tables ``DIR/results.csv`` and
``DIR/results.jsonl``, assembled from the records in ``DIR/tasks`` (:mod:`meanfield._sweep._runner`).  Replacing a
table that a sweep assembled loses nothing: its rows are recorded and go into the next table.  A file of the same
name that no sweep wrote (a user's ``results.csv`` in the folder given as ``--output``) was replaced silently; it
is refused now, before any task runs.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .._io import json_text

TABLE_FILES = {"jsonl": "results.jsonl", "csv": "results.csv"}
#: the sweep file's folder, stored beside its copy when the sweep reads files by relative paths
FOLDER_FILE = "sweep.folder"


def definition_files(spec) -> dict:
    """name → text of the sweep definition files a run writes into its folder, or None for one it removes (a copy
    the other way would describe another sweep)."""
    # the folder its relative file paths are read from (the copy in ``out`` is read by `meanfield info DIR`, where
    # they are not: its tasks' keys came out other than the run's, all "not run yet")
    folder = {FOLDER_FILE: spec.folder + "\n" if spec.folder else None}
    if spec.text:
        return {"sweep.toml": spec.text, "sweep.json": None, **folder}
    if spec.definition:         # given as a dict: the fixed settings would otherwise be written nowhere
        # in the dict's order (sorted keys reordered the grid, and so the tasks and the columns of a rerun from it)
        return {"sweep.json": json_text(spec.definition, indent=1) + "\n", "sweep.toml": None, **folder}
    return {}


def stored_folder(out: Path) -> str | None:
    """The sweep file's folder a sweep stored in ``out`` (:data:`FOLDER_FILE`), or None."""
    try:
        return (out / FOLDER_FILE).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def refuse_foreign_files(out: Path, spec) -> None:
    """Refuse, before any task runs, a file of ``out`` that the sweep would replace or remove and no sweep wrote.

    A table (``results.csv``, ``results.jsonl``) is a sweep's when it has a sweep table's columns and no rows or a
    row whose key has a record in ``out/tasks`` (not every row: a record deleted to have its task run again leaves
    its row behind, which the rerun replaces); an empty file holds nothing to lose.  ``sweep.toml`` and
    ``sweep.json`` are the sweep's when they hold what this run writes, or when ``out`` has a ``tasks`` folder (a
    sweep ran there: the file is its copy of the sweep that ran last, which the next sweep replaces).

    Parameters
    ----------
    out : Path
        The output folder (need not exist).
    spec : SweepSpec
        The sweep about to run.

    Raises
    ------
    FileExistsError
        Naming the file and what to do.
    """
    if not out.is_dir():
        return
    recorded = {p.stem for p in (out / "tasks").glob("*.json")}
    for name in TABLE_FILES.values():
        path = out / name
        if (path.exists() or path.is_symlink()) and not _is_sweep_table(path, recorded):
            raise FileExistsError(
                f"{str(path)!r} exists and is not a table of the sweep records in {str(out / 'tasks')!r}"
                f"{_orphan_rows(path)}: a sweep writes its table there and would replace it. Move the file away, or "
                "give another output folder (--output).")
    if (out / "tasks").is_dir():
        return
    for name, text in definition_files(spec).items():
        path = out / name
        if (path.exists() or path.is_symlink()) and (text is None or _text(path) != text):
            raise FileExistsError(
                f"{str(path)!r} exists, is not this sweep's file, and no sweep has run in {str(out)!r} (it has no "
                "tasks folder): a sweep stores the sweep file it runs there and would replace it. Move the file away, "
                "or give another output folder (--output).")


def _text(path: Path) -> str | None:
    """The UTF-8 text of ``path``, or None when it cannot be read as such (a folder, a binary file)."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _is_sweep_table(path: Path, recorded: set) -> bool:
    """Whether ``path`` is a table that a sweep assembled from records of this folder (whose keys are ``recorded``)."""
    text = _text(path) if path.is_file() else None
    if text is None:
        return False
    if not text.strip():
        return True
    keys = _csv_keys(text) if path.suffix == ".csv" else _jsonl_keys(text)
    return keys is not None and (not keys or bool(keys & recorded))


def _orphan_rows(path: Path) -> str:
    """Why a table with a sweep table's columns is refused: none of its rows has a record any more.  Deleting
    ``DIR/tasks`` to have every task run again left the sweep's own table behind, and the refusal said only "is not
    a table of the sweep records", of the table that sweep had written."""
    text = _text(path) if path.is_file() else None
    keys = None if text is None else _csv_keys(text) if path.suffix == ".csv" else _jsonl_keys(text)
    if not keys:
        return ""
    return (f" (it has a sweep table's columns, but none of its {len(keys)} rows has a record there: were the "
            f"records deleted? Then delete the tables ({', '.join(TABLE_FILES.values())}) too, and the sweep runs "
            "every task again)")


def table_rows_count(path: Path) -> int | None:
    """The number of rows of the sweep table ``path`` (0 for an empty file), or None when it is not one."""
    text = _text(path) if path.is_file() else None
    if text is None:
        return None
    if not text.strip():
        return 0
    keys = _csv_keys(text) if path.suffix == ".csv" else _jsonl_keys(text)
    return None if keys is None else len(keys)


def _csv_keys(text: str) -> set | None:
    """The keys of the rows of a sweep's CSV table (its header starts with ``key`` and has ``status``), else None."""
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if r]
    except csv.Error:
        return None
    if not rows or rows[0][0] != "key" or "status" not in rows[0]:
        return None
    return {r[0] for r in rows[1:]}


def _jsonl_keys(text: str) -> set | None:
    """The keys of the rows of a sweep's JSON lines table (objects with ``key`` and ``status``), else None."""
    keys = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            return None
        if not (isinstance(row, dict) and isinstance(row.get("key"), str) and "status" in row):
            return None
        keys.add(row["key"])
    return keys
