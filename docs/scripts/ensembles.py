"""Tutorial figure and numbers: ensembles of token runs (docs/tutorials/ensembles.md).

* 200 replicas of 32 uniform tokens, β = 4, Post-LN and Peri-LN, RK4 step 0.05 to t = 40 (mf.ensemble, batched):
  the mean alignment with its 95 % Student-t interval at every saved time, and the time each run took;
* the same Post-LN ensemble to t = 2 one replica after another (batch=False), for the cost of batching;
* the early growth of the degree-1 mode of n = 400 tokens (400 replicas, to t = 2): E[n|m|²], m the mean token,
  relative to its start, against the linear theory about the uniform measure, e^{2∫λ₁} with
  λ₁ = mf.growth_rate(β, 1, scheme=…), divided by the radius 1 + t for Peri-LN (its speed is 1/(r‖A‖), and r
  grows at rate ≈ 1 near the uniform state);
* that rate at t = 0 directly: E[2 m·dm/dt]/E[|m|²] over 3000 draws of 400 uniform tokens, against 2λ₁;
* why backend="particles-sh" runs its replicas one by one: 32 replicas of 2000 tokens against one run alone, and
  the share of a run spent in its spectral evaluations (per replica: what a batch could not save).

Run:  python docs/scripts/ensembles.py   (about 3.5 minutes on two cores; writes docs/images/ensembles.png)
"""
import time
from pathlib import Path

import numpy as np

import meanfield as mf
from meanfield import plot

IMAGES = Path(__file__).resolve().parents[1] / "images"
BETA, N, R, T = 4.0, 32, 200, 40.0
SCHEMES = {"post-ln": "Post-LN", "peri-ln": "Peri-LN"}


def scheme_ensembles():
    runs = {}
    for scheme, label in SCHEMES.items():
        t0 = time.perf_counter()
        runs[scheme] = r = mf.ensemble(mf.Model(BETA, scheme), N, T, replicas=R, seed=0, save_every=0.5,
                                       method="rk4", step=0.05)
        print(f"{label}: {time.perf_counter() - t0:.1f} s, success {r.success}; mean alignment at t = 10, 20, 40: "
              + ", ".join(f"{r.mean[i]:.3f} [{r.ci_low[i]:.3f}, {r.ci_high[i]:.3f}]"
                          for i in np.searchsorted(r.times, [10.0, 20.0, 40.0])))
    return runs


def batching_cost():
    model, kw = mf.Model(BETA), dict(replicas=R, seed=0, save_every=0.5, method="rk4", step=0.05)
    for batch in (True, False):
        t0 = time.perf_counter()
        mf.ensemble(model, N, 2.0, batch=batch, **kw)
        print(f"Post-LN to t = 2, batch={batch}: {time.perf_counter() - t0:.2f} s")


def n_m2(p):
    """n |m|², m the mean of the tokens: 1 on average for i.i.d. uniform tokens."""
    return p.n * np.sum(p.positions.mean(axis=0) ** 2)


def linear_theory(n=400, replicas=400, t_final=2.0):
    """The growth of E[n|m|²] from its start against e^{2∫λ₁}: the degree-1 mode of the linearization about the
    uniform measure (Peri-LN: λ₁/r with r = 1 + t)."""
    growth = {}
    for scheme, label in SCHEMES.items():
        r = mf.ensemble(mf.Model(BETA, scheme), n, t_final, replicas=replicas, seed=1, save_every=0.5,
                        observable=n_m2, method="rk4", step=0.05)
        lam = mf.growth_rate(BETA, 1, scheme=scheme)
        theory = np.exp(2 * lam * (np.log1p(r.times) if scheme == "peri-ln" else r.times))
        growth[scheme] = (r.times, r.mean / r.mean[0], theory)
        print(f"{label}, n = {n}: E[n|m|²] at t = 0: {r.mean[0]:.4f}; growth at t = "
              + ", ".join(f"{t:g}: {g:.3f} (theory {e:.3f}, {100 * (g / e - 1):+.1f} %)"
                          for t, g, e in zip(*growth[scheme])))
    return growth


def initial_rate(n=400, draws=3000):
    """d/dt E|m|² / E|m|² at t = 0 over i.i.d. uniform draws (the exact velocity, no time stepping) against 2λ₁."""
    from meanfield._attention import attention_field

    for beta in (BETA, 1.0):
        rng = np.random.default_rng(0)
        num, den = np.empty(draws), np.empty(draws)
        for k in range(draws):
            x = mf.Particles.uniform(n, seed=rng).positions
            v = attention_field(mf.Model(beta), x, nthreads=1).tangential      # Post-LN: dθ/dt = P_θ A
            m = x.mean(axis=0)
            num[k], den[k] = 2 * m @ v.mean(axis=0), m @ m
        print(f"β = {beta:g}: E[2 m·dm/dt]/E[|m|²] = {num.mean() / den.mean():.3f} ± "
              f"{num.std() / np.sqrt(draws) / den.mean():.3f} against 2λ₁ = {2 * mf.growth_rate(beta, 1):.3f}")


def sh_batching_headroom(n=2000, replicas=32, t_final=2.0):
    """Seconds per replica of a particles-sh ensemble (run one by one) against one run alone, and the share of a run
    (threads=1) spent in the spectral field: its non-uniform transforms take one replica's tokens per call, so one
    stepper for all the replicas could save only the rest."""
    from meanfield.backends._particles_sh import ParticlesSHBackend

    model, kw = mf.Model(BETA), dict(backend="particles-sh", method="rk4", step=0.05, save_every=0.5)
    mf.simulate(model, mf.Particles.uniform(n, seed=0), 0.2, **kw)          # imports and plans out of the timing
    alone = []
    for k in range(3):
        t0 = time.perf_counter()
        mf.simulate(model, mf.Particles.uniform(n, seed=k), t_final, **kw)
        alone.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    mf.ensemble(model, n, t_final, replicas=replicas, seed=0, **kw)
    per_replica = (time.perf_counter() - t0) / replicas
    spent, field = [0.0], ParticlesSHBackend._field

    def timed(self, *args):
        t = time.perf_counter()
        try:
            return field(self, *args)
        finally:
            spent[0] += time.perf_counter() - t
    ParticlesSHBackend._field = timed
    try:
        t0 = time.perf_counter()
        mf.simulate(model, mf.Particles.uniform(n, seed=0), t_final, threads=1, **kw)
        total = time.perf_counter() - t0
    finally:
        ParticlesSHBackend._field = field
    print(f"particles-sh, {replicas} replicas of {n} tokens to t = {t_final:g}: {per_replica:.3f} s per replica; "
          f"one run alone {min(alone):.3f}–{max(alone):.3f} s; spectral field {100 * spent[0] / total:.0f} % of a run "
          "(threads=1)")


def figure(runs, growth):
    plt = plot._plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.6, 3.4), constrained_layout=True)
    for scheme, label in SCHEMES.items():
        r = runs[scheme]
        line, = ax.plot(r.times, r.mean, label=f"{label}, mean of {R} replicas")
        ax.fill_between(r.times, r.ci_low, r.ci_high, color=line.get_color(), alpha=0.25, lw=0)
        t, g, theory = growth[scheme]
        bx.plot(t, g, "o", color=line.get_color(), label=f"{label}, ensemble")
        fine = np.linspace(0, t[-1], 101)
        lam = mf.growth_rate(BETA, 1, scheme=scheme)
        bx.plot(fine, np.exp(2 * lam * (np.log1p(fine) if scheme == "peri-ln" else fine)), "--",
                color=line.get_color(), label=f"{label}, linear theory")
    ax.set_xlabel("t")
    ax.set_ylabel("mean pairwise alignment")
    ax.set_title(f"{N} uniform tokens, β = {BETA:g}: mean and 95 % interval", fontsize=9)
    ax.legend(fontsize=8)
    bx.set_xlabel("t")
    bx.set_ylabel("E[n|m|²(t)] / E[n|m|²(0)]")
    bx.set_title("400 tokens, 400 replicas: the degree-1 mode", fontsize=9)
    bx.legend(fontsize=8)
    fig.savefig(IMAGES / "ensembles.png", dpi=90)


def main():
    runs = scheme_ensembles()
    batching_cost()
    figure(runs, linear_theory())
    initial_rate()
    sh_batching_headroom()


if __name__ == "__main__":
    main()
