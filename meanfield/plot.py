"""Figures: Mollweide maps of densities on S², particles (Mollweide or 3-D), S¹ densities, diagnostics, and
comparisons of several runs (matplotlib, lazily imported)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._errors import MeanfieldWarning, warn
from ._measures import Density, Particles, conversion_hint
from ._validate import FIGURE_SUFFIXES, choice, flag, nonneg_int, output_file
from .sphere._interop import mollweide_grid
from .sphere._sh import points_to_angles

# the public names (the imported helpers above are not: ``from meanfield.plot import *`` gave ``choice``, ``warn``, …)
__all__ = ["density_map", "particles_map", "particles_3d", "circle_density", "diagnostics", "cluster_counts",
           "result_figure", "animation",
           "comparison_figure", "comparison_distances", "describe", "energy_figure", "ensemble_figure",
           "COMPARISON_KEYS", "DISTANCES",
           "PARTICLE_STYLES", "PROJECTIONS", "FIGURE_SUFFIXES"]


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        try:
            import matplotlib.pyplot as plt  # noqa: F401
        except Exception:  # pragma: no cover - headless fall-back
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _total_density(state):
    """The state itself, or for species (a tuple of Densities, as a run with radius species saves) their sum."""
    if isinstance(state, tuple) and state and all(isinstance(s, Density) for s in state):
        return Density(sum(s.coeffs for s in state), state[0].lmax, state[0].d)
    return state


def density_map(density: Density, ax=None, vmax=None, cmap="magma", title=None, colorbar=True):
    """Mollweide map of a density on S² (values w.r.t. the normalized measure: uniform = 1).

    Parameters
    ----------
    density : Density, ZonalDensity or tuple of Density
        A density on S² (d = 3), or a tuple of them (species: their total density is drawn).  A ZonalDensity
        on S² is drawn as the Density it is (exactly: a band-limited zonal function is a band-limited function).
    ax : Axes, optional
        Axes with ``projection="mollweide"`` (created when None).
    vmax : float, optional
        Upper end of the colour scale, in units of the uniform density (default: the largest value on
        the map grid; the lower end is 0).
    cmap : str
        Colour map.
    title : str, optional
        Title of the axes.
    colorbar : bool
        Draw a horizontal colour bar under the map.

    Returns
    -------
    matplotlib.collections.QuadMesh
        The map.

    Raises
    ------
    ValueError
        If ``density`` is not a Density on S² (the message names the function for S¹ densities and particles).
    """
    from ._compare import _on_s1_s2

    density = _on_s1_s2(_total_density(density))     # a zonal density on S² was refused with no hint
    if not isinstance(density, Density) or density.d != 3:
        hint = {2: " For d = 2 use meanfield.plot.circle_density."}.get(getattr(density, "d", None), "")
        if isinstance(density, Particles):
            hint = " For Particles use meanfield.plot.particles_map."
        what = f"a Density with d={density.d}" if isinstance(density, Density) else type(density).__name__
        raise ValueError(f"`density` must be a Density on S² (d = 3) or a tuple of them (species); got {what}.{hint}")
    plt = _plt()
    if ax is None:
        ax = plt.figure(figsize=(6, 3.4)).add_subplot(projection="mollweide")
    lon, lat, vals = mollweide_grid(density.coeffs, density.lmax)
    # the grid starts at λ = −π: its first column, repeated at +π, closes the seam (a sliver was left blank)
    lon, vals = np.append(lon, np.pi), np.concatenate([vals, vals[:, :1]], axis=1)
    mesh = _map_mesh(ax, lon, lat, vals, cmap=cmap, vmin=0, vmax=vmax or max(vals.max(), 1e-300))
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        ax.figure.colorbar(mesh, ax=ax, orientation="horizontal", shrink=0.6, pad=0.05)
    return mesh


#: The ``style`` values of :func:`particles_map`.
PARTICLE_STYLES = ("auto", "scatter", "histogram")
_HISTOGRAM_FROM = 2000      # style="auto": more tokens than this are drawn as a histogram density


def particles_map(particles: Particles, ax=None, s=2.0, color="k", title=None, style: str = "auto", cmap="magma"):
    """Particles on S² in the Mollweide projection: a scatter, or for many tokens their histogram density.

    Parameters
    ----------
    particles : Particles
        Tokens on S² (d = 3).
    ax : Axes, optional
        Axes with ``projection="mollweide"`` (created when None).
    s, color
        Marker area (× weight × n) and colour of the scatter.
    title : str, optional
    style : {"auto", "scatter", "histogram"}
        ``"histogram"``: the weights summed over equal-area cells (uniform in longitude and sin(latitude)),
        divided by the cell's share of the sphere, so that the map is a density w.r.t. the normalized
        measure (uniform = 1) drawn like :func:`density_map` and directly comparable with a PDE run's map.
        ``"auto"``: histogram above 2000 tokens (a scatter of 10⁵ dots fills the map and hides the
        clusters), scatter below.
    cmap : str
        Colour map of the histogram.

    Returns
    -------
    Axes
    """
    _check_s2_particles(particles)
    style = choice("style", style, PARTICLE_STYLES)
    plt = _plt()
    if ax is None:
        ax = plt.figure(figsize=(6, 3.4)).add_subplot(projection="mollweide")
    th, ph = points_to_angles(particles.positions)
    lon = np.mod(ph + np.pi, 2 * np.pi) - np.pi
    if style == "histogram" or (style == "auto" and particles.n > _HISTOGRAM_FROM):
        lon_edges, lat_edges, rho = _histogram_density(lon, np.cos(th), particles.weights)
        _map_mesh(ax, lon_edges, lat_edges, rho, edges=True, cmap=cmap, vmin=0, vmax=max(rho.max(), 1e-300))
    else:
        ax.scatter(lon, np.pi / 2 - th, s=s * particles.weights * particles.n, c=color, linewidths=0)
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def _histogram_density(lon, z, weights):
    """(lon_edges, lat_edges, ρ) of weighted points binned in equal-area cells, uniform in longitude and in
    z = sin(latitude); ρ is the cells' weight over their share of the sphere (a density, uniform = 1)."""
    nb = int(np.clip(np.sqrt(len(lon) / 40), 8, 90))         # ~20 tokens per cell on average
    lon_edges, z_edges = np.linspace(-np.pi, np.pi, 2 * nb + 1), np.linspace(-1, 1, nb + 1)
    counts, _, _ = np.histogram2d(lon, z, bins=(lon_edges, z_edges), weights=weights)
    return lon_edges, np.arcsin(z_edges), counts.T * (2 * nb * nb) / weights.sum()   # a cell is 1/(2 nb²) of S²


def _map_mesh(ax, lon, lat, values, edges=False, **kw):
    """``pcolormesh`` of cells covering the sphere on a Mollweide Axes, with sides that follow the meridians.

    Parameters
    ----------
    ax : Axes
        A Mollweide Axes.
    lon, lat : ndarray
        Cell edges (``edges=True``; from −π to π and from −π/2 to π/2), else cell centres (ascending): the
        edges are then halfway between them, and the outer cells reach ±π and the poles.
    values : ndarray, shape (len(lat) - edges, len(lon) - edges)
        One value per cell.
    **kw
        Passed on to ``pcolormesh``.

    Returns
    -------
    QuadMesh
        Its rows are strips of the cells (each with its cell's value), not the cells.

    Notes
    -----
    ``pcolormesh`` joins a cell's corners by straight lines on the map, but meridians are curves on a
    Mollweide map: the sides of tall cells become chords, and polar cells become triangles meeting at the
    pole, which leave blank wedges against the curved boundary (histogram cells are 40° high for a few thousand
    tokens).  Strips 1° apart in the Mollweide angle θ (sin φ = (2θ + sin 2θ)/π) make each side a chain of
    chords of 1° of an ellipse, far below a pixel from it.  Parallels are straight lines on the map: longitudes
    need no splitting.
    """
    if not edges:
        lon, lat = _centre_edges(lon, -np.pi, np.pi), _centre_edges(lat, -np.pi / 2, np.pi / 2)
    theta = np.linspace(-np.pi / 2, np.pi / 2, 181)
    strips = np.union1d(lat, np.arcsin(np.clip((2 * theta + np.sin(2 * theta)) / np.pi, -1, 1)))
    row = np.searchsorted(lat, 0.5 * (strips[:-1] + strips[1:])) - 1
    return ax.pcolormesh(lon, strips, np.asarray(values)[row], **kw)


def _centre_edges(centres, lo, hi):
    return np.concatenate([[lo], 0.5 * (centres[1:] + centres[:-1]), [hi]])


def _check_s2_particles(particles):
    if not isinstance(particles, Particles):
        raise TypeError(f"`particles` must be meanfield.Particles; got {type(particles).__name__}.")
    if particles.d != 3:
        raise ValueError(f"`particles` must be Particles on S² (d = 3); got d = {particles.d}.")


def particles_3d(particles: Particles, ax=None, s=4.0, color="k", title=None, sphere=True):
    """3-D scatter of particles on S² (mplot3d) in front of a faint wireframe of the unit sphere.

    The directions θ_j are drawn (radii, if any, are not shown).  Weights are shown by **marker
    area**: particle j has area ``s · n · w_j`` (points²), so equal weights give every marker the area
    ``s``, as in :func:`particles_map`.  Points on the far side are shaded lighter (mplot3d depth shading).

    Parameters
    ----------
    particles : Particles
        Tokens on S² (d = 3): positions of shape (n, 3), weights of shape (n,).
    ax : Axes3D, optional
        A 3-D Axes (``projection="3d"``); a new figure is made when None.
    s : float
        Marker area of a particle of weight 1/n.
    color : color or array_like of shape (n,)
        Marker colour, or one value per particle (mapped through the default colormap).
    title : str, optional
        Axes title.
    sphere : bool
        Draw the unit sphere as a faint wireframe behind the points.

    Returns
    -------
    Axes3D
        The axes, with limits [-1, 1] on every axis and an equal box aspect.

    Raises
    ------
    ValueError
        If ``particles`` is not on S² (d ≠ 3), or ``ax`` is not a 3-D Axes.
    """
    _check_s2_particles(particles)
    plt = _plt()
    if ax is None:
        ax = plt.figure(figsize=(4.5, 4.5)).add_subplot(projection="3d")
    elif getattr(ax, "name", None) != "3d":
        kind = getattr(ax, "name", type(ax).__name__)
        raise ValueError(f"`ax` must be a 3-D Axes (projection='3d'); got a {kind!r} Axes.")
    if sphere:
        u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 25), np.linspace(0, np.pi, 13))
        ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.6", linewidth=0.3,
                          alpha=0.35)
    x = particles.positions
    ax.scatter(x[:, 0], x[:, 1], x[:, 2], s=s * particles.weights * particles.n, c=color, linewidths=0)
    for lim in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
        lim(-1, 1)
    ax.set_box_aspect((1, 1, 1))
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_ticks([-1, 0, 1])
    ax.tick_params(labelsize=6, pad=0)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def circle_density(density: Density, ax=None, **kw):
    """ρ(φ) on S¹ as a curve over φ ∈ [0, 2π) (values w.r.t. the normalized measure: uniform = 1).

    Parameters
    ----------
    density : Density, ZonalDensity or tuple of Density
        A density on S¹ (d = 2), or a tuple of Densities (species: their total density is drawn).
    ax : Axes, optional
        Axes to draw on (created when None).
    **kw
        Passed to ``ax.plot`` (colour, label, …).

    Returns
    -------
    Axes

    Raises
    ------
    TypeError
        If ``density`` is not a density (Particles, say).
    ValueError
        If its dimension is not 2 (for d = 3 use :func:`density_map`).
    """
    from ._measures import ZonalDensity

    density = _total_density(density)
    # checked by kind first: Particles (no .evaluate) raised AttributeError, and a wrong d read as a wrong kind
    if not isinstance(density, (Density, ZonalDensity)):
        raise TypeError(f"`density` must be a Density on S¹ (d = 2); got {type(density).__name__}."
                        + conversion_hint(density))
    if density.d != 2:
        hint = " For d = 3 use meanfield.plot.density_map." if density.d == 3 else ""
        raise ValueError(f"`density` must be a Density on S¹ (d = 2); got d={density.d}.{hint}")
    plt = _plt()
    ax = ax or plt.figure(figsize=(5, 3)).add_subplot()
    phi = np.linspace(0, 2 * np.pi, 721)
    ax.plot(phi, density.evaluate(np.stack([np.cos(phi), np.sin(phi)], -1)), **kw)
    ax.set_xlabel("φ")
    ax.set_ylabel("ρ (uniform = 1)")
    return ax


_DEFAULT_DIAGNOSTICS = ("energy", "tail_fraction", "min_rho", "max_speed")


def diagnostics(trajectory, keys=None, axes=None):
    """Time series of a trajectory's per-step diagnostics (log scale where positive).

    Parameters
    ----------
    trajectory : Trajectory
        Any run (spectral, particles, hybrid, zonal).
    keys : str or sequence of str, optional
        The diagnostics to draw, one panel each.  Default: those of energy, tail_fraction, min_rho and
        max_speed that the run records (a particle run has no tail_fraction or min_rho, which are
        properties of a band-limited density).
    axes : sequence of matplotlib Axes, optional
        One per key (default: a new figure).

    Returns
    -------
    ndarray of Axes
    """
    _check_trajectory(trajectory)
    if keys is None:
        # the spectral set was the default for every run: a particle run raised on its own missing keys
        keys = [k for k in _DEFAULT_DIAGNOSTICS if _has_values(trajectory, k)] \
            or sorted(k for k in trajectory.diagnostics if k != "t")
    keys = [keys] if isinstance(keys, str) else list(keys)
    missing = [k for k in keys if k not in trajectory.diagnostics and k not in trajectory.steps]
    if not keys or missing:
        raise ValueError(f"`keys` must name diagnostics of the trajectory ({sorted(trajectory.diagnostics)}); "
                         f"got {missing or keys!r}.")
    plt = _plt()
    if axes is None:
        _, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), constrained_layout=True)
    for ax, k in zip(np.atleast_1d(axes), keys):
        t, v = _series(trajectory, k)
        _plot_series(ax, t, v)
        if _spans_decades(v):
            ax.set_yscale("log")
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("t")
    return axes


def cluster_counts(history, ax=None, merges: bool = True):
    """The number of clusters of a run over time, a step line from each saved state to the next.

    Parameters
    ----------
    history : ClusterHistory or Trajectory
        The result of :func:`meanfield.cluster_history`; a Trajectory is clustered with its defaults
        (``angle=0.1``; every cluster of a particle state).
    ax : matplotlib Axes, optional
        Default: a new figure.
    merges : bool
        Shade the intervals between saved states in which the count fell (``history.merges``).

    Returns
    -------
    Axes
        With a time axis that spans decades, ``ax.set_xscale("symlog", linthresh=...)`` shows the late mergers.

    Raises
    ------
    TypeError
        ``history`` is neither a ClusterHistory nor a Trajectory, or ``merges`` is not a bool.
    ValueError
        As :func:`meanfield.cluster_history`, for a Trajectory it cannot cluster.
    """
    from .analysis import ClusterHistory, cluster_history

    merges = flag("merges", merges)         # merges="no" shaded them
    if _is_trajectory(history):
        history = cluster_history(history)
    elif not isinstance(history, ClusterHistory):
        raise TypeError("`history` must be a meanfield.ClusterHistory (from meanfield.cluster_history) or a "
                        f"Trajectory; got {type(history).__name__}.")
    if ax is None:
        _, ax = _plt().subplots(figsize=(4.5, 2.8), constrained_layout=True)
    # a line through one point draws nothing: a run saved once had a blank panel
    ax.step(history.times, history.counts, where="post", color="k", marker="o" if history.times.size == 1 else None)
    if merges:
        for start, end in history.merges:
            ax.axvspan(start, end, color="tab:red", alpha=0.25, linewidth=0)
    floor = "" if history.min_mass is None else f" of mass ≥ {history.min_mass:g}"
    ax.set_xlabel("t")
    ax.set_ylabel(f"clusters{floor}")
    return ax


def _has_values(trajectory, key) -> bool:
    """Whether the run records ``key`` with a finite value somewhere: an anisotropic kernel's ``energy`` is all NaN,
    and its panel was drawn empty, on a meaningless axis."""
    return any(np.isfinite(np.asarray(source[key], dtype=float)).any()
               for source in (trajectory.diagnostics, trajectory.steps) if key in source)


def _series(trajectory, key):
    """(t, values) of a diagnostic: per integrator step when the backend logs it over the whole run, else at
    the saved times (a hybrid run logs its spectral quantities for the spectral steps only, NaN after the
    hand-off: its saved diagnostics go to the end)."""
    t, v = trajectory.steps.get("t"), trajectory.steps.get(key)
    whole = (t is not None and v is not None and len(v) > 0 and len(v) == len(t)
             and t[-1] >= trajectory.times[-1] - 1e-12 * max(1.0, abs(trajectory.times[-1]))
             and bool(np.isfinite(np.asarray(v, dtype=float)[-1])))
    if not whole:
        t, v = trajectory.times, trajectory.diagnostics[key]
    elif key in trajectory.diagnostics and t[0] > trajectory.times[0]:    # the step log starts after one step
        t = np.concatenate([trajectory.times[:1], t])
        v = np.concatenate([np.asarray(trajectory.diagnostics[key][:1], dtype=float), np.asarray(v, dtype=float)])
    return np.asarray(t, dtype=float), np.asarray(v, dtype=float)


def _plot_series(ax, t, v, **kw):
    """``ax.plot(t, v)`` with a marker on each point that has no finite neighbour, which a line does not draw: a
    run saved once (a checkpoint killed before its first save) had blank diagnostics panels."""
    finite = np.pad(np.isfinite(np.asarray(v, dtype=float)), 1)
    alone = finite[1:-1] & ~finite[:-2] & ~finite[2:]
    if alone.any():
        kw.update(marker="o", markersize=4, markevery=alone)
    return ax.plot(t, v, **kw)


def _spans_decades(values) -> bool:
    """Positive values over more than a factor of 10: a log axis helps; otherwise it hides the tick labels."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    return v.size > 0 and bool(np.all(v > 0)) and v.max() > 10 * v.min()


def _state_panel(state, ax, title, colorbar=False):
    """Draw one saved state on ``ax``; particles on S² go to :func:`particles_3d` when ``ax`` is 3-D.
    ``colorbar``: a density map gets its own colour bar (each snapshot has its own scale)."""
    from ._measures import ZonalDensity

    state = _total_density(state)      # species: the total density
    if isinstance(state, Density) and state.d == 3:
        density_map(state, ax=ax, title=title, colorbar=colorbar)
    elif isinstance(state, Density):
        circle_density(state, ax=ax)
        ax.set_title(title, fontsize=9)
    elif isinstance(state, ZonalDensity):
        from .sphere._zonal import gegenbauer_norms, zonal_synthesis
        t = np.linspace(-1, 1, 401)
        g = zonal_synthesis(state.coeffs, t, state.d)
        # in high d the values near the poles are rounding (e^{5t} on S^999 at L = 100: −4e55 at t = 1), which set
        # the axis: drawn only where good to 1e-3 (ZonalDensity.rounding_error), and the label says so
        scale = np.maximum(np.abs(g), np.sqrt(np.sum(state.coeffs ** 2 * gegenbauer_norms(state.lmax, state.d))))
        good = state.rounding_error(t) <= 1e-3 * scale
        ax.plot(t, np.where(good, g, np.nan))
        ax.set_xlabel("⟨x, e⟩" if good.all() else
                      f"⟨x, e⟩ (|⟨x, e⟩| ≥ {np.min(np.abs(t[~good])):.2g}: rounding, not drawn)")
        ax.set_title(title, fontsize=9)
    elif isinstance(state, Particles) and state.d == 3 and ax.name == "3d":
        particles_3d(state, ax=ax, title=title, s=2.0)
    elif isinstance(state, Particles) and state.d == 3:
        particles_map(state, ax=ax, title=title)
    else:
        # the pairs i < j of at most ~2000 tokens, each with its mass w_i w_j: tokens of zero weight (padding under
        # an attention mask) are no part of the measure, and were counted as any other
        every = max(1, state.n // 2000)
        x, w = state.positions[::every], state.weights[::every]
        i, j = np.triu_indices(len(x), 1)
        pair_mass = w[i] * w[j]
        total = pair_mass.sum()
        ax.hist((x @ x.T)[i, j], bins=50, range=(-1, 1),
                weights=pair_mass / total if total > 0 else pair_mass)
        ax.set_xlabel("⟨θ_i, θ_j⟩")
        ax.set_ylabel("pair mass w_i w_j", fontsize=8)
        ax.set_title(title, fontsize=9)


#: The ``projection`` values of :func:`result_figure`, :func:`animation` and :func:`comparison_figure`.
PROJECTIONS = ("mollweide", "3d")


def _panel_projection(state, projection):
    """The Axes projection a state's panel needs: maps on S², 3-D or Mollweide particles, else None."""
    first = state[0] if isinstance(state, tuple) else state
    if isinstance(first, Particles) and first.d == 3:
        return projection
    if isinstance(first, Density) and first.d == 3:
        return "mollweide"
    return None


def _check_projection(trajs, projection: str) -> str:
    """``projection`` validated, and "3d" refused when no run holds particles on S² (maps are Mollweide only)."""
    projection = choice("projection", projection, PROJECTIONS)
    if projection == "3d" and not any(_panel_projection(state, "3d") == "3d" for tr in trajs for state in tr.states):
        raise ValueError("`projection`='3d' draws particles on S² in 3-D, and these results hold none (densities are "
                         "drawn as Mollweide maps, S¹ and d > 3 as curves and histograms); omit it.")
    return projection


def _is_trajectory(value) -> bool:
    from ._trajectory import Trajectory

    return isinstance(value, Trajectory)


def _path_hint(value) -> str:
    return f" Read the file first: meanfield.load({str(value)!r})." if isinstance(value, (str, os.PathLike)) else ""


def _check_trajectory(trajectory) -> None:
    """Refuse, before any drawing, a ``trajectory`` that is not one (it failed on a missing attribute)."""
    if _is_trajectory(trajectory):
        return
    from ._energy import EnergyResult
    from ._ensemble_result import EnsembleResult

    hint = (" An energy result is drawn by meanfield.plot.energy_figure." if isinstance(trajectory, EnergyResult)
            else " An ensemble result is drawn by meanfield.plot.ensemble_figure."
            if isinstance(trajectory, EnsembleResult) else _path_hint(trajectory))
    raise TypeError("`trajectory` must be a meanfield.Trajectory (from meanfield.simulate or meanfield.load); "
                    f"got {type(trajectory).__name__}.{hint}")


def _check_figure_output(output, suffixes=None) -> None:
    """The checks of the command line's output files, before any drawing (matplotlib refused a missing folder or
    an unknown file type only once the whole figure had been drawn).  None and file objects are not paths."""
    if isinstance(output, (str, os.PathLike)):
        output_file("`output`", output, suffixes)


def _write_whole(output, write) -> None:
    """``write(path)`` to a temporary file beside ``output``, then renamed to it: a Ctrl-C or an error during the
    write leaves the previous figure whole (a GIF interrupted after some frames replaced it with a truncated one).
    File objects, and names without a suffix (matplotlib appends its default format's to them), are written directly.

    Parameters
    ----------
    output : str, Path or file object
    write : callable
        Writes the figure to the path (or file object) it is given; the temporary keeps ``output``'s suffix, from
        which matplotlib and Pillow take the format.
    """
    if not isinstance(output, (str, os.PathLike)) or not Path(output).suffix:
        write(output)
        return
    path = Path(output)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _figure_diagnostics(trajectory) -> tuple:
    """The diagnostics :func:`result_figure` draws: a density run's, and for a run of tokens only (no tail_fraction:
    the density's resolution), mean_alignment and mean_radius in place of the density's two panels (a causal
    Pre-LN run had max_speed alone: nothing of its clustering or its radii)."""
    if "tail_fraction" in trajectory.diagnostics:
        return _DEFAULT_DIAGNOSTICS
    return "energy", "mean_alignment", "mean_radius", "max_speed"


def result_figure(trajectory, output=None, panels: int = 4, projection: str = "mollweide"):
    """Snapshots of a trajectory (maps on S², each with its colour bar; curves on S¹; histograms of ⟨θ_i, θ_j⟩ in
    d > 3, each pair i < j with its mass w_i w_j) over one panel per diagnostic (energy, tail_fraction, min_rho, max_speed, those the run has values
    of — an anisotropic kernel's ``energy`` is NaN and gets no panel —, from t0; for a particle run, which has no
    tail_fraction or min_rho, energy, mean_alignment, mean_radius and max_speed).

    Parameters
    ----------
    trajectory : Trajectory
        From :func:`meanfield.simulate` or :func:`meanfield.load`.
    output : str or Path, optional
        Figure file (.png, .pdf, …); ending in ``.gif``, an animation of every saved state
        (:func:`animation`) instead.  None: the figure is returned, open (for a notebook).
    panels : int
        Snapshots, ≥ 1 (evenly spaced saved states, the first and the last included).
    projection : {"mollweide", "3d"}
        How particles on S² are drawn (:func:`particles_map` or :func:`particles_3d`); densities on S²
        are always Mollweide maps.

    Returns
    -------
    str, Path or matplotlib.figure.Figure
        ``output``, or the Figure when ``output`` is None.

    Raises
    ------
    TypeError
        If ``trajectory`` is not a Trajectory (an energy result, or a file name not yet loaded).
    ValueError
        Before anything is drawn: an ``output`` in a missing folder, not writable, or of a file type other
        than ``.gif`` and ``FIGURE_SUFFIXES`` (.png, .pdf, .svg, .jpg, .tif, .webp, .eps, …); a bad
        ``panels`` or ``projection``.
    """
    _check_trajectory(trajectory)
    _check_figure_output(output, FIGURE_SUFFIXES + (".gif",))
    projection = _check_projection([trajectory], projection)
    panels = nonneg_int("panels", panels, minimum=1)
    plt = _plt()
    if output is not None and str(output).lower().endswith(".gif"):
        return animation(trajectory, output, projection=projection)
    n = len(trajectory.states)
    idx = np.unique(np.linspace(0, n - 1, min(panels, n)).round().astype(int))
    keys = [k for k in _figure_diagnostics(trajectory) if k in trajectory.diagnostics and _has_values(trajectory, k)]
    cols = max(len(idx), len(keys))
    fig = plt.figure(figsize=(3.6 * cols, 6.3), constrained_layout=True)
    for j, i in enumerate(idx):
        ax = fig.add_subplot(2, cols, j + 1, projection=_panel_projection(trajectory.states[i], projection))
        _state_panel(trajectory.states[i], ax, f"t = {trajectory.times[i]:.3g}", colorbar=True)
    axes = [fig.add_subplot(2, cols, cols + j + 1) for j in range(len(keys))]
    if keys:
        diagnostics(trajectory, keys=keys, axes=axes)
    m = trajectory.model
    fig.suptitle(f"{m.scheme}, β = {m.beta:g}, {m.attention}, d = {m.d}, backend {trajectory.backend}: "
                 f"{trajectory.status.name}", fontsize=10)
    if output is None:
        return fig
    try:
        _write_whole(output, lambda path: fig.savefig(path, dpi=100))
    finally:                        # also after a Ctrl-C or an error in the write: no figure left open
        plt.close(fig)
    return output


_ANIMATION_SUFFIXES = (".gif", ".png", ".apng", ".webp", ".tif", ".tiff")   # Pillow's multi-frame writers


def animation(trajectory, output, fps: int = 4, projection: str = "mollweide"):
    """An animation of every saved state, one frame each (written by Pillow; ffmpeg is not used).

    Parameters
    ----------
    trajectory : Trajectory
        From :func:`meanfield.simulate` or :func:`meanfield.load`.
    output : str or Path
        The animation file, ending in ``.gif``, ``.png``/``.apng``, ``.webp`` or ``.tif``/``.tiff``; written
        to a temporary file beside it and renamed, so an earlier file there stays whole until the end.
    fps : int
        Frames per second, ≥ 1.
    projection : {"mollweide", "3d"}
        How particles on S² are drawn, as in :func:`result_figure`.

    Returns
    -------
    str or Path
        ``output``.

    Raises
    ------
    TypeError
        If ``trajectory`` is not a Trajectory.
    ValueError
        Before any frame is drawn: an ``output`` of another file type, in a missing or unwritable folder; a
        bad ``fps`` or ``projection``.
    """
    _check_trajectory(trajectory)
    projection = _check_projection([trajectory], projection)
    fps = nonneg_int("fps", fps, minimum=1)         # 0 divided by zero once every frame had been drawn
    suffix = Path(str(output)).suffix.lower()
    if suffix not in _ANIMATION_SUFFIXES:     # refused before any frame is drawn (matplotlib failed after them)
        raise ValueError(f"`output` of an animation must end in one of {list(_ANIMATION_SUFFIXES)} (the formats "
                         f"Pillow writes as animations; ffmpeg is not used); got {suffix or 'no extension'!r} in "
                         f"{str(output)!r}.")
    _check_figure_output(output)
    plt = _plt()
    from matplotlib.animation import FuncAnimation, PillowWriter

    fig = plt.figure(figsize=(6, 3.6) if projection == "mollweide" else (5, 5))

    def frame(i):
        fig.clear()
        ax = fig.add_subplot(projection=_panel_projection(trajectory.states[i], projection))
        _state_panel(trajectory.states[i], ax, f"{trajectory.model.scheme}, t = {trajectory.times[i]:.3g}")

    anim = FuncAnimation(fig, frame, frames=len(trajectory.states))
    try:
        _write_whole(output, lambda path: anim.save(path, writer=PillowWriter(fps=fps)))
    finally:
        plt.close(fig)
    return output


# -- comparison of several runs ---------------------------------------------------------------------

#: Diagnostics overlaid by :func:`comparison_figure`, in this order, when every trajectory has them.
COMPARISON_KEYS = ("energy", "mean_alignment", "mean_radius", "max_speed", "tail_fraction", "min_rho")
#: The ``distance`` values of :func:`comparison_distances` and :func:`comparison_figure`.
DISTANCES = ("sobolev", "mmd")


def _close(a, b):
    return np.isclose(a, b, rtol=1e-9, atol=1e-12)


def describe(trajectory) -> str:
    """A short label for a trajectory: its scheme and backend.

    Parameters
    ----------
    trajectory : Trajectory
        A run.

    Returns
    -------
    str
        ``"<scheme>, <backend>"``, e.g. ``"post-ln, spectral"`` (the default labels of
        :func:`comparison_figure`).
    """
    return f"{trajectory.model.scheme}, {trajectory.backend}"


def _default_labels(trajs):
    labels = [describe(tr) for tr in trajs]
    if len(set(labels)) < len(labels):
        labels = [f"{lab}, β = {tr.model.beta:g}" for lab, tr in zip(labels, trajs)]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} #{k + 1}" for k, lab in enumerate(labels)]
    return labels


def _check_comparison(trajectories, labels):
    from ._trajectory import Trajectory

    if isinstance(trajectories, Trajectory):
        trajectories = [trajectories]
    try:
        trajs = list(trajectories)
    except TypeError:
        raise TypeError("`trajectories` must be a sequence of meanfield.Trajectory; "
                        f"got {type(trajectories).__name__}.") from None
    if not trajs:
        raise ValueError("`trajectories` must hold at least one Trajectory; got an empty sequence.")
    bad = [k for k, tr in enumerate(trajs) if not isinstance(tr, Trajectory)]
    if bad:
        raise TypeError(f"`trajectories` must hold meanfield.Trajectory objects; trajectories[{bad[0]}] is a "
                        f"{type(trajs[bad[0]]).__name__}.")
    dims = [tr.model.d for tr in trajs]
    if len(set(dims)) != 1:
        raise ValueError(f"`trajectories` must all live in the same dimension d; got d = {dims}.")
    if labels is None:
        labels = _default_labels(trajs)
    elif isinstance(labels, str) or not hasattr(labels, "__len__") or len(labels) != len(trajs):
        got = repr(labels) if isinstance(labels, str) or not hasattr(labels, "__len__") else f"{len(labels)} labels"
        raise ValueError(f"`labels` must hold one label per trajectory ({len(trajs)}); got {got}.")
    return trajs, [str(lab) for lab in labels]


def _common_times(times):
    """The times saved by every run (to rounding)."""
    common = np.asarray(times[0], dtype=float)
    for t in times[1:]:
        common = common[np.any(_close(common[:, None], np.asarray(t)[None, :]), axis=1)]
    return common


def _common_targets(times, panels):
    """Column times: ``panels`` evenly spaced times saved by every run, else evenly spaced targets
    over the common time range (each run then shows its saved state nearest to the target)."""
    n = min(panels, min(len(t) for t in times))
    common = _common_times(times)
    if len(common) >= n:
        return common[np.unique(np.linspace(0, len(common) - 1, n).round().astype(int))]
    lo, hi = max(t[0] for t in times), min(t[-1] for t in times)
    if hi < lo:   # disjoint time ranges: span them all
        lo, hi = min(t[0] for t in times), max(t[-1] for t in times)
    return np.unique(np.linspace(lo, hi, n))     # ranges meeting at one time: one column, not n equal ones


def _few_common_times(trajs, targets) -> str | None:
    """Why the comparison of ``trajs`` at the column times ``targets`` is not at common times (None if it is)."""
    times = [np.asarray(tr.times, dtype=float) for tr in trajs]
    common = _common_times(times)
    if len(trajs) < 2 or len(common) >= 2:
        return None
    shared = "no saved time" if len(common) == 0 else f"only one saved time (t = {common[0]:g})"
    msg = (f"the runs share {shared}: each column of the comparison shows every run's saved state nearest to "
           "the column's time")
    gap = max(float(np.ptp([t[_nearest(t, target)] for t in times])) for target in targets)
    if gap > 0:
        msg += f" (states up to Δt = {gap:.3g} apart)"
    msg += (", and the distance of runs without two common saved times is taken between those states"
            + (", at a single time" if len(targets) == 1 else ""))
    lo, hi = max(t[0] for t in times), min(t[-1] for t in times)
    if _close(hi, lo):
        msg += f"; their time ranges meet only at t = {lo:g}"
    elif hi < lo:
        msg += "; their time ranges do not overlap"
    return msg + (". Save the runs at the same times (the same `save_every` and `t_final`, or the same `t_eval`) "
                  "to compare them over time.")


def _nearest(times, t):
    return int(np.argmin(np.abs(np.asarray(times) - t)))


def _measure_kind(state):
    """The kind of measure a state is for the distances: "density" (a Density, a ZonalDensity or species of them),
    "particles", or None."""
    from ._measures import ZonalDensity

    if isinstance(state, tuple) and state and all(isinstance(s, (Density, ZonalDensity)) for s in state):
        state = state[0]
    if isinstance(state, (Density, ZonalDensity)):
        return "density"
    if isinstance(state, Particles):
        return "particles"
    return None


def _band_limit(states):
    ls = [(s[0] if isinstance(s, tuple) else s).lmax for s in states if _measure_kind(s) == "density"]
    return min(ls) if ls else None


def comparison_distances(a, b, targets=None, distance: str = "sobolev"):
    """The distance between two runs over the times they share, as drawn by :func:`comparison_figure`.

    Parameters
    ----------
    a, b : Trajectory
        Runs on the same sphere whose states are Density, ZonalDensity, species (tuples of them) or Particles
        (S^{d-1} for any d: zonal runs and particle runs in d > 3 compare by the addition theorem, see
        :func:`meanfield.sobolev_distance`).
    targets : array_like, optional
        Times used when the runs share fewer than two saved times: each run's saved state nearest to
        each target is compared.  Default: 5 points over the common time range.
    distance : {"sobolev", "mmd"}
        ``"sobolev"``: ‖μ − ν‖ in H⁻¹ (:func:`meanfield.sobolev_distance`, s = 1) truncated at one band
        limit L for all times, the smallest ``lmax`` of the densities compared (it needs at least one
        density among the states).  ``"mmd"``: :func:`meanfield.mmd` with the kernel e^{β⟨x, y⟩} at the β
        of ``a``'s model (the kernel of Q = K = I: a model's own Q and K do not enter, since e^{β⟨Qx, Ky⟩} is not
        a symmetric positive kernel in general).

    Returns
    -------
    t : ndarray, shape (k,)
        The common saved times (or the targets).
    values : ndarray, shape (k,)
        The distances at those times.
    lmax : int or None
        The band limit L of the Sobolev distance (None for "mmd").

    Raises
    ------
    TypeError
        If ``a`` or ``b`` is not a Trajectory.
    ValueError
        If a state is not a measure, the runs are on different spheres or, for "sobolev", no state is a density.
    """
    from ._compare import mmd, sobolev_distance

    for name, run in (("a", a), ("b", b)):       # a state or a file name failed on a missing attribute 'times'
        if not _is_trajectory(run):
            raise TypeError(f"`{name}` must be a meanfield.Trajectory (from meanfield.simulate or meanfield.load); "
                            f"got {type(run).__name__}.{_path_hint(run)} The distance of two states is "
                            "meanfield.sobolev_distance or meanfield.mmd.")
    distance = choice("distance", distance, DISTANCES)
    ta, tb = np.asarray(a.times, dtype=float), np.asarray(b.times, dtype=float)
    pairs = [(i, int(np.flatnonzero(_close(t, tb))[0]), t) for i, t in enumerate(ta) if np.any(_close(t, tb))]
    if len(pairs) < 2:
        if targets is None:
            targets = np.linspace(max(ta[0], tb[0]), min(ta[-1], tb[-1]), 5)
        pairs = [(_nearest(ta, t), _nearest(tb, t), float(t)) for t in np.unique(np.asarray(targets, dtype=float))]
    states = [(a.states[i], b.states[j]) for i, j, _ in pairs]
    if any(_measure_kind(s) is None for pair in states for s in pair):
        raise ValueError("a distance needs Density, ZonalDensity, species or Particles states in both runs.")
    lmax = None
    if distance == "sobolev":
        lmax = _band_limit([s for pair in states for s in pair])
        if lmax is None:
            raise ValueError("distance='sobolev' needs a density among the states to fix the band limit; "
                             "use distance='mmd' to compare two particle runs.")
        values = [sobolev_distance(x, y, s=1.0, lmax=lmax) for x, y in states]
    else:
        values = [mmd(x, y, a.model.beta) for x, y in states]
    return np.array([t for _, _, t in pairs]), np.array(values), lmax


def _distance_curves(trajs, labels, targets, distance):
    """(label, t, values) for every pair of runs with a defined distance."""
    curves = []
    for p in range(len(trajs)):
        for q in range(p + 1, len(trajs)):
            kinds = {_measure_kind(trajs[p].states[0]), _measure_kind(trajs[q].states[0])}
            if None in kinds or (distance == "sobolev" and "density" not in kinds):
                continue
            t, v, lmax = comparison_distances(trajs[p], trajs[q], targets, distance)
            extra = f" (L = {lmax})" if lmax is not None else ""
            curves.append((f"{labels[p]} vs {labels[q]}{extra}", t, v))
    return curves


def _share_map_scales(columns, last_row) -> None:
    """Maps at the same time (a column) on one colour scale, shown by a colour bar under the column's last
    map: a PDE density and a particle histogram (both densities w.r.t. σ, uniform = 1) compare by eye."""
    from matplotlib.collections import QuadMesh

    for axes in columns:
        meshes = [(ax, c) for ax in axes for c in ax.collections if isinstance(c, QuadMesh)]
        if len(meshes) < 2:
            continue
        vmax = max(float(np.nanmax(c.get_array())) for _, c in meshes)
        for _, c in meshes:
            c.set_clim(0.0, vmax)
        ax, mesh = meshes[-1]
        if ax.figure is last_row:
            last_row.colorbar(mesh, ax=ax, orientation="horizontal", shrink=0.6, pad=0.03, aspect=30)


def comparison_figure(trajectories, output=None, labels=None, panels: int = 4, projection: str = "mollweide",
                      distance: str | None = None):
    """Side-by-side comparison of several runs: a spectral PDE run against particles, Post-LN against Peri-LN, ….

    One row per trajectory with ``panels`` snapshots at common times (drawn as in :func:`result_figure`:
    maps of densities, particles as scatter or histogram densities, curves on S¹; the maps of one
    column share a colour scale, shown under the column), then a last row with (i) the distance between
    the runs over the times they share (:func:`comparison_distances`; H⁻¹ for every pair of runs of which at
    least one holds densities, MMD for every pair with ``distance="mmd"``) and (ii) the
    diagnostics that every run records (:data:`COMPARISON_KEYS`: energy, mean alignment, …), one line per
    run.

    Parameters
    ----------
    trajectories : sequence of Trajectory
        The runs, all in the same dimension d.
    output : str or Path, optional
        Write the figure there, in the format of its extension (one of ``FIGURE_SUFFIXES``: ``.png``,
        ``.pdf``, ``.svg``, …).
    labels : sequence of str, optional
        One label per run; default: scheme and backend (:func:`describe`), with β or a number added
        when these coincide.
    panels : int
        Snapshots per run (at most the number of saved states of the shortest run).  The columns use
        times saved by every run when there are enough of them; otherwise evenly spaced target times
        over the common range, each run showing its saved state nearest to the target; panel titles
        always give the time of the state shown.
    projection : {"mollweide", "3d"}
        How particles on S² are drawn (:func:`particles_map` or :func:`particles_3d`).
    distance : {"sobolev", "mmd"}, optional
        The distance of the last row: H⁻¹ at a fixed band limit, or the attention-kernel MMD.  Default: "sobolev"
        when a run holds densities, else "mmd" (runs of particles only have no band limit for H⁻¹, and drew no
        distance at all).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (managed by pyplot: ``plt.close(fig)`` when done).  Each row is a subfigure; the
        distance axes has ``gid == "distance"``.

    Raises
    ------
    ValueError
        For an empty sequence, runs in different dimensions, a ``labels`` of the wrong length, a bad
        ``panels``, ``projection`` or ``distance``, a ``.gif`` output (animations take one run:
        :func:`animation`), or an ``output`` in a missing folder, not writable or of a file type other than
        ``FIGURE_SUFFIXES``.

    Warns
    -----
    MeanfieldWarning
        When the runs share fewer than two saved times (e.g. different ``save_every``, or a run that
        stopped before its first save): the columns and the distance then pair states saved at
        different times, and the message says how many times are shared and how far apart the
        states shown are.  Runs saved at the same times (same ``save_every`` and ``t_final``, or
        ``t_eval``) avoid it.
    """
    trajs, labels = _check_comparison(trajectories, labels)
    panels = nonneg_int("panels", panels, minimum=1)
    projection = _check_projection(trajs, projection)
    if distance is None:
        distance = "sobolev" if any(_measure_kind(tr.states[0]) == "density" for tr in trajs) else "mmd"
    distance = choice("distance", distance, DISTANCES)
    if output is not None and str(output).lower().endswith(".gif"):
        raise ValueError("`output` cannot be a GIF for a comparison (animations take one run); "
                         f"got output={str(output)!r}.")
    _check_figure_output(output, FIGURE_SUFFIXES)
    targets = _common_targets([tr.times for tr in trajs], panels)
    few = _few_common_times(trajs, targets)
    if few is not None:
        warn(few)
    plt = _plt()
    curves = _distance_curves(trajs, labels, targets, distance)
    keys = [k for k in COMPARISON_KEYS if all(k in tr.diagnostics and _has_values(tr, k) for tr in trajs)]
    n_bottom = min(bool(curves) + len(keys), max(len(targets), 3))
    keys = keys[: n_bottom - bool(curves)]

    width = 3.4 * max(len(targets), n_bottom)
    fig = plt.figure(figsize=(width, 2.9 * len(trajs) + 2.7 * (n_bottom > 0)), layout="constrained")
    rows = fig.subfigures(len(trajs) + (n_bottom > 0), 1, squeeze=False,
                          height_ratios=[1.1] * len(trajs) + [1.0] * (n_bottom > 0))[:, 0]
    columns = [[] for _ in targets]
    for row, tr, label in zip(rows, trajs, labels):
        row.suptitle(label + ("" if tr.success else f" ({tr.status.name})"), fontsize=10)
        for j, target in enumerate(targets):
            i = _nearest(tr.times, target)
            ax = row.add_subplot(1, len(targets), j + 1, projection=_panel_projection(tr.states[i], projection))
            _state_panel(tr.states[i], ax, f"t = {tr.times[i]:.3g}")
            columns[j].append(ax)
    _share_map_scales(columns, rows[len(trajs) - 1])
    if n_bottom:
        axes = [rows[-1].add_subplot(1, n_bottom, k + 1) for k in range(n_bottom)]
        if curves:
            ax = axes.pop(0)
            ax.set_gid("distance")
            for label, t, v in curves:
                ax.plot(t, v, marker="o", markersize=3, label=label)
            ax.set_ylim(0, 1.1 * max(max(np.max(v), 0.0) for _, _, v in curves) or 1.0)
            # the kernel of Q = K = I: a model's e^{β⟨Qx, Ky⟩} is no symmetric positive kernel in general
            ax.set_title(r"$H^{-1}$ distance" if distance == "sobolev" else
                         rf"MMD$_\beta$, kernel $e^{{\beta\langle x, y\rangle}}$, $\beta$ = {trajs[0].model.beta:g}",
                         fontsize=9)
            ax.set_xlabel("t")
            ax.legend(fontsize=7)
        for ax, k in zip(axes, keys):
            series = [_series(tr, k) for tr in trajs]
            for (t, v), label in zip(series, labels):
                _plot_series(ax, t, v, label=label)
            if _spans_decades(np.concatenate([v for _, v in series])):
                ax.set_yscale("log")
            ax.set_title(k, fontsize=9)
            ax.set_xlabel("t")
        if axes:
            axes[0].legend(fontsize=7)
    ms = [tr.model for tr in trajs]
    same = len({(m.beta, m.attention) for m in ms}) == 1
    fig.suptitle((f"β = {ms[0].beta:g}, {ms[0].attention}, " if same else "") + f"d = {ms[0].d}", fontsize=11)
    if output is not None:
        _write_whole(output, lambda path: fig.savefig(path, dpi=100))
    return fig


def _sphere_values(f, nlat=90):
    """(lon, lat, values) of a function of unit points at the centres of a regular grid, for :func:`_map_mesh`."""
    lat = (np.arange(nlat) + 0.5) * np.pi / nlat - np.pi / 2
    lon = -np.pi + 2 * np.pi * (np.arange(2 * nlat) + 0.5) / (2 * nlat)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    pts = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)
    return lon, lat, np.asarray(f(pts.reshape(-1, 3))).reshape(la.shape)


def energy_figure(result, output=None):
    """The answer of an energy problem (an :class:`~meanfield.EnergyResult`): the measure and its evidence.

    Left: the minimizing density (Mollweide map on S², curve with the nodal values on S¹), the maximizing
    particles, or the stationary state with its start.  Right: for an extremizer the first variation
    δE/δμ divided by 2E, the quantity of the optimality certificate (= 1 on the support; ≥ 1 everywhere
    at a minimizer, ≤ 1 at a maximizer); for ``task = "stationary"`` the energy along the gradient flow.

    Parameters
    ----------
    result : EnergyResult
        From ``meanfield run`` on an ``[energy]`` configuration (:func:`meanfield.load`).
    output : str or Path, optional
        Write the figure there, in the format of its extension (one of ``FIGURE_SUFFIXES``).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (managed by pyplot: ``plt.close(fig)`` when done).

    Raises
    ------
    TypeError
        If ``result`` is not an EnergyResult.
    ValueError
        Before anything is drawn: an ``output`` in a missing folder, not writable, or of a file type other
        than ``FIGURE_SUFFIXES`` (.png, .pdf, .svg, .jpg, .tif, .webp, .eps, …).
    """
    from ._energy import EnergyResult, first_variation

    if not isinstance(result, EnergyResult):
        hint = " A Trajectory is drawn by meanfield.plot.result_figure." if _is_trajectory(result) else \
            _path_hint(result)
        raise TypeError(f"`result` must be a meanfield.EnergyResult; got {type(result).__name__}.{hint}")
    _check_figure_output(output, FIGURE_SUFFIXES)
    plt = _plt()
    d, mu, level = result.d, result.measure, 2 * result.value
    proj = "mollweide" if d == 3 else None
    fig = plt.figure(figsize=(10, 4.0), layout="constrained")
    ax0 = fig.add_subplot(1, 2, 1, projection=proj)
    ax1 = fig.add_subplot(1, 2, 2, projection=proj if result.task != "stationary" else None)
    phi = lambda x: first_variation(mu, result.beta, result.D, x) / level  # noqa: E731
    if result.task == "minimize" and d == 3:
        lon, lat, vals = _sphere_values(mu.evaluate)
        mesh = _map_mesh(ax0, lon, lat, vals, cmap="magma", vmin=0)
        fig.colorbar(mesh, ax=ax0, orientation="horizontal", shrink=0.6, pad=0.05)
        ax0.set_title("minimizing density ρ (uniform = 1)", fontsize=9)
    elif result.task == "minimize":
        circle_density(mu, ax=ax0, label="ρ (interpolant)")
        n = len(mu.nodal_values)
        ax0.plot(2 * np.pi * np.arange(n) / n, mu.nodal_values, ".", markersize=3, label="nodal values")
        ax0.legend(fontsize=7)
        ax0.set_title("minimizing density on S¹", fontsize=9)
    else:
        shown = [(mu, "k", "stationary state" if result.task == "stationary" else result.solution.kind)]
        if result.start is not None:
            shown.insert(0, (result.start, "0.7", "start"))
        for p, color, label in shown:
            if d == 3:
                particles_map(p, ax=ax0, s=60.0, color=color)
            elif d == 2:
                ang = np.mod(np.arctan2(p.positions[:, 1], p.positions[:, 0]), 2 * np.pi)
                ax0.vlines(ang, 0, p.weights, colors=color, label=label)
                ax0.plot(ang, p.weights, "o", color=color, markersize=4)
            else:
                ax0.bar(np.arange(p.n), np.sort(p.weights)[::-1], color=color, label=label)
        if d == 2:
            ax0.set_xlim(0, 2 * np.pi)
        if d != 3:      # (in d > 3 the bars had no axis labels: which points, what height)
            ax0.set_xlabel("φ" if d == 2 else "point, by decreasing weight")
            ax0.set_ylabel("weight")
            ax0.legend(fontsize=7)
        ax0.set_title(f"{shown[-1][2]}: {mu.n} point(s)", fontsize=9)
    if result.task == "stationary":
        tr = result.solution.trajectory
        ax1.plot(tr.times, tr.diagnostics["energy"], marker="o", markersize=3)
        ax1.set_xlabel("t")
        ax1.set_title(f"E along the {result.parameters.get('direction', 'ascent')}; "
                      f"max |v| = {result.solution.max_speed:.2g}", fontsize=9)
    elif d == 3:
        lon, lat, vals = _sphere_values(phi)
        mesh = _map_mesh(ax1, lon, lat, vals, cmap="viridis")
        fig.colorbar(mesh, ax=ax1, orientation="horizontal", shrink=0.6, pad=0.05)
        ax1.set_title("δE/δμ / 2E (= 1 on the support)", fontsize=9)
    elif d == 2:
        a = np.linspace(0, 2 * np.pi, 721)
        ax1.plot(a, phi(np.stack([np.cos(a), np.sin(a)], -1)))
        ax1.axhline(1.0, color="0.5", lw=0.8, ls="--")
        ax1.set_xlabel("φ")
        ax1.set_title("δE/δμ / 2E (= 1 on the support)", fontsize=9)
    else:
        vals = phi(mu.positions)
        ax1.plot(vals, "o")
        ax1.set_xlabel("support point")
        ax1.set_title("δE/δμ / 2E on the support", fontsize=9)
    for ax in (ax0, ax1):
        if ax.name == "mollweide":
            ax.set_xticklabels([])
            ax.set_yticklabels([])
            ax.grid(alpha=0.3)
    D = result.D
    dtxt = (f"diag({', '.join(f'{x:g}' for x in np.diag(D))})" if np.count_nonzero(D - np.diag(np.diag(D))) == 0
            else np.array2string(D, precision=3))
    fig.suptitle(f"{result.task} $E_{{\\beta,D}}$ on $S^{{{d - 1}}}$: β = {result.beta:g}, D = {dtxt}, "
                 f"E = {result.value:.10g}", fontsize=10)
    if output is not None:
        _write_whole(output, lambda path: fig.savefig(path, dpi=100))
    return fig


#: components of an array observable :func:`ensemble_figure` draws (the first ones; its title says so)
_ENSEMBLE_COMPONENTS = 8
#: replicas drawn as thin lines behind the mean of a scalar observable (the first ones)
_ENSEMBLE_REPLICA_LINES = 50


def ensemble_figure(result, output=None):
    """The mean of an ensemble's observable with its confidence interval over time, and the replicas counted.

    Left: the mean (a line per component of an array observable, the first eight) with the band from
    ``ci_low`` to ``ci_high``, and for a scalar observable the first 50 replicas as thin grey lines.  Right: the
    number of replicas counted at each time (``count``: those that reached it with a finite value).

    Parameters
    ----------
    result : EnsembleResult
        From :func:`meanfield.ensemble`, or :func:`meanfield.load` of its file.
    output : str or Path, optional
        Write the figure there, in the format of its extension (one of ``FIGURE_SUFFIXES``).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (managed by pyplot: ``plt.close(fig)`` when done).

    Raises
    ------
    TypeError
        If ``result`` is not an EnsembleResult.
    ValueError
        Before anything is drawn: an ``output`` in a missing folder, not writable, or of a file type other
        than ``FIGURE_SUFFIXES``.
    """
    from ._ensemble_result import EnsembleResult

    if not isinstance(result, EnsembleResult):
        hint = " A Trajectory is drawn by meanfield.plot.result_figure." if _is_trajectory(result) else \
            _path_hint(result)
        raise TypeError(f"`result` must be a meanfield.EnsembleResult; got {type(result).__name__}.{hint}")
    _check_figure_output(output, FIGURE_SUFFIXES)
    plt = _plt()
    t, R = np.asarray(result.times, float), result.replicas
    mean, low, high = (np.asarray(a, float).reshape(t.size, -1) for a in (result.mean, result.ci_low, result.ci_high))
    shown = min(mean.shape[1], _ENSEMBLE_COMPONENTS)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4.0), layout="constrained", width_ratios=(2, 1))
    if np.ndim(result.mean) == 1:
        for v in np.asarray(result.values, float)[:_ENSEMBLE_REPLICA_LINES]:
            ax0.plot(t, v, color="0.75", lw=0.5, zorder=1)
    for j in range(shown):
        label = None if np.ndim(result.mean) == 1 else \
            f"[{', '.join(str(int(i)) for i in np.unravel_index(j, np.shape(result.mean)[1:]))}]"
        line, = ax0.plot(t, mean[:, j], marker="o" if t.size <= 30 else None, markersize=3, label=label, zorder=3)
        ax0.fill_between(t, low[:, j], high[:, j], color=line.get_color(), alpha=0.25, lw=0, zorder=2)
    if shown > 1:
        ax0.legend(fontsize=7)
    name = result.observable or "observable"
    more = f" (components 1–{shown} of {mean.shape[1]})" if shown < mean.shape[1] else ""
    ax0.set_title(f"{name}{more}: mean and {100 * result.confidence:.3g} % {result.interval} interval"
                  + (f"; {min(R, _ENSEMBLE_REPLICA_LINES)} replicas in grey" if np.ndim(result.mean) == 1 else ""),
                  fontsize=9)
    ax0.set_xlabel("t")
    ax1.step(t, np.asarray(result.count), where="mid")
    ax1.set_ylim(0, R * 1.05)
    ax1.set_xlabel("t")
    ax1.set_title(f"replicas counted (of R = {R})", fontsize=9)
    m = result.model
    fig.suptitle(f"ensemble of {R} replicas" + (f": {m.scheme}, β = {m.beta:g}, d = {m.d}" if m is not None else "")
                 + (f", backend {result.backend}" if result.backend else "")
                 + (f", n = {result.sampler}" if isinstance(result.sampler, int) else
                    f", sampler {result.sampler}" if result.sampler else ""), fontsize=10)
    if output is not None:
        _write_whole(output, lambda path: fig.savefig(path, dpi=100))
    return fig
