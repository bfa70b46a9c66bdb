"""Benchmark: the spectral particle velocity (particles-sh) against the exact O(N²) sum (particles).

    python benchmarks/bench_particles.py [--quick] [--output RESULT.json]

Measures, in one run on this machine (DESIGN.md §2, issue 6):

1. particles-sh and particles at N = 2·10⁴ (β = 5, SA, Post-LN, half the tokens in five tight
   clusters): one velocity evaluation each, the speed ratio and the max velocity difference;
2. particles-sh at N = 10⁶: one velocity evaluation (median of repeats) and its peak memory, measured
   in a fresh child process (peak RSS above the child's baseline, and numpy's peak by tracemalloc);
3. the N-scaling exponent of both (least-squares slope of log time against log N).

Prints a table and the JSON record (also written to ``--output``).  Timings on a shared machine are
noisy: the load average at start and end is recorded with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

BETA = 5.0


def clustered(n, seed=0, width=1e-7):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    centers = rng.standard_normal((5, 3))
    half = n // 2
    x[:half] = centers[np.arange(half) % 5] + width * rng.standard_normal((half, 3))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _stepper(backend, n, seed=0, scheme="post-ln"):
    import meanfield as mf
    from meanfield._simulate import get_backend
    p = mf.Particles(clustered(n, seed))
    return get_backend(backend)(mf.Model(beta=BETA, scheme=scheme), p, step=0.1)


def time_velocity(stepper, repeats):
    """(median seconds, all seconds, velocity) of ``repeats`` evaluations of the scheme's velocity."""
    ts, v = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        v, _ = stepper.velocity()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), ts, v


def slope(ns, ts):
    return float(np.polyfit(np.log(ns), np.log(ts), 1)[0])


def child_large(n, repeats):
    """Run in a fresh process: one particles-sh velocity at N = n, with peak memory."""
    import meanfield  # noqa: F401  (imports counted in the baseline)
    st = _stepper("particles-sh", n)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    st.velocity()                                    # warm-up (ducc0 plans, caches)
    tracemalloc.start()
    med, ts, v = time_velocity(st, 1)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    med, ts, v = time_velocity(st, repeats)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    state_bytes = st.y.nbytes + st.weights.nbytes
    print(json.dumps({"n": n, "lmax": st.options["lmax"], "median_s": med, "min_s": min(ts), "times_s": ts,
                      "peak_rss_above_baseline_MB": (peak_rss - base_rss) / 1024,
                      "peak_rss_MB": peak_rss / 1024, "tracemalloc_peak_MB": traced_peak / 2 ** 20,
                      "state_MB": state_bytes / 2 ** 20, "max_speed": float(np.max(np.linalg.norm(v, axis=1)))}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller N everywhere (a smoke run, ~20 s)")
    ap.add_argument("--output", help="write the JSON record here")
    ap.add_argument("--child", nargs=2, type=int, metavar=("N", "REPEATS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_large(*args.child)

    import ducc0
    import meanfield as mf
    from meanfield.sphere import NTHREADS

    quick = args.quick
    n_cmp = 4000 if quick else 20_000
    n_large = 200_000 if quick else 1_000_000
    ns_exact = [1000, 2000, 4000] if quick else [2000, 4000, 8000, 16000]
    ns_sh = [10_000, 30_000, 100_000] if quick else [30_000, 100_000, 300_000, 1_000_000]
    rec = {"machine": {"python": platform.python_version(), "numpy": np.__version__, "ducc0": ducc0.__version__,
                       "meanfield": mf.__version__, "threads": NTHREADS, "cpu": platform.processor() or platform.machine(),
                       "loadavg_start": os.getloadavg()},
           "beta": BETA, "scheme": "post-ln", "attention": "softmax", "quick": quick}

    # 1. same-run comparison -------------------------------------------------------------------
    sh = _stepper("particles-sh", n_cmp)
    ex = _stepper("particles", n_cmp)
    sh.velocity()                                                        # warm-up
    t_sh, ts_sh, v_sh = time_velocity(sh, 7)
    t_ex, ts_ex, v_ex = time_velocity(ex, 1 if not quick else 2)
    err = float(np.max(np.abs(v_sh - v_ex)))
    # the full attention (radial part too, as Pre/Peri-LN and nGPT need): 4 transforms instead of 3
    shp = _stepper("particles-sh", n_cmp, scheme="peri-ln")
    shp.velocity()
    t_shp, _, _ = time_velocity(shp, 7)
    rec["comparison"] = {"n": n_cmp, "lmax": sh.options["lmax"], "tol": sh.options["tol"],
                         "kernel_truncation_error": sh.options["kernel_truncation_error"],
                         "sh_median_s": t_sh, "sh_times_s": ts_sh, "exact_s": t_ex, "exact_times_s": ts_ex,
                         "speedup": t_ex / t_sh, "max_velocity_error": err,
                         "max_speed": float(np.max(np.linalg.norm(v_ex, axis=1))),
                         "sh_peri_ln_median_s": t_shp}

    # 2. N = 10⁶ in a fresh process (clean peak memory) ---------------------------------------
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(n_large), "5"],
                         capture_output=True, text=True, check=True)
    rec["large"] = json.loads(out.stdout.strip().splitlines()[-1])

    # 3. N-scaling ------------------------------------------------------------------------------
    t_e = []
    for n in ns_exact:
        t_e.append(time_velocity(_stepper("particles", n), 1)[0])
    t_s = []
    for n in ns_sh:
        st = _stepper("particles-sh", n)
        st.velocity()
        t_s.append(time_velocity(st, 3)[0])
    rec["scaling"] = {"exact": {"n": ns_exact, "s": t_e, "exponent": slope(ns_exact, t_e)},
                      "sh": {"n": ns_sh, "s": t_s, "exponent": slope(ns_sh, t_s),
                             "exponent_top3": slope(ns_sh[-3:], t_s[-3:])}}
    rec["machine"]["loadavg_end"] = os.getloadavg()

    c, lg, sc = rec["comparison"], rec["large"], rec["scaling"]
    rows = [
        ("N (comparison)", f"{c['n']:,}"),
        ("L (tol 1e-12)", f"{c['lmax']}  (kernel truncation bound {c['kernel_truncation_error']:.1e})"),
        ("particles-sh velocity", f"{c['sh_median_s'] * 1e3:.1f} ms (median of 7; Peri-LN, 4 transforms: "
                                  f"{c['sh_peri_ln_median_s'] * 1e3:.1f} ms)"),
        ("particles (exact) velocity", f"{c['exact_s']:.2f} s"),
        ("speed-up", f"{c['speedup']:.0f}x"),
        ("max |v_sh - v_exact|", f"{c['max_velocity_error']:.1e}  (max |v| = {c['max_speed']:.3f})"),
        (f"particles-sh at N={lg['n']:,}", f"{lg['median_s']:.3f} s (median of 5; min {lg['min_s']:.3f} s; "
                                           f"L = {lg['lmax']})"),
        ("  peak memory", f"{lg['peak_rss_above_baseline_MB']:.0f} MB RSS above baseline "
                          f"(numpy peak {lg['tracemalloc_peak_MB']:.0f} MB; state {lg['state_MB']:.0f} MB)"),
        ("N-exponent exact", f"{sc['exact']['exponent']:.2f}  (N = {ns_exact})"),
        ("N-exponent particles-sh", f"{sc['sh']['exponent']:.2f} all, {sc['sh']['exponent_top3']:.2f} top 3 "
                                    f"(N = {ns_sh})"),
        ("threads / load", f"{NTHREADS} / {rec['machine']['loadavg_start'][0]:.2f} → "
                           f"{rec['machine']['loadavg_end'][0]:.2f}"),
    ]
    w = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{w}}  {v}" for k, v in rows))
    text = json.dumps(rec, indent=1)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
