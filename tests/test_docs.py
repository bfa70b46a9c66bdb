"""The documentation agrees with the code: schemes, options, configuration keys, quoted numbers, figures."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import meanfield as mf
from meanfield import _config
from meanfield.backends import _spectral

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _read(name):
    return (DOCS / name).read_text(encoding="utf-8")


def _table_row(text, first_cell, exact=False):
    """The cells of the first Markdown table row whose first cell is (or starts with) ``first_cell``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and (cells[0] == first_cell if exact else cells[0].startswith(first_cell)):
            return cells
    return None


@pytest.mark.parametrize("name", sorted(mf.SCHEMES))
def test_every_scheme_is_in_the_model_page_table(name):
    text = _read("model.md")
    assert name in text
    row = _table_row(text, f"`{name}`")
    assert row is not None, f"docs/model.md has no row for scheme {name!r} in the scheme table"
    scheme = mf.SCHEMES[name]
    assert ("radius" in row[-1]) == scheme.has_radius, (name, row[-1])
    assert ("layer map only" in row[1]) == (not scheme.continuous), (name, row[1])


def test_every_spectral_option_is_documented():
    text = _read("cli.md")
    missing = [k for k in _spectral._OPTIONS if f"`{k}`" not in text]
    assert not missing, f"spectral options missing from docs/cli.md: {missing}"


def test_every_configuration_key_is_documented():
    text = _read("cli.md")
    keys = set(_config._MODEL_KEYS) | set(_config._RUN_KEYS) | set(_config._TABLES)
    keys |= {k for ks in _config._INITIAL_KEYS.values() for k in ks} | set(_config._INITIAL_KEYS)
    keys |= {k for ks in _config._ENERGY_KEYS.values() for k in ks} | set(_config.ENERGY_TASKS) | {"energy"}
    missing = sorted(k for k in keys if f"`{k}`" not in text and f"`\"{k}\"`" not in text
                     and f"[{k}]" not in text)
    assert not missing, f"configuration keys missing from docs/cli.md: {missing}"


@pytest.mark.parametrize("beta, eps6, eps12", [(1.0, 7, 12), (5.0, 14, 21), (50.0, 44, 59)])
def test_quoted_band_limits(beta, eps6, eps12):
    row = _table_row(_read("numerics.md"), f"{beta:g}", exact=True)
    assert row is not None and row[1:3] == [str(eps6), str(eps12)]
    assert (mf.kernel_bandlimit(beta, 1e-6), mf.kernel_bandlimit(beta, 1e-12)) == (eps6, eps12)


def test_referenced_figures_exist():
    pages = list(DOCS.glob("*.md")) + list(DOCS.glob("tutorials/*.md"))
    refs = [(p, m) for p in pages for m in re.findall(r"\{figure\}\s+(\S+)", p.read_text(encoding="utf-8"))]
    assert refs
    for page, ref in refs:
        assert (page.parent / ref).resolve().is_file(), f"{page.name} refers to a missing figure {ref}"


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    for module in ("sphinx", "numpydoc", "myst_parser"):
        pytest.importorskip(module)
    out = tmp_path / "html"
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-E", "-q", "-b", "html", str(DOCS), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "index.html").is_file()
    shutil.rmtree(out, ignore_errors=True)


def test_readme_quick_example_prints_what_its_comments_say():
    import warnings
    text = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    code = re.search(r"## Quick example\s+```python\n(.*?)```", text, re.S).group(1)
    printed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        exec(compile(code, "README.md", "exec"), {"print": lambda *a: printed.append(a[0])})
    message, energy, mass_error, rate = printed
    assert message == "Reached t_final."
    assert np.all(np.diff(energy) > 0)                        # "E_β grows as tokens cluster"
    assert np.all(np.asarray(mass_error) == 0)                # "exactly 0"
    assert f"{rate:.3f}" == "0.613"


@pytest.mark.slow
def test_pde_vs_particles_tutorial_code_runs_and_matches_its_table():
    import warnings
    text = _read("tutorials/pde_vs_particles.md")
    code = re.search(r"## In Python, with the convergence rate\s+```python\n(.*?)```", text, re.S).group(1)
    scope = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        exec(compile(code, "pde_vs_particles.md", "exec"), scope)
    import matplotlib.pyplot as plt
    plt.close(scope["fig"])
    row = _table_row(text, "10⁵", exact=True)
    quoted = np.array([float(c) for c in row[1:4]])          # the mean over three seeds; this is seed 0 alone
    assert scope["lmax"] == 32 and np.array_equal(scope["t"], [0.0, 1.0, 2.0])
    assert np.all(np.abs(np.log(scope["distance"] / quoted)) < np.log(1.5))


@pytest.mark.slow
def test_the_higher_dimension_section_of_the_pde_vs_particles_tutorial_matches_its_table():
    text = _read("tutorials/pde_vs_particles.md")
    section = text.split("## In higher dimension", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    from meanfield import plot

    scope = {"mf": mf, "plot": plot}          # defined by the page's first block
    exec(compile(code, "pde_vs_particles.md[higher dimension]", "exec"), scope)
    assert np.allclose(scope["t5"], [0.0, 0.25, 0.5, 0.75, 1.0])
    for n, measured in scope["distances"].items():
        quoted = np.array([float(c) for c in _table_row(section, str(n), exact=True)[1:4]])
        assert np.allclose(measured[[0, 2, 4]], quoted, rtol=0, atol=6e-4), (n, measured, quoted)


def _run_python_blocks(name):
    """Execute the ```python blocks of a docs page in one namespace; check every ``print(...)  # → TEXT``.

    A line whose comment starts with ``# → `` must print exactly TEXT (up to two spaces, after which a remark
    may follow).  Returns the namespace."""
    text = _read(name)
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, f"{name} has no python code blocks"
    printed = {}

    def record(*args, **kwargs):
        frame = sys._getframe(1)
        printed[(frame.f_code.co_filename, frame.f_lineno)] = " ".join(str(a) for a in args)

    scope = {"print": record}
    checked = 0
    for i, code in enumerate(blocks):
        filename = f"{name}[block {i}]"
        exec(compile(code, filename, "exec"), scope)
        for lineno, line in enumerate(code.splitlines(), 1):
            if "# → " in line:
                expected = line.split("# → ", 1)[1].split("  ")[0].strip()
                assert printed.get((filename, lineno)) == expected, (filename, lineno, line)
                checked += 1
    scope["_checked"] = checked
    return scope


@pytest.mark.slow
def test_ensembles_tutorial_code_prints_what_it_quotes(tmp_path, monkeypatch):
    """docs/tutorials/ensembles.md: its blocks run (batched ensembles, about 100 s on two cores; the save/load block
    writes its file in a temporary folder) and print what their comments say; the prose quotes the same growth
    figures."""
    monkeypatch.chdir(tmp_path)
    scope = _run_python_blocks("tutorials/ensembles.md")
    assert scope["_checked"] == 9
    text = _read("tutorials/ensembles.md")
    g, e = scope["growth"]["post-ln"]
    assert f"within {100 * (1 - g[1] / e[1]):.1f} % (Post-LN)" in text
    g, e = scope["growth"]["peri-ln"]
    assert f"{100 * (1 - g[-1] / e[-1]):.1f} % below at" in text


@pytest.mark.slow
def test_energy_extrema_tutorial_code_prints_what_it_quotes():
    """docs/tutorials/energy_extrema.md: its code blocks run and print what their comments say, and its energy
    table is what mf.energy returns, against the closed forms it names (about 15 s: two FE minimizers on S²,
    three particle flows)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", mf.MeanfieldWarning)            # none expected
        scope = _run_python_blocks("tutorials/energy_extrema.md")
    assert scope["_checked"] >= 20
    text = _read("tutorials/energy_extrema.md")
    for name, (measure, closed) in scope["measures"].items():
        row = _table_row(text, name, exact=True)
        assert row is not None, name
        assert row[2] == f"{scope['energies'][name]:.12f}"
        assert abs(scope["energies"][name] / closed - 1) < 1e-14          # rounding of the closed form's own terms
        assert abs(float(row[3])) < 1e-14
    row = _table_row(text, "uniform on S¹, β = 1, D = diag(1, 0.3)", exact=True)
    assert row[2] == f"{scope['aniso']:.12f}"
    from scipy import special
    assert scope["aniso"] == pytest.approx(special.i0(0.65) * special.i0(0.35) / 2, rel=1e-14)
    # the residuals the prose quotes, to their order of magnitude (they are set by the selection pull of 1e-8)
    assert scope["rho"].certificate.support_residual < 1e-8
    assert scope["fe"].certificate.support_residual < 1e-7 and scope["fe"].certificate.support_fraction == 1.0
    # the stationary clusters: E is the cluster formula Σ m_a m_b e^{β⟨c_a, D c_b⟩}/(2β)
    c, m, D = scope["clusters"].centers, scope["clusters"].masses, scope["D"]
    assert scope["end"].energy == pytest.approx(m @ np.exp(c @ D @ c.T) @ m / 2, rel=1e-12)


def test_energy_extrema_tutorial_essentials():
    """The fast part of the energy-extrema tutorial: the numbers it quotes from the reference values
    (docs/validation.md), against the calls it shows (a few seconds)."""
    from scipy import optimize

    rho = mf.minimize_energy(1.0, np.diag([1.0, 1.05]), d=2)
    assert f"{2 * rho.coeffs[2].real:.6f}" == "0.101668" and round(2 * rho.coeffs[2].real, 5) == 0.10167
    assert rho.certificate.satisfied(1e-8)
    top = mf.maximize_energy(1.0, np.diag([0.5, 1.0]), d=2, candidates=False, n_starts=4, seed=1)
    assert top.kind == "dirac" and top.value == pytest.approx(np.e / 2, rel=1e-12)
    pair = mf.maximize_energy(1.0, -np.eye(2), d=2, candidates=False, n_starts=4, seed=1)
    assert pair.kind == "antipodal" and pair.value == pytest.approx(np.cosh(1.0) / 2, rel=1e-12)
    square = mf.Particles(np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]) / np.sqrt(2))
    rect = mf.find_stationary(square, 1.0, [1.0, 0.5], direction="descent", tol=1e-11, check_every=5.0)
    a2 = optimize.brentq(lambda a: np.tanh(a) - 0.5 * np.tanh(0.5 * (1 - a)), 0, 1, xtol=1e-15)
    assert rect.converged and f"{a2:.8f}" == "0.19370612"
    assert np.max(np.abs(rect.state.positions[:, 0] ** 2 - a2)) < 1e-10               # the flow's tol 1e-11
    assert f"{rect.energy:.10f}" == "0.5513701486"
    coarse = mf.minimize_energy(2.0, np.diag([0.6, 1.0, 1.4]), d=3, level=2)          # level 3 is in the slow test
    assert f"{coarse.value:.12f}" == "0.382361411565"
    assert "0.382361411565" in _read("tutorials/energy_extrema.md")


# ----------------------------------------------------------------------------------------------
# the design note the package was built from is not shipped: nothing may send a reader to it

ROOT = DOCS.parent
_SHIPPED = ("meanfield", "docs", "validation", "benchmarks", "examples", "tests")
_TEXT = {".py", ".md", ".json", ".toml", ".sh", ".txt", ".rst", ".cfg"}
_UNSHIPPED_NOTE = re.compile(r"\bDESIGN\b|\bdesign notes?\b")


def _generated(path: Path) -> bool:
    """Build output and caches (docs/_build keeps copies of pages as they were at the last build)."""
    return any(part in ("_build", "__pycache__", ".pytest_cache") for part in path.relative_to(ROOT).parts)


def _shipped_text_files():
    files = [ROOT / "README.md", ROOT / "pyproject.toml"]
    return files + [p for d in _SHIPPED for p in sorted((ROOT / d).rglob("*"))
                    if p.suffix in _TEXT and p.is_file() and not _generated(p)]


def test_no_shipped_file_cites_the_unshipped_design_note():
    """The reference values, the model and the numerics are documented in docs/ (validation.md "Reference
    values", model.md, numerics.md); a citation of the internal design note points nowhere."""
    files = _shipped_text_files()
    this = Path(__file__).resolve()
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
            for p in files if p.resolve() != this
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if _UNSHIPPED_NOTE.search(line)]
    assert len(files) > 100 and not hits, "\n".join(hits)


def test_no_shipped_text_holds_control_characters():
    """A backslash escape swallowed on the way into a file (\\b, \\a, \\v in "\\beta", "\\approx",
    "\\varepsilon") leaves an invisible control character and a formula that renders as "eta"."""
    control = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
    hits = [f"{p.relative_to(ROOT)}:{i}: {control.sub(lambda m: repr(m.group()), line.strip())}"
            for p in _shipped_text_files()
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if control.search(line)]
    assert not hits, "\n".join(hits)


def _reference_table():
    """[(values, checked_by_cell)] of the table under "## Reference values" in docs/validation.md."""
    text = _read("validation.md")
    section = text.split("\n## Reference values\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or cells[0] in ("value", "") or set(cells[0]) <= set("-"):
            continue
        values = [float(v) for v in cells[0].split(",")]
        rows.append((values, cells[-1]))
    return rows


_NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?:[eE][-+]?\d+)?")


def _numbers_in(path):
    return {float(m) for m in _NUMBER.findall(path.read_text(encoding="utf-8"))}


def test_every_reference_value_is_the_number_its_checks_use():
    """Each value of the table, as written there, is a number in the validation module (`name`) and in every
    test module its row names: the table and the code cannot drift apart."""
    from meanfield._validation import RESULTS

    rows = _reference_table()
    assert len(rows) >= 16
    for values, checked_by in rows:
        sources = [ROOT / "meanfield" / "_validation" / f"{name}.py" for name in re.findall(r"`(\w+)`", checked_by)]
        sources += [ROOT / "tests" / name for name in re.findall(r"test_\w+\.py", checked_by)]
        assert sources, f"the row of {values} names no check"
        for path in sources:
            assert path.stem in RESULTS or path.parent.name == "tests", path
            missing = [v for v in values if v not in _numbers_in(path)]
            assert not missing, f"{path.relative_to(ROOT)} does not hold {missing}"


def test_every_reference_value_row_of_the_report_is_in_the_table():
    """The stored report's rows "reference value … vs …" compare with a number of the table."""
    import json

    table = {v for values, _ in _reference_table() for v in values}
    data = json.loads((ROOT / "validation" / "validation.json").read_text(encoding="utf-8"))
    rows = [r for res in data["results"].values() for r in res["rows"] if "reference value" in r["quantity"]]
    assert len(rows) >= 18
    missing = [(r["quantity"], r["reference"]) for r in rows if r["reference"] not in table]
    assert not missing, missing


# ----------------------------------------------------------------------------------------------
# public docstrings are numpydoc: every parameter of every public function and method is documented

def _public_callables():
    """Dotted names of the public functions of ``meanfield``, ``meanfield.plot``, ``meanfield.sphere`` and
    ``meanfield.analysis`` and of the public methods of the public classes (their own, not inherited)."""
    import enum
    import inspect

    import meanfield.analysis
    import meanfield.plot

    names = set()
    for modname, module in (("meanfield", mf), ("meanfield.plot", meanfield.plot),
                            ("meanfield.sphere", mf.sphere), ("meanfield.analysis", meanfield.analysis)):
        public = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
        for name in public:
            obj = getattr(module, name)
            if inspect.isfunction(obj) and obj.__module__.startswith("meanfield"):
                names.add(f"{modname}.{name}")
            elif inspect.isclass(obj) and obj.__module__.startswith("meanfield") and not issubclass(obj, enum.Enum):
                for attr, value in vars(obj).items():
                    if not attr.startswith("_") and isinstance(value, (classmethod, staticmethod)) \
                            or not attr.startswith("_") and inspect.isfunction(value):
                        names.add(f"{modname}.{name}.{attr}")
    return sorted(names)


def test_every_public_function_and_method_documents_its_parameters():
    """numpydoc's own checks PR01 (a parameter not documented), PR02 (a documented parameter that does not exist)
    and GL08 (no docstring) on every public callable of the API page (before this test, 20 of them described their
    parameters in a sentence: plot.density_map, Density.tail_fraction, ZonalDensity.from_function, …)."""
    validate = pytest.importorskip("numpydoc.validate").validate      # the `docs` extra

    names = _public_callables()
    assert len(names) > 150
    bad = {}
    for name in names:
        errors = [f"{code}: {msg}" for code, msg in validate(name)["errors"] if code in ("PR01", "PR02", "GL08")]
        if errors:
            bad[name] = errors
    assert not bad, "\n".join(f"{k}: {v}" for k, v in bad.items())


def test_the_plot_module_exports_its_figures_only_and_the_api_page_lists_them_all():
    """``meanfield.plot.__all__`` holds the drawing functions and the value tables of their options (without it,
    ``from meanfield.plot import *`` gave the helpers it imports: ``choice``, ``warn``, ``np``, ``Path``, …); the
    API page's ``automodule:: meanfield.plot`` lists every one of them."""
    import inspect

    import meanfield.plot as plot

    for name in plot.__all__:
        obj = getattr(plot, name)
        assert inspect.isfunction(obj) and obj.__module__ == "meanfield.plot" or isinstance(obj, tuple), name
    scope = {}
    exec("from meanfield.plot import *", scope)
    assert not {"np", "Path", "choice", "warn", "nonneg_int"} & set(scope)
    own = {n for n, v in vars(plot).items() if inspect.isfunction(v) and v.__module__ == "meanfield.plot"
           and not n.startswith("_")}
    assert own <= set(plot.__all__)
    block = _read("api.md").split(".. automodule:: meanfield.plot", 1)[1].split("```", 1)[0]
    listed = set(re.findall(r"\w+", block.split(":members:", 1)[1]))
    assert set(plot.__all__) <= listed, sorted(set(plot.__all__) - listed)


def test_radius_species_tutorial_code_gives_its_tables():
    """docs/tutorials/radius_species.md: its three spectral runs (a few seconds) give the final band limits,
    energies, mean radii and slopes of its two tables, the species masses of its text, and mass error 0."""
    import warnings

    text = _read("tutorials/radius_species.md")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    scope = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)      # the kernel band-limit warning at L = 24
        for code in blocks[:2]:
            exec(compile(code, "radius_species.md", "exec"), scope)
    mean_radius = scope["mean_radius"]
    assert f"here {scope['north'].mass():.3f} and {scope['south'].mass():.3f}, must" in text
    for label, name in (("Post-LN", "post"), ("Pre-LN, $r_0 = 1$", "pre"), ("Pre-LN, two species", "both")):
        d = scope[name].diagnostics
        assert scope[name].status is mf.Status.OK and np.all(d["mass_error"] == 0), name
        row = _table_row(text, label, exact=True)
        assert row[1:] == [f"{int(d['lmax'][-1])}", f"{d['energy'][0]:.5f} → {d['energy'][-1]:.5f}"], (label, row)
    pre, both = scope["pre"], scope["both"]
    series = {"one species, $r_0 = 1$": (pre.times, [mean_radius(s) for s in pre.states]),
              "species 1 (north), $r_0 = 1$": (both.times, [mean_radius(s[0]) for s in both.states]),
              "species 2 (south), $r_0 = 2$": (both.times, [mean_radius(s[1]) for s in both.states])}
    for label, (t, r) in series.items():
        row = _table_row(text, label, exact=True)
        assert row[1:] == [f"{r[0]:.0f} → {r[-1]:.3f}", f"{np.polyfit(t, r, 1)[0]:.3f}"], (label, row)


def test_model_page_code_runs_and_prints_what_its_comments_say():
    """docs/model.md: the Model examples construct, the species example ends at L = 36 with a tuple of two
    Densities, and the two stationarity messages begin as the comments quote them (about 3 s)."""
    import warnings

    text = _read("model.md")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 3
    printed = []
    scope = {"print": lambda *a: printed.append(" ".join(map(str, a)))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        for i, code in enumerate(blocks):
            exec(compile(code, f"model.md[block {i}]", "exec"), scope)
    assert "(L refined 24 → 36)" in blocks[1]
    north_t, south_t = scope["north_t"], scope["south_t"]
    assert isinstance(scope["traj"].final, tuple) and north_t.lmax == south_t.lmax == 36
    assert scope["traj"].status is mf.Status.OK
    quoted = [line.split("# ", 1)[1].replace("…", "").rstrip(" ;()") for line in blocks[2].splitlines() if "print(" in line]
    assert len(printed) == len(quoted) == 2
    for message, prefix in zip(printed, quoted):
        assert message.startswith(prefix), (message, prefix)


def test_the_front_page_map_links_every_page_of_the_toctree():
    """docs/index.md's "Map of the documentation" describes each page of its toctree (sweeps.md was in the
    toctree but not in the map)."""
    text = _read("index.md")
    toctree = re.search(r"```\{toctree\}\n(.*?)```", text, re.S).group(1)
    pages = [line.strip() for line in toctree.splitlines() if line.strip() and not line.startswith(":")]
    section = text.split("## Map of the documentation", 1)[1].split("```{toctree}", 1)[0]
    linked = set(re.findall(r"\]\(([\w/]+)\.md\)", section))
    assert len(pages) >= 9 and set(pages) <= linked, sorted(set(pages) - linked)


def test_the_quoted_gegenbauer_rounding_in_high_dimension():
    """numerics.md ("The S¹ and zonal solvers") tabulates the error on the axis of g ≡ 1 projected at L = 20, 40,
    100 and ZonalDensity.rounding_error there (rounding, so the error is pinned within a factor 3, the estimate
    within 1.5), and the |t| where the estimate passes 1e-6 and 1 at L = 40.  The page had said 8e-10, 3e-7 and 0.1
    at L = 40 while the code gave 2.2e-10, 8.9e-7 and 1.4e-2."""
    from meanfield.sphere import zonal_synthesis

    section = _read("numerics.md").split("## The $S^1$ and zonal solvers", 1)[1]
    grid = np.linspace(0.0, 1.0, 2001)
    for d in (16, 32, 64, 200, 1000):
        row = _table_row(section, str(d), exact=True)
        for L, cell in zip((20, 40, 100), row[1:4]):
            error, estimate = (float(x) for x in cell.split(" / "))
            g = mf.ZonalDensity.from_function(np.ones_like, L, d=d)
            measured = abs(zonal_synthesis(g.coeffs, np.array([1.0]), d)[0] - 1)
            assert error / 3 < measured < 3 * error and measured <= g.rounding_error(1.0), (d, L, measured)
            assert estimate / 1.5 < g.rounding_error(1.0) < 1.5 * estimate, (d, L)
            assert abs(zonal_synthesis(g.coeffs, np.array([0.0]), d)[0] - 1) < 2e-14
            if L == 40:
                r = g.rounding_error(grid)
                quoted = [None if c == "—" else float(c) for c in row[4].split(" / ")]
                for level, q in zip((1e-6, 1.0), quoted):
                    first = grid[np.argmax(r > level)] if np.any(r > level) else None
                    assert (first is None) if q is None else abs(first - q) <= 0.01, (d, level, first, q)


def test_ensembles_tutorial_rates_of_the_degree_1_mode():
    """docs/tutorials/ensembles.md quotes 2γ_1 for Post-LN (0.751 at β = 4, 1.252 at β = 1) and Peri-LN (1 at β = 4)
    from growth_rate, and calls it γ_1: it was λ_1, the symbol of the Funk–Hecke multipliers on every other page
    (λ_1(4) = 5.12, not the rate 0.375)."""
    text = _read("tutorials/ensembles.md")
    assert "\\lambda_1" not in text.replace("Funk–Hecke multiplier\n$\\lambda_1$", "")
    assert f"$2\\gamma_1 = {2 * mf.growth_rate(4.0, 1):.3f}$ at β = 4" in text
    assert f"$2\\gamma_1 = {2 * mf.growth_rate(4.0, 1, scheme='peri-ln'):g}$ at β = 4" in text
    assert f"against ${2 * mf.growth_rate(1.0, 1):.3f}$ (β = 1)" in text


def test_the_front_page_first_run_is_the_readme_quick_example():
    """docs/index.md's "A first run" is the README's quick example (tested above) up to its comments."""
    def code(text, heading):
        block = re.search(heading + r"\s+```python\n(.*?)```", text, re.S).group(1)
        return [line.split("#", 1)[0].rstrip() for line in block.splitlines() if line.split("#", 1)[0].strip()]

    readme = code((DOCS.parent / "README.md").read_text(encoding="utf-8"), "## Quick example")
    assert len(readme) == 8 and code(_read("index.md"), "## A first run") == readme


def test_sweeps_page_quotes_the_shipped_sweep_file_and_its_task_count():
    """docs/sweeps.md copies examples/phase_sweep.toml into the page (not a literalinclude): the copy parses to the
    same file, which has the 18 × 12 = 216 tasks the page and its SweepResult comment state."""
    import tomllib

    text = _read("sweeps.md")
    quoted = tomllib.loads(re.findall(r"```toml\n(.*?)```", text, re.S)[0])
    path = DOCS.parent / "examples" / "phase_sweep.toml"
    assert quoted == tomllib.loads(path.read_text(encoding="utf-8"))
    spec = mf.load_sweep(str(path))
    assert len(spec.tasks) == 216
    assert "18 × 12 = 216 tasks" in text and "SweepResult(tasks=216, ran=216, skipped=0" in text


def test_numerics_page_lists_the_step_log_and_the_diagnostics_of_a_spectral_run():
    """numerics.md ("Time stepping") names the keys of `Trajectory.steps` and `Trajectory.diagnostics` of the
    spectral backend: exactly those a (Pre-LN, so with a radius) run records."""
    import warnings

    text = " ".join(_read("numerics.md").split())
    steps = re.search(r"Every step is logged in `Trajectory\.steps` \((.*?)\)\.", text).group(1)
    diags = re.search(r"Every saved state has `Trajectory\.diagnostics` \((.*?), and `mean_alignment`", text).group(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        traj = mf.simulate(mf.Model(4.0, "pre-ln"), mf.Density.random(16, seed=1), 0.25)
    assert set(re.findall(r"`(\w+)`", steps)) == set(traj.steps)
    assert set(re.findall(r"`(\w+)`", diags)) | {"mean_alignment"} == set(traj.diagnostics)


def test_the_front_page_builds_the_docs_with_the_environment_of_its_set_up_commands():
    """docs/build.sh runs ``$PYTHON -m sphinx`` (PYTHON defaulting to python3); the set-up commands create .venv
    without activating it, so the page's build command names .venv/bin/python (`docs/build.sh` alone used the
    system interpreter, which has no Sphinx)."""
    script = (DOCS / "build.sh").read_text(encoding="utf-8")
    assert 'PY=${PYTHON:-python3}' in script and '"$PY" -m sphinx -W -b html "$@" docs docs/_build/html' in script
    text = _read("index.md")
    assert "python3 -m venv .venv" in text
    assert '.venv/bin/pip install -e ".[docs]" && PYTHON=.venv/bin/python docs/build.sh' in text


def test_every_public_method_of_a_class_on_the_api_page_is_rendered():
    """An ``autoclass`` with an explicit ``:members:`` list renders only those: each public method and property of
    the class (dataclass fields are in its Attributes) must be listed (ZonalDensity.resized was not)."""
    text = _read("api.md")
    checked = 0
    for match in re.finditer(r"\.\. autoclass:: (\w+)\n((?:   :\w+:.*\n(?: {10,}.*\n)*)*)", text):
        members = re.search(r":members:(.*(?:\n {10,}.*)*)", match.group(2))
        if not members or not members.group(1).strip():
            continue                                        # `:members:` alone renders every member
        cls = getattr(mf, match.group(1))
        listed = set(re.findall(r"\w+", members.group(1)))
        fields = set(getattr(cls, "__dataclass_fields__", {}))
        public = {n for n, v in vars(cls).items() if not n.startswith("_") and hasattr(v, "__get__")} - fields
        assert public <= listed, (cls.__name__, sorted(public - listed))
        checked += 1
    assert checked >= 5


def test_linear_instability_tutorial_code_measures_its_table_row():
    """docs/tutorials/linear_instability.md: its code block (ℓ = 3, SA, a few seconds) gives the rate its comment
    quotes, the measured rate of its table's ℓ = 3 row, and the warning its text quotes."""
    import warnings

    text = _read("tutorials/linear_instability.md")
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    scope = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", mf.MeanfieldWarning)
        exec(compile(code, "linear_instability.md", "exec"), scope)
    assert "# 0.61327606…" in code and f"{scope['rate']:.8f}" == "0.61327606"
    row = _table_row(text, "3", exact=True)
    assert row[1:3] == [f"{scope['rate']:.8f}", f"{scope['fitted']:.8f}"]
    assert abs(scope["fitted"] / scope["rate"] - 1) < 1e-9                  # the row's 2.1e-10
    quoted = re.search(r"warns \(`MeanfieldWarning`\) that `(.*?)`", text).group(1)
    assert any(quoted in str(w.message) for w in caught), quoted


def test_the_api_page_names_what_its_catch_all_renders():
    """docs/api.md documents most public names in sections and lets its `meanfield-api-rest` directive render the
    rest; the prose of "Other public names" says which these are "at present", and nothing is skipped."""
    import types

    pytest.importorskip("sphinx")                      # the extension imports docutils and sphinx (the docs extra)
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import meanfield_docs
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    conf = (DOCS / "conf.py").read_text(encoding="utf-8")
    assert "meanfield_autodoc_skip = {}" in conf
    text = _read("api.md")
    documented = set(meanfield_docs._DOCUMENTED.findall(text))
    public = {n for n in mf.__all__ if not isinstance(getattr(mf, n), types.ModuleType)}
    rest = public - documented
    assert rest == {"sobolev_distance", "mmd", "wasserstein_distance", "convergence_in_n", "convergence_in_l",
                    "ConvergenceResult", "run_sweep", "load_sweep", "SweepResult",
                    "distributed_particles_sh"}, sorted(rest)
    prose = text.split("## Other public names", 1)[1].split("```", 1)[0]
    for name in ("sobolev_distance", "mmd", "wasserstein_distance", "convergence_in_n", "convergence_in_l",
                 "ConvergenceResult"):
        assert f"meanfield.{name}" in prose, name
    assert "distributed particles-sh velocity and the sweep tools" in " ".join(prose.split())


def test_the_pde_and_particle_example_configurations_differ_as_the_docs_say():
    """cli.md and the PDE-against-particles tutorial: examples/post_ln_s2_particles.toml is post_ln_s2.toml with the
    same model and density, plus `samples`/`sample_seed`, another backend and RK4 options (the pages said the two
    differ "only in `samples` and `backend`")."""
    import tomllib

    pde, part = (tomllib.loads((DOCS.parent / "examples" / f"{name}.toml").read_text(encoding="utf-8"))
                 for name in ("post_ln_s2", "post_ln_s2_particles"))
    assert pde["model"] == part["model"]
    assert {k: v for k, v in part["initial"].items() if k not in ("samples", "sample_seed")} == pde["initial"]
    assert part["initial"]["samples"] == 100_000 and "sample_seed" in part["initial"]
    assert {k: v for k, v in part["run"].items() if k != "backend"} == {k: v for k, v in pde["run"].items()
                                                                          if k != "backend"}
    assert (pde["run"].get("backend", "spectral"), part["run"]["backend"]) == ("spectral", "particles-sh")
    assert part["options"] == {"method": "rk4", "step": 0.05}
    for page in ("cli.md", "tutorials/pde_vs_particles.md"):
        text = " ".join(_read(page).split())
        assert "differ only in" not in text.replace("differ only in the scheme", ""), page
        assert "RK4" in text and "0.05" in text, page
    post, peri = (tomllib.loads((DOCS.parent / "examples" / f"demo_{s}_ln.toml").read_text(encoding="utf-8"))
                  for s in ("post", "peri"))          # "differ only in the scheme" (cli.md)
    assert (post["model"].pop("scheme"), peri["model"].pop("scheme")) == ("post-ln", "peri-ln") and post == peri


def test_every_command_line_default_is_in_its_help_and_in_the_synopsis():
    """`meanfield COMMAND --help` names the default of every option that has one, and cli.md's synopsis shows it as
    the placeholder (`validate --output` wrote into validation-out/ without either saying so)."""
    import argparse

    from meanfield import cli

    sub = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    synopsis = re.search(r"```text\n(meanfield run .*?)```", _read("cli.md"), re.S).group(1)
    checked = 0
    for name, parser in sub.choices.items():
        line = next(s for s in synopsis.splitlines() if s.startswith(f"meanfield {name} "))
        for action in parser._actions:
            if not action.option_strings or action.default in (None, False, [], argparse.SUPPRESS):
                continue
            assert f"default: {action.default}" in action.help, (name, action.option_strings, action.help)
            assert f"{action.option_strings[0]} {action.default}" in line or action.choices, (name, line)
            checked += 1
    assert checked >= 6


def test_the_scheme_registry_cites_the_normalization_paper_as_the_validation_page_does():
    """The registry's references (rendered in model.md's scheme table) named "Karagodin, Polyanskiy, Rigollet et
    al.", leaving out the second author, Ge, whom validation.md and the validation suite cite."""
    authors = "Karagodin, Ge, Polyanskiy, Rigollet"
    assert f"{authors} 2025" in " ".join(_read("validation.md").split())
    for name, scheme in mf.SCHEMES.items():
        if "Karagodin" in scheme.reference:
            assert f"{authors} (2025)" in scheme.reference, (name, scheme.reference)


def test_the_quoted_runs_of_the_front_page_and_the_command_line_page(tmp_path, capsys):
    """The numbers quoted for the shipped runs come from the runs: the front page's caption (README.md and
    index.md: Post-LN's band limit "raised automatically from 48 to 108") and cli.md's `meanfield info` of
    examples/post_ln_s2.toml, line for line (a few seconds: two spectral runs)."""
    from meanfield import cli

    examples = DOCS.parent / "examples"
    demo = tmp_path / "demo.h5"
    assert cli.main(["run", str(examples / "demo_post_ln.toml"), "--output", str(demo), "--quiet"]) == 0
    lmax = mf.load(demo).diagnostics["lmax"]
    quoted = f"from {lmax[0]:g} to {lmax[-1]:g}"
    assert quoted == "from 48 to 108"
    for text in ((DOCS.parent / "README.md").read_text(encoding="utf-8"), _read("index.md")):
        assert f"raised automatically {quoted}" in " ".join(text.split())

    out = tmp_path / "post_ln.h5"
    assert cli.main(["run", str(examples / "post_ln_s2.toml"), "--output", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["info", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    block = re.search(r"For the example above:\s+```text\n(.*?)```", _read("cli.md"), re.S).group(1).splitlines()
    assert len(block) == len(printed)
    assert printed[0].replace(str(out), "post_ln.h5") == block[0]
    assert printed[1:] == block[1:]


def test_backends_page_lists_the_diagnostics_and_the_step_log_of_the_particle_backends():
    """backends.md's "particles-sh" section speaks of "the diagnostics of "particles"", which no page listed (what
    `max_attention`, `min_radius` or the step log's `error` are was in a docstring the docs do not render): the
    "particles" section names every key that its runs record (a radius scheme, a causal run, a layer map, anGPT),
    and the hybrid section the keys its runs add to those of the two backends."""
    import warnings

    text = _read("backends.md")
    particles = text[text.index('## `"particles"`'):text.index('## `"particles-sh"`')]
    said = set(re.findall(r"`(\w+)`", particles[particles.index("Each saved state records"):]))
    p = mf.Particles.uniform(12, d=4, seed=0)
    runs = [mf.simulate(mf.Model(2.0, "pre-ln", d=4), p, 0.2, backend="particles"),
            mf.simulate(mf.Model(2.0, d=4), p, 0.2, backend="particles", causal=True, method="rk23"),
            mf.simulate(mf.Model(2.0, "peri-ln", d=4), p, 0.2, backend="particles", time="layers", step=0.1),
            mf.simulate(mf.Model(2.0, "angpt", d=4), p, 0.2, backend="particles", time="layers", step=0.1)]
    for run in runs:
        assert set(run.diagnostics) | set(run.steps) <= said, (set(run.diagnostics) | set(run.steps)) - said
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        hybrid = mf.simulate(mf.Model(5.0), mf.Density.random(16, seed=2, amplitude=0.7), 0.2, backend="hybrid")
        spectral = mf.simulate(mf.Model(5.0), mf.Density.random(16, seed=2, amplitude=0.7), 0.01)
        sh = mf.simulate(mf.Model(5.0), mf.Particles.uniform(12, seed=0), 0.01, backend="particles-sh")
    section = text[text.index('## `"hybrid"`'):]
    added = set(hybrid.diagnostics) - set(spectral.diagnostics) - set(sh.diagnostics)
    assert added and added <= set(re.findall(r"`(\w+)`", section)), added


def test_backends_page_says_how_each_backend_fits_a_fixed_step_to_the_save_times():
    """The same `step` gives other steps in the two kinds of backend (the spectral one shortens the step before a save
    time, the particle ones cut each save interval into equal steps), which no page said: a PDE-against-particles
    or step-convergence study at step=0.3 ran the particles with 0.25.  backends.md quotes both, as the runs take."""
    import warnings

    text = " ".join(_read("backends.md").split())
    assert "`step=0.3` over $[0, 1]$ takes 0.3, 0.3, 0.3, 0.1" in text
    assert text.count("`step=0.3` over $[0, 1]$ takes four steps of 0.25") == 2      # particles, particles-sh
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        spectral = mf.simulate(mf.Model(2.0), mf.Density.random(12, seed=1, amplitude=0.3), 1.0, method="rk4",
                               step=0.3)
    assert np.allclose(spectral.steps["dt"], [0.3, 0.3, 0.3, 0.1], rtol=0, atol=1e-15)
    for backend in ("particles", "particles-sh"):
        run = mf.simulate(mf.Model(2.0), mf.Particles.uniform(10, seed=0), 1.0, backend=backend, step=0.3)
        assert np.allclose(run.steps["dt"], [0.25] * 4, rtol=0, atol=1e-15)


def test_simulate_points_to_rendered_pages_for_the_initial_types_and_the_options_of_each_backend():
    """simulate's `initial` said "which types a backend accepts is in its docstring", and the backend classes'
    docstrings are rendered on no page (api.md gives the backends module one line): it points to the model page's
    table of which backend handles what, and `**options` to the page of every backend option."""
    doc = " ".join(mf.simulate.__doc__.split())
    assert "is in its docstring" not in doc
    assert ":doc:`model` (which backend handles what)" in doc and "## Which backend handles what" in _read("model.md")
    assert "listed with its default in :doc:`backends`" in doc


def test_every_member_the_api_page_lists_has_a_docstring():
    # Trajectory.success and Trajectory.message were listed under `:members:` with no docstring: the API page showed
    # their names and nothing else
    import inspect
    text = (DOCS / "api.md").read_text()
    blank = []
    for cls, members in re.findall(r"\.\. autoclass:: (\w+)\n\s+:members:([^\n]*(?:\n\s{13,}[^\n]*)*)", text):
        for name in (m.strip() for m in members.replace("\n", " ").split(",") if m.strip()):
            attr = inspect.getattr_static(getattr(mf, cls), name)
            doc = attr.__doc__ if isinstance(attr, property) else inspect.getdoc(getattr(getattr(mf, cls), name))
            if not (doc or "").strip():
                blank.append(f"{cls}.{name}")
    assert not blank, blank


def test_cli_page_stores_a_solver_result_as_it_shows(tmp_path, monkeypatch):
    """cli.md: a minimizer from Python saved in an EnergyResult round-trips with D as the (d, d) matrix; the
    EnergyResult stored a D given as a diagonal with shape (3,), and checked nothing of the problem it records."""
    code = next(b for b in re.findall(r"```python\n(.*?)```", _read("cli.md"), re.S) if "mf.EnergyResult(" in b)
    monkeypatch.chdir(tmp_path)
    printed = []
    exec(compile(code, "cli.md[EnergyResult]", "exec"), {"print": lambda *a: printed.append(" ".join(map(str, a)))})
    expected = [line.split("# → ", 1)[1].strip() for line in code.splitlines() if "# → " in line]
    assert printed == expected == ["True (3, 3) True"]


def test_sweeps_page_names_every_setting_of_a_tasks_key():
    """The page said "Changing the base configuration or the observables changes the keys": reordering the
    observables, or switching `hdf5` or `aligned_tol`, also reruns every task, and the page did not say so."""
    import tomllib

    from meanfield._sweep import parse_sweep

    text = _read("sweeps.md")
    para = text[text.index("**Keys and resuming.**"):text.index("**Where tasks run.**")]
    base = ('[model]\nbeta = 1.0\n[initial]\nkind = "particles"\nn = 8\n[run]\nbackend = "particles"\n'
            't_final = 1.0\n[sweep]\n'
            'grid = { "model.beta" = [1.0, 2.0] }\n')

    def keys(extra):
        return [t.key for t in parse_sweep(tomllib.loads(base + extra)).tasks]

    plain = keys('observables = ["energy", "mean_alignment"]\n')
    assert keys('observables = ["mean_alignment", "energy"]\n') != plain
    assert keys('observables = ["energy", "mean_alignment"]\ntable = ["csv"]\n') == plain
    for name in parse_sweep(tomllib.loads(base)).record:
        assert f"`{name}`" in para
    assert "even only their order" in para and "`table` is not part of the key" in para


def test_examples_use_the_public_api():
    """examples/phase_diagram.py imported load_sweep and run_sweep from the private meanfield._sweep, which the
    page that shows it calls public (meanfield.load_sweep, meanfield.run_sweep)."""
    for path in sorted((DOCS.parent / "examples").glob("*.py")):
        assert not re.search(r"(from|import) meanfield\._", path.read_text(encoding="utf-8")), path.name


def test_sweeps_page_says_how_to_read_a_sweeps_rows_back_in_python(tmp_path):
    """The page showed only print(result): how to get the rows of a finished sweep in Python without running it
    again (max_tasks=0, documented in run_sweep's docstring only) was not said."""
    import tomllib

    from meanfield._sweep import parse_sweep

    text = _read("sweeps.md")
    assert "`run_sweep(spec, DIR, max_tasks=0)` (no\ncluster is started) gives the rows recorded so far" in text
    assert "`result.rows` are the table's rows" in text
    spec = parse_sweep(tomllib.loads('[model]\nbeta = 1.0\n[initial]\nkind = "particles"\nn = 8\n[run]\n'
                                     'backend = "particles"\nt_final = 0.5\nsave_every = 0.25\n[options]\nstep = 0.25\n'
                                     '[sweep]\nat = "saved"\ngrid = { "model.beta" = [1.0, 2.0, 3.0] }\n'))
    first = mf.run_sweep(spec, tmp_path, serial=True, progress=False, max_tasks=2)
    back = mf.run_sweep(spec, tmp_path, progress=False, max_tasks=0)      # no cluster, nothing run
    assert (first.ran, back.ran, back.missing) == (2, 0, 1)
    assert [r["model.beta"] for r in back.rows] == [1.0, 2.0] and back.rows[0]["t"] == [0.0, 0.25, 0.5]
    assert back.rows == first.rows and back.failed == []


def test_no_page_offers_nthreads_but_as_the_deprecated_name():
    """numerics.md offered `threads`/`nthreads` as the particle backends' thread count (`nthreads` was the attention
    functions' name, now deprecated for `threads`, which they and the backends take)."""
    import inspect

    for name in ("attention_field", "attention_field_sh"):
        assert "threads" in inspect.signature(getattr(mf, name)).parameters
    pages = sorted(DOCS.glob("*.md")) + sorted(DOCS.glob("tutorials/*.md")) + [DOCS.parent / "README.md"]
    for path in pages:
        for para in path.read_text(encoding="utf-8").split("\n\n"):
            if "nthreads" in para:
                assert "DeprecationWarning" in para, (path.name, para[:200])


def test_stiff_merger_step_count_is_the_same_on_every_page():
    """The BDF run of the energy tutorial (20 uniform tokens, β = 10, merger at t ≈ 1.7e3) took 4029 steps after
    Radau's Newton floor commit re-measured it; numerics.md still said 4 067 and find_stationary's Notes 4064."""
    from meanfield._energy import _flow

    measured = re.search(r"# → True  \(measured: (\d+)\)", _read("tutorials/energy_extrema.md")).group(1)
    numerics = re.search(r"to the Dirac \(\$E = e\^\{10\}/20\$\) in ([\d ]+) steps", _read("numerics.md")).group(1)
    assert numerics.replace(" ", "") == measured
    notes = re.search(r"at t = 1750 in (\d+) steps", " ".join(_flow.find_stationary.__doc__.split())).group(1)
    assert notes == measured


def test_the_index_pages_lead_to_the_ensemble_files_and_the_sweep_summary():
    """Saving an ensemble and `meanfield info` / `plot` of its file or of a sweep's folder were on their pages but
    named by neither index: a reader of docs/index.md or the tutorials index could not tell they exist."""
    index = " ".join(_read("index.md").split())
    assert "`info` and `plot` also read an ensemble's file, `info` a sweep's folder" in index
    assert "summarized by `meanfield info DIR`" in index
    assert "`mf.save` and read back by `mf.load`, `meanfield info` and `meanfield plot`" in " ".join(
        _read("tutorials/index.md").split())


def test_ensembles_tutorial_save_and_load_block_runs_and_prints_what_it_quotes(tmp_path, monkeypatch, capsys):
    """docs/tutorials/ensembles.md, "Saving and loading an ensemble": its python block was fenced ```py, so no test
    ran it (nor its quoted output, nor the run again from the loaded file's arguments), nor the `meanfield
    info`/`plot` lines after it.  Here they run on a quick ensemble of the same provenance (200 replicas, the default
    observable, rk4), in a temporary folder."""
    from meanfield import cli

    text = _read("tutorials/ensembles.md")
    section = text.split("## Saving and loading an ensemble", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    post = mf.ensemble(mf.Model(4.0), 4, 0.1, replicas=200, seed=0, save_every=0.05, method="rk4", step=0.05)
    printed = []
    exec(compile(code, "ensembles.md[save and load]", "exec"),
         {"mf": mf, "post": post, "print": lambda *a: printed.append(" ".join(map(str, a)))})
    expected = [line.split("# → ", 1)[1].split("  ")[0].strip() for line in code.splitlines() if "# → " in line]
    assert printed == expected == ["True 200 mean_alignment rk4", "True"]
    for line in commands.splitlines():
        argv = line.split("#", 1)[0].split()
        assert argv[0] == "meanfield"
        capsys.readouterr()
        assert cli.main(argv[1:]) == 0, line
        if argv[1] == "info":
            assert "ensemble of 200 replicas" in capsys.readouterr().out
    assert (tmp_path / "post_ln_ensemble.png").is_file()


def test_the_command_line_page_quotes_the_errors_run_prints(tmp_path, monkeypatch, capsys):
    """docs/cli.md quotes a configuration error (it names the file and the table) and two likely fixes of unknown
    keys: `meanfield run` prints them so, and exits with 2 before any work."""
    from meanfield import cli

    text = _read("cli.md")
    quoted = re.search(r"```text\n(meanfield run: error: c\.toml: .*)\n```", text).group(1)
    monkeypatch.chdir(tmp_path)
    example = (DOCS.parent / "examples" / "post_ln_s2.toml").read_text(encoding="utf-8")
    Path("c.toml").write_text(example.replace("lmax = 32", "lmax = -1"), encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["run", "c.toml", "--output", "o.h5"]) == 2
    assert capsys.readouterr().err.strip() == quoted and not Path("o.h5").exists()
    Path("v.toml").write_text(example.replace("t_final = 3.0", "tfinal = 3.0\nbeta = 2.0"), encoding="utf-8")
    assert cli.main(["run", "v.toml", "--output", "o.h5"]) == 2
    err = capsys.readouterr().err
    for fix in re.search(r"with the likely fix \(`(.*?)`, `(.*?)`\)", text).groups():
        assert fix in err, (fix, err)


def test_the_sweeps_page_says_which_commands_exit_with_130_as_the_command_line_page_does():
    """Every command stopped by Ctrl-C or SIGTERM exits with 130 (`meanfield run` exited with 1 once its run had
    started, like a run that ended early, which a script could not tell from "resume": tests/test_cli.py); the two
    pages say so."""
    sweeps, cli_page = (" ".join(_read(name).split()) for name in ("sweeps.md", "cli.md"))
    assert "as every `meanfield` command exits when stopped so (`meanfield run` keeps a resumable checkpoint" in sweeps
    assert "1 when it ended early (resolution lost, step too small, non-finite state:" in cli_page
    assert "and 130 when a Ctrl-C or SIGTERM stopped it, as for every `meanfield` command" in cli_page
    assert "exit status 1): draw it with `meanfield plot`" not in cli_page


def test_the_progress_bar_interval_of_a_batch_log_is_the_one_documented():
    """simulate/resume(progress=True) redraw a bar written to a file every BATCH_LOG_INTERVAL seconds; the docstrings
    and the command-line page say so with that number."""
    from meanfield._simulate import BATCH_LOG_INTERVAL

    said = f"every {BATCH_LOG_INTERVAL:g} s"
    for doc in (mf.simulate.__doc__, mf.resume.__doc__):
        assert said + " when stderr is a file" in " ".join(doc.split())
    assert said + " when stderr is not a terminal" in " ".join(_read("cli.md").split())


def test_the_convergence_message_has_the_shape_its_docstring_gives():
    """ConvergenceResult.message: "slope … ± … (95 % CI low..high, k dof) over N_min..N_max" (the docstring said
    "(95 % CI …, dof …)", with the count after the word), and no interval where there is none."""
    ref = mf.ConvergenceResult(np.array([100, 400]), np.ones((2, 2)), np.ones(2), -0.5, 0.03, None, dof=2,
                               slope_ci=(-0.63, -0.37))
    assert ref.message == "slope -0.5 ± 0.03 (95 % CI -0.63..-0.37, 2 dof) over 100..400"
    assert "(95 % CI low..high, k dof)" in " ".join(mf.ConvergenceResult.__doc__.split())
    bare = mf.ConvergenceResult(np.array([12, 16]), np.ones(2), np.ones(2), -0.6, float("nan"), None)
    assert bare.message == "slope -0.6 ± nan over 12..16"


def test_the_demo_beta_limit_on_the_command_line_page_is_the_solvers():
    from meanfield.sphere._funk_hecke import MAX_BETA

    assert MAX_BETA == 1e9 and "`--beta` (4.0; at most 10⁹)" in _read("cli.md")


@pytest.mark.slow
def test_the_convergence_study_of_the_pde_vs_particles_tutorial_prints_what_it_quotes():
    """docs/tutorials/pde_vs_particles.md: the one-call studies (no test ran them): convergence_in_n's message with
    its interval and degrees of freedom, and convergence_in_l's distances (about 5 s here)."""
    import warnings

    text = _read("tutorials/pde_vs_particles.md")
    code = re.search(r"```python\n(study = mf\.convergence_in_n.*?)```", text, re.S).group(1)
    printed = []
    scope = {"mf": mf, "model": mf.Model(4.0), "rho0": mf.Density.random(32, seed=1, degree=3, amplitude=1.2),
             "print": lambda a: printed.append(a)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.MeanfieldWarning)
        exec(compile(code, "pde_vs_particles.md[convergence]", "exec"), scope)
    assert printed[0] == re.search(r"# prints: (.*)", code).group(1)
    quoted = [float(v) for v in re.search(r"at t = 1: (.*?) \(measured\)", code).group(1).split(", ")]
    assert np.array_equal(np.array([float(f"{v:.1e}") for v in printed[1]]), quoted)


def test_the_front_page_map_names_every_section_of_the_numerics_page():
    """docs/index.md's map summarized numerics.md without its later sections (stiff particle runs, the finite
    elements on S² added with the FE energy's error estimate, the threads): a newcomer could not find them there."""
    entry = " ".join(_read("index.md").split("[Numerics](numerics.md)", 1)[1].split("\n[", 1)[0].split()).lower()
    for heading, words in [("## Stiff particle runs", "stiff particle runs"),
                           ("## Finite elements on $S^2$", "finite elements on $s^2$"),
                           ("## Threads of the grid transforms", "threads"),
                           ("## Particles with a spectral velocity", "particles-sh")]:
        assert heading in _read("numerics.md") and words in entry, heading


def test_harmonic_dimension_is_within_its_documented_error_and_the_quoted_inexact_count():
    """meanfield.sphere.harmonic_dimension: relative error ≲ d·eps for 4 ≤ d ≤ 64 (its docstring); the private
    product's docstring said "integers at every step, so exact below 2⁵³", but the last product C·(2ℓ + d − 2) can
    pass 2⁵³ while the count does not: N(4, 341365) = 116530745956 comes out 116530745956.00002, as it now says."""
    import math

    from meanfield.sphere import _harmonic_dimension, harmonic_dimension

    def exact(d, k):
        return math.comb(k + d - 1, d - 1) - (math.comb(k + d - 3, d - 1) if k >= 2 else 0)

    for d in (4, 5, 16, 64):
        ell = np.unique(np.r_[np.arange(200), np.geomspace(1, 3e6, 40).astype(int), 341365])
        got = harmonic_dimension(d, ell)
        counts = [exact(d, int(k)) for k in ell]
        finite = np.array([c < 10**300 for c in counts])
        want = np.array([float(c) if f else np.inf for c, f in zip(counts, finite)])
        assert np.all(np.abs(got[finite] - want[finite]) <= d * np.finfo(float).eps * want[finite])
    assert exact(4, 341365) == 116530745956 < 2**53
    assert f"{float(harmonic_dimension(4, 341365)):.17g}" == "116530745956.00002"
    assert "N(4, 341365) = 116530745956 comes out 116530745956.00002" in " ".join(
        _harmonic_dimension._product_counts.__doc__.split())


@pytest.mark.parametrize("backend", ["particles", "particles-sh"])
def test_the_backends_page_says_a_layered_run_takes_at_least_one_layer(backend):
    """A layer step longer than the span ran 0 layers and returned the initial state with status OK; it is refused
    now (step ≤ t_final − t0), which each particle backend's `time` row of docs/backends.md says."""
    section = _read("backends.md").split(f'## `"{backend}"`', 1)[1].split("\n## ", 1)[0]
    row = _table_row(section, "`time`")
    assert "at least one" in row[2], row
    with pytest.raises(ValueError, match="`step` must be at most 1, the span"):
        mf.simulate(mf.Model(1.0), mf.Particles.uniform(20, seed=0), 1.0, backend=backend, time="layers", step=2.0)


def test_the_pages_say_a_ring_maximum_of_a_density_is_one_cluster():
    """density_clusters joins the grid maxima along a ring or ridge with no valley between them (it counted 56
    clusters for a tilted ring before); the sweeps page's `modes` row and the validation page say so, and a ring
    around the equator is one cluster holding the mass."""
    row = _table_row(_read("sweeps.md"), "`modes`")
    assert "a ring or ridge maximum counts once" in row[1]
    assert "along a ring or ridge with no valley between them are one cluster" in " ".join(_read("validation.md").split())
    ring = mf.Density.from_function(lambda x: np.exp(-20 * x[..., 2] ** 2), 30).normalized()
    clusters = mf.density_clusters(ring)
    assert clusters.count == 1 and clusters.masses[0] == pytest.approx(1.0, abs=1e-5)


def test_the_validation_page_says_an_unwritable_output_is_refused_before_the_suite(tmp_path, monkeypatch, capsys):
    """`meanfield validate --output` that cannot be written is refused with status 2 before any result runs (69c20ec);
    the validation page said only what the command writes there."""
    from meanfield import _validation, cli

    text = " ".join(_read("validation.md").split())
    assert "is refused, naming `--output`, before the suite runs (exit status 2)" in text
    (tmp_path / "afile").write_text("notes")
    monkeypatch.setattr(_validation, "run_all", lambda *a, **k: pytest.fail("the suite ran"))
    assert cli.main(["validate", "--quick", "--output", str(tmp_path / "afile" / "out")]) == 2
    assert "--output" in capsys.readouterr().err


def test_the_api_page_and_the_readme_lead_to_rerun_arguments():
    """EnsembleResult.rerun_arguments (new) was rendered under the class's members only: the ensemble prose of the API
    page and the README's ensemble row name it, and it exists."""
    assert callable(mf.EnsembleResult.rerun_arguments)
    api = " ".join(_read("api.md").split())
    assert "`mf.ensemble(**result.rerun_arguments())` ({meth}`~meanfield.EnsembleResult.rerun_arguments`)" in api
    assert "`EnsembleResult.rerun_arguments`" in _table_row((DOCS.parent / "README.md").read_text(encoding="utf-8"),
                                                             "`mf.ensemble`")[1]


def test_the_api_page_names_the_slope_interval_of_a_convergence_study():
    """ConvergenceResult.dof and slope_ci (new) are attributes of a class rendered in the catch-all section: the
    API page's prose names them, and they are the result's fields."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(mf.ConvergenceResult)}
    assert {"dof", "slope_ci", "slope_stderr"} <= fields
    assert "degrees of freedom `dof` and its 95 % interval `slope_ci`" in " ".join(_read("api.md").split())


def test_the_ensembles_tutorial_quotes_the_noise_seeded_times_l1_noise_time_gives():
    """l1_noise_time integrates the degree-1 rate along the uniform state (882a468: it divided by the rate at t = 0
    for every scheme); the ensembles tutorial quotes its Post-LN and Peri-LN times, the latter (a/ε)^(1/γ_1) − 1."""
    text = " ".join(_read("tutorials/ensembles.md").split())
    post, peri = (mf.l1_noise_time(4.0, 400, 0.3, scheme=s) for s in ("post-ln", "peri-ln"))
    assert f"is {post:.2f} under Post-LN and {peri:.1f} under Peri-LN" in text
    gamma, eps = mf.growth_rate(4.0, 1, scheme="peri-ln"), mf.l1_noise_threshold(400)
    assert peri == pytest.approx((0.3 / eps) ** (1 / gamma) - 1, rel=1e-12, abs=0)


def test_run_sweep_raises_keyboard_interrupt_after_recording_as_its_docstring_and_the_sweeps_page_say(
        tmp_path, monkeypatch):
    """run_sweep's Raises had no KeyboardInterrupt, and the sweeps page's Python section did not say what a Ctrl-C
    does there: it raises, after the finished tasks are recorded and the tables written, and a rerun continues."""
    import tomllib

    from meanfield._sweep import _runner, parse_sweep

    assert "KeyboardInterrupt" in _runner.run_sweep.__doc__
    assert "A Ctrl-C stops `run_sweep` with `KeyboardInterrupt`, raised once the finished tasks are recorded and the " \
           "tables written" in " ".join(_read("sweeps.md").split())
    text = ('[model]\nbeta = 1.0\n[initial]\nkind = "particles"\nn = 8\nseed = 0\n[run]\nbackend = "particles"\n'
            't_final = 0.2\n[options]\nmethod = "rk4"\nstep = 0.1\n[sweep.grid]\n"initial.seed" = [0, 1, 2]\n')
    spec = parse_sweep(tomllib.loads(text), text)
    real, calls = _runner.run_task, []

    def stopped_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(_runner, "run_task", stopped_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        _runner.run_sweep(spec, tmp_path / "out", serial=True)
    assert len(list((tmp_path / "out" / "tasks").glob("*.json"))) == 1
    assert (tmp_path / "out" / "results.jsonl").read_text(encoding="utf-8").count("\n") == 1
    monkeypatch.setattr(_runner, "run_task", real)
    again = _runner.run_sweep(spec, tmp_path / "out", serial=True)
    assert (again.ran, again.skipped) == (2, 1)


@pytest.mark.slow
def test_numerics_long_runs_of_clustered_tokens_quiet_step_and_example():
    """numerics.md "Long runs of clustered tokens": the quiet-phase "rk45" step of SA is held by stability at ≈ 3.3
    whatever β (median 3.34 at β = 10 for 200 tokens), and the cluster_history example prints what it says."""
    section = " ".join(_read("numerics.md").split("## Long runs of clustered tokens", 1)[1]
                       .split("## Particles with a spectral velocity", 1)[0].split())
    assert "median of 3.34 at β = 10" in section and "mf.cluster_history(traj, angle=0.1, min_mass=0.01)" in section
    assert "long runs of clustered tokens" in " ".join(_read("index.md").split())      # the front page's map
    traj = mf.simulate(mf.Model(10.0), mf.Particles.uniform(200, seed=0), 1000.0, backend="particles",
                       save_every=10.0)
    dt = np.asarray(traj.steps["dt"])
    assert np.median(dt[dt > 1]) == pytest.approx(3.34, abs=0.005)
    assert np.min(dt) < 1e-2                        # the mergers' steps, within the run
    traj = mf.simulate(mf.Model(10.0), mf.Particles.uniform(1000, seed=0), 1000.0, backend="particles-sh",
                       save_every=10.0)
    hist = mf.cluster_history(traj, angle=0.1, min_mass=0.01)
    assert list(hist.counts[[1, 2, 17, 18, 41, 42]]) == [7, 5, 5, 4, 4, 3]
    assert hist.merges[-2:].tolist() == [[170.0, 180.0], [410.0, 420.0]]
    energy = traj.diagnostics["energy"]
    assert (f"{energy[0]:.1f}", f"{energy[-1]:.1f}") == ("56.3", "391.7") and np.all(np.diff(energy) > 0)


def test_api_page_says_how_to_bring_ones_own_tokens_and_heads_and_the_recipe_runs():
    # an interpretability user (embeddings of one prompt, an attention mask, heads of dimension k < d) found no
    # place in the docs that said how to pass them; the paragraph's recipe, run as written
    import numpy as np

    import meanfield as mf

    text = " ".join(_read("api.md").split())
    for phrase in ("mf.Particles.from_ambient(x, weights=mask)", "`Q[h, :k] = W_Q`, `K[h, :k] = W_K`, with "
                   "`V[h] = W_O @ W_V`", "`causal=True`", "{func}`meanfield.mmd`"):
        assert phrase in text, phrase
    rng = np.random.default_rng(0)
    n, d, H, k = 12, 8, 2, 4
    x, mask = rng.standard_normal((n, d)) * 5, np.r_[np.zeros(2), np.ones(n - 2)]
    W_Q, W_K, W_V, W_O = (rng.standard_normal((H, k, d)), rng.standard_normal((H, k, d)),
                          rng.standard_normal((H, k, d)), rng.standard_normal((H, d, k)))
    Q, K = np.zeros((H, d, d)), np.zeros((H, d, d))
    Q[:, :k], K[:, :k] = W_Q, W_K
    model = mf.Model(0.5, scheme="pre-ln", d=d, Q=Q, K=K, V=W_O @ W_V)
    runs = [mf.simulate(model, mf.Particles.from_ambient(x, weights=mask), 0.3, backend="particles", causal=True,
                        time="layers", step=0.1) for _ in range(2)]
    assert all(r.success for r in runs) and mf.mmd(runs[0].final, runs[1].final, 0.5) == 0.0


def test_extending_page_registers_a_scheme_and_a_backend_and_prints_what_its_comments_say(monkeypatch):
    """docs/tutorials/extending.md ("Adding a scheme", "Adding a backend"): its code runs against the public API
    (register_scheme, register_backend) and prints what its comments say; what it registers is removed after."""
    from meanfield.backends._registry import BACKENDS

    len(BACKENDS)       # the built-ins loaded first: the restored registry keeps them
    monkeypatch.setattr(BACKENDS, "_classes", dict(BACKENDS._classes))
    saved = dict(mf.SCHEMES)
    try:
        scope = _run_python_blocks("tutorials/extending.md")
    finally:
        mf.SCHEMES.clear()
        mf.SCHEMES.update(saved)
    assert scope["_checked"] == 5
    assert "extending" in _read("tutorials/index.md")


def test_every_python_block_the_tests_run_is_one_the_pages_render():
    """A closing fence with text after it (extending.md had "``` A built-in") is no closing fence in CommonMark: the
    text block ran on to the end of the page, and "Adding a backend" with its Euler example rendered as plain text,
    while the regex of _run_python_blocks still found and ran the example.  markdown-it (MyST's parser) must find
    the same python blocks."""
    markdown_it = pytest.importorskip("markdown_it")
    for path in sorted(DOCS.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        rendered = [tok.content for tok in markdown_it.MarkdownIt().parse(text)
                    if tok.type == "fence" and tok.info.strip() == "python"]
        assert rendered == re.findall(r"```python\n(.*?)```", text, re.S), path.name


def test_the_docs_sections_that_docstrings_name_exist():
    """register_scheme's docstring sent the reader to docs/model.md, "Adding a scheme", a section that page does not
    have (it is in tutorials/extending.md).  Every ``docs/PAGE.md, "Heading"`` of the package's sources must name a
    heading of that page (a heading that starts with the quoted words)."""
    package = Path(__file__).resolve().parents[1] / "meanfield"
    refs = [(src, page, heading) for src in sorted(package.rglob("*.py"))
            for page, heading in re.findall(r'docs/([a-z_/]+\.md), "([^"]+)"', src.read_text(encoding="utf-8"))]
    assert refs
    for src, page, heading in refs:
        headings = re.findall(r"^#+ (.+)$", _read(page), re.M)
        heading = " ".join(heading.split())        # a reference wrapped over two lines of a docstring
        assert any(h.startswith(heading) for h in headings), (src.name, page, heading)
