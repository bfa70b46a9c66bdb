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
