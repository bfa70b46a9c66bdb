"""Figures: Mollweide maps of densities on S², particles, S¹ densities, diagnostics (matplotlib, lazily imported)."""
from __future__ import annotations

import numpy as np

from ._measures import Density, Particles
from .sphere._interop import mollweide_grid
from .sphere._sh import points_to_angles


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        try:
            import matplotlib.pyplot as plt  # noqa: F401
        except Exception:  # pragma: no cover - headless fall-back
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def density_map(density: Density, ax=None, vmax=None, cmap="magma", title=None, colorbar=True):
    """Mollweide map of a density on S² (values w.r.t. the normalized measure: uniform = 1).

    ``ax`` must use ``projection="mollweide"`` (created when None).  Returns the QuadMesh.
    """
    if not isinstance(density, Density) or density.d != 3:
        raise ValueError("`density` must be a Density on S² (d = 3).")
    plt = _plt()
    if ax is None:
        ax = plt.figure(figsize=(6, 3.4)).add_subplot(projection="mollweide")
    lon, lat, vals = mollweide_grid(density.coeffs, density.lmax)
    mesh = ax.pcolormesh(lon, lat, vals, shading="auto", cmap=cmap, vmin=0, vmax=vmax or max(vals.max(), 1e-300))
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        ax.figure.colorbar(mesh, ax=ax, orientation="horizontal", shrink=0.6, pad=0.05)
    return mesh


def particles_map(particles: Particles, ax=None, s=2.0, color="k", title=None):
    """Scatter of particles on S² in the Mollweide projection (marker area ∝ weight × n)."""
    plt = _plt()
    if ax is None:
        ax = plt.figure(figsize=(6, 3.4)).add_subplot(projection="mollweide")
    th, ph = points_to_angles(particles.positions)
    lon = np.mod(ph + np.pi, 2 * np.pi) - np.pi
    ax.scatter(lon, np.pi / 2 - th, s=s * particles.weights * particles.n, c=color, linewidths=0)
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def circle_density(density: Density, ax=None, **kw):
    """ρ(φ) on S¹ as a curve over φ ∈ [0, 2π)."""
    if density.d != 2:
        raise ValueError("`density` must be a Density on S¹ (d = 2).")
    plt = _plt()
    ax = ax or plt.figure(figsize=(5, 3)).add_subplot()
    phi = np.linspace(0, 2 * np.pi, 721)
    ax.plot(phi, density.evaluate(np.stack([np.cos(phi), np.sin(phi)], -1)), **kw)
    ax.set_xlabel("φ")
    ax.set_ylabel("ρ (uniform = 1)")
    return ax


def diagnostics(trajectory, keys=("energy", "tail_fraction", "min_rho", "max_speed"), axes=None):
    """Time series of a trajectory's per-step diagnostics (log scale where positive)."""
    plt = _plt()
    if axes is None:
        _, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), constrained_layout=True)
    for ax, k in zip(np.atleast_1d(axes), keys):
        t, v = trajectory.steps.get("t"), trajectory.steps.get(k)
        if t is None or v is None or len(v) == 0:
            t, v = trajectory.times, trajectory.diagnostics[k]
        ax.plot(t, v)
        if np.all(np.asarray(v) > 0):
            ax.set_yscale("log")
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("t")
    return axes


def _state_panel(state, ax, title):
    from ._measures import ZonalDensity

    if isinstance(state, tuple):   # species: plot the total density
        state = Density(sum(s.coeffs for s in state), state[0].lmax, state[0].d)
    if isinstance(state, Density) and state.d == 3:
        density_map(state, ax=ax, title=title, colorbar=False)
    elif isinstance(state, Density):
        circle_density(state, ax=ax)
        ax.set_title(title, fontsize=9)
    elif isinstance(state, ZonalDensity):
        t = np.linspace(-1, 1, 401)
        ax.plot(t, state.evaluate_profile(t))
        ax.set_xlabel("⟨x, e⟩")
        ax.set_title(title, fontsize=9)
    elif isinstance(state, Particles) and state.d == 3:
        particles_map(state, ax=ax, title=title)
    else:
        g = state.positions @ state.positions.T
        ax.hist(g[np.triu_indices(state.n, 1)], bins=50, range=(-1, 1))
        ax.set_xlabel("⟨θ_i, θ_j⟩")
        ax.set_title(title, fontsize=9)


def _needs_mollweide(state):
    first = state[0] if isinstance(state, tuple) else state
    return isinstance(first, (Density, Particles)) and first.d == 3


def result_figure(trajectory, output, panels: int = 4):
    """Snapshots of a trajectory (maps on S², curves on S¹, alignment histograms in d > 3) over its
    diagnostics; ``output`` ending in ``.gif`` writes an animation of every saved state instead."""
    plt = _plt()
    if str(output).lower().endswith(".gif"):
        return animation(trajectory, output)
    n = len(trajectory.states)
    idx = np.unique(np.linspace(0, n - 1, min(panels, n)).round().astype(int))
    fig = plt.figure(figsize=(3.6 * len(idx), 6.0), constrained_layout=True)
    proj = "mollweide" if _needs_mollweide(trajectory.states[0]) else None
    for j, i in enumerate(idx):
        ax = fig.add_subplot(2, len(idx), j + 1, projection=proj)
        _state_panel(trajectory.states[i], ax, f"t = {trajectory.times[i]:.3g}")
    keys = [k for k in ("energy", "tail_fraction", "min_rho", "max_speed") if k in trajectory.diagnostics][: len(idx)]
    axes = [fig.add_subplot(2, len(idx), len(idx) + j + 1) for j in range(len(keys))]
    if keys:
        diagnostics(trajectory, keys=keys, axes=axes)
    m = trajectory.model
    fig.suptitle(f"{m.scheme}, β = {m.beta:g}, {m.attention}, d = {m.d}, backend {trajectory.backend}: "
                 f"{trajectory.status.name}", fontsize=10)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def animation(trajectory, output, fps: int = 4):
    """A GIF of every saved state (Pillow writer)."""
    plt = _plt()
    from matplotlib.animation import FuncAnimation, PillowWriter

    proj = "mollweide" if _needs_mollweide(trajectory.states[0]) else None
    fig = plt.figure(figsize=(6, 3.6))

    def frame(i):
        fig.clear()
        ax = fig.add_subplot(projection=proj)
        _state_panel(trajectory.states[i], ax, f"{trajectory.model.scheme}, t = {trajectory.times[i]:.3g}")

    anim = FuncAnimation(fig, frame, frames=len(trajectory.states))
    anim.save(output, writer=PillowWriter(fps=fps))
    plt.close(fig)
    return output
