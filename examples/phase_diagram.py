"""Phase diagram of clustering over (β, t), run through the sweep (examples/phase_sweep.toml).

After the phase-diagram figure of Geshkovski, Letrouit, Polyanskiy & Rigollet, "A mathematical
perspective on Transformers": n = 32 tokens i.i.d. uniform on S², Post-LN softmax attention with
Q = K = V = I; for each β the fraction of aligned pairs (⟨θ_i, θ_j⟩ ≥ 1 − 10⁻³) at time t,
averaged over 12 random starts.  Small β: one cluster quickly; large β: several clusters that
persist (metastability) over the time window.

    python examples/phase_diagram.py [--workers 2] [--output phase-out] [--figure phase_diagram.png]

The sweep (examples/phase_sweep.toml) is resumable: a second run reuses the finished tasks in
--output and only redraws the figure.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def phase_table(results_jsonl):
    """(betas, times, mean aligned fraction of shape (len(times), len(betas)), replicas per β)."""
    rows = [json.loads(line) for line in Path(results_jsonl).read_text().splitlines() if line.strip()]
    failed = [r for r in rows if r["status"] != "OK"]
    rows = [r for r in rows if r["status"] == "OK"]
    if failed:       # left out of the means, said so (the replica count per β shows it too)
        print(f"{len(failed)} task(s) did not finish (status {sorted({r['status'] for r in failed})}); "
              "the means leave them out")
    if not rows:
        raise SystemExit(f"no task of {results_jsonl} finished (status OK): nothing to draw")
    betas = sorted({r["model.beta"] for r in rows})
    times = np.asarray(rows[0]["t"])
    frac = np.zeros((times.size, len(betas)))
    count = np.zeros(len(betas), dtype=int)
    for r in rows:
        j = betas.index(r["model.beta"])
        frac[:, j] += np.asarray(r["aligned_fraction"], dtype=float)
        count[j] += 1
    return np.asarray(betas), times, frac / count, count


def draw(betas, times, frac, path, replicas):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    db, dt = betas[1] - betas[0], times[1] - times[0]
    fig, ax = plt.subplots(figsize=(5.2, 3.4), constrained_layout=True)
    im = ax.imshow(frac, origin="lower", aspect="auto", cmap="magma", vmin=0, vmax=1,
                   extent=[betas[0] - db / 2, betas[-1] + db / 2, times[0] - dt / 2, times[-1] + dt / 2])
    ax.set_xlabel("β")
    ax.set_ylabel("t")
    ax.set_title(f"fraction of aligned pairs, n = 32 on S² ({replicas} starts per β)", fontsize=9)
    fig.colorbar(im, ax=ax, label=r"pairs with $\langle\theta_i,\theta_j\rangle \geq 1-10^{-3}$")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="local dask worker processes (default 2)")
    ap.add_argument("--output", default="phase-out", help="sweep folder (resumable; default phase-out)")
    ap.add_argument("--figure", default="phase_diagram.png",
                    help="PNG to write (default phase_diagram.png here; the docs' copy is docs/images/phase_diagram.png)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    from meanfield import load_sweep, run_sweep

    spec = load_sweep(HERE / "phase_sweep.toml")
    result = run_sweep(spec, args.output, workers=args.workers, progress=not args.quiet)
    print(result)
    betas, times, frac, count = phase_table(Path(args.output) / "results.jsonl")
    draw(betas, times, frac, args.figure, int(count.min()))
    # where the mean crosses 1/2: the time by which half of the pairs have merged, per β
    half = [float(times[np.argmax(frac[:, j] >= 0.5)]) if np.any(frac[:, j] >= 0.5) else None
            for j in range(len(betas))]
    print("β:        " + " ".join(f"{b:5.1f}" for b in betas))
    print("t(½):     " + " ".join("    —" if h is None else f"{h:5.0f}" for h in half))
    print("final:    " + " ".join(f"{f:5.2f}" for f in frac[-1]))
    print(f"figure written to {args.figure}")


if __name__ == "__main__":
    main()
