"""docs/backends.md lists every option of every backend, and only those, with the defaults of the code."""
import math
import re
from pathlib import Path

import pytest

import meanfield as mf
from meanfield.backends import _hybrid, _spectral, _stepper

PAGE = Path(__file__).resolve().parents[1] / "docs" / "backends.md"


def _code_options(backend):
    """The option names and defaults of ``backend``, read from the code."""
    if backend == "spectral":
        return dict(_spectral._OPTIONS)
    if backend == "hybrid":
        return dict(_hybrid._OPTIONS)
    cls = mf.BACKENDS[backend]
    assert issubclass(cls, _stepper.ParticleStepper)
    return {**_stepper.COMMON_OPTIONS, **cls.OPTIONS}


def _cells(line):
    """The cells of a Markdown table row (a ``\\|`` inside a cell is not a separator)."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def _tables(text):
    """{backend: [(option, default, meaning), …]}: the first table under each ``## `"name"` `` heading."""
    tables, current, rows = {}, None, None
    for line in text.splitlines():
        heading = re.fullmatch(r'##\s+`"([\w-]+)"`\s*', line)
        if heading:
            current, rows = heading.group(1), None
            continue
        if current is None or current in tables and rows is None:
            continue
        if line.lstrip().startswith("|"):
            cells = _cells(line)
            if rows is None:
                assert cells[:2] == ["option", "default"], f"table of {current!r} must start with option | default"
                rows = []
            elif not set(cells[0]) <= set("-: "):
                rows.append(tuple(cells))
        elif rows is not None:
            tables[current], rows = rows, None
    if current is not None and rows is not None:
        tables[current] = rows
    return tables


def _names(cell):
    return re.findall(r"`(\w+)`", cell)


def _documented_default(cell):
    """The value a default cell states, or None when it describes a computed default in words."""
    cell = cell.strip()
    literal = re.fullmatch(r"`([^`]*)`", cell)
    if literal:
        inner = literal.group(1)
        if re.fullmatch(r'"[^"]*"', inner):
            return inner[1:-1]
        if inner in ("true", "false"):
            return inner == "true"
        return float(inner)
    power = re.fullmatch(r"\$(?:([\d.]+)\\cdot)?10\^\{?(-?\d+)\}?\$", cell)
    if power:
        return float(power.group(1) or 1) * 10.0 ** int(power.group(2))
    if cell == "∞":
        return math.inf
    if re.fullmatch(r"-?\d+(\.\d+)?", cell):
        return float(cell)
    return None


TABLES = _tables(PAGE.read_text(encoding="utf-8"))


def test_the_page_has_one_table_per_backend_and_is_in_the_toctree():
    assert set(TABLES) == set(mf.BACKENDS), "docs/backends.md needs one table per backend of meanfield.BACKENDS"
    index = (PAGE.parent / "index.md").read_text(encoding="utf-8")
    assert re.search(r"^backends$", index, re.M), "docs/backends.md is missing from the toctree of docs/index.md"
    assert "backends.md" in (PAGE.parent / "cli.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("backend", sorted(mf.BACKENDS))
def test_every_option_is_listed_once_and_no_other(backend):
    listed = [name for option, _, _ in TABLES[backend] for name in _names(option)]
    code = _code_options(backend)
    missing = sorted(set(code) - set(listed))
    assert not missing, f"docs/backends.md: options of backend={backend!r} missing from its table: {missing}"
    stale = sorted(set(listed) - set(code))
    assert not stale, f"docs/backends.md: the table of backend={backend!r} lists options it does not take: {stale}"
    twice = sorted({n for n in listed if listed.count(n) > 1})
    assert not twice, f"docs/backends.md: options listed twice for backend={backend!r}: {twice}"


@pytest.mark.parametrize("backend", sorted(mf.BACKENDS))
def test_the_defaults_are_those_of_the_code(backend):
    code = _code_options(backend)
    for option, default, meaning in TABLES[backend]:
        assert meaning, f"{backend!r}: option {option} has no meaning"
        for name in _names(option):
            stated, actual = _documented_default(default), code[name]
            where = f"docs/backends.md, backend={backend!r}, option {name!r}: default {default!r}, code {actual!r}"
            if actual is None:
                assert stated is None, where + " (a computed default is described in words)"
            elif isinstance(actual, (bool, str)):
                assert stated == actual and type(stated) is type(actual), where
            else:
                assert isinstance(stated, float) and math.isclose(stated, float(actual), rel_tol=1e-12), where


def test_the_default_parser():
    assert _documented_default(r"$3\cdot10^{-13}$") == pytest.approx(3e-13, rel=1e-15)
    assert _documented_default("$10^7$") == 1e7
    assert _documented_default("`false`") is False
    assert _documented_default('`"rk45"`') == "rk45"
    assert _documented_default("1.5") == 1.5
    assert _documented_default("the initial density's") is None
    assert _cells(r"| `a` | 1 | x \| y |") == ["`a`", "1", "x | y"]


@pytest.mark.parametrize("backend", sorted(mf.BACKENDS))
def test_no_meaning_is_cut_off(backend):
    """A meaning cell ends its sentence: the `groups` row ended "[`ensemble`](api.md) batches its replicas so |"."""
    dangling = {"so", "and", "or", "the", "a", "to", "of", "with", "by", "as", "its", "in", "than", "that"}
    for option, _, meaning in TABLES[backend]:
        last = re.sub(r"[^\w]+$", "", meaning).rsplit(maxsplit=1)[-1].lower()
        assert last not in dangling, f"docs/backends.md, backend={backend!r}, {option}: {meaning[-60:]!r}"
