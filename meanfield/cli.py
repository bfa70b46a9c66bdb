"""The ``meanfield`` command: subcommands only parse and dispatch."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

_EPILOG = {
    "run": "Example: meanfield run examples/post_ln_s2.toml --output post_ln.h5   (add --resume to continue a "
           "killed run from its checkpoint)",
    "plot": "Example: meanfield plot post_ln.h5 --output post_ln.png",
    "info": "Example: meanfield info post_ln.h5",
    "demo": "Example: meanfield demo --output demo.png",
    "validate": "Example: meanfield validate --quick --output validation-out",
    "bench": "Example: meanfield bench --quick --output bench-out",
    "sweep": "Example: meanfield sweep examples/phase_sweep.toml --workers 2 --output sweep-out",
}


def _parser():
    p = argparse.ArgumentParser(prog="meanfield", description="Mean-field self-attention dynamics on the sphere.",
                                epilog="Run `meanfield COMMAND --help` for each command's options.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a TOML configuration; write an HDF5 result (checkpointed)",
                         epilog=_EPILOG["run"])
    run.add_argument("config", help="TOML file with [model], [initial], [run] and optional [options]")
    run.add_argument("--output", required=True, help="HDF5 result file (also the checkpoint)")
    run.add_argument("--resume", action="store_true", help="continue from the checkpoint in --output")
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    plot = sub.add_parser("plot", help="figures of a result file", epilog=_EPILOG["plot"])
    plot.add_argument("result")
    plot.add_argument("--output", required=True, help="PNG file (a .gif makes an animation)")
    info = sub.add_parser("info", help="summary of a result file", epilog=_EPILOG["info"])
    info.add_argument("result")
    demo = sub.add_parser("demo", help="Post-LN vs Peri-LN on S² with the spectral solver; writes a figure",
                          epilog=_EPILOG["demo"])
    demo.add_argument("--output", default="demo.png", help="figure file (PNG)")
    demo.add_argument("--lmax", type=int, default=48, help="initial band limit")
    demo.add_argument("--beta", type=float, default=4.0)
    demo.add_argument("--t-final", type=float, default=3.0)
    val = sub.add_parser("validate", help="reproduce the published results; print the comparison table",
                         epilog=_EPILOG["validate"])
    val.add_argument("--quick", action="store_true", help="the reduced suite (under 3 minutes; run in CI)")
    val.add_argument("--output", default="validation-out", help="folder for figures, JSON and REPORT.md")
    bench = sub.add_parser("bench", help="performance report against the alternatives (same-run ratios)",
                           epilog=_EPILOG["bench"])
    bench.add_argument("--quick", action="store_true", help="small sizes only")
    bench.add_argument("--output", required=True, help="folder for JSON, the markdown report and plots")
    sweep = sub.add_parser("sweep", help="a parameter sweep on dask.distributed (resumable)",
                           epilog=_EPILOG["sweep"])
    sweep.add_argument("config", help="TOML sweep file")
    sweep.add_argument("--workers", type=int, default=None, help="local workers (default: the usable cores)")
    sweep.add_argument("--scheduler", default=None, help="address of an existing dask scheduler")
    sweep.add_argument("--output", required=True, help="folder for the results table and per-task files")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from ._config import ConfigError
    from ._errors import MeanfieldError

    try:
        return _COMMANDS[args.command](args)
    except (ConfigError, MeanfieldError, ValueError, TypeError) as e:
        print(f"meanfield {args.command}: error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    import meanfield as mf
    from ._config import load_config

    if args.resume:
        if not Path(args.output).exists():
            print(f"meanfield run: error: nothing to resume: {args.output!r} does not exist", file=sys.stderr)
            return 2
        traj = mf.resume(args.output, progress=not args.quiet)
    else:
        cfg = load_config(args.config)
        if Path(args.output).exists():
            Path(args.output).unlink()
        metadata = {"config": cfg.text, **({"seed": cfg.seed} if cfg.seed is not None else {})}
        traj = mf.simulate(cfg.model, cfg.initial, cfg.t_final, backend=cfg.backend, checkpoint=args.output,
                           checkpoint_every=cfg.checkpoint_every, progress=not args.quiet, metadata=metadata,
                           **cfg.save, **cfg.options)
    if not args.quiet:
        print(_summary(traj, args.output))
    return 0 if traj.status.name in ("OK", "CALLBACK_STOP") else 1


def _summary(traj, path) -> str:
    d = traj.diagnostics
    lines = [f"{path}: {traj!r}", f"  status: {traj.message}"]
    for k in ("energy", "mass_error", "tail_fraction", "min_rho", "max_speed", "lmax"):
        if k in d:
            lines.append(f"  {k:14s} start {d[k][0]: .6g}   end {d[k][-1]: .6g}")
    return "\n".join(lines)


def _info(args) -> int:
    import meanfield as mf
    from ._io import run_info

    traj = mf.load(args.result)
    info = run_info(args.result)
    m = traj.model
    print(_summary(traj, args.result))
    print(f"  model: β={m.beta:g}, scheme={m.scheme}, attention={m.attention}, d={m.d}, α={m.alpha}, τ={m.tau}")
    print(f"  complete: {info['complete']}, t_final: {info.get('t_final')}, seed: {info.get('seed')}")
    print(f"  states: {len(traj)} saved, first {traj.states[0]!r}, last {traj.final!r}")
    return 0


def _plot(args) -> int:
    import meanfield as mf
    from .plot import result_figure

    traj = mf.load(args.result)
    result_figure(traj, args.output)
    print(f"figure written to {args.output}")
    return 0


def _demo(args) -> int:
    from ._demo import run_demo

    run_demo(args.output, lmax=args.lmax, beta=args.beta, t_final=args.t_final)
    return 0


def _validate(args) -> int:
    from ._validation import main as validation_main   # returns an exit code; args: quick, output

    return validation_main(args)


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
