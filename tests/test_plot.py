"""Figures: particles in 3-D, comparisons of runs (spectral PDE against particles), the plot command."""
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from mpl_toolkits.mplot3d import Axes3D  # noqa: E402
from mpl_toolkits.mplot3d.art3d import Path3DCollection  # noqa: E402

import meanfield as mf  # noqa: E402
from meanfield import plot  # noqa: E402
from meanfield._compare import mmd, sobolev_distance  # noqa: E402
from meanfield.cli import main  # noqa: E402
from test_cli import SMALL  # noqa: E402

LMAX = 12


@pytest.fixture(scope="module")
def runs():
    """The same model (β = 3, Post-LN) from the same initial measure: spectral PDE and direct particles."""
    model = mf.Model(3.0)
    rho0 = mf.Density.random(LMAX, seed=4, amplitude=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)   # lmax below the kernel band limit: fine here
        pde = mf.simulate(model, rho0, 0.3, save_every=0.1)
    p0 = mf.sample_density(rho0, 200, seed=1)
    particles = mf.simulate(model, p0, 0.3, save_every=0.1, backend="particles")
    coarse = mf.simulate(model, p0, 0.3, save_every=0.15, backend="particles")
    return pde, particles, coarse


def _titles(fig, row):
    return [ax.get_title() for ax in fig.subfigs[row].axes]


# -- particles_3d ---------------------------------------------------------------------------------

def test_particles_3d_draws_every_point_on_the_sphere():
    p = mf.Particles.uniform(57, seed=3)
    ax = plot.particles_3d(p, title="tokens")
    assert isinstance(ax, Axes3D) and ax.get_title() == "tokens"
    (sc,) = [c for c in ax.collections if isinstance(c, Path3DCollection)]
    xyz = np.stack([np.asarray(a) for a in sc._offsets3d], axis=1)
    assert xyz.shape == (57, 3)
    np.testing.assert_array_equal(xyz, p.positions)
    assert ax.get_xlim() == ax.get_ylim() == ax.get_zlim() == (-1.0, 1.0)
    np.testing.assert_allclose(ax.get_box_aspect(), ax.get_box_aspect()[0])
    np.testing.assert_allclose(sc.get_sizes(), 4.0)          # equal weights: every marker has area s
    plt.close(ax.figure)


def test_particles_3d_shows_weights_by_marker_area():
    p = mf.Particles.uniform(4, seed=0)
    w = np.array([0.1, 0.2, 0.3, 0.4])
    ax = plot.particles_3d(mf.Particles(p.positions, w), s=2.0, sphere=False)
    (sc,) = ax.collections
    np.testing.assert_allclose(sc.get_sizes(), 2.0 * 4 * w)
    plt.close(ax.figure)


def test_particles_3d_rejects_other_dimensions_and_flat_axes():
    with pytest.raises(ValueError, match="`particles`.*d = 2"):
        plot.particles_3d(mf.Particles.uniform(10, d=2))
    with pytest.raises(TypeError, match="`particles`"):
        plot.particles_3d(np.eye(3))
    fig = plt.figure()
    with pytest.raises(ValueError, match="`ax`"):
        plot.particles_3d(mf.Particles.uniform(10), ax=fig.add_subplot())
    plt.close(fig)


# -- comparison_figure ------------------------------------------------------------------------------

def test_pde_vs_particles_figure_and_its_distance(runs, tmp_path):
    pde, particles, _ = runs
    out = tmp_path / "cmp.png"
    fig = plot.comparison_figure([pde, particles], out, panels=3)
    assert out.stat().st_size > 10_000
    # 2 rows of 3 snapshots, then the distance and the first shared diagnostics, energy and mean_alignment
    assert len(fig.axes) == 2 * 3 + 3
    assert _titles(fig, 0) == _titles(fig, 1) == ["t = 0", "t = 0.2", "t = 0.3"]
    assert [ax.name for ax in fig.subfigs[1].axes] == ["mollweide"] * 3
    assert [ax.get_title() for ax in fig.subfigs[2].axes] == [r"$H^{-1}$ distance", "energy", "mean_alignment"]
    assert [line.get_label() for line in fig.subfigs[2].axes[1].get_lines()] == ["post-ln, spectral",
                                                                                  "post-ln, particles"]
    (dist,) = [ax for ax in fig.axes if ax.get_gid() == "distance"]
    (line,) = dist.get_lines()
    t, v = line.get_xdata(), line.get_ydata()
    np.testing.assert_array_equal(t, pde.times)              # every saved time is common to both runs
    assert np.all(np.isfinite(v)) and np.all(v > 0)
    k = 2
    assert v[k] == pytest.approx(sobolev_distance(pde.states[k], particles.states[k], s=1.0, lmax=LMAX), rel=1e-12)
    plt.close(fig)


def test_mmd_distance_and_3d_particle_panels(runs):
    pde, particles, _ = runs
    fig = plot.comparison_figure([pde, particles], labels=["PDE", "N = 200"], panels=2, projection="3d",
                                 distance="mmd")
    assert [ax.name for ax in fig.subfigs[1].axes] == ["3d", "3d"]
    assert [ax.name for ax in fig.subfigs[0].axes] == ["mollweide", "mollweide"]
    (dist,) = [ax for ax in fig.axes if ax.get_gid() == "distance"]
    (line,) = dist.get_lines()
    assert line.get_label() == "PDE vs N = 200"
    assert line.get_ydata()[-1] == pytest.approx(mmd(pde.final, particles.final, 3.0), rel=1e-12)
    plt.close(fig)


def test_different_save_times_use_the_nearest_saved_states(runs):
    pde, _, coarse = runs                                    # saved every 0.1 and every 0.15
    fig = plot.comparison_figure([pde, coarse], panels=3)
    assert _titles(fig, 1) == ["t = 0", "t = 0.15", "t = 0.3"]
    middle = float(_titles(fig, 0)[1].removeprefix("t = "))
    assert middle in (0.1, 0.2)                              # the PDE's saved state nearest to 0.15
    (dist,) = [ax for ax in fig.axes if ax.get_gid() == "distance"]
    np.testing.assert_allclose(dist.get_lines()[0].get_xdata(), [0.0, 0.3])   # the two common times
    plt.close(fig)


def test_runs_without_two_common_saved_times_are_compared_with_a_warning(runs):
    pde, particles, coarse = runs                            # pde: 0, 0.1, 0.2, 0.3
    with warnings.catch_warnings():                          # 0 and 0.3 are common to pde and coarse: no warning
        warnings.simplefilter("error", mf.MeanfieldWarning)
        plt.close(plot.comparison_figure([pde, coarse], panels=3))
    # saved at other times and stopped earlier: only t = 0 is common
    other = mf.simulate(pde.model, particles.states[0], 0.25, save_every=0.125, backend="particles")
    match = r"share only one saved time \(t = 0\).*Δt = 0.05 .*save_every"
    with pytest.warns(mf.MeanfieldWarning, match=match) as rec:
        fig = plot.comparison_figure([pde, other], panels=3)
    assert len(rec) == 1
    assert _titles(fig, 1) == ["t = 0", "t = 0.125", "t = 0.25"]
    plt.close(fig)
    # a continuation from the end of the run: the time ranges meet at t = 0.3 only; one column, not three equal ones
    later = mf.simulate(pde.model, particles.final, 0.5, save_every=0.1, t0=0.3, backend="particles")
    with pytest.warns(mf.MeanfieldWarning, match=r"t = 0\.3\).*a single time; their time ranges meet only at t = 0\.3"):
        fig = plot.comparison_figure([pde, later], panels=3)
    assert _titles(fig, 0) == _titles(fig, 1) == ["t = 0.3"]
    (dist,) = [ax for ax in fig.axes if ax.get_gid() == "distance"]
    np.testing.assert_allclose(dist.get_lines()[0].get_xdata(), [0.3])
    plt.close(fig)
    with warnings.catch_warnings():                          # one run alone has nothing to share
        warnings.simplefilter("error", mf.MeanfieldWarning)
        plt.close(plot.comparison_figure([later], panels=3))


def test_comparison_figure_validates_its_inputs(runs, tmp_path):
    pde, particles, _ = runs
    circle = mf.simulate(mf.Model(3.0, d=2), mf.Particles.uniform(20, d=2), 0.1, backend="particles")
    with pytest.raises(ValueError, match="`trajectories`.*empty"):
        plot.comparison_figure([])
    with pytest.raises(TypeError, match=r"`trajectories`.*trajectories\[1\]"):
        plot.comparison_figure([pde, pde.final])
    with pytest.raises(ValueError, match="same dimension"):
        plot.comparison_figure([pde, circle])
    with pytest.raises(ValueError, match="`labels`.*2"):
        plot.comparison_figure([pde, particles], labels=["only one"])
    with pytest.raises(ValueError, match="`panels`"):
        plot.comparison_figure([pde, particles], panels=0)
    with pytest.raises(ValueError, match="`projection`"):
        plot.comparison_figure([pde, particles], projection="orthographic")
    with pytest.raises(ValueError, match="`distance`"):
        plot.comparison_figure([pde, particles], distance="wasserstein")
    with pytest.raises(ValueError, match="`output`"):
        plot.comparison_figure([pde, particles], tmp_path / "x.gif")
    assert plt.get_fignums() == []                           # nothing drawn before the checks pass


def test_default_labels_are_unique(runs):
    pde, particles, coarse = runs
    assert plot._default_labels([pde, particles]) == ["post-ln, spectral", "post-ln, particles"]
    assert plot._default_labels([particles, coarse]) == ["post-ln, particles, β = 3 #1",
                                                         "post-ln, particles, β = 3 #2"]


def test_result_figure_draws_particles_in_3d(runs, tmp_path):
    _, particles, _ = runs
    assert plot.result_figure(particles, tmp_path / "p.png", panels=2, projection="3d") == tmp_path / "p.png"
    assert (tmp_path / "p.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="`projection`"):
        plot.result_figure(particles, tmp_path / "q.png", projection="globe")


# -- the plot command -------------------------------------------------------------------------------

PARTICLES = """
[model]
beta = 3.0
[initial]
kind = "particles"
n = 200
seed = 4
[run]
backend = "particles"
t_final = 0.4
save_every = 0.2
"""


def test_plot_command_compares_several_results(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(SMALL.format(scheme="post-ln", extra=""))
    (tmp_path / "p.toml").write_text(PARTICLES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        for name in ("s", "p"):
            assert main(["run", str(tmp_path / f"{name}.toml"), "--output", str(tmp_path / f"{name}.h5"),
                         "--quiet"]) == 0
    out = tmp_path / "cmp.png"
    assert main(["plot", str(tmp_path / "s.h5"), str(tmp_path / "p.h5"), "--output", str(out),
                 "--projection", "3d"]) == 0
    assert out.stat().st_size > 10_000 and "figure written" in capsys.readouterr().out
    assert main(["plot", str(tmp_path / "p.h5"), "--output", str(tmp_path / "one.png"), "--projection", "3d"]) == 0
    assert (tmp_path / "one.png").stat().st_size > 10_000
    assert main(["plot", str(tmp_path / "s.h5"), str(tmp_path / "p.h5"), "--output", str(tmp_path / "x.gif")]) == 2
    assert "--output" in capsys.readouterr().err            # refused before the results are read
    assert plt.get_fignums() == []


def test_many_particles_are_drawn_as_a_histogram_density_like_a_pde_map():
    # a density sampled by 10⁵ tokens: the histogram map is a density w.r.t. the normalized measure (its
    # mean over the equal-area cells is exactly 1) and it matches the density at the cell centres
    rho = mf.Density.from_function(lambda x: 1 + 0.8 * x[..., 2], 8)
    p = mf.sample_density(rho, 100_000, seed=1)
    ax = plot.particles_map(p)
    mesh = ax.collections[-1]
    lon, lat = mesh.get_coordinates()[0, :, 0], mesh.get_coordinates()[:, 0, 1]
    nb = (len(lon) - 1) // 2                   # the rows are strips of the nb rings of cells (they follow the map)
    vals = np.asarray(mesh.get_array()).reshape(len(lat) - 1, 2 * nb)
    area = np.diff(np.sin(lat))[:, None] * np.diff(lon)[None, :] / (4 * np.pi)
    assert np.sum(area * vals) == pytest.approx(1.0, rel=1e-12)
    z_edges = np.linspace(-1, 1, nb + 1)
    ring = np.searchsorted(z_edges, np.sin(0.5 * (lat[1:] + lat[:-1]))) - 1
    by_ring = vals.mean(axis=1)
    assert np.max(np.abs(by_ring - (1 + 0.8 * (z_edges[ring] + 1 / nb)))) < 0.05  # sampling error ≈ 0.02
    assert np.all(np.diff(vals, axis=0)[np.diff(ring) == 0] == 0)                # a cell's strips share its value
    plt.close(ax.figure)
    small = plot.particles_map(mf.Particles.uniform(500, seed=0))          # few tokens: a scatter
    assert len(small.collections[-1].get_offsets()) == 500
    plt.close(small.figure)
    with pytest.raises(ValueError, match="`style`"):
        plot.particles_map(p, style="hexbin")


def _blank_pixels_in_map(ax, rim=3.0):
    """Pixels of the axes background colour inside the Mollweide ellipse (less a rim of ``rim`` pixels, where
    the boundary line and anti-aliasing are), after drawing the figure with Agg."""
    from matplotlib.colors import to_rgb
    fig = ax.figure
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    x0, y0, x1, y1 = ax.get_window_extent().extents
    h, w = img.shape[:2]
    py, px = np.mgrid[h - 0.5:0:-1, 0.5:w]                  # pixel centres, y up as in display coordinates
    inside = (((px - (x0 + x1) / 2) / ((x1 - x0) / 2 - rim)) ** 2
              + ((py - (y0 + y1) / 2) / ((y1 - y0) / 2 - rim)) ** 2) < 1
    background = np.round(255 * np.array(to_rgb(ax.get_facecolor()))).astype(int)
    return int(np.count_nonzero(np.all(img[inside] == background, axis=-1)))


@pytest.mark.parametrize("n", [300, 5000, 100_000])
def test_histogram_maps_fill_the_map_up_to_the_poles(n):
    """The polar cells were triangles meeting at the pole (pcolormesh joins corners straight, meridians curve):
    blank wedges along the boundary read as "no tokens near the poles" (2836 blank pixels at 300 tokens)."""
    ax = plt.figure().add_subplot(projection="mollweide")
    plot.particles_map(mf.Particles.uniform(n, seed=0), ax=ax, style="histogram")
    assert _blank_pixels_in_map(ax) == 0
    plt.close(ax.figure)


def test_density_maps_fill_the_map_at_a_high_resolution():
    """The grid's last column ended 1° short of λ = π, and its 2° polar rows left chords: a blank sliver on
    the right-hand boundary at print resolution (3376 pixels at 4000 × 2000)."""
    ax = plt.figure(figsize=(20, 10), dpi=200).add_subplot(projection="mollweide")
    plot.density_map(mf.Density.random(8, seed=0), ax=ax, colorbar=False)
    assert _blank_pixels_in_map(ax) == 0
    plt.close(ax.figure)


def test_maps_of_one_time_share_a_colour_scale():
    from matplotlib.collections import QuadMesh
    rho = mf.Density.from_function(lambda x: np.exp(0.8 * x[..., 2] + 0.3 * x[..., 0]), 20, normalize=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        a = mf.simulate(mf.Model(3.0), rho, 0.4, save_every=0.2)
        b = mf.simulate(mf.Model(3.0, scheme="peri-ln"), rho, 0.4, save_every=0.2)
    assert a.success and b.success
    fig = plot.comparison_figure([a, b], panels=3)
    maps = [[c for ax in fig.subfigs[r].axes if ax.name == "mollweide" for c in ax.collections
             if isinstance(c, QuadMesh)] for r in (0, 1)]
    for top, bottom in zip(*maps):
        vmax = max(np.max(top.get_array()), np.max(bottom.get_array()))
        assert top.get_clim() == bottom.get_clim() == (0.0, pytest.approx(vmax, rel=1e-12))
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.subfigs[1].axes) == 3
    plt.close(fig)


def test_diagnostic_series_of_a_hybrid_run_reach_its_end():
    # the step log of a hybrid run is NaN for spectral quantities after the hand-off: use the saved diagnostics
    from meanfield.plot import _series

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        tr = mf.simulate(mf.Model(4.0, d=2), mf.Density.random(16, d=2, seed=1), 3.0, backend="hybrid",
                         save_every=1.0)
    assert tr.diagnostics["phase"][-1] == 1
    t, v = _series(tr, "energy")
    assert t[-1] == pytest.approx(3.0) and np.isfinite(v[-1])


def test_result_figure_shows_every_diagnostic_from_t0_with_colour_bars(tmp_path, monkeypatch):
    from meanfield import plot
    tr = mf.simulate(mf.Model(2.0), mf.Density.random(12, seed=1, amplitude=0.5), 0.3)     # two saved states
    t, v = plot._series(tr, "energy")
    assert t[0] == 0.0 and v[0] == tr.diagnostics["energy"][0] and len(t) == len(tr.steps["t"]) + 1
    figures = []
    monkeypatch.setattr(plot._plt(), "close", lambda fig=None: figures.append(fig))
    plot.result_figure(tr, tmp_path / "r.png")
    titles = {ax.get_title() for ax in figures[0].axes}
    assert {"energy", "tail_fraction", "min_rho", "max_speed"} <= titles     # not capped at the 2 snapshots
    assert sum(ax.get_label() == "<colorbar>" for ax in figures[0].axes) == 2   # one per density map


def test_3d_projection_without_particles_on_s2_is_refused(runs, tmp_path):
    """--projection 3d applies to particles on S²; on density results it was silently ignored."""
    pde, particles, _ = runs
    for call in (lambda: plot.result_figure(pde, tmp_path / "a.png", projection="3d"),
                 lambda: plot.animation(pde, tmp_path / "a.gif", projection="3d"),
                 lambda: plot.comparison_figure([pde, pde], tmp_path / "b.png", projection="3d")):
        with pytest.raises(ValueError, match="`projection`='3d' draws particles on S²"):
            call()
    plt.close(plot.comparison_figure([pde, particles], tmp_path / "c.png", projection="3d"))   # one run has them


def test_figure_arguments_are_checked_before_drawing(tmp_path):
    # fps=0 divided by zero after every frame was drawn; panels=-1 failed inside numpy; a typo in keys was a
    # KeyError; labels=5 a TypeError
    tr = mf.simulate(mf.Model(1.0), mf.Particles.uniform(20, seed=0), 0.2, backend="particles", save_every=0.1)
    with pytest.raises(ValueError, match="`fps`"):
        mf.plot.animation(tr, tmp_path / "a.gif", fps=0)
    with pytest.raises(ValueError, match=r"must end in one of \['\.gif'.*'\.mp4'"):   # was "unknown file extension"
        mf.plot.animation(tr, tmp_path / "a.mp4")
    assert not (tmp_path / "a.mp4").exists()
    with pytest.raises(ValueError, match="`panels`"):
        mf.plot.result_figure(tr, tmp_path / "r.png", panels=-1)
    with pytest.raises(ValueError, match="`keys` must name diagnostics .*energi"):
        mf.plot.diagnostics(tr, keys=("energi",))
    with pytest.raises(ValueError, match="`labels` must hold one label per trajectory"):
        mf.plot.comparison_figure([tr, tr], tmp_path / "c.png", labels=5)
    assert not list(tmp_path.iterdir())


def _no_drawing(*_):
    raise AssertionError("drawing started before the arguments were checked")


@pytest.mark.parametrize("call, error, match", [
    (lambda tr, er, tmp: plot.result_figure(er, tmp / "a.png"), TypeError,
     r"`trajectory` must be a meanfield\.Trajectory .*got EnergyResult\. .*energy_figure"),
    (lambda tr, er, tmp: plot.result_figure("file.h5", tmp / "a.png"), TypeError,
     r"`trajectory` must be a meanfield\.Trajectory .*got str\. Read the file first: meanfield\.load\('file\.h5'\)"),
    (lambda tr, er, tmp: plot.diagnostics(er), TypeError, r"`trajectory` must be a meanfield\.Trajectory"),
    (lambda tr, er, tmp: plot.animation(er, tmp / "a.gif"), TypeError, r"`trajectory` must be a meanfield\.Trajectory"),
    (lambda tr, er, tmp: plot.energy_figure(tr, tmp / "a.png"), TypeError,
     r"`result` must be a meanfield\.EnergyResult; got Trajectory\. .*result_figure"),
    (lambda tr, er, tmp: plot.result_figure(tr, tmp / "nodir" / "a.png"), ValueError,
     r"`output` '.*nodir/a\.png': the folder '.*nodir' does not exist"),
    (lambda tr, er, tmp: plot.result_figure(tr, tmp / "a.xyz"), ValueError,
     r"`output` '.*a\.xyz': the file type must be one of \.png, \.pdf, .*\.gif"),
    (lambda tr, er, tmp: plot.animation(tr, tmp / "nodir" / "a.gif"), ValueError, r"the folder '.*nodir' does not exist"),
    (lambda tr, er, tmp: plot.comparison_figure([tr, tr], tmp / "nodir" / "c.png"), ValueError,
     r"`output` .*the folder '.*nodir' does not exist"),
    (lambda tr, er, tmp: plot.comparison_figure([tr, tr], tmp / "c.xyz"), ValueError, "the file type must be one of"),
    (lambda tr, er, tmp: plot.energy_figure(er, tmp / "e.xyz"), ValueError, "the file type must be one of"),
])
def test_plot_functions_check_result_and_output_before_drawing(call, error, match, tmp_path, monkeypatch):
    """A wrong object failed on a missing attribute ("no attribute 'states'"); a missing folder or an unknown
    file type only once the whole figure had been drawn (FileNotFoundError, matplotlib's format error).  The
    output checks are the command line's."""
    tr = mf.simulate(mf.Model(1.0), mf.Particles.uniform(20, seed=0), 0.2, backend="particles", save_every=0.1)
    energy = object.__new__(mf.EnergyResult)
    monkeypatch.setattr(plot, "_plt", _no_drawing)
    with pytest.raises(error, match=match):
        call(tr, energy, tmp_path)
    assert not list(tmp_path.iterdir())


def _drawn_markers(ax):
    """Data points of ``ax``'s lines that are drawn as markers."""
    count = 0
    for line in ax.lines:
        if line.get_marker() not in (None, "None", "", " "):
            every = line.get_markevery()
            count += len(line.get_xdata()) if every is None else int(np.count_nonzero(every))
    return count


def test_diagnostics_of_a_single_saved_state_are_drawn_as_markers(runs):
    """A run saved once (a checkpoint killed before its first save) had blank diagnostics panels: a line through
    one point draws nothing.  Longer series stay plain lines, an isolated value between NaNs gets its marker."""
    import dataclasses
    pde = runs[0]
    one = dataclasses.replace(pde, times=pde.times[:1], states=pde.states[:1], steps={},
                              diagnostics={k: v[:1] for k, v in pde.diagnostics.items()})
    axes = plot.diagnostics(one)
    assert [_drawn_markers(ax) for ax in axes] == [1] * len(axes)
    assert [_drawn_markers(ax) for ax in plot.diagnostics(pde)] == [0] * len(axes)
    gap = dataclasses.replace(pde, steps={}, diagnostics={"energy": np.array([1.0, 2.0, np.nan, 3.0])})
    assert _drawn_markers(plot.diagnostics(gap, keys="energy")) == 1
    with pytest.warns(mf.MeanfieldWarning, match="only one saved time"):
        fig = plot.comparison_figure([one, one], labels=["a", "b"])
    overlaid = [_drawn_markers(ax) for ax in fig.subfigs[-1].axes if ax.get_gid() != "distance"]
    assert overlaid and overlaid == [2] * len(overlaid)            # one marker per run
    plt.close("all")


def test_result_figure_without_output_returns_the_open_figure(runs):
    # for notebooks, as comparison_figure: output=None was a TypeError
    fig = plot.result_figure(runs[0])
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) >= 4
    plt.close(fig)


def test_animations_in_pillows_other_formats_are_written(tmp_path):
    from PIL import Image
    tr = mf.simulate(mf.Model(1.0), mf.Particles.uniform(20, seed=0), 0.2, backend="particles", save_every=0.1)
    mf.plot.animation(tr, tmp_path / "a.webp")
    assert Image.open(tmp_path / "a.webp").n_frames == len(tr.times)


def test_density_map_draws_the_total_density_of_species_and_names_what_it_refuses():
    rho = mf.Density.random(8, seed=1, amplitude=0.3)
    half = rho.with_coeffs(rho.coeffs / 2)
    species = (mf.Density(half.coeffs, 8, 3, 1.0 * mf.Density.uniform(8).coeffs),
               mf.Density(half.coeffs, 8, 3, 2.0 * mf.Density.uniform(8).coeffs))
    whole, parts = plot.density_map(rho), plot.density_map(species)
    np.testing.assert_allclose(parts.get_array(), whole.get_array(), rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match=r"got a Density with d=2\. For d = 2 use meanfield\.plot\.circle_density"):
        plot.density_map(mf.Density.uniform(8, d=2))
    with pytest.raises(ValueError, match=r"got Particles\. For Particles use meanfield\.plot\.particles_map"):
        plot.density_map(mf.Particles.uniform(5))
    plt.close("all")


def test_diagnostics_default_keys_fit_every_kind_of_run(runs):
    """The default panels were the spectral ones (tail_fraction, min_rho) for every run: a particle run raised
    ValueError on diagnostics(traj) with no arguments.  The default is now what the run records."""
    pde, particles, _ = runs
    assert [ax.get_title() for ax in plot.diagnostics(pde)] == ["energy", "tail_fraction", "min_rho", "max_speed"]
    assert [ax.get_title() for ax in plot.diagnostics(particles)] == ["energy", "max_speed"]
    with pytest.raises(ValueError, match="`keys` must name diagnostics .*min_rho"):
        plot.diagnostics(particles, keys=("energy", "min_rho"))      # asked for explicitly: still an error
    plt.close("all")


def test_circle_density_names_the_kind_it_needs():
    """Particles raised AttributeError ('Particles' object has no attribute 'evaluate'); species were refused
    with AttributeError too.  A Density, a ZonalDensity or species on S¹ are drawn."""
    with pytest.raises(TypeError, match=r"`density` must be a Density on S¹ \(d = 2\); got Particles"):
        plot.circle_density(mf.Particles.uniform(10, d=2))
    with pytest.raises(ValueError, match=r"got d=3\. For d = 3 use meanfield\.plot\.density_map"):
        plot.circle_density(mf.Density.uniform(4))
    half = mf.Density.uniform(4, d=2).with_coeffs(0.5 * mf.Density.uniform(4, d=2).coeffs)
    for density in (mf.Density.uniform(4, d=2), mf.ZonalDensity.uniform(4, d=2), (half, half)):
        ax = plot.circle_density(density)
        np.testing.assert_allclose(ax.lines[0].get_ydata(), 1.0, atol=1e-12)
    plt.close("all")


def test_comparison_distances_refuses_what_is_not_a_run(runs):
    """Two states, or two file names, raised AttributeError ("'Density' object has no attribute 'times'")."""
    pde = runs[0]
    with pytest.raises(TypeError, match=r"`a` must be a meanfield\.Trajectory.*got Density.*sobolev_distance"):
        plot.comparison_distances(pde.final, pde)
    with pytest.raises(TypeError, match=r"`b` must be a meanfield\.Trajectory.*got str.*meanfield\.load\('b\.h5'\)"):
        plot.comparison_distances(pde, "b.h5")


def test_a_zonal_run_and_a_particle_run_in_d5_are_compared_by_their_distance():
    """Zonal PDE runs and particle runs in d > 3 had no distance panel ("needs S¹ or S²"); the H⁻¹ distance is now
    that of sobolev_distance (the addition theorem), and it falls with the token count like N^(-1/2)."""
    z = mf.ZonalDensity.from_function(lambda t: np.exp(1.5 * t), 12, 5).normalized()
    model = mf.Model(2.0, d=5)
    pde = mf.simulate(model, z, 0.2, save_every=0.1)
    runs = [mf.simulate(model, mf.Particles.from_density(z, n, seed=1), 0.2, backend="particles", save_every=0.1)
            for n in (100, 1600)]
    fig = plot.comparison_figure([pde, runs[0]], panels=2)
    (dist,) = [ax for ax in fig.axes if ax.get_gid() == "distance"]
    v = dist.get_lines()[0].get_ydata()
    assert v[-1] == pytest.approx(sobolev_distance(pde.final, runs[0].final, s=1.0, lmax=12), rel=1e-12)
    plt.close(fig)
    coarse, fine = (plot.comparison_distances(pde, r)[1] for r in runs)
    assert np.all((coarse / fine > 4 / 1.5) & (coarse / fine < 4 * 1.5))     # √(1600/100) = 4, one draw each


def test_a_zonal_state_in_high_dimension_is_drawn_where_its_values_are_not_rounding():
    """In high d the profile's values near the poles are rounding (e^{5t} on S^999 at L = 100: −4e55 at t = 1), which
    set the panel's axis (and now make evaluate_profile refuse): they are left out, and the axis label says so."""
    rho = mf.ZonalDensity.from_function(lambda t: np.exp(5 * t), 100, d=1000, normalize=True)
    tr = mf.simulate(mf.Model(4.0, d=1000), rho, 0.1, save_every=0.1)
    fig = plot.result_figure(tr, panels=1)
    ax = fig.axes[0]
    y = ax.get_lines()[0].get_ydata()
    assert np.nanmax(np.abs(y)) < 10 and np.isnan(y[[0, -1]]).all()
    assert "rounding, not drawn" in ax.get_xlabel()
    plt.close(fig)
    fig = plot.result_figure(mf.simulate(mf.Model(1.0, d=5), mf.ZonalDensity.uniform(12, d=5), 0.1), panels=1)
    assert fig.axes[0].get_xlabel() == "⟨x, e⟩"
    plt.close(fig)


def test_density_map_draws_a_zonal_density_on_s2_as_the_density_it_is():
    # a ZonalDensity on S² (a zonal spectral run's state) was refused with "got ZonalDensity" and no hint; it is a
    # band-limited function, drawn exactly as Density.from_function of it
    zonal = mf.ZonalDensity.from_function(lambda t: np.exp(3 * t), 16, d=3)
    mesh = plot.density_map(zonal)
    ref = plot.density_map(mf.Density.from_function(zonal.evaluate, zonal.lmax))
    np.testing.assert_allclose(mesh.get_array(), ref.get_array(), rtol=0, atol=1e-13 * np.exp(3))
    plt.close(mesh.axes.figure)
    plt.close(ref.axes.figure)
    with pytest.raises(ValueError, match="must be a Density on S²"):
        plot.density_map(mf.ZonalDensity.from_function(lambda t: np.exp(3 * t), 16, d=5))


def test_energy_figure_of_a_maximizer_in_d_above_3_labels_its_axes():
    # the weights of a maximizer in d > 3 were drawn as bars with no axis labels (which points, what height)
    res = mf.EnergyResult("maximize", 2.0, None, 5, mf.maximize_energy(2.0, None, 5, n_particles=3, n_starts=4))
    fig = plot.energy_figure(res)
    weights, variation = fig.axes[0], fig.axes[1]
    assert weights.get_xlabel() == "point, by decreasing weight" and weights.get_ylabel() == "weight"
    assert variation.get_xlabel() == "support point"
    plt.close(fig)


def test_cluster_counts_draws_the_count_and_shades_the_mergers():
    # four saved states by hand with counts 3, 2, 2, 1: a step line through them and one shaded span per fall
    e = np.eye(3)
    frames = [[e[0], e[1], e[2]], [e[0], e[0], e[2]], [e[0], e[0], e[2]], [e[0], e[0], e[0]]]
    times = np.array([0.0, 1.0, 2.0, 4.0])
    traj = mf.Trajectory(times, [mf.Particles(np.array(f)) for f in frames], {"t": times}, {}, mf.Model(1.0),
                         "particles", mf.Status.OK)
    hist = mf.cluster_history(traj, min_mass=0.1)
    ax = plot.cluster_counts(hist)
    line, = ax.get_lines()
    assert list(line.get_xdata()) == list(times) and list(line.get_ydata()) == [3, 2, 2, 1]
    assert line.get_drawstyle() == "steps-post"
    assert [(p.get_x(), p.get_x() + p.get_width()) for p in ax.patches] == [(0.0, 1.0), (2.0, 4.0)]
    assert ax.get_ylabel() == "clusters of mass ≥ 0.1"
    ax = plot.cluster_counts(traj, merges=False)                  # a Trajectory, clustered with the defaults
    assert list(ax.get_lines()[0].get_ydata()) == [3, 2, 2, 1] and not ax.patches and ax.get_ylabel() == "clusters"
    with pytest.raises(TypeError, match="`history` must be a meanfield.ClusterHistory"):
        plot.cluster_counts(traj.states)
    plt.close("all")


def test_pair_histogram_of_particles_in_d_above_3_weighs_each_pair_by_its_mass():
    # the ⟨θ_i, θ_j⟩ panel of a particle state in d > 3 counted every pair alike: tokens of zero weight (padding
    # under an attention mask, no part of the measure) filled the histogram as much as the others
    rng = np.random.default_rng(0)
    e = np.eye(6)[0]
    x = np.vstack([e + 0.01 * rng.standard_normal((10, 6)), -e + 0.01 * rng.standard_normal((30, 6))])
    w = np.r_[np.full(10, 0.1), np.zeros(30)]              # the 30 tokens near −e carry no mass
    state = mf.Particles(x, weights=w, normalize=True)
    traj = mf.simulate(mf.Model(1.0, d=6), state, 0.1, backend="particles", time="layers", step=0.1)
    fig = plot.result_figure(traj, panels=1)
    ax = fig.axes[0]
    heights = np.array([b.get_height() for b in ax.patches])
    lefts = np.array([b.get_x() for b in ax.patches])
    assert heights.sum() == pytest.approx(1.0, abs=1e-12)       # the pair mass, normalized
    assert heights[lefts < 0].sum() == 0.0                      # no mass in the pairs across the two groups
    assert heights[lefts > 0.9].sum() == pytest.approx(1.0, abs=1e-12)
    assert ax.get_xlabel() == "⟨θ_i, θ_j⟩"
    plt.close(fig)


def test_comparison_mmd_panel_names_its_kernel_not_the_models_attention():
    # two particle runs in d > 3 under a model with Q and K were compared under the title "MMD_β (attention
    # kernel)", read as e^{β⟨Qx, Ky⟩}; the distance is mmd's e^{β⟨x, y⟩} (Q = K = I) at the first run's β
    rng = np.random.default_rng(1)
    Q = rng.standard_normal((6, 6))
    p = mf.Particles.uniform(30, d=6, seed=0)
    runs = [mf.simulate(mf.Model(2.0, d=6, Q=Q, K=Q), p, 0.2, backend="particles", step=0.1, save_every=0.1),
            mf.simulate(mf.Model(2.0, d=6, Q=Q, K=Q, scheme="pre-ln"), p, 0.2, backend="particles", step=0.1,
                        save_every=0.1)]
    fig = plot.comparison_figure(runs)
    (dist,) = [ax for ax in fig.axes if ax.get_gid() == "distance"]
    assert dist.get_title() == r"MMD$_\beta$, kernel $e^{\beta\langle x, y\rangle}$, $\beta$ = 2", dist.get_title()
    t, values, _ = plot.comparison_distances(*runs, distance="mmd")
    np.testing.assert_allclose(dist.get_lines()[0].get_ydata(), values, rtol=0, atol=0)
    assert values[-1] == mmd(runs[0].states[-1], runs[1].states[-1], 2.0)
    plt.close(fig)


def test_cluster_counts_marks_a_single_saved_state_and_refuses_a_non_boolean_merges():
    # a run saved once drew a line through one point, i.e. nothing; merges="no" was taken as True
    times = np.array([0.0])
    traj = mf.Trajectory(times, [mf.Particles(np.eye(3))], {"t": times}, {}, mf.Model(1.0), "particles",
                         mf.Status.OK)
    line, = plot.cluster_counts(traj).get_lines()
    assert line.get_xydata().tolist() == [[0.0, 3.0]] and line.get_marker() == "o"
    with pytest.raises(TypeError, match=r"`merges` must be True or False; got merges='no'"):
        plot.cluster_counts(traj, merges="no")
    plt.close("all")
