"""Case 10: whole runs of the exact backend (``backend="particles"``) at small N, against a hand-written numpy script.

Researchers with n ≤ 10³ tokens write a few lines of numpy (the dense O(n²) softmax velocity and an RK4 loop); they
switch to meanfield's exact backend only if a whole run is not much slower.  Ours: ``mf.simulate(mf.Model(β),
mf.Particles.uniform(n, 3, seed=0), t_final, backend="particles", method="rk4", step=h)`` — everything a run does:
validation, the steps (each velocity a log-sum-exp direct sum, the scheme's speed and checks), the projection to
the sphere, the step log, the diagnostics of the first and last states.  The alternative (:func:`script_run`) is
the script: Post-LN softmax velocity ``w = exp(β x xᵀ); A = w x / Σw; v = A − ⟨A, x⟩ x`` (no max shift, safe for
β ≤ ~700) and the same RK4 steps, each followed by the projection x / ‖x‖.

With the default adaptive method (Dormand–Prince 5(4)) the steps differ from any fixed-step script, so that run is
compared per velocity evaluation: its wall time over the number of evaluations it made (counted in a separate,
untimed run), against one call of the script's velocity.

Ratios are ours / script (above 1: ours is slower), medians of interleaved rounds in one process.
"""
from __future__ import annotations

import numpy as np

from . import _common as C

NAME = "small-n"
TITLE = "10. Exact backend at small N: whole runs against a hand-written numpy script"
BETA, T_FINAL, STEP = 4.0, 2.0, 0.05
SIZES, QUICK_SIZES = (20, 100, 300), (20, 100)
ROUNDS, QUICK_ROUNDS = 9, 5


def script_velocity(x: np.ndarray, beta: float = BETA) -> np.ndarray:
    """The Post-LN softmax velocity as a hand-written script computes it (dense, no max shift)."""
    w = np.exp(beta * (x @ x.T))
    A = (w @ x) / w.sum(1, keepdims=True)
    return A - (A * x).sum(1, keepdims=True) * x


def script_run(x: np.ndarray, step: float = STEP, t_final: float = T_FINAL, beta: float = BETA) -> np.ndarray:
    """Classical RK4 with fixed ``step`` to ``t_final``, each step projected back to the sphere."""
    h = step
    for _ in range(int(round(t_final / step))):
        k1 = script_velocity(x, beta)
        k2 = script_velocity(x + 0.5 * h * k1, beta)
        k3 = script_velocity(x + 0.5 * h * k2, beta)
        k4 = script_velocity(x + h * k3, beta)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _evaluations(run) -> tuple:
    """(result of ``run()``, the number of velocity evaluations of the exact backend it made)."""
    from ..backends._particles import ParticlesBackend

    real, count = ParticlesBackend._field, [0]

    def counted(self, *args, **kwargs):
        count[0] += 1
        return real(self, *args, **kwargs)

    ParticlesBackend._field = counted
    try:
        out = run()
    finally:
        ParticlesBackend._field = real
    return out, count[0]


def run(quick: bool = False, sizes=None, rounds: int | None = None, t_final: float = T_FINAL,
        step: float = STEP) -> dict:
    import meanfield as mf

    sizes = C.sizes_override("sizes", sizes, QUICK_SIZES if quick else SIZES)
    rounds = C.count_override("rounds", rounds, QUICK_ROUNDS if quick else ROUNDS)
    model = mf.Model(BETA)
    rows = []
    for n in sizes:
        init = mf.Particles.uniform(n, 3, seed=0)
        x0 = np.array(init.positions)
        funcs = {"rk4": lambda: mf.simulate(model, init, t_final, backend="particles", method="rk4", step=step),
                 "script": lambda: script_run(x0, step, t_final),
                 "rk45": lambda: mf.simulate(model, init, t_final, backend="particles"),
                 "script_velocity": lambda: script_velocity(x0)}
        ours, evals_rk4 = _evaluations(funcs["rk4"])
        tr45, evals_rk45 = _evaluations(funcs["rk45"])
        theirs = funcs["script"]()
        single = {k: C.timed(f)[1] for k, f in funcs.items()}      # warm-up, and the calls per turn
        calls = {k: C.calls_per_turn(t) for k, t in single.items()}
        times = C.interleaved(funcs, rounds, warmup=False, calls=calls)
        t = C.medians(times)
        row = dict(n=n, rounds=rounds, calls_per_turn=calls, times_s=times, rk4_s=t["rk4"], script_s=t["script"],
                   rk45_s=t["rk45"], script_velocity_s=t["script_velocity"], rk4_evaluations=evals_rk4,
                   rk45_evaluations=evals_rk45, rk45_steps=len(tr45.steps["t"]),
                   rk4_ratio=t["rk4"] / t["script"],
                   rk4_ratio_per_round=[a / b for a, b in zip(times["rk4"], times["script"])],
                   rk45_per_evaluation_s=t["rk45"] / evals_rk45,
                   rk45_ratio_per_evaluation=t["rk45"] / evals_rk45 / t["script_velocity"],
                   # both are RK4 with the same steps; the script evaluates the velocity off the sphere at the
                   # stages, ours at θ/‖θ‖ (a different smooth extension): they agree to the local error
                   max_difference_rk4=float(np.max(np.abs(np.asarray(ours.final.positions) - theirs))))
        print(f"[bench] small-n: n = {n}: rk4 run {C.ms(row['rk4_s'])} ms vs script {C.ms(row['script_s'])} ms "
              f"(meanfield/hand-written {row['rk4_ratio']:.2f}); rk45 {C.ms(row['rk45_per_evaluation_s'])} ms per "
              f"evaluation vs {C.ms(row['script_velocity_s'])} ms ({row['rk45_ratio_per_evaluation']:.2f})",
              flush=True)
        rows.append(row)
    comps = [C.comparison(f"Post-LN run to t = {t_final:g}, RK4 step {step:g}, n = {r['n']}", "exact backend "
                          "(mf.simulate)", "hand-written numpy script", r["rk4_s"], r["script_s"], n=r["n"])
             for r in rows]
    comps += [C.comparison(f"Post-LN velocity evaluation inside an adaptive (rk45) run, n = {r['n']}",
                           "exact backend (run time / evaluations)", "hand-written numpy velocity",
                           r["rk45_per_evaluation_s"], r["script_velocity_s"], n=r["n"]) for r in rows]
    small = rows[0]
    targets = [C.target(f"whole RK4 run at n = {small['n']}, meanfield / hand-written", "reported (no target set)",
                        round(small["rk4_ratio"], 2), None,
                        f"median of {rounds} rounds, per-round ratios {min(small['rk4_ratio_per_round']):.2f}–"
                        f"{max(small['rk4_ratio_per_round']):.2f}")]
    return dict(case=NAME, title=TITLE, rows=rows, comparisons=comps, targets=targets,
                params=dict(beta=BETA, t_final=t_final, step=step, scheme="post-ln", attention="softmax", d=3,
                            tokens="Particles.uniform(n, 3, seed=0)"))


def report(res: dict, out) -> str:
    p = res["params"]
    rows = [[r["n"], C.ms(r["rk4_s"]), C.ms(r["script_s"]), f"{r['rk4_ratio']:.2f}",
             f"{min(r['rk4_ratio_per_round']):.2f}–{max(r['rk4_ratio_per_round']):.2f}", r["rk4_evaluations"],
             f"{r['rk45_per_evaluation_s'] * 1e6:.0f}", f"{r['script_velocity_s'] * 1e6:.0f}",
             f"{r['rk45_ratio_per_evaluation']:.2f}", f"{r['max_difference_rk4']:.1e}"] for r in res["rows"]]
    return "\n".join([
        f"Post-LN softmax, β = {p['beta']:g}, d = 3, tokens {p['tokens']}, to t = {p['t_final']:g}. 'rk4': "
        f"`mf.simulate(..., backend=\"particles\", method=\"rk4\", step={p['step']:g})`, the whole run (validation, "
        "steps, step log, first and last diagnostics), against a hand-written numpy script (the dense velocity "
        "`w = exp(β x xᵀ); A = w x / Σw; v = A − ⟨A, x⟩ x` and the same RK4 steps, each projected to the sphere). "
        "'rk45': the default adaptive run's time over its velocity evaluations, against one call of the script's "
        "velocity. Ratios are meanfield / hand-written (above 1: ours slower); medians of interleaved rounds, "
        "each turn a batch of calls filling ~0.05 s. 'max diff': the two RK4 runs' final positions (the script "
        "evaluates stages off the sphere, ours at θ/‖θ‖).", "",
        C.md_table(["n", "rk4 run ms", "script ms", "ratio", "per round", "evaluations", "rk45 µs/eval",
                    "script µs/velocity", "ratio per eval", "max diff"], rows)])
