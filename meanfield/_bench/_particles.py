"""Case 3: particles-sh against dense attention written the way published scripts write it, N = 10²..10⁶,
and against meanfield's own exact backend (``backend="particles"``) up to the check N.

The alternative (:func:`dense_velocity`) is the Post-LN softmax velocity v_i = P_{x_i} Σ_j w_ij x_j computed
as published particle scripts do it: plain numpy, float64, the (N, N) kernel in blocks of rows, one pass
per block (logits → exp → row sums and the weighted sum of tokens; no max shift, safe since |β⟨x, y⟩| ≤ β).
It is given its best configuration on this machine: the block size and the OpenBLAS thread count are
chosen as the fastest of a few at a calibration N (recorded).  Ours is the ``particles-sh`` backend's
velocity (one adjoint and two non-uniform syntheses, L = kernel_bandlimit(β, 1e-12)).

Tokens: β = 5, half of them in five tight clusters (width 1e-7), the rest uniform.  Dense
is measured only up to the N where one evaluation takes less than ~60 s; nothing is extrapolated.  Beside
the table, as a reference from another machine (never a ratio), the H100 figures of
``../shared/anchors/gpu_dense_attention.json``.
"""
from __future__ import annotations

import numpy as np

from . import _common as C

NAME = "particles"
TITLE = "3. particles-sh against dense attention (published-script style)"
BETA = 5.0
SH_SIZES = (100, 300, 1000, 3000, 10_000, 20_000, 100_000, 300_000, 1_000_000)
DENSE_SIZES = (100, 300, 1000, 3000, 10_000, 20_000, 30_000, 50_000)
QUICK_SH_SIZES = (100, 300, 1000, 3000, 10_000, 30_000, 100_000)
QUICK_DENSE_SIZES = (100, 300, 1000, 3000)
CHECK_N, QUICK_CHECK_N = 20_000, 3000
DENSE_LIMIT_S, QUICK_DENSE_LIMIT_S = 60.0, 5.0
TARGET_SPEEDUP, TARGET_ERROR, TARGET_1E6_S = 500.0, 1e-12, 0.3
ALT_MAX_N = 10_000          # dense is timed with both OpenBLAS thread counts up to this N
CHECK_REPEATS, CHECK_REPEATS_QUICK = 7, 3   # rounds at the check N (each: dense, exact, exact on one thread, ours)


def clustered(n: int, seed: int = 0, width: float = 1e-7) -> np.ndarray:
    """n unit vectors: half in five tight clusters of angular width ~``width``, half uniform."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    centers = rng.standard_normal((5, 3))
    half = n // 2
    x[:half] = centers[np.arange(half) % 5] + width * rng.standard_normal((half, 3))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def dense_velocity(x: np.ndarray, beta: float, chunk: int = 1024) -> np.ndarray:
    """Post-LN softmax velocity of the tokens ``x`` (N, d) by the dense (N, N) kernel, ``chunk`` rows at a time."""
    n = x.shape[0]
    v = np.empty_like(x)
    for a in range(0, n, chunk):
        xa = x[a:a + chunk]
        w = xa @ x.T                                  # (chunk, N) logits
        w *= beta
        np.exp(w, out=w)                              # unnormalized attention weights
        A = (w @ x) / w.sum(axis=1, keepdims=True)    # softmax-weighted mean of the tokens
        v[a:a + chunk] = A - np.sum(A * xa, axis=1, keepdims=True) * xa
    return v


def sh_stepper(x: np.ndarray, beta: float = BETA, threads: int | None = None):
    """The particles-sh backend on tokens ``x`` (Post-LN, softmax, tol 1e-12), on ``threads`` (default: all)."""
    import meanfield as mf
    from .._simulate import get_backend

    return get_backend("particles-sh")(mf.Model(beta), mf.Particles(x), step=0.1, threads=threads)


def exact_stepper(x: np.ndarray, beta: float = BETA, threads: int | None = None):
    """The exact O(N²) backend on tokens ``x`` (Post-LN, softmax): meanfield's reference velocity."""
    import meanfield as mf
    from .._simulate import get_backend

    return get_backend("particles")(mf.Model(beta), mf.Particles(x), step=0.1, threads=threads)


def _exact_velocity_one_thread(st):
    def f():
        with C.blas_threads(1):
            return st.velocity()[0]
    return f


def _sh_velocity(st):
    return lambda: st.velocity()[0]


def calibrate_dense(n: int, repeats: int = 3) -> dict:
    """The fastest (rows per block, OpenBLAS threads) for :func:`dense_velocity` at ``n`` tokens."""
    x = clustered(n)
    default = max(C.blas_info().values(), default=None)
    configs = {}
    for elements in (2 ** 18, 2 ** 22):
        chunk = max(1, elements // n)
        for threads in sorted({1, default or 1}):
            def f(chunk=chunk, threads=threads):
                with C.blas_threads(threads):
                    dense_velocity(x, BETA, chunk)
            configs[f"chunk={chunk},blas_threads={threads}"] = (chunk, threads, f)
    t = C.medians(C.interleaved({k: v[2] for k, v in configs.items()}, repeats))
    best = min(t, key=t.get)
    chunk, threads, _ = configs[best]
    return dict(n=n, times_s=t, chosen=best, block_elements=chunk * n, blas_threads=threads)


def _threads_for_larger_n(by_threads: dict) -> int:
    """OpenBLAS threads for the larger N: 1 unless more threads won by > 20 %.

    Measured here: two threads gain at most ~10 % on an idle machine and lose up to 5× when other processes
    load it (the thread team waits for a descheduled member), so a near tie goes to the robust choice.
    """
    one = by_threads.get(1)
    best = min(by_threads, key=by_threads.get)
    return best if one is None or by_threads[best] < 0.8 * one else 1


def _sh_repeats(n, quick):
    return (5 if quick else 7) if n <= 100_000 else (3 if quick else 5)


def run(quick: bool = False, sh_sizes=None, dense_sizes=None, check_n=None, dense_limit_s=None) -> dict:
    from ..sphere import _sh as sh

    sh_sizes = C.sizes_override("sh_sizes", sh_sizes, QUICK_SH_SIZES if quick else SH_SIZES)
    dense_sizes = C.sizes_override("dense_sizes", dense_sizes, QUICK_DENSE_SIZES if quick else DENSE_SIZES)
    check_n = C.count_override("check_n", check_n, QUICK_CHECK_N if quick else CHECK_N)
    limit = C.seconds_override("dense_limit_s", dense_limit_s, QUICK_DENSE_LIMIT_S if quick else DENSE_LIMIT_S)
    cal = calibrate_dense(min(1000 if quick else 4000, max(dense_sizes)), repeats=2 if quick else 3)
    block, bthreads = cal["block_elements"], cal["blas_threads"]
    if bthreads != 1:       # the same rule as between sizes: more threads only when clearly faster
        chunk1 = f"chunk={max(1, block // cal['n'])},blas_threads=1"
        if chunk1 in cal["times_s"] and not cal["times_s"][cal["chosen"]] < 0.8 * cal["times_s"][chunk1]:
            bthreads = 1
    thread_options = sorted({1, max(C.blas_info().values(), default=1)})

    def dense_call(x, threads):
        chunk = max(1, block // x.shape[0])

        def f():
            with C.blas_threads(threads):
                return dense_velocity(x, BETA, chunk)
        return f

    rows, last = {}, None
    for n in sorted(set(sh_sizes) | set(dense_sizes)):
        x = clustered(n)
        st = sh_stepper(x)
        # the thread count is fixed when a run sets up its spectral velocity: a second stepper on one thread
        funcs = ({"sh": _sh_velocity(st), "sh_1thread": _sh_velocity(sh_stepper(x, threads=1))}
                 if n in sh_sizes else {})
        run_dense = n in dense_sizes and (last is None or last[1] * (n / last[0]) ** 2 < limit)
        configs, single = {}, {}     # single: the seconds of one call, from the warm-up calls
        if run_dense:
            # OpenBLAS threading of these skinny products swings with the machine's load: up to ALT_MAX_N the
            # other thread count is timed too, and the faster one is kept (and used for larger N)
            configs = {t: f"dense_blas{t}" for t in [bthreads] + ([k for k in thread_options if k != bthreads]
                                                                   if n <= ALT_MAX_N else [])}
            for t, name in configs.items():
                funcs[name] = dense_call(x, t)
            v_dense, t_try, _ = C.timed(funcs[configs[bthreads]])   # one call sets the repeats (and warms up)
            single[configs[bthreads]] = t_try
            for t, name in configs.items():
                if t != bthreads:
                    single[name] = C.timed(funcs[name])[1]
            reps = 5 if t_try < 1 else 3
            if n == check_n:     # the target is judged here: enough rounds for a median of paired ratios
                reps = CHECK_REPEATS_QUICK if quick else CHECK_REPEATS
        else:
            reps = _sh_repeats(n, quick)
        if run_dense and n <= check_n:                   # meanfield's exact backend, the reference of the 500× target
            funcs["exact"] = _sh_velocity(exact_stepper(x))
            v_exact, single["exact"], _ = C.timed(funcs["exact"])
            if n == check_n:     # both methods on one core: the algorithms' ratio, without threading efficiency
                funcs["exact_1thread"] = _exact_velocity_one_thread(exact_stepper(x, threads=1))
                single["exact_1thread"] = C.timed(funcs["exact_1thread"])[1]
        for name in ("sh", "sh_1thread"):
            if name in funcs:
                funcs[name]()                            # warm-up (ducc0 plans, workspaces)
                single[name] = C.timed(funcs[name])[1]
        # a turn of each contender fills ~0.05 s (one call when it takes longer): a function of milliseconds is
        # timed warm, as a simulation calls it, not cold right after a contender that took seconds
        calls = {k: C.calls_per_turn(t) for k, t in single.items()}
        times = C.interleaved(funcs, reps, warmup=False, calls=calls)
        row = dict(n=n, lmax=st.options["lmax"], repeats=reps, calls_per_turn=calls,
                   times_s={k: v for k, v in times.items()},
                   sh_s=C.median(times["sh"]) if "sh" in times else None,
                   sh_1thread_s=C.median(times["sh_1thread"]) if "sh" in times else None, dense_s=None,
                   exact_s=C.median(times["exact"]) if "exact" in times else None,
                   exact_1thread_s=C.median(times["exact_1thread"]) if "exact_1thread" in times else None)
        if configs:
            by_threads = {t: C.median(times[name]) for t, name in configs.items()}
            best = min(by_threads, key=by_threads.get)
            row.update(dense_s=by_threads[best], dense_blas_threads=best,
                       dense_by_blas_threads={str(t): v for t, v in by_threads.items()})
            bthreads = _threads_for_larger_n(by_threads)
        if n in dense_sizes and not run_dense:
            row["dense_skipped"] = f"predicted > {limit:g} s from N={last[0]}"
        if run_dense:
            last = (n, row["dense_s"])
        if n == check_n and run_dense and "sh" in funcs:     # (a check N left out of sh_sizes has nothing to check)
            # one ratio per round (both timed in the same round, minutes apart at most): the load moves both
            pairs = {"dense_s": (configs[row["dense_blas_threads"]], "sh"), "exact_s": ("exact", "sh"),
                     "exact_1thread_s": ("exact_1thread", "sh_1thread")}
            row["paired_speedups"] = {k: [a / b for a, b in zip(times[alt], times[ours])]
                                      for k, (alt, ours) in pairs.items() if alt in times and ours in times}
            v_sh = funcs["sh"]()
            row["max_velocity_error"] = float(np.max(np.abs(v_sh - v_dense)))
            row["max_error_vs_exact"] = float(np.max(np.abs(v_sh - v_exact)))
            row["max_speed"] = float(np.max(np.linalg.norm(v_dense, axis=1)))
        rows[n] = row
    rows = [rows[n] for n in sorted(rows)]

    both = [r for r in rows if r["sh_s"] is not None and r["dense_s"] is not None]
    comps = [C.comparison(f"Post-LN velocity, N = {r['n']:,}", "particles-sh", "dense numpy (published style)",
                          r["sh_s"], r["dense_s"], n=r["n"], paired_speedup=_paired(r, "dense_s")) for r in both]
    comps += [C.comparison(f"Post-LN velocity, N = {r['n']:,}", "particles-sh", "meanfield exact backend (particles)",
                           r["sh_s"], r["exact_s"], n=r["n"], paired_speedup=_paired(r, "exact_s"))
              for r in rows if r["sh_s"] and r.get("exact_s")]
    comps += [C.comparison(f"Post-LN velocity, N = {r['n']:,}, one thread each", "particles-sh (one thread)",
                           "meanfield exact backend (one thread)", r["sh_1thread_s"], r["exact_1thread_s"], n=r["n"],
                           paired_speedup=_paired(r, "exact_1thread_s"))
              for r in rows if r["sh_1thread_s"] and r.get("exact_1thread_s")]
    crossover = _crossover(both)
    sh_pts = [(r["n"], r["sh_s"]) for r in rows if r["sh_s"] is not None]
    d_pts = [(r["n"], r["dense_s"]) for r in rows if r["dense_s"] is not None]
    # the asymptotic exponents: particles-sh where its fixed O(L² log L) cost is negligible (N ≥ 3·10⁴),
    # dense where an evaluation takes ≥ 0.1 s (below, call overheads and timer noise on a loaded machine)
    d_big = [p for p in d_pts if p[1] >= 0.1]
    fits = dict(sh_all=C.slope(*zip(*sh_pts)) if len(sh_pts) > 1 else None,
                sh_large=_fit([p for p in sh_pts if p[0] >= 30_000]),
                dense_all=C.slope(*zip(*d_pts)) if len(d_pts) > 1 else None,
                dense_large=_fit(d_big if len(d_big) > 1 else [p for p in d_pts if p[0] >= 1000]),
                dense_large_from_n=(d_big if len(d_big) > 1 else [p for p in d_pts if p[0] >= 1000] or [(None,)])[0][0],
                dense_large_rule="evaluations ≥ 0.1 s" if len(d_big) > 1 else "N ≥ 1,000")
    check = next((r for r in rows if r["n"] == check_n and "max_velocity_error" in r), None)
    big = next((r for r in rows if r["n"] == 1_000_000 and r["sh_s"] is not None), None)
    targets = []
    if check:
        targets.append(_speedup_target(f"speedup at N = {check_n:,}", check, "dense_s", "max_velocity_error"))
        if check.get("exact_s"):
            targets.append(_speedup_target(f"speedup over the exact backend at N = {check_n:,}", check,
                                           "exact_s", "max_error_vs_exact"))
    else:
        missing = " and ".join(name for name, sizes in (("particles-sh", sh_sizes), ("dense", dense_sizes))
                               if check_n not in sizes) or "dense"     # (else dense was skipped as too slow)
        targets.append(C.target("speedup at N = 20,000", f"≥ {TARGET_SPEEDUP:g}× at ≤ {TARGET_ERROR:g} error",
                                None, None, f"{missing} not measured at the check N = {check_n:,} in this run"))
    targets.append(C.target("particles-sh at N = 10⁶", f"≤ {TARGET_1E6_S:g} s per velocity",
                            round(big["sh_s"], 3) if big else None, (big["sh_s"] <= TARGET_1E6_S) if big else None,
                            "" if big else "N = 10⁶ not run (--quick)"))
    targets.append(C.target("scaling exponents", "≈ 1 (particles-sh), ≈ 2 (dense)",
                            f"{_fmt(fits['sh_large'])} (N ≥ 3·10⁴), {_fmt(fits['dense_large'])} "
                            f"(N ≥ {fits['dense_large_from_n'] or 0:,})",
                            None if quick or fits["sh_large"] is None or fits["dense_large"] is None else
                            (abs(fits["sh_large"] - 1) < 0.2 and abs(fits["dense_large"] - 2) < 0.2),
                            "judged on the full run (N to 10⁶): --quick fits two or three sizes" if quick else ""))
    gpu, gpu_path = C.anchor("gpu_dense_attention")
    return dict(case=NAME, title=TITLE, rows=rows, comparisons=comps, crossover=crossover, fits=fits,
                dense_calibration=cal, check_n=check_n, dense_limit_s=limit,
                params=dict(beta=BETA, scheme="post-ln", attention="softmax", tokens="half in 5 clusters of width "
                            "1e-7, half uniform", sh_threads=sh.NTHREADS, sh_tol=1e-12, sh_epsilon=3e-13),
                references=dict(gpu=gpu, path=gpu_path), targets=targets)


def _speedup_target(name, row, alternative, error):
    """The ≥ 500× at ≤ 1e-12 target against ``row[alternative]``, judged only at N = 20,000, where it is stated: the
    median of the per-round ratios (each round times both contenders), with their range."""
    ratios, err = row["paired_speedups"][alternative], row[error]
    sp, lo, hi = float(np.median(ratios)), min(ratios), max(ratios)
    at_n = row["n"] == 20_000
    straddles = lo < TARGET_SPEEDUP <= hi
    note = "" if at_n else "the target is stated at N = 20,000: not judged here"
    if at_n and straddles:
        note = f"at the threshold: the {len(ratios)} rounds straddle {TARGET_SPEEDUP:g}×"
    if at_n and row.get(alternative) and row.get("sh_s"):
        # the ratio is (cost per pair · N) / (cost per token + fixed): both costs depend on the CPU (a vectorized exp
        # makes the pairs cheaper, ducc0's transforms gain less), so the per-unit costs say what moved it
        n = row["n"]
        per_unit = (f"{row[alternative] / n**2 * 1e9:.2f} ns per token pair against {row['sh_s'] / n * 1e9:.0f} ns "
                    "per token")
        note = f"{note}; {per_unit}" if note else per_unit
    return C.target(name, f"≥ {TARGET_SPEEDUP:g}× at ≤ {TARGET_ERROR:g} error",
                    f"{sp:.0f}× (median of {len(ratios)} rounds, {lo:.0f}–{hi:.0f}×) at {err:.1e}",
                    (sp >= TARGET_SPEEDUP and err <= TARGET_ERROR) if at_n else None, note)


def _paired(row, alternative):
    """The median per-round speedup over ``alternative`` (rows at the check N), else None."""
    ratios = row.get("paired_speedups", {}).get(alternative)
    return float(np.median(ratios)) if ratios else None


def _fit(pts):
    return C.slope(*zip(*pts)) if len(pts) > 1 else None


def _fmt(x):
    return "—" if x is None else f"{x:.2f}"


def _crossover(both) -> dict:
    """The N where particles-sh becomes faster than dense, from measured points only (log-log interpolation)."""
    if not both:
        return dict(n=None, note="no N where both were measured")
    faster = [r["dense_s"] > r["sh_s"] for r in both]
    if all(faster):
        return dict(n=None, below=both[0]["n"],
                    note=f"particles-sh is faster at every measured N (from {both[0]['n']:,})")
    if not any(faster):
        return dict(n=None, above=both[-1]["n"], note=f"dense is faster at every measured N (to {both[-1]['n']:,})")
    i = next((k for k in range(1, len(both)) if faster[k] and not faster[k - 1]), None)
    if i is None:           # faster at the smallest N only (noise at tiny times): no N where it becomes faster
        return dict(n=None, note="no crossover: particles-sh is faster at N = " + ", ".join(
            f"{r['n']:,}" for r, f in zip(both, faster) if f) + " and dense at N = " + ", ".join(
            f"{r['n']:,}" for r, f in zip(both, faster) if not f))
    a, b = both[i - 1], both[i]
    la, lb = np.log(a["dense_s"] / a["sh_s"]), np.log(b["dense_s"] / b["sh_s"])
    n = float(np.exp(np.log(a["n"]) + (np.log(b["n"]) - np.log(a["n"])) * (-la) / (lb - la)))
    return dict(n=n, between=[a["n"], b["n"]], note=f"≈ {n:,.0f} (log-log interpolation between the measured "
                f"N = {a['n']:,} and {b['n']:,})")


def report(res: dict, out) -> str:
    p, cal = res["params"], res["dense_calibration"]
    gpu = (res["references"].get("gpu") or {}).get("rows", [])
    gpu_by_n = {r["n"]: r for r in gpu}
    rows = []
    for r in res["rows"]:
        g = gpu_by_n.get(r["n"], {})
        sp = r["dense_s"] / r["sh_s"] if r["sh_s"] and r["dense_s"] else None
        err = f"{r['max_velocity_error']:.1e}" if "max_velocity_error" in r else ""
        calls = r.get("calls_per_turn", {})
        rows.append([f"{r['n']:,}", r["lmax"], C.ms(r["sh_s"]), C.ms(r.get("sh_1thread_s")), calls.get("sh", ""),
                     C.ms(r.get("exact_s")) + (f" (1 thread: {C.ms(r['exact_1thread_s'])})"
                                               if r.get("exact_1thread_s") else ""),
                     C.ms(r["dense_s"]) if r["dense_s"] else ("not run: " + r["dense_skipped"] if "dense_skipped" in r
                                                              else "—"),
                     ("/".join(f"{t}: {C.ms(v)}" for t, v in r["dense_by_blas_threads"].items())
                      if len(r.get("dense_by_blas_threads", {})) > 1 else r.get("dense_blas_threads", "")),
                     C.ratio(sp), err, C.ms(g.get("fp64_s")), C.ms(g.get("fp32_s")), C.ms(g.get("sdpa_bf16_s")),
                     f"{g['err_bf16']:.2f}" if g else ""])
    f = res["fits"]
    text = [f"β = {p['beta']:g}, Post-LN softmax velocity; tokens {p['tokens']}. Ours: particles-sh "
            f"({p['sh_threads']} threads, the default; also timed on 1 thread, for information: the speedup uses "
            f"the default), kernel tolerance {p['sh_tol']:g}. Alternative: dense numpy, float64, "
            f"blocks of ~{cal['block_elements']:,} kernel entries — the fastest of {len(cal['times_s'])} "
            f"configurations at N = {cal['n']:,} ({', '.join(f'{k}: {C.ms(v)} ms' for k, v in cal['times_s'].items())})"
            f"; up to N = {ALT_MAX_N:,} it is timed with 1 and 2 OpenBLAS threads and the faster is kept (column "
            "'BLAS thr'); larger N use 2 threads only if they won by more than 20 % at the last such N (two threads "
            "gain ≤ 10 % on an idle machine and lose up to 5× on a loaded one). Dense is run only where one "
            f"evaluation is predicted under {res['dense_limit_s']:g} s. Medians of interleaved rounds, ms per call; "
            "in a round each contender runs a batch of consecutive calls filling ~0.05 s (column 'calls'; one call when "
            "a call takes longer), so that a function of milliseconds is timed warm, as a run calls it. The "
            "H100 columns are the anchor's (another machine, another run): a **reference, never a ratio**; "
            "'bf16 err' is its fused bfloat16 attention's max velocity error relative to max |v|. 'exact backend': "
            "meanfield's own O(N²) `backend=\"particles\"` (log-sum-exp blocks on meanfield's threads, one BLAS "
            "thread each), timed in the same rounds up to the check N; its ratios are in the JSON comparisons. At the "
            "check N it is also timed on one thread (one OpenBLAS thread), against particles-sh on one thread: the "
            "ratio of the two algorithms on one core, for information (the target is judged at the defaults).", "",
            C.md_table(["N", "L", "particles-sh ms", "1 thread ms", "calls", "exact backend ms", "dense ms", "BLAS thr (ms)", "speedup", "max error",
                        "H100 fp64 ms",
                        "H100 fp32 ms", "H100 bf16 ms", "bf16 err"], rows), "",
            f"Crossover: {res['crossover']['note']}. Scaling exponents (least squares of log t on log N): "
            f"particles-sh {_fmt(f['sh_large'])} for N ≥ 3·10⁴ ({_fmt(f['sh_all'])} over all N, where the "
            f"fixed O(L² log L) cost dominates small N); dense {_fmt(f['dense_large'])} for N ≥ "
            f"{f['dense_large_from_n'] or 0:,} ({f['dense_large_rule']}) "
            f"({_fmt(f['dense_all'])} over all N)."]

    def draw(ax):
        s = [(r["n"], r["sh_s"]) for r in res["rows"] if r["sh_s"]]
        d = [(r["n"], r["dense_s"]) for r in res["rows"] if r["dense_s"]]
        ax.loglog(*zip(*s), "o-", label=f"particles-sh (this run), slope {_fmt(f['sh_large'])}")
        ax.loglog(*zip(*d), "s-", label=f"dense numpy float64 (this run), slope {_fmt(f['dense_large'])}")
        if gpu:
            ns = [g["n"] for g in gpu]
            ax.loglog(ns, [g["fp64_s"] for g in gpu], "s:", mfc="none", color="gray",
                      label="H100 dense fp64 (anchor, other machine)")
            ax.loglog(ns, [g["sdpa_bf16_s"] for g in gpu], "^:", mfc="none", color="gray",
                      label="H100 fused bf16 (anchor; wrong by ~1)")
        ax.axhline(TARGET_1E6_S, color="r", lw=0.8, ls="--", label=f"target at N = 10⁶: {TARGET_1E6_S:g} s")
        ax.set_xlabel("tokens N")
        ax.set_ylabel("seconds per velocity (median)")
        ax.set_title("Post-LN velocity: particles-sh vs dense attention")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    text += ["", f"![particle scaling]({C.figure(out / 'particles_scaling.png', draw)})"]
    return "\n".join(text)
