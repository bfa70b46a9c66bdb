"""REPORT.md from a bench record: the machine, a summary of the targets, then one section per case."""
from __future__ import annotations

from pathlib import Path

from . import _common as C


def _met(t) -> str:
    return {True: "met", False: "**missed**", None: "not checked"}[t["met"]]


def _value(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def write_report(record: dict, out: Path) -> Path:
    from . import case_module

    meta, cases = record["meta"], record["cases"]
    m = meta["machine"]
    lines = ["# meanfield performance report", "",
             f"`{meta['command']}` — {meta['date']}, {'quick' if meta['quick'] else 'full'} run, "
             f"{meta['seconds']:.1f} s.", "",
             f"Machine: {m['cpu']}, **{m['usable_cores']} usable cores** (os.sched_getaffinity; "
             f"{m['cpu_count']} on the host), {m['memory_gb']:.0f} GB; meanfield/ducc0 threads "
             f"{m['meanfield_threads']}, OpenBLAS threads {sorted(set(m['blas_threads'].values())) or 'unknown'}. "
             f"Load average (1 min) {meta['loadavg_start'][0]:.2f} at the start, {meta['loadavg_end'][0]:.2f} at "
             "the end" + _steal_sentence(meta.get("cpu_steal")) + ": a shared machine, so every ratio below is "
             "measured in this run with the contenders timed round-robin, and figures are medians of repeats.", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".", "",
             "`speedup` = (alternative time) / (our time), both measured in this run. Figures from other "
             "machines or runs (the GPU and Dedalus anchors) are shown beside ours as references, never as "
             "same-run ratios.", "", "## Targets", ""]
    rows = []
    for name, res in cases.items():
        if res["status"] != "ok":
            rows.append([res["title"], "—", "—", res["status"]])
            continue
        for t in res.get("targets", []):
            rows.append([res["title"], f"{t['name']}: {t['goal']}",
                         _value(t["value"]) + (f" ({t['note']})" if t.get("note") else ""), _met(t)])
    lines += [C.md_table(["case", "target", "this run", "status"], rows), ""]
    for name, res in cases.items():
        lines += [f"## {res['title']}", "",
                  f"*{res['seconds']:.1f} s; load {res['loadavg_before'][0]:.2f} → "
                  f"{res['loadavg_after'][0]:.2f}" + _steal_brief(res.get("cpu_steal")) + ".*", ""]
        if res["status"] == "ok":
            try:
                lines.append(case_module(name).report(res, out))
            except Exception as e:  # noqa: BLE001  (a broken section must not lose the others)
                lines.append(f"(report section failed: {type(e).__name__}: {e})")
        elif res["status"] == "not available":
            lines.append(f"**Not available in this run**: {res.get('reason', '')}")
        else:
            lines.append(f"**Error**: `{res.get('error', '')}`")
        lines.append("")
    path = out / "REPORT.md"
    path.write_text("\n".join(lines))
    return path


def _steal_sentence(share) -> str:
    """The hypervisor's steal time over the run (None: unknown, or a record written before it was measured)."""
    if share is None:
        return ""
    return (f"; CPU steal (time the hypervisor gave the vCPUs to other guests, /proc/stat) {100 * share:.0f} % "
            "of the run, so two threads gain less than 2× when it is large")


def _steal_brief(share) -> str:
    return "" if share is None else f"; CPU steal {100 * share:.0f} %"
