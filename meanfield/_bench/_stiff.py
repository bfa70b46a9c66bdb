"""Case 11: stiff particle runs, the implicit methods ("bdf", "radau") against the explicit pair ("rk45").

USA attention at large β: once the tokens have clustered, an explicit pair is held by stability at steps ~e^{−β}
while the clusters attract on a slow time scale.  Each method runs ``mf.simulate(mf.Model(β,
attention="unnormalized"), mf.Particles.uniform(n, 3, seed=0), t_final, backend="particles", method=…, rtol=1e-8,
atol=1e-10)``; the report gives steps, wall times (medians of interleaved rounds) and the speedup of each implicit
method over rk45 (alternative / ours), and the largest difference of its final positions from rk45's.
"""
from __future__ import annotations

import numpy as np

from . import _common as C

NAME = "stiff"
TITLE = "11. Stiff particle runs: implicit methods against the explicit pair"
N, RTOL, ATOL = 20, 1e-8, 1e-10
RUNS, QUICK_RUNS = ((6.0, 5.0), (10.0, 5.0)), ((10.0, 1.0),)      # (β, t_final)
ROUNDS, QUICK_ROUNDS = 3, 1
IMPLICIT = ("bdf", "radau")


def _simulate(beta: float, t_final: float, method: str, n: int):
    import meanfield as mf

    return mf.simulate(mf.Model(beta, attention="unnormalized"), mf.Particles.uniform(n, 3, seed=0), t_final,
                       backend="particles", method=method, rtol=RTOL, atol=ATOL)


def run(quick: bool = False, runs=None, rounds: int | None = None, n: int = N) -> dict:
    runs = C.sizes_override("runs", runs, QUICK_RUNS if quick else RUNS)
    rounds = C.count_override("rounds", rounds, QUICK_ROUNDS if quick else ROUNDS)
    rows, comps = [], []
    for beta, t_final in runs:
        funcs = {m: (lambda m=m: _simulate(beta, t_final, m, n)) for m in ("rk45",) + IMPLICIT}
        finals = {m: C.completed(f(), f"USA β = {beta:g}, method={m!r}")     # also the warm-up
                  for m, f in funcs.items()}
        raw = C.interleaved(funcs, rounds, warmup=False)
        times = C.medians(raw)
        row = dict(beta=beta, t_final=t_final, n=n, rounds=rounds, seconds=times, rounds_s=raw,
                   steps={m: len(tr.steps["t"]) for m, tr in finals.items()},
                   status={m: tr.status.name for m, tr in finals.items()},
                   max_difference={m: float(np.max(np.abs(finals[m].final.positions - finals["rk45"].final.positions)))
                                   for m in IMPLICIT})
        rows.append(row)
        for m in IMPLICIT:
            comps.append(C.comparison(f"USA β = {beta:g}, {n} tokens to t = {t_final:g}", f"method={m!r}",
                                      "method='rk45'", times[m], times["rk45"], n=n))
        print(f"[bench] stiff: β = {beta:g}, t = {t_final:g}: rk45 {row['steps']['rk45']} steps "
              f"{C.ms(times['rk45'])} ms; " + "; ".join(
                  f"{m} {row['steps'][m]} steps {C.ms(times[m])} ms (speedup {times['rk45'] / times[m]:.2f})"
                  for m in IMPLICIT), flush=True)
    last = rows[-1]
    targets = [C.target(f"bdf over rk45, USA β = {last['beta']:g}", "reported (no target set)",
                        round(last["seconds"]["rk45"] / last["seconds"]["bdf"], 2), None,
                        f"median of {rounds} rounds")]
    return dict(case=NAME, title=TITLE, rows=rows, comparisons=comps, targets=targets,
                params=dict(n=n, rtol=RTOL, atol=ATOL, scheme="post-ln", attention="unnormalized", d=3,
                            tokens="Particles.uniform(n, 3, seed=0)"))


def report(res: dict, out) -> str:
    p = res["params"]
    rows = [[f"{r['beta']:g}", f"{r['t_final']:g}"] + [f"{r['steps'][m]} / {C.ms(r['seconds'][m])}"
                                                        for m in ("rk45",) + IMPLICIT]
            + [f"{r['seconds']['rk45'] / r['seconds'][m]:.1f}" for m in IMPLICIT]
            + [f"{max(r['max_difference'].values()):.1e}"] for r in res["rows"]]
    return "\n".join([
        f"USA attention, Post-LN, d = 3, {p['n']} tokens {p['tokens']}, `rtol={p['rtol']:g}`, `atol={p['atol']:g}`: "
        "whole runs of `mf.simulate(..., backend=\"particles\", method=…)`; steps and wall time (medians of "
        "interleaved rounds), the speedup of each implicit method over rk45, and the largest difference of their "
        "final positions from rk45's.", "",
        C.md_table(["β", "t_final", "rk45 steps / ms", "bdf steps / ms", "radau steps / ms", "bdf speedup",
                    "radau speedup", "max diff"], rows)])
