"""Case 5: the hybrid backend to full clustering against exact particles at equal observable error.

Problem: β = 5, Post-LN, softmax, ρ0 = ``Density.random(seed=2, amplitude=0.7)``, to t = 6: the tokens
collapse into clusters (no fixed band limit resolves them; the hybrid hands off from the spectral solver
to weighted particles on the quadrature nodes when its resolution monitor fires).  Reference: the hybrid
at a fine resolution (L = 48, oversample 2, particle rtol 1e-9; L = 24 in --quick).  Observables at t = 6:
the attention-kernel MMD to the reference and the energy error |E_β − E_β,ref|.  Cost: CPU seconds of
``mf.simulate``.  Exact particles start from N i.i.d. samples of ρ0; both particle phases use rtol 1e-6.
Each comparison pits the most accurate exact-particle run against the cheapest hybrid run at least as
accurate in that observable (measured points only): ``speedup`` = exact CPU time / hybrid CPU time.
"""
from __future__ import annotations

import warnings

from . import _common as C

NAME = "hybrid"
TITLE = "5. Hybrid to full clustering against exact particles at equal observable error"
BETA, T_FINAL, L0 = 5.0, 6.0, 64
HYBRID, QUICK_HYBRID = ((4, 1), (6, 1), (8, 1), (12, 1), (16, 1), (24, 2)), ((4, 1), (6, 1), (8, 1))
EXACT_N, QUICK_EXACT_N = (250, 500, 1000, 2000), (250, 500)
REF, QUICK_REF = (48, 2), (24, 2)
RTOL, REF_RTOL = 1e-6, 1e-9


def available() -> tuple[bool, str]:
    import meanfield as mf
    from .. import backends  # noqa: F401  (backends register themselves on import)

    if "hybrid" not in mf.BACKENDS:
        return False, f"backend 'hybrid' is not registered in meanfield.BACKENDS ({sorted(mf.BACKENDS)})."
    return True, ""


def _reference(value, default) -> tuple[int, int]:
    """The reference run's (lmax, oversample): ``default`` when None, else two integers ≥ 1, refused by name before
    any run (``reference or default`` read () as the default, and passed (0, 2) on to the reference run)."""
    if value is None:
        return default
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"`reference` must be a pair (lmax, oversample) of integers >= 1; got reference={value!r}.")
    return (C.count_override("reference lmax", value[0], None),
            C.count_override("reference oversample", value[1], None))


def run(quick: bool = False, hybrid=None, exact_n=None, reference=None) -> dict:
    ref_l, ref_ov = _reference(reference, QUICK_REF if quick else REF)
    ok, why = available()
    if not ok:
        return dict(case=NAME, title=TITLE, status="not available", reason=why, comparisons=[], targets=[])
    import meanfield as mf

    hybrid = C.sizes_override("hybrid", hybrid, QUICK_HYBRID if quick else HYBRID)
    exact_n = C.sizes_override("exact_n", exact_n, QUICK_EXACT_N if quick else EXACT_N)
    model = mf.Model(BETA)
    rho0 = mf.Density.random(L0, seed=2, amplitude=0.7)

    def hybrid_run(L, ov, rtol):
        tr = mf.simulate(model, rho0.resized(L), T_FINAL, backend="hybrid", lmax=L, oversample=ov,
                         particle_options=dict(rtol=rtol, atol=rtol * 1e-2))
        if not tr.success:
            raise RuntimeError(f"hybrid L={L} failed: {tr.message}")
        return tr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        ref_traj, ref_wall, ref_cpu = C.timed(lambda: hybrid_run(ref_l, ref_ov, REF_RTOL))
        ref = ref_traj.final
        e_ref = mf.energy(ref, BETA)

        def observe(final):
            return dict(mmd=mf.mmd(final, ref, BETA), energy_error=abs(mf.energy(final, BETA) - e_ref))

        runs_h, runs_x = [], []
        for L, ov in hybrid:
            tr, wall, cpu = C.timed(lambda L=L, ov=ov: hybrid_run(L, ov, RTOL))
            d = tr.diagnostics
            runs_h.append(dict(lmax=L, oversample=ov, cpu_s=cpu, wall_s=wall, **observe(tr.final),
                               n_particles=_last(d.get("n_particles")), handoff=_handoff(tr)))
        for n in exact_n:
            p = mf.sample_density(rho0, n, seed=n)
            tr, wall, cpu = C.timed(lambda p=p: mf.simulate(model, p, T_FINAL, backend="particles", rtol=RTOL,
                                                            atol=RTOL * 1e-2))
            C.completed(tr, f"exact particles N={n}")
            runs_x.append(dict(n=n, cpu_s=cpu, wall_s=wall, **observe(tr.final)))
    comps = []
    for obs in ("mmd", "energy_error"):
        pair = C.at_equal_error(runs_h, runs_x, obs)
        if pair is None:
            continue
        h, x = pair
        comps.append(C.comparison(f"CPU time to {obs} ≤ {x[obs]:.1e} at t = {T_FINAL:g}",
                                  f"hybrid L = {h['lmax']}, oversample {h['oversample']}",
                                  f"exact particles N = {x['n']:,} (i.i.d.)", h["cpu_s"], x["cpu_s"],
                                  observable=obs, ours_error=h[obs], alternative_error=x[obs],
                                  error_ratio=x[obs] / h[obs], measure="CPU seconds"))
    mmd_comp = next((c for c in comps if c["observable"] == "mmd"), None)
    targets = [C.target("hybrid vs exact particles", "faster at equal observable error (MMD)",
                        round(mmd_comp["speedup"], 2) if mmd_comp else None,
                        None if quick else (mmd_comp["speedup"] > 1 if mmd_comp else None),
                        "judged on the full run (--quick: a few small runs)" if quick else
                        ("" if mmd_comp else "no hybrid run as accurate as the best exact run"))]
    return dict(case=NAME, title=TITLE, hybrid=runs_h, exact=runs_x, comparisons=comps, targets=targets,
                reference=dict(lmax=ref_l, oversample=ref_ov, particle_rtol=REF_RTOL, cpu_s=ref_cpu, wall_s=ref_wall,
                               n_particles=_last(ref_traj.diagnostics.get("n_particles")),
                               handoff=_handoff(ref_traj), energy=e_ref),
                params=dict(beta=BETA, t_final=T_FINAL, scheme="post-ln",
                            initial="Density.random(seed=2, amplitude=0.7)",
                            particle_rtol=RTOL))


def _last(x):
    try:
        return float(x[-1])
    except (TypeError, IndexError):
        return None


def _handoff(tr):
    """The hand-off time of a hybrid trajectory (first step of the particle phase), or None."""
    steps = getattr(tr, "steps", None) or {}
    if "phase" in steps and "t" in steps:
        for t, ph in zip(steps["t"], steps["phase"]):
            if ph >= 1:
                return float(t)
    return None


def report(res: dict, out) -> str:
    p, ref = res["params"], res["reference"]
    rows = [["hybrid", f"L = {r['lmax']}, oversample {r['oversample']}"
             + (f" ({r['n_particles']:,.0f} particles" if r["n_particles"] else "")
             + (f", hand-off t = {r['handoff']:.2f})" if r["handoff"] is not None else ")" if r["n_particles"] else ""),
             f"{r['mmd']:.2e}", f"{r['energy_error']:.1e}", C.sec(r["cpu_s"]), C.sec(r["wall_s"])]
            for r in res["hybrid"]]
    rows += [["exact particles", f"N = {r['n']:,} i.i.d.", f"{r['mmd']:.2e}", f"{r['energy_error']:.1e}",
              C.sec(r["cpu_s"]), C.sec(r["wall_s"])] for r in res["exact"]]
    comp = [[c["observable"], c["alternative"], f"{c['alternative_error']:.1e}", C.sec(c["alternative_s"]), c["ours"],
             f"{c['ours_error']:.1e}", C.sec(c["ours_s"]), C.ratio(c["speedup"]), C.ratio(c["error_ratio"])]
            for c in res["comparisons"]]
    text = [f"β = {p['beta']:g}, Post-LN, ρ0 = `{p['initial']}`, to t = {p['t_final']:g} (clustered). Reference: "
            f"hybrid L = {ref['lmax']}, oversample {ref['oversample']}, particle rtol {ref['particle_rtol']:g} "
            f"({ref['cpu_s']:.1f} s CPU). Particle phases rtol {p['particle_rtol']:g}. One run each (CPU seconds "
            "of `mf.simulate`, all threads).", "",
            C.md_table(["method", "size", "MMD", "energy error", "CPU s", "wall s"], rows), "",
            "At equal observable error (the most accurate exact-particle run against the cheapest hybrid run at "
            "least as accurate; measured points only; *error ratio* = exact error / hybrid error, > 1 when the "
            "hybrid run is the more accurate one):", "",
            C.md_table(["observable", "exact particles", "its error", "its CPU s", "hybrid", "hybrid error",
                        "hybrid CPU s", "speedup", "error ratio"], comp) if comp else "(no hybrid run was as accurate)"]

    def draw(ax):
        ax.loglog([r["cpu_s"] for r in res["hybrid"]], [r["mmd"] for r in res["hybrid"]], "o-", label="hybrid")
        ax.loglog([r["cpu_s"] for r in res["exact"]], [r["mmd"] for r in res["exact"]], "s--",
                  label="exact particles (i.i.d.)")
        ax.set_xlabel("CPU seconds")
        ax.set_ylabel(f"MMD to the reference at t = {p['t_final']:g}")
        ax.set_title("Full clustering: hybrid vs exact particles")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    text += ["", f"![hybrid vs exact particles]({C.figure(out / 'hybrid.png', draw)})"]
    return "\n".join(text)
