"""Tutorial figure: linear instability of the uniform measure on S², measured against mf.growth_rate.

The uniform density plus ε·Y_ℓ0 (ε = 1e-7, so the run stays linear) under Post-LN, Q = K = V = I, for
softmax (SA) and unnormalized (USA) attention at β = 4; the degree-ℓ coefficient is recorded at 41
times over T = min(3/γ_ℓ, 15/γ_max) (three e-folds, or fewer for slow degrees so that the fastest
degree, seeded at O(ε²) by the nonlinearity, stays negligible) and its log-slope (least squares)
compared with mf.growth_rate(β, ℓ).

Run:  python docs/scripts/linear_instability.py   (writes docs/images/linear_instability.png)
"""
from pathlib import Path

import numpy as np

import meanfield as mf
from meanfield import plot
from meanfield.sphere import lm_index

IMAGES = Path(__file__).resolve().parents[1] / "images"
BETA, L, EPS = 4.0, 16, 1e-7


def perturbed(ell):
    c = mf.Density.uniform(L).coeffs.copy()
    c[lm_index(L, ell, 0)] = EPS
    return mf.Density(c, L)


def measure(attention, ell):
    rate = mf.growth_rate(BETA, ell, attention=attention)
    fastest = max(mf.growth_rate(BETA, k, attention=attention) for k in range(1, L + 1))
    t_final = min(3.0 / rate, 15.0 / fastest)
    traj = mf.simulate(mf.Model(BETA, attention=attention), perturbed(ell), t_final,
                       t_eval=np.linspace(0, t_final, 41)[1:], rtol=1e-10, atol=1e-20, error_norm="elementwise")
    amp = np.array([s.coeffs[lm_index(L, ell, 0)].real for s in traj.states])
    fitted = np.polyfit(traj.times, np.log(amp / EPS), 1)[0]
    return rate, fitted, traj.times, amp


def main():
    ells = np.arange(1, 7)
    results = {a: [measure(a, ell) for ell in ells] for a in ("softmax", "unnormalized")}
    print(f"β = {BETA}, L = {L}, ε = {EPS:g}: fitted log-slope of the ℓ-coefficient over T = min(3/γ_ℓ, 15/γ_max)")
    print(f"{'ℓ':>2s} {'SA growth_rate':>15s} {'SA measured':>13s} {'rel.diff':>9s} "
          f"{'USA growth_rate':>16s} {'USA measured':>13s} {'rel.diff':>9s}")
    for i, ell in enumerate(ells):
        sa, usa = results["softmax"][i], results["unnormalized"][i]
        print(f"{ell:2d} {sa[0]:15.8f} {sa[1]:13.8f} {sa[1] / sa[0] - 1:9.1e} "
              f"{usa[0]:16.8f} {usa[1]:13.8f} {usa[1] / usa[0] - 1:9.1e}")

    plt = plot._plt()
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.1), constrained_layout=True)
    for i, ell in enumerate(ells[:5]):
        rate, _, t, amp = results["softmax"][i]
        line, = axes[0].semilogy(t, amp / EPS, "o", ms=2.5, label=f"ℓ = {ell}")
        axes[0].semilogy(t, np.exp(rate * t), "-", lw=0.8, color=line.get_color())
    axes[0].set_xlim(0, 8)
    axes[0].set_ylim(0.8, 30)
    axes[0].set_xlabel("t")
    axes[0].set_title("SA: coefficient / ε (dots) vs exp(γ_ℓ t) (lines)", fontsize=9)
    axes[0].legend(fontsize=7, ncol=2)
    fine = np.arange(1, 13)
    for attention, marker, label in (("softmax", "o", "SA"), ("unnormalized", "s", "USA")):
        line, = axes[1].plot(fine, [mf.growth_rate(BETA, ell, attention=attention) for ell in fine], "-", lw=0.8)
        axes[1].plot(ells, [r[1] for r in results[attention]], marker, ms=4, mfc="none", color=line.get_color(),
                     label=f"{label} measured")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("degree ℓ")
    axes[1].set_title("γ_ℓ: mf.growth_rate (lines), fitted (markers)", fontsize=9)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"Linear instability of the uniform measure on S², Post-LN, β = {BETA:g}", fontsize=10)
    IMAGES.mkdir(exist_ok=True)
    fig.savefig(IMAGES / "linear_instability.png", dpi=90)
    print(f"wrote {IMAGES / 'linear_instability.png'}")


if __name__ == "__main__":
    main()
