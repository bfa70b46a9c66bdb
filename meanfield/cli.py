"""The ``meanfield`` command: subcommands only parse and dispatch."""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import warnings
from pathlib import Path

from ._validate import FIGURE_SUFFIXES, output_file

# one example a line, each with what it does on the next (argparse's default formatter ran them into one paragraph)
_EPILOG = {
    "run": """examples:
  meanfield run examples/post_ln_s2.toml --output post_ln.h5
      one run; the result file is also its checkpoint
  meanfield run examples/post_ln_s2.toml --output post_ln.h5 --resume
      continue a killed or interrupted run from its checkpoint
  meanfield run examples/post_ln_s2.toml --output post_ln.h5 --resume --t-final 4
      extend a finished run to t = 4 in the same file
  meanfield run examples/demo_post_ln.toml examples/demo_peri_ln.toml --output demo-runs --figure demo.png
      several runs into a folder, one comparison figure
  meanfield run examples/energy_minimize_s2.toml --output min.h5 --figure min.png
      an energy problem (a file with an [energy] table)""",
    "plot": """examples:
  meanfield plot post_ln.h5 --output post_ln.png
      one result: snapshots and diagnostics (--output post_ln.gif: an animation)
  meanfield plot spectral.h5 particles.h5 --output compare.png --projection 3d
      several: a comparison, with their distance over time
  meanfield plot ensemble.h5 --output ensemble.png
      an ensemble's file: the mean and confidence interval over time""",
    "info": """examples:
  meanfield info post_ln.h5
      a run: status, diagnostics, model, options, checkpoint state
  meanfield info ensemble.h5
      a file of mf.save(mf.ensemble(...))
  meanfield info sweep-out
      a sweep's output folder: its tasks by status and its tables""",
    "demo": "example:\n  meanfield demo --output demo.png",
    "validate": "example:\n  meanfield validate --quick --output validation-out",
    "bench": """examples:
  meanfield bench --quick --output bench-out
  meanfield bench particles sweep --output bench-out""",
    "sweep": """example:
  meanfield sweep examples/phase_sweep.toml --workers 2 --output sweep-out

exit status: 0 every task reached t_final; 1 some task stopped early or failed (its row says why);
2 the sweep file or an option is invalid (nothing is run); 130 stopped by Ctrl-C or SIGTERM (run the
same command again to continue)""",
}


def _parser():
    from . import __version__

    p = argparse.ArgumentParser(prog="meanfield", description="Mean-field self-attention dynamics on the sphere.",
                                epilog="Run `meanfield COMMAND --help` for each command's options and examples.")
    p.add_argument("--version", action="version", version=f"meanfield {__version__}")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE (from PYTHONPATH or the current folder) before the command: a module that "
                        "registers a user's scheme or backend (mf.register_scheme, mf.register_backend), so that "
                        "configurations, result files and sweeps can name it; repeatable")
    sub = p.add_subparsers(dest="command", required=True)
    raw = argparse.RawDescriptionHelpFormatter        # the examples' lines as written; the options' help wrapped
    run = sub.add_parser("run", help="run TOML configurations (or energy problems); write HDF5 results",
                         epilog=_EPILOG["run"], formatter_class=raw)
    run.add_argument("config", nargs="+", metavar="CONFIG",
                     help="TOML file with [model], [initial], [run] and optional [options], or with one [energy] "
                          "table; several run one after the other")
    run.add_argument("--output", required=True, metavar="RESULT",
                     help="HDF5 result file (also the checkpoint); with several configurations a folder that "
                          "receives <config stem>.h5 for each")
    run.add_argument("--figure", default=None, metavar="FIG",
                     help="also write a figure after the run(s): the result's figure for one configuration, a "
                          "side-by-side comparison (labelled by the config stems) for several")
    run.add_argument("--resume", action="store_true",
                     help="continue from the checkpoint in --output (one configuration only)")
    run.add_argument("--t-final", type=float, default=None, metavar="T",
                     help="with --resume: run on to time T (a finished run is extended in the same file; saved "
                          "states beyond the stored t_final keep the run's spacing)")
    run.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                     help="with --resume: replace a stored backend option from the continuation on (VALUE in TOML "
                          "syntax, e.g. --option lmax_max=512 after a RESOLUTION_LOST stop); repeatable")
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    plot = sub.add_parser("plot", help="figures of a result file, or a comparison of several",
                          epilog=_EPILOG["plot"], formatter_class=raw)
    plot.add_argument("result", nargs="+", metavar="RESULT",
                      help="HDF5 result file(s); two or more make a side-by-side comparison")
    plot.add_argument("--output", required=True, metavar="FIG",
                      help="figure file (.png, .pdf; for one result a .gif makes an animation)")
    plot.add_argument("--projection", choices=("mollweide", "3d"), default="mollweide",
                      help="how particles on S² are drawn (default: mollweide)")
    info = sub.add_parser("info", help="summary of a result file (or of a sweep's output folder)",
                          epilog=_EPILOG["info"], formatter_class=raw)
    info.add_argument("result", metavar="RESULT",
                      help="HDF5 result file of `meanfield run` or mf.save (a run, an energy problem, an ensemble), or "
                           "the output folder of `meanfield sweep`")
    demo = sub.add_parser("demo", help="Post-LN vs Peri-LN on S² with the spectral solver; writes a figure",
                          epilog=_EPILOG["demo"], formatter_class=raw)
    demo.add_argument("--output", default="demo.png", metavar="FIG",
                      help=f"figure file ({', '.join(FIGURE_SUFFIXES[:3])}, …; default: demo.png)")
    demo.add_argument("--lmax", type=int, default=48, metavar="L",
                      help="initial band limit L ≥ 1, refined on demand (default: 48)")
    demo.add_argument("--beta", type=float, default=4.0, metavar="BETA",
                      help="inverse temperature, 0 < β ≤ 1e9 (default: 4.0)")
    demo.add_argument("--t-final", type=float, default=3.0, metavar="T", help="final time T > 0 (default: 3.0)")
    val = sub.add_parser("validate", help="reproduce the published results; print the comparison table",
                         epilog=_EPILOG["validate"], formatter_class=raw)
    val.add_argument("--quick", action="store_true", help="the reduced suite (about a minute; run in CI)")
    val.add_argument("--output", default="validation-out", metavar="FOLDER",
                     help="folder for figures, JSON and REPORT.md (default: validation-out)")
    bench = sub.add_parser("bench", help="performance report against the alternatives (same-run ratios)",
                           epilog=_EPILOG["bench"], formatter_class=raw)
    from ._bench import CASES          # the registry, so the list cannot leave a case out ("checkpoint" was)
    bench.add_argument("cases", nargs="*", metavar="CASE",
                       help=f"cases to run (default: all): {', '.join(CASES)}")
    bench.add_argument("--quick", action="store_true", help="small sizes only")
    bench.add_argument("--output", required=True, metavar="FOLDER", help="folder for JSON, the markdown report and plots")
    sweep = sub.add_parser("sweep", help="a parameter sweep on dask.distributed (resumable)",
                           epilog=_EPILOG["sweep"], formatter_class=raw)
    sweep.add_argument("config", help="TOML sweep file")
    sweep.add_argument("--workers", type=int, default=None, help="local workers (default: the usable cores)")
    sweep.add_argument("--scheduler", default=None, help="address of an existing dask scheduler")
    sweep.add_argument("--connect-timeout", type=float, default=None, metavar="SECONDS",
                       help="with --scheduler: seconds to wait for the scheduler to answer (default: 5)")
    sweep.add_argument("--serial", action="store_true",
                       help="run the tasks one after the other in this process (no dask cluster)")
    sweep.add_argument("--output", required=True, help="folder for the results table and per-task files")
    sweep.add_argument("--quiet", action="store_true",
                       help="no progress bar and no summary (the exit status still says whether every task finished)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from ._config import ConfigError
    from ._errors import MeanfieldError

    try:
        _import_modules(args.imports)
        with _one_line_warnings(args.command), _terminate_as_interrupt():
            return _COMMANDS[args.command](args)
    except KeyboardInterrupt:      # before a run started (reading a config, initial diagnostics), or in a command
        # without its own handling: a run in progress stops with status INTERRUPTED and its checkpoint instead
        print(f"meanfield {args.command}: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`meanfield info R.h5 | head`): not an error; keep Python's flush at exit quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ConfigError, MeanfieldError, ValueError, TypeError, OSError) as e:
        print(f"meanfield {args.command}: error: {e}", file=sys.stderr)
        return 2
    except MemoryError as e:       # numpy's "Unable to allocate …" (a size no check foresaw): one line, no traceback
        print(f"meanfield {args.command}: error: out of memory: {e or 'MemoryError'}; lower the sizes (lmax, n, "
              "degree, samples, …).", file=sys.stderr)
        return 2
    except OverflowError as e:
        print(f"meanfield {args.command}: error: a value is too large for float64 arithmetic ({e}); lower it "
              "(e.g. beta).", file=sys.stderr)
        return 2


def _import_modules(names) -> None:
    """Import the ``--import`` modules (a user's scheme or backend registers itself on import)."""
    import importlib

    if names and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())        # the console script's sys.path lacks the current folder
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ValueError(f"--import {name!r}: {type(e).__name__}: {e} (the module must be importable from "
                             "PYTHONPATH or the current folder).") from None
        except (ValueError, TypeError) as e:      # one line as the command's errors, but naming the module
            kind = TypeError if isinstance(e, TypeError) else ValueError
            raise kind(f"--import {name!r}: {type(e).__name__}: {e}") from None


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (what batch schedulers send) handled as Ctrl-C: a run writes its checkpoint, status INTERRUPTED,
    and stops, instead of dying with the states since its last checkpoint."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    from ._simulate import clear_stop, request_stop

    def interrupt(signum, frame):
        request_stop(signum)
        raise KeyboardInterrupt
    clear_stop()
    # Ctrl-C too: its KeyboardInterrupt, raised while a finalizer runs, is ignored by Python (the run went on
    # to t_final); the flag stops it at the next save time
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        clear_stop()               # a later simulate() in this process (main() called from Python) runs on


@contextlib.contextmanager
def _one_line_warnings(command: str):
    """meanfield's warnings as ``meanfield COMMAND: warning: …`` lines (not Python's file:line format)."""
    from ._errors import MeanfieldWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, MeanfieldWarning):
            print(f"meanfield {command}: warning: {message}", file=sys.stderr if file is None else file)
        else:
            default(message, category, filename, lineno, file, line)
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = default


def _parse_options(items) -> dict:
    """``--option KEY=VALUE`` items as a dict, each VALUE read as a TOML value (512, 1e-10, "refine", true).

    A dotted KEY sets one entry of a table option: ``particle_options.rtol=1e-8`` (or ``=none``, its default)."""
    import tomllib

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        path = [part.strip() for part in key.split(".")]
        if not sep or not all(path):
            raise ValueError(f"--option must be KEY=VALUE (e.g. lmax_max=512, particle_options.rtol=1e-8); got "
                             f"{item!r}.")
        value = value.strip()
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", value):      # a bare word is a string: refine
                raise ValueError(f"--option {key.strip()}: {value!r} is not a TOML value (a number, true/false, "
                                 "none, or a string such as refine or \"refine\").") from None
            parsed = None if value in ("none", "None", "null") else value     # TOML has no None: unset an option
        table = out
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ValueError(f"--option {key.strip()}: {part!r} was given a value, not a table, by another "
                                 "--option.")
        table[path[-1]] = parsed
    return out


def _refuse_empty_paths(args) -> None:
    """An empty path argument (an unset shell variable: --figure "$FIG") is refused by name: `--figure ''` ran the run
    and drew no figure (an empty string reads as no --figure), `--output ''` was said to be "the folder '.'"."""
    names = {"output": "--output", "figure": "--figure", "config": "CONFIG", "result": "RESULT"}
    for attr, name in names.items():
        value = getattr(args, attr, None)
        if value == "" or (isinstance(value, list) and "" in value):
            raise ValueError(f"{name} is an empty string (an unset shell variable?); give a path.")


def _run(args) -> int:
    import meanfield as mf
    from ._config import ConfigError, EnergyConfig, load_config

    _refuse_empty_paths(args)
    paths = [Path(c) for c in args.config]
    several = len(paths) > 1
    if args.t_final is not None and not args.resume:
        raise ValueError("--t-final extends a stored run: use it with --resume (for a new run, set t_final in "
                         "CONFIG).")
    if args.t_final is not None:     # named as typed (the API's check said "`t_final` … got t_final=nan")
        from ._validate import positive_float

        positive_float("--t-final", args.t_final)
    if args.option and not args.resume:
        raise ValueError("--option replaces an option of a stored run: use it with --resume (for a new run, set it "
                         "in CONFIG's [options]).")
    if args.resume and several:
        raise ValueError(f"--resume continues one run (its checkpoint is --output); got {len(paths)} configurations. "
                         "Resume each with `meanfield run CONFIG --output FOLDER/<stem>.h5 --resume`.")
    if args.resume:
        if args.figure:             # before the run, as for a new one (found after it, the command failed with 2)
            _check_figure(args.figure, args.output, gif=True)
        if not Path(args.output).exists():
            print(f"meanfield run: error: nothing to resume: {args.output!r} does not exist", file=sys.stderr)
            return 2
        from ._io import ENERGY_FORMAT, ENSEMBLE_FORMAT, file_attrs

        fmt = file_attrs(args.output).get("format")
        if fmt == ENERGY_FORMAT:
            raise ValueError(f"{args.output!r} holds an energy problem, which is solved in one go and has no "
                             "checkpoint: nothing to resume.")
        if fmt == ENSEMBLE_FORMAT:
            raise ValueError(f"{args.output!r} holds the summary of an ensemble (meanfield.ensemble), not a run's "
                             "checkpoint: nothing to resume (an ensemble resumes through its `checkpoint` file).")
        _check_t_final(args.t_final, args.output)
        _warn_if_config_differs(paths[0], args.output)
        if not args.option:             # options for a finished run: refused by resume, naming --t-final
            _say_if_nothing_to_resume(args.output, args.t_final)
        from ._config import named_errors

        options = _parse_options(args.option)
        # "`lmax_max` must be …" and "`options`: unknown option(s) …" named no flag
        with named_errors("--option ", {*options, "options"}):
            results = [mf.resume(args.output, t_final=args.t_final, progress=not args.quiet, options=options or None,
                                 **_stored_checkpoint_settings(args.output))]
        outputs = [Path(args.output)]
    else:
        from ._errors import MeanfieldError

        configs = []
        for path in paths:                      # validate every file (option values included) before running any
            try:
                configs.append(load_config(path))
            # a bad value is refused by the Model, say, or a backend, not the parser: every message gets the file's
            # name (one configuration's said "`beta` must be …", naming no file), but for read_toml's, which has it
            except (ConfigError, ValueError, TypeError, MeanfieldError) as e:
                if repr(str(path)) in str(e):
                    raise
                raise ConfigError(f"{path}: {e}") from None
            except MemoryError as e:
                raise ConfigError(f"{path}: out of memory while reading it ({e}); lower its sizes (lmax, n, degree, "
                                  "samples, …).") from None
            except OverflowError as e:
                raise ConfigError(f"{path}: a value is too large for float64 arithmetic ({e}); lower it "
                                  "(e.g. beta).") from None
        if args.figure and several and any(isinstance(c, EnergyConfig) for c in configs):
            raise ValueError("--figure with several configurations compares trajectories; an energy problem "
                             "([energy] table) gets its figure from its own run (`meanfield run CONFIG --output "
                             "RESULT.h5 --figure FIG.png`).")
        if args.figure and several and len({c.model.d for c in configs}) > 1:   # found after every run, before
            each = ", ".join(f"{p} d={c.model.d}" for p, c in zip(paths, configs))
            raise ValueError(f"--figure with several configurations compares them side by side, on one sphere: their "
                             f"[model] d must agree; got {each}. Leave out --figure, or draw the runs of one d with "
                             "`meanfield plot`.")
        folder = Path(args.output)
        created = [p for p in (folder, *folder.parents) if not p.exists()] if several else []   # leaf first
        outputs = _outputs(paths, Path(args.output))
        for out in outputs:      # several: each file of the folder, which may exist and be read-only (a lock error)
            output_file("--output", out)
        if args.figure:          # after the folder is made: `--output runs --figure runs/cmp.png` was refused
            try:
                _check_figure(args.figure, args.output, gif=not several and not isinstance(configs[0], EnergyConfig))
            except ValueError:
                for p in created:            # nothing was run: leave no empty folders behind
                    p.rmdir()
                raise
        inputs = {Path(p).resolve() for p in paths}
        clash = next((o for o in outputs if o.resolve() in inputs), None)
        if clash is not None:                    # it was silently overwritten with HDF5
            raise ValueError(f"--output {str(clash)!r} is one of the configuration files; choose another path "
                             "(the result is an HDF5 file, e.g. RESULT.h5).")
        _refuse_a_figure_or_configuration_name(outputs[0] if not several else None)
        from ._io import check_replaceable
        from ._simulate import _checkpoint_lock
        for out, path in zip(outputs, paths):   # before any run: an energy problem saves only after its solve
            check_replaceable("--output", out)
            # a run writing there now: said as such (its file reads as a run "that stopped before its t_final", to be
            # continued with --resume, which the lock refuses too), and before the first run of a batch, not after
            with _checkpoint_lock(out):
                pass
            _refuse_to_replace_an_unfinished_run(out, path)
        results = []
        from ._simulate import STOP_REQUESTED

        for i, (cfg, out) in enumerate(zip(configs, outputs)):
            try:
                results.append(_run_one(cfg, out, args.quiet))
            except KeyboardInterrupt:      # a run in progress returns INTERRUPTED: this one had not stored anything
                left = [str(p) for p in paths[i + 1:]]
                print(f"meanfield run: interrupted before {str(out)!r} stored anything (the file is untouched)"
                      + (f"; not started: {', '.join(left)}" if left else "") + ".", file=sys.stderr)
                return 130
            if not args.quiet:
                print(_energy_summary(results[-1], out) if _is_energy(results[-1]) else _summary(results[-1], out))
            interrupted = not _is_energy(results[-1]) and results[-1].status is mf.Status.INTERRUPTED
            if (interrupted or STOP_REQUESTED.is_set()) and len(results) < len(configs):
                left = [str(p) for p in paths[len(results):]]
                print(f"meanfield run: interrupted; not started: {', '.join(left)} (their --output files are "
                      "untouched).", file=sys.stderr)
                return 130
    if args.resume and not args.quiet:
        print(_summary(results[0], outputs[0]))
    from ._simulate import STOP_REQUESTED

    stopped = STOP_REQUESTED.is_set() or any(not _is_energy(r) and r.status is mf.Status.INTERRUPTED for r in results)
    if args.figure and stopped:
        # a Ctrl-C or SIGTERM asks the command to stop: the figure of a cut-short run was drawn anyway (a GIF of
        # every saved state can take minutes), over an earlier figure at that path
        print(f"meanfield run: interrupted; no figure written ({args.figure!r} is untouched); the result is "
              "resumable with --resume.", file=sys.stderr)
        return 130
    if args.figure:
        _run_figure(results, [p.stem for p in paths], args.figure)
        if not args.quiet:
            print(f"figure written to {args.figure}")
    if stopped:     # 130, as every command stopped by Ctrl-C or SIGTERM: a script tells "resume" from "ended early"
        return 130
    ok = [res.success if _is_energy(res) else res.status.name in ("OK", "CALLBACK_STOP") for res in results]
    return 0 if all(ok) else 1


def _refuse_a_figure_or_configuration_name(output) -> None:
    """``meanfield run c.toml --output fig.png`` wrote the HDF5 result into fig.png (the figure is --figure's), and
    ``--output c2.toml`` a result named as a configuration: refused before the run, naming the fix."""
    if output is None:
        return
    suffix = Path(output).suffix.lower()
    if suffix in FIGURE_SUFFIXES + (".gif",):
        raise ValueError(f"--output {str(output)!r} is named as a figure; --output is the HDF5 result (and "
                         f"checkpoint), e.g. {Path(output).with_suffix('.h5').name}: for a figure give --figure "
                         f"{Path(output).name}.")
    if suffix in (".toml", ".json"):
        raise ValueError(f"--output {str(output)!r} is named as a configuration; --output is the HDF5 result, e.g. "
                         f"{Path(output).with_suffix('.h5').name}.")


def _check_figure(figure, output, gif: bool) -> None:
    """Refuse, before any run, a ``--figure`` that cannot be written or that is the ``--output`` file itself.

    Parameters
    ----------
    figure, output : str
        ``--figure`` and ``--output`` as given.
    gif : bool
        Whether an animation (.gif) is a valid figure: one trajectory.

    Raises
    ------
    ValueError
        Naming ``--figure``: a missing or unwritable folder, a file type outside the figure types, or the path of
        ``--output`` (the figure, written after the run, replaced the result: ``--output r.png --figure r.png``
        left a PNG and no result, with exit status 0).
    """
    path = output_file("--figure", figure, FIGURE_SUFFIXES + ((".gif",) if gif else ()))
    if _same_file(path, output):
        raise ValueError(f"--figure {str(figure)!r} is the --output file {str(output)!r}: the figure, written after "
                         "the run, would replace the result. Give the figure another name (e.g. --output RESULT.h5 "
                         "--figure FIG.png).")


def _same_file(a, b) -> bool:
    """Whether the paths ``a`` and ``b`` name one file (also through a link), existing or not."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)                  # a hard link
    except OSError:                                    # one of them does not exist (yet): not the same file
        return False


def _check_t_final(t_final, output) -> None:
    """Refuse a ``--t-final`` before the stored run's ``t_final`` (a run is extended, never cut), naming the flag."""
    from ._io import run_info

    stored = run_info(output).get("t_final")
    if t_final is not None and stored is not None and t_final < float(stored) * (1 - 1e-12):
        raise ValueError(f"--t-final must be ≥ the t_final of the run stored in {str(output)!r}, {float(stored):g} "
                         f"(--t-final extends a run; the states up to it are in the file); got --t-final {t_final:g}.")


def _say_if_nothing_to_resume(output, t_final) -> None:
    """A --resume of a finished run (without a later --t-final) leaves the file as it is: say so, rather than print
    the run's summary alone, as if it had been continued."""
    from ._io import run_info

    info = run_info(output)
    stored = info.get("t_final")
    if info.get("complete") and stored is not None and (t_final is None or t_final <= float(stored)):
        print(f"meanfield run: {str(output)!r} holds a finished run (it reached t_final={float(stored):g}): nothing to "
              "resume, the file is left as it is; add --t-final T to extend it.", file=sys.stderr)


def _stored_checkpoint_settings(output) -> dict:
    """``checkpoint_every`` and ``checkpoint_interval`` of the configuration stored in a checkpoint (each its
    default when the file has none, or an invalid one), as keyword arguments of :func:`meanfield.resume`.

    A resumed run writes its checkpoint as the configuration asked: ``checkpoint_every = 1`` (every saved state
    written, whatever the cost) went back to the "auto" pacing after a ``--resume``, so a second kill could lose
    saved states that the first run would have kept.
    """
    import tomllib

    from ._io import run_info
    from ._validate import checkpoint_every

    try:
        run = tomllib.loads(str(run_info(output).get("config", ""))).get("run", {})
    except (tomllib.TOMLDecodeError, AttributeError):
        run = {}
    if not isinstance(run, dict):
        run = {}
    try:
        every = checkpoint_every(run.get("checkpoint_every", "auto"))
    except (TypeError, ValueError):
        every = "auto"
    interval = run.get("checkpoint_interval", 600.0)
    if not (isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval >= 0):
        interval = 600.0
    return {"checkpoint_every": every, "checkpoint_interval": interval}


def _warn_if_config_differs(config: Path, output) -> None:
    """--resume continues the run stored in the checkpoint; say so when CONFIG is not the file it was started from."""
    from ._errors import warn
    from ._io import run_info

    info = run_info(output)
    stored = info.get("config")
    try:
        given = config.read_bytes().decode("utf-8", errors="replace").removeprefix("\ufeff")   # as read_toml reads it
    except OSError as e:
        raise ValueError(f"cannot read the configuration {str(config)!r}: {e.strerror or e}.") from None
    if stored is None or given == stored:
        return
    same, asked = _same_but_t_final(given, stored)
    reached = info.get("t_final")
    if same and (asked == reached or (asked is not None and reached is not None and asked < reached)):
        return                  # the run was extended to (or beyond) this CONFIG's t_final since it was stored
    if same and asked is not None:
        warn(f"{str(config)!r} asks for t_final={asked:g}; the run stored in {str(output)!r} ends at "
             f"t_final={info.get('t_final'):g}: add --t-final {asked:g} to run it that far.")
        return
    warn(f"{str(config)!r} differs from the configuration stored in {str(output)!r}; --resume "
         "continues the stored run (model, options, t_final) and does not read CONFIG; "
         "add --t-final T to run it longer, --option KEY=VALUE to change a backend option.")


def _same_but_t_final(given: str, stored: str):
    """(whether two configuration texts agree but for [run] t_final, the t_final ``given`` asks for)."""
    import tomllib

    try:
        a, b = tomllib.loads(given), tomllib.loads(stored)
    except tomllib.TOMLDecodeError:
        return False, None
    if not (isinstance(a.get("run"), dict) and isinstance(b.get("run"), dict)):
        return a == b, None
    asked = a["run"].pop("t_final", None)
    b["run"].pop("t_final", None)
    return a == b, (float(asked) if isinstance(asked, (int, float)) and not isinstance(asked, bool) else None)


def _outputs(paths, output: Path) -> list:
    """The result file of each configuration: ``output`` itself for one, ``output/<stem>.h5`` for several."""
    if len(paths) == 1:
        return [output]
    stems = [p.stem for p in paths]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ValueError(f"several configurations share the stem(s) {twice}; their results would overwrite each "
                         "other in the --output folder.")
    if output.exists() and not output.is_dir():
        raise ValueError(f"with several configurations --output is a folder; {str(output)!r} is a file.")
    if not output.exists() and output.suffix.lower() in (".h5", ".hdf5"):   # it made a folder named runs.h5
        raise ValueError(f"with several configurations --output is a folder, which receives <config stem>.h5 for "
                         f"each; {str(output)!r} is named as a result file: give a folder name (e.g. "
                         f"{str(output.with_suffix(''))!r}).")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:        # it was a bare "[Errno 2] No such file or directory: '/proc/self/runs'"
        raise ValueError(f"--output {str(output)!r}: cannot create the folder for the results "
                         f"({e.strerror or e}).") from None
    return [output / f"{s}.h5" for s in stems]


def _is_energy(result) -> bool:
    from ._energy._results import EnergyResult

    return isinstance(result, EnergyResult)


def _is_ensemble(result) -> bool:
    from ._ensemble_result import EnsembleResult

    return isinstance(result, EnsembleResult)


def _refuse_to_replace_an_unfinished_run(output: Path, config: Path) -> None:
    """A run into ``output`` must not replace a run stored there that stopped before its t_final (killed,
    interrupted, ended early): that is continued with --resume.  Replacing it discarded its work, and a batch
    scheduler that re-runs the same command after a preemption never got past the first stretch."""
    from ._io import ResultFileError, run_info

    if not output.is_file():
        return
    try:
        info = run_info(output)
    except ResultFileError:            # not a run's record (an energy result, a damaged file): replaceable
        return
    if "t_final" not in info or info.get("complete", True):
        return
    raise ValueError(f"--output {str(output)!r} holds a run that stopped before its t_final={info['t_final']:g}; "
                     f"continue it with `meanfield run {config} --output {output} --resume` (options of its "
                     "continuation with --option KEY=VALUE), or delete the file to start again.")


def _run_one(cfg, output: Path, quiet: bool):
    """Run one validated configuration into ``output``; returns the Trajectory or EnergyResult."""
    import meanfield as mf
    from ._config import EnergyConfig

    metadata = {"config": cfg.text, **({"seed": cfg.seed} if cfg.seed is not None else {})}
    if getattr(cfg, "source", None) is not None:        # kind = "file": the tokens are not in the config text
        metadata["initial_source"] = cfg.source
    if getattr(cfg, "matrices", None) is not None:
        metadata["matrix_sources"] = cfg.matrices
    if isinstance(cfg, EnergyConfig):
        from ._energy._problem import solve_energy

        result = solve_energy(cfg)
        mf.save(result, output, run_info=metadata)       # atomic: temporary file + rename
        return result
    # an existing file at `output` is replaced (atomically) only once the run is validated and has started
    return mf.simulate(cfg.model, cfg.initial, cfg.t_final, backend=cfg.backend, t0=cfg.t0, checkpoint=output,
                       checkpoint_every=cfg.checkpoint_every, checkpoint_interval=cfg.checkpoint_interval,
                       progress=not quiet, metadata=metadata,
                       **cfg.save, **cfg.options)


def _run_figure(results, stems, figure):
    from .plot import _plt, comparison_figure, energy_figure, result_figure

    if len(results) > 1:
        _plt().close(comparison_figure(results, figure, labels=stems))
    elif _is_energy(results[0]):
        _plt().close(energy_figure(results[0], figure))
    else:
        result_figure(results[0], figure)


def _summary(traj, path) -> str:
    import numpy as np

    d = traj.diagnostics
    lines = [f"{path}: {traj!r}", f"  status: {traj.message}"]
    # particles-sh records the kernel's band limit; a hybrid run the density's, then the kernel's after its hand-off
    label = {"particles-sh": "lmax (kernel)", "hybrid": "lmax (ρ, kernel)"}.get(traj.backend, "lmax")
    # mean_alignment and mean_radius: a particle run (which has no mass_error, tail_fraction or min_rho) printed
    # max_speed alone under a causal mask, nothing of how far its tokens clustered or its radii grew
    for k in ("energy", "mean_alignment", "mean_radius", "mass_error", "tail_fraction", "min_rho", "max_speed", "lmax"):
        if k not in d:
            continue
        if k == "energy" and np.isnan(np.asarray(d[k], dtype=float)).all():
            # "start nan end nan" read as a failed run; the spectral backend computes E_β for QᵀK = c·I only
            lines.append(f"  {k:16s} not computed (NaN at every saved time: the spectral backend computes E_β for "
                         "QᵀK = c·I only)")
            continue
        values = np.asarray(d[k], dtype=float)
        end = f"{values[-1]: .6g}"
        if np.isnan(values[-1]) and not np.isnan(values).all():
            # a hybrid run's particle phase has no tail_fraction or min_rho: "end nan" read as a failed run
            last = np.flatnonzero(~np.isnan(values))[-1]
            end += f"   (NaN from t={traj.times[last + 1]:g} on; {values[last]:.6g} at t={traj.times[last]:g})"
        lines.append(f"  {label if k == 'lmax' else k:16s} start {values[0]: .6g}   end {end}")
    return "\n".join(lines)


def _matrix_text(D, limit: int | None = None) -> str:
    """D as ``diag(…)`` or ``[row; row]``; with ``limit``, the rows after the one that passes ``limit`` characters are
    left out (``info`` shows 160 of them: formatting all 12·768² entries of a model's Q took 6 s per matrix)."""
    import numpy as np

    if np.count_nonzero(D - np.diag(np.diag(D))) == 0:
        return "diag(" + ", ".join(f"{x:g}" for x in np.diag(D)) + ")"
    rows, length = [], 0
    for row in D:
        rows.append(" ".join(f"{x:g}" for x in row))
        length += len(rows[-1]) + 2
        if limit is not None and length > limit:
            break
    return "[" + "; ".join(rows) + "]"


def _model_text(m, width: int = 160) -> str:
    """The model's parameters as ``info`` prints them: Q, K and V too when given (two runs that differed only in V, or
    in their number of heads, had the same line), each cut to ``width`` characters; a matrix cut short ends with
    its shape and a digest of its entries, so that runs whose matrices differ past the cut print different lines."""
    import hashlib

    import numpy as np

    parts = [f"β={m.beta:g}, scheme={m.scheme}, attention={m.attention}, d={m.d}, α={m.alpha}, τ={m.tau}"]
    for name in "QKV":
        M = getattr(m, name)
        if M is None:                                  # the identity
            continue
        M = np.asarray(M)
        heads = [M] if M.ndim == 2 else M
        texts, length = [], 0
        for h in heads:                                # only as many heads as the width shows
            texts.append(_matrix_text(h, width))
            length += len(texts[-1]) + 2
            if length > width:
                break
        text = texts[0] if M.ndim == 2 else f"{M.shape[0]} heads [" + "; ".join(texts) + "]"
        if len(text) > width or len(texts) < len(heads):
            digest = hashlib.sha256(np.ascontiguousarray(M, dtype=float).tobytes()).hexdigest()[:12]
            text = text[:width - 1] + f"… ({'×'.join(map(str, M.shape))}, sha256 {digest})"
        parts.append(f"{name}={text}")
    return ", ".join(parts)


def _energy_summary(res, path) -> str:
    """What `run` and `info` print for an energy problem: value, problem, classification, evidence, solution."""
    cls = res.classification
    tag = "proven" if (cls.minimizer_proven if res.task == "minimize" else cls.maximizer_proven) else \
        "verified numerically only"
    theory = cls.minimizer if res.task == "minimize" else cls.maximizer
    lines = [f"{path}: {res!r}",
             f"  E_β,D = {res.value:.12g}   (uniform measure: {res.uniform_value:.12g})",
             (f"  problem: {res.task} E over probability measures on S^{res.d - 1}" if res.task != "stationary" else
              f"  problem: a stationary state of the gradient {res.parameters.get('direction', 'ascent')} of E"
              f"{' (softmax flow)' if res.parameters.get('flow') == 'softmax' else ''} from "
              f"{'' if res.start is None else f'{res.start.n} '}particles on S^{res.d - 1}")
             + f", β = {res.beta:g}, D = {_matrix_text(res.D)}",
             f"  D is {cls.kind} (eigenvalues {', '.join(f'{x:.6g}' for x in cls.eigenvalues)})"]
    if res.task != "stationary":
        lines.append(f"  theory: the {res.task}rs are {theory} [{tag}]")
    lines.append(f"  {'certificate' if res.task != 'stationary' else 'flow'}: {res.message}"
                 f" [{'satisfied' if res.success else 'NOT satisfied'}]")
    lines.append(f"  solution: {res.measure!r}")
    return "\n".join(lines)


def _value_text(v) -> str:
    """A scalar as %.6g, an array observable's value as its entries (abridged beyond 10)."""
    import numpy as np

    a = np.asarray(v, dtype=float)
    return f"{a.item():.6g}" if a.ndim == 0 else np.array2string(a, precision=6, separator=", ", threshold=10)


def _ensemble_summary(res, path) -> str:
    """What `info` prints of an ensemble's file: the runs, the replicas that finished, and the observable's mean and
    confidence interval at the first and last time."""
    from collections import Counter

    T, R = len(res.times), res.replicas
    lines = [f"{path}: ensemble of {R} replicas, observable {res.observable or '(not recorded)'}, {T} times in "
             f"[{res.times[0]:g}, {res.times[-1]:g}]"]
    ok = sum(s.name == "OK" for s in res.statuses)
    others = Counter(s.name for s in res.statuses if s.name != "OK")
    lines.append(f"  replicas finished: {ok} of {R}" + (f" ({', '.join(f'{k}: {v}' for k, v in others.items())})"
                                                      if others else ""))
    lines.append(f"  interval: {100 * res.confidence:.3g} % {'Student t' if res.interval == 't' else 'BCa bootstrap'}")
    for j in sorted({0, T - 1}):
        low, high = _value_text(res.ci_low[j]), _value_text(res.ci_high[j])
        interval = f"interval [{low}, {high}]" if res.mean.ndim == 1 else f"ci_low {low}   ci_high {high}"
        lines.append(f"  t = {res.times[j]:<10g} mean {_value_text(res.mean[j])}   {interval}   "
                     f"({int(res.count[j])} replicas counted)")
    lines.append(f"  model: {_model_text(res.model) if res.model is not None else 'not recorded'}")
    tokens = (f"{res.sampler} uniform tokens per replica" if isinstance(res.sampler, int) else
              f"sampler {res.sampler}" if res.sampler is not None else "not recorded")
    lines.append(f"  backend: {res.backend or 'not recorded'}"
                 + (" (replicas batched as one run)" if res.batched else "") + f", initial tokens: {tokens}")
    lines.append(f"  options: {_options_text(res) if res.options else 'not recorded'}")
    entropies = {repr(s.entropy) for s in res.seeds}
    lines.append(f"  seeds: {'entropy ' + entropies.pop() if len(entropies) == 1 else f'{len(entropies)} entropies'}, "
                 f"spawn keys {res.seeds[0].spawn_key} … {res.seeds[-1].spawn_key} (replica i's tokens: "
                 "numpy.random.default_rng(seeds[i]))")
    return "\n".join(lines)


def _options_text(traj, width: int = 400) -> str:
    """The run's backend options that are not the backend's defaults (given, or filled in by the run: a method
    chosen from ``step``), as name=value; "the backend's defaults" when there are none."""
    import numpy as np

    from .backends._registry import get_backend

    try:
        defaults = get_backend(traj.backend).option_defaults()
    except (ValueError, AttributeError):       # a backend not registered in this session
        defaults = {}

    def same(a, b):
        if b is None and isinstance(a, float) and a == np.inf:      # None read as "no bound" (max_step)
            return True
        try:
            return a is b or bool(np.all(np.asarray(a == b)))
        except (TypeError, ValueError):
            return False
    changed = [f"{k}={v!r}" for k, v in traj.options.items() if k not in defaults or not same(v, defaults[k])]
    text = ", ".join(changed) or "the backend's defaults"
    return text if len(text) <= width else text[:width - 1] + "…"


class _UnstoredAlpha:
    """Stands for the callable α of a run, which its file cannot hold: `info` and `plot` need no α, and refused such a
    file ("pass `alpha=` to load()", which the command line cannot do).  Calling it says why it is not there."""

    def __init__(self, text: str):
        self.text = text

    def __call__(self, t):
        raise ValueError(f"the run's α(t) was a function ({self.text}), which its file does not hold: load it with "
                         "meanfield.load(path, alpha=...) to evaluate it.")

    def __repr__(self):
        return f"{self.text} (a function, not stored)"


def _load(path):
    """mf.load(path) for reading: a run whose α was a function gets a stand-in that refuses to be called."""
    import meanfield as mf
    from ._io import unstored_alpha

    text = unstored_alpha(path)
    return mf.load(path, alpha=None if text is None else _UnstoredAlpha(text))


def _info(args) -> int:
    from ._io import run_info, sweep_folder

    _refuse_empty_paths(args)
    if sweep_folder(args.result):
        print(_sweep_folder_summary(Path(args.result)))
        return 0
    traj = _load(args.result)
    info = run_info(args.result)
    if _is_ensemble(traj):
        from ._io import file_attrs

        print(_ensemble_summary(traj, args.result))
        print(f"  written by meanfield {file_attrs(args.result).get('meanfield_version')}")
        return 0
    if _is_energy(traj):
        from ._io import file_attrs

        print(_energy_summary(traj, args.result))
        print(f"  solver arguments: {traj.parameters}")
        print(f"  complete: {info['complete']}, seed: {info.get('seed')}, "
              f"written by meanfield {file_attrs(args.result).get('meanfield_version')}")
        return 0
    m = traj.model
    print(_summary(traj, args.result))
    print(f"  model: {_model_text(m)}")
    print(f"  options: {_options_text(traj)}")
    if info.get("initial_source") is not None:
        print(f"  initial: {info['initial_source']}")
    if info.get("matrix_sources") is not None:
        print(f"  matrices: {info['matrix_sources']}")
    print(f"  complete: {info['complete']}, t_final: {info.get('t_final')}, seed: {info.get('seed')}")
    print(f"  states: {len(traj)} saved, first {traj.states[0]!r}, last {traj.final!r}")
    from ._io import read_resume_point

    point = read_resume_point(args.result)
    if point is not None:
        print(f"  resume point: t={point.t:.6g} (the state the run had reached past its last saved one; "
              "--resume continues from it)")
    return 0


def _rows_text(count) -> str:
    return "not a sweep table" if count is None else f"{count} row{'s' * (count != 1)}"


SHOWN_VALUES = 8        # values of a swept parameter listed by `meanfield info DIR`


def _sweep_folder_summary(out: Path) -> str:
    """`meanfield info DIR` of a sweep's output folder: its sweep file, tasks, records by status, swept parameters and
    tables, read only (it said only that DIR is a sweep's folder, not a result file)."""
    from ._sweep._outdir import table_rows_count
    from ._sweep._runner import read_sweep_folder

    spec, problem, records, result = read_sweep_folder(out)
    where = next((str(out / n) for n in ("sweep.toml", "sweep.json") if (out / n).is_file()), None)
    lines = [f"{out}: the output of a sweep (`meanfield sweep`)"]
    if spec is None:
        lines.append(f"  sweep file: {where} cannot be read ({problem})" if where else "  sweep file: none recorded")
        lines.append(f"  records: {len(records)} in {str(out / 'tasks')!r}")
        lines += _status_lines(list(records.values()))
    else:
        lines.append(f"  sweep file (the one run last): {where}")
        lines.append(f"  tasks: {result.tasks}, recorded {len(result.rows)}"
                     + (f", not run yet {result.missing}" if result.missing else ""))
        lines += _status_lines(result.rows)
        others = len(records.keys() - {t.key for t in spec.tasks})
        if others:
            lines.append(f"  other records: {others} in {str(out / 'tasks')!r} belong to no task of this sweep file "
                         "(another base configuration or other recording settings)")
        if result.other_versions:
            versions = ", ".join(f"{v}: {n}" for v, n in sorted(result.other_versions.items()))
            count = sum(result.other_versions.values())
            lines.append(f"  computed by another meanfield version: {count} ({versions})")
        for name in spec.parameter_names:
            values = list(dict.fromkeys(repr(t.params[name]) for t in spec.tasks if name in t.params))
            shown = ", ".join(values[:SHOWN_VALUES]) + (", …" if len(values) > SHOWN_VALUES else "")
            lines.append(f"  {name}: {len(values)} value(s): {shown}")
    tables = [f"{p} ({_rows_text(table_rows_count(p))})" for p in (out / "results.jsonl", out / "results.csv")
              if p.is_file()]
    lines.append("  table: " + (", ".join(tables) if tables else "none yet (written at the end of a sweep)"))
    return "\n".join(lines)


def _status_lines(rows) -> list:
    """The count of each status among ``rows`` (records or table rows), then the first rows not OK, with errors."""
    from ._sweep import SHOWN_FAILURES
    from ._sweep._runner import ERROR

    counts = {}
    for r in rows:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    if not counts:
        return []
    lines = ["  status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
             + (" (a rerun runs the ERROR tasks again)" if ERROR in counts else "")]
    failed = [r for r in rows if r.get("status") != "OK"]
    lines += [f"    {r.get('status')}: {r.get('key')}: {r.get('error')}" for r in failed[:SHOWN_FAILURES]]
    if len(failed) > SHOWN_FAILURES:
        lines.append(f"    … and {len(failed) - SHOWN_FAILURES} more not OK")
    return lines


def _plot(args) -> int:
    import meanfield as mf
    from .plot import _plt, comparison_figure, describe, energy_figure, ensemble_figure, result_figure

    _refuse_empty_paths(args)
    output_file("--output", args.output, FIGURE_SUFFIXES + ((".gif",) if len(args.result) == 1 else ()))
    drawn = next((r for r in args.result if _same_file(args.output, r)), None)
    if drawn is not None:       # a result named r.png was replaced by its own figure
        raise ValueError(f"--output {args.output!r} is the result file {drawn!r}: the figure would replace it. Give "
                         "the figure another name.")
    trajs = [_load(path) for path in args.result]
    energy = [isinstance(tr, mf.EnergyResult) for tr in trajs]
    ensemble = [_is_ensemble(tr) for tr in trajs]
    for kind, which in (("an energy result", energy), ("an ensemble result", ensemble)):
        if any(which) and len(trajs) > 1:
            raise ValueError(f"{kind} is drawn on its own: give one file ({kind}: "
                             f"{', '.join(p for p, e in zip(args.result, which) if e)}).")
        # said in the command's terms (energy_figure said "`output` …: the file type must be one of …", not why)
        if which[0] and Path(args.output).suffix.lower() == ".gif":
            raise ValueError(f"--output {args.output!r}: {kind} is drawn as one figure, not an animation; "
                             f"give one of {', '.join(FIGURE_SUFFIXES)}.")
    if len(trajs) > 1 and len({tr.model.d for tr in trajs}) > 1:           # in the files' terms (comparison_figure's message names its `trajectories` argument)
        each = ", ".join(f"{path} on S^{tr.model.d - 1} (d={tr.model.d})" for path, tr in zip(args.result, trajs))
        raise ValueError(f"results compared side by side must be on the same sphere; got {each}.")
    if (energy[0] or ensemble[0]) and args.projection == "3d":     # it was ignored without a word
        raise ValueError(f"--projection 3d draws particles on S² in 3-D, and {args.result[0]} is "
                         f"{'an energy result' if energy[0] else 'an ensemble result'} (drawn as one figure); omit it.")
    if energy[0]:
        _plt().close(energy_figure(trajs[0], args.output))
    elif ensemble[0]:
        _plt().close(ensemble_figure(trajs[0], args.output))
    elif len(trajs) == 1:
        result_figure(trajs[0], args.output, projection=args.projection)
    else:
        labels = [f"{Path(path).stem}: {describe(tr)}" for path, tr in zip(args.result, trajs)]
        _plt().close(comparison_figure(trajs, args.output, labels=labels, projection=args.projection))
    print(f"figure written to {args.output}")
    return 0


def _demo(args) -> int:
    from ._demo import run_demo
    from ._memory import require
    from ._validate import nonneg_int, positive_float
    from .backends._spectral import _memory_estimate
    from .sphere._funk_hecke import MAX_BETA

    _refuse_empty_paths(args)
    output_file("--output", args.output, FIGURE_SUFFIXES)     # before the two runs, not after
    lmax = nonneg_int("--lmax", args.lmax, minimum=1)
    if positive_float("--beta", args.beta) > MAX_BETA:       # the Funk–Hecke multipliers' limit, as the solver's
        raise ValueError(f"`--beta` must be ≤ {MAX_BETA:g} (the Funk–Hecke multipliers of e^(βt) are computed "
                         f"up to there); got --beta {args.beta:g}.")
    positive_float("--t-final", args.t_final)
    nbytes, nodes = _memory_estimate(lmax, 3, False, 1, False)   # the solver at the starting band limit
    require(nbytes, f"meanfield demo at --lmax {lmax} ({nodes} grid nodes)", "lower --lmax.")
    try:
        runs = run_demo(args.output, lmax=args.lmax, beta=args.beta, t_final=args.t_final)
    except KeyboardInterrupt:
        print(f"meanfield demo: interrupted; no figure written ({args.output!r} is untouched).", file=sys.stderr)
        return 130
    # a run that ended early (RESOLUTION_LOST at lmax_max = 4·--lmax, say) exited with status 0, as if it had not
    early = {scheme: traj for scheme, traj in runs.items() if not traj.success}
    for scheme, traj in early.items():
        # the run's own advice names --resume and --option, which the demo (no checkpoint) has not
        why = (f"the band limit reached its ceiling 4·--lmax = {4 * lmax}; raise --lmax"
               if "reached lmax_max" in traj.detail else traj.message)
        print(f"meanfield demo: {scheme} ended early ({traj.status.name}) at t={traj.times[-1]:g} of "
              f"--t-final {args.t_final:g}: {why}.", file=sys.stderr)
    return 1 if early else 0


def _validate(args) -> int:
    from ._validation import main as validation_main   # returns an exit code; args: quick, output

    _validation_folder(args.output)
    return validation_main(args)


def _validation_folder(output) -> None:
    """Refuse, before the suite, a ``--output`` that cannot receive the report: '' (an unset shell variable) wrote
    REPORT.md, validation.json and figures/ into the current folder, and a folder that cannot be created or written
    gave a bare "[Errno 2] No such file or directory: '/proc/v'" or "[Errno 1] Operation not permitted: …"."""
    import tempfile

    what = "REPORT.md, validation.json and the figures"
    if str(output) == "":
        raise ValueError(f"--output must name a folder (created if missing) for {what}; got ''.")
    out = Path(output)
    if out.exists() and not out.is_dir():
        return                      # the suite's own message: "is a file; give a folder …"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out, prefix=".validate-probe-"):
            pass
    except OSError as e:
        raise ValueError(f"--output {str(out)!r}: cannot create this folder or write in it, for {what} "
                         f"({e.strerror or e}).") from None


def _bench(args) -> int:
    from ._bench import main as bench_main              # returns an exit code; args: quick, output

    return bench_main(args)


def _sweep(args) -> int:
    from ._sweep import main as sweep_main              # returns an exit code; args: config, workers, scheduler, output, quiet

    return sweep_main(args)


_COMMANDS = {"run": _run, "info": _info, "plot": _plot, "demo": _demo, "validate": _validate, "bench": _bench,
             "sweep": _sweep}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
