"""Case 8: parameter sweeps on dask.distributed against serial execution, and distributed particles-sh.

The measurements are those of :mod:`meanfield._sweep._bench` (also ``python benchmarks/bench_sweep.py``):

* the same sweep tasks run serially in this process and on a 2-worker ``LocalCluster`` (processes, one
  thread each), best of two alternating rounds; ``speedup`` = serial / cluster (the cluster's start-up,
  paid once per sweep, is reported apart);
* one RK4 step of particles-sh at N = 10⁶ (``--quick``: 10⁵) in one process against
  :func:`meanfield.distributed_particles_sh` on 2 workers × 1 thread: ``speedup`` = single / distributed
  (below 1 on one 2-core machine, where distribution can only add overhead: the point is the overhead,
  which is what a cluster of machines pays per step), and the largest difference of the final positions.
"""
from __future__ import annotations

from . import _common as C

NAME = "sweep"
TITLE = "8. Sweeps on dask.distributed and distributed particles-sh"


def available() -> tuple[bool, str]:
    try:
        import distributed  # noqa: F401
    except ImportError as e:
        return False, f"dask.distributed is not installed ({e})"
    return True, ""


def run(quick: bool = False, n: int | None = None, steps: int | None = None) -> dict:
    n = C.count_override("n", n, 100_000 if quick else 1_000_000)
    steps = C.count_override("steps", steps, 3 if quick else 4)
    ok, why = available()
    if not ok:
        return dict(case=NAME, title=TITLE, status="not available", reason=why, comparisons=[], targets=[])
    from .._sweep._bench import bench_distributed, bench_sweep

    sw = bench_sweep(quick)
    dist = bench_distributed(n, steps=steps)
    comps = [C.comparison(f"sweep of {sw['tasks']} tasks", f"{sw['workers']} local dask workers", "serial, one process",
                          sw["cluster_s"], sw["serial_s"]),
             C.comparison(f"particles-sh RK4 step, N = {dist['n']:,}", f"distributed, {dist['workers']} workers × 1 thread",
                          "one process, 2 threads", dist["distributed_step_s"], dist["single_step_s_2threads"],
                          n=dist["n"])]
    targets = [C.target("sweep rows identical to the serial run", "identical", sw["rows_identical"],
                        sw["rows_identical"]),
               C.target("distributed particles-sh equals one process", "≤ 1e-12 in positions",
                        f"{dist['max_position_difference']:.1e}", dist["max_position_difference"] <= 1e-12)]
    return dict(case=NAME, title=TITLE, sweep=sw, distributed=dist, comparisons=comps, targets=targets)


def report(res: dict, out) -> str:
    sw, d = res["sweep"], res["distributed"]
    rows = [[f"sweep: {sw['tasks']} tasks, serial", f"{sw['serial_s']:.2f} s ({sw['task_mean_s'] * 1e3:.0f} ms/task)"],
            [f"sweep: {sw['workers']} local workers", f"{sw['cluster_s']:.2f} s (+ {sw['cluster_startup_s']:.1f} s "
             "cluster start-up, once per sweep)"],
            ["sweep speedup (serial / cluster)", f"{sw['speedup']:.2f}× ({sw['speedup_with_startup']:.2f}× with "
             f"start-up); rows identical: {sw['rows_identical']}"],
            [f"particles-sh N = {d['n']:,}, L = {d['lmax']}: one process per RK4 step",
             f"{d['single_step_s_2threads']:.3f} s (2 threads), {d['single_step_s_1thread']:.3f} s (1 thread)"],
            [f"distributed, {d['workers']} workers × 1 thread, per step",
             f"{d['distributed_step_s']:.3f} s (busiest shard computes {d['busiest_shard_step_s']:.3f} s)"],
            ["distribution overhead per step", f"{d['overhead_step_s'] * 1e3:.1f} ms ({d['round_trips_per_step']:.0f} "
             f"round trips; empty round trip {d['round_trip_latency_s'] * 1e3:.1f} ms)"],
            ["max position difference from one process", f"{d['max_position_difference']:.1e}"]]
    return "\n".join(["Sweep tasks: Post-LN, 32 exact particles on S², RK4 to t = 10, a grid over β and the seed; "
                      "the cluster is a `LocalCluster` on this machine (processes, one thread each). On one 2-core "
                      "machine the distributed particles-sh can only add overhead; the overhead per step is "
                      "what a cluster of machines pays.", "", C.md_table(["measurement", "value"], rows)])
