"""Case 12: ensembles of small particle runs, the replicas batched into one run against one by one and a numpy script.

``mf.ensemble(model, n, t_final, replicas=R, seed=0, ...)`` runs its R replicas by default as ONE run of the exact
backend with ``groups=R`` (each replica's tokens attend only to each other; one velocity evaluation for all of
them, shared steps).  Contenders, all timed in one process in interleaved rounds, Post-LN softmax β = 4, d = 3,
R replicas of n uniform tokens, RK4 with fixed step 0.05 to t = 2, ``save_every=0.5``, the default observable
:func:`meanfield.mean_alignment`:

- ours, ``mf.ensemble(..., method="rk4", step=0.05)`` (batched by default);
- the same with ``batch=False``: the replicas one after another (what the package did before batching);
- a hand-written batched numpy script (:func:`script_ensemble`): positions (R, n, 3), the dense softmax velocity by
  batched matmul over (R, n, n), the same RK4 steps each projected to the sphere, the mean alignment of each
  replica at the save times, their mean and Student-t interval (scipy.stats.t).  It starts from the same tokens
  as the ensemble (replica i: ``Particles.uniform(n, 3, seed=default_rng(SeedSequence(0).spawn(R)[i]))``), drawn
  before timing; the max difference of its per-replica values from ours is reported.

And ours with the default adaptive method (rk45, no step) against ``batch=False`` with it, as a ratio.  For large R
the one-by-one contenders are skipped (``one_by_one_max``): at R = 1000 they would take ~20 s per round.
"""
from __future__ import annotations

import numpy as np

from . import _common as C

NAME = "ensemble"
TITLE = "12. Ensembles of small runs: batched replicas against one by one and a batched numpy script"
BETA, T_FINAL, STEP, SAVE_EVERY, CONFIDENCE = 4.0, 2.0, 0.05, 0.5, 0.95
SIZES, QUICK_SIZES = ((100, 20), (100, 100), (1000, 20)), ((20, 20),)       # (R, n)
ROUNDS, QUICK_ROUNDS = 3, 1
ONE_BY_ONE_MAX = 100          # largest R timed one by one (batch=False)


def initial_tokens(replicas: int, n: int, seed: int = 0) -> np.ndarray:
    """The (R, n, 3) initial tokens of ``mf.ensemble(model, n, ..., replicas=R, seed=seed)``."""
    import meanfield as mf

    seeds = np.random.SeedSequence(seed).spawn(replicas)
    return np.stack([np.asarray(mf.Particles.uniform(n, 3, seed=np.random.default_rng(ss)).positions)
                     for ss in seeds])


def script_velocity(x: np.ndarray, beta: float = BETA) -> np.ndarray:
    """The Post-LN softmax velocity of R independent systems, ``x`` (R, n, d), as a batched script computes it."""
    w = np.exp(beta * (x @ x.transpose(0, 2, 1)))                 # (R, n, n), no max shift (β ≤ ~700)
    A = (w @ x) / w.sum(2, keepdims=True)
    return A - (A * x).sum(2, keepdims=True) * x


def script_alignment(x: np.ndarray) -> np.ndarray:
    """Mean pairwise alignment of each replica of equally weighted tokens: (|m|² − 1/n) / (1 − 1/n), m the mean."""
    n = x.shape[1]
    m = x.mean(1)
    return ((m * m).sum(1) - 1.0 / n) / (1.0 - 1.0 / n)


def script_ensemble(x: np.ndarray, step: float = STEP, t_final: float = T_FINAL, save_every: float = SAVE_EVERY,
                    beta: float = BETA, confidence: float = CONFIDENCE) -> dict:
    """Batched RK4 with fixed ``step`` to ``t_final`` (each step projected to the sphere), the mean alignment of each
    replica every ``save_every``, and over the replicas its mean and Student-t ``confidence`` interval."""
    from scipy import stats

    h, per = step, int(round(save_every / step))
    values = [script_alignment(x)]
    for k in range(1, int(round(t_final / step)) + 1):
        k1 = script_velocity(x, beta)
        k2 = script_velocity(x + 0.5 * h * k1, beta)
        k3 = script_velocity(x + 0.5 * h * k2, beta)
        k4 = script_velocity(x + h * k3, beta)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        x = x / np.linalg.norm(x, axis=2, keepdims=True)
        if k % per == 0:
            values.append(script_alignment(x))
    values = np.stack(values, axis=1)                             # (R, T)
    R = values.shape[0]
    mean, std = values.mean(0), values.std(0, ddof=1)
    half = stats.t.ppf(0.5 + confidence / 2, R - 1) * std / np.sqrt(R)
    return dict(values=values, mean=mean, ci_low=mean - half, ci_high=mean + half)


def _range(xs) -> str:
    return f"{min(xs):.2f}–{max(xs):.2f}"


def run(quick: bool = False, sizes=None, rounds: int | None = None, t_final: float = T_FINAL, step: float = STEP,
        save_every: float = SAVE_EVERY, one_by_one_max: int = ONE_BY_ONE_MAX) -> dict:
    import meanfield as mf

    sizes = tuple(tuple(s) for s in C.sizes_override("sizes", sizes, QUICK_SIZES if quick else SIZES))
    rounds = C.count_override("rounds", rounds, QUICK_ROUNDS if quick else ROUNDS)
    model = mf.Model(BETA)
    rows, comps = [], []
    for R, n in sizes:
        x0 = initial_tokens(R, n)
        kw = dict(replicas=R, seed=0, save_every=save_every, confidence=CONFIDENCE)
        funcs = {"batched_rk4": lambda: mf.ensemble(model, n, t_final, method="rk4", step=step, **kw),
                 "one_by_one_rk4": lambda: mf.ensemble(model, n, t_final, method="rk4", step=step, batch=False, **kw),
                 "script": lambda: script_ensemble(x0, step, t_final, save_every),
                 "batched_rk45": lambda: mf.ensemble(model, n, t_final, **kw),
                 "one_by_one_rk45": lambda: mf.ensemble(model, n, t_final, batch=False, **kw)}
        one_by_one = R <= one_by_one_max
        if not one_by_one:
            del funcs["one_by_one_rk4"], funcs["one_by_one_rk45"]
        first = {k: C.timed(f) for k, f in funcs.items()}          # warm-up, results, and the calls per turn
        out = {k: v[0] for k, v in first.items()}
        calls = {k: C.calls_per_turn(v[1]) for k, v in first.items()}
        times = C.interleaved(funcs, rounds, warmup=False, calls=calls)
        t = C.medians(times)
        ours, script = out["batched_rk4"], out["script"]
        row = dict(R=R, n=n, rounds=rounds, one_by_one=one_by_one, calls_per_turn=calls, times_s=times, seconds=t,
                   save_times=[float(s) for s in ours.times],
                   # both RK4 with the same steps: the script evaluates the stages off the sphere, ours at θ/‖θ‖
                   max_difference_script=float(np.max(np.abs(ours.values - script["values"]))),
                   max_difference_script_summary=float(max(np.max(np.abs(getattr(ours, k) - script[k]))
                                                           for k in ("mean", "ci_low", "ci_high"))),
                   script_ratio=t["batched_rk4"] / t["script"],
                   script_ratio_per_round=[a / b for a, b in zip(times["batched_rk4"], times["script"])],
                   mean_alignment_final=float(ours.mean[-1]),
                   ci_final=[float(ours.ci_low[-1]), float(ours.ci_high[-1])])
        if one_by_one:
            row.update(
                speedup_rk4=t["one_by_one_rk4"] / t["batched_rk4"],
                speedup_rk4_per_round=[b / a for a, b in zip(times["batched_rk4"], times["one_by_one_rk4"])],
                speedup_rk45=t["one_by_one_rk45"] / t["batched_rk45"],
                speedup_rk45_per_round=[b / a for a, b in zip(times["batched_rk45"], times["one_by_one_rk45"])],
                # fixed steps: the same arithmetic up to the order of the sums; adaptive: shared steps, to the tolerance
                max_difference_one_by_one_rk4=float(np.max(np.abs(ours.values - out["one_by_one_rk4"].values))),
                max_difference_one_by_one_rk45=float(np.max(np.abs(out["batched_rk45"].values
                                                                   - out["one_by_one_rk45"].values))))
        rows.append(row)
        what = f"R = {R} replicas of n = {n} tokens to t = {t_final:g}"
        if one_by_one:
            comps.append(C.comparison(f"{what}, RK4 step {step:g}", "mf.ensemble (batched)", "mf.ensemble(batch=False)",
                                      t["batched_rk4"], t["one_by_one_rk4"], n=n, replicas=R))
        comps.append(C.comparison(f"{what}, RK4 step {step:g}", "mf.ensemble (batched)",
                                  "hand-written batched numpy script", t["batched_rk4"], t["script"], n=n, replicas=R))
        if one_by_one:
            comps.append(C.comparison(f"{what}, adaptive (rk45)", "mf.ensemble (batched)", "mf.ensemble(batch=False)",
                                      t["batched_rk45"], t["one_by_one_rk45"], n=n, replicas=R))
        msg = (f"[bench] ensemble: R = {R}, n = {n}: rk4 batched {C.ms(t['batched_rk4'])} ms, script "
               f"{C.ms(t['script'])} ms (ours/script {row['script_ratio']:.2f}, max diff "
               f"{row['max_difference_script']:.1e})")
        if one_by_one:
            msg += (f", one by one {C.ms(t['one_by_one_rk4'])} ms (speedup {row['speedup_rk4']:.1f}); rk45 batched "
                    f"{C.ms(t['batched_rk45'])} ms, one by one {C.ms(t['one_by_one_rk45'])} ms (speedup "
                    f"{row['speedup_rk45']:.1f})")
        else:
            msg += f"; rk45 batched {C.ms(t['batched_rk45'])} ms; one by one skipped (R > {one_by_one_max})"
        print(msg, flush=True)
    targets = []
    small = next((r for r in rows if r["one_by_one"]), None)
    if small is not None:
        targets.append(C.target(f"batched ensemble over one-by-one, R={small['R']}, n={small['n']}",
                                "reported (no target set)", round(small["speedup_rk4"], 2), None,
                                f"RK4 step {step:g}; median of {rounds} rounds, per-round ratios "
                                f"{_range(small['speedup_rk4_per_round'])}"))
    return dict(case=NAME, title=TITLE, rows=rows, comparisons=comps, targets=targets,
                params=dict(beta=BETA, t_final=t_final, step=step, save_every=save_every, confidence=CONFIDENCE,
                            one_by_one_max=one_by_one_max, scheme="post-ln", attention="softmax", d=3,
                            tokens="mf.ensemble(model, n, ..., seed=0): replica i Particles.uniform(n, 3, "
                                   "seed=default_rng(SeedSequence(0).spawn(R)[i]))"))


def report(res: dict, out) -> str:
    p = res["params"]

    def cell(r, key, fmt=C.ms):
        return fmt(r["seconds"][key]) if key in r["seconds"] else "skipped"

    rows = []
    for r in res["rows"]:
        ob = r["one_by_one"]
        rows.append([r["R"], r["n"], cell(r, "batched_rk4"), cell(r, "one_by_one_rk4"),
                     f"{r['speedup_rk4']:.1f} ({_range(r['speedup_rk4_per_round'])})" if ob else "—",
                     cell(r, "script"), f"{r['script_ratio']:.2f} ({_range(r['script_ratio_per_round'])})",
                     f"{r['max_difference_script']:.1e}", cell(r, "batched_rk45"), cell(r, "one_by_one_rk45"),
                     f"{r['speedup_rk45']:.1f} ({_range(r['speedup_rk45_per_round'])})" if ob else "—"])
    skipped = [f"R = {r['R']}, n = {r['n']}" for r in res["rows"] if not r["one_by_one"]]
    return "\n".join([
        f"Post-LN softmax, β = {p['beta']:g}, d = 3, R replicas of n uniform tokens ({p['tokens']}), to t = "
        f"{p['t_final']:g} with `save_every={p['save_every']:g}`, observable the default mean_alignment, "
        f"{100 * p['confidence']:g} % Student-t intervals. 'batched': `mf.ensemble(model, n, t_final, replicas=R, "
        f"method=\"rk4\", step={p['step']:g}, ...)` (the replicas as one run of backend \"particles\" with "
        "`groups=R`, the default); 'one by one': the same with `batch=False`; 'script': a hand-written batched numpy "
        "script (positions (R, n, 3), the dense velocity `w = exp(β x xᵀ); A = w x / Σw; v = A − ⟨A, x⟩ x` by "
        "batched matmul over (R, n, n), the same RK4 steps each projected to the sphere, each replica's mean "
        "alignment at the save times, their mean and t interval), starting from the ensemble's tokens drawn "
        "before timing. 'rk45': the default adaptive method (no step), batched and one by one. Times are medians "
        "of interleaved rounds in one process (range of the per-round ratios in brackets); speedup = one by one / "
        "batched, ours/script above 1: ours slower. 'max diff': the largest difference of the per-replica mean "
        "alignments between the batched RK4 ensemble and the script (the script evaluates stages off the "
        "sphere, ours at θ/‖θ‖)." + (f" One by one skipped for {', '.join(skipped)} (R > {p['one_by_one_max']}: "
                                     "~20 s per round)." if skipped else ""), "",
        C.md_table(["R", "n", "batched rk4 ms", "one by one rk4 ms", "speedup rk4", "script ms", "ours/script",
                    "max diff", "batched rk45 ms", "one by one rk45 ms", "speedup rk45"], rows)])
