"""Case 6: peak memory of each method at its largest benchmarked size, each in a fresh process.

Every item runs in its own child process (``python -m meanfield._bench._memory KIND SIZE``) so that one
item's high-water mark does not hide another's.  Reported per item:

* ``peak_above_baseline_mb``: the peak resident set size (the kernel's high-water mark VmHWM, reset after
  the imports through /proc/self/clear_refs; ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` where that is
  unsupported) minus the resident size after the imports, before the inputs are built — so inputs,
  outputs, library work arrays and plans are all counted; the interpreter and the imported libraries are not;
* ``tracemalloc_peak_mb``: the peak of memory allocated through Python's allocators (numpy arrays
  included; ducc0's C++ work arrays are not) during a second run of the operation, inputs excluded;
* ``input_mb``: the size of the inputs (state, tokens or coefficients).

RSS is counted in pages touched, so it is an honest upper bound of what the operation needs from the
machine; tracemalloc is a lower bound of the array traffic.  The Dedalus anchor's peak memory is shown as a
reference from another run (never a ratio).
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import tracemalloc

from . import _common as C

NAME = "memory"
TITLE = "6. Peak memory at the largest sizes"
ITEMS = (("spectral", 512), ("spectral", 340), ("particles-sh", 1_000_000), ("particles", 20_000),
         ("dense", 20_000), ("transforms", 1024), ("pyshtools", 1024))
QUICK_ITEMS = (("spectral", 128), ("particles-sh", 100_000), ("particles", 3000), ("dense", 3000),
               ("transforms", 128), ("pyshtools", 128))
LABELS = {"spectral": ("spectral backend, 2 Dormand–Prince steps (Post-LN)", "L"),
          "particles-sh": ("particles-sh velocity", "N"), "particles": ("exact particles velocity (ours)", "N"),
          "dense": ("dense numpy velocity (published style)", "N"),
          "transforms": ("ours: synthesis + analysis + gradient", "L"),
          "pyshtools": ("pyshtools: expand + expand + gradient (DH2)", "L")}


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - non-Linux
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's resident high-water mark to the current RSS (Linux ≥ 4.0); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:  # pragma: no cover
        return False


def _peak_mb() -> float:
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prepare(kind: str, size: int):
    """(operation, input bytes) for one item; everything the operation reads is built here."""
    if kind == "spectral":
        from ._spectral_rhs import backend

        be = backend(size)
        be._one_step(1e9)                 # plans and the step size: the timed steps are steady-state

        def op():
            be._one_step(1e9)
            be._one_step(1e9)
        return op, be.y.nbytes
    if kind in ("particles-sh", "particles"):
        import meanfield as mf
        from .._simulate import get_backend
        from ._particles import clustered

        st = get_backend(kind)(mf.Model(5.0), mf.Particles(clustered(size)), step=0.1)
        return (lambda: st.velocity()), st.y.nbytes
    if kind == "dense":
        from ._particles import BETA, clustered, dense_velocity

        x = clustered(size)
        return (lambda: dense_velocity(x, BETA, max(1, 2 ** 18 // size))), x.nbytes
    if kind in ("transforms", "pyshtools"):
        from .. import sphere
        from ._transforms import _random_alm

        a = _random_alm(size)
        if kind == "transforms":
            grid = sphere.SphereGrid.for_bandlimit(size, dealias=False)

            def op():
                sphere.analysis(sphere.synthesis(a, size, grid), size, grid)
                sphere.gradient(a, size, grid)
            return op, a.nbytes
        coeffs = sphere.to_shcoeffs(a, size).convert(normalization="4pi", csphase=1, kind="real")

        def op():
            coeffs.expand().expand()
            coeffs.gradient()
        return op, coeffs.coeffs.nbytes
    raise ValueError(f"unknown memory item {kind!r}")


def child(kind: str, size: int) -> dict:
    import meanfield  # noqa: F401  (the imports are part of the baseline)
    import numpy  # noqa: F401
    if kind == "pyshtools":
        import pyshtools  # noqa: F401
    from .. import backends  # noqa: F401

    reset = _reset_peak()              # the imports' own transient peak must not hide the operation's
    base = _status_mb("VmRSS") if reset else _peak_mb()
    op, nbytes = _prepare(kind, size)
    op()
    peak = _peak_mb()
    tracemalloc.start()
    op()
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return dict(kind=kind, size=size, baseline_rss_mb=base, peak_rss_mb=peak, peak_above_baseline_mb=peak - base,
                peak_reset=reset,
                tracemalloc_peak_mb=traced / 2 ** 20, input_mb=nbytes / 2 ** 20)


def run(quick: bool = False, items=None) -> dict:
    items = C.sizes_override("items", items, QUICK_ITEMS if quick else ITEMS)
    rows = []
    for kind, size in items:
        proc = subprocess.run([sys.executable, "-m", "meanfield._bench._memory", kind, str(size)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            rows.append(dict(kind=kind, size=size, error=proc.stderr.strip().splitlines()[-1:] or ["failed"]))
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    ded, path = C.anchor("dedalus_sphere")
    refs = dict(path=path, dedalus_peak_memory_gb_at_512=ded.get("dedalus_peak_memory_gb_at_512") if ded else None,
                ducc0_peak_memory_gb_at_512=ded.get("ducc0_peak_memory_gb_at_512") if ded else None)
    return dict(case=NAME, title=TITLE, rows=rows, comparisons=[], references=refs, targets=[],
                params=dict(method="child process per item: peak RSS (VmHWM reset after the imports; ru_maxrss where "
                                   "that is unsupported) − RSS after the imports; tracemalloc peak of a second run"))


def report(res: dict, out) -> str:
    rows = []
    for r in res["rows"]:
        label, unit = LABELS.get(r["kind"], (r["kind"], "size"))
        if "error" in r:
            rows.append([label, f"{unit} = {r['size']:,}", "failed: " + " ".join(r["error"]), "", "", ""])
            continue
        rows.append([label, f"{unit} = {r['size']:,}", f"{r['peak_above_baseline_mb']:.0f}",
                     f"{r['tracemalloc_peak_mb']:.0f}", f"{r['input_mb']:.1f}", f"{r['baseline_rss_mb']:.0f}"])
    ref = res["references"]
    text = ["Each item in a fresh process. *Peak above baseline*: the resident high-water mark (VmHWM, reset "
            "after the imports) minus the resident size after the imports (inputs, work arrays and library plans "
            "counted). *numpy peak*: tracemalloc's peak during a "
            "second run (Python/numpy allocations only; inputs excluded). MB = 2²⁰ bytes.", "",
            C.md_table(["method", "size", "peak above baseline MB", "numpy peak MB", "inputs MB", "baseline MB"], rows)]
    if ref.get("dedalus_peak_memory_gb_at_512") is not None:
        text += ["", f"Reference (anchor, another run on this machine kind, Nθ = 512): Dedalus v3 peak "
                 f"{ref['dedalus_peak_memory_gb_at_512']:g} GB, the minimal ducc0 loop "
                 f"{ref['ducc0_peak_memory_gb_at_512']:g} GB."]
    return "\n".join(text)


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], int(sys.argv[2]))))
